"""Containment: label each claim, then hold, tag or block by policy before it spreads.

Two stages. ``LineageStage`` extracts the message's claims, places them in the genealogy,
labels them and scores their risk:

- **Green**: grounded (a tool result, a human or a trusted source is in its lineage) or
  independently confirmed (``confirm_support`` roots of distinct model families);
- **Red**: contradicts an established (Green) value of the same key;
- **Yellow**: neither: unverified.

A grounding message that contradicts earlier ungrounded claims convicts them, and so does a
grounding sender's ``meta.refutes`` (a human denying a claim, an LLM judge refuting it):
delivered messages carrying them are recalled, held ones stay quarantined, later repeats
are Red.

``ContainmentStage`` turns labels into a verdict under the configured policy:
low-intervention forwards Yellow tagged, balanced holds Yellow from hub agents (configured
roles or observed hubs) and Yellow whose propagation risk reaches ``hold_risk`` (it is
spreading), strict holds all Yellow; Red is always blocked with feedback to the
sender. After ``max_retries`` contained attempts of the same claim the circuit breaker drops
a persistent Red without more feedback and forwards a persistent Yellow tagged high-risk,
never grounding anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from . import risk
from .claims import DEFAULT_EXTRACTORS, Extractor, extract_claims, make_claim
from .config import ContainmentConfig
from .core import Context, Stage, State
from .decision import Alert, ClaimReport, Decision, Label, Recall, Severity, Verdict
from .genealogy import Link
from .store import Event, QuarantineResolved

CONTAINED = (Verdict.HOLD, Verdict.QUARANTINE, Verdict.BLOCK)


class Verifier(Protocol):
    """Labels a claim, or abstains (None) and lets the next verifier decide.

    Verifiers run inside the pure core: they read the claim's lineage and the state, never
    the network. Checks that need I/O (an LLM judge, a search) belong on the bus as an agent
    whose answers are grounding messages (a ``tool_result``, or a sender listed in
    ``containment.trusted_sources``): they then ground or convict claims like any fact.
    """

    name: str

    def verify(self, link: Link, ctx: Context) -> Label | None: ...


class GroundedMatch:
    """Green when a tool result, a human or a trusted source is in the claim's lineage."""

    name = "grounded-match"

    def verify(self, link: Link, ctx: Context) -> Label | None:
        return Label.GREEN if link.grounded else None


class GroundedContradiction:
    """Red when the claim contradicts an established (grounded or confirmed) value, or
    repeats a value a grounding source refuted."""

    name = "grounded-contradiction"

    def verify(self, link: Link, ctx: Context) -> Label | None:
        return Label.RED if link.contradicts or link.refuted else None


class IndependentConfirmation:
    """Green when enough independent sources (distinct model families) state it."""

    name = "independent-confirmation"

    def __init__(self, confirm_support: int) -> None:
        self.confirm_support = confirm_support

    def verify(self, link: Link, ctx: Context) -> Label | None:
        return Label.GREEN if link.support >= self.confirm_support else None


def default_verifiers(cfg: ContainmentConfig) -> tuple[Verifier, ...]:
    """In order: grounding wins, then contradiction, then independent confirmation."""
    return (GroundedMatch(), GroundedContradiction(), IndependentConfirmation(cfg.confirm_support))


def refutations(ctx: Context) -> list[tuple[str, str]]:
    """The normalized ``(key, value)`` pairs of ``meta.refutes``, when the sender may refute.

    Only a grounding source (tool result, human, trusted sender: an LLM judge, a reviewer)
    convicts by refutation; from anyone else, or malformed, it is alerted and ignored.
    """
    env = ctx.envelope
    raw = env.meta["refutes"]
    problem = ""
    pairs: list[tuple[str, str]] = []
    if not ctx.state.genealogy.grounds(env):
        problem = f"{env.sender} is not a grounding source (tool_result, human or trusted)"
    elif not isinstance(raw, list):
        problem = "meta.refutes must be a list of {key, value} objects"
    else:
        for n, item in enumerate(raw):
            key = item.get("key") if isinstance(item, dict) else None
            if not isinstance(key, str) or not key or "value" not in item:
                problem = f"meta.refutes[{n}] needs a non-empty string key and a value"
                break
            value = item["value"]
            if not (value is None or isinstance(value, str | int | float | bool)):
                problem = f"meta.refutes[{n}].value must be a string, number, boolean or null"
                break
            claim = make_claim(key, value, f"{key} = {value}", "refutes")
            pairs.append((claim.key, claim.value))
    if problem:
        ctx.alert(
            Alert(
                kind="invalid-refutation",
                severity=Severity.WARNING,
                summary=f"refutation in {env.id} ignored: {problem}",
                conversation=env.conversation,
                agents=[env.sender],
                evidence=[env.id],
                rules=[LineageStage.name],
            )
        )
        return []
    return pairs


