"""The mailbox contract (``spark_nodes.channels.mailbox``), as the worker loop relies on it.

For :class:`InMemoryChannel` and :class:`ForwardingChannel`, which implement it, and for a
channel with only the seed's methods, which is served through the per-message adapter of
``mailbox_of`` and must work as a node's mailbox in every run mode.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

from spark_nodes import (
    Budget,
    ExecutionContext,
    Graph,
    Node,
    NodeConfig,
    StopReason,
    Task,
    TaskType,
)
from spark_nodes.channels import (
    BaseChannel,
    ChannelClosed,
    ChannelMessage,
    ForwardingChannel,
    InMemoryChannel,
    Mailbox,
)
from spark_nodes.channels.mailbox import (
    is_durable,
    is_mailbox,
    is_restorable,
    mailbox_of,
)
from spark_nodes.testing import Probe, RecordingObserver
from tests.graph_support import run_with

pytestmark = pytest.mark.anyio

LONG = TaskType.LONG_RUNNING


def msg(payload: Any, metadata: dict[str, Any] | None = None) -> ChannelMessage:
    return ChannelMessage(payload, metadata)


def payloads(messages: list[ChannelMessage]) -> list[Any]:
    return [message.payload for message in messages]


async def async_observer(message: ChannelMessage, channel: BaseChannel, phase: str) -> None:
    await anyio.lowlevel.checkpoint()


class DequeChannel(BaseChannel):
    """A minimal custom channel: only the seed's abstract methods, on asyncio or trio."""

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name=name)
        self.items: deque[ChannelMessage] = deque()
        self._arrival: anyio.Event | None = None  # made by a receiver that has to wait

    async def send(self, message: ChannelMessage) -> None:
        if self.closed:
            raise ChannelClosed(f"channel {self.name!r} is closed")
        self.items.append(message)
        if self._arrival is not None:
            self._arrival.set()
            self._arrival = None

    async def receive(self) -> ChannelMessage:
        while not self.items:
            if self.closed:
                raise ChannelClosed(f"channel {self.name!r} is closed and drained")
            if self._arrival is None:
                self._arrival = anyio.Event()
            await self._arrival.wait()
        return self.items.popleft()

    def empty(self) -> bool:
        return not self.items


class _Subclassed(InMemoryChannel):
    __slots__ = ()


# -- InMemoryChannel: taking --------------------------------------------------------------


async def test_take_nowait_takes_up_to_the_limit_oldest_first() -> None:
    channel = InMemoryChannel()
    for i in range(5):
        channel.send_nowait(msg(i))
    assert payloads(channel.take_nowait(3)) == [0, 1, 2]
    assert payloads(channel.take_nowait(3)) == [3, 4]
    assert channel.empty()


async def test_take_nowait_returns_nothing_from_an_empty_channel() -> None:
    channel = InMemoryChannel()
    assert channel.take_nowait(10) == []
    channel.send_nowait(msg(1))
    channel.take_nowait(10)
    assert channel.take_nowait(10) == []


async def test_take_nowait_leaves_messages_to_take_on_a_channel_with_observers() -> None:
    recorder = RecordingObserver()
    channel = InMemoryChannel(observers=[recorder])
    for i in range(3):
        channel.send_nowait(msg(i))
    assert channel.take_nowait(10) == []
    assert channel.qsize() == 3
    with anyio.fail_after(5):
        taken = await channel.take(10)
    assert payloads(taken) == [0, 1, 2]
    assert recorder.payloads("receive") == [0, 1, 2]
    assert channel.statistics().received == 3


async def test_take_nowait_leaves_messages_with_deferred_observer_work_to_take() -> None:
    phases: list[str] = []

    async def edge_observer(message: ChannelMessage, channel: BaseChannel, phase: str) -> None:
        await anyio.lowlevel.checkpoint()
        phases.append(phase)

    mailbox = InMemoryChannel()
    edge = ForwardingChannel(mailbox, observers=[edge_observer])
    edge.send_nowait(msg(1))  # the edge's async "send" observer is left to the receive
    assert mailbox.take_nowait(10) == []
    with anyio.fail_after(5):
        taken = await mailbox.take(10)
    assert payloads(taken) == [1]
    assert phases == ["send"]


