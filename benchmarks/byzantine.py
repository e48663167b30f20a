"""Byzantine agents against the real core: time to block, and honest agents wrongly blocked.

A team of ``--honest`` honest agents, one tool (``search``), one **equivocator**, one **liar**
and ``--f`` **colluders** talks in 4 conversations through the real router (``MemoryBus``,
``identity.mode: enforce``: every envelope is HMAC-signed and verified). Per round, in
conversation ``round % 4``:

* a few honest agents state unverified figures to random recipients, and one repeats a
  grounded fact after the tool published it;
* the equivocator tells two disjoint pairs of honest agents different values of one key;
* the liar states a false value of the round's key to four honest agents; the tool then
  publishes the true value, which convicts the lie (the delivered message is recalled); each
  honest agent that received the lie and then the recall accuses the liar
  (``kind: accusation``, evidence = the lie) with probability ``--p-accuse``;
* every colluder accuses one honest target (the same for all: the strongest collusion)
  citing the target's latest message, and also accuses a random honest agent.

Reported per strategy (``quorum`` and ``matching``), over ``--seeds`` seeds:

* time to block: the adversary's messages up to and including the first one ostracon
  blocked *as blocklisted or for equivocation* (its Red claims being blocked by containment
  does not count: the agent must be on the blocklist);
* honest agents on the final blocklist, colluders on it.

And the byzantine stage's own cost per message (``core.decide`` with and without it).

    python benchmarks/byzantine.py              # 8 honest, f = 2, 30 rounds, 10 seeds
    python benchmarks/byzantine.py --quick
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
from dataclasses import dataclass, field

from ostracon.byzantine import stage_of
from ostracon.config import parse_config
from ostracon.core import Context
from ostracon.decision import Decision, Verdict
from ostracon.envelope import Claim, Envelope, Kind
from ostracon.identity import HmacSigner, sign
from ostracon.pipeline import build_core
from ostracon.routing import Outcome, Route
from ostracon.transport.memory import MemoryBus

CONVERSATIONS = 4


@dataclass
class Run:
    blocked_at: dict[str, int | None] = field(default_factory=dict)  # adversary -> messages
    sent: dict[str, int] = field(default_factory=dict)
    blocklist: set[str] = field(default_factory=set)


class Team:
    def __init__(self, strategy: str, honest: int, f: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.honest = [f"h{i}" for i in range(honest)]
        self.colluders = [f"c{i}" for i in range(f)]
        agents = [*self.honest, *self.colluders, "equivocator", "liar", "search"]
        yaml = f"byzantine:\n  strategy: {strategy}\n  f: {f}\n"
        yaml += "containment:\n  policy: low-intervention\n"  # lies are delivered, then recalled
        yaml += "identity:\n  mode: enforce\n  agents:\n"
        yaml += "".join(f"    {a}: {{hmac_secret: s-{a}}}\n" for a in agents)
        self.bus = MemoryBus(parse_config(yaml))
        self.signers = {a: HmacSigner(f"s-{a}") for a in agents}
        self.n = 0
        self.run = Run(
            sent={"equivocator": 0, "liar": 0}, blocked_at={"equivocator": None, "liar": None}
        )
        self.last: dict[str, str] = {}  # honest agent -> its latest message id

    def say(
        self,
        conv: str,
        sender: str,
        recipients: list[str],
        claims: dict[str, str] | None = None,
        kind: Kind = Kind.CHAT,
        meta: dict[str, object] | None = None,
    ) -> Outcome:
        self.n += 1
        env = Envelope(
            id=f"m{self.n}",
            conversation=conv,
            sender=sender,
            kind=kind,
            content=f"{sender}: {claims or meta}",
            recipients=recipients,
            claims=[Claim(k, v) for k, v in (claims or {}).items()],
            meta=meta or {},
            ts=time.time(),
        )
        out = self.bus.publish(sign(env, self.signers[sender]))
        if sender in self.run.sent:
            self.run.sent[sender] += 1
            d = out.decision
            on_list = (
                d is not None
                and d.verdict is Verdict.BLOCK
                and ("blocklist" in d.rules or "byzantine" in d.rules)
            )
            if on_list and self.run.blocked_at[sender] is None:
                self.run.blocked_at[sender] = self.run.sent[sender]
        elif sender in self.honest:
            self.last[sender] = env.id
        return out

    def accuse(self, conv: str, accuser: str, accused: str, evidence: list[str]) -> None:
        meta = {"accused": accused, "evidence": evidence}
        self.say(conv, accuser, [], kind=Kind.ACCUSATION, meta=meta)

    def round(self, r: int) -> None:
        rng, honest = self.rng, self.honest
        conv = f"conv-{r % CONVERSATIONS}"
        key = f"metric-{r}"
        for h in rng.sample(honest, 3):  # honest chatter: unverified figures
            self.say(
                conv,
                h,
                rng.sample([x for x in honest if x != h], 2),
                {f"note-{h}-{r}": str(rng.randint(1, 99))},
            )
        # The equivocator: one key, two values, two disjoint audiences.
        a, b = rng.sample(honest, 2), rng.sample(honest, 2)
        while set(a) & set(b):
            b = rng.sample(honest, 2)
        self.say(conv, "equivocator", a, {f"eq-{r}": "up"})
        self.say(conv, "equivocator", b, {f"eq-{r}": "down"})
        # The liar first, then the tool's truth convicts the lie.
        readers = rng.sample(honest, 4)
        lie = self.say(conv, "liar", readers, {key: "9000"})
        truth = self.say(conv, "search", honest[:], {key: "1200"}, Kind.TOOL_RESULT)
        recalled = {
            r_.value.decode() for r_ in truth.outputs if r_.route is Route.RECALLS and r_.value
        }
        lie_delivered = lie.decision is not None and lie.decision.verdict.delivers
        if lie_delivered and any(f'"{lie.envelope.id}"' in x for x in recalled):  # type: ignore[union-attr]
            for h in readers:
                if rng.random() < self.p_accuse:
                    self.accuse(conv, h, "liar", [lie.envelope.id])  # type: ignore[union-attr]
        # One honest agent repeats the grounded fact (a Green claim to be falsely accused on).
        target = honest[0]
        self.say(conv, target, rng.sample(honest[1:], 2), {key: "1200"})
        for c in self.colluders:
            self.accuse(conv, c, target, [self.last[target]])
            other = rng.choice(honest[1:])
            if other in self.last:
                self.accuse(conv, c, other, [self.last[other]])

    p_accuse = 0.5


def simulate(strategy: str, honest: int, f: int, rounds: int, seed: int, p: float) -> Run:
    team = Team(strategy, honest, f, seed)
    team.p_accuse = p
    for r in range(rounds):
        team.round(r)
    team.run.blocklist = set(team.bus.core.state.blocklist)
    return team.run


def stage_cost(messages: int = 20_000) -> tuple[float, float]:
    """(µs per ``core.decide``, µs of it in the byzantine stage's ``run`` + ``observe``):
    messages with a claim and two recipients, each sender consistent (no equivocation
    alerts). The stage is timed from inside (comparing two cores is noise on a shared box);
    the timer's own cost is subtracted."""
    rng = random.Random(1)
    envs = []
    for i in range(messages):
        k = rng.randrange(200)
        envs.append(
            Envelope(
                id=f"m{i}",
                conversation=f"c{i % 50}",
                sender=f"a{i % 20}",
                kind=Kind.CHAT,
                content="x",
                recipients=[f"a{rng.randrange(20)}", f"a{rng.randrange(20)}"],
                claims=[Claim(f"k{k}", str(k % 3))],
            )
        )
    core = build_core(parse_config(""))
    stage = stage_of(core)
    assert stage is not None
    clock = time.perf_counter
    spent = [0.0]
    run, observe = stage.run, stage.observe

    def timed_run(ctx: Context) -> None:
        t = clock()
        run(ctx)
        spent[0] += clock() - t

    def timed_observe(ctx: Context, decision: Decision) -> None:
        t = clock()
        observe(ctx, decision)
        spent[0] += clock() - t

    stage.run, stage.observe = timed_run, timed_observe  # type: ignore[method-assign]
    start = clock()
    for env in envs:
        core.decide(env)
    total = clock() - start
    start = clock()
    for _ in range(2 * messages):  # the timer's own cost, twice per message
        t = clock()
        spent.append(clock() - t)
    timer = clock() - start
    return total / messages * 1e6, (spent[0] - timer) / messages * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--honest", type=int, default=8)
    ap.add_argument("--f", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--p-accuse", type=float, default=0.5)
    ap.add_argument("--quick", action="store_true", help="3 seeds, 12 rounds")
    args = ap.parse_args()
    gc.set_threshold(50_000, 50, 100)  # as the sidecar runs (ostracon.transport.kafka.serve)
    if args.quick:
        args.seeds, args.rounds = 3, 12
    print(
        f"honest={args.honest} f={args.f} rounds={args.rounds} seeds={args.seeds} "
        f"p_accuse={args.p_accuse}"
    )
    print(
        "| strategy | equivocator: messages to block (mean / max) | liar: messages to block "
        "(mean / max) | honest wrongly blocked (mean / max) | colluders blocked (mean) |"
    )
    print("|---|---|---|---|---|")
    for strategy in ("quorum", "matching"):
        runs = [
            simulate(strategy, args.honest, args.f, args.rounds, s, args.p_accuse)
            for s in range(args.seeds)
        ]
        cells = []
        for adversary in ("equivocator", "liar"):
            times = [r.blocked_at[adversary] for r in runs]
            got = [t for t in times if t is not None]
            never = len(times) - len(got)
            cell = f"{statistics.mean(got):.1f} / {max(got)}" if got else "never"
            cells.append(cell + (f" ({never} never)" if never and got else ""))
        wrong = [len(r.blocklist & {f"h{i}" for i in range(args.honest)}) for r in runs]
        colluders = [len(r.blocklist & {f"c{i}" for i in range(args.f)}) for r in runs]
        cells.append(f"{statistics.mean(wrong):.1f} / {max(wrong)}")
        cells.append(f"{statistics.mean(colluders):.1f} of {args.f}")
        print(f"| {strategy} | " + " | ".join(cells) + " |")
    total, stage = stage_cost()
    print(f"\ncore.decide: {total:.1f} µs per message, {stage:.1f} µs of it in the byzantine stage")


if __name__ == "__main__":
    main()
