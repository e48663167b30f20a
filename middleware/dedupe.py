"""A bounded window of recently seen message ids for duplicate suppression.

At-least-once delivery means a record may be processed twice (a crash between producing the
outputs and committing the offset). The window remembers the last ``capacity`` dedupe keys;
the Kafka shell refills it on start from the output topics' tails, so it survives restarts.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable


class DedupeWindow:
    """Remembers the most recent ``capacity`` keys; O(1) check-and-add."""

    __slots__ = ("_order", "_seen", "capacity")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._seen: set[str] = set()
        self._order: deque[str] = deque()

    def add(self, key: str) -> bool:
        """Add ``key``; return False when it was already in the window (a duplicate)."""
        if key in self._seen:
            return False
        self._seen.add(key)
        self._order.append(key)
        if len(self._order) > self.capacity:
            self._seen.discard(self._order.popleft())
        return True

    def extend(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.add(key)

    def __contains__(self, key: object) -> bool:
        return key in self._seen

    def __len__(self) -> int:
        return len(self._order)
