"""Rule files: loading, merging, positioned errors, actions and conflicts, through the real
core (build_core with rules.paths)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ostracon.config import Config, ContainmentConfig, RulesConfig
from ostracon.core import Core
from ostracon.decision import Decision, Verdict
from ostracon.envelope import Claim, Envelope, Kind
from ostracon.pipeline import build_core
from ostracon.rules import RuleError, RulesStage, load_rules

PACKS = Path(__file__).resolve().parents[2] / "rules"
RUMOR = Claim("competitor funding", "50M USD")
FACT = Claim("q3 revenue", "8.1M USD")


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


class Team:
    def __init__(self, *paths: Path, policy: str = "low-intervention") -> None:
        cfg = Config(
            containment=ContainmentConfig(policy=policy),  # type: ignore[arg-type]
            rules=RulesConfig(paths=[str(p) for p in paths]),
        )
        self.core: Core = build_core(cfg)
        self.n = 0

    def say(
        self,
        sender: str,
        *claims: Claim,
        kind: Kind = Kind.CHAT,
        ts: float | None = None,
        **meta: Any,
    ) -> Decision:
        self.n += 1
        env = Envelope(
            id=f"m-{self.n}",
            conversation="c",
            sender=sender,
            kind=kind,
            content="",
            claims=list(claims),
            ts=ts,
            meta=meta,
        )
        return self.core.decide(env)


@pytest.mark.parametrize("pack", sorted(p.name for p in PACKS.glob("*.yaml")))
def test_every_shipped_pack_validates_alone(pack: str) -> None:
    ruleset = load_rules([PACKS / pack])
    assert ruleset.rules and all(r.description for r in ruleset.rules)


def test_the_balanced_pack_is_the_balanced_policy_as_rules() -> None:
    t = Team(PACKS / "balanced.yaml")
    tool = t.say("finance-tool", FACT, kind=Kind.TOOL_RESULT)
    assert tool.verdict is Verdict.DELIVER and not any(r.startswith("rule:") for r in tool.rules)
    worker = t.say("worker", RUMOR)
    assert worker.verdict is Verdict.DELIVER_TAGGED and worker.tags["unverified"]
    assert "rule:tag-unverified" in worker.rules
    hub = t.say("lead", Claim("office count", "7"), role="summarizer")
    assert hub.verdict is Verdict.HOLD
    assert "rule:hold-unverified-from-hubs" in hub.rules and "rule:tag-unverified" in hub.rules
    (alert,) = [a for a in hub.alerts if a.rules == ["hold-unverified-from-hubs"]]
    assert alert.kind == "contained-claim" and alert.summary == "held office = 7 from hub lead"


def test_priority_then_severity_then_name_decide_between_fired_rules(tmp_path: Path) -> None:
    f = write(
        tmp_path,
        "r.yaml",
        """
- rule: z-block-low
  condition: sender == "a"
  actions: {block: {reason: low priority block}}
  priority: 1
- rule: quarantine-high
  condition: sender == "a"
  actions: {quarantine: {reason: high priority quarantine}}
  priority: 9
- rule: a-hold-high
  condition: sender == "a"
  actions: {hold: {}}
  priority: 9
""",
    )
    d = Team(f).say("a")
    assert d.verdict is Verdict.QUARANTINE  # priority 9 beats the block; quarantine > hold
    assert d.rules[-3:] == ["rule:a-hold-high", "rule:quarantine-high", "rule:z-block-low"]
    assert "rule quarantine-high: high priority quarantine" in d.reasons


def test_rules_only_tighten_the_built_in_containment(tmp_path: Path) -> None:
    f = write(tmp_path, "r.yaml", '- rule: wave\n  condition: "true"\n  actions: {deliver: true}\n')
    d = Team(f, policy="strict").say("a", RUMOR)
    assert d.verdict is Verdict.HOLD and "rule:wave" in d.rules


def test_exceptions_exempt_matching_value_tuples(tmp_path: Path) -> None:
    f = write(
        tmp_path,
        "r.yaml",
        """
- rule: no-chat
  condition: kind == "chat"
  actions: {quarantine: {}}
  exceptions:
    - name: lead-and-bot
      fields: [sender, meta.team]
      values: [[lead, ops], [bot, ops]]
