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


class Alert(msgspec.Struct, frozen=True, gc=False):
    """Something an operator should see (the JSON shape: docs/protocol.md, "Alerts").

    Not tracked by the cycle collector (``gc=False``: ~20 % cheaper to make, and the rules
    stage makes several a message): an alert holds only strings and lists of strings, so it
    can never be part of a cycle.

    The core stamps ``decision_id``, ``id`` (see :func:`alert_id`), ``ts`` (the message's
    own time) and ``claims``; it has no clock, so a shell stamps ``ts`` when it is unset.
    """

    kind: str
    severity: Severity
    summary: str
    conversation: str
    agents: list[str] = []
    evidence: list[str] = []  # message ids
    rules: list[str] = []
    decision_id: str = ""
    ts: float | None = None
    id: str = ""
    claims: list[str] = []  # "key=value" fingerprints the alert is about


def alert_id(decision_id: str, kind: str, index: int) -> str:
    """Deterministic alert id: the same decision made again yields the same alert ids, so
    sinks and receivers can drop repeats (``index`` orders the decision's alerts)."""
    digest = hashlib.blake2b(f"{decision_id}|{kind}|{index}".encode(), digest_size=10)
    return "a-" + digest.hexdigest()


class Accusation(msgspec.Struct, frozen=True):
    """``accuser`` says ``accused`` is faulty; ``evidence`` holds message ids."""

    accuser: str
    accused: str
    reason: str
    evidence: list[str] = []
    # Filled by the byzantine stage (ostracon.byzantine): evidence ids by the accused found
    # Red or convicted, ids found right, whether the accusing message built on tainted
    # claims, the source (agent, rule, verifier, human, equivocation) and, for a proof such
    # as equivocation, an immediate block.
    proven: list[str] = []
    refuted: list[str] = []
    tainted: bool = False
    source: str = ""
    block: bool = False


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


class VoteRequest(msgspec.Struct, frozen=True, tag="vote-request", tag_field="type"):
    """A quorum gate asks validators to approve or reject a held message (ostracon.quorum).

    Written to ``topics.votes``; the JSON shape is in docs/protocol.md (Vote requests).
    """

    held: str  # the held message's id: votes answer with parents=[held]
    decision_id: str
    conversation: str
    sender: str
    validators: list[str]  # [] = any registered agent but the sender
    quorum: float  # approving (or rejecting) weight that decides
    max_share: float  # diversity cap: share of the quorum one model family or lineage may give
    question: str
    claims: list[ClaimReport] = []
    deadline: float | None = None  # message time (Unix seconds); None = set by the first tick


class Ruling(msgspec.Struct, frozen=True):
    """A quorum gate's outcome for a held message: ``approve`` releases it, ``reject`` and
    ``timeout`` leave it quarantined for a human (ostracon.quorum)."""

    decision_id: str  # the held message's decision
    conversation: str
    message_id: str
    outcome: str  # "approve" | "reject" | "timeout"
    approve: float = 0.0  # weight counted for each side
    reject: float = 0.0
    voters: list[str] = []  # whose votes were taken (a capped one may add no weight)


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
    vote_request: VoteRequest | None = None  # a quorum gate opened a ballot on this message
    rulings: list[Ruling] = []  # ballots this message decided (a vote) or timed out


def decision_id(conversation: str, message_id: str) -> str:
    """Deterministic id: the same message decided again (after a crash) keeps its id.

    Also the dedupe key: a message id is unique within its conversation. The length prefix
    keeps (conversation, id) pairs unambiguous whatever characters they contain.
    """
    digest = hashlib.blake2b(
        f"{len(conversation)}:{conversation}{message_id}".encode(), digest_size=12
    )
    return "d-" + digest.hexdigest()
