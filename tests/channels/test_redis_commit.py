"""RedisChannel as a durable mailbox: group commits, leases, batches, remote close.

What a worker loop relies on (see ``spark_nodes.channels.mailbox``), against a real Redis
server (never a mock). Commits need their source and targets on one client and one hash
tag, so most tests here make their channels on a shared client (the ``shared`` fixture).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry

from spark_nodes._redis_client import RedisClient
from spark_nodes.channels import (
    ChannelClosed,
    ChannelMessage,
    InMemoryChannel,
    MessageEncodeError,
    MessageTooLarge,
    RedisChannel,
)
from spark_nodes.channels.codec import decode, encode
from spark_nodes.channels.mailbox import Commit, is_durable
from spark_nodes.channels.redis import RELEASED_CONSUMER
from spark_nodes.graphs._redis_backend import IDLE
from tests.redis_support import ChannelFactory, new_namespace, purge, raw_client

pytestmark = [pytest.mark.anyio, pytest.mark.redis]  # redis-py: asyncio only

WITHIN = 5.0
"""Seconds any wait in this module may take: far more than a healthy server needs."""


class SharedClient:
    """Makes RedisChannels on one client and a fresh namespace; closes them all at the end."""

    def __init__(self, client: RedisClient, namespace: str) -> None:
        self.client = client
        self.namespace = namespace
        self.made: list[RedisChannel] = []

    def __call__(self, channel_name: str = "{t}:a", **options: Any) -> RedisChannel:
        options.setdefault("namespace", self.namespace)
        channel = RedisChannel(redis=self.client, channel_name=channel_name, **options)
        self.made.append(channel)
        return channel

    async def aclose(self) -> None:
        for channel in self.made:
            with contextlib.suppress(Exception):
                await channel.aclose()


@pytest.fixture
async def shared(redis_url: str, raw: Redis) -> AsyncIterator[SharedClient]:
    client = raw_client(redis_url, retry=Retry(NoBackoff(), 0))
    factory = SharedClient(client, new_namespace())
    try:
        yield factory
    finally:
        await factory.aclose()
        await client.aclose()
        await purge(raw, factory.namespace)


# -- helpers -------------------------------------------------------------------------------


async def fill(channel: RedisChannel, payloads: list[Any]) -> None:
    for payload in payloads:
        channel.send_nowait(ChannelMessage(payload))
    await channel.flush()


async def take_exactly(channel: RedisChannel, count: int) -> list[ChannelMessage]:
    """Take ``count`` messages (a take may return fewer: it takes what one read brought)."""
    taken: list[ChannelMessage] = []
    with anyio.fail_after(WITHIN):
        while len(taken) < count:
            taken += await channel.take(count - len(taken))
    assert len(taken) == count
    return taken


async def receive(channel: RedisChannel) -> ChannelMessage:
    with anyio.fail_after(WITHIN):
        return await channel.receive()


def one_output_each(
    messages: list[ChannelMessage], target: RedisChannel, *, prefix: str = "out"
) -> Commit:
    """A commit forwarding ``f"{prefix}-{payload}"`` to ``target`` for each message."""
    batch = Commit()
    for message in messages:
        batch.add(message).append((target, ChannelMessage(f"{prefix}-{message.payload}")))
    return batch


async def stream_payloads(raw: Redis, channel: RedisChannel) -> list[Any]:
    entries: Any = await raw.xrange(channel.key)
    return [decode(fields[b"m"]).payload for _id, fields in entries]


async def pending(raw: Redis, channel: RedisChannel) -> list[tuple[str, str, int]]:
    """(entry id, consumer, delivery count) of every entry pending in the channel's group."""
    rows: Any = await raw.xpending_range(channel.key, channel.group, "-", "+", 1000)
    return [
        (row["message_id"].decode(), row["consumer"].decode(), row["times_delivered"])
        for row in rows
    ]


async def stats(raw: Redis, channel: RedisChannel) -> dict[str, int]:
    counts: Any = await raw.hgetall(channel.keys.stats)
    return {k.decode(): int(v) for k, v in counts.items()}


async def dead_letters(raw: Redis, channel: RedisChannel) -> list[dict[bytes, bytes]]:
    entries: Any = await raw.xrange(channel.keys.dead)
    return [fields for _id, fields in entries]


