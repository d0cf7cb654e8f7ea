"""One-pass (STANDARD) runs: the input flows along the edges once, then the run completes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest

from spark_nodes import (
    Budget,
    ExecutionContext,
    Graph,
    Node,
    NodeConfig,
    NodeMessage,
    StopReason,
    Task,
    WiringError,
)
from spark_nodes.channels import InMemoryChannel
from spark_nodes.testing import RecordingObserver

pytestmark = pytest.mark.anyio


class Add(Node):
    def __init__(self, amount: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.amount = amount

    def process(self, context: ExecutionContext) -> Any:
        return {"n": context.inputs.content["n"] + self.amount}


class AsyncDouble(Node):
    async def process(self, context: ExecutionContext) -> Any:
        await anyio.lowlevel.checkpoint()
        return {"n": context.inputs.content["n"] * 2}


class Record(Node):
    """Keeps what it received (content and metadata) and forwards nothing."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seen: list[NodeMessage] = []

    def process(self, context: ExecutionContext) -> None:
        self.seen.append(context.inputs)


async def run(graph: Graph, inputs: Any, **task: Any) -> Any:
    with anyio.fail_after(10):
        return await graph.run(Task(inputs=inputs, **task))


async def test_a_chain_returns_the_last_nodes_output() -> None:
    a, b, c = Add(1, id="a"), AsyncDouble(id="b"), Add(10, id="c")
    a >> b >> c
    result = await run(Graph(start=a), {"n": 1})
    assert result.stop_reason is StopReason.COMPLETED
    assert result.content == {"n": 14}
    assert isinstance(result.output, NodeMessage)
    assert result.output.metadata["source_node"] == "c"
    assert {i: s.processed for i, s in result.node_stats.items()} == {"a": 1, "b": 1, "c": 1}
    assert result.node_stats["a"].forwarded == 1
    assert result.node_stats["c"].terminal_outputs == 1


async def test_every_terminal_output_is_in_the_result() -> None:
    start, left, right = Node(id="start"), Add(1, id="left"), Add(2, id="right")
    start >> [left, right]
    result = await run(Graph(start=start), {"n": 0})
    assert sorted(o.content["n"] for o in result.outputs) == [1, 2]


async def test_fan_in_processes_once_per_incoming_message() -> None:
    start, left, right, join = Node(id="start"), Add(1, id="l"), Add(2, id="r"), Record(id="j")
    start >> [left, right] >> join
    await run(Graph(start=start), {"n": 0})
    assert sorted(m.content["n"] for m in join.seen) == [1, 2]


async def test_forwarded_messages_carry_trace_source_and_edge() -> None:
    a, b = Add(1, id="a"), Record(id="b")
    a >> b
    await run(Graph(start=a), NodeMessage({"n": 0}, {"tenant": "acme"}, "root-id"))
    (received,) = b.seen
    assert received.metadata == {"trace_id": "root-id", "source_node": "a", "edge": "a->b"}


async def test_a_returned_node_message_keeps_its_metadata_downstream() -> None:
    class Tag(Node):
        def process(self, context: ExecutionContext) -> NodeMessage:
            return NodeMessage(context.inputs.content, {"tag": "checked"})

    a, b, c = Node(id="a"), Tag(id="b"), Record(id="c")
    a >> b >> c
    await run(Graph(start=a), NodeMessage("x", {"tenant": "acme"}, "root"))
    (received,) = c.seen
    assert received.metadata == {
        "tag": "checked",
        "trace_id": "root",
        "source_node": "b",
        "edge": "b->c",
    }
    assert received.content == "x"


async def test_identity_relays_keep_the_inputs_metadata() -> None:
    a, b, c = Node(id="a"), Node(id="b"), Record(id="c")
    a >> b >> c
    await run(Graph(start=a), NodeMessage("x", {"tenant": "acme"}, "root"))
    assert c.seen[0].metadata["tenant"] == "acme"
    assert c.seen[0].metadata["source_node"] == "b"


async def test_none_forwards_nothing() -> None:
    class Drop(Node):
        def process(self, context: ExecutionContext) -> None:
            return None

    a, b = Drop(id="a"), Record(id="b")
    a >> b
    result = await run(Graph(start=a), 1)
    assert b.seen == []
    assert result.outputs == ()
    assert result.node_stats["a"].processed == 1


