"""The genealogy graph: which claim came from where, and who could have seen what.

Nodes are messages (``m:<id>``) and claims (``c:<message id>#<n>``) in a networkx DiGraph, one
per conversation (ids are unique within a conversation).
Edges carry ``kind``: ``asserts`` (message -> claim), ``derives`` (claim -> the earlier claim
it repeats), ``answers`` (message -> parent message) and ``contradicts`` (claim -> claim).

What a decision needs is kept incrementally per conversation in compact records, so the hot
path never walks the graph: each claim knows its origins (root claims), depth, grounding and
the claims it derives from or contradicts from the moment it is added, and fingerprint / key
indexes find the candidates in O(matches). The networkx graph is built from those records on
demand, for the queries that are not on the hot path (descendants, exports, the review UI):
keeping it live cost ~1.3 KB per claim.

Linking is split in two so the decision core stays pure: :meth:`Genealogy.link` reads the
state and says what a message's claims would be; :meth:`Genealogy.add` records them.
"""

from __future__ import annotations

import heapq
import itertools
import sys
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

import networkx as nx

from .claims import ExtractedClaim
from .envelope import Envelope, Kind

GROUNDING_KINDS = frozenset({Kind.TOOL_RESULT, Kind.HUMAN})
_NOBODY: frozenset[str] = frozenset()
MAX_DERIVES = 4  # derive edges per claim: the most recent visible repeats carry the lineage
SCAN = 64  # earlier repeats of a fingerprint examined per new claim (cited ones always)


class ClaimNode:
    """One asserted claim. ``origins`` are the root claims its lineage starts from."""

    __slots__ = (
        "contradicts",
        "delivered",
        "depth",
        "derives",
        "family",
        "fingerprint",
        "grounded",
        "id",
        "key",
        "message",
        "msg",
        "origins",
        "sender",
        "seq",
        "suspect",
        "tainted",
        "value",
    )

    def __init__(
        self, link: Link, env: Envelope, family: str, seq: int, delivered: bool, msg: MessageNode
    ):
        self.id = link.id
        self.message = env.id
        # Its message's record, so visibility is read without a lookup in the (large, cold)
        # message index; valid while ``msg.current``, see _recent_seen.
        self.msg = msg
        # Interned: repeats of a claim (and an agent's claims) share one copy of each string.
        self.sender = sys.intern(env.sender)
        self.family = family
        self.key = sys.intern(link.claim.key)
        self.value = sys.intern(link.claim.value)
        self.fingerprint = sys.intern(link.claim.fingerprint)
        self.grounded = link.grounded
        self.origins = link.origins
        self.depth = link.depth
        self.derives = link.derives  # ids of the earlier claims it repeats
        self.contradicts: tuple[str, ...] = ()  # ids of established claims it disagrees with
        self.seq = seq
        self.delivered = delivered
        self.tainted = False  # convicted later (recalled): grounds nothing, supports nothing
        self.suspect = False  # forwarded by the circuit breaker: never grounds or confirms


class MessageNode:
    """A message as the genealogy needs it: who sent it and who could read it."""

    __slots__ = ("claims", "current", "delivered", "kind", "parents", "recipients", "sender")

    def __init__(self, env: Envelope, claims: tuple[str, ...], delivered: bool) -> None:
        self.sender = sys.intern(env.sender)
        self.parents = tuple(env.parents)
        self.kind = env.kind
        self.recipients = frozenset(env.recipients) if env.recipients else _NOBODY
        self.claims = claims
        self.delivered = delivered
        # Is it the record ``Lineage.messages`` holds under its id? False once forgotten or
        # replaced by a message reusing the id.
        self.current = True

    def visible_to(self, agent: str) -> bool:
        if agent == self.sender:
            return True
        return self.delivered and (not self.recipients or agent in self.recipients)


