"""Grouping and rate limiting of repeated alerts before they reach people.

Alerts with the same kind, conversation and agents form a group. The first alert of a group
is sent at once; repeats within ``window_s`` of it are only counted, and when the window
closes one more notification says how many there were (``count``, ``repeat``). A stuck agent
raising the same alert a thousand times a minute pages someone twice a minute at most.

Grouping cannot fold alerts that differ (a flood across many conversations), so every
notification also takes a token from a bucket refilled at ``rate_per_minute``; without one it
is counted, and the next notification that gets a token is preceded by one
``alerts-rate-limited`` summary saying how many were held back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from ..decision import Alert, Severity

SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}

GroupKey = tuple[str, str, tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class Notification:
    """What a notifying sink sends: an alert (``ts`` already stamped) standing for ``count``
    alerts of its group; ``repeat`` marks the end-of-window summary of repeats."""

    alert: Alert
    time: float  # wall clock when the sidecar sent it on
    count: int = 1
    repeat: bool = False

    @property
    def rank(self) -> int:
        return SEVERITY_RANK[self.alert.severity]

    def as_dict(self) -> dict[str, Any]:
        """The alert's JSON shape (docs/protocol.md) plus ``count`` and ``repeat``."""
        out: dict[str, Any] = msgspec.to_builtins(self.alert)
        out["count"] = self.count
        out["repeat"] = self.repeat
        return out

    def title(self) -> str:
        """One line for people: severity, kind, conversation, summary, and the count."""
        a = self.alert
        head = f"[{a.severity}] {a.kind} in {a.conversation or '-'}: {a.summary}"
        return f"{head} (repeated {self.count}x)" if self.repeat else head


@dataclass(slots=True)
class _Group:
    opened: float
    last: Alert
    repeats: int = 0


def group_key(alert: Alert) -> GroupKey:
    return alert.kind, alert.conversation, tuple(alert.agents)


class AlertGroups:
    """Open groups in the order they were opened (so expiry pops from the front)."""

    def __init__(self, window_s: float, max_groups: int, rate_per_minute: float = 0.0) -> None:
        self.window_s = window_s
        self.max_groups = max_groups
        self._open: dict[GroupKey, _Group] = {}
        self.suppressed = 0  # alerts folded into a group rather than sent on their own
        # Token bucket over all notifications (0 = no limit); a minute's worth of burst.
        self.rate = rate_per_minute / 60.0
        self.burst = max(rate_per_minute, 1.0)
        self._tokens = self.burst
        self._refilled: float | None = None
        self.rate_limited = 0  # notifications held back, in total
        self._held_back = 0  # ... since the last summary

    def add(self, alert: Alert, now: float) -> list[Notification]:
        """Notifications to send for a new alert (empty when it is a counted repeat)."""
        return self._limit(self._add(alert, now), now)

    def due(self, now: float) -> list[Notification]:
        """Close the groups whose window has passed; a summary for each that had repeats."""
        return self._limit(self._due(now), now)

    def _limit(self, notes: list[Notification], now: float) -> list[Notification]:
        if not self.rate:
            return notes
        if self._refilled is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._refilled) * self.rate)
        self._refilled = now
        out: list[Notification] = []
        for note in notes:
            if self._tokens < 1:
                self._held_back += 1
                self.rate_limited += 1
                continue
            self._tokens -= 1
            if self._held_back:  # the summary rides on this token; the note goes too
                out.append(self._summary(now))
            out.append(note)
        return out

    def _summary(self, now: float) -> Notification:
        n, self._held_back = self._held_back, 0
        summary = f"{n} alert notifications held back by the sinks' rate limit"
        alert = Alert(
            kind="alerts-rate-limited",
            severity=Severity.WARNING,
            summary=summary,
            conversation="",
            id=f"rate-limited-{now:.3f}",
            ts=now,
        )
        return Notification(alert, now, count=n, repeat=True)

    def _add(self, alert: Alert, now: float) -> list[Notification]:
        if self.window_s <= 0:
            return [Notification(alert, now)]
        out = self._due(now)
        key = group_key(alert)
        group = self._open.get(key)
        if group is not None:
            group.repeats += 1
            group.last = alert
            self.suppressed += 1
            return out
        self._open[key] = _Group(now, alert)
        if len(self._open) > self.max_groups:  # bounded memory: close the oldest early
            oldest = next(iter(self._open))
            out += self._close(oldest, now)
        out.append(Notification(alert, now))
        return out

    def _due(self, now: float) -> list[Notification]:
        out: list[Notification] = []
        cutoff = now - self.window_s
        while self._open:
            key, group = next(iter(self._open.items()))
            if group.opened > cutoff:
                break
            out += self._close(key, now)
        return out

    def flush(self, now: float) -> list[Notification]:
        """Close every group (on shutdown; not rate limited: the last word is kept)."""
        out: list[Notification] = []
        while self._open:
            out += self._close(next(iter(self._open)), now)
        if self._held_back:
            out.append(self._summary(now))
        return out

    def _close(self, key: GroupKey, now: float) -> list[Notification]:
        group = self._open.pop(key)
        if not group.repeats:
            return []
        return [Notification(group.last, now, count=group.repeats, repeat=True)]

    def __len__(self) -> int:
        return len(self._open)
