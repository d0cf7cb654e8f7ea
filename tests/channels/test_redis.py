"""RedisChannel against a real Redis server (never a mock)."""

from __future__ import annotations

from typing import Any

import anyio
import msgpack
import pytest
from redis.asyncio import Redis
from structlog.testing import capture_logs

from spark_nodes.channels import (
    BaseChannel,
    ChannelClosed,
    ChannelFull,
    ChannelMessage,
    ChannelUnavailable,
    LeaseLost,
    MessageEncodeError,
    MessageTooLarge,
    RedisChannel,
)
from spark_nodes.channels.codec import encode
from spark_nodes.channels.redis import MailboxKeys, stream_key
from spark_nodes.channels.redis._layout import Settings
from spark_nodes.channels.redis._outbox import Outbox
from spark_nodes.channels.redis._scripts import Scripts
from spark_nodes.testing import RecordingObserver, open_redis_server
from tests.redis_support import FAST_RETRY, ChannelFactory, new_namespace, purge, raw_client

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # redis-py is asyncio only


async def receive(channel: RedisChannel, within: float = 5.0) -> ChannelMessage:
    with anyio.fail_after(within):
        return await channel.receive()


async def ack(message: ChannelMessage) -> None:
    assert message.ack is not None
    await message.ack()


async def dead_letters(raw: Redis, channel: RedisChannel) -> list[dict[bytes, bytes]]:
    entries: Any = await raw.xrange(f"{channel.key}:dead")
    return [fields for _id, fields in entries]


async def stats(raw: Redis, channel: RedisChannel) -> dict[str, int]:
    counts: Any = await raw.hgetall(f"{channel.key}:stats")
    return {k.decode(): int(v) for k, v in counts.items()}


# -- keys and names ------------------------------------------------------------------------


def test_stream_keys_carry_one_hash_tag() -> None:
    assert stream_key("ns", "orders") == "ns:{orders}"
    assert stream_key("ns", "{shop}:orders") == "ns:{shop}:orders"
    assert stream_key("ns", "{}:orders") == "ns:{{}:orders}"  # an empty tag is no tag
    # Redis hashes the first {...} only: an empty one there makes a later one no tag either.
    assert stream_key("ns", "{}{shop}") == "ns:{{}{shop}}"


async def test_every_key_lives_under_the_namespace(channels: ChannelFactory, raw: Redis) -> None:
    channel = channels("orders")
    await channel.send(ChannelMessage(1, {"idempotency_key": "k"}))
    await channel.send(ChannelMessage(2), delay=60)
    message = await receive(channel)
    await ack(message)
    keys = [key.decode() async for key in raw.scan_iter(match="*")]
    ours = [key for key in keys if "{orders}" in key]
    assert ours
    assert all(key.startswith(f"{channels.namespace}:{{orders}}") for key in ours)


def test_bad_arguments_are_named() -> None:
    with pytest.raises(TypeError, match="either redis_url"):
        RedisChannel(channel_name="x")
    with pytest.raises(TypeError, match="channel_name"):
        RedisChannel("redis://localhost")
    with pytest.raises(ValueError, match="prefetch must be >= 1"):
        RedisChannel("redis://localhost", "x", prefetch=0)
    with pytest.raises(ValueError, match="visibility_timeout"):
        RedisChannel("redis://localhost", "x", visibility_timeout=float("inf"))
    with pytest.raises(TypeError, match="max_deliveries must be an int"):
        RedisChannel("redis://localhost", "x", max_deliveries=2.5)  # type: ignore[arg-type]


async def test_a_client_that_decodes_responses_is_refused(redis_url: str) -> None:
    client = raw_client(redis_url, decode_responses=True)
    try:
        with pytest.raises(ValueError, match="decode_responses=False"):
            RedisChannel(redis=client, channel_name="x")
    finally:
        await client.aclose()


# -- send, receive, ack --------------------------------------------------------------------


