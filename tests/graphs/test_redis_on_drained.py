"""``on_drained`` on Redis: what it returns reaches the successors before the shutdown."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from spark_nodes import ExecutionContext, Graph, Node
from tests.graphs.test_redis_crashes import poll_until
from tests.redis_support import Cluster

pytestmark = [pytest.mark.anyio, pytest.mark.redis]  # redis-py: asyncio only


class Counter(Node):
    """Counts what it handles; says the total when it drains."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.count = 0

    def process(self, context: ExecutionContext) -> None:
        self.count += 1

    async def on_drained(self) -> Any:
        return {"total": self.count}


class Sink(Node):
    async def process(self, context: ExecutionContext) -> None:
        await context.graph_state.append("got", context.inputs.content)


def build() -> Graph:
    counter = Counter(id="counter")
    counter >> Sink(id="sink")
    return Graph(counter, name="summary")


async def test_what_on_drained_returns_reaches_the_successor_before_the_shutdown(
    cluster: Cluster,
) -> None:
    """The counter holds nothing, so its shutdown could pass on at once: it drains first
    (from the idle hook, once its loop has settled the shutdown entry)."""
    worker, client = cluster.process(build), cluster.process(build)
    counter = worker.nodes["counter"]
    assert isinstance(counter, Counter)
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(worker.serve)
            for number in range(3):
                await client.send("counter", number)

            async def counted() -> bool:
                return counter.count == 3

            await poll_until(counted)
            await client.shutdown()
    assert await client.state.get("got", []) == [{"total": 3}]
