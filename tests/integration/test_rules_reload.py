"""Hot reload of rule files in a running ``ostracon run`` process, against the real broker.

Messages stream in continuously while the rule file is rewritten (A -> B), broken, fixed
(-> C) and reloaded by SIGHUP. Every input must come out exactly once (delivered, quarantined
or dead-lettered), each message is decided by one whole rule set (per inbound partition the
sets follow each other in offset order, never back), messages sent after a reload get the new
set's verdict, and a broken file keeps the previous set running and raises an alert.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path

import msgspec
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord, RecordMetadata

from ostracon.reload import ALERT_FAILED, ALERT_RELOADED
from ostracon.routing import H_DEDUPE, H_RULES, H_SOURCE, H_VERDICT, header
from ostracon.transport.embedded import EmbeddedBroker

from .conftest import SidecarProcess, count, read_all, write_config

pytestmark = pytest.mark.broker

OUTPUTS = ["agents.delivered", "ostracon.quarantine", "ostracon.dead-letter"]
PHASES = {"a": ("quarantine", "{quarantine: {reason: A}}"), "b": ("block", "{block: {}}")}
PHASES["c"] = ("deliver-tagged", "{tag: {phase: c}}")


def rules(phase: str, condition: str = 'meta.flag == "x"') -> str:
    return f"- rule: phase-{phase}\n  condition: {condition}\n  actions: {PHASES[phase][1]}\n"


BROKEN = rules("b", 'meta.flag == "x" and nonsense > 1')  # unknown field: line 2


def rewrite(path: Path, text: str) -> None:
    """Replace the file the way editors and config tools do: write aside, rename over."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