""",
    )
    t = Team(f)
    assert t.say("lead", team="ops").verdict is Verdict.DELIVER
    assert t.say("lead", team="dev").verdict is Verdict.QUARANTINE
    assert t.say("eve", team="ops").verdict is Verdict.QUARANTINE


def test_later_files_disable_or_override_by_name_and_conflicts_are_errors(tmp_path: Path) -> None:
    base = write(
        tmp_path,
        "1.yaml",
        "- list: bad\n  items: [eve]\n"
        "- rule: r\n  condition: sender in bad\n  actions: {block: {}}\n  priority: 3\n",
    )
    off = write(tmp_path, "2.yaml", "- rule: r\n  enabled: false\n")
    assert Team(base, off).say("eve").verdict is Verdict.DELIVER
    more = write(tmp_path, "3.yaml", "- list: bad\n  items: [mallory]\n  append: true\n")
    assert Team(base, more).say("mallory").verdict is Verdict.BLOCK
    over = write(tmp_path, "4.yaml", "- rule: r\n  override: true\n  actions: {quarantine: {}}\n")
    ruleset = load_rules([base, over])
    assert ruleset.rules[0].verdict is Verdict.QUARANTINE and ruleset.rules[0].priority == 3
    clash = write(tmp_path, "5.yaml", '- rule: r\n  condition: "true"\n  actions: {hold: {}}\n')
    with pytest.raises(RuleError) as err:
        load_rules([base, clash])
    assert str(err.value).startswith(f"{clash}:1:")
    assert f"already defined at {base}:3" in str(err.value) and "override: true" in str(err.value)


@pytest.mark.parametrize(
    ("text", "where", "problem"),
    [
        (
            "- rule: r\n  condition: risk.scor > 1\n  actions: {block: {}}\n",
            ":2:14:",
            "did you mean 'risk.score'",
        ),
        (
            '- rule: r\n  condition: |\n    kind == "chat"\n      and sender == 3\n'
            "  actions: {block: {}}\n",
            ":4:",
            "rule r.condition",
        ),
        ("- rule: r\n  condition: 'true'\n  actions: {blok: {}}\n", ":3:", "blok"),
        ("- rule: r\n  macro: m\n  condition: 'true'\n", ":1:", "exactly one of rule, macro"),
        ("- requires: '99.0'\n", ":1:", "needs ostracon >= 99.0"),
        (
            "- rule: r\n  condition: 'true'\n  actions: {alert: {summary: '{nope}'}}\n",
            ":3:",
            "unknown placeholder {nope}",
        ),
        (
            "- macro: a\n  condition: b\n- macro: b\n  condition: a\n"
            "- rule: r\n  condition: a\n  actions: {hold: {}}\n",
            ":2:",
            "cycle",
        ),
        ("- rule: r\n  condition: [unclosed\n", ":3:", "invalid YAML"),
        ("- rule: r\n  condition: 'true'\n  actions: {}\n", ":3:", "no action"),
        (
            "- rule: r\n  condition: 'true'\n  actions: {hold: {}}\n  override: true\n",
            ":4:",
            "no earlier rule",
        ),
    ],
)
def test_bad_files_give_positioned_errors(
    tmp_path: Path, text: str, where: str, problem: str
) -> None:
    f = write(tmp_path, "bad.yaml", text)
    with pytest.raises(RuleError) as err:
        load_rules([f])
    message = str(err.value)
    assert message.startswith(f"{f}{where}"), message
    assert problem in message, message


def test_alert_accuse_and_block_feedback_render_their_templates(tmp_path: Path) -> None:
    f = write(
        tmp_path,
        "r.yaml",
        """
- rule: no-rumours
  condition: claims.any(c, c.key == "competitor funding")
  actions:
    block: {reason: rumour, feedback: "{sender}: cite a source for {claims}"}
    alert: {severity: critical, kind: rumour, summary: "{rule} caught {sender} ({meta.team})"}
    accuse: {reason: "{sender} spreads rumours"}
