"""The sinks of one sidecar, fed from its message path without ever waiting on them.

The sidecar hands every routed outcome to :meth:`SinkHub.outcome` (its alert records, the
decision's and those the router added, are notified) and every standalone alert to
:meth:`SinkHub.alert`. The hub counts metrics in place, queues a span per decision for
OTLP, stamps alerts with the wall clock where the message had no time, groups repeats
(ostracon.sinks.grouping) and offers the notifications to the log, Alertmanager and webhook
sinks' bounded queues. Nothing here awaits I/O; the sinks' workers do, on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import msgspec

from ..config import SinksConfig
from ..core import State
from ..decision import Alert, Severity, alert_id
from ..logs import get_logger
from ..routing import Outcome, Route
from .alertmanager import AlertmanagerSink
from .grouping import SEVERITY_RANK, AlertGroups, Notification
from .log import LogSink
from .metrics import Metrics, SidecarCounts
from .queue import QueuedSink
from .webhook import WebhookSink

log = get_logger("ostracon.sinks")
_alert_decoder = msgspec.json.Decoder(Alert)


class SinkHub:
    """Build with :meth:`from_config`; ``await start()``, feed, ``await close()``."""

    def __init__(self, cfg: SinksConfig, stats: SidecarCounts, state: State) -> None:
        self.cfg = cfg
        g = cfg.grouping
        self.groups = AlertGroups(g.window_s, g.max_groups, g.rate_per_minute)
        # (sink, lowest severity rank it wants)
        self.notifiers: list[tuple[QueuedSink[Notification], int]] = []
        if cfg.log.enabled:
            self.notifiers.append((LogSink(cfg.log), _rank(cfg.log.min_severity)))
        if cfg.alertmanager.enabled:
            am = cfg.alertmanager
            self.notifiers.append((AlertmanagerSink(am), _rank(am.min_severity)))
        if cfg.webhook.enabled:
            self.notifiers.append((WebhookSink(cfg.webhook), _rank(cfg.webhook.min_severity)))
        self.otlp: Any = None  # OtlpSink; imported only when enabled (the SDK is heavy)
        if cfg.otlp.enabled:
            from .otlp import OtlpSink

            self.otlp = OtlpSink(cfg.otlp)
        self.sinks: list[QueuedSink[Any]] = [s for s, _ in self.notifiers]
        if self.otlp is not None:
            self.sinks.append(self.otlp)
        self.metrics = (
            Metrics(stats, state, self.sinks, self.groups) if cfg.prometheus.enabled else None
        )
        self._ticker: asyncio.Task[None] | None = None

    @classmethod
    def from_config(cls, cfg: SinksConfig, stats: SidecarCounts, state: State) -> SinkHub | None:
        """The hub, or None when no sink is enabled (then the sidecar pays nothing)."""
        return cls(cfg, stats, state) if cfg.any_enabled else None

    async def start(self) -> None:
        for sink in self.sinks:
            await sink.start()
        if self.metrics is not None:
            p = self.cfg.prometheus
            port = self.metrics.serve(p.host, p.port)
            log.info("metrics endpoint serving", url=f"http://{p.host}:{port}/metrics")
        self._ticker = asyncio.create_task(self._tick(), name="sinks-tick")

    def outcome(self, outcome: Outcome, seconds: float) -> None:
        """One routed record (hot path: counts and queue appends only)."""
        decision = outcome.decision
        if decision is not None:
            if self.metrics is not None:
                self.metrics.observe(decision, seconds)
            otlp = self.otlp
            if otlp is not None and otlp.wants(decision):
                otlp.offer((outcome.envelope, decision, time.time(), seconds))
        # The alert records, not decision.alerts: the router adds alerts of its own beside
        # the decision (identity failures, even on a dead letter; accusations' blocklist
        # changes; a lost quorum release), and every one must reach people.
        alerted = False
        for out in outcome.outputs:
            if out.route is Route.ALERTS and out.value:
                self.alert(_alert_decoder.decode(out.value))
                alerted = True
        error = outcome.error
        if error is not None and not outcome.duplicate and not alerted:
            # A malformed record: the dead-letter topic is its Kafka record; people hear of
            # it here (grouped and rate limited like every alert). Refusals that raised
            # their own alert (identity failures) are not announced twice.
            self.alert(dead_letter_alert(outcome.key, error.code, error.reason))

    def alert(self, alert: Alert) -> None:
        """Count, stamp, group and queue one alert for the notifying sinks."""
        now = time.time()
        if alert.ts is None:
            alert = msgspec.structs.replace(alert, ts=now)
        if self.metrics is not None:
            self.metrics.alert(alert)
        if self.notifiers:
            self._notify(self.groups.add(alert, now))

    def _notify(self, notes: list[Notification]) -> None:
        for note in notes:
            for sink, lowest in self.notifiers:
                if note.rank >= lowest:
                    sink.offer(note)

    async def _tick(self) -> None:
        """Close grouping windows on time (not only when the next alert comes)."""
        every = min(1.0, self.cfg.grouping.window_s / 4) or 1.0
        while True:
            await asyncio.sleep(every)
            self._notify(self.groups.due(time.time()))
            if self.metrics is not None:
                self.metrics.prune()

    async def close(self, timeout: float = 5.0) -> None:
        """Flush open groups, give the sinks ``timeout`` to send what is queued, stop."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        self._notify(self.groups.flush(time.time()))
        await asyncio.gather(*(sink.close(timeout) for sink in self.sinks))
        if self.metrics is not None:
            self.metrics.stop()
        if self.sinks:
            log.info("sinks stopped", **{s.name: s.counters() for s in self.sinks})


def dead_letter_alert(key: str, code: str, reason: str) -> Alert:
    """The ``dead-letter`` alert for a record that was not a valid envelope. ``key`` is the
    dead letter's dedupe key (``dlq:<topic/partition/offset>``)."""
    source = key.removeprefix("dlq:")
    return Alert(
        kind="dead-letter",
        severity=Severity.WARNING,
        summary=f"record {source} dead-lettered ({code}): {reason[:200]}",
        conversation="",
        evidence=[source],
        id=alert_id(key, "dead-letter", 0),
    )


def _rank(name: str) -> int:
    return SEVERITY_RANK[Severity(name)]