async def steal(raw: Redis, channel: RedisChannel, message: ChannelMessage, thief: str) -> None:
    """Reclaim ``message``'s entry for consumer ``thief``: its holder has lost the lease."""
    entry = message.metadata["stream_entry"]
    await raw.xclaim(channel.key, channel.group, thief, 0, [entry])


# -- commits_to ----------------------------------------------------------------------------


async def test_a_redis_channel_is_a_durable_mailbox(shared: SharedClient) -> None:
    assert is_durable(shared())


async def test_commits_to_only_open_channels_on_the_same_client_and_hash_tag(
    shared: SharedClient, channels: ChannelFactory
) -> None:
    source = shared("{t}:a")
    assert source.commits_to(shared("{t}:b"))
    assert source.commits_to(source)  # a node may forward to itself
    assert not source.commits_to(shared("{u}:b"))  # another hash tag: another Cluster slot
    assert not source.commits_to(channels("{t}:b", namespace=shared.namespace))  # other client
    assert not source.commits_to(InMemoryChannel())
    closed = shared("{t}:c")
    closed.close()
    assert not source.commits_to(closed)


# -- commit --------------------------------------------------------------------------------


async def test_a_committed_batch_forwards_its_outputs_in_order_and_acks_every_input(
    shared: SharedClient, raw: Redis
) -> None:
    source, target = shared("{t}:a"), shared("{t}:b")
    await fill(source, list(range(8)))
    taken = await take_exactly(source, 8)
    assert await source.commit(one_output_each(taken, target)) == [True] * 8
    assert await raw.xlen(source.key) == 0  # acked entries are deleted
    assert await pending(raw, source) == []
    assert await stream_payloads(raw, target) == [f"out-{n}" for n in range(8)]
    assert all(message.acked for message in taken)
    for message in taken:
        assert message.ack is not None
        await message.ack()  # settled by the commit: acking again does nothing
    assert (await stats(raw, source))["acked"] == 8
    assert (await stats(raw, target))["sent"] == 8
    assert target.statistics().sent == 8  # counted on the target, as if sent through it


async def test_a_commit_keeps_the_entries_another_group_has_not_read(
    shared: SharedClient, raw: Redis
) -> None:
    source, target = shared("{t}:a", group="first"), shared("{t}:b")
    other = shared("{t}:a", group="second")  # a second group reading the same stream
    await raw.xgroup_create(other.key, "second", id="0", mkstream=True)
    await fill(source, list(range(5)))
    taken = await take_exactly(source, 5)
    assert await source.commit(one_output_each(taken, target)) == [True] * 5
    assert await raw.xlen(source.key) == 5  # the second group has read none of them
    again = await take_exactly(other, 5)
    assert [message.payload for message in again] == list(range(5))
    assert await other.commit(Commit(messages=again, sends=[[] for _ in again])) == [True] * 5
    assert await raw.xlen(source.key) == 0  # every group is done with them


async def test_entries_settled_behind_an_older_pending_one_go_when_it_is_dead_lettered(
    shared: SharedClient, raw: Redis
) -> None:
    source, target = shared("{t}:a"), shared("{t}:b")
    await fill(source, list(range(4)))
    first, *rest = await take_exactly(source, 4)
    assert await source.commit(one_output_each(rest, target)) == [True] * 3
    assert await raw.xlen(source.key) == 4  # kept: the oldest entry is still pending
    await source.dead_letter(first, reason="process", error="ValueError: no")
    assert await raw.xlen(source.key) == 0
    assert await pending(raw, source) == []


async def test_an_empty_commit_does_nothing(shared: SharedClient) -> None:
    assert await shared().commit(Commit()) == []


async def test_a_message_without_outputs_is_acked_by_the_commit(
    shared: SharedClient, raw: Redis
) -> None:
    source = shared()
    await fill(source, ["a", "b"])
    taken = await take_exactly(source, 2)
    batch = Commit()
    for message in taken:
        batch.add(message)
    assert await source.commit(batch) == [True, True]
    assert await raw.xlen(source.key) == 0
    assert all(message.acked for message in taken)


