"""Rule benchmark: 100 compiled rules per message, through the real rules stage.

Generates a rule file of 100 rules of the kinds operators write (sender / kind / meta checks,
``claims.any`` over labels, reach and risk, named lists and macros, a few regexes and string
functions, exceptions on some rules, two rate limits), loads it with ``load_rules`` and builds
the real core with ``build_core(Config(rules=RulesConfig(paths=[file])))``.

Each message is an envelope with 2-3 structured claims and ``meta`` role / model family, in
200 conversations of 16 agents (tool results ground facts; agents repeat them, now and then
get one wrong, and spread per-conversation rumours). For every timed message the stages before
the rules stage run on a fresh ``Context`` (untimed), then **only ``RulesStage.run(ctx)``** is
timed; the message is then decided by the core as usual (untimed) so that the genealogy,
reputations and rate windows move on. Every repeat replays the same messages on a fresh core;
the cyclic GC is off while timing. A cross-check times ``Core.decide`` per message with and
without the rules and reports the difference.

    python benchmarks/rules.py                       # 5 000 timed messages, 5 repeats
    python benchmarks/rules.py --messages 2000 --repeat 3 --profile
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import platform
import pstats
import random
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml

# one OpenBLAS thread, as the ostracon CLI runs the sidecar (see cli.py): set before the
# imports below import numpy
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from ostracon.config import Config, RulesConfig
from ostracon.core import Context, Core, Stage
from ostracon.envelope import Claim, Envelope, Kind
from ostracon.pipeline import build_core
from ostracon.rules import RulesStage, load_rules

AGENTS = [f"agent-{i}" for i in range(10)] + [
    "planner",
    "coder",
    "critic",
    "summarizer",
    "finance-tool",
    "ext-scraper",
]
TOOLS = ["finance-tool", "coder"]  # senders of tool results
ROLES = ["worker", "worker", "researcher", "critic", "planner", "summarizer", "auditor"]
FAMILIES = ["gpt", "claude", "llama", "gemini", "mistral"]
KINDS = ["chat", "tool_call", "tool_result", "action", "system"]
FACTS = {  # key -> (true value, wrong value); tool results state the true one
    "q3 revenue": ("12M USD", "15M USD"),
    "launch date": ("2025-04-02", "2025-03-05"),
    "headcount": ("42", "45"),
    "p99 latency": ("120 ms", "90 ms"),
    "replica count": ("3", "5"),
    "region": ("eu-west-1", "us-east-1"),
}
GUESSES = ["competitor funding", "market size", "budget", "churn"]  # no tool grounds these
KEYS = [*FACTS, *GUESSES]
CONVERSATIONS = 200

HEADER: list[dict[str, object]] = [
    {"requires": "0.1"},
    {"list": "trusted_agents", "items": ["finance-tool", "auditor", "planner", "agent-1"]},
    {"list": "watch_list", "items": ["agent-7", "agent-9", "ext-scraper"]},
    {"list": "tool_kinds", "items": ["tool_call", "tool_result"]},
    {"list": "hub_roles", "items": ["planner", "summarizer", "aggregator", "orchestrator"]},
    {"list": "risky_families", "items": ["llama", "mistral"]},
    {"list": "sensitive_keys", "items": ["q3 revenue", "budget", "headcount"]},
    {"macro": "unverified", "condition": 'claims.any(c, c.label == "yellow")'},
    {"macro": "has_red", "condition": 'claims.any(c, c.label == "red")'},
    {"macro": "from_hub", "condition": "sender.hub or sender.role in hub_roles"},
    {"macro": "untrusted", "condition": "sender not in trusted_agents"},
    {"macro": "risky", "condition": "risk.score >= 0.6 or lineage.depth > 3"},
]

# (condition template, action kind). Placeholders: kind, a, b, role, fam, key, r, d, n.
TEMPLATES: list[tuple[str, str]] = [
    ('kind == "{kind}" and sender in ["{a}", "{b}"]', "tag"),
    ('sender.role == "{role}" and risk.score >= {r}', "tag"),
    ('claims.any(c, c.label == "yellow" and c.reach >= {n})', "hold"),
    ('has_red and untrusted and sender.role == "{role}"', "block"),
    ('unverified and from_hub and sender.model_family == "{fam}"', "hold"),
    ("sender in watch_list and claims.any(c, c.risk > {r})", "quarantine"),
    ('kind in tool_kinds and sender == "{a}" and not claims.all(c, c.grounded)', "alert"),
    ("sender.model_family in risky_families and lineage.depth >= {d}", "tag"),
    ("claims.any(c, c.key in sensitive_keys and not c.grounded and c.risk >= {r})", "hold"),
    ('sender matches "^agent-[{lo}-9]$" and risk.score > {r}', "tag"),
    ('contains(lower(content), "{word}") or contains(content, "api key")', "block"),
    ('startswith(sender, "ext-") and kind == "{kind}"', "quarantine"),
    ("len(recipients) >= {n} and unverified", "tag"),
    ('claims.count(c, c.label == "yellow") >= {n}', "hold"),
    ("sender.reputation < {r} and claims.any(c, not c.grounded)", "accuse"),
    ("unverified and lineage.sources <= 1 and risk.components.reach >= {r}", "alert"),
    ('"red" in labels and sender.model_family == "{fam}"', "quarantine"),
    ("sender.hub and unverified and risk.score >= {r}", "alert"),
    ("meta.priority >= {n} and unverified", "alert"),
    ('claims.any(c, len(c.contradicts) > 0 and c.reach >= {n} and c.key == "{key}")', "quarantine"),
    ('lower(meta.team) matches "^(ops|sre)$" and claims.any(c, c.risk >= {r})', "tag"),
    ('sender.model_family == "{fam}" and claims.any(c, c.key == "{key}" and c.depth >= 1)', "tag"),
    ('endswith(sender, ["-bot", "-tool"]) and claims.count(c, not c.grounded) >= {n}', "alert"),
    ('risky and untrusted and kind == "{kind}" and sender.role == "{role}"', "hold"),
    ('claims.any(c, c.key == "{key}" and c.label != "green") and sender.role != "auditor"', "tag"),
]
WORDS = ["password", "secret", "token", "credentials", "private key"]
EXCEPTIONS = [
    {"name": "trusted", "fields": ["sender"], "values": [["finance-tool"], ["planner"]]},
    {"name": "auditors", "fields": ["sender.role"], "values": [["auditor"]]},
    {
        "name": "tool-results",
        "fields": ["sender", "kind"],
        "values": [["coder", "tool_result"], ["finance-tool", "tool_result"]],
    },
]


def _actions(kind: str, i: int) -> dict[str, object]:
    if kind == "tag":
        return {"tag": {"rule-hit": f"r{i}"}}
    if kind == "hold":
        return {
            "hold": {"reason": f"rule {i}", "validators": ["auditor"], "quorum": 1},
            "alert": {"severity": "warning", "summary": "held {claims} from {sender}"},
        }
    if kind == "quarantine":
        return {"quarantine": {"reason": f"rule {i}"}}
    if kind == "block":
        return {"block": {"reason": f"rule {i}", "feedback": "{sender}: cite a source"}}
    if kind == "accuse":
        return {"accuse": {"reason": "repeats unverified claims"}}
    return {"alert": {"severity": "info", "kind": "rule-watch"}}


def rule_file(rng: random.Random) -> list[dict[str, object]]:
    """The YAML document: lists, macros, 98 templated rules and 2 rate limits."""
    items = list(HEADER)
    seen: set[str] = set()
    t = 0
    for i in range(98):
        while True:  # operators do not write the same condition twice: redraw, or move on
            text, kind = TEMPLATES[t % len(TEMPLATES)]
            for _ in range(20):
                cond = text.format(
                    kind=rng.choice(KINDS[:3]),
                    a=rng.choice(AGENTS),
                    b=rng.choice(AGENTS),
                    role=rng.choice(ROLES),
                    fam=rng.choice(FAMILIES),
                    key=rng.choice(KEYS),
                    r=round(rng.uniform(0.3, 0.9), 2),
                    d=rng.randint(1, 4),
                    n=rng.randint(2, 4),
                    lo=rng.randint(0, 7),
                    word=rng.choice(WORDS),
                )
                if cond not in seen:
                    break
            t += 1
            if cond not in seen:
                seen.add(cond)
                break
        rule: dict[str, object] = {
            "rule": f"r{i:02d}-{kind}",
            "description": f"generated rule {i} ({kind})",
            "condition": cond,
            "actions": _actions(kind, i),
            "priority": rng.choice([0, 10, 20, 30, 50]),
            "tags": ["bench"],
        }
        if i % 4 == 1:  # a quarter of the rules carry an exception
            rule["exceptions"] = [EXCEPTIONS[i % len(EXCEPTIONS)]]
        items.append(rule)
    for i, (scope, limit, window) in enumerate(
        [('kind == "chat"', 40, 60.0), ("sender in watch_list", 10, 300.0)]
    ):
        items.append(
            {
                "rule": f"rate-{i}",
                "description": "too many messages from one sender",
                "condition": scope,
                "actions": {"rate_limit": {"max": limit, "window_s": window, "then": "hold"}},
                "priority": 40,
            }
        )
    return items


def messages(rng: random.Random, count: int) -> list[Envelope]:
    """Envelopes with 2-3 claims each: tool results, repeats, guesses and contradictions.

    Every agent has one role and one model family. Each conversation has one rumour per
    guessed key, which agents repeat citing its first message (Yellow until two model
    families state it independently); now and then someone starts another one."""
    family = {a: FAMILIES[i % len(FAMILIES)] for i, a in enumerate(AGENTS)}
    role = {a: ROLES[i % len(ROLES)] for i, a in enumerate(AGENTS)}
    role.update(planner="planner", summarizer="summarizer", critic="critic")
    out: list[Envelope] = []
    last: dict[int, str] = {}
    rumours: dict[tuple[int, str], tuple[str, str]] = {}
    for i in range(count):
        conv = rng.randrange(CONVERSATIONS)
        tool = rng.random() < 0.15
        sender = rng.choice(TOOLS) if tool else rng.choice(AGENTS)
        others = [a for a in AGENTS if a != sender]
        recipients = rng.sample(others, rng.choice([0, 0, 1, 2, 3]))
        mid = f"m-{i}"
        claims, cite = [], []
        for key in rng.sample(list(FACTS) if tool else KEYS, rng.choice([2, 2, 3])):
            if key in GUESSES:
                if (conv, key) in rumours and rng.random() < 0.97:
                    value, source = rumours[conv, key]
                    cite.append(source)
                else:
                    value = f"{rng.randint(1, 10**6)} units"
                    rumours[conv, key] = (value, mid)
            else:
                true, wrong = FACTS[key]
                value = wrong if not tool and rng.random() < 0.03 else true
            claims.append(Claim(key, value))
        meta: dict[str, object] = {
            "role": "tool" if tool else role[sender],
            "model_family": family[sender],
        }
        if rng.random() < 0.3:
            meta["priority"] = rng.randint(1, 5)
        if rng.random() < 0.2:
            meta["team"] = rng.choice(["OPS", "research", "sre"])
        kind = (
            Kind.TOOL_RESULT if tool else Kind(rng.choice(["chat"] * 8 + ["tool_call", "action"]))
        )
        out.append(
            Envelope(
                id=mid,
                conversation=f"conv-{conv}",
                sender=sender,
                kind=kind,
                content=rng.choice(["status update", "numbers as discussed", "done", "see above"]),
                recipients=recipients,
                parents=list(dict.fromkeys([*([last[conv]] if conv in last else []), *cite])),
                claims=claims,
                ts=1_700_000_000.0 + i * 0.5,
                meta=meta,
            )
        )
        last[conv] = mid
    return out


def _split(core: Core) -> tuple[list[Stage], RulesStage]:
    """The stages before the rules stage, and the rules stage."""
    stages = list(core.stages)
    (at,) = [i for i, s in enumerate(stages) if isinstance(s, RulesStage)]
    rules = stages[at]
    assert isinstance(rules, RulesStage)
    return stages[:at], rules


def time_rules(
    cfg: Config, warm: list[Envelope], timed: list[Envelope]
) -> tuple[list[float], Counter[int], Counter[str], list[int]]:
    """µs per message of RulesStage.run alone, on a fresh core fed ``warm`` first; also the
    number of rules the key's mask left for each message (their conditions are evaluated
    beyond the key: stage.candidates)."""
    core = build_core(cfg)
    before, stage = _split(core)
    for env in warm:
        core.decide(env)
    clock = time.perf_counter_ns
    times: list[float] = []
    fired: Counter[int] = Counter()
    verdicts: Counter[str] = Counter()
    candidates: list[int] = []
    for env in timed:
        ctx = Context(env, core.state)
        for s in before:
            s.run(ctx)
            if ctx.stopped:
                break
        else:
            n = len(ctx.rules)
            t0 = clock()
            stage.run(ctx)
            times.append((clock() - t0) / 1000)
            fired[len(ctx.rules) - n] += 1
            verdicts[ctx.verdict.value] += 1
            candidates.append(len(stage.candidates(stage.facts(ctx))))  # untimed, after run
        core.decide(env)  # pure: the same decision; advances the state (untimed)
    return times, fired, verdicts, candidates


def time_decide(cfg: Config, warm: list[Envelope], timed: list[Envelope]) -> list[float]:
    core = build_core(cfg)
    for env in warm:
        core.decide(env)
    clock = time.perf_counter_ns
    times = []
    for env in timed:
        t0 = clock()
        core.decide(env)
        times.append((clock() - t0) / 1000)
    return times


def pct(times: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(times, n=100)
    return q[49], q[98]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=5000, help="timed messages per repeat")
    ap.add_argument("--warm", type=int, default=2000, help="messages decided before timing")
    ap.add_argument("--repeat", type=int, default=5, help="repeats; medians are reported")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--profile", action="store_true", help="cProfile one repeat of the stage")
    ap.add_argument("--sort", default="tottime", help="cProfile sort key")
    ap.add_argument("--no-decide", action="store_true", help="skip the decide() cross-check")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench-rules.yaml"
        path.write_text(yaml.safe_dump(rule_file(rng), sort_keys=False), encoding="utf-8")
        t0 = time.perf_counter()
        ruleset = load_rules([path])
        load_ms = (time.perf_counter() - t0) * 1000
        cfg = Config(rules=RulesConfig(paths=[str(path)]))
        msgs = messages(rng, args.warm + args.messages)
        warm, timed = msgs[: args.warm], msgs[args.warm :]
        gc.collect()
        gc.disable()  # measure the rules, not collector pauses caused by the untimed stages
        if args.profile:
            prof = cProfile.Profile()
            core = build_core(cfg)
            before, stage = _split(core)
            for env in warm:
                core.decide(env)
            for env in timed:
                ctx = Context(env, core.state)
                for s in before:
                    s.run(ctx)
                prof.runcall(stage.run, ctx)
                core.decide(env)
            pstats.Stats(prof).sort_stats(args.sort).print_stats(30)
        runs = []
        for _ in range(args.repeat):
            times, fired, verdicts, candidates = time_rules(cfg, warm, timed)
            runs.append(pct(times))
            gc.collect()
        decide: list[tuple[tuple[float, float], tuple[float, float]]] = []
        if not args.no_decide:
            plain = Config()
            for _ in range(args.repeat):
                decide.append(
                    (pct(time_decide(cfg, warm, timed)), pct(time_decide(plain, warm, timed)))
                )
                gc.collect()
        gc.enable()
    n = sum(fired.values())
    mean_fired = sum(k * v for k, v in fired.items()) / n
    print(
        f"python {platform.python_version()} on {platform.machine()}; {len(ruleset.rules)} "
        f"rules loaded in {load_ms:.0f} ms; {args.messages} timed messages after {args.warm}"
    )
    print(
        f"rules fired per message: mean {mean_fired:.2f}, none on {fired[0] / n:.0%}; "
        "verdicts after rules: " + ", ".join(f"{k} {v / n:.0%}" for k, v in verdicts.most_common())
    )
    print(
        f"rules left by the key per message (evaluated beyond it, of {len(ruleset.rules)}): "
        f"mean {statistics.mean(candidates):.1f}, median {statistics.median(candidates):.0f}"
    )
    print(
        "RulesStage.run per message (us), repeats: "
        + ", ".join(f"{a:.1f}/{b:.1f}" for a, b in runs)
    )
    p50 = statistics.median(r[0] for r in runs)
    p99 = statistics.median(r[1] for r in runs)
    print(f"100 rules per message: p50 {p50:.1f} us  p99 {p99:.1f} us  (median of {len(runs)})")
    if decide:
        w50 = statistics.median(d[0][0] for d in decide)
        w99 = statistics.median(d[0][1] for d in decide)
        o50 = statistics.median(d[1][0] for d in decide)
        o99 = statistics.median(d[1][1] for d in decide)
        print(
            f"decide() per message: with rules p50 {w50:.1f} / p99 {w99:.1f} us, without "
            f"p50 {o50:.1f} / p99 {o99:.1f} us; difference p50 {w50 - o50:.1f} us"
        )


if __name__ == "__main__":
    main()
