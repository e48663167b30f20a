"""The Kafka sidecar: consumer group on the inbound topics -> router -> producer.

Delivery is at-least-once. Each poll takes at most ``limits.max_batch`` records and at most
``limits.max_inflight_batches`` batches are in flight (the bound on memory); a batch's offsets
are committed only after every output it produced is acknowledged. A crash between the acks
and the commit re-reads the batch, and the dedupe window (refilled on start from the output
topics' ``ostracon-dedupe-key`` headers) drops what was already written, so each input lands
downstream once. Side outputs (alerts, recalls, feedback, votes, state events) are
acknowledged before the main output that marks their input as done, so a crash cannot lose
them (they may repeat); see ``Sidecar._ship``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
)
from aiokafka.partitioner import DefaultPartitioner, murmur2
from aiokafka.structs import ConsumerRecord

from ..config import Config
from ..core import Core
from ..decision import Alert, Verdict
from ..envelope import InvalidEnvelope
from ..logs import get_logger
from ..reload import RulesReloader
from ..routing import (
    H_DEDUPE,
    H_RELEASED,
    H_SOURCE,
    HEADER_PREFIX,
    Outcome,
    Output,
    Route,
    Router,
    alert_output,
    header,
)
from ..sinks import SinkHub
from ..store import Event, encode_event

if TYPE_CHECKING:
    from .state import StateReader

log = get_logger("ostracon.sidecar")

Offsets = dict[TopicPartition, int]
Sent = list[tuple[Output, "asyncio.Future[object]"]]  # outputs and their acks
# Routes of records for agents and reviewers; the one carrying its input's dedupe key is the
# input's main output, any other (feedback, a released copy) is a side output.
RECORD_ROUTES = frozenset({Route.DELIVERED, Route.QUARANTINE, Route.DEAD_LETTER})

TOPIC_EXISTS = 36


async def ensure_topics(
    bootstrap: str, topics: Iterable[str], partitions: int, replication: int = 1
) -> list[str]:
    """Create the topics that are missing; return the ones created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="ostracon-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = sorted(set(topics) - existing)
        if missing:
            resp = await admin.create_topics(
                [
                    NewTopic(t, num_partitions=partitions, replication_factor=replication)
                    for t in missing
                ]
            )
            for name, code, message in resp.topic_errors:
                if code not in (0, TOPIC_EXISTS):
                    raise RuntimeError(f"cannot create topic {name!r}: {message} (code {code})")
        return missing
    finally:
        await admin.close()


