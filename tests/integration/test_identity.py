"""Signed identities through the real sidecar process on the real broker: a forged, a replayed,
an unsigned, a Sybil (unregistered) and a stale message are dead-lettered with their reasons
and alerts while properly signed ones (Ed25519 and HMAC, the latter from the adapters'
sidecar governor) are delivered; a restarted sidecar that re-reads the same records treats
them as duplicates, not replays, while a new copy of a signed message is still a replay."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import msgspec
import pytest

from ostracon.adapters.governor import SidecarGovernor
from ostracon.config import load_config
from ostracon.decision import Verdict
from ostracon.envelope import Envelope, Kind, encode
from ostracon.identity import Ed25519Signer, HmacSigner, keygen, sign
from ostracon.routing import H_ERROR, H_REASON, H_SOURCE, header
from ostracon.transport.embedded import EmbeddedBroker

from .conftest import SidecarProcess, count, produce, read_all, write_config

pytestmark = pytest.mark.broker

OUTPUTS = ["agents.delivered", "ostracon.quarantine", "ostracon.dead-letter"]
SECRET_ENV = "OSTRACON_TEST_SECRET_BOB"


def message(i: int, sender: str = "alice", **change: object) -> Envelope:
    env = Envelope(
        id=f"m-{i}",
        conversation="c",
        sender=sender,
        kind=Kind.CHAT,
        content=f"message {i}",
        ts=time.time(),
    )
    return msgspec.structs.replace(env, **change) if change else env


async def test_forged_replayed_unsigned_sybil_and_stale_are_dead_lettered_with_alerts(
    broker: EmbeddedBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed, public = keygen()
    bob_secret, _ = keygen("hmac-sha256")
    monkeypatch.setenv(SECRET_ENV, bob_secret)  # the sidecar process inherits it
    identity = (
        "topics:\n  partitions: 2\n"
        "identity:\n  mode: enforce\n  window_s: 120\n  agents:\n"
        f"    alice: {{ed25519_public_key: {public}}}\n"
        f"    bob: {{hmac_secret_env: {SECRET_ENV}}}\n"
    )
    cfg_path = write_config(tmp_path / "ostracon.yaml", broker.bootstrap, identity)
    alice = Ed25519Signer(seed)
    good = encode(sign(message(1), alice))
    sybil_seed, _ = keygen()  # a fresh name with a self-made key: not registered
    inputs = [
        good,
        encode(msgspec.structs.replace(sign(message(2), alice), recipients=["mallory"])),
        good,  # the same signed bytes again: a replay
        encode(message(3)),  # unsigned
        encode(sign(message(4, "sybil-1", kind=Kind.ACCUSATION), Ed25519Signer(sybil_seed))),
        encode(sign(message(5, ts=time.time() - 3600), alice)),  # stale
    ]
    expected = {
        "forged": "forged-message",
        "replayed": "replayed-message",
        "unsigned": "unsigned-message",
        "unregistered": "unregistered-sender",
        "stale": "stale-message",
    }
    side = SidecarProcess(cfg_path, tmp_path / "sidecar.log").start()
    try:
        await side.wait_for("sidecar consuming")
        metas = await produce(broker.bootstrap, "agents.inbound", inputs, keys=[b"c"] * 6)
        cfg = load_config(cfg_path)
        # The adapters' governor signs for bob with the shared secret (and stamps ts).
        async with SidecarGovernor(
            cfg, timeout_s=15.0, signers={"bob": HmacSigner(bob_secret)}
        ) as gov:
            ruling = await gov.rule(Envelope(id="b-1", conversation="c", sender="bob",
                                             kind=Kind.CHAT, content="hello"))  # fmt: skip
            assert ruling.verdict is Verdict.DELIVER
            stranger = await gov.rule(Envelope(id="c-1", conversation="c", sender="carol",
                                               kind=Kind.CHAT, content="hi"))  # fmt: skip
            assert stranger.verdict is Verdict.QUARANTINE and "not a registered" in stranger.reason
        records = await read_all(broker.bootstrap, [*OUTPUTS, "ostracon.alerts"], 14, settle=1.0)
        first_run = await count(broker.bootstrap, [*OUTPUTS, "ostracon.alerts"])
    finally:
        side.stop()

    delivered = [json.loads(r.value) for r in records if r.topic == "agents.delivered"]
    assert sorted(d["id"] for d in delivered) == ["b-1", "m-1"]
    assert all(d["sig"] for d in delivered)
    dead = {
        header(r.headers, H_ERROR): (r, header(r.headers, H_REASON))
        for r in records
        if r.topic == "ostracon.dead-letter"
    }
    assert set(dead) == {*expected}
    replay_record, replay_reason = dead["replayed"]
    original = f"agents.inbound/{metas[0].partition}/{metas[0].offset}"
    assert replay_reason == f"message id already seen at {original}"
    assert header(replay_record.headers, H_SOURCE) != original
    assert dead["forged"][0].value == inputs[1]  # original bytes kept for forensics
    alerts = [json.loads(r.value) for r in records if r.topic == "ostracon.alerts"]
    kinds = sorted(a["kind"] for a in alerts)
    assert kinds == sorted([*expected.values(), "unregistered-sender"])  # + carol's
    sybil = next(a for a in alerts if a["agents"] == ["sybil-1"])
    assert sybil["kind"] == "unregistered-sender" and sybil["evidence"] == ["m-4"]
    assert not [r for r in records if r.topic == "ostracon.quarantine"]

    # A restart that re-reads every record (a new consumer group: the same topic, partition
    # and offset again) must find them all duplicates, not replays: nothing new is written.
    again = SidecarProcess(_regroup(cfg_path, tmp_path / "again.yaml"), tmp_path / "again.log")
    again.start()
    try:
        await again.wait_for("sidecar consuming")
        await again.wait_for("dedupe window restored")
        # A fresh copy of bob's governed message: still a replay after the restart.
        bob_delivered = next(r for r in records if r.topic == "agents.delivered"
                             and json.loads(r.value)["id"] == "b-1")  # fmt: skip
        await produce(broker.bootstrap, "agents.inbound", [bob_delivered.value], keys=[b"c"])
        after = await read_all(broker.bootstrap, ["ostracon.dead-letter"], 7, settle=3.0)
        total = await count(broker.bootstrap, [*OUTPUTS, "ostracon.alerts"])
        again.signal(signal.SIGTERM)
        assert await again.wait() == 0
    finally:
        again.stop()
    replays = [r for r in after if header(r.headers, H_ERROR) == "replayed"]
    assert len(replays) == 2  # m-1's from the first run, b-1's now; no re-read became one
    assert total == first_run + 2  # b-1's dead letter and its alert, nothing else
    stopped = next(e for e in again.events() if e["event"] == "sidecar stopped")
    assert stopped["consumed"] == 9 and stopped["duplicates"] == 8


def _regroup(config: Path, to: Path) -> Path:
    """The same config with another consumer group: it reads the inbound topic again."""
    to.write_text(config.read_text().replace("kafka:\n", "kafka:\n  group_id: again\n", 1))
    return to
