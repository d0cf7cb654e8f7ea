"""Error routes on Redis: the routed message and the original's ack are one commit.

Each "process" is a graph object of its own, sharing nothing but Redis (see
``test_redis_graphs.py``); the in-memory behaviour is in ``test_error_routes.py``.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import anyio
import pytest
from redis.asyncio import Redis

from spark_nodes import (
    ExecutionContext,
    FailedMessage,
    Graph,
    GraphResult,
    InvokeFailed,
    Node,
    NonRetriableError,
)
from spark_nodes.channels import RedisChannel, dead_letters
from spark_nodes.channels.mailbox import Commit
from tests.redis_support import Cluster

pytestmark = [pytest.mark.anyio, pytest.mark.redis]  # redis-py: asyncio only

WAIT = 30


class Pay(Node):
    async def process(self, context: ExecutionContext) -> Any:
        order = context.inputs.content
        if order.startswith("refused"):
            raise NonRetriableError(f"the bank refused {order}")
        return order


class Ship(Node):
    async def process(self, context: ExecutionContext) -> Any:
        await context.graph_state.append("shipped", context.inputs.content)
        return {"shipped": context.inputs.content}


class Refuse(Node):
    """The error handler: records what it got, and answers for it."""

    async def process(self, context: ExecutionContext) -> Any:
        failed: FailedMessage = context.inputs.content
        metadata = context.inputs.metadata
        seen = {"order": failed["content"], "why": failed["error"], "edge": metadata["edge"]}
        await context.graph_state.append("refused", seen)
        return {"refused": failed["content"]}


def shop(*, dead_letter: bool = False) -> Graph:
    pay = Pay(id="pay")
    pay >> Ship(id="ship")
    pay.on_error(dead_letter=dead_letter) >> Refuse(id="refuse")
    return Graph(pay, name="shop")


def mailbox(graph: Graph, node_id: str) -> RedisChannel:
    box = graph.nodes[node_id].mailbox
    assert isinstance(box, RedisChannel)
    return box


async def settled_everywhere(graph: Graph, raw: Redis) -> bool:
    """Whether every mailbox of ``graph`` has nothing pending or unread."""
    for node_id in graph.nodes:
        box = mailbox(graph, node_id)
        summary: Any = await raw.xpending(box.key, box.group)
        if summary["pending"] or await raw.xlen(box.key):
            return False
    return True


async def test_a_routed_failure_is_committed_with_the_originals_ack_in_one_call(
    cluster: Cluster, raw: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker, client = cluster.process(shop), cluster.process(shop)
    pay_box = mailbox(worker, "pay")
    commits: list[Commit] = []
    commit = RedisChannel.commit

    async def recording(self: RedisChannel, batch: Commit) -> list[bool]:
        if self is pay_box:
            commits.append(Commit(list(batch.messages), [list(s) for s in batch.sends]))
        return await commit(self, batch)

    monkeypatch.setattr(RedisChannel, "commit", recording)
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(worker.serve)
            await client.send("pay", "book")
            await client.send("pay", "refused lamp")
            await client.shutdown()
    assert await client.state.get("shipped") == ["book"]
    assert await client.state.get("refused") == [
        {"order": "refused lamp", "why": "the bank refused refused lamp", "edge": "pay-!>refuse"}
    ]
    # The failed message and its error message, alone in one commit of pay's mailbox.
    (routed,) = [c for c in commits if [m.payload for m in c.messages] == ["refused lamp"]]
    ((target, output),) = routed.sends[0]
    assert target.name == mailbox(worker, "refuse").name
    assert output.payload["content"] == "refused lamp"
    assert output.payload["error_type"] == "spark_nodes.errors.NonRetriableError"
    assert output.metadata["edge"] == "pay-!>refuse"
    assert await settled_everywhere(client, raw)  # acked, nothing pending
    assert await dead_letters(raw, pay_box.key) == []


async def test_invoke_on_redis_answers_with_what_the_error_handler_produced(
    cluster: Cluster,
) -> None:
    worker, client = cluster.process(shop), cluster.process(shop)
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(worker.serve)
            refused = await client.invoke("refused cup", timeout=WAIT)
            shipped = await client.invoke("plate", timeout=WAIT)
            await client.shutdown()
    assert refused.contents == [{"refused": "refused cup"}]
    assert refused.failures == ()
    assert shipped.contents == [{"shipped": "plate"}]


async def test_dead_letter_true_on_redis_routes_the_message_and_keeps_its_dead_letter(
    cluster: Cluster, raw: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The invoke hears of the failure even when the handler settles its copy before the
    dead letter is written (its record must not be the last word on the trace)."""
    build = partial(shop, dead_letter=True)
    worker, client = cluster.process(build), cluster.process(build)
    results: list[GraphResult] = []
    pay_box, refuse_box = mailbox(worker, "pay"), mailbox(worker, "refuse")
    dead_letter = RedisChannel.dead_letter

    async def after_the_handler(self: RedisChannel, message: Any, **kwargs: Any) -> None:
        if self is pay_box:  # the handler's commit first (the race, made certain)
            while await raw.xlen(refuse_box.key):  # noqa: ASYNC110 - in Redis
                await anyio.sleep(0.01)
        await dead_letter(self, message, **kwargs)

    monkeypatch.setattr(RedisChannel, "dead_letter", after_the_handler)

    async def serve() -> None:
        results.append(await worker.serve())

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(serve)
            with pytest.raises(InvokeFailed) as caught:
                await client.invoke("refused vase", timeout=WAIT)
            await client.shutdown()
    assert caught.value.result.contents == [{"refused": "refused vase"}]
    assert [f.node for f in caught.value.result.failures] == ["pay"]
    (refused,) = await client.state.get("refused")
    assert refused["order"] == "refused vase"
    (letter,) = await dead_letters(raw, mailbox(client, "pay").key)
    assert letter.reason == "process"
    assert letter.error == "the bank refused refused vase"
    assert await settled_everywhere(client, raw)
    (result,) = results
    stats = result.node_stats["pay"]
    assert (stats.error_routed, stats.dead_lettered) == (1, 1)


