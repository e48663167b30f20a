"""The reliability suite's shared parts: the integration suite's broker fixture and process
helpers (reused, not copied), the scale switch, and hostile-record producers.

Every test here runs in the default ``pytest`` run at a scale that keeps the whole suite
within a few minutes on a 2-core machine. ``OSTRACON_RELIABILITY_FULL=1`` selects the issue's
numbers (200k messages and 20 kills, 10^6 fuzz inputs, 10 minutes of load); each test's
docstring says what it runs in both modes, and docs/guarantees.md records the full run.
"""

from __future__ import annotations

import asyncio
import os
import resource
import time
from collections.abc import Sequence

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.producer import message_accumulator, producer
from aiokafka.record.default_records import _DefaultRecordBatchBuilderPy
from aiokafka.structs import RecordMetadata

from ..integration.conftest import (
    SidecarProcess,
    broker,
    count,
    produce,
    read_all,
    write_config,
)

__all__ = [
    "FULL",
    "OUTPUTS",
    "PROCESS_MARKS",
    "TIMEOUT_S",
    "RawHeaderKey",
    "SidecarProcess",
    "broker",
    "count",
    "produce",
    "produce_raw_headers",
    "read_all",
    "rss_kib",
    "scaled",
    "wait_caught_up",
    "write_config",
]

FULL = os.environ.get("OSTRACON_RELIABILITY_FULL", "") not in ("", "0")
# Per test: the suite's default (pyproject) holds the scaled runs; the full ones run longer.
TIMEOUT_S = 1800 if FULL else 300
# Marks of the tests that start the broker and the sidecar process.
PROCESS_MARKS = [pytest.mark.reliability, pytest.mark.broker, pytest.mark.timeout(TIMEOUT_S)]
OUTPUTS = ["agents.delivered", "ostracon.quarantine", "ostracon.dead-letter"]


def scaled(default: int, full: int) -> int:
    """``full`` under OSTRACON_RELIABILITY_FULL=1, else ``default``."""
    return full if FULL else default


def rss_kib(pid: int | None = None) -> int:
    """Resident set size of a process (this one by default), KiB, from /proc."""
    with open(f"/proc/{pid or 'self'}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # pragma: no cover


class RawHeaderKey(str):
    """A header key whose wire bytes are ``raw`` (e.g. not UTF-8), which Kafka allows on the
    wire and other clients can write; aiokafka's producer only takes text keys."""

    raw: bytes

    def __new__(cls, raw: bytes) -> RawHeaderKey:
        key = super().__new__(cls, raw.decode("latin-1"))
        key.raw = raw
        return key

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return self.raw


async def produce_raw_headers(
    bootstrap: str,
    topic: str,
    records: Sequence[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]],
    isolate: bool = True,
    linger_ms: int = 0,
) -> list[RecordMetadata]:
    """Produce (key, value, headers) records whose header keys may be :class:`RawHeaderKey`;
    such a record gets a record batch of its own unless ``isolate`` is false (then records
    of one key sent within ``linger_ms`` share a batch).

    aiokafka's compiled record builder insists on ``str`` keys and encodes them itself, so
    this producer uses its pure-Python builder, which calls ``key.encode`` (patched for the
    duration only; the records on the wire are ordinary Kafka v2 records).
    """
    saved = message_accumulator.DefaultRecordBatchBuilder, producer.DefaultRecordBatchBuilder
    message_accumulator.DefaultRecordBatchBuilder = _DefaultRecordBatchBuilderPy
    producer.DefaultRecordBatchBuilder = _DefaultRecordBatchBuilderPy
    try:
        client = AIOKafkaProducer(
            bootstrap_servers=bootstrap, max_request_size=8 << 20, linger_ms=linger_ms
        )
        await client.start()
        try:
            futures = []
            for key, value, headers in records:
                raw = isolate and any(isinstance(k, RawHeaderKey) for k, _ in headers)
                if raw:  # a record batch of its own (see test_unparsable_record_batch)
                    await client.flush()
                futures.append(await client.send(topic, value, key=key, headers=headers))
                if raw:
                    await client.flush()
            return [await future for future in futures]
        finally:
            await client.stop()
    finally:
        message_accumulator.DefaultRecordBatchBuilder, producer.DefaultRecordBatchBuilder = saved


async def wait_caught_up(
    bootstrap: str, metas: list[RecordMetadata], group: str, timeout: float, interval: float = 0.5
) -> None:
    """Wait until the group has committed past every input (``metas``: what was produced;
    the inbound topic's tail cannot be scanned here: aiokafka cannot parse its bad records)."""
    ends: dict[TopicPartition, int] = {}
    for m in metas:
        tp = TopicPartition(m.topic, m.partition)
        ends[tp] = max(ends.get(tp, 0), m.offset + 1)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            committed = {tp: await consumer.committed(tp) for tp in ends}
            if committed == ends:
                return
            await asyncio.sleep(interval)
        raise AssertionError(f"group {group} at {committed}, inbound ends at {ends}")
    finally:
        await consumer.stop()
