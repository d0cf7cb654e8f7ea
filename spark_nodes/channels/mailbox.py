"""The contract between a node's mailbox and the worker loop that serves it.

A worker loop does three things, over and over: it *takes* a batch of messages from its
node's mailbox, *handles* each one (``process``, retries, dead letters, control flow) and
*settles* the batch: it forwards the outputs to the next mailboxes and acks the inputs.
This module names what the loop needs from a mailbox for each step.

Any :class:`~spark_nodes.channels.BaseChannel` is a mailbox: one that implements only the
seed's methods (``send``, ``receive``, ``empty``, ``close``) is served one message at a time
through :func:`mailbox_of`, with ``receive()`` to take, ``send()`` to forward and
``message.ack()`` to settle. A channel is served faster, in every run mode, when it also
implements the protocols below:

- :class:`Mailbox` (take a batch without a coroutine, give back, offer without waiting) lets
  the loop take many messages per call and forward without awaiting: what
  :class:`~spark_nodes.channels.InMemoryChannel` and
  :class:`~spark_nodes.channels.ForwardingChannel` do.
- :class:`RestorableMailbox` (snapshot, restore) lets checkpoints save and restore what the
  mailbox holds.
- :class:`DurableMailbox` (commit, dead-letter, leases) makes the mailbox durable: the
  outputs and acks of a whole batch are settled in one atomic step, each message judged on
  its own lease, as :class:`~spark_nodes.channels.RedisChannel` does.

Every method here is called from the task that runs the worker loop, one call at a time
per loop; several loops (``NodeConfig.concurrency``) may share a mailbox. See
``docs/channels.md`` ("Custom channels") for an example that runs as a test.
"""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import anyio

from spark_nodes.channels.base import BaseChannel
from spark_nodes.channels.message import ChannelMessage
from spark_nodes.errors import ChannelClosed

__all__ = [
    "Commit",
    "DurableMailbox",
    "Mailbox",
    "RestorableMailbox",
    "is_durable",
    "is_mailbox",
    "is_restorable",
    "mailbox_of",
]


@runtime_checkable
class Mailbox(Protocol):
    """A channel the worker loop can take batches from and offer to without awaiting."""

    def take_nowait(self, limit: int) -> list[ChannelMessage]:
        """Take up to ``limit`` messages that are ready now, oldest first; ``[]`` if none.

        Taking is receiving: counts and ``"receive"`` observers are as for ``receive()``.
        Return ``[]`` (and let :meth:`take` do it) when taking would need an await, such
        as an async observer.
        """
        ...

    async def take(self, limit: int) -> list[ChannelMessage]:
        """Wait for the first message, then take up to ``limit`` - 1 more without waiting.

        Returns at least one message. If the task is cancelled, nothing is taken
        (through :func:`mailbox_of`'s adapter, only if the channel's ``receive()`` takes
        nothing when cancelled).

        Raises:
            ChannelClosed: The channel is closed and drained.
        """
        ...

    def give_back(self, messages: Sequence[ChannelMessage], *, started: int = 0) -> None:
        """Put taken messages back at the head, in their order, to be taken again.

        The loop gives back what it took but did not handle (it is stopping, or a
        shutdown ends it), and local wake-up messages. Never refused, even when full.
        The first ``started`` of them were being handled when the loop stopped: a
        durable mailbox counts their delivery, not the others'.
        """
        ...

    def offer(self, message: ChannelMessage) -> bool:
        """Enqueue ``message`` now, with all of ``send()``'s effects, if that needs no await.

        Returns:
            True if it was enqueued; False, having done nothing, if ``send()`` would have
            to wait or await (full, closed, async observers, a remote store).
        """
        ...

    def offer_many(self, messages: list[ChannelMessage]) -> int:
        """Enqueue the longest prefix of ``messages`` that needs no await; return its length.

        What :meth:`offer` does for each, in order, stopping at the first it would refuse.
        """
        ...

    def empty(self) -> bool:
        """Return True if nothing is ready to be taken."""
        ...


