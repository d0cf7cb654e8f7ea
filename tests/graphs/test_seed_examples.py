"""The seed reference's node examples (Mailbox Pattern, Long-Running Mode, Graceful Shutdown).

Imports read ``from spark_nodes import Node, NodeConfig, NodeMessage`` and
``from spark_nodes.graphs import Graph, Task, TaskType, Budget``. The classes are copied as
written; only undefined helpers the doc leaves to the reader are filled in. Spark hangs or
loses messages with several of them; each test bounds the run and checks it ends cleanly.
"""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import uuid4

import anyio
import pytest

from spark_nodes import Node, NodeConfig, NodeMessage, StopReason
from spark_nodes.channels import BaseChannel, ChannelMessage, InMemoryChannel
from spark_nodes.graphs import Budget, Graph, GraphResult, Task, TaskType
from tests.channels.test_seed_examples import SeedRedisChannel

# -- Mailbox Pattern ----------------------------------------------------------------------


class WorkerNode(Node):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)

        # Node automatically has mailbox
        # self.mailbox = InMemoryChannel(name=f'node:{self.id}')
        self.handled: list[Any] = []

    async def go(self) -> None:
        """Continuous worker loop."""
        while not self._stop_flag:
            # Receive from mailbox
            message = await self.mailbox.receive()

            if message.is_shutdown:
                break

            # Process message
            await self.process_message(message)

    async def process_message(self, message: ChannelMessage) -> None:
        """Handle incoming message."""
        payload = message.payload
        self.handled.append(payload)


class CustomMailboxNode(Node):
    def __init__(self, **kwargs: Any) -> None:
        # Custom mailbox with size limit
        custom_mailbox = InMemoryChannel(name=f"custom-{uuid4().hex}", maxsize=50)

        super().__init__(mailbox=custom_mailbox, **kwargs)


# -- Long-Running Mode Usage ----------------------------------------------------------------


class ContinuousWorker(Node):
    """Node that runs continuously processing messages."""

    def __init__(self, **kwargs: Any) -> None:
        config = NodeConfig(live=True)  # Enable continuous mode
        super().__init__(config=config, **kwargs)

    async def go(self) -> None:
        """Main worker loop."""
        print(f"Worker {self.id} starting")

        while not self._stop_flag:
            try:
                # Wait for message from mailbox
                message = await self.mailbox.receive()

                # Check for shutdown signal
                if message.is_shutdown:
                    print(f"Worker {self.id} shutting down")
                    break

                # Process message
                result = await self.process_payload(message.payload)

                # Send to next node(s)
                next_nodes = self.get_next_nodes()
                for next_node in next_nodes:
                    await next_node.mailbox.send(ChannelMessage(payload=result))

                # Acknowledge processing
                if message.ack:
                    await message.ack()

            except Exception as e:
                print(f"Worker {self.id} error: {e}")

        print(f"Worker {self.id} stopped")

    async def process_payload(self, payload: Any) -> Any:
        """Process message payload."""
        # Implementation
        return {"processed": payload}


# -- Graceful Shutdown --------------------------------------------------------------------------


class ShutdownAwareWorker(Node):
    """Worker with graceful shutdown handling."""

    def __init__(self, **kwargs: Any) -> None:
        config = NodeConfig(live=True)
        super().__init__(config=config, **kwargs)
        self.in_flight = 0

    async def go(self) -> None:
        """Worker loop with graceful shutdown."""
        while True:
            message = await self.mailbox.receive()

            if message.is_shutdown:
                # Wait for in-flight work to complete
                while self.in_flight > 0:  # noqa: ASYNC110 - the seed example, as written
                    await asyncio.sleep(0.1)

                # Propagate shutdown to next nodes
                for next_node in self.get_next_nodes():
                    await next_node.mailbox.send(ChannelMessage(payload=None, is_shutdown=True))

                break

            # Track in-flight work
            self.in_flight += 1

            try:
                result = await self.process_payload(message.payload)

                for next_node in self.get_next_nodes():
                    await next_node.mailbox.send(ChannelMessage(payload=result))

            finally:
                self.in_flight -= 1

    # The doc calls process_payload without defining it on this class.
    async def process_payload(self, payload: Any) -> Any:
        return {"handled": payload}


# -- Using Custom Channel -----------------------------------------------------------------------


def seed_redis_worker_class(redis_channel: BaseChannel) -> type[Node]:
    class RedisWorker(Node):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(mailbox=redis_channel, **kwargs)

        async def go(self) -> None:
            while not self._stop_flag:
                message = await self.mailbox.receive()
                # Process...
                del message

    return RedisWorker


# -- the tests ------------------------------------------------------------------------------------


