"""Throughput and added latency: raw aiokafka passthrough vs the ostracon sidecar.

One run, one embedded broker (the bundled Tansu on loopback). Each passthrough runs in its own
process, like a sidecar would:

* raw: consumer group -> producer (same batching, acks and commit-after-ack as the sidecar)
* ostracon: the real ``Sidecar`` (decode, dedupe, decide, route, headers, commit-after-ack)

Throughput: the input topic is pre-filled with N envelopes; each passthrough drains it and
reports msg/s from its first record to its last acknowledged output.
Latency: a producer offers a fixed rate; a measuring consumer reads the passthrough's output
and takes (receive time - send time) per message; "added" is ostracon minus raw.

    python benchmarks/throughput.py                 # defaults: 100k msgs, 1000 msg/s for 10 s
    python benchmarks/throughput.py --count 20000 --rate 500 --seconds 5
    python benchmarks/throughput.py --config benchmarks/full-pipeline.yaml --half \
        --kinds raw ostracon

``--config FILE`` runs the ostracon passthroughs with that sidecar config (its kafka, topics
and limits replaced by the benchmark's, except ``limits.handoff_every``); ``--half`` measures
latency a second time at 50% of the measured ostracon maximum; ``--fetch-wait MS`` sets both
passthroughs' ``fetch_max_wait_ms`` (default: the sidecar's, 20), and the measuring consumer's
when below its 5 ms: the broker holds every fetch that long, which sets the latency floor.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from ostracon.config import KafkaConfig, LimitsConfig, TopicsConfig, load_config
from ostracon.routing import Outcome
from ostracon.transport.embedded import EmbeddedBroker
from ostracon.transport.kafka import Sidecar, ensure_topics

PARTITIONS = 4
BATCH = 500
TS_HEADER = "bench-sent-ns"
# Both passthroughs use the sidecar's default fetch wait (override to compare).
FETCH_WAIT_MS = int(os.environ.get("BENCH_FETCH_WAIT_MS", KafkaConfig().fetch_max_wait_ms))


def envelope(i: int) -> bytes:
    return msgspec.json.encode(
        {
            "id": f"m-{i}",
            "conversation": f"conv-{i % 64}",
            "sender": f"agent-{i % 5}",
            "recipients": [f"agent-{(i + 1) % 5}"],
            "kind": "chat",
            "content": f"Step {i}: the deployment uses 3 replicas and the p99 is 120 ms.",
            "parents": [f"m-{i - 1}"] if i else [],
            "ts": 1_700_000_000.0 + i,
            "meta": {"model_family": "llama", "role": "worker"},
        }
    )


# ---------------------------------------------------------------- child: one passthrough


async def raw_passthrough(bootstrap: str, src: str, dst: str, group: str, count: int) -> None:
    """What a hand-written forwarder does: poll, produce each record, await acks, commit."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
    consumer = AIOKafkaConsumer(
        src,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=BATCH,
        fetch_max_wait_ms=FETCH_WAIT_MS,
    )
    await producer.start()
    await consumer.start()
    done, first = 0, None
    try:
        while count <= 0 or done < count:
            batch = await consumer.getmany(timeout_ms=100, max_records=BATCH)
            if not batch:
                continue
            first = first or time.perf_counter()
            acks, offsets = [], {}
            for tp, records in batch.items():
                for r in records:
                    acks.append(
                        await producer.send(dst, r.value, key=r.key, headers=list(r.headers))
                    )
                offsets[tp] = records[-1].offset + 1
                done += len(records)
            await asyncio.gather(*acks)
            await consumer.commit(offsets)
        print(
            json.dumps(
                {
                    "n": done,
                    "seconds": time.perf_counter() - (first or 0),
                }
            ),
            flush=True,
        )
    finally:
        await consumer.stop()
        await producer.stop()