@runtime_checkable
class RestorableMailbox(Protocol):
    """A mailbox that keeps its messages in this process: checkpoints can save them."""

    def snapshot(self) -> list[ChannelMessage]:
        """The queued messages, oldest first, left in place."""
        ...

    def restore(self, messages: list[ChannelMessage]) -> None:
        """Make ``messages`` the whole queue (a checkpoint being restored)."""
        ...


@dataclass(slots=True)
class Commit:
    """What handling a batch from a durable mailbox decided, to be settled in one step.

    Attributes:
        messages: Messages taken from the mailbox and handled, in order: each is acked
            (if its lease is still held) together with its outputs.
        sends: For each message, its outputs: ``(target mailbox, message)`` pairs, for
            targets the mailbox :meth:`~DurableMailbox.commits_to`.
        result: ``(index into messages, encoded output)``: the node's latest output, kept
            where the mailbox keeps node results if that message commits; or ``None``.
        released: Indexes of messages released by the message before them that is not
            (a window's or a join's parts, after the message that closed it): each is
            acked only if that message commits, else delivered again.
    """

    messages: list[ChannelMessage] = field(default_factory=list)
    sends: list[list[tuple[BaseChannel, ChannelMessage]]] = field(default_factory=list)
    result: tuple[int, bytes] | None = None
    released: frozenset[int] = frozenset()

    def add(self, message: ChannelMessage) -> list[tuple[BaseChannel, ChannelMessage]]:
        """Add a handled message; return the list its outputs go in."""
        self.messages.append(message)
        outputs: list[tuple[BaseChannel, ChannelMessage]] = []
        self.sends.append(outputs)
        return outputs

    def clear(self) -> None:
        """Forget everything (after it was settled)."""
        self.messages = []
        self.sends = []
        self.result = None
        self.released = frozenset()

    def __len__(self) -> int:
        return len(self.messages)


@runtime_checkable
class DurableMailbox(Mailbox, Protocol):
    """A mailbox whose messages stay in a store until settled, fenced by leases.

    A message taken from it is *leased* to this consumer: nobody else gets it while the
    lease holds, and it is delivered again (here after a restart, or elsewhere after a
    timeout) if it is never settled. A consumer whose lease was lost (it stalled past the
    timeout) cannot settle the message any more: its commit of that message is refused.
    """

    def commits_to(self, target: BaseChannel) -> bool:
        """Whether a send to ``target`` can be committed atomically with acks of ours."""
        ...

    async def commit(self, batch: Commit) -> list[bool]:
        """Forward each message's outputs and ack it, for the whole batch, in one step.

        Each message is judged on its own lease: one whose lease was lost forwards
        nothing and is not acked (it is handled where it was reclaimed); the others
        commit, except those of ``batch.released`` whose releasing message did not.

        Returns:
            For each message of the batch, whether it was committed.

        Raises:
            MessageEncodeError: An output is not plain data; nothing was committed.
            MessageTooLarge: An output is too large for its target; nothing was committed.
            BackendUnavailable: The store could not be reached; nothing was committed for
                sure, and committing the same batch again is safe.
        """
        ...

    async def dead_letter(
        self,
        message: ChannelMessage,
        *,
        reason: str,
        error: str = "",
        details: dict[str, Any] | None = None,
    ) -> None:
        """Keep a taken message as a dead letter of this mailbox, with why; settle it.

        Raises:
            LeaseLost: The lease was lost; nothing was moved.
            BackendUnavailable: The store could not be reached.
        """
        ...

    def redelivered(self, message: ChannelMessage) -> bool:
        """Whether ``message`` was delivered before and never settled.

        Its worker crashed or stalled while holding it, maybe because of it: the loop
        handles such a message alone, so that one that kills its workers costs no other
        message a delivery.
        """
        ...

    async def renew_leases(self) -> int:
        """Renew the leases of every message this consumer holds; return how many."""
        ...

    async def release_buffered(self) -> int:
        """Give back what was received from the store but not taken; return how many."""
        ...


