"""The in-process bus: the same router and core with no broker at all, for library use.

Agents in one Python process publish envelopes; delivered ones reach the recipients'
handlers (empty ``recipients`` = every other subscriber), and every output record is kept on
a bounded in-memory "topic" named like its Kafka counterpart, for inspection and tests.
"""

from __future__ import annotations

import collections
import itertools
import time
from collections.abc import Callable, Sequence

from ..config import Config
from ..core import Core
from ..decision import Decision
from ..envelope import Envelope, encode
from ..routing import Outcome, Output, Route, Router

Handler = Callable[[Envelope, Decision], None]


class MemoryBus:
    """Publish envelopes through the core; deliver to subscribed handlers."""

    def __init__(
        self, config: Config | None = None, core: Core | None = None, retain: int = 10_000
    ) -> None:
        self.config = config or Config()
        self.router = Router.from_config(self.config, core)
        self.core = self.router.core
        self.topics: dict[Route, collections.deque[Output]] = {
            route: collections.deque(maxlen=retain) for route in Route
        }
        self._handlers: dict[str, list[Handler]] = collections.defaultdict(list)
        self._seq = itertools.count()

    def subscribe(self, agent: str, handler: Handler) -> None:
        self._handlers[agent].append(handler)

    def publish(
        self,
        message: Envelope | bytes,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> Outcome:
        """Route one message; deliver it if the verdict allows. Returns what happened."""
        value = encode(message) if isinstance(message, Envelope) else message
        key = message.conversation.encode() if isinstance(message, Envelope) else None
        source = f"memory/0/{next(self._seq)}"
        outcome = self.router.route(value, key, headers, source, time.time())
        for out in outcome.outputs:
            self.topics[out.route].append(out)
        decision, envelope = outcome.decision, outcome.envelope
        if decision is not None and envelope is not None and decision.verdict.delivers:
            targets = envelope.recipients or [a for a in self._handlers if a != envelope.sender]
            for agent in targets:
                for handler in self._handlers.get(agent, ()):
                    handler(envelope, decision)
        return outcome

    def tick(self, now: float | None = None) -> list[Output]:
        """Let time pass (default: the wall clock): quorum ballots past their deadline
        escalate; their alerts land on the alerts "topic" and are returned. (A record a
        quorum releases lands on the delivered "topic"; handlers are not called for it.)"""
        outputs = self.router.tick(time.time() if now is None else now)
        for out in outputs:
            self.topics[out.route].append(out)
        return outputs
