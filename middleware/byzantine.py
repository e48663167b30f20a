"""Byzantine agents: equivocation, accusations, and the blocklist they add up to.

``ByzantineStage`` runs after the rules and does three things per message, each O(its claims
or its evidence), never a graph walk:

- **Equivocation**: the same sender asserting different values for one claim key to disjoint
  audiences in one conversation. An index (conversation, sender, key) -> {value: who got it,
  in which message, signed or not} finds it in O(values of that key). Both messages signed
  is proof: an ``equivocation`` alert with the evidence and (``byzantine.equivocation``) an
  immediate block, no vote. Unsigned, it is a suspicion (``byzantine.unsigned_equivocation``).
- **Accusations**: from agents (``kind: accusation``, ``meta.accused``, ``meta.evidence``),
  from rules (``accuse``), from ostracon's verifiers (a Red claim) and from equivocation. Each
  is checked against what ostracon observed: evidence by the accused found Red or convicted
  (``proven``), found right (``refuted``: the accuser is wrong), or neither; an accusation
  built on tainted claims is ``tainted``. The router turns them into ``AccusationMade`` state
  events written in the same batch as the decision (ostracon.routing).
- **Blocklist**: a deterministic function of the set of state events
  (:func:`compute_blocklist`), recomputed only when an accusation, block or unblock is
  applied: the same events in any order give every instance the same blocklist.

Trust is receiver-side: credibility comes only from state events (proven accusations
against an agent, its accusations proven wrong), reputation from what the genealogy saw;
nothing an agent says about itself (``meta.confidence``) is read. See docs/byzantine.md.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import msgspec
import networkx as nx

from .config import ByzantineConfig, Config
from .core import Context, Core, Stage, State
from .decision import Accusation, Alert, Decision, Label, Severity, Verdict
from .envelope import Kind
from .store import AccusationMade, AgentBlocked, AgentUnblocked, Event, event_id

MAX_EVIDENCE = 32  # message ids one accusation may cite
MAX_VALUES = 8  # values remembered per (conversation, sender, key)
# Accusers that are not agents: their accusations are not votes of a peer that could lie.
INTERNAL = ("rule:", "verifier:", "human:", "ostracon")


def is_internal(name: str) -> bool:
    """A rule, verifier, human or ostracon itself: not an agent on the bus."""
    return name.startswith(INTERNAL)


@dataclass(frozen=True, slots=True)
class Said:
    """One value a sender asserted for a key in a conversation, and to whom."""

    recipients: frozenset[str]
    message: str
    signed: bool
    red: bool  # Red when said: a later different value is a correction, not equivocation
    heard: int  # what the sender had been told about the key by then (Conversation.heard)
    ts: float | None  # message time: a conflict long after is a change of mind


@dataclass(slots=True)
class Stated:
    """A sender's values for one key, and its own broadcasts of it since (which reach
    everyone, the sender included, but tell it nothing new)."""

    values: dict[str, Said] = field(default_factory=dict)
    own: int = 0


@dataclass(slots=True)
class Conversation:
    """The equivocation index of one conversation: who said what to whom, and counters of
    how often each key was asserted to each agent, so "did the sender learn anything about
    the key between two statements" is two counter reads."""

    said: dict[tuple[str, str], Stated] = field(default_factory=dict)  # (sender, key)
    broadcast: dict[str, int] = field(default_factory=dict)  # key -> assertions to everyone
    told: dict[tuple[str, str], int] = field(default_factory=dict)  # (agent, key) -> to it

    def heard(self, agent: str, key: str, stated: Stated) -> int:
        """Assertions of ``key`` by others that reached ``agent`` (a monotone counter)."""
        return self.broadcast.get(key, 0) - stated.own + self.told.get((agent, key), 0)


@dataclass
class Trust:
    """The byzantine layer's memory (``State.byzantine``): the state events that matter to
    the blocklist, and the equivocation index."""

    accusations: dict[str, AccusationMade] = field(default_factory=dict)  # id -> event
    blocks: dict[str, AgentBlocked] = field(default_factory=dict)  # id -> event
    unblocked: dict[str, float] = field(default_factory=dict)  # agent -> latest unblock ``at``
    static: dict[str, str] = field(default_factory=dict)  # config blocklist
    # conversation -> its equivocation index; least recently active first
    said: dict[str, Conversation] = field(default_factory=dict)
    credibility: dict[str, float] = field(default_factory=dict)  # derived, agents only
    blocked: dict[str, str] = field(default_factory=dict)  # derived: the last blocklist
    # (accuser, accused) -> (best evidence weight, its at): repeats that add nothing are
    # not written again (see ByzantineStage._news)
    pairs: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)
    # agent accuser -> the distinct agents it accused (byzantine.max_accused_per_accuser)
    accused_by: dict[str, set[str]] = field(default_factory=dict)
    deferred: bool = False  # catching up: recompute once at the end (see deferred())
    tally: Tally | None = None  # derived: the quorum strategy's running totals
    direct: dict[str, str] = field(default_factory=dict)  # derived: config + AgentBlocked


