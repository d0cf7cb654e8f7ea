"""Long-running graphs: shutdown propagation, budgets, idle timeouts, stopping, no leaks."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from spark_nodes import (
    Budget,
    ExecutionContext,
    Graph,
    GraphFailed,
    GraphNotRunning,
    Node,
    NodeConfig,
    RestartPolicy,
    StopReason,
    Task,
    TaskType,
    WiringError,
)
from spark_nodes.channels import ChannelMessage, InMemoryChannel
from spark_nodes.testing import Probe
from tests.graph_support import Collect, run_with

pytestmark = pytest.mark.anyio

LONG = TaskType.LONG_RUNNING


class SlowRelay(Node):
    """Relays after a delay, so work is in flight when shutdown arrives."""

    async def process(self, context: ExecutionContext) -> Any:
        await anyio.sleep(0.005)
        return context.inputs.content


async def test_shutdown_reaches_the_tail_after_everything_sent_before_it() -> None:
    a, b, c = SlowRelay(id="a"), SlowRelay(id="b"), Collect(id="c")
    a >> b >> c

    async def drive(graph: Graph) -> None:
        for i in range(50):
            await graph.send("a", i)
        await graph.shutdown()

    result = await run_with(Graph(start=a), Task(type=LONG), drive)
    assert result.stop_reason is StopReason.SHUTDOWN
    assert c.items == list(range(50))
    assert [result.node_stats[n].processed for n in "abc"] == [50, 50, 50]


async def test_a_node_waits_for_the_shutdown_of_every_predecessor() -> None:
    class Slower(Node):
        async def process(self, context: ExecutionContext) -> Any:
            await anyio.sleep(0.02)
            return ("slow", context.inputs.content)

    start, fast, slow, join = Node(id="start"), Node(id="fast"), Slower(id="slow"), Collect(id="j")
    start >> [fast, slow] >> join

    async def drive(graph: Graph) -> None:
        for i in range(5):
            await graph.send(start, i)
        await graph.shutdown()

    result = await run_with(Graph(start=start), Task(type=LONG), drive)
    assert result.stop_reason is StopReason.SHUTDOWN
    assert sorted(item for item in join.items if isinstance(item, tuple)) == [
        ("slow", i) for i in range(5)
    ]
    assert len(join.items) == 10


async def test_concurrent_workers_finish_in_flight_work_before_passing_shutdown_on() -> None:
    worker = SlowRelay(id="worker", config=NodeConfig(concurrency=4))
    sink = Collect(id="sink")
    worker >> sink

    async def drive(graph: Graph) -> None:
        for i in range(20):
            await graph.send(worker, i)
        await graph.shutdown()

    result = await run_with(Graph(start=worker), Task(type=LONG), drive)
    assert sorted(sink.items) == list(range(20))
    assert result.node_stats["sink"].processed == 20


async def test_the_task_input_goes_to_the_start_node() -> None:
    a, sink = Node(id="a"), Probe(id="sink")
    a >> sink

    async def drive(graph: Graph) -> None:
        await sink.wait_for(1)
        await graph.shutdown()

    await run_with(Graph(start=a), Task(inputs={"first": True}, type=LONG), drive)
    assert sink.items == [{"first": True}]


async def test_without_idle_timeout_an_idle_graph_keeps_running() -> None:
    graph = Graph(start=Node(id="idle"))

    async def drive(graph: Graph) -> None:
        await anyio.sleep(0.05)  # idle for a while
        assert graph.running
        assert graph.accepting  # no shutdown or stop has begun either
        await graph.shutdown()

    result = await run_with(graph, Task(type=LONG), drive)
    assert result.stop_reason is StopReason.SHUTDOWN
    assert not graph.running


async def test_idle_timeout_shuts_an_idle_graph_down() -> None:
    a, sink = Node(id="a"), Collect(id="sink")
    a >> sink
    with anyio.fail_after(5):
        result = await Graph(start=a).run(Task(inputs="x", type=LONG, idle_timeout=0.05))
    assert result.stop_reason is StopReason.IDLE
    assert sink.items == ["x"]


async def test_max_seconds_lets_in_flight_work_finish_within_the_grace_period() -> None:
    class Slow(Node):
        async def process(self, context: ExecutionContext) -> Any:
            await anyio.sleep(0.2)
            return "finished"

    slow, sink = Slow(id="slow"), Collect(id="sink")
    slow >> sink
    budget = Budget(max_seconds=0.05, grace_period=5)
    with anyio.fail_after(5):
        result = await Graph(start=slow).run(Task(inputs="x", type=LONG, budget=budget))
    assert result.stop_reason is StopReason.BUDGET
    assert result.detail == "max_seconds=0.05 reached"
    assert not result.cancelled
    assert result.node_stats["slow"].processed == 1
    # The sink stopped taking messages with the budget: the output waits in its mailbox.
    assert sink.items == []
    assert sink.mailbox.qsize() == 1


async def test_work_past_the_grace_period_is_cancelled_and_put_back() -> None:
    class Stuck(Node):
        async def process(self, context: ExecutionContext) -> None:
            await anyio.sleep_forever()

    stuck = Stuck(id="stuck")
    budget = Budget(max_seconds=0.05, grace_period=0.05)
    with anyio.fail_after(5):
        result = await Graph(start=stuck).run(Task(inputs="kept", type=LONG, budget=budget))
    assert result.stop_reason is StopReason.BUDGET
    assert result.cancelled
    assert stuck.mailbox.qsize() == 1  # not lost: it waits for the next run
    leftover = await stuck.mailbox.receive()
    assert leftover.payload == "kept"


async def test_the_grace_period_holds_when_a_node_swallows_a_cancellation() -> None:
    class Stubborn(Node):
        """Catches the first cancellation and waits on, as buggy library code can."""

        async def process(self, context: ExecutionContext) -> None:
            try:
                await anyio.sleep_forever()
            except anyio.get_cancelled_exc_class():
                pass  # swallowed: the run must cancel it again
            await anyio.sleep_forever()

    stubborn = Stubborn(id="stubborn")
    budget = Budget(max_seconds=0.05, grace_period=0.05)
    with anyio.fail_after(5):
        result = await Graph(start=stubborn).run(Task(inputs=1, type=LONG, budget=budget))
    assert result.cancelled
    assert result.stop_reason is StopReason.BUDGET


async def test_a_budget_stops_nodes_blocked_in_receive_without_waiting_for_grace() -> None:
    class Blocking(Node):
        """A custom loop blocked in receive, like the seed's workers."""

        async def go(self) -> None:
            while not self._stop_flag:
                message = await self.mailbox.receive()
                if message.is_shutdown:
                    break

    budget = Budget(max_seconds=0.05, grace_period=30)
    a, b = Blocking(id="a"), Node(id="b", mailbox=_Subclassed(name="dedicated"))
    a >> b
    with anyio.fail_after(5):
        result = await Graph(start=a).run(Task(type=LONG, budget=budget))
    assert result.stop_reason is StopReason.BUDGET
    assert not result.cancelled
    assert result.duration < 5


