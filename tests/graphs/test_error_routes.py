"""Error routes: ``a.on_error() >> handler`` gets what ``a`` gives up on, in memory.

On Redis (one commit with the ack, a worker that dies before it) see
``test_redis_error_routes.py``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import anyio
import pytest

from spark_nodes import (
    CountWindow,
    ExecutionContext,
    FailedMessage,
    Graph,
    GraphEvent,
    InvokeFailed,
    JoinNode,
    Node,
    NodeConfig,
    NonRetriableError,
    OnError,
    RetryPolicy,
    StopReason,
    Task,
    TaskType,
    WiringError,
)
from spark_nodes.channels import ChannelMessage, InMemoryChannel
from spark_nodes.channels.codec import pack
from spark_nodes.nodes import ErrorRoute
from spark_nodes.nodes._forwarding import Routes
from spark_nodes.nodes.edges import edge_ends
from spark_nodes.testing import Probe, tap
from tests.graph_support import Collect, run_with

pytestmark = pytest.mark.anyio

LONG = TaskType.LONG_RUNNING
FAST_RETRY = RetryPolicy(max_attempts=3, initial_delay=0.001, jitter=0.0)
ROOT = Path(__file__).resolve().parents[2]


class Picky(Node):
    """Fails on ``"bad"`` (every attempt), passes anything else on."""

    def __init__(self, error: type[Exception] = RuntimeError, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.error = error
        self.attempts: list[int] = []

    def process(self, context: ExecutionContext) -> Any:
        content = context.inputs.content
        if content == "bad":
            self.attempts.append(context.metadata.attempt)
            raise self.error(f"attempt {context.metadata.attempt} refused {content!r}")
        return content


class Explain(Node):
    """An error handler: answers with what failed, where, and why."""

    def process(self, context: ExecutionContext) -> Any:
        failed: FailedMessage = context.inputs.content
        return {"failed": failed["content"], "at": failed["node"], "why": failed["error"]}


def picky(error: type[Exception] = RuntimeError) -> Picky:
    return Picky(error, id="a", config=NodeConfig(retry=FAST_RETRY))


async def one_pass(graph: Graph, inputs: Any) -> Any:
    with anyio.fail_after(10):
        return await graph.run(Task(inputs=inputs))


async def dead_letter_of(graph: Graph) -> ChannelMessage:
    """The next dead letter of ``graph`` (there is one: it does not wait for it)."""
    assert not graph.dead_letters.empty()
    with anyio.fail_after(1):
        return await graph.dead_letters.receive()


# -- what is routed, and what the handler gets -------------------------------------------------


async def test_a_message_that_exhausted_its_retries_goes_to_the_error_route_with_its_error() -> (
    None
):
    a, after, handler = picky(), Collect(id="after"), Collect(id="handler")
    a >> after
    a.on_error() >> handler
    graph = Graph(a)
    await a.mailbox.send(ChannelMessage("bad", {"trace_id": "t-1", "user": "ann"}, id="m-1"))
    with anyio.fail_after(10):
        result = await graph.run(Task(type=LONG, idle_timeout=0.05))
    assert a.attempts == [1, 2, 3]  # retried first
    assert after.items == []
    (routed,) = handler.received
    failed: FailedMessage = routed.content
    assert failed["node"] == "a"
    assert failed["phase"] == "process"
    assert failed["error_type"] == "builtins.RuntimeError"
    assert failed["error"] == "attempt 3 refused 'bad'"
    assert "Traceback" in failed["traceback"]
    assert "in process" in failed["traceback"]
    assert "RuntimeError: attempt 3 refused 'bad'" in failed["traceback"]
    assert failed["attempts"] == 3
    assert failed["content"] == "bad"
    assert failed["message_id"] == "m-1"
    assert failed["metadata"] == {"trace_id": "t-1", "user": "ann"}
    assert pack(failed)  # plain data: it crosses processes
    # The routed message is an output of a: the original's trace, a's id, the error edge.
    assert routed.metadata == {"trace_id": "t-1", "source_node": "a", "edge": "a-!>handler"}
    # Handled, not lost: no dead letter, and the run is ok.
    assert result.dead_lettered == 0
    assert result.ok
    assert graph.dead_letters.empty()
    stats = result.node_stats["a"]
    assert (stats.error_routed, stats.failed_attempts, stats.retried) == (1, 3, 2)
    assert (stats.processed, stats.dead_lettered, stats.forwarded) == (0, 0, 1)


async def test_a_non_retriable_error_is_routed_at_once() -> None:
    a = Picky(NonRetriableError, id="a", config=NodeConfig(retry=RetryPolicy(max_attempts=5)))
    handler = Collect(id="handler")
    a.on_error() >> handler
    result = await one_pass(Graph(a), "bad")
    assert a.attempts == [1]
    (failed,) = handler.items
    assert failed["attempts"] == 1
    assert failed["error_type"] == "spark_nodes.errors.NonRetriableError"
    assert result.node_stats["a"].retried == 0


async def test_a_condition_that_raises_is_routed_with_phase_route() -> None:
    def broken(output: Any) -> bool:
        raise KeyError("score")

    a, b, handler = Node(id="a"), Collect(id="b"), Collect(id="handler")
    a.on(broken) >> b
    a.on_error() >> handler
    result = await one_pass(Graph(a), {"no": "score"})
    (failed,) = handler.items
    assert (failed["phase"], failed["error_type"]) == ("route", "builtins.KeyError")
    assert failed["content"] == {"no": "score"}
    assert b.items == []
    assert result.dead_lettered == 0


class _Dedicated(InMemoryChannel):
    """A mailbox the graph serves with a loop of its own (not started on demand)."""

    __slots__ = ()


async def test_a_successor_that_refuses_an_output_routes_the_message_and_then_acks_it() -> None:
    order: list[str] = []

    async def ack() -> None:
        order.append(f"acked after {len(handler.items)} routed")

    closed = InMemoryChannel(name="closed-box")
    a, b, handler = Node(id="a"), Node(id="b", mailbox=closed), Collect(id="handler")
    a >> b
    a.on_error() >> handler
    closed.close()
    graph = Graph(a)
    await a.mailbox.send(ChannelMessage("x", ack=ack))  # settled with its outputs
    with anyio.fail_after(10):
        result = await graph.run(Task(type=LONG, idle_timeout=0.05))
    (failed,) = handler.items
    assert failed["phase"] == "forward"
    assert failed["error_type"] == "spark_nodes.errors.ChannelClosed"
    assert order == ["acked after 0 routed"]  # delivered to the mailbox, then acked
    assert result.dead_lettered == 0


# -- dead letters: with dead_letter=True, and when the route fails ------------------------------


async def test_dead_letter_true_routes_the_message_and_dead_letters_it_too() -> None:
    a, handler = picky(), Collect(id="handler")
    a.on_error(dead_letter=True) >> handler
    graph = Graph(a)
    result = await one_pass(graph, "bad")
    (failed,) = handler.items
    assert failed["content"] == "bad"
    letter = await dead_letter_of(graph)
    assert letter.payload == "bad"  # the original, with its own error
    assert letter.metadata["dead_letter"]["error"] == "attempt 3 refused 'bad'"
    assert result.dead_lettered == 1
    assert not result.ok
    stats = result.node_stats["a"]
    assert (stats.error_routed, stats.dead_lettered) == (1, 1)


async def test_a_handler_that_fails_for_good_dead_letters_what_it_got_so_nothing_is_lost() -> None:
    a = picky()

    class Broken(Node):
        def process(self, context: ExecutionContext) -> Any:
            raise RuntimeError("the handler is down")

    handler = Broken(id="handler", config=NodeConfig(retry=FAST_RETRY))
    a.on_error() >> handler
    graph = Graph(a)
    result = await one_pass(graph, "bad")
    letter = await dead_letter_of(graph)
    record = letter.metadata["dead_letter"]
    assert (record["node"], record["error"], record["attempts"]) == (
        "handler",
        "the handler is down",
        3,
    )
    assert letter.payload["content"] == "bad"  # the original, inside what the handler got
    assert letter.payload["error"] == "attempt 3 refused 'bad'"
    assert result.dead_lettered == 1
    assert result.node_stats["a"].error_routed == 1


async def test_a_route_that_cannot_be_taken_dead_letters_the_original_with_its_own_error() -> None:
    closed = _Dedicated(name="closed-handler")
    a, handler = picky(), Node(id="handler", mailbox=closed)
    a.on_error() >> handler
    closed.close()
    graph = Graph(a)
    await a.mailbox.send(ChannelMessage("bad", id="m-1"))
    with anyio.fail_after(10):
        result = await graph.run(Task(type=LONG, idle_timeout=0.05))
    letter = await dead_letter_of(graph)
    assert letter.id == "m-1"
    record = letter.metadata["dead_letter"]
    assert (record["node"], record["phase"]) == ("a", "process")
    assert record["error"] == "attempt 3 refused 'bad'"  # not the closed mailbox's error
    stats = result.node_stats["a"]
    assert (stats.error_routed, stats.dead_lettered) == (0, 1)


async def test_a_route_round_a_cycle_stops_at_max_steps_and_dead_letters_the_message() -> None:
    """``a.on_error() >> a``: what a gives up on comes back to it; the step limit ends it."""

    class Refuse(Node):
        def process(self, context: ExecutionContext) -> Any:
            raise NonRetriableError("never")

    a = Refuse(id="a")
    a.on_error() >> a
    graph = Graph(a)
    with anyio.fail_after(10):
        result = await graph.run(Task(inputs="x", max_steps=3))
    assert result.stop_reason is StopReason.COMPLETED
    stats = result.node_stats["a"]
    assert (stats.received, stats.error_routed, stats.dead_lettered) == (4, 3, 1)
    letter = await dead_letter_of(graph)
    assert letter.metadata["steps"] == 3
    assert letter.metadata["dead_letter"]["error_type"] == "spark_nodes.errors.NonRetriableError"


async def test_a_routed_failure_does_not_stop_the_graph_but_a_dead_lettered_one_does() -> None:
    config = NodeConfig(retry=RetryPolicy(max_attempts=1), on_error=OnError.STOP_GRAPH)
    routed, handler = Picky(id="a", config=config), Collect(id="handler")
    routed.on_error() >> handler
    with anyio.fail_after(10):
        result = await Graph(routed).run(Task(inputs="bad", type=LONG, idle_timeout=0.05))
    assert result.stop_reason is StopReason.IDLE
    assert handler.items[0]["content"] == "bad"

    both, handler = Picky(id="b", config=config), Collect(id="handler")
    both.on_error(dead_letter=True) >> handler
    with anyio.fail_after(10):
        result = await Graph(both).run(Task(inputs="bad", type=LONG, idle_timeout=5))
    assert result.stop_reason is StopReason.ERROR
    assert handler.mailbox.statistics().depth == 1  # routed; waits there for the next run


async def test_a_failed_branch_routed_to_its_join_completes_the_group() -> None:
    """The error message keeps the failed message's correlation, as an output would."""
    start, ok, broken = Node(id="start"), Node(id="ok"), picky()
    join, sink = JoinNode(id="join", timeout=5), Collect(id="sink")
    start >> [ok, broken] >> join >> sink
    broken.on_error() >> join  # its part, when it fails: what went wrong
    result = await one_pass(Graph(start), "bad")
    (merged,) = sink.items
    assert merged["ok"] == "bad"
    assert merged["a"]["error"] == "attempt 3 refused 'bad'"
    assert result.dead_lettered == 0


