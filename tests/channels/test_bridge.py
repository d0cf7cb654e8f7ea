from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from spark_nodes.channels import ChannelClosed, ChannelMessage, InMemoryChannel, QueueBridge

pytestmark = pytest.mark.anyio


async def test_put_wraps_and_get_unwraps() -> None:
    channel = InMemoryChannel()
    queue = QueueBridge(channel)
    await queue.put({"data": "value"})
    queue.put_nowait(2)
    assert queue.qsize() == 2
    assert not queue.empty()
    message = await channel.receive()
    assert isinstance(message, ChannelMessage)
    assert message.payload == {"data": "value"}
    assert await queue.get() == 2
    assert queue.empty()
    assert queue.channel is channel


async def test_put_nowait_on_a_full_channel_raises_queue_full() -> None:
    queue = QueueBridge(InMemoryChannel(maxsize=1))
    queue.put_nowait(1)
    with pytest.raises(asyncio.QueueFull):
        queue.put_nowait(2)


async def test_get_acks_the_message_it_returns() -> None:
    acks: list[int] = []

    async def ack() -> None:
        acks.append(1)

    channel = InMemoryChannel()
    await channel.send(ChannelMessage("job", ack=ack))
    assert await QueueBridge(channel).get() == "job"
    assert acks == [1]


async def test_a_failing_ack_is_logged_and_the_item_still_returned() -> None:
    async def ack() -> None:
        raise ConnectionError("gone")

    channel = InMemoryChannel(name="jobs")
    await channel.send(ChannelMessage("job", ack=ack, id="m-7"))
    with capture_logs() as logs:
        assert await QueueBridge(channel).get() == "job"
    assert [(e["event"], e["channel"], e["msg_id"]) for e in logs] == [
        ("ack failed", "jobs", "m-7")
    ]


async def test_a_shutdown_message_comes_out_as_the_none_sentinel() -> None:
    channel = InMemoryChannel()
    await channel.send(ChannelMessage(None, is_shutdown=True))
    assert await QueueBridge(channel).get() is None


async def test_get_on_a_closed_drained_channel_raises() -> None:
    channel = InMemoryChannel()
    channel.close()
    with pytest.raises(ChannelClosed):
        await QueueBridge(channel).get()
    with pytest.raises(ChannelClosed):
        await QueueBridge(channel).put(1)


def test_the_bridge_wraps_channels_only() -> None:
    with pytest.raises(TypeError, match="QueueBridge wraps a BaseChannel, not Queue"):
        QueueBridge(asyncio.Queue())  # type: ignore[arg-type]
