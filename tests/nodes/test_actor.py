"""Nodes as actors: the default loop on a node's own mailbox, tell and ask, without a graph."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest

from spark_nodes import ExecutionContext, Graph, Node, NodeConfig, Task, TaskType
from spark_nodes.channels import ChannelMessage, InMemoryChannel
from spark_nodes.errors import (
    GraphCancelled,
    GraphFailed,
    InvokeFailed,
    InvokeTimeout,
    WiringError,
)
from spark_nodes.nodes import Actor, RestartPolicy, RetryPolicy
from spark_nodes.nodes.actor import actor_of
from spark_nodes.nodes.node import runtime_of
from spark_nodes.testing import Probe

pytestmark = pytest.mark.anyio

NO_RETRY = NodeConfig(retry=RetryPolicy(max_attempts=1))


class Double(Node):
    def process(self, context: ExecutionContext) -> Any:
        return context.inputs.content * 2


class Gated(Node):
    """Doubles its input ``n`` once ``gates[n]`` is set; sets ``started[n]`` on the way in."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gates: defaultdict[int, anyio.Event] = defaultdict(anyio.Event)
        self.started: defaultdict[int, anyio.Event] = defaultdict(anyio.Event)

    async def process(self, context: ExecutionContext) -> Any:
        number: int = context.inputs.content
        self.started[number].set()
        await self.gates[number].wait()
        return number * 2


def shutdown() -> ChannelMessage:
    return ChannelMessage(None, is_shutdown=True)


def queued(node: Node) -> list[ChannelMessage]:
    """What the node's in-memory mailbox holds, oldest first."""
    mailbox = node.mailbox
    assert isinstance(mailbox, InMemoryChannel)
    return mailbox.snapshot()


def watches_of(node: Node) -> dict[str, Any]:
    runtime = runtime_of(node)
    assert runtime is not None
    return runtime.run.watches


# -- running ------------------------------------------------------------------------------


async def test_go_as_a_task_without_a_graph_processes_and_ends_on_shutdown() -> None:
    double, sink = Double(id="double"), Probe(id="sink")
    double >> sink
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(double.go)
            for number in (1, 2, 3):
                await double.tell(number)
            await double.mailbox.send(shutdown())
    assert runtime_of(double) is None  # the task ended: the node runs nowhere
    assert sink.items == []  # not running: its mailbox holds what it got
    held = queued(sink)
    assert [message.payload for message in held if not message.is_shutdown] == [2, 4, 6]
    assert held[-1].is_shutdown
    assert held[-1].metadata["source_node"] == "double"


async def test_open_actor_handles_what_was_told_before_leaving_the_block() -> None:
    double, sink = Double(id="double"), Probe(id="sink")
    double >> sink
    with anyio.fail_after(5):
        async with sink.open_actor(), double.open_actor() as actor:
            assert isinstance(actor, Actor)
            assert actor.running
            assert actor_of(double) is actor
            for number in range(10):
                await actor.tell(number)
    assert sink.items == [number * 2 for number in range(10)]
    assert not actor.running
    assert actor_of(double) is None
    assert actor.statistics().processed == 10
    assert actor.statistics().forwarded == 10


async def test_a_message_is_acked_after_its_output_reached_the_next_mailbox() -> None:
    double, sink = Double(id="double"), Node(id="sink")  # sink not running: it keeps it
    double >> sink
    acked = anyio.Event()
    queued_at_ack: list[list[Any]] = []

    async def ack() -> None:
        queued_at_ack.append([message.payload for message in queued(sink)])
        acked.set()

    with anyio.fail_after(5):
        async with double.open_actor():
            await double.mailbox.send(ChannelMessage(2, ack=ack))
            await acked.wait()
    assert queued_at_ack == [[4]]