""",
    )
    d = Team(f).say("gossip", RUMOR, team="sales")
    assert d.verdict is Verdict.BLOCK
    assert d.feedback == "gossip: cite a source for competitor funding = 50000000 usd"
    (alert,) = [a for a in d.alerts if a.kind == "rumour"]
    assert alert.summary == "no-rumours caught gossip (sales)" and alert.severity == "critical"
    (acc,) = d.accusations
    assert (acc.accuser, acc.accused, acc.reason) == (
        "rule:no-rumours",
        "gossip",
        "gossip spreads rumours",
    )


def test_rate_limit_counts_the_senders_messages_in_message_time(tmp_path: Path) -> None:
    f = write(
        tmp_path,
        "r.yaml",
        "- rule: flood\n  condition: 'true'\n"
        "  actions: {rate_limit: {max: 2, window_s: 10, then: quarantine}}\n",
    )
    t = Team(f)
    got = [t.say("a", ts=float(s)).verdict for s in (0, 1, 2, 3, 15)]
    assert got == [
        Verdict.DELIVER,
        Verdict.DELIVER,
        Verdict.QUARANTINE,
        Verdict.QUARANTINE,
        Verdict.DELIVER,
    ]
    assert t.say("b", ts=3.0).verdict is Verdict.DELIVER  # per sender


def test_testing_consensus_pack_flags_judges_that_disagree() -> None:
    t = Team(PACKS / "testing-consensus.yaml")
    passed = Claim("test login passed", True)
    assert t.say("judge-1", passed, role="judge").verdict is Verdict.DELIVER_TAGGED
    assert t.say("judge-2", passed, role="judge").alerts == []
    split = t.say("judge-3", Claim("test login passed", False), role="judge")
    assert split.verdict is Verdict.HOLD
    (alert,) = [a for a in split.alerts if a.kind == "spec-ambiguity"]
    assert "judge-3" in alert.summary


def test_a_swapped_rule_set_with_a_higher_rate_limit_still_limits_known_senders(
    tmp_path: Path,
) -> None:
    def limit(n: int) -> Path:
        return write(
            tmp_path,
            f"r{n}.yaml",
            "- rule: flood\n  condition: 'true'\n"
            f"  actions: {{rate_limit: {{max: {n}, window_s: 100, then: quarantine}}}}\n",
        )

    t = Team(limit(2))
    assert [t.say("a", ts=float(s)).verdict for s in range(3)][-1] is Verdict.QUARANTINE
    stage = next(s for s in t.core.stages if isinstance(s, RulesStage))
    stage.swap(load_rules([limit(5)]))
    got = [t.say("a", ts=float(s)).verdict for s in range(3, 8)]
    assert got == [
        Verdict.DELIVER,
        Verdict.DELIVER,
        Verdict.QUARANTINE,
        Verdict.QUARANTINE,
        Verdict.QUARANTINE,
    ]


def test_lineage_origin_fields_and_conversation_r(tmp_path: Path) -> None:
    f = write(
        tmp_path,
        "r.yaml",
        """
- rule: rumour-from-scraper
  description: Claims that started at the scraper's chat are quarantined wherever they go.
  condition: '"ext-scraper" in lineage.origin_agents and "tool_result" not in lineage.origin_kinds'
  actions: {quarantine: {}}
- rule: cascade-warning
  description: Early warning above one tags everything.
  condition: conversation.r > 1
  actions: {tag: {cascade: "true"}}
""",
    )
    t = Team(f)
    first = t.say("ext-scraper", RUMOR, model_family="gpt")  # m-1: a root in this message
    assert first.verdict is Verdict.QUARANTINE
    env = Envelope(
        id="m-2",
        conversation="c",
        sender="writer",
        kind=Kind.CHAT,
        content="",
        claims=[RUMOR],
        parents=["m-1"],
        meta={"model_family": "gpt"},  # same family: no independent confirmation
    )
    # m-1 was quarantined: writer never saw it, so its repeat is a root of its own.
    assert t.core.decide(env).verdict is Verdict.DELIVER_TAGGED
    t.say("finance-tool", FACT, kind=Kind.TOOL_RESULT)  # m-3
    assert t.say("ext-scraper", FACT).verdict is Verdict.DELIVER  # grounded: origin is a tool
    assert not any(r == "rule:cascade-warning" for r in first.rules)  # no R estimated yet
    watch = t.core.state.monitors["c"]
    watch.r = 1.5  # as the monitors would after a cascade estimate
    assert "rule:cascade-warning" in t.say("a").rules