async def test_a_message_round_trips_with_its_id_metadata_and_an_ack(
    channels: ChannelFactory, raw: Redis
) -> None:
    channel = channels()
    sent = ChannelMessage({"order": 7, "items": [1, 2]}, {"trace_id": "t-1"})
    await channel.send(sent)
    got = await receive(channel)
    assert got.payload == {"order": 7, "items": [1, 2]}
    assert got.id == sent.id
    assert got.metadata["trace_id"] == "t-1"
    assert got.metadata["delivery_count"] == 1
    assert got.metadata["stream_entry"]
    assert got.ack is not None
    assert not got.acked
    await ack(got)
    assert got.acked
    assert await raw.xlen(channel.key) == 0  # acked entries are deleted: no unbounded growth
    assert await raw.xpending(channel.key, channel.group) == {
        "pending": 0,
        "min": None,
        "max": None,
        "consumers": [],
    }


async def test_one_consumer_receives_in_send_order(channels: ChannelFactory) -> None:
    channel = channels(prefetch=7)
    for number in range(50):
        await channel.send(ChannelMessage(number))
    got = []
    for _ in range(50):
        message = await receive(channel)
        got.append(message.payload)
        await ack(message)
    assert got == list(range(50))


async def test_each_message_goes_to_one_consumer_of_the_group(channels: ChannelFactory) -> None:
    sender = channels()
    first, second = channels(prefetch=3), channels(prefetch=3)
    for number in range(40):
        sender.send_nowait(ChannelMessage(number))
    await sender.flush()
    got: list[int] = []

    async def drain(channel: RedisChannel) -> None:
        while len(got) < 40:
            with anyio.move_on_after(0.3):
                message = await channel.receive()
                got.append(message.payload)
                await ack(message)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(drain, first)
            tasks.start_soon(drain, second)
    assert sorted(got) == list(range(40))
    assert first.statistics().received > 0
    assert second.statistics().received > 0


async def test_concurrent_sends_share_round_trips(channels: ChannelFactory, raw: Redis) -> None:
    channel = channels()
    await channel.send(ChannelMessage("warm-up"))  # loads the script
    before = await raw.info("commandstats")
    async with anyio.create_task_group() as tasks:
        for number in range(200):
            tasks.start_soon(channel.send, ChannelMessage(number))
    after = await raw.info("commandstats")
    calls = after["cmdstat_evalsha"]["calls"] - before["cmdstat_evalsha"]["calls"]
    assert calls <= 20, f"200 concurrent sends took {calls} round trips"
    assert await raw.xlen(channel.key) == 201


async def test_send_nowait_queues_here_until_flushed(channels: ChannelFactory, raw: Redis) -> None:
    seen = RecordingObserver()
    channel = channels(max_pending_sends=3, observers=[seen])
    for number in range(3):
        channel.send_nowait(ChannelMessage(number))
    with pytest.raises(ChannelFull, match="max_pending_sends"):
        channel.send_nowait(ChannelMessage(3))
    assert await raw.xlen(channel.key) == 0
    assert seen.phases == []  # "send" means written to Redis
    await channel.flush()
    assert await raw.xlen(channel.key) == 3
    assert seen.phases == ["send"] * 3


async def test_a_send_writes_what_send_nowait_queued_before_it(
    channels: ChannelFactory,
) -> None:
    channel = channels()
    channel.send_nowait(ChannelMessage("queued"))
    await channel.send(ChannelMessage("sent"))
    assert [(await receive(channel)).payload for _ in range(2)] == ["queued", "sent"]


async def test_receive_batch_and_ack_batch_take_one_round_trip_each(
    channels: ChannelFactory, raw: Redis
) -> None:
    channel = channels(prefetch=100)
    for number in range(30):
        channel.send_nowait(ChannelMessage(number))
    await channel.flush()
    batch = await channel.receive_batch(100)
    assert [m.payload for m in batch] == list(range(30))
    assert await channel.ack_batch(batch) == 30
    assert all(message.acked for message in batch)
    assert await raw.xlen(channel.key) == 0
    await ack(batch[0])  # already acked: nothing happens
    assert (await stats(raw, channel))["acked"] == 30