class LineageStage(Stage):
    """Claims -> genealogy -> labels and risk (``ctx.claims``); recalls on conviction."""

    name = "lineage"

    def __init__(
        self,
        cfg: ContainmentConfig,
        extractors: Sequence[Extractor] = DEFAULT_EXTRACTORS,
        assume_delivered: bool = False,
        verifiers: Sequence[Verifier] | None = None,
    ) -> None:
        self.cfg = cfg
        self.extractors = tuple(extractors)
        self.verifiers = tuple(verifiers if verifiers is not None else default_verifiers(cfg))
        # Replaying a transcript: every message did reach its readers, whatever we decide now.
        self.assume_delivered = assume_delivered
        self.hub_roles = frozenset(cfg.hub_roles)

    def run(self, ctx: Context) -> None:
        env = ctx.envelope
        claims = extract_claims(env, self.extractors)
        state = ctx.state
        gen = state.genealogy
        refuted = refutations(ctx) if env.meta and "refutes" in env.meta else []
        role = env.meta.get("role") if env.meta else None
        hub = (isinstance(role, str) and role in self.hub_roles) or gen.is_hub(
            env.conversation, env.sender, self.cfg.hub_min_dependents
        )
        ctx.notes["hub"] = hub  # for monitors and rules, whether or not the message has claims
        if not claims:
            if refuted:
                ctx.notes["links"] = ()
                self._convict(ctx, (), refuted)
            return
        links = gen.link(env, claims)
        record = state.records.get(env.sender)
        bad_ratio = record[1] / (record[0] + 1) if record else 0.0
        reports = []
        for link in links:
            label, verified_by = Label.YELLOW, ""
            for verifier in self.verifiers:
                verdict = verifier.verify(link, ctx)
                if verdict is not None:
                    label, verified_by = verdict, verifier.name
                    break
            parts = risk.components(
                link.grounded, label is Label.RED, link.reach, link.depth, hub, bad_ratio
            )
            reports.append(
                ClaimReport(
                    id=link.id,
                    key=link.claim.key,
                    value=link.claim.value,
                    label=label,
                    risk=risk.score(parts),
                    grounded=link.grounded,
                    support=link.support,
                    depth=link.depth,
                    reach=link.reach,
                    origins=sorted(link.origins),
                    contradicts=list(link.contradicts),
                    components=parts,
                    verified_by=verified_by,
                )
            )
        ctx.claims = reports
        ctx.risk = max(r.risk for r in reports)
        ctx.notes["links"] = links
        if gen.grounds(env) or refuted:
            self._convict(ctx, links, refuted)

    def _convict(
        self, ctx: Context, links: Sequence[Link], refuted: Sequence[tuple[str, str]] = ()
    ) -> None:
        """A grounded claim convicts the ungrounded claims that say otherwise; a grounding
        sender's ``meta.refutes`` convicts the named values."""
        env = ctx.envelope
        lin = ctx.state.genealogy.lineage(env.conversation)
        if lin is None:
            return
        convicted: list[tuple[str, str]] = []
        targets: dict[tuple[str, str], str] = {}  # (key, value) -> why, each once
        for link in links if ctx.state.genealogy.grounds(env) else ():
            key, truth = link.claim.key, link.claim.value
            values = lin.by_key.get(key, {})
            for value in lin.established.get(key, set()) - {truth}:
                if value not in values:  # its claims were evicted: convict the summary alone
                    convicted.append((key, value))
            why = f"is contradicted by {env.kind.value} {env.id} ({truth})"
            for value in values:
                if value != truth:
                    targets.setdefault((key, value), why)
        for key, value in refuted:
            if value in lin.grounded_values.get(key, ()):
                ctx.alert(
                    Alert(
                        kind="refutation-conflict",
                        severity=Severity.WARNING,
                        summary=f"{env.sender} refutes {key} = {value}, which a grounding "
                        "source stated: not convicted; a human should decide",
                        conversation=env.conversation,
                        agents=[env.sender],
                        evidence=[env.id],
                        rules=[self.name],
                    )
                )
            elif value not in lin.by_key.get(key, {}):
                convicted.append((key, value))  # not said (or evicted): later repeats are Red
            else:
                targets.setdefault((key, value), f"is refuted by {env.sender} in {env.id}")
        for (key, value), why in targets.items():
            values = lin.by_key.get(key, {})
            nodes = values[value]
            # O(values of the key): grounded and already convicted values are skipped without
            # looking at their claims, so each value's claims are scanned once, when convicted.
            if value in lin.grounded_values.get(key, ()) or value in lin.convicted.get(key, ()):
                continue  # a grounded value is never convicted
            # Red claims were contained when they were made: no second recall for them.
            # Claims before the cursor were found Red or convicted by an earlier pass.
            start = lin.conviction_cursor.get((key, value), 0)
            bad = [n for n in nodes[start:] if not n.tainted and not n.contradicts]
            if not bad:
                ctx.notes.setdefault("cursor", []).append((key, value, len(nodes)))  # type: ignore[attr-defined]
                continue
            convicted.append((key, value))
            fingerprint = bad[0].fingerprint
            delivered = sorted({n.message for n in bad if n.delivered})
            held = sorted({n.message for n in bad if not n.delivered})
            reason = f"{key} = {value} {why}"
            ctx.recalls.extend(
                Recall(env.conversation, mid, [fingerprint], reason) for mid in delivered
            )
            ctx.alert(
                Alert(
                    kind="recall",
                    severity=Severity.WARNING,
                    summary=f"{reason}: recalling {len(delivered)} delivered message(s); "
                    f"{len(held)} held one(s) stay quarantined",
                    conversation=env.conversation,
                    agents=sorted({n.sender for n in bad}),
                    evidence=[env.id, *delivered, *held],
                    rules=[self.name],
                )
            )
        if convicted:
            ctx.notes["convict"] = convicted

    def apply_event(self, state: State, event: Event) -> list[Alert]:
        """A released message is delivered from now on (``Genealogy.release``)."""
        if isinstance(event, QuarantineResolved) and event.action == "release":
            state.genealogy.release(event.conversation, event.message_id)
        return []

    def observe(self, ctx: Context, decision: Decision) -> None:
        links: Sequence[Link] | None = ctx.notes.get("links")  # type: ignore[assignment]
        env = ctx.envelope
        state = ctx.state
        gen = state.genealogy
        delivered = self.assume_delivered or decision.verdict.delivers
        if links is None:  # no claims: still a message others may answer or cite
            gen.add(env, (), delivered, self.cfg.confirm_support)
            return
        lin = gen.lineage(env.conversation)
        for key, value, upto in ctx.notes.get("cursor", ()):  # type: ignore[attr-defined]
            if lin is not None:
                lin.conviction_cursor[key, value] = upto
        for key, value in ctx.notes.get("convict", ()):  # type: ignore[attr-defined]
            for node in gen.convict(env.conversation, key, value):
                record = state.records.setdefault(node.sender, [0, 0])
                record[1] += 1
        gen.add(
            env,
            links,
            delivered,
            self.cfg.confirm_support,
            suspect=bool(ctx.notes.get("suspect")),
        )
        record = state.records.setdefault(env.sender, [0, 0])
        record[0] += len(decision.claims)
        record[1] += sum(1 for c in decision.claims if c.label is Label.RED)
        if gen.expired:  # conversations the genealogy dropped: forget them here too
            gone = set(gen.expired)
            gen.expired.clear()
            for conv in gone:
                state.monitors.pop(conv, None)
            state.attempts = {k: v for k, v in state.attempts.items() if k[0] not in gone}
        if decision.verdict in CONTAINED and "containment" in decision.rules:
            # Count only the claims that caused the containment: Red ones when there are any.
            red = [c for c in decision.claims if c.label is Label.RED]
            for claim in red or [c for c in decision.claims if c.label is Label.YELLOW]:
                slot = (env.conversation, env.sender, f"{claim.key}={claim.value}")
                state.attempts[slot] = state.attempts.get(slot, 0) + 1


