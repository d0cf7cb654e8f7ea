"""``InMemoryChannel``: the default mailbox, a FIFO in one process."""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from operator import attrgetter
from typing import Any

from spark_nodes.channels._waiters import park, wake_all, wake_one
from spark_nodes.channels.base import BaseChannel, ChannelStatistics, Deferrals, Observer
from spark_nodes.channels.message import ChannelMessage, not_a_message
from spark_nodes.errors import ChannelClosed, ChannelFull

__all__ = ["InMemoryChannel"]


_deferred_of = attrgetter("deferred")
# An empty channel holds no deque (760 bytes: 7 MiB for a 10,000-node graph) but this
# shared empty tuple, which reads like one; whatever writes makes a deque first.
_NO_QUEUE: Any = ()


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
        self._queue: deque[ChannelMessage] = _NO_QUEUE
        self._receivers: list[Any] = []
        self._senders: list[Any] = []
        self._sent = 0
        self._peak = 0
        # See set_arrival_callback.
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
            raise not_a_message(message)
        if self._closed:
            raise self._closed_error()
        queue = self._queue
        if len(queue) >= self._limit:
            await self._wait_for_room()
            queue = self._queue
        # _enqueue, inlined: every send of a node's mailbox comes here (a call is ~8% of it).
        if queue is _NO_QUEUE:
            queue = self._queue = deque()
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
            raise not_a_message(message)
        if self._closed:
            raise self._closed_error()
        if len(self._queue) >= self._limit:
            raise ChannelFull(
                f"channel {self._name!r} is full (maxsize={self._maxsize}); "
                f"'await send()' waits for room"
            )
        self._enqueue(message)
        if self._observers:
            self._notify_nowait(message, "send")

    def offer(self, message: ChannelMessage) -> bool:
        """Enqueue ``message`` now, with ``send()``'s effects, if that needs no await.

        Returns:
            False, having done nothing, if the channel is closed or full or has async
            observers (``send()`` would raise, wait or await); else True.
        """
        queue = self._queue
        if self._closed or len(queue) >= self._limit or not self._all_sync:
            return False
        # _enqueue, inlined: graph.send() comes here for every message it is given.
        if queue is _NO_QUEUE:
            queue = self._queue = deque()
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
            self._observe(message, "send")  # all sync: nothing is left to await
        return True

    def offer_many(self, messages: list[ChannelMessage]) -> int:
        """Enqueue as many of ``messages`` as :meth:`offer` would, in order; return how many.

        One call for a batch: the worker loop forwards a batch's outputs to each mailbox
        this way (a quarter of the cost of an ``offer`` per message).
        """
        if self._closed or not self._all_sync:
            return 0
        queue = self._queue
        room = self._limit - len(queue)
        if room <= 0:
            return 0
        count = len(messages)
        if count > room:
            messages = messages[:room]
            count = room
        before = len(queue)
        if queue is _NO_QUEUE:
            queue = self._queue = deque()
        queue.extend(messages)
        self._sent += count
        depth = before + count
        if depth > self._peak:
            self._peak = depth
        receivers = self._receivers
        if receivers:
            for _ in range(min(count, len(receivers))):  # each wake takes a waiter
                wake_one(receivers)
        if self._arrival is not None and before < self._arrival_depth:
            for _ in range(min(depth, self._arrival_depth) - before):
                self._arrival()
        if self._observers:
            for message in messages:
                self._observe(message, "send")
        return count

    def _enqueue(self, message: ChannelMessage) -> None:
        """Append ``message`` with the bookkeeping every way of sending shares."""
        queue = self._queue
        if queue is _NO_QUEUE:
            queue = self._queue = deque()
        queue.append(message)
        self._sent += 1
        depth = len(queue)
        if depth > self._peak:
            self._peak = depth
        if self._receivers:
            wake_one(self._receivers)
        if depth <= self._arrival_depth and self._arrival is not None:
            self._arrival()

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
            queue = self._queue  # a first send may have made it
        message = queue.popleft()
        if message.deferred is not None or self._observers:
            if message.deferred is None and message.raw_ack is None:
                resume = self._observe(message, "receive")  # the common case, one call less
            else:
                resume = self._observe_receive(message)
            if resume is not None:
                try:
                    await self._finish_receive(message, resume)
                except BaseException:
                    self.give_back([message])
                    raise
        if self._senders:
            wake_one(self._senders)
        return message

    def take_nowait(self, limit: int) -> list[ChannelMessage]:
        """Take up to ``limit`` queued messages at once, oldest first; ``[]`` if none.

        Stops before a message that carries deferred observer work, and returns ``[]``
        when the channel has observers: :meth:`take` runs that work (``receive()``'s work
        without its coroutine would skip it).
        """
        queue = self._queue
        if not queue or self._observers:
            return []
        if limit == 1:  # receive()'s work without its coroutine (a ForwardingChannel's)
            if queue[0].deferred is not None:
                return []
            taken = [queue.popleft()]
        else:
            if len(queue) <= limit:
                taken = list(queue)
                self._queue = _NO_QUEUE  # a worker loop emptied it: idle mailboxes hold no deque
            else:
                pop = queue.popleft
                taken = [pop() for _ in range(limit)]
            if Deferrals.seen and any(map(_deferred_of, taken)):
                taken = self._keep_from_first_deferred(taken)
        senders = self._senders
        if senders:
            for _ in range(min(len(taken), len(senders))):
                wake_one(senders)
        return taken

    def _keep_from_first_deferred(self, taken: list[ChannelMessage]) -> list[ChannelMessage]:
        """Put back ``taken`` from its first message with deferred work on; return the rest."""
        first = next(i for i, message in enumerate(taken) if message.deferred is not None)
        self.give_back(taken[first:])
        return taken[:first]

    async def take(self, limit: int) -> list[ChannelMessage]:
        """Wait for the first message, then take up to ``limit`` - 1 more without waiting.

        If the task is cancelled, the messages taken so far are put back.

        Raises:
            ChannelClosed: The channel is closed and drained.
        """
        taken = self.take_nowait(limit)
        if taken:
            return taken
        taken = [await self.receive()]
        try:
            while self._queue and len(taken) < limit:
                taken.append(await self.receive())
        except BaseException:
            self.give_back(taken)
            raise
        return taken

    def give_back(self, messages: Sequence[ChannelMessage], *, started: int = 0) -> None:
        """Put taken messages back at the head, in their order; never refused.

        They count as not received yet (``statistics().received`` goes down); ``started``
        makes no difference here.
        """
        if not messages:
            return
        queue = self._queue
        if queue is _NO_QUEUE:
            queue = self._queue = deque()
        queue.extendleft(reversed(messages))
        if len(queue) > self._peak:
            self._peak = len(queue)
        receivers = self._receivers
        if receivers:
            for _ in range(min(len(messages), len(receivers))):
                wake_one(receivers)

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

    def full(self) -> bool:
        """Return True if the channel is bounded and holds ``maxsize`` messages."""
        return len(self._queue) >= self._limit

    def snapshot(self) -> list[ChannelMessage]:
        """The queued messages, oldest first, left in place (what a checkpoint saves)."""
        return list(self._queue)

    def restore(self, messages: list[ChannelMessage]) -> None:
        """Make ``messages`` the whole queue (a checkpoint being restored).

        Counts stay consistent: the messages replaced count as never sent, the new ones
        as sent and not received. Receivers waiting on the channel are woken.
        """
        self._sent += len(messages) - len(self._queue)  # keep received = sent - depth
        queue = self._queue = deque(messages)
        if len(queue) > self._peak:
            self._peak = len(queue)
        receivers = self._receivers
        for _ in range(min(len(queue), len(receivers))):
            wake_one(receivers)

    def set_arrival_callback(self, callback: Callable[[], None] | None, depth: int = 0) -> None:
        """Call ``callback()`` after each message enqueued while at most ``depth`` are queued.

        How a graph starts a worker only when a node has work: with ``depth`` the node's
        concurrency, an arrival finds a worker for it. ``None`` removes the callback.
        Runs in the sending task, which must not be blocked by it. Messages given back
        or restored are not arrivals: whoever gives them back or restores is serving the
        channel, or starts a worker for it.
        """
        self._arrival = callback
        self._arrival_depth = depth if callback is not None else 0
