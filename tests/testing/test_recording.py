from __future__ import annotations

import pytest

from spark_nodes.channels import ChannelMessage, InMemoryChannel
from spark_nodes.testing import ObservedEvent, RecordingObserver

pytestmark = pytest.mark.anyio


async def test_the_recorder_keeps_every_event_in_order() -> None:
    recorder = RecordingObserver()
    channel = InMemoryChannel(name="c", observers=[recorder])
    first, second = ChannelMessage(1), ChannelMessage(2)
    await channel.send(first)
    await channel.send(second)
    await channel.receive()
    assert recorder.events == [
        ObservedEvent("c", "send", first),
        ObservedEvent("c", "send", second),
        ObservedEvent("c", "receive", first),
    ]
    assert recorder.phases == ["send", "send", "receive"]
    assert recorder.payloads() == [1, 2, 1]
    assert recorder.payloads("send") == [1, 2]


async def test_shutdown_messages_are_kept_apart_from_the_payloads() -> None:
    recorder = RecordingObserver()
    channel = InMemoryChannel(name="c", observers=[recorder])
    data, shutdown = ChannelMessage({"n": 1}), ChannelMessage(None, is_shutdown=True)
    await channel.send(data)
    await channel.send(shutdown)
    await channel.receive()
    assert recorder.payloads() == [{"n": 1}, {"n": 1}]  # not [{...}, None, {...}]
    assert recorder.messages("send") == [data]
    assert recorder.shutdowns() == [shutdown]
    assert recorder.shutdowns("receive") == []
    assert recorder.phases == ["send", "send", "receive"]  # every event is still there
