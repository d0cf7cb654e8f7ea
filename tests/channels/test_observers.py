from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from spark_nodes.channels import (
    BaseChannel,
    ChannelClosed,
    ChannelFull,
    ChannelMessage,
    InMemoryChannel,
)
from spark_nodes.testing import RecordingObserver

pytestmark = pytest.mark.anyio


def log_into(log: list[str], label: str) -> Any:
    def observer(message: ChannelMessage, channel: BaseChannel, phase: str) -> None:
        log.append(f"{label}:{phase}")

    return observer


def async_log_into(log: list[str], label: str) -> Any:
    async def observer(message: ChannelMessage, channel: BaseChannel, phase: str) -> None:
        await anyio.lowlevel.checkpoint()
        log.append(f"{label}:{phase}")

    return observer


async def test_observers_run_in_registration_order_send_then_receive() -> None:
    log: list[str] = []
    channel = InMemoryChannel(
        observers=[log_into(log, "a"), async_log_into(log, "b"), log_into(log, "c")]
    )
    await channel.send(ChannelMessage(1))
    assert log == ["a:send", "b:send", "c:send"]
    await channel.receive()
    assert log == ["a:send", "b:send", "c:send", "a:receive", "b:receive", "c:receive"]


async def test_observers_receive_the_message_and_the_channel() -> None:
    recorder = RecordingObserver()
    channel = InMemoryChannel(name="watched", observers=[recorder])
    message = ChannelMessage({"k": 1})
    await channel.send(message)
    assert await channel.receive() is message
    assert [(e.channel, e.phase, e.message) for e in recorder.events] == [
        ("watched", "send", message),
        ("watched", "receive", message),
    ]


async def test_a_failing_observer_is_logged_and_delivery_goes_on() -> None:
    log: list[str] = []

    def broken(message: ChannelMessage, channel: BaseChannel, phase: str) -> None:
        raise RuntimeError("observer error!")

    async def broken_async(message: ChannelMessage, channel: BaseChannel, phase: str) -> None:
        raise ValueError("async observer error!")

    channel = InMemoryChannel(name="fragile", observers=[broken, broken_async, log_into(log, "ok")])
    message = ChannelMessage("payload", id="m-1")
    with capture_logs() as logs:
        await channel.send(message)
        assert (await channel.receive()).payload == "payload"
    assert log == ["ok:send", "ok:receive"]
    failures = [entry for entry in logs if entry["event"] == "observer failed"]
    assert [(f["observer"], f["phase"], f["channel"], f["msg_id"]) for f in failures] == [
        (broken.__qualname__, "send", "fragile", "m-1"),
        (broken_async.__qualname__, "send", "fragile", "m-1"),
        (broken.__qualname__, "receive", "fragile", "m-1"),
        (broken_async.__qualname__, "receive", "fragile", "m-1"),
    ]
    assert all(f["log_level"] == "error" and f["exc_info"] for f in failures)
    assert channel.statistics().observer_errors == 4


async def test_a_failing_observer_in_send_nowait_is_logged_and_the_message_is_sent() -> None:
    def broken(message: ChannelMessage, channel: BaseChannel, phase: str) -> None:
        raise RuntimeError("boom")

    channel = InMemoryChannel(observers=[broken])
    with capture_logs() as logs:
        channel.send_nowait(ChannelMessage(1))
    assert channel.qsize() == 1
    assert [entry["event"] for entry in logs] == ["observer failed"]


async def test_failed_sends_are_not_observed() -> None:
    recorder = RecordingObserver()
    channel = InMemoryChannel(maxsize=1, observers=[recorder])
    channel.send_nowait(ChannelMessage("fits"))
    with pytest.raises(ChannelFull):
        channel.send_nowait(ChannelMessage("full"))
    channel.close()
    with pytest.raises(ChannelClosed):
        await channel.send(ChannelMessage("closed"))
    assert recorder.payloads() == ["fits"]


async def test_async_send_observers_have_run_when_send_returns() -> None:
    log: list[str] = []
    channel = InMemoryChannel(observers=[async_log_into(log, "slow")])
    await channel.send(ChannelMessage(1))
    assert log == ["slow:send"]


