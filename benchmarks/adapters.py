"""Adapter overhead: what asking ostracon costs a framework adapter per message.

- **in-process**: ``InProcessGovernor.rule_sync(env)`` minus ``Core.decide(env)`` on the same
  messages (two fresh cores, same stream): the governor's own work (locking, building the
  ruling, passing alerts on). Target ≤ 100 µs.
- **sidecar**: ``await SidecarGovernor.rule(env)`` round trip (produce → sidecar decides →
  output topic → the governor's reader), one message at a time, against a sidecar process
  and the embedded broker on loopback. Target p99 ≤ 5 ms. The broker holds a fetch for
  ``kafka.fetch_max_wait_ms`` even when data arrives (Tansu), so the sidecar and the governor
  run with the wait given by ``--fetch-wait-ms`` (both sides).

    python benchmarks/adapters.py                    # 5 000 in-process, 500 sidecar messages
    python benchmarks/adapters.py --fetch-wait-ms 20 # the sidecar's default wait
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ostracon.adapters.governor import InProcessGovernor, SidecarGovernor
from ostracon.config import Config, load_config
from ostracon.envelope import Envelope, Kind
from ostracon.pipeline import build_core
from ostracon.transport.embedded import EmbeddedBroker

TEXTS = [
    "Q3 revenue was $12M.",
    "The p99 latency is 120 ms and we run 3 replicas.",
    "Customer churn was 7%.",
    "Launch is set for 2024-03-05.",
    "Let's split the report: I take section one.",
]


def messages(n: int, conversations: int = 20) -> list[Envelope]:
    return [
        Envelope(
            id=f"m-{i}",
            conversation=f"c-{i % conversations}",
            sender=f"agent-{i % 4}",
            kind=Kind.TOOL_RESULT if i % 10 == 0 else Kind.CHAT,
            content=TEXTS[i % len(TEXTS)],
            recipients=[f"agent-{(i + 1) % 4}"],
        )
        for i in range(n)
    ]


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def in_process(n: int) -> tuple[float, float, float]:
    """(decide µs p50, rule_sync µs p50, overhead µs p50 of per-message differences)."""
    envs = messages(n)
    core = build_core(Config())
    gov = InProcessGovernor(Config())
    plain, governed = [], []
    for i, env in enumerate(envs):  # interleaved, alternating which goes first (warm caches)
        calls = [(core.decide, plain), (gov.rule_sync, governed)]
        for fn, out in calls if i % 2 else calls[::-1]:
            t0 = time.perf_counter()
            fn(env)
            out.append((time.perf_counter() - t0) * 1e6)
    diffs = [g - p for g, p in zip(governed, plain, strict=True)]
    return statistics.median(plain), statistics.median(governed), statistics.median(diffs)


async def sidecar(n: int, wait_ms: int, linger_ms: int) -> list[float]:
    broker = EmbeddedBroker()
    broker.start()
    tmp = Path(tempfile.mkdtemp())
    cfg_path = tmp / "ostracon.yaml"
    cfg_path.write_text(
        f"kafka:\n  bootstrap_servers: {broker.bootstrap}\n  fetch_max_wait_ms: {wait_ms}\n"
        f"  linger_ms: {linger_ms}\n"
        "log:\n  level: warning\n"
    )
    log = (tmp / "sidecar.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ostracon", "run", "--config", str(cfg_path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        cfg = load_config(cfg_path)
        gov = SidecarGovernor(cfg, timeout_s=10.0)
        for _ in range(100):  # until the sidecar created its topics
            try:
                await gov.start()
                break
            except RuntimeError:
                await asyncio.sleep(0.2)
        envs = messages(n + 50)
        for env in envs[:50]:  # warm up: group join, first fetches
            await gov.rule(env)
        lat = []
        for env in envs[50:]:
            t0 = time.perf_counter()
            await gov.rule(env)
            lat.append((time.perf_counter() - t0) * 1e3)
        await gov.close()
        return lat
    finally:
        proc.terminate()
        proc.wait(10)
        broker.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--sidecar-messages", type=int, default=500)
    ap.add_argument("--fetch-wait-ms", type=int, default=1)
    ap.add_argument("--linger-ms", type=int, default=0, help="the sidecar's producer linger")
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}")
    d, g, o = in_process(args.messages)
    print(
        f"in-process ({args.messages} messages): decide p50 {d:.1f} us, rule_sync p50 {g:.1f} "
        f"us, governor overhead p50 {o:.1f} us (target <= 100 us)"
    )
    lat = asyncio.run(sidecar(args.sidecar_messages, args.fetch_wait_ms, args.linger_ms))
    print(
        f"sidecar round trip ({args.sidecar_messages} messages, one at a time, fetch wait "
        f"{args.fetch_wait_ms} ms, linger {args.linger_ms} ms): p50 {pct(lat, 50):.2f} ms, "
        f"p95 {pct(lat, 95):.2f} ms, p99 {pct(lat, 99):.2f} ms (target p99 <= 5 ms)"
    )


if __name__ == "__main__":
    main()
