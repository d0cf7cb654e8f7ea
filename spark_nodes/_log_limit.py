"""Rate-limited logging of a failure that repeats: the first, then one per interval, counted.

A node whose every message fails the same way would otherwise log one line per message
(300 identical warnings for 300 messages). :class:`RepeatLimiter` lets the first of a
kind through, then at most one per ``interval`` carrying how many were held back since;
:meth:`RepeatLimiter.held` reports what is left when the node stops.
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from typing import Final, Generic, TypeVar

__all__ = ["REPEAT_INTERVAL", "RepeatLimiter"]

K = TypeVar("K", bound=Hashable)

REPEAT_INTERVAL: Final = 10.0
"""Seconds between two log lines of the same repeated failure."""


class RepeatLimiter(Generic[K]):
    """Decides which occurrences of a repeating event are logged (see the module)."""

    __slots__ = ("_kinds", "interval")

    def __init__(self, interval: float | None = None) -> None:
        self.interval = REPEAT_INTERVAL if interval is None else interval
        self._kinds: dict[K, list[float]] = {}  # kind -> [last logged, held since]

    def admit(self, kind: K) -> int | None:
        """``None`` to hold this occurrence back, else how many were held since the last."""
        now = time.monotonic()
        seen = self._kinds.get(kind)
        if seen is None:
            self._kinds[kind] = [now, 0]
            return 0
        if now - seen[0] < self.interval:
            seen[1] += 1
            return None
        held = int(seen[1])
        seen[0], seen[1] = now, 0
        return held

    def held(self) -> dict[K, int]:
        """The occurrences held back and not reported yet, per kind; forgets them."""
        held = {kind: int(seen[1]) for kind, seen in self._kinds.items() if seen[1]}
        for seen in self._kinds.values():
            seen[1] = 0
        return held
