"""The pure decision core: an ordered chain of small stages over one envelope.

``decide(envelope, state, stages)`` reads the state and returns a :class:`Decision`; it does
no I/O, reads no clock and mutates nothing, so the same envelope and state always give the
same decision. ``Core`` pairs a stage chain with its state and, after deciding, lets every
stage ``observe`` the outcome to advance the state (the only place state changes).

Stages are like Kroxylicious filters: each sees a :class:`Context`, may propose a verdict,
add reasons, tags, alerts and accusations, or stop the chain. The final verdict is the most
restrictive one proposed. Later layers (claims, genealogy, risk, rules, byzantine) are stages.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from .decision import (
    Accusation,
    Alert,
    ClaimReport,
    Decision,
    Label,
    Recall,
    Ruling,
    Severity,
    StageOutcome,
    Verdict,
    VoteRequest,
    alert_id,
    decision_id,
)
from .envelope import Envelope
from .genealogy import Genealogy
from .store import AgentBlocked, AgentUnblocked, Event, QuarantineResolved


@dataclass
class ConversationState:
    """What the core remembers about one conversation."""

    members: set[str] = field(default_factory=set)
    messages: int = 0


@dataclass
class State:
    """Everything a decision may depend on besides the envelope itself."""

    blocklist: dict[str, str] = field(default_factory=dict)  # agent -> reason
    # Least recently active first; bounded so a stream of new conversation names cannot
    # grow memory without limit.
    conversations: dict[str, ConversationState] = field(default_factory=dict)
    max_conversations: int = 100_000
    genealogy: Genealogy = field(default_factory=Genealogy)
    # (conversation, sender, fingerprint) -> times that claim was held or blocked
    attempts: dict[tuple[str, str, str], int] = field(default_factory=dict)
    # agent -> [claims asserted, claims found Red]: reputation observed by ostracon
    records: dict[str, list[int]] = field(default_factory=dict)
    monitors: dict[str, Any] = field(default_factory=dict)  # conversation -> monitor memory
    rates: dict[str, deque[float]] = field(default_factory=dict)  # sender -> recent ts (rules)
    # State events applied (ids), and human decisions on held records: decision id -> action
    applied: set[str] = field(default_factory=set)
    resolved: dict[str, str] = field(default_factory=dict)
    quorum: Any = None  # ostracon.quorum.GateState: open ballots, adaptive thresholds
    # ostracon.byzantine: its memory (byzantine.Trust: accusations, equivocation index) and
    # the derived accused -> distinct counted accusers (rules' sender.accusations)
    byzantine: Any = None
    accusers: dict[str, frozenset[str]] = field(default_factory=dict)

    def touch_conversation(self, name: str) -> ConversationState:
        """The conversation's state, marked most recently active (creates it; observe only)."""
        conv = self.conversations.pop(name, None)
        if conv is None:
            conv = ConversationState()
        self.conversations[name] = conv
        if len(self.conversations) > self.max_conversations:
            del self.conversations[next(iter(self.conversations))]
        return conv


