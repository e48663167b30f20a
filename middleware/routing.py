"""Turns one inbound record into the output records every shell writes.

The router is where bytes meet the core: decode (bad bytes become a dead-letter record with a
reason), drop duplicates by message id (within its conversation), ask the core, then build the
forwarded record (the original bytes plus verdict headers) and the side records: alerts,
recalls and feedback to the sender. It does no I/O, so the Kafka sidecar and the in-process
bus route identically.
"""

from __future__ import annotations

import collections
import enum
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import msgspec

from .byzantine import accusation_events
from .config import Config
from .core import Core
from .decision import Alert, Decision, Ruling, Severity, Verdict, alert_id, decision_id
from .dedupe import DedupeWindow
from .envelope import Envelope, InvalidEnvelope, Kind, decode, encode
from .identity import Failure, Verifier, count_against, failure_alert
from .pipeline import build_core
from .quorum import QuorumStage
from .store import QuarantineResolved, encode_event, event_id

HEADER_PREFIX = "ostracon-"
H_VERDICT = "ostracon-verdict"
H_RISK = "ostracon-risk"
H_RULES = "ostracon-rules"
H_DECISION = "ostracon-decision-id"
# The dedupe key, read back from the output topics on restart: the decision id for envelopes
# (a message id is unique within its conversation), ``dlq:<source>`` for dead letters.
H_DEDUPE = "ostracon-dedupe-key"
H_SOURCE = "ostracon-source"  # topic/partition/offset of the inbound record
H_ERROR = "ostracon-error"
H_REASON = "ostracon-reason"
H_FEEDBACK = "ostracon-feedback"  # on contained records: what the sender was told
H_TAG = "ostracon-tag-"
H_RELEASED = "ostracon-released-by"  # on a held record later let through: who released it

Headers = list[tuple[str, bytes]]


class Held(NamedTuple):
    """A record held for a quorum, as forwarded to the quarantine topic."""

    value: bytes
    key: bytes | None
    headers: Headers
    sender: str  # refused release once blocklisted
    size: int  # bytes counted against quorum.max_held_bytes


class Route(enum.StrEnum):
    """Which configured topic an output goes to."""

    DELIVERED = "delivered"
    QUARANTINE = "quarantine"
    DEAD_LETTER = "dead_letter"
    ALERTS = "alerts"
    RECALLS = "recalls"
    VOTES = "votes"  # quorum gates' vote requests (ostracon.quorum)
    STATE = "state"  # state events: accusations, blocks (ostracon.store, ostracon.byzantine)


class Output(msgspec.Struct, frozen=True, array_like=True):
    route: Route
    key: bytes | None
    value: bytes | None  # None only for a dead-lettered tombstone
    headers: Headers


@dataclass(slots=True)
class Outcome:
    """What became of one inbound record. ``outputs`` is empty for a duplicate."""

    key: str
    outputs: list[Output] = field(default_factory=list)
    envelope: Envelope | None = None
    decision: Decision | None = None
    error: InvalidEnvelope | None = None
    duplicate: bool = False


_alert_encoder = msgspec.json.Encoder()
# Per-verdict constants, so the hot path does no enum property lookups or encodes for them.
_VERDICT_BYTES = {v: v.value.encode() for v in Verdict}
_ROUTE_FOR = {v: Route.DELIVERED if v.delivers else Route.QUARANTINE for v in Verdict}


