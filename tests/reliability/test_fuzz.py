"""Fuzz: hostile inputs never crash the router or the sidecar; each is dead-lettered with a
reason, dropped as a duplicate, or (a valid envelope after all) decided; memory stays bounded.

- in-process: generated records (tests/reliability/hostile.py) through the real ``Router``
  with the default pipeline. Default 10^5 inputs; ``OSTRACON_RELIABILITY_FULL=1``: the
  issue's 10^6. Memory: the resident set after the first fifth is compared with the end.
- hypothesis: structured envelopes with every field drawn from arbitrary JSON values.
- the real process: a few thousand hostile records, including records whose header key is
  not UTF-8 (which aiokafka cannot parse, and which used to crash-loop the sidecar), through
  ``ostracon run`` on the real broker; every one is accounted for and the process survives.
"""

from __future__ import annotations

import gc
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ostracon.config import Config, DedupeConfig
from ostracon.envelope import InvalidEnvelope, decode
from ostracon.routing import H_DEDUPE, H_ERROR, Router, header
from ostracon.transport.embedded import EmbeddedBroker

from .conftest import (
    OUTPUTS,
    TIMEOUT_S,
    RawHeaderKey,
    SidecarProcess,
    count,
    produce_raw_headers,
    read_all,
    rss_kib,
    scaled,
    wait_caught_up,
    write_config,
)
from .hostile import KINDS, Record, check_outcome, hostile_records

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(TIMEOUT_S)]

# What a decided message may leave behind: its record in the genealogy and its claims (the
# scale benchmark's target is <= 1 KiB per retained claim), its dedupe key, its conversation.
PER_DECIDED_LIMIT_KIB = 3.0
# Inputs that are rejected must leave nothing behind once the dedupe window is full.
REJECTED_GROWTH_LIMIT_KIB = 4 * 1024


def test_router_survives_hostile_inputs() -> None:
    """Mixed hostile inputs: no exception, each one accounted for; resident memory grows only
    with what the core keeps by design for the messages it decided."""
    n = scaled(100_000, 1_000_000)
    router = Router.from_config(Config())
    fates: Counter[str] = Counter()
    warm = n // 5
    rss_warm = decided_warm = 0
    for i, (value, key, headers) in enumerate(hostile_records(n, seed=3)):
        if i == warm:
            gc.collect()
            rss_warm, decided_warm = rss_kib(), fates["decided"]
        outcome = router.route(value, key, headers, f"fuzz/0/{i}")
        fates[check_outcome(outcome)] += 1
    gc.collect()
    growth = rss_kib() - rss_warm
    per_decided = growth / max(fates["decided"] - decided_warm, 1)
    print(f"\n{n} hostile inputs: {dict(fates.most_common())}; RSS +{growth} KiB after "
          f"warm-up, {per_decided:.2f} KiB per decided message")  # fmt: skip
    assert sum(fates.values()) == n
    # every shape was exercised, and every dead-letter code the router can give appeared
    assert {"decided", "duplicate", "invalid-json", "invalid-utf8", "schema", "too-large",
            "unknown-kind", "empty"} <= set(fates)  # fmt: skip
    assert per_decided < PER_DECIDED_LIMIT_KIB


def test_rejected_inputs_leave_no_memory_behind() -> None:
    """Only inputs that are dead-lettered (a small dedupe window, already full after the
    warm-up): the resident set stays flat. Default 10^5 rejected inputs, full mode 10^6."""
    n = scaled(100_000, 1_000_000)
    router = Router.from_config(Config(dedupe=DedupeConfig(window=1_000)))

    def rejected() -> Iterator[Record]:
        for record in hostile_records(n * 3, seed=4):
            try:
                decode(record[0], 1_000_000)
            except InvalidEnvelope:
                yield record

    rss_warm = 0
    routed = 0
    for i, (value, key, headers) in enumerate(rejected()):
        if i == n // 10:
            gc.collect()
            rss_warm = rss_kib()
        assert check_outcome(router.route(value, key, headers, f"fuzz/1/{i}")) != "decided"
        routed += 1
        if routed == n:
            break
    gc.collect()
    growth = rss_kib() - rss_warm
    print(f"\n{routed} rejected inputs: RSS +{growth} KiB after warm-up")
    assert routed == n and growth < REJECTED_GROWTH_LIMIT_KIB


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


