"""Labels, policies, enforcement and recall, through the real core (build_core)."""

from __future__ import annotations

from typing import Any, Literal

import msgspec
import pytest

from ostracon.config import Config, ContainmentConfig
from ostracon.core import Core
from ostracon.decision import Decision, Label, Verdict
from ostracon.envelope import Claim, Envelope, Kind, decode
from ostracon.pipeline import build_core
from ostracon.routing import H_VERDICT, Outcome, Route, header
from ostracon.store import QuarantineResolved
from ostracon.transport.memory import MemoryBus

REVENUE_TRUE = Claim("q3 revenue", "8.1M USD")
REVENUE_FALSE = Claim("q3 revenue", "12M USD")
RUMOR = Claim("competitor funding", "50M USD")


def core(**containment: Any) -> Core:
    return build_core(Config(containment=ContainmentConfig(**containment)))


class Team:
    """Sends messages through one core and keeps the decisions by message id."""

    def __init__(self, **containment: Any) -> None:
        self.core = core(**containment)
        self.n = 0
        self.decisions: dict[str, Decision] = {}

    def say(
        self,
        sender: str,
        *claims: Claim,
        kind: Kind = Kind.CHAT,
        parents: list[str] | None = None,
        recipients: list[str] | None = None,
        conversation: str = "c",
        ts: float | None = None,
        **meta: Any,
    ) -> Decision:
        self.n += 1
        env = Envelope(
            id=f"m-{self.n}",
            conversation=conversation,
            sender=sender,
            kind=kind,
            content="",
            claims=list(claims),
            parents=parents or [],
            recipients=recipients or [],
            ts=ts,
            meta=meta,
        )
        d = self.core.decide(env)
        self.decisions[env.id] = d
        return d


def label(d: Decision) -> Label:
    (claim,) = d.claims
    return claim.label


def test_tool_result_is_green_and_a_repeat_of_it_is_green_too() -> None:
    t = Team()
    tool = t.say("finance-tool", REVENUE_TRUE, kind=Kind.TOOL_RESULT)
    assert tool.verdict is Verdict.DELIVER and label(tool) is Label.GREEN
    assert tool.claims[0].grounded and tool.claims[0].depth == 0
    again = t.say("writer", REVENUE_TRUE, parents=["m-1"], role="summarizer")
    assert again.verdict is Verdict.DELIVER and label(again) is Label.GREEN
    assert again.claims[0].depth == 1 and again.claims[0].origins == ["c:m-1#0"]
    assert again.claims[0].reach == 2


def test_human_and_trusted_sources_ground_claims() -> None:
    t = Team(trusted_sources=["kb"])
    assert label(t.say("ops-lead", REVENUE_TRUE, kind=Kind.HUMAN)) is Label.GREEN
    assert label(t.say("kb", RUMOR)) is Label.GREEN


def test_claim_citing_a_tool_result_that_states_it_is_grounded() -> None:
    t = Team()
    t.say("finance-tool", REVENUE_TRUE, kind=Kind.TOOL_RESULT, recipients=["someone"])
    # analyst could not read m-1 (addressed to someone else): citing it grounds nothing;
    # the agreement of two independent sources still confirms the value.
    unseen = t.say("analyst", Claim("q3 revenue", "8.1M USD", ["m-1"]), role="summarizer")
    assert not unseen.claims[0].grounded
    assert unseen.claims[0].verified_by == "independent-confirmation"
    t2 = Team()
    t2.say("finance-tool", REVENUE_TRUE, kind=Kind.TOOL_RESULT)
    cited = t2.say("analyst", Claim("q3 revenue", "8.1M USD", ["m-1"]), role="summarizer")
    assert label(cited) is Label.GREEN and cited.verdict is Verdict.DELIVER


def test_citing_an_unrelated_tool_result_grounds_nothing() -> None:
    t = Team(policy="balanced")
    t.say("weather-tool", Claim("weather", "sunny"), kind=Kind.TOOL_RESULT)
    laundered = t.say("mallory", Claim("price", "99", ["m-1"]))
    assert label(laundered) is Label.YELLOW and not laundered.claims[0].grounded
    truth = t.say("price-tool", Claim("price", "10"), kind=Kind.TOOL_RESULT)
    assert [r.message_id for r in truth.recalls] == ["m-2"]