class ContainmentStage(Stage):
    """Labels -> verdict under the policy, with feedback, retry cap and circuit breaker."""

    name = "containment"

    def __init__(self, cfg: ContainmentConfig) -> None:
        self.cfg = cfg

    def run(self, ctx: Context) -> None:
        if not ctx.claims:
            return
        env = ctx.envelope
        red = [c for c in ctx.claims if c.label is Label.RED]
        yellow = [c for c in ctx.claims if c.label is Label.YELLOW]
        if not red and not yellow:
            return
        offending = red or yellow
        attempts = max(
            ctx.state.attempts.get((env.conversation, env.sender, f"{c.key}={c.value}"), 0)
            for c in offending
        )
        names = ", ".join(f"{c.key} = {c.value}" for c in offending)
        limit = self.cfg.max_retries
        if red:
            why = "; ".join(
                f"{c.key} = {c.value} contradicts the established "
                f"{c.key} = {' | '.join(c.contradicts)}"
                if c.contradicts
                else f"{c.key} = {c.value} was refuted by a grounding source"
                for c in red
            )
            if attempts >= limit:
                ctx.propose(
                    self.name,
                    Verdict.BLOCK,
                    f"circuit breaker: {names} contradicted {attempts} times; dropped",
                )
            else:
                ctx.propose(self.name, Verdict.BLOCK, f"red: {why}")
                ctx.feedback = (
                    f"ostracon blocked your message {env.id}: {why}. Check the source and "
                    f"correct it (attempt {attempts + 1} of {limit})."
                )
            self._alert(ctx, "red-claim", Severity.CRITICAL, f"blocked {names} from {env.sender}")
            return
        hold = self.cfg.policy == "strict" or (
            self.cfg.policy == "balanced"
            and (bool(ctx.notes.get("hub")) or max(c.risk for c in yellow) >= self.cfg.hold_risk)
        )
        keys = ",".join(sorted({c.key for c in yellow}))
        if hold and attempts >= limit:
            ctx.propose(
                self.name,
                Verdict.DELIVER_TAGGED,
                f"circuit breaker: {names} held {attempts} times; forwarded as high-risk",
            )
            ctx.tags["risk"] = "high"
            ctx.tags["unverified"] = keys
            ctx.notes["suspect"] = True
        elif hold:
            ctx.propose(self.name, Verdict.HOLD, f"yellow: {names} is unverified")
            ctx.tags["unverified"] = keys  # what a verifier on the quarantine topic should check
            ctx.feedback = (
                f"ostracon held your message {env.id}: {names} is not backed by a tool result, "
                f"a human or a trusted source. Cite the message it comes from in "
                f"claims[].sources or verify it with a tool (attempt {attempts + 1} of {limit})."
            )
            self._alert(
                ctx,
                "contained-claim",
                Severity.WARNING,
                f"held unverified {names} from {env.sender}",
            )
        else:
            ctx.propose(self.name, Verdict.DELIVER_TAGGED, f"yellow: {names} is unverified")
            ctx.tags["unverified"] = keys

    def _alert(self, ctx: Context, kind: str, severity: Severity, summary: str) -> None:
        env = ctx.envelope
        ctx.alert(
            Alert(
                kind=kind,
                severity=severity,
                summary=summary,
                conversation=env.conversation,
                agents=[env.sender],
                evidence=[env.id],
                rules=[self.name],
            )
        )
