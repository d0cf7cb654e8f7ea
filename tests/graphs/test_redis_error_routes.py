"""Error routes on Redis: the routed message and the original's ack are one commit.

Each "process" is a graph object of its own, sharing nothing but Redis (see
``test_redis_graphs.py``); the in-memory behaviour is in ``test_error_routes.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
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
from spark_nodes.graphs import GraphStats, _redis_stats
from spark_nodes.testing import RedisServer
from tests.graphs.test_redis_crashes import (
    Workers,
    client_graph,
    dead_letter_count,
    pending_entries,
    poll_until,
    supervised,
    wait_ready,
)
from tests.redis_support import Cluster, purge

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
    ends: list[str | None] = []
    dying.observe(lambda event: ends.append(event.outcome), node="pay")
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(partial(dying.serve, grace_period=0.1))
            await dying.send("pay", "refused bowl")
            await stuck.wait()
            dying.stop("leaving")  # past the grace period: cancelled, nothing committed
        assert await client_refused(dying) is None  # the handler got nothing
        # Observers heard the call end as one to be tried again, not as routed.
        assert [outcome for outcome in ends if outcome is not None] == ["retry"]
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


async def test_stats_and_inspect_count_what_a_node_routed_over_every_worker_and_run(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_redis_stats, "PUBLISH_INTERVAL", 0.05)  # figures within 50 ms
    first, second, reader = (cluster.process(shop) for _ in range(3))

    def routed(count: int) -> Callable[[GraphStats], bool]:
        return lambda stats: (
            stats.nodes["pay"].error_routed == count and stats.nodes["refuse"].processed == count
        )

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(first.serve)
            for order in ("book", "refused lamp", "refused cup"):
                await reader.send("pay", order)
            live = await stats_when(reader, routed(2))  # published while it runs
            first.stop()
        async with anyio.create_task_group() as tasks:  # another run, another process
            tasks.start_soon(second.serve)
            await reader.send("pay", "refused vase")
            await reader.shutdown()
        ended = await reader.stats()
        inspection = await reader.inspect()
    assert live.running
    pay = ended.nodes["pay"]
    assert (pay.error_routed, pay.dead_lettered, pay.processed) == (3, 0, 1)  # both runs
    assert ended.nodes["refuse"].error_routed == 0
    assert ended.edges["pay-!>refuse"].sent == 3
    assert inspection.error_routed == {"pay": 3, "ship": 0, "refuse": 0}


async def stats_when(graph: Graph, condition: Callable[[GraphStats], bool]) -> GraphStats:
    """Read ``graph.stats()`` until ``condition`` holds (another process's figures)."""
    while not condition(stats := await graph.stats()):  # noqa: ASYNC110 - in Redis
        await anyio.sleep(0.02)
    return stats


async def test_a_worker_killed_in_the_routes_commit_routes_each_message_once_or_leaves_it_pending(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """A real worker process of ``pay`` is SIGKILLed twice while it routes a refused order:
    once before the commit (the order stays pending, and the restarted worker routes it
    when it reclaims it), once after (routed and acked: nothing to do again). The error
    handler, served apart, gets each order exactly once; nothing is left or dead-lettered.
    (Its graph is ``refusing_pipeline`` in ``redis_worker_graphs.py``.)"""
    with supervised(redis_server.url, "refusing_pipeline", tmp_path) as workers:
        workers.start("pay")
        workers.start("refuse")
        async with client_graph("refusing_pipeline", redis_server.url, workers.namespace) as graph:
            try:
                with anyio.fail_after(60):
                    await wait_ready(workers)
                    before = await kill_in_the_route_commit(workers, graph, "hang before")
                    assert before == ([], 1)  # nothing routed, still pending: not lost
                    await poll_until(lambda: refused_count(graph, 1))  # reclaimed, routed
                    after = await kill_in_the_route_commit(workers, graph, "hang after")
                    assert after == 0  # routed and acked in one commit: nothing pending
                    await poll_until(lambda: refused_count(graph, 2))
                    await graph.shutdown()
                    codes = workers.exit_codes(within=30)
            except BaseException:
                print(workers.log())
                raise
            refused = await graph.state.get("refused")
            deliveries = await graph.state.get("deliveries:pay")
            left = await pending_entries(graph), await dead_letter_count(graph)
            await purge(graph.redis, workers.namespace)
    assert [item["order"] for item in refused] == ["hang before", "hang after"]  # once each
    assert len({item["message_id"] for item in refused}) == 2
    assert deliveries == ["hang before", "hang before", "hang after"]  # after: not again
    assert left == (0, 0)
    assert codes == [0, 0]


async def kill_in_the_route_commit(workers: Workers, graph: Graph, order: str) -> Any:
    """Send ``order`` to pay; SIGKILL pay's worker as its route commit hangs (then restart
    it). Returns what was routed and pay's pending entries at the kill, or (after the
    commit) only the pending entries: the handler may have the order already."""
    log = workers.logs / f"worker-0-{workers.spawns[0]}.log"

    async def hangs() -> bool:
        return log.exists() and f'"where": "{order}"' in log.read_text(errors="replace")

    await graph.send("pay", order)
    await poll_until(hangs)
    workers.kill(0)  # and started again: it reclaims what is pending (1 s lease)
    # Read at once: the new worker, still starting, may reclaim the entry on its first read.
    pay = mailbox(graph, "pay")
    summary: Any = await graph.redis.xpending(pay.key, pay.group)
    refused = await graph.state.get("refused", [])
    await wait_ready(workers)
    if order == "hang after":
        return summary["pending"]
    return refused, summary["pending"]


async def refused_count(graph: Graph, count: int) -> bool:
    return len(await graph.state.get("refused", [])) == count
