"""What the admin API needs from the shell it runs in: state to read, a bus to write to.

:class:`KafkaBackend` serves a running :class:`~ostracon.transport.kafka.Sidecar`: it follows
the quarantine topic into the review queue, writes human decisions to the state topic
through ``Sidecar.publish_event`` (applied here once acknowledged, by every other instance when it
reads them) and reads the audit log back from the state topic, where it lives.
:class:`MemoryBackend` serves an in-process :class:`~ostracon.transport.memory.MemoryBus`
(library use and the API's own tests): the same API over no broker.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from typing import Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition

from ..config import Config
from ..core import Core
from ..envelope import Envelope
from ..logs import get_logger
from ..routing import Outcome, Output, Route
from ..store import Event, InvalidEvent, decode_event
from ..transport.kafka import Sidecar, scan_tail
from ..transport.memory import MemoryBus
from .quarantine import Held, QuarantineIndex, held_from_record

log = get_logger("ostracon.api")

Record = tuple[bytes, bytes | None, list[tuple[str, bytes]]]  # value, key, headers


class Unavailable(Exception):
    """The bus could not be reached for a read or a write (HTTP 503)."""


class Backend(Protocol):
    """The shell's side of the admin API."""

    core: Core
    config: Config
    index: QuarantineIndex

    def ready(self) -> bool:
        """Serving, and the review queue has caught up with the quarantine topic."""
        ...

    async def fetch(self, held: Held) -> Record:
        """The held record's bytes, as the quarantine topic has them."""
        ...

    async def deliver(self, out: Output) -> None:
        """Write a record to the delivered topic; return once it is acknowledged."""
        ...

    async def publish_event(self, event: Event) -> None:
        """Apply a state event here and write it to the state topic."""
        ...

    async def events(self) -> list[Event]:
        """The state events on record (the newest ``api.audit_window`` per partition)."""
        ...


class KafkaBackend:
    """The admin API inside a Kafka sidecar process, on its event loop."""

    def __init__(self, sidecar: Sidecar) -> None:
        self.sidecar = sidecar
        self.core = sidecar.core
        self.config = sidecar.config
        self.index = QuarantineIndex(self.config.api.max_held)
        self._caught_up = asyncio.Event()
        self._follower: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._follower = asyncio.create_task(self._follow())

    async def close(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower

    def ready(self) -> bool:
        return self._caught_up.is_set() and self.sidecar.producer is not None

    async def _follow(self) -> None:
        """Read the quarantine topic from the start, then keep following it (every
        instance's quarantined records, before and after this one started)."""
        topic = self.config.topics.quarantine
        while True:
            consumer = self._consumer()
            try:
                await consumer.start()
                await consumer.topics()
                tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
                consumer.assign(tps)
                await consumer.seek_to_beginning(*tps)
                while True:
                    batch = await consumer.getmany(timeout_ms=500, max_records=5_000)
                    for records in batch.values():
                        for r in records:
                            held = held_from_record(
                                r.topic, r.partition, r.offset, r.timestamp, r.value, r.headers
                            )
                            if held is not None:
                                self.index.add(held)
                    if not self._caught_up.is_set() and await _at_end(consumer, tps):
                        self._caught_up.set()
                        log.info("review queue loaded", held=len(self.index))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a broker hiccup must not end the review queue
                log.warning("quarantine follower restarting", error=repr(exc))
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await consumer.stop()

    def _consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=self.sidecar.bootstrap,
            client_id=f"{self.config.kafka.client_id}-api",
            enable_auto_commit=False,
            fetch_max_wait_ms=self.config.kafka.fetch_max_wait_ms,
        )

    async def fetch(self, held: Held) -> Record:
        tp = TopicPartition(held.topic, held.partition)
        consumer = self._consumer()
        try:
            await consumer.start()
            consumer.assign([tp])
            consumer.seek(tp, held.offset)
            deadline = time.monotonic() + 10.0
            while time.monotonic() < deadline:
                batch = await consumer.getmany(tp, timeout_ms=500, max_records=1)
                for r in batch.get(tp, ()):
                    if r.offset == held.offset and r.value is not None:
                        return r.value, r.key, list(r.headers)
                    raise Unavailable(f"record {held.offset} of {tp} is gone (retention)")
        except Unavailable:
            raise
        except Exception as exc:
            raise Unavailable(f"cannot read the held record: {exc!r}") from exc
        finally:
            await consumer.stop()
        raise Unavailable(f"record {held.offset} of {tp} could not be read in 10 s")

    async def deliver(self, out: Output) -> None:
        try:
            await self.sidecar.produce(out)
        except Exception as exc:
            raise Unavailable(f"cannot write to the delivered topic: {exc!r}") from exc

    async def publish_event(self, event: Event) -> None:
        try:
            await self.sidecar.publish_event(event)
        except Exception as exc:
            raise Unavailable(f"cannot write to the state topic: {exc!r}") from exc

    async def events(self) -> list[Event]:
        found: list[Event] = []

        def visit(record: object) -> None:
            with contextlib.suppress(InvalidEvent):
                found.append(decode_event(record.value))  # type: ignore[attr-defined]

        try:
            await scan_tail(
                self.sidecar.bootstrap,
                [self.config.topics.state],
                self.config.api.audit_window,
                visit,
                timeout=10.0,
            )
        except Exception as exc:
            raise Unavailable(f"cannot read the state topic: {exc!r}") from exc
        found.sort(key=lambda e: e.at)
        return found


async def _at_end(consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> bool:
    for tp in tps:
        hw = consumer.highwater(tp)
        if hw is None or await consumer.position(tp) < hw:
            return False
    return True


class MemoryBackend:
    """The admin API over an in-process bus. Publish through :meth:`publish` so held
    records reach the review queue."""

    def __init__(self, bus: MemoryBus, retain: int = 100_000) -> None:
        self.bus = bus
        self.core = bus.core
        self.config = bus.config
        self.index = QuarantineIndex(self.config.api.max_held)
        self.state_topic: collections.deque[Event] = collections.deque(maxlen=retain)
        self._records: dict[int, Record] = {}
        self._offset = 0

    def publish(self, message: Envelope | bytes) -> Outcome:
        """``MemoryBus.publish``, indexing what it quarantined."""
        outcome = self.bus.publish(message)
        for out in outcome.outputs:
            if out.route is Route.QUARANTINE and out.value is not None:
                held = held_from_record(
                    self.config.topics.quarantine,
                    0,
                    self._offset,
                    int(time.time() * 1000),
                    out.value,
                    out.headers,
                )
                if held is not None:
                    self.index.add(held)
                    self._records[self._offset] = (out.value, out.key, list(out.headers))
                self._offset += 1
        return outcome

    def ready(self) -> bool:
        return True

    async def fetch(self, held: Held) -> Record:
        record = self._records.get(held.offset)
        if record is None:
            raise Unavailable(f"record {held.offset} is gone")
        return record

    async def deliver(self, out: Output) -> None:
        self.bus.topics[Route.DELIVERED].append(out)

    async def publish_event(self, event: Event) -> None:
        self.core.apply(event)
        self.state_topic.append(event)

    async def events(self) -> list[Event]:
        return sorted(self.state_topic, key=lambda e: e.at)