async def test_a_worker_that_dies_before_the_commit_leaves_the_message_to_be_routed_once(
    cluster: Cluster, raw: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed between deciding the route and committing it: nothing was sent, nothing
    acked; the message is handled again where it is reclaimed, and routed from there."""
    dying = cluster.process(shop, visibility_timeout=1.0)
    taking_over = cluster.process(shop, visibility_timeout=1.0)
    dying_box = mailbox(dying, "pay")
    stuck, never = anyio.Event(), anyio.Event()
    commit = RedisChannel.commit

    async def dies_routing(self: RedisChannel, batch: Commit) -> list[bool]:
        edges = [output.metadata.get("edge") for sends in batch.sends for _, output in sends]
        if self is dying_box and "pay-!>refuse" in edges:
            stuck.set()
            await never.wait()  # as good as dead: this commit never happens
        return await commit(self, batch)

    monkeypatch.setattr(RedisChannel, "commit", dies_routing)
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(partial(dying.serve, grace_period=0.1))
            await dying.send("pay", "refused bowl")
            await stuck.wait()
            dying.stop("leaving")  # past the grace period: cancelled, nothing committed
        assert await client_refused(dying) is None  # the handler got nothing
        summary: Any = await raw.xpending(dying_box.key, dying_box.group)
        assert summary["pending"] == 1  # not acked either: still pay's
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(taking_over.serve)
            while not await taking_over.state.get("refused"):  # noqa: ASYNC110 - in Redis
                await anyio.sleep(0.02)
            await taking_over.shutdown()
    (refused,) = await taking_over.state.get("refused")  # routed once, from the new worker
    assert refused["order"] == "refused bowl"
    assert await settled_everywhere(taking_over, raw)
    assert await dead_letters(raw, dying_box.key) == []


async def client_refused(graph: Graph) -> Any:
    return await graph.state.get("refused")
