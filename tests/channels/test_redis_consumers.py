"""RedisChannel consumers: who is in the group, and when they leave it (a real server)."""

from __future__ import annotations

import os
import socket
import threading
from typing import Any

import anyio
import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from structlog.testing import capture_logs

from spark_nodes import ExecutionContext, Graph, Node
from spark_nodes.channels import ChannelMessage, RedisChannel
from spark_nodes.channels.redis import RELEASED_CONSUMER
from spark_nodes.channels.redis._layout import Settings, default_consumer_name
from tests.redis_support import ChannelFactory, Cluster

pytestmark = [pytest.mark.anyio, pytest.mark.redis]  # redis-py: asyncio only


async def receive(channel: RedisChannel, within: float = 10.0) -> ChannelMessage:
    with anyio.fail_after(within):
        return await channel.receive()


async def ack(message: ChannelMessage) -> None:
    assert message.ack is not None
    await message.ack()


async def consumers(raw: Redis, key: str, group: str = "workers") -> dict[str, int]:
    """Each consumer of the group and how many entries it holds (none without a group)."""
    try:
        rows: Any = await raw.xinfo_consumers(key, group)
    except ResponseError:  # no stream or no group: no consumer
        return {}
    return {row["name"].decode(): int(row["pending"]) for row in rows}


async def wait_for_consumers(
    raw: Redis, key: str, wanted: dict[str, int], within: float = 10.0
) -> None:
    """Poll until the group's consumers are exactly ``wanted``."""
    with anyio.fail_after(within):
        while await consumers(raw, key) != wanted:  # noqa: ASYNC110 - state in Redis: polled
            await anyio.sleep(0.02)


async def keep_receiving(channel: RedisChannel, got: list[ChannelMessage]) -> None:
    """A live worker: receives (and so sweeps) until cancelled, acking what it gets."""
    while True:
        message = await channel.receive()
        got.append(message)
        await ack(message)


# -- names and options ---------------------------------------------------------------------


def test_default_consumer_names_are_unique_per_channel_object_across_threads() -> None:
    names: list[str] = []

    def make() -> None:
        names.extend(default_consumer_name() for _ in range(200))

    threads = [threading.Thread(target=make) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(names)) == 800
    host, pid, token, number = names[0].rsplit("-", 3)
    assert (host, pid) == (socket.gethostname(), str(os.getpid()))
    assert len(token) == 6
    assert number.isdigit()
    # Host and pid repeat across containers sharing the host's network: the token differs.
    assert {name.rsplit("-", 3)[2] for name in names} == {token}


def test_the_parking_consumer_name_is_reserved() -> None:
    with pytest.raises(ValueError, match="reserved"):
        RedisChannel("redis://localhost", "box", consumer=RELEASED_CONSUMER)


def test_consumer_max_idle_is_checked() -> None:
    base: dict[str, Any] = {
        "prefetch": 1, "block": 0.1, "visibility_timeout": 30.0, "max_deliveries": 3,
        "max_message_bytes": 1024, "dead_letter_maxlen": None, "idempotency_window": 60.0,
        "max_pending_sends": 10, "send_batch": 10,
    }  # fmt: skip
    assert Settings.check(**base).consumer_max_idle_ms == 3_600_000
    assert Settings.check(**base).sweep_interval == 60.0
    assert Settings.check(**base, consumer_max_idle=None).consumer_max_idle_ms == 0
    assert Settings.check(**base, consumer_max_idle=0.4).sweep_interval == 0.2
    with pytest.raises(ValueError, match="consumer_max_idle"):
        Settings.check(**base, consumer_max_idle=0)
    with pytest.raises(TypeError, match="consumer_max_idle"):
        Settings.check(**base, consumer_max_idle="1h")  # type: ignore[arg-type]


# -- a clean exit ----------------------------------------------------------------------------


async def test_a_clean_exit_deletes_its_consumer(channels: ChannelFactory, raw: Redis) -> None:
    channel = channels()
    await channel.send(ChannelMessage("job"))
    await ack(await receive(channel))
    assert await consumers(raw, channel.key) == {channel.consumer: 0}
    await channel.aclose()
    assert await consumers(raw, channel.key) == {}


async def test_a_channel_that_never_received_closes_without_touching_the_group(
    channels: ChannelFactory, raw: Redis
) -> None:
    sender = channels()
    await sender.send(ChannelMessage("job"))
    await sender.aclose()
    assert await raw.exists(sender.key) == 1
    assert await consumers(raw, sender.key) == {}