def test_contradicting_a_grounded_value_is_red_blocked_with_feedback() -> None:
    t = Team()
    t.say("finance-tool", REVENUE_TRUE, kind=Kind.TOOL_RESULT)
    d = t.say("analyst", REVENUE_FALSE, confidence=1.0)  # self-reported confidence: ignored
    assert d.verdict is Verdict.BLOCK and label(d) is Label.RED
    assert d.claims[0].contradicts == ["8100000 usd"]
    assert d.claims[0].components["contradiction"] == 1.0
    assert "contradicts the established q3 revenue = 8100000 usd" in d.feedback
    assert "attempt 1 of 3" in d.feedback
    assert [a.kind for a in d.alerts] == ["red-claim"]
    assert d.rules == ["containment"]


@pytest.mark.parametrize(
    ("policy", "role", "expected"),
    [
        ("low-intervention", "summarizer", Verdict.DELIVER_TAGGED),
        ("balanced", "worker", Verdict.DELIVER_TAGGED),
        ("balanced", "summarizer", Verdict.HOLD),
        ("strict", "worker", Verdict.HOLD),
    ],
)
def test_policies_route_yellow(policy: str, role: str, expected: Verdict) -> None:
    t = Team(policy=policy)
    d = t.say("agent", RUMOR, role=role)
    assert label(d) is Label.YELLOW
    assert d.verdict is expected
    # Held or forwarded, the unverified keys are tagged: a verifier reads them from headers.
    assert d.tags == {"unverified": "competitor funding"}
    if expected is Verdict.DELIVER_TAGGED:
        assert not d.feedback
    else:
        assert "not backed by a tool result" in d.feedback
        assert [a.kind for a in d.alerts] == ["contained-claim"]


def test_observed_hub_is_held_under_balanced() -> None:
    t = Team(policy="balanced", hub_min_dependents=2)
    t.say("lead", kind=Kind.SYSTEM)
    t.say("alice", parents=["m-1"])
    assert t.say("lead", RUMOR).verdict is Verdict.DELIVER_TAGGED  # one dependent: not a hub
    t.say("bob", parents=["m-1"])
    d = t.say("lead", Claim("competitor funding", "60M USD"))
    assert d.verdict is Verdict.HOLD and d.claims[0].components["hub"] == 1.0


def test_many_repeats_of_one_unverified_claim_are_one_source() -> None:
    t = Team(policy="low-intervention")
    first = t.say("a", RUMOR, model_family="gpt")
    repeats = [t.say(agent, RUMOR, parents=["m-1"], model_family="gpt") for agent in "bcdef"]
    assert all(label(d) is Label.YELLOW for d in [first, *repeats])
    assert [d.claims[0].support for d in repeats] == [1] * 5
    assert repeats[-1].claims[0].reach == 6


def test_independent_sources_of_different_model_families_confirm_a_claim() -> None:
    t = Team(policy="low-intervention")
    assert t.say("a", RUMOR, model_family="gpt", recipients=["x"]).verdict.delivers
    # b is not among a's recipients: its claim is an independent root, from another family.
    b = t.say("b", RUMOR, model_family="llama")
    assert label(b) is Label.GREEN and b.claims[0].support == 2
    assert b.verdict is Verdict.DELIVER


def test_a_held_claim_is_no_source_so_a_second_agent_cannot_confirm_it() -> None:
    t = Team(policy="strict")
    assert t.say("a", RUMOR, model_family="gpt").verdict is Verdict.HOLD
    b = t.say("b", RUMOR, model_family="llama")  # never saw a's: same claim, other family
    assert label(b) is Label.YELLOW and b.claims[0].support == 1
    assert b.verdict is Verdict.HOLD


def test_same_model_family_agreement_is_not_confirmation() -> None:
    t = Team(policy="strict")
    t.say("a", RUMOR, model_family="gpt")
    b = t.say("b", RUMOR, model_family="gpt")
    assert label(b) is Label.YELLOW and b.claims[0].support == 1


def test_retries_are_capped_then_persistent_red_is_dropped_silently() -> None:
    t = Team(max_retries=2)
    t.say("tool", REVENUE_TRUE, kind=Kind.TOOL_RESULT)
    tries = [t.say("analyst", REVENUE_FALSE) for _ in range(3)]
    assert [d.verdict for d in tries] == [Verdict.BLOCK] * 3
    assert [bool(d.feedback) for d in tries] == [True, True, False]
    assert "circuit breaker" in tries[2].reasons[0]


