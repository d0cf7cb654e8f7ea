"""``GraphState``: the key-value state a graph's nodes share, and its contract."""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

import msgpack

from spark_nodes.channels.codec import unpack
from spark_nodes.errors import MessageDecodeError, MessageEncodeError

if TYPE_CHECKING:
    from spark_nodes.state.typed import TypedState

__all__ = ["RESULT_SUFFIX", "GraphState", "ResultSource", "StateTransaction"]

RESULT_SUFFIX = ".__result__"
"""A node's latest output is readable as ``f"{node_id}{RESULT_SUFFIX}"``."""

# The msgpack extension type of a stored result that was not plain data. Plain data never
# holds an extension (pack refuses them), so no output can be mistaken for one.
_UNENCODABLE_RESULT: Final = 1

T = TypeVar("T")
Schema = TypeVar("Schema")


class ResultSource(Protocol):
    """Where the latest outputs of a graph's nodes are read from (the graph)."""

    def result_of(self, node_id: str) -> tuple[bool, Any]:
        """``(True, output)`` for a node with an output, else ``(False, None)``."""
        ...

    def result_ids(self) -> list[str]:
        """The ids of the nodes that have an output."""
        ...


class StateTransaction(abc.ABC):
    """What a transaction function gets: watched reads, and writes applied at commit.

    Reads see the transaction's own writes. Writes are buffered and applied together, only
    if no key the function read was changed meanwhile; otherwise the function runs again.
    """

    @abc.abstractmethod
    async def get(self, key: str, default: Any = None) -> Any:
        """Read ``key`` (watched)."""

    @abc.abstractmethod
    async def exists(self, key: str) -> bool:
        """Whether ``key`` exists (watched)."""

    @abc.abstractmethod
    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Set ``key`` at commit (see :meth:`GraphState.set`).

        Raises:
            MessageEncodeError: ``value`` is not plain data.
        """

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Delete ``key`` at commit."""


