"""Timers on Redis: scheduled messages wait in Redis; a ticker's ticks come once, from one
process at a time, and survive restarts and SIGKILLs.

Each "process" is a graph object of its own, sharing nothing but Redis (see
``test_redis_graphs.py``); at the end real worker processes serving a ticker are
SIGKILLed (its graph is ``ticker_pipeline`` in ``redis_worker_graphs.py``).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

import anyio
import pytest

from spark_nodes import ExecutionContext, Graph, Node, Ticker
from spark_nodes._redis_client import RedisClient
from spark_nodes.channels import RedisChannel
from spark_nodes.testing import RedisServer
from tests.graphs.test_redis_crashes import client_graph, poll_until, supervised, wait_ready
from tests.redis_support import Cluster

pytestmark = [pytest.mark.anyio, pytest.mark.redis]  # redis-py: asyncio only

WAIT = 30
QUICK = {"visibility_timeout": 1.0}  # a dead process's work (and lease) is taken in 1 s


class Scheduler(Node):
    """Schedules ``{"send": x, "delay": s}`` to the sink; ``hang`` on a first delivery
    hangs after scheduling (the test then cancels the "process", as if it died)."""

    def __init__(self, handled: anyio.Event | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.handled = handled

    async def process(self, context: ExecutionContext) -> None:
        order = context.inputs.content
        await context.schedule(order["send"], delay=order["delay"], to="sink")
        if self.handled is not None:
            self.handled.set()
        assert context.message is not None
        if order.get("hang") and context.message.metadata["delivery_count"] == 1:
            await anyio.sleep_forever()


class Sink(Node):
    """Records what arrives, and when (epoch seconds), in the graph state."""

    async def process(self, context: ExecutionContext) -> None:
        await context.graph_state.append("arrived", [context.inputs.content, time.time()])


def scheduling(handled: anyio.Event | None = None) -> Callable[[], Graph]:
    def build() -> Graph:
        scheduler = Scheduler(handled, id="scheduler")
        scheduler >> Sink(id="sink")
        return Graph(scheduler, name="timers")

    return build


async def test_a_scheduled_message_waits_in_redis_for_a_worker_that_is_not_there_yet(
    cluster: Cluster,
) -> None:
    """Scheduled by one process, which then stops: the message survives in Redis and a
    worker started later delivers it, when it is due."""
    handled = anyio.Event()
    first = cluster.process(scheduling(handled), **QUICK)
    client = cluster.process(scheduling(), **QUICK)
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(first.serve)
            sent = time.time()
            await client.send("scheduler", {"send": "later", "delay": 1.5})
            await handled.wait()
            tasks.cancel_scope.cancel()  # the only worker is gone before the message is due
        assert await client.state.get("arrived", []) == []
        second = cluster.process(scheduling(), **QUICK)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(second.serve)

            async def arrived() -> bool:
                return bool(await client.state.get("arrived", []))

            await poll_until(arrived)
            await client.shutdown()
    ((content, at),) = await client.state.get("arrived")
    assert content == "later"
    assert at - sent >= 1.5


async def test_a_redelivered_message_does_not_schedule_twice(cluster: Cluster) -> None:
    """The worker dies after scheduling and before its commit: the next worker handles the
    message again and schedules again, with the same idempotency key: one arrives."""
    handled = anyio.Event()
    dying = cluster.process(scheduling(handled), **QUICK)
    client = cluster.process(scheduling(), **QUICK)
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(dying.serve)
            await client.send("scheduler", {"send": "once", "delay": 0.2, "hang": True})
            await handled.wait()
            tasks.cancel_scope.cancel()
        survivor = cluster.process(scheduling(), **QUICK)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(survivor.serve)

            async def arrived() -> bool:
                return bool(await client.state.get("arrived", []))

            await poll_until(arrived)
            await client.wait_idle()  # nothing unread, pending or delayed anywhere
            await client.shutdown()
    assert [content for content, _ in await client.state.get("arrived")] == ["once"]


def ticking(every: float = 0.2, **options: Any) -> Callable[[], Graph]:
    """``tick >> record``: the recorder keeps each tick's time and message id."""

    class Record(Node):
        async def process(self, context: ExecutionContext) -> None:
            tick = context.inputs.content
            await context.graph_state.append("ticks", [tick["at"], tick["missed"]])

    def build() -> Graph:
        tick = Ticker(every=every, id="tick", **options)
        tick >> Record(id="record")
        return Graph(tick, name="ticks")

    return build


async def ticks_of(graph: Graph) -> list[list[Any]]:
    ticks: list[list[Any]] = await graph.state.get("ticks", [])
    return ticks


async def test_two_processes_serving_a_ticker_send_each_tick_once(cluster: Cluster) -> None:
    build = ticking(catch_up="all")
    one, two, client = (cluster.process(build, **QUICK) for _ in range(3))
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(one.serve)
            tasks.start_soon(two.serve)

            async def enough() -> bool:
                return len(await ticks_of(client)) >= 10

            await poll_until(enough)
            await client.shutdown()
    times = [at for at, _ in await ticks_of(client)]
    assert len(times) == len(set(times))
    assert times == sorted(times)
    assert all(b - a == pytest.approx(0.2, abs=1e-6) for a, b in pairwise(times))


