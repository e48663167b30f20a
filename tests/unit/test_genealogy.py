"""Genealogy internals that the decision tests cannot see directly."""

from __future__ import annotations

import random

from ostracon.config import Config, ContainmentConfig
from ostracon.envelope import Claim, Envelope, Kind
from ostracon.genealogy import MAX_DERIVES, SCAN, ClaimNode, Lineage, _recent_seen
from ostracon.pipeline import build_core

AGENTS = ["a", "b", "c", "d"]


def _by_lookup(lin: Lineage, fingerprint: str, agent: str) -> list[ClaimNode]:
    """The repeats an agent could have read, by looking each message up by id (reference)."""
    found: list[ClaimNode] = []
    for node in reversed(lin.by_fingerprint.get(fingerprint, [])[-SCAN:]):
        msg = lin.messages.get(node.message)
        if msg is not None and msg.visible_to(agent):
            found.append(node)
            if len(found) == MAX_DERIVES:
                break
    return found[::-1]


def test_claims_read_visibility_from_the_record_now_under_their_message_id() -> None:
    """Claims keep a direct reference to their message's record (no lookup on the hot path);
    with ids reused, eviction and forgotten claimless messages it must agree with a lookup."""
    rng = random.Random(7)
    core = build_core(
        Config(containment=ContainmentConfig(policy="strict", max_claims_per_conversation=12))
    )
    ids: list[str] = []
    stale = 0  # claims whose record was replaced or forgotten: the lookup path
    for n in range(600):
        reuse = ids and rng.random() < 0.25
        mid = rng.choice(ids) if reuse else f"m-{n}"
        ids.append(mid)
        sender = rng.choice(AGENTS)
        roll = rng.random()
        claims = (
            []
            if roll < 0.2
            else [Claim(f"k{rng.randrange(3)}", str(rng.randrange(2))) for _ in range(2)]
        )
        core.decide(
            Envelope(
                id=mid,
                conversation=f"c{n % 2}",
                sender=sender,
                kind=Kind.TOOL_RESULT if roll > 0.9 else Kind.CHAT,
                content="",
                claims=claims,
                recipients=rng.sample(AGENTS, 2) if rng.random() < 0.3 else [],
            )
        )
        if n % 25:
            continue
        for lin in core.state.genealogy.lineages.values():
            for fp, nodes in lin.by_fingerprint.items():
                for node in nodes:
                    assert node.msg.current == (lin.messages.get(node.message) is node.msg)
                    stale += not node.msg.current
                for agent in AGENTS:
                    env = Envelope(
                        id="x", conversation="c", sender=agent, kind=Kind.CHAT, content=""
                    )
                    assert _recent_seen(lin, fp, env) == _by_lookup(lin, fp, agent)
    assert stale
