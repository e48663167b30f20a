"""Alertmanager API v2 push: ``POST {url}/api/v2/alerts`` with labels and annotations.

Labels identify an alert to Alertmanager (it merges pushes with equal label sets, and its
routes and inhibitions match on them): ``alertname`` (the kind), ``severity``,
``conversation``, ``agents`` and ``source="ostracon"`` plus the configured static labels.
Everything else goes into annotations. ``endsAt`` is ``resolve_after_s`` after the push, so an
alert that stops recurring resolves by itself.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from ..config import AlertmanagerSinkConfig
from .grouping import Notification
from .http import HttpSink


class AlertmanagerSink(HttpSink):
    def __init__(self, cfg: AlertmanagerSinkConfig) -> None:
        super().__init__("alertmanager", cfg, cfg.url.rstrip("/") + "/api/v2/alerts")
        self.resolve_after_s = cfg.resolve_after_s
        self.static_labels = dict(cfg.labels)

    async def send(self, batch: list[Notification]) -> None:
        await self.post([self.payload(n) for n in batch])

    def payload(self, n: Notification) -> dict[str, Any]:
        a = n.alert
        labels = {
            **self.static_labels,
            "alertname": a.kind,
            "severity": a.severity.value,
            "source": "ostracon",
        }
        if a.conversation:
            labels["conversation"] = a.conversation
        if a.agents:
            labels["agents"] = ",".join(a.agents)
        annotations = {
            "summary": n.title(),
            "alert_id": a.id,
            "decision_id": a.decision_id,
            "rules": ",".join(a.rules),
            "claims": "; ".join(a.claims),
            "evidence": ",".join(a.evidence),
            "count": str(n.count),
        }
        return {
            "labels": labels,
            "annotations": {k: v for k, v in annotations.items() if v},
            "startsAt": _iso(n.time),
            "endsAt": _iso(n.time + self.resolve_after_s),
        }


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")