async def test_tell_before_the_actor_starts_is_kept_in_the_mailbox_until_it_runs() -> None:
    sink = Probe(id="sink")
    await sink.tell("early")
    with anyio.fail_after(5):
        async with sink.open_actor():
            assert await sink.wait_for(1) == ["early"]


async def test_an_actor_can_be_started_again_after_it_ended() -> None:
    sink = Probe(id="sink")
    with anyio.fail_after(5):
        for round_ in range(3):
            async with sink.open_actor():
                await sink.tell(round_)
    assert sink.items == [0, 1, 2]
    assert sink.mailbox.empty()  # no shutdown left for the next start


async def test_an_actor_uses_its_config_concurrency_loops() -> None:
    gated = Gated(id="gated", config=NodeConfig(concurrency=3))
    with anyio.fail_after(5):
        async with gated.open_actor():
            for number in range(3):
                await gated.tell(number)
            for number in range(3):  # all three in process at once: a loop each
                await gated.started[number].wait()
            for number in range(3):
                gated.gates[number].set()


# -- ask ----------------------------------------------------------------------------------


async def test_ask_returns_the_output_process_produced_for_the_message() -> None:
    double = Double(id="double")
    with anyio.fail_after(5):
        async with double.open_actor() as actor:
            assert await double.ask(21, timeout=2) == 42
            assert await actor.ask("ab") == "abab"


async def test_an_actor_has_no_step_budget() -> None:
    class Budget(Node):
        def process(self, context: ExecutionContext) -> Any:
            return [context.steps_taken, context.max_steps]

    budget = Budget(id="budget")
    with anyio.fail_after(5):
        async with budget.open_actor():
            assert await budget.ask("x", timeout=2) == [0, None]


async def test_ask_returns_none_for_none_and_a_list_for_a_generator() -> None:
    class Quiet(Node):
        def process(self, context: ExecutionContext) -> None:
            return None

    class Count(Node):
        def process(self, context: ExecutionContext) -> Iterator[int]:
            yield from range(context.inputs.content)

    class CountAsync(Node):
        async def process(self, context: ExecutionContext) -> AsyncIterator[int]:
            for number in range(context.inputs.content):
                yield number

    quiet, count, count_async = Quiet(), Count(), CountAsync()
    with anyio.fail_after(5):
        async with quiet.open_actor(), count.open_actor(), count_async.open_actor():
            assert await quiet.ask("x") is None
            assert await count.ask(3) == [0, 1, 2]
            assert await count.ask(0) == []
            assert await count_async.ask(2) == [0, 1]


async def test_ask_returns_every_output_of_a_process_that_also_emits() -> None:
    class Emit(Node):
        def process(self, context: ExecutionContext) -> Any:
            context.emit("first")
            return "second"

    emit = Emit()
    with anyio.fail_after(5):
        async with emit.open_actor():
            assert await emit.ask(None) == ["first", "second"]


async def test_ask_answers_once_the_actor_handled_the_message_not_its_successors() -> None:
    double, gated = Double(id="double"), Gated(id="gated")
    double >> gated
    with anyio.fail_after(5):
        async with gated.open_actor(), double.open_actor():
            assert await double.ask(3) == 6
            await gated.started[6].wait()  # gated has the output, and waits on its gate
            gated.gates[6].set()


async def test_concurrent_asks_each_get_their_own_answer() -> None:
    gated = Gated(id="gated", config=NodeConfig(concurrency=4))
    answers: dict[int, Any] = {}

    async def ask(number: int) -> None:
        answers[number] = await gated.ask(number)

    with anyio.fail_after(5):
        async with gated.open_actor(), anyio.create_task_group() as group:
            for number in range(4):
                group.start_soon(ask, number)
            for number in reversed(range(4)):  # finish them in the reverse order
                await gated.started[number].wait()
                gated.gates[number].set()
    assert answers == {0: 0, 1: 2, 2: 4, 3: 6}


