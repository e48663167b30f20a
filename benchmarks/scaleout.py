"""Scale-out: 1 vs 2 sidecar instances (separate processes) in one consumer group.

One embedded broker (the bundled Tansu on loopback) and one input topic of ``--partitions``
partitions (default 4), pre-filled with the envelopes of ``benchmarks/throughput.py``
(64 conversations keyed by conversation, so they spread over the partitions). Each run starts
1 or 2 instances of the real ``Sidecar`` (the throughput benchmark's child process, with
``--config``, default ``benchmarks/full-pipeline.yaml``) under a fresh consumer group and
output topics, so every run drains the same input from its start.

The instances report how many records they have routed every 0.25 s. Once every instance
has routed records (the group has settled: the second instance's join moves partitions),
``--settle`` seconds are skipped and msg/s is taken over the next ``--window`` seconds:
the sum of the instances' counts. Beside it: the CPU seconds per wall second the
instances and the broker used in the window (the machine's cores are the ceiling).
Runs alternate 1, 2, 1, 2, ... so drift hits both alike; medians are reported.

    python benchmarks/scaleout.py                       # 100 000 messages, 3 runs each
    python benchmarks/scaleout.py --count 40000 --window 4 --repeat 1
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from ostracon.transport.embedded import EmbeddedBroker
from ostracon.transport.kafka import ensure_topics

HERE = Path(__file__).resolve().parent
TICKS = os.sysconf("SC_CLK_TCK")


def _throughput() -> ModuleType:
    """benchmarks/throughput.py as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("bench_throughput", HERE / "throughput.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


tp = _throughput()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


class Instance:
    """One sidecar child and the progress lines it prints: (monotonic t, routed, cpu s)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.points: list[tuple[float, int, float]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith('{"t"'):
                p = json.loads(line)
                self.points.append((p["t"], p["n"], p["cpu"]))

    def at(self, t: float) -> tuple[int, float]:
        """Routed count and CPU seconds at the last report at or before ``t``."""
        best = (0, 0.0)
        for pt, n, cpu in self.points:
            if pt > t:
                break
            best = (n, cpu)
        return best

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()
        self._reader.join(timeout=5)


def one_run(
    bootstrap: str, broker_pid: int, instances: int, run: int, args: argparse.Namespace
) -> dict[str, Any]:
    dst = f"so.out.{instances}.{run}"
    procs = [
        Instance(tp.spawn("ostracon", bootstrap, "so.in", dst, 0, args.config))
        for _ in range(instances)
    ]
    try:
        deadline = time.monotonic() + 60
        while not all(i.points and i.points[-1][1] > 0 for i in procs):
            if time.monotonic() > deadline:
                raise RuntimeError("an instance routed nothing within 60 s")
            if any(i.proc.poll() is not None for i in procs):
                raise RuntimeError("an instance exited")
            time.sleep(0.05)
        start = time.monotonic() + args.settle
        time.sleep(args.settle)
        broker0 = cpu_seconds(broker_pid)
        time.sleep(args.window)
        end = time.monotonic()
        broker1 = cpu_seconds(broker_pid)
        time.sleep(0.5)  # the reports covering ``end``
        routed = cpu = 0.0
        each = []
        for inst in procs:
            n0, c0 = inst.at(start)
            n1, c1 = inst.at(end)
            routed += n1 - n0
            cpu += c1 - c0
            each.append(f"{(n1 - n0) / (end - start):.0f}")
        total = sum(i.points[-1][1] for i in procs)
        if total >= args.count:
            print(f"  warning: run {run} drained the input; raise --count", file=sys.stderr)
        return {
            "msgs": routed / (end - start),
            "cpu_instances": cpu / (end - start),
            "cpu_broker": (broker1 - broker0) / args.window,
            "each": " + ".join(each),  # msg/s per instance: a stalled one shows here
        }
    finally:
        for inst in procs:
            inst.stop()


async def setup(bootstrap: str, args: argparse.Namespace) -> None:
    topics = ["so.in"]
    for n in (1, 2):
        for run in range(args.repeat):
            topics += tp.outputs(f"so.out.{n}.{run}")
    await ensure_topics(bootstrap, topics, args.partitions)
    await tp.fill(bootstrap, "so.in", args.count)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=100_000, help="messages pre-filled")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--settle", type=float, default=3.0, help="seconds skipped once all route")
    ap.add_argument("--window", type=float, default=8.0, help="seconds measured")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--config", default=str(HERE / "full-pipeline.yaml"), help="sidecar config")
    args = ap.parse_args()
    os.environ["BENCH_PROGRESS_S"] = "0.25"  # read by the spawned sidecar children
    results: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    load = os.getloadavg()
    with EmbeddedBroker() as broker:
        assert broker.process is not None
        asyncio.run(setup(broker.bootstrap, args))
        for run in range(args.repeat):
            for n in (1, 2):
                r = one_run(broker.bootstrap, broker.process.pid, n, run, args)
                results[n].append(r)
                print(
                    f"  run {run}, {n} instance(s): {r['msgs']:.0f} msg/s ({r['each']}), "
                    f"CPU s per s: instances "
                    f"{r['cpu_instances']:.2f} broker {r['cpu_broker']:.2f}",
                    file=sys.stderr,
                    flush=True,
                )
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; load average before {load[0]:.2f} / after "
        f"{os.getloadavg()[0]:.2f}; embedded Tansu; {args.partitions} partitions; "
        f"config {Path(args.config).name}; window {args.window:g} s after {args.settle:g} s"
    )
    med = {n: statistics.median(r["msgs"] for r in rs) for n, rs in results.items()}
    for n, rs in results.items():
        runs = ", ".join(f"{r['msgs']:.0f}" for r in rs)
        cpu_i = statistics.median(r["cpu_instances"] for r in rs)
        cpu_b = statistics.median(r["cpu_broker"] for r in rs)
        print(
            f"  {n} instance(s): {med[n]:7.0f} msg/s   runs: {runs}   CPU s per s: "
            f"instances {cpu_i:.2f}, broker {cpu_b:.2f}"
        )
    print(f"scale-out ratio (2 instances / 1): {med[2] / med[1]:.2f}")


if __name__ == "__main__":
    main()
