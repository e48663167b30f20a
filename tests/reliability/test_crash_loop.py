"""Crash loop: SIGKILL ``ostracon run`` at random points of a stream, restart it each time.

Afterwards every input is accounted for exactly once downstream of dedupe: delivered, held,
blocked or dead-lettered, counted by ``ostracon-dedupe-key`` across the output topics, with the
right verdict and its original bytes. The stream mixes good messages, messages from a
config-blocklisted agent (blocked, with an alert), messages a rule holds for review,
malformed JSON, invalid UTF-8, records with a header key that is not UTF-8 (which Kafka's
client cannot parse) and agents re-sending the same message id. Most kills land at random output
counts plus a random delay (mid-batch, between produce and commit); one in four lands right
after a restarted instance starts consuming, during its group join and dedupe restore.

Scale: by default 6 kills during 30 000 messages (about a minute); with
``OSTRACON_RELIABILITY_FULL=1`` the issue's 20 kills during 200 000 messages.

Side outputs (alerts, feedback) are at-least-once, not exactly-once: one written just before a
kill, whose main record was not, is written again when its input is re-read. The test checks
that none is lost and reports how many repeated (docs/guarantees.md).
"""

from __future__ import annotations

import asyncio
import bisect
import random
import signal
import time
from collections import Counter
from pathlib import Path

import msgspec
from aiokafka.structs import ConsumerRecord, RecordMetadata

from ostracon.decision import decision_id
from ostracon.routing import H_DECISION, H_DEDUPE, H_ERROR, H_SOURCE, H_VERDICT, header
from ostracon.store import AccusationMade, event_id
from ostracon.transport.embedded import EmbeddedBroker
from ostracon.transport.kafka import ensure_topics
from ostracon.transport.state import publish_events

from .conftest import (
    OUTPUTS,
    PROCESS_MARKS,
    RawHeaderKey,
    SidecarProcess,
    count,
    produce_raw_headers,
    read_all,
    scaled,
    wait_caught_up,
    write_config,
)

pytestmark = PROCESS_MARKS

HOLD_RULE = """\
- rule: hal-on-probation
  description: Everything hal says waits for a review.
  condition: sender == "hal"
  actions: {hold: {reason: "hal is on probation"}}
"""

# mallory: blocklisted in the config; eve: blocked by two accusations on the state topic
# (read back by every restarted instance); hal: held by a rule.
SENDER_ODDS = [0.10, 0.12, 0.16]
SENDERS = ["mallory", "eve", "hal", "alice"]

Record = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]


def envelope(i: int, sender: str) -> bytes:
    return msgspec.json.encode(
        {
            "id": f"m-{i}",
            "conversation": f"c-{i % 16}",
            "sender": sender,
            "kind": "chat",
            "content": f"message {i} from {sender}",
        }
    )


ACCUSATIONS = [
    AccusationMade(
        id=event_id("test", accuser, "eve"),
        at=1_700_000_000.0,
        by=f"human:{accuser}",
        accuser=accuser,
        accused="eve",
        reason="fabricated a tool result",
        source="human",
    )
    for accuser in ("carol", "dave")
]


def hostile_stream(n: int, seed: int) -> tuple[list[Record], list[str]]:
    """``n`` records and what each one should become: ``deliver``, ``block``, ``hold``,
    ``invalid-json``, ``invalid-utf8``, ``invalid-header`` or ``resend`` (a duplicate)."""
    rng = random.Random(seed)
    records: list[Record] = []
    fates: list[str] = []
    sent: list[tuple[bytes, bytes]] = []
    for i in range(n):
        roll = rng.random()
        key = b"c-%d" % (i % 16)  # the conversation, as agents key their records
        headers: list[tuple[str, bytes]] = [("trace-id", b"t-%d" % i)]
        if roll < 0.03:
            records.append((key, b'{"id": "broken-%d", "conversation": ' % i, headers))
            fates.append("invalid-json")
        elif roll < 0.04:
            records.append((key, b'{"id": "\xff\xfe-%d"}' % i, headers))
            fates.append("invalid-utf8")
        elif roll < 0.045:
            bad = [(RawHeaderKey(b"\xc3\x28-%d" % i), b"v"), *headers]
            records.append((key, envelope(i, "alice"), bad))
            fates.append("invalid-header")
        elif roll < 0.06 and sent:
            # An agent retrying a recent message (within the dedupe window), keyed by its
            # conversation as before, so it follows the original on the same partition.
            records.append((*rng.choice(sent[-1000:]), headers))
            fates.append("resend")
        else:
            sender = SENDERS[bisect.bisect(SENDER_ODDS, roll)]
            value = envelope(i, sender)
            sent.append((key, value))
            records.append((key, value, headers))
            fates.append({"mallory": "block", "eve": "block", "hal": "hold"}.get(sender, "deliver"))
    return records, fates


