"""The pure decision core: stage chain, verdict combination, determinism, state updates."""

import copy

from ostracon.core import (
    BlocklistStage,
    Context,
    Core,
    MembershipStage,
    Stage,
    State,
    decide,
    default_stages,
)
from ostracon.decision import Alert, Severity, Verdict, decision_id
from ostracon.envelope import Envelope, Kind


def env(i: int = 1, sender: str = "alice", **kw: object) -> Envelope:
    return Envelope(
        id=f"m-{i}", conversation="c", sender=sender, kind=Kind.CHAT, content="hi", **kw
    )  # type: ignore[arg-type]


class Propose(Stage):
    def __init__(self, name: str, verdict: Verdict) -> None:
        self.name = name
        self.verdict = verdict
        self.calls = 0

    def run(self, ctx: Context) -> None:
        self.calls += 1
        ctx.propose(self.name, self.verdict, f"{self.name} says {self.verdict.value}")


def test_clean_message_is_delivered_with_no_rules() -> None:
    d = Core().decide(env())
    assert d.verdict is Verdict.DELIVER
    assert d.rules == [] and d.alerts == [] and d.reasons == []
    assert d.id == decision_id("c", "m-1")


def test_most_restrictive_verdict_wins_and_every_stage_is_recorded() -> None:
    stages = [
        Propose("tagger", Verdict.DELIVER_TAGGED),
        Propose("quarantiner", Verdict.QUARANTINE),
        Propose("holder", Verdict.HOLD),
    ]
    d = decide(env(), State(), stages)
    assert d.verdict is Verdict.QUARANTINE
    assert d.rules == ["tagger", "quarantiner", "holder"]
    assert [t.verdict for t in d.trail] == [
        Verdict.DELIVER_TAGGED,
        Verdict.QUARANTINE,
        Verdict.HOLD,
    ]


def test_verdict_order() -> None:
    order = [
        Verdict.DELIVER,
        Verdict.DELIVER_TAGGED,
        Verdict.HOLD,
        Verdict.QUARANTINE,
        Verdict.BLOCK,
    ]
    assert sorted(order, key=lambda v: v.severity) == order
    assert [v.delivers for v in order] == [True, True, False, False, False]


def test_blocklisted_sender_is_blocked_alerted_and_stops_the_chain() -> None:
    after = Propose("after", Verdict.DELIVER_TAGGED)
    state = State(blocklist={"mallory": "forged tool output"})
    d = decide(env(sender="mallory"), state, [BlocklistStage(), after])
    assert d.verdict is Verdict.BLOCK
    assert d.rules == ["blocklist"]
    assert "forged tool output" in d.reasons[0]
    assert after.calls == 0
    (alert,) = d.alerts
    assert alert.kind == "blocklisted" and alert.severity is Severity.CRITICAL
    assert alert.agents == ["mallory"] and alert.evidence == ["m-1"]
    assert alert.decision_id == d.id


def test_blocklist_verdict_is_configurable() -> None:
    state = State(blocklist={"mallory": "x"})
    d = decide(env(sender="mallory"), state, [BlocklistStage(Verdict.QUARANTINE)])
    assert d.verdict is Verdict.QUARANTINE
    assert d.alerts[0].severity is Severity.WARNING
    assert "quarantined" in d.alerts[0].summary


def test_decide_is_deterministic_and_does_not_touch_state() -> None:
    state = State(blocklist={"mallory": "x"})
    state.touch_conversation("c").members.add("alice")
    before = copy.deepcopy(state)
    stages = default_stages()
    first = decide(env(sender="mallory"), state, stages)
    second = decide(env(sender="mallory"), state, stages)
    assert first == second
    assert state.blocklist == before.blocklist
    assert state.conversations == before.conversations


def test_core_observe_advances_membership() -> None:
    core = Core()
    core.decide(env(1, "alice", recipients=["bob"]))
    core.decide(env(2, "carol"))
    conv = core.state.conversations["c"]
    assert conv.members == {"alice", "bob", "carol"}
    assert conv.messages == 2


def test_conversation_memory_is_bounded_least_recently_active_first() -> None:
    core = Core(state=State(max_conversations=2))
    for i, conv in enumerate(["a", "b", "a", "c"]):
        core.decide(
            Envelope(id=f"m-{i}", conversation=conv, sender="x", kind=Kind.CHAT, content="")
        )
    assert list(core.state.conversations) == ["a", "c"]


def test_stage_alert_keeps_its_own_decision_id_and_gets_message_time() -> None:
    class Alerting(Stage):
        name = "alerting"

        def run(self, ctx: Context) -> None:
            ctx.alert(Alert("x", Severity.INFO, "s", "c"))
            ctx.alert(Alert("y", Severity.INFO, "s", "c", decision_id="other"))

    d = decide(env(ts=12.0), State(), [Alerting()])
    assert [a.decision_id for a in d.alerts] == [d.id, "other"]
    assert d.alerts[0].ts == 12.0


def test_decision_ids_differ_per_message_and_conversation() -> None:
    ids = {decision_id(c, m) for c in ("a", "b") for m in ("1", "2")}
    assert len(ids) == 4
    assert decision_id("c", "m-1") == decision_id("c", "m-1")


def test_membership_stage_proposes_nothing() -> None:
    d = decide(env(), State(), [MembershipStage()])
    assert d.verdict is Verdict.DELIVER and d.trail == []
