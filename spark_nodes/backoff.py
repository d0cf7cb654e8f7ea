"""``Backoff``: the one waiting policy behind retries, restarts and reconnects."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

__all__ = ["Backoff"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff: how long to wait before the ``n``-th try again.

    Wait ``n`` (from 1) is ``initial_delay * multiplier ** (n - 1)`` seconds, capped at
    ``max_delay``, then spread by a random ``+- jitter`` (a fraction of it) so that many
    waiters do not come back in step. :class:`~spark_nodes.nodes.RetryPolicy` (a failing
    ``process``), :class:`~spark_nodes.nodes.RestartPolicy` (a crashed worker loop) and
    :class:`~spark_nodes.channels.ConnectionRetry` (an unreachable Redis) are backoffs
    with a limit of their own.

    Raises:
        ValueError: A delay is negative or not finite, ``multiplier`` < 1, or ``jitter``
            is not in [0, 1).
    """

    initial_delay: float = 0.1
    max_delay: float = 10.0
    multiplier: float = 2.0
    jitter: float = 0.0

    def __post_init__(self) -> None:
        delays = (("initial_delay", self.initial_delay), ("max_delay", self.max_delay))
        for label, seconds in delays:
            if not (seconds >= 0 and math.isfinite(seconds)):
                raise ValueError(f"{label} must be finite seconds >= 0, not {seconds!r}")
        if not self.multiplier >= 1:
            raise ValueError(f"multiplier must be >= 1, not {self.multiplier!r}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter is a fraction in [0, 1), not {self.jitter!r}")

    def delay(self, n: int) -> float:
        """Seconds to wait before try ``n + 1``, after ``n`` (>= 1) failed ones."""
        try:
            delay = min(self.max_delay, self.initial_delay * self.multiplier ** (n - 1))
        except OverflowError:  # a retry loop that has failed for a very long time
            delay = self.max_delay
        if self.jitter:  # < 1: the delay stays >= 0
            delay *= 1 + random.uniform(-self.jitter, self.jitter)  # noqa: S311 - spreading, not security
        return delay