async def test_a_message_may_forward_several_outputs_to_several_targets(
    shared: SharedClient, raw: Redis
) -> None:
    source, left, right = shared("{t}:a"), shared("{t}:left"), shared("{t}:right")
    await fill(source, [1, 2])
    first, second = await take_exactly(source, 2)
    batch = Commit()
    batch.add(first).extend(
        [
            (left, ChannelMessage("1-l")),
            (right, ChannelMessage("1-r")),
            (left, ChannelMessage("1-l2")),
        ]
    )
    batch.add(second).append((right, ChannelMessage("2-r")))
    assert await source.commit(batch) == [True, True]
    assert await stream_payloads(raw, left) == ["1-l", "1-l2"]
    assert await stream_payloads(raw, right) == ["1-r", "2-r"]


async def test_each_message_of_a_commit_is_judged_on_its_own_lease(
    shared: SharedClient, raw: Redis
) -> None:
    source, target = shared("{t}:a", consumer="A"), shared("{t}:b")
    await fill(source, [0, 1, 2])
    taken = await take_exactly(source, 3)
    await steal(raw, source, taken[1], "B")  # A stalled on it; B reclaimed it
    assert await source.commit(one_output_each(taken, target)) == [True, False, True]
    assert await stream_payloads(raw, target) == ["out-0", "out-2"]
    assert await pending(raw, source) == [(taken[1].metadata["stream_entry"], "B", 2)]
    assert [message.acked for message in taken] == [True, False, True]
    assert (await stats(raw, source))["rejected_acks"] == 1


async def test_released_messages_are_acked_only_with_the_message_that_released_them(
    shared: SharedClient, raw: Redis
) -> None:
    # A window: 0 and 1 held, 2 closed it (its output is the window's), then 3 closed the
    # next one, with nothing released. A stalled on 2 and B reclaimed it: 0 and 1 must
    # not be acked without the output they are in, so they stay pending (A's leases).
    source, target = shared("{t}:a", consumer="A"), shared("{t}:b")
    await fill(source, [0, 1, 2, 3])
    taken = await take_exactly(source, 4)
    await steal(raw, source, taken[2], "B")
    batch = Commit()
    for message in (taken[2], taken[0], taken[1], taken[3]):
        batch.add(message)
    batch.sends[0].append((target, ChannelMessage("window 0-2")))
    batch.sends[3].append((target, ChannelMessage("window 3")))
    batch.released = frozenset({1, 2})
    assert await source.commit(batch) == [False, False, False, True]
    assert await stream_payloads(raw, target) == ["window 3"]
    entries = {message.metadata["stream_entry"]: message.payload for message in taken}
    holders = {entries[entry]: consumer for entry, consumer, _ in await pending(raw, source)}
    # 0 and 1 are given back at once (others take them now), 2 is B's.
    assert holders == {0: RELEASED_CONSUMER, 1: RELEASED_CONSUMER, 2: "B"}
    assert [message.acked for message in taken] == [False, False, False, True]


async def test_released_messages_are_acked_with_the_message_that_released_them(
    shared: SharedClient, raw: Redis
) -> None:
    source, target = shared("{t}:a", consumer="A"), shared("{t}:b")
    await fill(source, [0, 1, 2])
    taken = await take_exactly(source, 3)
    batch = Commit()
    for message in (taken[2], taken[0], taken[1]):
        batch.add(message)
    batch.sends[0].append((target, ChannelMessage("window")))
    batch.released = frozenset({1, 2})
    assert await source.commit(batch) == [True, True, True]
    assert await stream_payloads(raw, target) == ["window"]
    assert await pending(raw, source) == []