async def test_send_nowait_defers_async_observers_to_the_receive_in_order() -> None:
    log: list[str] = []
    channel = InMemoryChannel(
        observers=[log_into(log, "a"), async_log_into(log, "b"), log_into(log, "c")]
    )
    channel.send_nowait(ChannelMessage(1))
    # A synchronous call cannot await: what follows the first async observer waits for
    # the receive, so registration order is kept.
    assert log == ["a:send"]
    await channel.receive()
    assert log == ["a:send", "b:send", "c:send", "a:receive", "b:receive", "c:receive"]


async def test_a_sync_looking_observer_that_returns_an_awaitable_is_awaited() -> None:
    log: list[str] = []

    async def record(phase: str) -> None:
        log.append(f"awaited:{phase}")

    def returns_awaitable(
        message: ChannelMessage, channel: BaseChannel, phase: str
    ) -> Awaitable[None]:
        return record(phase)

    channel = InMemoryChannel(observers=[returns_awaitable, log_into(log, "after")])
    await channel.send(ChannelMessage(1))
    assert log == ["awaited:send", "after:send"]
    channel.send_nowait(ChannelMessage(2))
    assert log == ["awaited:send", "after:send"]
    await channel.receive()
    await channel.receive()
    assert log == [
        "awaited:send", "after:send",
        "awaited:receive", "after:receive",
        "awaited:send", "after:send",
        "awaited:receive", "after:receive",
    ]  # fmt: skip


async def test_an_object_with_an_async_call_is_an_async_observer() -> None:
    class Metrics:
        def __init__(self) -> None:
            self.seen: list[str] = []

        async def __call__(self, message: ChannelMessage, channel: BaseChannel, phase: str) -> None:
            self.seen.append(phase)

    metrics = Metrics()
    channel = InMemoryChannel(observers=[metrics])
    channel.send_nowait(ChannelMessage(1))
    assert metrics.seen == []
    await channel.receive()
    assert metrics.seen == ["send", "receive"]


async def test_ack_is_observed_once_after_the_callback_succeeded() -> None:
    acked: list[str] = []

    async def ack() -> None:
        acked.append("done")

    recorder = RecordingObserver()
    channel = InMemoryChannel(observers=[recorder])
    await channel.send(ChannelMessage(1, ack=ack))
    received = await channel.receive()
    assert received.ack is not None
    await received.ack()
    await received.ack()
    assert recorder.phases == ["send", "receive", "ack"]
    assert acked == ["done"]


async def test_a_failed_ack_is_not_observed() -> None:
    async def ack() -> None:
        raise ConnectionError("store unreachable")

    recorder = RecordingObserver()
    channel = InMemoryChannel(observers=[recorder])
    await channel.send(ChannelMessage(1, ack=ack))
    received = await channel.receive()
    assert received.ack is not None
    with pytest.raises(ConnectionError):
        await received.ack()
    assert recorder.phases == ["send", "receive"]


async def test_observers_can_be_added_and_removed() -> None:
    first, second = RecordingObserver(), RecordingObserver()
    channel = InMemoryChannel(observers=[first])
    channel.add_observer(second)
    assert channel.observers == (first, second)
    await channel.send(ChannelMessage(1))
    channel.remove_observer(first)
    await channel.send(ChannelMessage(2))
    assert first.payloads() == [1]
    assert second.payloads() == [1, 2]
    with pytest.raises(ValueError, match="is not an observer of channel"):
        channel.remove_observer(first)


def test_an_observer_must_be_callable() -> None:
    with pytest.raises(TypeError, match=r"observer must be callable as observer\(message"):
        InMemoryChannel(observers=["print"])  # type: ignore[list-item]


async def test_a_message_put_back_and_received_again_reports_ack_once() -> None:
    entered = anyio.Event()
    first_receive = True

    async def slow_once(message: ChannelMessage, channel: BaseChannel, phase: str) -> None:
        nonlocal first_receive
        if phase == "receive" and first_receive:
            first_receive = False
            entered.set()
            await anyio.sleep_forever()

    async def ack() -> None:
        return None

    recorder = RecordingObserver()
    channel = InMemoryChannel(observers=[recorder, slow_once])
    await channel.send(ChannelMessage(1, ack=ack))
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(channel.receive)
            await entered.wait()
            group.cancel_scope.cancel()
        received = await channel.receive()
    assert received.ack is not None
    await received.ack()
    assert recorder.phases == ["send", "receive", "receive", "ack"]
