"""``MemoryState``: graph state in this process, with the same contract as Redis state."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from time import monotonic
from typing import Any, TypeVar

from spark_nodes.channels.codec import pack, unpack
from spark_nodes.errors import StateConflict
from spark_nodes.state.base import (
    RESULT_SUFFIX,
    GraphState,
    StateTransaction,
    check_key,
    check_ttl,
)

__all__ = ["MemoryState"]

T = TypeVar("T")
_Stored = bytes | deque[bytes]  # a packed value, or a list as packed items (O(1) at both ends)
_DELETE = object()


def _kind(stored: _Stored) -> str:
    return "list" if isinstance(stored, deque) else type(unpack(stored)).__name__


class MemoryState(GraphState):
    """Graph state in a dict: the default, for graphs that run in one process.

    Values are kept msgpack-packed, exactly what the Redis backend stores: a bad value
    fails at ``set`` and every read is a fresh copy with Redis's types. Lists are kept as
    packed items, so ``append``/``prepend`` cost O(1). Expired keys are dropped when
    touched. Not thread-safe: use it from one event loop.
    """

    def __init__(self) -> None:
        self._values: dict[str, _Stored] = {}
        self._deadlines: dict[str, float] = {}
        self._versions: dict[str, int] = {}
        self._clock = itertools.count(1)

    # -- reading ---------------------------------------------------------------------------

    async def get(self, key: str, default: Any = None) -> Any:
        """See :meth:`GraphState.get`."""
        check_key(key)
        if key.endswith(RESULT_SUFFIX):
            found, output = self._result(key)
            return unpack(pack(output, where=key)) if found else default
        stored = self._live(key)
        if stored is None:
            return default
        return _read(stored)

    async def exists(self, key: str) -> bool:
        """See :meth:`GraphState.exists`."""
        check_key(key)
        if key.endswith(RESULT_SUFFIX):
            return self._result(key)[0]
        return self._live(key) is not None

    async def keys(self) -> list[str]:
        """See :meth:`GraphState.keys`."""
        live = [key for key in list(self._values) if self._live(key) is not None]
        results = self._results.result_ids() if self._results is not None else []
        return sorted(live + [node_id + RESULT_SUFFIX for node_id in results])

    async def ttl(self, key: str) -> float | None:
        """See :meth:`GraphState.ttl`."""
        check_key(key)
        if self._live(key) is None:
            return None
        deadline = self._deadlines.get(key)
        return None if deadline is None else max(0.0, deadline - monotonic())

    # -- writing ---------------------------------------------------------------------------

    async def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        """See :meth:`GraphState.set`."""
        self._writable(key)
        check_ttl(ttl)
        self._write(key, pack(value, where=f"state[{key!r}]"), ttl)

    async def update(self, mapping: Mapping[str, Any], ttl: float | None = None) -> None:
        """See :meth:`GraphState.update`."""
        check_ttl(ttl)
        packed = {self._writable(k): pack(v, where=f"state[{k!r}]") for k, v in mapping.items()}
        for key, data in packed.items():
            self._write(key, data, ttl)

    async def append(self, key: str, value: Any, ttl: float | None = None) -> int:
        """See :meth:`GraphState.append`."""
        return self._push(key, value, ttl, left=False)

    async def prepend(self, key: str, value: Any, ttl: float | None = None) -> int:
        """See :meth:`GraphState.prepend`."""
        return self._push(key, value, ttl, left=True)

    async def incr(self, key: str, amount: int | float = 1) -> int | float:
        """See :meth:`GraphState.incr`."""
        self._writable(key)
        if isinstance(amount, bool) or not isinstance(amount, int | float):
            raise TypeError(f"incr() adds an int or float, not {type(amount).__name__}")
        stored = self._live(key)
        if stored is None:
            new = amount
        else:
            current = None if isinstance(stored, deque) else unpack(stored)
            if isinstance(current, bool) or not isinstance(current, int | float):
                raise TypeError(
                    f"state key {key!r} holds a {_kind(stored)}; incr() needs an int or float"
                )
            new = current + amount
        self._write(key, pack(new), None)
        return new

    async def delete(self, key: str) -> bool:
        """See :meth:`GraphState.delete`."""
        self._writable(key)
        if self._live(key) is None:
            return False
        self._drop(key)
        return True

    async def persist(self, key: str) -> bool:
        """See :meth:`GraphState.persist`."""
        check_key(key)
        if self._live(key) is None or key not in self._deadlines:
            return False
        del self._deadlines[key]
        self._touch(key)
        return True

    async def transaction(
        self, function: Callable[[StateTransaction], Awaitable[T]], *, max_retries: int = 100
    ) -> T:
        """See :meth:`GraphState.transaction`."""
        for _ in range(max_retries):
            tx = _MemoryTransaction(self)
            result = await function(tx)
            if tx.commit():
                return result
        raise StateConflict(
            f"transaction {getattr(function, '__qualname__', function)!r} found its keys "
            f"changed {max_retries} times in a row; it was not applied"
        )

    async def snapshot(self) -> dict[str, tuple[bytes, float | None]]:
        """See :meth:`GraphState.snapshot`."""
        now = monotonic()
        taken: dict[str, tuple[bytes, float | None]] = {}
        for key in list(self._values):
            stored = self._live(key)
            if stored is None:
                continue
            data = pack([unpack(item) for item in stored]) if isinstance(stored, deque) else stored
            deadline = self._deadlines.get(key)
            taken[key] = (data, None if deadline is None else max(0.001, deadline - now))
        return taken

    async def restore(self, snapshot: Mapping[str, tuple[bytes, float | None]]) -> None:
        """See :meth:`GraphState.restore`."""
        for key in list(self._values):
            self._drop(key)
        for key, (data, ttl) in snapshot.items():
            value = unpack(data)
            if isinstance(value, list):
                self._values[key] = deque(pack(item) for item in value)
                self._touch(key)
                if ttl is not None:
                    self._deadlines[key] = monotonic() + ttl
            else:
                self._write(check_key(key), data, ttl)

    def __repr__(self) -> str:
        return f"<MemoryState keys={len(self._values)}>"

    # -- internals ---------------------------------------------------------------------------

    def _result(self, key: str) -> tuple[bool, Any]:
        if self._results is None:
            return (False, None)
        return self._results.result_of(key[: -len(RESULT_SUFFIX)])

    def _writable(self, key: str) -> str:
        check_key(key)
        if key.endswith(RESULT_SUFFIX):
            raise ValueError(f"{key!r} is a node's result: the node writes it, by producing output")
        return key

    def _live(self, key: str) -> _Stored | None:
        stored = self._values.get(key)
        if stored is None:
            return None
        deadline = self._deadlines.get(key)
        if deadline is not None and deadline <= monotonic():
            self._drop(key)
            return None
        return stored

    def _write(self, key: str, data: bytes, ttl: float | None) -> None:
        self._live(key)  # an expired key's deadline must not carry over to the new value
        self._values[key] = data
        if ttl is not None:
            self._deadlines[key] = monotonic() + ttl
        self._touch(key)

    def _push(self, key: str, value: Any, ttl: float | None, *, left: bool) -> int:
        self._writable(key)
        check_ttl(ttl)
        item = pack(value, where=f"state[{key!r}] item")
        stored = self._live(key)
        if stored is None:
            stored = self._values[key] = deque()
        elif not isinstance(stored, deque):
            whole = unpack(stored)
            if not isinstance(whole, list):
                raise TypeError(f"state key {key!r} holds a {type(whole).__name__}, not a list")
            stored = self._values[key] = deque(pack(element) for element in whole)
        if left:
            stored.appendleft(item)
        else:
            stored.append(item)
        if ttl is not None:
            self._deadlines[key] = monotonic() + ttl
        self._touch(key)
        return len(stored)

    def _drop(self, key: str) -> None:
        del self._values[key]
        self._deadlines.pop(key, None)
        self._versions.pop(key, None)

    def _touch(self, key: str) -> None:
        self._versions[key] = next(self._clock)

    def _version(self, key: str) -> int | None:
        self._live(key)
        return self._versions.get(key)


def _read(stored: _Stored) -> Any:
    if isinstance(stored, deque):
        return [unpack(item) for item in stored]
    return unpack(stored)


class _MemoryTransaction(StateTransaction):
    def __init__(self, state: MemoryState) -> None:
        self._state = state
        self._read: dict[str, int | None] = {}
        self._writes: dict[str, tuple[object, float | None]] = {}

    async def get(self, key: str, default: Any = None) -> Any:
        check_key(key)
        if key in self._writes:
            data, _ = self._writes[key]
            return default if data is _DELETE else unpack(data)  # type: ignore[arg-type]
        self._read.setdefault(key, self._state._version(key))
        return await self._state.get(key, default)

    async def exists(self, key: str) -> bool:
        check_key(key)
        if key in self._writes:
            return self._writes[key][0] is not _DELETE
        self._read.setdefault(key, self._state._version(key))
        return await self._state.exists(key)

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        self._state._writable(key)
        check_ttl(ttl)
        self._writes[key] = (pack(value, where=f"state[{key!r}]"), ttl)

    def delete(self, key: str) -> None:
        self._state._writable(key)
        self._writes[key] = (_DELETE, None)

    def commit(self) -> bool:
        state = self._state
        if any(state._version(key) != version for key, version in self._read.items()):
            return False
        for key, (data, ttl) in self._writes.items():
            if data is _DELETE:
                if state._live(key) is not None:
                    state._drop(key)
            else:
                state._write(key, data, ttl)  # type: ignore[arg-type]
        return True