async def test_take_nowait_takes_again_once_deferred_observer_work_was_run() -> None:
    mailbox = InMemoryChannel()
    edge = ForwardingChannel(mailbox, observers=[async_observer])
    edge.send_nowait(msg(1))
    with anyio.fail_after(5):
        await mailbox.receive()  # runs the deferred work: none is due any more
    mailbox.send_nowait(msg(2))
    assert payloads(mailbox.take_nowait(10)) == [2]


async def test_take_nowait_stops_before_the_first_message_with_deferred_observer_work() -> None:
    mailbox = InMemoryChannel()
    edge = ForwardingChannel(mailbox, observers=[async_observer])
    mailbox.send_nowait(msg(0))
    edge.send_nowait(msg(1))  # deferred work
    mailbox.send_nowait(msg(2))
    assert payloads(mailbox.take_nowait(10)) == [0]
    assert mailbox.take_nowait(1) == []  # one at a time too: receive() runs the work first
    with anyio.fail_after(5):
        assert payloads(await mailbox.take(10)) == [1, 2]


async def test_receive_through_an_edge_runs_the_work_its_send_nowait_deferred() -> None:
    phases: list[str] = []

    async def edge_observer(message: ChannelMessage, channel: BaseChannel, phase: str) -> None:
        await anyio.lowlevel.checkpoint()
        phases.append(phase)

    edge = ForwardingChannel(InMemoryChannel(), observers=[edge_observer])
    edge.send_nowait(msg(1))
    assert phases == []
    with anyio.fail_after(5):
        assert (await edge.receive()).payload == 1
    assert phases == ["send", "receive"]


async def test_take_waits_for_the_first_message_then_takes_what_else_is_ready() -> None:
    channel = InMemoryChannel()
    taken: list[ChannelMessage] = []

    async def taker() -> None:
        taken.extend(await channel.take(10))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(taker)
            await anyio.wait_all_tasks_blocked()
            assert taken == []
            assert channel.statistics().waiting_receivers == 1
            for i in range(3):
                channel.send_nowait(msg(i))
    assert payloads(taken) == [0, 1, 2]
    assert channel.empty()


async def test_take_takes_no_more_than_the_limit() -> None:
    channel = InMemoryChannel()
    for i in range(5):
        channel.send_nowait(msg(i))
    with anyio.fail_after(5):
        assert payloads(await channel.take(2)) == [0, 1]
    assert payloads(channel.snapshot()) == [2, 3, 4]


async def test_take_on_a_closed_drained_channel_raises_channel_closed() -> None:
    channel = InMemoryChannel()
    channel.send_nowait(msg(1))
    channel.close()
    with anyio.fail_after(5):
        assert payloads(await channel.take(10)) == [1]
        with pytest.raises(ChannelClosed):
            await channel.take(10)


async def test_close_wakes_a_take_blocked_on_an_empty_channel_with_channel_closed() -> None:
    channel = InMemoryChannel()
    errors: list[BaseException] = []

    async def taker() -> None:
        try:
            await channel.take(10)
        except ChannelClosed as error:
            errors.append(error)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(taker)
            await anyio.wait_all_tasks_blocked()
            channel.close()
    assert len(errors) == 1


async def test_a_take_cancelled_midway_takes_nothing() -> None:
    never = anyio.Event()

    async def stuck_on_the_second(
        message: ChannelMessage, channel: BaseChannel, phase: str
    ) -> None:
        if phase == "receive" and message.payload == 2:
            await never.wait()

    channel = InMemoryChannel(observers=[stuck_on_the_second])
    for i in range(1, 4):
        await channel.send(msg(i))
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(channel.take, 10)
            await anyio.wait_all_tasks_blocked()  # 1 taken, stuck in 2's observer
            group.cancel_scope.cancel()
    assert payloads(channel.snapshot()) == [1, 2, 3]
    assert channel.statistics().received == 0


# -- InMemoryChannel: giving back ---------------------------------------------------------


