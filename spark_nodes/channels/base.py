"""``BaseChannel``: the channel interface, observers and channel statistics."""

from __future__ import annotations

import abc
import inspect
import itertools
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, Self

import structlog

from spark_nodes.channels.message import ChannelMessage, OnceAck
from spark_nodes.errors import ChannelClosed

__all__ = ["BaseChannel", "ChannelStatistics", "Deferrals", "Observer", "ObserverPhase"]

ObserverPhase = Literal["send", "receive", "ack"]
"""The event an observer is told about.

``"send"``: the message was enqueued. ``"receive"``: it was dequeued by a receiver.
``"ack"``: a receiver's ``await message.ack()`` completed (only for messages that carry an
ack, delivered by a channel that has observers).
"""

Observer = Callable[[ChannelMessage, "BaseChannel", str], Awaitable[None] | None]
"""``observer(message, channel, phase)``; a plain function or an ``async def``."""

_Resume = tuple[int, Any, Any]
"""Where to resume notifying: (next observer index, awaitable to finish, its observer)."""
_RUN_PENDING_FIRST: _Resume = (-1, None, None)  # a marker, compared by identity

_log = structlog.get_logger("spark_nodes")


class Deferrals:
    """Whether any message of this process ever carried deferred observer work.

    That work is attached *after* a ``send_nowait`` queued the message (an async observer
    of the channel, or of an edge into it), so no count kept at enqueue time sees it: a
    mailbox that takes a batch without a coroutine checks the batch for it instead, and
    only once this is true (the check costs ~3 % of an in-memory graph's throughput).
    """

    seen = False


_channel_numbers = itertools.count(1)


@dataclass(frozen=True, slots=True)
class ChannelStatistics:
    """A snapshot of a channel's state, from :meth:`BaseChannel.statistics`.

    Attributes:
        name: The channel's name.
        depth: Messages queued now.
        peak_depth: The largest ``depth`` seen since the channel was created.
        maxsize: The bound on ``depth``; 0 means unbounded.
        waiting_senders: Tasks blocked in ``send`` on a full channel.
        waiting_receivers: Tasks blocked in ``receive`` on an empty channel.
        sent: Messages accepted by ``send``/``send_nowait``.
        received: Messages handed out by ``receive``.
        closed: Whether ``close()`` was called.
        observer_errors: Observer calls that raised (each was logged).
    """

    name: str
    depth: int
    peak_depth: int
    maxsize: int
    waiting_senders: int
    waiting_receivers: int
    sent: int
    received: int
    closed: bool
    observer_errors: int


def _is_async_callable(function: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
        getattr(function, "__call__", None)  # noqa: B004 - instances with an async __call__
    )


def _describe(observer: Callable[..., Any]) -> str:
    return getattr(observer, "__qualname__", None) or repr(observer)