async def test_an_ack_that_empties_the_buffer_reads_the_next_entries_along(
    channels: ChannelFactory, raw: Redis
) -> None:
    channel = channels(prefetch=3)
    for number in range(6):
        await channel.send(ChannelMessage(number))
    first = await channel.receive_batch(3)
    before = await raw.info("commandstats")
    await channel.ack_batch(first)  # the ack's round trip also reads entries 3, 4, 5
    second = await channel.receive_batch(3)  # from the buffer: no round trip
    after = await raw.info("commandstats")
    assert [m.payload for m in second] == [3, 4, 5]
    reads = after["cmdstat_xreadgroup"]["calls"] - before["cmdstat_xreadgroup"]["calls"]
    assert reads == 1


async def test_aclose_gives_back_prefetched_messages(channels: ChannelFactory) -> None:
    leaving = channels(prefetch=5, visibility_timeout=30)
    for number in range(3):
        await leaving.send(ChannelMessage(number))
    await ack(await receive(leaving))  # 1 and 2 stay prefetched
    await leaving.aclose()
    staying = channels(visibility_timeout=30)
    got = [await receive(staying, within=10) for _ in range(2)]  # not after 30 s
    assert [m.payload for m in got] == [1, 2]


async def test_ack_batch_refuses_messages_from_elsewhere(channels: ChannelFactory) -> None:
    channel = channels()
    with pytest.raises(ValueError, match="was not received from"):
        await channel.ack_batch([ChannelMessage("stranger")])


# -- closing ---------------------------------------------------------------------------------


async def test_close_refuses_sends_and_ends_receiving_after_the_buffer(
    channels: ChannelFactory,
) -> None:
    channel = channels(prefetch=10)
    for number in range(3):
        await channel.send(ChannelMessage(number))
    first = await receive(channel)  # the other two are buffered now
    channel.close()
    with pytest.raises(ChannelClosed):
        await channel.send(ChannelMessage("late"))
    with pytest.raises(ChannelClosed):
        channel.send_nowait(ChannelMessage("late"))
    rest = [await receive(channel), await receive(channel)]
    assert [m.payload for m in [first, *rest]] == [0, 1, 2]
    with pytest.raises(ChannelClosed):
        await receive(channel)


async def test_close_wakes_a_receiver_blocked_on_an_empty_stream(
    channels: ChannelFactory,
) -> None:
    channel = channels(block=0.05)
    outcome: list[str] = []

    async def wait() -> None:
        try:
            await channel.receive()
        except ChannelClosed:
            outcome.append("closed")

    with anyio.fail_after(10):  # a hang, not a speed: Redis round trips on a loaded machine
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            channel.close()
    assert outcome == ["closed"]


async def test_aclose_writes_queued_sends(redis_url: str, raw: Redis) -> None:
    namespace = new_namespace()
    async with RedisChannel(redis_url, "box", namespace=namespace) as channel:
        channel.send_nowait(ChannelMessage("queued"))
    assert await raw.xlen(channel.key) == 1
    await purge(raw, namespace)


async def test_a_shared_client_stays_open(redis_url: str, raw: Redis) -> None:
    namespace = new_namespace()
    client = raw_client(redis_url)
    try:
        channel = RedisChannel(redis=client, channel_name="box", namespace=namespace)
        await channel.send(ChannelMessage(1))
        await channel.aclose()
        assert await client.ping()
    finally:
        await client.aclose()
        await purge(raw, namespace)


# -- bad input: refused at send, nothing written ---------------------------------------------


async def test_an_unencodable_payload_fails_at_send_naming_the_path(
    channels: ChannelFactory, raw: Redis
) -> None:
    channel = channels()
    with pytest.raises(MessageEncodeError, match=r'payload\["when"\]: object'):
        await channel.send(ChannelMessage({"when": object()}))
    assert await raw.exists(channel.key) == 0