# ------------------------------------------------------------------------ the stage


class ByzantineStage(Stage):
    """Equivocation, accusation checks and the blocklist's upkeep (see the module doc)."""

    name = "byzantine"

    def __init__(
        self,
        cfg: ByzantineConfig,
        registered: Callable[[str], bool] | None = None,
        static: Mapping[str, str] | None = None,
        max_conversations: int = 100_000,
        require_signed: bool = False,
    ) -> None:
        self.cfg = cfg
        self.registered = registered  # None: no Sybil guard (no identities configured)
        # identity.mode permissive/enforce: only a verified sender may accuse (permissive
        # lets unsigned messages on, and anyone can write a registered agent's name)
        self.require_signed = require_signed
        self.static = dict(static or {})
        self.max_conversations = max_conversations

    # ---------------------------------------------------------------- pure: run

    def run(self, ctx: Context) -> None:
        env = ctx.envelope
        if env.kind is Kind.ACCUSATION:
            self._accusation(ctx)
        if env.recipients:
            self._equivocation(ctx)
        if self.cfg.accuse_red and ctx.claims:
            red = [c for c in ctx.claims if c.label is Label.RED]
            if red:
                by = red[0].verified_by or "contradiction"
                names = ", ".join(f"{c.key} = {c.value}" for c in red)
                ctx.accusations.append(
                    Accusation(f"verifier:{by}", env.sender, f"red claim: {names}", [env.id])
                )
        if ctx.accusations:
            ctx.accusations = self._news(ctx, [self._checked(ctx, a) for a in ctx.accusations])

    def _news(self, ctx: Context, accusations: list[Accusation]) -> list[Accusation]:
        """Only accusations that add something: a first one from this accuser against that
        agent (since its last unblock), or one with stronger evidence. A flood of repeats
        writes no events, and the blocklist is recomputed per event."""
        trust: Trust | None = ctx.state.byzantine
        if trust is None or not trust.pairs:
            return accusations
        out = []
        for acc in accusations:
            known = trust.pairs.get((acc.accuser, acc.accused))
            if acc.block or known is None or evidence_weight(acc, self.cfg) > known[0]:
                out.append(acc)
            elif known[1] <= trust.unblocked.get(acc.accused, -math.inf):
                out.append(acc)  # the known one was overridden by an unblock since
        return out

    def _accusation(self, ctx: Context) -> None:
        """A ``kind: accusation`` envelope: ``meta.accused``, ``meta.evidence`` (message ids in
        this conversation; default: ``parents``), the reason in ``content``."""
        env = ctx.envelope
        meta = env.meta or {}
        accused = meta.get("accused")
        evidence = meta.get("evidence", env.parents)
        problem = ""
        if not isinstance(accused, str) or not accused or len(accused) > 256:
            problem = "meta.accused must be the accused agent's name"
        elif accused == env.sender:
            problem = "an agent cannot accuse itself"
        elif not isinstance(evidence, list) or not all(isinstance(e, str) for e in evidence):
            problem = "meta.evidence must be a list of message ids"
        elif len(evidence) > MAX_EVIDENCE:
            problem = f"meta.evidence cites more than {MAX_EVIDENCE} messages"
        elif is_internal(env.sender):  # they skip the Sybil guard and weigh like proof
            problem = f"sender name {env.sender!r} is reserved for ostracon's own accusers"
        elif self.registered is not None and not self.registered(env.sender):
            problem = f"{env.sender} is not a registered identity (Sybil guard)"
        elif self.require_signed and not ctx.signed:
            problem = f"accusation from {env.sender} is not verifiably signed"
        elif not _known(ctx, accused) or (
            self.registered is not None and not self.registered(accused)
        ):
            problem = f"{accused} is not an agent ostracon knows (never seen here, unregistered)"
        else:
            trust: Trust | None = ctx.state.byzantine
            mine = trust.accused_by.get(env.sender, ()) if trust is not None else ()
            if accused not in mine and len(mine) >= self.cfg.max_accused_per_accuser:
                problem = (
                    f"{env.sender} accused {len(mine)} agents already "
                    f"(byzantine.max_accused_per_accuser)"
                )
        if problem:
            self._alert(ctx, "invalid-accusation", Severity.WARNING, problem, [env.id])
            return
        assert isinstance(accused, str) and isinstance(evidence, list)
        reason = env.content.strip()[:512] or "no reason given"
        ctx.accusations.append(
            Accusation(env.sender, accused, reason, list(evidence), source="agent")
        )

    def _equivocation(self, ctx: Context) -> None:
        env = ctx.envelope
        trust: Trust | None = ctx.state.byzantine
        conv = trust.said.get(env.conversation) if trust is not None else None
        if conv is None:
            return
        audience: frozenset[str] | None = None
        maybe: tuple[str, tuple[str, Said], str] | None = None
        for c in ctx.claims or _raw_claims(ctx):
            stated = conv.said.get((env.sender, c.key))
            if stated is None:
                continue
            for other, s in stated.values.items():
                if other == c.value or s.red:
                    continue
                if audience is None:
                    audience = frozenset(env.recipients)
                if not (s.recipients - audience) or not (audience - s.recipients):
                    continue  # everyone who got one value got the other too
                lin = ctx.state.genealogy.lineage(env.conversation)
                if lin is not None and other in lin.convicted.get(c.key, ()):
                    continue  # a correction of a value ostracon convicted
                learnt = conv.heard(env.sender, c.key, stated) != s.heard
                late = (
                    s.ts is not None
                    and env.ts is not None
                    and abs(env.ts - s.ts) > self.cfg.equivocation_window_s
                )
                if not (learnt or late):
                    self._equivocated(ctx, c.key, (other, s), c.value, False)
                    return
                if maybe is None:
                    maybe = (c.key, (other, s), c.value)
        if maybe is not None:  # only conflicts the sender may have had reason for
            self._equivocated(ctx, *maybe, True)

    def _equivocated(
        self, ctx: Context, key: str, first: tuple[str, Said], value: str, changed: bool
    ) -> None:
        """Two conflicting statements. Concurrent (``changed`` False: the sender was told
        nothing new about the key between them, within the window) and both signed: proof.
        Otherwise the sender may have changed its mind: a ``possible-equivocation`` info
        alert, never an accusation or a block (docs/byzantine.md, Equivocation)."""
        env = ctx.envelope
        other, s = first
        proof = ctx.signed and s.signed and not changed
        action = self.cfg.equivocation if proof else self.cfg.unsigned_equivocation
        if action == "ignore":
            return
        who = lambda r: ",".join(sorted(r))  # noqa: E731
        evidence = f"{key} = {other} to {who(s.recipients)} in {s.message}; {key} = {value} to "
        evidence += f"{who(env.recipients)} in {env.id}"
        if changed:
            summary = f"{env.sender} changed {key} after new information or time: {evidence}"
            self._alert(ctx, "possible-equivocation", Severity.INFO, summary, [s.message, env.id])
            return
        kind = "proof" if proof else "suspicion (unsigned)"
        summary = f"{env.sender} equivocates, {kind}: {evidence}"
        self._alert(
            ctx,
            "equivocation",
            Severity.CRITICAL if proof else Severity.WARNING,
            summary,
            [s.message, env.id],
        )
        if action in ("block", "accuse"):
            ctx.accusations.append(
                Accusation(
                    "ostracon",
                    env.sender,
                    f"equivocation: {evidence}",
                    [s.message, env.id],
                    proven=[s.message, env.id],
                    source="equivocation",
                    block=action == "block",
                )
            )
        if action == "block":
            ctx.propose(self.name, Verdict.BLOCK, summary)

    def _checked(self, ctx: Context, acc: Accusation) -> Accusation:
        """The accusation with its evidence weighed against what ostracon observed."""
        if acc.source == "equivocation":
            return acc
        proven, refuted = _weigh(ctx, acc.accused, acc.evidence)
        source = acc.source or (acc.accuser.split(":", 1)[0] if ":" in acc.accuser else "agent")
        return msgspec.structs.replace(
            acc,
            proven=proven,
            refuted=refuted,
            # the accusing message's own basis; a rule or verifier accuses on ostracon's
            tainted=acc.accuser == ctx.envelope.sender and _tainted(ctx),
            source=source,
        )

    def _alert(
        self, ctx: Context, kind: str, severity: Severity, summary: str, evidence: list[str]
    ) -> None:
        ctx.alert_sender(kind, severity, summary, self.name, evidence)

    # ------------------------------------------------------------ state changes

    def trust(self, state: State) -> Trust:
        if state.byzantine is None:
            state.byzantine = Trust(static=dict(self.static), blocked=dict(self.static))
        return state.byzantine  # type: ignore[no-any-return]

    def observe(self, ctx: Context, decision: Decision) -> None:
        """Index the message's claims: every assertion bumps the counters of who it
        reached; a directed one by an agent not blocked is also remembered as ``Said``."""
        env = ctx.envelope
        claims = ctx.claims or _raw_claims(ctx)
        if not claims:
            return
        said = (ctx.state.byzantine or self.trust(ctx.state)).said
        conv = said.get(env.conversation)
        if conv is None or next(reversed(said)) != env.conversation:
            said.pop(env.conversation, None)  # most recently active last
            said[env.conversation] = conv = conv if conv is not None else Conversation()
            if len(said) > self.max_conversations:
                del said[next(iter(said))]
        sender, recipients = env.sender, env.recipients
        remember = bool(recipients) and "blocklist" not in decision.rules
        informs = decision.verdict.delivers  # what was held or blocked told no one anything
        audience: frozenset[str] | None = None
        for c in claims:
            key = c.key
            stated = conv.said.get((sender, key))
            if not informs:
                pass
            elif recipients:
                told = conv.told
                for r in recipients:
                    if r != sender:
                        told[r, key] = told.get((r, key), 0) + 1
            else:
                conv.broadcast[key] = conv.broadcast.get(key, 0) + 1
                if stated is not None:
                    stated.own += 1
            if not remember:
                continue
            if stated is None:
                stated = conv.said[sender, key] = Stated()
            elif c.value in stated.values or len(stated.values) >= MAX_VALUES:
                continue
            if audience is None:
                audience = frozenset(recipients)
            stated.values[c.value] = Said(
                audience,
                env.id,
                ctx.signed,
                c.label is Label.RED,
                conv.heard(sender, key, stated),
                env.ts,
            )

    def apply_event(self, state: State, event: Event) -> list[Alert]:
        trust = self.trust(state)
        if isinstance(event, AccusationMade):
            trust.accusations[event.id] = event
            pair = (event.accuser, event.accused)
            weight = evidence_weight(event, self.cfg)
            known = trust.pairs.get(pair)
            if known is None or (weight, event.at) > known:
                trust.pairs[pair] = (weight, event.at)
            if event.source == "agent":
                trust.accused_by.setdefault(event.accuser, set()).add(event.accused)
        elif isinstance(event, AgentBlocked):
            trust.blocks[event.id] = event
        elif isinstance(event, AgentUnblocked):
            if event.at >= trust.unblocked.get(event.agent, -math.inf):
                trust.unblocked[event.agent] = event.at
        else:
            return []
        if trust.deferred:
            return []
        if isinstance(event, AccusationMade) and trust.tally is not None:
            return self._added(state, trust, event)
        return self.recompute(state)

    def _added(self, state: State, trust: Trust, event: AccusationMade) -> list[Alert]:
        """One more accusation, under ``quorum``: only the tallies it touches are redone,
        then the rounds over the agents within reach of a block (see :class:`Tally`)."""
        tally = trust.tally
        assert tally is not None
        cfg = self.cfg
        changed = tally.add(event, trust, cfg, self.registered)
        for agent in changed:
            trust.credibility[agent] = tally.credibility(agent, cfg)
        if event.accused in tally.accusers:
            state.accusers[event.accused] = frozenset(tally.accusers[event.accused])
        if not tally.dirty:  # no candidate's tally moved: the rounds would give the same
            return []
        reasons = dict(trust.direct)
        for agent, reason in _rounds(tally, cfg, set(reasons)).items():
            reasons.setdefault(agent, reason)
        return self._publish(state, trust, dict(sorted(reasons.items())))

    def recompute(self, state: State) -> list[Alert]:
        """Derive the blocklist from the events; alerts for every change (the audit)."""
        trust = self.trust(state)
        blocklist, accusers, credibility = compute_blocklist(trust, self.cfg, self.registered)
        state.accusers = accusers
        trust.credibility = credibility
        return self._publish(state, trust, blocklist)

    def _publish(self, state: State, trust: Trust, blocklist: dict[str, str]) -> list[Alert]:
        # Against the last computed list: Core.apply edits state.blocklist before the stages
        before = trust.blocked
        alerts = []
        for agent in sorted(blocklist.keys() - before.keys()):
            alerts.append(_change("agent-blocked", agent, f"{agent} blocked: {blocklist[agent]}"))
        for agent in sorted(before.keys() - blocklist.keys()):
            alerts.append(_change("agent-unblocked", agent, f"{agent} is no longer blocked"))
        trust.blocked = blocklist
        state.blocklist.clear()
        state.blocklist.update(blocklist)
        return alerts