def test_persistent_yellow_is_forwarded_high_risk_and_never_grounds() -> None:
    t = Team(policy="strict", max_retries=2)
    tries = [t.say("analyst", RUMOR, model_family="gpt") for _ in range(3)]
    assert [d.verdict for d in tries] == [Verdict.HOLD, Verdict.HOLD, Verdict.DELIVER_TAGGED]
    assert tries[2].tags["risk"] == "high"
    # Another family repeating the circuit-broken claim does not get it confirmed by it.
    later = t.say("bob", RUMOR, model_family="llama", parents=["m-3"])
    assert label(later) is Label.YELLOW


def test_grounded_contradiction_recalls_delivered_and_names_held_messages() -> None:
    t = Team(policy="balanced")
    tagged = t.say("analyst", RUMOR)  # delivered tagged
    held = t.say("writer", RUMOR, parents=["m-1"], role="summarizer")  # held: hub
    assert (tagged.verdict, held.verdict) == (Verdict.DELIVER_TAGGED, Verdict.HOLD)
    truth = t.say("search-tool", Claim("competitor funding", "5M USD"), kind=Kind.TOOL_RESULT)
    assert truth.verdict is Verdict.DELIVER and label(truth) is Label.GREEN
    assert [(r.message_id, r.claims) for r in truth.recalls] == [
        ("m-1", ["competitor funding=50000000 usd"])
    ]
    assert truth.recalls[0].decision_id == truth.id
    (alert,) = truth.alerts
    assert alert.kind == "recall" and alert.evidence == ["m-3", "m-1", "m-2"]
    assert "1 held one(s) stay quarantined" in alert.summary
    # Once convicted, repeating the old value is Red.
    assert label(t.say("planner", RUMOR)) is Label.RED


def test_router_emits_feedback_and_recall_records() -> None:
    bus = MemoryBus(Config(containment=ContainmentConfig(policy="balanced")))

    def publish(n: int, sender: str, claim: Claim, kind: Kind = Kind.CHAT) -> Outcome:
        env = Envelope(
            id=f"m-{n}", conversation="c", sender=sender, kind=kind, content="", claims=[claim]
        )
        return bus.publish(env)

    publish(1, "analyst", RUMOR)
    publish(2, "tool", REVENUE_TRUE, Kind.TOOL_RESULT)
    blocked = publish(3, "analyst", REVENUE_FALSE)
    assert blocked.decision is not None and blocked.decision.verdict is Verdict.BLOCK
    routes = [o.route for o in blocked.outputs]
    assert routes == [Route.ALERTS, Route.DELIVERED, Route.QUARANTINE]
    feedback = decode(blocked.outputs[1].value, 1 << 20)  # type: ignore[arg-type]
    assert feedback.sender == "ostracon" and feedback.recipients == ["analyst"]
    assert feedback.parents == ["m-3"] and feedback.kind is Kind.SYSTEM
    assert header(blocked.outputs[1].headers, H_VERDICT) == "deliver"
    truth = publish(4, "tool", Claim("competitor funding", "5M USD"), Kind.TOOL_RESULT)
    recall = next(o for o in truth.outputs if o.route is Route.RECALLS)
    assert msgspec.json.decode(recall.value)["message_id"] == "m-1"  # type: ignore[arg-type]


def test_red_claims_never_confirm_each_other() -> None:
    """Two agents of different families repeating a value that contradicts a tool result
    privately stay Red: Red claims are no independent source, so the value never becomes
    established and a third agent repeating it is Red too."""
    t = Team()
    t.say("tool", Claim("region", "us"), kind=Kind.TOOL_RESULT)
    a = t.say("a", Claim("region", "eu"), recipients=["b"], model_family="gpt")
    c = t.say("c", Claim("region", "eu"), recipients=["d"], model_family="llama")
    third = t.say("e", Claim("region", "eu"), model_family="mistral")
    assert [label(d) for d in (a, c, third)] == [Label.RED] * 3
    assert third.verdict is Verdict.BLOCK


