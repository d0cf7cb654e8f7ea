"""``GraphRunner`` (the ``graph_runner`` fixture) in-process: what counts as a leaked task."""

from __future__ import annotations

import anyio
import pytest

from spark_nodes import Graph, Node
from spark_nodes.testing.plugin import GraphRunner, LeakedTasks

pytestmark = pytest.mark.anyio


async def test_the_tests_own_nested_task_groups_are_not_leaks() -> None:
    runner = GraphRunner()
    release = anyio.Event()

    async def helper() -> None:
        async with anyio.create_task_group() as inner:  # a grandchild of the test's task
            inner.start_soon(release.wait)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            async with runner(Graph(start=Node(id="a"))) as run:
                group.start_soon(helper)
                await run.send("a", 1)
                await anyio.wait_all_tasks_blocked()
            release.set()  # after the block: the helper's tasks outlived it, legitimately


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # trio has no task outside a nursery
async def test_a_task_a_node_leaves_behind_is_a_leak() -> None:
    import asyncio  # noqa: PLC0415 - asyncio only

    stray: list[asyncio.Task[None]] = []

    class Leaky(Node):
        async def process(self, context: object) -> None:
            stray.append(asyncio.get_running_loop().create_task(asyncio.sleep(30)))

    runner = GraphRunner()

    async def run_the_leaky_graph() -> None:
        async with runner(Graph(start=Leaky(id="leaky"))) as run:
            await run.send("leaky", 1)
            await run.wait_idle()

    with anyio.fail_after(10), pytest.raises(LeakedTasks):
        await run_the_leaky_graph()
    for task in stray:
        task.cancel()
