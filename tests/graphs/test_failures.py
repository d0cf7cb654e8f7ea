"""Failures: retries, dead letters, acks, stopping on error, supervision of crashed loops."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from spark_nodes import (
    Budget,
    ExecutionContext,
    Graph,
    GraphFailed,
    MessagesDeadLettered,
    Node,
    NodeConfig,
    OnError,
    RestartPolicy,
    RetryPolicy,
    StopReason,
    Task,
    TaskType,
)
from spark_nodes.channels import ChannelMessage, InMemoryChannel
from spark_nodes.testing import Probe
from tests.graph_support import Collect

pytestmark = pytest.mark.anyio

LONG = TaskType.LONG_RUNNING
FAST_RETRY = RetryPolicy(max_attempts=3, initial_delay=0.001, jitter=0.0)


class Flaky(Node):
    """Fails ``failures`` times per message, then passes the input on."""

    def __init__(self, failures: int, error: type[Exception] = RuntimeError, **kw: Any) -> None:
        super().__init__(**kw)
        self.failures = failures
        self.error = error
        self.attempts: list[int] = []

    def process(self, context: ExecutionContext) -> Any:
        self.attempts.append(context.metadata.attempt)
        if context.metadata.attempt <= self.failures:
            raise self.error(f"attempt {context.metadata.attempt} failed")
        return context.inputs.content


async def one_pass(graph: Graph, inputs: Any) -> Any:
    with anyio.fail_after(10):
        return await graph.run(Task(inputs=inputs))


async def test_a_failing_process_is_retried_and_the_attempt_counted() -> None:
    flaky, sink = Flaky(2, id="flaky", config=NodeConfig(retry=FAST_RETRY)), Collect(id="sink")
    flaky >> sink
    result = await one_pass(Graph(start=flaky), "x")
    assert flaky.attempts == [1, 2, 3]
    assert sink.items == ["x"]
    stats = result.node_stats["flaky"]
    assert (stats.failed_attempts, stats.retried, stats.processed) == (2, 2, 1)


async def test_after_the_last_attempt_the_message_is_dead_lettered_and_the_loop_goes_on() -> None:
    acks: list[str] = []

    async def ack() -> None:
        acks.append("acked")

    class PoisonSensitive(Node):
        def process(self, context: ExecutionContext) -> Any:
            if context.inputs.content == "poison":
                raise RuntimeError(f"attempt {context.metadata.attempt} failed")
            return context.inputs.content

    worker = PoisonSensitive(id="worker", config=NodeConfig(retry=FAST_RETRY))
    sink = Probe(id="sink")
    worker >> sink
    graph = Graph(start=worker)
    await worker.mailbox.send(ChannelMessage("poison", {"trace_id": "t-1"}, ack=ack, id="m-1"))
    await worker.mailbox.send(ChannelMessage("healthy"))

    async def drive() -> None:
        await sink.wait_for(1)
        await graph.shutdown()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(drive)
            result = await graph.run(Task(type=LONG))

    assert sink.items == ["healthy"]
    stats = result.node_stats["worker"]
    assert (stats.dead_lettered, stats.failed_attempts, stats.processed) == (1, 3, 1)
    assert result.dead_lettered == 1
    letter = await graph.dead_letters.receive()
    assert letter.payload == "poison"
    assert letter.id == "m-1"
    details = letter.metadata["dead_letter"]
    assert details["node"] == "worker"
    assert details["phase"] == "process"
    assert details["error_type"] == "builtins.RuntimeError"
    assert details["error"] == "attempt 3 failed"
    assert details["attempts"] == 3
    assert "Traceback" in details["traceback"]
    assert "RuntimeError: attempt 3 failed" in details["traceback"]
    assert letter.metadata["trace_id"] == "t-1"
    assert acks == []  # not acked as a success: the dead letter carries the ack
    assert letter.ack is not None
    await letter.ack()
    assert acks == ["acked"]


async def test_errors_not_worth_retrying_are_dead_lettered_at_once() -> None:
    policy = RetryPolicy(max_attempts=5, initial_delay=0.001, give_up_on=(ValueError,))
    flaky = Flaky(1, ValueError, id="flaky", config=NodeConfig(retry=policy))
    result = await one_pass(Graph(start=flaky), "x")
    assert flaky.attempts == [1]
    assert result.dead_lettered == 1


async def test_a_completed_run_with_a_dead_letter_says_it_failed_and_can_raise() -> None:
    flaky, sink = Flaky(9, id="flaky", config=NodeConfig(retry=RetryPolicy(1))), Collect()
    flaky >> sink
    result = await one_pass(Graph(start=flaky), "x")
    assert result.stop_reason is StopReason.COMPLETED  # the run did end as planned ...
    assert not result.ok  # ... but it cannot be mistaken for success
    assert str(result).startswith("FAILED: completed with 1 message dead-lettered; 0 outputs")
    with pytest.raises(MessagesDeadLettered, match="FAILED: completed with 1 message") as caught:
        result.raise_for_dead_letters()
    assert caught.value.count == 1
    assert caught.value.result is result


async def test_a_run_without_failures_is_ok_and_raises_nothing() -> None:
    result = await one_pass(Graph(start=Flaky(0, id="fine")), "x")
    assert result.ok
    assert result.raise_for_dead_letters() is result
    assert str(result).startswith("completed; 1 output in ")


async def test_a_run_stopped_on_an_error_is_not_ok() -> None:
    flaky = Flaky(9, id="flaky", config=NodeConfig(on_error=OnError.STOP_GRAPH))
    with anyio.fail_after(10):
        result = await Graph(start=flaky).run(Task(inputs="x", type=LONG))
    assert not result.ok
    assert str(result).startswith("FAILED: error (flaky: builtins.RuntimeError: attempt 1")
    with pytest.raises(MessagesDeadLettered):
        result.raise_for_dead_letters()


async def test_on_error_stop_graph_ends_the_run() -> None:
    flaky = Flaky(9, id="flaky", config=NodeConfig(on_error=OnError.STOP_GRAPH))
    with anyio.fail_after(10):
        result = await Graph(start=flaky).run(Task(inputs="x", type=LONG))
    assert result.stop_reason is StopReason.ERROR
    assert "flaky: builtins.RuntimeError: attempt 1 failed" in result.detail
    assert result.dead_lettered == 1


async def test_ack_comes_only_after_the_outputs_were_forwarded() -> None:
    order: list[str] = []

    def on_mailbox(message: ChannelMessage, channel: Any, phase: str) -> None:
        if phase == "send" and not message.is_shutdown:
            order.append(f"forwarded to {channel.name}")

    async def ack() -> None:
        order.append("acked")

    a = Node(id="a")
    b = Node(id="b", mailbox=InMemoryChannel(name="b", observers=[on_mailbox]))
    c = Node(id="c", mailbox=InMemoryChannel(name="c", observers=[on_mailbox]))
    a >> [b, c]
    await a.mailbox.send(ChannelMessage("x", ack=ack))
    with anyio.fail_after(10):
        await Graph(start=a).run(Task(type=LONG, idle_timeout=0.05))
    assert order == ["forwarded to b", "forwarded to c", "acked"]


async def test_a_message_whose_forward_fails_is_dead_lettered_not_acked() -> None:
    acks: list[str] = []

    async def ack() -> None:
        acks.append("acked")

    closed = InMemoryChannel(name="closed-box")
    a, b = Node(id="a"), Node(id="b", mailbox=_Dedicated(name="b-box"))
    c = Node(id="c", mailbox=closed)
    a >> [b, c]
    closed.close()
    graph = Graph(start=a)
    await a.mailbox.send(ChannelMessage("x", ack=ack))
    with anyio.fail_after(10):
        result = await graph.run(Task(type=LONG, idle_timeout=0.05))
    assert acks == []
    assert result.node_stats["a"].dead_lettered == 1
    letter = await graph.dead_letters.receive()
    assert letter.metadata["dead_letter"]["phase"] == "forward"
    assert letter.metadata["dead_letter"]["error_type"] == "spark_nodes.errors.ChannelClosed"
    assert letter.ack is not None


class _Dedicated(InMemoryChannel):
    __slots__ = ()


async def test_a_condition_that_raises_dead_letters_the_message() -> None:
    def broken(out: Any) -> bool:
        raise KeyError("score")

    a, b = Node(id="a"), Collect(id="b")
    a.on(broken) >> b
    graph = Graph(start=a)
    result = await one_pass(graph, {"no": "score"})
    assert result.stop_reason is StopReason.COMPLETED
    letter = await graph.dead_letters.receive()
    assert letter.metadata["dead_letter"]["phase"] == "route"
    assert letter.metadata["dead_letter"]["error_type"] == "builtins.KeyError"
    assert b.items == []


async def test_a_crashed_custom_loop_is_restarted() -> None:
    class CrashOnce(Node):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.starts = 0

        async def go(self) -> None:
            self.starts += 1
            if self.starts == 1:
                raise RuntimeError("first start fails")
            restarted.set()
            while True:
                message = await self.mailbox.receive()
                if message.is_shutdown:
                    return

    restarted = anyio.Event()
    node = CrashOnce(id="crash", config=NodeConfig(restart=RestartPolicy(initial_delay=0)))
    graph = Graph(start=node)

    async def drive() -> None:
        await restarted.wait()
        await graph.shutdown()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(drive)
            result = await graph.run(Task(type=LONG))
    assert node.starts == 2
    assert result.node_stats["crash"].restarts == 1
    assert result.stop_reason is StopReason.SHUTDOWN


async def test_crashing_past_the_restart_limit_fails_the_run_loudly() -> None:
    class AlwaysCrash(Node):
        async def go(self) -> None:
            raise ConnectionError("backend gone")

    policy = RestartPolicy(max_restarts=2, within_seconds=60, initial_delay=0)
    crash = AlwaysCrash(id="crash", config=NodeConfig(restart=policy))
    healthy_seen: list[Any] = []

    class Healthy(Node):
        async def process(self, context: ExecutionContext) -> None:
            healthy_seen.append(context.inputs.content)

    healthy = Healthy(id="healthy")
    graph = Graph(crash, healthy)
    await healthy.mailbox.send(ChannelMessage("work"))
    with anyio.fail_after(10), pytest.raises(GraphFailed) as caught:
        await graph.run(Task(type=LONG, budget=Budget(grace_period=1)))
    error = caught.value
    assert error.node_id == "crash"
    assert isinstance(error.__cause__, ConnectionError)
    assert "crashed more often than its restart policy allows" in str(error)
    assert error.result is not None
    assert error.result.node_stats["crash"].restarts == 2
    assert error.result.stop_reason is StopReason.ERROR


async def test_restarts_are_counted_within_the_window_only() -> None:
    class CrashTwice(Node):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.starts = 0

        async def go(self) -> None:
            self.starts += 1
            if self.starts <= 3:
                await anyio.sleep(0.03)
                raise RuntimeError("crash")

    policy = RestartPolicy(max_restarts=1, within_seconds=0.02, initial_delay=0)
    node = CrashTwice(id="n", config=NodeConfig(restart=policy))
    with anyio.fail_after(10):
        result = await Graph(start=node).run(Task(type=LONG))
    assert node.starts == 4
    assert result.node_stats["n"].restarts == 3
    assert result.stop_reason is StopReason.FINISHED
