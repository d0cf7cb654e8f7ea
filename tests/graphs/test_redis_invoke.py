"""``graph.invoke`` on Redis: answered from the reply stream, from any process."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from redis.asyncio import Redis

from spark_nodes import (
    ExecutionContext,
    Graph,
    GraphResult,
    InvokeFailed,
    InvokeTimeout,
    JoinNode,
    Node,
    NodeConfig,
    RetryPolicy,
    Task,
    TaskType,
)
from tests.redis_support import Cluster

pytestmark = [pytest.mark.anyio, pytest.mark.redis]


class Add(Node):
    def __init__(self, n: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.n = n

    def process(self, context: ExecutionContext) -> Any:
        if context.inputs.content == 13:
            raise ValueError("thirteen")
        return context.inputs.content + self.n


flaky_failures: list[Exception] = []


class Flaky(Node):
    def process(self, context: ExecutionContext) -> Any:
        if flaky_failures:
            raise flaky_failures.pop()
        return context.inputs.content


def build() -> Graph:
    a, b, c, join = Add(1, id="a"), Add(10, id="b"), Add(100, id="c"), JoinNode(id="join")
    flaky = Flaky(
        id="flaky", config=NodeConfig(retry=RetryPolicy(max_attempts=3, initial_delay=0.01))
    )
    a >> [b, c]
    [b, c] >> join
    return Graph(a, flaky, name="invoked")


async def test_invokes_from_another_process_get_their_own_answers(
    cluster: Cluster, raw: Redis
) -> None:
    worker, client = cluster.process(build), cluster.process(build)
    answers: dict[int, Any] = {}
    served: list[GraphResult] = []

    async def ask(number: int) -> None:
        answers[number] = (await client.invoke(number, timeout=10)).contents

    async def serve() -> None:
        served.append(await worker.serve())

    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            group.start_soon(serve)
            async with anyio.create_task_group() as asks:
                for number in range(0, 10_000, 1000):
                    asks.start_soon(ask, number)
            await client.shutdown()
    assert answers == {
        number: [{"b": number + 11, "c": number + 101}] for number in range(0, 10_000, 1000)
    }
    stats = served[0].node_stats  # the records for the invoker are not outputs
    assert (stats["a"].forwarded, stats["b"].forwarded, stats["join"].forwarded) == (20, 10, 0)
    streams = [
        key
        async for key in raw.scan_iter(match=f"{cluster.namespace}:*invoke:*")
        if b":" not in key.split(b"invoke:")[1] or key.endswith((b":stats", b":dead"))
    ]
    assert streams == []  # deleted once answered (producer marks expire on their own)


async def test_invoke_on_redis_waits_out_a_retry(cluster: Cluster) -> None:
    worker, client = cluster.process(build), cluster.process(build)
    flaky_failures.append(ValueError("once"))
    with anyio.fail_after(30):
        async with worker.open_run(Task(type=TaskType.LONG_RUNNING)):
            answer = await client.invoke(7, node="flaky", timeout=10)
    assert answer.contents == [7]


async def test_invoke_on_redis_of_a_dead_lettered_input_raises(cluster: Cluster) -> None:
    worker, client = cluster.process(build), cluster.process(build)
    with anyio.fail_after(30):
        async with worker.open_run(Task(type=TaskType.LONG_RUNNING)):
            with pytest.raises(InvokeFailed, match="thirteen") as caught:
                await client.invoke(12, timeout=10)  # a makes 13: b and c fail on it
    failures = caught.value.result.failures
    assert sorted(f.node for f in failures) == ["b", "c"]


async def test_invoke_on_redis_timeout_leaves_its_reply_stream_to_expire(
    cluster: Cluster, raw: Redis
) -> None:
    client = cluster.process(build)  # nobody serves the graph, yet
    with anyio.fail_after(30):
        with pytest.raises(InvokeTimeout, match="'a'"):
            await client.invoke(1, timeout=0.2)
        worker = cluster.process(build)
        async with worker.open_run(Task(type=TaskType.LONG_RUNNING)):
            await client.wait_idle()  # the late records are written meanwhile
    keys = [key async for key in raw.scan_iter(match=f"{cluster.namespace}:*invoke:*")]
    assert any(key.endswith(b":stats") for key in keys)  # the late records counted there
    for key in keys:
        assert 0 < await raw.ttl(key) <= 3600, key  # none is left for ever


async def test_invoke_on_redis_of_an_output_that_cannot_be_encoded_raises(
    cluster: Cluster,
) -> None:
    class Bad(Node):
        def process(self, context: ExecutionContext) -> Any:
            return object()  # not plain data

    def build_bad() -> Graph:
        relay, bad = Node(id="relay"), Bad(id="bad")
        relay >> bad
        return Graph(start=relay, name="bad")

    worker, client = cluster.process(build_bad), cluster.process(build_bad)
    with anyio.fail_after(30):
        async with worker.open_run(Task(type=TaskType.LONG_RUNNING)):
            with pytest.raises(InvokeFailed, match="MessageEncodeError") as caught:
                await client.invoke(1, timeout=10)
    (failure,) = caught.value.result.failures
    assert (failure.node, failure.phase) == ("bad", "forward")


async def test_wait_idle_on_redis_returns_once_every_mailbox_is_settled(cluster: Cluster) -> None:
    seen: list[Any] = []

    def build_collecting(into: list[Any]) -> Graph:
        graph = build()
        graph.nodes["join"] >> Collector(into)
        return Graph(*graph.nodes.values(), name="invoked")  # the same graph, one node more

    worker = cluster.process(lambda: build_collecting(seen))
    client = cluster.process(lambda: build_collecting([]))  # the same wiring, elsewhere
    with anyio.fail_after(30):
        async with worker.open_run(Task(type=TaskType.LONG_RUNNING)):
            for number in range(20):
                await client.send("a", number * 1000)
            await client.wait_idle()  # from a process that does not run the graph
            assert len(seen) == 20
            await client.wait_idle()  # idle stays idle


class Collector(Node):
    def __init__(self, seen: list[Any]) -> None:
        super().__init__(id="collector")
        self.seen = seen

    def process(self, context: ExecutionContext) -> None:
        self.seen.append(context.inputs.content)