async def test_give_back_puts_messages_at_the_head_in_order_before_later_ones() -> None:
    channel = InMemoryChannel()
    for i in range(3):
        channel.send_nowait(msg(i))
    taken = channel.take_nowait(2)
    channel.send_nowait(msg(3))
    assert channel.statistics().received == 2
    channel.give_back(taken)
    assert payloads(channel.snapshot()) == [0, 1, 2, 3]
    stats = channel.statistics()
    assert stats.received == 0
    assert stats.sent - stats.received == stats.depth == 4
    assert payloads(channel.take_nowait(10)) == [0, 1, 2, 3]


async def test_give_back_is_never_refused_even_by_a_full_channel() -> None:
    channel = InMemoryChannel(maxsize=1)
    channel.send_nowait(msg(1))
    taken = channel.take_nowait(1)
    channel.send_nowait(msg(2))
    assert channel.full()
    channel.give_back(taken)
    assert payloads(channel.snapshot()) == [1, 2]
    assert channel.qsize() == 2


async def test_give_back_wakes_a_receiver_blocked_on_an_empty_channel() -> None:
    channel = InMemoryChannel()
    channel.send_nowait(msg("again"))
    taken = channel.take_nowait(1)
    received: list[ChannelMessage] = []

    async def receiver() -> None:
        received.append(await channel.receive())

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(receiver)
            await anyio.wait_all_tasks_blocked()
            channel.give_back(taken)
    assert received == taken


# -- InMemoryChannel: offering ------------------------------------------------------------


async def test_offer_enqueues_with_the_effects_of_send_and_returns_true() -> None:
    recorder = RecordingObserver()
    channel = InMemoryChannel(maxsize=2, observers=[recorder])
    message = msg(1)
    assert channel.offer(message) is True
    assert channel.snapshot() == [message]
    assert channel.statistics().sent == 1
    assert recorder.phases == ["send"]


def _closed() -> InMemoryChannel:
    channel = InMemoryChannel()
    channel.close()
    return channel


def _full() -> InMemoryChannel:
    channel = InMemoryChannel(maxsize=1)
    channel.send_nowait(msg("already there"))
    return channel


def _observed_async() -> InMemoryChannel:
    return InMemoryChannel(observers=[async_observer])


REFUSING = pytest.mark.parametrize(
    "make",
    [_closed, _full, _observed_async],
    ids=["closed", "full", "async-observer"],
)


@REFUSING
async def test_offer_returns_false_and_enqueues_nothing_when_send_would_raise_wait_or_await(
    make: Callable[[], InMemoryChannel],
) -> None:
    channel = make()
    before = channel.statistics()
    assert channel.offer(msg("refused")) is False
    after = channel.statistics()
    assert (after.depth, after.sent) == (before.depth, before.sent)
    assert "refused" not in payloads(channel.snapshot())


@REFUSING
async def test_offer_many_enqueues_nothing_where_offer_would_refuse(
    make: Callable[[], InMemoryChannel],
) -> None:
    channel = make()
    before = channel.statistics()
    assert channel.offer_many([msg("a"), msg("b")]) == 0
    after = channel.statistics()
    assert (after.depth, after.sent) == (before.depth, before.sent)


async def test_offer_many_enqueues_the_longest_prefix_that_fits_and_returns_its_length() -> None:
    channel = InMemoryChannel(maxsize=3)
    channel.send_nowait(msg(0))
    assert channel.offer_many([msg(1), msg(2), msg(3), msg(4)]) == 2
    assert payloads(channel.snapshot()) == [0, 1, 2]
    assert channel.statistics().sent == 3
    assert channel.offer_many([msg(5)]) == 0


async def test_offer_many_wakes_a_receiver_blocked_in_receive_per_message() -> None:
    channel = InMemoryChannel()
    received: list[Any] = []

    async def receiver() -> None:
        received.append((await channel.receive()).payload)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(receiver)
            group.start_soon(receiver)
            await anyio.wait_all_tasks_blocked()
            assert channel.offer_many([msg(1), msg(2)]) == 2
    assert sorted(received) == [1, 2]
    assert channel.empty()