@dataclass
class Lineage:
    """One conversation's graph and the indexes over its messages and claims."""

    messages: dict[str, MessageNode] = field(default_factory=dict)
    claims: dict[str, ClaimNode] = field(default_factory=dict)
    by_fingerprint: dict[str, list[ClaimNode]] = field(default_factory=dict)
    by_key: dict[str, dict[str, list[ClaimNode]]] = field(default_factory=dict)
    # fingerprint -> model families of its roots: the independent sources of a claim
    root_families: dict[str, set[str]] = field(default_factory=dict)
    # fingerprint -> agents that asserted it
    senders: dict[str, set[str]] = field(default_factory=dict)
    # key -> values that are grounded or confirmed: what contradictions are measured against
    established: dict[str, set[str]] = field(default_factory=dict)
    # key -> values convicted by a grounded fact
    convicted: dict[str, set[str]] = field(default_factory=dict)
    # key -> values some grounding source stated (never convicted)
    grounded_values: dict[str, set[str]] = field(default_factory=dict)
    # (key, value) -> how many of its claims a conviction pass already found not convictable
    # (Red or convicted: that never changes), so the next pass starts after them
    conviction_cursor: dict[tuple[str, str], int] = field(default_factory=dict)
    # with everything protected, eviction cannot make room: retry only past this size
    next_evict: int = 0
    # agent -> agents that built on its messages (via parents): who depends on whom
    dependents: dict[str, set[str]] = field(default_factory=dict)
    # the observed communication graph: sender -> agents its delivered messages reached
    talks: dict[str, set[str]] = field(default_factory=dict)
    agents: set[str] = field(default_factory=set)
    # key -> agent -> its latest value: the agreement map, kept incrementally
    latest: dict[str, dict[str, str]] = field(default_factory=dict)
    # adoption / recovery counts for the early-warning estimate of beta and delta
    exposures: int = 0  # (ungrounded claim, reader) pairs delivered
    adoptions: int = 0  # repeats of another agent's ungrounded claim
    infections: int = 0  # (agent, key) pairs that took up an ungrounded value
    ungrounded_holders: set[tuple[str, str]] = field(default_factory=set)  # (key, agent)
    recoveries: int = 0  # of those, later asserting another value for the key
    seq: int = 0
    last_ts: float = 0.0  # newest message time seen (the core has no clock)
    last_add: int = 0  # Genealogy's message count at this conversation's latest message
    # held, blocked, Red or convicted claims: such a lineage is never evicted
    protected: int = 0

    def readers(self, sender: str, recipients: Collection[str]) -> set[str]:
        """Who a delivered message reaches: its recipients, or everyone else here."""
        return set(recipients) if recipients else self.agents - {sender}


@dataclass(frozen=True, slots=True)
class Link:
    """Where one claim of a message sits in the lineage, computed before anything is stored."""

    claim: ExtractedClaim
    id: str
    derives: tuple[str, ...]  # earlier claims with the same fingerprint the sender could see
    origins: tuple[str, ...]  # sorted root claim ids
    depth: int  # 0 for a root; repeats of repeats grow it
    grounded: bool
    support: int  # independent sources: distinct model families among the claim's roots
    contradicts: tuple[str, ...]  # established values of the same key it disagrees with
    reach: int  # distinct agents asserting this fingerprint, the sender included
    refuted: bool = False  # a grounding source refuted this value earlier (meta.refutes)


