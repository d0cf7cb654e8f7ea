"""Taps: probes on a built graph's nodes and edges, fed by mailbox observers."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from spark_nodes import ExecutionContext, Graph, Node, Task, TaskType, WiringError
from spark_nodes.channels import ChannelMessage
from spark_nodes.nodes._loop import WAKE
from spark_nodes.testing import Probe, Tap, tap
from tests.redis_support import Cluster

pytestmark = pytest.mark.anyio

LONG = Task(type=TaskType.LONG_RUNNING)


class Double(Node):
    def process(self, context: ExecutionContext) -> Any:
        return context.inputs.content * 2


def pipeline() -> tuple[Graph, Node, Node, Node]:
    """``a >> b >> c``: a doubles, b relays, c doubles (c's outputs are the run's)."""
    a, b, c = Double(id="a"), Node(id="b"), Double(id="c")
    a >> b >> c
    return Graph(start=a), a, b, c


# -- what a node receives ------------------------------------------------------------------


async def test_a_tap_made_before_a_run_sees_what_the_node_receives_and_its_shutdown() -> None:
    graph, _, b, _ = pipeline()
    probe = tap(graph, "b")
    assert isinstance(probe, Tap)
    with anyio.fail_after(5):
        result = await graph.run(Task(inputs=1))
        message = await probe.expect_payload(2)
        await probe.expect_shutdown()
        await probe.expect_no_message(within=0.01)
    assert message.metadata["edge"] == "a->b"
    assert message.metadata["source_node"] == "a"
    assert probe.items == [2]  # the shutdown is not a payload
    assert probe.shutdowns[0].metadata["source_node"] == "a"
    assert [output.content for output in result.outputs] == [4]
    probe.close()
    assert b.mailbox.observers == ()


async def test_a_tap_on_a_running_graph_sees_each_message_sent_to_the_node() -> None:
    graph, *_ = pipeline()
    with anyio.fail_after(5):
        async with graph.open_run(LONG) as run, tap(graph, "c") as probe:
            await run.send("a", 1)
            await probe.expect_payload(2)
            await run.send("b", 10)  # straight into b: c still receives it from b
            await probe.expect_payload(10)
            await probe.expect_no_message(within=0.01)
            await run.shutdown()
            await probe.expect_shutdown()


async def test_a_tap_records_messages_sent_into_the_mailbox_directly_and_the_input() -> None:
    graph, a, *_ = pipeline()
    async with tap(graph, a) as probe:
        with anyio.fail_after(5):
            await a.mailbox.send(ChannelMessage("queued before the run"))
            await probe.expect_payload("queued before the run")


async def test_expect_message_times_out_naming_the_tap() -> None:
    graph, *_ = pipeline()
    async with tap(graph, "b") as probe:
        with anyio.fail_after(5), pytest.raises(AssertionError) as caught:
            await probe.expect_message(timeout=0.02)
    assert str(caught.value) == (
        "tap on what node 'b' receives: expected a message within 0.02 s, got none "
        "(nothing received so far)"
    )


async def test_expect_no_message_fails_when_the_node_gets_one() -> None:
    graph, *_ = pipeline()
    with anyio.fail_after(5):
        async with (
            graph.open_run(LONG) as run,
            tap(graph, "b") as probe,
            anyio.create_task_group() as group,
        ):
            group.start_soon(run.send, "a", 5)  # runs once the tap waits
            with pytest.raises(AssertionError, match=r"'b' receives: .* for 30 s, got 10"):
                await probe.expect_no_message(within=30)


async def test_fish_for_message_skips_what_the_node_received_before() -> None:
    graph, *_ = pipeline()
    with anyio.fail_after(5):
        async with graph.open_run(LONG) as run, tap(graph, "c") as probe:
            for number in range(5):
                await run.send("a", number)
            found = await probe.fish_for_message(lambda m: m.content > 5)
            assert found.content == 6
            await probe.expect_payload(8)


async def test_wake_ups_are_neither_payloads_nor_shutdowns() -> None:
    graph, _, b, _ = pipeline()
    async with tap(graph, "b") as probe:
        b.mailbox.send_nowait(ChannelMessage(None, {"source_node": WAKE}, is_shutdown=True))
        b.mailbox.send_nowait(ChannelMessage(None, {"source_node": "a"}, is_shutdown=True))
        with anyio.fail_after(5):
            await probe.expect_shutdown()
            await probe.expect_no_message(within=0.01)
    assert probe.received == []
    assert [s.metadata["source_node"] for s in probe.shutdowns] == ["a"]


async def test_a_receive_tap_records_a_message_only_when_the_node_takes_it() -> None:
    graph, a, *_ = pipeline()
    async with tap(graph, "a") as sent, tap(graph, "a", phase="receive") as taken:
        with anyio.fail_after(5):
            await a.mailbox.send(ChannelMessage(7))
            await sent.expect_payload(7)
            await taken.expect_no_message(within=0.01)  # nobody took it yet
            await graph.run()  # the mailbox holds it for the next run
            await taken.expect_payload(7)
            await taken.expect_shutdown()


# -- what a node emits ---------------------------------------------------------------------


async def test_an_emits_tap_sees_each_output_along_each_edge_and_the_shutdowns_passed_on() -> None:
    a, left, right = Double(id="a"), Node(id="left"), Node(id="right")
    a >> [left, right]
    graph = Graph(start=a)
    with anyio.fail_after(5):
        async with tap(graph, "a", emits=True) as probe:
            await graph.run(Task(inputs=3))
            first, second = await probe.expect_message(), await probe.expect_message()
            await probe.expect_no_message(within=0.01)
            await probe.expect_shutdown()
            await probe.expect_shutdown()
    assert sorted(m.metadata["edge"] for m in (first, second)) == ["a->left", "a->right"]
    assert probe.items == [6, 6]
    assert {s.metadata.get("source_node") for s in probe.shutdowns} == {"a"}


async def test_an_emits_tap_sees_gotos_and_not_what_others_send() -> None:
    class Jump(Node):
        def process(self, context: ExecutionContext) -> Any:
            context.goto("far")
            return context.inputs.content

    start, jump, far = Node(id="start"), Jump(id="jump"), Node(id="far")
    start >> jump
    graph = Graph(start, far)
    with anyio.fail_after(5):
        async with tap(graph, "jump", emits=True) as probe:
            await graph.run(Task(inputs="x"))
            message = await probe.expect_payload("x")
            await probe.expect_no_message(within=0.01)  # start's output to jump is not jump's
    assert message.metadata["edge"] == "jump~>far"


async def test_an_emits_tap_on_a_node_outside_a_graph_watches_its_successors() -> None:
    a, b = Double(id="a"), Probe(id="b")
    a >> b
    with anyio.fail_after(5):
        async with tap(a, emits=True) as probe, b.open_actor(), a.open_actor():
            await a.tell(4)
            await probe.expect_payload(8)
            assert await b.wait_for(1) == [8]


# -- what goes along an edge ---------------------------------------------------------------


def router() -> tuple[Graph, Node]:
    a, big, small = Node(id="a"), Node(id="big"), Node(id="small")
    a.on(lambda n: n > 10) >> big
    a.otherwise() >> small
    return Graph(start=a), a


@pytest.mark.parametrize("how", ["name", "pair", "edge"])
async def test_an_edge_tap_sees_only_what_takes_that_edge(how: str) -> None:
    graph, a = router()
    edge = next(e for e in a.edges if e.target.id == "small")
    probe = {
        "name": lambda: tap(graph, "a->small"),
        "pair": lambda: tap(graph, ("a", "small")),
        "edge": lambda: tap(edge),
    }[how]()
    with anyio.fail_after(5):
        async with probe, graph.open_run(LONG) as run:
            for number in (1, 50, 2):
                await run.send("a", number)
            await probe.expect_payload(1)
            await probe.expect_payload(2)
            await run.wait_idle()
            await probe.expect_no_message(within=0.01)
            await run.shutdown()
            shutdown = await probe.expect_shutdown()
    assert shutdown.metadata["source_node"] == "a"
    assert probe.description == "tap on edge 'a->small'"


async def test_a_goto_tap_sees_the_goto_and_not_the_wired_edge() -> None:
    class Both(Node):
        def process(self, context: ExecutionContext) -> Any:
            if context.inputs.content == "jump":
                context.goto("b")
            return context.inputs.content

    a, b = Both(id="a"), Node(id="b")
    a >> b
    graph = Graph(start=a)
    with anyio.fail_after(5):
        async with tap(graph, "a~>b") as gotos, tap(graph, "a->b") as wired:
            async with graph.open_run(LONG) as run:
                await run.send("a", "walk")
                await run.send("a", "jump")
                await gotos.expect_payload("jump")
                await wired.expect_payload("walk")
                await run.wait_idle()
            await gotos.expect_no_message(within=0.01)
            await wired.expect_shutdown()
    assert gotos.shutdowns == []  # shutdowns follow wired edges, not gotos


# -- mistakes and cleanup ------------------------------------------------------------------


def test_tapping_what_the_graph_does_not_have_says_what_it_has() -> None:
    graph, *_ = pipeline()
    with pytest.raises(WiringError, match=r"has no node 'x'; its nodes are \['a', 'b', 'c'\]"):
        tap(graph, "x")
    with pytest.raises(WiringError, match=r"no edge 'a->c'; the edges from 'a' are \['a->b'\]"):
        tap(graph, ("a", "c"))
    with pytest.raises(WiringError, match="has no node 'x'"):
        tap(graph, "a->x")
    with pytest.raises(WiringError, match="has no node 'b'"):
        tap(graph, Node(id="b"))  # another node with that id
    with pytest.raises(ValueError, match="phase must be 'send' or 'receive'"):
        tap(graph, "a", phase="ack")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="an edge is one thing"):
        tap(graph.nodes["a"].edges[0], emits=True)
    with pytest.raises(TypeError, match="name a node"):
        tap(graph)


async def test_closing_a_tap_removes_its_observers_and_stops_recording() -> None:
    graph, a, b, c = pipeline()
    before = {node.id: node.mailbox.observers for node in (a, b, c)}
    async with tap(graph, "b") as receives, tap(graph, "a", emits=True) as emits:
        assert b.mailbox.observers
        assert all(node.mailbox.observers for node in (a, b, c))  # emits watches every node
    assert {node.id: node.mailbox.observers for node in (a, b, c)} == before
    assert receives.closed
    assert emits.closed
    receives.close()  # idempotent
    with anyio.fail_after(5):
        await graph.run(Task(inputs=1))
    assert receives.received == []
    assert emits.received == []


# -- on Redis ------------------------------------------------------------------------------


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # redis-py is asyncio only
async def test_on_redis_a_tap_sees_what_this_process_sends_and_takes(cluster: Cluster) -> None:
    def build() -> Graph:
        first, second = Double(id="first"), Node(id="second")
        first >> second
        return Graph(first, name="tapped")

    client, worker = cluster.process(build), cluster.process(build)
    async with (
        tap(client, "first") as sent,
        tap(worker, "first", phase="receive") as taken,
        tap(worker, "first", emits=True) as emitted,
        tap(client, "second") as elsewhere,
    ):
        with anyio.fail_after(30):
            await client.send("first", 1)
            await sent.expect_payload(1)
            await client.shutdown()
            await worker.serve()
            await taken.expect_payload(1)
            await emitted.expect_payload(2)
            await taken.expect_shutdown()
            await elsewhere.expect_no_message(within=0.01)  # the worker's send, seen there only