async def test_start_stop_cycles_leave_no_consumer_behind(
    channels: ChannelFactory, raw: Redis
) -> None:
    # Each worker prefetches 5, handles 1 and exits: the rest is given back each time.
    cycles = 10
    key = channels().key
    sender = channels()
    for number in range(cycles + 4):
        await sender.send(ChannelMessage(number))
    handled = []
    for _ in range(cycles):
        worker = channels(prefetch=5)
        message = await receive(worker)
        handled.append(message.payload)
        await ack(message)
        await worker.aclose()
        # It left; what it gave back (if it read new entries) waits on the parking consumer.
        assert set(await consumers(raw, key)) <= {RELEASED_CONSUMER}
    last = channels(prefetch=5)
    rest = [await receive(last) for _ in range(4)]
    assert await last.ack_batch(rest) == 4
    handled += [m.payload for m in rest]
    assert sorted(handled) == list(range(cycles + 4))
    assert await consumers(raw, key) == {last.consumer: 0}
    await last.aclose()
    assert await consumers(raw, key) == {}


async def test_given_back_entries_wait_on_the_parking_consumer_until_reclaimed(
    channels: ChannelFactory, raw: Redis
) -> None:
    leaving = channels(prefetch=5)
    for number in range(3):
        await leaving.send(ChannelMessage(number))
    await ack(await receive(leaving))  # 1 and 2 stay prefetched
    await leaving.aclose()
    # It left at once: what it gave back is held by nobody that runs, ready for anyone.
    assert await consumers(raw, leaving.key) == {RELEASED_CONSUMER: 2}
    staying = channels()
    got = [await receive(staying) for _ in range(2)]
    assert [m.payload for m in got] == [1, 2]
    assert [m.metadata["delivery_count"] for m in got] == [1, 1]  # given back: not counted
    assert await consumers(raw, leaving.key) == {staying.consumer: 2}  # parking: gone


async def test_a_consumer_holding_entries_is_not_removed(
    channels: ChannelFactory, raw: Redis
) -> None:
    holder = channels(consumer="holder", prefetch=1)
    await holder.send(ChannelMessage("in flight"))
    await receive(holder)  # handed out, never acked
    assert await holder.remove_consumer() is False
    with capture_logs() as logs:
        await holder.aclose()
    assert await consumers(raw, holder.key) == {"holder": 1}
    assert [e["event"] for e in logs] == [
        "consumer kept on close: it holds entries, which others reclaim after the "
        "visibility timeout"
    ]


# -- stale consumers -------------------------------------------------------------------------


async def test_a_live_consumer_removes_stale_consumers_once_they_hold_nothing(
    channels: ChannelFactory, raw: Redis
) -> None:
    live = channels(consumer="live", visibility_timeout=1.0, consumer_max_idle=0.2, block=0.02)
    key = live.key
    await raw.xgroup_create(key, live.group, id="0", mkstream=True)
    await raw.xadd(key, {"m": live.encode(ChannelMessage("held by a dead worker"))})
    # Two workers that died: one holding an entry, one holding nothing.
    await raw.xreadgroup(live.group, "dead-holding", {key: ">"}, count=1)
    await raw.xreadgroup(live.group, "dead-idle", {key: "0"}, count=1)  # joins, holds nothing
    assert await consumers(raw, key) == {"dead-holding": 1, "dead-idle": 0}
    got: list[ChannelMessage] = []
    with capture_logs() as logs:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(keep_receiving, live, got)
            # The idle one goes once 0.2 s passed (a sweep every 0.1 s); the holding one
            # keeps its entry until the visibility timeout (1 s), through several sweeps.
            await wait_for_consumers(raw, key, {"live": 0, "dead-holding": 1})
            assert not got
            await wait_for_consumers(raw, key, {"live": 0})
            tasks.cancel_scope.cancel()
    assert [m.payload for m in got] == ["held by a dead worker"]
    assert got[0].metadata["delivery_count"] == 2
    # (The last sweep's log may come after the poll saw its effect and cancelled.)
    removed = [
        name for e in logs if e["event"] == "stale consumers removed" for name in e["consumers"]
    ]
    assert "dead-idle" in removed


