"""Fleet monitors: what no per-agent guard can see, watched per conversation.

- **Agreement map**: per claim key, which agents hold which value and the agreement ratio
  (largest group / agents with a value), from the genealogy's incremental ``latest`` map.
- **Liveness**: ``liveness_rounds`` assertions on one key without the agreement ratio reaching
  ``agreement_threshold`` -> a ``liveness`` alert (non-convergence is the usual Byzantine
  symptom: stalls, not wrong values). Once per key until it converges.
- **Conformity**: a hub asserts an ungrounded value while agents disagree (at least
  ``conformity_min_values`` values held); if, within ``conformity_window`` messages, every
  agent holds the hub's value -> a ``conformity`` alert (diversity collapsed onto a hub).
- **Early warning**: R = beta * rho(A) / delta every ``early_warning_every`` messages, with A
  the observed communication graph (who reached whom), rho its spectral radius (numpy),
  beta = adoptions / exposures of ungrounded claims and delta = recoveries / infections
  (floored at ``min_recovery``). Crossing 1 upwards -> an ``early-warning`` alert.

The stage only reads state in ``run``; ``observe`` keeps its own small per-conversation
memory. Everything is O(agents) or O(agents^3) for rho on a handful of agents, never a walk
of the claim graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .config import MonitorsConfig
from .core import Context, Stage
from .decision import Alert, Decision, Severity
from .genealogy import Lineage


def agreement_map(lin: Lineage) -> dict[str, dict[str, object]]:
    """key -> {"values": {value: sorted agents}, "ratio": largest share} for a conversation."""
    out: dict[str, dict[str, object]] = {}
    for key, held in lin.latest.items():
        out[key] = {
            "values": _groups(held),
            "ratio": _ratio(held),
        }
    return out


def _ratio(held: dict[str, str]) -> float:
    if not held:
        return 1.0
    counts: dict[str, int] = {}
    for value in held.values():
        counts[value] = counts.get(value, 0) + 1
    return max(counts.values()) / len(held)


def early_warning(lin: Lineage, min_recovery: float) -> tuple[float, float, float, float]:
    """(R, beta, rho, delta) for one conversation."""
    agents = sorted(lin.agents)
    if len(agents) < 2:
        return 0.0, 0.0, 0.0, 1.0
    index = {a: i for i, a in enumerate(agents)}
    adj = np.zeros((len(agents), len(agents)))
    for sender, readers in lin.talks.items():
        for reader in readers:
            adj[index[reader], index[sender]] = 1.0  # reader depends on sender
    rho = float(np.max(np.abs(np.linalg.eigvals(adj))))
    beta = lin.adoptions / lin.exposures if lin.exposures else 0.0
    delta = max(lin.recoveries / lin.infections if lin.infections else 0.0, min_recovery)
    return beta * rho / delta, beta, rho, delta


@dataclass
class _Watch:
    """Per-conversation memory of the monitors."""

    rounds: dict[str, int] = field(default_factory=dict)  # key -> assertions since converged
    stalled: set[str] = field(default_factory=set)  # keys already alerted for liveness
    # key -> (hub, value, messages left in the window)
    hub_push: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    messages: int = 0
    r: float | None = None  # latest early-warning estimate (rules read it)
    r_above: bool = False


class MonitorStage(Stage):
    """Raises liveness, conformity and early-warning alerts; never changes a verdict."""

    name = "monitors"

    def __init__(self, cfg: MonitorsConfig) -> None:
        self.cfg = cfg

    def _watch(self, ctx: Context) -> _Watch:
        return ctx.state.monitors.get(ctx.envelope.conversation) or _Watch()

    def run(self, ctx: Context) -> None:
        env = ctx.envelope
        lin = ctx.state.genealogy.lineage(env.conversation)
        if lin is None:
            return
        watch = self._watch(ctx)
        for claim in ctx.claims:
            key = claim.key
            held = dict(lin.latest.get(key, {}))
            held[env.sender] = claim.value
            converged = len(held) >= 2 and _ratio(held) >= self.cfg.agreement_threshold
            rounds = watch.rounds.get(key, 0) + 1
            disagree = len(set(held.values())) >= 2  # a lone agent repeating itself is no stall
            if (
                disagree
                and not converged
                and rounds >= self.cfg.liveness_rounds
                and key not in watch.stalled
            ):
                self._alert(
                    ctx,
                    "liveness",
                    Severity.WARNING,
                    f"no agreement on {key} after {rounds} assertions: {_describe(held)}",
                    sorted(held),
                )
            push = watch.hub_push.get(key)
            if push and push[2] > 0 and len(held) >= 3 and set(held.values()) == {push[1]}:
                self._alert(
                    ctx,
                    "conformity",
                    Severity.WARNING,
                    f"{len(held)} agents converged on {key} = {push[1]} right after "
                    f"hub {push[0]} asserted it without grounding",
                    sorted(held),
                )
        if (watch.messages + 1) % self.cfg.early_warning_every == 0:
            r, beta, rho, delta = early_warning(lin, self.cfg.min_recovery)
            ctx.notes["r"] = r
            if r > 1.0 and not watch.r_above:
                self._alert(
                    ctx,
                    "early-warning",
                    Severity.CRITICAL,
                    f"cascade early warning: R = {r:.2f} (beta {beta:.2f} x rho "
                    f"{rho:.2f} / delta {delta:.2f}) > 1",
                    sorted(lin.agents),
                )

    def observe(self, ctx: Context, decision: Decision) -> None:
        env = ctx.envelope
        lin = ctx.state.genealogy.lineage(env.conversation)
        watch = ctx.state.monitors.setdefault(env.conversation, _Watch())
        watch.messages += 1
        if "r" in ctx.notes:
            watch.r = float(ctx.notes["r"])  # type: ignore[arg-type]
            watch.r_above = watch.r > 1.0
        for key, (hub, value, left) in list(watch.hub_push.items()):
            if left <= 1:
                del watch.hub_push[key]
            else:
                watch.hub_push[key] = (hub, value, left - 1)
        if lin is None:
            return
        is_hub = bool(ctx.notes.get("hub"))  # decided once by the lineage stage
        for claim in decision.claims:
            key = claim.key
            held = lin.latest.get(key, {})
            if len(held) >= 2 and _ratio(held) >= self.cfg.agreement_threshold:
                watch.rounds.pop(key, None)
                watch.stalled.discard(key)
            else:
                watch.rounds[key] = watch.rounds.get(key, 0) + 1
                if watch.rounds[key] >= self.cfg.liveness_rounds:
                    watch.stalled.add(key)
            before = {v for a, v in held.items() if a != env.sender}
            if (
                is_hub
                and not claim.grounded
                and len(before | {claim.value}) >= (self.cfg.conformity_min_values)
            ):
                watch.hub_push[key] = (env.sender, claim.value, self.cfg.conformity_window)
            elif key in watch.hub_push and len(set(held.values())) == 1:
                del watch.hub_push[key]  # collapsed (alerted in run) or resolved

    def _alert(
        self, ctx: Context, kind: str, severity: Severity, summary: str, agents: list[str]
    ) -> None:
        ctx.alert(
            Alert(
                kind=kind,
                severity=severity,
                summary=summary,
                conversation=ctx.envelope.conversation,
                agents=agents,
                evidence=[ctx.envelope.id],
                rules=[self.name],
            )
        )


def _describe(held: dict[str, str]) -> str:
    return "; ".join(f"{v} ({', '.join(a)})" for v, a in _groups(held).items())


def _groups(held: dict[str, str]) -> dict[str, list[str]]:
    """value -> sorted agents holding it, values sorted."""
    groups: dict[str, list[str]] = {}
    for agent, value in held.items():
        groups.setdefault(value, []).append(agent)
    return {v: sorted(a) for v, a in sorted(groups.items())}