async def scan_tail(
    bootstrap: str,
    topics: Iterable[str],
    per_partition: int | Callable[[int], int],
    visit: Callable[[ConsumerRecord], None] | None = None,
    timeout: float = 60.0,
) -> dict[TopicPartition, int]:
    """Read at least the last ``per_partition`` records of every partition of ``topics``.

    ``per_partition`` may be a function of the number of partitions found.
    Calls ``visit`` on each record read and returns each partition's true end offset (high
    watermark). ListOffsets is only used as a lower bound: Tansu answers it with the last
    batch's base offset + 1, so the end is taken from the fetch responses' high watermark.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()  # refresh metadata
        tps = [
            TopicPartition(t, p)
            for t in topics
            for p in sorted(consumer.partitions_for_topic(t) or ())
        ]
        if not tps:
            return {}
        if callable(per_partition):
            per_partition = per_partition(len(tps))
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        begins = await consumer.beginning_offsets(tps)
        for tp in tps:
            consumer.seek(tp, max(begins[tp], ends[tp] - per_partition))
        pending = set(tps)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            batch = await consumer.getmany(*pending, timeout_ms=500, max_records=10_000)
            if visit is not None:
                for records in batch.values():
                    for record in records:
                        visit(record)
            for tp in list(pending):
                hw = consumer.highwater(tp)
                if hw is not None and await consumer.position(tp) >= hw:
                    pending.discard(tp)
        if pending:
            raise TimeoutError(f"could not read to the end of {sorted(map(str, pending))}")
        return {tp: consumer.highwater(tp) or 0 for tp in tps}
    finally:
        await consumer.stop()


async def read_dedupe_keys(
    bootstrap: str, topics: Iterable[str], window: int, newest: int
) -> list[tuple[str, str]]:
    """(dedupe key, source) pairs from the tails of ``topics``, oldest first, ready for a
    ``DedupeWindow`` (the source tells a crash re-read from a replay).

    Reads about ``window`` records spread over the partitions, and at least ``newest`` from
    each. The ``newest`` of every partition go last, so a window that overflows evicts older
    keys, never the ones a restart is about to re-read.
    """
    per_tp: dict[tuple[str, int], list[tuple[str, str]]] = collections.defaultdict(list)

    def visit(record: ConsumerRecord) -> None:
        key = header(record.headers, H_DEDUPE)
        if key is not None:
            source = header(record.headers, H_SOURCE) or ""
            per_tp[record.topic, record.partition].append((key, source))

    await scan_tail(bootstrap, topics, lambda n: max(window // max(n, 1), newest), visit)
    older = [k for keys in per_tp.values() for k in keys[:-newest]]
    return older + [k for keys in per_tp.values() for k in keys[-newest:]]


class _Group:
    """Outputs handed to the producer together, by tier (see ``Sidecar._ship``)."""

    __slots__ = ("after_previous", "mains", "released", "sides")

    def __init__(self) -> None:
        self.released: list[Output] = []  # held records let through (before their event)
        self.sides: list[Output] = []  # alerts, recalls, votes, state events, feedback
        self.mains: list[Output] = []  # each carrying its own input's dedupe key
        self.after_previous = False  # wait until the previous group is acknowledged

    @property
    def empty(self) -> bool:
        return not (self.released or self.sides or self.mains)

    def add(self, out: Output, key: str) -> None:
        if out.route not in RECORD_ROUTES:
            self.sides.append(out)
        elif header(out.headers, H_DEDUPE) == key:
            self.mains.append(out)
        elif header(out.headers, H_RELEASED) is not None:
            self.released.append(out)
        else:
            self.sides.append(out)


class CachingPartitioner:
    """Kafka's default key partitioning (murmur2, as the Java client) with a memo per key.

    aiokafka hashes every key in pure Python (~3 us); conversations repeat, so the partition
    of a key is remembered. Same placement as the default partitioner, bounded memory.
    """

    def __init__(self, capacity: int = 65_536) -> None:
        self.capacity = capacity
        self._memo: dict[tuple[bytes, int], int] = {}

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return int(DefaultPartitioner()(key, all_partitions, available))
        memo_key = (key, len(all_partitions))
        partition = self._memo.get(memo_key)
        if partition is None:
            if len(self._memo) >= self.capacity:
                self._memo.clear()
            partition = self._memo[memo_key] = all_partitions[
                (murmur2(key) & 0x7FFFFFFF) % len(all_partitions)
            ]
        return partition


@dataclass
class Stats:
    """Counters the sidecar keeps (exported as metrics by later sinks)."""

    consumed: int = 0
    duplicates: int = 0
    batches: int = 0
    routed: collections.Counter[Route] = field(default_factory=collections.Counter)
    verdicts: collections.Counter[Verdict] = field(default_factory=collections.Counter)
    dead_letter_reasons: collections.Counter[str] = field(default_factory=collections.Counter)

    def as_dict(self) -> dict[str, object]:
        return {
            "consumed": self.consumed,
            "duplicates": self.duplicates,
            "batches": self.batches,
            "routed": {str(k): v for k, v in self.routed.items()},
            "verdicts": {str(k): v for k, v in self.verdicts.items()},
            "dead_letter_reasons": dict(self.dead_letter_reasons),
        }


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Settle in-flight batches before partitions move; restore dedupe after they arrive."""

    def __init__(self, sidecar: Sidecar) -> None:
        self.sidecar = sidecar

    async def on_partitions_revoked(self, revoked: object) -> None:
        async with self.sidecar._lock:
            await self.sidecar._settle(keep=0)

    async def on_partitions_assigned(self, assigned: object) -> None:
        # Partitions taken over (from a crashed instance, or at start) are re-read from their
        # last commit, so learn what was already written first. aiokafka may fetch during
        # this callback; holding the lock keeps the poll loop from routing until it is done.
        async with self.sidecar._lock:
            await self.sidecar._restore_window()