async def test_generators_forward_each_item() -> None:
    class Split(Node):
        async def process(self, context: ExecutionContext) -> AsyncIterator[int]:
            for item in context.inputs.content:
                await anyio.lowlevel.checkpoint()
                yield item

    class Pairs(Node):
        def process(self, context: ExecutionContext) -> Iterator[tuple[int, int]]:
            yield (context.inputs.content, 0)
            yield (context.inputs.content, 1)

    split, pairs, sink = Split(id="split"), Pairs(id="pairs"), Record(id="sink")
    split >> pairs >> sink
    result = await run(Graph(start=split), [1, 2, 3])
    assert sorted(m.content for m in sink.seen) == [(1, 0), (1, 1), (2, 0), (2, 1), (3, 0), (3, 1)]
    assert result.node_stats["split"].forwarded == 3


async def test_emitted_outputs_go_before_the_returned_one() -> None:
    class Emit(Node):
        def process(self, context: ExecutionContext) -> str:
            context.emit("first")
            context.emit(NodeMessage("second", {"k": 1}))
            return "third"

    a, sink = Emit(id="a"), Record(id="sink")
    a >> sink
    await run(Graph(start=a), "go")
    assert [m.content for m in sink.seen] == ["first", "second", "third"]
    assert sink.seen[1].metadata["k"] == 1


async def test_conditional_routing_in_a_run() -> None:
    router, high, low = Node(id="router"), Record(id="high"), Record(id="low")
    router.on(lambda out: out["score"] > 0.5) >> high
    router.on(lambda out: out["score"] <= 0.5) >> low
    graph = Graph(start=router)
    await run(graph, {"score": 0.9})
    await run(graph, {"score": 0.2})
    assert [m.content["score"] for m in high.seen] == [0.9]
    assert [m.content["score"] for m in low.seen] == [0.2]


async def test_a_loop_runs_until_its_condition_lets_go() -> None:
    class Count(Node):
        def process(self, context: ExecutionContext) -> dict[str, Any]:
            n = context.inputs.content["n"] + 1
            return {"n": n, "done": n >= 5}

    loop, exit_node = Count(id="loop"), Record(id="exit")
    loop.on(done=False) >> loop
    loop.on(done=True) >> exit_node
    result = await run(Graph(start=loop), {"n": 0})
    assert result.stop_reason is StopReason.COMPLETED
    assert [m.content["n"] for m in exit_node.seen] == [5]
    assert result.node_stats["loop"].processed == 5


async def test_an_endless_loop_is_stopped_by_max_messages() -> None:
    spin = Node(id="spin")
    spin >> spin
    result = await run(Graph(start=spin), "again", budget=Budget(max_messages=50))
    assert result.stop_reason is StopReason.BUDGET
    assert result.detail == "max_messages=50 reached"
    assert result.node_stats["spin"].processed == 50


async def test_without_input_the_start_node_runs_once_on_none() -> None:
    start, sink = Node(id="start"), Record(id="sink")
    start >> sink
    result = await run(Graph(start=start), None)
    assert result.stop_reason is StopReason.COMPLETED
    assert [m.content for m in sink.seen] == [None]


async def test_a_one_pass_run_refuses_custom_loops_and_live_nodes() -> None:
    class Loop(Node):
        async def go(self) -> None:
            return None

    with pytest.raises(WiringError, match="has a custom go\\(\\) loop"):
        await run(Graph(start=Loop(id="loop")), 1)
    with pytest.raises(WiringError, match="'live' is live"):
        await run(Graph(start=Node(id="live", config=NodeConfig(live=True))), 1)


class Logged(Add):
    """A go() that only wraps the default loop, logging entry and exit (issue 10, 6b)."""

    def __init__(self, amount: int, **kwargs: Any) -> None:
        super().__init__(amount, **kwargs)
        self.log: list[str] = []

    async def go(self) -> None:
        self.log.append("enter")
        try:
            await super().go()
        finally:
            self.log.append("exit")


async def test_a_go_that_wraps_super_go_runs_in_a_one_pass_run() -> None:
    first, middle, last = Logged(1, id="first"), Logged(10, id="middle"), Add(100, id="last")
    first >> middle >> last
    result = await run(Graph(start=first), {"n": 0})
    assert result.stop_reason is StopReason.COMPLETED
    assert result.content == {"n": 111}
    assert {i: s.processed for i, s in result.node_stats.items()} == {
        "first": 1,
        "middle": 1,
        "last": 1,
    }
    assert first.log == middle.log == ["enter", "exit"]  # its go() ran, and ended with the run


