"""Alert sinks and metrics: where ostracon's decisions and alerts leave the message path.

``SinkHub`` (hub) takes each routed outcome and standalone alert from the sidecar and feeds:
Prometheus metrics (metrics), structlog JSON lines (log), Alertmanager API v2 (alertmanager),
a Slack-compatible webhook (webhook) and OTLP/HTTP spans (otlp). Every sink but the metrics
sits behind a bounded queue with retries and a drop counter (queue); repeated alerts are
grouped before they notify anyone (grouping). The Kafka alerts topic is not a sink here: its
records are outputs of the router, acknowledged with the batch. See docs/observability.md.
"""

from .grouping import AlertGroups, Notification
from .hub import SinkHub
from .queue import PermanentError, QueuedSink

__all__ = ["AlertGroups", "Notification", "PermanentError", "QueuedSink", "SinkHub"]
