"""Dynamic control flow from inside process: goto, stop_graph, cancel_graph, and their priority."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from spark_nodes import (
    ExecutionContext,
    Graph,
    GraphCancelled,
    Node,
    NodeMessage,
    StopReason,
    Task,
    TaskType,
)
from spark_nodes.channels import ChannelMessage
from spark_nodes.testing import Probe

pytestmark = pytest.mark.anyio


class Steer(Node):
    """Applies the instructions in its input: {"goto": [...], "stop": ..., "cancel": ...}."""

    def process(self, context: ExecutionContext) -> Any:
        orders = context.inputs.content
        if "goto" in orders:
            context.goto(*orders["goto"])
        if "stop" in orders:
            context.stop_graph(orders["stop"])
        if "cancel" in orders:
            context.cancel_graph(orders["cancel"])
        return {"from": self.id}


def wire() -> tuple[Steer, Probe, Probe, Probe]:
    steer, left, right, elsewhere = (
        Steer(id="steer"),
        Probe(id="left"),
        Probe(id="right"),
        Probe(id="elsewhere"),
    )
    steer >> [left, right]
    Graph(steer, elsewhere)  # elsewhere: in the graph, not wired to steer
    return steer, left, right, elsewhere


async def run(steer: Node, elsewhere: Node, inputs: Any, **task: Any) -> Any:
    with anyio.fail_after(10):
        return await Graph(steer, elsewhere).run(Task(inputs=inputs, **task))


async def test_goto_sends_only_to_the_target_skipping_the_edges() -> None:
    steer, left, right, elsewhere = wire()
    result = await run(steer, elsewhere, {"goto": ["elsewhere"]})
    assert result.stop_reason is StopReason.COMPLETED
    assert (left.items, right.items) == ([], [])
    assert elsewhere.items == [{"from": "steer"}]
    assert elsewhere.received[0].metadata["source_node"] == "steer"
    assert elsewhere.received[0].metadata["edge"] == "steer~>elsewhere"


async def test_a_goto_along_a_wired_edge_is_marked_as_a_goto_not_as_the_edge() -> None:
    class Stream(Node):
        def process(self, context: ExecutionContext) -> Iterator[int]:
            yield 1  # along the edge
            context.goto("left")  # the same target, by goto
            yield 2

    stream, left = Stream(id="stream"), Probe(id="left")
    stream >> left
    with anyio.fail_after(10):
        await Graph(start=stream).run(Task(inputs="go"))
    assert [(m.content, m.metadata["edge"]) for m in left.received] == [
        (1, "stream->left"),
        (2, "stream~>left"),
    ]


async def test_goto_takes_nodes_or_ids_and_several_targets() -> None:
    _, left, right, elsewhere = wire()

    class GotoBoth(Node):
        def process(self, context: ExecutionContext) -> str:
            context.goto(left)
            context.goto("elsewhere", "elsewhere")
            return "x"

    both = GotoBoth(id="both")
    both >> right
    with anyio.fail_after(10):
        await Graph(both, left, elsewhere).run(Task(inputs=1))
    assert (left.items, elsewhere.items, right.items) == (["x"], ["x"], [])


async def test_goto_to_a_node_outside_the_graph_fails_the_message() -> None:
    steer, _, _, elsewhere = wire()
    stranger = Node(id="stranger")
    graph = Graph(steer, elsewhere)
    with anyio.fail_after(10):
        result = await graph.run(Task(inputs={"goto": [stranger]}))
    assert result.dead_lettered == 1
    letter = await graph.dead_letters.receive()
    assert letter.metadata["dead_letter"]["error_type"] == "spark_nodes.errors.WiringError"
    assert "is not a node of the running graph" in letter.metadata["dead_letter"]["error"]


async def test_goto_needs_a_running_graph() -> None:
    context = ExecutionContext(NodeMessage(1), Node(id="alone"))
    with pytest.raises(RuntimeError, match="cannot goto"):
        context.goto("anywhere")


async def test_stop_graph_ends_the_run_normally_and_forwards_nothing() -> None:
    acks: list[str] = []

    async def ack() -> None:
        acks.append("acked")

    steer, left, right, elsewhere = wire()
    await steer.mailbox.send(ChannelMessage({"stop": "enough for today"}, ack=ack))
    with anyio.fail_after(10):
        result = await Graph(steer, elsewhere).run(Task(type=TaskType.LONG_RUNNING))
    assert result.stop_reason is StopReason.STOPPED
    assert result.detail == "steer: enough for today"
    assert (left.items, right.items) == ([], [])
    assert result.get_result("steer") == {"from": "steer"}
    assert result.node_stats["steer"].processed == 1
    assert acks == ["acked"]


async def test_cancel_graph_raises_and_puts_the_message_back() -> None:
    steer, left, right, elsewhere = wire()
    orders = {"cancel": "bad data", "goto": ["elsewhere"]}
    with anyio.fail_after(10), pytest.raises(GraphCancelled) as caught:
        await run(steer, elsewhere, orders)
    error = caught.value
    assert (error.node_id, error.reason) == ("steer", "bad data")
    assert str(error) == "node 'steer' cancelled the graph: bad data"
    assert error.result is not None
    assert error.result.stop_reason is StopReason.CANCELLED
    assert (left.items, right.items, elsewhere.items) == ([], [], [])
    assert steer.mailbox.qsize() == 1  # not processed: kept for the next run


async def test_cancel_graph_cancels_other_work_in_flight() -> None:
    slow_started = anyio.Event()

    class Slow(Node):
        async def process(self, context: ExecutionContext) -> None:
            slow_started.set()
            await anyio.sleep_forever()

    class CancelWhenSlowRuns(Node):
        async def process(self, context: ExecutionContext) -> None:
            await slow_started.wait()
            context.cancel_graph("give up")

    slow, canceller = Slow(id="slow"), CancelWhenSlowRuns(id="canceller")
    graph = Graph(slow, canceller)
    await slow.mailbox.send(ChannelMessage("work"))
    await canceller.mailbox.send(ChannelMessage("go"))
    with anyio.fail_after(10), pytest.raises(GraphCancelled):
        await graph.run(Task(type=TaskType.LONG_RUNNING))
    assert slow.mailbox.qsize() == 1  # cancelled mid-process: back in its mailbox


async def test_cancel_outranks_stop_which_outranks_goto() -> None:
    steer, _, _, elsewhere = wire()
    result = await run(steer, elsewhere, {"stop": "done", "goto": ["elsewhere"]})
    assert result.stop_reason is StopReason.STOPPED
    assert elsewhere.items == []
    steer, _, _, elsewhere = wire()
    with pytest.raises(GraphCancelled):
        await run(steer, elsewhere, {"stop": "done", "cancel": "worse"})


async def test_goto_in_a_generator_redirects_the_items_after_it() -> None:
    class Stream(Node):
        def process(self, context: ExecutionContext) -> Iterator[int]:
            yield 1
            context.goto("elsewhere")
            yield 2
            yield 3

    stream, left, elsewhere = Stream(id="stream"), Probe(id="left"), Probe(id="elsewhere")
    stream >> left
    with anyio.fail_after(10):
        await Graph(stream, elsewhere).run(Task(inputs="go"))
    assert (left.items, elsewhere.items) == ([1], [2, 3])


async def test_stop_in_a_generator_forwards_nothing_more() -> None:
    class Stream(Node):
        def process(self, context: ExecutionContext) -> Iterator[int]:
            yield 1
            context.stop_graph("seen enough")
            yield 2

    stream, left = Stream(id="stream"), Probe(id="left")
    stream >> left
    with anyio.fail_after(10):
        result = await Graph(start=stream).run(Task(inputs="go"))
    assert result.stop_reason is StopReason.STOPPED
    assert result.node_stats["stream"].forwarded == 1
    # 1 was forwarded before the stop; the stopped graph took no new message, so it waits.
    assert left.items == []
    assert (await left.mailbox.receive()).payload == 1


async def test_goto_makes_a_loop_in_a_long_running_graph() -> None:
    class Countdown(Node):
        def process(self, context: ExecutionContext) -> int:
            n = int(context.inputs.content)
            if n > 0:
                context.goto(self)  # jump back to itself
            return n - 1

    countdown, done = Countdown(id="countdown"), Probe(id="done")
    countdown.on(lambda n: n < 0) >> done
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            graph = Graph(start=countdown)
            group.start_soon(graph.run, Task(inputs=5, type=TaskType.LONG_RUNNING))
            assert await done.wait_for(1) == [-1]
            await graph.shutdown()
    assert graph.running is False