async def test_a_joins_timeout_stays_a_dead_letter_whatever_its_error_routes() -> None:
    class Drop(Node):
        def process(self, context: ExecutionContext) -> None:
            return None  # its part never comes

    start, ok, silent = Node(id="start"), Node(id="ok"), Drop(id="silent")
    join, handler = JoinNode(id="join", timeout=0.05), Collect(id="handler")
    start >> [ok, silent] >> join
    join.on_error() >> handler
    graph = Graph(start)
    with anyio.fail_after(10):
        async with graph.open_run(Task(type=LONG)) as run:
            await run.send(start, "x")
            letter = await graph.dead_letters.receive()
    assert letter.metadata["dead_letter"]["phase"] == "join"
    assert handler.items == []


# -- error routes leave outputs alone --------------------------------------------------------


async def test_error_routes_do_not_change_which_edges_outputs_take() -> None:
    router = Picky(id="router", config=NodeConfig(retry=RetryPolicy(max_attempts=1)))
    refunds, others, audit = Collect(id="refunds"), Collect(id="others"), Collect(id="audit")
    handler = Collect(id="handler")
    router.on(lambda out: out == "refund") >> refunds
    router.otherwise() >> others
    router >> audit
    router.on_error() >> handler
    graph = Graph(router)

    async def drive(graph: Graph) -> None:
        for item in ["refund", "sale", "bad", "refund"]:
            await graph.send("router", item)
        await graph.wait_idle()
        await graph.shutdown()

    result = await run_with(graph, Task(type=LONG), drive)
    assert refunds.items == ["refund", "refund"]
    assert others.items == ["sale"]
    assert audit.items == ["refund", "sale", "refund"]
    assert [failed["content"] for failed in handler.items] == ["bad"]
    assert router.get_next_nodes("refund") == [refunds, audit]
    assert router.get_next_nodes("sale") == [audit, others]
    assert result.node_stats["router"].error_routed == 1