async def test_offer_many_tells_sync_observers_of_each_send() -> None:
    recorder = RecordingObserver()
    channel = InMemoryChannel(observers=[recorder])
    assert channel.offer_many([msg(1), msg(2), msg(3)]) == 3
    assert recorder.phases == ["send", "send", "send"]
    assert recorder.payloads("send") == [1, 2, 3]


# -- InMemoryChannel: snapshot, restore, full ---------------------------------------------


async def test_snapshot_returns_the_queue_without_taking_it() -> None:
    channel = InMemoryChannel()
    for i in range(3):
        channel.send_nowait(msg(i))
    snapshot = channel.snapshot()
    assert payloads(snapshot) == [0, 1, 2]
    snapshot.clear()  # a copy: the queue is left in place
    assert channel.qsize() == 3
    assert channel.statistics().received == 0
    assert payloads(channel.take_nowait(10)) == [0, 1, 2]


async def test_restore_replaces_the_queue_and_keeps_the_counts_consistent() -> None:
    channel = InMemoryChannel()
    for i in range(3):
        channel.send_nowait(msg(i))
    channel.take_nowait(1)
    channel.restore([msg("a"), msg("b")])
    assert payloads(channel.snapshot()) == ["a", "b"]
    stats = channel.statistics()
    assert stats.sent - stats.received == stats.depth == 2
    assert stats.received == 1  # the replaced messages count as never sent
    with anyio.fail_after(5):
        assert (await channel.receive()).payload == "a"
    stats = channel.statistics()
    assert stats.sent - stats.received == stats.depth == 1


async def test_restore_with_nothing_empties_the_channel() -> None:
    channel = InMemoryChannel()
    channel.send_nowait(msg(1))
    channel.restore([])
    assert channel.empty()
    stats = channel.statistics()
    assert stats.sent == stats.received == stats.depth == 0


async def test_restore_wakes_a_receiver_blocked_on_an_empty_channel() -> None:
    channel = InMemoryChannel()
    received: list[ChannelMessage] = []

    async def receive() -> None:
        received.append(await channel.receive())

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(receive)
            await anyio.wait_all_tasks_blocked()
            channel.restore([msg("restored")])
    assert payloads(received) == ["restored"]


async def test_full_is_true_only_for_a_bounded_channel_at_its_bound() -> None:
    unbounded = InMemoryChannel()
    for i in range(100):
        unbounded.send_nowait(msg(i))
    assert not unbounded.full()
    bounded = InMemoryChannel(maxsize=2)
    bounded.send_nowait(msg(1))
    assert not bounded.full()
    bounded.send_nowait(msg(2))
    assert bounded.full()
    bounded.take_nowait(1)
    assert not bounded.full()


# -- InMemoryChannel: the arrival callback ------------------------------------------------


async def _by_send(channel: InMemoryChannel, message: ChannelMessage) -> None:
    await channel.send(message)


async def _by_send_nowait(channel: InMemoryChannel, message: ChannelMessage) -> None:
    channel.send_nowait(message)


async def _by_offer(channel: InMemoryChannel, message: ChannelMessage) -> None:
    assert channel.offer(message)


async def _by_offer_many(channel: InMemoryChannel, message: ChannelMessage) -> None:
    assert channel.offer_many([message]) == 1


Enqueue = Callable[[InMemoryChannel, ChannelMessage], Awaitable[None]]
ENQUEUE: dict[str, Enqueue] = {
    "send": _by_send,
    "send_nowait": _by_send_nowait,
    "offer": _by_offer,
    "offer_many": _by_offer_many,
}


@pytest.mark.parametrize("how", list(ENQUEUE))
async def test_the_arrival_callback_runs_once_per_message_enqueued_while_at_most_depth_are_queued(
    how: str,
) -> None:
    enqueue = ENQUEUE[how]
    channel = InMemoryChannel()
    depths: list[int] = []
    channel.set_arrival_callback(lambda: depths.append(channel.qsize()), depth=2)
    for i in range(4):
        await enqueue(channel, msg(i))
    assert depths == [1, 2]
    channel.take_nowait(10)
    await enqueue(channel, msg(4))
    assert depths == [1, 2, 1]


