"""The genealogy graph: which claim came from where, and who could have seen what.

Nodes are messages (``m:<id>``) and claims (``c:<message id>#<n>``) in a networkx DiGraph, one
per conversation (ids are unique within a conversation).
Edges carry ``kind``: ``asserts`` (message -> claim), ``derives`` (claim -> the earlier claim
it repeats), ``answers`` (message -> parent message) and ``contradicts`` (claim -> claim).

What a decision needs is kept incrementally per conversation, so the hot path never walks the
graph: each claim knows its origins (root claims), depth and grounding from the moment it is
added, and fingerprint / key indexes find the candidates in O(matches). The graph serves the
queries that are not on the hot path (descendants, exports, the review UI).

Linking is split in two so the decision core stays pure: :meth:`Genealogy.link` reads the
state and says what a message's claims would be; :meth:`Genealogy.add` records them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import networkx as nx

from .claims import ExtractedClaim
from .envelope import Envelope, Kind

GROUNDING_KINDS = frozenset({Kind.TOOL_RESULT, Kind.HUMAN})
MAX_DERIVES = 8  # derive edges per claim: the most recent visible repeats carry the lineage
SCAN = 64  # earlier repeats of a fingerprint examined per new claim


class ClaimNode:
    """One asserted claim. ``origins`` are the root claims its lineage starts from."""

    __slots__ = (
        "delivered",
        "depth",
        "family",
        "fingerprint",
        "grounded",
        "id",
        "key",
        "message",
        "origins",
        "sender",
        "seq",
        "suspect",
        "tainted",
        "value",
    )

    def __init__(self, link: Link, env: Envelope, family: str, seq: int, delivered: bool):
        self.id = link.id
        self.message = env.id
        self.sender = env.sender
        self.family = family
        self.key = link.claim.key
        self.value = link.claim.value
        self.fingerprint = link.claim.fingerprint
        self.grounded = link.grounded
        self.origins = link.origins
        self.depth = link.depth
        self.seq = seq
        self.delivered = delivered
        self.tainted = False  # convicted later (recalled): grounds nothing, supports nothing
        self.suspect = False  # forwarded by the circuit breaker: never grounds or confirms


class MessageNode:
    """A message as the genealogy needs it: who sent it and who could read it."""

    __slots__ = ("claims", "delivered", "kind", "recipients", "sender")

    def __init__(self, env: Envelope, claims: tuple[str, ...], delivered: bool) -> None:
        self.sender = env.sender
        self.kind = env.kind
        self.recipients = frozenset(env.recipients)
        self.claims = claims
        self.delivered = delivered

    def visible_to(self, agent: str) -> bool:
        if agent == self.sender:
            return True
        return self.delivered and (not self.recipients or agent in self.recipients)


@dataclass
class Lineage:
    """One conversation's graph and the indexes over its messages and claims."""

    graph: nx.DiGraph = field(default_factory=nx.DiGraph)
    messages: dict[str, MessageNode] = field(default_factory=dict)
    claims: dict[str, ClaimNode] = field(default_factory=dict)
    by_fingerprint: dict[str, list[ClaimNode]] = field(default_factory=dict)
    by_key: dict[str, dict[str, list[ClaimNode]]] = field(default_factory=dict)
    # fingerprint -> {root claim id: model family}: independent sources of a claim
    roots: dict[str, dict[str, str]] = field(default_factory=dict)
    # fingerprint -> agents that asserted it
    senders: dict[str, set[str]] = field(default_factory=dict)
    # key -> values that are grounded or confirmed: what contradictions are measured against
    established: dict[str, set[str]] = field(default_factory=dict)
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
    recoveries: int = 0  # of those, later asserting another value for the key
    seq: int = 0


@dataclass(frozen=True, slots=True)
class Link:
    """Where one claim of a message sits in the lineage, computed before anything is stored."""

    claim: ExtractedClaim
    id: str
    derives: tuple[str, ...]  # earlier claims with the same fingerprint the sender could see
    origins: frozenset[str]
    depth: int  # 0 for a root; repeats of repeats grow it
    grounded: bool
    support: int  # independent sources: distinct model families among the claim's roots
    contradicts: tuple[str, ...]  # established values of the same key it disagrees with
    reach: int  # distinct agents asserting this fingerprint, the sender included