def _change(kind: str, agent: str, summary: str) -> Alert:
    severity = Severity.CRITICAL if kind == "agent-blocked" else Severity.INFO
    return Alert(kind, severity, summary, "", [agent], rules=[ByzantineStage.name])


def _known(ctx: Context, name: str) -> bool:
    """Has ostracon seen ``name`` take part: a member of this conversation, an agent with
    claims on record, or one blocked already? Accusing anyone else is refused, so a flood
    of accusations against invented names adds nothing to the blocklist's inputs."""
    state = ctx.state
    conv = state.conversations.get(ctx.envelope.conversation)
    return (
        (conv is not None and name in conv.members)
        or name in state.records
        or name in state.blocklist
    )


class _RawClaim(NamedTuple):
    key: str
    value: str
    label: Label


def _raw_claims(ctx: Context) -> list[_RawClaim]:
    """The envelope's own structured claims, when no lineage stage labelled any (Yellow)."""
    return [_RawClaim(c.key, str(c.value), Label.YELLOW) for c in ctx.envelope.claims]


def _weigh(ctx: Context, accused: str, evidence: Sequence[str]) -> tuple[list[str], list[str]]:
    """Evidence messages by ``accused`` with a Red or convicted claim (proven), and those
    whose claims were all grounded or established (refuted: the accused was right)."""
    env = ctx.envelope
    lin = ctx.state.genealogy.lineage(env.conversation)
    proven: list[str] = []
    refuted: list[str] = []
    for mid in evidence:
        if mid == env.id and env.sender == accused:  # a rule or verifier citing this message
            labels = [c.label for c in ctx.claims]
            bad = Label.RED in labels
            right = bool(labels) and all(label is Label.GREEN for label in labels)
        else:
            msg = lin.messages.get(mid) if lin is not None else None
            if msg is None or msg.sender != accused:
                continue  # not the accused's, or unknown here: proves nothing
            assert lin is not None
            nodes = [n for n in map(lin.claims.get, msg.claims) if n is not None]
            bad = any(n.tainted or n.contradicts for n in nodes)
            right = bool(nodes) and all(
                n.grounded or n.value in lin.established.get(n.key, ()) for n in nodes
            )
        if bad:
            proven.append(mid)
        elif right:
            refuted.append(mid)
    return proven, refuted


