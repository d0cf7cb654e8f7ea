from __future__ import annotations

import asyncio
from typing import Any

import anyio
import pytest

from spark_nodes.channels import (
    ChannelClosed,
    ChannelFull,
    ChannelMessage,
    ChannelStatistics,
    InMemoryChannel,
)
from spark_nodes.testing import RecordingObserver

pytestmark = pytest.mark.anyio


def msg(payload: Any) -> ChannelMessage:
    return ChannelMessage(payload)


async def test_messages_come_out_in_the_order_they_went_in() -> None:
    channel = InMemoryChannel()
    for i in range(1000):
        await channel.send(msg(i))
    received = [(await channel.receive()).payload for _ in range(1000)]
    assert received == list(range(1000))


async def test_receive_returns_the_very_message_that_was_sent() -> None:
    channel = InMemoryChannel()
    message = msg({"data": "test"})
    await channel.send(message)
    assert await channel.receive() is message


@pytest.mark.parametrize(
    ("maxsize", "error", "text"),
    [
        (-1, ValueError, "maxsize must be >= 0"),
        (1.5, TypeError, "maxsize must be an int, not float"),
        (True, TypeError, "maxsize must be an int, not bool"),
    ],
)
def test_bad_maxsize_is_refused_with_a_clear_error(
    maxsize: Any, error: type[Exception], text: str
) -> None:
    with pytest.raises(error, match=text):
        InMemoryChannel(maxsize=maxsize)


@pytest.mark.parametrize("name", ["", 3])
def test_bad_name_is_refused(name: Any) -> None:
    with pytest.raises(TypeError, match="channel name must be a non-empty str"):
        InMemoryChannel(name=name)


def test_channels_without_a_name_get_distinct_names() -> None:
    assert InMemoryChannel().name != InMemoryChannel().name
    assert InMemoryChannel(name="my-channel").name == "my-channel"


async def test_an_unbounded_channel_never_refuses_send_nowait() -> None:
    channel = InMemoryChannel()
    for i in range(10_000):
        channel.send_nowait(msg(i))
    assert channel.qsize() == 10_000
    assert channel.maxsize == 0


async def test_send_nowait_on_a_full_channel_raises_and_enqueues_nothing() -> None:
    recorder = RecordingObserver()
    channel = InMemoryChannel(maxsize=2, observers=[recorder])
    channel.send_nowait(msg(1))
    channel.send_nowait(msg(2))
    with pytest.raises(ChannelFull, match="is full \\(maxsize=2\\)") as caught:
        channel.send_nowait(msg(3))
    assert isinstance(caught.value, asyncio.QueueFull)
    assert channel.qsize() == 2
    assert recorder.payloads("send") == [1, 2]
    assert [(await channel.receive()).payload for _ in range(2)] == [1, 2]
    assert channel.empty()


async def test_send_waits_for_room_on_a_full_channel() -> None:
    channel = InMemoryChannel(maxsize=1)
    await channel.send(msg(1))
    sent_second = anyio.Event()

    async def sender() -> None:
        await channel.send(msg(2))
        sent_second.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(sender)
            await anyio.wait_all_tasks_blocked()
            assert not sent_second.is_set()
            assert channel.statistics().waiting_senders == 1
            assert (await channel.receive()).payload == 1
            await sent_second.wait()
    assert (await channel.receive()).payload == 2


async def test_blocked_senders_are_served_in_arrival_order() -> None:
    channel = InMemoryChannel(maxsize=1)
    await channel.send(msg("first"))
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            for name in ["a", "b", "c"]:
                group.start_soon(channel.send, msg(name))
                await anyio.wait_all_tasks_blocked()
            received = [(await channel.receive()).payload for _ in range(4)]
    assert received == ["first", "a", "b", "c"]


async def test_a_blocked_receiver_gets_the_next_message() -> None:
    channel = InMemoryChannel()
    got: list[Any] = []

    async def receiver() -> None:
        got.append((await channel.receive()).payload)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(receiver)
            await anyio.wait_all_tasks_blocked()
            assert channel.statistics().waiting_receivers == 1
            await channel.send(msg("hello"))
    assert got == ["hello"]


