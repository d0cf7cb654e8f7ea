"""Mailbox inspection and dead-letter handling, against a real Redis server (never a mock)."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from structlog.testing import capture_logs

from spark_nodes.channels import (
    ChannelMessage,
    ChannelUnavailable,
    ConsumerInfo,
    DeadLetter,
    MailboxInfo,
    RedisChannel,
    dead_letters,
    drop_dead_letter,
    find_mailboxes,
    inspect_mailbox,
    inspect_namespace,
    inspection,
    replay_dead_letter,
)
from spark_nodes.channels.codec import encode
from spark_nodes.channels.inspection import inspect_mailboxes
from tests.redis_support import (
    FAST_RETRY,
    ChannelFactory,
    new_namespace,
    open_raw_client,
    purge,
    raw_client,
)

pytestmark = [pytest.mark.anyio, pytest.mark.redis]  # redis-py: asyncio only


@pytest.fixture
def refusing_url() -> Iterator[str]:
    """A URL whose port is taken but not listening: connections are refused at once."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        yield f"redis://127.0.0.1:{taken.getsockname()[1]}"


async def receive(channel: RedisChannel, within: float = 5.0) -> ChannelMessage:
    with anyio.fail_after(within):
        return await channel.receive()


async def ack(message: ChannelMessage) -> None:
    assert message.ack is not None
    await message.ack()


async def dead_letter_one(channel: RedisChannel, payload: object, **record: str) -> None:
    """Send ``payload``, receive it and dead-letter it."""
    await channel.send(ChannelMessage(payload))
    message = await receive(channel)
    await channel.dead_letter(
        message, reason=record.get("reason", "process"), error=record.get("error", "boom")
    )