def test_a_grounded_claim_is_never_convicted() -> None:
    t = Team(policy="low-intervention")
    t.say("tool-a", Claim("region", "us"), kind=Kind.TOOL_RESULT)
    t.say("agent", Claim("region", "us"))  # a repeat of the grounded value
    t.say("tool-b", Claim("region", "eu"), kind=Kind.TOOL_RESULT)  # tools disagree
    lin = t.core.state.genealogy.lineage("c")
    assert not any(n.tainted for n in lin.claims.values() if n.grounded)


def test_eviction_caps_a_conversation_but_keeps_held_and_red_lineage() -> None:
    t = Team(policy="strict", max_claims_per_conversation=50)
    t.say("tool", REVENUE_TRUE, kind=Kind.TOOL_RESULT)
    red = t.say("liar", REVENUE_FALSE)
    held = t.say("rumour", RUMOR)
    for i in range(200):
        t.say(f"tool-{i % 3}", Claim(f"metric {i}", str(i)), kind=Kind.TOOL_RESULT)
    lin = t.core.state.genealogy.lineage("c")
    assert len(lin.claims) <= 50
    assert {red.claims[0].id, held.claims[0].id} <= set(lin.claims)
    # What evicted claims established still holds: repeating the revenue lie is still Red.
    assert label(t.say("other", REVENUE_FALSE)) is Label.RED


def test_idle_conversations_expire_unless_they_hold_contained_claims() -> None:
    t = Team(conversation_ttl_s=100.0)
    gen = t.core.state.genealogy
    t.say("a", REVENUE_TRUE, kind=Kind.TOOL_RESULT, conversation="quiet", ts=1000.0)
    t.say("a", RUMOR, conversation="contained", ts=1000.0, role="summarizer")  # held: a hub
    t.say("a", REVENUE_TRUE, kind=Kind.TOOL_RESULT, conversation="busy", ts=2000.0)
    assert gen.expire() == ["quiet"]
    assert set(gen.lineages) == {"contained", "busy"}


def test_conversations_without_timestamps_are_bounded_least_recently_active_first() -> None:
    t = Team(max_conversations=2)
    gen = t.core.state.genealogy
    t.say("a", REVENUE_TRUE, kind=Kind.TOOL_RESULT, conversation="old")  # no ts: no TTL
    t.say("a", RUMOR, conversation="contained", role="summarizer")  # held: protected
    t.say("a", REVENUE_TRUE, kind=Kind.TOOL_RESULT, conversation="newer")
    t.say("a", REVENUE_TRUE, kind=Kind.TOOL_RESULT, conversation="old")  # active again
    t.say("a", REVENUE_TRUE, kind=Kind.TOOL_RESULT, conversation="newest")
    assert gen.expire() == ["newer", "old"]  # two over the cap; the held one stays
    assert set(gen.lineages) == {"contained", "newest"}


def test_a_cited_source_is_found_however_many_repeats_came_between() -> None:
    """More repeats than the genealogy scans (64) sit between a tool result and a hub that
    cites it: the hub's claim still derives from the cited, grounded one."""
    t = Team(policy="balanced")
    t.say("tool", REVENUE_TRUE, kind=Kind.TOOL_RESULT, recipients=["writer"])
    for i in range(70):
        t.say(f"agent-{i}", REVENUE_TRUE, parents=["m-1"], recipients=["nobody"])
    d = t.say("writer", REVENUE_TRUE, parents=["m-1"], role="aggregator")
    assert label(d) is Label.GREEN and d.verdict is Verdict.DELIVER
    assert d.claims[0].origins == ["c:m-1#0"]


def test_verifiers_are_pluggable_and_each_label_names_its_verifier() -> None:
    from ostracon.containment import (
        ContainmentStage,
        LineageStage,
        default_verifiers,
    )
    from ostracon.core import Context, State
    from ostracon.genealogy import Genealogy, Link

    class KnownFacts:
        """A deterministic verifier backed by a fact table (e.g. a product catalogue)."""

        name = "known-facts"

        def verify(self, link: Link, ctx: Context) -> Label | None:
            return (
                Label.GREEN if link.claim.fingerprint == "competitor funding=50000000 usd" else None
            )

    cfg = ContainmentConfig(policy="strict")
    stages = [
        LineageStage(cfg, verifiers=[KnownFacts(), *default_verifiers(cfg)]),
        ContainmentStage(cfg),
    ]
    plugged = Core(stages, State(genealogy=Genealogy()))
    d = plugged.decide(
        Envelope(id="m-1", conversation="c", sender="a", kind=Kind.CHAT, content="", claims=[RUMOR])
    )
    assert d.verdict is Verdict.DELIVER and d.claims[0].verified_by == "known-facts"
    t = Team(policy="strict")
    assert t.say("tool", REVENUE_TRUE, kind=Kind.TOOL_RESULT).claims[0].verified_by == (
        "grounded-match"
    )
    assert t.say("a", REVENUE_FALSE).claims[0].verified_by == "grounded-contradiction"
    assert t.say("b", RUMOR).claims[0].verified_by == ""


