"""``ostracon run`` as a real process: graceful shutdown, SIGKILL crash recovery, embedded mode.

The crash test is the delivery guarantee: kill -9 the sidecar mid-stream, restart it, and
every input is delivered, quarantined or dead-lettered exactly once (duplicates from the
uncommitted batch are dropped by the dedupe window rebuilt from the output topics).
"""

from __future__ import annotations

import asyncio
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import msgspec
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord, RecordMetadata

from ostracon.decision import decision_id
from ostracon.routing import H_DEDUPE, H_SOURCE, H_VERDICT, header
from ostracon.transport.embedded import EmbeddedBroker
from ostracon.transport.kafka import scan_tail

from .conftest import SidecarProcess, count, produce, read_all, write_config

pytestmark = pytest.mark.broker

OUTPUTS = ["agents.delivered", "ostracon.quarantine", "ostracon.dead-letter"]
BLOCKLIST = "blocklist:\n  agents:\n    mallory: forged tool output\n"
CRASH_CONFIG = "topics:\n  partitions: 4\nlimits:\n  max_batch: 200\n" + BLOCKLIST


def envelope(i: int, sender: str = "alice") -> bytes:
    return msgspec.json.encode(
        {
            "id": f"m-{i}",
            "conversation": f"c-{i % 16}",
            "sender": sender,
            "kind": "chat",
            "content": f"message {i}",
        }
    )


