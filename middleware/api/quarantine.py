"""The review queue: records on the quarantine topic that no human (or quorum) resolved yet.

The index is fed from the quarantine topic itself (read from the start, then followed), so it
holds what every instance quarantined, survives a restart, and costs the message path
nothing. It keeps what a reviewer reads (who, what, why, a content preview) and the record's
coordinates; the record's bytes are fetched again from Kafka when it is released, so memory
stays bounded by ``api.max_held`` entries whatever the message sizes.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterator, Mapping, Sequence

from ..envelope import InvalidEnvelope, decode
from ..routing import H_DECISION, H_REASON, H_RISK, H_RULES, H_VERDICT, header

PREVIEW = 4096  # characters of content kept per held record


@dataclasses.dataclass(frozen=True, slots=True)
class Held:
    """One quarantined record as a reviewer sees it, and where it lies on the topic."""

    decision_id: str
    topic: str
    partition: int
    offset: int
    at: float  # the record's broker timestamp, Unix seconds
    verdict: str
    reason: str
    risk: float
    rules: list[str]
    conversation: str = ""
    message_id: str = ""
    sender: str = ""
    kind: str = ""
    content: str = ""  # at most PREVIEW characters
    truncated: bool = False
    recipients: list[str] = dataclasses.field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "decision_id": self.decision_id,
            "conversation": self.conversation,
            "message_id": self.message_id,
            "sender": self.sender,
            "kind": self.kind,
            "recipients": self.recipients,
            "verdict": self.verdict,
            "reason": self.reason,
            "risk": self.risk,
            "rules": self.rules,
            "content": self.content,
            "content_truncated": self.truncated,
            "at": self.at,
            "record": {"topic": self.topic, "partition": self.partition, "offset": self.offset},
        }


def held_from_record(
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]],
) -> Held | None:
    """The review entry for a quarantine-topic record; None if it carries no decision id."""
    did = header(headers, H_DECISION)
    if not did:
        return None
    try:
        risk = float(header(headers, H_RISK) or 0.0)
    except ValueError:
        risk = 0.0
    rules = header(headers, H_RULES) or ""
    held = Held(
        decision_id=did,
        topic=topic,
        partition=partition,
        offset=offset,
        at=timestamp_ms / 1000.0,
        verdict=header(headers, H_VERDICT) or "",
        reason=header(headers, H_REASON) or "",
        risk=risk,
        rules=[r for r in rules.split(",") if r],
    )
    try:
        env = decode(value, 1 << 31)
    except InvalidEnvelope:
        return held  # the sidecar forwards only envelopes; keep what the headers say
    return dataclasses.replace(
        held,
        conversation=env.conversation,
        message_id=env.id,
        sender=env.sender,
        kind=env.kind.value,
        content=env.content[:PREVIEW],
        truncated=len(env.content) > PREVIEW,
        recipients=list(env.recipients),
    )


class QuarantineIndex:
    """Held records by decision id, oldest first; bounded (the oldest are dropped beyond)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._held: collections.OrderedDict[str, Held] = collections.OrderedDict()
        self.dropped = 0  # entries pushed out by the capacity (reported by /api/quarantine)

    def add(self, held: Held) -> None:
        """Index a record; a decision seen again (a re-read after a crash) keeps its first."""
        if held.decision_id in self._held:
            return
        self._held[held.decision_id] = held
        if len(self._held) > self.capacity:
            self._held.popitem(last=False)
            self.dropped += 1

    def get(self, decision_id: str) -> Held | None:
        return self._held.get(decision_id)

    def pending(self, resolved: Mapping[str, str]) -> Iterator[Held]:
        """Unresolved records, oldest first. Resolved ones are forgotten as they are met
        (a resolution is final)."""
        done = [did for did in self._held if did in resolved]
        for did in done:
            del self._held[did]
        return iter(list(self._held.values()))

    def __len__(self) -> int:
        return len(self._held)