class _Subclassed(InMemoryChannel):
    """A mailbox subclass: its node gets a dedicated loop rather than on-demand workers."""

    __slots__ = ()


async def test_max_messages_stops_a_long_running_graph() -> None:
    spin = Node(id="spin")
    spin >> spin
    with anyio.fail_after(5):
        result = await Graph(start=spin).run(
            Task(inputs=0, type=LONG, budget=Budget(max_messages=100))
        )
    assert result.stop_reason is StopReason.BUDGET
    assert result.node_stats["spin"].processed == 100


async def test_stop_from_outside() -> None:
    async def drive(graph: Graph) -> None:
        graph.stop("enough")

    result = await run_with(Graph(start=Node(id="a")), Task(type=LONG), drive)
    assert result.stop_reason is StopReason.STOPPED
    assert result.detail == "enough"


async def test_stopping_a_node_ends_it_and_its_successors_drain() -> None:
    a, b = Node(id="a"), Probe(id="b")
    a >> b

    async def drive(graph: Graph) -> None:
        await graph.send(a, 1)
        await b.wait_for(1)
        a.stop()

    result = await run_with(Graph(start=a), Task(type=LONG), drive)
    assert result.stop_reason is StopReason.FINISHED
    assert b.items == [1]


async def test_send_and_shutdown_need_a_running_graph() -> None:
    graph = Graph(start=Node(id="a"))
    with pytest.raises(GraphNotRunning):
        await graph.send("a", 1)
    with pytest.raises(GraphNotRunning):
        await graph.shutdown()
    with pytest.raises(GraphNotRunning):
        graph.stop()

    async def drive(graph: Graph) -> None:
        await graph.shutdown()
        await graph.shutdown()  # harmless
        with pytest.raises(GraphNotRunning, match="takes no messages"):
            await graph.send("a", 1)

    await run_with(graph, Task(type=LONG), drive)
    with pytest.raises(GraphNotRunning, match=r"'.*' is not running: it takes no messages"):
        await graph.send("a", 1)