class Context:
    """The per-message scratchpad the stages share while one decision is made."""

    __slots__ = (
        "accusations",
        "alerts",
        "claims",
        "envelope",
        "feedback",
        "notes",
        "reasons",
        "recalls",
        "risk",
        "rules",
        "rulings",
        "signed",
        "state",
        "stopped",
        "tags",
        "trail",
        "verdict",
        "vote_request",
    )

    def __init__(self, envelope: Envelope, state: State, signed: bool = False) -> None:
        self.envelope = envelope
        self.state = state
        self.signed = signed  # the shell verified the sender's signature (ostracon.identity)
        self.verdict = Verdict.DELIVER
        self.risk = 0.0
        self.reasons: list[str] = []
        self.rules: list[str] = []
        self.tags: dict[str, str] = {}
        self.alerts: list[Alert] = []
        self.accusations: list[Accusation] = []
        self.trail: list[StageOutcome] = []
        self.claims: list[ClaimReport] = []
        self.feedback = ""
        self.recalls: list[Recall] = []
        self.vote_request: VoteRequest | None = None  # set by ostracon.quorum
        self.rulings: list[Ruling] = []
        self.notes: dict[str, object] = {}  # stage scratch, handed to ``observe``
        self.stopped = False

    def propose(self, stage: str, verdict: Verdict, reason: str) -> None:
        """Record a stage's verdict; the most restrictive proposal wins."""
        if verdict.severity > self.verdict.severity:
            self.verdict = verdict
        self.rules.append(stage)
        self.reasons.append(reason)
        self.trail.append(StageOutcome(stage, verdict, reason))

    def alert(self, alert: Alert) -> None:
        self.alerts.append(alert)

    def alert_sender(
        self, kind: str, severity: Severity, summary: str, rule: str, evidence: list[str]
    ) -> None:
        """An alert about this message's sender, raised by ``rule`` (a stage's name)."""
        env = self.envelope
        self.alerts.append(
            Alert(kind, severity, summary, env.conversation, [env.sender], evidence, [rule])
        )

    def stop(self) -> None:
        """No later stage runs (used when the outcome cannot get more restrictive)."""
        self.stopped = True


class Stage:
    """One step of the decision chain. Subclasses set ``name`` and override ``run``."""

    name = "stage"

    def run(self, ctx: Context) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def observe(self, ctx: Context, decision: Decision) -> None:
        """Advance ``ctx.state`` after a decision; default: nothing to remember."""

    def apply_event(self, state: State, event: Event) -> list[Alert]:
        """Advance ``state`` for a state event (ostracon.store); default: not concerned."""
        return []

    def tick(self, state: State, now: float) -> tuple[list[Ruling], list[Alert]]:
        """Advance ``state`` to ``now`` (Unix seconds, from the shell's clock: deadlines);
        default: nothing is due."""
        return [], []


def decide(
    envelope: Envelope,
    state: State,
    stages: Sequence[Stage],
    did: str | None = None,
    signed: bool = False,
) -> Decision:
    """Run the stage chain over one envelope. Pure: reads ``state``, never writes it.

    ``did`` is the envelope's :func:`decision_id` when the caller already computed it;
    ``signed`` says the shell verified the sender's signature.
    """
    return _run(envelope, state, stages, did, signed)[0]


def _run(
    envelope: Envelope,
    state: State,
    stages: Sequence[Stage],
    did: str | None,
    signed: bool = False,
) -> tuple[Decision, Context]:
    ctx = Context(envelope, state, signed)
    for stage in stages:
        stage.run(ctx)
        if ctx.stopped:
            break
    did = did or decision_id(envelope.conversation, envelope.id)
    if ctx.alerts:
        ctx.alerts = _stamp_alerts(ctx, did)
    if ctx.recalls:
        ctx.recalls = [msgspec.structs.replace(r, decision_id=did) for r in ctx.recalls]
    decision = Decision(
        id=did,
        message_id=envelope.id,
        conversation=envelope.conversation,
        sender=envelope.sender,
        verdict=ctx.verdict,
        risk=ctx.risk,
        reasons=ctx.reasons,
        rules=ctx.rules,
        tags=ctx.tags,
        alerts=ctx.alerts,
        accusations=ctx.accusations,
        trail=ctx.trail,
        claims=ctx.claims,
        feedback=ctx.feedback,
        recalls=ctx.recalls,
        vote_request=ctx.vote_request,
        rulings=ctx.rulings,
    )
    return decision, ctx


def _stamp_alerts(ctx: Context, did: str) -> list[Alert]:
    """Fill what a stage left unset: decision id, alert id, the message's time, and the
    message's unverified or contradicted claims (the ones an alert is usually about)."""
    ts = ctx.envelope.ts
    claims = [f"{c.key}={c.value}" for c in ctx.claims if c.label is not Label.GREEN]
    out = []
    for i, a in enumerate(ctx.alerts):
        a_did = a.decision_id or did
        out.append(
            msgspec.structs.replace(
                a,
                decision_id=a_did,
                id=a.id or alert_id(a_did, a.kind, i),
                ts=a.ts if a.ts else ts,
                claims=a.claims or claims,
            )
        )
    return out


