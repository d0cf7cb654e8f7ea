"""The default worker loop: batches, settling before waiting, yields, reused objects."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

from spark_nodes import ExecutionContext, Graph, GraphResult, Node, NodeConfig, Task, TaskType
from spark_nodes.graphs import _topology
from spark_nodes.nodes import NodeMessage
from spark_nodes.testing import Probe
from tests.graph_support import run_with

pytestmark = pytest.mark.anyio

LONG = TaskType.LONG_RUNNING


async def serve_while(graph: Graph, driver: Callable[[], Awaitable[None]]) -> GraphResult:
    """Run ``graph`` long-running while ``driver()`` feeds it, then shut it down."""

    async def drive(graph: Graph) -> None:
        await driver()
        await graph.shutdown()

    return await run_with(graph, Task(type=LONG), drive)


async def test_a_producer_that_never_waits_still_lets_the_graph_run() -> None:
    sent = 0
    seen_at: list[int] = []

    class Note(Node):
        def process(self, context: ExecutionContext) -> None:
            seen_at.append(sent)

    note = Note(id="note")
    graph = Graph(start=note)

    async def produce() -> None:
        nonlocal sent
        for number in range(1_000):
            await graph.send(note, number)  # the mailbox always takes it at once
            sent += 1

    await serve_while(graph, produce)
    assert len(seen_at) == 1_000
    assert seen_at[0] < 1_000  # the node ran before the producer was done


async def test_outputs_reach_each_successor_in_the_order_they_were_produced() -> None:
    class Split(Node):
        def process(self, context: ExecutionContext) -> Any:
            return context.inputs.content

    split, even, odd = Split(id="split"), Probe(id="even"), Probe(id="odd")
    split.on(lambda n: n % 2 == 0) >> even
    split.otherwise() >> odd
    graph = Graph(start=split)

    async def produce() -> None:
        for number in range(300):
            await graph.send(split, number)

    await serve_while(graph, produce)
    assert even.items == list(range(0, 300, 2))
    assert odd.items == list(range(1, 300, 2))


async def test_after_a_process_that_waited_earlier_outputs_leave_before_the_next_wait() -> None:
    gates = {number: anyio.Event() for number in range(3)}

    class Wait(Node):
        """Waits for I/O (2 ms at least, then its gate) on every message."""

        async def process(self, context: ExecutionContext) -> Any:
            number: int = context.inputs.content
            await anyio.sleep(0.002)
            with anyio.fail_after(5):
                await gates[number].wait()
            return number

    wait, sink = Wait(id="wait"), Probe(id="sink")
    wait >> sink
    graph = Graph(start=wait)

    async def drive() -> None:
        for number in range(3):
            await graph.send(wait, number)
        gates[0].set()
        assert await sink.wait_for(1) == [0]  # delivered while message 1 is still waiting
        gates[1].set()
        assert await sink.wait_for(2) == [0, 1]
        gates[2].set()
        await sink.wait_for(3)

    await serve_while(graph, drive)
    assert sink.items == [0, 1, 2]


async def test_a_kept_context_is_not_reused_for_the_next_message() -> None:
    kept: list[ExecutionContext] = []
    inputs: list[NodeMessage] = []

    class Keep(Node):
        def process(self, context: ExecutionContext) -> Any:
            kept.append(context)
            inputs.append(context.inputs)
            return context.inputs

    keep, sink = Keep(id="keep"), Probe(id="sink")
    keep >> sink
    graph = Graph(start=keep)

    async def produce() -> None:
        for number in range(5):
            await graph.send(keep, number)

    await serve_while(graph, produce)
    assert [context.inputs.content for context in kept] == [0, 1, 2, 3, 4]
    assert len({id(context) for context in kept}) == 5
    assert [message.content for message in inputs] == [0, 1, 2, 3, 4]
    assert [message.metadata.get("source_node") for message in sink.received] == ["keep"] * 5
    assert all("source_node" not in message.metadata for message in inputs)


async def test_a_context_kept_alone_keeps_its_own_inputs() -> None:
    kept: list[ExecutionContext] = []

    class Keep(Node):
        def process(self, context: ExecutionContext) -> Any:
            kept.append(context)  # the context only, not context.inputs
            return context.inputs.content

    keep, sink = Keep(id="keep"), Probe(id="sink")
    keep >> sink
    graph = Graph(start=keep)

    async def produce() -> None:
        for number in range(5):
            await graph.send(keep, number)

    await serve_while(graph, produce)
    assert [context.inputs.content for context in kept] == [0, 1, 2, 3, 4]
    assert sink.items == [0, 1, 2, 3, 4]


async def test_the_last_output_is_that_of_the_last_message_however_it_was_forwarded() -> None:
    class Echo(Node):
        def process(self, context: ExecutionContext) -> Any:
            return context.inputs.content

    echo, sink = Echo(id="echo"), Probe(id="sink")
    echo >> sink
    graph = Graph(start=echo)

    async def produce() -> None:
        await graph.send(echo, "plain")
        # A correlated message takes forward()'s general way; it comes last.
        await graph.send(echo, "correlated", metadata={"correlation": ["c1"]})

    await serve_while(graph, produce)
    assert sink.items == ["plain", "correlated"]
    assert echo.last_output == "correlated"


async def test_a_node_with_several_loops_takes_one_message_at_a_time() -> None:
    release = anyio.Event()
    started: list[int] = []

    class Slow(Node):
        async def process(self, context: ExecutionContext) -> Any:
            started.append(context.inputs.content)
            if context.inputs.content == 0:
                with anyio.fail_after(5):
                    await release.wait()
            return context.inputs.content

    slow, sink = Slow(id="slow", config=NodeConfig(concurrency=2)), Probe(id="sink")
    slow >> sink
    graph = Graph(start=slow)

    async def drive() -> None:
        for number in range(4):
            await graph.send(slow, number)
        await sink.wait_for(3)  # 1, 2 and 3 pass while 0 holds one loop
        assert 0 not in sink.items
        release.set()
        await sink.wait_for(4)

    await serve_while(graph, drive)
    assert sorted(sink.items) == [0, 1, 2, 3]


async def test_the_topology_is_computed_once_per_wiring_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made = 0
    real = _topology.Topology

    class Counting(real):  # type: ignore[misc,valid-type]
        def __init__(self, *args: Any) -> None:
            nonlocal made
            made += 1
            super().__init__(*args)

    monkeypatch.setattr("spark_nodes.graphs.graph.Topology", Counting)
    a, b = Node(id="a"), Node(id="b")
    a >> b
    graph = Graph(start=a)
    assert list(graph.nodes) == ["a", "b"]
    for _ in range(100):
        assert list(graph.nodes) == ["a", "b"]
    assert made == 1
    b >> Node(id="c")  # a new edge: the next look sees it
    assert list(graph.nodes) == ["a", "b", "c"]
    assert made == 2