async def test_no_consumer_is_removed_when_consumer_max_idle_is_none(
    channels: ChannelFactory, raw: Redis
) -> None:
    live = channels(consumer="live", consumer_max_idle=None, block=0.02)
    await raw.xgroup_create(live.key, live.group, id="0", mkstream=True)
    await raw.xreadgroup(live.group, "dead-idle", {live.key: "0"}, count=1)
    await anyio.sleep(0.1)  # idle time must pass: past what a sweep would allow
    await live.send(ChannelMessage("job"))
    await ack(await receive(live))
    assert await consumers(raw, live.key) == {"dead-idle": 0, "live": 0}


# -- stable names ----------------------------------------------------------------------------


async def test_a_stable_name_gets_its_pending_entries_back_after_a_restart(
    channels: ChannelFactory, raw: Redis
) -> None:
    before = channels(consumer="pod-1", prefetch=3)
    for number in range(3):
        await before.send(ChannelMessage(number))
    assert (await receive(before)).payload == 0  # in flight when the worker stops
    await before.aclose()  # 1 and 2 given back; 0 keeps pod-1 in the group
    assert await consumers(raw, before.key) == {"pod-1": 1, RELEASED_CONSUMER: 2}
    after = channels(consumer="pod-1", prefetch=3)  # the same pod, restarted
    got = [await receive(after) for _ in range(3)]  # before the 30 s visibility timeout
    assert [(m.payload, m.metadata["delivery_count"]) for m in got] == [(0, 2), (1, 1), (2, 1)]
    await after.ack_batch(got)
    await after.aclose()
    assert await consumers(raw, after.key) == {}


# -- graphs ----------------------------------------------------------------------------------


class Double(Node):
    def process(self, context: ExecutionContext) -> Any:
        return context.inputs.content * 2


def pipeline() -> Graph:
    first, second = Double(id="first"), Double(id="second")
    first >> second
    return Graph(first, name="consumers")


async def test_workers_of_a_graph_leave_every_group_when_they_exit(
    cluster: Cluster, raw: Redis
) -> None:
    one, two, client = (cluster.process(pipeline) for _ in range(3))
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(one.serve)
            tasks.start_soon(two.serve)
            for number in range(50):
                await client.send("first", number)
            await client.shutdown()
    mailboxes = [one.nodes[node_id].mailbox for node_id in ("first", "second")]
    assert all(isinstance(m, RedisChannel) for m in mailboxes)
    for key in [m.key for m in mailboxes if isinstance(m, RedisChannel)]:
        assert len(await consumers(raw, key)) == 2  # a consumer per serving process
    for graph in (one, two):
        await graph.aclose()
    for key in [m.key for m in mailboxes if isinstance(m, RedisChannel)]:
        assert await consumers(raw, key) == {}


# -- stale leases ----------------------------------------------------------------------------


async def test_buffered_messages_whose_lease_lapsed_are_not_handled_but_delivered_again(
    channels: ChannelFactory,
) -> None:
    # Nothing renews these leases (as when Redis was unreachable for a while): once the
    # visibility timeout has passed, another consumer may be handling them.
    worker = channels(consumer="worker", prefetch=5, visibility_timeout=0.3)
    for number in range(3):
        await worker.send(ChannelMessage(number))
    first = await receive(worker)  # 1 and 2 wait in the local buffer
    await anyio.sleep(0.5)  # past the visibility timeout: nothing to await instead
    await ack_of(first)
    with capture_logs() as logs:
        again = [await receive(worker) for _ in range(2)]
    # Not handed out as they were: read again from Redis, as new deliveries.
    assert [m.payload for m in again] == [1, 2]
    assert [m.metadata["delivery_count"] for m in again] == [2, 2]
    (stale,) = [log for log in logs if log["event"].startswith("stale messages not handled")]
    assert (stale["count"], stale["log_level"]) == (2, "warning")
    for message in again:
        await ack_of(message)


async def test_a_renewed_lease_is_not_stale(channels: ChannelFactory) -> None:
    worker = channels(consumer="worker", prefetch=5, visibility_timeout=0.4)
    for number in range(2):
        await worker.send(ChannelMessage(number))
    await ack_of(await receive(worker))
    for _ in range(3):  # 0.6 s in all, renewed every 0.2 s
        await anyio.sleep(0.2)
        assert await worker.renew_leases() == 1
    second = await receive(worker)
    assert (second.payload, second.metadata["delivery_count"]) == (1, 1)
    await ack_of(second)


async def ack_of(message: ChannelMessage) -> None:
    assert message.ack is not None
    await message.ack()