class _ChannelMailbox:
    """The per-message path for a channel with only the seed's methods.

    Takes one message per ``receive()`` and keeps given-back messages here, in front of
    the channel; one per channel (see :func:`mailbox_of`), so every reader sees them. A
    give-back wakes the takes waiting in ``receive()`` by cancelling that wait: a channel
    served this way must lose no message to a cancelled ``receive()`` (the seed's own
    ``receive()``, waiting on an event, loses none).
    """

    __slots__ = ("_channel", "_returned", "_waiting")

    def __init__(self, channel: BaseChannel) -> None:
        # Weak, as the adapter is kept as long as its channel lives (_adapters).
        self._channel = weakref.ref(channel)
        self._returned: deque[ChannelMessage] = deque()
        self._waiting: set[anyio.CancelScope] = set()

    def take_nowait(self, limit: int) -> list[ChannelMessage]:
        returned = self._returned
        taken: list[ChannelMessage] = []
        while returned and len(taken) < limit:
            taken.append(returned.popleft())
        return taken

    async def take(self, limit: int) -> list[ChannelMessage]:
        while not self._returned:
            with anyio.CancelScope() as waiting:
                self._waiting.add(waiting)
                try:
                    return [await self._live_channel().receive()]
                finally:
                    self._waiting.discard(waiting)
            # give_back() cancelled the wait: take what it gave back (if still there).
        return self.take_nowait(limit)

    def give_back(self, messages: Sequence[ChannelMessage], *, started: int = 0) -> None:
        if not messages:
            return
        self._returned.extendleft(reversed(messages))
        for waiting in self._waiting:
            waiting.cancel()

    def offer(self, message: ChannelMessage) -> bool:
        return False

    def offer_many(self, messages: list[ChannelMessage]) -> int:
        return 0

    def empty(self) -> bool:
        return not self._returned and self._live_channel().empty()

    def _live_channel(self) -> BaseChannel:
        channel = self._channel()
        if channel is None:  # only a caller that dropped the channel itself gets here
            raise ChannelClosed("the channel of this mailbox no longer exists")
        return channel


_adapters: weakref.WeakKeyDictionary[BaseChannel, _ChannelMailbox] = weakref.WeakKeyDictionary()
"""The adapter of each seed-only channel: one, so what one reader gives back, the others
(the node's loops, an edge into it) take."""


_implements: dict[type, tuple[bool, bool, bool]] = {}
"""Per channel type: (Mailbox, RestorableMailbox, DurableMailbox); a protocol check costs
~10 us and a 10,000-node graph makes one per node and run."""


def _protocols_of(channel: BaseChannel) -> tuple[bool, bool, bool]:
    kind = type(channel)
    known = _implements.get(kind)
    if known is None:
        known = _implements[kind] = (
            isinstance(channel, Mailbox),
            isinstance(channel, RestorableMailbox),
            isinstance(channel, DurableMailbox),
        )
    return known


def mailbox_of(channel: BaseChannel) -> Mailbox:
    """The :class:`Mailbox` to serve ``channel`` through: itself, or a per-message adapter.

    The adapter, one per channel, receives one message per ``receive()``, cannot offer
    (every forward is an awaited ``send()``), and keeps given-back messages in front of
    the channel, waking a reader waiting in ``receive()`` to take them.
    """
    if _protocols_of(channel)[0]:
        mailbox: Mailbox = channel  # type: ignore[assignment]
        return mailbox
    try:
        adapter = _adapters.get(channel)
        if adapter is None:
            adapter = _adapters[channel] = _ChannelMailbox(channel)
    except TypeError:  # a channel class made unhashable: its readers share nothing
        return _ChannelMailbox(channel)
    return adapter


def is_mailbox(channel: BaseChannel) -> bool:
    """Whether ``channel`` implements :class:`Mailbox` itself (no adapter needed)."""
    return _protocols_of(channel)[0]


def is_restorable(channel: BaseChannel) -> bool:
    """Whether ``channel``'s type implements :class:`RestorableMailbox`.

    Answered per type: a :class:`~spark_nodes.channels.ForwardingChannel` is restorable
    by type, but its ``snapshot()`` raises ``NotImplementedError`` when its downstream is
    not restorable.
    """
    return _protocols_of(channel)[1]


def is_durable(channel: BaseChannel) -> bool:
    """Whether ``channel`` implements :class:`DurableMailbox`."""
    return _protocols_of(channel)[2]