class Sidecar:
    """One sidecar instance. ``await start()``, ``await run(stop_event)``, ``await close()``."""

    def __init__(
        self,
        config: Config,
        bootstrap: str,
        core: Core | None = None,
        on_outcome: Callable[[Outcome], None] | None = None,
    ) -> None:
        self.config = config
        self.bootstrap = bootstrap
        self.router = Router.from_config(config, core)
        self.core = self.router.core
        self.window = self.router.window
        self.on_outcome = on_outcome
        self.stats = Stats()
        t = config.topics
        self.topic_for = {
            Route.DELIVERED: t.delivered,
            Route.QUARANTINE: t.quarantine,
            Route.DEAD_LETTER: t.dead_letter,
            Route.ALERTS: t.alerts,
            Route.RECALLS: t.recalls,
            Route.VOTES: t.votes,
            Route.STATE: t.state,
        }
        # Guards the in-flight queue: the poll loop and the rebalance listener both settle it.
        self._lock = asyncio.Lock()
        # Each batch in flight: its shipping (done once every output is acknowledged) and the
        # offsets to commit after it.
        self._inflight: collections.deque[tuple[asyncio.Future[Any], Offsets]] = collections.deque()
        # The newest group's main outputs are in the producer once this is done (order), and
        # the newest group's shipping (done once all its outputs are acknowledged).
        self._mains_queued: asyncio.Future[None] | None = None
        self._last_ship: asyncio.Task[None] | None = None
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.state_reader: StateReader | None = None  # set by start()
        # Hot reload of the rule files (None without them); runs beside the poll loop.
        self.reloader = RulesReloader.for_core(self.core, config.rules, self.emit_alert)
        # Metrics and alert sinks (None when none is enabled); fed without awaiting.
        self.sinks = SinkHub.from_config(config.sinks, self.stats, self.core.state)

    async def start(self) -> None:
        cfg = self.config
        if self.sinks is not None:
            await self.sinks.start()
        if cfg.topics.create:
            created = await ensure_topics(
                self.bootstrap, cfg.all_topics, cfg.topics.partitions, cfg.topics.replication
            )
            if created:
                log.info("topics created", topics=created)
        self.producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id=cfg.kafka.client_id,
            acks="all",
            linger_ms=cfg.kafka.linger_ms,
            partitioner=CachingPartitioner(),
            max_request_size=max(2 * cfg.limits.max_message_bytes, 1_048_576),
        )
        await self.producer.start()
        # Global tables (accusations, blocklist, human decisions) are read whole before the
        # first record is decided, then tailed beside the poll loop (ostracon.transport.state).
        from .state import StateReader

        self.state_reader = StateReader(self.bootstrap, cfg.topics.state, self.core)
        await self.state_reader.catch_up()
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            client_id=cfg.kafka.client_id,
            group_id=cfg.kafka.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=cfg.limits.max_batch,
            session_timeout_ms=cfg.kafka.session_timeout_ms,
            heartbeat_interval_ms=cfg.kafka.heartbeat_interval_ms,
            fetch_max_wait_ms=cfg.kafka.fetch_max_wait_ms,
        )
        self.consumer.subscribe(cfg.topics.inbound, listener=_Rebalance(self))
        await self.consumer.start()
        log.info(
            "sidecar consuming",
            bootstrap=self.bootstrap,
            inbound=cfg.topics.inbound,
            group=cfg.kafka.group_id,
        )

    async def _restore_window(self) -> None:
        """Refill the dedupe window from the output topics' tails (on every assignment)."""
        cfg = self.config
        # At least everything that can be in flight (written, not committed) per partition.
        in_flight = cfg.limits.max_batch * cfg.limits.max_inflight_batches
        started = time.perf_counter()
        try:
            keys = await read_dedupe_keys(
                self.bootstrap, cfg.output_topics, cfg.dedupe.window, in_flight
            )
        except Exception as exc:  # the listener's errors are swallowed by aiokafka: say so
            log.error("dedupe window not restored; duplicates possible", error=repr(exc))
            return
        self.window.extend(keys)
        log.info(
            "dedupe window restored",
            keys=len(self.window),
            seconds=round(time.perf_counter() - started, 3),
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; every batch in flight is finished and committed.

        Up to ``limits.max_inflight_batches`` batches are produced but not yet acknowledged
        at once, so routing the next batch overlaps the broker's acks for the previous one.
        Offsets are committed in poll order, each only after its batch's acks.
        """
        assert self.consumer is not None
        keep = self.config.limits.max_inflight_batches - 1
        # Routing a record never awaits, so a reload swaps rule sets between two records.
        watcher = asyncio.create_task(self.reloader.run()) if self.reloader else None
        # State events are applied between records the same way.
        tail = asyncio.create_task(self.state_reader.run()) if self.state_reader else None
        tick_every, next_tick = self.config.quorum.tick_interval_s, 0.0
        try:
            while not stop.is_set():
                if time.monotonic() >= next_tick:  # deadlines need a clock; the core has none
                    next_tick = time.monotonic() + tick_every
                    await self.tick()
                try:
                    batch = await self.consumer.getmany(
                        timeout_ms=100, max_records=self.config.limits.max_batch
                    )
                except UnicodeDecodeError as exc:  # a record aiokafka cannot parse
                    await self._skip_unparsable(exc)
                    continue
                async with self._lock:
                    if batch:
                        self._inflight.append(await self._submit(batch))
                        await self._settle(keep)
                    else:  # idle: nothing to overlap with, so settle everything
                        await self._settle(0)
        finally:
            for task in (watcher, tail):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            async with self._lock:
                await self._settle(0)

    async def _skip_unparsable(self, exc: UnicodeDecodeError) -> None:
        """Dead-letter a record aiokafka cannot parse (a header key that is not UTF-8).

        aiokafka raises from ``getmany`` at that record, and would again at every poll and
        after every restart: a crash loop. Its partition and offset are known only to the
        fetcher's frame in the traceback. The failed poll had already taken records (of
        that partition and others) that it never returned, so every partition is rewound to
        its commit once all routed batches are committed; the records before the bad one are
        routed first. aiokafka parses a record batch in sequence, so the bad record and the
        rest of its batch cannot be read: each becomes a dead letter with an empty value.
        """
        consumer = self.consumer
        assert consumer is not None
        where = _unparsable_at(exc)
        if where is None or where[0] not in consumer.assignment():
            raise exc
        tp, bad, end = where
        async with self._lock:
            await self._settle(0)
        for part in consumer.assignment():
            committed = await consumer.committed(part)
            if committed is None:
                await consumer.seek_to_beginning(part)
            else:
                consumer.seek(part, committed)
        while tp in consumer.assignment() and (pos := await consumer.position(tp)) < bad:
            batch = await consumer.getmany(tp, timeout_ms=1000, max_records=bad - pos)
            async with self._lock:
                if batch:
                    self._inflight.append(await self._submit(batch))
        if tp not in consumer.assignment():
            return  # moved meanwhile: its new owner meets the record and skips it
        error = InvalidEnvelope(
            "invalid-header", f"record batch unreadable from offset {bad} (a header key?): {exc}"
        )
        async with self._lock:
            group = _Group()
            for offset in range(bad, end):
                source = f"{tp.topic}/{tp.partition}/{offset}"
                outcome = self.router.dead_letter(error, b"", None, (), source)
                for out in outcome.outputs:
                    group.add(out, outcome.key)
            self._inflight.append((self._ship(group), {tp: end}))
            self.stats.consumed += end - bad
            self.stats.dead_letter_reasons[error.code] += end - bad
        consumer.seek(tp, end)
        log.warning(
            "dead-lettered",
            code=error.code,
            reason=error.reason,
            source=f"{tp.topic}/{tp.partition}/{bad}",
            records=end - bad,
        )

    async def _submit(
        self, batch: dict[TopicPartition, list[ConsumerRecord]]
    ) -> tuple[asyncio.Future[list[None]], Offsets]:
        """Route a batch, handing its outputs to the producer every ``limits.handoff_every``
        records; return (all its shipping, offsets)."""
        group = _Group()
        shipped: list[asyncio.Task[None]] = []
        offsets: Offsets = {}
        stats = self.stats
        sinks = self.sinks
        every, routed = self.config.limits.handoff_every, 0
        now = time.time()  # the reference for signed messages' ts window (ostracon.identity)
        for tp, records in batch.items():
            for record in records:
                if routed == every:
                    # Let the outputs so far leave (the producer's sender runs meanwhile).
                    # State events and reloads may be applied here: still between records.
                    shipped.append(self._ship(group))
                    group, routed = _Group(), 0
                    await asyncio.sleep(0)
                routed += 1
                source = f"{tp.topic}/{tp.partition}/{record.offset}"
                started = time.perf_counter()
                try:
                    outcome = self.router.route(
                        record.value, record.key, record.headers, source, now
                    )
                except Exception as exc:  # a bug must not crash-loop on one record
                    log.exception("internal error; record dead-lettered", source=source)
                    outcome = self.router.dead_letter(
                        InvalidEnvelope("internal-error", repr(exc)),
                        record.value,
                        record.key,
                        record.headers,
                        source,
                    )
                stats.consumed += 1
                if outcome.duplicate:
                    stats.duplicates += 1
                    log.debug("duplicate dropped", key=outcome.key, source=source)
                decision = outcome.decision
                if decision is not None and decision.recalls:
                    # A recall follows what it recalls, which may be in this group or the
                    # one just shipped: its group waits until the one before is acknowledged.
                    if not group.empty:
                        shipped.append(self._ship(group))
                        group = _Group()
                    group.after_previous = True
                for out in outcome.outputs:
                    group.add(out, outcome.key)
                    stats.routed[out.route] += 1
                if decision is not None:
                    stats.verdicts[decision.verdict] += 1
                elif outcome.error is not None and not outcome.duplicate:
                    stats.dead_letter_reasons[outcome.error.code] += 1
                    log.warning(
                        "dead-lettered",
                        code=outcome.error.code,
                        reason=outcome.error.reason,
                        source=source,
                    )
                if sinks is not None:  # decide time only: nothing above awaits the broker
                    sinks.outcome(outcome, time.perf_counter() - started)
                if self.on_outcome is not None:
                    self.on_outcome(outcome)
            offsets[tp] = records[-1].offset + 1
        shipped.append(self._ship(group))
        return asyncio.gather(*shipped), offsets

    def _ship(self, group: _Group) -> asyncio.Task[None]:
        """Produce a group's outputs: released copies, then the other side outputs, then the
        main outputs, each tier once the one before is acknowledged.

        A main output (delivered, quarantined, dead-lettered) carries its input's dedupe
        key: once it is written, a re-read of the input after a crash is a duplicate and
        decides nothing again. So the alerts, recalls, votes, feedback and state events the
        input caused must be on the broker before it is, or a SIGKILL in between would lose
        them for good. A quorum's released copy goes before its ``QuarantineResolved`` event,
        which says it was delivered. Main outputs keep their inputs' order across groups
        while nothing fails (a failure stops the sidecar before the offsets are committed:
        the inputs are decided again).
        """
        before, queued = self._mains_queued, asyncio.get_running_loop().create_future()
        self._mains_queued = queued
        previous = self._last_ship if group.after_previous else None
        task = asyncio.create_task(self._ship_in_order(group, previous, before, queued))
        # A task cancelled before it ran never reaches its ``finally``: release the next one.
        task.add_done_callback(lambda _: _release(queued))
        self._last_ship = task
        return task

    async def _ship_in_order(
        self,
        group: _Group,
        previous: asyncio.Task[None] | None,
        before: asyncio.Future[None] | None,
        queued: asyncio.Future[None],
    ) -> None:
        try:
            if previous is not None:
                await asyncio.wait([previous])  # its failure is reported by its own batch
            for tier in (group.released, group.sides):
                if tier:
                    await self._acknowledged([(out, await self._send(out)) for out in tier])
            if before is not None:
                await before
            sent = [(out, await self._send(out)) for out in group.mains]
        finally:
            _release(queued)
        await self._acknowledged(sent)

    async def _acknowledged(self, sent: Sent) -> None:
        """Wait for the acks of ``sent``; outputs the broker did not acknowledge in time (it
        is down or frozen for longer than the producer's request timeout) are sent again until
        it does (``_resend``); any other produce failure raises."""
        if not sent:
            return
        await asyncio.wait([f for _, f in sent])
        failed = _unacknowledged(sent)
        if failed:
            await self._resend(failed)

    async def _settle(self, keep: int) -> None:
        """Commit finished batches in order, waiting on the oldest until ``keep`` remain.

        A produce failure raises here, before its offsets are committed: the sidecar stops and
        the batch is re-read by whoever owns the partition next.
        """
        assert self.consumer is not None
        offsets: Offsets = {}
        while self._inflight and (len(self._inflight) > keep or self._inflight[0][0].done()):
            shipped, batch_offsets = self._inflight[0]
            await shipped
            self._inflight.popleft()
            offsets.update(batch_offsets)
            self.stats.batches += 1
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # Partitions moved meanwhile: the new owner re-reads them and dedupe absorbs it.
            log.warning("commit skipped after rebalance", error=str(exc))

    async def _resend(self, failed: list[Output]) -> None:
        """Send outputs whose acks failed again, with backoff, until all are acknowledged.

        Stopping instead would only hand the batch to a restart, after the same wait. The
        broker may have written some before their acks were lost: records whose dedupe key is
        already at the tail of the output topics are not sent again. Side outputs (no key)
        may repeat, and a re-sent output lands after later ones (docs/guarantees.md).
        """
        limits, pause = self.config.limits, 0.5
        while failed:
            log.warning("broker did not acknowledge; sending again", outputs=len(failed))
            await asyncio.sleep(pause)
            pause = min(2 * pause, 10.0)
            try:
                tail = limits.max_batch * limits.max_inflight_batches
                keys = await read_dedupe_keys(self.bootstrap, self.config.output_topics, 0, tail)
            except Exception as exc:  # the broker is still away
                log.warning("broker unreachable", error=repr(exc))
                continue
            written = {key for key, _ in keys}
            again: Sent = []
            for out in failed:
                # (a released copy carries its held record's key, which is on the quarantine
                # topic: the key says nothing about the copy, so it is always sent again)
                key = header(out.headers, H_DEDUPE)
                if key not in written or header(out.headers, H_RELEASED) is not None:
                    again.append((out, await self._send(out)))
            if again:
                await asyncio.wait([f for _, f in again])
            failed = _unacknowledged(again)
        log.info("broker acknowledged the outputs sent again")

    async def _send(self, out: Output) -> asyncio.Future[object]:
        """Hand ``out`` to the producer; its ack. aiokafka's ``send`` itself raises
        KafkaTimeoutError when it cannot even queue the record for the request timeout (its
        buffer stays full, or no metadata comes: the broker is down or frozen). That comes
        back as a failed ack: an input's outputs (_ship) are then sent again like any
        unacknowledged output, where the sidecar used to stop. Anything else it raises (a
        missing topic, say) still raises here."""
        try:
            return await self._produce(out)
        except KafkaTimeoutError as exc:
            failed: asyncio.Future[object] = asyncio.get_running_loop().create_future()
            failed.set_exception(exc)
            return failed

    async def _produce(self, out: Output) -> asyncio.Future[object]:
        assert self.producer is not None
        topic = self.topic_for[out.route]
        try:
            return await self.producer.send(topic, out.value, key=out.key, headers=out.headers)
        except MessageSizeTooLargeError:
            if out.route is not Route.DEAD_LETTER or out.value is None:
                raise  # forwards are within the limit by construction (see Router.route)
            # An input far over the limit: keep its head and our headers, drop its own.
            limit = self.config.limits.max_message_bytes
            headers = [(k, v) for k, v in out.headers if k.startswith(HEADER_PREFIX)]
            headers.append(("ostracon-truncated", str(len(out.value)).encode()))
            log.warning(
                "dead letter truncated",
                size=len(out.value),
                kept=limit,
                source=header(out.headers, H_SOURCE),
            )
            return await self.producer.send(topic, out.value[:limit], key=out.key, headers=headers)

    async def publish_event(self, event: Event) -> list[Alert]:
        """Write a state event to the state topic (for every other instance, and for this one
        after a restart), then apply it here. Applied only once the broker acknowledged it: a
        failed write must not leave this instance believing what no other instance will."""
        assert self.producer is not None
        key, value = encode_event(event)
        await (await self.producer.send(self.config.topics.state, value, key=key))
        alerts = self.core.apply(event)
        for alert in alerts:
            await self.emit_alert(alert)
        return alerts

    async def emit_alert(self, alert: Alert) -> None:
        """Produce a standalone alert (not tied to an input) and wait for its ack."""
        await (await self._send(alert_output(alert)))
        if self.sinks is not None:
            self.sinks.alert(alert)

    async def tick(self) -> None:
        """Act on time passing: quorum ballots past their deadline escalate (alerts)."""
        async with self._lock:
            outputs = self.router.tick(time.time())
            for out in outputs:
                await (await self._send(out))
                if self.sinks is not None and out.route is Route.ALERTS and out.value:
                    self.sinks.alert(msgspec.json.decode(out.value, type=Alert))

    async def produce(self, out: Output) -> None:
        """Produce one output not tied to an input (a released record) and wait for its ack."""
        await (await self._send(out))

    async def close(self) -> None:
        await stop_clients(self.consumer, self.producer)
        self.consumer = self.producer = None
        if self.sinks is not None:
            await self.sinks.close()
        log.info("sidecar stopped", **self.stats.as_dict())


def _unacknowledged(sent: Sent) -> list[Output]:
    """The outputs of ``sent`` (all acks settled) that the broker did not acknowledge in
    time, to send again; any other produce failure raises."""
    failed = []
    for out, ack in sent:
        error = None if ack.cancelled() else ack.exception()
        if ack.cancelled() or (isinstance(error, KafkaError) and _transient(error)):
            failed.append(out)
        elif error is not None:
            raise error
    return failed


def _release(queued: asyncio.Future[None]) -> None:
    if not queued.done():
        queued.set_result(None)


def _transient(exc: KafkaError) -> bool:
    """A produce failure that waiting out the broker can fix (timeouts, leader moves)."""
    return bool(exc.retriable) or isinstance(exc, KafkaTimeoutError)


def _unparsable_at(exc: BaseException) -> tuple[TopicPartition, int, int] | None:
    """(partition, first unread offset, end of its record batch) where aiokafka failed to
    parse a record, from the locals of its fetcher's frame."""
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_name == "_unpack_records":  # aiokafka's PartitionRecords
            records = frame.f_locals.get("self")
            tp, offset = getattr(records, "_tp", None), getattr(records, "next_fetch_offset", None)
            end = getattr(frame.f_locals.get("next_batch"), "next_offset", None)
            if isinstance(tp, TopicPartition) and isinstance(offset, int):
                return tp, offset, max(end, offset + 1) if isinstance(end, int) else offset + 1
        tb = tb.tb_next
    return None


async def stop_clients(*clients: AIOKafkaConsumer | AIOKafkaProducer | None) -> None:
    """Stop Kafka clients on shutdown; one failing to stop must not keep the others running."""
    for client in clients:
        if client is not None:
            with contextlib.suppress(Exception):
                await client.stop()


async def serve(config: Config, stop: asyncio.Event | None = None) -> None:
    """Run one sidecar until SIGTERM/SIGINT (or ``stop``); start the embedded broker if needed.

    With no ``kafka.bootstrap_servers`` the bundled broker is started on loopback, the topics
    are created on it, and it is stopped on exit: the same code path as production.
    """
    import signal

    from .embedded import EmbeddedBroker

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    broker: EmbeddedBroker | None = None
    bootstrap = config.kafka.bootstrap_servers
    if bootstrap is None:
        broker = EmbeddedBroker(config.embedded.host, config.embedded.port)
        bootstrap = broker.start()
        log.info(
            "embedded broker started",
            bootstrap=bootstrap,
            hint=f"point agents at bootstrap_servers={bootstrap}, "
            f"produce to {config.topics.inbound[0]}, consume {config.topics.delivered}",
        )
    sidecar = Sidecar(config, bootstrap)
    reloader = sidecar.reloader
    loop.add_signal_handler(
        signal.SIGHUP,
        reloader.request if reloader else lambda: log.info("SIGHUP: no rule files to reload"),
    )
    # The genealogy keeps millions of small long-lived objects; with the default thresholds
    # the cyclic GC rescans them so often that per-message cost grows with retained claims
    # (measured: 78 -> 144 us/message from 2*10^4 to 10^5 claims; 50 000 keeps it near flat).
    gc.set_threshold(50_000, 50, 100)
    api = None
    try:
        await sidecar.start()
        if config.api.enabled:  # the admin API/UI, on this loop (see ostracon.api)
            from ..api import AdminApi

            api = AdminApi(sidecar)
            await api.start()
        gc.freeze()  # what start-up allocated is never garbage
        await sidecar.run(stop)
    finally:
        if api is not None:
            await api.close()
        await sidecar.close()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        if broker is not None:
            broker.stop()
            log.info("embedded broker stopped")
