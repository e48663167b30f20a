"""The state topic shell: every instance reads ``topics.state`` whole, then tails it.

State events (ostracon.store: accusations, blocks, unblocks, human decisions) are global
tables, so each sidecar instance reads every partition from the beginning, without a
consumer group, before it consumes (``catch_up``: one blocklist recompute at the end), then
keeps tailing (``run``) and applies each new event with ``core.apply`` between records:
routing a record never awaits, so an event lands between two records, never inside one.
Events are applied once by id, so reading back our own (already applied) events is a no-op.

Also the CLI's client side: :func:`publish_events` and :func:`read_events`.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord

from ..byzantine import deferred
from ..config import Config
from ..core import Core
from ..decision import Alert
from ..logs import get_logger
from ..pipeline import build_core
from ..store import (
    AccusationMade,
    AgentBlocked,
    AgentUnblocked,
    Event,
    InvalidEvent,
    decode_event,
    encode_event,
    event_id,
)
from .kafka import scan_tail

log = get_logger("ostracon.state")


def _decoded(record: ConsumerRecord) -> Event | None:
    try:
        return decode_event(record.value)
    except InvalidEvent as exc:
        log.warning(
            "state record skipped",
            source=f"{record.topic}/{record.partition}/{record.offset}",
            error=str(exc),
        )
        return None


async def read_events(bootstrap: str, topic: str, timeout: float = 60.0) -> tuple[
    list[Event], dict[TopicPartition, int]
]:  # fmt: skip
    """Every event on ``topic`` (all partitions, from the start) and each partition's end."""
    events: list[Event] = []

    def visit(record: ConsumerRecord) -> None:
        event = _decoded(record)
        if event is not None:
            events.append(event)

    ends = await scan_tail(bootstrap, [topic], sys.maxsize, visit, timeout)
    return events, ends


async def publish_events(bootstrap: str, topic: str, events: Iterable[Event]) -> None:
    """Write events to the state topic and wait for the broker's acknowledgements."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        futures = []
        for event in events:
            key, value = encode_event(event)
            futures.append(await producer.send(topic, value, key=key))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


class StateReader:
    """Keeps one core's state in step with the state topic."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        core: Core,
        on_change: Callable[[list[Alert]], None] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.core = core
        self.on_change = on_change
        self.applied = 0
        self._last: list[str] | None = None
        self._ends: dict[TopicPartition, int] = {}
        self._consumer: AIOKafkaConsumer | None = None

    async def catch_up(self) -> int:
        """Apply every event already on the topic (one blocklist recompute); returns how
        many were read."""
        events, self._ends = await read_events(self.bootstrap, self.topic)
        with deferred(self.core) as alerts:
            for event in events:
                self._apply(event)
        self._changed(alerts)
        log.info(
            "state caught up",
            events=len(events),
            blocklist=sorted(self.core.state.blocklist),
        )
        return len(events)

    async def run(self, poll_ms: int = 200) -> None:
        """Tail the topic from where ``catch_up`` stopped until cancelled."""
        consumer = self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100
        )
        await consumer.start()
        try:
            await consumer.topics()
            tps = [
                TopicPartition(self.topic, p)
                for p in sorted(consumer.partitions_for_topic(self.topic) or ())
            ]
            consumer.assign(tps)
            for tp in tps:
                consumer.seek(tp, self._ends.get(tp, 0))
            while True:
                batch = await consumer.getmany(timeout_ms=poll_ms)
                alerts: list[Alert] = []
                for records in batch.values():
                    for record in records:
                        event = _decoded(record)
                        if event is not None:
                            alerts += self._apply(event)
                self._changed(alerts)
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()

    def _apply(self, event: Event) -> list[Alert]:
        self.applied += 1
        return self.core.apply(event)

    def _changed(self, alerts: list[Alert]) -> None:
        """Log the blocklist when it changed, whoever changed it (this instance's own
        decisions apply their events at once; the tail then reads them back as no-ops).
        Alerts are not written again: the instance whose decision caused a change did."""
        now = sorted(self.core.state.blocklist)
        if now != self._last:
            self._last = now
            log.info("blocklist changed", blocklist=now, applied=self.applied)
        if alerts and self.on_change is not None:
            self.on_change(alerts)


# ------------------------------------------------------------------ the CLI's side


@dataclass(frozen=True)
class HumanAction:
    """One ``ostracon blocklist add|remove|list`` / ``ostracon accuse`` invocation."""

    action: Literal["block", "unblock", "accuse", "list"]
    agent: str
    text: str  # the reason (block, accuse), the why (unblock), the format (list)
    by: str | None = None
    evidence: list[str] = field(default_factory=list)
    conversation: str = ""


def human_event(act: HumanAction, at: float) -> Event:
    """The state event a human action writes; ``by`` defaults to ``human:$USER``."""
    by = act.by or f"human:{getpass.getuser()}"
    eid = event_id(act.action, act.agent, by, repr(at))
    if act.action == "block":
        return AgentBlocked(id=eid, at=at, by=by, why=act.text, agent=act.agent, reason=act.text)
    if act.action == "unblock":
        return AgentUnblocked(id=eid, at=at, by=by, why=act.text, agent=act.agent)
    return AccusationMade(
        id=eid,
        at=at,
        by=by,
        why=act.text,
        accuser=by,
        accused=act.agent,
        reason=act.text,
        evidence=act.evidence,
        conversation=act.conversation,
        source="human",
    )


async def cli_action(config: Config, act: HumanAction) -> str:
    """Publish a human action to the cluster (or list the blocklist); the text to print."""
    bootstrap = config.kafka.bootstrap_servers
    assert bootstrap is not None
    topic = config.topics.state
    if act.action != "list":
        event = human_event(act, time.time())
        await publish_events(bootstrap, topic, [event])
        return f"{type(event).__name__} {event.id} written to {topic}"
    core = build_core(config)
    events, _ = await read_events(bootstrap, topic)
    with deferred(core):
        for event in events:
            core.apply(event)
    report = blocklist_report(core)
    if act.text == "json":
        return json.dumps(report, indent=2, sort_keys=True)
    lines = [f"{len(report['blocked'])} blocked, from {len(events)} state events"]
    for agent, reason in report["blocked"].items():
        lines.append(f"  {agent}: {reason}")
    for agent, accusers in report["accusers"].items():
        lines.append(f"  accused: {agent} by {', '.join(accusers)}")
    for agent, value in report["credibility"].items():
        lines.append(f"  credibility: {agent} {value:.3f}")
    return "\n".join(lines)


def blocklist_report(core: Core) -> dict[str, Any]:
    """What the admin API and the CLI show: blocklist, counted accusers, credibility."""
    state = core.state
    trust = state.byzantine
    return {
        "blocked": dict(sorted(state.blocklist.items())),
        "accusers": {a: sorted(who) for a, who in sorted(state.accusers.items())},
        "credibility": dict(trust.credibility) if trust is not None else {},
    }
