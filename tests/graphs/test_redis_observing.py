"""Graph observers and metering on a Redis graph: events after the commit, timings."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from spark_nodes import ExecutionContext, Graph, MetricsObserver, Node, NodeConfig, RetryPolicy
from spark_nodes.graphs import GraphEvent
from tests.redis_support import Cluster

pytestmark = [pytest.mark.anyio, pytest.mark.redis]  # redis-py: asyncio only


class Double(Node):
    def process(self, context: ExecutionContext) -> Any:
        return context.inputs.content * 2


class Picky(Double):
    def process(self, context: ExecutionContext) -> Any:
        if context.inputs.content < 0:
            raise ValueError("negative")
        return super().process(context)


class Sink(Node):
    async def process(self, context: ExecutionContext) -> None:
        await context.graph_state.append("seen", context.inputs.content)


def pipeline() -> Graph:
    retry = RetryPolicy(max_attempts=2, initial_delay=0.001, jitter=0.0)
    first, second, sink = (
        Double(id="first"),
        Picky(id="second", config=NodeConfig(retry=retry)),
        Sink(id="sink"),
    )
    first >> second >> sink
    return Graph(first, name="observed")


async def test_observers_of_a_redis_node_see_its_sends_once_committed(cluster: Cluster) -> None:
    server, client = cluster.process(pipeline), cluster.process(pipeline)
    events: list[GraphEvent] = []
    server.observe(events.append, node="second")
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(server.serve)
            await client.send("first", 1)
            await client.send("first", -1)  # dead-lettered by second, after a retry
            await client.wait_idle()
            await client.shutdown()
    assert sorted(await client.state.get("seen")) == [4]
    ok = [
        (e.phase, e.outcome)
        for e in events
        if e.message.metadata.get("trace_id") == _trace(events, 0)
    ]
    assert ok == [
        ("receive", None),
        ("process_start", None),
        ("process_end", "ok"),
        ("send", None),
        ("ack", "ok"),
    ]
    sent = next(e for e in events if e.phase == "send")
    assert (sent.edge, sent.target, sent.message.payload) == ("second->sink", "sink", 4)
    ends = [(e.attempt, e.outcome) for e in events if e.phase == "process_end"]
    assert ends == [(1, "ok"), (1, "retry"), (2, "dead_letter")]
    assert [e.outcome for e in events if e.phase == "ack"] == ["ok", "dead_letter"]


def _trace(events: list[GraphEvent], index: int) -> Any:
    return events[index].message.metadata.get("trace_id")


async def test_a_metered_redis_graph_times_its_nodes(cluster: Cluster) -> None:
    server, client = cluster.process(pipeline), cluster.process(pipeline)
    metrics = MetricsObserver()
    server.observe(metrics)
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(server.serve)
            for number in range(10):
                await client.send("first", number)
            await client.wait_idle()
            await client.shutdown()
    stats = await metrics.snapshot()
    for node in ("first", "second", "sink"):
        timing = stats.nodes[node].process_time
        assert timing is not None, node
        assert timing.count == 10
    queued = stats.nodes["sink"].queue_time
    assert queued is not None
    assert queued.count == 10
    assert stats.edges["first->second"].sent == 10


class YieldsThenFails(Node):
    """Yields an item, then fails its first attempt."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.tries = 0

    def process(self, context: ExecutionContext) -> Iterator[Any]:
        self.tries += 1
        yield "item"
        if self.tries == 1:
            raise ValueError("first attempt fails after its item")


def generator_pipeline() -> Graph:
    retry = RetryPolicy(max_attempts=2, initial_delay=0.001, jitter=0.0)
    gen, sink = YieldsThenFails(id="gen", config=NodeConfig(retry=retry)), Sink(id="sink")
    gen >> sink
    return Graph(gen, name="generated")


async def test_a_failed_attempt_s_commit_outputs_are_not_counted_or_told(
    cluster: Cluster,
) -> None:
    server, client = cluster.process(generator_pipeline), cluster.process(generator_pipeline)
    events: list[GraphEvent] = []
    server.observe(events.append, node="gen")
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(server.serve)
            await client.send("gen", 1)
            await client.wait_idle()
            await client.shutdown()
    assert await client.state.get("seen") == ["item"]  # the retry's: committed with it
    assert (await client.stats()).edges["gen->sink"].sent == 1
    assert [e.message.payload for e in events if e.phase == "send"] == ["item"]
    ends = [e.outcome for e in events if e.phase == "process_end"]
    assert ends == ["retry", "ok"]