def test_a_node_with_an_error_route_keeps_the_single_route_its_outputs_take() -> None:
    """The loop's inlined pipeline case: one unconditional edge, whatever error edges."""
    a, b, handler = Node(id="a"), Node(id="b"), Node(id="handler")
    a >> b
    a.on_error() >> handler
    routes = Routes(a, None)
    assert routes.single is not None
    assert routes.single.name == "a->b"
    assert routes.select("anything") == [routes.single]
    assert routes.errors is not None
    assert [route.name for route in routes.errors.routes] == ["a-!>handler"]
    assert Routes(b, None).errors is None


# -- wiring ------------------------------------------------------------------------------------


def test_an_error_edge_is_an_edge_of_its_own_kind_and_name() -> None:
    a, handler, after = Node(id="a"), Node(id="handler"), Node(id="after")
    assert a.on_error() >> handler >> after is after  # chains go on from the handler
    (edge,) = a.edges
    assert edge.is_error_route
    assert edge.name == "a-!>handler"
    assert edge_ends(edge.name) == ("a", "handler")
    assert isinstance(edge.condition, ErrorRoute)
    assert not edge.matches("anything")
    assert [e.name for e in handler.edges] == ["handler->after"]
    assert not handler.edges[0].is_error_route
    a.on_error() >> handler  # wired twice: one edge
    assert len(a.edges) == 1
    a.on_error(dead_letter=True) >> handler  # another kind: another edge
    assert [e.condition for e in a.edges] == [ErrorRoute(), ErrorRoute(dead_letter=True)]
    assert repr(a.on_error(dead_letter=True)) == "<Node id='a'>.on_error(dead_letter=True)"