async def test_the_arrival_callback_runs_once_per_message_of_an_offer_many_that_fits() -> None:
    channel = InMemoryChannel()
    calls: list[None] = []
    channel.set_arrival_callback(lambda: calls.append(None), depth=3)
    channel.send_nowait(msg(0))
    assert len(calls) == 1
    assert channel.offer_many([msg(i) for i in range(1, 6)]) == 5
    assert len(calls) == 3  # for the messages that made the depth 2 and 3, not 4..6


async def test_the_arrival_callback_is_never_called_after_it_is_removed() -> None:
    channel = InMemoryChannel()
    calls: list[None] = []
    channel.set_arrival_callback(lambda: calls.append(None), depth=10)
    channel.set_arrival_callback(None)
    for enqueue in ENQUEUE.values():
        await enqueue(channel, msg(1))
    assert channel.offer_many([msg(2), msg(3)]) == 2
    assert calls == []
    assert channel.qsize() == 6


# -- which channels implement what --------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [InMemoryChannel, _Subclassed, lambda: ForwardingChannel(InMemoryChannel())],
    ids=["in-memory", "in-memory-subclass", "forwarding"],
)
def test_mailbox_of_a_channel_that_implements_the_contract_is_the_channel_itself(
    make: Callable[[], BaseChannel],
) -> None:
    channel = make()
    mailbox: object = mailbox_of(channel)
    assert mailbox is channel


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (InMemoryChannel, (True, True, False)),
        (lambda: ForwardingChannel(InMemoryChannel()), (True, True, False)),
        # Answered per type: an edge into a channel that keeps its messages itself is
        # restorable by type, and its snapshot() raises NotImplementedError (see below).
        (lambda: ForwardingChannel(DequeChannel()), (True, True, False)),
        (DequeChannel, (False, False, False)),
    ],
    ids=["in-memory", "forwarding", "forwarding-into-custom", "custom"],
)
def test_is_mailbox_is_restorable_and_is_durable_say_what_a_channel_implements(
    make: Callable[[], BaseChannel], expected: tuple[bool, bool, bool]
) -> None:
    channel = make()
    assert (is_mailbox(channel), is_restorable(channel), is_durable(channel)) == expected


# -- ForwardingChannel --------------------------------------------------------------------


async def test_offer_through_an_edge_adds_its_metadata_defaults_in_a_copy() -> None:
    mailbox = InMemoryChannel()
    edge = ForwardingChannel(mailbox, metadata_defaults={"edge": "a->b", "tenant": "default"})
    original = msg({"n": 1}, {"tenant": "acme"})
    assert edge.offer(original) is True
    (forwarded,) = mailbox.snapshot()
    assert forwarded is not original
    assert forwarded.metadata == {"edge": "a->b", "tenant": "acme"}
    assert forwarded.payload is original.payload
    assert forwarded.id == original.id
    assert original.metadata == {"tenant": "acme"}
    assert edge.statistics().sent == 1


async def test_offer_through_a_closed_edge_returns_false_and_forwards_nothing() -> None:
    mailbox = InMemoryChannel()
    edge = ForwardingChannel(mailbox, metadata_defaults={"edge": "e"})
    edge.close()
    assert edge.offer(msg(1)) is False
    assert edge.offer_many([msg(2), msg(3)]) == 0
    assert mailbox.empty()
    assert edge.statistics().sent == 0


async def test_offer_through_an_edge_into_a_full_mailbox_returns_false() -> None:
    mailbox = InMemoryChannel(maxsize=1)
    edge = ForwardingChannel(mailbox)
    assert edge.offer(msg(1)) is True
    assert edge.offer(msg(2)) is False
    assert payloads(mailbox.snapshot()) == [1]
    assert edge.statistics().sent == 1


async def test_offer_many_through_an_edge_stops_at_the_first_refusal() -> None:
    mailbox = InMemoryChannel(maxsize=2)
    edge = ForwardingChannel(mailbox, metadata_defaults={"edge": "e"})
    assert edge.offer_many([msg(1), msg(2), msg(3)]) == 2
    assert payloads(mailbox.snapshot()) == [1, 2]
    assert all(m.metadata == {"edge": "e"} for m in mailbox.snapshot())


