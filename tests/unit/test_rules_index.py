"""The rules stage's index (key cache, shared conjuncts, record guards): the same decisions as
evaluating every rule's whole condition on every message, byte for byte."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec
import pytest
import yaml

from ostracon import rules as rules_mod
from ostracon.config import Config, RulesConfig
from ostracon.core import Context, Core
from ostracon.envelope import Claim, Envelope, Kind
from ostracon.pipeline import build_core
from ostracon.rules import Facts, RulesStage, _renderer, _summary, explain, load_rules, render

from .test_rules_stage import context

ROOT = Path(__file__).resolve().parents[2]


def _bench() -> ModuleType:
    """benchmarks/rules.py: its rule file and message generators."""
    name = "_ostracon_bench_rules"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "rules.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _pair(path: Path) -> tuple[Core, Core]:
    """Two cores on one rule file: the indexed stage, and the reference evaluating every rule
    in full (RulesStage(index=False))."""
    cfg = Config(rules=RulesConfig(paths=[str(path)]))
    fast, slow = build_core(cfg), build_core(cfg)
    stages = [
        RulesStage(s.ruleset, index=False) if isinstance(s, RulesStage) else s for s in slow.stages
    ]
    return fast, Core(stages, slow.state)


def _stage(core: Core) -> RulesStage:
    (stage,) = [s for s in core.stages if isinstance(s, RulesStage)]
    return stage


def _recoveries(stage: RulesStage) -> list[int]:
    """Count the generated function's falls back to the closures (RulesStage._recover):
    decisions compared with the closures' prove nothing about code that always falls back."""
    calls: list[int] = []
    recover = stage._recover

    def counting(facts: Any, marks: Any) -> Any:
        calls.append(1)
        return recover(facts, marks)

    stage._recover = counting  # type: ignore[method-assign]
    stage._generate()  # (the generated function binds the recovery at generation)
    return calls


def _same(fast: Core, slow: Core, envs: list[Envelope]) -> None:
    for env in envs:
        a, b = fast.decide(env), slow.decide(env)
        assert msgspec.json.encode(a) == msgspec.json.encode(b), env


@pytest.mark.parametrize("seed", [11, 5])
def test_benchmark_rules_decide_as_the_full_evaluation(seed: int, tmp_path: Path) -> None:
    bench = _bench()
    rng = random.Random(seed)
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(bench.rule_file(rng), sort_keys=False), encoding="utf-8")
    fast, slow = _pair(path)
    stage = _stage(fast)
    assert stage._index is not None and _stage(slow)._index is None
    assert {"sender", "kind"} <= set(stage._index.fields)
    assert stage._program is not None and _stage(slow)._program is None
    envs = bench.messages(rng, 1500)
    recovered = _recoveries(stage)
    _same(fast, slow, envs)
    assert recovered == []  # every message decided by the generated code itself
    # the index did leave rules out (and the reference evaluated them all)
    env = envs[-1]
    ctx = Context(env, fast.state)
    for s in fast.stages[: fast.stages.index(stage)]:
        s.run(ctx)
    assert 0 < len(stage.candidates(stage.facts(ctx))) < len(stage.rules)
    assert len(_stage(slow).candidates(stage.facts(ctx))) == len(stage.rules)


RULES = """
- list: vips
  items: [alice, bob]
- macro: vip
  condition: sender in vips
- rule: grp-a
  condition: meta.grp == "a" and meta.n >= 1
  actions: {tag: {a: "1"}}
- rule: grp-a-or-b
  condition: meta.grp in ["a", "b"] and not vip
  actions: {alert: {summary: "{rule}: {sender} {claims} {meta.grp}"}}
- rule: grp-one
  condition: meta.grp == 1
  actions: {hold: {reason: one}}
  priority: 5
- rule: grp-true
  condition: meta.grp == true and kind == "chat"
  actions: {quarantine: {reason: bool}}
- rule: chat-vip
  condition: kind == "chat" and vip and claims.any(c, c.key == "k1" and c.value != "x")
  actions: {block: {feedback: "{sender}: no"}}
  exceptions: [{name: bobs, fields: [sender], values: [[bob]]}]
- rule: carol
  condition: sender == "carol" and kind == "tool_call"
  actions: {alert: {summary: "{claims}"}}
- rule: chat
  condition: kind == "chat" and claims.count(c, c.key in ["k1", "k2"]) >= 2
  actions: {accuse: {reason: "{sender} twice"}}
  exceptions: [{name: teams, fields: [meta.team], values: [[ops]]}]
"""

