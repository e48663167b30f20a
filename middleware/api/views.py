"""Read-only views of the core's state for the admin API: genealogy subgraphs, agreement.

Handlers run on the sidecar's event loop between two messages, so every view here is
bounded by the size of its answer, never by the size of a conversation: the genealogy is
walked outwards from a node through the lineage's own records and indexes (the same node
ids and edge kinds as ``Genealogy.lineage_graph``, which builds the whole conversation and
is for exports, off the loop).
"""

from __future__ import annotations

import bisect
import itertools
from collections import deque
from typing import Any

from ..core import State
from ..decision import Label
from ..genealogy import MAX_DERIVES, ClaimNode, Lineage
from ..monitors import agreement_map

SCAN = 256  # later claims examined per claim when looking for what derives from or contradicts it

Edge = tuple[str, str, str]  # source, target, kind


def claim_label(lin: Lineage, node: ClaimNode) -> Label:
    """The claim's standing now: Red if it contradicts the established values or was
    convicted, Green if grounded or its value is established (confirmed), else Yellow. A
    claim convicted after its decision shows Red here although it was delivered Yellow."""
    if node.tainted or node.contradicts:
        return Label.RED
    if node.grounded or node.value in lin.established.get(node.key, ()):
        return Label.GREEN
    return Label.YELLOW


def _node(lin: Lineage, nid: str) -> dict[str, Any] | None:
    if nid.startswith("m:"):
        msg = lin.messages.get(nid[2:])
        if msg is None:
            return None
        return {
            "id": nid,
            "type": "message",
            "message": nid[2:],
            "sender": msg.sender,
            "kind": msg.kind.value,
            "delivered": msg.delivered,
            "recipients": sorted(msg.recipients),
            # order in the conversation (its first claim's), for timeline layouts
            "seq": min((lin.claims[c].seq for c in msg.claims if c in lin.claims), default=None),
        }
    node = lin.claims.get(nid)
    if node is None:
        return None
    return {
        "id": nid,
        "type": "claim",
        "message": node.message,
        "sender": node.sender,
        "key": node.key,
        "value": node.value,
        "label": claim_label(lin, node).value,
        "origin": nid in node.origins,
        "origins": sorted(node.origins),
        "grounded": node.grounded,
        "convicted": node.tainted,
        "suspect": node.suspect,
        "delivered": node.delivered,
        "depth": node.depth,
        "seq": node.seq,
    }


def _out_edges(lin: Lineage, nid: str) -> list[Edge]:
    """The edges a node's own record holds (every edge is some node's outgoing edge)."""
    if nid.startswith("m:"):
        msg = lin.messages.get(nid[2:])
        if msg is None:
            return []
        return [(nid, cid, "asserts") for cid in msg.claims if cid in lin.claims] + [
            (nid, f"m:{p}", "answers") for p in msg.parents if p in lin.messages
        ]
    node = lin.claims.get(nid)
    if node is None:
        return []
    return [(nid, d, "derives") for d in node.derives if d in lin.claims] + [
        (nid, c, "contradicts") for c in node.contradicts if c in lin.claims
    ]


def _in_edges(lin: Lineage, nid: str) -> list[Edge]:
    """Edges into a claim, found through the lineage's indexes with bounded work: its
    message, later repeats deriving from it (the first SCAN after it) and claims that
    contradict it (made while it was among the newest MAX_DERIVES of its value: only those
    are linked, see Genealogy.add). Replies to a message are not indexed: not found."""
    node = lin.claims.get(nid)
    if node is None:
        return []
    out: list[Edge] = [(f"m:{node.message}", nid, "asserts")]
    by_seq = _seq_key
    repeats = lin.by_fingerprint.get(node.fingerprint, [])
    start = bisect.bisect_right(repeats, node.seq, key=by_seq)
    out += [
        (c.id, nid, "derives")
        for c in itertools.islice(repeats, start, start + SCAN)
        if nid in c.derives
    ]
    values = lin.by_key.get(node.key, {})
    same = values.get(node.value, [])
    pos = bisect.bisect_right(same, node.seq, key=by_seq) + MAX_DERIVES - 1
    until = same[pos].seq if pos < len(same) else None
    budget = SCAN
    for value, claims in values.items():
        if value == node.value or budget <= 0:
            continue
        lo = bisect.bisect_right(claims, node.seq, key=by_seq)
        hi = len(claims) if until is None else bisect.bisect_left(claims, until, key=by_seq)
        hi = min(hi, lo + budget)
        budget -= hi - lo
        out += [(c.id, nid, "contradicts") for c in claims[lo:hi] if nid in c.contradicts]
    return out


def _seq_key(node: ClaimNode) -> int:
    return node.seq


def _graph(lin: Lineage, ids: list[str], truncated: bool) -> dict[str, Any]:
    keep = set(ids)
    nodes = [n for n in (_node(lin, i) for i in ids) if n is not None]
    edges = sorted({e for i in ids for e in _out_edges(lin, i) if e[1] in keep})
    return {
        "nodes": nodes,
        "edges": [{"source": s, "target": t, "kind": k} for s, t, k in edges],
        "truncated": truncated,
    }


def recent_graph(lin: Lineage, limit: int) -> dict[str, Any]:
    """The newest messages of a conversation and their claims, at most ``limit`` nodes."""
    ids: list[str] = []
    truncated = False
    for mid in reversed(lin.messages):
        msg = lin.messages[mid]
        claims = [c for c in msg.claims if c in lin.claims]
        if len(ids) + 1 + len(claims) > limit:
            truncated = True
            break
        ids.append(f"m:{mid}")
        ids += claims
    return _graph(lin, ids, truncated)


def graph_around(lin: Lineage, center: str, depth: int, limit: int) -> dict[str, Any] | None:
    """Nodes within ``depth`` edges of ``center`` (either direction), at most ``limit``,
    nearest first; None if the conversation has no such node."""
    if _node(lin, center) is None:
        return None
    seen = {center: 0}
    order = [center]
    todo = deque([center])
    truncated = False
    while todo and not truncated:
        nid = todo.popleft()
        if seen[nid] >= depth:
            continue
        for s, t, _kind in _out_edges(lin, nid) + _in_edges(lin, nid):
            other = t if s == nid else s
            if other in seen:
                continue
            if len(order) >= limit:
                truncated = True
                break
            seen[other] = seen[nid] + 1
            order.append(other)
            todo.append(other)
    return _graph(lin, order, truncated)


def resolve_node(lin: Lineage, ref: str) -> str:
    """A node id from what a reviewer types: ``m:<id>``, ``c:<id>#<n>`` or a message id."""
    if ref.startswith(("m:", "c:")):
        return ref
    return f"m:{ref}"


def conversations(state: State, limit: int) -> list[dict[str, Any]]:
    """The most recently active conversations first, with their sizes."""
    out = []
    for name in itertools.islice(reversed(state.conversations), limit):
        conv = state.conversations[name]
        lin = state.genealogy.lineage(name)
        out.append(
            {
                "conversation": name,
                "messages": conv.messages,
                "members": sorted(conv.members),
                "claims": len(lin.claims) if lin else 0,
            }
        )
    return out


def agreement(state: State, conversation: str) -> dict[str, Any] | None:
    """The conversation's agreement map and latest early-warning estimate; None if unknown."""
    lin = state.genealogy.lineage(conversation)
    if lin is None:
        return None
    watch = state.monitors.get(conversation)
    return {
        "conversation": conversation,
        "keys": [{"key": k, **v} for k, v in sorted(agreement_map(lin).items())],
        "r": getattr(watch, "r", None),
    }
