"""State events: the shared, replayable record of what changed governance state.

Accusations, blocklist changes and human decisions (quarantine release/deny, manual block and
unblock) are events on the state topic (``topics.state``). Every sidecar instance reads the
whole topic from the start and applies each event once (by ``id``), so every instance reaches
the same blocklist from the same events, and a restarted instance rebuilds it. An event is
never edited: a later event (an unblock, say) supersedes an earlier one. Events from humans
are the audit log: who (``by``), when (``at``), what (the event), why (``why``).

The shell stamps ``at`` (wall clock); the core applies events and never reads a clock.
"""

from __future__ import annotations

import hashlib
from typing import Literal

import msgspec


class StateEvent(msgspec.Struct, tag_field="type", frozen=True, kw_only=True):
    """Common fields. ``by`` is ``agent:<name>``, ``rule:<name>``, ``verifier:<name>``,
    ``human:<name>`` or ``ostracon``."""

    id: str  # unique; also the Kafka record key (append-only: compaction keeps each)
    at: float  # Unix seconds, stamped by the shell that wrote it
    by: str
    why: str = ""


class AccusationMade(StateEvent, tag="accusation", frozen=True, kw_only=True):
    """``accuser`` says ``accused`` is faulty, citing evidence message ids."""

    accuser: str
    accused: str
    reason: str
    evidence: list[str] = []
    conversation: str = ""
    source: Literal["agent", "rule", "verifier", "human", "equivocation"] = "agent"
    # What the instance that decided it found (see ostracon.byzantine): evidence ids by the
    # accused with a Red or convicted claim, ids whose claims were all grounded or
    # established (the accused was right), and whether the accusing message built on tainted
    # claims. Recorded in the event so every instance weighs it alike.
    proven: list[str] = []
    refuted: list[str] = []
    tainted: bool = False


class AgentBlocked(StateEvent, tag="block", frozen=True, kw_only=True):
    """An agent put on the blocklist directly (a human, or proof such as equivocation)."""

    agent: str
    reason: str
    evidence: list[str] = []


class AgentUnblocked(StateEvent, tag="unblock", frozen=True, kw_only=True):
    """A human takes an agent off the blocklist (overrides accusations made before it)."""

    agent: str


class QuarantineResolved(StateEvent, tag="quarantine", frozen=True, kw_only=True):
    """A held or quarantined message released to its recipients, or denied for good."""

    decision_id: str
    conversation: str
    message_id: str
    action: Literal["release", "deny"]


Event = AccusationMade | AgentBlocked | AgentUnblocked | QuarantineResolved

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Event)


class InvalidEvent(Exception):
    """Bytes on the state topic that are not a state event (skipped with a log line)."""


def encode_event(event: Event) -> tuple[bytes, bytes]:
    """(Kafka key, value) of an event."""
    return event.id.encode(), _encoder.encode(event)


def decode_event(data: bytes | None) -> Event:
    """The event in a state-topic record, or :class:`InvalidEvent`."""
    if data is None:
        raise InvalidEvent("tombstone")
    try:
        return _decoder.decode(data)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise InvalidEvent(str(exc)) from None


def event_id(*parts: str) -> str:
    """A deterministic event id from its defining parts: the same accusation derived again
    (after a crash, or by a second instance) gets the same id and is applied once."""
    h = hashlib.blake2b(digest_size=12)
    for part in parts:
        h.update(f"{len(part)}:{part}".encode())
    return "e-" + h.hexdigest()