def _tainted(ctx: Context) -> bool:
    """Does the accusing message build on tainted claims: its own Red claims, or a parent
    message whose claims were found Red or convicted?"""
    if any(c.label is Label.RED for c in ctx.claims):
        return True
    env = ctx.envelope
    lin = ctx.state.genealogy.lineage(env.conversation) if env.parents else None
    if lin is None:
        return False
    for pid in env.parents:
        msg = lin.messages.get(pid)
        if msg is not None and any(
            (n := lin.claims.get(cid)) is not None and (n.tainted or bool(n.contradicts))
            for cid in msg.claims
        ):
            return True
    return False


# ----------------------------------------------------------------- to state events


def accusation_events(decision: Decision, at: float) -> list[Event]:
    """The state events of a decision's accusations, ``at`` stamped by the shell. Ids are
    deterministic: the same decision made again gives the same events (applied once)."""
    events: list[Event] = []
    for acc in decision.accusations:
        parts = (decision.conversation, decision.id, acc.accuser, acc.accused)
        if acc.block:
            events.append(
                AgentBlocked(
                    id=event_id("block", *parts),
                    at=at,
                    by=acc.accuser,
                    why=acc.reason,
                    agent=acc.accused,
                    reason=acc.reason,
                    evidence=list(acc.evidence),
                )
            )
        events.append(
            AccusationMade(
                id=event_id("accusation", *parts),
                at=at,
                by=acc.accuser if is_internal(acc.accuser) else f"agent:{acc.accuser}",
                accuser=acc.accuser,
                accused=acc.accused,
                reason=acc.reason,
                evidence=list(acc.evidence),
                conversation=decision.conversation,
                source=acc.source or "agent",  # type: ignore[arg-type]
                proven=list(acc.proven),
                refuted=list(acc.refuted),
                tainted=acc.tainted,
            )
        )
    return events