def test_records_of_claimless_messages_are_capped_too() -> None:
    t = Team(max_claims_per_conversation=20)
    for i in range(200):
        t.core.decide(
            Envelope(
                id=f"x-{i}", conversation="c", sender="chatty", kind=Kind.CHAT, content="thanks!"
            )
        )
    lin = t.core.state.genealogy.lineage("c")
    assert len(lin.messages) <= 40
    assert "x-199" in lin.messages and "x-0" not in lin.messages


def test_a_value_a_tool_grounded_is_never_convicted_whatever_the_order() -> None:
    t = Team()
    t.say("tool-1", Claim("x", "1"), kind=Kind.TOOL_RESULT, recipients=["nobody"])
    agreeing = t.say("a", Claim("x", "1"), model_family="gpt")  # did not see tool-1
    second = t.say("tool-2", Claim("x", "2"), kind=Kind.TOOL_RESULT)
    assert label(agreeing) is Label.GREEN
    assert second.recalls == [] and second.alerts == []
    assert label(t.say("b", Claim("x", "1"), model_family="llama")) is Label.GREEN


def test_conviction_reaches_values_whose_claims_were_evicted() -> None:
    t = Team(policy="low-intervention", max_claims_per_conversation=20)
    t.say("a", Claim("price", "99"), recipients=["x"], model_family="gpt")
    confirmed = t.say("b", Claim("price", "99"), recipients=["y"], model_family="llama")
    assert label(confirmed) is Label.GREEN
    for i in range(60):
        t.say("tool", Claim(f"metric {i}", str(i)), kind=Kind.TOOL_RESULT)
    assert "c:m-2#0" not in t.core.state.genealogy.lineage("c").claims  # evicted
    t.say("price-tool", Claim("price", "10"), kind=Kind.TOOL_RESULT)
    assert label(t.say("c", Claim("price", "99"), model_family="mistral")) is Label.RED


def test_eviction_backs_off_when_every_claim_is_protected() -> None:
    t = Team(policy="strict", max_claims_per_conversation=10)
    for i in range(40):
        t.say(f"agent-{i}", Claim(f"guess {i}", "yes"))  # every one held: protected
    lin = t.core.state.genealogy.lineage("c")
    assert len(lin.claims) == 40  # nothing evictable, nothing lost
    assert lin.next_evict > 10  # no rescan of all claims on every add


def test_retry_count_follows_the_claims_that_caused_containment() -> None:
    t = Team(policy="strict", max_retries=2)
    t.say("tool", Claim("price", "10"), kind=Kind.TOOL_RESULT)
    for _ in range(2):  # blocked for the Red price; its Yellow ceo claim is not an attempt
        assert t.say("a", Claim("price", "99"), Claim("ceo", "bob")).verdict is Verdict.BLOCK
    held = t.say("a", Claim("ceo", "bob"))
    assert held.verdict is Verdict.HOLD and "attempt 1 of 2" in held.feedback


def test_expired_conversations_take_their_retry_and_monitor_state_along() -> None:
    t = Team(policy="strict", conversation_ttl_s=10.0)
    c = t.core
    t.say("a", RUMOR, conversation="old", ts=100.0)
    c.state.genealogy.lineages["old"].protected = 0  # pretend it was released by a human
    assert any(k[0] == "old" for k in c.state.attempts)
    t.say("a", REVENUE_TRUE, kind=Kind.TOOL_RESULT, conversation="new", ts=1000.0)
    c.state.genealogy.expire()
    t.say("a", REVENUE_TRUE, kind=Kind.TOOL_RESULT, conversation="new", ts=1001.0)
    assert "old" not in c.state.genealogy.lineages
    assert not any(k[0] == "old" for k in c.state.attempts)
    assert "old" not in c.state.monitors