def test_error_routes_have_no_priority_and_need_nodes() -> None:
    a = Node(id="a")
    with pytest.raises(WiringError, match="error routes have no priority"):
        a.on_error().with_priority(2)
    with pytest.raises(WiringError, match="takes a bool"):
        a.on_error(dead_letter="yes")  # type: ignore[arg-type]
    with pytest.raises(WiringError, match="only nodes can be wired"):
        a.on_error() >> [Node(id="h"), "not a node"]  # type: ignore[list-item]
    with pytest.raises(WiringError, match="list of targets is empty"):
        a.on_error() >> []
    assert a.edges == []


async def test_every_error_route_of_a_node_gets_the_failed_message() -> None:
    a, alert, refund = picky(), Collect(id="alert"), Collect(id="refund")
    a.on_error() >> [alert, refund]
    result = await one_pass(Graph(a), "bad")
    assert [failed["content"] for failed in alert.items] == ["bad"]
    assert [failed["content"] for failed in refund.items] == ["bad"]
    stats = result.node_stats["a"]
    assert (stats.error_routed, stats.forwarded) == (1, 2)


async def test_the_handler_drains_after_the_source_so_it_sees_its_last_failure() -> None:
    """The shutdown reaches the handler only after a's last failure was routed to it."""
    events: list[str] = []
    slow = RetryPolicy(max_attempts=3, initial_delay=0.02, jitter=0.0)
    a = Picky(id="a", config=NodeConfig(retry=slow))

    class Handler(Node):
        def process(self, context: ExecutionContext) -> None:
            events.append(f"failed {context.inputs.content['content']}")

        async def on_drained(self) -> None:
            events.append("drained")

    a.on_error() >> Handler(id="handler")
    graph = Graph(a)
    assert graph.nodes["handler"] is a.edges[0].target  # reached through the error edge

    async def drive(graph: Graph) -> None:
        await graph.send("a", "bad")
        await graph.shutdown()  # while a still retries

    await run_with(graph, Task(type=LONG), drive)
    assert events == ["failed bad", "drained"]


async def test_a_one_pass_run_follows_the_error_route_to_the_handlers_answer() -> None:
    a, handler = picky(), Explain(id="handler")
    a >> Node(id="after")
    a.on_error() >> handler
    result = await one_pass(Graph(a), "bad")
    assert result.content == {"failed": "bad", "at": "a", "why": "attempt 3 refused 'bad'"}