GROUPS: list[object] = ["a", "b", "c", 1, 1.0, True, False, 0, None, ["a"], {"x": 1}, ("a",)]


@pytest.mark.parametrize("strings_only", [False, True])
def test_odd_key_values_are_told_apart_or_bypass_the_index(
    tmp_path: Path, strings_only: bool
) -> None:
    path = tmp_path / "r.yaml"
    text = RULES
    if strings_only:  # the field is compared with strings only: its key part is the value
        text = text.replace("meta.grp == 1", 'meta.grp == "1"').replace(
            "meta.grp == true", 'meta.grp == "true"'
        )
    path.write_text(text, encoding="utf-8")
    fast, slow = _pair(path)
    stage = _stage(fast)
    assert stage._index is not None
    assert set(stage._index.fields) == {"kind", "meta.grp", "sender"}
    r = random.Random(3)
    envs = []
    for i in range(600):
        meta: dict[str, object] = {"grp": r.choice(GROUPS), "n": r.choice([0, 1, 2, True, None])}
        if r.random() < 0.3:
            meta["team"] = r.choice(["ops", "dev"])
        keys = r.sample(["k1", "k2", "k3"], r.randint(0, 3))
        envs.append(
            Envelope(
                id=f"m-{i}",
                conversation=f"c-{i % 7}",
                sender=r.choice(["alice", "bob", "carol"]),
                kind=r.choice([Kind.CHAT, Kind.TOOL_CALL]),
                content="",
                claims=[Claim(k, r.choice(["x", "y"])) for k in keys],
                meta=meta,
                ts=float(i),
            )
        )
    _same(fast, slow, envs)
    # equal values of other classes got keys of their own: True == 1 == 1.0, but a rule
    # reading ``meta.grp == 1`` is false for true
    classes = {type(k[stage._index.fields.index("meta.grp")]) for k in stage._index._cache}
    if strings_only:  # other values were not cached: every rule evaluated in full for them
        assert classes == {str, type(None)}
    else:
        assert tuple in classes and bool in classes


def test_a_field_that_makes_every_message_a_miss_is_dropped_from_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rules_mod, "_INDEX_SIZE", 16)
    path = tmp_path / "r.yaml"
    path.write_text(
        """
- rule: by-id
  condition: id == "m-3" and kind == "chat"
  actions: {tag: {id: "3"}}
- rule: by-ids
  condition: id in ["m-5", "m-40"] or kind == "vote"
  actions: {tag: {id: "5"}}
- rule: other-id
  condition: id == "m-7" and sender == "s1"
  actions: {hold: {reason: seven}}
- rule: sender
  condition: sender == "s1" and kind == "chat"
  actions: {alert: {}}
- rule: sender2
  condition: sender in ["s2"]
  actions: {alert: {}}
""",
        encoding="utf-8",
    )
    fast, slow = _pair(path)
    index = _stage(fast)._index
    assert index is not None and "id" in index.fields
    envs = [
        Envelope(id=f"m-{i}", conversation="c", sender=f"s{i % 3}", kind=Kind.CHAT, content="")
        for i in range(80)
    ]
    _same(fast, slow, envs)
    index = _stage(fast)._index
    assert index is not None and index.fields == ("sender", "kind")  # id dropped