class Router:
    """Routes inbound records through the core; keeps the dedupe window."""

    def __init__(
        self,
        core: Core,
        max_message_bytes: int,
        window: DedupeWindow,
        identity: Verifier | None = None,
        max_held: int = 10_000,
        max_held_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        self.core = core
        self.max_message_bytes = max_message_bytes
        self.window = window
        self.identity = identity  # None: identity checks off (see ostracon.identity)
        # Records held for a quorum (decision id -> Held), so an approving vote can release
        # them; bounded in count and bytes (beyond, the oldest ballots escalate to a human),
        # in memory only: after a restart a held record waits in the quarantine topic for a
        # human (docs/byzantine.md).
        self.held: collections.OrderedDict[str, Held] = collections.OrderedDict()
        self.max_held = max_held
        self.max_held_bytes = max_held_bytes
        self.held_bytes = 0
        self.quorum = next((s for s in core.stages if isinstance(s, QuorumStage)), None)

    @classmethod
    def from_config(cls, config: Config, core: Core | None = None) -> Router:
        """The router every shell uses: the config's pipeline (or ``core``, given the config's
        blocklist) with the configured size limit and dedupe window."""
        if core is None:
            core = build_core(config)
        else:
            core.state.blocklist.update(config.blocklist.agents)
        return cls(
            core,
            config.limits.max_message_bytes,
            DedupeWindow(config.dedupe.window),
            Verifier.from_config(config.identity),
            config.quorum.max_open,
            config.quorum.max_held_bytes,
        )

    def route(
        self,
        value: bytes | None,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
        source: str = "",
        now: float | None = None,
    ) -> Outcome:
        """Route one inbound record. ``now`` (epoch seconds, from the shell: the router reads
        no clock) is the reference for signed messages' ts window."""
        # The limit covers key and headers too, so a forwarded record (which also gains the
        # verdict headers) stays under the broker's limit whenever its input was accepted.
        limit = self.max_message_bytes
        if key:
            limit -= len(key)
        for k, v in headers:
            limit -= len(k) + (len(v) if v else 0)
        try:
            if limit < 0:
                raise InvalidEnvelope(
                    "too-large", f"key and headers exceed {self.max_message_bytes} bytes"
                )
            envelope = decode(value, limit)
        except InvalidEnvelope as err:
            return self.dead_letter(err, value, key, headers, source)

        dkey = decision_id(envelope.conversation, envelope.id)
        # From here on the input is a valid envelope; the shell turns an unexpected error in
        # the core into an ``internal-error`` dead letter rather than a crash loop.
        if self.identity is not None:
            return self._route_signed(envelope, dkey, value, key, headers, source, now)
        if not self.window.add(dkey, source):
            return Outcome(dkey, envelope=envelope, duplicate=True)
        return self._decide(envelope, dkey, value, headers, source, now)

    def _decide(
        self,
        envelope: Envelope,
        dkey: str,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]],
        source: str,
        now: float | None,
        signed: bool = False,
    ) -> Outcome:
        """Ask the core, then build the forwarded record and its side outputs: accusations'
        state events, vote requests and quorum releases."""
        decision = self.core.decide(envelope, dkey, signed=signed)
        outputs = forward(envelope, decision, value or b"", headers, source)
        if decision.accusations:
            self._accuse(decision, outputs, now)
        if decision.vote_request is not None or decision.rulings:
            self._gate(envelope, decision, outputs, now)
        return Outcome(dkey, outputs, envelope=envelope, decision=decision)

    def _accuse(self, decision: Decision, outputs: list[Output], now: float | None) -> None:
        """Accusations become state events (ostracon.byzantine): applied here at once, so the
        next record already meets the new blocklist, and written to the state topic in this
        record's batch (before the main record). ``at`` is the shell's clock when given."""
        side: list[Output] = []
        hdr = [(H_DECISION, decision.id.encode())]
        at = now if now is not None else time.time()
        for event in accusation_events(decision, at):
            side.append(Output(Route.STATE, *encode_event(event), hdr))
            side += [alert_output(a) for a in self.core.apply(event)]
        outputs[-1:-1] = side

    def _gate(
        self, envelope: Envelope, decision: Decision, outputs: list[Output], now: float | None
    ) -> None:
        """Quorum gates (ostracon.quorum): keep a held record and ask for votes; release what
        an approving quorum let through, resolved in the state topic (the record leaves the
        review queue). Side outputs go before the main (last) record."""
        side: list[Output] = []
        for ruling in decision.rulings:
            kept = self._unhold(ruling.decision_id)
            if ruling.outcome != "approve":
                continue
            if kept is None:  # evicted, or held before a restart: a human releases it
                side.append(alert_output(_release_lost(ruling)))
                continue
            if kept.sender in self.core.state.blocklist:  # blocked since it was held
                side.append(alert_output(_release_refused(ruling, kept.sender)))
                continue
            why = f"quorum approved ({ruling.approve:g}: {', '.join(ruling.voters)})"
            side.append(released(kept.value, kept.key, kept.headers, by="quorum", why=why))
            self._resolve(ruling, "release", why, side, now)
        request = decision.vote_request
        if request is not None:
            main = outputs[-1]
            value = main.value or b""
            size = len(value) + len(main.key or b"") + sum(len(k) + len(v) for k, v in main.headers)
            self.held[decision.id] = Held(value, main.key, main.headers, envelope.sender, size)
            self.held_bytes += size
            side.append(
                Output(
                    Route.VOTES,
                    main.key,
                    _alert_encoder.encode(request),
                    [(H_DECISION, decision.id.encode())],
                )
            )
            side += self._bound(now)
        outputs[-1:-1] = side

    def _unhold(self, did: str) -> Held | None:
        kept = self.held.pop(did, None)
        if kept is not None:
            self.held_bytes -= kept.size
        return kept

    def _bound(self, now: float | None) -> list[Output]:
        """Keep the held records within ``max_held`` and ``max_held_bytes``: the oldest go,
        their ballots escalated to a human (their records stay in the quarantine topic)."""
        out: list[Output] = []
        while len(self.held) > self.max_held or self.held_bytes > self.max_held_bytes:
            did, kept = self.held.popitem(last=False)
            self.held_bytes -= kept.size
            if self.quorum is not None:  # a no-op when the gate closed it (quorum.max_open)
                why = f"held records over quorum.max_held_bytes ({self.max_held_bytes})"
                alerts = self.quorum.escalate(self.core.state, did, why, now)
                out += [alert_output(a) for a in alerts]
        return out

    def _resolve(
        self,
        ruling: Ruling,
        action: Literal["release", "deny"],
        why: str,
        side: list[Output],
        now: float | None,
    ) -> None:
        """The quorum's decision on a held record as a ``QuarantineResolved`` state event,
        applied here and written in this batch, as a human's would be."""
        event = QuarantineResolved(
            id=event_id("quarantine", ruling.decision_id),
            at=now if now is not None else time.time(),
            by="quorum",
            why=why,
            decision_id=ruling.decision_id,
            conversation=ruling.conversation,
            message_id=ruling.message_id,
            action=action,
        )
        hdr = [(H_DECISION, ruling.decision_id.encode())]
        side.append(Output(Route.STATE, *encode_event(event), hdr))
        side += [alert_output(a) for a in self.core.apply(event)]

    def tick(self, now: float) -> list[Output]:
        """Time passing (wall-clock ``now`` from the shell): ballots past their deadline
        escalate to a human; returns the alert records to write."""
        rulings, alerts = self.core.tick(now)
        for ruling in rulings:
            self._unhold(ruling.decision_id)
        return [alert_output(a) for a in alerts]

    def _route_signed(
        self,
        envelope: Envelope,
        dkey: str,
        value: bytes | None,
        key: bytes | None,
        headers: Sequence[tuple[str, bytes]],
        source: str,
        now: float | None,
    ) -> Outcome:
        """``route`` with identity checks: signature, then replay, then the ts window.

        enforce dead-letters every failure; permissive alerts on forged, replayed and stale
        messages and lets them on unsigned (a replay is still dropped as a duplicate).
        """
        identity = self.identity
        assert identity is not None
        failure, reason = identity.check(envelope)
        signed = failure is None
        if failure is not None and identity.enforce:
            # Not added to the window: a forger must not be able to claim an id in advance.
            return self._refuse(failure, reason, envelope, dkey, value, key, headers, source)
        alerts: list[tuple[Failure, str]] = [(failure, reason)] if failure is Failure.FORGED else []
        if not self.window.add(dkey, source):
            seen = self.window.source(dkey)
            # The same record again (a crash re-read) or an unsigned copy: a silent drop.
            if not signed or not seen or seen == source:
                return Outcome(dkey, envelope=envelope, duplicate=True)
            # The same signed message from another record: a replay (counted once, even if
            # the replay's own record is re-read after a crash).
            if f"dlq:{source}" in self.window:
                return Outcome(dkey, envelope=envelope, duplicate=True)
            if identity.count_replays:
                count_against(self.core.state, envelope.sender)
            reason = f"message id already seen at {seen}"
            if identity.enforce:
                return self._refuse(
                    Failure.REPLAYED, reason, envelope, dkey, value, key, headers, source
                )
            self.window.add(f"dlq:{source}", source)
            alert = failure_alert(Failure.REPLAYED, envelope, reason, dkey)
            return Outcome(dkey, [alert_output(alert)], envelope=envelope, duplicate=True)
        if signed:
            stale = identity.stale(envelope, now)
            if stale:
                if identity.enforce:
                    return self._refuse(
                        Failure.STALE, stale, envelope, dkey, value, key, headers, source
                    )
                alerts.append((Failure.STALE, stale))
                signed = False
        outcome = self._decide(envelope, dkey, value, headers, source, now, signed)
        if alerts:
            outcome.outputs[:0] = [
                alert_output(failure_alert(f, envelope, r, dkey)) for f, r in alerts
            ]
        return outcome

    def _refuse(
        self,
        failure: Failure,
        reason: str,
        envelope: Envelope,
        dkey: str,
        value: bytes | None,
        key: bytes | None,
        headers: Sequence[tuple[str, bytes]],
        source: str,
    ) -> Outcome:
        """An identity dead letter (code = the failure) preceded by its alert."""
        outcome = self.dead_letter(
            InvalidEnvelope(failure.value, reason), value, key, headers, source
        )
        outcome.envelope = envelope
        if outcome.outputs:  # not a crash re-read of a record refused before
            alert = failure_alert(failure, envelope, reason, dkey)
            outcome.outputs.insert(0, alert_output(alert))
        return outcome

    def dead_letter(
        self,
        err: InvalidEnvelope,
        value: bytes | None,
        key: bytes | None,
        headers: Sequence[tuple[str, bytes]],
        source: str,
    ) -> Outcome:
        """The dead-letter record for an input, unless that input was dead-lettered before."""
        # Malformed input has no trustworthy id: its source coordinates are its identity.
        dkey = f"dlq:{source}"
        if not self.window.add(dkey):
            return Outcome(dkey, duplicate=True, error=err)
        out_headers = _foreign(headers)
        out_headers += [
            (H_ERROR, err.code.encode()),
            (H_REASON, err.reason.encode()),
            (H_SOURCE, source.encode()),
            (H_DEDUPE, dkey.encode()),
        ]
        return Outcome(dkey, [Output(Route.DEAD_LETTER, key, value, out_headers)], error=err)


