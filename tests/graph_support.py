"""Running a graph in a test while a driver feeds it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from spark_nodes import ExecutionContext, Graph, GraphResult, Node, Task
from spark_nodes.graphs import RunningGraph

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


class Collect(Node):
    """A sink that keeps the content of every message it gets, in order."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.items: list[Any] = []

    def process(self, context: ExecutionContext) -> None:
        self.items.append(context.inputs.content)
