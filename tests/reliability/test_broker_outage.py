"""Broker outage: the broker process stops answering mid-stream for longer than the clients'
request timeout, then comes back; the sidecar waits, resumes and loses nothing the broker had
acknowledged.

Which outage: the embedded broker (Tansu with ``memory://`` storage, the only storage engine
this build of Tansu has besides S3) loses every topic when its process exits, so a kill and
restart would test data loss by construction, not the sidecar. The broker process is frozen
instead (SIGSTOP, then SIGCONT): connections stay open but nothing is answered, requests time
out (aiokafka's 40 s), heartbeats fail, the group session expires, and on SIGCONT the broker
serves again from the data it had. A real cluster's broker restart (with disks) looks the
same to the sidecar. docs/guarantees.md says so.

Outputs whose produce requests time out during the freeze are sent again once the broker
answers, except those it had written before the freeze (their dedupe keys are at the tail of
the output topics), so each input is still written once.

Scale: one 45 s freeze during a 20 000-message stream by default; with
``OSTRACON_RELIABILITY_FULL=1`` a 90 s freeze during 100 000 messages.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from pathlib import Path

import msgspec
from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata

from ostracon.decision import decision_id
from ostracon.routing import H_DEDUPE, header
from ostracon.transport.embedded import EmbeddedBroker

from .conftest import (
    OUTPUTS,
    PROCESS_MARKS,
    SidecarProcess,
    count,
    read_all,
    scaled,
    wait_caught_up,
    write_config,
)

pytestmark = PROCESS_MARKS

REQUEST_TIMEOUT_S = 40  # aiokafka's default request_timeout_ms, which the sidecar uses


def envelope(i: int) -> bytes:
    sender = "mallory" if i % 10 == 0 else "alice"
    env = {"id": f"m-{i}", "conversation": f"c-{i % 8}", "sender": sender, "kind": "chat"}
    return msgspec.json.encode({**env, "content": f"message {i}"})


async def feed(bootstrap: str, total: int, rate: int, acked: list[RecordMetadata]) -> None:
    """An agent producing at ``rate``/s that waits out the outage (a long request timeout)
    and keeps what the broker acknowledged."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", request_timeout_ms=300_000, linger_ms=5
    )
    await producer.start()
    try:
        chunk = max(rate // 10, 1)
        for start in range(0, total, chunk):
            began = time.monotonic()
            futures = [
                await producer.send("agents.inbound", envelope(i), key=b"k-%d" % (i % 8))
                for i in range(start, min(start + chunk, total))
            ]
            acked += await asyncio.gather(*futures)
            await asyncio.sleep(max(0.0, 0.1 - (time.monotonic() - began)))
    finally:
        await producer.stop()


async def test_sidecar_waits_out_a_frozen_broker_and_loses_nothing_acknowledged(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    total, pause = scaled(20_000, 100_000), scaled(45, 90)
    assert pause > REQUEST_TIMEOUT_S
    cfg = write_config(
        tmp_path / "ostracon.yaml",
        broker.bootstrap,
        "topics:\n  partitions: 4\nblocklist:\n  agents:\n    mallory: forged tool output\n",
    )
    side = SidecarProcess(cfg, tmp_path / "sidecar.log").start()
    acked: list[RecordMetadata] = []
    assert broker.process is not None
    try:
        await side.wait_for("dedupe window restored", timeout=60)
        # Fast enough that the sidecar is producing when the broker freezes, so some of its
        # produce requests time out and are sent again (Sidecar._resend).
        feeder = asyncio.create_task(feed(broker.bootstrap, total, 4_000, acked))
        while await count(broker.bootstrap, OUTPUTS) < total // 4:
            await asyncio.sleep(0.05)
        broker.process.send_signal(signal.SIGSTOP)
        frozen_at = len(acked)
        await asyncio.sleep(pause)
        assert side.proc is not None and side.proc.poll() is None, "died during the outage"
        broker.process.send_signal(signal.SIGCONT)
        resumed = time.monotonic()
        await feeder
        await wait_caught_up(broker.bootstrap, acked, "ostracon", timeout=180)
        recovered_in = time.monotonic() - resumed
        written = await count(broker.bootstrap, OUTPUTS)
        outputs = await read_all(broker.bootstrap, OUTPUTS, written, timeout=60, settle=1.0)
        assert side.proc.poll() is None, "the sidecar exited after the outage"
        side.signal(signal.SIGTERM)
        assert await side.wait(timeout=30) == 0
    finally:
        if broker.process is not None:
            broker.process.send_signal(signal.SIGCONT)
        side.stop()

    assert frozen_at < total, "the outage came after the stream"
    expected = {decision_id(f"c-{i % 8}", f"m-{i}") for i in range(total)}
    assert len(acked) == total
    keys = Counter(header(r.headers, H_DEDUPE) for r in outputs)
    assert set(keys) == expected, f"{len(expected - set(keys))} acknowledged inputs lost"
    doubled = [k for k, n in keys.items() if n > 1]
    assert doubled == [], f"{len(doubled)} inputs written twice"
    timeouts = sum("RequestTimedOutError" in line for line in side.log.read_text().splitlines())
    assert timeouts > 0, "the freeze did not outlast a request: the test proved nothing"
    resent = [e for e in side.events() if e["event"] == "broker did not acknowledge; sending again"]
    print(
        f"\nbroker frozen {pause}s after {frozen_at} acked inputs; {timeouts} timed-out "
        f"requests logged; outputs sent again: {[e['outputs'] for e in resent]}; caught up "
        f"{recovered_in:.1f}s after SIGCONT; {total} inputs once"
    )
