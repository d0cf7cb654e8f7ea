"""A cycle in a Redis graph drains as one at shutdown, across processes."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from redis.asyncio import Redis

from spark_nodes import ExecutionContext, Graph, GraphResult, Node, StopReason, Task, TaskType
from spark_nodes.graphs.task import DEFAULT_MAX_STEPS
from tests.redis_support import Cluster

pytestmark = [pytest.mark.anyio, pytest.mark.redis]  # redis-py: asyncio only


class CountDown(Node):
    async def process(self, context: ExecutionContext) -> Any:
        await anyio.sleep(0.001)
        return context.inputs.content - 1


class Done(Node):
    def __init__(self, seen: list[Any] | None = None) -> None:
        super().__init__(id="done")
        self.seen = seen if seen is not None else []

    def process(self, context: ExecutionContext) -> None:
        self.seen.append(context.inputs.content)


def agent_loop(seen: list[Any] | None = None, *, fed: bool = False) -> Graph:
    """(feeder ->) router -> tool -> router until the count is 0; then router -> done."""
    router, tool, done = Node(id="router"), CountDown(id="tool"), Done(seen)
    router.on(lambda count: count > 0) >> tool
    router.otherwise() >> done
    tool >> router
    if not fed:
        return Graph(start=router, name="agent")
    feeder = Node(id="feeder")
    feeder >> router
    return Graph(start=feeder, name="agent")


async def serve_into(graph: Graph, results: list[GraphResult]) -> None:
    results.append(await graph.serve())


@pytest.mark.parametrize("fed", [False, True], ids=["cycle-is-the-source", "fed-cycle"])
async def test_a_shutdown_drains_a_cycle_served_by_two_processes(
    cluster: Cluster, raw: Redis, fed: bool
) -> None:
    seen: list[Any] = []
    first = cluster.process(lambda: agent_loop(seen, fed=fed))
    second = cluster.process(lambda: agent_loop(seen, fed=fed))
    client = cluster.process(lambda: agent_loop(fed=fed))
    results: list[GraphResult] = []
    entry = "feeder" if fed else "router"
    with anyio.fail_after(60):
        async with anyio.create_task_group() as group:
            group.start_soon(serve_into, first, results)
            group.start_soon(serve_into, second, results)
            for count in range(20, 30):
                await client.send(entry, count)
            await client.shutdown()  # at once: every count is still going round
    assert sorted(seen) == [0] * 10  # each one went all the way round and out
    assert all(result.stop_reason is StopReason.SHUTDOWN for result in results)
    for node_id in ("router", "tool", "done"):
        mailbox = client.nodes[node_id].mailbox
        info = await mailbox.inspect()  # type: ignore[attr-defined]
        assert all(group.pending == 0 and group.lag == 0 for group in info.groups), node_id


async def test_the_next_run_of_a_redis_cycle_drains_again(cluster: Cluster) -> None:
    seen: list[Any] = []
    worker = cluster.process(lambda: agent_loop(seen))
    client = cluster.process(agent_loop)
    with anyio.fail_after(60):
        for run in range(2):
            async with anyio.create_task_group() as group:
                group.start_soon(worker.serve)
                await client.send("router", 5 + run)
                await client.shutdown()
    assert seen == [0, 0]


# -- context.steps_taken and context.max_steps ------------------------------------------

Seen = list[tuple[str, Any, int, int | None]]


class Budgeted(Node):
    """Records ``(node, content, context.steps_taken, context.max_steps)``; ``tool`` counts down."""

    def __init__(self, seen: Seen, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seen = seen

    def process(self, context: ExecutionContext) -> Any:
        self.seen.append((self.id, context.inputs.content, context.steps_taken, context.max_steps))
        return context.inputs.content - 1 if self.id == "tool" else context.inputs.content


def budgeted_loop(seen: Seen) -> Graph:
    """router -> tool -> router until the count is 0; then router -> done."""
    router, tool = Budgeted(seen, id="router"), Budgeted(seen, id="tool")
    router.on(lambda count: count > 0) >> tool
    router.otherwise() >> Done()
    tool >> router
    return Graph(start=router, name="budgeted")


async def test_a_redis_node_sees_its_messages_steps_and_the_runs_max_steps(
    cluster: Cluster,
) -> None:
    seen: Seen = []
    graph = cluster.process(lambda: budgeted_loop(seen))
    with anyio.fail_after(60):
        async with anyio.create_task_group() as group:
            group.start_soon(graph.run, Task(type=TaskType.LONG_RUNNING, max_steps=7))
            await graph.send("router", 2)
            await graph.shutdown()
    assert seen == [
        ("router", 2, 0, 7),
        ("tool", 2, 1, 7),
        ("router", 1, 2, 7),
        ("tool", 1, 3, 7),
        ("router", 0, 4, 7),
    ]


async def test_steps_travel_with_the_message_between_redis_worker_processes(
    cluster: Cluster,
) -> None:
    seen: Seen = []
    routers = cluster.process(lambda: budgeted_loop(seen))
    tools = cluster.process(lambda: budgeted_loop(seen))
    with anyio.fail_after(60):
        async with anyio.create_task_group() as group:
            group.start_soon(routers.serve, ["router", "done"])
            group.start_soon(tools.serve, ["tool"])
            await routers.send("router", 2)
            await routers.shutdown()
    # serve() runs the default Task: its max_steps is the budget each worker knows
    assert seen == [
        ("router", 2, 0, DEFAULT_MAX_STEPS),
        ("tool", 2, 1, DEFAULT_MAX_STEPS),
        ("router", 1, 2, DEFAULT_MAX_STEPS),
        ("tool", 1, 3, DEFAULT_MAX_STEPS),
        ("router", 0, 4, DEFAULT_MAX_STEPS),
    ]