def forward(
    envelope: Envelope,
    decision: Decision,
    value: bytes,
    headers: Sequence[tuple[str, bytes]],
    source: str,
) -> list[Output]:
    """The forwarded record (original bytes + verdict headers) followed by alert records."""
    ckey = envelope.conversation.encode()
    out_headers = _foreign(headers) if headers else []
    out_headers += (
        (H_VERDICT, _VERDICT_BYTES[decision.verdict]),
        (H_RISK, f"{decision.risk:.3f}".encode() if decision.risk else b"0.000"),
        (H_RULES, ",".join(decision.rules).encode() if decision.rules else b""),
        (H_DECISION, decision.id.encode()),
        (H_DEDUPE, decision.id.encode()),
        (H_SOURCE, source.encode()),
    )
    for name, tag in decision.tags.items():
        out_headers.append((H_TAG + name, tag.encode()))
    if not decision.verdict.delivers and decision.reasons:  # why, for adapters and reviewers
        out_headers.append((H_REASON, "; ".join(decision.reasons)[:1024].encode()))
    if decision.feedback:  # also on the record itself: the feedback record is on another topic
        out_headers.append((H_FEEDBACK, decision.feedback[:2048].encode()))
    route = _ROUTE_FOR[decision.verdict]
    side = [(H_DECISION, decision.id.encode())]
    outputs = [
        Output(Route.ALERTS, ckey, _alert_encoder.encode(alert), side) for alert in decision.alerts
    ]
    for recall in decision.recalls:
        outputs.append(Output(Route.RECALLS, ckey, _alert_encoder.encode(recall), side))
    if decision.feedback:
        outputs.append(_feedback(envelope, decision, source))
    # The main record goes last: side outputs are sent before the record that marks the
    # input as done.
    outputs.append(Output(route, ckey, value, out_headers))
    return outputs