# ---------------------------------------------------------------- refutation (meta.refutes)


def test_a_human_refutation_recalls_delivered_repeats_and_later_repeats_are_red() -> None:
    t = Team(policy="low-intervention")
    t.say("gossip", RUMOR)  # m-1, delivered tagged
    t.say("writer", RUMOR, parents=["m-1"])  # m-2, a delivered repeat
    deny = t.say(
        "reviewer",
        kind=Kind.HUMAN,
        refutes=[{"key": "Competitor funding", "value": "$50M"}],  # normalized like claims
    )
    assert deny.verdict is Verdict.DELIVER
    assert sorted(r.message_id for r in deny.recalls) == ["m-1", "m-2"]
    (alert,) = [a for a in deny.alerts if a.kind == "recall"]
    assert "is refuted by reviewer in m-3" in alert.summary
    again = t.say("late", RUMOR, parents=["m-2"])
    assert again.verdict is Verdict.BLOCK and label(again) is Label.RED
    assert "was refuted by a grounding source" in (again.feedback or "")
    # Already convicted: a second refutation recalls nothing twice.
    assert t.say("reviewer", kind=Kind.HUMAN, refutes=[RUMOR_REFUTED]).recalls == []


RUMOR_REFUTED = {"key": "competitor funding", "value": "50M USD"}


def test_a_refutation_before_the_claim_makes_its_first_statement_red() -> None:
    t = Team(trusted_sources=["llm-judge"])
    t.say("planner", Claim("launch date", "2024-03-05"))  # the conversation exists
    t.say("llm-judge", kind=Kind.CHAT, refutes=[RUMOR_REFUTED])  # trusted: may refute
    first = t.say("gossip", RUMOR)
    assert label(first) is Label.RED and first.verdict is Verdict.BLOCK


def test_refutations_from_non_grounding_senders_or_malformed_are_alerted_and_ignored() -> None:
    t = Team(policy="low-intervention")
    t.say("gossip", RUMOR)
    rival = t.say("rival", refutes=[RUMOR_REFUTED])
    assert rival.recalls == []
    (alert,) = rival.alerts
    assert alert.kind == "invalid-refutation" and "not a grounding source" in alert.summary
    for bad, why in [
        ("competitor funding", "must be a list"),
        ([{"key": "", "value": 1}], "refutes[0] needs a non-empty string key"),
        ([RUMOR_REFUTED, {"key": "x"}], "refutes[1] needs"),
        ([{"key": "x", "value": [1]}], "refutes[0].value must be"),
    ]:
        d = t.say("reviewer", kind=Kind.HUMAN, refutes=bad)
        assert d.recalls == [], bad
        assert [a.kind for a in d.alerts] == ["invalid-refutation"], bad
        assert why in d.alerts[0].summary, bad
    assert label(t.say("writer", RUMOR, parents=["m-1"])) is Label.YELLOW  # still not convicted


def test_a_refutation_of_a_grounded_value_is_not_convicted_but_alerted() -> None:
    t = Team()
    t.say("finance-tool", REVENUE_TRUE, kind=Kind.TOOL_RESULT)
    d = t.say("reviewer", kind=Kind.HUMAN, refutes=[{"key": "q3 revenue", "value": "8.1M USD"}])
    assert d.recalls == [] and [a.kind for a in d.alerts] == ["refutation-conflict"]
    assert label(t.say("writer", REVENUE_TRUE, parents=["m-1"])) is Label.GREEN