async def test_close_is_idempotent_and_later_sends_raise() -> None:
    channel = InMemoryChannel(name="c")
    channel.close()
    channel.close()
    assert channel.closed
    with pytest.raises(ChannelClosed, match="channel 'c' is closed"):
        await channel.send(msg(1))
    with pytest.raises(ChannelClosed):
        channel.send_nowait(msg(1))
    assert channel.qsize() == 0


async def test_queued_messages_are_delivered_after_close_then_receive_raises() -> None:
    channel = InMemoryChannel()
    await channel.send(msg(1))
    await channel.send(msg(2))
    channel.close()
    assert (await channel.receive()).payload == 1
    assert (await channel.receive()).payload == 2
    with pytest.raises(ChannelClosed, match="closed and drained"):
        await channel.receive()


async def test_close_wakes_every_receiver_blocked_on_an_empty_channel() -> None:
    channel = InMemoryChannel()
    outcomes: list[str] = []

    async def receiver() -> None:
        try:
            await channel.receive()
        except ChannelClosed:
            outcomes.append("closed")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            for _ in range(3):
                group.start_soon(receiver)
            await anyio.wait_all_tasks_blocked()
            channel.close()
    assert outcomes == ["closed"] * 3
    assert channel.statistics().waiting_receivers == 0


async def test_close_wakes_a_sender_blocked_on_a_full_channel_without_enqueuing() -> None:
    channel = InMemoryChannel(maxsize=1)
    await channel.send(msg("queued"))
    outcome: list[str] = []

    async def sender() -> None:
        try:
            await channel.send(msg("blocked"))
        except ChannelClosed:
            outcome.append("closed")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(sender)
            await anyio.wait_all_tasks_blocked()
            channel.close()
    assert outcome == ["closed"]
    assert [m.payload async for m in channel] == ["queued"]


async def test_a_cancelled_receiver_leaves_the_line_and_loses_nothing() -> None:
    channel = InMemoryChannel()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(channel.receive)
            await anyio.wait_all_tasks_blocked()
            group.cancel_scope.cancel()
    assert channel.statistics().waiting_receivers == 0
    await channel.send(msg("after"))
    assert (await channel.receive()).payload == "after"


async def test_a_receiver_woken_then_cancelled_does_not_lose_the_message() -> None:
    channel = InMemoryChannel()
    got: list[str] = []

    async def receiver(label: str, task_status: anyio.abc.TaskStatus[anyio.CancelScope]) -> None:
        with anyio.CancelScope() as scope:
            task_status.started(scope)
            got.append(f"{label}:{(await channel.receive()).payload}")
            await anyio.sleep_forever()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            first: anyio.CancelScope = await group.start(receiver, "first")
            second: anyio.CancelScope = await group.start(receiver, "second")
            await anyio.wait_all_tasks_blocked()
            # Wake the first receiver and cancel it before it can run.
            channel.send_nowait(msg("m"))
            first.cancel()
            await anyio.wait_all_tasks_blocked()
            second.cancel()
    # Exactly one receiver got it and none was lost.
    assert len(got) == 1
    assert channel.empty()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_receiver_woken_then_task_cancelled_hands_the_wake_up_on() -> None:
    # Native asyncio cancellation reaches a task whose wake-up is already set (anyio
    # defers it), so this is the path where a wake-up could be lost.
    channel = InMemoryChannel()
    with anyio.fail_after(5):
        first = asyncio.create_task(channel.receive())
        second = asyncio.create_task(channel.receive())
        await anyio.wait_all_tasks_blocked()
        channel.send_nowait(msg("m"))
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        assert (await second).payload == "m"
    assert channel.statistics().waiting_receivers == 0