async def feed(
    bootstrap: str, records: list[Record], metas: list[RecordMetadata], rate: int
) -> None:
    """Produce at about ``rate`` records/s so kills land while input still arrives."""
    chunk = max(rate // 10, 1)
    for start in range(0, len(records), chunk):
        began = time.monotonic()
        metas += await produce_raw_headers(
            bootstrap, "agents.inbound", records[start : start + chunk]
        )
        await asyncio.sleep(max(0.0, 0.1 - (time.monotonic() - began)))


def expected_keys(
    records: list[Record], fates: list[str], metas: list[RecordMetadata]
) -> dict[str, str]:
    """Dedupe key -> fate, one entry per distinct input."""
    expected: dict[str, str] = {}
    for (_, value, _), fate, meta in zip(records, fates, metas, strict=True):
        if fate == "resend":
            continue  # the same key as the original: must not appear twice
        if fate.startswith("invalid"):
            expected[f"dlq:{meta.topic}/{meta.partition}/{meta.offset}"] = fate
        else:
            env = msgspec.json.decode(value or b"")
            expected[decision_id(env["conversation"], env["id"])] = fate
    return expected


def account(
    outputs: list[ConsumerRecord], expected: dict[str, str], by_source: dict[str, bytes | None]
) -> None:
    """Every expected key once, on the right topic, with the right verdict and bytes."""
    main = [r for r in outputs if header(r.headers, H_DEDUPE) is not None]
    seen = Counter(header(r.headers, H_DEDUPE) for r in main)
    twice = {k for k, n in seen.items() if n > 1}
    copies = [
        (expected.get(k or ""), r.topic, r.partition, r.offset, header(r.headers, H_SOURCE))
        for r in main
        if (k := header(r.headers, H_DEDUPE)) in twice
    ]
    assert not twice, f"{len(twice)} inputs written twice: {sorted(copies, key=str)[:12]}"
    missing = set(expected) - set(seen)
    assert not missing, f"{len(missing)} inputs lost, e.g. {sorted(missing)[:3]}"
    assert set(seen) == set(expected)
    for r in main:
        fate = expected[header(r.headers, H_DEDUPE) or ""]
        source = header(r.headers, H_SOURCE) or ""
        if fate.startswith("invalid"):
            assert r.topic == "ostracon.dead-letter" and header(r.headers, H_ERROR) == fate
            # an unparsable record's bytes cannot be read by any client: dead-lettered empty
            assert r.value == (b"" if fate == "invalid-header" else by_source[source])
            continue
        assert header(r.headers, H_VERDICT) == fate
        assert r.topic == ("agents.delivered" if fate == "deliver" else "ostracon.quarantine")
        # a re-sent copy may be the one decided: its bytes equal the original's
        assert r.value == by_source[source]


async def test_sigkill_loop_accounts_for_every_input_exactly_once(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    total, kills = scaled(30_000, 200_000), scaled(6, 20)
    rate = scaled(1_500, 2_000)
    rng = random.Random(2026)
    records, fates = hostile_stream(total, seed=8)
    rules = tmp_path / "hold.yaml"
    rules.write_text(HOLD_RULE)
    cfg = write_config(
        tmp_path / "ostracon.yaml",
        broker.bootstrap,
        "topics:\n  partitions: 4\nlimits:\n  max_batch: 200\n"
        f"rules:\n  paths: [{rules}]\n  reload: false\n"
        "blocklist:\n  agents:\n    mallory: forged tool output\n",
    )
    procs = [SidecarProcess(cfg, tmp_path / f"sidecar-{n:02d}.log") for n in range(kills + 1)]
    metas: list[RecordMetadata] = []
    written_at_kill: list[int] = []
    restarts: list[float] = []
    # Kill when the outputs pass random marks spread over the stream (sorted, distinct).
    marks = sorted(rng.sample(range(total // 50, total * 19 // 20), kills))
    try:
        await ensure_topics(broker.bootstrap, ["ostracon.state"], 1)
        await publish_events(broker.bootstrap, "ostracon.state", ACCUSATIONS)
        procs[0].start()
        await procs[0].wait_for("sidecar consuming", timeout=60)
        feeder = asyncio.create_task(feed(broker.bootstrap, records, metas, rate))
        for n, mark in enumerate(marks):
            victim, successor = procs[n], procs[n + 1]
            began = time.monotonic()
            if n > 0 and rng.random() < 0.25:  # during the join and the dedupe restore
                await victim.wait_for("sidecar consuming", timeout=60)
                await asyncio.sleep(rng.uniform(0, 0.5))
            else:
                await victim.wait_for("dedupe window restored", timeout=60)
                restarts.append(time.monotonic() - began)
                while await count(broker.bootstrap, OUTPUTS) < mark:
                    assert victim.proc is not None and victim.proc.poll() is None
                    await asyncio.sleep(0.02)
                await asyncio.sleep(rng.uniform(0, 0.3))  # anywhere inside a batch
            victim.signal(signal.SIGKILL)
            assert await victim.wait() == -signal.SIGKILL
            written_at_kill.append(await count(broker.bootstrap, OUTPUTS))
            successor.start()
        assert written_at_kill[-1] < total, "the last kill came after the stream was done"
        await feeder
        expected = expected_keys(records, fates, metas)
        blocked = {k for k, fate in expected.items() if fate == "block"}
        await wait_caught_up(broker.bootstrap, metas, "ostracon", timeout=300)
        written = await count(broker.bootstrap, OUTPUTS)
        outputs = await read_all(broker.bootstrap, OUTPUTS, written, timeout=120, settle=0.5)
        side = await read_all(broker.bootstrap, ["ostracon.alerts"], len(blocked), timeout=60)
        last = procs[-1]
        await last.wait_for("dedupe window restored")
        last.signal(signal.SIGTERM)
        assert await last.wait(timeout=60) == 0
    finally:
        for proc in procs:
            proc.stop()

    by_source = {
        f"{m.topic}/{m.partition}/{m.offset}": r[1] for m, r in zip(metas, records, strict=True)
    }
    account(outputs, expected, by_source)

    # Blocklist intact across every restart: all of mallory's (config) and eve's (accused on
    # the state topic) messages were blocked, as checked above, each with its alert (none
    # lost; some may repeat).
    eve = [f for r, f in zip(records, fates, strict=True) if b'"sender":"eve"' in (r[1] or b"")]
    assert "block" in eve and set(eve) <= {"block", "resend"}
    alerts = Counter(header(r.headers, H_DECISION) for r in side)
    assert blocked <= set(alerts), f"{len(blocked - set(alerts))} block alerts lost"
    # Held and blocked messages stay in quarantine: one record each, nothing released.
    contained = Counter(header(r.headers, H_VERDICT) for r in outputs if r.topic != OUTPUTS[0])
    assert contained["hold"] == sum(f == "hold" for f in expected.values())
    assert contained["block"] == len(blocked)
    # Every instance learned what its predecessors wrote before it routed anything (up to
    # the window's size; records without a dedupe key, e.g. feedback, do not count).
    unkeyed = sum(header(r.headers, H_DEDUPE) is None for r in outputs)
    for proc, written in zip(procs[1:], written_at_kill, strict=True):
        restored = [e for e in proc.events() if e["event"] == "dedupe window restored"]
        if restored:  # not when it was killed before its restore finished
            keys = int(restored[0]["keys"])  # type: ignore[call-overload]
            # the restore reads window / partitions from each of the 12 output partitions
            assert keys >= min(written - unkeyed, 100_000 // 12)
    dropped = sum(
        int(e["duplicates"])  # type: ignore[call-overload]
        for p in procs
        for e in p.events()
        if e["event"] == "sidecar stopped"
    )
    repeated_alerts = sum(n - 1 for n in alerts.values() if n > 1)
    print(
        f"\n{total} inputs, {len(expected)} distinct, {kills} SIGKILLs at outputs "
        f"{written_at_kill}; restart-to-restored median "
        f"{sorted(restarts)[len(restarts) // 2]:.1f}s; alerts repeated after a crash: "
        f"{repeated_alerts}; duplicates dropped by the last instance: {dropped}"
    )
