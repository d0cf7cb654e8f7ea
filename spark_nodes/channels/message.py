"""``ChannelMessage``: the envelope every channel carries."""

from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Final

__all__ = [
    "AckCallback",
    "ChannelMessage",
    "OnceAck",
    "new_message_id",
    "not_a_message",
    "unchecked_message",
]

AckCallback = Callable[[], Awaitable[None]]
"""An acknowledgement callback: ``async def ack() -> None``.

A callback object may also have a ``done`` attribute: while it is ``True`` the work was
done another way (a Redis lease settled by a commit), so the message counts as acked
and acking it does nothing."""

# Message ids are "<16 hex random>-<decimal counter>": unique across processes (64 random
# bits per process) yet ~40 ns to reserve, because only an int is taken until someone reads
# the id. A uuid4 per message would cost more than a whole in-memory hop, and formatting the
# counter in decimal is 5x cheaper than in hex.
_prefix: str = secrets.token_hex(8) + "-"
_sequence: itertools.count[int] = itertools.count(1)


def _reseed_ids() -> None:
    # A forked child must not hand out the ids its parent hands out.
    global _prefix, _sequence  # noqa: PLW0603 - process-wide id source, reset per process
    _prefix = secrets.token_hex(8) + "-"
    _sequence = itertools.count(1)


os.register_at_fork(after_in_child=_reseed_ids)


def new_message_id() -> str:
    """Return a fresh message id, in the format :attr:`ChannelMessage.id` uses."""
    return f"{_prefix}{next(_sequence)}"


_Notify = Callable[["ChannelMessage", str], Awaitable[None]]

_NOT_ACKED: Final = 0
_ACKING: Final = 1
_ACKED: Final = 2


class OnceAck:
    """Wraps an ack callback so that calling it more than once is harmless.

    The callback runs at most once successfully. A call while the first is still running,
    or after it finished, returns at once. If the callback raises, the ack stays undone
    and the next call tries again. Channels that delivered the message with observers
    attached are told (phase ``"ack"``) after the callback succeeded.
    """

    __slots__ = ("_state", "_watchers", "callback")

    def __init__(self, callback: AckCallback) -> None:
        self.callback = callback
        # A callback that says it is done (a settled lease) is: acking it does nothing.
        self._state = _ACKED if getattr(callback, "done", False) is True else _NOT_ACKED
        self._watchers: list[tuple[_Notify, ChannelMessage]] | None = None

    @property
    def done(self) -> bool:
        """Whether the ack completed (by a call, or another way: see :meth:`settled`)."""
        return self._state == _ACKED

    def watch(self, notify: _Notify, message: ChannelMessage) -> None:
        """Call ``await notify(message, "ack")`` once the ack is done (a channel's observers).

        Idempotent: a message put back and received again does not report twice.
        """
        if self._watchers is None:
            self._watchers = [(notify, message)]
        elif not any(n == notify and m is message for n, m in self._watchers):
            self._watchers.append((notify, message))

    async def __call__(self) -> None:
        """Ack: run the callback unless it ran (or is running); then tell the watchers."""
        if self._state != _NOT_ACKED:
            return
        self._state = _ACKING
        try:
            await self.callback()
        except BaseException:
            self._state = _NOT_ACKED
            raise
        self._state = _ACKED
        if self._watchers:
            for notify, message in self._watchers:
                await notify(message, "ack")

    @classmethod
    def already_done(cls, callback: AckCallback) -> OnceAck:
        """An ack whose callback's work was done another way (nobody watched it)."""
        once = cls(callback)
        once._state = _ACKED
        return once

    async def settled(self) -> None:
        """Record that the ack was done another way (a batch ack, a forward-and-ack).

        Later calls return at once, and watching channels are told, as after a call.
        """
        if self._state == _ACKED:
            return
        self._state = _ACKED
        if self._watchers:
            for notify, message in self._watchers:
                await notify(message, "ack")

    def __eq__(self, other: object) -> bool:
        if isinstance(other, OnceAck):
            return self.callback == other.callback
        return self.callback == other

    def __hash__(self) -> int:
        return hash(self.callback)

    def __repr__(self) -> str:
        return f"<ack {self.callback!r} done={self.done}>"


_UNSET: Any = object()
_new_object = object.__new__