def test_balanced_holds_a_yellow_claim_once_it_spreads_or_from_a_sender_with_a_bad_record() -> None:
    t = Team(policy="balanced")
    assert t.say("a", RUMOR).verdict is Verdict.DELIVER_TAGGED  # m-1: risk 0.3
    assert t.say("b", RUMOR, parents=["m-1"]).verdict is Verdict.DELIVER_TAGGED  # m-2: 0.35
    third = t.say("c", RUMOR, parents=["m-2"])  # 3 agents, 2 hops: risk 0.4
    assert third.claims[0].risk >= 0.4 and third.claims[0].components["hub"] == 0.0
    assert third.verdict is Verdict.HOLD
    # A sender whose claims were Red is held one hop earlier: its first repeat is held.
    t.say("tool", REVENUE_TRUE, kind=Kind.TOOL_RESULT)  # m-4
    assert t.say("liar", REVENUE_FALSE).verdict is Verdict.BLOCK  # m-5
    office = Claim("office count", "7")
    t.say("d", office)  # m-6
    assert t.say("e", office, parents=["m-6"]).verdict is Verdict.DELIVER_TAGGED  # clean record
    d = t.say("liar", office, parents=["m-6"])
    assert d.claims[0].components["reputation"] > 0 and d.verdict is Verdict.HOLD
    # hold_risk 1.0: hubs only, as the policy was before the risk threshold.
    off = Team(policy="balanced", hold_risk=1.0)
    off.say("a", RUMOR)
    off.say("b", RUMOR, parents=["m-1"])
    assert off.say("c", RUMOR, parents=["m-2"]).verdict is Verdict.DELIVER_TAGGED


def test_citing_a_message_one_never_received_inherits_no_grounding() -> None:
    t = Team(policy="strict")
    t.say("finance-tool", RUMOR, kind=Kind.TOOL_RESULT, recipients=["analyst"])  # m-1
    insider = t.say("analyst", RUMOR, parents=["m-1"], recipients=["boss"])
    assert label(insider) is Label.GREEN and insider.verdict is Verdict.DELIVER
    outsider = t.say("outsider", RUMOR, parents=["m-1"], recipients=["boss"])
    # A new root, not a repeat of the tool result: it only counts as a second source.
    assert outsider.claims[0].grounded is False
    assert outsider.claims[0].depth == 0 and outsider.claims[0].origins == ["c:m-3#0"]


def test_a_non_string_role_is_no_hub_role_and_no_crash() -> None:
    t = Team(policy="balanced")
    d = t.say("a", RUMOR, role=["summarizer"])  # meta is free JSON: a list is legal
    assert d.verdict is Verdict.DELIVER_TAGGED and d.claims[0].components["hub"] == 0.0


def resolved(held: Decision, action: Literal["release", "deny"]) -> QuarantineResolved:
    """A human's ruling on the held message m-1 of conversation c (a state event)."""
    return QuarantineResolved(
        id=f"e-{action}",
        at=1.0,
        by="human:ops",
        why="reviewed",
        decision_id=held.id,
        conversation="c",
        message_id="m-1",
        action=action,
    )


def test_a_released_message_is_delivered_in_the_genealogy_from_then_on() -> None:
    """A human (or a quorum gate) releases a held message: its recipients have now read it,
    so a recipient's repeat derives from it instead of counting as an independent root."""
    t = Team(policy="strict")
    held = t.say("a", RUMOR, recipients=["b"], model_family="gpt")
    assert held.verdict is Verdict.HOLD
    lin = t.core.state.genealogy.lineage("c")
    assert lin is not None
    protected = lin.protected
    assert not lin.messages["m-1"].delivered and not lin.messages["m-1"].visible_to("b")

    event = resolved(held, "release")
    assert t.core.apply(event) == []
    msg = lin.messages["m-1"]
    assert msg.delivered and msg.visible_to("b")
    assert all(lin.claims[c].delivered for c in msg.claims)
    assert "b" in lin.talks["a"] and lin.protected == protected - 1
    t.core.apply(event)  # applied once by id: nothing counted twice
    assert lin.protected == protected - 1

    repeat = t.say("b", RUMOR, parents=["m-1"], model_family="llama")
    (claim,) = repeat.claims
    assert claim.depth == 1 and claim.origins == ["c:m-1#0"]  # derives from a's
    # A release grounds nothing and makes no independent source of the held root.
    assert claim.label is Label.YELLOW and claim.support == 0


def test_a_denied_message_stays_undelivered_in_the_genealogy() -> None:
    t = Team(policy="strict")
    held = t.say("a", RUMOR, recipients=["b"], model_family="gpt")
    t.core.apply(resolved(held, "deny"))
    lin = t.core.state.genealogy.lineage("c")
    assert lin is not None and not lin.messages["m-1"].delivered
    repeat = t.say("b", RUMOR, parents=["m-1"], model_family="llama")
    assert repeat.claims[0].depth == 0  # b never read a's message: its claim is its own root