def test_swap_rebuilds_the_index(tmp_path: Path) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(
        """
- rule: x
  condition: kind == "chat" and sender == "s"
  actions: {tag: {x: "1"}}
- rule: y
  condition: kind in ["chat"]
  actions: {tag: {y: "1"}}
""",
        encoding="utf-8",
    )
    b.write_text(
        """
- rule: z
  condition: sender == "s"
  actions: {block: {}}
""",
        encoding="utf-8",
    )
    stage = RulesStage(load_rules([a]))
    assert stage._index is not None and stage._index.fields == ("kind",)
    stage.swap(load_rules([b]))
    assert stage._index is None  # one rule guards sender: not worth a key
    assert RulesStage(load_rules([a]), index=False)._index is None


TEMPLATES = [
    "",
    "plain",
    "{rule}",
    "{rule}: {sender}",
    "{rule} matched {kind} {id} from {sender}",
    "held {claims} from {sender}",
    "{meta.team}/{meta.missing}/{sender.role}/{labels}/{lineage.depth}/{verdict}/{rule}",
]


@pytest.mark.parametrize("template", TEMPLATES)
def test_the_compiled_renderer_renders_as_render_does(template: str) -> None:
    facts = Facts(context(), 4)
    fill = _renderer(template, "r1")
    assert fill(facts) == render(template, facts, "r1")
    assert fill(facts) == render(template, Facts(context(), 4), "r1")  # memo: the same


def test_generated_alert_texts_and_rate_limits_are_the_closures(tmp_path: Path) -> None:
    # the generated function renders summaries inline (one f-string) and counts the rate
    # inline: every template above, twice (the second rule reuses the first's text), and a
    # rate limit that goes over for some senders and not others
    lines = []
    for i, template in enumerate([*TEMPLATES, *TEMPLATES]):
        lines.append(f"- rule: a{i}\n  condition: 'kind == \"chat\"'")
        lines.append(f"  actions: {{alert: {{summary: {template!r}}}}}")
    lines.append("- rule: rate\n  condition: 'len(recipients) >= 0'")
    lines.append("  actions: {rate_limit: {max: 2, window_s: 3, then: block}}")
    path = tmp_path / "r.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    fast, slow = _pair(path)
    assert _stage(fast)._program is not None
    recovered = _recoveries(_stage(fast))
    envs = [
        Envelope(
            id=f"m-{i}",
            conversation="c",
            sender=["a", "b", "b", "c", "c", "c"][i % 6],
            kind=Kind.CHAT,
            content="",
            claims=[Claim("k", str(i))] if i % 3 else [],
            meta=[{"team": "ops"}, {"team": None}, {}][i % 3],
            ts=float(i),
        )
        for i in range(60)
    ]
    decisions = [fast.decide(env) for env in envs]
    for env, a in zip(envs, decisions, strict=True):
        assert msgspec.json.encode(a) == msgspec.json.encode(slow.decide(env)), env
    verdicts = [a.verdict.value for a in decisions]
    assert "block" in verdicts and len(set(verdicts)) > 1  # over the limit, and under it
    texts = {alert.summary for a in decisions for alert in a.alerts}
    assert {"held k = 1 from b", "a3: b", "a11 matched chat m-1 from b"} <= texts
    assert any(t.startswith("ops//") and t.endswith("/a6") for t in texts), texts
    assert recovered == []  # the generated code rendered and counted, not the closures


CONDITIONS = [
    'sender == "{a}"',
    'sender in ["{a}", "{b}"] and kind == "chat"',
    'kind == "tool_call" and meta.team == "{t}"',
    'meta.team in ["{t}", "ops"] and claims.any(c, c.key == "{k}")',
    'claims.count(c, c.key in ["{k}", "k1"]) >= 2 or sender == "{a}"',
    'not (sender == "{a}") and lower(meta.team) matches "^o"',
    'startswith(sender, "{a}") and claims.any(c, c.value == "x")',
    'len(recipients) >= 1 and kind in ["chat", "vote"]',
    'sender.hub and sender == "{b}"',
    'meta.n >= 1 and sender in ["{a}"]',
    'kind == "chat"',
    'claims.any(c, c.value == "x") and sender != "{a}"',
]
ACTIONS = [
    "{tag: {t: x}}",
    "{hold: {reason: h}, alert: {summary: '{rule} {claims}'}}",
    "{block: {feedback: '{sender} no'}}",
    "{quarantine: {}}",
    "{alert: {severity: info}}",
    "{accuse: {reason: '{sender}'}}",
    "{rate_limit: {max: 2, window_s: 5, then: hold}}",
    "{deliver: true}",
]


