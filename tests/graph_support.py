"""Running a graph in a test while a driver feeds it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio

from spark_nodes import Graph, GraphResult, Task

Driver = Callable[[Graph], Awaitable[None]]


async def run_with(graph: Graph, task: Task, driver: Driver, *, within: float = 10) -> GraphResult:
    """Run ``graph`` while ``driver(graph)`` feeds it; fail on a hang after ``within`` s.

    The driver starts once the run waits for work, and must end the run (``shutdown()``,
    ``stop()``) unless the task ends by itself.
    """
    result: list[GraphResult] = []

    async def runner() -> None:
        result.append(await graph.run(task))

    with anyio.fail_after(within):
        async with anyio.create_task_group() as group:
            group.start_soon(runner)
            await anyio.wait_all_tasks_blocked()
            await driver(graph)
    return result[0]