def _field(valid: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return st.one_of(valid, json_values)


envelopes = st.fixed_dictionaries(
    {
        "id": _field(st.text(min_size=1, max_size=130)),
        "conversation": _field(st.text(min_size=1, max_size=20)),
        "sender": _field(st.text(min_size=1, max_size=20)),
        "kind": _field(st.sampled_from(KINDS)),
        "content": _field(st.text(max_size=200)),
    },
    optional={
        "recipients": _field(st.lists(st.text(min_size=1, max_size=10), max_size=3)),
        "parents": _field(st.lists(st.text(min_size=1, max_size=10), max_size=3)),
        "claims": _field(
            st.lists(
                st.fixed_dictionaries({"key": _field(st.text(max_size=10)), "value": json_values}),
                max_size=3,
            )
        ),
        "ts": _field(st.floats()),
        "meta": json_values,
    },
)


@settings(max_examples=scaled(2_000, 20_000), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(env=envelopes, cut=st.integers(min_value=0, max_value=4))
def test_router_handles_arbitrary_json_envelopes(env: dict[str, object], cut: int) -> None:
    router = Router.from_config(Config())
    value = msgspec.json.encode(env)
    if cut:  # truncate some
        value = value[: len(value) * cut // 5]
    check_outcome(router.route(value, b"k", [], "hyp/0/0"))


@pytest.mark.broker
async def test_sidecar_process_survives_hostile_records(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """A few thousand hostile records through ``ostracon run``: every one leaves exactly one
    dead letter or decision (duplicates none), and the process is still up afterwards.

    One record batch mixes good records with one whose header key is not UTF-8: aiokafka
    parses a batch in sequence, so that record and the rest of its batch are dead-lettered
    (``invalid-header``, empty value) and the records before it are routed as usual."""
    n = scaled(3_000, 20_000)
    hostile = [r for r in hostile_records(n, seed=5) if r[0] is None or len(r[0]) < 900_000]
    records: list[Record] = [(key or b"k", v, h) for v, key, h in hostile]
    for i in range(0, len(records), 500):  # a lone bad-header record every 500
        records.insert(i, (b"k", b'{"id": "x"}', [(RawHeaderKey(b"\xff\xfe%d" % i), b"v")]))
    cfg = write_config(tmp_path / "ostracon.yaml", broker.bootstrap, "topics:\n  partitions: 2\n")
    side = SidecarProcess(cfg, tmp_path / "sidecar.log").start()
    try:
        await side.wait_for("dedupe window restored", timeout=60)
        metas = await produce_raw_headers(broker.bootstrap, "agents.inbound", records)
        good = [(b"k", msgspec.json.encode(_ok(i)), []) for i in range(3)]
        poisoned = [good[0], (b"k", b"{}", [(RawHeaderKey(b"\xc3\x28"), b"v")]), *good[1:]]
        mixed = await produce_raw_headers(
            broker.bootstrap, "agents.inbound", poisoned, isolate=False, linger_ms=200
        )
        assert len({m.partition for m in mixed}) == 1
        after = await produce_raw_headers(broker.bootstrap, "agents.inbound", [
            (b"k", msgspec.json.encode(_ok(100)), [])
        ])  # fmt: skip
        await wait_caught_up(broker.bootstrap, [*metas, *mixed, *after], "ostracon", 120)
        assert side.proc is not None and side.proc.poll() is None, "the sidecar died"
        written = await count(broker.bootstrap, OUTPUTS)
        outputs = await read_all(broker.bootstrap, OUTPUTS, written, settle=2.0)
        side.signal(signal.SIGTERM)
        assert await side.wait(timeout=30) == 0
    finally:
        side.stop()
    by_source = {
        header(r.headers, "ostracon-source"): r for r in outputs if header(r.headers, H_DEDUPE)
    }
    sources = [f"{m.topic}/{m.partition}/{m.offset}" for m in [*metas, *mixed, *after]]
    # exactly one main output per input that is not a duplicate, and none for a duplicate
    keyed = Counter(header(r.headers, H_DEDUPE) for r in outputs if header(r.headers, H_DEDUPE))
    assert max(keyed.values()) == 1
    missing = [s for s in sources if s not in by_source]
    stopped = next(e for e in side.events() if e["event"] == "sidecar stopped")
    assert len(missing) == stopped["duplicates"], missing[:5]
    codes = Counter(header(r.headers, H_ERROR) for r in outputs if r.topic.endswith("dead-letter"))
    lone = len(range(0, n, 500))
    assert codes["invalid-header"] == lone + 3  # the lone ones + the poisoned batch's tail
    first, bad, *rest = (by_source[s] for s in sources[-5:-1])
    assert first.topic == "agents.delivered"
    assert [header(r.headers, H_ERROR) for r in (bad, *rest)] == ["invalid-header"] * 3
    assert by_source[sources[-1]].topic == "agents.delivered"  # and life goes on
    print(f"\nprocess fuzz: {len(sources)} records, dead letters {dict(codes)}")


def _ok(i: int) -> dict[str, object]:
    return {"id": f"ok-{i}", "conversation": "c", "sender": "a", "kind": "chat", "content": "hi"}
