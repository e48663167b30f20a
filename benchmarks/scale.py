"""Per-message cost and memory as retained claims grow: 10^4, 10^5, 10^6.

For each size N, a fresh core (default config, eviction cap raised above N so nothing is
evicted) is filled with N claims from a realistic mix: 200 conversations of 6 agents, tool
results (grounded), agents repeating what they read (parents), unverified claims and a few
contradictions. Then a probe of 10 000 further messages of the same mix is timed: the
per-message cost at that size. Memory per retained claim is the growth of the process's
resident set during the fill, divided by N (it includes the message records).

The process uses the sidecar's GC settings (see transport/kafka.py: serve).

Every measurement runs in a fresh process (spawned), so no size inherits a heap that an
earlier, larger core left fragmented. On a shared machine one probe (about a second) is easily
slowed by another process, so ``--repeat N`` measures every size N times, the sizes taking
turns, and shows the medians; the probe's CPU time is shown beside its wall time (it leaves
out the time other processes held the core).

    python benchmarks/scale.py                 # 10^4, 10^5, 10^6
    python benchmarks/scale.py --sizes 10000 100000 --repeat 3
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import platform
import random
import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

from ostracon.config import Config, ContainmentConfig
from ostracon.envelope import Claim, Envelope, Kind
from ostracon.pipeline import build_core

CONVERSATIONS = 200
AGENTS = 6
PROBE = 10_000


def workload(start: int, count: int, seed: int) -> Iterator[Envelope]:
    """Messages ``start .. start+count``, one or two claims each."""
    rng = random.Random(seed)
    for i in range(start, start + count):
        conv = i % CONVERSATIONS
        step = i // CONVERSATIONS
        sender = f"agent-{step % AGENTS}"
        topic = f"metric {step % 40}"
        roll = rng.random()
        parents = [f"m-{i - CONVERSATIONS}"] if step else []
        if roll < 0.2:
            kind, claims = Kind.TOOL_RESULT, [Claim(topic, f"{step % 40} ms")]
        elif roll < 0.85:  # repeat what was read (same value as the tool)
            kind, claims = Kind.CHAT, [Claim(topic, f"{step % 40} ms")]
        elif roll < 0.97:  # unverified
            kind, claims = Kind.CHAT, [Claim(f"guess {step % 97}", f"{rng.randrange(5)}")]
        else:  # contradiction
            kind, claims = Kind.CHAT, [Claim(topic, f"{step % 40 + 1} ms")]
        if rng.random() < 0.3:
            claims.append(Claim(f"owner {step % 13}", f"team {step % 3}"))
        yield Envelope(
            id=f"m-{i}",
            conversation=f"conv-{conv}",
            sender=sender,
            kind=kind,
            content="",
            claims=claims,
            parents=parents,
            ts=1_700_000_000.0 + step,
            meta={"model_family": f"f{step % 2}"},
        )


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(n: int) -> tuple[float, float, float, int]:
    """(us per message at n claims: wall, CPU; bytes per retained claim; claims retained)."""
    gc.set_threshold(50_000, 50, 100)  # as the sidecar process
    core = build_core(Config(containment=ContainmentConfig(max_claims_per_conversation=10**9)))
    before = rss()
    i = 0
    claims = 0
    while claims < n:
        for env in workload(i, 1000, seed=i):
            claims += len(core.decide(env).claims)
        i += 1000
    grown = rss() - before
    probe = list(workload(i, PROBE, seed=-1))
    started, cpu_started = time.perf_counter(), time.process_time()
    for env in probe:
        core.decide(env)
    us = (time.perf_counter() - started) / PROBE * 1e6
    cpu = (time.process_time() - cpu_started) / PROBE * 1e6
    retained = sum(len(lin.claims) for lin in core.state.genealogy.lineages.values())
    return us, cpu, grown / claims, retained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10**4, 10**5, 10**6])
    parser.add_argument("--repeat", type=int, default=1, help="runs per size (medians shown)")
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; {CONVERSATIONS} conversations, {AGENTS} agents each; "
        f"probe {PROBE} messages; {args.repeat} run(s) per size"
    )
    runs: dict[int, list[tuple[float, float, float, int]]] = {n: [] for n in args.sizes}
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn, max_tasks_per_child=1) as fresh:
        for _ in range(args.repeat):
            for n in args.sizes:
                runs[n].append(fresh.submit(measure, n).result())
    base = cpu_base = None
    for n in args.sizes:
        us = statistics.median(r[0] for r in runs[n])
        cpu = statistics.median(r[1] for r in runs[n])
        per_claim = statistics.median(r[2] for r in runs[n])
        base, cpu_base = base or us, cpu_base or cpu
        print(
            f"  {n:>9,} claims: {us:7.1f} us/message ({us / base:.2f}x of the smallest), "
            f"CPU {cpu:6.1f} us ({cpu / cpu_base:.2f}x), {per_claim:6.0f} bytes/claim, "
            f"{runs[n][0][3]:,} retained"
        )


if __name__ == "__main__":
    main()
