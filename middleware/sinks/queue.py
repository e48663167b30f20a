"""The queued sink: a bounded queue in front of a slow or unreliable receiver.

The message path only calls :meth:`QueuedSink.offer`, which appends to a deque or, when the
queue is full, drops the item and counts it; it never awaits. A worker task drains the queue
in batches and retries a failed batch with exponential backoff; after ``max_retries`` the
batch is dropped and counted too. So a dead or slow receiver costs memory up to
``queue_size`` items and a counter, never latency on the message path.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from typing import Generic, TypeVar

from ..config import QueuedSinkConfig
from ..logs import get_logger

log = get_logger("ostracon.sinks")

T = TypeVar("T")


class PermanentError(Exception):
    """A failure that retrying will not fix (e.g. HTTP 400): the batch is dropped at once."""


class QueuedSink(Generic[T]):
    """Subclasses implement :meth:`send`; ``start``/``close`` run the worker."""

    def __init__(self, name: str, cfg: QueuedSinkConfig) -> None:
        self.name = name
        self.queue_size = cfg.queue_size
        self.batch_size = cfg.batch
        self.max_retries = cfg.max_retries
        self.backoff_s = cfg.backoff_s
        self.max_backoff_s = cfg.max_backoff_s
        self._queue: collections.deque[T] = collections.deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._busy = False
        # Read by the metrics endpoint (another thread): plain ints, written only here.
        self.sent = 0
        self.dropped = 0
        self.failures = 0  # failed attempts (each retry counts)
        self._dropping = False  # log the start of a drop streak once, not every item

    @property
    def depth(self) -> int:
        return len(self._queue)

    def offer(self, item: T) -> bool:
        """Queue ``item`` for sending; False (and counted) when the queue is full."""
        if len(self._queue) >= self.queue_size:
            self.dropped += 1
            if not self._dropping:
                self._dropping = True
                log.warning("sink queue full; dropping", sink=self.name, size=self.queue_size)
            return False
        self._queue.append(item)
        self._wake.set()
        return True

    async def send(self, batch: list[T]) -> None:  # pragma: no cover - interface
        """Deliver ``batch``; raise to retry. Items removed from ``batch`` count as sent,
        so a sink that sends one request per item can make progress across retries."""
        raise NotImplementedError

    async def open(self) -> None:
        """Acquire clients (called by :meth:`start` on the running loop)."""

    async def shut(self) -> None:
        """Release clients (called by :meth:`close`)."""

    async def start(self) -> None:
        await self.open()
        self._task = asyncio.create_task(self._run(), name=f"sink-{self.name}")

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                n = min(self.batch_size, len(self._queue))
                batch = [self._queue.popleft() for _ in range(n)]
                self._busy = True
                try:
                    await self._deliver(batch)
                except asyncio.CancelledError:  # closed mid-send: what was left is lost
                    self.dropped += len(batch)
                    raise
                finally:
                    self._busy = False

    async def _deliver(self, batch: list[T]) -> None:
        delay = self.backoff_s
        attempt = 0
        while True:
            before = len(batch)
            error: Exception | None = None
            try:
                await self.send(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any receiver failure: retry, then drop
                error = exc
            self.sent += before - len(batch) if error is not None else before
            if error is None:
                self._dropping = False
                return
            self.failures += 1
            if isinstance(error, PermanentError) or attempt >= self.max_retries:
                self.dropped += len(batch)
                log.warning(
                    "sink dropped a batch",
                    sink=self.name,
                    items=len(batch),
                    attempts=attempt + 1,
                    error=str(error) or repr(error),
                )
                return
            attempt += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_backoff_s)

    async def drain(self, timeout: float) -> bool:
        """Wait until the queue is empty and nothing is being sent (at most ``timeout``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (self._queue or self._busy) and loop.time() < deadline:
            await asyncio.sleep(0.02)
        return not (self._queue or self._busy)

    async def close(self, timeout: float = 5.0) -> None:
        """Send what is queued within ``timeout``; what is left is dropped and counted."""
        if self._task is not None:
            await self.drain(timeout)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._queue:
            self.dropped += len(self._queue)
            log.warning("sink closed with items queued", sink=self.name, dropped=len(self._queue))
            self._queue.clear()
        await self.shut()

    def counters(self) -> dict[str, int]:
        return {"sent": self.sent, "dropped": self.dropped, "failures": self.failures}