async def test_offer_through_an_edge_with_an_async_observer_returns_false() -> None:
    mailbox = InMemoryChannel()
    edge = ForwardingChannel(mailbox, observers=[async_observer])
    assert edge.offer(msg(1)) is False
    assert mailbox.empty()


async def test_take_nowait_and_give_back_through_an_edge_act_on_the_downstream() -> None:
    mailbox = InMemoryChannel()
    edge = ForwardingChannel(mailbox)
    for i in range(3):
        mailbox.send_nowait(msg(i))  # sent by someone else: the edge reads the mailbox
    taken = edge.take_nowait(2)
    assert payloads(taken) == [0, 1]
    assert payloads(mailbox.snapshot()) == [2]
    assert edge.statistics().received == 2
    edge.give_back(taken)
    assert payloads(mailbox.snapshot()) == [0, 1, 2]
    assert edge.statistics().received == 0
    assert mailbox.statistics().received == 0


async def test_take_through_an_edge_waits_for_a_message_sent_downstream() -> None:
    mailbox = InMemoryChannel()
    edge = ForwardingChannel(mailbox)
    taken: list[ChannelMessage] = []

    async def taker() -> None:
        taken.extend(await edge.take(10))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(taker)
            await anyio.wait_all_tasks_blocked()
            assert taken == []
            mailbox.send_nowait(msg(1))
            mailbox.send_nowait(msg(2))
    assert payloads(taken) == [1, 2]
    assert edge.statistics().received == 2


async def test_take_through_an_edge_raises_channel_closed_once_the_downstream_is_drained() -> None:
    mailbox = InMemoryChannel()
    edge = ForwardingChannel(mailbox)
    mailbox.send_nowait(msg(1))
    mailbox.close()
    with anyio.fail_after(5):
        assert payloads(await edge.take(10)) == [1]
        with pytest.raises(ChannelClosed):
            await edge.take(10)


async def test_snapshot_and_restore_through_an_edge_act_on_an_in_memory_downstream() -> None:
    mailbox = InMemoryChannel()
    edge = ForwardingChannel(mailbox)
    mailbox.send_nowait(msg(1))
    mailbox.send_nowait(msg(2))
    assert payloads(edge.snapshot()) == [1, 2]
    assert mailbox.qsize() == 2
    edge.restore([msg("restored")])
    assert payloads(mailbox.snapshot()) == ["restored"]


async def test_snapshot_and_restore_through_an_edge_into_a_custom_channel_raise() -> None:
    edge = ForwardingChannel(DequeChannel())
    with pytest.raises(NotImplementedError, match="does not implement snapshot"):
        edge.snapshot()
    with pytest.raises(NotImplementedError, match="does not implement snapshot"):
        edge.restore([msg(1)])


async def test_an_edge_into_a_custom_channel_cannot_offer() -> None:
    custom = DequeChannel()
    edge = ForwardingChannel(custom)
    assert edge.offer(msg(1)) is False
    assert edge.offer_many([msg(2)]) == 0
    assert custom.empty()
    assert edge.statistics().sent == 0


async def test_an_edge_into_a_custom_channel_is_not_empty_while_holding_given_back_ones() -> None:
    custom = DequeChannel()
    edge = ForwardingChannel(custom)
    await custom.send(msg(1))
    with anyio.fail_after(5):
        taken = await edge.take(10)
    assert custom.empty()
    edge.give_back(taken)
    # Mailbox.empty(): "True if nothing is ready to be taken"; take_nowait would take it.
    assert not edge.empty()
    assert edge.take_nowait(10) == taken


# -- the per-message adapter for a channel with only the seed's methods -------------------


async def test_a_custom_channel_is_served_through_an_adapter_not_as_itself() -> None:
    custom = DequeChannel()
    mailbox: object = mailbox_of(custom)
    assert mailbox is not custom
    assert isinstance(mailbox, Mailbox)
    assert not is_mailbox(custom)


