"""Quorum gates through the real sidecar on the real broker (the bundled Tansu): a held
message is released to the delivered topic by a diverse quorum of signed votes, vote stuffing
and Sybil voters cannot reach the quorum, a rejection keeps it quarantined, and a ballot
nobody decides escalates to a human when the sidecar's clock passes its deadline."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from ostracon.config import (
    AgentKeyConfig,
    Config,
    IdentityConfig,
    KafkaConfig,
    QuorumConfig,
    RulesConfig,
    TopicsConfig,
)
from ostracon.envelope import Envelope, encode
from ostracon.identity import sign_hmac
from ostracon.routing import H_DECISION, H_RELEASED, header
from ostracon.transport.embedded import EmbeddedBroker

from .conftest import produce, read_all
from .test_sidecar import Running

pytestmark = pytest.mark.broker

AGENTS = ["worker", "stuffer", "v1", "v2", "v3"]
SECRET = "s3cret-"


def config(tmp_path: Path, mode: str = "off", timeout_s: float = 300.0) -> Config:
    rules = tmp_path / "gate.yaml"
    rules.write_text(
        "- rule: gate-actions\n"
        '  condition: kind == "action"\n'
        f'  actions: {{hold: {{reason: "needs approval", quorum: 3, timeout_s: {timeout_s}}}}}\n'
    )
    return Config(
        kafka=KafkaConfig(session_timeout_ms=3000, heartbeat_interval_ms=500),
        topics=TopicsConfig(partitions=1),
        rules=RulesConfig(paths=[str(rules)], reload=False),
        identity=IdentityConfig(
            mode=mode,  # type: ignore[arg-type]
            agents={a: AgentKeyConfig(hmac_secret=SECRET + a) for a in AGENTS},
        ),
        quorum=QuorumConfig(tick_interval_s=0.2, require_signed=mode == "enforce"),
    )


def envelope(mid: str, sender: str, kind: str = "vote", **fields: Any) -> Envelope:
    return msgspec.convert(
        {"id": mid, "conversation": "c", "sender": sender, "kind": kind, "content": kind}
        | {"ts": time.time()}
        | fields,
        Envelope,
    )


def signed(env: Envelope) -> bytes:
    return encode(sign_hmac(env, SECRET + env.sender))


def ballot_vote(mid: str, voter: str, choice: str, family: str) -> Envelope:
    return envelope(
        mid,
        voter,
        parents=["a-1"],
        meta={"vote": choice, "rationale": "ok", "model_family": family},
    )


async def test_signed_diverse_quorum_releases_and_stuffing_cannot(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    cfg = config(tmp_path, mode="enforce")
    held = signed(envelope("a-1", "worker", kind="action"))
    # One registered agent votes six times under six ids and six claimed families; ten
    # Sybil names (unregistered, unsigned) vote too: at most 1 of the 3 needed.
    stuffing = [signed(ballot_vote(f"s-{i}", "stuffer", "approve", f"f{i}")) for i in range(6)]
    sybils = [encode(ballot_vote(f"y-{i}", f"sybil-{i}", "approve", f"g{i}")) for i in range(10)]
    async with Running(cfg, broker.bootstrap) as sidecar:
        await produce(broker.bootstrap, "agents.inbound", [held, *stuffing, *sybils])
        (request,) = await read_all(broker.bootstrap, ["ostracon.votes"], 1)
        dead = await read_all(broker.bootstrap, ["ostracon.dead-letter"], 10)
        stuffing_alerts = [
            a
            for a in await read_all(broker.bootstrap, ["ostracon.alerts"], 11, settle=1.0)
            if msgspec.json.decode(a.value)["kind"] == "vote-stuffing"
        ]
        before = await read_all(broker.bootstrap, ["agents.delivered"], 6, settle=0.5)
        assert not [r for r in before if header(r.headers, H_RELEASED)]
        ballot = next(iter(sidecar.core.state.quorum.ballots.values()))
        assert ballot.tally == [1.0, 0.0] and ballot.voters == ["stuffer"]

        votes = [
            signed(ballot_vote("v-1", "v1", "approve", "gpt")),
            signed(ballot_vote("v-2", "v2", "approve", "claude")),
        ]
        await produce(broker.bootstrap, "agents.inbound", votes)
        delivered = await read_all(broker.bootstrap, ["agents.delivered"], 9, settle=0.5)
        quarantined = await read_all(broker.bootstrap, ["ostracon.quarantine"], 1)
    body = msgspec.json.decode(request.value)
    assert (body["type"], body["held"], body["quorum"]) == ("vote-request", "a-1", 3.0)
    assert {header(r.headers, "ostracon-error") for r in dead} == {"unregistered"}
    assert len(stuffing_alerts) == 1
    (rel,) = [r for r in delivered if header(r.headers, H_RELEASED)]
    (q,) = quarantined
    assert rel.value == held == q.value  # the agent's original bytes, signature included
    assert header(rel.headers, H_RELEASED) == "quorum"
    assert header(rel.headers, H_DECISION) == header(q.headers, H_DECISION) == body["decision_id"]
    assert header(rel.headers, "ostracon-verdict") == "deliver"


async def test_rejection_and_unregistered_voters_keep_it_quarantined(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    cfg = config(tmp_path)  # identity off: the registry alone is the Sybil guard
    values = [encode(envelope("a-1", "worker", kind="action"))]
    values += [encode(ballot_vote(f"y-{i}", f"sybil-{i}", "approve", f"g{i}")) for i in range(5)]
    values += [
        encode(ballot_vote(f"v-{i}", v, "reject", fam))
        for i, (v, fam) in enumerate([("v1", "gpt"), ("v2", "claude"), ("v3", "llama")])
    ]
    async with Running(cfg, broker.bootstrap):
        await produce(broker.bootstrap, "agents.inbound", values)
        alerts = await read_all(broker.bootstrap, ["ostracon.alerts"], 1, settle=1.0)
        delivered = await read_all(broker.bootstrap, ["agents.delivered"], 8, settle=1.0)
    kinds = [msgspec.json.decode(a.value)["kind"] for a in alerts]
    assert kinds.count("quorum-rejected") == 1 and "quorum-approved" not in kinds
    assert not [r for r in delivered if header(r.headers, H_RELEASED)]
    tags = {header(r.headers, "ostracon-tag-vote") for r in delivered}
    assert tags == {"unregistered", "counted"}


async def test_no_quorum_by_the_deadline_escalates_to_a_human(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    cfg = config(tmp_path, timeout_s=1.0)
    values = [
        encode(envelope("a-1", "worker", kind="action")),
        encode(ballot_vote("v-1", "v1", "approve", "gpt")),
    ]
    async with Running(cfg, broker.bootstrap) as sidecar:
        await produce(broker.bootstrap, "agents.inbound", values)
        alerts = await read_all(broker.bootstrap, ["ostracon.alerts"], 1, timeout=10.0)
        assert not sidecar.router.held  # the held record is no longer kept for release
    (alert,) = [msgspec.json.decode(a.value) for a in alerts]
    assert alert["kind"] == "quorum-timeout" and alert["evidence"] == ["a-1"]
    assert "escalated to human review" in alert["summary"] and "v1" in alert["summary"]
