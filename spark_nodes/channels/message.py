"""``ChannelMessage``: the envelope every channel carries."""

from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Final

__all__ = ["AckCallback", "ChannelMessage", "new_message_id"]

AckCallback = Callable[[], Awaitable[None]]
"""An acknowledgement callback: ``async def ack() -> None``."""

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


class _OnceAck:
    """Wraps an ack callback so that calling it more than once is harmless.

    The callback runs at most once successfully. A call while the first is still running,
    or after it finished, returns at once. If the callback raises, the ack stays undone
    and the next call tries again. Channels that delivered the message with observers
    attached are told (phase ``"ack"``) after the callback succeeded.
    """

    __slots__ = ("_state", "_watchers", "callback")

    def __init__(self, callback: AckCallback) -> None:
        self.callback = callback
        self._state = _NOT_ACKED
        self._watchers: list[tuple[_Notify, ChannelMessage]] | None = None

    @property
    def done(self) -> bool:
        return self._state == _ACKED

    def watch(self, notify: _Notify, message: ChannelMessage) -> None:
        # Idempotent: a message put back and received again must not report "ack" twice.
        if self._watchers is None:
            self._watchers = [(notify, message)]
        elif not any(n == notify and m is message for n, m in self._watchers):
            self._watchers.append((notify, message))

    async def __call__(self) -> None:
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
    def already_done(cls, callback: AckCallback) -> _OnceAck:
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
        if isinstance(other, _OnceAck):
            return self.callback == other.callback
        return self.callback == other

    def __hash__(self) -> int:
        return hash(self.callback)

    def __repr__(self) -> str:
        return f"<ack {self.callback!r} done={self.done}>"


_UNSET: Any = object()
_new_object = object.__new__


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
            processes, for tracing and
            de-duplication, generated on first access unless given. Not part of ``==``.

    Raises:
        TypeError: ``metadata`` is not a dict, ``ack`` is not callable, or ``id`` is not a
            non-empty str.
    """

    __slots__ = ("_ack", "_id", "_metadata", "_pending", "is_shutdown", "payload")

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
        self._metadata = metadata
        self._ack: AckCallback | _OnceAck | None = ack
        self.is_shutdown = is_shutdown
        self._id: str | int | None = id
        # Send-phase observer work that a synchronous send_nowait could not await; the
        # receiving channel runs it before the receive phase (see BaseChannel).
        self._pending: list[Any] | None = None

    @property
    def metadata(self) -> dict[str, Any]:
        """Tracing, routing and debugging information; created empty on first access."""
        metadata = self._metadata
        if metadata is None:
            metadata = self._metadata = {}
        return metadata

    @metadata.setter
    def metadata(self, value: dict[str, Any]) -> None:
        if not isinstance(value, dict):
            raise TypeError(f"metadata must be a dict, not {type(value).__name__}")
        self._metadata = value

    @property
    def ack(self) -> AckCallback | None:
        """The acknowledgement callback, made idempotent; ``None`` if there is none."""
        ack = self._ack
        if ack is None or ack.__class__ is _OnceAck:
            return ack
        once = _OnceAck(ack)
        self._ack = once
        return once

    @ack.setter
    def ack(self, value: AckCallback | None) -> None:
        if value is not None and not callable(value):
            raise TypeError(f"ack must be an async callable or None, not {type(value).__name__}")
        self._ack = value

    @property
    def acked(self) -> bool:
        """True once the ack callback has completed successfully."""
        ack = self._ack
        return isinstance(ack, _OnceAck) and ack.done

    @property
    def id(self) -> str:
        """The message id (tracing, de-duplication); generated on first access."""
        ident = self._id
        if isinstance(ident, str):
            return ident
        if ident is None:
            ident = next(_sequence)
        text = f"{_prefix}{ident}"
        self._id = text
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
        current = self._metadata
        merged: dict[str, Any] | None
        if current:
            merged = {**current, **metadata} if metadata else dict(current)
        else:
            merged = dict(metadata) if metadata else None
        if self._id is None:
            self._id = next(_sequence)
        copy = ChannelMessage(
            self.payload if payload is _UNSET else payload,
            merged,
            self.ack,
            self.is_shutdown if is_shutdown is None else is_shutdown,
        )
        copy._id = self._id
        return copy

    def _with_metadata_defaults(self, defaults: dict[str, Any]) -> ChannelMessage:
        # ForwardingChannel's hot path: defaults under the message's own keys, same id,
        # payload, ack and flag. Built field by field (no __init__, no properties, no
        # validation: every part comes from a valid message).
        ack = self._ack
        if ack is not None and ack.__class__ is not _OnceAck:
            ack = self._ack = _OnceAck(ack)
        ident = self._id
        if ident is None:
            ident = self._id = next(_sequence)
        current = self._metadata
        copy: ChannelMessage = _new_object(ChannelMessage)
        copy.payload = self.payload
        copy._metadata = {**defaults, **current} if current else defaults.copy()
        copy._ack = ack
        copy.is_shutdown = self.is_shutdown
        copy._id = ident
        copy._pending = None
        return copy

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, ChannelMessage)
        return (
            self.payload == other.payload
            and (self._metadata or {}) == (other._metadata or {})
            and self._ack == other._ack
            and self.is_shutdown == other.is_shutdown
        )

    __hash__ = None  # type: ignore[assignment]  # mutable and compared by value, like the seed

    def __repr__(self) -> str:
        return (
            f"ChannelMessage(payload={self.payload!r}, metadata={self.metadata!r}, "
            f"ack={self._ack!r}, is_shutdown={self.is_shutdown!r}, id={self.id!r})"
        )