@pytest.mark.parametrize("seed", range(3))
def test_random_rule_sets_decide_as_the_full_evaluation(seed: int, tmp_path: Path) -> None:
    r = random.Random(seed)
    senders, teams, keys = ["a1", "a2", "b1", "x"], ["ops", "dev", "OPS"], ["k1", "k2", "k3"]
    lines = []
    for i in range(30):
        cond = r.choice(CONDITIONS).format(
            a=r.choice(senders), b=r.choice(senders), t=r.choice(teams), k=r.choice(keys)
        )
        lines.append(f"- rule: r{i}\n  condition: '{cond}'\n  actions: {r.choice(ACTIONS)}")
        lines.append(f"  priority: {r.randint(-3, 3)}")
        if r.random() < 0.3:
            field, value = r.choice([("sender", r.choice(senders)), ("meta.team", "ops")])
            lines.append(f"  exceptions: [{{name: e, fields: [{field}], values: [[{value}]]}}]")
    path = tmp_path / "r.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    fast, slow = _pair(path)
    assert _stage(fast)._index is not None
    envs = []
    for i in range(400):
        meta: dict[str, object] = {"n": r.choice([0, 1, 2, None, True])}
        if r.random() < 0.7:
            meta["team"] = r.choice(teams)
        envs.append(
            Envelope(
                id=f"m-{i}",
                conversation=f"c-{i % 5}",
                sender=r.choice(senders),
                kind=r.choice([Kind.CHAT, Kind.TOOL_CALL, Kind.VOTE]),
                content="",
                recipients=r.sample(senders, r.randint(0, 2)),
                claims=[Claim(k, r.choice(["x", "y"])) for k in r.sample(keys, r.randint(0, 3))],
                meta=meta,
                ts=float(i),
            )
        )
    for env in envs:  # the same decisions, and the winner is the one explain() names
        winners = [t.rule.name for t in explain(fast, env).rules if t.winner]
        a, b = fast.decide(env), slow.decide(env)
        assert msgspec.json.encode(a) == msgspec.json.encode(b), env
        mine = [line.split(":")[0][5:] for line in a.reasons if line.startswith("rule ")]
        assert mine == winners, (env, a.reasons)


DECIDED = """
- rule: rep
  condition: sender.reputation < 0.8 and claims.any(c, not c.grounded)
  actions: {accuse: {reason: "{sender}"}}
- rule: rep-low
  condition: 0.5 > sender.reputation
  actions: {hold: {reason: low}, alert: {summary: "held {claims} from {sender}"}}
- rule: band
  condition: risk.score >= 0.2 and risk.score < 0.9 and kind == "chat"
  actions: {tag: {band: "1"}}
  priority: 3
- rule: deep
  condition: lineage.depth > 0 and risk.score <= 0.5
  actions: {alert: {}}
- rule: n-ge
  condition: meta.n >= 1 and kind == "chat"
  actions: {quarantine: {reason: n}}
  priority: 1
- rule: n-le
  condition: 2 >= meta.n and meta.n > 0.5
  actions: {alert: {summary: "{rule}: {meta.n}"}}
- rule: n-lt
  condition: meta.n < 2 and claims.any(c, c.key == "k1")
  actions: {tag: {lt: "1"}}
- rule: risky-deep
  condition: risk.score > 0.3 and lineage.depth >= 1
  actions: {hold: {reason: deep}}
- rule: n-gt-big
  condition: meta.n > 1e9 or sender == "s0"
  actions: {tag: {big: "1"}}
- rule: words
  condition: contains(lower(content), "token") or contains(content, "api key")
  actions: {block: {feedback: "{sender}: no secrets"}}
  priority: 9
- rule: shout
  condition: contains(upper(content), "TOKEN") or contains(content, "Api")
  actions: {alert: {severity: info}}
- rule: two-needles
  condition: contains(content, "a") and contains(lower(content), "b") and kind == "chat"
  actions: {tag: {ab: "1"}}
- rule: two-fields
  condition: contains(content, "x") or contains(sender, "1")
  actions: {tag: {x: "1"}}
- rule: team
  condition: contains(lower(meta.team), "op") and sender == "s1"
  actions: {tag: {team: "1"}}
- rule: chat
  condition: kind == "chat" and sender in ["s1", "s2"]
  actions: {tag: {chat: "1"}}
- rule: tool
  condition: kind == "tool_call" and sender in ["s1", "s0"]
  actions: {tag: {tool: "1"}}
"""
ODD_N: list[object] = [0, 1, 2, 0.5, 0.75, 1.5, 3, -1, True, False, None, "2", float("nan"), 1e10]
CONTENTS = ["", "Token here", "api key", "API KEY", "ab", "xb", "A b", "nothing", "tokenapi"]