class BaseChannel(abc.ABC):
    """The interface every channel implements: an async FIFO of :class:`ChannelMessage`.

    Subclass it for a custom backend (the seed's "Custom Channel Development"): implement
    ``send``, ``receive`` and ``empty``; override ``close``, ``send_nowait``, ``qsize``,
    ``full`` and ``statistics`` when the backend supports them. Call ``await
    self._notify(message, "send")`` after a successful send and ``await
    self._notify_receive(message)`` before returning from ``receive`` to give your backend
    observers (and ``"ack"`` reports). That is a complete mailbox; the protocols of
    :mod:`spark_nodes.channels.mailbox` make one faster (batches) or durable (commits).

    ``async for message in channel`` receives until the channel is closed and drained;
    shutdown messages are yielded like any other (check ``message.is_shutdown``).

    Args:
        name: The channel's name, for logs and tracing; generated when omitted.
        observers: Called as ``observer(message, channel, phase)`` in registration order,
            sync or async, after each ``"send"``, ``"receive"`` and ``"ack"``. An observer
            that raises is logged with structlog and counted, and never stops delivery nor
            the other observers. A send that failed (full, closed) is not observed.

    Raises:
        TypeError: ``name`` is not a non-empty str, or an observer is not callable.
    """

    __slots__ = (
        "__weakref__",
        "_all_sync",
        "_closed",
        "_first_async",
        "_name",
        "_observer_errors",
        "_observers",
    )

    def __init__(
        self, name: str | None = None, observers: Iterable[Observer] | None = None
    ) -> None:
        if name is None:
            name = f"{type(self).__name__}-{next(_channel_numbers)}"
        elif not isinstance(name, str) or not name:
            raise TypeError(f"channel name must be a non-empty str, not {name!r}")
        self._name = name
        self._closed = False
        self._observers: tuple[Observer, ...] = ()
        # Index of the first async observer: the ones before it run inline, no coroutine.
        self._first_async = 0
        self._all_sync = True
        self._observer_errors = 0
        for observer in observers or ():
            self.add_observer(observer)

    # -- the seed interface -------------------------------------------------------------

    @property
    def name(self) -> str:
        """The channel's name."""
        return self._name

    @abc.abstractmethod
    async def send(self, message: ChannelMessage) -> None:
        """Enqueue ``message``, waiting for room if the channel is bounded and full.

        Raises:
            ChannelClosed: The channel is closed, or was closed while we waited for room;
                nothing was enqueued.
            TypeError: ``message`` is not a :class:`ChannelMessage`.
        """

    def send_nowait(self, message: ChannelMessage) -> None:
        """Enqueue ``message`` without waiting.

        Raises:
            ChannelFull: The channel is bounded and full; nothing was enqueued.
            ChannelClosed: The channel is closed; nothing was enqueued.
            NotImplementedError: This backend cannot enqueue without waiting.
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not support send_nowait(); use 'await send()'"
        )

    @abc.abstractmethod
    async def receive(self) -> ChannelMessage:
        """Return the next message, waiting until one arrives.

        Raises:
            ChannelClosed: The channel is closed and every message sent before the close
                has been received.
        """

    @abc.abstractmethod
    def empty(self) -> bool:
        """Return True if no message is waiting to be received."""

    def close(self) -> None:
        """Close the channel: refuse new messages; queued ones are still delivered.

        Idempotent.
        """
        self._closed = True

    # -- extensions ---------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether ``close()`` has been called."""
        return self._closed

    def qsize(self) -> int:
        """Return the number of messages waiting to be received.

        Raises:
            NotImplementedError: This backend cannot count its messages.
        """
        raise NotImplementedError(f"{type(self).__name__} does not report its depth")

    def full(self) -> bool:
        """Return True if ``send`` would wait for room now; False when it cannot tell."""
        return False

    def statistics(self) -> ChannelStatistics:
        """Return a snapshot of the channel's state.

        This base implementation knows the name, the closed flag, observer errors and,
        when ``qsize()`` is implemented, the depth; backends override it with real counts.
        """
        try:
            depth = self.qsize()
        except NotImplementedError:
            depth = 0
        return ChannelStatistics(
            name=self._name,
            depth=depth,
            peak_depth=depth,
            maxsize=0,
            waiting_senders=0,
            waiting_receivers=0,
            sent=0,
            received=0,
            closed=self.closed,
            observer_errors=self._observer_errors,
        )

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> ChannelMessage:
        try:
            return await self.receive()
        except ChannelClosed:
            raise StopAsyncIteration from None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self._name!r} closed={self.closed}>"

    # -- observers ----------------------------------------------------------------------

    @property
    def observers(self) -> tuple[Observer, ...]:
        """The observers, in the order they are called."""
        return self._observers

    def add_observer(self, observer: Observer) -> None:
        """Call ``observer(message, channel, phase)`` after each event, after the others.

        Raises:
            TypeError: ``observer`` is not callable.
        """
        if not callable(observer):
            raise TypeError(
                f"observer must be callable as observer(message, channel, phase), "
                f"not {type(observer).__name__}"
            )
        self._observers = (*self._observers, observer)
        self._index_observers()

    def remove_observer(self, observer: Observer) -> None:
        """Stop calling ``observer``.

        Raises:
            ValueError: ``observer`` is not registered on this channel.
        """
        observers = list(self._observers)
        try:
            observers.remove(observer)
        except ValueError:
            raise ValueError(f"{observer!r} is not an observer of channel {self._name!r}") from None
        self._observers = tuple(observers)
        self._index_observers()

    def _index_observers(self) -> None:
        observers = self._observers
        self._first_async = next(
            (i for i, o in enumerate(observers) if _is_async_callable(o)), len(observers)
        )
        self._all_sync = self._first_async == len(observers)

    # Observers run inline, without a coroutine, until one needs awaiting: the common
    # all-sync case then costs a loop and a call per observer (it cost 2.4x more as an
    # awaited helper). ``_observe*`` return None when done, else where to resume.

    def _observe(self, message: ChannelMessage, phase: str) -> _Resume | None:
        """Run observers in order until one must be awaited; return where to resume."""
        first_async = self._first_async
        index = 0
        for observer in self._observers:
            if index == first_async:
                return (index, None, None)
            index += 1
            try:
                result = observer(message, self, phase)
            except Exception:  # noqa: BLE001 - an observer must never break delivery
                self._observer_failed(observer, message, phase)
                continue
            if result is not None and inspect.isawaitable(result):
                return (index, result, observer)
        return None

    async def _observe_rest(self, message: ChannelMessage, phase: str, resume: _Resume) -> None:
        """Finish what :meth:`_observe` left: await its awaitable, then the later observers."""
        start, awaitable, observer = resume
        if awaitable is not None:
            try:
                await awaitable
            except Exception:  # noqa: BLE001 - an observer must never break delivery
                self._observer_failed(observer, message, phase)
        for observer in self._observers[start:]:
            try:
                result = observer(message, self, phase)
                if result is not None and inspect.isawaitable(result):
                    await result
            except Exception:  # noqa: BLE001 - an observer must never break delivery
                self._observer_failed(observer, message, phase)

    async def _notify(self, message: ChannelMessage, phase: str) -> None:
        """Tell every observer about ``phase`` for ``message``, awaiting async ones."""
        resume = self._observe(message, phase)
        if resume is not None:
            await self._observe_rest(message, phase, resume)

    def _notify_nowait(self, message: ChannelMessage, phase: str) -> None:
        """Run the observers a synchronous caller can; defer the rest to the receive.

        A synchronous caller cannot await, so the remaining observers of this event are
        attached to the message and run by whichever channel delivers it, just before its
        ``"receive"`` phase.
        """
        resume = self._observe(message, phase)
        if resume is not None:
            Deferrals.seen = True
            entry = (self, phase, resume)
            if message.deferred is None:
                message.deferred = [entry]
            else:
                message.deferred.append(entry)

    def _observe_receive(self, message: ChannelMessage) -> _Resume | None:
        """Start the receive-phase work for ``message``; None if it is all done."""
        if message.deferred is not None:
            return _RUN_PENDING_FIRST
        if message.raw_ack is not None:
            self._watch_ack(message)
        return self._observe(message, "receive")

    async def _finish_receive(self, message: ChannelMessage, resume: _Resume) -> None:
        """Finish what :meth:`_observe_receive` started."""
        if resume is _RUN_PENDING_FIRST:
            pending = message.deferred or ()
            message.deferred = None
            for channel, phase, channel_resume in pending:
                await channel._observe_rest(message, phase, channel_resume)
            if not self._observers:
                return
            if message.raw_ack is not None:
                self._watch_ack(message)
            next_resume = self._observe(message, "receive")
            if next_resume is None:
                return
            resume = next_resume
        await self._observe_rest(message, "receive", resume)

    async def _notify_receive(self, message: ChannelMessage) -> None:
        """Run deferred send-phase work, then the receive-phase observers.

        Also makes the message's ack report phase ``"ack"`` to this channel's observers.
        """
        resume = self._observe_receive(message)
        if resume is not None:
            await self._finish_receive(message, resume)

    def _watch_ack(self, message: ChannelMessage) -> None:
        if self._observers:
            ack = message.ack
            assert isinstance(ack, OnceAck)
            ack.watch(self._notify, message)

    def _observer_failed(self, observer: Observer, message: ChannelMessage, phase: str) -> None:
        # Called from inside an ``except`` block: structlog attaches the traceback.
        self._observer_errors += 1
        _log.exception(
            "observer failed",
            observer=_describe(observer),
            channel=self._name,
            phase=phase,
            msg_id=message.id,
        )
