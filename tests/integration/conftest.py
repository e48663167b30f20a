"""Fixtures for tests against a real broker process: the bundled Tansu on a loopback port."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord, RecordMetadata

from ostracon.transport.embedded import EmbeddedBroker
from ostracon.transport.kafka import scan_tail

pytestmark = pytest.mark.broker


@pytest.fixture
def broker() -> Iterator[EmbeddedBroker]:
    b = EmbeddedBroker()
    b.start()
    yield b
    b.stop()


def write_config(path: Path, bootstrap: str | None, extra: str = "") -> Path:
    """A sidecar config for tests: fast group joins so restarts take seconds, not tens."""
    kafka = f"  bootstrap_servers: {bootstrap}\n" if bootstrap else ""
    path.write_text(
        "kafka:\n"
        f"{kafka}"
        "  session_timeout_ms: 3000\n"
        "  heartbeat_interval_ms: 500\n"
        "log:\n"
        "  level: info\n" + extra
    )
    return path


async def produce(
    bootstrap: str, topic: str, values: list[bytes | None], keys: list[bytes] | None = None
) -> list[RecordMetadata]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=8 << 20)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, v, key=(keys[i] if keys else b"c"))
            for i, v in enumerate(values)
        ]
        return list(await asyncio.gather(*futures))
    finally:
        await producer.stop()


async def read_all(
    bootstrap: str, topics: list[str], expect: int, timeout: float = 30.0, settle: float = 1.0
) -> list[ConsumerRecord]:
    """Read topics from the start until ``expect`` records arrived, then ``settle`` seconds
    more so that extra (duplicate) records would be seen too."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    records: list[ConsumerRecord] = []
    try:
        await consumer.topics()
        tps = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout
        settle_until: float | None = None
        while time.monotonic() < (settle_until or deadline):
            batch = await consumer.getmany(timeout_ms=200)
            for recs in batch.values():
                records.extend(recs)
            if settle_until is None and len(records) >= expect:
                settle_until = time.monotonic() + settle
    finally:
        await consumer.stop()
    return records


async def count(bootstrap: str, topics: list[str]) -> int:
    """Records currently in the topics (topics start at offset 0)."""
    return sum((await scan_tail(bootstrap, topics, 0)).values())


class SidecarProcess:
    """``python -m ostracon run`` as a child process, its logs in a file."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config, self.log = config, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> SidecarProcess:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ostracon", "run", "--config", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        return self

    def events(self) -> list[dict[str, object]]:
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
        return out

    async def wait_for(self, event: str, timeout: float = 30.0) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.events():
                if e.get("event") == event:
                    return e
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"sidecar exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}"
                )
            await asyncio.sleep(0.1)
        raise AssertionError(f"no {event!r} within {timeout}s:\n{self.log.read_text()[-3000:]}")

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"sidecar did not exit within {timeout}s")
            await asyncio.sleep(0.05)
        return self.proc.returncode

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
