"""The rules stage's fast paths: facts computed once per message, the rate counted only when
read, templates parsed once — each giving what the straightforward code gave."""

from __future__ import annotations

import re
from pathlib import Path

import hypothesis
import pytest
from hypothesis import strategies as st

from ostracon.config import Config, RulesConfig
from ostracon.core import Context, State
from ostracon.decision import ClaimReport, Label
from ostracon.envelope import Envelope, Kind
from ostracon.pipeline import build_core
from ostracon.rules import _TEMPLATE, SCHEMA, Facts, RuleSet, RulesStage, render


def claim(key: str, label: Label, depth: int, support: int, reach: float) -> ClaimReport:
    return ClaimReport(
        id=f"c:{key}",
        key=key,
        value="1",
        label=label,
        risk=0.5,
        grounded=False,
        support=support,
        depth=depth,
        reach=int(reach),
        components={"reach": reach / 10},
    )


def context() -> Context:
    env = Envelope(
        id="m-1",
        conversation="c",
        sender="bot",
        kind=Kind.CHAT,
        content="x",
        meta={"role": "planner", "team": "ops"},
    )
    ctx = Context(env, State(records={"bot": [4, 1]}))
    ctx.claims = [
        claim("a", Label.YELLOW, 2, 1, 3),
        claim("b", Label.RED, 1, 2, 1),
        claim("c", Label.YELLOW, 0, 3, 5),
    ]
    return ctx


DERIVED = [
    "labels",
    "disputed",
    "lineage.depth",
    "lineage.sources",
    "sender.reputation",
    "risk.components.reach",
    "risk.components.depth",
]


@pytest.mark.parametrize(
    "name", ["labels", "lineage.depth", "lineage.sources", "risk.components.reach"]
)
def test_a_derived_fact_is_computed_once_per_message(name: str) -> None:
    ctx = context()
    facts = Facts(ctx)
    first = SCHEMA[name].get(facts)
    ctx.claims = []  # a recomputation would now see no claims
    assert SCHEMA[name].get(facts) == first
    assert SCHEMA[name].get(Facts(ctx)) != first


def test_reputation_is_read_once_per_message() -> None:
    ctx = context()
    facts = Facts(ctx)
    assert SCHEMA["sender.reputation"].get(facts) == 0.8
    ctx.state.records["bot"] = [4, 4]
    assert SCHEMA["sender.reputation"].get(facts) == 0.8
    assert SCHEMA["sender.reputation"].get(Facts(ctx)) == 0.2


def test_derived_values() -> None:
    facts = Facts(context())
    got = {name: SCHEMA[name].get(facts) for name in DERIVED}
    assert got == {
        "labels": ["red", "yellow"],
        "disputed": [],
        "lineage.depth": 2,
        "lineage.sources": 1,
        "sender.reputation": 0.8,
        "risk.components.reach": 0.5,
        "risk.components.depth": 0.0,
    }


def test_the_rate_is_counted_on_first_read_only() -> None:
    calls: list[int] = []

    def count() -> int:
        calls.append(1)
        return 7

    facts = Facts(context(), count=count)
    assert calls == []
    assert SCHEMA["sender.rate"].get(facts) == 7 and facts.rate == 7
    assert calls == [1]
    assert Facts(context(), 3).rate == 3


TEMPLATES = [
    "",
    "plain text",
    "{rule}",
    "{rule} matched {kind} {id} from {sender}",
    "held {claims} from hub {sender}{sender}",
    "{meta.team}/{meta.missing}/{sender.role}/{labels}/{lineage.depth}/{verdict}",
    "{ not a placeholder } {{rule}} {1x} {sender.rate}!",
]


@pytest.mark.parametrize("template", TEMPLATES)
def test_render_fills_as_a_regex_substitution_does(template: str) -> None:
    facts = Facts(context(), 4)

    def one(m: re.Match[str]) -> str:  # the previous implementation
        ref = m.group(1)
        if ref == "rule":
            return "r1"
        if ref == "claims":
            return ", ".join(
                f"{c.key} = {c.value}" for c in facts.ctx.claims if c.label is not Label.GREEN
            )
        if ref.startswith("meta."):
            value = facts.env.meta.get(ref[5:])
        else:
            value = SCHEMA[ref].get(facts)
        return "" if value is None else str(value)

    assert render(template, facts, "r1") == _TEMPLATE.sub(one, template)


def test_fired_rules_share_frozen_trail_entries_and_rate_rules_do_not(tmp_path: Path) -> None:
    rules = tmp_path / "r.yaml"
    rules.write_text(
        """
- rule: tag-chat
  condition: kind == "chat"
  actions: {tag: {chat: "1"}, alert: {summary: "{rule} on {id}"}}
- rule: chatty
  condition: kind == "chat"
  actions: {rate_limit: {max: 1, window_s: 60, then: quarantine}}
""",
        encoding="utf-8",
    )
    core = build_core(Config(rules=RulesConfig(paths=[str(rules)])))
    out = [
        core.decide(
            Envelope(id=f"m-{i}", conversation="c", sender="s", kind=Kind.CHAT, content="", ts=i)
        )
        for i in range(2)
    ]
    trails = [{t.stage: t for t in d.trail} for d in out]
    assert trails[0]["rule:tag-chat"] is trails[1]["rule:tag-chat"]
    assert trails[0]["rule:chatty"].verdict.value == "deliver"
    assert trails[1]["rule:chatty"].verdict.value == "quarantine"
    assert [a.summary for d in out for a in d.alerts] == ["tag-chat on m-0", "tag-chat on m-1"]
    (stage,) = [s for s in core.stages if isinstance(s, RulesStage)]
    assert [p.static is None for p in stage._plan] == [True, False]  # by priority, then name


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(
    times=st.lists(st.integers(0, 400).map(lambda t: t / 4), min_size=1, max_size=40),
    window=st.sampled_from([1.0, 2.5, 10.0, 60.0]),
)
def test_the_rate_window_is_kept_sorted_and_counted_by_bisection(
    times: list[float], window: float
) -> None:
    """Messages in any time order: the kept window stays sorted, at most ``depth`` long, and
    the bisection counts what a scan of it counts (times less than ``window`` ago)."""
    stage = RulesStage(RuleSet())
    stage.window, stage.depth, stage.rate_rules = window, 6, [None]  # type: ignore[list-item]
    state = State()
    for t in times:
        env = Envelope(id="m", conversation="c", sender="s", kind=Kind.CHAT, content="", ts=t)
        ctx = Context(env, state)
        seen = state.rates.get("s")
        scan = len([x for x in seen if t - x < window]) if seen else 0
        assert stage._count(ctx, window) == scan
        stage.observe(ctx, None)  # type: ignore[arg-type]
        kept = list(state.rates["s"])
        assert kept == sorted(kept) and len(kept) <= 6 and t in kept