async def test_ask_that_times_out_raises_invoke_timeout_and_leaves_no_watch() -> None:
    gated = Gated(id="gated")
    with anyio.fail_after(5):
        async with gated.open_actor():
            with pytest.raises(InvokeTimeout, match=r"did not answer within 0\.05 s"):
                await gated.ask(1, timeout=0.05)
            assert watches_of(gated) == {}
            gated.gates[1].set()  # the message goes on; nothing waits for it
            gated.gates[2].set()
            assert await gated.ask(2) == 4


async def test_ask_of_a_failing_process_raises_invoke_failed_and_dead_letters_it() -> None:
    class Picky(Node):
        def process(self, context: ExecutionContext) -> Any:
            raise ValueError(f"no {context.inputs.content}")

    picky = Picky(id="picky", config=NodeConfig(retry=RetryPolicy(max_attempts=2, initial_delay=0)))
    with anyio.fail_after(5):
        async with picky.open_actor() as actor:
            with pytest.raises(InvokeFailed, match="ValueError: no thanks") as caught:
                await picky.ask("thanks")
            assert watches_of(picky) == {}
            letter = await actor.dead_letters.receive()
    assert letter.payload == "thanks"
    assert letter.metadata["dead_letter"]["node"] == "picky"
    assert letter.metadata["dead_letter"]["attempts"] == 2
    failure = caught.value.result.failures[0]
    assert (failure.node, failure.phase, failure.error) == ("picky", "process", "no thanks")
    assert actor.statistics().dead_lettered == 1


async def test_dead_letters_go_to_the_channel_given_to_open_actor() -> None:
    class Broken(Node):
        def process(self, context: ExecutionContext) -> Any:
            raise RuntimeError("broken")

    letters = InMemoryChannel(name="letters")
    broken = Broken(config=NO_RETRY)
    with anyio.fail_after(5):
        async with broken.open_actor(dead_letters=letters) as actor:
            assert actor.dead_letters is letters
            await broken.tell("x")
            letter = await letters.receive()
    assert letter.metadata["dead_letter"]["error"] == "broken"


async def test_ask_on_a_node_not_running_as_an_actor_says_to_start_it() -> None:
    with pytest.raises(RuntimeError, match=r"not running as an actor.*open_actor"):
        await Double().ask(1)


async def test_ask_raises_when_the_actor_ends_before_it_handled_the_message() -> None:
    gated = Gated(id="gated")
    with anyio.fail_after(5):
        async with gated.open_actor(), anyio.create_task_group() as group:
            await gated.tell(1)
            await gated.started[1].wait()

            async def ask_second() -> None:
                with pytest.raises(RuntimeError, match="actor ended"):
                    await gated.ask(2)

            group.start_soon(ask_second)
            await anyio.wait_all_tasks_blocked()  # the ask's message is queued behind 1
            gated.stop()  # after the message in hand; 2 stays queued
            gated.gates[1].set()
    assert [message.payload for message in queued(gated)] == [2]


async def test_tell_and_ask_on_a_node_running_in_a_graph_point_to_the_graph() -> None:
    double = Double(id="double")
    graph = Graph(start=double)
    with anyio.fail_after(5):
        async with graph.open_run(Task(type=TaskType.LONG_RUNNING)):
            with pytest.raises(RuntimeError, match=r"graph\.send"):
                await double.tell(1)
            with pytest.raises(RuntimeError, match=r"graph\.invoke"):
                await double.ask(1)


# -- chains, shutdown and stop -------------------------------------------------------------


async def test_a_chain_of_two_actors_forwards_and_passes_the_shutdown_on() -> None:
    first, second, sink = Double(id="first"), Double(id="second"), Probe(id="sink")
    first >> second >> sink
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(sink.go)
            group.start_soon(second.go)
            async with first.open_actor():
                for number in range(5):
                    await first.tell(number)
        # Leaving first's block shut first down; first passed it on to second, second to
        # the sink: both go() tasks ended, each after what was sent before its shutdown.
    assert sink.items == [number * 4 for number in range(5)]