async def test_a_retried_commit_whose_first_try_landed_commits_the_released_messages_too(
    shared: SharedClient, raw: Redis
) -> None:
    # The script ran, its reply was lost; the retry finds every entry acked already.
    source, target = shared("{t}:a", consumer="A"), shared("{t}:b")
    await fill(source, [0, 1, 2])
    taken = await take_exactly(source, 3)
    leases = source._leases
    leases._read_along = lambda: False  # the plain script call (no read along)
    commit_script = leases._scripts.commit
    calls = 0

    async def landed_then_lost(**kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        result = await commit_script(**kwargs)
        if calls == 1:
            raise RedisConnectionError("reply lost")
        return result

    leases._scripts.commit = landed_then_lost  # type: ignore[assignment]
    batch = Commit()
    for message in (taken[2], taken[0], taken[1]):  # 2 closed the window of 0 and 1
        batch.add(message)
    batch.sends[0].append((target, ChannelMessage("window")))
    batch.released = frozenset({1, 2})
    assert await source.commit(batch) == [True, True, True]
    assert calls == 2
    assert await pending(raw, source) == []
    assert await stream_payloads(raw, target) == ["window"]
    assert [message.acked for message in taken] == [True, True, True]


async def test_a_lease_reclaimed_by_the_same_consumer_name_is_lost_too(
    shared: SharedClient, raw: Redis
) -> None:
    # A restarted worker with the same name got the entry again (one more delivery): the
    # old delivery's commit is refused, or the message would be handled twice.
    source, target = shared("{t}:a", consumer="A"), shared("{t}:b")
    await fill(source, ["work"])
    (message,) = await take_exactly(source, 1)
    await steal(raw, source, message, "A")
    assert await source.commit(one_output_each([message], target)) == [False]
    assert await raw.xlen(target.key) == 0
    assert not message.acked


async def test_a_commit_keeps_the_result_at_result_key_when_its_message_commits(
    shared: SharedClient, raw: Redis
) -> None:
    result_key = f"{shared.namespace}:{{t}}#result:a"
    source, target = shared("{t}:a", result_key=result_key), shared("{t}:b")
    await fill(source, [0, 1])
    taken = await take_exactly(source, 2)
    batch = one_output_each(taken, target)
    batch.result = (1, b"latest")
    assert await source.commit(batch) == [True, True]
    assert await raw.get(result_key) == b"latest"


async def test_a_commit_keeps_no_result_when_its_message_did_not_commit(
    shared: SharedClient, raw: Redis
) -> None:
    result_key = f"{shared.namespace}:{{t}}#result:a"
    source, target = shared("{t}:a", result_key=result_key), shared("{t}:b")
    await fill(source, [0, 1])
    taken = await take_exactly(source, 2)
    await steal(raw, source, taken[1], "B")
    batch = one_output_each(taken, target)
    batch.result = (1, b"from the lost one")
    assert await source.commit(batch) == [True, False]
    assert await raw.exists(result_key) == 0


async def test_a_result_is_ignored_by_a_channel_without_result_key(
    shared: SharedClient, raw: Redis
) -> None:
    source = shared("{t}:a")
    await fill(source, [0])
    batch = Commit()
    batch.add((await take_exactly(source, 1))[0])
    batch.result = (0, b"kept nowhere")
    before = {key async for key in raw.scan_iter(match=f"{shared.namespace}:*")}
    assert await source.commit(batch) == [True]
    after = {key async for key in raw.scan_iter(match=f"{shared.namespace}:*")}
    assert after == before


def test_a_result_key_on_another_hash_tag_is_refused() -> None:
    with pytest.raises(ValueError, match="must share the mailbox's hash tag"):
        RedisChannel("redis://localhost", "{t}:a", namespace="ns", result_key="ns:{u}#result:a")


async def test_commit_refuses_a_target_it_cannot_commit_to_and_commits_nothing(
    shared: SharedClient, raw: Redis
) -> None:
    source, good, elsewhere = shared("{t}:a", consumer="A"), shared("{t}:b"), shared("{u}:b")
    await fill(source, [0, 1])
    taken = await take_exactly(source, 2)
    batch = Commit()
    batch.add(taken[0]).append((good, ChannelMessage("fine")))
    batch.add(taken[1]).append((elsewhere, ChannelMessage("refused")))
    with pytest.raises(ValueError, match="cannot commit sends to"):
        await source.commit(batch)
    assert await raw.xlen(good.key) == 0
    assert await raw.xlen(elsewhere.key) == 0
    assert [consumer for _id, consumer, _n in await pending(raw, source)] == ["A", "A"]
    assert not any(message.acked for message in taken)
    # The leases are still held: the same messages commit once the batch is fixed.
    assert await source.commit(one_output_each(taken, good)) == [True, True]


async def test_an_output_that_is_not_plain_data_fails_the_commit_and_commits_nothing(
    shared: SharedClient, raw: Redis
) -> None:
    source, target = shared("{t}:a"), shared("{t}:b")
    await fill(source, [0, 1])
    taken = await take_exactly(source, 2)
    batch = Commit()
    batch.add(taken[0]).append((target, ChannelMessage("fine")))
    batch.add(taken[1]).append((target, ChannelMessage({1, 2})))
    with pytest.raises(MessageEncodeError, match="set"):
        await source.commit(batch)
    assert await raw.xlen(target.key) == 0
    assert len(await pending(raw, source)) == 2
    assert not any(message.acked for message in taken)


async def test_an_output_too_large_for_its_target_fails_the_commit_and_commits_nothing(
    shared: SharedClient, raw: Redis
) -> None:
    source, target = shared("{t}:a"), shared("{t}:b", max_message_bytes=200)
    await fill(source, [0])
    taken = await take_exactly(source, 1)
    batch = Commit()
    batch.add(taken[0]).append((target, ChannelMessage("x" * 500)))
    with pytest.raises(MessageTooLarge, match="max_message_bytes=200"):
        await source.commit(batch)
    assert await raw.xlen(target.key) == 0
    assert len(await pending(raw, source)) == 1


async def test_an_output_with_int_keys_is_committed_and_dead_lettered_by_the_targets_reader(
    shared: SharedClient, raw: Redis
) -> None:
    source, target = shared("{t}:a"), shared("{t}:b")
    await fill(source, ["in"])
    (message,) = await take_exactly(source, 1)
    output = ChannelMessage({1: "one"})  # msgpack writes it; decode refuses int keys
    batch = Commit()
    batch.add(message).append((target, output))
    assert await source.commit(batch) == [True]  # unchecked: not refused by the sender
    assert message.acked
    await target.send(ChannelMessage("after"))
    assert (await receive(target)).payload == "after"  # the bad one did not block the rest
    (letter,) = await dead_letters(raw, target)
    assert letter[b"reason"] == b"undecodable"
    assert letter[b"m"] == encode(output, check=False)  # its original bytes, kept


async def test_commit_refuses_a_message_received_elsewhere(shared: SharedClient) -> None:
    source, other = shared("{t}:a"), shared("{t}:b")
    await fill(other, ["theirs"])
    batch = Commit()
    batch.add((await take_exactly(other, 1))[0])
    with pytest.raises(ValueError, match="was not received from"):
        await source.commit(batch)
    stranger = Commit()
    stranger.add(ChannelMessage("stranger"))
    with pytest.raises(ValueError, match="was not received from"):
        await source.commit(stranger)


# -- held on purpose (publish_held) --------------------------------------------------------


async def held_record(raw: Redis, channel: RedisChannel) -> dict[str, int]:
    """The published holdings: ``"consumer entry"`` -> deliveries (deadlines left out)."""
    fields: Any = await raw.hgetall(channel.keys.held)
    return {k.decode(): int(v.split()[0]) for k, v in fields.items()}


async def test_each_consumer_publishes_and_withdraws_only_its_own_holdings(
    shared: SharedClient, raw: Redis
) -> None:
    a = shared("{t}:a", consumer="A")
    await fill(a, [0])
    (held_by_a,) = await take_exactly(a, 1)
    entry = held_by_a.metadata["stream_entry"]
    await a.publish_held([held_by_a])  # A's window holds it; A's loops are idle
    await steal(raw, a, held_by_a, "B")  # A stalled past visibility_timeout; B reclaimed it
    b = shared("{t}:a", consumer="B")
    (held_by_b,) = await take_exactly(b, 1)
    await b.publish_held([held_by_b])
    deliveries = held_by_b.metadata["delivery_count"]  # (the steal counted one)
    assert await held_record(raw, a) == {f"A {entry}": 1, f"B {entry}": deliveries}
    await a.publish_held([])  # A's window let go of its stale copy
    await b.publish_held([held_by_b])  # unchanged: nothing written
    assert await held_record(raw, a) == {f"B {entry}": deliveries}
    await b.publish_held([])
    assert await raw.exists(a.keys.held) == 0


async def test_a_refresh_writes_the_holdings_again_with_a_later_deadline(
    shared: SharedClient, raw: Redis
) -> None:
    a = shared("{t}:a", consumer="A", visibility_timeout=5.0)
    await fill(a, [0])
    (held,) = await take_exactly(a, 1)
    await a.publish_held([held])
    await raw.delete(a.keys.held)  # lost: a failover, a restore
    await a.publish_held([held])  # unchanged: nothing written
    assert await raw.exists(a.keys.held) == 0
    await a.publish_held([held], refresh=True)  # after a lease renewal
    (value,) = (await raw.hgetall(a.keys.held)).values()
    server_seconds, micros = await raw.time()
    deadline = int(value.split()[1])
    assert deadline > server_seconds * 1000 + micros // 1000 + 4000
    assert 0 < await raw.pttl(a.keys.held) <= 15_000  # three visibility timeouts


async def test_the_idle_check_looks_at_every_held_entry_past_the_first_page(
    shared: SharedClient, raw: Redis
) -> None:
    """``IDLE`` (``Graph.wait_idle`` on Redis) reads pending entries 100 at a time."""
    a = shared("{t}:a", consumer="A", prefetch=200)
    await fill(a, list(range(150)))
    taken = await take_exactly(a, 150)
    idle = raw.register_script(IDLE)

    async def is_idle() -> bool:
        keys = [a.key, a.keys.delayed, a.keys.held]
        return bool(await idle(keys=keys, args=[a.group]))

    await a.publish_held(taken[:-1])  # the last one is being worked on
    assert not await is_idle()
    await a.publish_held(taken)
    assert await is_idle()
    await raw.hset(a.keys.held, f"A {taken[120].metadata['stream_entry']}", "1 0")  # lapsed
    assert not await is_idle()


# -- take, give back, release --------------------------------------------------------------


async def test_take_nowait_returns_nothing_from_an_empty_buffer(
    channels: ChannelFactory, raw: Redis
) -> None:
    channel = channels()
    assert channel.take_nowait(5) == []
    await fill(channel, [0, 1])  # in Redis, not in the buffer: taking them needs a read
    assert channel.take_nowait(5) == []
    assert await raw.xlen(channel.key) == 2
    assert await raw.xinfo_groups(channel.key) == []  # nothing was read: no group even


async def test_take_reads_from_redis_then_returns_at_most_limit(
    channels: ChannelFactory,
) -> None:
    channel = channels(prefetch=10)
    await fill(channel, list(range(5)))
    with anyio.fail_after(WITHIN):
        first = await channel.take(3)
    assert [m.payload for m in first] == [0, 1, 2]
    rest = channel.take_nowait(10)  # the read brought them all: no round trip
    assert [m.payload for m in rest] == [3, 4]
    assert channel.take_nowait(10) == []
    assert channel.statistics().received == 5


async def test_given_back_messages_are_taken_again_first_in_their_order(
    channels: ChannelFactory,
) -> None:
    channel = channels(prefetch=10)
    await fill(channel, list(range(4)))
    taken = await take_exactly(channel, 4)
    channel.give_back(taken[1:3])
    assert [m.payload for m in channel.take_nowait(10)] == [1, 2]


async def test_released_messages_go_to_another_consumer_without_counting_a_delivery(
    channels: ChannelFactory,
) -> None:
    leaving = channels(consumer="leaving", prefetch=10, visibility_timeout=0.2)
    staying = channels(consumer="staying", visibility_timeout=0.2)
    await fill(leaving, [0, 1, 2])
    taken = await take_exactly(leaving, 3)
    leaving.give_back(taken)  # taken, never handled
    assert await leaving.release_buffered() == 3
    got = [await receive(staying) for _ in range(3)]
    assert [m.payload for m in got] == [0, 1, 2]
    assert [m.metadata["delivery_count"] for m in got] == [1, 1, 1]


async def test_give_back_with_started_counts_the_delivery_of_the_ones_started(
    channels: ChannelFactory,
) -> None:
    leaving = channels(consumer="leaving", prefetch=10, visibility_timeout=0.2)
    staying = channels(consumer="staying", visibility_timeout=0.2)
    await fill(leaving, [0, 1, 2])
    taken = await take_exactly(leaving, 3)
    leaving.give_back(taken, started=1)  # it was handling the first when it stopped
    assert await leaving.release_buffered() == 3
    got = [await receive(staying) for _ in range(3)]
    assert [m.payload for m in got] == [0, 1, 2]
    assert [m.metadata["delivery_count"] for m in got] == [2, 1, 1]


async def test_release_buffered_keeps_local_wake_ups(channels: ChannelFactory) -> None:
    channel = channels()
    wake_up = ChannelMessage(None, {"source_node": "<wake>"}, is_shutdown=True)
    channel.give_back([wake_up])
    assert await channel.release_buffered() == 0
    assert channel.take_nowait(5) == [wake_up]


# -- redelivery ----------------------------------------------------------------------------


async def test_redelivered_is_false_on_a_first_delivery_and_true_after_a_reclaim(
    channels: ChannelFactory,
) -> None:
    stalled = channels(consumer="stalled", visibility_timeout=0.2)
    rescuer = channels(consumer="rescuer", visibility_timeout=0.2)
    await fill(stalled, ["work"])
    first = await receive(stalled)
    assert not stalled.redelivered(first)
    again = await receive(rescuer)  # once the stalled consumer's lease expired
    assert again.payload == "work"
    assert rescuer.redelivered(again)


async def test_redelivered_refuses_a_message_that_was_not_received(
    channels: ChannelFactory,
) -> None:
    with pytest.raises(ValueError, match="was not received from"):
        channels().redelivered(ChannelMessage("stranger"))


async def test_redelivered_refuses_a_message_received_from_another_channel(
    channels: ChannelFactory,
) -> None:
    # Documented (Raises: ValueError); a loop asking the wrong mailbox would otherwise
    # get an answer about a lease it does not hold.
    holder, other = channels("{t}:a"), channels("{t}:b")
    await fill(holder, ["work"])
    message = await receive(holder)
    with pytest.raises(ValueError, match="was not received from"):
        other.redelivered(message)


async def test_an_entry_delivered_before_is_taken_alone(
    channels: ChannelFactory, raw: Redis
) -> None:
    dead_worker = channels(consumer="dead", prefetch=1)
    await fill(dead_worker, ["stale"])
    stale = await receive(dead_worker)  # never settled: its worker died of it, maybe
    await fill(dead_worker, ["new-1", "new-2", "new-3"])
    # Make it look idle for a minute: reclaimable now, without waiting out a timeout.
    await raw.xclaim(
        dead_worker.key, dead_worker.group, "dead", 0, [stale.metadata["stream_entry"]],
        idle=60_000, justid=True,
    )  # fmt: skip
    rescuer = channels(consumer="rescuer", prefetch=10, visibility_timeout=30)
    with anyio.fail_after(WITHIN):
        first = await rescuer.take(10)
    assert [m.payload for m in first] == ["stale"]  # alone, though three more are ready
    assert rescuer.redelivered(first[0])
    assert first[0].metadata["delivery_count"] == 2
    rest = await take_exactly(rescuer, 3)
    assert [m.payload for m in rest] == ["new-1", "new-2", "new-3"]
    assert not any(rescuer.redelivered(m) for m in rest)


# -- settle_with ---------------------------------------------------------------------------

SETTLE_AND_MARK = """
-- KEYS[1] stream, KEYS[2] stats, KEYS[3] a marker; ARGV[1] group, ARGV[2] consumer,
-- ARGV[3] entry id, ARGV[4] deliveries, ARGV[5] the marker's value.
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 or p[1][2] ~= ARGV[2] or tostring(p[1][4]) ~= ARGV[4] then return -1 end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
redis.call('SET', KEYS[3], ARGV[5])
return 7
"""


async def test_settle_with_runs_a_script_that_settles_a_held_message(
    shared: SharedClient, raw: Redis
) -> None:
    channel = shared("{t}:a")
    marker = f"{shared.namespace}:{{t}}:marker"
    script = channel.client.register_script(SETTLE_AND_MARK)
    await fill(channel, ["job"])
    (message,) = await take_exactly(channel, 1)
    status = await channel.settle_with(
        message, script, keys=[marker], args=["done"], what="settle a job"
    )
    assert status == 7
    assert message.acked
    assert await raw.get(marker) == b"done"
    assert await raw.xlen(channel.key) == 0
    assert await pending(raw, channel) == []


async def test_settle_with_reports_a_lost_lease_and_leaves_the_message_unsettled(
    shared: SharedClient, raw: Redis
) -> None:
    channel = shared("{t}:a", consumer="A")
    marker = f"{shared.namespace}:{{t}}:marker"
    script = channel.client.register_script(SETTLE_AND_MARK)
    await fill(channel, ["job"])
    (message,) = await take_exactly(channel, 1)
    await steal(raw, channel, message, "B")
    status = await channel.settle_with(
        message, script, keys=[marker], args=["done"], what="settle a job"
    )
    assert status == -1
    assert not message.acked
    assert await raw.exists(marker) == 0
    assert [consumer for _id, consumer, _n in await pending(raw, channel)] == ["B"]


async def test_settle_with_refuses_a_message_received_elsewhere(shared: SharedClient) -> None:
    channel = shared("{t}:a")
    script = channel.client.register_script(SETTLE_AND_MARK)
    with pytest.raises(ValueError, match="was not received from"):
        await channel.settle_with(ChannelMessage("stranger"), script, what="settle a stranger")


# -- a distributed graph's close -----------------------------------------------------------


class IdleReads:
    """An ``on_idle`` hook: counts the reads that found nothing; tests await a count."""

    def __init__(self) -> None:
        self.count = 0
        self._waiters: list[tuple[int, anyio.Event]] = []

    async def __call__(self) -> None:
        self.count += 1
        for wanted, event in self._waiters:
            if self.count >= wanted:
                event.set()

    async def wait_for(self, count: int) -> None:
        if self.count < count:
            event = anyio.Event()
            self._waiters.append((count, event))
            await event.wait()


async def test_a_remote_close_at_the_watched_epoch_ends_receiving_once_the_buffer_is_empty(
    channels: ChannelFactory, raw: Redis
) -> None:
    channel = channels(prefetch=10, block=0.05)
    channel.watch_remote_close(3, IdleReads())
    await fill(channel, [0, 1])
    assert (await receive(channel)).payload == 0  # 1 is buffered
    await raw.set(channel.keys.closed, 3)
    assert (await receive(channel)).payload == 1  # the buffer is delivered first
    with anyio.fail_after(WITHIN), pytest.raises(ChannelClosed):
        await channel.receive()


async def test_a_remote_close_of_an_earlier_epoch_does_not_end_receiving(
    channels: ChannelFactory, raw: Redis
) -> None:
    channel = channels(block=0.05)
    idle = IdleReads()
    channel.watch_remote_close(3, idle)
    await raw.set(channel.keys.closed, 2)  # the close of an earlier run
    outcome: list[str] = []

    async def receive_until_closed() -> None:
        with pytest.raises(ChannelClosed):
            await channel.receive()
        outcome.append("closed")

    with anyio.fail_after(WITHIN):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(receive_until_closed)
            await idle.wait_for(3)  # reads that saw the flag at 2, and found nothing
            assert outcome == []
            await raw.set(channel.keys.closed, 4)  # a later run's close counts too
    assert outcome == ["closed"]


async def test_on_idle_is_awaited_after_a_read_that_found_nothing(
    channels: ChannelFactory,
) -> None:
    channel = channels(block=0.05)
    idle = IdleReads()
    channel.watch_remote_close(1, idle)
    got: list[Any] = []

    async def receive_one() -> None:
        got.append((await channel.receive()).payload)

    with anyio.fail_after(WITHIN):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(receive_one)
            await idle.wait_for(2)  # the mailbox is empty: each read ends with the hook
            assert got == []
            await channel.send(ChannelMessage("late"))
    assert got == ["late"]


async def test_mark_closed_remotely_ends_receiving_once_the_buffer_is_empty(
    channels: ChannelFactory,
) -> None:
    channel = channels(prefetch=10)
    await fill(channel, [0, 1])
    assert (await receive(channel)).payload == 0
    channel.mark_closed_remotely()
    assert (await receive(channel)).payload == 1
    with anyio.fail_after(WITHIN), pytest.raises(ChannelClosed):
        await channel.receive()
    with anyio.fail_after(WITHIN), pytest.raises(ChannelClosed):
        await channel.take(5)


async def test_watching_the_next_epoch_reopens_a_remotely_closed_mailbox(
    channels: ChannelFactory, raw: Redis
) -> None:
    channel = channels(block=0.05)
    channel.watch_remote_close(1, IdleReads())
    await raw.set(channel.keys.closed, 1)
    with anyio.fail_after(WITHIN), pytest.raises(ChannelClosed):
        await channel.receive()
    channel.watch_remote_close(2, IdleReads())  # the next run
    await channel.send(ChannelMessage("next run"))
    assert (await receive(channel)).payload == "next run"