async def ostracon_passthrough(
    bootstrap: str, src: str, dst: str, group: str, count: int, inflight: int = 4, config: str = ""
) -> None:
    base = load_config(config or None)  # the stages, rules and sinks under test
    cfg = msgspec.structs.replace(
        base,
        kafka=msgspec.structs.replace(
            base.kafka, bootstrap_servers=bootstrap, group_id=group, fetch_max_wait_ms=FETCH_WAIT_MS
        ),
        topics=TopicsConfig(
            inbound=[src],
            delivered=dst,
            quarantine=f"{dst}.q",
            dead_letter=f"{dst}.dlq",
            alerts=f"{dst}.alerts",
            recalls=f"{dst}.recalls",
            state=f"{dst}.state",  # per run: no accusation or blocklist carried between runs
            votes=f"{dst}.votes",
            partitions=PARTITIONS,
        ),
        limits=msgspec.structs.replace(base.limits, max_batch=BATCH, max_inflight_batches=inflight),
    )
    stop = asyncio.Event()
    first: list[float] = []
    seen = 0

    def on_outcome(outcome: Outcome) -> None:
        nonlocal seen
        seen += 1
        if seen == 1:
            first.append(time.perf_counter())
        if seen == count:
            stop.set()  # run() returns once every batch in flight is acked and committed

    gc.set_threshold(50_000, 50, 100)  # the GC settings of the sidecar process (serve)
    sidecar = Sidecar(cfg, bootstrap, on_outcome=on_outcome)
    await sidecar.start()
    gc.freeze()
    every = float(os.environ.get("BENCH_PROGRESS_S", 0))  # benchmarks/scaleout.py reads these

    async def progress() -> None:
        while True:
            await asyncio.sleep(every)
            line = {"t": time.monotonic(), "n": seen, "cpu": time.process_time()}
            print(json.dumps(line), flush=True)

    reporter = asyncio.create_task(progress()) if every > 0 else None
    try:
        await sidecar.run(stop)
        seconds = time.perf_counter() - first[0]
        print(
            json.dumps({"n": sidecar.stats.consumed, "seconds": seconds}),
            flush=True,
        )
    finally:
        if reporter is not None:
            reporter.cancel()
        await sidecar.close()


def child(argv: list[str]) -> None:
    kind, bootstrap, src, dst, group, count, config = argv
    import logging

    from ostracon.logs import configure

    configure("warning")
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    if kind == "raw":
        asyncio.run(raw_passthrough(bootstrap, src, dst, group, int(count)))
    else:
        inflight = 1 if kind == "ostracon-serial" else LimitsConfig().max_inflight_batches
        asyncio.run(ostracon_passthrough(bootstrap, src, dst, group, int(count), inflight, config))


