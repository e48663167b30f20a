"""The LLM judge against a real broker: held claim -> judge -> verdict back through the sidecar.

No real LLM can run here: the judge talks to ``tests/fake_openai.py``, a real HTTP server on
loopback answering like an OpenAI-compatible endpoint with a scripted verdict.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from ostracon.config import Config, ContainmentConfig, JudgeConfig, KafkaConfig, TopicsConfig
from ostracon.judge import H_UNVERIFIED, run_judge
from ostracon.routing import H_VERDICT, header
from ostracon.transport.embedded import EmbeddedBroker

from ..fake_openai import FakeOpenAI, Responder, answer
from .conftest import produce, read_all, write_config
from .test_sidecar import Running

pytestmark = pytest.mark.broker

CONV = "c-1"


def config(bootstrap: str, llm_url: str) -> Config:
    return Config(
        kafka=KafkaConfig(
            bootstrap_servers=bootstrap, session_timeout_ms=3000, heartbeat_interval_ms=500
        ),
        topics=TopicsConfig(partitions=2),
        containment=ContainmentConfig(policy="strict"),
        judge=JudgeConfig(enabled=True, endpoint=llm_url, model="fake-judge", timeout_s=5.0),
    )


def envelope(id: str, sender: str, content: str, **extra: Any) -> bytes:
    return msgspec.json.encode(
        {
            "id": id,
            "conversation": CONV,
            "sender": sender,
            "kind": "chat",
            "content": content,
            "ts": 1700000000.0 + len(id),
            **extra,
        }
    )


async def send(bootstrap: str, value: bytes) -> None:
    await produce(bootstrap, "agents.inbound", [value], [CONV.encode()])


async def find(
    bootstrap: str, topic: str, match: Callable[[ConsumerRecord], bool], timeout: float = 45.0
) -> ConsumerRecord:
    """The first record of ``topic`` (read from the start) that ``match``es."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            await consumer.topics()
            tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
            if tps:
                break
            await asyncio.sleep(0.2)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for r in records:
                    if match(r):
                        return r
    finally:
        await consumer.stop()
    raise AssertionError(f"no matching record on {topic} within {timeout}s")


def msg_id(value: str) -> Callable[[ConsumerRecord], bool]:
    return lambda r: r.value is not None and msgspec.json.decode(r.value).get("id") == value


def alert(kind: str, evidence: str) -> Callable[[ConsumerRecord], bool]:
    def match(r: ConsumerRecord) -> bool:
        a = msgspec.json.decode(r.value)
        return bool(a.get("kind") == kind and evidence in a.get("evidence", []))

    return match


@asynccontextmanager
async def team(broker: EmbeddedBroker, respond: Responder) -> AsyncIterator[FakeOpenAI]:
    """The sidecar (strict policy) and the judge (asking the fake LLM), running."""
    with FakeOpenAI(respond) as llm:
        cfg = config(broker.bootstrap, llm.url)
        stop = asyncio.Event()
        async with Running(cfg, broker.bootstrap):
            judge = asyncio.create_task(run_judge(cfg, stop))
            try:
                yield llm
            finally:
                stop.set()
                await asyncio.wait_for(judge, 30)


async def test_refuted_claim_is_convicted_through_the_bus(broker: EmbeddedBroker) -> None:
    bs = broker.bootstrap
    async with team(broker, lambda req: answer("refuted", "5%", "The Q3 report says 5%.")) as llm:
        await send(bs, envelope("m-1", "analyst", "Customer churn is 7%.", recipients=["writer"]))
        held = await find(bs, "ostracon.quarantine", msg_id("m-1"))
        assert header(held.headers, H_VERDICT) == "hold"
        assert header(held.headers, H_UNVERIFIED) == "churn customer"

        out = await find(bs, "agents.delivered", msg_id("judge:m-1:0"))
        # The sidecar judged the judge's message too: a grounding tool result, delivered.
        assert header(out.headers, H_VERDICT) == "deliver"
        verdict = msgspec.json.decode(out.value)
        assert verdict["sender"] == "llm-judge" and verdict["kind"] == "tool_result"
        assert verdict["parents"] == ["m-1"] and verdict["recipients"] == ["analyst", "writer"]
        assert verdict["meta"]["refutes"] == [{"key": "churn customer", "value": "7 %"}]
        assert verdict["meta"]["judge"]["verdict"] == "refuted"
        assert verdict["claims"] == [{"key": "churn customer", "value": "5%", "sources": []}]

        # The false value is convicted: the held message stays quarantined (recall alert) and
        # a repeat of it is blocked.
        recall = await find(bs, "ostracon.alerts", alert("recall", "judge:m-1:0"))
        assert "m-1" in msgspec.json.decode(recall.value)["evidence"]
        await send(bs, envelope("m-2", "analyst", "Customer churn is 7%."))
        again = await find(bs, "ostracon.quarantine", msg_id("m-2"))
        assert header(again.headers, H_VERDICT) == "block"
    assert len(llm.requests) == 1  # the block is not judged again


async def test_supported_claim_grounds_a_later_repeat(broker: EmbeddedBroker) -> None:
    bs = broker.bootstrap
    async with team(broker, lambda req: answer("supported", None, "Matches the report.")):
        await send(bs, envelope("m-1", "analyst", "Customer churn is 7%.", recipients=["writer"]))
        await find(bs, "ostracon.quarantine", msg_id("m-1"))
        out = await find(bs, "agents.delivered", msg_id("judge:m-1:0"))
        verdict = msgspec.json.decode(out.value)
        assert verdict["claims"] == [{"key": "churn customer", "value": "7 %", "sources": []}]
        assert "refutes" not in verdict["meta"]
        assert header(out.headers, H_VERDICT) == "deliver"

        # writer read the verdict (it is a recipient) and repeats the claim citing it.
        await send(
            bs,
            envelope("m-2", "writer", "Customer churn is 7%.", parents=["judge:m-1:0"]),
        )
        repeat = await find(bs, "agents.delivered", msg_id("m-2"))
        assert header(repeat.headers, H_VERDICT) == "deliver"  # Green: not held, not tagged


async def test_undecided_judge_publishes_nothing(broker: EmbeddedBroker) -> None:
    bs = broker.bootstrap
    async with team(broker, lambda req: (503, {"error": "overloaded"}, 0.0)) as llm:
        await send(bs, envelope("m-1", "analyst", "Customer churn is 7%."))
        await find(bs, "ostracon.quarantine", msg_id("m-1"))
        deadline = time.monotonic() + 30
        while not llm.requests and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert llm.requests, "the judge never asked"
        await asyncio.sleep(1.0)  # time to publish, had it anything to publish
        await send(bs, envelope("m-2", "analyst", "hello"))
        await find(bs, "agents.delivered", msg_id("m-2"))
        delivered = await read_all(bs, ["agents.delivered"], 2, settle=0.5)
    senders = sorted(msgspec.json.decode(r.value)["sender"] for r in delivered)
    assert senders == ["analyst", "ostracon"]  # m-2 and the feedback on m-1; no verdict


async def test_judge_command_runs_until_sigterm(broker: EmbeddedBroker, tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path / "ostracon.yaml",
        broker.bootstrap,
        "judge:\n  enabled: true\n  endpoint: http://127.0.0.1:9/v1\n",
    )
    log = tmp_path / "judge.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ostracon", "judge", "--config", str(cfg)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        deadline = time.monotonic() + 30
        while "judge consuming" not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        while proc.poll() is None and time.monotonic() < deadline + 15:
            await asyncio.sleep(0.05)
        assert proc.returncode == 0, log.read_text()
        assert "judge stopped" in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
