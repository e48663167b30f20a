"""Serves the admin API with uvicorn on the sidecar's own event loop.

Handlers run between two routed messages (routing a record never awaits), so they read the
core's state without locks. The sidecar owns SIGTERM/SIGINT: uvicorn's own signal capture is
turned off and the server is stopped by :meth:`ApiServer.close`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

from ..config import ApiConfig
from ..logs import get_logger
from ..transport.kafka import Sidecar
from .app import create_app
from .backend import KafkaBackend

log = get_logger("ostracon.api")


class _InLoopServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the sidecar handles the signals and closes the server


class ApiServer:
    """An ASGI app served on ``host:port`` (0 = a free port) as a task of this loop."""

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        self.server = _InLoopServer(
            uvicorn.Config(
                app,
                host=host,
                port=port,
                log_config=None,
                log_level="warning",
                access_log=False,
                lifespan="off",
            )
        )
        self.host = host
        self.port = port
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> str:
        """Listen; return the base URL. Raises OSError if the address cannot be bound."""
        # Bound here, not by uvicorn, whose bind failure is a SystemExit inside the task.
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise OSError(f"admin API cannot listen on {self.host}:{self.port}: {exc}") from None
        self.port = sock.getsockname()[1]
        self._task = asyncio.create_task(self.server.serve(sockets=[sock]))
        while not self.server.started:
            if self._task.done():
                self._task.exception()  # retrieved: the error is raised below with the address
                self._task = None
                sock.close()
                raise OSError(f"admin API failed to start on {self.host}:{self.port}")
            await asyncio.sleep(0.01)
        return self.url

    async def close(self) -> None:
        if self._task is None:
            return
        self.server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError, SystemExit):
            await self._task
        self._task = None


class AdminApi:
    """The admin API of one sidecar: its backend (review queue) and its HTTP server."""

    def __init__(self, sidecar: Sidecar, config: ApiConfig | None = None) -> None:
        cfg = config or sidecar.config.api
        self.backend = KafkaBackend(sidecar)
        self.token = cfg.resolve_token()
        self.server = ApiServer(create_app(self.backend, self.token, cfg.user), cfg.host, cfg.port)

    @property
    def url(self) -> str:
        return self.server.url

    async def start(self) -> str:
        """Start after ``sidecar.start()`` (its topics and producer); return the base URL."""
        await self.backend.start()
        try:
            url = await self.server.start()
        except BaseException:
            await self.backend.close()
            raise
        log.info("admin API serving", url=url, ui=f"{url}/ui/", auth=self.token is not None)
        return url

    async def close(self) -> None:
        await self.server.close()
        await self.backend.close()