async def test_the_adapter_takes_one_message_per_receive() -> None:
    custom = DequeChannel()
    for i in range(3):
        await custom.send(msg(i))
    mailbox = mailbox_of(custom)
    with anyio.fail_after(5):
        assert payloads(await mailbox.take(10)) == [0]
        assert payloads(await mailbox.take(10)) == [1]
    assert payloads(list(custom.items)) == [2]


async def test_the_adapter_take_waits_for_the_first_message() -> None:
    custom = DequeChannel()
    mailbox = mailbox_of(custom)
    taken: list[ChannelMessage] = []

    async def taker() -> None:
        taken.extend(await mailbox.take(10))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(taker)
            await anyio.wait_all_tasks_blocked()
            assert taken == []
            await custom.send(msg("first"))
    assert payloads(taken) == ["first"]


async def test_the_adapter_takes_nothing_without_awaiting_but_what_was_given_back() -> None:
    custom = DequeChannel()
    await custom.send(msg(1))
    mailbox = mailbox_of(custom)
    assert mailbox.take_nowait(10) == []  # receive() is a coroutine: take() does it
    assert len(custom.items) == 1
    with anyio.fail_after(5):
        taken = await mailbox.take(10)
    mailbox.give_back(taken)
    assert mailbox.take_nowait(10) == taken


async def test_the_adapter_keeps_given_back_messages_in_front_of_the_channel() -> None:
    custom = DequeChannel()
    for i in range(4):
        await custom.send(msg(i))
    mailbox = mailbox_of(custom)
    with anyio.fail_after(5):
        taken = [(await mailbox.take(10))[0] for _ in range(2)]
        mailbox.give_back(taken)
        assert payloads(list(custom.items)) == [2, 3]  # not put back into the channel
        order: list[Any] = []
        while len(order) < 4:
            order += payloads(await mailbox.take(10))
    assert order == [0, 1, 2, 3]


async def test_the_adapter_is_empty_only_when_it_and_the_channel_hold_nothing() -> None:
    custom = DequeChannel()
    mailbox = mailbox_of(custom)
    assert mailbox.empty()
    await custom.send(msg(1))
    assert not mailbox.empty()
    with anyio.fail_after(5):
        taken = await mailbox.take(10)
    assert mailbox.empty()
    mailbox.give_back(taken)
    assert custom.empty()
    assert not mailbox.empty()


async def test_the_adapter_cannot_offer() -> None:
    custom = DequeChannel()
    mailbox = mailbox_of(custom)
    assert mailbox.offer(msg(1)) is False
    assert mailbox.offer_many([msg(2), msg(3)]) == 0
    assert custom.empty()
    assert mailbox.empty()


async def test_the_adapter_take_raises_channel_closed_for_a_closed_drained_channel() -> None:
    custom = DequeChannel()
    await custom.send(msg(1))
    custom.close()
    mailbox = mailbox_of(custom)
    with anyio.fail_after(5):
        assert payloads(await mailbox.take(10)) == [1]
        with pytest.raises(ChannelClosed):
            await mailbox.take(10)


# -- a custom channel as a node's mailbox, in every run mode -------------------------------
# A loop blocked on a custom mailbox waits in the channel's receive(); stopping the node, or
# a sibling loop taking the last shutdown, must wake it (a wake-up given back to the adapter
# does not): the tests below end promptly when it does, and time out when it does not.


