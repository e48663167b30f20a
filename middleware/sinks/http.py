"""The HTTP sinks' shared part: one httpx client, JSON POST, and which failures to retry."""

from __future__ import annotations

from typing import Any

import httpx

from ..config import QueuedSinkConfig
from .grouping import Notification
from .queue import PermanentError, QueuedSink

# Worth retrying: the receiver is overloaded or restarting, or the request timed out.
_RETRYABLE = {408, 425, 429, 500, 502, 503, 504}


class HttpSink(QueuedSink[Notification]):
    def __init__(
        self, name: str, cfg: QueuedSinkConfig, url: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(name, cfg)
        self.url = url
        self.timeout_s = cfg.timeout_s
        self.headers = dict(headers or {})
        self.client: httpx.AsyncClient | None = None

    async def open(self) -> None:
        self.client = httpx.AsyncClient(timeout=self.timeout_s, headers=self.headers)

    async def shut(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    async def post(self, body: Any) -> None:
        """POST ``body`` as JSON; raise on failure (PermanentError when retrying is futile)."""
        assert self.client is not None, "sink not started"
        resp = await self.client.post(self.url, json=body)
        if resp.is_success:
            return
        problem = f"{self.url}: HTTP {resp.status_code} {resp.text[:200]}"
        if resp.status_code in _RETRYABLE:
            raise RuntimeError(problem)
        raise PermanentError(problem)
