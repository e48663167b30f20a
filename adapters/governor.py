"""The adapters' one interface to ostracon: ask for a ruling on an envelope, two backends.

Every framework adapter turns the framework's messages into :class:`~ostracon.envelope.
Envelope` s and asks a :class:`Governor` for a :class:`Ruling`. Two backends:

- :class:`InProcessGovernor`: the decision core runs inside the application (no broker). The
  decision is immediate; alerts go to a callback and a bounded in-memory list.
- :class:`SidecarGovernor`: the envelope is produced to the sidecar's inbound topic and the
  ruling is read back from the output topics (the record whose ``ostracon-dedupe-key`` is the
  envelope's deterministic decision id, or, for a dead letter, whose ``ostracon-source`` is
  where the envelope was written). No answer within ``timeout_s``: fail closed (quarantine,
  the default) or fail open (deliver), as configured.

Both offer ``await rule(env)`` and, for the frameworks whose hooks are synchronous,
``rule_sync(env)`` (the sidecar backend then runs its client on a private event-loop thread).
:func:`notice` is the text an adapter puts in place of a withheld message: dropping a turn is
not safe in every framework (an AutoGen group chat waits forever for it).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Literal, TypeVar

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from ostracon.config import Config
from ostracon.core import Core
from ostracon.decision import Alert, Verdict, decision_id
from ostracon.envelope import Envelope, encode
from ostracon.identity import Signer, sign
from ostracon.pipeline import build_core
from ostracon.routing import (
    H_DECISION,
    H_DEDUPE,
    H_FEEDBACK,
    H_REASON,
    H_RULES,
    H_SOURCE,
    H_TAG,
    H_VERDICT,
    header,
)
from ostracon.transport.kafka import stop_clients

T = TypeVar("T")


class Ruling(msgspec.Struct, frozen=True):
    """What ostracon decided about one message, as an adapter needs it."""

    verdict: Verdict
    decision_id: str
    reason: str = ""
    feedback: str = ""  # for the sender: why, and what to do (cite a source, ...)
    tags: dict[str, str] = {}
    rules: list[str] = []

    @property
    def delivers(self) -> bool:
        return self.verdict.delivers

    @property
    def blocklisted(self) -> bool:
        """The sender is on the blocklist: it may not send or delegate."""
        return "blocklist" in self.rules


def notice(ruling: Ruling, sender: str) -> str:
    """The replacement text for a withheld message: names the reason and the decision id.

    It never repeats the values the containment stage withheld (its reasons do: "churn = 7%
    is unverified"), or the notice would spread the very claim it withholds. Rule, blocklist
    and backend reasons are operator text and are shown.
    """
    if "containment" not in ruling.rules or ruling.blocklisted:
        why = ruling.reason or ruling.verdict.value  # blocklist, rule or backend reasons
    elif ruling.tags.get("unverified"):
        why = f"it states unverified claims about {ruling.tags['unverified'].replace(',', ', ')}"
    else:
        why = "it contradicts an established fact"
    return (
        f"[ostracon] A message from {sender} was withheld ({ruling.verdict.value}): {why}. "
        f"Do not rely on it; ask for a source if you need it. (decision {ruling.decision_id})"
    )


class Governor:
    """Rules on envelopes. Subclasses implement :meth:`rule`."""

    async def rule(self, env: Envelope) -> Ruling:  # pragma: no cover - interface
        raise NotImplementedError

    def rule_sync(self, env: Envelope) -> Ruling:  # pragma: no cover - interface
        raise NotImplementedError

    async def close(self) -> None:
        """Release the backend's resources."""

    def close_sync(self) -> None:
        """:meth:`close` from synchronous code."""


class InProcessGovernor(Governor):
    """The core inside the application: same stages and state as the sidecar, no broker."""

    def __init__(
        self,
        config: Config | None = None,
        core: Core | None = None,
        on_alert: Callable[[Alert], None] | None = None,
        keep_alerts: int = 1000,
    ) -> None:
        self.config = config or Config()
        self.core = core or build_core(self.config)
        self.on_alert = on_alert
        self.alerts: collections.deque[Alert] = collections.deque(maxlen=keep_alerts)
        self._lock = threading.Lock()  # hooks may fire from worker threads (CrewAI)

    def rule_sync(self, env: Envelope) -> Ruling:
        with self._lock:
            d = self.core.decide(env)
        for alert in d.alerts:
            self.alerts.append(alert)
            if self.on_alert is not None:
                self.on_alert(alert)
        return Ruling(
            verdict=d.verdict,
            decision_id=d.id,
            reason="; ".join(d.reasons),
            feedback=d.feedback,
            tags=dict(d.tags),
            rules=list(d.rules),
        )

    async def rule(self, env: Envelope) -> Ruling:
        return self.rule_sync(env)


class SidecarGovernor(Governor):
    """Produce to the sidecar's inbound topic; await the ruling from its output topics.

    Each instance reads every partition of the output topics from their end when it starts
    (no consumer group: every adapter process sees every ruling and keeps those it awaits).
    Call :meth:`start` (or use it as an async context manager) before :meth:`rule`.
    ``signers`` (sender name -> signer, see ostracon.identity) signs those senders'
    envelopes before they are produced, stamping ``ts`` when it is missing.
    """

    def __init__(
        self,
        config: Config,
        timeout_s: float = 5.0,
        fail: Literal["closed", "open"] = "closed",
        signers: Mapping[str, Signer] | None = None,
    ) -> None:
        if not config.kafka.bootstrap_servers:
            raise ValueError("the sidecar backend needs kafka.bootstrap_servers")
        self.config = config
        self.timeout_s = timeout_s
        self.fail = fail
        self.signers = dict(signers or {})
        self._by_decision: dict[str, asyncio.Future[Ruling]] = {}
        self._by_source: dict[str, asyncio.Future[Ruling]] = {}
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._reader: asyncio.Task[None] | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    async def __aenter__(self) -> SidecarGovernor:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        k = self.config.kafka
        t = self.config.topics
        self._producer = AIOKafkaProducer(bootstrap_servers=k.bootstrap_servers, acks="all")
        await self._producer.start()
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=k.bootstrap_servers,
            enable_auto_commit=False,
            fetch_max_wait_ms=k.fetch_max_wait_ms,
        )
        await self._consumer.start()
        try:
            await self._consumer.topics()  # metadata for partitions_for_topic
            parts = [
                TopicPartition(topic, p)
                for topic in (t.delivered, t.quarantine, t.dead_letter)
                for p in sorted(self._consumer.partitions_for_topic(topic) or ())
            ]
            if not parts:
                raise RuntimeError(
                    f"output topics {t.delivered}, {t.quarantine}, {t.dead_letter} do not "
                    "exist: start the sidecar first (it creates them)"
                )
        except BaseException:
            await self.close()
            raise
        self._consumer.assign(parts)
        await self._consumer.seek_to_end(*parts)
        for tp in parts:  # resolve the end now, so a ruling produced later is never skipped
            await self._consumer.position(tp)
        self._reader = asyncio.create_task(self._read())

    async def rule(self, env: Envelope) -> Ruling:
        if self._producer is None:
            raise RuntimeError("SidecarGovernor.start() was not called")
        loop = asyncio.get_running_loop()
        did = decision_id(env.conversation, env.id)
        fut: asyncio.Future[Ruling] = self._by_decision.get(did) or loop.create_future()
        self._by_decision[did] = fut
        topic = self.config.topics.inbound[0]
        signer = self.signers.get(env.sender)
        if signer is not None:
            if env.ts is None:  # a signed message needs a ts inside the sidecar's window
                env = msgspec.structs.replace(env, ts=time.time())
            env = sign(env, signer)
        try:
            meta = await self._producer.send_and_wait(
                topic, encode(env), key=env.conversation.encode()
            )
            source = f"{meta.topic}/{meta.partition}/{meta.offset}"
            self._by_source[source] = fut
            try:
                return await asyncio.wait_for(asyncio.shield(fut), self.timeout_s)
            finally:
                self._by_source.pop(source, None)
        except TimeoutError:
            return self._unanswered(did, f"no ruling from the sidecar within {self.timeout_s}s")
        except Exception as exc:  # broker unreachable: the same choice as a timeout
            return self._unanswered(did, f"sidecar unreachable: {exc!r}")
        finally:
            if self._by_decision.get(did) is fut and fut.done():
                del self._by_decision[did]

    def _unanswered(self, did: str, why: str) -> Ruling:
        if self.fail == "open":
            return Ruling(
                Verdict.DELIVER_TAGGED, did, f"{why} (fail-open)", tags={"ungoverned": "1"}
            )
        return Ruling(Verdict.QUARANTINE, did, f"{why} (fail-closed)")

    async def _read(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for rec in records:
                    self._take(list(rec.headers or ()))

    def _take(self, headers: list[tuple[str, bytes]]) -> None:
        dedupe = header(headers, H_DEDUPE)
        if dedupe is None:  # side records (the feedback message): the ruling has it too
            return
        fut = self._by_decision.get(dedupe) or self._by_source.get(header(headers, H_SOURCE) or "")
        if fut is None or fut.done():
            return
        verdict = header(headers, H_VERDICT)
        tags = {k[len(H_TAG) :]: v.decode() for k, v in headers if k.startswith(H_TAG)}
        rules = (header(headers, H_RULES) or "").split(",")
        ruling = Ruling(
            verdict=Verdict(verdict) if verdict else Verdict.QUARANTINE,
            decision_id=header(headers, H_DECISION) or dedupe,
            reason=header(headers, H_REASON) or "",
            feedback=header(headers, H_FEEDBACK) or "",
            tags=tags,
            rules=[r for r in rules if r],
        )
        fut.set_result(ruling)

    # ------------------------------------------------------------------ sync use

    def rule_sync(self, env: Envelope) -> Ruling:
        return self._call(self.rule(env), self.timeout_s + 10)

    def close_sync(self) -> None:
        if self._thread_loop is None:
            return
        self._call(self.close(), 10)
        self._thread_loop.call_soon_threadsafe(self._thread_loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        self._thread_loop = self._thread = None

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run ``coro`` on the private loop thread (started, with the clients, on first use)."""
        if self._thread_loop is None:
            loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=loop.run_forever, daemon=True)
            self._thread.start()
            self._thread_loop = loop
            asyncio.run_coroutine_threadsafe(self.start(), loop).result(30)
        return asyncio.run_coroutine_threadsafe(coro, self._thread_loop).result(timeout)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
            self._reader = None
        await stop_clients(self._consumer, self._producer)
        self._consumer = self._producer = None
