"""``ForwardingChannel``: one edge into another channel, with metadata defaults and observers."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import anyio

from spark_nodes.channels.base import BaseChannel, ChannelStatistics, Observer
from spark_nodes.channels.mailbox import (
    Mailbox,
    RestorableMailbox,
    is_mailbox,
    is_restorable,
    mailbox_of,
)
from spark_nodes.channels.message import ChannelMessage, not_a_message
from spark_nodes.errors import ChannelClosed

__all__ = ["ForwardingChannel"]


class ForwardingChannel(BaseChannel):
    """A channel that forwards what it is sent to ``downstream``, enriching the metadata.

    Typically one edge of a graph into a node's mailbox, carrying per-edge metadata and
    observers. Sending adds ``metadata_defaults`` under the message's own metadata (the
    message's keys win) in a copy with the same payload, ack, id and shutdown flag; the
    caller's message is never modified.

    ``receive``, ``empty`` and ``qsize`` read the downstream channel, whichever edge sent
    the message. ``close()`` closes this edge only: later sends raise
    :class:`~spark_nodes.errors.ChannelClosed` and senders blocked on a full downstream are
    woken with it, but the downstream channel (which other edges may feed) stays open and
    can still be read through this channel.

    Args:
        downstream: The channel messages are forwarded to.
        name: This edge's name; ``"forward->{downstream.name}"`` when omitted.
        metadata_defaults: Metadata added to every message unless it has the key already.
        observers: See :class:`BaseChannel`; phases refer to traffic through this edge.

    Raises:
        TypeError: ``downstream`` is not a channel or ``metadata_defaults`` is not a dict.
    """

    __slots__ = ("_adapted", "_blocked", "_defaults", "_down", "_downstream", "_received", "_sent")

    def __init__(
        self,
        downstream: BaseChannel,
        name: str | None = None,
        metadata_defaults: dict[str, Any] | None = None,
        observers: Iterable[Observer] | None = None,
    ) -> None:
        if not isinstance(downstream, BaseChannel):
            raise TypeError(f"downstream must be a BaseChannel, not {type(downstream).__name__}")
        if metadata_defaults is not None and not isinstance(metadata_defaults, dict):
            raise TypeError(
                f"metadata_defaults must be a dict, not {type(metadata_defaults).__name__}"
            )
        super().__init__(name=name or f"forward->{downstream.name}", observers=observers)
        self._downstream = downstream
        self._down: Mailbox = mailbox_of(downstream)
        self._adapted = not is_mailbox(downstream)
        self._defaults = dict(metadata_defaults) if metadata_defaults else None
        self._sent = 0
        self._received = 0
        self._blocked: set[anyio.CancelScope] = set()

    @property
    def downstream(self) -> BaseChannel:
        """The channel this edge forwards to."""
        return self._downstream

    @property
    def metadata_defaults(self) -> dict[str, Any]:
        """A copy of the metadata this edge adds to every message."""
        return dict(self._defaults or {})

    async def send(self, message: ChannelMessage) -> None:
        """Forward an enriched copy of ``message`` downstream, waiting for room if needed.

        Raises:
            ChannelClosed: This edge or the downstream channel is closed (also when closed
                while we waited for room); nothing was forwarded.
            TypeError: ``message`` is not a :class:`ChannelMessage`.
        """
        if message.__class__ is not ChannelMessage and not isinstance(message, ChannelMessage):
            raise not_a_message(message)
        if self._closed:
            raise self._closed_error()
        defaults = self._defaults
        out = message.with_metadata_defaults(defaults) if defaults else message
        downstream = self._downstream
        if self._down.offer(out):
            pass  # sent, with send()'s semantics, minus a coroutine
        elif downstream.full():
            await self._send_when_room(out)
        else:
            await downstream.send(out)
        self._sent += 1
        if self._observers:
            resume = self._observe(out, "send")
            if resume is not None:
                await self._observe_rest(out, "send", resume)

    def send_nowait(self, message: ChannelMessage) -> None:
        """Forward an enriched copy of ``message`` downstream now, or raise.

        Raises:
            ChannelFull: The downstream channel is bounded and full.
            ChannelClosed: This edge or the downstream channel is closed.
            TypeError: ``message`` is not a :class:`ChannelMessage`.
            NotImplementedError: The downstream backend has no ``send_nowait``.
        """
        if message.__class__ is not ChannelMessage and not isinstance(message, ChannelMessage):
            raise not_a_message(message)
        if self._closed:
            raise self._closed_error()
        defaults = self._defaults
        out = message.with_metadata_defaults(defaults) if defaults else message
        self._downstream.send_nowait(out)
        self._sent += 1
        if self._observers:
            self._notify_nowait(out, "send")

    async def receive(self) -> ChannelMessage:
        """Receive the next message from the downstream channel.

        Raises:
            ChannelClosed: The downstream channel is closed and drained.
        """
        down = self._down
        taken = down.take_nowait(1)  # receive() minus a coroutine, when it can
        if taken:
            message = taken[0]
        elif self._adapted:  # a seed-only downstream: the adapter also takes given-back ones
            message = (await down.take(1))[0]
        else:
            message = await self._downstream.receive()
        self._received += 1
        if self._observers:
            if message.deferred is None and message.raw_ack is None:
                resume = self._observe(message, "receive")  # the common case, one call less
            else:
                resume = self._observe_receive(message)
            if resume is None:
                return message
            try:
                await self._finish_receive(message, resume)
            except BaseException:
                # Cancelled mid-notification: hand the message back rather than lose it.
                self._received -= 1
                self._down.give_back([message], started=1)
                raise
        return message

    def empty(self) -> bool:
        """Return True if the downstream channel has no message waiting."""
        return self._down.empty()

    def qsize(self) -> int:
        """Return the downstream channel's depth.

        Raises:
            NotImplementedError: The downstream backend cannot count its messages.
        """
        return self._downstream.qsize()

    def close(self) -> None:
        """Close this edge (not the downstream channel) and wake its blocked senders.

        Idempotent.
        """
        if self._closed:
            return
        self._closed = True
        for scope in self._blocked:
            scope.cancel()

    def statistics(self) -> ChannelStatistics:
        """Return this edge's counts over the downstream channel's depth and waiters.

        ``sent``, ``received``, ``closed`` and ``observer_errors`` are this edge's own;
        the rest describe the downstream channel.
        """
        down = self._downstream.statistics()
        return ChannelStatistics(
            name=self._name,
            depth=down.depth,
            peak_depth=down.peak_depth,
            maxsize=down.maxsize,
            waiting_senders=down.waiting_senders,
            waiting_receivers=down.waiting_receivers,
            sent=self._sent,
            received=self._received,
            closed=self._closed,
            observer_errors=self._observer_errors,
        )

    def __repr__(self) -> str:
        return (
            f"<ForwardingChannel name={self._name!r} downstream={self._downstream.name!r} "
            f"closed={self._closed}>"
        )

    async def _send_when_room(self, message: ChannelMessage) -> None:
        # The slow path only: a cancel scope per send would cost more than the hop itself.
        with anyio.CancelScope() as scope:
            self._blocked.add(scope)
            try:
                await self._downstream.send(message)
            finally:
                self._blocked.discard(scope)
        if scope.cancelled_caught:
            raise self._closed_error()

    def _closed_error(self) -> ChannelClosed:
        return ChannelClosed(
            f"edge {self._name!r} is closed; it forwards no more messages "
            f"(the downstream channel {self._downstream.name!r} is unaffected)"
        )

    # -- the mailbox contract (see spark_nodes.channels.mailbox), served by the downstream --

    def full(self) -> bool:
        """Whether the downstream channel would make a send wait for room."""
        return self._downstream.full()

    def offer(self, message: ChannelMessage) -> bool:
        """Forward an enriched copy now if neither this edge nor the downstream must await.

        Returns:
            False, having done nothing, if this edge is closed or has async observers, or
            the downstream channel refuses the offer.
        """
        if self._closed or not self._all_sync:
            return False
        defaults = self._defaults
        out = message.with_metadata_defaults(defaults) if defaults else message
        if not self._down.offer(out):
            return False
        self._sent += 1
        if self._observers:
            self._observe(out, "send")  # all sync: nothing is left to await
        return True

    def offer_many(self, messages: list[ChannelMessage]) -> int:
        """Forward as many as :meth:`offer` would, in order; return how many."""
        count = 0
        for message in messages:
            if not self.offer(message):
                break
            count += 1
        return count

    def take_nowait(self, limit: int) -> list[ChannelMessage]:
        """Take what the downstream has ready (see :meth:`receive`); ``[]`` if that needs an await.

        With observers on this edge, ``[]``: :meth:`take` runs them.
        """
        if self._observers:
            return []
        taken = self._down.take_nowait(limit)
        self._received += len(taken)
        return taken

    async def take(self, limit: int) -> list[ChannelMessage]:
        """Wait for the first message downstream, then take what else is ready.

        Raises:
            ChannelClosed: The downstream channel is closed and drained.
        """
        taken = self.take_nowait(limit)
        if taken:
            return taken
        taken = [await self.receive()]
        try:
            while len(taken) < limit and not self._down.empty():
                taken.append(await self.receive())
        except BaseException:
            self.give_back(taken)
            raise
        return taken

    def give_back(self, messages: Sequence[ChannelMessage], *, started: int = 0) -> None:
        """Put taken messages back at the head of the downstream channel."""
        self._received -= len(messages)
        self._down.give_back(messages, started=started)

    def snapshot(self) -> list[ChannelMessage]:
        """The downstream channel's queued messages.

        Raises:
            NotImplementedError: The downstream channel is not restorable.
        """
        return self._restorable_downstream().snapshot()

    def restore(self, messages: list[ChannelMessage]) -> None:
        """Make ``messages`` the downstream channel's whole queue.

        Raises:
            NotImplementedError: The downstream channel is not restorable.
        """
        self._restorable_downstream().restore(messages)

    def _restorable_downstream(self) -> RestorableMailbox:
        downstream = self._downstream
        if not is_restorable(downstream):
            raise NotImplementedError(
                f"{downstream!r} does not implement snapshot() and restore() "
                f"(RestorableMailbox): implement them, or use an InMemoryChannel, to "
                f"checkpoint what edge {self.name!r} leads to"
            )
        restorable: RestorableMailbox = downstream  # type: ignore[assignment]
        return restorable