class BlocklistStage(Stage):
    """Messages from blocklisted agents get the configured verdict and stop the chain."""

    name = "blocklist"

    def __init__(self, verdict: Verdict = Verdict.BLOCK) -> None:
        self.verdict = verdict

    def run(self, ctx: Context) -> None:
        reason = ctx.state.blocklist.get(ctx.envelope.sender)
        if reason is None:
            return
        env = ctx.envelope
        ctx.propose(self.name, self.verdict, f"sender {env.sender!r} is blocklisted: {reason}")
        ctx.alert(
            Alert(
                kind="blocklisted",
                severity=_severity_for(self.verdict),
                summary=f"message {env.id} from blocklisted agent {env.sender} was "
                f"{_PAST[self.verdict]}",
                conversation=env.conversation,
                agents=[env.sender],
                evidence=[env.id],
                rules=[self.name],
            )
        )
        ctx.stop()


_PAST = {Verdict.BLOCK: "blocked", Verdict.QUARANTINE: "quarantined"}


class MembershipStage(Stage):
    """Remembers who takes part in each conversation (resolves empty ``recipients``)."""

    name = "membership"

    def run(self, ctx: Context) -> None:
        return None

    def observe(self, ctx: Context, decision: Decision) -> None:
        envelope = ctx.envelope
        conv = ctx.state.touch_conversation(envelope.conversation)
        conv.members.add(envelope.sender)
        conv.members.update(envelope.recipients)
        conv.messages += 1


def _severity_for(verdict: Verdict) -> Severity:
    return Severity.CRITICAL if verdict is Verdict.BLOCK else Severity.WARNING


def default_stages(blocklist_verdict: Verdict = Verdict.BLOCK) -> list[Stage]:
    """The spine's chain. Later layers insert their stages here."""
    return [BlocklistStage(blocklist_verdict), MembershipStage()]


class Core:
    """A stage chain bound to its state: decide, then let each stage observe."""

    def __init__(self, stages: Iterable[Stage] | None = None, state: State | None = None):
        # Fixed at construction: the observer list below is derived from it.
        self.stages: tuple[Stage, ...] = tuple(stages if stages is not None else default_stages())
        self.state = state if state is not None else State()
        # Only stages that remember something are called after the decision (hot path).
        self._observers = [s for s in self.stages if type(s).observe is not Stage.observe]

    def decide(self, envelope: Envelope, did: str | None = None, signed: bool = False) -> Decision:
        decision, ctx = _run(envelope, self.state, self.stages, did, signed)
        for stage in self._observers:
            stage.observe(ctx, decision)
        return decision

    def apply(self, event: Event) -> list[Alert]:
        """Apply a state event once (by id): the same events give every instance the same
        state whatever else it decided. Returns the alerts the change raises."""
        state = self.state
        if event.id in state.applied:
            return []
        state.applied.add(event.id)
        if isinstance(event, AgentBlocked):
            state.blocklist[event.agent] = event.reason
        elif isinstance(event, AgentUnblocked):
            state.blocklist.pop(event.agent, None)
        elif isinstance(event, QuarantineResolved):
            state.resolved[event.decision_id] = event.action
        alerts: list[Alert] = []
        for stage in self.stages:
            alerts += stage.apply_event(state, event)
        return alerts

    def tick(self, now: float) -> tuple[list[Ruling], list[Alert]]:
        """Let the stages act on time passing (the core has no clock: the shell calls this
        periodically with wall-clock ``now``): e.g. quorum ballots past their deadline."""
        rulings: list[Ruling] = []
        alerts: list[Alert] = []
        for stage in self.stages:
            if type(stage).tick is not Stage.tick:
                r, a = stage.tick(self.state, now)
                rulings += r
                alerts += a
        return rulings, alerts
