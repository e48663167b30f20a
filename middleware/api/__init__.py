"""The admin HTTP API and review UI (see docs/api.md).

``AdminApi(sidecar)`` serves a Kafka sidecar's API on its event loop (``serve()`` starts it
when ``api.enabled``); ``create_app(backend, token)`` is the bare ASGI app over any
:class:`~ostracon.api.backend.Backend`, e.g. a ``MemoryBackend`` for an in-process bus.
"""

from .app import create_app
from .backend import Backend, KafkaBackend, MemoryBackend
from .server import AdminApi, ApiServer

__all__ = ["AdminApi", "ApiServer", "Backend", "KafkaBackend", "MemoryBackend", "create_app"]
