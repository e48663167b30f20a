"""Core.decide() per message: p50 / p99 with 100 rules, and where the time goes, by stage.

Two workloads, each on the real core (``build_core``) with every built-in stage on (blocklist,
lineage, containment, monitors, rules, byzantine, quorum, membership: the defaults):

* **100 rules**: the 100-rule file and the structured-claim messages of ``benchmarks/rules.py``
  (imported, not copied), decided with and without the rules. The issue's target: p50 <= 50 µs.
* **sidecar workload**: the envelopes ``benchmarks/throughput.py`` sends (free text, 2-3
  claims extracted per message, 64 conversations) with the config of
  ``benchmarks/full-pipeline.yaml`` (rules/default.yaml): what the sidecar decides in the
  throughput runs, without the broker.

Every repeat decides ``--warm`` messages on a fresh core, then times ``--messages`` more one
by one with the sidecar's GC settings (as ``serve`` sets them). A last pass with timers
around every stage's ``run`` and ``observe`` (a few hundred ns of their own each) shows
each stage's share; the timed p50 / p99 come from the passes without them.

    python benchmarks/decide.py                      # 5 000 timed after 2 000, 5 repeats
    python benchmarks/decide.py --messages 2000 --warm 1000 --repeat 3
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import msgspec
import yaml

# one OpenBLAS thread, as the ostracon CLI runs the sidecar (see cli.py): set before the
# imports below import numpy
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from ostracon.config import Config, RulesConfig, load_config
from ostracon.core import Core
from ostracon.envelope import Envelope
from ostracon.pipeline import build_core

HERE = Path(__file__).resolve().parent


def _bench(name: str) -> ModuleType:
    """Another benchmark file as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


rules_bench, tp_bench = _bench("rules"), _bench("throughput")


def _timed(fn: Callable[..., None], name: str, into: dict[str, int]) -> Callable[..., None]:
    clock = time.perf_counter_ns

    def wrapper(*args: object) -> None:
        t0 = clock()
        fn(*args)
        into[name] += clock() - t0

    return wrapper


def by_stage(cfg: Config, warm: list[Envelope], timed: list[Envelope]) -> dict[str, float]:
    """Mean µs per timed message in each stage's run and observe, and in decide() overall."""
    core = build_core(cfg)
    for env in warm:
        core.decide(env)
    spent: dict[str, int] = defaultdict(int)
    for stage in core.stages:  # instance attributes shadow the methods Core calls
        name = type(stage).__name__.removesuffix("Stage")
        stage.run = _timed(stage.run, f"{name}.run", spent)  # type: ignore[method-assign]
        stage.observe = _timed(stage.observe, f"{name}.observe", spent)  # type: ignore[method-assign]
    core = Core(core.stages, core.state)
    clock = time.perf_counter_ns
    for env in timed:
        t0 = clock()
        core.decide(env)
        spent["decide()"] += clock() - t0
    return {k: v / len(timed) / 1000 for k, v in spent.items()}


def measure(
    label: str, cfg: Config, warm: list[Envelope], timed: list[Envelope], repeat: int
) -> tuple[float, float]:
    runs = []
    for _ in range(repeat):
        gc.collect()
        # µs per decide() of each timed message, on a fresh core fed ``warm`` first
        runs.append(rules_bench.pct(rules_bench.time_decide(cfg, warm, timed)))
    p50 = statistics.median(r[0] for r in runs)
    p99 = statistics.median(r[1] for r in runs)
    each = ", ".join(f"{a:.1f}/{b:.1f}" for a, b in runs)
    print(f"{label}: p50 {p50:.1f} / p99 {p99:.1f} us  (median of {repeat}; runs {each})")
    return p50, p99


def show_stages(label: str, cfg: Config, warm: list[Envelope], timed: list[Envelope]) -> None:
    gc.collect()
    shares = by_stage(cfg, warm, timed)
    total = shares.pop("decide()")
    parts = sorted(shares.items(), key=lambda kv: -kv[1])
    print(f"{label}, by stage (mean us/message, with timers; decide() {total:.1f} us):")
    for name, us in parts:
        if us >= 0.05:
            print(f"    {name:<22} {us:7.1f}  {us / total:5.1%}")
    print(f"    {'(outside the stages)':<22} {total - sum(shares.values()):7.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=5000, help="timed messages per repeat")
    ap.add_argument("--warm", type=int, default=2000, help="messages decided before timing")
    ap.add_argument("--repeat", type=int, default=5, help="repeats; medians are reported")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--config", default=str(HERE / "full-pipeline.yaml"), help="sidecar workload")
    args = ap.parse_args()
    gc.set_threshold(50_000, 50, 100)  # as the sidecar process (transport/kafka.py: serve)
    rng = random.Random(args.seed)
    n = args.warm + args.messages
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench-rules.yaml"
        path.write_text(yaml.safe_dump(rules_bench.rule_file(rng), sort_keys=False), "utf-8")
        with_rules = Config(rules=RulesConfig(paths=[str(path)]))
        msgs = rules_bench.messages(rng, n)
        warm, timed = msgs[: args.warm], msgs[args.warm :]
        print(f"{args.messages} timed messages after {args.warm}, {args.repeat} repeats")
        measure("decide() with 100 rules", with_rules, warm, timed, args.repeat)
        measure("decide() without rules", Config(), warm, timed, args.repeat)
        show_stages("decide() with 100 rules", with_rules, warm, timed)
    full = load_config(args.config)
    envs = [msgspec.json.decode(tp_bench.envelope(i), type=Envelope) for i in range(n)]
    warm, timed = envs[: args.warm], envs[args.warm :]
    measure(f"decide() sidecar workload ({Path(args.config).name})", full, warm, timed, args.repeat)
    show_stages("decide() sidecar workload", full, warm, timed)


if __name__ == "__main__":
    main()
