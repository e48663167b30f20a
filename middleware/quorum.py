"""Quorum gates: a held message waits for a weighted, diverse vote of validators.

A rule's ``hold`` action with ``validators`` or ``quorum > 1`` (ostracon.rules) makes its
message a *ballot*: the decision carries a :class:`~ostracon.decision.VoteRequest` (the router
writes it to ``topics.votes``), and later ``kind: vote`` envelopes with ``parents: [held id]``
and ``meta.vote: approve | reject`` (``meta.rationale``: why) are counted here:

- only registered (``identity.registered``), non-blocklisted agents count, only the listed
  validators when the rule lists any, never the held message's own sender, and only their
  first vote: later ones (under any message id) add nothing — vote stuffing gets an alert;
- a vote weighs what ostracon observed of the voter (:func:`credibility`), never what the
  voter says of itself (``meta.confidence`` is ignored);
- diversity cap: one model family (as registered in ``identity.agents``, else
  ``meta.model_family``) or one cited lineage (the vote's second parent, the evidence it
  cites) gives at most ``max_share`` of the quorum per side;
- the first side to reach the quorum decides: ``approve`` releases the held record (the
  decision carries a :class:`~ostracon.decision.Ruling`, the router emits ``released``),
  ``reject`` leaves it quarantined; past the deadline (message time of later messages, or
  the shell's :meth:`QuorumStage.tick`) it escalates to a human (alert ``quorum-timeout``).

Gate thresholds adapt: a human releasing a message the gate rejected lowers every gate's
quorum by ``adapt_step``; a human denying one it approved raises it (within bounds).

Also here: :func:`aggregate`, the leaderless Byzantine-robust pick among candidate answers
(median or trimmed mean of evaluator scores; votes with ``meta.scores``), and the who-said-
what of a ``spec-ambiguity`` alert (rules/testing-consensus.yaml). The rules and the shape of
the records are in docs/byzantine.md ("Quorum gate") and docs/protocol.md ("Votes").
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
import numpy as np

from .config import QuorumConfig
from .core import Context, Stage, State
from .decision import (
    Alert,
    Decision,
    Ruling,
    Severity,
    Verdict,
    VoteRequest,
    alert_id,
    decision_id,
)
from .envelope import Kind
from .genealogy import model_family
from .store import Event, QuarantineResolved

APPROVE, REJECT = 0, 1
_SIDES = {"approve": APPROVE, "reject": REJECT}
Outcome = Literal["approve", "reject", "timeout"]
_OUTCOME: tuple[Outcome, Outcome] = ("approve", "reject")
_EPS = 1e-9  # float sums of weights reach a quorum they equal
SPEC_AMBIGUITY = "spec-ambiguity"
# Module constants: an enum member looked up on its class costs ~0.2 us (hot path).
_HOLD, _VOTE = Verdict.HOLD, Kind.VOTE


def credibility(state: State, agent: str) -> float:
    """A voter's weight in (0, 1]: 1 minus its share of claims ostracon found Red (smoothed,
    so an agent with no record weighs 1), times its credibility in the byzantine layer
    (proven accusations against it, its own accusations proven wrong). Receiver-side only:
    nothing the agent says about itself (a ``meta.confidence`` of 1.0, say) changes it."""
    rec = state.records.get(agent)
    weight = 1.0 - rec[1] / (rec[0] + 1) if rec else 1.0
    trust = state.byzantine  # ostracon.byzantine.Trust, when that layer runs
    return weight * trust.credibility.get(agent, 1.0) if trust is not None else weight


@dataclass(slots=True)
class Ballot:
    """One held message waiting for its quorum."""

    did: str  # the held message's decision id (the key of everything here)
    conversation: str
    message_id: str
    sender: str
    validators: frozenset[str]  # empty: any registered agent but the sender
    quorum: float
    cap: float  # weight one family or lineage may give per side (max_share * quorum)
    timeout: float
    deadline: float | None  # None until the first tick when the held message had no ts
    votes: dict[str, int] = field(default_factory=dict)  # voter -> votes seen (first counts)
    tally: list[float] = field(default_factory=lambda: [0.0, 0.0])  # approve, reject
    used: dict[tuple[int, str], float] = field(default_factory=dict)  # (side, group) -> weight
    voters: list[str] = field(default_factory=list)  # counted, in order


@dataclass(slots=True)
class Question:
    """Evaluator scores for the candidate answers to one question (leaderless aggregation)."""

    scores: dict[str, dict[str, float]] = field(default_factory=dict)  # evaluator -> scores
    winner: str | None = None


@dataclass
class GateState:
    """The quorum layer's part of :class:`ostracon.core.State`."""

    ballots: dict[str, Ballot] = field(default_factory=dict)  # open, oldest first
    deadlines: list[tuple[float, str]] = field(default_factory=list)  # heap; closed = stale
    undated: list[str] = field(default_factory=list)  # ballots the next tick gives a deadline
    ruled: OrderedDict[str, str] = field(default_factory=OrderedDict)  # did -> outcome
    adjust: float = 0.0  # added to every gate's quorum (human overrides; docs/byzantine.md)
    questions: OrderedDict[tuple[str, str], Question] = field(default_factory=OrderedDict)