def tail_reached(node: Node) -> anyio.Event:
    """An event set when ``node`` takes a data message from its mailbox."""
    reached = anyio.Event()

    def observe(message: ChannelMessage, channel: BaseChannel, phase: str) -> None:
        if phase == "receive" and not message.is_shutdown:
            reached.set()

    node.mailbox.add_observer(observe)
    return reached


async def run_until_tail(graph: Graph, task: Task, tail: Node) -> GraphResult:
    reached = tail_reached(tail)
    with anyio.fail_after(10):
        async with graph.open_run(task) as run:
            await reached.wait()
    assert run.result is not None  # leaving the block shut the graph down
    return run.result


@pytest.mark.anyio
async def test_worker_node_with_message_routing() -> None:
    node_b = WorkerNode(id="node_b")
    graph = Graph(start=node_b)
    data = [1, 2, 3]

    with anyio.fail_after(10):
        async with graph.open_run(Task(type=TaskType.LONG_RUNNING)) as run:
            # Node A sends to Node B's mailbox
            await node_b.mailbox.send(ChannelMessage(payload={"task": "process", "data": data}))
    assert node_b.handled == [{"task": "process", "data": [1, 2, 3]}]
    assert run.result is not None
    assert run.result.stop_reason is StopReason.SHUTDOWN


def test_custom_mailbox_configuration() -> None:
    node = CustomMailboxNode()
    assert node.mailbox.name.startswith("custom-")
    assert isinstance(node.mailbox, InMemoryChannel)
    assert node.mailbox.maxsize == 50


@pytest.mark.anyio
async def test_graph_with_long_running_nodes(capsys: pytest.CaptureFixture[str]) -> None:
    # Create worker nodes
    worker1 = ContinuousWorker()
    worker2 = ContinuousWorker()
    worker3 = ContinuousWorker()

    # Connect into pipeline
    worker1 >> worker2 >> worker3

    # Create graph
    graph = Graph(start=worker1)

    # Run in long-running mode
    task = Task(
        inputs=NodeMessage(content={"data": "initial"}),
        type=TaskType.LONG_RUNNING,
        budget=Budget(max_seconds=60),
    )

    # (the doc awaits graph.run(task) for up to 60 s; we shut down once the tail has it)
    result = await run_until_tail(graph, task, worker3)

    assert result.stop_reason is StopReason.SHUTDOWN
    assert result.duration < 10
    lines = capsys.readouterr().out.splitlines()
    for worker in (worker1, worker2, worker3):
        assert f"Worker {worker.id} starting" in lines
        assert f"Worker {worker.id} shutting down" in lines
        assert f"Worker {worker.id} stopped" in lines
    # Spark never delivers the head's shutdown to the tail; here it reaches every worker.
    assert not any("error" in line for line in lines)


@pytest.mark.anyio
async def test_continuous_workers_stop_promptly_when_the_budget_ends(
    capsys: pytest.CaptureFixture[str],
) -> None:
    worker1, worker2 = ContinuousWorker(), ContinuousWorker()
    worker1 >> worker2
    budget = Budget(max_seconds=0.1, grace_period=30)
    with anyio.fail_after(10):
        result = await Graph(start=worker1).run(Task(type=TaskType.LONG_RUNNING, budget=budget))
    assert result.stop_reason is StopReason.BUDGET
    assert not result.cancelled  # woken and stopped, not cancelled after the grace period
    lines = capsys.readouterr().out.splitlines()
    assert lines.count(f"Worker {worker1.id} stopped") == 1
    assert not any("error" in line for line in lines)  # no spinning on a closed channel


@pytest.mark.anyio
async def test_shutdown_aware_workers_drain_and_stop() -> None:
    first, second, third = ShutdownAwareWorker(), ShutdownAwareWorker(), ShutdownAwareWorker()
    first >> second >> third
    graph = Graph(start=first)
    result = await run_until_tail(graph, Task(inputs="job", type=TaskType.LONG_RUNNING), third)
    assert result.stop_reason is StopReason.SHUTDOWN
    for worker in (first, second, third):
        assert worker.mailbox.empty()  # the graph's own shutdown copies were cleared


@pytest.mark.anyio
async def test_shutdown_aware_workers_stop_on_a_budget() -> None:
    first, second = ShutdownAwareWorker(), ShutdownAwareWorker()
    first >> second
    budget = Budget(max_seconds=0.1, grace_period=30)
    with anyio.fail_after(10):
        result = await Graph(start=first).run(Task(type=TaskType.LONG_RUNNING, budget=budget))
    assert result.stop_reason is StopReason.BUDGET
    assert not result.cancelled


def test_a_custom_channel_mailbox_is_kept() -> None:
    redis_channel = SeedRedisChannel(redis_url="redis://localhost:6379", channel_name="spark")
    worker_class = seed_redis_worker_class(redis_channel)
    worker = worker_class()
    assert worker.mailbox is redis_channel
