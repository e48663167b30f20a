"""Adversaries against the byzantine layer, in process: equivocators, colluding false
accusers, Sybil identities, a confidence spoofer; and the blocklist's determinism.

Signed scenarios go through the real router with ``identity.mode: enforce`` and HMAC keys
(ostracon.identity), so ``signed`` is what the identity check decided, not a test flag.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time

import msgspec
import pytest

from ostracon.byzantine import Trust, compute_blocklist, deferred, evidence_weight, stage_of
from ostracon.config import ByzantineConfig, Config, ConfigError, parse_config
from ostracon.decision import Verdict
from ostracon.envelope import Claim, Envelope, Kind
from ostracon.identity import sign_hmac
from ostracon.pipeline import build_core
from ostracon.routing import Outcome, Route
from ostracon.store import AccusationMade, AgentBlocked, AgentUnblocked, decode_event
from ostracon.transport.memory import MemoryBus

AGENTS = ["alice", "bob", "carol", "dave", "eve", "mallory", "trent", "victor", "search"]
IDENTITY = "identity:\n  mode: enforce\n  agents:\n" + "".join(
    f"    {a}: {{hmac_secret: secret-{a}}}\n" for a in AGENTS
)


class Team:
    """A memory bus and a message counter; signs every envelope when ``signed``."""

    def __init__(self, yaml: str = "", signed: bool = False) -> None:
        self.signed = signed
        self.bus = MemoryBus(parse_config((IDENTITY if signed else "") + yaml))
        self.n = 0

    @property
    def state(self):  # type: ignore[no-untyped-def]
        return self.bus.core.state

    def say(
        self,
        sender: str,
        recipients: list[str] | None = None,
        claims: dict[str, object] | None = None,
        kind: Kind = Kind.CHAT,
        conversation: str = "c1",
        **extra: object,
    ) -> Outcome:
        self.n += 1
        env = Envelope(
            id=f"m{self.n}",
            conversation=conversation,
            sender=sender,
            kind=kind,
            content=str(extra.pop("content", f"{sender} says {claims}")),
            recipients=recipients or [],
            claims=[Claim(k, v) for k, v in (claims or {}).items()],  # type: ignore[arg-type]
            ts=float(extra.pop("ts", time.time())),  # type: ignore[arg-type]
            **extra,  # type: ignore[arg-type]
        )
        if self.signed:
            env = sign_hmac(env, f"secret-{sender}")
        return self.bus.publish(env)

    def accuse(self, accuser: str, accused: str, evidence: list[str], **meta: object) -> Outcome:
        return self.say(
            accuser,
            kind=Kind.ACCUSATION,
            content=f"{accused} lied",
            meta={"accused": accused, "evidence": evidence, **meta},
        )


def verdict(outcome: Outcome) -> Verdict:
    assert outcome.decision is not None
    return outcome.decision.verdict


def kinds(outcome: Outcome) -> list[str]:
    assert outcome.decision is not None
    return [a.kind for a in outcome.decision.alerts]


# ------------------------------------------------------------------ equivocation


def test_signed_equivocator_is_blocked_within_three_of_its_messages() -> None:
    team = Team(signed=True)
    first = team.say("eve", ["bob"], {"revenue": "12M"})
    assert verdict(first) is not Verdict.BLOCK
    second = team.say("eve", ["carol"], {"revenue": "10M"})
    assert verdict(second) is Verdict.BLOCK
    assert second.decision is not None
    alert = next(a for a in second.decision.alerts if a.kind == "equivocation")
    assert alert.severity == "critical" and alert.evidence == ["m1", "m2"]
    assert "proof" in alert.summary and "bob" in alert.summary and "carol" in alert.summary
    # The proof goes to the state topic in the same outcome, before the main record.
    routes = [o.route for o in second.outputs]
    assert routes[-1] is Route.QUARANTINE and routes.count(Route.STATE) == 2
    events = [decode_event(o.value) for o in second.outputs if o.route is Route.STATE]
    block = next(e for e in events if isinstance(e, AgentBlocked))
    accusation = next(e for e in events if isinstance(e, AccusationMade))
    assert block.agent == "eve" and block.evidence == ["m1", "m2"]
    assert accusation.source == "equivocation" and accusation.proven == ["m1", "m2"]
    assert "eve" in team.state.blocklist  # applied at once: the next record meets it
    third = team.say("eve", ["dave"], {"headcount": 40})
    assert verdict(third) is Verdict.BLOCK and kinds(third) == ["blocklisted"]
    assert third.decision is not None
    assert "equivocation" in third.decision.reasons[0]


def test_unsigned_equivocation_is_a_suspicion_only_by_default() -> None:
    team = Team()
    team.say("eve", ["bob"], {"revenue": "12M"})
    second = team.say("eve", ["carol"], {"revenue": "10M"})
    assert second.decision is not None
    alert = next(a for a in second.decision.alerts if a.kind == "equivocation")
    assert alert.severity == "warning" and "unsigned" in alert.summary
    assert verdict(second) is not Verdict.BLOCK and not second.decision.accusations
    assert "eve" not in team.state.blocklist


def test_unsigned_equivocation_can_be_configured_to_block() -> None:
    team = Team("byzantine:\n  unsigned_equivocation: block\n")
    team.say("eve", ["bob"], {"revenue": "12M"})
    assert verdict(team.say("eve", ["carol"], {"revenue": "10M"})) is Verdict.BLOCK
    assert "eve" in team.state.blocklist


def test_changes_of_mind_and_corrections_are_not_equivocation() -> None:
    team = Team(signed=True)
    # Broadcasts: everyone sees both values.
    team.say("alice", [], {"budget": "5M"})
    assert "equivocation" not in kinds(team.say("alice", [], {"budget": "6M"}))
    # The same audience twice, and a subset that already had the first value.
    team.say("bob", ["carol", "dave"], {"eta": "May"})
    assert "equivocation" not in kinds(team.say("bob", ["carol", "dave"], {"eta": "June"}))
    assert "equivocation" not in kinds(team.say("bob", ["carol"], {"eta": "July"}))
    # A value ostracon convicted (a tool result said otherwise), corrected to others.
    team.say("carol", ["dave"], {"churn": "9%"})
    team.say("search", ["carol", "dave"], {"churn": "7%"}, kind=Kind.TOOL_RESULT)
    fixed = team.say("carol", ["eve"], {"churn": "7%"})
    assert "equivocation" not in kinds(fixed) and verdict(fixed) is not Verdict.BLOCK
    assert not team.state.blocklist


def test_a_change_of_mind_after_new_information_is_not_equivocation() -> None:
    """Proof needs concurrent statements: between them the sender was told nothing new
    about the key (by another agent or a tool), within byzantine.equivocation_window_s."""
    team = Team(signed=True)
    team.say("eve", ["bob"], {"status": "running"})
    team.say("alice", ["eve"], {"status": "done"})  # eve learns something
    later = team.say("eve", ["carol"], {"status": "done"})
    assert verdict(later) is not Verdict.BLOCK and "equivocation" not in kinds(later)
    assert later.decision is not None
    (maybe,) = [a for a in later.decision.alerts if a.kind == "possible-equivocation"]
    assert maybe.severity == "info" and not later.decision.accusations
    # A tool result to the sender is new information too.
    team.say("eve", ["bob"], {"build": "red"})
    team.say("search", ["eve"], {"build": "green"}, kind=Kind.TOOL_RESULT)
    assert verdict(team.say("eve", ["carol"], {"build": "green"})) is not Verdict.BLOCK
    assert not team.state.blocklist
    # What others were told, and eve was not, does not excuse her.
    team.say("dave", ["bob"], {"eta": "May"})
    team.say("alice", ["bob"], {"eta": "June"})
    team.say("eve", ["dave"], {"eta": "May"})
    assert verdict(team.say("eve", ["alice"], {"eta": "July"})) is Verdict.BLOCK
    assert "eve" in team.state.blocklist


def test_a_change_of_mind_long_after_is_not_equivocation() -> None:
    team = Team("byzantine:\n  equivocation_window_s: 60\n", signed=True)
    now = time.time()
    team.say("eve", ["bob"], {"status": "running"}, ts=now - 120)
    later = team.say("eve", ["carol"], {"status": "done"}, ts=now)
    assert verdict(later) is not Verdict.BLOCK and "possible-equivocation" in kinds(later)
    # Within the window, with nothing learnt: proof, blocked.
    team.say("mallory", ["bob"], {"status": "running"}, ts=now - 30)
    assert verdict(team.say("mallory", ["carol"], {"status": "done"}, ts=now)) is Verdict.BLOCK
    assert set(team.state.blocklist) == {"mallory"}


# ------------------------------------------------------------------ accusations


def test_accusation_envelopes_are_checked_and_invalid_ones_alerted() -> None:
    team = Team()
    for meta, problem in [
        ({}, "meta.accused"),
        ({"accused": "alice"}, "itself"),
        ({"accused": "bob", "evidence": "m1"}, "list of message ids"),
        ({"accused": "bob", "evidence": [f"m{i}" for i in range(40)]}, "more than 32"),
    ]:
        out = team.say("alice", kind=Kind.ACCUSATION, content="x", meta=meta)
        assert out.decision is not None and not out.decision.accusations
        alert = next(a for a in out.decision.alerts if a.kind == "invalid-accusation")
        assert problem in alert.summary


def lie_setup(team: Team) -> str:
    """A tool establishes revenue = 10M; mallory then asserts 12M (Red). Returns its id."""
    team.say("search", ["alice", "bob", "carol"], {"revenue": "10M"}, kind=Kind.TOOL_RESULT)
    lie = team.say("mallory", ["alice", "bob", "carol"], {"revenue": "12M"})
    assert verdict(lie) is Verdict.BLOCK  # Red: contradicts the tool result
    assert lie.envelope is not None
    return lie.envelope.id


def test_quorum_blocks_a_liar_at_f_plus_one_proven_accusers() -> None:
    team = Team(signed=True, yaml="byzantine:\n  f: 1\n")
    lie = lie_setup(team)
    first = team.accuse("alice", "mallory", [lie])
    assert first.decision is not None
    assert first.decision.accusations[0].proven == [lie]
    assert "mallory" not in team.state.blocklist  # one accuser: not f + 1
    assert team.state.accusers["mallory"] == frozenset({"alice"})
    second = team.accuse("bob", "mallory", [lie])
    assert "mallory" in team.state.blocklist
    assert "accused by 2" in team.state.blocklist["mallory"]
    blocked_alerts = [o for o in second.outputs if o.route is Route.ALERTS]
    assert any(b"agent-blocked" in (o.value or b"") for o in blocked_alerts)
    assert verdict(team.say("mallory", ["carol"], {"cost": 3})) is Verdict.BLOCK


def test_f_colluding_false_accusers_cannot_block_an_honest_agent() -> None:
    """Assumption (docs/byzantine.md): at most f agents are Byzantine; an accusation counts
    fully only when its evidence is a message by the accused that ostracon found Red or
    convicted; otherwise it weighs ``unproven_weight``; evidence ostracon found right
    (grounded) refutes it and costs the accuser credibility."""
    team = Team(signed=True, yaml="byzantine:\n  f: 2\n")
    # alice is honest: a grounded claim (she cites the tool) and an unverified one.
    team.say("search", ["alice"], {"users": "1200"}, kind=Kind.TOOL_RESULT)
    grounded = team.say("alice", ["bob"], {"users": "1200"})
    assert grounded.decision is not None and grounded.decision.claims[0].label == "green"
    yellow = team.say("alice", ["bob"], {"launch": "friday"})
    colluders = ["mallory", "trent", "victor"]  # f + 1 of them, even
    for c in colluders:
        team.accuse(c, "alice", ["m2", "m3"])
    assert "alice" not in team.state.blocklist
    trust = team.state.byzantine
    assert all(trust.credibility[c] < 1.0 for c in colluders)  # refuted by m2
    # Citing only the unverified message: weight 0.25 each, 0.75 < f + 1 = 3.
    assert yellow.envelope is not None
    team2 = Team(signed=True, yaml="byzantine:\n  f: 2\n")
    team2.say("alice", ["bob"], {"launch": "friday"})
    for c in colluders:
        team2.accuse(c, "alice", ["m1"])
    assert "alice" not in team2.state.blocklist
    assert team2.state.accusers["alice"] == frozenset(colluders)


def test_sybil_identities_cannot_accuse() -> None:
    team = Team(signed=True)
    lie = lie_setup(team)
    # Unregistered names: refused by the identity check before any stage (enforce) ...
    env = Envelope(
        id="s1",
        conversation="c1",
        sender="sybil-1",
        kind=Kind.ACCUSATION,
        content="x",
        meta={"accused": "mallory", "evidence": [lie]},
        ts=time.time(),
    )
    out = team.bus.publish(sign_hmac(env, "whatever"))
    assert out.decision is None and out.error is not None
    # ... and, without enforcement, by the byzantine stage and the blocklist function.
    open_team = Team("identity:\n  agents:\n    alice: {hmac_secret: a}\n")
    sybil = open_team.accuse("sybil-1", "alice", [])
    assert sybil.decision is not None and not sybil.decision.accusations
    assert "invalid-accusation" in kinds(sybil)
    trust = Trust()
    cfg = ByzantineConfig(f=0)
    for i in range(50):
        e = AccusationMade(
            id=f"a{i}",
            at=1.0,
            by="agent:x",
            accuser=f"sybil-{i}",
            accused="alice",
            reason="r",
            proven=["m1"],
        )
        trust.accusations[e.id] = e
    blocklist, accusers, _ = compute_blocklist(trust, cfg, lambda name: name == "alice")
    assert blocklist == {} and "alice" not in accusers
    assert "alice" in compute_blocklist(trust, cfg, None)[0]  # the guard made the difference


def test_unverified_accusations_do_not_count_while_signing_is_on() -> None:
    """identity.mode permissive lets unsigned and forged messages through: anyone can write
    a registered agent's name. Their accusations must count for nothing, or one forged
    message under ``matching`` blocks two honest agents."""
    team = Team(
        "identity:\n  mode: permissive\n  agents:\n"
        + "".join(f"    {a}: {{hmac_secret: secret-{a}}}\n" for a in AGENTS)
        + "byzantine:\n  strategy: matching\n"
    )
    team.say("alice", ["bob"], {"launch": "friday"})
    for claimed in ("bob", "carol"):
        out = team.accuse(claimed, "alice", ["m1"])  # unsigned, claiming a registered name
        assert out.decision is not None and not out.decision.accusations
        alert = next(a for a in out.decision.alerts if a.kind == "invalid-accusation")
        assert "signed" in alert.summary
    assert not team.state.blocklist and "alice" not in team.state.accusers
    # The genuine, signed accusation still counts.
    team.signed = True
    assert team.accuse("bob", "alice", ["m1"]).decision.accusations  # type: ignore[union-attr]
    assert team.state.accusers["alice"] == frozenset({"bob"})


def test_an_agent_named_like_a_human_or_rule_cannot_accuse_as_one() -> None:
    """Internal accuser names (human:, rule:, verifier:, ostracon) skip the Sybil guard and
    weigh 1; an agent on the bus must not be able to borrow them."""
    team = Team("byzantine:\n  f: 0\n")  # open membership: the Sybil guard is off
    team.say("alice", ["bob"], {"launch": "friday"})
    for name in ("human:root", "rule:ops", "verifier:x", "ostracon"):
        out = team.accuse(name, "alice", ["m1"])
        assert out.decision is not None and not out.decision.accusations
        assert "invalid-accusation" in kinds(out)
    assert not team.state.blocklist
    # Events that claim an agent source under an internal name count as that agent's.
    trust = Trust()
    trust.accusations["x"] = AccusationMade(
        id="x", at=1.0, by="agent:human:root", accuser="human:root", accused="alice",
        reason="r", proven=["m1"], source="agent",
    )  # fmt: skip
    for strategy in ("quorum", "matching"):
        cfg = ByzantineConfig(f=0, strategy=strategy)  # type: ignore[arg-type]
        assert compute_blocklist(trust, cfg, lambda n: n == "alice")[0] == {}


def run_spoof_scenario(confidence: object | None) -> tuple[list[object], dict[str, str], Trust]:
    """mallory lies and accuses alice; with ``confidence`` set, every message of mallory
    claims it (CP-WBFT's collapse: a sender reporting confidence 1.0)."""
    team = Team(yaml="byzantine:\n  f: 1\n")
    meta = {"confidence": confidence} if confidence is not None else {}
    team.say("search", ["alice", "bob"], {"revenue": "10M"}, kind=Kind.TOOL_RESULT)
    outs = [team.say("mallory", ["alice", "bob"], {"revenue": "12M"}, meta=meta)]
    outs.append(team.say("alice", ["bob"], {"launch": "friday"}))
    outs.append(team.accuse("mallory", "alice", ["m3"], **meta))
    outs.append(team.accuse("bob", "mallory", ["m2"]))
    decisions = [msgspec.structs.replace(o.decision, id="", alerts=[]) for o in outs if o.decision]
    return decisions, dict(team.state.blocklist), team.state.byzantine


def test_a_confidence_spoofer_changes_nothing() -> None:
    plain = run_spoof_scenario(None)
    for spoof in (1.0, 0.0, "1.0"):
        decisions, blocklist, trust = run_spoof_scenario(spoof)
        assert decisions == plain[0]
        assert blocklist == plain[1]
        assert trust.credibility == plain[2].credibility


def test_human_unblock_overrides_accusations_made_before_it() -> None:
    team = Team(yaml="byzantine:\n  f: 1\n")
    lie = lie_setup(team)
    team.accuse("alice", "mallory", [lie])
    team.accuse("bob", "mallory", [lie])
    assert "mallory" in team.state.blocklist
    core = team.bus.core
    alerts = core.apply(AgentUnblocked(id="u1", at=time.time(), by="human:ops", agent="mallory"))
    assert "mallory" not in team.state.blocklist
    assert [a.kind for a in alerts] == ["agent-unblocked"]
    assert "mallory" not in team.state.accusers
    # Proven accusations overridden by a human do not cost the accusers credibility.
    assert "alice" not in team.state.byzantine.credibility
    # New accusations after the unblock count again.
    time.sleep(0.01)
    team.accuse("alice", "mallory", [lie])
    assert "mallory" not in team.state.blocklist
    team.accuse("bob", "mallory", [lie])
    assert "mallory" in team.state.blocklist


def test_overridden_unproven_accusations_cost_credibility() -> None:
    trust = Trust()
    trust.accusations["a"] = AccusationMade(
        id="a", at=1.0, by="agent:bob", accuser="bob", accused="alice", reason="r"
    )
    trust.unblocked["alice"] = 2.0
    _, accusers, credibility = compute_blocklist(trust, ByzantineConfig(), None)
    assert credibility == {"bob": 0.5} and "alice" not in accusers
    # A later accusation counts again.
    trust.accusations["b"] = AccusationMade(
        id="b",
        at=3.0,
        by="agent:carol",
        accuser="carol",
        accused="alice",
        reason="r",
        proven=["m9"],
    )
    blocklist, accusers, _ = compute_blocklist(trust, ByzantineConfig(f=0), None)
    assert accusers["alice"] == frozenset({"carol"}) and "alice" in blocklist


# ------------------------------------------------------------- the blocklist function


def accusation(i: int, accuser: str, accused: str, at: float = 1.0, proven: bool = False):  # type: ignore[no-untyped-def]
    return AccusationMade(
        id=f"a{i}",
        at=at,
        by=f"agent:{accuser}",
        accuser=accuser,
        accused=accused,
        reason=f"{accuser} vs {accused}",
        proven=[f"m{i}"] if proven else [],
    )


MATCHING_EVENTS = [
    accusation(1, "h1", "b1"),
    accusation(2, "h2", "b1"),
    accusation(3, "h3", "b1"),
    accusation(4, "h4", "b2"),
    accusation(5, "b1", "h5"),
    accusation(6, "b2", "h1"),
    accusation(7, "b3", "h2"),
    accusation(8, "b3", "h6"),
    accusation(9, "h6", "b3"),
]


def blocklist_of(events: list[AccusationMade], cfg: ByzantineConfig) -> dict[str, str]:
    trust = Trust()
    for e in events:
        trust.accusations[e.id] = e
    return compute_blocklist(trust, cfg, None)[0]


def test_matching_blocks_every_byzantine_agent_at_most_one_honest_accuser_each() -> None:
    blocked = blocklist_of(MATCHING_EVENTS, ByzantineConfig(strategy="matching"))
    byzantine = {a for a in blocked if a.startswith("b")}
    honest = {a for a in blocked if a.startswith("h")}
    assert byzantine == {"b1", "b2", "b3"}
    assert len(honest) <= len(byzantine)  # each matched edge has a Byzantine end


def test_matching_spends_no_honest_agent_on_an_agent_already_blocked() -> None:
    """An equivocator blocked by proof (or by a human) is blocked already: matching its
    false accusation of an honest agent would block that agent for nothing."""
    trust = Trust()
    trust.accusations["a1"] = accusation(1, "eve", "alice")
    trust.accusations["a2"] = accusation(2, "h1", "b1")
    trust.blocks["k"] = AgentBlocked(id="k", at=2.0, by="ostracon", agent="eve", reason="equiv")
    blocked = compute_blocklist(trust, ByzantineConfig(strategy="matching"), None)[0]
    assert set(blocked) == {"eve", "h1", "b1"}
    # The same for an agent a verifier proved a liar: its accusation of carol is not matched.
    trust.accusations["a3"] = accusation(3, "mallory", "carol")
    trust.accusations["a4"] = msgspec.structs.replace(
        accusation(4, "verifier:sql", "mallory", proven=True), source="verifier"
    )
    blocked = compute_blocklist(trust, ByzantineConfig(strategy="matching"), None)[0]
    assert set(blocked) == {"eve", "h1", "b1", "mallory"}


def test_same_events_in_any_order_give_the_same_blocklist() -> None:
    rng = random.Random(5)
    events: list[object] = [*MATCHING_EVENTS]
    events += [accusation(20 + i, f"h{i}", "b4", at=float(i), proven=i % 2 == 0) for i in range(4)]
    events.append(AgentUnblocked(id="u", at=2.5, by="human:ops", agent="b4"))
    events.append(AgentBlocked(id="k", at=0.5, by="human:ops", agent="h9", reason="manual"))
    for strategy in ("quorum", "matching"):
        cfg = ByzantineConfig(strategy=strategy, f=1)  # type: ignore[arg-type]
        results = set()
        for _ in range(20):
            core = build_core(msgspec.structs.replace(Config(), byzantine=cfg))
            order = events[:]
            rng.shuffle(order)
            for e in order:
                core.apply(e)  # type: ignore[arg-type]
            results.add(json.dumps(core.state.blocklist, sort_keys=True))
        assert len(results) == 1, strategy
        assert "h9" in json.loads(results.pop())


def test_matching_is_the_same_in_processes_with_different_hash_seeds() -> None:
    """Two instances are two processes: str hashing differs, the matching must not."""
    code = (
        "import json,sys; from tests.unit.test_byzantine import MATCHING_EVENTS, blocklist_of;"
        "from ostracon.config import ByzantineConfig;"
        "print(json.dumps(blocklist_of(MATCHING_EVENTS, ByzantineConfig(strategy='matching'))))"
    )
    outs = set()
    for seed in ("1", "2", "3", "4"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        outs.add(done.stdout)
    assert len(outs) == 1


def test_quorum_discounts_tainted_evidence_and_stops_counting_blocked_accusers() -> None:
    cfg = ByzantineConfig(f=1)
    tainted = [
        msgspec.structs.replace(accusation(i, f"h{i}", "x", proven=True), tainted=True)
        for i in range(2)
    ]
    assert "x" not in blocklist_of(tainted, cfg)  # 2 * 0.25 < 2
    assert "x" in blocklist_of([accusation(i, f"h{i}", "x", proven=True) for i in range(2)], cfg)
    # y's accusers are blocked by a human: their accusations stop counting.
    events = [accusation(i, f"k{i}", "y", proven=True) for i in range(2)]
    trust = Trust()
    for e in events:
        trust.accusations[e.id] = e
    for i in range(2):
        trust.blocks[f"b{i}"] = AgentBlocked(
            id=f"b{i}", at=1.0, by="human:o", agent=f"k{i}", reason="manual"
        )
    assert "y" not in compute_blocklist(trust, cfg, None)[0]


def test_rules_can_read_sender_accusations(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "- rule: accused-once\n"
        "  description: tag agents someone accused\n"
        "  condition: sender.accusations >= 1\n"
        "  actions: {tag: {accused: 'yes'}}\n"
    )
    team = Team(f"rules:\n  paths: [{rules}]\n")
    team.say("alice", ["bob"], {"launch": "friday"})
    team.accuse("bob", "alice", ["m1"])
    out = team.say("alice", ["bob"], {"launch": "friday"})
    assert out.decision is not None and out.decision.tags.get("accused") == "yes"


def test_bad_byzantine_config_names_the_field() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config("byzantine:\n  strategy: vote\n", "o.yaml")
    assert str(err.value).startswith("o.yaml:2: byzantine.strategy")
    with pytest.raises(ConfigError, match=r"byzantine\.unproven_weight"):
        parse_config("byzantine:\n  unproven_weight: 2\n", "o.yaml")


def test_stage_is_in_the_default_pipeline_after_the_rules() -> None:
    core = build_core(Config())
    names = [s.name for s in core.stages]
    assert stage_of(core) is not None and names.index("byzantine") > names.index("lineage")
    assert stage_of(build_core(parse_config("byzantine:\n  enabled: false\n"))) is None


def test_repeated_accusations_write_no_new_events() -> None:
    """A flood of the same accusation is one state event (the blocklist is recomputed per
    event); stronger evidence is written again."""
    team = Team(yaml="byzantine:\n  f: 1\n")
    team.say("alice", ["bob"], {"launch": "friday"})
    written = 0
    for _ in range(50):
        out = team.accuse("mallory", "alice", ["m1"])
        written += sum(o.route is Route.STATE for o in out.outputs)
    assert written == 1 and len(team.state.byzantine.accusations) == 1
    lie = lie_setup(team)
    team.accuse("bob", "mallory", ["m1"])  # not by mallory: proves nothing
    stronger = team.accuse("bob", "mallory", [lie])
    assert [o.route for o in stronger.outputs].count(Route.STATE) == 1


def test_a_red_claim_is_a_verifier_accusation_when_configured() -> None:
    team = Team(yaml="byzantine:\n  accuse_red: true\n  f: 0\n")
    lie = lie_setup(team)
    trust = team.state.byzantine
    [event] = trust.accusations.values()
    assert event.accuser == "verifier:grounded-contradiction" and event.proven == [lie]
    assert event.source == "verifier" and "mallory" in team.state.blocklist  # f + 1 = 1


def test_catching_up_in_one_recompute_gives_the_incremental_result() -> None:
    events: list[object] = [*MATCHING_EVENTS, AgentUnblocked(id="u", at=5.0, by="h", agent="h1")]
    incremental, batched = build_core(Config()), build_core(Config())
    for e in events:
        incremental.apply(e)  # type: ignore[arg-type]
    with deferred(batched) as alerts:
        for e in events:
            assert batched.apply(e) == []  # type: ignore[arg-type]
    assert batched.state.blocklist == incremental.state.blocklist
    assert sorted(a.agents[0] for a in alerts) == sorted(batched.state.blocklist)


def test_an_accusation_built_on_a_red_claim_is_tainted() -> None:
    team = Team()
    lie = lie_setup(team)
    honest = team.say("alice", ["bob"], {"launch": "friday"})
    assert honest.envelope is not None
    out = team.say(
        "bob",
        kind=Kind.ACCUSATION,
        content="alice contradicts mallory",
        parents=[lie],
        meta={"accused": "alice", "evidence": [honest.envelope.id]},
    )
    assert out.decision is not None
    [acc] = out.decision.accusations
    assert acc.tainted and not acc.proven and not acc.refuted
    assert evidence_weight(acc, ByzantineConfig()) == 0.25 * 0.25


def test_accusing_unknown_names_or_too_many_agents_is_refused() -> None:
    team = Team("byzantine:\n  max_accused_per_accuser: 2\n")
    for agent in ("alice", "bob", "carol"):
        team.say(agent, ["dave"], {"x": agent})
    ghost = team.accuse("mallory", "ghost-1", [])
    assert ghost.decision is not None and not ghost.decision.accusations
    alert = next(a for a in ghost.decision.alerts if a.kind == "invalid-accusation")
    assert "ghost-1 is not an agent ostracon knows" in alert.summary
    assert team.accuse("mallory", "alice", ["m1"]).decision.accusations  # type: ignore[union-attr]
    assert team.accuse("mallory", "bob", ["m2"]).decision.accusations  # type: ignore[union-attr]
    third = team.accuse("mallory", "carol", ["m3"])
    assert third.decision is not None and not third.decision.accusations
    assert "max_accused_per_accuser" in third.decision.alerts[-1].summary
    # Accusing one already accused again is within the cap.
    assert team.accuse("mallory", "alice", ["m1"]).decision is not None
    assert set(team.state.byzantine.accused_by["mallory"]) == {"alice", "bob"}
    # With identities registered, an unregistered name is unknown even if it sent.
    reg = Team("identity:\n  agents:\n    alice: {hmac_secret: a}\n    bob: {hmac_secret: b}\n")
    reg.say("sybil", ["alice"], {"x": 1})
    out = reg.accuse("bob", "sybil", ["m1"])
    assert out.decision is not None and not out.decision.accusations


def random_events(rng: random.Random, n: int) -> list[object]:
    """Accusations of every kind of weight between 30 agents, and a few blocks/unblocks."""
    agents = [f"a{i}" for i in range(30)]
    events: list[object] = []
    for i in range(n):
        accuser, accused = rng.sample(agents, 2)
        kind = rng.random()
        events.append(
            AccusationMade(
                id=f"e{i}",
                at=float(rng.randrange(10)),
                by=f"agent:{accuser}",
                accuser=accuser if kind > 0.1 else "verifier:v",
                accused=accused,
                reason=f"r{i}",
                source="agent" if kind > 0.1 else "verifier",
                proven=["m"] if kind < 0.5 else [],
                refuted=["n"] if kind > 0.85 else [],
                tainted=rng.random() < 0.2,
            )
        )
    events.append(AgentUnblocked(id="u1", at=4.0, by="human:ops", agent="a3"))
    events.append(AgentBlocked(id="b1", at=5.0, by="human:ops", agent="a7", reason="manual"))
    return events


def test_the_incremental_quorum_equals_the_whole_computation() -> None:
    """Accusations applied one at a time (the router's path) give exactly what computing
    from the whole set gives, in any order: blocklist, counted accusers, credibility."""
    rng = random.Random(11)
    for f in (0, 1, 2):
        events = random_events(rng, 300)
        cfg = ByzantineConfig(f=f)
        core = build_core(msgspec.structs.replace(Config(), byzantine=cfg))
        rng.shuffle(events)
        for e in events:
            core.apply(e)  # type: ignore[arg-type]
        trust = core.state.byzantine
        whole = Trust(
            accusations=dict(trust.accusations),
            blocks=dict(trust.blocks),
            unblocked=dict(trust.unblocked),
        )
        blocklist, accusers, credibility = compute_blocklist(whole, cfg, None)
        assert core.state.blocklist == blocklist and blocklist
        assert core.state.accusers == accusers
        assert {a: c for a, c in trust.credibility.items() if c != 1.0} == {
            a: c for a, c in credibility.items() if c != 1.0
        }


def test_an_accusation_flood_redoes_only_what_it_touches(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """1000 accusations: the whole blocklist is computed once (the first), and each later
    one re-tallies a bounded number of accused (its own, and those of an accuser whose
    credibility it changed: at most max_accused_per_accuser each)."""
    import ostracon.byzantine as byz

    calls = {"whole": 0, "retally": 0}
    whole, retally = byz.compute_blocklist, byz.Tally._retally

    def counting_whole(*a, **k):  # type: ignore[no-untyped-def]
        calls["whole"] += 1
        return whole(*a, **k)

    def counting_retally(self, *a, **k):  # type: ignore[no-untyped-def]
        calls["retally"] += 1
        return retally(self, *a, **k)

    monkeypatch.setattr(byz, "compute_blocklist", counting_whole)
    monkeypatch.setattr(byz.Tally, "_retally", counting_retally)
    core = build_core(Config())
    rng = random.Random(3)
    for i in range(1000):
        accuser = f"x{i % 100}"
        accused = f"y{rng.randrange(16)}" if i % 3 else f"x{rng.randrange(100)}"
        core.apply(
            AccusationMade(
                id=f"f{i}",
                at=1.0,
                by=f"agent:{accuser}",
                accuser=accuser,
                accused=accused,
                reason="flood",
                proven=["m"] if i % 7 == 0 else [],
                refuted=["n"] if i % 5 == 0 else [],
            )
        )
    assert calls["whole"] == 1
    assert calls["retally"] <= 1000 * (1 + 2 * 16)
    trust = core.state.byzantine
    fresh = Trust(accusations=dict(trust.accusations))
    assert core.state.blocklist == whole(fresh, ByzantineConfig(), None)[0]
