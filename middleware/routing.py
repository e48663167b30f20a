"""Turns one inbound record into the output records every shell writes.

The router is where bytes meet the core: decode (bad bytes become a dead-letter record with a
reason), drop duplicates by message id (within its conversation), ask the core, then build the
forwarded record (the original bytes plus verdict headers) and the side records: alerts,
recalls and feedback to the sender. It does no I/O, so the Kafka sidecar and the in-process
bus route identically.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

import msgspec

from .config import Config
from .core import Core
from .decision import Alert, Decision, Verdict, decision_id
from .dedupe import DedupeWindow
from .envelope import Envelope, InvalidEnvelope, Kind, decode, encode
from .pipeline import build_core

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


class Route(enum.StrEnum):
    """Which configured topic an output goes to."""

    DELIVERED = "delivered"
    QUARANTINE = "quarantine"
    DEAD_LETTER = "dead_letter"
    ALERTS = "alerts"
    RECALLS = "recalls"


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

    def __init__(self, core: Core, max_message_bytes: int, window: DedupeWindow) -> None:
        self.core = core
        self.max_message_bytes = max_message_bytes
        self.window = window

    @classmethod
    def from_config(cls, config: Config, core: Core | None = None) -> Router:
        """The router every shell uses: the config's pipeline (or ``core``, given the config's
        blocklist) with the configured size limit and dedupe window."""
        if core is None:
            core = build_core(config)
        else:
            core.state.blocklist.update(config.blocklist.agents)
        return cls(core, config.limits.max_message_bytes, DedupeWindow(config.dedupe.window))

    def route(
        self,
        value: bytes | None,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
        source: str = "",
    ) -> Outcome:
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
        if not self.window.add(dkey):
            return Outcome(dkey, envelope=envelope, duplicate=True)
        decision = self.core.decide(envelope, dkey)
        return Outcome(
            dkey,
            forward(envelope, decision, value or b"", headers, source),
            envelope=envelope,
            decision=decision,
        )

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