async def test_a_message_over_max_message_bytes_fails_at_send(
    channels: ChannelFactory, raw: Redis
) -> None:
    channel = channels(max_message_bytes=1000)
    with pytest.raises(MessageTooLarge, match="max_message_bytes=1000"):
        await channel.send(ChannelMessage(b"x" * 2000))
    with pytest.raises(MessageTooLarge):
        channel.send_nowait(ChannelMessage(b"x" * 2000))
    assert await raw.exists(channel.key) == 0


async def test_a_bad_idempotency_key_or_delay_fails_at_send(channels: ChannelFactory) -> None:
    channel = channels()
    with pytest.raises(ValueError, match="idempotency_key"):
        await channel.send(ChannelMessage(1, {"idempotency_key": 42}))
    with pytest.raises(ValueError, match="delay"):
        await channel.send(ChannelMessage(1), delay=-1)


async def test_sending_something_else_than_a_message_is_a_type_error(
    channels: ChannelFactory,
) -> None:
    channel = channels()
    with pytest.raises(TypeError, match="wrap the value"):
        await channel.send("text")  # type: ignore[arg-type]


# -- bad input: dead-lettered at receive, the next message still comes -----------------------

GOOD = encode(ChannelMessage("after"))
FOREIGN: list[tuple[str, dict[Any, Any]]] = [
    ("garbage", {"m": b"\xc1\xc1 not msgpack"}),
    ("truncated", {"m": encode(ChannelMessage("x" * 50))[:-10]}),
    ("trailing", {"m": GOOD + b"\x00"}),
    ("not an envelope", {"m": msgpack.packb([1, 2, 3])}),
    (
        "unknown version",
        {"m": msgpack.packb({"v": 99, "id": "x", "payload": 1, "metadata": {}, "shutdown": False})},
    ),
    ("no m field", {"other": b"value"}),
    ("too large", {"m": b"\x00" * 5000}),
]


@pytest.mark.parametrize(("case", "fields"), FOREIGN, ids=[case for case, _ in FOREIGN])
async def test_a_bad_entry_is_dead_lettered_with_why_and_its_bytes(
    channels: ChannelFactory, raw: Redis, case: str, fields: dict[Any, Any]
) -> None:
    channel = channels(max_message_bytes=4000)
    await raw.xadd(channel.key, fields)
    await raw.xadd(channel.key, {"m": GOOD})
    with capture_logs() as logs:
        message = await receive(channel)
    assert message.payload == "after"
    await ack(message)
    (letter,) = await dead_letters(raw, channel)
    assert letter[b"reason"] in {b"undecodable", b"not_an_envelope", b"too_large"}
    assert letter[b"error"]
    if "m" in fields:
        assert letter[b"m"] == fields["m"]  # the original bytes, kept as they were
    else:
        assert letter[b"field:other"] == b"value"
    assert await raw.xlen(channel.key) == 0
    assert any(log["event"] == "entry dead-lettered" for log in logs)


# -- redelivery, leases, poison ------------------------------------------------------------


async def test_an_unacked_message_is_reclaimed_after_the_visibility_timeout(
    channels: ChannelFactory,
) -> None:
    stalled = channels(consumer="stalled", visibility_timeout=0.2)
    healthy = channels(consumer="healthy", visibility_timeout=0.2)
    await stalled.send(ChannelMessage("work"))
    first = await receive(stalled)
    second = await receive(healthy)  # waits until the lease has expired, then claims it
    assert second.payload == "work"
    assert second.metadata["delivery_count"] == 2
    with pytest.raises(LeaseLost, match="no longer held"):
        await ack(first)  # the stale worker's ack is rejected
    assert not first.acked
    await ack(second)
    assert second.acked


async def test_a_fenced_ack_rejects_a_stale_worker_after_its_own_reclaim(
    channels: ChannelFactory,
) -> None:
    # The same consumer name reclaims its own entry (a restart): the old delivery is stale.
    worker = channels(consumer="w", visibility_timeout=0.1)
    await worker.send(ChannelMessage("work"))
    old = await receive(worker)
    restarted = channels(consumer="w", visibility_timeout=0.1)
    again = await receive(restarted)
    assert again.metadata["delivery_count"] == 2
    with pytest.raises(LeaseLost):
        await ack(old)
    await ack(again)


