"""The sidecar against a real broker: forwarding, verdict headers, dead letters, dedupe."""

from __future__ import annotations

import asyncio
from collections import Counter

import msgspec
import pytest

from ostracon.config import BlocklistConfig, Config, KafkaConfig, LimitsConfig, TopicsConfig
from ostracon.core import Context, Core, Stage
from ostracon.routing import H_DECISION, H_ERROR, H_REASON, H_SOURCE, H_VERDICT, header
from ostracon.transport.embedded import EmbeddedBroker
from ostracon.transport.kafka import Sidecar

from .conftest import produce, read_all

pytestmark = pytest.mark.broker


def config(**kw: object) -> Config:
    return Config(
        kafka=KafkaConfig(session_timeout_ms=3000, heartbeat_interval_ms=500, **kw),  # type: ignore[arg-type]
        topics=TopicsConfig(partitions=2),
        limits=LimitsConfig(max_message_bytes=4096, max_batch=100),
        blocklist=BlocklistConfig(agents={"mallory": "forged a tool result"}),
    )


def msg(i: int, sender: str = "alice", **extra: object) -> bytes:
    return msgspec.json.encode(
        {
            "id": f"m-{i}",
            "conversation": f"c-{i % 3}",
            "sender": sender,
            "kind": "chat",
            "content": f"message {i}",
            **extra,
        }
    )


class Running:
    """An in-process sidecar running until the block ends."""

    def __init__(self, cfg: Config, bootstrap: str) -> None:
        self.sidecar = Sidecar(cfg, bootstrap)
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Sidecar:
        await self.sidecar.start()
        self.task = asyncio.create_task(self.sidecar.run(self.stop))
        return self.sidecar

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        assert self.task is not None
        await self.task
        await self.sidecar.close()


async def test_forwards_original_bytes_with_verdict_headers(broker: EmbeddedBroker) -> None:
    cfg = config()
    good = [msg(i, extra_field={"kept": True}) for i in range(20)]
    blocked = [msg(100, sender="mallory")]
    async with Running(cfg, broker.bootstrap):
        await produce(broker.bootstrap, "agents.inbound", good + blocked)
        delivered = await read_all(broker.bootstrap, ["agents.delivered"], 20)
        quarantined = await read_all(broker.bootstrap, ["ostracon.quarantine"], 1)
        alerts = await read_all(broker.bootstrap, ["ostracon.alerts"], 1)
    assert sorted(r.value for r in delivered) == sorted(good)
    for r in delivered:
        assert header(r.headers, H_VERDICT) == "deliver"
        assert header(
            r.headers,
            H_DECISION,
        ).startswith("d-")  # type: ignore[union-attr]
        assert header(r.headers, H_SOURCE).startswith("agents.inbound/")  # type: ignore[union-attr]
        env = msgspec.json.decode(r.value)
        assert r.key == env["conversation"].encode()
    (q,) = quarantined
    assert q.value == blocked[0] and header(q.headers, H_VERDICT) == "block"
    (a,) = alerts
    alert = msgspec.json.decode(a.value)
    assert alert["kind"] == "blocklisted" and alert["agents"] == ["mallory"]
    assert alert["decision_id"] == header(q.headers, H_DECISION)


BAD_INPUTS: list[tuple[bytes | None, str]] = [
    (b'{"id": "x-1", "conversation": "c", "sen', "invalid-json"),
    (b"\xff\xfe\xfd not utf-8", "invalid-utf8"),
    (b'{"id": "x-2", "conversation": "c", "sender": "a", "kind": "chat"}', "schema"),
    (
        b'{"id": "x-3", "conversation": "c", "sender": ["a"], "kind": "chat", "content": ""}',
        "schema",
    ),
    (
        b'{"id": "x-4", "conversation": "c", "sender": "a", "kind": "gossip", "content": ""}',
        "unknown-kind",
    ),
    (msg(5, content="y" * 5000), "too-large"),
    (None, "empty"),
    (b"", "invalid-json"),
    (b'"just a string"', "schema"),
]


