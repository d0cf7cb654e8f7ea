"""Living through a backend outage: a node's loops wait for Redis instead of crashing.

A durable mailbox's store (Redis) may be unreachable for seconds (a restart, a failover)
or minutes. Its calls give up after their bound and raise ``BackendUnavailable``; a worker
loop that gets one is not counted as crashed (the restart policy is for bugs): it waits
with a capped backoff and starts again, as many times as the outage needs. The outage is
logged once when it begins and once when the store answers again, with its duration.
"""

from __future__ import annotations

import time
from typing import Any, Final

import anyio

from spark_nodes.backoff import Backoff

__all__ = ["OUTAGE_BACKOFF", "Outage"]

OUTAGE_BACKOFF: Final = Backoff(initial_delay=0.5, max_delay=5.0, multiplier=2.0, jitter=0.5)
"""Waits between two tries of a loop through an outage: capped, spread so that the workers
of a graph do not all come back at the same instant."""


class Outage:
    """One node's view of its store's outage: when it began, how often it waited."""

    __slots__ = ("since", "waits")

    def __init__(self) -> None:
        self.since: float | None = None
        """When the outage began (``time.monotonic()``); ``None``: the store answers."""
        self.waits = 0

    def began(self, log: Any, error: BaseException) -> None:
        """A call failed because the store is unreachable: log it once per outage."""
        if self.since is None:
            self.since = time.monotonic()
            log.warning("redis unreachable: the node's loops wait for it", error=str(error))

    async def wait(self) -> None:
        """Sleep before the next try (longer each time, up to a few seconds)."""
        self.waits += 1
        await anyio.sleep(OUTAGE_BACKOFF.delay(self.waits))

    def ended(self, log: Any) -> None:
        """A call succeeded: if an outage was going on, log its end and its length."""
        if self.since is not None:
            lasted = round(time.monotonic() - self.since, 1)
            log.warning("redis reachable again", outage_seconds=lasted, tries=self.waits + 1)
            self.since = None
            self.waits = 0