async def test_a_restarted_consumer_finishes_its_own_entries_first(
    channels: ChannelFactory,
) -> None:
    before = channels(consumer="pod-1", prefetch=2)
    for number in range(4):
        await before.send(ChannelMessage(number))
    taken = await receive(before)  # entries 0 and 1 are now pending for pod-1
    assert taken.payload == 0
    after = channels(consumer="pod-1", prefetch=2)  # the same pod, restarted
    got = [await receive(after) for _ in range(4)]
    assert [m.payload for m in got] == [0, 1, 2, 3]
    assert [m.metadata["delivery_count"] for m in got] == [2, 2, 1, 1]


async def test_a_poison_message_is_dead_lettered_after_max_deliveries(
    channels: ChannelFactory, raw: Redis
) -> None:
    options: dict[str, Any] = {"visibility_timeout": 0.1, "max_deliveries": 3, "prefetch": 1}
    await channels(**options).send(ChannelMessage("poison"))
    for delivery in range(1, 4):
        worker = channels(**options)  # each delivery "kills" its worker: a new consumer
        message = await receive(worker)
        assert message.metadata["delivery_count"] == delivery
    sender = channels(**options)
    await sender.send(ChannelMessage("healthy"))
    survivor = channels(**options, block=0.02)
    message = await receive(survivor)
    assert message.payload == "healthy"
    await ack(message)
    with anyio.fail_after(5):  # the poison's last lease expires, then the next claim judges it
        while not await dead_letters(raw, survivor):
            with anyio.move_on_after(0.05):
                unexpected = await survivor.receive()
                pytest.fail(f"the poison message was delivered again: {unexpected}")
    (letter,) = await dead_letters(raw, survivor)
    assert letter[b"reason"] == b"max_deliveries"
    assert b"delivered 3 times" in letter[b"error"]
    assert letter[b"m"] == encode(ChannelMessage("poison", id=letter_id(letter)))
    assert (await stats(raw, survivor))["dead_lettered"] == 1


def letter_id(letter: dict[bytes, bytes]) -> str:
    envelope = msgpack.unpackb(letter[b"m"])
    identifier: str = envelope["id"]
    return identifier


async def test_reclaim_judges_each_entry_on_its_own_delivery_count(
    channels: ChannelFactory, raw: Redis
) -> None:
    options: dict[str, Any] = {"visibility_timeout": 0.1, "max_deliveries": 2}
    sender = channels(**options)
    await sender.send(ChannelMessage("poison"))
    for _ in range(2):  # two deliveries, never acked
        await receive(channels(**options, prefetch=1))
    for number in range(3):
        await sender.send(ChannelMessage(number))
    holder = channels(**options)
    held = [await receive(holder) for _ in range(3)]  # delivery 1 of the healthy ones
    assert [m.payload for m in held] == [0, 1, 2]
    rescuer = channels(**options)
    rescued = [await receive(rescuer) for _ in range(3)]
    assert sorted(m.payload for m in rescued) == [0, 1, 2]
    assert all(m.metadata["delivery_count"] == 2 for m in rescued)
    (letter,) = await dead_letters(raw, rescuer)
    assert msgpack.unpackb(letter[b"m"])["payload"] == "poison"


async def test_renewed_leases_are_not_reclaimed(channels: ChannelFactory) -> None:
    slow = channels(consumer="slow", visibility_timeout=0.3)
    other = channels(consumer="other", visibility_timeout=0.3, block=0.05)
    await slow.send(ChannelMessage("long job"))
    job = await receive(slow)
    for _ in range(4):  # 0.6 s of work, past the timeout, renewing every 0.15 s
        await anyio.sleep(0.15)
        assert await slow.renew_leases() == 1
        with anyio.move_on_after(0.01):
            stolen = await other.receive()
            pytest.fail(f"a renewed lease was reclaimed: {stolen}")
    await ack(job)
    assert job.acked