async def test_an_actor_wired_to_several_nodes_passes_the_shutdown_to_each_once() -> None:
    source, left, right = Node(id="source"), Node(id="left"), Node(id="right")
    source >> left
    source.on(lambda content: content > 0) >> left  # a second edge to left
    source.on(lambda content: content > 0) >> right
    with anyio.fail_after(5):
        async with source.open_actor():
            await source.tell(1)
            await source.tell(0)
    assert [message.payload for message in queued(left)] == [1, 0, None]  # each target once
    assert [message.payload for message in queued(right)] == [1, None]
    for node in (left, right):
        *data, last = queued(node)
        assert last.is_shutdown
        assert not any(message.is_shutdown for message in data)


async def test_stop_ends_the_actor_after_the_message_in_hand_and_passes_the_shutdown_on() -> None:
    gated, sink = Gated(id="gated"), Probe(id="sink")
    gated >> sink
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(sink.go)
            async with gated.open_actor() as actor:
                await gated.tell(1)
                await gated.started[1].wait()
                await gated.tell(2)
                actor.stop()
                gated.gates[1].set()
    assert sink.items == [2]  # 1 doubled; and sink ended: the shutdown was passed on
    assert [message.payload for message in queued(gated)] == [2]


async def test_process_calling_stop_graph_ends_the_actor() -> None:
    class Once(Node):
        def process(self, context: ExecutionContext) -> Any:
            context.stop_graph("one is enough")
            return "kept"

    once = Once()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(once.go)
            await once.tell(1)
            await once.tell(2)
    assert once.last_output == "kept"
    assert [message.payload for message in queued(once)] == [2]


async def test_process_calling_cancel_graph_ends_the_actor_with_graph_cancelled() -> None:
    class Cancel(Node):
        def process(self, context: ExecutionContext) -> Any:
            context.cancel_graph("not today")

    async def tell_and_wait(node: Node) -> None:
        async with node.open_actor():
            await node.tell("x")
            await anyio.sleep_forever()  # the actor's end cancels the block

    cancel = Cancel(id="cancel")
    with anyio.fail_after(5), pytest.raises(GraphCancelled, match="not today") as caught:
        await tell_and_wait(cancel)
    assert caught.value.node_id == "cancel"
    assert [message.payload for message in queued(cancel)] == ["x"]  # given back
    assert runtime_of(cancel) is None


async def test_a_node_whose_go_wraps_super_go_runs_as_an_actor_once() -> None:
    entered: list[str] = []

    class Logged(Node):
        async def go(self) -> None:
            entered.append("go")
            await super().go()

    logged, sink = Logged(id="logged"), Probe(id="sink")
    logged >> sink
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(logged.go)
            await logged.tell("told")
            await logged.mailbox.send(shutdown())
        assert entered == ["go"]  # once: its loop is the actor's
        async with logged.open_actor():  # open_actor calls the go() it wraps
            assert await logged.ask("asked") == "asked"
    assert entered == ["go", "go"]
    assert [message.payload for message in queued(sink)] == ["told", None, "asked", None]


# -- one place at a time ----------------------------------------------------------------


async def test_a_node_running_as_an_actor_cannot_join_a_graph_run_meanwhile() -> None:
    double = Double(id="double")
    with anyio.fail_after(5):
        async with double.open_actor():
            with pytest.raises(WiringError, match="already running"):
                await Graph(start=double).run(Task([1]))
            with pytest.raises(WiringError, match="already running as an actor"):
                async with double.open_actor():
                    pass  # pragma: no cover
            assert await double.ask(1) == 2  # still the same actor


async def test_a_node_running_in_a_graph_cannot_start_as_an_actor() -> None:
    double = Double(id="double")
    graph = Graph(start=double)
    with anyio.fail_after(5):
        async with graph.open_run(Task(type=TaskType.LONG_RUNNING)):
            with pytest.raises(WiringError, match="already running in <Graph"):
                async with double.open_actor():
                    pass  # pragma: no cover


