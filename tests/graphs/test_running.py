"""Starting and talking to a running graph: open_run, task_group.start, wait_idle, hooks."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from spark_nodes import (
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
from spark_nodes.graphs import RunningGraph
from tests.graph_support import Collect

pytestmark = pytest.mark.anyio

LONG = Task(type=TaskType.LONG_RUNNING)


class Slow(Node):
    async def process(self, context: ExecutionContext) -> Any:
        await anyio.sleep(0.002)
        return context.inputs.content


# -- open_run and task_group.start ---------------------------------------------------------


async def test_open_run_takes_messages_at_once_and_shuts_down_gracefully_on_exit() -> None:
    a, sink = Slow(id="a"), Collect(id="sink")
    a >> sink
    graph = Graph(start=a)
    with anyio.fail_after(10):
        async with graph.open_run(LONG) as run:
            assert isinstance(run, RunningGraph)
            assert graph.running
            assert run.running
            for number in range(20):
                await run.send("a", number)  # no wait_all_tasks_blocked needed
    assert run.result is not None
    assert run.result.stop_reason is StopReason.SHUTDOWN
    assert sink.items == list(range(20))  # everything sent before the exit was handled
    assert not graph.running


async def test_task_group_start_returns_a_running_graph() -> None:
    sink = Collect(id="sink")
    graph = Graph(start=sink)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            run = await group.start(graph.run, LONG)
            await run.send("sink", "hello")
            await run.shutdown()
    assert sink.items == ["hello"]
    assert run.result is not None
    assert run.result.stop_reason is StopReason.SHUTDOWN


async def test_open_run_cancels_the_run_when_the_body_raises() -> None:
    started = anyio.Event()

    class Forever(Node):
        async def process(self, context: ExecutionContext) -> Any:
            started.set()
            await anyio.sleep_forever()

    graph = Graph(start=Forever(id="forever"))

    async def body_that_raises() -> None:
        async with graph.open_run(LONG) as run:
            await run.send("forever", 1)
            await started.wait()
            raise KeyError("from the body")

    with anyio.fail_after(10), pytest.raises(KeyError, match="from the body"):
        await body_that_raises()
    assert not graph.running


async def test_open_run_raises_graph_failed_unwrapped_and_cancels_the_body() -> None:
    class Crashing(InMemoryChannel):
        async def take(self, limit: int) -> list[ChannelMessage]:
            raise RuntimeError("mailbox broke")

    class Dedicated(Node):
        async def go(self) -> None:
            await super().go()

    node = Dedicated(
        id="node",
        mailbox=Crashing(),
        config=NodeConfig(restart=RestartPolicy(max_restarts=0)),
    )
    graph = Graph(start=node)
    body_cancelled = False

    async def body_that_waits() -> None:
        nonlocal body_cancelled
        async with graph.open_run(LONG):
            try:
                await anyio.sleep_forever()
            except anyio.get_cancelled_exc_class():
                body_cancelled = True
                raise

    with anyio.fail_after(10), pytest.raises(GraphFailed, match="node"):
        await body_that_waits()
    assert body_cancelled


async def test_open_run_raises_a_wiring_error_before_entering() -> None:
    class OwnLoop(Node):
        async def go(self) -> None:
            await self.mailbox.receive()

    graph = Graph(start=OwnLoop(id="own"))
    entered = False
    with anyio.fail_after(10), pytest.raises(WiringError, match="own"):
        async with graph.open_run(Task()):  # a one-pass run cannot run a loop of its own
            entered = True
    assert not entered


async def test_open_run_of_a_one_pass_run_that_already_completed_just_returns() -> None:
    graph = Graph(start=Slow(id="a"))
    with anyio.fail_after(10):
        async with graph.open_run(Task(inputs=1)) as run:
            await run.wait_idle()
    assert run.result is not None
    assert run.result.stop_reason is StopReason.COMPLETED
    assert run.result.content == 1


async def test_run_without_a_task_is_a_one_pass_run() -> None:
    class Extract(Node):
        def process(self, context: ExecutionContext) -> Any:
            return {"got": context.inputs.content}

    a, b = Extract(id="a"), Collect(id="b")
    a >> b
    with anyio.fail_after(10):
        result = await Graph(start=a).run()
    assert result.stop_reason is StopReason.COMPLETED
    assert b.items == [{"got": None}]  # the seed's run(): the start node runs once


# -- wait_idle --------------------------------------------------------------------------------


async def test_wait_idle_returns_once_everything_sent_is_handled() -> None:
    a, b, sink = Slow(id="a"), Slow(id="b"), Collect(id="sink")
    a >> b >> sink
    graph = Graph(start=a)
    with anyio.fail_after(10):
        async with graph.open_run(LONG) as run:
            await run.wait_idle()  # idle from the start
            for number in range(30):
                await run.send("a", number)
            await run.wait_idle()
            assert sink.items == list(range(30))
            assert not graph.nodes["a"].mailbox.qsize()
            await run.send("a", 30)
            await run.wait_idle()
            assert sink.items[-1] == 30


async def test_wait_idle_on_a_graph_that_is_not_running_raises() -> None:
    with pytest.raises(GraphNotRunning):
        await Graph(start=Slow(id="a")).wait_idle()


async def test_wait_idle_waits_for_a_message_in_hand() -> None:
    release = anyio.Event()

    class Stuck(Node):
        async def process(self, context: ExecutionContext) -> Any:
            await release.wait()

    async def release_it() -> None:
        release.set()

    graph = Graph(start=Stuck(id="stuck"))
    with anyio.fail_after(10):
        async with graph.open_run(Task(type=TaskType.LONG_RUNNING)) as run:
            await run.send("stuck", 1)
            async with anyio.create_task_group() as group:
                group.start_soon(release_it)  # runs only once wait_idle below waits
                await run.wait_idle()
                assert release.is_set()  # it waited for the message in hand


async def test_wait_idle_returns_when_the_run_ends_meanwhile() -> None:
    class Stopper(Node):
        async def process(self, context: ExecutionContext) -> Any:
            context.stop_graph("enough")

    stopper = Stopper(id="stopper")
    graph = Graph(start=stopper)
    with anyio.fail_after(10):
        async with graph.open_run(Task(type=TaskType.LONG_RUNNING)) as run:
            for number in range(3):  # the first stops the run: two are left, not idle
                await run.send("stopper", number)
            await run.wait_idle()
    assert run.result is not None
    assert run.result.left == {"stopper": 2}


async def test_wait_idle_counts_messages_queued_before_the_run() -> None:
    a, sink = Slow(id="a"), Collect(id="sink")
    a >> sink
    for number in range(3):
        a.mailbox.send_nowait(ChannelMessage(number))  # left for the next run
    graph = Graph(start=a)
    with anyio.fail_after(10):
        async with graph.open_run(LONG) as run:
            await run.send("a", 3)
            await run.wait_idle()
            assert sink.items == [0, 1, 2, 3]
            await run.send("a", 4)
            await run.wait_idle()  # and later waits still work
            assert sink.items == [0, 1, 2, 3, 4]


async def test_a_one_pass_run_handles_messages_queued_before_it() -> None:
    a, sink = Slow(id="a"), Collect(id="sink")
    a >> sink
    for number in range(3):
        a.mailbox.send_nowait(ChannelMessage(number))
    with anyio.fail_after(10):
        result = await Graph(start=a).run(Task(inputs=3))
    assert result.stop_reason is StopReason.COMPLETED
    assert sink.items == [0, 1, 2, 3]


async def test_wait_idle_with_a_node_running_a_loop_of_its_own() -> None:
    class OwnLoop(Node):
        async def go(self) -> None:
            async for message in self.mailbox:
                if message.is_shutdown:
                    return
                await sink.mailbox.send(message.clone())

    own, sink = OwnLoop(id="own"), Collect(id="sink")
    graph = Graph(own, sink)
    with anyio.fail_after(10):
        async with graph.open_run(LONG) as run:
            await run.send("own", "x")
            await run.wait_idle()  # looked at again and again: the loop reports nothing
            assert sink.items == ["x"]


# -- lifecycle hooks --------------------------------------------------------------------------


class Hooked(Node):
    def __init__(self, log: list[Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.log = log

    async def on_start(self) -> None:
        self.log.append(("start", self.id))

    async def on_stop(self) -> None:
        self.log.append(("stop", self.id))

    async def on_failure(self, error: BaseException) -> None:
        self.log.append(("failure", self.id, str(error)))


async def test_on_start_runs_before_any_message_and_on_stop_after_the_last() -> None:
    log: list[Any] = []

    class Logging(Hooked):
        def process(self, context: ExecutionContext) -> Any:
            self.log.append(("process", self.id))
            return context.inputs.content

    a, b = Logging(log, id="a"), Logging(log, id="b")
    a >> b
    with anyio.fail_after(10):
        await Graph(start=a).run(Task(inputs=1))
    assert log == [
        ("start", "a"),
        ("start", "b"),
        ("process", "a"),
        ("process", "b"),
        ("stop", "a"),
        ("stop", "b"),
    ]


async def test_an_on_start_that_raises_starts_nothing_and_stops_the_nodes_started() -> None:
    log: list[Any] = []

    class Refusing(Hooked):
        async def on_start(self) -> None:
            raise ConnectionError("no database")

    a, b = Hooked(log, id="a"), Refusing(log, id="b")
    a >> b
    graph = Graph(start=a)
    with anyio.fail_after(10), pytest.raises(ConnectionError, match="no database"):
        await graph.run(LONG)
    assert log == [("start", "a"), ("stop", "a")]
    assert not graph.running


async def test_an_on_stop_that_raises_is_logged_and_the_others_still_stop() -> None:
    log: list[Any] = []

    class Failing(Hooked):
        async def on_stop(self) -> None:
            raise RuntimeError("cannot close")

    a, b = Failing(log, id="a"), Hooked(log, id="b")
    a >> b
    with anyio.fail_after(10), capture_logs() as logs:
        result = await Graph(start=a).run(Task(inputs=1))
    assert result.stop_reason is StopReason.COMPLETED
    assert ("stop", "b") in log
    assert any(entry["event"] == "on_stop failed" and entry["node"] == "a" for entry in logs)


async def test_on_stop_runs_when_the_run_is_cancelled_from_outside() -> None:
    log: list[Any] = []
    graph = Graph(start=Hooked(log, id="a"))
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            await group.start(graph.run, LONG)
            group.cancel_scope.cancel()
    assert log == [("start", "a"), ("stop", "a")]


async def test_on_failure_is_told_of_each_crash_of_a_loop() -> None:
    log: list[Any] = []
    crashes = 0

    class Flaky(InMemoryChannel):
        def take_nowait(self, limit: int) -> list[ChannelMessage]:
            nonlocal crashes
            if crashes < 2:  # the loop's first two looks at its mailbox
                crashes += 1
                raise RuntimeError(f"crash {crashes}")
            return super().take_nowait(limit)

    class Dedicated(Hooked):
        async def go(self) -> None:
            await super().go()

    restart = RestartPolicy(max_restarts=5, initial_delay=0.001)
    node = Dedicated(log, id="n", mailbox=Flaky(), config=NodeConfig(restart=restart))
    graph = Graph(start=node)
    with anyio.fail_after(10):
        async with graph.open_run(LONG) as run:
            await run.send("n", 1)
            await run.wait_idle()
    assert [entry for entry in log if entry[0] == "failure"] == [
        ("failure", "n", "crash 1"),
        ("failure", "n", "crash 2"),
    ]


async def test_what_on_drained_returns_is_forwarded_before_the_shutdown() -> None:
    class Window(Node):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.window: list[Any] = []

        def process(self, context: ExecutionContext) -> Any:
            self.window.append(context.inputs.content)
            if len(self.window) < 3:
                return None
            full, self.window = self.window, []
            return full

        async def on_drained(self) -> Any:
            return self.window or None  # the last, partial window

    window, sink = Window(id="window"), Collect(id="sink")
    window >> sink
    with anyio.fail_after(10):
        async with Graph(start=window).open_run(LONG) as run:
            for number in range(7):
                await run.send("window", number)
    assert sink.items == [[0, 1, 2], [3, 4, 5], [6]]


async def test_an_async_generator_on_drained_forwards_each_item() -> None:
    class Flusher(Node):
        async def on_drained(self) -> Any:
            yield "first"
            yield "second"

    flusher, sink = Flusher(id="flusher"), Collect(id="sink")
    flusher >> sink
    with anyio.fail_after(10):
        async with Graph(start=flusher).open_run(LONG) as run:
            await run.send("flusher", "message")
    assert sink.items == ["message", "first", "second"]
