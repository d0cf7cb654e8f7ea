from __future__ import annotations

from typing import Any

import anyio
import pytest

from spark_nodes.channels import (
    BaseChannel,
    ChannelClosed,
    ChannelFull,
    ChannelMessage,
    ForwardingChannel,
    InMemoryChannel,
)
from spark_nodes.testing import RecordingObserver

pytestmark = pytest.mark.anyio


async def test_defaults_are_added_and_the_messages_own_keys_win() -> None:
    downstream = InMemoryChannel(name="downstream")
    forwarder = ForwardingChannel(
        downstream, name="forwarder", metadata_defaults={"source": "node_a", "priority": "high"}
    )
    await forwarder.send(ChannelMessage({"data": "value"}, {"trace_id": "abc", "priority": "low"}))
    received = await downstream.receive()
    assert received.metadata == {"trace_id": "abc", "source": "node_a", "priority": "low"}


async def test_the_callers_message_is_never_modified() -> None:
    downstream = InMemoryChannel()
    forwarder = ForwardingChannel(downstream, metadata_defaults={"edge": "a->b"})
    original = ChannelMessage({"data": 1}, {"trace_id": "abc"})
    await forwarder.send(original)
    received = await downstream.receive()
    assert received is not original
    assert original.metadata == {"trace_id": "abc"}
    received.metadata["changed"] = True
    assert "changed" not in original.metadata


async def test_forwarding_keeps_payload_ack_id_and_shutdown_flag() -> None:
    acks: list[int] = []

    async def ack() -> None:
        acks.append(1)

    downstream = InMemoryChannel()
    forwarder = ForwardingChannel(downstream, metadata_defaults={"edge": "e"})
    payload = {"data": 1}
    original = ChannelMessage(payload, ack=ack, is_shutdown=True)
    await forwarder.send(original)
    received = await downstream.receive()
    assert received.payload is payload
    assert received.is_shutdown is True
    assert received.id == original.id
    assert received.ack is not None
    await received.ack()
    assert original.acked
    assert acks == [1]


async def test_without_defaults_the_message_passes_through_unchanged() -> None:
    downstream = InMemoryChannel()
    forwarder = ForwardingChannel(downstream)
    message = ChannelMessage(1)
    await forwarder.send(message)
    assert await downstream.receive() is message


async def test_observers_see_sends_and_receives_through_the_edge() -> None:
    recorder = RecordingObserver()
    downstream = InMemoryChannel()
    forwarder = ForwardingChannel(downstream, name="edge", observers=[recorder])
    await forwarder.send(ChannelMessage("x", {"trace_id": "abc"}))
    message = await forwarder.receive()
    assert message.payload == "x"
    assert [(e.channel, e.phase) for e in recorder.events] == [
        ("edge", "send"),
        ("edge", "receive"),
    ]


async def test_async_edge_observers_are_awaited_and_deferred_like_on_any_channel() -> None:
    seen: list[str] = []

    async def edge_observer(message: ChannelMessage, channel: BaseChannel, phase: str) -> None:
        await anyio.lowlevel.checkpoint()
        seen.append(f"{message.payload}:{phase}")

    downstream = InMemoryChannel()
    forwarder = ForwardingChannel(downstream, observers=[edge_observer])
    await forwarder.send(ChannelMessage("awaited"))
    assert seen == ["awaited:send"]
    forwarder.send_nowait(ChannelMessage("deferred"))
    assert seen == ["awaited:send"]
    # Read straight from the mailbox: the edge's deferred send observer still runs.
    await downstream.receive()
    await downstream.receive()
    assert seen == ["awaited:send", "deferred:send"]


async def test_receive_empty_and_qsize_read_the_downstream_channel() -> None:
    downstream = InMemoryChannel()
    forwarder = ForwardingChannel(downstream)
    assert forwarder.empty()
    await downstream.send(ChannelMessage("from another edge"))
    assert not forwarder.empty()
    assert forwarder.qsize() == 1
    assert (await forwarder.receive()).payload == "from another edge"


async def test_closing_an_edge_leaves_the_shared_mailbox_open() -> None:
    mailbox = InMemoryChannel(name="mailbox")
    edge_a = ForwardingChannel(mailbox, name="a->mailbox")
    edge_b = ForwardingChannel(mailbox, name="b->mailbox")
    await edge_a.send(ChannelMessage("a1"))
    edge_a.close()
    edge_a.close()
    assert edge_a.closed
    assert not mailbox.closed
    with pytest.raises(ChannelClosed, match="edge 'a->mailbox' is closed"):
        await edge_a.send(ChannelMessage("a2"))
    with pytest.raises(ChannelClosed):
        edge_a.send_nowait(ChannelMessage("a3"))
    await edge_b.send(ChannelMessage("b1"))
    assert [(await mailbox.receive()).payload for _ in range(2)] == ["a1", "b1"]