async def test_a_process_takes_the_ticker_over_when_its_leader_dies(cluster: Cluster) -> None:
    """The leader is cancelled (as if killed): the other process takes the lease within the
    visibility timeout and catches up every tick missed meanwhile ("all"), none twice."""
    build = ticking(catch_up="all")
    leader, client = cluster.process(build, **QUICK), cluster.process(build, **QUICK)
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as outer:
            async with anyio.create_task_group() as first:
                first.start_soon(leader.serve)

                async def led() -> bool:
                    return len(await ticks_of(client)) >= 3

                await poll_until(led)
                standby = cluster.process(build, **QUICK)
                outer.start_soon(standby.serve)
                await anyio.sleep(0.5)  # the standby runs, and finds the lease taken
                first.cancel_scope.cancel()
            before = len(await ticks_of(client))

            async def taken_over() -> bool:
                return len(await ticks_of(client)) >= before + 10

            await poll_until(taken_over)
            await client.shutdown()
    times = [at for at, _ in await ticks_of(client)]
    assert len(times) == len(set(times))  # no tick twice
    assert all(b - a == pytest.approx(0.2, abs=1e-6) for a, b in pairwise(times))  # none lost


async def test_a_restarted_ticker_knows_from_redis_what_it_missed(cluster: Cluster) -> None:
    build = ticking(every=0.2, catch_up="latest", grace=0.1)
    client = cluster.process(build, **QUICK)
    with anyio.fail_after(WAIT):
        for run in range(2):
            worker = cluster.process(build, **QUICK)
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(worker.serve)
                wanted = 3 * (run + 1)

                async def enough(wanted: int = wanted) -> bool:
                    return len(await ticks_of(client)) >= wanted

                await poll_until(enough)
                await client.shutdown()
            if run == 0:
                last = (await ticks_of(client))[-1][0]
                await anyio.sleep(1.3)  # six ticks come due while no process runs it
    ticks = await ticks_of(client)
    (restart,) = [tick for tick in ticks if tick[0] > last][:1]
    assert restart[1] >= 4  # the tick that stands for those missed says so
    assert restart[0] - last >= 1.2 - 1e-6  # six ticks later; tick times are floats on a 0.2 s grid


async def test_no_tick_is_sent_once_the_ticker_has_its_shutdown(
    cluster: Cluster, raw: RedisClient
) -> None:
    build = ticking(every=0.1)
    worker, client = cluster.process(build, **QUICK), cluster.process(build, **QUICK)
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(worker.serve)

            async def ticking_now() -> bool:
                return len(await ticks_of(client)) >= 2

            await poll_until(ticking_now)
            await client.shutdown()
    mailbox = client.nodes["tick"].mailbox
    assert isinstance(mailbox, RedisChannel)
    assert await raw.xlen(mailbox.key) == 0  # no tick written after the shutdown entry


async def test_killed_workers_serving_a_ticker_lose_no_tick_and_send_none_twice(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """Two worker processes serve the ticker (a tick every 0.25 s, missed ones caught up),
    a third records; each ticker worker is SIGKILLed once, so the leader dies at least
    once. Every tick from the first to the last is recorded, each from one message."""
    with supervised(redis_server.url, "ticker_pipeline", tmp_path) as workers:
        workers.start("tick")
        workers.start("tick")
        workers.start("record")
        async with client_graph("ticker_pipeline", redis_server.url, workers.namespace) as graph:
            try:
                with anyio.fail_after(90):
                    await wait_ready(workers)
                    for victim in (0, 1):
                        before = len(await graph.state.get("ticks", []))

                        async def more(before: int = before) -> bool:
                            return len(await graph.state.get("ticks", [])) >= before + 8

                        await poll_until(more)
                        workers.kill(victim)  # and started again
                        await wait_ready(workers)
                    before = len(await graph.state.get("ticks", []))

                    async def after_kills(before: int = before) -> bool:
                        return len(await graph.state.get("ticks", [])) >= before + 8

                    await poll_until(after_kills)
                    await graph.shutdown()
                    codes = workers.exit_codes(within=30)
            except BaseException:
                print(workers.log())
                raise
            records = await graph.state.get("ticks")
    assert codes == [0, 0, 0], workers.log()
    ids_per_tick: dict[float, set[str]] = {}
    for record in records:
        at, message_id = record.split(" ")
        ids_per_tick.setdefault(float(at), set()).add(message_id)
    assert all(len(ids) == 1 for ids in ids_per_tick.values()), Counter(
        {at: len(ids) for at, ids in ids_per_tick.items() if len(ids) > 1}
    )
    times = sorted(ids_per_tick)
    gaps = [b - a for a, b in pairwise(times) if b - a > 0.25 + 1e-6]
    assert gaps == [], f"ticks lost between {gaps}"
    assert len(times) >= 24
