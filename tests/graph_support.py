"""Running a graph in a test while a driver feeds it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio

from spark_nodes import Graph, GraphResult, Task
from spark_nodes.graphs import RunningGraph
from spark_nodes.testing import Probe

Driver = Callable[[Graph], Awaitable[None]]


async def run_with(graph: Graph, task: Task, driver: Driver, *, within: float = 10) -> GraphResult:
    """Run ``graph`` while ``driver(graph)`` feeds it; fail on a hang after ``within`` s.

    The driver starts once the graph takes messages (the structured start), and must end
    the run (``shutdown()``, ``stop()``) unless the task ends by itself.
    """
    with anyio.fail_after(within):
        async with anyio.create_task_group() as group:
            run: RunningGraph = await group.start(graph.run, task)
            await driver(graph)
    assert run.result is not None
    return run.result


Collect = Probe
"""A sink that keeps every message it gets (``items``: their contents): the kit's ``Probe``."""