def stream(n: int, seed: int = 7) -> list[bytes]:
    """Mostly good messages, ~4% from a blocklisted agent, ~4% malformed."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        roll = rng.random()
        if roll < 0.04:
            out.append(b'{"id": "broken-%d", "conversation": ' % i)
        elif roll < 0.08:
            out.append(envelope(i, sender="mallory"))
        else:
            out.append(envelope(i))
    return out


async def test_sigterm_finishes_commits_and_exits_zero(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    cfg = write_config(tmp_path / "ostracon.yaml", broker.bootstrap, "topics:\n  partitions: 2\n")
    side = SidecarProcess(cfg, tmp_path / "sidecar.log").start()
    try:
        await side.wait_for("sidecar consuming")
        await produce(
            broker.bootstrap,
            "agents.inbound",
            [envelope(i) for i in range(500)],
            keys=[b"c-%d" % (i % 7) for i in range(500)],
        )
        await read_all(broker.bootstrap, ["agents.delivered"], 500, settle=0.1)
        side.signal(signal.SIGTERM)
        assert await side.wait(timeout=20) == 0
    finally:
        side.stop()
    stopped = next(e for e in side.events() if e["event"] == "sidecar stopped")
    assert stopped["consumed"] == 500
    # Everything consumed was committed: the group's offsets sit at the end of the topic.
    ends = await scan_tail(broker.bootstrap, ["agents.inbound"], 0)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=broker.bootstrap, group_id="ostracon", enable_auto_commit=False
    )
    await consumer.start()
    try:
        committed = {tp: await consumer.committed(tp) for tp in ends}
    finally:
        await consumer.stop()
    assert committed == ends and sum(ends.values()) == 500


async def feed(bootstrap: str, values: list[bytes], metas: list[RecordMetadata]) -> None:
    """A steady ~1000 msg/s stream, so kills land while input still arrives."""
    for start in range(0, len(values), 100):
        chunk = values[start : start + 100]
        keys = [b"k-%d" % ((start + j) % 16) for j in range(len(chunk))]
        metas.extend(await produce(bootstrap, "agents.inbound", chunk, keys=keys))
        await asyncio.sleep(0.1)


def assert_exactly_once(
    records: list[ConsumerRecord], metas: list[RecordMetadata], values: list[bytes]
) -> None:
    """Every input is on exactly one output topic, once, in the right place, byte for byte."""
    by_source = {
        f"{m.topic}/{m.partition}/{m.offset}": v for m, v in zip(metas, values, strict=True)
    }
    ids = Counter(header(r.headers, H_DEDUPE) for r in records)
    assert [k for k, n in ids.items() if n > 1] == []
    expected_ids = set()
    for source, value in by_source.items():
        if value.startswith(b'{"id": "broken'):
            expected_ids.add(f"dlq:{source}")
        else:
            env = msgspec.json.decode(value)
            expected_ids.add(decision_id(env["conversation"], env["id"]))
    assert set(ids) == expected_ids
    for r in records:
        value = by_source[header(r.headers, H_SOURCE)]  # type: ignore[index]
        assert r.value == value
        if r.topic == "ostracon.dead-letter":
            assert value.startswith(b'{"id": "broken')
        elif r.topic == "ostracon.quarantine":
            assert b'"mallory"' in value and header(r.headers, H_VERDICT) == "block"
        else:
            assert b'"alice"' in value and header(r.headers, H_VERDICT) == "deliver"


async def test_sigkill_mid_stream_then_restart_loses_and_duplicates_nothing(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    total = 12_000
    values = stream(total)
    cfg = write_config(tmp_path / "ostracon.yaml", broker.bootstrap, CRASH_CONFIG)
    procs = [SidecarProcess(cfg, tmp_path / f"sidecar-{n}.log") for n in range(3)]
    metas: list[RecordMetadata] = []
    kills = []  # outputs written when each instance was killed
    try:
        procs[0].start()
        await procs[0].wait_for("sidecar consuming")
        feeder = asyncio.create_task(feed(broker.bootstrap, values, metas))
        for victim, successor, at in (
            (procs[0], procs[1], total // 5),
            (procs[1], procs[2], total // 2),
        ):
            await victim.wait_for("sidecar consuming")
            while await count(broker.bootstrap, OUTPUTS) < at:
                await asyncio.sleep(0.02)
            victim.signal(signal.SIGKILL)
            assert await victim.wait() == -signal.SIGKILL
            kills.append(await count(broker.bootstrap, OUTPUTS))
            successor.start()
        assert kills[-1] < total  # the crashes really were mid-stream
        await feeder
        records = await read_all(broker.bootstrap, OUTPUTS, total, timeout=90, settle=2.0)
        procs[2].signal(signal.SIGTERM)
        assert await procs[2].wait() == 0
    finally:
        for proc in procs:
            proc.stop()

    assert_exactly_once(records, metas, values)
    for proc, written in zip(procs[1:], kills, strict=True):
        restored = next(e for e in proc.events() if e["event"] == "dedupe window restored")
        assert restored["keys"] >= written  # every output written before the kill is known
    stopped = next(e for e in procs[2].events() if e["event"] == "sidecar stopped")
    print(
        f"written at kills: {kills}; duplicates dropped by the last instance: "
        f"{stopped['duplicates']}"
    )


async def test_survivor_takes_over_a_killed_peers_partitions_without_duplicates(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """Two instances in one group; one is killed; the other re-reads the dead one's
    uncommitted batches after the rebalance and must recognise what was already written."""
    total = 10_000
    values = stream(total, seed=11)
    cfg = write_config(tmp_path / "ostracon.yaml", broker.bootstrap, CRASH_CONFIG)
    victim = SidecarProcess(cfg, tmp_path / "victim.log").start()
    survivor = SidecarProcess(cfg, tmp_path / "survivor.log").start()
    metas: list[RecordMetadata] = []
    try:
        for proc in (victim, survivor):
            await proc.wait_for("dedupe window restored")  # each holds partitions
        feeder = asyncio.create_task(feed(broker.bootstrap, values, metas))
        while await count(broker.bootstrap, OUTPUTS) < total // 3:
            await asyncio.sleep(0.02)
        victim.signal(signal.SIGKILL)
        assert await victim.wait() == -signal.SIGKILL
        assert await count(broker.bootstrap, OUTPUTS) < total
        await feeder
        records = await read_all(broker.bootstrap, OUTPUTS, total, timeout=90, settle=2.0)
        survivor.signal(signal.SIGTERM)
        assert await survivor.wait() == 0
    finally:
        victim.stop()
        survivor.stop()
    assert_exactly_once(records, metas, values)
    restores = [e for e in survivor.events() if e["event"] == "dedupe window restored"]
    assert len(restores) >= 2  # at the first assignment and again at the takeover


def test_run_without_bootstrap_starts_the_embedded_broker(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "ostracon.yaml", None)
    side = SidecarProcess(cfg, tmp_path / "sidecar.log").start()

    async def scenario() -> None:
        started = await side.wait_for("embedded broker started")
        bootstrap = str(started["bootstrap"])
        await side.wait_for("sidecar consuming")
        await produce(bootstrap, "agents.inbound", [envelope(1), envelope(2)])
        delivered = await read_all(bootstrap, ["agents.delivered"], 2, settle=0.1)
        assert sorted(msgspec.json.decode(r.value)["id"] for r in delivered) == ["m-1", "m-2"]
        side.signal(signal.SIGINT)
        assert await side.wait() == 0
        host, port = bootstrap.split(":")
        with pytest.raises(OSError):  # the broker went away with the sidecar
            socket.create_connection((host, int(port)), timeout=1).close()

    try:
        asyncio.run(scenario())
    finally:
        side.stop()
    assert any(e["event"] == "embedded broker stopped" for e in side.events())


def test_bad_config_exits_nonzero_naming_file_line_and_field(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("kafka:\n  group_id: g\nlimits:\n  max_batch: lots\n")
    result = subprocess.run(
        [sys.executable, "-m", "ostracon", "run", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert f"{cfg}:4: limits.max_batch: Expected `int`, got `str`" in result.stderr


def test_demo_runs_end_to_end_in_under_a_minute() -> None:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "ostracon", "demo", "--delay", "0.05", "--no-serve"],
        capture_output=True,
        text=True,
        timeout=90,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert elapsed < 60
    out = result.stdout
    assert "embedded broker" in out
    assert "without ostracon, made-up figures reach 3 honest agents" in out
    assert "dead-letter  invalid-json" in out
    assert "blocklisted agent mallory was blocked" in out
    assert "feedback → analyst: ostracon blocked your message m-4" in out  # Red: blocked
    assert "held unverified funding rivalco = 50000000 usd from writer" in out  # hub Yellow
    assert "RECALL m-5" in out  # the tagged rumour, convicted by the search tool
    assert "and 0 with it: containment 100%" in out