async def test_a_wrapping_go_in_a_cycle_ends_when_the_one_pass_run_completes() -> None:
    class Countdown(Logged):
        def process(self, context: ExecutionContext) -> Any:
            n = context.inputs.content["n"]
            return {"n": n - 1} if n > 0 else None

    loop = Countdown(0, id="loop")
    loop >> loop
    result = await run(Graph(start=loop), {"n": 5})
    assert result.stop_reason is StopReason.COMPLETED
    assert result.node_stats["loop"].processed == 6
    assert loop.log == ["enter", "exit"]


async def test_concurrency_processes_messages_in_parallel() -> None:
    class Slow(Node):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.running = 0
            self.peak = 0

        async def process(self, context: ExecutionContext) -> None:
            self.running += 1
            self.peak = max(self.peak, self.running)
            await anyio.sleep(0.01)
            self.running -= 1

    slow = Slow(id="slow", config=NodeConfig(concurrency=4))

    class Many(Node):
        def process(self, context: ExecutionContext) -> Iterator[int]:
            yield from range(8)

    many = Many(id="many")
    many >> slow
    result = await run(Graph(start=many), "go")
    assert result.node_stats["slow"].processed == 8
    assert slow.peak == 4


async def test_a_given_mailbox_carries_the_traffic_in_every_mode() -> None:
    recorder = RecordingObserver()
    mailbox = InMemoryChannel(name="watched", observers=[recorder])
    a, b = Node(id="a"), Node(id="b", mailbox=mailbox)
    a >> b
    await run(Graph(start=a), "payload")
    assert b.mailbox is mailbox
    assert [p for p in recorder.payloads("receive") if p is not None] == ["payload"]


async def test_a_graph_can_run_again() -> None:
    a, b = Add(1, id="a"), Add(1, id="b")
    a >> b
    graph = Graph(start=a)
    first = await run(graph, {"n": 0})
    second = await run(graph, {"n": 10})
    assert (first.content, second.content) == ({"n": 2}, {"n": 12})
    assert a.mailbox.empty()
    assert b.mailbox.empty()


async def test_a_node_cannot_run_in_two_graphs_at_once() -> None:
    started = anyio.Event()

    class Wait(Node):
        async def process(self, context: ExecutionContext) -> None:
            started.set()
            await anyio.sleep_forever()

    shared = Wait(id="shared")
    first = Graph(start=shared)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(first.run, Task(inputs=1, budget=Budget(grace_period=0)))
            await started.wait()
            with pytest.raises(WiringError, match=r"already running \(in another graph"):
                await Graph(start=shared).run(Task(inputs=1))
            with pytest.raises(RuntimeError, match="already running"):
                await first.run(Task(inputs=1))
            first.stop()


async def test_a_sync_process_may_return_an_awaitable() -> None:
    class Deferred(Node):
        def process(self, context: ExecutionContext) -> Any:
            async def later() -> str:
                await anyio.lowlevel.checkpoint()
                return f"later:{context.inputs.content}"

            return later()

    a, sink = Deferred(id="a"), Record(id="sink")
    a >> sink
    await run(Graph(start=a), "x")
    assert [m.content for m in sink.seen] == ["later:x"]


async def test_emitting_without_returning_runs_process_once() -> None:
    calls: list[int] = []

    class EmitOnly(Node):
        def process(self, context: ExecutionContext) -> None:
            calls.append(1)
            context.emit("only")

    a, sink = EmitOnly(id="a"), Record(id="sink")
    a >> sink
    await run(Graph(start=a), "x")
    assert calls == [1]
    assert [m.content for m in sink.seen] == ["only"]


async def test_a_full_successor_mailbox_applies_backpressure_and_loses_nothing() -> None:
    class Many(Node):
        def process(self, context: ExecutionContext) -> Iterator[int]:
            yield from range(20)

    class Relay(Node):
        def process(self, context: ExecutionContext) -> Any:
            return context.inputs.content

    class Slow(Node):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.seen: list[NodeMessage] = []

        async def process(self, context: ExecutionContext) -> None:
            await anyio.sleep(0.001)
            self.seen.append(context.inputs)

    many, relay = Many(id="many"), Relay(id="relay", config=NodeConfig(mailbox_maxsize=2))
    slow = Slow(id="slow", config=NodeConfig(mailbox_maxsize=1))
    many >> relay >> slow
    result = await run(Graph(start=many), "go")
    assert [m.content for m in slow.seen] == list(range(20))
    assert result.node_stats["slow"].mailbox.peak_depth == 1
    assert result.node_stats["relay"].mailbox.peak_depth <= 2
