"""Prometheus metrics for the sidecar, served by prometheus-client.

Per message, the sidecar pays a few plain-Python increments (measured ~0.5 us; a
prometheus-client ``Histogram.observe`` alone costs ~1.3 us): counts live in ints, dicts and
bucket lists, and a custom collector turns them into metric families when Prometheus scrapes.
Counters the sidecar already keeps (``Stats``) are read, not duplicated. The scrape runs on
prometheus-client's server thread; it only copies these containers (atomic under the GIL).
"""

from __future__ import annotations

import bisect
import collections
from collections.abc import Iterator, Sequence
from typing import Protocol

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from ..core import State
from ..decision import Alert, Decision, Verdict
from .grouping import AlertGroups
from .queue import QueuedSink

# Route + decide per record: tens of microseconds normally, milliseconds when a rule or a
# large genealogy is slow.
DURATION_BUCKETS = (
    1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1,
)  # fmt: skip
RISK_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
_HELD = (Verdict.HOLD, Verdict.QUARANTINE)
# Held decisions remembered for the quarantine gauge: never reviewed ones must not grow
# memory without bound (the oldest are forgotten beyond, as in the review queue).
MAX_HELD = 100_000


class SidecarCounts(Protocol):
    """The counters the sidecar keeps anyway (ostracon.transport.kafka.Stats)."""

    consumed: int
    duplicates: int
    routed: collections.Counter  # type: ignore[type-arg]
    verdicts: collections.Counter  # type: ignore[type-arg]
    dead_letter_reasons: collections.Counter  # type: ignore[type-arg]


class _Histogram:
    """Bucket counts and a sum; ``observe`` is a bisect and two adds."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = list(bounds)
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def family(self, name: str, doc: str) -> HistogramMetricFamily:
        counts, total = list(self.counts), self.total
        cumulative, running = [], 0
        for bound, n in zip([*map(str, self.bounds), "+Inf"], counts, strict=True):
            running += n
            cumulative.append((bound, running))
        return HistogramMetricFamily(name, doc, buckets=cumulative, sum_value=total)


class Metrics:
    """Counts decisions and alerts; exposes them (and the sinks' counters) at /metrics."""

    def __init__(
        self,
        stats: SidecarCounts,
        state: State,
        sinks: Sequence[QueuedSink[object]] = (),
        groups: AlertGroups | None = None,
    ) -> None:
        self.stats = stats
        self.state = state
        self.sinks = list(sinks)
        self.groups = groups
        self.rules: collections.Counter[str] = collections.Counter()
        self.alerts: collections.Counter[tuple[str, str]] = collections.Counter()
        self.duration = _Histogram(DURATION_BUCKETS)
        self.risk = _Histogram(RISK_BUCKETS)
        # decision ids held or quarantined, not yet resolved (oldest first; a dict as a set)
        self.held: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._resolved_seen = 0  # len(state.resolved) at the last prune (it only grows)
        self.port: int | None = None
        self._server: object | None = None

    def observe(self, decision: Decision, seconds: float) -> None:
        """One decision (hot path: keep it a handful of adds)."""
        self.duration.observe(seconds)
        self.risk.observe(decision.risk)
        if decision.rules:
            self.rules.update(decision.rules)
        if decision.verdict in _HELD:
            held = self.held
            held[decision.id] = None
            if len(held) > MAX_HELD:
                held.popitem(last=False)

    def alert(self, alert: Alert) -> None:
        self.alerts[alert.kind, alert.severity.value] += 1

    def prune(self) -> None:
        """Forget held decisions a reviewer resolved (called off the hot path)."""
        resolved = self.state.resolved
        if len(resolved) == self._resolved_seen:
            return  # nothing resolved since: no walk over the held ids every tick
        self._resolved_seen = len(resolved)
        for did in [d for d in self.held if d in resolved]:
            del self.held[did]

    # prometheus-client collector protocol
    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        s = self.stats
        yield _counter("ostracon_messages_consumed", "Inbound records read.", s.consumed)
        yield _counter(
            "ostracon_duplicates", "Inbound records dropped as duplicates.", s.duplicates
        )
        yield _labelled(
            "ostracon_decisions",
            "Decisions by verdict.",
            "verdict",
            {v.value: s.verdicts.get(v, 0) for v in Verdict},
        )
        yield _labelled(
            "ostracon_records_produced",
            "Records produced, by output route.",
            "route",
            {str(k): v for k, v in dict(s.routed).items()},
        )
        yield _labelled(
            "ostracon_dead_letters",
            "Inbound records dead-lettered, by reason code.",
            "reason",
            dict(s.dead_letter_reasons),
        )
        yield _labelled(
            "ostracon_rule_matches",
            "Stages and rules that proposed a verdict, by name.",
            "rule",
            dict(self.rules),
        )
        alerts = CounterMetricFamily(
            "ostracon_alerts", "Alerts raised, by kind and severity.", labels=["kind", "severity"]
        )
        for (kind, severity), n in dict(self.alerts).items():
            alerts.add_metric([kind, severity], n)
        yield alerts
        if self.groups is not None:
            yield _counter(
                "ostracon_alerts_grouped",
                "Alerts folded into a group's count instead of notified on their own.",
                self.groups.suppressed,
            )
        yield self.duration.family(
            "ostracon_decide_duration_seconds", "Time to decode, dedupe and decide one record."
        )
        yield self.risk.family("ostracon_decision_risk", "Propagation risk of each decision.")
        yield GaugeMetricFamily(
            "ostracon_quarantine_messages",
            "Messages held or quarantined by this instance and not yet resolved.",
            value=len(self.held),
        )
        yield GaugeMetricFamily(
            "ostracon_blocklist_agents", "Agents on the blocklist.", value=len(self.state.blocklist)
        )
        sinks = [(q.name, q.counters(), q.depth) for q in self.sinks]
        for field, doc in (
            ("sent", "Items a sink delivered."),
            ("dropped", "Items a sink dropped (queue full, retries exhausted, closed)."),
            ("failures", "Failed delivery attempts of a sink."),
        ):
            yield _labelled(
                f"ostracon_sink_{field}", doc, "sink", {n: c[field] for n, c, _ in sinks}
            )
        depth = GaugeMetricFamily("ostracon_sink_queue_items", "Items queued.", labels=["sink"])
        for name, _, d in sinks:
            depth.add_metric([name], d)
        yield depth

    def serve(self, host: str, port: int) -> int:
        """Start the /metrics HTTP server on a thread; returns the bound port."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        server, _thread = start_http_server(port, addr=host, registry=registry)
        self._server = server
        self.port = int(server.server_port)
        return self.port

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()  # type: ignore[attr-defined]
            server.server_close()  # type: ignore[attr-defined]


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _labelled(name: str, doc: str, label: str, values: dict[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, n in values.items():
        family.add_metric([key], n)
    return family