async def test_bad_input_is_dead_lettered_and_the_sidecar_carries_on(
    broker: EmbeddedBroker,
) -> None:
    cfg = config()
    values = [v for v, _ in BAD_INPUTS] + [msg(1)]
    async with Running(cfg, broker.bootstrap) as sidecar:
        metas = await produce(broker.bootstrap, "agents.inbound", values)
        dead = await read_all(broker.bootstrap, ["ostracon.dead-letter"], len(BAD_INPUTS))
        delivered = await read_all(broker.bootstrap, ["agents.delivered"], 1)
    assert [r.value for r in delivered] == [msg(1)]
    by_source = {header(r.headers, H_SOURCE): r for r in dead}
    assert len(dead) == len(by_source) == len(BAD_INPUTS)
    for (value, code), meta in zip(BAD_INPUTS, metas, strict=False):
        record = by_source[f"{meta.topic}/{meta.partition}/{meta.offset}"]
        assert record.value == value  # the original bytes, untouched (a tombstone stays one)
        assert header(record.headers, H_ERROR) == code, header(record.headers, H_REASON)
        assert header(record.headers, H_REASON)
    assert sidecar.stats.dead_letter_reasons == Counter(code for _, code in BAD_INPUTS)


async def test_duplicate_ids_are_forwarded_once(broker: EmbeddedBroker) -> None:
    cfg = config()
    async with Running(cfg, broker.bootstrap) as sidecar:
        await produce(broker.bootstrap, "agents.inbound", [msg(1), msg(2), msg(1), msg(1)])
        delivered = await read_all(broker.bootstrap, ["agents.delivered"], 2, settle=1.5)
    assert sorted(msgspec.json.decode(r.value)["id"] for r in delivered) == ["m-1", "m-2"]
    assert sidecar.stats.duplicates == 2


async def test_restart_rebuilds_the_dedupe_window_from_output_topics(
    broker: EmbeddedBroker,
) -> None:
    """A second instance re-reading every input (a fresh group: the worst case of a crash
    before any commit) writes nothing twice, because it learns the ids from the outputs."""
    values = [msg(i) for i in range(300)] + [b"{broken", msg(1000, sender="mallory")]
    await produce(broker.bootstrap, "agents.inbound", values)
    async with Running(config(group_id="first"), broker.bootstrap):
        await read_all(broker.bootstrap, ["agents.delivered"], 300, settle=0.2)
        await read_all(
            broker.bootstrap, ["ostracon.dead-letter", "ostracon.quarantine"], 2, settle=0.2
        )
    async with Running(config(group_id="second"), broker.bootstrap) as second:
        for _ in range(100):
            if second.stats.consumed >= len(values):
                break
            await asyncio.sleep(0.1)
    assert second.stats.consumed == len(values)
    assert second.stats.duplicates == len(values)
    assert sum(second.stats.routed.values()) == 0
    outputs = await read_all(
        broker.bootstrap,
        ["agents.delivered", "ostracon.quarantine", "ostracon.dead-letter"],
        len(values),
        settle=0.5,
    )
    assert len(outputs) == len(values)


async def test_dead_letter_too_big_to_forward_keeps_its_head(broker: EmbeddedBroker) -> None:
    """An input over the sidecar producer's request limit (here 1.5 MiB against a 1 MiB
    producer limit) is dead-lettered truncated to max_message_bytes, with its original size."""
    huge = msg(1, content="z" * (3 << 19))
    async with Running(config(), broker.bootstrap) as sidecar:
        await produce(broker.bootstrap, "agents.inbound", [huge, msg(2)])
        (dead,) = await read_all(broker.bootstrap, ["ostracon.dead-letter"], 1)
        delivered = await read_all(broker.bootstrap, ["agents.delivered"], 1)
    assert header(dead.headers, H_ERROR) == "too-large"
    assert header(dead.headers, "ostracon-truncated") == str(len(huge))
    assert dead.value == huge[:4096]
    assert [r.value for r in delivered] == [msg(2)]
    assert sidecar.stats.dead_letter_reasons == Counter({"too-large": 1})


async def test_a_core_bug_dead_letters_the_record_instead_of_crash_looping(
    broker: EmbeddedBroker,
) -> None:
    class Boom(Stage):
        name = "boom"

        def run(self, ctx: Context) -> None:
            if ctx.envelope.content == "explode":
                raise ZeroDivisionError("bug in a stage")

    sidecar = Sidecar(config(), broker.bootstrap, core=Core([Boom()]))
    await sidecar.start()
    stop = asyncio.Event()
    task = asyncio.create_task(sidecar.run(stop))
    try:
        bad = msg(1, content="explode")
        await produce(broker.bootstrap, "agents.inbound", [bad, msg(2)])
        (dead,) = await read_all(broker.bootstrap, ["ostracon.dead-letter"], 1)
        delivered = await read_all(broker.bootstrap, ["agents.delivered"], 1)
    finally:
        stop.set()
        await task
        await sidecar.close()
    assert dead.value == bad and header(dead.headers, H_ERROR) == "internal-error"
    assert "bug in a stage" in (header(dead.headers, H_REASON) or "")
    assert [r.value for r in delivered] == [msg(2)]
