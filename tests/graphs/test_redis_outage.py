"""A Redis outage mid-stream: the workers wait for Redis, lose nothing, crash no loop.

Each test runs a private ``redis-server`` (with an append-only file, so that what it held
comes back when it starts again) and stops it while every node has work in its mailbox.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from spark_nodes import ExecutionContext, Graph, Node, StopReason
from spark_nodes.channels import ChannelMessage, ChannelUnavailable, ConnectionRetry, RedisChannel
from spark_nodes.graphs import GraphResult
from spark_nodes.testing import open_redis_server
from tests.redis_support import new_namespace

pytestmark = pytest.mark.anyio

OUTAGE = 12.0
"""Seconds Redis stays down: three times a call's bound (about 4 s), so every loop's calls
give up and wait more than once."""
TOTAL = 300


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # redis-py is asyncio only


class Double(Node):
    def process(self, context: ExecutionContext) -> Any:
        return context.inputs.content * 2


class SlowSink(Node):
    """Records what it gets in the graph state; slow, so the streams have a backlog."""

    async def process(self, context: ExecutionContext) -> None:
        await anyio.sleep(0.005)
        await context.graph_state.append("seen", context.inputs.content)


def pipeline() -> Graph:
    first, second, sink = Double(id="first"), Double(id="second"), SlowSink(id="sink")
    first >> second >> sink
    return Graph(first, name="outage")


async def poll(condition: Callable[[], Any]) -> None:
    """Await ``condition()`` until it is true (the caller bounds the wait)."""
    while not await condition():  # noqa: ASYNC110 - the state is in Redis, written by others
        await anyio.sleep(0.1)


async def test_workers_wait_out_a_redis_outage_and_lose_nothing() -> None:
    namespace = new_namespace()
    results: list[GraphResult] = []
    with open_redis_server(appendonly=True) as server, capture_logs() as logs:
        workers = [pipeline() for _ in range(2)]
        client = pipeline()
        for graph in (*workers, client):
            graph.use_redis(server.url, namespace=namespace)

        async def serve(graph: Graph) -> None:
            results.append(await graph.serve())

        async def seen() -> list[int]:
            got: list[int] = await client.state.get("seen", [])
            return got

        with anyio.fail_after(OUTAGE + 120):
            async with anyio.create_task_group() as tasks:
                for graph in workers:
                    tasks.start_soon(serve, graph)
                for number in range(TOTAL):
                    await client.send("first", number)
                await poll(lambda: _some(seen, 20))  # mid-stream: work in the mailboxes
                server.stop()
                await anyio.sleep(OUTAGE)  # the outage itself: nothing to wait for
                server.start()  # same port and directory: the append-only file comes back
                await poll(lambda: _all(seen, TOTAL))
                await client.shutdown()
            got = await seen()
        for graph in (*workers, client):
            await graph.aclose()
    assert set(got) == {number * 4 for number in range(TOTAL)}  # nothing lost
    assert len(results) == 2
    assert {result.stop_reason for result in results} == {StopReason.SHUTDOWN}
    restarts = {
        node: stats.restarts for result in results for node, stats in result.node_stats.items()
    }
    assert set(restarts.values()) == {0}  # an outage spends no restart
    events = [log["event"] for log in logs]
    assert "worker loop crashed; restarting" not in events
    assert "redis unreachable: the node's loops wait for it" in events
    ended = [log for log in logs if log["event"] == "redis reachable again"]
    assert ended
    # Each loop, lease renewal and publisher logs its own outage: one that first failed
    # just before the server came back saw a short one (0.0 s, to the tenth).
    assert all(log["outage_seconds"] >= 0 for log in ended)
    assert max(log["outage_seconds"] for log in ended) >= OUTAGE / 2


async def _some(seen: Callable[[], Any], count: int) -> bool:
    return len(await seen()) >= count


async def _all(seen: Callable[[], Any], count: int) -> bool:
    return len(set(await seen())) >= count


async def test_a_frozen_server_fails_a_call_within_its_deadline() -> None:
    retry = ConnectionRetry(attempts=3, try_timeout=0.5)
    with open_redis_server(appendonly=False) as server:
        async with RedisChannel(
            redis_url=server.url, channel_name=f"{new_namespace()}-frozen", retry=retry
        ) as channel:
            await channel.send(ChannelMessage(1))  # connected, and answering
            pid = server.pid
            assert pid is not None
            os.kill(pid, signal.SIGSTOP)  # frozen: it accepts nothing, answers nothing
            try:
                started = time.monotonic()
                with anyio.fail_after(30), pytest.raises(ChannelUnavailable):
                    await channel.send(ChannelMessage(2))
                took = time.monotonic() - started
            finally:
                os.kill(pid, signal.SIGCONT)
    assert took <= retry.deadline + 1.0  # not a 10 s socket timeout per try
    assert retry.deadline == pytest.approx((0.05 + 0.1) * 1.5 + 0.5)


async def test_a_worker_started_while_redis_is_down_waits_for_it() -> None:
    namespace = new_namespace()
    results: list[GraphResult] = []
    with open_redis_server(appendonly=True) as server, capture_logs() as logs:
        worker, client = pipeline(), pipeline()
        for graph in (worker, client):
            graph.use_redis(server.url, namespace=namespace)
        server.stop()

        async def serve() -> None:
            results.append(await worker.serve(wait_for_redis=math.inf))

        async def waiting() -> bool:  # (past a call's retries: it waits, and says so)
            return any(log["event"] == "redis unreachable: the node's loops wait for it"
                       for log in logs)  # fmt: skip

        async def seen() -> list[int]:
            got: list[int] = await client.state.get("seen", [])
            return got

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(serve)
                await poll(waiting)
                server.start()
                await client.send("first", 1)
                await poll(lambda: _some(seen, 1))
                await client.shutdown()
            got = await seen()
        for graph in (worker, client):
            await graph.aclose()
    assert got == [4]
    assert [result.stop_reason for result in results] == [StopReason.SHUTDOWN]
    events = [log["event"] for log in logs]
    assert events.count("redis unreachable: the node's loops wait for it") == 1
    assert "redis reachable again" in events


async def test_serve_refuses_a_negative_wait() -> None:
    graph = pipeline()
    graph.use_redis("redis://127.0.0.1:1", namespace=new_namespace())
    with pytest.raises(ValueError, match="wait_for_redis must be >= 0"):
        await graph.serve(wait_for_redis=-1)
    await graph.aclose()