class Add(Node):
    def __init__(self, amount: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.amount = amount

    def process(self, context: ExecutionContext) -> Any:
        return context.inputs.content + self.amount


async def test_a_one_pass_run_through_nodes_with_custom_mailboxes_gives_the_right_result() -> None:
    a = Add(1, id="a", mailbox=DequeChannel())
    b = Add(10, id="b")  # an in-memory mailbox between the two custom ones
    c = Add(100, id="c", mailbox=DequeChannel())
    a >> b >> c
    with anyio.fail_after(5):
        result = await Graph(start=a).run(Task(inputs=1))
    assert result.stop_reason is StopReason.COMPLETED
    assert result.content == 112
    assert {i: s.processed for i, s in result.node_stats.items()} == {"a": 1, "b": 1, "c": 1}


async def test_a_long_running_graph_delivers_everything_in_order_through_custom_mailboxes() -> None:
    a = Node(id="a", mailbox=DequeChannel())
    sink = Probe(id="sink", mailbox=DequeChannel())
    a >> sink

    async def drive(graph: Graph) -> None:
        for i in range(300):  # more than a batch, and more than graph.send's run between yields
            await graph.send(a, i)
        await graph.shutdown()

    result = await run_with(Graph(start=a), Task(type=LONG), drive)
    assert result.stop_reason is StopReason.SHUTDOWN
    assert sink.items == list(range(300))
    assert [result.node_stats[n].processed for n in ("a", "sink")] == [300, 300]


async def test_stopping_the_graph_ends_a_node_blocked_on_a_custom_mailbox_without_grace() -> None:
    a = Node(id="a", mailbox=DequeChannel())
    sink = Probe(id="sink")
    a >> sink

    async def drive(graph: Graph) -> None:
        await graph.send(a, 1)
        await sink.wait_for(1)
        await anyio.wait_all_tasks_blocked()  # a's loop waits on its empty mailbox
        graph.stop("enough")

    task = Task(type=LONG, budget=Budget(grace_period=1))
    result = await run_with(Graph(start=a), task, drive)
    assert result.stop_reason is StopReason.STOPPED
    assert sink.items == [1]
    # Nothing was in flight: the stop must wake the idle loop, not cancel it after grace.
    assert not result.cancelled


async def test_stopping_a_node_with_a_custom_mailbox_ends_it_and_its_successors_drain() -> None:
    a = Node(id="a", mailbox=DequeChannel())
    sink = Probe(id="sink")
    a >> sink

    async def drive(graph: Graph) -> None:
        await graph.send(a, 1)
        await sink.wait_for(1)
        await anyio.wait_all_tasks_blocked()
        a.stop()

    result = await run_with(Graph(start=a), Task(type=LONG), drive)
    assert result.stop_reason is StopReason.FINISHED
    assert sink.items == [1]


async def test_a_long_running_node_with_several_loops_on_a_custom_mailbox_shuts_down() -> None:
    a = Node(id="a", mailbox=DequeChannel(), config=NodeConfig(concurrency=2))
    sink = Probe(id="sink")
    a >> sink

    async def drive(graph: Graph) -> None:
        for i in range(10):
            await graph.send(a, i)
        await graph.shutdown()

    result = await run_with(Graph(start=a), Task(type=LONG), drive)
    assert result.stop_reason is StopReason.SHUTDOWN
    assert sorted(sink.items) == list(range(10))


async def test_a_one_pass_run_ends_when_a_node_with_several_loops_has_a_custom_mailbox() -> None:
    a = Add(1, id="a", mailbox=DequeChannel(), config=NodeConfig(concurrency=2))
    with anyio.fail_after(5):
        result = await Graph(start=a).run(Task(inputs=1))
    assert result.stop_reason is StopReason.COMPLETED
    assert result.content == 2


class GatedChannel(DequeChannel):
    """A custom mailbox whose ``send()`` waits until its gate opens."""

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name=name)
        self.gate = anyio.Event()

    async def send(self, message: ChannelMessage) -> None:
        await self.gate.wait()
        await super().send(message)


async def test_outputs_a_cancelled_run_could_not_send_to_a_custom_mailbox_are_kept_for_it() -> None:
    a = Node(id="a")
    gated = GatedChannel()
    sink = Probe(id="sink", mailbox=gated)
    a >> sink
    graph = Graph(start=a)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            await group.start(graph.run, Task(type=LONG))
            for i in range(3):
                await graph.send(a, i)
            await anyio.wait_all_tasks_blocked()  # a's loop waits in send(0) on the gate
            group.cancel_scope.cancel()
    assert sink.items == []
    assert gated.empty()
    gated.gate.set()

    async def drive(graph: Graph) -> None:
        await sink.wait_for(3)
        await graph.shutdown()

    await run_with(graph, Task(type=LONG), drive)
    assert sink.items == [0, 1, 2]