async def test_released_entries_go_to_others_at_once_without_a_delivery(
    channels: ChannelFactory,
) -> None:
    leaving = channels(consumer="leaving", prefetch=5, visibility_timeout=30)
    staying = channels(consumer="staying", visibility_timeout=30)
    for number in range(3):
        await leaving.send(ChannelMessage(number))
    first = await receive(leaving)  # 1 and 2 are prefetched
    await ack(first)
    assert await leaving.release_buffered() == 2
    got = [await receive(staying, within=10) for _ in range(2)]
    assert [m.payload for m in got] == [1, 2]
    assert [m.metadata["delivery_count"] for m in got] == [1, 1]


async def test_dead_letter_moves_a_received_message_with_details(
    channels: ChannelFactory, raw: Redis
) -> None:
    channel = channels()
    await channel.send(ChannelMessage({"bad": True}))
    message = await receive(channel)
    await channel.dead_letter(message, reason="process", error="ValueError: no", details={"n": 3})
    assert message.acked
    (letter,) = await dead_letters(raw, channel)
    assert letter[b"reason"] == b"process"
    assert letter[b"error"] == b"ValueError: no"
    assert letter[b"detail:n"] == b"3"
    assert await raw.xlen(channel.key) == 0


async def test_dead_letter_retention_is_bounded(channels: ChannelFactory, raw: Redis) -> None:
    channel = channels(dead_letter_maxlen=10, prefetch=50)
    for _ in range(400):
        await raw.xadd(channel.key, {"junk": b"1"})
    await raw.xadd(channel.key, {"m": GOOD})
    with capture_logs():
        message = await receive(channel, within=20)
    assert message.payload == "after"
    # Trimming is approximate (whole stream nodes, 100 entries each): far below 400.
    assert await raw.xlen(f"{channel.key}:dead") <= 110


# -- idempotency and delays ----------------------------------------------------------------


async def test_an_idempotency_key_drops_duplicates_within_the_window(
    channels: ChannelFactory, raw: Redis
) -> None:
    # A window of 1 s, not 0.3: every send below must land within it, which on a loaded
    # machine can take longer than 0.3 s.
    channel = channels(idempotency_window=1.0)
    for _ in range(3):
        await channel.send(ChannelMessage("charge", {"idempotency_key": "order-1"}))
    async with anyio.create_task_group() as tasks:  # concurrent ones too
        for _ in range(5):
            tasks.start_soon(channel.send, ChannelMessage("charge", {"idempotency_key": "o-2"}))
    assert await raw.xlen(channel.key) == 2
    assert (await stats(raw, channel))["duplicates"] == 6
    await anyio.sleep(1.1)  # the window is the server's: wait it out
    await channel.send(ChannelMessage("charge", {"idempotency_key": "order-1"}))
    assert await raw.xlen(channel.key) == 3


async def test_a_delayed_message_arrives_when_due_not_before(channels: ChannelFactory) -> None:
    channel = channels(block=0.02)
    sent = anyio.current_time()
    await channel.send(ChannelMessage("later"), delay=0.4)
    await channel.send(ChannelMessage("now"))
    assert (await receive(channel)).payload == "now"
    # Look until 0.1 s before it is due, however long the sends and the first receive
    # took on a loaded machine (a fixed 0.2 s window could reach past the due time).
    with anyio.move_on_after(max(0.0, sent + 0.3 - anyio.current_time())):
        early = await channel.receive()
        pytest.fail(f"delivered before it was due: {early}")
    assert (await receive(channel)).payload == "later"


# -- retries and a server that is down -----------------------------------------------------