def test_thresholds_and_substring_tests_decide_as_the_full_evaluation(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(DECIDED, encoding="utf-8")
    rules = {r.name: r for r in load_rules([path]).rules}
    fast, slow = _pair(path)
    for core in (fast, slow):  # reputations 0.6 and 0.2 (1 - red / (claims + 1))
        core.state.records.update({"s1": [4, 2], "s2": [9, 8]})
    stage = _stage(fast)
    index = stage._index
    assert index is not None
    r = random.Random(7)
    envs = []
    for i in range(700):
        meta: dict[str, object] = {"n": r.choice(ODD_N)}
        if r.random() < 0.5:
            meta["team"] = r.choice(["ops", "OPS", "dev", 3])
        keys = r.sample(["k1", "k2", "k3"], r.randint(0, 3))
        envs.append(
            Envelope(
                id=f"m-{i}",
                conversation=f"c-{i % 4}",
                sender=r.choice(["s0", "s1", "s2"]),
                kind=r.choice([Kind.CHAT, Kind.TOOL_CALL]),
                content=r.choice(CONTENTS),
                parents=[f"m-{i - 1}"] if i and r.random() < 0.5 else [],
                claims=[Claim(k, r.choice(["x", "y", "z"])) for k in keys],
                meta=meta,
                ts=float(i),
            )
        )
    fired: set[str] = set()
    for env in envs:
        a, b = fast.decide(env), slow.decide(env)
        assert msgspec.json.encode(a) == msgspec.json.encode(b), env
        fired.update(t.stage[5:] for t in a.trail if t.stage.startswith("rule:"))
    # every rule fired somewhere (the tests cover both outcomes)
    assert fired == set(rules)


def test_rules_with_no_key_field_run_generated_without_an_index(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(
        """
- rule: low
  condition: sender.reputation < 0.5
  actions: {hold: {}}
- rule: lower
  condition: sender.reputation <= 0.25
  actions: {quarantine: {}}
- rule: secret
  condition: contains(lower(content), "secret")
  actions: {block: {}}
- rule: password
  condition: contains(content, "password") or contains(upper(content), "SECRET")
  actions: {alert: {}}
""",
        encoding="utf-8",
    )
    fast, slow = _pair(path)
    stage = _stage(fast)
    assert stage._index is None and stage._program is not None
    envs = [
        Envelope(id=f"m-{i}", conversation="c", sender="s", kind=Kind.CHAT, content=c)
        for i, c in enumerate(["a SECRET", "none", "", "secret", "password", "Secret"])
    ]
    _same(fast, slow, envs)


@pytest.mark.parametrize("template", [*TEMPLATES, "{sender}{rule}{rule}x{kind}", "{rule}{rule}"])
def test_alert_summaries_render_as_render_does_and_are_shared_per_message(
    template: str,
) -> None:
    facts = Facts(context(), 4)
    one, two = _summary(template, "r1"), _summary(template, "r2")
    assert one(facts) == render(template, facts, "r1")
    assert two(facts) == render(template, facts, "r2")  # the shared text, another rule
    assert one(Facts(context(), 4)) == render(template, Facts(context(), 4), "r1")


def test_generated_code_that_raises_is_undone_and_decided_by_the_closures(
    tmp_path: Path,
) -> None:
    """``meta.tags in [..]`` with a list in ``meta.tags``: the generated ``in`` raises (an
    unhashable value) after earlier rules fired and recorded their alerts; the stage undoes
    them and decides with the closures (which say false there): each rule once, as the
    reference decides."""
    path = tmp_path / "r.yaml"
    path.write_text(
        """
- rule: first
  condition: kind == "chat"
  priority: 9
  actions: {tag: {seen: "1"}, alert: {severity: info}}
- rule: second
  condition: kind == "chat" and sender == "a"
  priority: 8
  actions: {alert: {severity: warning}}
- rule: odd
  condition: meta.tags in ["x", "y"]
  priority: 1
  actions: {quarantine: {}}
""",
        encoding="utf-8",
    )
    fast, slow = _pair(path)
    stage = _stage(fast)
    assert stage._program is not None
    calls = _recoveries(stage)
    envs = [
        Envelope(id=f"m-{i}", conversation="c", sender=s, kind=Kind.CHAT, content="x", meta=m)
        for i, (s, m) in enumerate(
            [("a", {"tags": ["x"]}), ("a", {"tags": "x"}), ("b", {"tags": ["y"]}), ("a", {})]
        )
    ]
    decisions = []
    for env in envs:
        a, b = fast.decide(env), slow.decide(env)
        assert msgspec.json.encode(a) == msgspec.json.encode(b), env
        decisions.append(a)
    assert len(calls) == 2  # the two messages with a list in meta.tags
    first = decisions[0]
    assert [r for r in first.rules if r.startswith("rule:")] == ["rule:first", "rule:second"]
    assert len(first.alerts) == 2 and first.verdict.value == "deliver-tagged"
    assert [r for r in decisions[1].rules if r.startswith("rule:")][-1] == "rule:odd"


def test_a_condition_too_long_for_generated_code_runs_as_its_closures(tmp_path: Path) -> None:
    """1 200 conjuncts nest 1 200 ``if`` statements: past what Python compiles, so the
    stage keeps the closures (the rule still loads and decides as the reference)."""
    long = " and ".join(f'meta.k{i} != "x{i}"' for i in range(1200))
    path = tmp_path / "r.yaml"
    path.write_text(
        f"- rule: long\n  condition: '{long}'\n  actions: {{tag: {{long: '1'}}}}\n"
        '- rule: short\n  condition: kind == "chat"\n  actions: {alert: {}}\n',
        encoding="utf-8",
    )
    fast, slow = _pair(path)
    assert _stage(fast)._program is None
    envs = [
        Envelope(id=f"m-{i}", conversation="c", sender="s", kind=Kind.CHAT, content="", meta=m)
        for i, m in enumerate([{"k0": "y"}, {"k5": "x5"}, {}])
    ]
    _same(fast, slow, envs)


def test_a_key_getter_that_raises_reports_its_own_error(tmp_path: Path) -> None:
    """A key field's getter raising (a corrupted reputation record) reaches the caller as
    itself, not as an error of the generated function's recovery."""
    path = tmp_path / "r.yaml"
    path.write_text(
        "- rule: a\n  condition: sender.reputation == 1\n  actions: {alert: {}}\n"
        "- rule: b\n  condition: sender.reputation in [1, 0.5]\n  actions: {tag: {b: '1'}}\n",
        encoding="utf-8",
    )
    fast, _ = _pair(path)
    index = _stage(fast)._index
    assert index is not None and index.fields == ("sender.reputation",)
    fast.state.records["s"] = "xx"  # type: ignore[assignment]
    env = Envelope(id="m-1", conversation="c", sender="s", kind=Kind.CHAT, content="")
    with pytest.raises(TypeError):
        fast.decide(env)