class Genealogy:
    """The genealogy of every conversation the core has seen."""

    def __init__(self, trusted: Sequence[str] = ()) -> None:
        self.lineages: dict[str, Lineage] = {}
        self.trusted = frozenset(trusted)  # senders whose claims are grounded by definition

    def grounds(self, env: Envelope) -> bool:
        """Is this message itself a grounding source (tool result, human, trusted sender)?"""
        return env.kind in GROUNDING_KINDS or env.sender in self.trusted

    # ----------------------------------------------------------------- pure: link

    def link(self, env: Envelope, claims: Sequence[ExtractedClaim]) -> list[Link]:
        """Place a message's claims in the lineage without recording anything."""
        lin = self.lineages.get(env.conversation)
        family = model_family(env)
        grounds = self.grounds(env)
        links = []
        for n, claim in enumerate(claims):
            cid = f"c:{env.id}#{n}"
            # Only the most recent repeats are scanned: bounded work however popular a claim.
            earlier = lin.by_fingerprint.get(claim.fingerprint, ())[-SCAN:] if lin else ()
            seen = [c for c in earlier if _seen(lin, c, env)][-MAX_DERIVES:]  # type: ignore[arg-type]
            if seen:
                origins = frozenset().union(*(c.origins for c in seen))
                depth = 1 + max(c.depth for c in seen)
                grounded = grounds or any(c.grounded and not c.tainted for c in seen)
                families = set((lin.roots.get(claim.fingerprint) or {}).values())  # type: ignore[union-attr]
            else:
                origins, depth, grounded = frozenset((cid,)), 0, grounds
                families = set((lin.roots.get(claim.fingerprint) or {}).values()) if lin else set()
                families.add(family)
            grounded = grounded or self._cites_grounding(lin, claim)
            contradicts: tuple[str, ...] = ()
            if lin is not None:
                est = lin.established.get(claim.key)
                if est and claim.value not in est:
                    contradicts = tuple(sorted(est))
            senders = lin.senders.get(claim.fingerprint, set()) if lin else set()
            reach = len(senders) + (env.sender not in senders)
            links.append(
                Link(
                    claim,
                    cid,
                    tuple(c.id for c in seen),
                    origins,
                    depth,
                    grounded,
                    len(families),
                    contradicts,
                    reach,
                )
            )
        return links

    def _cites_grounding(self, lin: Lineage | None, claim: ExtractedClaim) -> bool:
        """A structured claim citing a grounding message (tool result, human) is grounded."""
        if lin is None or not claim.sources:
            return False
        for src in claim.sources:
            msg = lin.messages.get(src)
            if msg is not None and (msg.kind in GROUNDING_KINDS or msg.sender in self.trusted):
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
        family = model_family(env)
        mid = f"m:{env.id}"
        g = lin.graph
        g.add_node(mid)
        for parent in env.parents:
            g.add_edge(mid, f"m:{parent}", kind="answers")
            pmsg = lin.messages.get(parent)
            if pmsg is not None and pmsg.sender != env.sender:
                lin.dependents.setdefault(pmsg.sender, set()).add(env.sender)
        lin.agents.add(env.sender)
        lin.agents.update(env.recipients)
        readers = set(env.recipients) if env.recipients else lin.agents - {env.sender}
        if delivered and readers:
            lin.talks.setdefault(env.sender, set()).update(readers)
        nodes = []
        for link in links:
            lin.seq += 1
            node = ClaimNode(link, env, family, lin.seq, delivered)
            self._count_spread(lin, link, node, len(readers) if delivered else 0)
            node.suspect = suspect
            lin.claims[node.id] = node
            lin.by_fingerprint.setdefault(node.fingerprint, []).append(node)
            lin.senders.setdefault(node.fingerprint, set()).add(node.sender)
            lin.by_key.setdefault(node.key, {}).setdefault(node.value, []).append(node)
            g.add_edge(mid, node.id, kind="asserts")
            for earlier in link.derives:
                g.add_edge(node.id, earlier, kind="derives")
            # Red or circuit-broken claims are no independent source of anything.
            if not link.derives and not suspect and not link.contradicts:
                lin.roots.setdefault(node.fingerprint, {})[node.id] = family
            for value in link.contradicts:
                for other in lin.by_key[node.key].get(value, [])[-MAX_DERIVES:]:
                    g.add_edge(node.id, other.id, kind="contradicts")
            confirmed = link.support >= confirm_support and not link.contradicts
            if not suspect and (link.grounded or confirmed):
                lin.established.setdefault(node.key, set()).add(node.value)
            nodes.append(node)
        lin.messages[env.id] = MessageNode(env, tuple(n.id for n in nodes), delivered)
        return nodes

    @staticmethod
    def _count_spread(lin: Lineage, link: Link, node: ClaimNode, readers: int) -> None:
        """Update the agreement map and the adoption / recovery counts for one new claim."""
        held = lin.latest.setdefault(node.key, {})
        previous = held.get(node.sender)
        held[node.sender] = node.value
        if node.grounded:
            return
        lin.exposures += readers
        if link.derives and any(
            lin.claims[c].sender != node.sender for c in link.derives if c in lin.claims
        ):
            lin.adoptions += 1
        if previous is None:
            lin.infections += 1
        elif previous != node.value:
            lin.recoveries += 1

    def convict(self, conversation: str, key: str, value: str) -> list[ClaimNode]:
        """Mark the ungrounded claims ``key = value`` as convicted; return them (for recalls)."""
        lin = self.lineages.get(conversation)
        if lin is None:
            return []
        nodes = [n for n in lin.by_key.get(key, {}).get(value, []) if not n.grounded]
        for node in nodes:
            node.tainted = True
        if nodes:
            lin.roots.pop(nodes[0].fingerprint, None)
        est = lin.established.get(key)
        if est is not None:
            est.discard(value)
        return list(nodes)

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

    @property
    def graph(self) -> nx.DiGraph:
        """All conversations in one graph (for exports): node ids get a ``<conversation>/``
        prefix when there is more than one conversation."""
        if len(self.lineages) == 1:
            return next(iter(self.lineages.values())).graph
        return (
            nx.union_all(
                [lin.graph for lin in self.lineages.values()],
                rename=[f"{conv}/" for conv in self.lineages],
            )
            if self.lineages
            else nx.DiGraph()
        )

    def descendants(self, conversation: str, claim_id: str) -> set[str]:
        """Claims that derive, directly or through others, from this one (off the hot path)."""
        lin = self.lineages.get(conversation)
        if lin is None or claim_id not in lin.graph:
            return set()
        g = lin.graph
        derives = nx.subgraph_view(g, filter_edge=lambda u, v: g.edges[u, v]["kind"] == "derives")
        return set(nx.ancestors(derives, claim_id))

    def reach(self, conversation: str, fingerprint: str) -> int:
        """Distinct agents that asserted this claim."""
        lin = self.lineages.get(conversation)
        return len(lin.senders.get(fingerprint, ())) if lin else 0

    def support(self, conversation: str, fingerprint: str) -> int:
        """Independent sources: five agents repeating one unverified claim are one source."""
        lin = self.lineages.get(conversation)
        return len(set(lin.roots.get(fingerprint, {}).values())) if lin else 0

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


def model_family(env: Envelope) -> str:
    """The model family behind the sender; unknown = the sender itself (assume independent)."""
    fam = env.meta.get("model_family") if env.meta else None
    return str(fam) if fam else f"agent:{env.sender}"


def _seen(lin: Lineage, claim: ClaimNode, env: Envelope) -> bool:
    """Could ``env``'s sender have read this claim before writing ``env``?

    Convicted claims count: a repeat of one still descends from it (and inherits no grounding).
    """
    if claim.message in env.parents:
        return True
    msg = lin.messages.get(claim.message)
    return msg is not None and msg.visible_to(env.sender)