# -- invoke, observers, stats, diagrams -------------------------------------------------------


async def test_invoke_returns_the_handlers_answer_for_a_routed_failure() -> None:
    a, handler = picky(), Explain(id="handler")
    a >> Node(id="after")
    a.on_error() >> handler
    graph = Graph(a)
    async with graph.open_run(Task(type=LONG)) as run:
        with anyio.fail_after(10):
            answer = await run.invoke("bad", timeout=10)
            fine = await run.invoke("fine", timeout=10)
    assert answer.content == {"failed": "bad", "at": "a", "why": "attempt 3 refused 'bad'"}
    assert answer.failures == ()
    assert answer.outputs[0].metadata["source_node"] == "handler"
    assert fine.content == "fine"


async def test_invoke_with_dead_letter_true_raises_and_keeps_the_handlers_answer() -> None:
    a, handler = picky(), Explain(id="handler")
    a.on_error(dead_letter=True) >> handler
    graph = Graph(a)
    async with graph.open_run(Task(type=LONG)) as run:
        with anyio.fail_after(10), pytest.raises(InvokeFailed) as caught:
            await run.invoke("bad", timeout=10)
    (failure,) = caught.value.result.failures
    assert (failure.node, failure.phase) == ("a", "process")
    assert failure.error == "attempt 3 refused 'bad'"
    assert caught.value.result.content == {"failed": "bad", "at": "a", "why": failure.error}


async def test_observers_see_the_outcome_routed_and_the_send_on_the_error_edge() -> None:
    a, handler = picky(), Collect(id="handler")
    a.on_error() >> handler
    graph = Graph(a)
    events: list[tuple[str, str | None, str | None]] = []

    def record(event: GraphEvent) -> None:
        if event.node == "a":
            events.append((event.phase, event.outcome, event.edge))

    graph.observe(record, node="a")
    await one_pass(graph, "bad")
    assert events == [
        ("receive", None, None),
        ("process_start", None, None),
        ("process_end", "retry", None),
        ("process_start", None, None),
        ("process_end", "retry", None),
        ("process_start", None, None),
        ("process_end", "routed", None),
        ("send", None, "a-!>handler"),
        ("ack", "routed", None),
    ]


def outcomes_at(graph: Graph, node_id: str) -> list[tuple[str, str | None]]:
    """What observers of ``node_id`` are told (growing as the graph runs): process_end, ack."""
    told: list[tuple[str, str | None]] = []

    def record(event: GraphEvent) -> None:
        if event.phase in ("process_end", "ack"):
            told.append((event.phase, event.outcome))

    graph.observe(record, node=node_id)
    return told


async def test_observers_see_the_outcome_dead_letter_when_the_route_cannot_be_taken() -> None:
    """The process_end tells the final outcome, not the route that was tried (regression:
    it said "routed", then the ack said "dead_letter")."""
    closed = _Dedicated(name="closed-handler")
    a, handler = picky(), Node(id="handler", mailbox=closed)
    a.on_error() >> handler
    closed.close()
    graph = Graph(a)
    told = outcomes_at(graph, "a")
    await a.mailbox.send(ChannelMessage("bad"))
    with anyio.fail_after(10):
        result = await graph.run(Task(type=LONG, idle_timeout=0.05))
    assert told == [
        ("process_end", "retry"),
        ("process_end", "retry"),
        ("process_end", "dead_letter"),
        ("ack", "dead_letter"),
    ]
    assert result.dead_lettered == 1


async def test_observers_see_the_outcome_dead_letter_when_the_route_would_pass_max_steps() -> None:
    class Refuse(Node):
        def process(self, context: ExecutionContext) -> Any:
            raise NonRetriableError("never")

    a = Refuse(id="a")
    a.on_error() >> a
    graph = Graph(a)
    told = outcomes_at(graph, "a")
    with anyio.fail_after(10):
        await graph.run(Task(inputs="x", max_steps=2))
    ends = [outcome for phase, outcome in told if phase == "process_end"]
    acks = [outcome for phase, outcome in told if phase == "ack"]
    assert ends == acks == ["routed", "routed", "dead_letter"]