async def test_a_cancelled_sender_enqueues_nothing() -> None:
    channel = InMemoryChannel(maxsize=1)
    await channel.send(msg("queued"))
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(channel.send, msg("cancelled"))
            await anyio.wait_all_tasks_blocked()
            group.cancel_scope.cancel()
    assert channel.statistics().waiting_senders == 0
    channel.close()
    assert [m.payload async for m in channel] == ["queued"]


async def test_async_for_ends_when_closed_and_drained_and_yields_shutdowns() -> None:
    channel = InMemoryChannel()
    await channel.send(msg(1))
    await channel.send(ChannelMessage(None, is_shutdown=True))

    async def close_later() -> None:
        await anyio.wait_all_tasks_blocked()
        channel.close()

    seen: list[tuple[Any, bool]] = []
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(close_later)
            seen.extend([(m.payload, m.is_shutdown) async for m in channel])
    assert seen == [(1, False), (None, True)]


async def test_sending_something_that_is_not_a_message_is_a_clear_error() -> None:
    channel = InMemoryChannel()
    with pytest.raises(TypeError, match="channels carry ChannelMessage objects, not dict"):
        await channel.send({"data": 1})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="wrap the value"):
        channel.send_nowait("text")  # type: ignore[arg-type]
    assert channel.empty()


async def test_send_nowait_starts_no_task_per_message() -> None:
    async def async_observer(message: ChannelMessage, channel: Any, phase: str) -> None:
        return None

    channel = InMemoryChannel(observers=[async_observer])
    before = len(anyio.get_running_tasks())
    for i in range(100):
        channel.send_nowait(msg(i))
    assert len(anyio.get_running_tasks()) == before


async def test_statistics_describe_the_channel() -> None:
    channel = InMemoryChannel(maxsize=5, name="stats")
    for i in range(4):
        await channel.send(msg(i))
    await channel.receive()
    assert channel.statistics() == ChannelStatistics(
        name="stats",
        depth=3,
        peak_depth=4,
        maxsize=5,
        waiting_senders=0,
        waiting_receivers=0,
        sent=4,
        received=1,
        closed=False,
        observer_errors=0,
    )
    channel.close()
    assert channel.statistics().closed


async def test_empty_and_qsize_follow_the_queue() -> None:
    channel = InMemoryChannel()
    assert channel.empty()
    assert channel.qsize() == 0
    await channel.send(msg(1))
    assert not channel.empty()
    assert channel.qsize() == 1


def test_repr_names_the_channel_and_its_state() -> None:
    assert repr(InMemoryChannel(maxsize=3, name="r")) == (
        "<InMemoryChannel name='r' depth=0 maxsize=3 closed=False>"
    )


async def test_a_message_dequeued_then_cancelled_in_an_observer_is_put_back() -> None:
    entered = anyio.Event()

    async def slow_receive_observer(message: ChannelMessage, channel: Any, phase: str) -> None:
        if phase == "receive":
            entered.set()
            await anyio.sleep_forever()

    channel = InMemoryChannel(observers=[slow_receive_observer])
    await channel.send(msg("precious"))
    await channel.send(msg("next"))
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(channel.receive)
            await entered.wait()
            group.cancel_scope.cancel()
    channel.remove_observer(slow_receive_observer)
    channel.close()
    with anyio.fail_after(5):
        assert [m.payload async for m in channel] == ["precious", "next"]


async def test_many_producers_and_consumers_lose_and_duplicate_nothing() -> None:
    channel = InMemoryChannel(maxsize=8)
    received: list[int] = []

    async def produce(start: int) -> None:
        for i in range(start, start + 500):
            await channel.send(msg(i))

    async def consume() -> None:
        received.extend([message.payload async for message in channel])

    with anyio.fail_after(20):
        async with anyio.create_task_group() as consumers:
            for _ in range(3):
                consumers.start_soon(consume)
            async with anyio.create_task_group() as producers:
                for p in range(4):
                    producers.start_soon(produce, p * 500)
            channel.close()
    assert sorted(received) == list(range(2000))
