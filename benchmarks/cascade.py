"""Cascade simulator: does one seeded false claim spread through a team, with and without ostracon?

Agents follow the adoption model of "From Spark to Fire" (Xie et al., 2026),

    s_i(t+1) = (1 - δ) s_i + (1 - s_i) (1 - Π_j (1 - β a_ij s_j)),

simulated stochastically and per message: every round every agent speaks once to its
neighbours; an agent that holds the false claim repeats it; an agent that does not hold it
adopts it with probability 1 - (1 - β)^k, where k is the number of messages carrying the false
claim that it actually RECEIVED this round; a holder drops it with probability δ. Without
ostracon every message is delivered; with ostracon every message goes through the real core
(``build_core(config).decide``) and only ``deliver`` / ``deliver-tagged`` verdicts reach the
recipients (``hold``, ``quarantine`` and ``block`` do not).

The team also does honest work. Round 0: a few agents with tool access publish ``tool_result``
messages with the true values of four facts (Q3 revenue, p99 latency, replica count, launch
date); from then on every agent repeats up to two true facts it has received, citing in
``parents`` the message it last received each one from (a tool agent cites its own tool
result); an agent that adopts the false claim cites the message it adopted it from. Agents
with nothing to say yet send a line without claims. All text is free text (no structured
``claims``), written from 8 sentence templates per fact, so the claim extractor is exercised;
the templates are checked against the extractor before anything runs (one fingerprint per fact,
alone, after an opener, and mixed 2-3 to a message).

The false claim is seeded at round ``--seed-round`` (default 3, after the team has talked for
a while, so observed hubs can be detected) at the hub (highest degree; in ``star`` the centre
also carries ``meta.role = "aggregator"``) or at a leaf (lowest degree). Two kinds:

* ``red``: "Q3 revenue was $15M", contradicting the tools' grounded $12M;
* ``yellow``: "customer churn was 7%", a key no tool grounds (unverified).

Topologies: chain, star, mesh (fully connected) and random (Erdős-Rényi, resampled until
connected, p = 2 ln n / n). In ``mesh`` every agent has the same degree: "hub" is agent 0 and
"leaf" the last agent, neither of them a tool agent.

Metrics per scenario (averaged over ``--seeds``):

* infected fraction: share of the n - 1 agents other than the seed that held the false claim
  at any point of the run;
* containment = 1 - with/without (1.0 when nothing spread even without ostracon);
* honest held: share of the ostracon run's messages that carry at least one claim, none of them
  false, and were not delivered;
* rounds to containment: rounds from the seeding round to the last round whose messages
  infected a new agent in the ostracon run (0: nothing spread; "N+": still spreading at the
  end); the worst over seeds;
* LLM calls: outbound network connections attempted while the ostracon runs were decided
  (any LLM verifier would need one). Counted by a guard around ``socket``; expected 0.

Both runs of a scenario use the same seed and common random numbers (each agent draws its
adoption / recovery numbers every round whatever its state), so the difference between the
two runs is ostracon's doing, not the dice. Agents ignore the feedback ostracon sends on a
block or hold (the worst case for ostracon): an agent holding the false claim keeps repeating
it, and after ``max_retries`` contained attempts the circuit breaker drops a Red claim for good
but forwards a Yellow one tagged high-risk, which receivers then adopt like any other message.
Two knobs explore less pessimistic agents (off by default): ``--heed-feedback P`` (an agent
whose false-claim message was contained drops the claim with probability P) and
``--tagged-adoption F`` (a false claim received in a tagged message is adopted with F·β).

    python benchmarks/cascade.py                      # 8/16/32/64 agents, 3 seeds, balanced
    python benchmarks/cascade.py --quick              # 8/16 agents, 1 seed
    python benchmarks/cascade.py --policy strict --seeds 5 --markdown
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import platform
import random
import socket
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import networkx as nx
from rich.console import Console
from rich.table import Table

from ostracon.claims import extract_claims
from ostracon.config import Config, ContainmentConfig
from ostracon.core import Core
from ostracon.decision import Verdict
from ostracon.envelope import Envelope, Kind
from ostracon.pipeline import build_core

TOPOLOGIES = ("chain", "star", "mesh", "random")
SIZES = (8, 16, 32, 64)
POSITIONS = ("hub", "leaf")
CLAIM_TYPES = ("red", "yellow")
FAMILIES = ("gpt", "claude", "llama")  # meta.model_family, round-robin over the agents

# --------------------------------------------------------------------------------------------
# Facts and the sentences agents say them with


@dataclass(frozen=True)
class Fact:
    """One key with its sentence templates; ``forms`` renders a value into template fields."""

    name: str
    forms: Callable[[object], dict[str, str]]
    templates: tuple[str, ...]
    tool_field: str | None = None  # how a tool reports it; None: no tool grounds this key
    tool_value: Callable[[object], object] | None = None


_WORDS = "zero one two three four five six seven eight nine".split()


def _money(value: object) -> dict[str, str]:
    m = int(str(value))  # millions
    return {"m": str(m), "full": f"{m * 1_000_000:,}", "raw": str(m * 1_000_000)}


def _date(d: object) -> dict[str, str]:
    assert isinstance(d, datetime.date)
    month = d.strftime("%B")
    return {
        "long": f"{month} {d.day}, {d.year}",
        "dmy": f"{d.day} {month} {d.year}",
        "ord": f"{d.day}{_ordinal(d.day)} {month} {d.year}",
        "iso": d.isoformat(),
        "slash": d.strftime("%Y/%m/%d"),
    }


def _ordinal(day: int) -> str:
    if 10 <= day % 100 <= 20:
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")


REVENUE = Fact(
    "revenue",
    _money,
    (
        "Q3 revenue was ${m}M.",
        "The revenue for Q3 is {m} million dollars.",
        "Revenue in Q3: ${full}.",
        "I can confirm Q3 revenue = {m}M USD.",
        "Q3 revenue came to ${m} million.",
        "FYI: revenue (Q3) was {full} USD.",
        "Q3 revenue totaled USD {m}m.",
        "Per the finance report, Q3 revenue amounted to ${m}M.",
    ),
    "q3_revenue",
    lambda m: f"{int(str(m)) * 1_000_000} USD",
)
LATENCY = Fact(
    "latency",
    lambda ms: {"ms": str(ms), "s": f"{int(str(ms)) / 1000:g}"},
    (
        "The p99 latency is {ms} ms.",
        "p99 latency: {s} s.",
        "I can confirm the p99 latency = {ms}ms.",
        "Latency at p99 was {ms} ms.",
        "Measured p99 latency: {ms} ms.",
        "p99 latency reached {s} seconds.",
        "Our p99 latency came to {ms} milliseconds.",
        "p99 latency was {ms} ms for the API.",
    ),
    "p99_latency",
    lambda ms: f"{ms} ms",
)
REPLICAS = Fact(
    "replicas",
    lambda n: {"n": str(n), "word": _WORDS[int(str(n))]},
    (
        "The deployment runs {n} replicas.",
        "Replica count is {n}.",
        "We are running {word} replicas.",
        "I can confirm replica count = {n}.",
        "The number of replicas is {n}.",
        "Replicas: {n}.",
        "We have {n} replicas.",
        "The service has {word} replicas.",
    ),
    "replicas",
    lambda n: n,
)
LAUNCH = Fact(
    "launch",
    _date,
    (
        "The launch date is {long}.",
        "Launch date: {iso}.",
        "I can confirm the launch date = {slash}.",
        "Our launch date is {dmy}.",
        "The launch is on {long}.",
        "Launch date was {ord}.",
        "The launch date moved to {iso}.",
        "We launch on {long}.",
    ),
    "launch_date",
    lambda d: d.isoformat(),  # type: ignore[attr-defined]
)
CHURN = Fact(
    "churn",
    lambda p: {"p": str(p)},
    (
        "Customer churn was {p}%.",
        "The customer churn is {p} percent.",
        "Customer churn: {p}%.",
        "I can confirm customer churn = {p}%.",
        "Our customer churn came to {p} percent.",
        "Customer churn rose to {p}%.",
        "FYI: customer churn hit {p}%.",
        "Heads up, customer churn reached {p}%.",
    ),
)

GROUNDED = (REVENUE, LATENCY, REPLICAS, LAUNCH)  # the tools know these
TRUTH: dict[str, object] = {
    "revenue": 12,
    "latency": 120,
    "replicas": 3,
    "launch": datetime.date(2024, 3, 5),
}
# The false claims: (fact, value). Red contradicts a grounded value; yellow is about a key
# no tool grounds.
FALSE: dict[str, tuple[Fact, object]] = {"red": (REVENUE, 15), "yellow": (CHURN, 7)}

OPENERS = ("", "Update: ", "Ack. ", "Agreed. ", "Status update: ")
IDLE = (
    "No update from me yet.",
    "Still waiting on the numbers.",
    "Thanks, noted.",
    "Looking into it now.",
)
# Phrasings tried and dropped because the extractor (ostracon.claims as of 2026-11-21) gives
# them a different key than the fact's other sentences, so they would not link:
REJECTED = {
    "Q3 revenue stands at $12M.": "'q3 revenue stand' ('stands at' loses to 'at')",
    "Our Q3 revenue came in at USD 12m.": "'came q3 revenue' ('came in at' loses to 'at')",
    "Q3 revenue peaked at $12M.": "'peaked q3 revenue' ('peaked at' loses to 'at')",
    "Looks like Q3 revenue hit $12M.": "'like look q3 revenue'",
    "The launch is scheduled for 5th March 2024.": "'launch scheduled' ('for' wins)",
    "Launch date was set for March 5, 2024.": "'launch set' ('set for' loses to 'for')",
    "Launch is due on 2024-03-05.": "'due launch' ('due on' loses to 'on')",
    "Launch happened on March 5, 2024.": "'happened launch'",
    "Customer churn stood at 7 percent.": "'churn customer stood'",
    "Quick note: <any sentence>": "adds a named-value claim quick = <first words>",
    # A word value followed by another sentence runs across the full stop (named-value):
    # "Replica count is three. Q3 revenue came to $12M." also gives
    # replica = "three. q3 revenue came", which contradicts the grounded replica = 3.
    "The replica count: three.": "'replica = three. <next sentence>' when followed by one",
    "Current replica count is three.": "same as above",
    "Three replicas are deployed.": "adds 'deployed replica three = true' (yes-no)",
}


def sentence(fact: Fact, value: object, rng: random.Random) -> str:
    return rng.choice(fact.templates).format(**fact.forms(value))


def tool_output(facts: list[Fact], rng: random.Random) -> str:
    fields = {f.tool_field: f.tool_value(TRUTH[f.name]) for f in facts}  # type: ignore[misc]
    if rng.random() < 0.5:
        return json.dumps(fields)
    return "Tool output -> " + "; ".join(f"{k} = {v}" for k, v in fields.items())


# --------------------------------------------------------------------------------------------
# Template self-check: every template must extract to exactly the fact's fingerprint


def _fingerprints(text: str, kind: Kind = Kind.CHAT) -> set[str]:
    env = Envelope(id="check", conversation="check", sender="a", kind=kind, content=text)
    return {c.fingerprint for c in extract_claims(env)}


def check_templates(samples: int = 400) -> tuple[int, list[str]]:
    """(texts checked, problems). Each sentence alone, after each opener, mixed 2-3 per
    message, and the tool outputs; idle lines must give no claims."""
    values = [(f, TRUTH[f.name]) for f in GROUNDED] + list(FALSE.values())
    expected: dict[tuple[str, str], str] = {}
    problems: list[str] = []
    checked = 0
    for fact, value in values:
        fields = fact.forms(value)
        first = None
        for template in fact.templates:
            text = template.format(**fields)
            for opener in OPENERS:
                got = _fingerprints(opener + text)
                checked += 1
                if first is None and len(got) == 1:
                    first = next(iter(got))
                if len(got) != 1 or next(iter(got)) != first:
                    problems.append(f"{opener + text!r} -> {sorted(got)} (want {first})")
        expected[(fact.name, str(value))] = first or "?"
    for fact in GROUNDED:  # tool outputs must carry the same fingerprints as the sentences
        want = expected[(fact.name, str(TRUTH[fact.name]))]
        for text in (tool_output([fact], random.Random(0)), tool_output([fact], random.Random(1))):
            got = _fingerprints(text, Kind.TOOL_RESULT)
            checked += 1
            if got != {want}:
                problems.append(f"tool {text!r} -> {sorted(got)} (want {want})")
    rng = random.Random(2026)
    for _ in range(samples):
        picked = rng.sample(values, rng.randint(2, 3))
        if len({f.name for f, _ in picked}) < len(picked):
            continue
        text = rng.choice(OPENERS) + " ".join(sentence(f, v, rng) for f, v in picked)
        wanted = {expected[(f.name, str(v))] for f, v in picked}
        got = _fingerprints(text)
        checked += 1
        if got != wanted:
            problems.append(f"{text!r} -> {sorted(got)} (want {sorted(wanted)})")
    for line in IDLE:
        checked += 1
        if _fingerprints(line):
            problems.append(f"idle {line!r} -> {sorted(_fingerprints(line))} (want none)")
    return checked, problems


# --------------------------------------------------------------------------------------------
# Topologies


@dataclass
class Topology:
    name: str
    n: int
    neighbours: list[list[int]]
    hub: int
    leaf: int
    tools: dict[int, list[Fact]]  # tool agent -> the facts its tool reports


def build_topology(name: str, n: int, seed: int) -> Topology:
    rng = random.Random(f"topology/{name}/{n}/{seed}")
    if name == "chain":
        g = nx.path_graph(n)
    elif name == "star":
        g = nx.star_graph(n - 1)  # centre 0
    elif name == "mesh":
        g = nx.complete_graph(n)
    elif name == "random":
        p = min(1.0, 2 * math.log(n) / n)
        while True:
            g = nx.gnp_random_graph(n, p, seed=rng.randrange(2**32))
            if nx.is_connected(g):
                break
    else:
        raise ValueError(name)
    degree = dict(g.degree())
    hub = min(range(n), key=lambda i: (-degree[i], i))
    leaf = min((i for i in range(n) if i != hub), key=lambda i: (degree[i], -i))
    candidates = [i for i in range(n) if i not in (hub, leaf)]
    count = max(2, n // 8)
    chosen = sorted(rng.sample(candidates, count))
    tools: dict[int, list[Fact]] = {i: [] for i in chosen}
    for f, fact in enumerate(GROUNDED):
        tools[chosen[f % count]].append(fact)
    for j in range(len(GROUNDED), count):  # extra tools re-check a fact
        tools[chosen[j]].append(GROUNDED[j % len(GROUNDED)])
    neighbours = [sorted(g.neighbors(i)) for i in range(n)]
    return Topology(name, n, neighbours, hub, leaf, tools)


# --------------------------------------------------------------------------------------------
# One run


@dataclass
class Message:
    id: str
    sender: int
    recipients: list[int]
    facts: list[str]  # true facts stated (names)
    false: bool  # carries the false claim
    delivered: bool = True
    tagged: bool = False


@dataclass
class RunResult:
    ever: set[int] = field(default_factory=set)
    infection_rounds: list[int] = field(default_factory=list)  # rounds that infected someone
    honest: int = 0  # claim-carrying messages with no false claim
    honest_held: int = 0
    false_sent: int = 0
    false_delivered: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)  # of false-claim messages
    decisions: int = 0


@dataclass(frozen=True)
class Params:
    beta: float = 0.4
    delta: float = 0.1
    rounds: int = 30
    seed_round: int = 3
    policy: str = "balanced"
    # Sensitivity knobs; the defaults are the worst case for ostracon and the benchmark's
    # reported configuration. heed: chance that an agent whose false-claim message was
    # contained (its sender gets ostracon's feedback) drops the claim. tagged: factor on β
    # for a false claim received in a message delivered tagged (unverified / high-risk).
    heed: float = 0.0
    tagged: float = 1.0


def agent_name(i: int) -> str:
    return f"agent-{i:02d}"


def run(
    topo: Topology, position: str, claim_type: str, seed: int, p: Params, core: Core | None
) -> RunResult:
    """One scenario, without ostracon (``core`` None) or through ``core``."""
    n = topo.n
    seeded = topo.hub if position == "hub" else topo.leaf
    false_fact, false_value = FALSE[claim_type]
    tag = f"{topo.name}/{n}/{position}/{claim_type}/{seed}"
    dyn = random.Random(f"dynamics/{tag}")  # same draws with and without ostracon
    text = random.Random(f"text/{tag}")
    conversation = f"cascade-{tag}"
    names = [agent_name(i) for i in range(n)]
    metas = [
        {
            "role": "aggregator" if topo.name == "star" and i == topo.hub else "worker",
            "model_family": FAMILIES[i % len(FAMILIES)],
        }
        for i in range(n)
    ]
    infected = [False] * n
    source: list[str | None] = [None] * n  # message the false claim was adopted from
    known: list[dict[str, str]] = [{} for _ in range(n)]  # fact -> message last received from
    res = RunResult()

    for t in range(p.rounds):
        if t == p.seed_round:
            infected[seeded] = True
            res.ever.add(seeded)
        inbox: list[list[Message]] = [[] for _ in range(n)]
        contained = [False] * n  # this round's false-claim message was not delivered
        for i in range(n):
            mid = f"r{t:02d}-a{i:02d}"
            parents: list[str] = []
            facts: list[str] = []
            kind = Kind.CHAT
            if t == 0 and i in topo.tools:
                kind = Kind.TOOL_RESULT
                own = topo.tools[i]
                content = tool_output(own, text)
                facts = [f.name for f in own]
                for f in own:
                    known[i][f.name] = mid
            else:
                parts: list[str] = []
                if infected[i]:
                    parts.append(sentence(false_fact, false_value, text))
                    adopted_from = source[i]
                    if adopted_from is not None:
                        parents.append(adopted_from)
                sayable = [
                    f
                    for f in GROUNDED
                    if f.name in known[i] and not (infected[i] and f is false_fact)
                ]
                for f in text.sample(sayable, min(len(sayable), 1 if infected[i] else 2)):
                    parts.append(sentence(f, TRUTH[f.name], text))
                    facts.append(f.name)
                    if known[i][f.name] not in parents:
                        parents.append(known[i][f.name])
                text.shuffle(parts)
                content = (text.choice(OPENERS) + " ".join(parts)) if parts else text.choice(IDLE)
            msg = Message(mid, i, topo.neighbours[i], facts, infected[i])
            if core is not None:
                env = Envelope(
                    id=mid,
                    conversation=conversation,
                    sender=names[i],
                    kind=kind,
                    content=content,
                    recipients=[names[j] for j in msg.recipients],
                    parents=parents,
                    ts=float(t),
                    meta=metas[i],
                )
                verdict = core.decide(env).verdict
                res.decisions += 1
                msg.delivered = verdict.delivers
                msg.tagged = verdict is Verdict.DELIVER_TAGGED
                if msg.false:
                    res.verdicts[verdict.value] = res.verdicts.get(verdict.value, 0) + 1
            if msg.false:
                res.false_sent += 1
                res.false_delivered += msg.delivered
                contained[i] = not msg.delivered
            elif facts:
                res.honest += 1
                res.honest_held += not msg.delivered
            if msg.delivered:
                for j in msg.recipients:
                    inbox[j].append(msg)
        # Everyone draws every round (common random numbers), then the model updates.
        newly = False
        for i in range(n):
            u_adopt, u_recover, u_pick, u_heed = (dyn.random() for _ in range(4))
            for m in inbox[i]:
                for name in m.facts:
                    known[i][name] = m.id
            if infected[i]:
                if u_recover < p.delta or (contained[i] and u_heed < p.heed):
                    infected[i] = False
                    source[i] = None
                continue
            carriers = [m for m in inbox[i] if m.false]
            # 1 - Π_j (1 - β a_ij s_j) over the received carriers (β scaled for tagged ones)
            stay = math.prod(1 - p.beta * (p.tagged if m.tagged else 1.0) for m in carriers)
            if carriers and u_adopt < 1 - stay:
                infected[i] = True
                source[i] = carriers[int(u_pick * len(carriers))].id
                if i not in res.ever:
                    res.ever.add(i)
                    newly = True
        if newly:
            res.infection_rounds.append(t)
    return res


# --------------------------------------------------------------------------------------------
# Network guard: counts any outbound connection the core attempts (an LLM call would need one)


class _Guard:
    attempts = 0


@contextlib.contextmanager
def no_network() -> Iterator[type[_Guard]]:
    real_connect, real_create = socket.socket.connect, socket.create_connection

    def refuse(*args: object, **kwargs: object) -> None:
        _Guard.attempts += 1
        raise OSError("cascade benchmark: network access is not expected")

    socket.socket.connect = refuse  # type: ignore[method-assign,assignment]
    socket.create_connection = refuse  # type: ignore[assignment]
    try:
        yield _Guard
    finally:
        socket.socket.connect = real_connect  # type: ignore[method-assign]
        socket.create_connection = real_create


# --------------------------------------------------------------------------------------------
# Scenarios and the table


@dataclass
class Row:
    topology: str
    n: int
    position: str
    claim: str
    without: float
    with_: float
    honest: int
    honest_held: int
    rounds: int  # worst over seeds
    open_: bool  # still spreading at the end in some seed
    llm_calls: int
    verdicts: dict[str, int]

    @property
    def containment(self) -> float:
        return 1.0 if self.without == 0 else 1 - self.with_ / self.without

    @property
    def held(self) -> float:
        return self.honest_held / self.honest if self.honest else 0.0


def scenario(
    name: str, n: int, position: str, claim: str, seeds: int, p: Params, cfg: Config
) -> Row:
    without, with_, rounds = [], [], []
    honest = held = 0
    open_ = False
    verdicts: dict[str, int] = {}
    calls = 0
    for s in range(seeds):
        topo = build_topology(name, n, s)
        seeded = topo.hub if position == "hub" else topo.leaf
        base = run(topo, position, claim, s, p, None)
        with no_network() as guard:
            before = guard.attempts
            gov = run(topo, position, claim, s, p, build_core(cfg))  # a fresh core per run
            calls += guard.attempts - before
        without.append(len(base.ever - {seeded}) / (n - 1))
        with_.append(len(gov.ever - {seeded}) / (n - 1))
        honest += gov.honest
        held += gov.honest_held
        last = max(gov.infection_rounds, default=None)
        rounds.append(0 if last is None else last - p.seed_round + 1)
        open_ = open_ or last == p.rounds - 1
        for k, v in gov.verdicts.items():
            verdicts[k] = verdicts.get(k, 0) + v
    return Row(
        name,
        n,
        position,
        claim,
        statistics.fmean(without),
        statistics.fmean(with_),
        honest,
        held,
        max(rounds),
        open_,
        calls,
        verdicts,
    )


HEADERS = (
    "topology",
    "n",
    "seed at",
    "claim",
    "infected without",
    "infected with",
    "containment",
    "honest held",
    "rounds to containment",
    "LLM calls",
)


def cells(r: Row) -> list[str]:
    return [
        r.topology,
        str(r.n),
        r.position,
        r.claim,
        f"{r.without:.3f}",
        f"{r.with_:.3f}",
        f"{r.containment:.3f}",
        f"{100 * r.held:.3f}%",
        f"{r.rounds}{'+' if r.open_ else ''}",
        str(r.llm_calls),
    ]


@dataclass
class Means:
    label: str
    rows: list[Row]

    def cells(self) -> list[str]:
        rs = self.rows
        honest = sum(r.honest for r in rs)
        held = sum(r.honest_held for r in rs)
        return [
            self.label,
            "",
            "",
            "",
            f"{statistics.fmean(r.without for r in rs):.3f}",
            f"{statistics.fmean(r.with_ for r in rs):.3f}",
            f"{statistics.fmean(r.containment for r in rs):.3f}",
            f"{100 * held / honest if honest else 0:.3f}%",
            f"{statistics.fmean(r.rounds for r in rs):.1f}",
            str(sum(r.llm_calls for r in rs)),
        ]


def means(rows: list[Row]) -> list[Means]:
    out = [Means("mean (all)", rows)]
    for claim in CLAIM_TYPES:
        out.append(Means(f"mean ({claim})", [r for r in rows if r.claim == claim]))
    for pos in POSITIONS:
        for claim in CLAIM_TYPES:
            sub = [r for r in rows if r.position == pos and r.claim == claim]
            out.append(Means(f"mean ({pos}, {claim})", sub))
    return [m for m in out if m.rows]


def print_rich(rows: list[Row], summary: list[Means], console: Console, title: str) -> None:
    table = Table(title=title)
    for h in HEADERS:
        table.add_column(h, justify="left" if h in ("topology", "seed at", "claim") else "right")
    for r in rows:
        table.add_row(*cells(r))
    table.add_section()
    for m in summary:
        table.add_row(*m.cells(), style="bold")
    console.print(table)


def print_markdown(rows: list[Row], summary: list[Means]) -> None:
    right = {h: h not in ("topology", "seed at", "claim") for h in HEADERS}
    print("| " + " | ".join(HEADERS) + " |")
    print("|" + "|".join("---:" if right[h] else "---" for h in HEADERS) + "|")
    for r in rows:
        print("| " + " | ".join(cells(r)) + " |")
    for m in summary:
        c = m.cells()
        c[0] = f"**{c[0]}**"
        print("| " + " | ".join(c) + " |")


def sweep(args: argparse.Namespace, p: Params, cfg: Config) -> list[Row]:
    """Every scenario (topology x size x seed position x claim type) under one setting."""
    return [
        scenario(name, n, pos, claim, args.seeds, p, cfg)
        for name in args.topologies
        for n in args.sizes
        for pos in POSITIONS
        for claim in CLAIM_TYPES
    ]


AGENT_MODELS = {  # name -> (heed, tagged)
    "ignore feedback and tags": (0.0, 1.0),
    "heed feedback 0.5": (0.5, 1.0),
    "heed feedback 0.5, tagged adoption 0.5": (0.5, 0.5),
}


def grid(args: argparse.Namespace, p: Params, console: Console) -> int:
    """One summary row per policy x agent model: where the target holds, and where not."""
    headers = [
        "policy",
        "agents",
        "containment (all)",
        "red",
        "yellow",
        "honest held",
        "LLM calls",
        "target",
    ]
    lines = []
    for policy in ("low-intervention", "balanced", "strict"):
        cfg = Config(containment=ContainmentConfig(policy=policy))
        for model, (heed, tagged) in AGENT_MODELS.items():
            q = replace(p, policy=policy, heed=heed, tagged=tagged)
            rows = sweep(args, q, cfg)
            honest = sum(r.honest for r in rows)
            held = sum(r.honest_held for r in rows)
            mean = statistics.fmean(r.containment for r in rows)
            ok = mean >= 0.97 and held <= 0.01 * honest
            by = {
                c: statistics.fmean(r.containment for r in rows if r.claim == c)
                for c in CLAIM_TYPES
            }
            lines.append(
                [
                    policy,
                    model,
                    f"{mean:.3f}",
                    f"{by['red']:.3f}",
                    f"{by['yellow']:.3f}",
                    f"{held} of {honest} ({100 * held / max(honest, 1):.3f}%)",
                    str(sum(r.llm_calls for r in rows)),
                    "met" if ok else "not met",
                ]
            )
            console.print(" | ".join(lines[-1]), markup=False)
    if args.markdown:
        print("| " + " | ".join(headers) + " |")
        print("|---|---|" + "---:|" * (len(headers) - 3) + "---|")
        for line in lines:
            print("| " + " | ".join(line) + " |")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--policy", default="balanced", choices=("low-intervention", "balanced", "strict")
    )
    ap.add_argument("--seeds", type=int, default=3, help="seeds averaged per scenario")
    ap.add_argument("--quick", action="store_true", help="8 and 16 agents, 1 seed")
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    ap.add_argument("--topologies", nargs="+", default=list(TOPOLOGIES), choices=TOPOLOGIES)
    ap.add_argument("--beta", type=float, default=Params.beta)
    ap.add_argument("--delta", type=float, default=Params.delta)
    ap.add_argument("--rounds", type=int, default=Params.rounds)
    ap.add_argument("--seed-round", type=int, default=Params.seed_round)
    ap.add_argument(
        "--heed-feedback",
        type=float,
        default=Params.heed,
        help="chance an agent drops the false claim after ostracon contains its message "
        "(default 0: agents ignore feedback)",
    )
    ap.add_argument(
        "--tagged-adoption",
        type=float,
        default=Params.tagged,
        help="factor on β for false claims received in tagged messages (default 1)",
    )
    ap.add_argument(
        "--hold-risk",
        type=float,
        default=None,
        help="containment.hold_risk for balanced (default: the config default)",
    )
    ap.add_argument(
        "--grid",
        action="store_true",
        help="summary only, for every policy x agent model (ignore feedback; heed it half "
        "the time; also discount tagged claims by half)",
    )
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    ap.add_argument("--verbose", action="store_true", help="verdicts of false-claim messages")
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.seeds = [8, 16], 1
    if not 0 <= args.seed_round < args.rounds:
        ap.error("--seed-round must be within --rounds")
    p = Params(
        args.beta,
        args.delta,
        args.rounds,
        args.seed_round,
        args.policy,
        args.heed_feedback,
        args.tagged_adoption,
    )
    cfg = Config(
        containment=ContainmentConfig(
            policy=args.policy,
            hold_risk=args.hold_risk
            if args.hold_risk is not None
            else ContainmentConfig().hold_risk,
        )
    )
    console = Console(stderr=args.markdown, width=max(132, Console().width))

    checked, problems = check_templates()
    if problems:
        console.print(f"[red]template self-check failed ({len(problems)} of {checked}):")
        for line in problems[:40]:
            console.print(f"  {line}", markup=False)
        return 2
    console.print(
        f"template self-check: {checked} texts, every fact extracted to one fingerprint",
        markup=False,
    )

    if args.grid:
        return grid(args, p, console)
    started = time.perf_counter()
    rows = sweep(args, p, cfg)
    elapsed = time.perf_counter() - started
    summary = means(rows)
    title = (
        f"cascade: policy {p.policy}, β={p.beta}, δ={p.delta}, {p.rounds} rounds, seeded at "
        f"round {p.seed_round}, {args.seeds} seed(s)"
    )
    if p.heed or p.tagged != 1.0:
        title += f", heed-feedback {p.heed}, tagged-adoption {p.tagged}"
    if args.markdown:
        print(f"{title}\n")
        print_markdown(rows, summary)
    else:
        print_rich(rows, summary, console, title)
    if args.verbose:
        for r in rows:
            console.print(
                f"{r.topology:>6} {r.n:>2} {r.position:>4} {r.claim:>6}: false-claim verdicts "
                f"{dict(sorted(r.verdicts.items()))}",
                markup=False,
            )
    overall = summary[0]
    honest = sum(r.honest for r in rows)
    held = sum(r.honest_held for r in rows)
    pooled_without = sum(r.without for r in rows)
    pooled = 1 - sum(r.with_ for r in rows) / pooled_without if pooled_without else 1.0
    mean_containment = statistics.fmean(r.containment for r in rows)
    ok = mean_containment >= 0.97 and (held / honest if honest else 0) <= 0.01
    console.print(
        f"{overall.label}: containment {mean_containment:.3f} (pooled {pooled:.3f}), honest "
        f"messages held {held}/{honest} = {100 * held / max(honest, 1):.3f}%, LLM calls "
        f"{sum(r.llm_calls for r in rows)}; target containment >= 0.97 with <= 1% honest "
        f"held: {'met' if ok else 'NOT met'}",
        markup=False,
    )
    console.print(
        f"{len(rows)} scenarios x {args.seeds} seed(s), "
        f"{sum(r.honest for r in rows)} honest claim-carrying messages decided; "
        f"{elapsed:.1f} s on {platform.python_implementation()} {platform.python_version()}",
        markup=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
