"""Spawning many worker loops cheaply, under a run's anyio cancel scope.

anyio's ``start_soon`` costs ~2.8 KB per task on asyncio (a task handle with two events,
weak-set entries, a wrapper coroutine); a 10,000-node graph then spends 28 MiB on tasks
alone. The event loop's own structured groups, ``asyncio.TaskGroup`` and trio's nursery,
cost ~1 KB and honour an enclosing anyio cancel scope: cancelling it cancels the host
task, and the group cancels and awaits its children.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import sniffio

Spawn = Callable[..., None]
"""``spawn(async_function, *args)``: start a task in the group."""


@contextlib.asynccontextmanager
async def open_spawner() -> AsyncIterator[Spawn]:
    """A task group for the current event loop; leaving it waits for every task."""
    if sniffio.current_async_library() == "trio":
        import trio  # noqa: PLC0415 - only when trio is the running backend

        async with trio.open_nursery() as nursery:
            yield nursery.start_soon
        return
    async with asyncio.TaskGroup() as group:

        def spawn(function: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
            group.create_task(function(*args))

        yield spawn
