"""Durable steps on Redis: a step's result outlives the worker that ran it.

Each "process" is a graph object of its own, sharing nothing but Redis (see
``test_redis_graphs.py``); a worker SIGKILLed mid-stream is in ``test_redis_crashes.py``.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from spark_nodes import ExecutionContext, Graph, Node, NodeConfig, NonRetriableError, RetryPolicy
from spark_nodes._redis_client import RedisClient
from spark_nodes.channels import RedisChannel, dead_letters, replay_dead_letter
from spark_nodes.errors import BackendUnavailable
from spark_nodes.nodes.steps import STEP_RETENTION
from tests.redis_support import Cluster

pytestmark = [pytest.mark.anyio, pytest.mark.redis]  # redis-py: asyncio only

WAIT = 30


class Charges:
    """The charges made in this test process, and an event per count reached."""

    def __init__(self) -> None:
        self.made: list[Any] = []
        self.first = anyio.Event()

    def charge(self, order: Any) -> dict[str, Any]:
        self.made.append(order)
        self.first.set()
        return {"receipt": f"r-{order}"}


def shop(charges: Charges, hang: anyio.Event | None = None) -> Graph:
    """``pay >> sink``. ``pay`` charges in a step; while ``hang`` is unset, it then hangs on
    a first delivery (a worker that dies after the charge and before its commit)."""

    class Pay(Node):
        async def process(self, context: ExecutionContext) -> Any:
            order = context.inputs.content
            receipt = await context.step("charge", charges.charge, order)
            if order == "refused":
                raise NonRetriableError("the warehouse refused it")
            assert context.message is not None
            if hang is not None and context.message.metadata["delivery_count"] == 1:
                await hang.wait()
            return {"order": order, **receipt}

    class Sink(Node):
        async def process(self, context: ExecutionContext) -> None:
            await context.graph_state.append("shipped", context.inputs.content)

    pay = Pay(id="pay", config=NodeConfig(retry=RetryPolicy(max_attempts=3, initial_delay=0)))
    pay >> Sink(id="sink")
    return Graph(pay, name="shop")


async def serve_orders(cluster: Cluster, charges: Charges, *orders: str) -> None:
    """Send ``orders`` to a graph served by another "process", then shut it down."""
    worker, client = cluster.process(lambda: shop(charges)), cluster.process(lambda: shop(charges))
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(worker.serve)
            for order in orders:
                await client.send("pay", order)
            await client.shutdown()  # after the orders: each is settled before it


async def step_keys(raw: RedisClient, namespace: str) -> list[str]:
    keys = [key async for key in raw.scan_iter(match=f"{namespace}:{{shop}}#steps:*")]
    return sorted(key.decode() for key in keys)


async def test_a_step_does_not_run_again_when_its_message_is_delivered_again(
    cluster: Cluster, raw: RedisClient
) -> None:
    charges = Charges()
    never = anyio.Event()
    dying = cluster.process(lambda: shop(charges, never), visibility_timeout=1.0)
    taking_over = cluster.process(lambda: shop(charges), visibility_timeout=1.0)
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(partial(dying.serve, grace_period=0.1))
            await dying.send("pay", "book")
            await charges.first.wait()  # charged, then stuck before its commit
            dying.stop("leaving")  # past the grace period: given back, not committed
        assert await step_keys(raw, cluster.namespace) != []  # the charge is stored
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(taking_over.serve)
            while not await taking_over.state.get("shipped"):  # noqa: ASYNC110 - another graph
                await anyio.sleep(0.02)
            await taking_over.shutdown()
    assert charges.made == ["book"]  # once, though "pay" handled the message twice
    assert await taking_over.state.get("shipped") == [{"order": "book", "receipt": "r-book"}]
    assert await step_keys(raw, cluster.namespace) == []  # committed: the steps are deleted


async def test_committed_messages_leave_no_steps_and_a_dead_letter_keeps_its_own(
    cluster: Cluster, raw: RedisClient
) -> None:
    charges = Charges()
    await serve_orders(cluster, charges, "a", "refused", "b")
    assert sorted(charges.made) == ["a", "b", "refused"]
    keys = await step_keys(raw, cluster.namespace)
    (kept,) = keys  # the dead letter's: a replay of it does not charge again
    assert kept.startswith(f"{cluster.namespace}:{{shop}}#steps:pay:")
    assert 0 < await raw.pttl(kept) <= STEP_RETENTION * 1000
    assert await raw.hkeys(kept) == [b"charge"]


async def test_a_replayed_dead_letter_does_not_repeat_its_steps(
    cluster: Cluster, raw: RedisClient
) -> None:
    charges = Charges()
    await serve_orders(cluster, charges, "refused")
    assert charges.made == ["refused"]
    (kept,) = await step_keys(raw, cluster.namespace)
    # The same message again (what dlq replay does): the stored charge is used.
    again = cluster.process(lambda: shop(charges))
    mailbox = again.nodes["pay"].mailbox
    assert isinstance(mailbox, RedisChannel)
    (letter,) = await dead_letters(raw, mailbox.key)
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(again.serve)
            await replay_dead_letter(raw, mailbox.key, letter.id)
            # Handled (and dead-lettered again) by this run: then shut it down.
            while not await dead_letters(raw, mailbox.key):  # noqa: ASYNC110 - in Redis
                await anyio.sleep(0.02)
            await again.shutdown()
    assert charges.made == ["refused"]  # dead-lettered again, and not charged again
    assert await step_keys(raw, cluster.namespace) == [kept]


async def test_a_message_given_back_after_an_outage_does_not_repeat_its_steps(
    cluster: Cluster,
) -> None:
    """Redis gone mid-``process`` after a step: the message goes back to the mailbox as it
    was (a first delivery still); handled again, it reads the stored step."""
    charges = Charges()
    outages: list[int] = []

    class Pay(Node):
        async def process(self, context: ExecutionContext) -> Any:
            receipt = await context.step("charge", charges.charge, context.inputs.content)
            if not outages:
                outages.append(1)
                raise BackendUnavailable("Redis could not be reached (simulated)")
            return receipt

    class Sink(Node):
        async def process(self, context: ExecutionContext) -> None:
            await context.graph_state.append("shipped", context.inputs.content)

    def build() -> Graph:
        pay = Pay(id="pay")
        pay >> Sink(id="sink")
        return Graph(pay, name="shop")

    worker, client = cluster.process(build), cluster.process(build)
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(worker.serve)
            await client.send("pay", "lamp")
            await client.shutdown()
    assert outages == [1]
    assert charges.made == ["lamp"]
    assert await client.state.get("shipped") == [{"receipt": "r-lamp"}]


async def test_concurrent_steps_of_a_redelivered_message_read_their_results_once(
    cluster: Cluster,
) -> None:
    calls: list[str] = []
    charged = anyio.Event()

    async def effect(name: str) -> str:
        calls.append(name)
        await anyio.lowlevel.checkpoint()
        return name.upper()

    class Both(Node):
        async def process(self, context: ExecutionContext) -> Any:
            results: dict[str, Any] = {}

            async def run(name: str) -> None:
                results[name] = await context.step(name, effect, name)

            async with anyio.create_task_group() as tasks:  # two steps at once
                tasks.start_soon(run, "charge")
                tasks.start_soon(run, "email")
            assert context.message is not None
            if context.message.metadata["delivery_count"] == 1:
                charged.set()
                await anyio.sleep_forever()  # stopped here: given back, not committed
            await context.graph_state.set("done", results)

    def build() -> Graph:
        return Graph(Both(id="both"), name="shop")

    first = cluster.process(build, visibility_timeout=1.0)
    second = cluster.process(build, visibility_timeout=1.0)
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(partial(first.serve, grace_period=0.1))
            await first.send("both", None)
            await charged.wait()
            first.stop("leaving")
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(second.serve)
            while not await second.state.get("done"):  # noqa: ASYNC110 - another graph
                await anyio.sleep(0.02)
            await second.shutdown()
    assert sorted(calls) == ["charge", "email"]  # each once, over two deliveries
    assert await second.state.get("done") == {"charge": "CHARGE", "email": "EMAIL"}
