"""Coalescing writes: many tasks queue items, one round trip writes a batch of them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, Protocol, TypeVar

import anyio

__all__ = ["Coalescer", "Pending"]


class Pending(Protocol):
    """An item waiting to be written: the writer sets ``done`` (and ``error`` if it failed)."""

    done: bool
    error: BaseException | None


Item = TypeVar("Item", bound=Pending)


class Coalescer(Generic[Item]):
    """Queue items from many tasks; write them in batches, one batch in flight at a time.

    A task that submits an item while no batch is in flight writes the next batch itself
    (up to ``max_batch`` items: its own and whatever else is queued); the others wait for
    that write and then, if their item was not in it, take their turn. No background task
    is needed, and a lone writer pays one round trip, no timer.

    ``write(batch)`` must set ``done`` on every item (with ``error`` for those that failed)
    or raise, which fails the batch's items with that error, except those ``write`` put
    back in the queue to try again later. A writer cancelled mid-write
    puts its batch back at the head of the queue: the next write repeats it, so ``write``
    must be safe to repeat.
    """

    __slots__ = ("_in_flight", "_max_batch", "_write", "queue")

    def __init__(self, write: Callable[[list[Item]], Awaitable[None]], max_batch: int) -> None:
        self._write = write
        self._max_batch = max_batch
        self.queue: list[Item] = []
        self._in_flight: anyio.Event | None = None

    @property
    def busy(self) -> bool:
        """Whether a batch is being written."""
        return self._in_flight is not None

    async def submit(self, item: Item) -> None:
        """Queue ``item`` and return once it is written.

        Raises:
            BaseException: The item's ``error``. If the caller is cancelled before its item
                was taken into a batch, the item is withdrawn; once taken, it is written.
        """
        self.queue.append(item)
        try:
            await self.wait(item)
        except BaseException:
            if not item.done and item in self.queue:
                self.queue.remove(item)
            raise
        if item.error is not None:
            raise item.error

    async def wait(self, item: Item) -> None:
        """Return once ``item`` (already queued) has been written or has failed."""
        while not item.done:
            in_flight = self._in_flight
            if in_flight is not None:
                await in_flight.wait()
            else:
                await self.write_next()

    async def flush(self) -> None:
        """Write everything queued now, batch after batch, until one fails.

        Raises:
            BaseException: The error of the batch that failed; items ``write`` put back in
                the queue stay there for a later write.
        """
        while self.queue or self._in_flight is not None:
            in_flight = self._in_flight
            if in_flight is not None:
                await in_flight.wait()
                continue
            error = await self.write_next()
            if error is not None:
                raise error

    async def write_next(self) -> BaseException | None:
        """Write the next batch (the caller checked none is in flight); return its error."""
        batch = self.queue[: self._max_batch]
        del self.queue[: self._max_batch]
        if not batch:
            return None
        in_flight = self._in_flight = anyio.Event()
        try:
            await self._write(batch)
        except Exception as error:  # noqa: BLE001 - handed to every submitter of the batch
            requeued = set(map(id, self.queue))
            for item in batch:
                if not item.done and id(item) not in requeued:
                    item.error = error
                    item.done = True
            return error
        except BaseException:
            self.queue[:0] = [item for item in batch if not item.done]
            raise
        finally:
            self._in_flight = None
            in_flight.set()
        return next((item.error for item in batch if item.error is not None), None)
