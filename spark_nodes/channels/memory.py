"""``InMemoryChannel``: the default mailbox, a FIFO in one process."""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from spark_nodes.channels._waiters import park, wake_all, wake_one
from spark_nodes.channels.base import BaseChannel, ChannelStatistics, Observer
from spark_nodes.channels.message import ChannelMessage
from spark_nodes.errors import ChannelClosed, ChannelFull

__all__ = ["InMemoryChannel"]


def _not_a_message(message: object) -> TypeError:
    return TypeError(
        f"channels carry ChannelMessage objects, not {type(message).__name__}; "
        f"wrap the value: ChannelMessage(payload=value) (or use QueueBridge)"
    )


class InMemoryChannel(BaseChannel):
    """A FIFO channel in one process, on asyncio or trio.

    ``maxsize=0`` is unbounded. A bounded channel gives backpressure: ``send`` waits for
    room and ``send_nowait`` raises :class:`~spark_nodes.errors.ChannelFull`.

    ``close()`` refuses new messages, still delivers the queued ones, then makes
    ``receive`` raise :class:`~spark_nodes.errors.ChannelClosed`. Receivers blocked on an
    empty channel and senders blocked on a full one are woken by ``close()``: receivers
    get ``ChannelClosed`` once the queue is drained, senders get it without enqueuing.

    ``send`` and ``receive`` return without yielding to the event loop when they can
    complete at once, like ``asyncio.Queue`` (and unlike anyio's memory streams, which
    cost ~8x as much per message). A loop that only ever sends on an unbounded channel
    therefore never yields; give such loops a bound or an explicit checkpoint.

    Not thread-safe: use it from one event loop.

    Args:
        maxsize: The most messages queued at once; 0 means unbounded.
        name: The channel's name; generated when omitted.
        observers: See :class:`BaseChannel`.

    Raises:
        TypeError: ``maxsize`` is not an int.
        ValueError: ``maxsize`` is negative.
    """

    __slots__ = (
        "_arrival",
        "_arrival_depth",
        "_limit",
        "_maxsize",
        "_peak",
        "_queue",
        "_receivers",
        "_senders",
        "_sent",
    )

    def __init__(
        self,
        maxsize: int = 0,
        name: str | None = None,
        observers: Iterable[Observer] | None = None,
    ) -> None:
        if not isinstance(maxsize, int) or isinstance(maxsize, bool):
            raise TypeError(f"maxsize must be an int, not {type(maxsize).__name__}")
        if maxsize < 0:
            raise ValueError(f"maxsize must be >= 0 (0 means unbounded), not {maxsize}")
        super().__init__(name=name, observers=observers)
        self._maxsize = maxsize
        self._limit = maxsize or sys.maxsize  # one comparison on the hot path, bounded or not
        self._queue: deque[ChannelMessage] = deque()
        self._receivers: list[Any] = []
        self._senders: list[Any] = []
        self._sent = 0
        self._peak = 0
        # A graph run's hook: start a worker when a message arrives while at most
        # _arrival_depth are queued (fewer than the node's worker loops could be busy).
        self._arrival: Callable[[], None] | None = None
        self._arrival_depth = 0

    @property
    def maxsize(self) -> int:
        """The bound on queued messages; 0 means unbounded."""
        return self._maxsize

    async def send(self, message: ChannelMessage) -> None:
        """Enqueue ``message``; on a full bounded channel, wait for room first.

        Senders waiting for room are served in arrival order. If the task is cancelled
        while waiting, nothing is enqueued. Observers run after the message is enqueued;
        if the task is cancelled while an async observer runs, the message stays sent.

        Raises:
            ChannelClosed: The channel is closed, or was closed while we waited.
            TypeError: ``message`` is not a :class:`ChannelMessage`.
        """
        if message.__class__ is not ChannelMessage and not isinstance(message, ChannelMessage):
            raise _not_a_message(message)
        if self._closed:
            raise self._closed_error()
        queue = self._queue
        if len(queue) >= self._limit:
            await self._wait_for_room()
        queue.append(message)
        self._sent += 1
        depth = len(queue)
        if depth > self._peak:
            self._peak = depth
        if self._receivers:
            wake_one(self._receivers)
        if depth <= self._arrival_depth and self._arrival is not None:
            self._arrival()
        if self._observers:
            resume = self._observe(message, "send")
            if resume is not None:
                await self._observe_rest(message, "send", resume)

    def send_nowait(self, message: ChannelMessage) -> None:
        """Enqueue ``message`` now, or raise and enqueue nothing.

        Sync observers run before this returns; async observers cannot be awaited here, so
        they run when the message is received, just before its ``"receive"`` phase.

        Raises:
            ChannelFull: The channel is bounded and full.
            ChannelClosed: The channel is closed.
            TypeError: ``message`` is not a :class:`ChannelMessage`.
        """
        if message.__class__ is not ChannelMessage and not isinstance(message, ChannelMessage):
            raise _not_a_message(message)
        if not self._offer(message, defer_async=True):
            if self._closed:
                raise self._closed_error()
            raise ChannelFull(
                f"channel {self._name!r} is full (maxsize={self._maxsize}); "
                f"'await send()' waits for room"
            )

    def _offer(self, message: ChannelMessage, defer_async: bool = False) -> bool:
        """Enqueue now if that needs no waiting; return whether it did.

        With ``defer_async`` (``send_nowait``), async send observers are deferred to the
        receive; without it (the worker loop's and edges' fast path, standing in for an
        awaited ``send``) a channel with async observers refuses.
        """
        queue = self._queue
        if self._closed or len(queue) >= self._limit or not (defer_async or self._all_sync):
            return False
        queue.append(message)
        self._sent += 1
        depth = len(queue)
        if depth > self._peak:
            self._peak = depth
        if self._receivers:
            wake_one(self._receivers)
        if depth <= self._arrival_depth and self._arrival is not None:
            self._arrival()
        if self._observers:
            self._notify_nowait(message, "send")
        return True

    async def receive(self) -> ChannelMessage:
        """Return the oldest message, waiting until one arrives.

        Receivers waiting on an empty channel are served in arrival order. If the task is
        cancelled while waiting, or while an async observer runs, no message is taken:
        one already dequeued is put back at the head.

        Raises:
            ChannelClosed: The channel is closed and drained.
        """
        queue = self._queue
        while not queue:
            if self._closed:
                raise ChannelClosed(f"channel {self._name!r} is closed and drained")
            await park(self._receivers)
        message = queue.popleft()
        if message._pending is not None or self._observers:
            if message._pending is None and message._ack is None:
                resume = self._observe(message, "receive")  # the common case, one call less
            else:
                resume = self._observe_receive(message)
            if resume is not None:
                try:
                    await self._finish_receive(message, resume)
                except BaseException:
                    self._requeue_front(message)
                    raise
        if self._senders:
            wake_one(self._senders)
        return message

    def empty(self) -> bool:
        """Return True if no message is queued."""
        return not self._queue

    def qsize(self) -> int:
        """Return the number of queued messages."""
        return len(self._queue)

    def close(self) -> None:
        """Refuse new messages and wake every blocked sender and receiver. Idempotent.

        Queued messages are still delivered; blocked senders get
        :class:`~spark_nodes.errors.ChannelClosed` without enqueuing.
        """
        if self._closed:
            return
        self._closed = True
        wake_all(self._receivers)
        wake_all(self._senders)

    def statistics(self) -> ChannelStatistics:
        """Return a snapshot of depth, peak, waiters and counts."""
        depth = len(self._queue)
        return ChannelStatistics(
            name=self._name,
            depth=depth,
            peak_depth=self._peak,
            maxsize=self._maxsize,
            waiting_senders=len(self._senders),
            waiting_receivers=len(self._receivers),
            sent=self._sent,
            # Every dequeued message was received; put-backs re-enter the queue.
            received=self._sent - depth,
            closed=self._closed,
            observer_errors=self._observer_errors,
        )

    def __repr__(self) -> str:
        return (
            f"<InMemoryChannel name={self._name!r} depth={len(self._queue)} "
            f"maxsize={self._maxsize} closed={self._closed}>"
        )

    async def _wait_for_room(self) -> None:
        while len(self._queue) >= self._limit:
            await park(self._senders)
            if self._closed:
                raise self._closed_error()

    def _closed_error(self) -> ChannelClosed:
        return ChannelClosed(f"channel {self._name!r} is closed; it accepts no more messages")

    def _would_block(self) -> bool:
        return len(self._queue) >= self._limit

    def _receive_ready(self) -> ChannelMessage | None:
        # The worker loop's fast path: receive() minus its coroutine, when nothing needs
        # awaiting (no observers, no deferred observer work).
        queue = self._queue
        if not queue or self._observers or queue[0]._pending is not None:
            return None
        message = queue.popleft()
        if self._senders:
            wake_one(self._senders)
        return message

    def _snapshot(self) -> list[ChannelMessage] | None:
        return list(self._queue)

    def _replace_contents(self, messages: list[ChannelMessage]) -> None:
        queue = self._queue
        self._sent += len(messages) - len(queue)  # keep received = sent - depth
        queue.clear()
        queue.extend(messages)
        if len(queue) > self._peak:
            self._peak = len(queue)

    def _set_arrival_hook(self, hook: Callable[[], None] | None, depth: int = 0) -> None:
        self._arrival = hook
        self._arrival_depth = depth if hook is not None else 0

    def _discard_shutdowns(self) -> int:
        queue = self._queue
        kept = [message for message in queue if not message.is_shutdown]
        dropped = len(queue) - len(kept)
        if dropped:
            queue.clear()
            queue.extend(kept)
            self._sent -= dropped  # they were never received: keep received = sent - depth
        return dropped

    def _requeue_front(self, message: ChannelMessage) -> bool:
        self._queue.appendleft(message)
        if self._receivers:
            wake_one(self._receivers)
        return True