# ---------------------------------------------------------------- the blocklist


def evidence_weight(acc: AccusationMade | Accusation, cfg: ByzantineConfig) -> float:
    """How much one accusation counts, before its accuser's credibility."""
    if acc.source in ("human", "equivocation"):
        return 1.0
    if acc.refuted and not acc.proven:
        return 0.0
    weight = 1.0 if acc.proven else cfg.unproven_weight
    return weight * cfg.tainted_weight if acc.tainted else weight


def _internal(acc: AccusationMade) -> bool:
    """A rule's, verifier's, human's or ostracon's accusation; an agent's is never one,
    whatever its name."""
    return acc.source != "agent" and is_internal(acc.accuser)


def _counts(
    acc: AccusationMade,
    unblocked: Mapping[str, float],
    registered: Callable[[str], bool] | None,
) -> bool:
    """Live (after the accused's last unblock) and from an accuser who may accuse."""
    if acc.at <= unblocked.get(acc.accused, -math.inf) or acc.accuser == acc.accused:
        return False
    return _internal(acc) or registered is None or registered(acc.accuser)


@dataclass
class Tally:
    """Running totals over the accusations, kept so that one more accusation updates only
    the agents it touches: its accused's tally, and the tallies of the agents accused by
    an agent whose credibility it changed (at most ``max_accused_per_accuser`` each).

    Every field is a function of the *set* of accusations (ties broken by id), so adding
    them one at a time in any order, or all at once (:meth:`build`), gives the same tally;
    blocks and unblocks (rare, human or proof) rebuild it.
    """

    best: dict[str, dict[str, tuple[float, str]]] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)  # accusation id -> its reason
    accusers: dict[str, set[str]] = field(default_factory=dict)  # accused -> counted accusers
    proven: dict[str, set[str]] = field(default_factory=dict)  # accused -> proving accusers
    wrong: dict[str, int] = field(default_factory=dict)  # accuser -> its accusations proven wrong
    targets: dict[str, set[str]] = field(default_factory=dict)  # accuser -> accused in best
    raw: dict[str, float] = field(default_factory=dict)  # accused -> weight of all accusers
    candidates: set[str] = field(default_factory=set)  # raw within reach of f + 1
    cred: dict[str, float] = field(default_factory=dict)  # credibility(), when not 1
    dirty: bool = True  # a candidate's tally changed since the last rounds
    direct: frozenset[str] = frozenset()  # blocked directly when built (Trust.direct)
    first: dict[str, tuple[float, str]] = field(default_factory=dict)  # round-1 results

    @classmethod
    def build(
        cls, trust: Trust, cfg: ByzantineConfig, registered: Callable[[str], bool] | None
    ) -> Tally:
        tally = cls(direct=frozenset(trust.direct))
        for acc in trust.accusations.values():
            tally.add(acc, trust, cfg, registered, fresh=True)
        for agent in tally.proven.keys() | tally.wrong.keys():
            tally._credit(agent, cfg)
        for accused in tally.best:
            tally._retally(accused, cfg)
        return tally

    def credibility(self, agent: str, cfg: ByzantineConfig) -> float:
        """proven_penalty ** (distinct accusers proving a fault) * wrong_penalty ** (its
        accusations proven wrong: refuted, or unproven and overridden by an unblock)."""
        if is_internal(agent):
            return 1.0
        proven = len(self.proven.get(agent, ()))
        return cfg.proven_penalty**proven * cfg.wrong_penalty ** self.wrong.get(agent, 0)

    def add(
        self,
        acc: AccusationMade,
        trust: Trust,
        cfg: ByzantineConfig,
        registered: Callable[[str], bool] | None,
        fresh: bool = False,
    ) -> list[str]:
        """Count one accusation; returns the agents whose credibility it changed. ``fresh``
        (building): the tallies are summed once at the end instead."""
        changed: list[str] = []
        overridden = acc.at <= trust.unblocked.get(acc.accused, -math.inf)
        if not acc.proven and (acc.refuted or overridden):
            self.wrong[acc.accuser] = self.wrong.get(acc.accuser, 0) + 1
            if not is_internal(acc.accuser):
                changed.append(acc.accuser)
        if not _counts(acc, trust.unblocked, registered):
            return self._credited(changed, cfg, fresh)
        accused, accuser = acc.accused, acc.accuser
        self.accusers.setdefault(accused, set()).add(accuser)
        if acc.proven or acc.source in ("human", "equivocation"):
            proving = self.proven.setdefault(accused, set())
            if accuser not in proving:
                proving.add(accuser)
                if not is_internal(accused):
                    changed.append(accused)
        w = evidence_weight(acc, cfg)
        if w > 0:
            slot = self.best.setdefault(accused, {})
            cur = slot.get(accuser)
            if cur is None or w > cur[0] or (w == cur[0] and acc.id < cur[1]):
                slot[accuser] = (w, acc.id)
                self.reasons[acc.id] = acc.reason
                self.targets.setdefault(accuser, set()).add(accused)
                if not fresh:
                    self._retally(accused, cfg)
        return self._credited(changed, cfg, fresh)

    def _credited(self, changed: list[str], cfg: ByzantineConfig, fresh: bool) -> list[str]:
        if not fresh:
            for agent in changed:
                self._credit(agent, cfg)
                for accused in self.targets.get(agent, ()):
                    self._retally(accused, cfg)
        return changed

    def _credit(self, agent: str, cfg: ByzantineConfig) -> None:
        c = self.credibility(agent, cfg)
        if c != 1.0:
            self.cred[agent] = c
        else:
            self.cred.pop(agent, None)

    def _retally(self, accused: str, cfg: ByzantineConfig) -> None:
        """An upper bound of what the rounds can count for ``accused`` (all its accusers):
        only agents within reach of f + 1 need a look in each round."""
        by = self.best.get(accused, {})
        cred = self.cred
        self.first.pop(accused, None)
        total = sum(w * cred.get(a, 1.0) for a, (w, _) in by.items())
        self.raw[accused] = total
        if accused in self.candidates:
            self.dirty = True
            if total < cfg.f + 1 - 1e-6:
                self.candidates.discard(accused)
        elif total >= cfg.f + 1 - 1e-6:  # margin: a float sum in another order
            self.candidates.add(accused)
            self.dirty = True