class Genealogy:
    """The genealogy of every conversation the core has seen."""

    def __init__(
        self,
        trusted: Sequence[str] = (),
        max_claims: int = 200_000,
        ttl: float = 86_400.0,
        max_conversations: int = 100_000,
        families: Mapping[str, str] | None = None,
    ) -> None:
        self.lineages: dict[str, Lineage] = {}
        self.trusted = frozenset(trusted)  # senders whose claims are grounded by definition
        # registered agent -> model family (identity config): beats what meta says
        self.families: Mapping[str, str] = dict(families or {})
        self.max_claims = max_claims  # per conversation; see evict()
        self.ttl = ttl  # seconds of message time a conversation may stay idle; see expire()
        self.max_conversations = max_conversations  # least recently active go first; expire()
        self.now = 0.0  # newest message time seen in any conversation
        self._adds = 0
        self.expired: list[str] = []  # dropped conversations, for other state to follow

    def grounds(self, env: Envelope) -> bool:
        """Is this message itself a grounding source (tool result, human, trusted sender)?"""
        return env.kind in GROUNDING_KINDS or env.sender in self.trusted

    # ----------------------------------------------------------------- pure: link

    def link(self, env: Envelope, claims: Sequence[ExtractedClaim]) -> list[Link]:
        """Place a message's claims in the lineage without recording anything."""
        lin = self.lineages.get(env.conversation)
        family = model_family(env, self.families)
        grounds = self.grounds(env)
        links = []
        for n, claim in enumerate(claims):
            cid = f"c:{env.id}#{n}"
            # Only the most recent repeats are scanned (bounded work however popular a claim),
            # plus the ones in the messages it cites, however old: its declared sources.
            seen = _recent_seen(lin, claim.fingerprint, env) if lin else []
            if lin is not None and env.parents:
                known = {c.id for c in seen}
                for parent in env.parents:
                    msg = lin.messages.get(parent)
                    if msg is None or not msg.visible_to(env.sender):
                        continue  # citing what one never received inherits nothing
                    for pid in msg.claims:
                        pc = lin.claims.get(pid)
                        if (
                            pc is not None
                            and pc.fingerprint == claim.fingerprint
                            and pid not in known
                        ):
                            seen.insert(0, pc)
                            known.add(pid)
            if seen:
                # One pass over the (at most MAX_DERIVES + cited) earlier claims it repeats.
                first = seen[0].origins
                shared, depth, inherited, ids = True, 0, False, []
                for c in seen:
                    ids.append(c.id)
                    if shared and c.origins is not first and c.origins != first:
                        shared = False
                    if c.depth > depth:
                        depth = c.depth
                    if c.grounded and not c.tainted:
                        inherited = True
                origins = (
                    first  # shared, not copied: most repeats have one source
                    if shared
                    else tuple(sorted(set().union(*(c.origins for c in seen))))
                )
                depth += 1
                grounded = grounds or inherited
                derives = tuple(ids)
                support = len(lin.root_families.get(claim.fingerprint, ()))  # type: ignore[union-attr]
            else:
                origins, depth, grounded, derives = (cid,), 0, grounds, ()
                fams = lin.root_families.get(claim.fingerprint, ()) if lin else ()
                support = len(fams) + (family not in fams)
            grounded = grounded or self._cites_grounding(lin, claim, env)
            contradicts: tuple[str, ...] = ()
            refuted = False
            if lin is not None:
                est = lin.established.get(claim.key)
                if est and claim.value not in est:
                    contradicts = tuple(sorted(est))
                refuted = claim.value in lin.convicted.get(claim.key, ()) and not grounded
            senders = lin.senders.get(claim.fingerprint, set()) if lin else set()
            reach = len(senders) + (env.sender not in senders)
            links.append(
                Link(
                    claim,
                    cid,
                    derives,
                    origins,
                    depth,
                    grounded,
                    support,
                    contradicts,
                    reach,
                    refuted,
                )
            )
        return links

    def _cites_grounding(self, lin: Lineage | None, claim: ExtractedClaim, env: Envelope) -> bool:
        """A structured claim is grounded by a cited source only if that source is a grounding
        message the sender could read and it states the same claim (citing an unrelated tool
        result grounds nothing)."""
        if lin is None or not claim.sources:
            return False
        for src in claim.sources:
            msg = lin.messages.get(src)
            if msg is None or not (msg.kind in GROUNDING_KINDS or msg.sender in self.trusted):
                continue
            if not msg.visible_to(env.sender):
                continue
            for cid in msg.claims:
                node = lin.claims.get(cid)
                if node is not None and node.fingerprint == claim.fingerprint and node.grounded:
                    return True
        return False

    # ----------------------------------------------------------------- mutation: add

    def add(
        self,
        env: Envelope,
        links: Sequence[Link],
        delivered: bool,
        confirm_support: int,
        suspect: bool = False,
    ) -> list[ClaimNode]:
        """Record a decided message and its claims; return the new claim nodes."""
        lin = self.lineages.get(env.conversation)
        if lin is None:
            lin = self.lineages[env.conversation] = Lineage()
        family = model_family(env, self.families)
        for parent in env.parents:
            pmsg = lin.messages.get(parent)
            if pmsg is not None and pmsg.sender != env.sender:
                lin.dependents.setdefault(pmsg.sender, set()).add(env.sender)
        lin.agents.add(env.sender)
        lin.agents.update(env.recipients)
        readers = lin.readers(env.sender, env.recipients)
        if delivered and readers:
            lin.talks.setdefault(env.sender, set()).update(readers)
        nodes = []
        msg = MessageNode(env, (), delivered)
        for link in links:
            lin.seq += 1
            node = ClaimNode(link, env, family, lin.seq, delivered, msg)
            self._count_spread(lin, link, node, len(readers) if delivered else 0)
            node.suspect = suspect
            node.tainted = link.refuted  # repeats a convicted value: as convicted as the rest
            lin.claims[node.id] = node
            lin.by_fingerprint.setdefault(node.fingerprint, []).append(node)
            lin.senders.setdefault(node.fingerprint, set()).add(node.sender)
            lin.by_key.setdefault(node.key, {}).setdefault(node.value, []).append(node)
            # Red, circuit-broken or contained claims are no independent source of anything:
            # a held claim counting as one would let a second agent's repeat confirm it.
            if (
                delivered
                and not link.derives
                and not suspect
                and not link.contradicts
                and not link.refuted
            ):
                lin.root_families.setdefault(node.fingerprint, set()).add(family)
            if link.contradicts:
                node.contradicts = tuple(
                    other.id
                    for value in link.contradicts
                    for other in lin.by_key[node.key].get(value, [])[-MAX_DERIVES:]
                )
            if link.grounded:
                lin.grounded_values.setdefault(node.key, set()).add(node.value)
            confirmed = (
                link.support >= confirm_support and not link.contradicts and not link.refuted
            )
            if not suspect and (link.grounded or confirmed):
                lin.established.setdefault(node.key, set()).add(node.value)
            nodes.append(node)
        msg.claims = tuple(n.id for n in nodes)
        replaced = lin.messages.get(env.id)
        if replaced is not None:
            replaced.current = False
        lin.messages[env.id] = msg
        lin.last_add = self._adds
        if nodes and (not delivered or any(n.contradicts or n.tainted for n in nodes)):
            lin.protected += 1
        if env.ts:
            lin.last_ts = max(lin.last_ts, env.ts)
            self.now = max(self.now, env.ts)
        if len(lin.claims) > max(self.max_claims, lin.next_evict):
            batch = max(1, self.max_claims // 100)
            if self.evict(lin, batch) == 0:
                lin.next_evict = len(lin.claims) + batch  # all protected: no rescan per add
        if len(lin.messages) > 2 * self.max_claims:  # claimless messages are capped too
            self._forget_messages(lin, max(1, self.max_claims // 100))
        self._adds += 1
        if self._adds % 4096 == 0:
            self.expire()
        return nodes

    def release(self, conversation: str, message_id: str) -> bool:
        """A held or quarantined message was released to its recipients after its decision
        (by a human or a quorum gate): it is delivered from now on, so its recipients have
        seen its claims (a repeat by one derives from it) and it may be evicted. It does not
        become an independent source: a release lets the message through, it does not
        ground what it says. Returns whether the message was known."""
        lin = self.lineages.get(conversation)
        msg = lin.messages.get(message_id) if lin is not None else None
        if lin is None or msg is None or msg.delivered:
            return False
        msg.delivered = True
        nodes = [lin.claims[c] for c in msg.claims if c in lin.claims]
        for node in nodes:
            node.delivered = True
        readers = lin.readers(msg.sender, msg.recipients)
        if readers:
            lin.talks.setdefault(msg.sender, set()).update(readers)
        if nodes and not any(n.contradicts or n.tainted for n in nodes):
            lin.protected -= 1  # held was its only reason to be kept
            lin.next_evict = 0  # its claims can make room now
        return True

    def evict(self, lin: Lineage, count: int) -> int:
        """Forget up to ``count`` of a conversation's oldest claims, in one batch.

        Never evicted: claims that were held or blocked, Red (contradicting), convicted or
        circuit-broken. What an evicted claim taught stays: its root still counts as an
        independent source, its sender in the reach, its value in the agreement map and, if
        grounded or confirmed, among the established values. Repeats of it found later start
        new lineages (they can no longer derive from it).
        """
        gone: set[str] = set()
        for node in lin.claims.values():
            if len(gone) >= count:
                break
            if node.delivered and not node.contradicts and not node.tainted and not node.suspect:
                gone.add(node.id)
        if not gone:
            return 0
        touched: set[tuple[str, str, str]] = set()
        for cid in gone:
            node = lin.claims.pop(cid)
            touched.add((node.fingerprint, node.key, node.value))
            msg = lin.messages.get(node.message)
            if msg is not None and all(c not in lin.claims for c in msg.claims):
                lin.messages.pop(node.message).current = False
        for fp, key, value in touched:
            kept = [n for n in lin.by_fingerprint.get(fp, ()) if n.id not in gone]
            if kept:
                lin.by_fingerprint[fp] = kept
            else:
                lin.by_fingerprint.pop(fp, None)
            values = lin.by_key.get(key, {})
            lin.conviction_cursor.pop((key, value), None)  # the list changed: rescan it
            left = [n for n in values.get(value, ()) if n.id not in gone]
            if left:
                values[value] = left
            else:
                values.pop(value, None)
                if not values:
                    lin.by_key.pop(key, None)
        return len(gone)

    @staticmethod
    def _forget_messages(lin: Lineage, count: int) -> None:
        """Drop up to ``count`` of the oldest records of messages that assert no claim left."""
        old = [
            mid
            for mid, msg in itertools.islice(lin.messages.items(), 4 * count)
            if not any(c in lin.claims for c in msg.claims)
        ][:count]
        for mid in old:
            lin.messages.pop(mid).current = False

    def expire(self) -> list[str]:
        """Drop unprotected conversations idle for longer than ``ttl`` (message time), then,
        above ``max_conversations``, the least recently active unprotected ones (this also
        bounds conversations whose messages carry no ``ts``). Runs every 4096 messages, so
        the cap may be exceeded by that many between runs."""
        cutoff = self.now - self.ttl
        old = [
            c
            for c, lin in self.lineages.items()
            if lin.last_ts and lin.last_ts < cutoff and not lin.protected
        ]
        excess = len(self.lineages) - len(old) - self.max_conversations
        if excess > 0:
            gone = set(old)
            idle = (
                (lin.last_add, c)
                for c, lin in self.lineages.items()
                if not lin.protected and c not in gone
            )
            old += [c for _, c in heapq.nsmallest(excess, idle)]
        for conv in old:
            del self.lineages[conv]
        self.expired.extend(old)
        return old

    @staticmethod
    def _count_spread(lin: Lineage, link: Link, node: ClaimNode, readers: int) -> None:
        """Update the agreement map and the adoption / recovery counts for one new claim."""
        held = lin.latest.setdefault(node.key, {})
        previous = held.get(node.sender)
        held[node.sender] = node.value
        slot = (node.key, node.sender)
        if slot in lin.ungrounded_holders and previous != node.value:
            lin.recoveries += 1  # moved away from an ungrounded value it held
            lin.ungrounded_holders.discard(slot)
        if node.grounded:
            lin.ungrounded_holders.discard(slot)
            return
        lin.exposures += readers
        if link.derives and any(
            lin.claims[c].sender != node.sender for c in link.derives if c in lin.claims
        ):
            lin.adoptions += 1
        if slot not in lin.ungrounded_holders:
            lin.infections += 1
            lin.ungrounded_holders.add(slot)

    def convict(self, conversation: str, key: str, value: str) -> list[ClaimNode]:
        """Mark the ungrounded claims ``key = value`` as convicted; return them (for recalls)."""
        lin = self.lineages.get(conversation)
        if lin is None:
            return []
        known = lin.by_key.get(key, {}).get(value, [])
        if any(n.grounded for n in known):
            return []  # a grounded value is never convicted (tools that disagree: both stand)
        nodes = [n for n in known if not n.tainted]
        for node in nodes:
            node.tainted = True
        lin.protected += 1
        # The summaries outlive evicted claims: drop the value from them too.
        lin.root_families.pop(f"{key}={value}", None)
        est = lin.established.get(key)
        if est is not None:
            est.discard(value)
        lin.convicted.setdefault(key, set()).add(value)
        return nodes

    # ----------------------------------------------------------------- queries

    def lineage(self, conversation: str) -> Lineage | None:
        return self.lineages.get(conversation)

    def origins(self, conversation: str, claim_id: str) -> list[ClaimNode]:
        """The root claims this claim's lineage starts from."""
        lin = self.lineages.get(conversation)
        node = lin.claims.get(claim_id) if lin else None
        if node is None or lin is None:
            return []
        return [lin.claims[o] for o in sorted(node.origins) if o in lin.claims]

    @staticmethod
    def lineage_graph(lin: Lineage) -> nx.DiGraph:
        """The conversation's genealogy as a networkx DiGraph (built on demand)."""
        g = nx.DiGraph()
        for mid, msg in lin.messages.items():
            g.add_node(f"m:{mid}", sender=msg.sender, kind=msg.kind.value)
            for parent in msg.parents:
                g.add_edge(f"m:{mid}", f"m:{parent}", kind="answers")
        for cid, node in lin.claims.items():
            g.add_node(
                cid,
                sender=node.sender,
                key=node.key,
                value=node.value,
                grounded=node.grounded,
                tainted=node.tainted,
            )
            g.add_edge(f"m:{node.message}", cid, kind="asserts")
            for earlier in node.derives:
                g.add_edge(cid, earlier, kind="derives")
            for other in node.contradicts:
                g.add_edge(cid, other, kind="contradicts")
        return g

    @property
    def graph(self) -> nx.DiGraph:
        """All conversations in one graph (for exports): node ids get a ``<conversation>/``
        prefix when there is more than one conversation."""
        graphs = [self.lineage_graph(lin) for lin in self.lineages.values()]
        if len(graphs) == 1:
            return graphs[0]
        if not graphs:
            return nx.DiGraph()
        return nx.union_all(graphs, rename=[f"{conv}/" for conv in self.lineages])

    def descendants(self, conversation: str, claim_id: str) -> set[str]:
        """Claims that derive, directly or through others, from this one (off the hot path)."""
        lin = self.lineages.get(conversation)
        if lin is None or claim_id not in lin.claims:
            return set()
        children: dict[str, list[str]] = {}
        for node in lin.claims.values():
            for earlier in node.derives:
                children.setdefault(earlier, []).append(node.id)
        out: set[str] = set()
        todo = [claim_id]
        while todo:
            for child in children.get(todo.pop(), ()):
                if child not in out:
                    out.add(child)
                    todo.append(child)
        return out

    def reach(self, conversation: str, fingerprint: str) -> int:
        """Distinct agents that asserted this claim."""
        lin = self.lineages.get(conversation)
        return len(lin.senders.get(fingerprint, ())) if lin else 0

    def support(self, conversation: str, fingerprint: str) -> int:
        """Independent sources: five agents repeating one unverified claim are one source."""
        lin = self.lineages.get(conversation)
        return len(lin.root_families.get(fingerprint, ())) if lin else 0

    def agreement(self, conversation: str, key: str) -> dict[str, set[str]]:
        """value -> agents whose latest claim on ``key`` holds it."""
        lin = self.lineages.get(conversation)
        out: dict[str, set[str]] = {}
        if lin is not None:
            for agent, value in lin.latest.get(key, {}).items():
                out.setdefault(value, set()).add(agent)
        return out

    def is_hub(self, conversation: str, agent: str, min_dependents: int) -> bool:
        """Observed hub: at least ``min_dependents`` other agents built on its messages."""
        lin = self.lineages.get(conversation)
        return bool(lin) and len(lin.dependents.get(agent, ())) >= min_dependents  # type: ignore[union-attr]


def model_family(env: Envelope, families: Mapping[str, str] | None = None) -> str:
    """The model family behind the sender: as registered in ``families`` (identity config),
    else ``meta.model_family``; unknown = the sender itself (assume independent)."""
    fam = families.get(env.sender) if families else None
    if not fam:
        fam = env.meta.get("model_family") if env.meta else None
    return sys.intern(str(fam) if fam else f"agent:{env.sender}")  # one copy per family


def _recent_seen(lin: Lineage, fingerprint: str, env: Envelope) -> list[ClaimNode]:
    """The newest (at most MAX_DERIVES) earlier claims with this fingerprint the sender could
    have read, oldest first; at most SCAN candidates are examined, newest first."""
    found: list[ClaimNode] = []
    nodes = lin.by_fingerprint.get(fingerprint)
    if not nodes:
        return found
    agent = env.sender
    for idx in range(len(nodes) - 1, max(-1, len(nodes) - 1 - SCAN), -1):
        node = nodes[idx]
        # Could the sender have read it? Its message's record decides (the one now under
        # its id, if it was forgotten or the id reused). Citing it in ``parents`` is no
        # proof of having read it. Convicted claims count: a repeat of one still descends
        # from it (and inherits no grounding).
        msg = node.msg if node.msg.current else lin.messages.get(node.message)
        if msg is not None and msg.visible_to(agent):
            found.append(node)
            if len(found) == MAX_DERIVES:
                break
    found.reverse()
    return found
