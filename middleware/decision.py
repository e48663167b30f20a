"""What the core decides about one message: the verdict and everything that goes with it.

These are plain msgspec structs so a decision can be logged as JSON and replayed.
"""

from __future__ import annotations

import enum
import hashlib

import msgspec


class Verdict(enum.StrEnum):
    """The five outcomes, ordered from least to most restrictive (see ``severity``)."""

    DELIVER = "deliver"
    DELIVER_TAGGED = "deliver-tagged"
    HOLD = "hold"
    QUARANTINE = "quarantine"
    BLOCK = "block"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]

    @property
    def delivers(self) -> bool:
        """True when the message goes on to its recipients."""
        return self in (Verdict.DELIVER, Verdict.DELIVER_TAGGED)


_SEVERITY = {v: i for i, v in enumerate(Verdict)}


class Severity(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class Alert(msgspec.Struct, frozen=True):
    """Something an operator should see. Sinks stamp wall-clock time; the core has no clock."""

    kind: str
    severity: Severity
    summary: str
    conversation: str
    agents: list[str] = []
    evidence: list[str] = []
    rules: list[str] = []
    decision_id: str = ""
    ts: float | None = None


class Accusation(msgspec.Struct, frozen=True):
    """``accuser`` says ``accused`` is faulty; ``evidence`` holds message ids."""

    accuser: str
    accused: str
    reason: str
    evidence: list[str] = []


class Label(enum.StrEnum):
    """A claim's standing: grounded or confirmed, contradicting the established, or neither."""

    GREEN = "green"
    YELLOW = "yellow"
    RED = "red"


class ClaimReport(msgspec.Struct, frozen=True):
    """One claim of the message as the core saw it (see docs/risk.md for the score)."""

    id: str
    key: str
    value: str
    label: Label
    risk: float
    grounded: bool
    support: int  # independent sources (distinct model families among the roots)
    depth: int
    reach: int
    origins: list[str] = []
    contradicts: list[str] = []  # established values of the same key
    components: dict[str, float] = {}
    verified_by: str = ""  # the verifier that labelled it ("" = none did: Yellow)


class Recall(msgspec.Struct, frozen=True):
    """An already-delivered message whose claim was convicted later."""

    conversation: str
    message_id: str
    claims: list[str]  # "key=value" fingerprints convicted in it
    reason: str
    decision_id: str = ""  # the decision that convicted it


class StageOutcome(msgspec.Struct, frozen=True):
    """One stage's contribution, kept in the decision's trail for explanation and replay."""

    stage: str
    verdict: Verdict
    reason: str = ""


class Decision(msgspec.Struct, frozen=True):
    """The core's answer for one envelope."""

    id: str
    message_id: str
    conversation: str
    sender: str
    verdict: Verdict
    risk: float = 0.0
    reasons: list[str] = []
    rules: list[str] = []
    tags: dict[str, str] = {}
    alerts: list[Alert] = []
    accusations: list[Accusation] = []
    trail: list[StageOutcome] = []
    claims: list[ClaimReport] = []
    feedback: str = ""  # text sent back to the sender when its message is blocked or held
    recalls: list[Recall] = []


def decision_id(conversation: str, message_id: str) -> str:
    """Deterministic id: the same message decided again (after a crash) keeps its id.

    Also the dedupe key: a message id is unique within its conversation. The length prefix
    keeps (conversation, id) pairs unambiguous whatever characters they contain.
    """
    digest = hashlib.blake2b(
        f"{len(conversation)}:{conversation}{message_id}".encode(), digest_size=12
    )
    return "d-" + digest.hexdigest()
