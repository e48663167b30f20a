"""Sink failure: every alert sink down or hanging, and the message path keeps its throughput.

Two runs of ``ostracon run`` drain the same pre-filled stream (half of it from a blocklisted
agent, so every other message raises a critical alert) on a fresh broker each: one with no
sinks, one with every sink on and failing: Alertmanager pointed at a closed port (connection
refused), the webhook and OTLP at a real TCP server that accepts and never answers (each
request hangs until the sink's timeout), alert grouping off so every alert is sent, the log
sink and the metrics endpoint on. Nothing in the test is a mock: the receivers are sockets.

Scale: 30 000 messages per run (the same in full mode: the point is the ratio).
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import msgspec

from ostracon.transport.embedded import EmbeddedBroker, free_port

from .conftest import PROCESS_MARKS, SidecarProcess, produce, wait_caught_up, write_config

pytestmark = PROCESS_MARKS

TOTAL = 30_000
MIN_RATIO = 0.6  # of the no-sink throughput; measured ~0.9-1.0 (docs/guarantees.md)


def envelope(i: int) -> bytes:
    sender = "mallory" if i % 2 else "alice"
    env = {"id": f"m-{i}", "conversation": f"c-{i % 32}", "sender": sender, "kind": "chat"}
    return msgspec.json.encode({**env, "content": f"message {i}"})


async def hanging_server() -> tuple[asyncio.Server, int, list[int]]:
    """A TCP server that reads what it is sent and never answers."""
    connections: list[int] = []

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        while await reader.read(65536):
            pass
        writer.close()

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], connections


async def drain(tmp: Path, name: str, sinks: str) -> tuple[float, SidecarProcess]:
    """msg/s of one sidecar draining TOTAL pre-filled messages on a fresh broker."""
    with EmbeddedBroker() as broker:
        extra = "topics:\n  partitions: 4\nblocklist:\n  agents:\n    mallory: forged\n" + sinks
        cfg = write_config(tmp / f"{name}.yaml", broker.bootstrap, extra)
        metas = await produce(
            broker.bootstrap,
            "agents.inbound",
            [envelope(i) for i in range(TOTAL)],
            keys=[b"c-%d" % (i % 32) for i in range(TOTAL)],
        )
        side = SidecarProcess(cfg, tmp / f"{name}.log").start()
        try:
            await side.wait_for("dedupe window restored", timeout=60)
            began = time.monotonic()
            await wait_caught_up(broker.bootstrap, metas, "ostracon", timeout=120, interval=0.05)
            rate = TOTAL / (time.monotonic() - began)
            side.signal(signal.SIGTERM)
            assert await side.wait(timeout=30) == 0
        finally:
            side.stop()
    return rate, side


async def test_failing_sinks_do_not_slow_the_message_path(tmp_path: Path) -> None:
    server, slow_port, connections = await hanging_server()
    dead_port = free_port()  # nothing listens there
    failing = (
        "sinks:\n"
        "  grouping: {window_s: 0}\n"
        "  log: {enabled: true, queue_size: 1000}\n"
        "  prometheus: {enabled: true, port: 0}\n"
        f"  alertmanager: {{enabled: true, url: 'http://127.0.0.1:{dead_port}',"
        " queue_size: 1000, timeout_s: 2, min_severity: info}\n"
        f"  webhook: {{enabled: true, url: 'http://127.0.0.1:{slow_port}/hook',"
        " queue_size: 1000, timeout_s: 2, min_severity: info}\n"
        f"  otlp: {{enabled: true, endpoint: 'http://127.0.0.1:{slow_port}/v1/traces',"
        " queue_size: 1000, timeout_s: 2}\n"
    )
    try:
        base, _ = await drain(tmp_path, "no-sinks", "")
        with_sinks, side = await drain(tmp_path, "failing-sinks", failing)
    finally:
        server.close()
    log = side.log.read_text()
    assert connections, "no sink ever reached the hanging server"
    assert "sink queue full; dropping" in log, "the sinks were never under pressure"
    ratio = with_sinks / base
    print(
        f"\nno sinks {base:.0f} msg/s; every sink failing {with_sinks:.0f} msg/s "
        f"(ratio {ratio:.2f}); {len(connections)} connections left hanging"
    )
    assert ratio >= MIN_RATIO