def compute_blocklist(
    trust: Trust, cfg: ByzantineConfig, registered: Callable[[str], bool] | None = None
) -> tuple[dict[str, str], dict[str, frozenset[str]], dict[str, float]]:
    """(blocklist agent -> reason, accused -> its counted accusers, agent -> credibility).

    A pure function of the *set* of events in ``trust``: every iteration is over sorted
    keys, so instances that applied the same events in different orders agree. An unblock
    overrides the accusations and blocks against that agent made at or before it. Also
    leaves the derived ``trust.direct`` and ``trust.tally`` (quorum) for the increments.
    """
    unblocked = trust.unblocked
    reasons: dict[str, str] = {}
    for agent, reason in trust.static.items():
        if agent not in unblocked:
            reasons[agent] = reason
    for ev in sorted(trust.blocks.values(), key=lambda e: (e.at, e.id)):
        if ev.at > unblocked.get(ev.agent, -math.inf):
            reasons[ev.agent] = ev.reason
    trust.direct = dict(reasons)
    tally = Tally.build(trust, cfg, registered)
    agents = sorted({a for a in tally.proven.keys() | tally.wrong.keys() if not is_internal(a)})
    credibility = {a: tally.credibility(a, cfg) for a in agents}
    frozen = {agent: frozenset(who) for agent, who in sorted(tally.accusers.items())}
    if cfg.strategy == "matching":
        live = sorted(
            (a for a in trust.accusations.values() if _counts(a, unblocked, registered)),
            key=lambda a: a.id,
        )
        derived = _matching(live, cfg, unblocked, set(reasons))
        trust.tally = None
    else:
        derived = _rounds(tally, cfg, set(reasons))
        trust.tally = tally
    for agent, reason in derived.items():
        reasons.setdefault(agent, reason)  # a direct block's own reason comes first
    return dict(sorted(reasons.items())), frozen, credibility


