"""Parallel groups: fan out, then join one message per branch per correlation id."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from spark_nodes import (
    ExecutionContext,
    Graph,
    JoinNode,
    Node,
    NodeConfig,
    StopReason,
    Task,
    TaskType,
)
from spark_nodes.channels import ChannelMessage
from spark_nodes.testing import Probe

pytestmark = pytest.mark.anyio


class Apply(Node):
    def __init__(self, function: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.function = function

    def process(self, context: ExecutionContext) -> Any:
        return self.function(context.inputs.content)


def diamond(**join_kwargs: Any) -> tuple[Node, Apply, Apply, JoinNode, Probe]:
    start = Node(id="start")
    double, shift = Apply(lambda x: x * 2, id="double"), Apply(lambda x: x + 100, id="shift")
    join, sink = JoinNode(id="join", **join_kwargs), Probe(id="sink")
    start >> [double, shift] >> join >> sink
    return start, double, shift, join, sink


async def test_a_join_merges_one_message_from_each_branch() -> None:
    start, _, _, _, sink = diamond()
    with anyio.fail_after(10):
        result = await Graph(start=start).run(Task(inputs=5))
    assert result.stop_reason is StopReason.COMPLETED
    assert sink.items == [{"double": 10, "shift": 105}]
    assert "correlation" not in sink.received[0].metadata  # the join popped its id


async def test_parts_are_matched_by_correlation_in_a_stream() -> None:
    start, _, _, _, sink = diamond()
    graph = Graph(start=start)
    with anyio.fail_after(10):
        async with graph.open_run(Task(type=TaskType.LONG_RUNNING)) as run:
            for x in range(20):
                await run.send(start, x)
            merged = await sink.wait_for(20)
    assert sorted(merged, key=lambda m: m["double"]) == [
        {"double": 2 * x, "shift": x + 100} for x in range(20)
    ]


async def test_groups_nest() -> None:
    start, left, right = Node(id="start"), Node(id="left"), Apply(lambda x: -x, id="right")
    l1, l2 = Apply(lambda x: x + 1, id="l1"), Apply(lambda x: x + 2, id="l2")
    inner, outer, sink = JoinNode(id="inner"), JoinNode(id="outer"), Probe(id="sink")
    start >> [left, right]
    left >> [l1, l2] >> inner
    [inner, right] >> outer >> sink
    with anyio.fail_after(10):
        await Graph(start=start).run(Task(inputs=10))
    assert sink.items == [{"inner": {"l1": 11, "l2": 12}, "right": -10}]


async def test_merge_can_be_overridden() -> None:
    class Sum(JoinNode):
        def merge(self, parts: dict[str, Any]) -> Any:
            return sum(parts.values())

    start = Node(id="start")
    a, b = Apply(lambda x: x, id="a"), Apply(lambda x: x * 10, id="b")
    total, sink = Sum(id="sum"), Probe(id="sink")
    start >> [a, b] >> total >> sink
    with anyio.fail_after(10):
        await Graph(start=start).run(Task(inputs=3))
    assert sink.items == [33]


async def test_a_group_a_branch_cannot_complete_is_dead_lettered_at_shutdown() -> None:
    def fail(_: Any) -> Any:
        raise RuntimeError("branch broke")

    start = Node(id="start")
    ok, broken = Apply(lambda x: x, id="ok"), Apply(fail, id="broken")
    join, sink = JoinNode(id="join"), Probe(id="sink")
    start >> [ok, broken] >> join >> sink
    graph = Graph(start=start)
    with anyio.fail_after(10):
        result = await graph.run(Task(inputs=1))
    assert result.stop_reason is StopReason.COMPLETED
    assert sink.items == []
    letters = [await graph.dead_letters.receive() for _ in range(2)]
    by_phase = {letter.metadata["dead_letter"]["phase"]: letter for letter in letters}
    assert by_phase["process"].metadata["dead_letter"]["node"] == "broken"
    held = by_phase["join"].metadata["dead_letter"]
    assert held["node"] == "join"
    assert held["error_type"] == "builtins.TimeoutError"
    assert "drained with the group incomplete: waiting for ['broken']" in held["error"]
    assert by_phase["join"].payload == 1


async def test_an_incomplete_group_times_out_while_the_graph_runs() -> None:
    def fail(_: Any) -> Any:
        raise RuntimeError("branch broke")

    start = Node(id="start")
    ok, broken = Apply(lambda x: x, id="ok"), Apply(fail, id="broken")
    join = JoinNode(id="join", timeout=0.05)
    start >> [ok, broken] >> join
    graph = Graph(start=start)
    with anyio.fail_after(10):
        async with graph.open_run(Task(type=TaskType.LONG_RUNNING)) as run:
            await run.send(start, "x")
            letters = [await graph.dead_letters.receive() for _ in range(2)]
            assert join.held == []
    timed_out = next(m for m in letters if m.metadata["dead_letter"]["phase"] == "join")
    assert (
        "timed out after 0.05s: waiting for ['broken']"
        in timed_out.metadata["dead_letter"]["error"]
    )


async def test_parts_are_acked_only_after_the_merge_is_forwarded() -> None:
    acked: list[str] = []

    def ack_for(name: str) -> Any:
        async def ack() -> None:
            acked.append(name)

        return ack

    a, b = Node(id="a"), Node(id="b")
    join, sink = JoinNode(id="join"), Probe(id="sink")
    [a, b] >> join >> sink
    for source in ("a", "b"):
        metadata = {"source_node": source, "correlation": ["group-1"]}
        await join.mailbox.send(ChannelMessage(source, metadata, ack=ack_for(source)))
    graph = Graph(a, b)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(graph.run, Task(type=TaskType.LONG_RUNNING))
            assert await sink.wait_for(1) == [{"a": "a", "b": "b"}]
            await graph.shutdown()
    assert acked == ["a", "b"]


async def test_strangers_and_duplicates_are_dead_lettered() -> None:
    a, b = Node(id="a"), Node(id="b")
    join = JoinNode(id="join")
    [a, b] >> join
    await join.mailbox.send(ChannelMessage("x", {"source_node": "stranger"}))
    for _ in range(2):
        await join.mailbox.send(ChannelMessage("dup", {"source_node": "a", "correlation": ["k"]}))
    graph = Graph(a, b)
    with anyio.fail_after(10):
        result = await graph.run(Task(type=TaskType.LONG_RUNNING, idle_timeout=0.05))
    errors = [(await graph.dead_letters.receive()).metadata["dead_letter"] for _ in range(3)]
    assert "not one of its predecessors ['a', 'b']" in errors[0]["error"]
    assert "already has a message from 'a'" in errors[1]["error"]
    assert errors[2]["phase"] == "join"  # the first 'dup', never completed by b
    assert result.stop_reason is StopReason.IDLE


def test_a_join_needs_a_positive_timeout() -> None:
    with pytest.raises(ValueError, match="timeout must be positive"):
        JoinNode(timeout=0)


async def test_joins_with_concurrent_branches() -> None:
    start = Node(id="start")
    slow = Apply(lambda x: x, id="slow", config=NodeConfig(concurrency=3))
    fast = Apply(lambda x: -x, id="fast")
    join, sink = JoinNode(id="join"), Probe(id="sink")
    start >> [slow, fast] >> join >> sink
    graph = Graph(start=start)
    with anyio.fail_after(10):
        async with graph.open_run(Task(type=TaskType.LONG_RUNNING)) as run:
            for x in range(10):
                await run.send(start, x)
            await sink.wait_for(10)
    assert sorted(m["slow"] for m in sink.items) == list(range(10))
    assert all(m["fast"] == -m["slow"] for m in sink.items)
