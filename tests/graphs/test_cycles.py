"""Graphs with cycles: a shutdown drains the cycle until it is quiet; max_steps ends loops."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from spark_nodes import (
    CountWindow,
    ExecutionContext,
    Graph,
    JoinNode,
    Node,
    StopReason,
    Task,
    TaskType,
    TimeWindow,
    WiringError,
)
from spark_nodes.channels import ChannelMessage, InMemoryChannel
from tests.graph_support import Collect

pytestmark = pytest.mark.anyio

LONG = TaskType.LONG_RUNNING


class CountDown(Node):
    """A tool: takes one off, after a pause, so that work is on the cycle at shutdown."""

    async def process(self, context: ExecutionContext) -> Any:
        await anyio.sleep(0.001)
        return context.inputs.content - 1


def agent_loop() -> tuple[Node, Collect]:
    """router -> tool -> router, until the count is 0; then router -> done."""
    router, tool, done = Node(id="router"), CountDown(id="tool"), Collect(id="done")
    router.on(lambda count: count > 0) >> tool
    router.otherwise() >> done
    tool >> router
    return router, done


async def test_shutdown_drains_a_cycle_until_it_is_quiet() -> None:
    router, done = agent_loop()
    graph = Graph(start=router)
    with anyio.fail_after(20):
        async with graph.open_run(Task(type=LONG)) as run:
            for count in range(5, 10):
                await run.send("router", count)
            # shut down at once: every count is still going round the cycle
    assert run.result is not None
    assert run.result.stop_reason is StopReason.SHUTDOWN
    assert done.items == [0] * 5  # each one went all the way round, none was left
    assert graph.nodes["router"].mailbox.qsize() == 0
    assert graph.nodes["tool"].mailbox.qsize() == 0


async def test_a_one_pass_run_of_a_cycle_completes() -> None:
    router, done = agent_loop()
    with anyio.fail_after(20):
        result = await Graph(start=router).run(Task(inputs=20))
    assert result.stop_reason is StopReason.COMPLETED
    assert done.items == [0]


async def test_a_cycle_fed_from_outside_drains_after_its_feeder() -> None:
    feeder = Node(id="feeder")
    router, done = agent_loop()
    feeder >> router
    graph = Graph(start=feeder)
    with anyio.fail_after(20):
        async with graph.open_run(Task(type=LONG)) as run:
            for count in range(3):
                await run.send("feeder", 10 + count)
    assert done.items == [0, 0, 0]


async def test_a_self_loop_drains_at_shutdown() -> None:
    class Halve(Node):
        def process(self, context: ExecutionContext) -> Any:
            return context.inputs.content // 2

    halve, done = Halve(id="halve"), Collect(id="done")
    halve.on(lambda n: n > 0) >> halve
    halve.otherwise() >> done
    with anyio.fail_after(20):
        async with Graph(start=halve).open_run(Task(type=LONG)) as run:
            await run.send("halve", 1 << 40)
    assert done.items == [0]


async def test_two_cycles_in_a_row_drain_one_after_the_other() -> None:
    first_router, first_done = agent_loop()
    second_router, tool, second_done = Node(id="r2"), CountDown(id="t2"), Collect(id="d2")
    second_router.on(lambda count: count > 0) >> tool
    second_router.otherwise() >> second_done
    tool >> second_router
    first_done.process = lambda context: context.inputs.content + 3  # type: ignore[method-assign]
    first_done >> second_router
    with anyio.fail_after(20):
        async with Graph(start=first_router).open_run(Task(type=LONG)) as run:
            await run.send("router", 4)
    assert second_done.items == [0]


async def test_a_stop_cuts_a_cycle_short_and_what_is_left_stays_in_the_mailboxes() -> None:
    router, done = agent_loop()
    graph = Graph(start=router)
    with anyio.fail_after(20):
        async with graph.open_run(Task(type=LONG)) as run:
            for count in range(100, 110):
                await run.send("router", count)
            run.stop("enough")
    assert run.result is not None
    assert run.result.stop_reason is StopReason.STOPPED
    left = {
        node_id: graph.nodes[node_id].mailbox.qsize()
        for node_id in ("router", "tool")
        if graph.nodes[node_id].mailbox.qsize()
    }
    assert run.result.left == left  # the result says what was left where
    assert sum(left.values()) == 10 - len(done.items)  # and nothing was lost
    assert "messages left in mailboxes" in str(run.result)


# -- max_steps --------------------------------------------------------------------------------


class Forever(Node):
    def process(self, context: ExecutionContext) -> Any:
        return context.inputs.content + 1


async def test_a_one_pass_run_of_a_self_feeding_node_ends_at_max_steps() -> None:
    forever = Forever(id="forever")
    forever >> forever
    graph = Graph(start=forever)
    with anyio.fail_after(20):
        result = await graph.run(Task(inputs=0, max_steps=50))
    assert result.stop_reason is StopReason.COMPLETED
    assert result.node_stats["forever"].processed == 50
    assert isinstance(graph.dead_letters, InMemoryChannel)
    (letter,) = graph.dead_letters.snapshot()
    record = letter.metadata["dead_letter"]
    assert record["phase"] == "max_steps"
    assert record["error_type"] == "spark_nodes.errors.StepLimitExceeded"
    assert "max_steps=50" in record["error"]
    assert letter.payload == 50


async def test_max_steps_has_a_finite_default() -> None:
    forever = Forever(id="forever")
    forever >> forever
    with anyio.fail_after(60):
        result = await Graph(start=forever).run(Task(inputs=0))
    assert result.node_stats["forever"].dead_lettered == 1
    assert Task().max_steps == 1000


async def test_steps_are_counted_per_input_round_the_cycle_and_carried_in_metadata() -> None:
    seen: list[tuple[int, int]] = []

    class Watch(Node):
        def process(self, context: ExecutionContext) -> Any:
            seen.append((context.inputs.content, context.inputs.metadata.get("steps", 0)))
            return context.inputs.content

    router, tool, done = Node(id="router"), CountDown(id="tool"), Collect(id="done")
    watch = Watch(id="watch")  # on the cycle: router -> watch -> tool -> router
    entry = Watch(id="entry")  # off it
    entry >> router
    router.on(lambda count: count > 0) >> watch
    router.otherwise() >> done
    watch >> tool >> router
    with anyio.fail_after(20):
        async with Graph(start=entry).open_run(Task(type=LONG)) as run:
            await run.send("entry", 2)
            await run.wait_idle()
            await run.send("entry", 1)  # another input starts from 0 again
    # entry sees 0 steps; on the cycle each hop is one: router(+1) watch(+2) tool(+3) ...
    assert seen == [(2, 0), (2, 1), (1, 4), (1, 0), (1, 1)]
    assert done.items == [0, 0]


async def test_a_goto_loop_counts_steps_too() -> None:
    class Again(Node):
        def process(self, context: ExecutionContext) -> Any:
            context.goto("again")
            return context.inputs.content

    again = Again(id="again")
    graph = Graph(start=again)
    with anyio.fail_after(20):
        result = await graph.run(Task(inputs="x", max_steps=10))
    assert result.node_stats["again"].dead_lettered == 1


class Budgeted(Node):
    """Records ``(content, context.steps_taken, context.max_steps)`` and passes the content on."""

    def __init__(self, seen: list[tuple[Any, int, int | None]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seen = seen

    def process(self, context: ExecutionContext) -> Any:
        self.seen.append((context.inputs.content, context.steps_taken, context.max_steps))
        return context.inputs.content


async def test_a_node_sees_the_steps_its_message_took_and_the_runs_max_steps() -> None:
    seen: list[tuple[Any, int, int | None]] = []
    entry, router = Budgeted(seen, id="entry"), Budgeted(seen, id="router")
    tool, done = CountDown(id="tool"), Collect(id="done")
    entry >> router  # off the cycle: no steps
    router.on(lambda count: count > 0) >> tool
    router.otherwise() >> done
    tool >> router
    with anyio.fail_after(20):
        await Graph(start=entry).run(Task(inputs=2, max_steps=7))
    # router(+1 from tool) ... each hop along the cycle is one step
    assert seen == [(2, 0, 7), (2, 0, 7), (1, 2, 7), (0, 4, 7)]
    assert done.items == [0]


async def test_context_max_steps_is_none_when_the_run_has_no_limit() -> None:
    seen: list[tuple[Any, int, int | None]] = []

    class Again(Budgeted):
        def process(self, context: ExecutionContext) -> Any:
            super().process(context)
            if context.steps_taken < 2:
                context.goto("again")  # a goto is a step too
                return context.inputs.content
            return None

    with anyio.fail_after(20):
        await Graph(start=Again(seen, id="again")).run(Task(inputs="x", max_steps=None))
    assert seen == [("x", 0, None), ("x", 1, None), ("x", 2, None)]


async def test_a_node_can_end_its_loop_at_max_steps_instead_of_being_dead_lettered() -> None:
    class Careful(Node):
        def process(self, context: ExecutionContext) -> Any:
            if context.steps_taken == context.max_steps:
                return None  # one more hop round the cycle would be dead-lettered
            return context.inputs.content + 1

    careful = Careful(id="careful")
    careful >> careful
    graph = Graph(start=careful)
    with anyio.fail_after(20):
        result = await graph.run(Task(inputs=0, max_steps=5))
    assert result.node_stats["careful"].processed == 6
    assert result.node_stats["careful"].dead_lettered == 0


async def test_max_steps_none_lifts_the_limit_and_bad_values_are_refused() -> None:
    assert Task(max_steps=None).max_steps is None
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="max_steps"):
            Task(max_steps=bad)  # type: ignore[arg-type]


async def test_a_step_limit_error_names_the_cycle_edge() -> None:
    forever = Forever(id="forever")
    forever >> forever
    dead = InMemoryChannel()
    with anyio.fail_after(20):
        await Graph(start=forever, dead_letters=dead).run(Task(inputs=0, max_steps=3))
    letters: list[ChannelMessage] = dead.snapshot()
    assert "forever->forever" in letters[0].metadata["dead_letter"]["error"]


async def test_a_cycle_whose_entry_was_stopped_still_drains_the_rest() -> None:
    router, done = agent_loop()
    graph = Graph(start=router)
    with anyio.fail_after(20):
        async with graph.open_run(Task(type=LONG)) as run:
            await run.send("router", 3)
            await run.wait_idle()
            router.stop()  # it finishes without a shutdown: the cycle must not wait for one
    assert run.result is not None
    assert done.items == [0]


async def test_a_cycle_with_a_go_loop_of_its_own_ends_at_shutdown() -> None:
    class Router(Node):
        async def go(self) -> None:
            async for message in self.mailbox:
                if message.is_shutdown:
                    return
                if message.payload > 0:
                    await tool.mailbox.send(ChannelMessage(message.payload))

    router, tool = Router(id="router"), CountDown(id="tool")
    router >> tool
    tool >> router
    with anyio.fail_after(20):
        async with Graph(start=router).open_run(Task(type=LONG)) as run:
            await run.send("router", 2)
            await run.wait_idle()
    assert run.result is not None
    assert run.result.stop_reason is StopReason.SHUTDOWN


async def test_a_join_on_a_cycle_joins_its_predecessors() -> None:
    start, left, right, join = (
        Node(id="start"),
        Node(id="left"),
        Node(id="right"),
        JoinNode(id="join"),
    )
    back = Node(id="back")
    start >> [left, right]
    [left, right] >> join
    join.on(lambda merged: False) >> back  # never taken: the wiring makes the cycle
    back >> left
    graph = Graph(start=start)
    with anyio.fail_after(20):
        async with graph.open_run(Task(type=LONG)) as run:
            answer = await run.invoke(1, timeout=5)
    assert answer.contents == [{"left": 1, "right": 1}]


# -- windows are refused on a cycle -----------------------------------------------------------


async def test_a_window_on_a_two_node_cycle_is_refused_when_the_graph_is_built() -> None:
    feeder, window, back = Node(id="feeder"), CountWindow(2, id="window"), Node(id="back")
    feeder >> window >> back
    back >> window
    with pytest.raises(WiringError, match="window node 'window' \\(CountWindow\\)") as caught:
        Graph(start=feeder)
    assert "on a cycle with the nodes 'window', 'back':" in str(caught.value)  # not 'feeder'
    assert "put the window outside the cycle" in str(caught.value)


async def test_a_window_wired_to_itself_is_refused() -> None:
    window = TimeWindow(1.0, id="window")
    window >> window
    with pytest.raises(WiringError, match="window node 'window' \\(TimeWindow\\) is wired to"):
        Graph(start=window)


async def test_a_subclass_of_a_window_on_a_cycle_is_refused() -> None:
    class Batches(CountWindow):
        pass

    router, batches = Node(id="router"), Batches(3, id="batches")
    router >> batches >> router
    with pytest.raises(WiringError, match="window node 'batches' \\(Batches\\)"):
        Graph(start=router)


async def test_an_error_route_that_closes_a_cycle_through_a_window_is_refused() -> None:
    window, handler = CountWindow(2, id="window"), Node(id="handler")
    window.on_error() >> handler  # error edges are edges: they make cycles
    handler >> window
    with pytest.raises(WiringError, match="window node 'window'"):
        Graph(start=window)


async def test_a_window_wired_onto_a_cycle_later_is_refused_when_the_run_starts() -> None:
    window, back = CountWindow(2, id="window"), Node(id="back")
    window >> back
    graph = Graph(start=window)
    back >> window
    with anyio.fail_after(20), pytest.raises(WiringError, match="window node 'window'"):
        await graph.run(Task(inputs=1))


async def test_a_window_fed_by_a_cycle_but_not_on_it_is_allowed() -> None:
    router, tool = Node(id="router"), CountDown(id="tool")
    window, done = CountWindow(2, id="window"), Collect(id="done")
    router.on(lambda count: count > 0) >> tool
    router.otherwise() >> window >> done
    tool >> router
    graph = Graph(start=router)
    with anyio.fail_after(20):
        async with graph.open_run(Task(type=LONG)) as run:
            for count in (2, 3, 1):
                await run.send("router", count)
    assert [window["items"] for window in done.items] == [[0, 0], [0]]  # the last: drained