def _rounds(tally: Tally, cfg: ByzantineConfig, direct: set[str]) -> dict[str, str]:
    """``quorum``: blocked when the credibility-weighted accusations of distinct
    non-blocked accusers reach f + 1. Grows to a fixed point: a newly blocked agent's
    accusations stop counting in the next round, but nobody blocked in a round is unblocked
    by a later one. Only the candidates (all accusers together reach f + 1) can be; after
    the first round only those an agent blocked in the last one accused can change, and
    first-round results are kept until the candidate's tally moves."""
    threshold = cfg.f + 1 - 1e-9
    blocked = set(direct)
    out: dict[str, str] = {}
    tally.dirty = False
    cache = tally.first if direct == tally.direct else None
    todo = sorted(tally.candidates - blocked)
    while todo:
        new: dict[str, str] = {}
        for accused in todo:
            found = cache.get(accused) if cache is not None else None
            if found is None:
                found = _total(tally, accused, blocked, cfg, threshold)
                if cache is not None:
                    cache[accused] = found
            if found[0] >= threshold:
                new[accused] = found[1]
        if not new:
            break
        out.update(new)
        blocked |= new.keys()
        cache = None
        touched = {x for b in new for x in tally.targets.get(b, ())}
        todo = sorted(touched & tally.candidates - blocked)
    return out