@pytest.mark.parametrize("error_route", [True, False])
async def test_a_message_its_window_keeps_when_the_closing_output_fails_ends_ok(
    error_route: bool,
) -> None:
    """Regression: the held-back process_end of the closing call said "dead_letter", then
    the message stayed held and was acked "ok"; only the part the call released (the
    window's first message) is a dead letter."""
    window, sink, handler = CountWindow(2, slide=1, id="w"), Collect(id="sink"), Node(id="h")
    conditions = iter([False])

    def first_output_unroutable(output: Any) -> bool:
        if next(conditions, True):
            return True
        raise RuntimeError("the edge condition broke once")

    window.on(first_output_unroutable) >> sink
    if error_route:
        window.on_error() >> handler
    graph = Graph(window)
    told: list[tuple[str, Any, str | None]] = []

    def record(event: GraphEvent) -> None:
        if event.phase in ("process_end", "ack"):
            told.append((event.phase, event.message.payload, event.outcome))

    graph.observe(record, node="w")
    for content in (0, 1):
        await window.mailbox.send(ChannelMessage(content))
    with anyio.fail_after(10):
        result = await graph.run(Task(type=LONG, idle_timeout=0.05))
    assert told == [
        ("process_end", 0, "ok"),
        ("process_end", 1, "ok"),  # kept: its window is still open
        ("ack", 0, "dead_letter"),
        ("ack", 1, "ok"),  # let go of when the node drained
    ]
    letter = await dead_letter_of(graph)
    assert (letter.payload, letter.metadata["dead_letter"]["phase"]) == (0, "route")
    assert result.dead_lettered == 1
    assert result.node_stats["w"].error_routed == 0
    assert [output["items"] for output in sink.items] == [[1]]


async def test_an_async_observer_gets_the_whole_retry_end_when_giving_up_is_cancelled() -> None:
    """Regression: the held-back process_end was told in the cancelled scope, so an
    observer that awaited was cancelled there and never saw it through."""
    acking = anyio.Event()

    async def ack() -> None:  # the routed message's ack: giving up is under way
        acking.set()
        await anyio.sleep_forever()

    a, handler = picky(), Collect(id="handler")
    a.on_error() >> handler
    graph = Graph(a)
    ends: list[tuple[int, str | None]] = []

    async def record(event: GraphEvent) -> None:  # an exporter: its write takes a while
        if event.phase == "process_end":
            await anyio.sleep(0.01)  # a wait on the loop (a cancelled scope cancels it)
            ends.append((event.attempt, event.outcome))

    graph.observe(record, node="a")
    await a.mailbox.send(ChannelMessage("bad", ack=ack))
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(graph.run, Task(type=LONG))
            await acking.wait()
            group.cancel_scope.cancel()
    assert ends == [(1, "retry"), (2, "retry"), (3, "retry")]


async def test_the_error_message_carries_what_observers_add_to_the_failed_calls_outputs() -> None:
    """A tracing observer's context goes on to the handler, as it goes with outputs."""
    a, handler = picky(), Collect(id="handler")
    a.on_error() >> handler
    graph = Graph(a)

    def trace_context(event: GraphEvent) -> None:
        if event.phase == "process_start":
            event.carry["traceparent"] = f"{event.message.id} attempt {event.attempt}"

    graph.observe(trace_context, node="a")
    await a.mailbox.send(ChannelMessage("bad", {"trace_id": "t-1"}, id="m-1"))
    with anyio.fail_after(10):
        await graph.run(Task(type=LONG, idle_timeout=0.05))
    (routed,) = handler.received
    assert routed.metadata == {
        "trace_id": "t-1",
        "source_node": "a",
        "edge": "a-!>handler",
        "traceparent": "m-1 attempt 3",  # the last attempt's, the one that gave up
    }


async def test_an_output_refused_by_a_successor_routes_with_its_calls_trace_context() -> None:
    closed = InMemoryChannel(name="closed-box")
    a, b, handler = Node(id="a"), Node(id="b", mailbox=closed), Collect(id="handler")
    a >> b
    a.on_error() >> handler
    closed.close()
    graph = Graph(a)
    graph.observe(lambda event: event.carry.update(traceparent="tp"), node="a")
    with anyio.fail_after(10):
        await graph.run(Task(inputs="x"))
    (routed,) = handler.received
    assert routed.content["phase"] == "forward"
    assert routed.metadata["traceparent"] == "tp"


