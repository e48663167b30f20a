"""Alerts as structlog JSON lines: logger ``ostracon.alerts``, event ``alert``, the alert's
fields at the top level (docs/protocol.md), plus ``count`` and ``repeat``."""

from __future__ import annotations

from ..config import LogSinkConfig
from ..logs import get_logger
from .grouping import Notification
from .queue import QueuedSink

_LEVEL = {"info": "info", "warning": "warning", "critical": "critical"}


class LogSink(QueuedSink[Notification]):
    def __init__(self, cfg: LogSinkConfig) -> None:
        super().__init__("log", cfg)
        self.log = get_logger("ostracon.alerts")

    async def send(self, batch: list[Notification]) -> None:
        for n in batch:
            fields = n.as_dict()
            getattr(self.log, _LEVEL[n.alert.severity])("alert", **fields)