@contextlib.contextmanager
def commands_sent(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The names of the commands every client of this process sends meanwhile."""
    sent: list[str] = []
    pack = AbstractConnection.pack_command

    def recording(connection: AbstractConnection, *args: Any) -> list[bytes]:
        name = args[0]
        sent.append((name.decode() if isinstance(name, bytes) else str(name)).split()[0].upper())
        return pack(connection, *args)

    with monkeypatch.context() as patch:
        patch.setattr(AbstractConnection, "pack_command", recording)
        yield sent


async def dead_letter_foreign(channel: RedisChannel, raw: Redis, fields: dict[str, bytes]) -> None:
    """Write a foreign entry to the stream and let ``channel`` dead-letter it on receive."""
    await raw.xadd(channel.key, fields)  # type: ignore[arg-type]
    await channel.send(ChannelMessage("after"))
    with capture_logs():
        message = await receive(channel)
    assert message.payload == "after"
    await ack(message)


# -- one mailbox ----------------------------------------------------------------------------


async def test_a_mailbox_nobody_sent_to_reads_as_empty(channels: ChannelFactory) -> None:
    channel = channels("fresh")
    info = await channel.inspect()
    assert info == MailboxInfo(
        key=channel.key, length=0, groups=(), delayed=0, dead_letters=0, counters={}
    )
    assert info.pending == 0
    assert info.consumers == ()


async def test_length_and_pending_are_reported_per_consumer_with_idle_seconds(
    channels: ChannelFactory, raw: Redis
) -> None:
    first = channels("work", consumer="first", prefetch=2)
    second = channels("work", consumer="second", prefetch=1)
    for number in range(5):
        await first.send(ChannelMessage(number))
    await receive(first)  # reads two entries into its buffer: both pending for "first"
    await receive(second)
    info = await inspect_mailbox(raw, first.key)
    assert info.length == 5
    assert info.pending == 3
    (group,) = info.groups
    assert group.name == "workers"
    assert group.pending == 3
    assert [(c.name, c.pending) for c in group.consumers] == [("first", 2), ("second", 1)]
    assert all(isinstance(c.idle, float) and 0 <= c.idle < 60 for c in group.consumers)
    assert info.consumers == group.consumers


async def test_lag_counts_the_entries_not_delivered_to_the_group_yet(
    channels: ChannelFactory, raw: Redis
) -> None:
    channel = channels(prefetch=2)
    for number in range(5):
        await channel.send(ChannelMessage(number))
    message = await receive(channel)
    (group,) = (await inspect_mailbox(raw, channel.key)).groups
    assert group.lag == 3
    second = await receive(channel)
    assert group.last_delivered == second.metadata["stream_entry"]
    await ack(message)
    await ack(second)  # with the buffer empty, this ack reads the next two along
    (group,) = (await inspect_mailbox(raw, channel.key)).groups
    assert (group.lag, group.pending) == (1, 2)


async def test_lag_is_counted_from_whichever_side_of_the_last_delivery_is_short(
    channels: ChannelFactory, raw: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inspection, "_LAG_COUNT_LIMIT", 2)
    channel = channels(prefetch=1)
    for number in range(6):
        await channel.send(ChannelMessage(number))
    await receive(channel)  # 1 delivered, 5 not: counted as the length minus the 1
    (group,) = (await inspect_mailbox(raw, channel.key)).groups
    assert group.lag == 5
    greedy = channels(consumer="greedy", prefetch=3)
    await receive(greedy)  # 4 delivered, 2 not: counted directly
    (group,) = (await inspect_mailbox(raw, channel.key)).groups
    assert group.lag == 2


async def test_lag_is_unknown_when_both_sides_are_too_long_to_count(
    channels: ChannelFactory, raw: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inspection, "_LAG_COUNT_LIMIT", 2)
    channel = channels(prefetch=3)
    for number in range(6):
        await channel.send(ChannelMessage(number))
    await receive(channel)
    (group,) = (await inspect_mailbox(raw, channel.key)).groups
    server: Any = await raw.info("server")
    if int(server["redis_version"].split(".")[0]) >= 7:
        assert group.lag == 3  # Redis 7 counts it itself: nothing to read
    else:
        assert group.lag is None
    assert group.pending == 3


async def test_one_mailbox_is_read_in_one_script_call(
    channels: ChannelFactory, raw: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    channel = channels(prefetch=2)
    for number in range(3):
        await channel.send(ChannelMessage(number), delay=3600 if number == 2 else None)
    await channel.dead_letter(await receive(channel), reason="process", error="no")
    await inspect_mailbox(raw, channel.key)  # loads the script
    with commands_sent(monkeypatch) as sent:
        info = await inspect_mailbox(raw, channel.key)
    assert sent == ["EVALSHA"]  # no MULTI, no XINFO of its own: one atomic read
    assert (info.length, info.pending, info.delayed, info.dead_letters) == (1, 1, 1, 1)


async def test_a_reading_under_concurrent_sends_receives_and_acks_is_of_one_instant(
    channels: ChannelFactory, raw: Redis
) -> None:
    # One consumer acking in order: every entry of the stream is either not delivered yet
    # (lag) or pending; acked ones are trimmed in the same step. Figures read at one
    # instant always add up; read in several round trips, they drift apart.
    producer, consumer = channels("busy"), channels("busy", prefetch=5)
    readings: list[MailboxInfo] = []
    sent = 0

    async def produce() -> None:
        nonlocal sent
        while True:
            for _ in range(5):
                await producer.send(ChannelMessage(sent))
                sent += 1

    async def consume() -> None:
        while True:
            await consumer.ack_batch(await consumer.take(5))

    with anyio.fail_after(30):
        await producer.send(ChannelMessage("first"))
        await ack(await receive(consumer))  # the group exists from here on
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(produce)
            tasks.start_soon(consume)
            readings += [await inspect_mailbox(raw, producer.key) for _ in range(200)]
            tasks.cancel_scope.cancel()
    assert sent > 0
    for info in readings:
        (group,) = info.groups
        assert group.lag is not None
        assert info.length == group.pending + group.lag, info
        assert group.pending == sum(c.pending for c in group.consumers), info


async def test_several_mailboxes_are_read_in_one_script_call_in_the_order_given(
    channels: ChannelFactory, raw: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = channels("{shop}:first"), channels("{shop}:second")
    await second.send(ChannelMessage(1))
    await second.send(ChannelMessage(2))
    await inspect_mailboxes(raw, [first.key])  # loads the script
    with commands_sent(monkeypatch) as sent:
        infos = await inspect_mailboxes(raw, [second.key, first.key])
    assert sent == ["EVALSHA"]
    assert [(info.key, info.length) for info in infos] == [(second.key, 2), (first.key, 0)]
    assert await inspect_mailboxes(raw, []) == []


async def test_a_namespace_is_read_a_hash_tag_at_a_time(
    channels: ChannelFactory, raw: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("{shop}:a", "{shop}:b", "orders"):
        await channels(name).send(ChannelMessage(name))
    await inspect_mailboxes(raw, [])  # nothing sent: the script is loaded below
    await inspect_namespace(raw, channels.namespace)  # loads the script
    with commands_sent(monkeypatch) as sent:
        infos = await inspect_namespace(raw, channels.namespace)
    assert [info.length for info in infos] == [1, 1, 1]
    assert sent.count("EVALSHA") == 2  # {shop}'s two mailboxes together, then {orders}


async def test_counters_follow_sends_acks_dead_letters_and_duplicates(
    channels: ChannelFactory, raw: Redis
) -> None:
    channel = channels()
    for number in range(3):
        await channel.send(ChannelMessage(number))
    await channel.send(ChannelMessage(0, {"idempotency_key": "once"}))
    await channel.send(ChannelMessage(0, {"idempotency_key": "once"}))
    acked = await receive(channel)
    await ack(acked)
    await channel.dead_letter(await receive(channel), reason="process", error="no")
    info = await inspect_mailbox(raw, channel.key)
    assert info.counters == {"sent": 4, "duplicates": 1, "acked": 1, "dead_lettered": 1}
    assert info.length == 2
    assert info.dead_letters == 1


async def test_delayed_messages_are_counted_apart_until_they_are_due(
    channels: ChannelFactory, raw: Redis
) -> None:
    channel = channels()
    await channel.send(ChannelMessage("later"), delay=3600)
    info = await inspect_mailbox(raw, channel.key)
    assert (info.delayed, info.length) == (1, 0)
    assert info.counters == {"delayed": 1}


async def test_a_channel_inspects_the_shared_mailbox_not_its_own_buffer(
    channels: ChannelFactory, raw: Redis
) -> None:
    sender, receiver = channels("shared"), channels("shared", prefetch=10)
    for number in range(3):
        await sender.send(ChannelMessage(number))
    await receive(receiver)
    mine, theirs = await sender.inspect(), await inspect_mailbox(raw, sender.key)
    assert (mine.key, mine.length, mine.pending, mine.counters) == (sender.key, 3, 3, {"sent": 3})
    assert [c.name for c in mine.consumers] == [c.name for c in theirs.consumers]
    assert sender.statistics().received == 0  # its own counts: it received nothing


async def test_a_key_that_is_not_a_stream_is_refused(channels: ChannelFactory, raw: Redis) -> None:
    key = f"{channels.namespace}:{{plain}}"
    await raw.set(key, "1")
    with pytest.raises(ValueError, match="is a Redis string, not a mailbox's stream"):
        await inspect_mailbox(raw, key)


async def test_a_client_that_decodes_responses_is_refused(redis_url: str) -> None:
    client = raw_client(redis_url, decode_responses=True)
    try:
        with pytest.raises(ValueError, match="decode_responses=False"):
            await inspect_mailbox(client, "spark_nodes:{x}")
    finally:
        await client.aclose()
    with pytest.raises(TypeError, match=r"redis\.asyncio\.Redis"):
        await find_mailboxes("redis://localhost")  # type: ignore[arg-type]


async def test_an_unreachable_server_raises_channel_unavailable(refusing_url: str) -> None:
    async with open_raw_client(refusing_url) as client:
        with pytest.raises(ChannelUnavailable, match="could not be reached after 3 tries"):
            await inspect_mailbox(client, "spark_nodes:{x}", retry=FAST_RETRY)


# -- a namespace ----------------------------------------------------------------------------


async def test_a_namespace_lists_its_mailboxes_without_dead_letter_streams_or_graph_keys(
    channels: ChannelFactory, raw: Redis
) -> None:
    orders, billing = channels("orders"), channels("{shop}:billing")
    await dead_letter_one(orders, "bad")
    await billing.send(ChannelMessage("invoice"))
    namespace = channels.namespace
    await raw.hset(f"{namespace}:{{shop}}#graph", "nodes", "1")
    await raw.xadd(f"{namespace}:{{shop}}#state:log", {"v": "1"})  # a stream, not a mailbox
    await raw.set(f"{namespace}:{{shop}}#result:billing", "1")
    other = new_namespace()
    try:
        await raw.xadd(f"{other}:{{orders}}", {"m": encode(ChannelMessage(1))})
        assert await find_mailboxes(raw, namespace) == sorted([orders.key, billing.key])
        infos = await inspect_namespace(raw, namespace)
    finally:
        await purge(raw, other)
    assert [info.key for info in infos] == sorted([orders.key, billing.key])
    by_key = {info.key: info for info in infos}
    assert by_key[orders.key].dead_letters == 1
    assert by_key[billing.key].length == 1


async def test_a_namespace_with_glob_characters_matches_only_itself(
    redis_url: str, raw: Redis
) -> None:
    base = new_namespace()
    special, lookalike = f"{base}[1]*", f"{base}1x"
    try:
        async with (
            RedisChannel(redis_url, "box", namespace=special) as mine,
            RedisChannel(redis_url, "box", namespace=lookalike) as theirs,
        ):
            await mine.send(ChannelMessage(1))
            await theirs.send(ChannelMessage(2))
            assert await find_mailboxes(raw, special) == [mine.key]
    finally:
        await purge(raw, base)


async def test_a_namespace_lists_only_streams_with_a_mailboxs_layout(
    channels: ChannelFactory, raw: Redis
) -> None:
    namespace = channels.namespace
    sent_to = channels("{shop}:billing")
    await sent_to.send(ChannelMessage("invoice"))  # a stream and its counters
    received_from = channels("{shop}:idle")
    with anyio.move_on_after(0.2):  # nothing to receive: only the group is made
        await received_from.receive()
    named_dead = channels("{shop}:dead")  # a node called "dead" is a mailbox too
    await named_dead.send(ChannelMessage(1))
    await dead_letter_one(sent_to, "bad")  # {shop}:billing:dead: its dead letters
    envelope = {"m": encode(ChannelMessage(1))}
    reply = f"{namespace}:{{shop}}:invoke:{'ab' * 16}"  # a graph's invoke reply stream
    await raw.xadd(reply, envelope)  # type: ignore[arg-type]
    await raw.xgroup_create(reply, "workers", id="0")
    await raw.hset(f"{reply}:stats", "sent", 1)
    await raw.xadd(f"{namespace}:{{mine}}:events", {"v": "1"})  # a stream of one's own
    await raw.xadd(f"{namespace}:plain", envelope)  # type: ignore[arg-type]
    await raw.xgroup_create(f"{namespace}:plain", "workers", id="0")  # no hash tag
    keys = [sent_to.key, received_from.key, named_dead.key]
    assert await find_mailboxes(raw, namespace) == sorted(keys)
    assert [info.key for info in await inspect_namespace(raw, namespace)] == sorted(keys)


async def test_find_mailboxes_by_hash_tag_lists_a_graphs_mailboxes_only(
    channels: ChannelFactory, raw: Redis
) -> None:
    for name in ("{shop}:a", "{shop}:b", "{shopping}:c", "shop"):
        await channels(name).send(ChannelMessage(name))
    namespace = channels.namespace
    assert await find_mailboxes(raw, namespace, tag="shop") == [
        f"{namespace}:{{shop}}",
        f"{namespace}:{{shop}}:a",
        f"{namespace}:{{shop}}:b",
    ]


async def test_an_empty_namespace_has_no_mailboxes(raw: Redis) -> None:
    assert await inspect_namespace(raw, new_namespace()) == []


# -- dead letters ---------------------------------------------------------------------------


async def test_a_dead_letter_carries_why_and_decodes_to_the_original_message(
    channels: ChannelFactory, raw: Redis
) -> None:
    channel = channels(consumer="pricer-1")
    original = ChannelMessage({"order": 7}, {"trace_id": "t-7"})
    await channel.send(original)
    message = await receive(channel)
    before = time.time()
    await channel.dead_letter(
        message, reason="process", error="ValueError: bad\nmore", details={"node": "pricer"}
    )
    (letter,) = await dead_letters(raw, channel.key)
    assert letter.mailbox == channel.key
    assert (letter.reason, letter.error) == ("process", "ValueError: bad\nmore")
    assert letter.entry == message.metadata["stream_entry"]
    assert (letter.deliveries, letter.consumer) == (1, "pricer-1")
    assert letter.details == {"node": "pricer"}
    assert letter.fields == {}
    assert letter.time is not None
    assert before - 1 <= letter.time <= time.time() + 1
    assert letter.data == encode(original)
    decoded = letter.message
    assert decoded is not None
    assert (decoded.id, decoded.payload, decoded.metadata) == (
        original.id,
        {"order": 7},
        {"trace_id": "t-7"},
    )


async def test_foreign_and_undecodable_dead_letters_have_no_message(
    channels: ChannelFactory, raw: Redis
) -> None:
    channel = channels()
    await dead_letter_foreign(channel, raw, {"junk": b"\xff\x00"})
    await dead_letter_foreign(channel, raw, {"m": b"\xc1 not msgpack"})
    foreign, garbage = await dead_letters(raw, channel.key)
    assert foreign.reason == "not_an_envelope"
    assert foreign.fields == {"junk": b"\xff\x00"}
    assert (foreign.data, foreign.message) == (b"", None)
    assert garbage.reason == "undecodable"
    assert (garbage.data, garbage.message) == (b"\xc1 not msgpack", None)


async def test_dead_letters_page_oldest_first(channels: ChannelFactory, raw: Redis) -> None:
    channel = channels()
    for number in range(5):
        await dead_letter_one(channel, number)
    pages: list[list[DeadLetter]] = []
    after = None
    while page := await dead_letters(raw, channel.key, count=2, after=after):
        pages.append(page)
        after = page[-1].id
    assert [len(page) for page in pages] == [2, 2, 1]
    letters = [letter for page in pages for letter in page]
    assert [letter.message.payload for letter in letters if letter.message] == [0, 1, 2, 3, 4]
    assert letters == await dead_letters(raw, channel.key)


async def test_dead_letter_arguments_are_checked(channels: ChannelFactory, raw: Redis) -> None:
    key = channels().key
    with pytest.raises(ValueError, match="count must be an int >= 1"):
        await dead_letters(raw, key, count=0)
    with pytest.raises(ValueError, match="not a stream entry id"):
        await dead_letters(raw, key, after="1700000000000")  # a bare time is a range, not an id
    with pytest.raises(ValueError, match="not a stream entry id"):
        await replay_dead_letter(raw, key, "nonsense")
    with pytest.raises(ValueError, match="not a stream entry id"):
        await drop_dead_letter(raw, key, "1-0-0")


async def test_a_replayed_dead_letter_is_received_again_as_the_original_message(
    channels: ChannelFactory, raw: Redis
) -> None:
    channel = channels()
    original = ChannelMessage({"order": 9}, {"trace_id": "t-9"})
    await channel.send(original)
    await channel.dead_letter(await receive(channel), reason="process", error="flaky")
    (letter,) = await dead_letters(raw, channel.key)
    assert await replay_dead_letter(raw, channel.key, letter.id)
    assert await dead_letters(raw, channel.key) == []
    again = await receive(channel)
    assert (again.id, again.payload) == (original.id, {"order": 9})
    assert again.metadata["trace_id"] == "t-9"
    assert again.metadata["delivery_count"] == 1
    await ack(again)
    info = await inspect_mailbox(raw, channel.key)
    assert info.counters["replayed"] == 1
    assert (info.length, info.dead_letters) == (0, 0)
    assert not await replay_dead_letter(raw, channel.key, letter.id)  # once only


async def test_a_dead_letter_without_an_envelope_cannot_be_replayed(
    channels: ChannelFactory, raw: Redis
) -> None:
    channel = channels()
    await dead_letter_foreign(channel, raw, {"junk": b"1"})
    (letter,) = await dead_letters(raw, channel.key)
    with pytest.raises(ValueError, match="has no envelope to replay"):
        await replay_dead_letter(raw, channel.key, letter.id)
    assert await dead_letters(raw, channel.key) == [letter]


async def test_a_dropped_dead_letter_is_gone_and_the_others_stay(
    channels: ChannelFactory, raw: Redis
) -> None:
    channel = channels()
    await dead_letter_one(channel, "first")
    await dead_letter_one(channel, "second")
    first, second = await dead_letters(raw, channel.key)
    assert await drop_dead_letter(raw, channel.key, first.id)
    assert await dead_letters(raw, channel.key) == [second]
    assert not await drop_dead_letter(raw, channel.key, first.id)


async def test_an_unknown_dead_letter_is_neither_replayed_nor_dropped(
    channels: ChannelFactory, raw: Redis
) -> None:
    channel = channels()
    await dead_letter_one(channel, "kept")
    assert not await replay_dead_letter(raw, channel.key, "1-0")
    assert not await drop_dead_letter(raw, channel.key, "1-0")
    assert len(await dead_letters(raw, channel.key)) == 1


def test_consumer_info_is_a_frozen_value() -> None:
    consumer = ConsumerInfo("a", 1, 0.5)
    with pytest.raises(AttributeError):
        consumer.pending = 2  # type: ignore[misc]
    assert consumer == ConsumerInfo("a", 1, 0.5)


async def test_a_graphs_dead_letter_gives_its_error_type_and_attempts(
    channels: ChannelFactory, raw: Redis
) -> None:
    channel = channels()
    await channel.send(ChannelMessage(1))
    await channel.dead_letter(
        await receive(channel),
        reason="process",
        error="bad order",
        details={"error_type": "builtins.ValueError", "attempts": 3, "node": "pricer"},
    )
    await dead_letter_one(channel, 2, error="boom")
    graphs, plain = await dead_letters(raw, channel.key)
    assert (graphs.error, graphs.error_type, graphs.attempts) == (
        "bad order",
        "builtins.ValueError",
        3,
    )
    assert graphs.details["attempts"] == "3"  # details stay text, as stored
    assert (plain.error_type, plain.attempts) == (None, None)
