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
