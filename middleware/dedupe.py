"""A bounded window of recently seen message ids for duplicate suppression.

At-least-once delivery means a record may be processed twice (a crash between producing the
outputs and committing the offset). The window remembers the last ``capacity`` dedupe keys;
the Kafka shell refills it on start from the output topics' tails, so it survives restarts.
Each key may carry the source it was read from (topic/partition/offset), so a crash re-read
(same source) can be told from a replay (same id, another record; see ostracon.identity).
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
        self._seen: dict[str, str] = {}  # key -> source ("" = not recorded)
        self._order: deque[str] = deque()

    def add(self, key: str, source: str = "") -> bool:
        """Add ``key``; return False when it was already in the window (a duplicate)."""
        if key in self._seen:
            return False
        self._seen[key] = source
        self._order.append(key)
        if len(self._order) > self.capacity:
            del self._seen[self._order.popleft()]
        return True

    def extend(self, keys: Iterable[str | tuple[str, str]]) -> None:
        """Add keys, or (key, source) pairs, oldest first."""
        for key in keys:
            if isinstance(key, tuple):
                self.add(*key)
            else:
                self.add(key)

    def source(self, key: str) -> str | None:
        """The source recorded with ``key`` ("" if none was), None when it is not here."""
        return self._seen.get(key)

    def __contains__(self, key: object) -> bool:
        return key in self._seen

    def __len__(self) -> int:
        return len(self._order)