def not_a_message(value: object) -> TypeError:
    """The error for a value sent to a channel that is not a :class:`ChannelMessage`."""
    return TypeError(
        f"channels carry ChannelMessage objects, not {type(value).__name__}; "
        f"wrap the value: ChannelMessage(payload=value) (or use QueueBridge)"
    )


def unchecked_message(
    payload: Any,
    metadata: dict[str, Any] | None = None,
    ack: AckCallback | OnceAck | None = None,
    is_shutdown: bool = False,
    id: str | None = None,
) -> ChannelMessage:
    """``ChannelMessage(...)`` without its checks, for code that built valid parts itself.

    The worker loop builds one per forwarded output, channels one per decoded entry; the
    checked constructor costs a third more.
    """
    message: ChannelMessage = _new_object(ChannelMessage)
    message.payload = payload
    message.raw_metadata = metadata
    message.raw_ack = ack
    message.is_shutdown = is_shutdown
    message.raw_id = id
    message.deferred = None
    return message


class ChannelMessage:
    """The envelope for one payload travelling through a channel.

    Built like the seed's dataclass: ``ChannelMessage(payload, metadata={}, ack=None,
    is_shutdown=False)``, with the same attributes, ``==`` and ``repr``. It is a hand-written
    slotted class rather than ``@dataclass`` so that ``metadata`` and ``id`` cost nothing
    until they are used: a message is built on every hop and the envelope is most of the
    hop's cost.

    Attributes:
        payload: The application data. Any object in memory; plain data (see
            :mod:`spark_nodes.channels.codec`) once it crosses a process boundary.
        metadata: Tracing, routing and debugging information (a ``dict``, created on
            first access).
        ack: ``None`` or an async callable the receiver awaits once the message has been
            handled. Calling it more than once is harmless: the callback runs at most once
            successfully; a call while the first one runs, or after it succeeded, returns
            at once; if the callback raised, a later call tries again.
        is_shutdown: True for a shutdown signal rather than data.
        id: ``"<16 hex random>-<counter>"``, unique in the process and distinct across
            processes, for tracing and de-duplication, generated on first access unless
            given. Not part of ``==``.

    For channel implementations and the worker loop, which build and read messages on every
    hop without the properties' work (building a message field by field costs half of what
    the checked constructor does), the storage behind the properties is public too:

    Attributes:
        raw_metadata: The metadata dict, or ``None`` until ``metadata`` is first used.
        raw_ack: The ack as given (``None``, a callback, or its :class:`OnceAck`).
        raw_id: The id as a str, or the counter it will be made from, or ``None``.
        deferred: Observer work that a ``send_nowait`` could not await, run by the
            channel that delivers the message (see :class:`~spark_nodes.channels.BaseChannel`),
            or ``None``.

    Use :func:`unchecked_message` to build one without the constructor's checks.

    Raises:
        TypeError: ``metadata`` is not a dict, ``ack`` is not callable, or ``id`` is not a
            non-empty str.
    """

    __slots__ = ("deferred", "is_shutdown", "payload", "raw_ack", "raw_id", "raw_metadata")

    def __init__(
        self,
        payload: Any,
        metadata: dict[str, Any] | None = None,
        ack: AckCallback | None = None,
        is_shutdown: bool = False,
        *,
        id: str | None = None,
    ) -> None:
        if metadata is not None and not isinstance(metadata, dict):
            raise TypeError(f"metadata must be a dict, not {type(metadata).__name__}")
        if ack is not None and not callable(ack):
            raise TypeError(f"ack must be an async callable or None, not {type(ack).__name__}")
        if id is not None and (id.__class__ is not str or not id):
            raise TypeError(f"id must be a non-empty str, not {id!r}")
        self.payload = payload
        self.raw_metadata = metadata
        self.raw_ack: AckCallback | OnceAck | None = ack
        self.is_shutdown = is_shutdown
        self.raw_id: str | int | None = id
        # Send-phase observer work that a synchronous send_nowait could not await; the
        # receiving channel runs it before the receive phase (see BaseChannel).
        self.deferred: list[Any] | None = None

    @property
    def metadata(self) -> dict[str, Any]:
        """Tracing, routing and debugging information; created empty on first access."""
        metadata = self.raw_metadata
        if metadata is None:
            metadata = self.raw_metadata = {}
        return metadata

    @metadata.setter
    def metadata(self, value: dict[str, Any]) -> None:
        if not isinstance(value, dict):
            raise TypeError(f"metadata must be a dict, not {type(value).__name__}")
        self.raw_metadata = value

    @property
    def ack(self) -> AckCallback | None:
        """The acknowledgement callback, made idempotent; ``None`` if there is none."""
        ack = self.raw_ack
        if ack is None or ack.__class__ is OnceAck:
            return ack
        once = OnceAck(ack)
        self.raw_ack = once
        return once

    @ack.setter
    def ack(self, value: AckCallback | None) -> None:
        if value is not None and not callable(value):
            raise TypeError(f"ack must be an async callable or None, not {type(value).__name__}")
        self.raw_ack = value

    @property
    def acked(self) -> bool:
        """True once the ack callback has completed successfully (or was settled otherwise)."""
        ack = self.raw_ack
        if ack.__class__ is OnceAck:
            return ack.done
        return getattr(ack, "done", False) is True

    @property
    def id(self) -> str:
        """The message id (tracing, de-duplication); generated on first access."""
        ident = self.raw_id
        if isinstance(ident, str):
            return ident
        if ident is None:
            ident = next(_sequence)
        text = f"{_prefix}{ident}"
        self.raw_id = text
        return text

    def clone(
        self,
        *,
        payload: Any = _UNSET,
        metadata: dict[str, Any] | None = None,
        is_shutdown: bool | None = None,
    ) -> ChannelMessage:
        """Return a copy with some fields replaced; the original is not touched.

        Args:
            payload: The new payload; omit it to keep the current one. ``None`` is a
                payload like any other, so ``clone(payload=None)`` clears it.
            metadata: Keys to merge over a copy of the current metadata (these win).
            is_shutdown: The new shutdown flag; omit it to keep the current one.

        Returns:
            A new message sharing this message's ``ack`` (acking either acks both) and
            ``id`` (a clone is the same logical message, modified).

        Raises:
            TypeError: ``metadata`` is not a dict.
        """
        if metadata is not None and not isinstance(metadata, dict):
            raise TypeError(f"metadata must be a dict, not {type(metadata).__name__}")
        current = self.raw_metadata
        merged: dict[str, Any] | None
        if current:
            merged = {**current, **metadata} if metadata else dict(current)
        else:
            merged = dict(metadata) if metadata else None
        if self.raw_id is None:
            self.raw_id = next(_sequence)
        copy = ChannelMessage(
            self.payload if payload is _UNSET else payload,
            merged,
            self.ack,
            self.is_shutdown if is_shutdown is None else is_shutdown,
        )
        copy.raw_id = self.raw_id
        return copy

    def with_metadata_defaults(self, defaults: dict[str, Any]) -> ChannelMessage:
        """Return a copy whose metadata has ``defaults`` under this message's own keys.

        The copy shares the payload, ack (acking either acks both), id and shutdown flag;
        this message is not touched. (What a :class:`ForwardingChannel` sends: built field
        by field, with no checks, since every part comes from a valid message.)
        """
        ack = self.raw_ack
        if ack is not None and ack.__class__ is not OnceAck:
            ack = self.raw_ack = OnceAck(ack)
        ident = self.raw_id
        if ident is None:
            ident = self.raw_id = next(_sequence)
        current = self.raw_metadata
        copy: ChannelMessage = _new_object(ChannelMessage)
        copy.payload = self.payload
        copy.raw_metadata = {**defaults, **current} if current else defaults.copy()
        copy.raw_ack = ack
        copy.is_shutdown = self.is_shutdown
        copy.raw_id = ident
        copy.deferred = None
        return copy

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, ChannelMessage)
        return (
            self.payload == other.payload
            and (self.raw_metadata or {}) == (other.raw_metadata or {})
            and self.raw_ack == other.raw_ack
            and self.is_shutdown == other.is_shutdown
        )

    __hash__ = None  # type: ignore[assignment]  # mutable and compared by value, like the seed

    def __repr__(self) -> str:
        return (
            f"ChannelMessage(payload={self.payload!r}, metadata={self.metadata!r}, "
            f"ack={self.raw_ack!r}, is_shutdown={self.is_shutdown!r}, id={self.id!r})"
        )