class Stream:
    """Produces envelopes one after another until stopped: ~10% without the flag the rules
    look at, ~3% malformed. Remembers where each landed."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.sent: list[RecordMetadata] = []
        self.flagged: list[bool] = []
        self.stop = asyncio.Event()

    def mark(self) -> int:
        """An index such that every message from it on was produced after this call."""
        return len(self.sent) + 1  # the send in flight now may have left before

    async def run(self) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=0)
        await producer.start()
        try:
            i = 0
            while not self.stop.is_set():
                flagged = i % 10 != 9
                if i % 37 == 36:
                    value, flagged = b'{"id": "broken-%d", "conversation": ' % i, False
                else:
                    value = msgspec.json.encode(
                        {
                            "id": f"m-{i}",
                            "conversation": f"c-{i % 4}",
                            "sender": f"agent-{i % 3}",
                            "kind": "chat",
                            "content": f"message {i}",
                            "meta": {"flag": "x" if flagged else "-"},
                        }
                    )
                meta = await producer.send_and_wait(
                    "agents.inbound", value, key=f"c-{i % 4}".encode()
                )
                self.sent.append(meta)
                self.flagged.append(flagged)
                i += 1
                await asyncio.sleep(0.003)
        finally:
            await producer.stop()

    async def flow(self, n: int = 100, timeout: float = 30.0) -> None:
        """Wait until ``n`` more messages went out."""
        target = len(self.sent) + n
        for _ in range(int(timeout / 0.02)):
            if len(self.sent) >= target:
                return
            await asyncio.sleep(0.02)
        raise AssertionError("the stream stalled")

    async def decided(self, timeout: float = 30.0) -> int:
        """Wait until the sidecar has decided everything sent so far; return how many."""
        n = len(self.sent)
        for _ in range(int(timeout / 0.05)):
            if await count(self.bootstrap, OUTPUTS) >= n:  # one output per input here
                return n
            await asyncio.sleep(0.05)
        raise AssertionError(f"the sidecar did not decide {n} messages")


async def nth_event(
    side: SidecarProcess, event: str, n: int, timeout: float = 30.0, **fields: object
) -> dict[str, object]:
    """The ``n``-th (1-based) log event named ``event`` with the given field values."""
    for _ in range(int(timeout / 0.05)):
        found = [
            e
            for e in side.events()
            if e.get("event") == event and all(e.get(k) == v for k, v in fields.items())
        ]
        if len(found) >= n:
            return found[n - 1]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {n}x {event!r} {fields}:\n{side.log.read_text()[-3000:]}")


def phase_of(record: ConsumerRecord) -> str | None:
    """Which rule set decided a forwarded record (None: no phase rule fired)."""
    fired = (header(record.headers, H_RULES) or "").split(",")
    found = [p for p in PHASES if f"rule:phase-{p}" in fired]
    assert len(found) <= 1, fired
    if found:
        assert header(record.headers, H_VERDICT) == PHASES[found[0]][0]
    return found[0] if found else None


def check_exactly_once(stream: Stream, outputs: list[ConsumerRecord]) -> dict[int, ConsumerRecord]:
    """Every input came out once; returns the output record of each input, by send index."""
    index = {f"agents.inbound/{m.partition}/{m.offset}": i for i, m in enumerate(stream.sent)}
    sources = Counter(header(r.headers, H_SOURCE) for r in outputs)
    assert [s for s, n in sources.items() if n > 1] == []  # nothing twice
    assert set(sources) == set(index)  # nothing lost (and nothing unexpected)
    assert len(outputs) == len(stream.sent)
    keys = Counter(header(r.headers, H_DEDUPE) for r in outputs)
    assert max(keys.values()) == 1
    return {index[header(r.headers, H_SOURCE) or ""]: r for r in outputs}


def check_sets_follow_each_other(stream: Stream, by_index: dict[int, ConsumerRecord]) -> None:
    """Per inbound partition, in offset order, the deciding set never goes back."""
    order = {p: n for n, p in enumerate(PHASES)}
    last: dict[int, int] = {}
    for i in sorted(by_index, key=lambda i: (stream.sent[i].partition, stream.sent[i].offset)):
        record = by_index[i]
        phase = phase_of(record)
        if not stream.flagged[i]:
            assert phase is None
            continue
        assert phase is not None, (i, record.headers)
        p = stream.sent[i].partition
        assert order[phase] >= last.get(p, 0), f"message {i} decided by {phase} after a newer set"
        last[p] = order[phase]


def phases(by_index: dict[int, ConsumerRecord], stream: Stream, lo: int, hi: int) -> set[str]:
    """The sets that decided the flagged messages sent in ``[lo, hi)``."""
    out = {phase_of(by_index[i]) for i in range(lo, min(hi, len(stream.sent)))}
    return {p for p in out if p is not None}


async def alerts(bootstrap: str, expect: int) -> list[dict[str, object]]:
    records = await read_all(bootstrap, ["ostracon.alerts"], expect, settle=0.3)
    return [msgspec.json.decode(r.value) for r in records]


async def test_rules_swap_on_file_change_and_sighup_without_losing_a_message(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    path = rules_dir / "policy.yaml"
    path.write_text(rules("a"))
    cfg = write_config(
        tmp_path / "ostracon.yaml",
        broker.bootstrap,
        "topics:\n  partitions: 2\nlimits:\n  max_batch: 50\n"
        f"rules:\n  paths: [{rules_dir}]\n  reload_interval_s: 0.1\n",
    )
    side = SidecarProcess(cfg, tmp_path / "sidecar.log").start()
    stream = Stream(broker.bootstrap)
    producing = asyncio.create_task(stream.run())
    try:
        await side.wait_for("sidecar consuming")
        await stream.flow()

        before_b = await stream.decided()  # all of these were decided under A
        rewrite(path, rules("b"))
        await nth_event(side, "rules reloaded", 1, trigger="change")
        after_b = stream.mark()
        await stream.flow()

        rewrite(path, BROKEN)
        failed = await nth_event(side, "rules reload failed; previous rules kept", 1)
        assert str(failed["error"]).startswith(f"{path}:2:")
        after_broken = stream.mark()
        await stream.flow()
        broken_until = await stream.decided()  # decided while the broken file was there

        rewrite(path, rules("c"))  # fixed: the next poll swaps it in
        await nth_event(side, "rules reloaded", 2, trigger="change")
        after_c = stream.mark()
        await stream.flow()

        side.signal(signal.SIGHUP)  # unchanged files: reloads anyway, verdicts stay C
        await nth_event(side, "rules reloaded", 1, trigger="sighup")
        await stream.flow()
    finally:
        stream.stop.set()
        await producing
    try:
        outputs = await read_all(broker.bootstrap, OUTPUTS, len(stream.sent), settle=1.0)
        found = await alerts(broker.bootstrap, 4)
        side.signal(signal.SIGTERM)
        assert await side.wait() == 0
    finally:
        side.stop()

    by_index = check_exactly_once(stream, outputs)
    check_sets_follow_each_other(stream, by_index)
    assert phases(by_index, stream, 0, before_b) == {"a"}
    assert phases(by_index, stream, after_b, after_broken) == {"b"}
    assert phases(by_index, stream, after_broken, broken_until) == {"b"}  # B kept running
    assert phases(by_index, stream, after_c, len(stream.sent)) == {"c"}

    kinds = Counter(a["kind"] for a in found)
    assert kinds == {ALERT_RELOADED: 3, ALERT_FAILED: 1}
    (bad,) = [a for a in found if a["kind"] == ALERT_FAILED]
    assert bad["severity"] == "critical" and bad["conversation"] == ""
    summary = str(bad["summary"])
    assert summary.startswith(f"{path}:2:") and "phase-b.condition" in summary, summary
    assert "nonsense" in summary


async def test_sighup_reloads_when_watching_is_off(broker: EmbeddedBroker, tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(rules("a"))
    cfg = write_config(
        tmp_path / "ostracon.yaml",
        broker.bootstrap,
        "topics:\n  partitions: 2\n"
        f"rules:\n  paths: [{path}]\n  reload: false\n  reload_interval_s: 0.1\n",
    )
    side = SidecarProcess(cfg, tmp_path / "sidecar.log").start()
    stream = Stream(broker.bootstrap)
    producing = asyncio.create_task(stream.run())
    try:
        await side.wait_for("sidecar consuming")
        await stream.flow()
        rewrite(path, rules("b"))
        await asyncio.sleep(1.0)  # ten poll intervals: not watching, so still A
        await stream.flow()
        before_hup = await stream.decided()
        side.signal(signal.SIGHUP)
        await nth_event(side, "rules reloaded", 1, trigger="sighup")
        after_hup = stream.mark()
        await stream.flow()
    finally:
        stream.stop.set()
        await producing
    try:
        outputs = await read_all(broker.bootstrap, OUTPUTS, len(stream.sent), settle=1.0)
        side.signal(signal.SIGTERM)
        assert await side.wait() == 0
    finally:
        side.stop()
    assert not [e for e in side.events() if e.get("trigger") == "change"]
    by_index = check_exactly_once(stream, outputs)
    check_sets_follow_each_other(stream, by_index)
    assert phases(by_index, stream, 0, before_hup) == {"a"}
    assert phases(by_index, stream, after_hup, len(stream.sent)) == {"b"}