def _total(
    tally: Tally, accused: str, blocked: set[str], cfg: ByzantineConfig, threshold: float
) -> tuple[float, str]:
    """What ``accused``'s non-blocked accusers count (summed in sorted order: the same float
    on every instance), and the blocklist reason should it reach the threshold."""
    by = tally.best[accused]
    cred = tally.cred
    voters = [a for a in sorted(by) if a not in blocked]
    total = sum(by[a][0] * cred.get(a, 1.0) for a in voters)
    if total < threshold:
        return total, ""
    reasons = "; ".join(f"{a}: {tally.reasons[by[a][1]]}" for a in voters[:3])
    return total, f"accused by {len(voters)} (weight {total:.2f} >= {cfg.f + 1}): {reasons}"


def _matching(
    live: Sequence[AccusationMade],
    cfg: ByzantineConfig,
    unblocked: Mapping[str, float],
    direct: set[str],
) -> dict[str, str]:
    """Decentralized Blocklist Protocol: both ends of every edge of a maximum matching on
    the graph of agents' accusations are blocked (an accusation says "accuser or accused is
    Byzantine"), so each Byzantine agent costs at most one honest accuser. Proven accusations
    by rules, verifiers and humans block the accused alone; refuted ones are dropped, and so
    are edges to an agent blocked already (``direct``, or by such a proven accusation):
    matching it would cost its partner for nothing.

    Deterministic: edge weights BIG + 2**rank (rank from the sorted edge list) make the
    maximum-cardinality matching of greatest weight unique, whatever order networkx visits.
    """
    out: dict[str, str] = {}
    counted = [acc for acc in live if evidence_weight(acc, cfg) > 0]
    for acc in counted:
        if _internal(acc) and (acc.proven or acc.source == "human"):
            out.setdefault(acc.accused, f"{acc.accuser}: {acc.reason}")
    already = direct | out.keys()
    edges: dict[tuple[str, str], AccusationMade] = {}
    for acc in counted:
        if _internal(acc) or acc.accuser in already or acc.accused in already:
            continue
        pair = (min(acc.accuser, acc.accused), max(acc.accuser, acc.accused))
        if pair not in edges or acc.at > edges[pair].at:
            edges[pair] = acc
    ordered = sorted(edges)
    big = 1 << (len(ordered) + 1)
    graph = nx.Graph()
    for rank, (u, v) in enumerate(ordered):
        graph.add_edge(u, v, weight=big + (1 << (len(ordered) - rank)))
    for u, v in sorted(tuple(sorted(e)) for e in nx.max_weight_matching(graph, True)):
        acc = edges[u, v]
        for agent in (u, v):
            if unblocked.get(agent, -math.inf) < acc.at:  # a later unblock spares it
                why = f"matched accusation {acc.accuser} -> {acc.accused}: {acc.reason}"
                out.setdefault(agent, why)
    return out


# ---------------------------------------------------------------------- helpers


def stage_of(core: Core) -> ByzantineStage | None:
    return next((s for s in core.stages if isinstance(s, ByzantineStage)), None)


@contextlib.contextmanager
def deferred(core: Core) -> Iterator[list[Alert]]:
    """Apply many events (catching up on the state topic) with one recompute at the end;
    the alerts of that recompute are added to the yielded list."""
    stage = stage_of(core)
    if stage is None:
        yield []
        return
    trust = stage.trust(core.state)
    trust.deferred = True
    alerts: list[Alert] = []
    try:
        yield alerts
    finally:
        trust.deferred = False
        alerts += stage.recompute(core.state)


def registered_predicate(config: Config) -> Callable[[str], bool]:
    """The Sybil guard: only identities registered in ``identity.agents`` accuse (with none
    registered, membership is open: every name counts)."""
    return config.identity.registered
