"""Human decisions: release or deny a held record, block or unblock an agent.

Each decision is a state event (ostracon.store) stamped with who (``human:<name>``), when
(the shell's wall clock), what and why; it is applied here at once and written to the state
topic, which is the audit log every instance reads. A release also writes the held record
to the delivered topic (``routing.released``) *before* its event: a crash in between
leaves the record delivered but still listed, and releasing it again delivers a duplicate
that consumers drop by message id (at-least-once, never lost).
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

import msgspec

from ..routing import released
from ..store import (
    AccusationMade,
    AgentBlocked,
    AgentUnblocked,
    Event,
    QuarantineResolved,
    event_id,
)
from .backend import Backend


class NotFound(Exception):
    """No such held record, agent or conversation (HTTP 404)."""


class Conflict(Exception):
    """The action contradicts the current state (HTTP 409)."""


def event_dict(event: Event) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(event)
    return out


class AdminService:
    """The admin API's actions over a backend; HTTP-free."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._busy: set[str] = set()  # decisions being resolved right now (no double release)

    @property
    def state(self) -> Any:
        return self.backend.core.state

    # ------------------------------------------------------------------ quarantine

    def held(self, conversation: str | None, limit: int) -> dict[str, Any]:
        resolved = self.state.resolved
        items = [
            h
            for h in self.backend.index.pending(resolved)
            if conversation is None or h.conversation == conversation
        ]
        return {
            "items": [h.as_dict() for h in items[:limit]],
            "total": len(items),
            "dropped": self.backend.index.dropped,
        }

    def show(self, decision_id: str) -> dict[str, Any]:
        held = self.backend.index.get(decision_id)
        if held is None:
            raise NotFound(f"no held record with decision id {decision_id!r}")
        return {**held.as_dict(), "resolution": self.state.resolved.get(decision_id)}

    async def resolve(
        self, decision_id: str, action: Literal["release", "deny"], who: str, why: str
    ) -> dict[str, Any]:
        done = self.state.resolved.get(decision_id)
        if done is not None:
            raise Conflict(f"decision {decision_id} was already resolved: {done}")
        held = self.backend.index.get(decision_id)
        if held is None:
            raise NotFound(f"no held record with decision id {decision_id!r}")
        if decision_id in self._busy:
            raise Conflict(f"decision {decision_id} is being resolved by another request")
        self._busy.add(decision_id)
        try:
            by = f"human:{who}"
            if action == "release":
                value, key, headers = await self.backend.fetch(held)
                await self.backend.deliver(released(value, key, headers, by, why))
            # One id per decision: two instances resolving it at once apply the first.
            event = QuarantineResolved(
                id=event_id("quarantine", decision_id),
                at=time.time(),
                by=by,
                why=why,
                decision_id=decision_id,
                conversation=held.conversation,
                message_id=held.message_id,
                action=action,
            )
            await self.backend.publish_event(event)
        finally:
            self._busy.discard(decision_id)
        return event_dict(event)

    # ------------------------------------------------------------------ blocklist

    def blocklist(self) -> list[dict[str, str]]:
        return [{"agent": a, "reason": r} for a, r in sorted(self.state.blocklist.items())]

    async def block(self, agent: str, who: str, why: str) -> dict[str, Any]:
        event = AgentBlocked(
            id=event_id("block", agent, uuid.uuid4().hex),
            at=time.time(),
            by=f"human:{who}",
            why=why,
            agent=agent,
            reason=why,
        )
        await self.backend.publish_event(event)
        return event_dict(event)

    async def unblock(self, agent: str, who: str, why: str) -> dict[str, Any]:
        if agent not in self.state.blocklist:
            raise NotFound(f"agent {agent!r} is not on the blocklist")
        event = AgentUnblocked(
            id=event_id("unblock", agent, uuid.uuid4().hex),
            at=time.time(),
            by=f"human:{who}",
            why=why,
            agent=agent,
        )
        await self.backend.publish_event(event)
        return event_dict(event)

    # ------------------------------------------------------------------ records

    async def audit(self, limit: int) -> list[dict[str, Any]]:
        """Human decisions on the state topic, newest first."""
        events = [e for e in await self.backend.events() if e.by.startswith("human:")]
        return [event_dict(e) for e in reversed(events[-limit:])]

    async def accusations(
        self, conversation: str | None, agent: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """Accusations on the state topic, newest first, optionally about one conversation
        or involving one agent (as accuser or accused). The byzantine layer keeps every one
        it applied in ``State.byzantine``; without that layer they are read from the topic."""
        trust = getattr(self.state, "byzantine", None)
        known = getattr(trust, "accusations", None)
        events = (
            sorted(known.values(), key=lambda e: e.at)
            if isinstance(known, dict)
            else await self.backend.events()
        )
        found = [
            e
            for e in events
            if isinstance(e, AccusationMade)
            and (conversation is None or e.conversation == conversation)
            and (agent is None or agent in (e.accuser, e.accused))
        ]
        return [event_dict(e) for e in reversed(found[-limit:])]