async def test_closing_an_edge_wakes_its_sender_blocked_on_a_full_mailbox() -> None:
    mailbox = InMemoryChannel(maxsize=1)
    closing = ForwardingChannel(mailbox, name="closing")
    other = ForwardingChannel(mailbox, name="other")
    await mailbox.send(ChannelMessage("queued"))
    outcomes: dict[str, str] = {}

    async def send_through(edge: ForwardingChannel, payload: str) -> None:
        try:
            await edge.send(ChannelMessage(payload))
            outcomes[payload] = "sent"
        except ChannelClosed:
            outcomes[payload] = "closed"

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(send_through, closing, "from-closing")
            group.start_soon(send_through, other, "from-other")
            await anyio.wait_all_tasks_blocked()
            closing.close()
            await anyio.wait_all_tasks_blocked()
            assert outcomes == {"from-closing": "closed"}
            assert (await mailbox.receive()).payload == "queued"
    assert outcomes == {"from-closing": "closed", "from-other": "sent"}
    assert (await mailbox.receive()).payload == "from-other"
    assert mailbox.empty()


async def test_a_closed_downstream_refuses_sends_through_the_edge() -> None:
    mailbox = InMemoryChannel(name="mailbox")
    edge = ForwardingChannel(mailbox)
    mailbox.close()
    with pytest.raises(ChannelClosed, match="channel 'mailbox' is closed"):
        await edge.send(ChannelMessage(1))
    assert edge.statistics().sent == 0


async def test_send_nowait_on_a_full_downstream_raises_and_forwards_nothing() -> None:
    mailbox = InMemoryChannel(maxsize=1)
    edge = ForwardingChannel(mailbox, metadata_defaults={"edge": "e"})
    edge.send_nowait(ChannelMessage(1))
    with pytest.raises(ChannelFull):
        edge.send_nowait(ChannelMessage(2))
    assert mailbox.qsize() == 1
    assert edge.statistics().sent == 1


async def test_statistics_count_this_edge_over_the_downstream_depth() -> None:
    mailbox = InMemoryChannel(maxsize=10)
    edge = ForwardingChannel(mailbox, name="edge")
    await edge.send(ChannelMessage(1))
    await edge.send(ChannelMessage(2))
    await mailbox.send(ChannelMessage("other edge"))
    await edge.receive()
    stats = edge.statistics()
    assert (stats.name, stats.sent, stats.received, stats.depth, stats.maxsize) == (
        "edge",
        2,
        1,
        2,
        10,
    )


async def test_edges_chain_and_each_layer_adds_its_defaults() -> None:
    mailbox = InMemoryChannel()
    inner = ForwardingChannel(mailbox, metadata_defaults={"inner": 1, "shared": "inner"})
    outer = ForwardingChannel(inner, metadata_defaults={"outer": 1, "shared": "outer"})
    await outer.send(ChannelMessage("x"))
    assert (await mailbox.receive()).metadata == {"inner": 1, "outer": 1, "shared": "outer"}


class _ListChannel(BaseChannel):
    """A minimal custom backend: only the abstract methods."""

    def __init__(self) -> None:
        super().__init__(name="list")
        self.items: list[ChannelMessage] = []

    async def send(self, message: ChannelMessage) -> None:
        self.items.append(message)

    async def receive(self) -> ChannelMessage:
        return self.items.pop(0)

    def empty(self) -> bool:
        return not self.items


async def test_an_edge_forwards_into_a_custom_backend() -> None:
    backend = _ListChannel()
    edge = ForwardingChannel(backend, metadata_defaults={"edge": "e"})
    await edge.send(ChannelMessage(1))
    assert backend.items[0].metadata == {"edge": "e"}
    with pytest.raises(NotImplementedError, match="_ListChannel does not support send_nowait"):
        edge.send_nowait(ChannelMessage(2))


def test_defaults_are_copied_at_construction() -> None:
    defaults = {"edge": "e"}
    edge = ForwardingChannel(InMemoryChannel(), metadata_defaults=defaults)
    defaults["edge"] = "changed"
    assert edge.metadata_defaults == {"edge": "e"}


@pytest.mark.parametrize(
    ("arguments", "text"),
    [
        ({"downstream": "mailbox"}, "downstream must be a BaseChannel, not str"),
        (
            {"downstream": InMemoryChannel(), "metadata_defaults": [("k", 1)]},
            "metadata_defaults must be a dict, not list",
        ),
    ],
)
def test_bad_arguments_are_named(arguments: dict[str, Any], text: str) -> None:
    with pytest.raises(TypeError, match=text):
        ForwardingChannel(**arguments)


def test_default_name_and_repr_name_the_downstream() -> None:
    edge = ForwardingChannel(InMemoryChannel(name="mailbox"))
    assert edge.name == "forward->mailbox"
    assert edge.downstream.name == "mailbox"
    assert repr(edge) == (
        "<ForwardingChannel name='forward->mailbox' downstream='mailbox' closed=False>"
    )
