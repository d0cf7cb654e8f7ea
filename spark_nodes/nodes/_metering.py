"""Timings a metered node keeps: its recent ``process`` durations and queue times.

A node is metered while a metering observer (``MetricsObserver``) watches it. It then keeps
the last :data:`SAMPLES` durations of ``process`` and times from send to the start of
``process`` (from ``metadata["sent_at"]``, which routes to it stamp with ``time.time()``:
across processes, as good as their clocks agree).
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["SAMPLES", "Meter"]

SAMPLES: Final = 1024
"""Samples kept of each timing: percentiles are over the most recent ones."""


class Meter:
    """One node's recent timings (see the module)."""

    __slots__ = ("process_times", "queue_times")

    def __init__(self) -> None:
        self.process_times: list[float] = []
        self.queue_times: list[float] = []

    def timed(self, duration: float, now: float, metadata: dict[str, Any] | None) -> None:
        """Keep one call's ``duration``, and its message's queue time if it was stamped.

        ``now``: ``time.time()`` when the call ended.
        """
        self.process_times.append(duration)
        sent = metadata.get("sent_at") if metadata else None
        if sent is not None:
            self.queue_times.append(now - duration - sent)
        if len(self.process_times) > 2 * SAMPLES:
            self.trim()

    def trim(self) -> None:
        """Drop all but the last :data:`SAMPLES` of each (amortised: called per batch)."""
        if len(self.process_times) > SAMPLES:
            del self.process_times[:-SAMPLES]
        if len(self.queue_times) > SAMPLES:
            del self.queue_times[:-SAMPLES]