# -- hooks and supervision ----------------------------------------------------------------


class Hooked(Node):
    """Records its hooks and messages in order."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls: list[str] = []

    async def on_start(self) -> None:
        self.calls.append("on_start")

    def process(self, context: ExecutionContext) -> Any:
        self.calls.append(f"process {context.inputs.content}")
        return context.inputs.content

    async def on_drained(self) -> Any:
        self.calls.append("on_drained")
        return "flushed"

    async def on_stop(self) -> None:
        self.calls.append("on_stop")

    async def on_failure(self, error: BaseException) -> None:
        self.calls.append(f"on_failure {error}")


async def test_hooks_run_in_order_and_on_drained_outputs_go_before_the_shutdown() -> None:
    hooked, sink = Hooked(id="hooked"), Probe(id="sink")
    hooked >> sink
    await hooked.tell("early")
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(sink.go)
            async with hooked.open_actor():
                await hooked.tell("late")
    assert hooked.calls == ["on_start", "process early", "process late", "on_drained", "on_stop"]
    assert sink.items == ["early", "late", "flushed"]


async def test_on_stop_runs_when_the_block_raises_and_the_actor_is_cancelled() -> None:
    hooked = Hooked(id="hooked")
    with anyio.fail_after(5), pytest.raises(KeyError):
        async with hooked.open_actor():
            raise KeyError("body")
    assert hooked.calls == ["on_start", "on_stop"]
    assert runtime_of(hooked) is None


async def test_a_failing_on_start_starts_nothing() -> None:
    class Refuses(Node):
        async def on_start(self) -> None:
            raise OSError("no database")

    refuses = Refuses()
    with anyio.fail_after(5), pytest.raises(OSError, match="no database"):
        async with refuses.open_actor():
            pass  # pragma: no cover
    assert runtime_of(refuses) is None


class Flaky(InMemoryChannel):
    """A mailbox whose ``take_nowait`` raises the first ``crashes`` times."""

    def __init__(self, crashes: int) -> None:
        super().__init__(name="flaky")
        self.crashes = crashes

    def take_nowait(self, limit: int) -> list[ChannelMessage]:
        if self.crashes:
            self.crashes -= 1
            raise OSError("mailbox broke")
        return super().take_nowait(limit)


async def test_a_crashed_loop_calls_on_failure_and_is_restarted() -> None:
    restart = RestartPolicy(max_restarts=2, initial_delay=0)
    hooked = Hooked(id="hooked", mailbox=Flaky(crashes=2), config=NodeConfig(restart=restart))
    await hooked.tell("kept")
    with anyio.fail_after(5):
        async with hooked.open_actor() as actor:
            assert await hooked.ask("asked") == "asked"
    assert hooked.calls[:4] == [
        "on_start",
        "on_failure mailbox broke",
        "on_failure mailbox broke",
        "process kept",
    ]
    assert actor.statistics().restarts == 2


async def test_a_loop_crashing_past_its_restart_policy_ends_the_actor_with_graph_failed() -> None:
    restart = RestartPolicy(max_restarts=1, initial_delay=0)
    hooked = Hooked(id="hooked", mailbox=Flaky(crashes=2), config=NodeConfig(restart=restart))
    sink = Probe()
    hooked >> sink
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(sink.go)
            with pytest.raises(GraphFailed, match="crashed more often") as caught:
                await hooked.go()
    assert isinstance(caught.value.__cause__, OSError)
    assert caught.value.node_id == "hooked"
    assert hooked.calls == [
        "on_start",
        "on_failure mailbox broke",
        "on_failure mailbox broke",
        "on_stop",
    ]
    assert runtime_of(hooked) is None  # and sink ended: the shutdown was passed on