def alert_output(alert: Alert) -> Output:
    """A standalone alert record, not caused by one input (e.g. a failed rules reload)."""
    key = alert.conversation.encode() if alert.conversation else None
    return Output(Route.ALERTS, key, _alert_encoder.encode(alert), [])


def released(
    value: bytes, key: bytes | None, headers: Sequence[tuple[str, bytes]], by: str, why: str = ""
) -> Output:
    """A held or quarantined record let through after all (a human's release, an approving
    quorum): its original bytes and foreign headers to the delivered topic, verdict
    ``deliver``, the original decision id and ``ostracon-released-by``.

    ``headers`` are the quarantined record's: its decision id, source and tags carry over.
    """
    kept = [
        (k, v)
        for k, v in headers
        if not k.startswith(HEADER_PREFIX)
        or k in (H_DECISION, H_DEDUPE, H_SOURCE)
        or k.startswith(H_TAG)
    ]
    kept.append((H_VERDICT, _VERDICT_BYTES[Verdict.DELIVER]))
    kept.append((H_RELEASED, by.encode()))
    if why:
        kept.append((H_REASON, why[:1024].encode()))
    return Output(Route.DELIVERED, key, value, kept)


def _release_lost(ruling: Ruling) -> Alert:
    return Alert(
        kind="quorum-release-lost",
        severity=Severity.WARNING,
        summary=f"quorum approved message {ruling.message_id}, but its held record is no "
        "longer kept here (restart or too many open ballots): release it from the "
        "quarantine topic by hand",
        conversation=ruling.conversation,
        evidence=[ruling.message_id],
        rules=["quorum"],
        decision_id=ruling.decision_id,
        id=alert_id(ruling.decision_id, "quorum-release-lost", 0),
    )


