"""Spawning many worker loops cheaply, under a run's anyio cancel scope.

anyio's ``start_soon`` costs ~2.8 KB per task on asyncio (a task handle with two events,
weak-set entries, a wrapper coroutine); a 10,000-node graph then spends 28 MiB on tasks
alone. The event loop's own structured groups, ``asyncio.TaskGroup`` and trio's nursery,
cost ~1 KB and honour an enclosing anyio cancel scope: cancelling it cancels the host
task, and the group cancels and awaits its children.

An ``asyncio.TaskGroup`` cancels its children once; a task that swallows that one
``CancelledError`` (user code, or a library that turns it into another error) would run
on. :meth:`Spawner.cancel_all`, called again and again, makes cancellation stick, as
anyio and trio do.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import sniffio

__all__ = ["Spawner", "open_spawner"]


class Spawner:
    """Starts tasks in a task group: ``spawner(async_function, *args)``."""

    __slots__ = ("_cancel", "_start")

    def __init__(self, start: Callable[..., None], cancel: Callable[[], None]) -> None:
        self._start = start
        self._cancel = cancel

    def __call__(self, function: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        """Start ``function(*args)`` in the group."""
        self._start(function, *args)

    def cancel_all(self) -> None:
        """Cancel every task of the group that is still running (again, if need be)."""
        self._cancel()


@contextlib.asynccontextmanager
async def open_spawner() -> AsyncIterator[Spawner]:
    """A task group for the current event loop; leaving it waits for every task."""
    if sniffio.current_async_library() == "trio":
        import trio  # noqa: PLC0415 - only when trio is the running backend

        async with trio.open_nursery() as nursery:
            yield Spawner(nursery.start_soon, nursery.cancel_scope.cancel)
        return
    running: set[asyncio.Task[Any]] = set()
    async with asyncio.TaskGroup() as group:

        def start(function: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
            task = group.create_task(function(*args))
            running.add(task)
            task.add_done_callback(running.discard)

        def cancel() -> None:
            for task in list(running):
                task.cancel()

        yield Spawner(start, cancel)