async def test_stats_count_the_error_edge_and_a_tap_watches_it() -> None:
    a, handler = picky(), Collect(id="handler")
    a >> Node(id="after")
    a.on_error() >> handler
    graph = Graph(a)
    async with tap(graph, "a-!>handler") as watched:
        await one_pass(graph, "bad")
        stats = await graph.stats()  # (of the last run)
        await one_pass(graph, "fine")
        (message,) = watched.received
    assert message.content["content"] == "bad"
    assert stats.edges["a-!>handler"].sent == 1
    assert (stats.edges["a-!>handler"].source, stats.edges["a-!>handler"].target) == (
        "a",
        "handler",
    )
    assert stats.edges["a->after"].sent == 0
    figures = stats.nodes["a"]
    assert (figures.failed_attempts, figures.error_routed, figures.dead_lettered) == (3, 1, 0)
    assert stats.to_dict()["nodes"]["a"]["error_routed"] == 1


async def test_stats_count_a_message_routed_with_dead_letter_true_in_both_counts() -> None:
    a, handler = picky(), Collect(id="handler")
    a.on_error(dead_letter=True) >> handler
    graph = Graph(a)
    async with graph.open_run(Task(type=LONG)) as run:
        with anyio.fail_after(10):
            await run.send("a", "bad")
            await run.send("a", "fine")
            await run.wait_idle()
        live = (await graph.stats()).nodes["a"]  # while it runs
    assert (live.error_routed, live.dead_lettered, live.processed) == (1, 1, 1)
    assert (await graph.stats()).nodes["handler"].error_routed == 0


def test_diagrams_draw_an_error_edge_dashed_with_an_error_label() -> None:
    a, b, handler, audit = Node(id="a"), Node(id="b"), Node(id="handler"), Node(id="audit")
    a >> b
    a.on_error() >> handler
    b.on_error(dead_letter=True) >> audit
    graph = Graph(a, name="errors")
    assert graph.to_mermaid() == (
        "flowchart LR\n"
        '    n0(["a"])\n'
        '    n1["b"]\n'
        '    n2["audit"]\n'
        '    n3["handler"]\n'
        "    n0 --> n1\n"
        '    n0 -.->|"error"| n3\n'
        '    n1 -.->|"error · dead letter"| n2\n'
        "    classDef entry stroke-width:3px\n"
        "    class n0 entry\n"
    )
    dot = graph.to_dot()
    assert '"a" -> "handler" [label="error", style=dashed, color=red];' in dot
    assert '"a" -> "b";' in dot
    edges = json.loads(graph.to_json())["edges"]
    assert [(e["name"], e["condition"], e["back_edge"]) for e in edges] == [
        ("a->b", None, False),
        ("a-!>handler", "error", False),
        ("b-!>audit", "error · dead letter", False),
    ]


# -- actors ------------------------------------------------------------------------------------


async def test_an_actor_routes_what_it_gives_up_on_and_ask_says_so() -> None:
    a, handler = picky(), Probe(id="handler")
    a.on_error() >> handler
    with anyio.fail_after(10):
        async with handler.open_actor(), a.open_actor() as actor:
            assert await a.ask("fine") == "fine"
            with pytest.raises(InvokeFailed, match="went to its error routes") as caught:
                await a.ask("bad")
            (failed,) = await handler.wait_for(1)
            assert actor.dead_letters.empty()
    assert failed["content"] == "bad"
    assert caught.value.result.failures[0].error == "attempt 3 refused 'bad'"
    assert handler.shutdowns  # the actor passed its shutdown on to its handler


async def test_an_actors_error_route_to_a_node_not_running_waits_in_its_mailbox() -> None:
    a, handler = picky(), Node(id="handler")
    a.on_error() >> handler
    with anyio.fail_after(10):
        async with a.open_actor():
            await a.tell("bad")
        routed = await handler.mailbox.receive()
        shutdown = await handler.mailbox.receive()
    assert routed.payload["content"] == "bad"
    assert routed.metadata["edge"] == "a-!>handler"
    assert shutdown.is_shutdown  # behind it, as for any output


# -- the docs ----------------------------------------------------------------------------------


def test_the_error_routes_example_in_the_docs_runs() -> None:
    text = (ROOT / "docs" / "graphs.md").read_text()
    section = text[text.index("## Error routes") :]
    (block,) = re.findall(r"```python\n(.*?)```", section, re.DOTALL)[:1]
    exec(compile(block, "docs/graphs.md#error-routes", "exec"), {"__name__": "docs_example"})