async def test_send_to_an_unknown_node_names_the_nodes_of_the_graph() -> None:
    a, b = Node(id="a"), Node(id="b")
    a >> b
    graph = Graph(start=a, name="g")

    async def drive(graph: Graph) -> None:
        with pytest.raises(WiringError) as caught:
            await graph.send("nosuch", 1)
        assert str(caught.value) == (
            "graph 'g' has no node 'nosuch'; send to one of its nodes: 'a', 'b'"
        )
        with pytest.raises(WiringError, match="has no node 'stranger'"):
            await graph.send(Node(id="stranger"), 1)
        await graph.shutdown()

    await run_with(graph, Task(type=LONG), drive)


async def test_send_while_the_graph_drains_after_shutdown_says_it_is_shutting_down() -> None:
    started, release = anyio.Event(), anyio.Event()

    class Busy(Node):
        async def process(self, context: ExecutionContext) -> None:
            started.set()
            await release.wait()

    busy = Busy(id="busy")
    probe = Probe(id="probe")
    busy >> probe

    async def drive(graph: Graph) -> None:
        await graph.send("busy", 1)
        await started.wait()  # busy holds the message: the drain must wait for it
        await graph.shutdown()
        assert graph.running
        with pytest.raises(GraphNotRunning) as caught:
            await graph.send("busy", 2)
        assert str(caught.value) == ("graph 'g' is shutting down (shutdown): it takes no messages")
        release.set()

    result = await run_with(Graph(start=busy, name="g"), Task(type=LONG), drive)
    assert result.stop_reason is StopReason.SHUTDOWN
    assert result.node_stats["busy"].processed == 1


async def test_send_while_the_graph_stops_says_it_is_stopping() -> None:
    started, release = anyio.Event(), anyio.Event()

    class Busy(Node):
        async def process(self, context: ExecutionContext) -> None:
            started.set()
            await release.wait()

    busy = Busy(id="busy")

    async def drive(graph: Graph) -> None:
        await graph.send("busy", 1)
        await started.wait()
        graph.stop("enough")
        with pytest.raises(GraphNotRunning) as caught:
            await graph.send("busy", 2)
        assert str(caught.value) == (
            "graph 'g' is stopping (stopped: enough): it takes no messages"
        )
        release.set()

    result = await run_with(Graph(start=busy, name="g"), Task(type=LONG), drive)
    assert result.stop_reason is StopReason.STOPPED


async def test_nothing_is_left_running_after_run_returns() -> None:
    class Crashy(Node):
        async def go(self) -> None:
            await anyio.lowlevel.checkpoint()
            raise RuntimeError("boom")

    before = len(anyio.get_running_tasks())
    a = SlowRelay(id="a", config=NodeConfig(concurrency=3))
    crashy = Crashy(
        id="b", config=NodeConfig(restart=RestartPolicy(max_restarts=1, initial_delay=0))
    )
    c = Node(id="c")
    a >> c
    graph = Graph(a, crashy)
    await a.mailbox.send(ChannelMessage("in flight"))
    with anyio.fail_after(10), pytest.raises(GraphFailed):
        await graph.run(Task(type=LONG, budget=Budget(grace_period=1)))
    assert len(anyio.get_running_tasks()) == before
    for node in (a, crashy, c):
        assert node._runtime is None