async def test_a_retried_batch_is_written_once(raw: Redis) -> None:
    # The outcome of a try that lost its connection is unknown: the retry repeats the
    # batch with the same sequence numbers, and Redis keeps the first.
    key = stream_key("retry", new_namespace())
    settings = Settings.check(
        prefetch=10, block=0.1, visibility_timeout=30, max_deliveries=3,
        max_message_bytes=1 << 20, dead_letter_maxlen=None, idempotency_window=60,
        max_pending_sends=100, send_batch=100,
    )  # fmt: skip

    async def written(messages: list[ChannelMessage]) -> None:
        del messages

    outbox = Outbox(
        name="box", keys=MailboxKeys.of(key), scripts=Scripts(raw), settings=settings,
        retry=FAST_RETRY, written=written,
    )  # fmt: skip
    batch = [outbox.prepare(ChannelMessage(p), None, nowait=True) for p in ("once", "twice?")]
    for item in batch:
        outbox.queue_nowait(item)
    await outbox.flush()
    for item in batch:  # the same batch again, as a retry would write it
        item.done = False
        outbox.queue_nowait(item)
    await outbox.flush()
    assert await raw.xlen(key) == 2


async def test_send_raises_channel_unavailable_when_redis_is_down() -> None:
    with open_redis_server() as server:
        channel = RedisChannel(server.url, "box", retry=FAST_RETRY)
        await channel.send(ChannelMessage("before"))
        server.stop()
        with pytest.raises(ChannelUnavailable, match="could not be reached after 3 tries"):
            await channel.send(ChannelMessage("during"))
        channel.send_nowait(ChannelMessage("queued while down"))
        with pytest.raises(ChannelUnavailable):
            await channel.flush()
        server.start()
        await channel.flush()  # kept, not dropped: written once the server is back
        got = [await receive(channel) for _ in range(2)]
        assert [m.payload for m in got] == ["before", "queued while down"]
        await channel.aclose()


async def test_receive_and_ack_raise_channel_unavailable_and_nothing_is_lost() -> None:
    with open_redis_server() as server:
        channel = RedisChannel(server.url, "box", retry=FAST_RETRY, visibility_timeout=0.2)
        await channel.send(ChannelMessage("work"))
        message = await receive(channel)
        server.stop()
        with pytest.raises(ChannelUnavailable):
            await ack(message)
        assert not message.acked
        with pytest.raises(ChannelUnavailable):
            await channel.receive()
        server.start()  # AOF: the unacked entry survived the restart
        other = RedisChannel(server.url, "box", retry=FAST_RETRY, visibility_timeout=0.2)
        again = await receive(other)
        assert again.payload == "work"
        await ack(again)
        await channel.aclose()
        await other.aclose()


# -- observers -----------------------------------------------------------------------------


async def test_observers_see_send_receive_and_ack(channels: ChannelFactory) -> None:
    seen = RecordingObserver()
    channel = channels(observers=[seen])
    await channel.send(ChannelMessage("a"))
    message = await receive(channel)
    await ack(message)
    assert seen.phases == ["send", "receive", "ack"]


async def test_an_observer_that_raises_is_logged_and_delivery_goes_on(
    channels: ChannelFactory,
) -> None:
    def broken(message: ChannelMessage, channel: BaseChannel, phase: str) -> None:
        raise RuntimeError("observer bug")

    async def broken_async(message: ChannelMessage, channel: BaseChannel, phase: str) -> Any:
        raise RuntimeError("async observer bug")

    channel = channels(observers=[broken, broken_async])
    with capture_logs() as logs:
        await channel.send(ChannelMessage("a"))
        message = await receive(channel)
        await ack(message)
    assert message.acked
    assert channel.statistics().observer_errors == 6
    assert sum(log["event"] == "observer failed" for log in logs) == 6


# -- statistics ----------------------------------------------------------------------------


async def test_statistics_count_this_channel_objects_traffic(channels: ChannelFactory) -> None:
    channel = channels(prefetch=5)
    for number in range(5):
        await channel.send(ChannelMessage(number))
    await receive(channel)
    statistics = channel.statistics()
    assert statistics.sent == 5
    assert statistics.received == 1
    assert statistics.depth == 4 == channel.qsize()
    assert not channel.empty()
    assert "buffered=4" in repr(channel)