def _release_refused(ruling: Ruling, sender: str) -> Alert:
    return Alert(
        kind="quorum-release-refused",
        severity=Severity.WARNING,
        summary=f"quorum approved message {ruling.message_id}, but its sender {sender} was "
        "blocklisted after it was held: it stays quarantined for a human",
        conversation=ruling.conversation,
        agents=[sender],
        evidence=[ruling.message_id],
        rules=["quorum"],
        decision_id=ruling.decision_id,
        id=alert_id(ruling.decision_id, "quorum-release-refused", 0),
    )


FEEDBACK_SENDER = "ostracon"


def _feedback(envelope: Envelope, decision: Decision, source: str) -> Output:
    """A system message to the sender of a blocked or held message, on the delivered topic."""
    note = Envelope(
        id=f"{decision.id}:feedback",
        conversation=envelope.conversation,
        sender=FEEDBACK_SENDER,
        kind=Kind.SYSTEM,
        content=decision.feedback,
        recipients=[envelope.sender],
        parents=[envelope.id],
        meta={"ostracon": {"decision_id": decision.id, "verdict": decision.verdict.value}},
    )
    headers = [
        (H_VERDICT, _VERDICT_BYTES[Verdict.DELIVER]),
        (H_DECISION, decision.id.encode()),
        (H_SOURCE, source.encode()),
    ]
    return Output(Route.DELIVERED, envelope.conversation.encode(), encode(note), headers)


def _foreign(headers: Sequence[tuple[str, bytes]]) -> Headers:
    """Inbound headers minus any ``ostracon-*``: a sender must not forge its own verdict."""
    return [(k, v) for k, v in headers if not k.startswith(HEADER_PREFIX)]


def header(headers: Sequence[tuple[str, bytes]], name: str) -> str | None:
    """The last value of header ``name`` as text, or None."""
    found = None
    for k, v in headers:
        if k == name:
            found = v
    return found.decode("utf-8", "replace") if found is not None else None