class GraphState(abc.ABC):
    """Key-value state shared by a graph's nodes: ``context.graph_state``, ``graph.state``.

    One async API over several backends, which all keep the same contract (the suite in
    ``spark_nodes.testing.state_contract``):

    - Values are plain data (see :mod:`spark_nodes.channels.codec`): a value that is not
      fails at ``set`` with an error naming its type and place, in every backend, so a
      graph behaves the same when it moves from memory to Redis. What you read back is a
      fresh copy (tuples come back as lists), never the object you stored.
    - ``ttl`` is in seconds. An expired key reads as absent. ``ttl=None`` keeps a key's
      current expiry (an overwrite does not drop it); :meth:`persist` removes it.
    - ``f"{node_id}.__result__"`` holds a node's latest output (read-only here).
    """

    _results: ResultSource | None = None

    @abc.abstractmethod
    async def get(self, key: str, default: Any = None) -> Any:
        """Return the value of ``key``, or ``default`` if it is absent or expired.

        Raises:
            TypeError: ``key`` is not a non-empty str.
            MessageEncodeError: ``key`` is a node's result (``{node_id}.__result__``) and
                that output is not plain data; in every backend and every process.
        """

    @abc.abstractmethod
    async def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Store ``value`` under ``key``.

        Args:
            key: The key.
            value: Plain data.
            ttl: Seconds until the key expires; ``None`` keeps the current expiry.

        Raises:
            MessageEncodeError: ``value`` is not plain data (a ``TypeError``).
            ValueError: ``ttl`` is not positive, or ``key`` is a node result.
        """

    @abc.abstractmethod
    async def append(self, key: str, value: Any, ttl: float | None = None) -> int:
        """Add ``value`` at the end of the list under ``key`` (made if absent).

        Returns:
            The list's new length.

        Raises:
            TypeError: ``key`` holds something other than a list.
            MessageEncodeError: ``value`` is not plain data.
        """

    @abc.abstractmethod
    async def prepend(self, key: str, value: Any, ttl: float | None = None) -> int:
        """Add ``value`` at the start of the list under ``key`` (made if absent).

        Returns:
            The list's new length.

        Raises:
            TypeError: ``key`` holds something other than a list.
            MessageEncodeError: ``value`` is not plain data.
        """

    @abc.abstractmethod
    async def incr(self, key: str, amount: int | float = 1) -> int | float:
        """Add ``amount`` to the number under ``key`` (0 if absent), atomically.

        Returns:
            The new value (an int while both are ints).

        Raises:
            TypeError: ``key`` holds something other than an int or float, or ``amount``
                is not one.
        """

    @abc.abstractmethod
    async def delete(self, key: str) -> bool:
        """Remove ``key``; return whether it existed."""

    @abc.abstractmethod
    async def exists(self, key: str) -> bool:
        """Whether ``key`` is present and not expired."""

    @abc.abstractmethod
    async def keys(self) -> list[str]:
        """Every present key (node results included), sorted."""

    @abc.abstractmethod
    async def update(self, mapping: Mapping[str, Any], ttl: float | None = None) -> None:
        """Set several keys at once: all of them, or none if a value is not plain data.

        Raises:
            MessageEncodeError: A value is not plain data; nothing was written.
        """

    @abc.abstractmethod
    async def ttl(self, key: str) -> float | None:
        """Seconds until ``key`` expires; ``None`` if it has no expiry or is absent."""

    @abc.abstractmethod
    async def persist(self, key: str) -> bool:
        """Remove ``key``'s expiry; return whether it had one."""

    @abc.abstractmethod
    async def transaction(
        self, function: Callable[[StateTransaction], Awaitable[T]], *, max_retries: int = 100
    ) -> T:
        """Run ``function(tx)`` as one atomic read-modify-write; return what it returns.

        ``function`` reads with ``await tx.get(...)`` and writes with ``tx.set(...)`` /
        ``tx.delete(...)``; the writes are applied together, only if none of the keys it read
        changed meanwhile. Otherwise it runs again, so it must not have other side effects.

        Raises:
            StateConflict: The keys kept changing for ``max_retries`` runs.
        """

    @abc.abstractmethod
    async def snapshot(self) -> dict[str, tuple[bytes, float | None]]:
        """Every stored key (results excluded) as (packed value, seconds left or None).

        For checkpoints; :meth:`restore` reads it back.
        """

    @abc.abstractmethod
    async def restore(self, snapshot: Mapping[str, tuple[bytes, float | None]]) -> None:
        """Replace the stored keys with a :meth:`snapshot` (results are not touched)."""

    def bind_results(self, source: ResultSource | None) -> None:
        """Serve ``{node_id}.__result__`` from ``source`` (the graph does this)."""
        self._results = source

    def typed(self, schema: type[Schema]) -> TypedState[Schema]:
        """A view whose values must match the ``TypedDict`` ``schema``, and read back typed.

        Raises:
            TypeError: ``schema`` is not a ``TypedDict`` class.
        """
        from spark_nodes.state.typed import TypedState  # noqa: PLC0415 - typed uses this module

        return TypedState(self, schema)


def check_key(key: object) -> str:
    """Return ``key`` if it is a usable state key.

    Raises:
        TypeError: It is not a non-empty str.
    """
    if not isinstance(key, str) or not key:
        raise TypeError(f"state keys are non-empty str, not {key!r}")
    return key


def check_ttl(ttl: float | None) -> float | None:
    """Return ``ttl`` if it is ``None`` or a positive number of seconds.

    Raises:
        ValueError: It is zero, negative, or not a number.
    """
    if ttl is not None and (
        isinstance(ttl, bool) or not isinstance(ttl, int | float) or not ttl > 0
    ):
        raise ValueError(f"ttl is a positive number of seconds (or None), not {ttl!r}")
    return ttl


def unencodable_result(error: MessageEncodeError) -> bytes:
    """What a store keeps for a node output that is not plain data: the error, to raise again.

    Reading the result back with :func:`unpack_result`, in any process, raises the same
    :class:`MessageEncodeError` as reading it where it was produced (or in memory): the
    output is neither absent nor an older one.
    """
    data: bytes = msgpack.packb(msgpack.ExtType(_UNENCODABLE_RESULT, str(error).encode()))
    return data


def unpack_result(data: bytes) -> Any:
    """Read a node result a store keeps (msgpack, or :func:`unencodable_result`'s mark).

    Raises:
        MessageEncodeError: The node's output was not plain data (the message says where).
        MessageDecodeError: The bytes are neither.
    """
    try:
        return unpack(data)
    except MessageDecodeError:
        try:
            mark = msgpack.unpackb(data)
        except Exception:  # noqa: BLE001 - garbage: the decode error says what is wrong
            mark = None
        if isinstance(mark, msgpack.ExtType) and mark.code == _UNENCODABLE_RESULT:
            raise MessageEncodeError(mark.data.decode(errors="replace")) from None
        raise