def spawn(
    kind: str, bootstrap: str, src: str, dst: str, count: int, config: str = ""
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--child",
            kind,
            bootstrap,
            src,
            dst,
            f"{kind}-{src}-{dst}",
            str(count),
            config,
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


# ---------------------------------------------------------------- parent: the measurements


async def fill(bootstrap: str, topic: str, n: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        acks = []
        for i in range(n):
            acks.append(await producer.send(topic, envelope(i), key=b"conv-%d" % (i % 64)))
        await asyncio.gather(*acks)
    finally:
        await producer.stop()


def throughput(kind: str, bootstrap: str, n: int, run: int, config: str = "") -> float:
    # Each run drains the same pre-filled input under a fresh consumer group.
    proc = spawn(kind, bootstrap, "tp.in", f"tp.out.{kind}.{run}", n, config)
    out, _ = proc.communicate(timeout=600)
    result = json.loads(out.strip().splitlines()[-1])
    return float(result["n"] / result["seconds"])


async def latency(
    kind: str, bootstrap: str, rate: int, seconds: float, config: str = "", tag: str = ""
) -> list[float]:
    """Offer ``rate`` msg/s for ``seconds`` through one passthrough; latencies in ms."""
    src, dst = f"lat.in.{kind}{tag}", f"lat.out.{kind}{tag}"
    proc = spawn(kind, bootstrap, src, dst, 0, config)
    latencies: list[float] = []
    total = int(rate * seconds)
    # Held, quarantined and dead-lettered messages count too: their decision is their output.
    consumer = AIOKafkaConsumer(
        *outputs(dst),
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=min(5, FETCH_WAIT_MS),
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await consumer.start()
    await producer.start()

    async def measure() -> None:
        while len(latencies) < total:
            batch = await consumer.getmany(timeout_ms=200)
            now = time.time_ns()
            for records in batch.values():
                for r in records:
                    sent = dict(r.headers).get(TS_HEADER)
                    if sent is not None:  # not ostracon's feedback notes to senders
                        latencies.append((now - int(sent)) / 1e6)

    try:
        # Warm-up: wait until the passthrough forwards (its group join takes a few seconds).
        await producer.send_and_wait(src, envelope(-1), key=b"w", headers=[(TS_HEADER, b"0")])
        while not await consumer.getmany(timeout_ms=200):
            pass
        reader = asyncio.create_task(measure())
        start = time.perf_counter()
        for i in range(total):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await producer.send(
                src,
                envelope(i),
                key=b"conv-%d" % (i % 64),
                headers=[(TS_HEADER, str(time.time_ns()).encode())],
            )
        await asyncio.wait_for(reader, timeout=60)
    finally:
        proc.terminate()
        proc.wait()
        await producer.stop()
        await consumer.stop()
    return latencies


def outputs(dst: str) -> list[str]:
    """A passthrough's output topics (the raw one writes only the first)."""
    return [dst, f"{dst}.q", f"{dst}.dlq"]


def pct(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=1000)[int(p * 10) - 1]


KINDS = ("raw", "ostracon-serial", "ostracon")


def print_latency(rate: int, seconds: float, lat_raw: list[float], lat_ost: list[float]) -> None:
    print(f"latency at {rate} msg/s for {seconds:g}s (end to end, ms):")
    for name, lat in (("raw", lat_raw), ("ostracon", lat_ost)):
        print(
            f"  {name:<9} p50 {pct(lat, 50):7.2f}   p99 {pct(lat, 99):7.2f}   n={len(lat)}"
            f"   p95 {pct(lat, 95):7.2f}"
        )
    print(  # p95 last: run_all reads "p50 .. p99 .." from this line
        f"  added     p50 {pct(lat_ost, 50) - pct(lat_raw, 50):7.2f}   "
        f"p99 {pct(lat_ost, 99) - pct(lat_raw, 99):7.2f}   "
        f"p95 {pct(lat_ost, 95) - pct(lat_raw, 95):7.2f}"
    )


async def main(args: argparse.Namespace) -> None:
    with EmbeddedBroker() as broker:
        bs = broker.bootstrap
        kinds = args.kinds
        topics = ["tp.in"] + [f"tp.out.{k}.{r}" for k in kinds for r in range(args.repeat)]
        for kind in ("raw", "ostracon"):
            for tag in ("", ".h"):
                topics += [f"lat.in.{kind}{tag}", *outputs(f"lat.out.{kind}{tag}")]
        await ensure_topics(bs, topics, PARTITIONS)
        await fill(bs, "tp.in", args.count)
        rates: dict[str, list[float]] = {k: [] for k in kinds}
        for run in range(args.repeat):  # interleaved, so drift hits every kind alike
            for kind in kinds:
                rates[kind].append(throughput(kind, bs, args.count, run, args.config))
        lat_raw = await latency("raw", bs, args.rate, args.seconds)
        lat_ost = await latency("ostracon", bs, args.rate, args.seconds, args.config)
        half = 0
        if args.half and rates.get("ostracon"):  # 50% of the measured ostracon maximum
            half = int(statistics.median(rates["ostracon"]) / 2)
            half_raw = await latency("raw", bs, half, args.seconds, tag=".h")
            half_ost = await latency("ostracon", bs, half, args.seconds, args.config, ".h")

    best = {k: statistics.median(v) for k, v in rates.items()}
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; broker: embedded Tansu on loopback; "
        f"{PARTITIONS} partitions; batch {BATCH}; fetch wait {FETCH_WAIT_MS} ms; "
        f"config {args.config or '(defaults)'}"
    )
    print(f"throughput, {args.count} msgs, median of {args.repeat} runs (msg/s):")
    for kind in kinds:
        runs = ", ".join(f"{r:.0f}" for r in rates[kind])
        ratio = best[kind] / best["raw"]
        print(f"  {kind:<16} {best[kind]:9.0f}   ratio {ratio:.2f}   runs: {runs}")
    print_latency(args.rate, args.seconds, lat_raw, lat_ost)
    if half:
        print("50% of the measured ostracon maximum:")
        print_latency(half, args.seconds, half_raw, half_ost)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
    else:
        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        parser.add_argument("--count", type=int, default=100_000)
        parser.add_argument("--rate", type=int, default=1000)
        parser.add_argument("--seconds", type=float, default=10.0)
        parser.add_argument("--repeat", type=int, default=3)
        parser.add_argument("--config", default="", help="sidecar config file (ostracon kinds)")
        parser.add_argument(
            "--kinds", nargs="+", choices=KINDS, default=list(KINDS), help="passthroughs to time"
        )
        parser.add_argument(
            "--half", action="store_true", help="also latency at 50%% of the ostracon maximum"
        )
        parser.add_argument(
            "--fetch-wait",
            type=int,
            help="fetch_max_wait_ms of both passthroughs (and, up to 5, of the measuring consumer)",
        )
        parsed = parser.parse_args()
        if parsed.fetch_wait is not None:  # the children read it from the environment
            os.environ["BENCH_FETCH_WAIT_MS"] = str(parsed.fetch_wait)
            FETCH_WAIT_MS = parsed.fetch_wait
        asyncio.run(main(parsed))
