"""Graph observers: which events reach an observer attached to an edge, a node or a graph."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from spark_nodes import (
    ExecutionContext,
    Graph,
    JoinNode,
    Node,
    NodeConfig,
    RetryPolicy,
    Task,
    TaskType,
)
from spark_nodes.channels import InMemoryChannel
from spark_nodes.graphs import GraphEvent
from tests.graph_support import Collect

pytestmark = pytest.mark.anyio

LONG = TaskType.LONG_RUNNING


class Inc(Node):
    """Adds one."""

    def process(self, context: ExecutionContext) -> Any:
        return context.inputs.content + 1


class Fails(Node):
    """Raises for the first ``failures`` attempts at each message."""

    def __init__(self, failures: int, **kw: Any) -> None:
        super().__init__(**kw)
        self.failures = failures
        self.seen: dict[Any, int] = {}

    def process(self, context: ExecutionContext) -> Any:
        content = context.inputs.content
        self.seen[content] = self.seen.get(content, 0) + 1
        if self.seen[content] <= self.failures:
            raise ValueError(f"attempt {self.seen[content]} at {content}")
        return content


class Record:
    """An observer keeping (phase, node, edge, outcome) of each event, and the events."""

    def __init__(self) -> None:
        self.events: list[GraphEvent] = []

    def __call__(self, event: GraphEvent) -> None:
        self.events.append(event)

    def seen(self) -> list[tuple[str, str, str | None, str | None]]:
        return [(e.phase, e.node, e.edge, e.outcome) for e in self.events]


def pipeline() -> tuple[Graph, Inc, Inc, Collect]:
    a, b, sink = Inc(id="a"), Inc(id="b"), Collect(id="sink")
    a >> b >> sink
    return Graph(start=a), a, b, sink


async def feed(graph: Graph, *contents: Any) -> None:
    for content in contents:
        await graph.send("a", content)
    await graph.wait_idle()


async def test_a_node_observer_sees_each_phase_of_each_message_in_order() -> None:
    graph, _, _, sink = pipeline()
    record = Record()
    graph.observe(record, node="b")
    with anyio.fail_after(10):
        async with graph.open_run(Task(type=LONG)):
            await feed(graph, 1, 2)
    assert sink.items == [3, 4]
    one = [
        ("receive", "b", "a->b", None),
        ("process_start", "b", "a->b", None),
        ("process_end", "b", "a->b", "ok"),
        ("send", "b", "b->sink", None),
        ("ack", "b", "a->b", "ok"),
    ]
    assert record.seen() == one + one
    ends = [e for e in record.events if e.phase == "process_end"]
    assert all(e.duration is not None and e.duration >= 0 for e in ends)
    assert all(e.attempt == 1 for e in ends)
    sends = [e for e in record.events if e.phase == "send"]
    assert [(e.target, e.message.payload) for e in sends] == [("sink", 3), ("sink", 4)]


async def test_sides_split_what_comes_in_from_what_goes_out() -> None:
    graph, *_ = pipeline()
    inputs, outputs = Record(), Record()
    graph.observe(inputs, node="b", side="input")
    graph.observe(outputs, node="b", side="output")
    with anyio.fail_after(10):
        async with graph.open_run(Task(type=LONG)):
            await feed(graph, 1)
    assert [p for p, *_ in inputs.seen()] == ["receive", "process_start", "process_end", "ack"]
    assert outputs.seen() == [("send", "b", "b->sink", None)]


async def test_an_edge_observer_sees_that_edge_only() -> None:
    left, right, sink = Inc(id="left"), Inc(id="right"), Collect(id="sink")
    start = Node(id="start")
    start >> [left, right]
    left >> sink
    right >> sink
    graph = Graph(start=start)
    record = Record()
    graph.observe(record, edge="left->sink")
    with anyio.fail_after(10):
        async with graph.open_run(Task(type=LONG)):
            await graph.send("start", 1)
            await graph.wait_idle()
    assert sorted(sink.items) == [2, 2]
    assert record.seen() == [
        ("send", "left", "left->sink", None),
        ("receive", "sink", "left->sink", None),
        ("ack", "sink", "left->sink", "ok"),
    ]


async def test_a_graph_observer_sees_every_node() -> None:
    graph, *_ = pipeline()
    record = Record()
    graph.observe(record)
    with anyio.fail_after(10):
        async with graph.open_run(Task(type=LONG)):
            await feed(graph, 1)
    nodes = {e.node for e in record.events}
    assert nodes == {"a", "b", "sink"}
    first = record.events[0]
    assert (first.phase, first.node, first.edge) == ("receive", "a", None)  # sent from outside


async def test_retries_and_dead_letters_show_as_outcomes_with_their_errors() -> None:
    retry = RetryPolicy(max_attempts=2, initial_delay=0.001, jitter=0.0)
    flaky = Fails(1, id="flaky", config=NodeConfig(retry=retry))
    doomed = Fails(5, id="doomed", config=NodeConfig(retry=retry))
    start = Node(id="a")
    start >> [flaky, doomed]
    graph = Graph(start=start)
    record = Record()
    graph.observe(record, node="flaky", side="input")
    graph.observe(record, node="doomed", side="input")
    with anyio.fail_after(10):
        async with graph.open_run(Task(type=LONG)) as run:
            await graph.send("a", "x")
            await graph.wait_idle()
    assert run.result is not None
    assert run.result.dead_lettered == 1
    ends = {
        node: [(e.attempt, e.outcome, type(e.error).__name__) for e in record.events
               if e.node == node and e.phase == "process_end"]
        for node in ("flaky", "doomed")
    }  # fmt: skip
    assert ends["flaky"] == [(1, "retry", "ValueError"), (2, "ok", "NoneType")]
    assert ends["doomed"] == [(1, "retry", "ValueError"), (2, "dead_letter", "ValueError")]
    acks = {e.node: e.outcome for e in record.events if e.phase == "ack"}
    assert acks == {"flaky": "ok", "doomed": "dead_letter"}


async def test_goto_and_stop_are_outcomes() -> None:
    class Router(Node):
        def process(self, context: ExecutionContext) -> Any:
            if context.inputs.content == "stop":
                context.stop_graph("asked")
                return None
            context.goto("sink")
            return context.inputs.content

    router, sink = Router(id="a"), Collect(id="sink")
    router >> sink
    graph = Graph(start=router)
    record = Record()
    graph.observe(record, node="a", side="input")
    with anyio.fail_after(10):
        async with graph.open_run(Task(type=LONG)):
            await graph.send("a", "go")
            await graph.wait_idle()
            await graph.send("a", "stop")
    ends = [e.outcome for e in record.events if e.phase == "process_end"]
    assert ends == ["goto", "stop"]
    assert sink.items == ["go"]


async def test_sync_and_async_observers_are_called_in_the_order_attached() -> None:
    graph, *_ = pipeline()
    calls: list[str] = []

    def first(event: GraphEvent) -> None:
        calls.append(f"first {event.phase}")

    async def second(event: GraphEvent) -> None:
        await anyio.lowlevel.checkpoint()
        calls.append(f"second {event.phase}")

    def third(event: GraphEvent) -> None:
        calls.append(f"third {event.phase}")

    for observer in (first, second, third):
        graph.observe(observer, node="b", side="input")
    with anyio.fail_after(10):
        async with graph.open_run(Task(type=LONG)):
            await feed(graph, 1)
    assert calls[:3] == ["first receive", "second receive", "third receive"]
    assert len(calls) == 12


async def test_an_observer_that_raises_is_logged_once_and_breaks_nothing() -> None:
    graph, _, _, sink = pipeline()
    after = Record()

    def broken(event: GraphEvent) -> None:
        raise RuntimeError(f"broken at {event.phase}")

    graph.observe(broken, node="b")
    graph.observe(after, node="b")
    with capture_logs() as logs, anyio.fail_after(10):
        async with graph.open_run(Task(type=LONG)):
            await feed(graph, 1, 2, 3)
    assert sink.items == [3, 4, 5]
    assert len(after.events) == 15
    failures = [log for log in logs if log["event"].startswith("graph observer failed")]
    assert len(failures) == 1
    assert "broken" in failures[0]["observer"]
    assert graph.observer_errors(broken) == 15


async def test_observers_attached_or_removed_during_a_run_take_effect() -> None:
    graph, *_ = pipeline()
    record = Record()
    with anyio.fail_after(10):
        async with graph.open_run(Task(type=LONG)):
            await feed(graph, 1)
            graph.observe(record, node="b", side="output")
            await feed(graph, 2)
            graph.unobserve(record)
            await feed(graph, 3)
    assert [e.message.payload for e in record.events] == [4]


async def test_carry_puts_metadata_on_every_output_of_the_call() -> None:
    graph, _, _, sink = pipeline()

    def tag(event: GraphEvent) -> None:
        if event.phase == "process_start":
            event.carry["seen_by"] = event.node

    graph.observe(tag, node="b", side="input")
    with anyio.fail_after(10):
        async with graph.open_run(Task(type=LONG)):
            await feed(graph, 1)
    assert [m.metadata.get("seen_by") for m in sink.received] == ["b"]


async def test_a_generator_node_tells_a_send_for_each_item() -> None:
    class Split(Node):
        def process(self, context: ExecutionContext) -> Iterator[Any]:
            yield from context.inputs.content

    split, sink = Split(id="a"), Collect(id="sink")
    split >> sink
    graph = Graph(start=split)
    record = Record()
    graph.observe(record, node="a", side="output")
    with anyio.fail_after(10):
        async with graph.open_run(Task(type=LONG)):
            await graph.send("a", [1, 2, 3])
            await graph.wait_idle()
    assert [e.message.payload for e in record.events] == [1, 2, 3]
    assert sink.items == [1, 2, 3]


def test_bad_attachments_are_refused_with_what_exists() -> None:
    graph, *_ = pipeline()
    with pytest.raises(ValueError, match=r"no node 'nope'.*\['a', 'b', 'sink'\]"):
        graph.observe(Record(), node="nope")
    with pytest.raises(ValueError, match=r"no edge 'a->sink'.*\['a->b', 'b->sink'\]"):
        graph.observe(Record(), edge="a->sink")
    with pytest.raises(ValueError, match="not both"):
        graph.observe(Record(), node="a", edge="a->b")
    with pytest.raises(ValueError, match="side must be one of"):
        graph.observe(Record(), node="a", side="sideways")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="side= applies to a node"):
        graph.observe(Record(), edge="a->b", side="input")
    with pytest.raises(TypeError, match="observer\\(event\\)"):
        graph.observe(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="does not observe"):
        graph.unobserve(Record())


async def test_loops_of_one_node_keep_their_messages_apart() -> None:
    fail_now, failure_told = anyio.Event(), anyio.Event()

    class OneFails(Node):
        async def process(self, context: ExecutionContext) -> Any:
            if context.inputs.content == 1:
                await fail_now.wait()
                raise ValueError("one fails")
            return context.inputs.content

    once = NodeConfig(concurrency=2, retry=RetryPolicy(max_attempts=1))
    node, sink = OneFails(id="a", config=once), Collect(id="sink")
    node >> sink
    graph = Graph(start=node)
    told: list[tuple[str, Any, str | None]] = []

    async def observer(event: GraphEvent) -> None:
        number = event.message.payload
        if event.phase == "process_start":
            event.carry["number"] = number
        elif event.phase == "process_end" and number == 2:
            fail_now.set()  # message 1 fails while message 2's output waits to be sent
            await failure_told.wait()
        elif event.phase == "process_end":
            failure_told.set()
        else:
            told.append((event.phase, number, event.outcome))

    graph.observe(observer, node="a")
    with anyio.fail_after(10):
        async with graph.open_run(Task(type=LONG)):
            await graph.send("a", 1)
            await graph.send("a", 2)
            await graph.wait_idle()
    assert sink.items == [2]
    assert [m.metadata["number"] for m in sink.received] == [2]  # its own call's carry
    assert ("send", 2, None) in told
    acks = {number: outcome for phase, number, outcome in told if phase == "ack"}
    assert acks == {1: "dead_letter", 2: "ok"}


async def test_a_send_that_fails_is_not_told_and_not_counted() -> None:
    closed = InMemoryChannel(name="closed-box")
    a, b, c = Node(id="a"), Collect(id="b"), Node(id="c", mailbox=closed)
    a >> [b, c]
    closed.close()
    graph = Graph(start=a)
    record = Record()
    graph.observe(record, node="a")
    with anyio.fail_after(10):
        async with graph.open_run(Task(type=LONG)) as run:
            await graph.send("a", "x")
            await graph.wait_idle()
            stats = await graph.stats()
    assert run.result is not None
    assert run.result.dead_lettered == 1
    assert [(e.edge, e.target) for e in record.events if e.phase == "send"] == [("a->b", "b")]
    assert [e.outcome for e in record.events if e.phase == "ack"] == ["dead_letter"]
    assert {name: e.sent for name, e in stats.edges.items()} == {"a->b": 1, "a->c": 0}


async def test_items_a_generator_sent_before_it_failed_are_told() -> None:
    class Two(Node):
        def process(self, context: ExecutionContext) -> Iterator[Any]:
            yield 1
            yield 2
            raise ValueError("after two items")

    two, sink = Two(id="a"), Collect(id="sink")
    two >> sink
    graph = Graph(start=two)
    record = Record()
    graph.observe(record, node="a")
    with anyio.fail_after(10):
        async with graph.open_run(Task(type=LONG)):
            await graph.send("a", "x")
            await graph.wait_idle()
            stats = await graph.stats()
    assert sink.items == [1, 2]  # out already: a retry would repeat them, so none is made
    assert [e.message.payload for e in record.events if e.phase == "send"] == [1, 2]
    assert [e.outcome for e in record.events if e.phase == "ack"] == ["dead_letter"]
    assert stats.edges["a->sink"].sent == 2


async def test_a_bound_method_is_detached_by_the_same_method() -> None:
    graph, *_ = pipeline()

    class Tap:
        def __init__(self) -> None:
            self.seen = 0

        def on_event(self, event: GraphEvent) -> None:
            self.seen += 1

    tap = Tap()
    graph.observe(tap.on_event, node="b")
    assert graph.observers == [(tap.on_event, "b", None, "both")]
    graph.unobserve(tap.on_event)  # a new bound method object, equal to the attached one
    assert graph.observers == []
    with anyio.fail_after(10):
        async with graph.open_run(Task(type=LONG)):
            await feed(graph, 1)
    assert tap.seen == 0


async def test_a_goto_counts_once_and_observers_do_not_change_routing() -> None:
    class Router(Node):
        def process(self, context: ExecutionContext) -> Any:
            if context.inputs.content == "jump":
                context.goto("c")
            return context.inputs.content

    router, b, c = Router(id="a"), Collect(id="b"), Collect(id="c")
    router >> b
    b >> c  # (c is in the graph; a reaches it by goto only)
    graph = Graph(start=router)
    graph.observe(Record(), node="a")
    with anyio.fail_after(10):
        async with graph.open_run(Task(type=LONG)):
            for content in ("jump", "normal", "normal"):
                await graph.send("a", content)
                await graph.wait_idle()
            stats = await graph.stats()
    assert (b.items, c.items) == (["normal", "normal"], ["jump"])
    assert stats.edges["a->b"].sent == 2
    assert stats.edges["a~>c"].sent == 1


async def test_a_join_s_first_part_is_acked_when_the_join_releases_it() -> None:
    start, left, right = Node(id="start"), Inc(id="left"), Inc(id="right")
    join, sink = JoinNode(id="join"), Collect(id="sink")
    start >> [left, right] >> join >> sink
    graph = Graph(start=start)
    record = Record()
    graph.observe(record, node="join", side="input")
    with anyio.fail_after(10):
        async with graph.open_run(Task(type=LONG)):
            await graph.send("start", 1)
            await graph.wait_idle()
    assert sink.items == [{"left": 2, "right": 2}]
    phases = [(e.phase, e.edge) for e in record.events if e.phase in ("receive", "ack")]
    first, second = phases[0][1], phases[1][1]
    assert phases == [
        ("receive", first),
        ("receive", second),  # the first part is held meanwhile: not acked yet
        ("ack", first),  # both released by the merge, in the order they came
        ("ack", second),
    ]