async def test_a_cycle_shuts_down_without_deadlock() -> None:
    class Bounce(Node):
        def process(self, context: ExecutionContext) -> Any:
            n = context.inputs.content
            return n + 1 if n < 3 else None

    a, b = Bounce(id="a"), Bounce(id="b")
    a >> b >> a

    async def drive(graph: Graph) -> None:
        await graph.send(a, 0)
        await anyio.sleep(0.01)
        await graph.shutdown()

    result = await run_with(Graph(start=a), Task(type=LONG), drive)
    assert result.stop_reason is StopReason.SHUTDOWN
    assert result.node_stats["a"].processed + result.node_stats["b"].processed == 4


async def test_a_graph_runs_again_after_a_long_run() -> None:
    a, sink = Node(id="a"), Collect(id="sink")
    a >> sink
    graph = Graph(start=a)

    async def drive(graph: Graph) -> None:
        await graph.send(a, "long")
        await graph.shutdown()

    await run_with(graph, Task(type=LONG), drive)
    with anyio.fail_after(5):
        result = await graph.run(Task(inputs="standard"))
    assert sink.items == ["long", "standard"]
    assert result.stop_reason is StopReason.COMPLETED


async def test_messages_left_in_a_mailbox_are_handled_by_the_next_run() -> None:
    a, sink = Node(id="a"), Probe(id="sink")
    a >> sink
    await a.mailbox.send(ChannelMessage("waiting"))
    await sink.mailbox.send(ChannelMessage("also waiting"))

    async def drive(graph: Graph) -> None:
        await sink.wait_for(2)
        await graph.shutdown()

    await run_with(Graph(start=a), Task(type=LONG), drive)
    assert sorted(sink.items) == ["also waiting", "waiting"]


async def test_dedicated_loops_handle_a_mailbox_that_is_not_our_in_memory_channel() -> None:
    a = Node(id="a", config=NodeConfig(concurrency=2), mailbox=_Subclassed(name="a-box"))
    sink = Collect(id="sink", mailbox=_Subclassed(name="sink-box"))
    a >> sink

    async def drive(graph: Graph) -> None:
        for i in range(10):
            await graph.send(a, i)
        await graph.shutdown()

    result = await run_with(Graph(start=a), Task(type=LONG), drive)
    assert sorted(sink.items) == list(range(10))
    assert result.stop_reason is StopReason.SHUTDOWN


@pytest.mark.timeout(20)  # a starved event loop cannot fire fail_after: pytest-timeout can
async def test_a_busy_loop_still_lets_the_budget_timer_run() -> None:
    # Every message is ready at once and process is sync: without periodic yields the
    # worker would never give the event loop a chance to fire max_seconds.
    spin = Node(id="spin")
    spin >> spin
    with anyio.fail_after(10):
        result = await Graph(start=spin).run(
            Task(inputs=0, type=LONG, budget=Budget(max_seconds=0.05, grace_period=1))
        )
    assert result.stop_reason is StopReason.BUDGET
    assert result.node_stats["spin"].processed > 256


async def test_a_node_stopped_mid_batch_takes_no_further_message_of_that_batch() -> None:
    handled: list[int] = []

    class StopAtTwo(Node):
        def process(self, context: ExecutionContext) -> None:
            handled.append(context.inputs.content)
            if context.inputs.content == 2:
                self.stop()

    node = StopAtTwo(id="node")
    graph = Graph(start=node)
    with anyio.fail_after(10):
        async with graph.open_run(Task(type=LONG)) as run:
            for number in range(5):  # one batch: all are queued before the worker runs
                await run.send("node", number)
            await run.wait_idle()
    assert handled == [0, 1, 2]
    assert run.result is not None
    assert run.result.left == {"node": 2}  # 3 and 4 wait for the next run
