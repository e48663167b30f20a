"""Sink failure: every alert sink down or hanging, and the message path keeps its throughput.

``ostracon run`` drains the same pre-filled stream (half of it from a blocklisted agent, so
every other message raises a critical alert) on a fresh broker each time, with every sink on
(log, metrics endpoint, Alertmanager, webhook, OTLP; alert grouping and its rate limit off so
every alert is sent) and their receivers either healthy (a real HTTP server answering 200 at
once) or failing (Alertmanager on a closed port: connection refused; the webhook and OTLP on a
real TCP server that accepts and never answers, so each request hangs until the sink's
timeout). The failing run must keep the healthy run's throughput: a dead receiver costs the
message path nothing. Two runs of each, interleaved, the best of each compared; one run with no
sinks at all is reported for what the sinks themselves cost. Nothing is a mock: the receivers
are sockets.

Scale: 30 000 messages per run (the same in full mode: the point is the ratio).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import time
from pathlib import Path

import msgspec

from ostracon.transport.embedded import EmbeddedBroker, free_port

from .conftest import PROCESS_MARKS, SidecarProcess, produce, wait_caught_up, write_config

pytestmark = PROCESS_MARKS

TOTAL = 30_000
MIN_RATIO = 0.8  # of the healthy-sink throughput (docs/guarantees.md)


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


async def answering_server() -> tuple[asyncio.Server, int]:
    """A minimal HTTP/1.1 server that reads each request and answers 200 with no body."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while head := await reader.readuntil(b"\r\n\r\n"):
                length = re.search(rb"(?i)content-length: *(\d+)", head)
                await reader.readexactly(int(length.group(1)) if length else 0)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def sinks_config(alertmanager: int, receiver: int) -> str:
    return (
        "sinks:\n"
        "  grouping: {window_s: 0, rate_per_minute: 0}\n"
        "  log: {enabled: true, queue_size: 1000}\n"
        "  prometheus: {enabled: true, port: 0}\n"
        f"  alertmanager: {{enabled: true, url: 'http://127.0.0.1:{alertmanager}',"
        " queue_size: 1000, timeout_s: 2, min_severity: info}\n"
        f"  webhook: {{enabled: true, url: 'http://127.0.0.1:{receiver}/hook',"
        " queue_size: 1000, timeout_s: 2, min_severity: info}\n"
        f"  otlp: {{enabled: true, endpoint: 'http://127.0.0.1:{receiver}/v1/traces',"
        " queue_size: 1000, timeout_s: 2}\n"
    )


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
    hanging, slow_port, connections = await hanging_server()
    answering, ok_port = await answering_server()
    failing = sinks_config(free_port(), slow_port)  # nothing listens on the free port
    healthy = sinks_config(ok_port, ok_port)
    rates = {"healthy": 0.0, "failing": 0.0}
    try:
        for run in range(2):
            for name, sinks in (("healthy", healthy), ("failing", failing)):
                rate, side = await drain(tmp_path, f"{name}-{run}", sinks)
                rates[name] = max(rates[name], rate)
        bare, _ = await drain(tmp_path, "no-sinks", "")
    finally:
        hanging.close()
        answering.close()
    log = side.log.read_text()  # the last failing run
    assert connections, "no sink ever reached the hanging server"
    assert "sink queue full; dropping" in log, "the sinks were never under pressure"
    ratio = rates["failing"] / rates["healthy"]
    print(
        f"\nsinks healthy {rates['healthy']:.0f} msg/s, every sink failing "
        f"{rates['failing']:.0f} msg/s (ratio {ratio:.2f}); no sinks at all {bare:.0f} msg/s; "
        f"{len(connections)} connections left hanging"
    )
    assert ratio >= MIN_RATIO