@dataclass(slots=True)
class _Changes:
    """What ``run`` decided for one message, applied to the state by ``observe``."""

    closed: list[tuple[str, str]] = field(default_factory=list)  # (did, outcome)
    vote: tuple[str, str, int, float, tuple[str, ...]] | None = None  # did, voter, side, w, groups
    repeat: tuple[str, str] | None = None  # (did, voter)
    opened: Ballot | None = None
    scores: tuple[tuple[str, str], str, dict[str, float], str | None] | None = None


class QuorumStage(Stage):
    """Opens ballots on quorum holds, counts votes, decides, times out; see the module doc.

    ``registered`` is the Sybil guard (``IdentityConfig.registered``). Per message: O(1)
    without a ballot, O(groups) for a vote, O(evaluators x candidates) for a score set.
    """

    name = "quorum"

    def __init__(
        self,
        config: QuorumConfig,
        registered: Callable[[str], bool] = lambda _: True,
        signing: bool = False,
        families: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.registered = registered
        # registered agent -> model family: a voter cannot dodge the diversity cap by
        # claiming another family in meta (identity.agents.<name>.model_family)
        self.families = dict(families or {})
        # identity.mode permissive/enforce: a vote counts only from a verified sender, since
        # permissive lets unsigned messages on under any registered name
        self.require_signed = config.require_signed or signing

    # ---------------------------------------------------------------------------- deciding

    def run(self, ctx: Context) -> None:
        gs: GateState | None = ctx.state.quorum
        env = ctx.envelope
        ch: _Changes | None = None
        if gs is not None and gs.deadlines and env.ts is not None:
            # Message time expires the earliest ballot (one per message; tick does the rest).
            deadline, did = gs.deadlines[0]
            ballot = gs.ballots.get(did)
            if ballot is not None and deadline < env.ts:
                ch = _Changes()
                self._close(ctx, ch, ballot, "timeout")
        if env.kind is _VOTE and env.meta:
            if env.parents:
                ch = self._vote(ctx, gs, ch)
            elif "vote" in env.meta or "scores" in env.meta:
                _invalid(ctx, "parents[0] must be the held message's (or question's) id")
        if ctx.verdict is _HOLD and "quorum" in ctx.notes:
            ch = self._open(ctx, gs, ch)
        if ctx.alerts:
            _who_said_what(ctx)
        if ch is not None:
            ctx.notes["gate"] = ch

    def _open(self, ctx: Context, gs: GateState | None, ch: _Changes | None) -> _Changes:
        gate: Any = ctx.notes["quorum"]  # ostracon.rules.HoldAction
        env = ctx.envelope
        ch = ch or _Changes()
        cfg = self.config
        quorum = max(1.0, gate.quorum + (gs.adjust if gs is not None else 0.0))
        did = decision_id(env.conversation, env.id)
        ballot = Ballot(
            did=did,
            conversation=env.conversation,
            message_id=env.id,
            sender=env.sender,
            validators=frozenset(gate.validators),
            quorum=quorum,
            cap=cfg.max_share * quorum,
            timeout=gate.timeout_s,
            deadline=env.ts + gate.timeout_s if env.ts is not None else None,
        )
        ch.opened = ballot
        if gs is not None and len(gs.ballots) >= cfg.max_open:
            # Bounded: the oldest open ballot goes to a human rather than memory growing.
            oldest = next(iter(gs.ballots.values()))
            if all(d != oldest.did for d, _ in ch.closed):
                self._close(ctx, ch, oldest, "timeout", f"more than {cfg.max_open} open ballots")
        ctx.vote_request = VoteRequest(
            held=env.id,
            decision_id=did,
            conversation=env.conversation,
            sender=env.sender,
            validators=sorted(gate.validators),
            quorum=quorum,
            max_share=cfg.max_share,
            question=f"Release message {env.id} from {env.sender}? Held because: "
            + "; ".join(ctx.reasons),
            claims=list(ctx.claims),
            deadline=ballot.deadline,
        )
        return ch

    def _vote(self, ctx: Context, gs: GateState | None, ch: _Changes | None) -> _Changes | None:
        env = ctx.envelope
        meta = env.meta
        scores = meta.get("scores")
        if scores is not None:
            ch = self._score(ctx, gs, ch, scores)
        choice = meta.get("vote")
        if choice is None:
            return ch
        if choice not in _SIDES:
            _invalid(ctx, f"meta.vote must be approve or reject, not {str(choice)[:64]!r}")
            return ch
        did = decision_id(env.conversation, env.parents[0])
        ballot = gs.ballots.get(did) if gs is not None else None
        if ch is not None and any(d == did for d, _ in ch.closed):
            ballot = None  # it timed out just now
        voter = env.sender
        why = self._refused(ctx, ballot, voter)
        if why:
            ctx.tags["vote"] = why
            if why == "repeat":
                assert ballot is not None
                ch = ch or _Changes()
                ch.repeat = (did, voter)
                if ballot.votes[voter] == 1:  # alert once per voter and ballot
                    ctx.alert(_stuffing(ballot, voter, env.id))
            return ch
        assert ballot is not None
        if ballot.deadline is not None and env.ts is not None and env.ts > ballot.deadline:
            ctx.tags["vote"] = "late"
            return ch
        side = _SIDES[choice]
        groups = (model_family(env, self.families),) + (
            (f"cites:{env.parents[1]}",) if len(env.parents) > 1 else ()
        )
        weight = credibility(ctx.state, voter)
        for g in groups:  # the diversity cap: what this family / lineage may still give
            weight = min(weight, ballot.cap - ballot.used.get((side, g), 0.0))
        weight = max(weight, 0.0)
        ch = ch or _Changes()
        ch.vote = (did, voter, side, weight, groups)
        ctx.tags["vote"] = "counted" if weight > 0 else "capped"
        if ballot.tally[side] + weight >= ballot.quorum - _EPS:
            self._close(ctx, ch, ballot, _OUTCOME[side], extra=(side, weight, voter))
        return ch

    def _refused(self, ctx: Context, ballot: Ballot | None, voter: str) -> str:
        """Why a vote does not count ("" when it does)."""
        if ballot is None:
            return "no-ballot"
        if voter == ballot.sender:
            return "own-message"
        if ballot.validators and voter not in ballot.validators:
            return "not-a-validator"
        if not self.registered(voter):
            return "unregistered"
        if voter in ctx.state.blocklist:
            return "blocklisted"
        if self.require_signed and not ctx.signed:
            return "unsigned"
        if voter in ballot.votes:
            return "repeat"
        return ""

    def _close(
        self,
        ctx: Context,
        ch: _Changes,
        ballot: Ballot,
        outcome: Outcome,
        why: str = "",
        extra: tuple[int, float, str] | None = None,
    ) -> None:
        (approve, reject), voters = ballot.tally, list(ballot.voters)
        if extra is not None:  # the vote deciding it now
            side, weight, voter = extra
            approve, reject = (
                (approve + weight, reject) if side == APPROVE else (approve, reject + weight)
            )
            voters.append(voter)
        ruling = Ruling(
            ballot.did, ballot.conversation, ballot.message_id, outcome, approve, reject, voters
        )
        ch.closed.append((ballot.did, outcome))
        ctx.rulings.append(ruling)
        evidence = [ballot.message_id] + ([ctx.envelope.id] if extra is not None else [])
        ctx.alert(_ruling_alert(ballot, ruling, why, evidence))

    def _score(
        self, ctx: Context, gs: GateState | None, ch: _Changes | None, scores: object
    ) -> _Changes | None:
        """A score set for the candidates answering ``parents[0]``: tag the current winner."""
        env = ctx.envelope
        voter = env.sender
        why = (
            "invalid"
            if not isinstance(scores, dict)
            else "unregistered"
            if not self.registered(voter)
            else "unsigned"
            if self.require_signed and not ctx.signed
            else ""
        )
        if why:
            ctx.tags["scores"] = why
            if why == "invalid":
                _invalid(ctx, "meta.scores must map candidate message ids to numbers", "scores")
            return ch
        assert isinstance(scores, dict)
        clean = {str(c): f for c, s in scores.items() if (f := _score_value(s)) is not None}
        qkey = (env.conversation, env.parents[0])
        question = gs.questions.get(qkey) if gs is not None else None
        if question is not None and voter in question.scores:
            ctx.tags["scores"] = "repeat"
            return ch
        table = dict(question.scores) if question is not None else {}
        table[voter] = clean
        winner = None
        if len(table) >= self.config.min_evaluators:
            winner, _ = aggregate(table, self.config.aggregate, self.config.trim)
        ch = ch or _Changes()
        ch.scores = (qkey, voter, clean, winner)
        ctx.tags["scores"] = "counted"
        if winner is not None:
            ctx.tags["aggregate"] = winner
            if question is None or question.winner != winner:
                ctx.alert(
                    Alert(
                        kind="aggregate",
                        severity=Severity.INFO,
                        summary=f"candidate {winner} leads the answers to {env.parents[0]} "
                        f"({self.config.aggregate} of {len(table)} evaluators' scores)",
                        conversation=env.conversation,
                        agents=sorted(table),
                        evidence=[env.parents[0], winner],
                        rules=[self.name],
                    )
                )
        return ch

    # ------------------------------------------------------------------------ state changes

    def observe(self, ctx: Context, decision: Decision) -> None:
        ch: _Changes | None = ctx.notes.get("gate")  # type: ignore[assignment]
        if ch is None:
            return
        gs = _gate(ctx.state)
        for did, outcome in ch.closed:
            gs.ballots.pop(did, None)
            self._ruled(gs, did, outcome)
        if ch.vote is not None:
            did, voter, side, weight, groups = ch.vote
            ballot = gs.ballots.get(did)
            if ballot is not None:
                ballot.votes[voter] = 1
                ballot.tally[side] += weight
                ballot.voters.append(voter)
                for g in groups:
                    ballot.used[side, g] = ballot.used.get((side, g), 0.0) + weight
        if ch.repeat is not None:
            ballot = gs.ballots.get(ch.repeat[0])
            if ballot is not None:
                ballot.votes[ch.repeat[1]] += 1
        if ch.opened is not None:
            b = ch.opened
            gs.ballots[b.did] = b
            if b.deadline is None:
                gs.undated.append(b.did)
            else:
                heapq.heappush(gs.deadlines, (b.deadline, b.did))
        if ch.scores is not None:
            qkey, voter, scores, winner = ch.scores
            question = gs.questions.get(qkey)
            if question is None:
                question = gs.questions[qkey] = Question()
                if len(gs.questions) > self.config.max_questions:
                    gs.questions.popitem(last=False)
            question.scores[voter] = scores
            question.winner = winner
        _drop_stale(gs)

    def _ruled(self, gs: GateState, did: str, outcome: str) -> None:
        """Remember what the gate decided, for human overrides (bounded)."""
        gs.ruled[did] = outcome
        if len(gs.ruled) > self.config.max_open:
            gs.ruled.popitem(last=False)

    def tick(self, state: State, now: float) -> tuple[list[Ruling], list[Alert]]:
        """Wall-clock ``now``: date undated ballots, time out every ballot past its deadline."""
        gs: GateState | None = state.quorum
        if gs is None:
            return [], []
        for did in gs.undated:
            ballot = gs.ballots.get(did)
            if ballot is not None and ballot.deadline is None:
                ballot.deadline = now + ballot.timeout
                heapq.heappush(gs.deadlines, (ballot.deadline, did))
        gs.undated.clear()
        rulings: list[Ruling] = []
        alerts: list[Alert] = []
        while gs.deadlines and gs.deadlines[0][0] < now:
            _, did = heapq.heappop(gs.deadlines)
            ballot = gs.ballots.pop(did, None)
            if ballot is None:
                continue
            ruling, alert = self._timed_out(gs, ballot, "", now)
            alerts.append(alert)
            rulings.append(ruling)
        return rulings, alerts

    def escalate(self, state: State, did: str, why: str, now: float | None) -> list[Alert]:
        """Close ballot ``did`` now and hand its message to a human (the shell can no longer
        keep its held record, e.g. ``quorum.max_held_bytes``): its ``quorum-timeout`` alert."""
        gs: GateState | None = state.quorum
        ballot = gs.ballots.pop(did, None) if gs is not None else None
        if ballot is None:
            return []
        assert gs is not None
        _drop_stale(gs)
        return [self._timed_out(gs, ballot, why, now)[1]]

    def _timed_out(
        self, gs: GateState, ballot: Ballot, why: str, now: float | None
    ) -> tuple[Ruling, Alert]:
        """A ballot (already out of ``gs.ballots``) closed without a quorum."""
        approve, reject = ballot.tally
        did = ballot.did
        ruling = Ruling(
            did, ballot.conversation, ballot.message_id, "timeout", approve, reject,
            list(ballot.voters),
        )  # fmt: skip
        self._ruled(gs, did, "timeout")
        alert = _ruling_alert(ballot, ruling, why, [ballot.message_id])
        return ruling, msgspec.structs.replace(alert, id=alert_id(did, alert.kind, 0), ts=now)

    def apply_event(self, state: State, event: Event) -> list[Alert]:
        """A human resolved a held message: its ballot closes; an override adapts the gates."""
        if not isinstance(event, QuarantineResolved) or state.quorum is None:
            return []
        gs: GateState = state.quorum
        if gs.ballots.pop(event.decision_id, None) is not None:
            _drop_stale(gs)
            return []  # decided by a human before the gate did: no more votes matter
        outcome = gs.ruled.get(event.decision_id)
        cfg = self.config
        if outcome == "reject" and event.action == "release":
            step, why = -cfg.adapt_step, "released a message the gate rejected"
        elif outcome == "approve" and event.action == "deny":
            step, why = cfg.adapt_step, "denied a message the gate approved"
        else:
            return []
        before = gs.adjust
        gs.adjust = min(cfg.adapt_max, max(cfg.adapt_min, before + step))
        return [
            Alert(
                kind="quorum-threshold",
                severity=Severity.INFO,
                summary=f"{event.by} {why}: gate quorums now {gs.adjust:+g} "
                f"(were {before:+g}) of what their rules say",
                conversation=event.conversation,
                evidence=[event.message_id],
                rules=[self.name],
                decision_id=event.decision_id,
                id=alert_id(event.id, "quorum-threshold", 0),
                ts=event.at,
            )
        ]


def _gate(state: State) -> GateState:
    gs: GateState | None = state.quorum
    if gs is None:
        gs = state.quorum = GateState()
    return gs


def _drop_stale(gs: GateState) -> None:
    """Pop closed ballots off the deadline heap's top, so ``run`` sees a live one there."""
    heap = gs.deadlines
    while heap and heap[0][1] not in gs.ballots:
        heapq.heappop(heap)


def _ruling_alert(ballot: Ballot, ruling: Ruling, why: str, evidence: list[str]) -> Alert:
    outcome = ruling.outcome
    weights = f"approve {ruling.approve:g}, reject {ruling.reject:g} of {ballot.quorum:g}"
    if outcome == "approve":
        kind, severity, then = "quorum-approved", Severity.INFO, "released"
    elif outcome == "reject":
        kind, severity, then = "quorum-rejected", Severity.WARNING, "stays quarantined"
    else:
        kind, severity = "quorum-timeout", Severity.WARNING
        then = f"escalated to human review ({why or 'no quorum by the deadline'})"
    return Alert(
        kind=kind,
        severity=severity,
        summary=f"quorum {outcome} on message {ballot.message_id} from {ballot.sender} "
        f"({weights}; voters: {', '.join(ruling.voters) or 'none'}): {then}",
        conversation=ballot.conversation,
        agents=[ballot.sender, *ruling.voters],
        evidence=evidence,
        rules=["quorum"],
        decision_id=ballot.did,
    )


def _score_value(s: object) -> float | None:
    """A finite number as a float; None for anything else (an integer beyond a double too)."""
    if isinstance(s, bool) or not isinstance(s, int | float):
        return None
    try:
        f = float(s)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def _invalid(ctx: Context, problem: str, tag: str = "vote") -> None:
    """A malformed vote: tagged ``invalid`` and an ``invalid-vote`` alert saying why."""
    env = ctx.envelope
    ctx.tags[tag] = "invalid"
    summary = f"vote {env.id} from {env.sender} counts for nothing: {problem}"
    ctx.alert_sender("invalid-vote", Severity.WARNING, summary, QuorumStage.name, [env.id])


def _stuffing(ballot: Ballot, voter: str, vote_id: str) -> Alert:
    return Alert(
        kind="vote-stuffing",
        severity=Severity.WARNING,
        summary=f"{voter} voted again on held message {ballot.message_id}: only its first "
        "vote counts",
        conversation=ballot.conversation,
        agents=[voter],
        evidence=[ballot.message_id, vote_id],
        rules=["quorum"],
    )


# ------------------------------------------------------------------------------- aggregation


def aggregate(
    scores: Mapping[str, Mapping[str, float]],
    method: Literal["median", "trimmed-mean"] = "median",
    trim: float = 0.2,
) -> tuple[str | None, dict[str, float]]:
    """Leaderless Byzantine-robust pick: (winner, each candidate's aggregate score).

    ``scores`` is evaluator -> candidate -> score. A candidate's score is the median (or the
    mean with ``trim`` of the scores cut at each end) of its evaluators' scores, so one
    extreme evaluator moves it little and a bad leader cannot win alone. Only candidates
    scored by a majority of the evaluators are eligible (an evaluator cannot push a candidate
    no one else scored). Ties go to the smaller candidate id: the same scores give the same
    winner everywhere.
    """
    evaluators = sorted(scores)
    candidates = sorted({c for s in scores.values() for c in s})
    if not evaluators or not candidates:
        return None, {}
    m = np.full((len(evaluators), len(candidates)), np.nan)
    col = {c: j for j, c in enumerate(candidates)}
    for i, e in enumerate(evaluators):
        for c, s in scores[e].items():
            m[i, col[c]] = s
    counts = np.sum(~np.isnan(m), axis=0)
    eligible = counts * 2 > len(evaluators)
    if method == "median":
        with np.errstate(all="ignore"):
            agg = np.array(
                [
                    np.median(m[~np.isnan(m[:, j]), j]) if counts[j] else np.nan
                    for j in range(len(candidates))
                ]
            )
    else:
        agg = np.full(len(candidates), np.nan)
        for j in range(len(candidates)):
            vals = np.sort(m[~np.isnan(m[:, j]), j])
            k = int(len(vals) * trim)
            if len(vals) - 2 * k > 0:
                agg[j] = float(np.mean(vals[k : len(vals) - k]))
    result = {c: float(agg[j]) for j, c in enumerate(candidates) if eligible[j]}
    if not result:
        return None, result
    winner = min(result, key=lambda c: (-result[c], c))
    return winner, result


# ----------------------------------------------------------------------- testing as consensus


def _who_said_what(ctx: Context) -> None:
    """Complete a ``spec-ambiguity`` alert (rules/testing-consensus.yaml) with who said what
    on each disputed test, and name every judge involved."""
    for i, alert in enumerate(ctx.alerts):
        if alert.kind != SPEC_AMBIGUITY:
            continue
        env = ctx.envelope
        lin = ctx.state.genealogy.lineage(env.conversation)
        parts: list[str] = []
        agents = dict.fromkeys(alert.agents)
        for claim in ctx.claims:
            held = lin.latest.get(claim.key) if lin is not None else None
            if not held or all(v == claim.value for a, v in held.items() if a != env.sender):
                continue
            said = {**held, env.sender: claim.value}
            by_value: dict[str, list[str]] = {}
            for agent, value in said.items():
                by_value.setdefault(value, []).append(agent)
                agents.setdefault(agent)
            parts.append(
                f"test {claim.key!r}: "
                + "; ".join(
                    f"{', '.join(sorted(names))} said {value}"
                    for value, names in sorted(by_value.items())
                )
            )
        if parts:
            ctx.alerts[i] = msgspec.structs.replace(
                alert,
                summary=f"{alert.summary} (who said what: {' | '.join(parts)})",
                agents=sorted(agents),
            )
