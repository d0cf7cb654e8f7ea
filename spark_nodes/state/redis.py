"""``RedisState``: graph state in Redis, shared by every process that runs the graph.

Keys, where ``{<graph>}`` is a Redis Cluster hash tag (one graph's keys share a slot, so
its scripts and transactions may touch several of them)::

    <namespace>:{<graph>}#state:<key>       a value: msgpack bytes; or a list: a Redis list
                                             of msgpack items
    <namespace>:{<graph>}#result:<node_id>  a node's latest output, msgpack (workers write it;
                                             an output that is not plain data is kept as
                                             its MessageEncodeError, raised to readers)
    <namespace>:{<graph>}#applied:<token>   a short-lived mark that one call was applied, so
                                             its retry does not apply it twice

The ``#`` keeps them apart from the graph's mailboxes, ``<namespace>:{<graph>}:<node_id>``,
whatever the node ids are.

Every call that changes something more than once when repeated (``append``, ``prepend``,
``incr``, ``transaction``) leaves such a mark in the same atomic step as its change; a retry
after a lost reply finds it and returns the first try's result instead of applying again.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import re
import secrets
import struct
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from functools import partial
from typing import Any, Final, Self, TypeVar

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError, WatchError

from spark_nodes._redis_client import (
    RETRIABLE,
    ConnectionRetry,
    RedisClient,
    RedisPipeline,
    check_client,
    open_client,
    ready,
    scan_slot,
    with_retries,
)
from spark_nodes.channels.codec import pack, unpack
from spark_nodes.errors import MessageEncodeError, StateConflict
from spark_nodes.state.base import (
    RESULT_SUFFIX,
    GraphState,
    StateTransaction,
    check_key,
    check_ttl,
    unpack_result,
)

__all__ = ["RedisState"]

T = TypeVar("T")

_BATCH: Final = 1000  # keys per SCAN page, per snapshot read, and args per RPUSH/DEL
_REWRITES: Final = 100  # rounds of a list set whole being turned into a Redis list

# What READ returns per key, first element.
_ABSENT, _VALUE, _LIST, _FOREIGN = 0, 1, 2, 3
# What PUSH and INCR return, first element: applied; the key holds this packed value, which
# the caller must look at; the key is of another Redis type; the sum is out of range.
_DONE, _HELD, _OTHER_TYPE, _OUT_OF_RANGE = 1, 2, 3, 4

_READ: Final = """
-- Read keys whole, each atomically with its expiry.
-- KEYS: state keys. Returns per key {0} absent, {1, packed value, pttl},
-- {2, {packed items}, pttl} for a list, {3, type} for a type RedisState does not write.
local out = {}
for i, key in ipairs(KEYS) do
  local kind = redis.call('TYPE', key).ok
  if kind == 'string' then
    out[i] = {1, redis.call('GET', key), redis.call('PTTL', key)}
  elseif kind == 'list' then
    out[i] = {2, redis.call('LRANGE', key, 0, -1), redis.call('PTTL', key)}
  elseif kind == 'none' then
    out[i] = {0}
  else
    out[i] = {3, kind}
  end
end
return out
"""

_PUSH: Final = """
-- Push one packed item onto the list under KEYS[1], once per call token.
-- KEYS[1] the key, KEYS[2] the call's applied mark.
-- ARGV[1] mark lifetime (ms), ARGV[2] new expiry (ms) or '' to keep it, ARGV[3] 'L' or 'R',
-- ARGV[4] the item; ARGV[5] (optional) the packed list the key is expected to hold as a
-- value, ARGV[6..] that list's items packed: the key then becomes a Redis list of them.
-- Returns {1, length}; {2, value} when the key holds a value other than ARGV[5] (the
-- caller unpacks it: a list to convert, or a type error); {3, type} for a foreign type.
local done = redis.call('GET', KEYS[2])
if done then return {1, tonumber(done)} end
local kind = redis.call('TYPE', KEYS[1]).ok
local keep = -1
if kind == 'string' then
  local current = redis.call('GET', KEYS[1])
  if current ~= ARGV[5] then return {2, current} end
  keep = redis.call('PTTL', KEYS[1])
  redis.call('DEL', KEYS[1])
  for i = 6, #ARGV, 1000 do
    redis.call('RPUSH', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
  end
elseif kind ~= 'list' and kind ~= 'none' then
  return {3, kind}
end
local length
if ARGV[3] == 'L' then
  length = redis.call('LPUSH', KEYS[1], ARGV[4])
else
  length = redis.call('RPUSH', KEYS[1], ARGV[4])
end
if ARGV[2] ~= '' then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
elseif keep > 0 then
  redis.call('PEXPIRE', KEYS[1], keep)
end
redis.call('SET', KEYS[2], length, 'PX', ARGV[1])
return {1, length}
"""

_INCR: Final = """
-- Add a number to the msgpack number under KEYS[1], exactly, once per call token. Lua
-- numbers are doubles, so ints are added as sign and two 32-bit limbs of the magnitude
-- (msgpack holds -2^63 .. 2^64-1); an int and a float, or two floats, add as doubles, which
-- is what Python does. The result is packed as Python's msgpack packs it.
-- KEYS[1] the key, KEYS[2] the call's applied mark.
-- ARGV[1] mark lifetime (ms); ARGV[2] 'i' or 'f': the amount's type; ARGV[3] the amount as a
-- big-endian double ('' for an int too large for one); for an int amount, ARGV[4] its sign
-- (1 or -1), ARGV[5] and ARGV[6] the high and low 32-bit limbs of its magnitude.
-- Returns {1, new packed value}; {2, value} when the key holds something not a number;
-- {3, type} for a key that is not a string; {4, value or ''} when the sum is out of range.
local done = redis.call('GET', KEYS[2])
if done then return {1, done} end
local kind = redis.call('TYPE', KEYS[1]).ok
if kind ~= 'string' and kind ~= 'none' then return {3, kind} end
local raw = false
if kind == 'string' then raw = redis.call('GET', KEYS[1]) end
local TWO32, TWO31 = 4294967296, 2147483648

local function uint(s, from, n)
  local v = 0
  for k = from, from + n - 1 do v = v * 256 + string.byte(s, k) end
  return v
end

-- 'i', sign, high limb, low limb | 'f', value | nil for anything but a number
local function decode(s)
  local b, n = string.byte(s, 1), #s
  if n == 1 and b <= 0x7f then return 'i', 1, 0, b end
  if n == 1 and b >= 0xe0 then return 'i', -1, 0, 256 - b end
  if n == 2 and b == 0xcc then return 'i', 1, 0, uint(s, 2, 1) end
  if n == 3 and b == 0xcd then return 'i', 1, 0, uint(s, 2, 2) end
  if n == 5 and b == 0xce then return 'i', 1, 0, uint(s, 2, 4) end
  if n == 9 and b == 0xcf then return 'i', 1, uint(s, 2, 4), uint(s, 6, 4) end
  local width = ({[0xd0] = 1, [0xd1] = 2, [0xd2] = 4})[b]
  if width and n == width + 1 then
    local v, range = uint(s, 2, width), 256 ^ width
    if v >= range / 2 then return 'i', -1, 0, range - v end
    return 'i', 1, 0, v
  end
  if n == 9 and b == 0xd3 then
    local hi, lo = uint(s, 2, 4), uint(s, 6, 4)
    if hi < TWO31 then return 'i', 1, hi, lo end
    if lo == 0 then return 'i', -1, TWO32 - hi, 0 end
    return 'i', -1, TWO32 - hi - 1, TWO32 - lo
  end
  if n == 9 and b == 0xcb then return 'f', (struct.unpack('>d', s, 2)) end
  if n == 5 and b == 0xca then return 'f', (struct.unpack('>f', s, 2)) end
  return nil
end

local function add(as, ah, al, bs, bh, bl)
  if as == bs then
    local lo, hi = al + bl, ah + bh
    if lo >= TWO32 then lo, hi = lo - TWO32, hi + 1 end
    return as, hi, lo
  end
  if ah < bh or (ah == bh and al < bl) then as, ah, al, bh, bl = bs, bh, bl, ah, al end
  local lo, hi = al - bl, ah - bh
  if lo < 0 then lo, hi = lo + TWO32, hi - 1 end
  if hi == 0 and lo == 0 then return 1, 0, 0 end
  return as, hi, lo
end

local function bytes4(v)
  return string.char(math.floor(v / 16777216) % 256, math.floor(v / 65536) % 256,
                     math.floor(v / 256) % 256, v % 256)
end

local function encode(sign, hi, lo)
  if sign > 0 then
    if hi > 0 then return '\\207' .. bytes4(hi) .. bytes4(lo) end
    if lo < 128 then return string.char(lo) end
    if lo < 256 then return '\\204' .. string.char(lo) end
    if lo < 65536 then return '\\205' .. string.char(math.floor(lo / 256), lo % 256) end
    return '\\206' .. bytes4(lo)
  end
  if hi == 0 and lo <= 32 then return string.char(256 - lo) end
  if hi == 0 and lo <= 128 then return '\\208' .. string.char(256 - lo) end
  if hi == 0 and lo <= 32768 then
    local v = 65536 - lo
    return '\\209' .. string.char(math.floor(v / 256), v % 256)
  end
  if hi == 0 and lo <= TWO31 then return '\\210' .. bytes4(TWO32 - lo) end
  if lo == 0 then return '\\211' .. bytes4(TWO32 - hi) .. bytes4(0) end
  return '\\211' .. bytes4(TWO32 - hi - 1) .. bytes4(TWO32 - lo)
end

local new
if not raw and ARGV[2] == 'f' then
  new = '\\203' .. ARGV[3]  -- the amount itself, as Python keeps it (-0.0 stays -0.0)
else
  -- for a float, cs holds its value
  local ck, cs, ch, cl = 'i', 1, 0, 0
  if raw then ck, cs, ch, cl = decode(raw) end
  if ck == nil then return {2, raw} end
  if ck == 'i' and ARGV[2] == 'i' then
    local s, hi, lo = add(cs, ch, cl, tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]))
    if (s > 0 and hi >= TWO32) or (s < 0 and (hi > TWO31 or (hi == TWO31 and lo > 0))) then
      return {4, raw or ''}
    end
    new = encode(s, hi, lo)
  else
    if ARGV[3] == '' then return {4, raw} end
    local current = cs
    if ck == 'i' then current = cs * (ch * TWO32 + cl) end
    new = '\\203' .. struct.pack('>d', current + struct.unpack('>d', ARGV[3]))
  end
end
redis.call('SET', KEYS[1], new, 'KEEPTTL')
redis.call('SET', KEYS[2], new, 'PX', ARGV[1])
return {1, new}
"""

# An int amount this large or larger is out of msgpack's range added to any msgpack int,
# so it is sent clamped to this (the script then reports the sum out of range).
_INT_LIMIT: Final = 2**65


class _Script:
    """A Lua script run by EVALSHA, and by EVAL once a server lacks it (say, restarted)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()

    async def __call__(
        self, conn: RedisClient | RedisPipeline, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        # execute_command, as redis-py's ClusterPipeline refuses its evalsha method.
        try:
            return await conn.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await conn.execute_command("EVAL", self.text, len(keys), *keys, *args)


_READ_SCRIPT: Final = _Script(_READ)
_PUSH_SCRIPT: Final = _Script(_PUSH)
_INCR_SCRIPT: Final = _Script(_INCR)


class _Conflict:
    """A transaction try whose watched keys changed: run the function again."""


_CONFLICT: Final = _Conflict()


class _TransactionRun:
    """One ``transaction()`` call across its tries: the commits that may have applied unseen.

    A commit sets the run's mark to its number in the same MULTI/EXEC, so after a lost EXEC
    reply the next try reads the mark: the number of the commit that applied, or nothing.
    """

    def __init__(self, mark: str) -> None:
        self.mark = mark
        self.commits = 0
        self.unconfirmed: dict[int, Any] = {}  # commit number -> what the function returned


class RedisState(GraphState):
    """Graph state in Redis: the state of a graph whose nodes run in several processes.

    Keeps the :class:`GraphState` contract as :class:`MemoryState` does, with the values in
    Redis (layout in the module docs): msgpack bytes, and lists as Redis lists of packed
    items, so ``append``/``prepend`` are O(1) and atomic across processes. Expiry runs on
    the server's clock (``ttl=None`` keeps it: ``SET ... KEEPTTL``; lists keep theirs).
    ``incr`` is one Lua script with exact 64-bit integer arithmetic; ``transaction`` is
    WATCH/MULTI/EXEC on a connection of its own. Node results are read from Redis first,
    then from the bound source.

    Every Redis call is retried on connection errors per ``retry``, then raises
    :class:`~spark_nodes.errors.BackendUnavailable`. ``append``, ``prepend``, ``incr`` and
    ``transaction`` are applied at most once across their retries (a mark, see the module
    docs: one small key per such call, kept about two minutes with the default ``retry``,
    longer than its retries can last); the other writes are idempotent, except that a
    ``delete`` or ``persist`` whose reply was lost reports what its retry found. redis-py is
    asyncio only, so this backend is too.

    Args:
        redis: A Redis URL (``redis://``, ``rediss://``, ``unix://``): the state opens a
            client and closes it in :meth:`aclose`. Or a shared ``redis.asyncio.Redis``
            client made with ``decode_responses=False``, which stays open (its owner
            closes it).
        namespace: The first part of every key, e.g. an application's name.
        graph: The graph whose state this is; also the Redis Cluster hash tag.
        retry: How calls are retried when Redis cannot be reached; the default gives up
            after about 4 seconds.

    Raises:
        TypeError: ``redis`` is neither a str nor a ``redis.asyncio.Redis``, or
            ``namespace``/``graph`` is not a non-empty str.
        ValueError: ``redis`` is not a Redis URL, the client decodes responses, or
            ``namespace``/``graph`` contains a brace (``{``/``}``: hash tags).
    """

    def __init__(
        self,
        redis: str | RedisClient = "redis://localhost:6379/0",
        *,
        namespace: str = "spark_nodes",
        graph: str = "default",
        retry: ConnectionRetry | None = None,
    ) -> None:
        for label, name in (("namespace", namespace), ("graph", graph)):
            if not isinstance(name, str) or not name:
                raise TypeError(f"{label} must be a non-empty str, not {name!r}")
            if "{" in name or "}" in name:
                raise ValueError(
                    f"{label} {name!r} contains a brace; braces mark the Redis Cluster hash "
                    "tag in keys, so leave them out"
                )
        if retry is not None and not isinstance(retry, ConnectionRetry):
            raise TypeError(f"retry must be a ConnectionRetry, not {type(retry).__name__}")
        if isinstance(redis, str):
            client = open_client(redis)
            self._owns_client = True
        elif isinstance(redis, Redis | RedisCluster):
            check_client(redis)  # state values are msgpack bytes: no decode_responses
            client = redis
            self._owns_client = False
        else:
            raise TypeError(
                f"redis must be a Redis URL (str), a redis.asyncio.Redis or a RedisCluster "
                f"client, not {type(redis).__name__}"
            )
        self._client: RedisClient = client
        self._namespace = namespace
        self._graph = graph
        self._retry = retry or ConnectionRetry()
        base = f"{namespace}:{{{graph}}}#"
        self._state_prefix = base + "state:"
        self._result_prefix = base + "result:"
        self._mark_prefix = base + "applied:"
        # A mark must outlive every retry of its call, and each try may last a connect
        # timeout and a socket timeout (5 s + 10 s with open_client) before its delay.
        self._mark_ms = int(1000 * max(60.0, self._retry.attempts * (self._retry.max_delay + 15)))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the Redis client if this state opened it (from a URL); a shared one stays open."""
        if self._owns_client:
            await self._client.aclose()

    def __repr__(self) -> str:
        return f"<RedisState namespace={self._namespace!r} graph={self._graph!r}>"

    # -- reading ---------------------------------------------------------------------------

    async def get(self, key: str, default: Any = None) -> Any:
        """See :meth:`GraphState.get`.

        Raises:
            TypeError: ``key`` is not a non-empty str, or holds a Redis type that
                RedisState does not write.
            MessageDecodeError: The bytes under ``key`` are not msgpack plain data.
            MessageEncodeError: ``key`` is a node's result, and that output is not plain
                data (its worker logged it when it stored it).
            BackendUnavailable: Redis could not be reached.
        """
        check_key(key)
        found, value = await self._call(f"get({key!r})", lambda: self._read_on(self._client, key))
        return value if found else default

    async def exists(self, key: str) -> bool:
        """See :meth:`GraphState.exists`.

        Raises:
            TypeError: ``key`` is not a non-empty str.
            BackendUnavailable: Redis could not be reached.
        """
        check_key(key)
        return await self._call(f"exists({key!r})", lambda: self._exists_on(self._client, key))

    async def keys(self) -> list[str]:
        """See :meth:`GraphState.keys`.

        A SCAN with MATCH: it walks the whole Redis database (in pages of 1000), and keys
        written meanwhile may or may not be listed.

        Raises:
            BackendUnavailable: Redis could not be reached.
        """

        async def scan() -> tuple[builtins.set[str], builtins.set[str]]:
            return await self._scan(self._state_prefix), await self._scan(self._result_prefix)

        stored, node_ids = await self._call("keys()", scan)
        if self._results is not None:
            node_ids.update(self._results.result_ids())
        return sorted(stored | {node_id + RESULT_SUFFIX for node_id in node_ids})

    async def ttl(self, key: str) -> float | None:
        """See :meth:`GraphState.ttl`.

        Raises:
            TypeError: ``key`` is not a non-empty str.
            BackendUnavailable: Redis could not be reached.
        """
        check_key(key)
        name = self._key(key)

        async def pttl() -> int:
            left: int = await self._client.pttl(name)
            return left

        left = await self._call(f"ttl({key!r})", pttl)
        return None if left < 0 else left / 1000

    # -- writing ---------------------------------------------------------------------------

    async def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        """See :meth:`GraphState.set`.

        Raises:
            TypeError: ``key`` is not a non-empty str.
            MessageEncodeError: ``value`` is not plain data (a ``TypeError``).
            ValueError: ``ttl`` is not positive, or ``key`` is a node result.
            BackendUnavailable: Redis could not be reached.
        """
        self._writable(key)
        check_ttl(ttl)
        name, data = self._key(key), pack(value, where=f"state[{key!r}]")

        async def write() -> None:
            await _set_on(self._client, name, data, ttl)

        await self._call(f"set({key!r})", write)

    async def update(self, mapping: Mapping[str, Any], ttl: float | None = None) -> None:
        """See :meth:`GraphState.update`: one MULTI/EXEC, after every value is packed.

        Raises:
            TypeError: A key is not a non-empty str.
            MessageEncodeError: A value is not plain data; nothing was written.
            ValueError: ``ttl`` is not positive, or a key is a node result.
            BackendUnavailable: Redis could not be reached; nothing was written.
        """
        check_ttl(ttl)
        packed = {
            self._key(self._writable(key)): pack(value, where=f"state[{key!r}]")
            for key, value in mapping.items()
        }
        if not packed:
            return

        async def write() -> None:
            await ready(self._client)  # a cluster client: learn the cluster first
            async with self._client.pipeline(transaction=True) as pipe:
                for name, data in packed.items():
                    _queue_set(pipe, name, data, ttl)
                await pipe.execute()

        await self._call("update()", write)

    async def append(self, key: str, value: Any, ttl: float | None = None) -> int:
        """See :meth:`GraphState.append` (an RPUSH, applied once across retries).

        Raises:
            TypeError: ``key`` holds something other than a list.
            MessageEncodeError: ``value`` is not plain data.
            ValueError: ``ttl`` is not positive, or ``key`` is a node result.
            StateConflict: A list set whole under ``key`` was rewritten 100 times in a row
                while it was being turned into a Redis list.
            BackendUnavailable: Redis could not be reached.
        """
        return await self._push(key, value, ttl, left=False)

    async def prepend(self, key: str, value: Any, ttl: float | None = None) -> int:
        """See :meth:`GraphState.prepend` (an LPUSH, applied once across retries).

        Raises:
            TypeError: ``key`` holds something other than a list.
            MessageEncodeError: ``value`` is not plain data.
            ValueError: ``ttl`` is not positive, or ``key`` is a node result.
            StateConflict: A list set whole under ``key`` was rewritten 100 times in a row
                while it was being turned into a Redis list.
            BackendUnavailable: Redis could not be reached.
        """
        return await self._push(key, value, ttl, left=True)

    async def incr(self, key: str, amount: int | float = 1) -> int | float:
        """See :meth:`GraphState.incr`: one Lua script, exact over msgpack's 64-bit ints.

        Raises:
            TypeError: ``key`` holds something other than an int or float, or ``amount``
                is not one.
            ValueError: ``key`` is a node result.
            MessageEncodeError: The sum of two ints does not fit msgpack's 64-bit ints.
            OverflowError: A float plus an int too large for a float, as in Python.
            BackendUnavailable: Redis could not be reached.
        """
        self._writable(key)
        if isinstance(amount, bool) or not isinstance(amount, int | float):
            raise TypeError(f"incr() adds an int or float, not {type(amount).__name__}")
        keys = [self._key(key), self._new_mark()]
        args = [self._mark_ms, *_amount_args(amount)]
        status, reply = await self._call(
            f"incr({key!r})", lambda: _INCR_SCRIPT(self._client, keys, args)
        )
        if status == _DONE:
            new: int | float = unpack(reply)
            return new
        if status == _OTHER_TYPE:
            if reply == b"list":
                raise TypeError(f"state key {key!r} holds a list; incr() needs an int or float")
            raise _foreign(key, reply)
        current = unpack(reply) if reply else 0
        if status == _HELD:
            raise TypeError(
                f"state key {key!r} holds a {type(current).__name__}; incr() needs an int or float"
            )
        # _OUT_OF_RANGE. A float plus an int too large for a float: OverflowError, as in Python.
        total = current + amount
        pack(total)  # raises the MessageEncodeError MemoryState would
        raise MessageEncodeError(f"incr() result {total!r} does not fit msgpack's 64-bit ints")

    async def delete(self, key: str) -> bool:
        """See :meth:`GraphState.delete`.

        Raises:
            TypeError: ``key`` is not a non-empty str.
            ValueError: ``key`` is a node result.
            BackendUnavailable: Redis could not be reached.
        """
        self._writable(key)
        name = self._key(key)

        async def remove() -> bool:
            return bool(await self._client.delete(name))

        return await self._call(f"delete({key!r})", remove)

    async def persist(self, key: str) -> bool:
        """See :meth:`GraphState.persist`.

        Raises:
            TypeError: ``key`` is not a non-empty str.
            BackendUnavailable: Redis could not be reached.
        """
        check_key(key)
        name = self._key(key)

        async def unexpire() -> bool:
            return bool(await self._client.persist(name))

        return await self._call(f"persist({key!r})", unexpire)

    async def transaction(
        self, function: Callable[[StateTransaction], Awaitable[T]], *, max_retries: int = 100
    ) -> T:
        """See :meth:`GraphState.transaction`: WATCH, then MULTI/EXEC, on a connection of its own.

        ``function`` runs in the calling task. A try that loses its connection runs again
        too (after the retry delay); one whose EXEC reply was lost is not applied twice.

        Raises:
            StateConflict: The keys kept changing for ``max_retries`` runs.
            BackendUnavailable: Redis could not be reached.
        """
        run = _TransactionRun(self._new_mark())
        for _ in range(max_retries):
            outcome = await self._call("transaction()", lambda: self._try(function, run))
            if not isinstance(outcome, _Conflict):
                return outcome
        raise StateConflict(
            f"transaction {getattr(function, '__qualname__', function)!r} found its keys "
            f"changed {max_retries} times in a row; it was not applied"
        )

    async def snapshot(self) -> dict[str, tuple[bytes, float | None]]:
        """See :meth:`GraphState.snapshot`; a list is packed whole, as MemoryState does.

        Keys are found by SCAN and read in batches of 1000, each batch atomically; writes
        made meanwhile may or may not be in it.

        Raises:
            TypeError: A key holds a Redis type that RedisState does not write.
            BackendUnavailable: Redis could not be reached.
        """

        async def take() -> dict[str, tuple[bytes, float | None]]:
            names = sorted(await self._scan(self._state_prefix))
            taken: dict[str, tuple[bytes, float | None]] = {}
            for batch in _chunks(names):
                batch_keys = [self._key(name) for name in batch]
                entries = await _READ_SCRIPT(self._client, batch_keys, ())
                for name, entry in zip(batch, entries, strict=True):
                    if entry[0] == _ABSENT:
                        continue
                    if entry[0] == _FOREIGN:
                        raise _foreign(name, entry[1])
                    data = entry[1] if entry[0] == _VALUE else _pack_items(entry[1])
                    taken[name] = (data, None if entry[2] < 0 else max(0.001, entry[2] / 1000))
            return taken

        return await self._call("snapshot()", take)

    async def restore(self, snapshot: Mapping[str, tuple[bytes, float | None]]) -> None:
        """See :meth:`GraphState.restore`: one MULTI/EXEC deletes the keys and writes them.

        A non-empty list becomes a Redis list; an empty one is stored as a value.

        Raises:
            TypeError: A key is not a non-empty str.
            ValueError: A key is a node result, or a ttl is not positive.
            MessageDecodeError: A value is not msgpack plain data; nothing was written.
            BackendUnavailable: Redis could not be reached.
        """
        writes: list[tuple[str, bytes, list[bytes], float | None]] = []
        for key, (data, ttl) in snapshot.items():
            value = unpack(data)
            items = [pack(item) for item in value] if isinstance(value, list) else []
            writes.append((self._key(self._writable(key)), data, items, check_ttl(ttl)))

        async def replace() -> None:
            existing = [self._key(name) for name in await self._scan(self._state_prefix)]
            await ready(self._client)  # a cluster client: learn the cluster first
            async with self._client.pipeline(transaction=True) as pipe:
                for names in _chunks(existing):
                    pipe.delete(*names)
                for name, data, items, ttl in writes:
                    if items:
                        for chunk in _chunks(items):
                            pipe.rpush(name, *chunk)
                    else:
                        pipe.set(name, data)
                    if ttl is not None:
                        pipe.pexpire(name, _ms(ttl))
                await pipe.execute()

        await self._call("restore()", replace)

    # -- internals ---------------------------------------------------------------------------

    async def _call(self, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        return await with_retries(operation, retry=self._retry, what=f"RedisState.{what}")

    def _key(self, key: str) -> str:
        return self._state_prefix + key

    def _new_mark(self) -> str:
        return self._mark_prefix + secrets.token_hex(8)

    def _writable(self, key: str) -> str:
        check_key(key)
        if key.endswith(RESULT_SUFFIX):
            raise ValueError(f"{key!r} is a node's result: the node writes it, by producing output")
        return key

    async def _read_on(self, conn: RedisClient | RedisPipeline, key: str) -> tuple[bool, Any]:
        if key.endswith(RESULT_SUFFIX):
            node_id = key[: -len(RESULT_SUFFIX)]
            data: Any = await conn.get(self._result_prefix + node_id)  # bytes: no decoding
            if data is not None:
                return (True, unpack_result(data))  # raises for an output not plain data
            if self._results is None:
                return (False, None)
            found, output = self._results.result_of(node_id)
            return (True, unpack(pack(output, where=key))) if found else (False, None)
        (entry,) = await _READ_SCRIPT(conn, [self._key(key)], ())
        if entry[0] == _ABSENT:
            return (False, None)
        if entry[0] == _VALUE:
            return (True, unpack(entry[1]))
        if entry[0] == _LIST:
            return (True, [unpack(item) for item in entry[1]])
        raise _foreign(key, entry[1])

    async def _exists_on(self, conn: RedisClient | RedisPipeline, key: str) -> bool:
        # EXISTS by execute_command: a watching ClusterPipeline's exists() never sends it
        # (redis-py 8.1 splits it by slot and drops the coroutine), and reports True.
        if key.endswith(RESULT_SUFFIX):
            node_id = key[: -len(RESULT_SUFFIX)]
            if await conn.execute_command("EXISTS", self._result_prefix + node_id):
                return True
            return self._results is not None and self._results.result_of(node_id)[0]
        return bool(await conn.execute_command("EXISTS", self._key(key)))

    def _watched_name(self, key: str) -> str:
        if key.endswith(RESULT_SUFFIX):
            return self._result_prefix + key[: -len(RESULT_SUFFIX)]
        return self._key(key)

    async def _scan(self, prefix: str) -> builtins.set[str]:
        pattern = _glob_escape(prefix) + "*"
        skip = len(prefix.encode())
        names = await scan_slot(self._client, pattern, slot_of=prefix, count=_BATCH)
        return {name[skip:].decode() for name in names}

    async def _push(self, key: str, value: Any, ttl: float | None, *, left: bool) -> int:
        self._writable(key)
        check_ttl(ttl)
        item = pack(value, where=f"state[{key!r}] item")
        keys = [self._key(key), self._new_mark()]
        head = [self._mark_ms, "" if ttl is None else _ms(ttl), "L" if left else "R", item]
        args: list[Any] = head
        what = f"{'prepend' if left else 'append'}({key!r})"
        for _ in range(_REWRITES):
            status, reply = await self._call(what, partial(_PUSH_SCRIPT, self._client, keys, args))
            if status == _DONE:
                return int(reply)
            if status == _OTHER_TYPE:
                raise _foreign(key, reply)
            whole = unpack(reply)
            if not isinstance(whole, list):
                raise TypeError(f"state key {key!r} holds a {type(whole).__name__}, not a list")
            # A list set whole: the script turns it into a Redis list if it is still this one.
            args = [*head, reply, *(pack(element) for element in whole)]
        raise StateConflict(
            f"state key {key!r} was rewritten {_REWRITES} times while a list set whole was "
            "being turned into a Redis list; the item was not added"
        )

    async def _try(
        self, function: Callable[[StateTransaction], Awaitable[T]], run: _TransactionRun
    ) -> T | _Conflict:
        await ready(self._client)  # a cluster client: learn the cluster first
        async with self._client.pipeline(transaction=True) as pipe:
            with _connection_losses_unmasked():
                if run.unconfirmed:
                    # A commit whose EXEC reply was lost may have applied: its mark says which.
                    await pipe.watch(run.mark)
                    applied = await pipe.get(run.mark)
                    if applied is not None:
                        result: T = run.unconfirmed[int(applied)]
                        return result
                tx = _RedisTransaction(self, pipe)
                result = await function(tx)
            run.commits += 1
            commit = run.commits
            pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
            for key, write in tx.writes.items():
                if write is None:
                    pipe.delete(self._key(key))
                else:
                    _queue_set(pipe, self._key(key), *write)
            pipe.set(run.mark, commit, px=self._mark_ms)
            run.unconfirmed[commit] = result
            try:
                with _connection_losses_unmasked():
                    await pipe.execute()
            except WatchError:
                del run.unconfirmed[commit]
                return _CONFLICT
            return result


class _RedisTransaction(StateTransaction):
    """Reads WATCH their key on the transaction's connection; writes wait for the commit."""

    def __init__(self, state: RedisState, pipe: RedisPipeline) -> None:
        self._state = state
        self._pipe = pipe
        self._watched: builtins.set[str] = set()
        self.writes: dict[str, tuple[bytes, float | None] | None] = {}  # None: delete

    async def get(self, key: str, default: Any = None) -> Any:
        check_key(key)
        if key in self.writes:
            write = self.writes[key]
            return default if write is None else unpack(write[0])
        await self._watch(key)
        found, value = await self._state._read_on(self._pipe, key)
        return value if found else default

    async def exists(self, key: str) -> bool:
        check_key(key)
        if key in self.writes:
            return self.writes[key] is not None
        await self._watch(key)
        return await self._state._exists_on(self._pipe, key)

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        self._state._writable(key)
        check_ttl(ttl)
        self.writes[key] = (pack(value, where=f"state[{key!r}]"), ttl)

    def delete(self, key: str) -> None:
        self._state._writable(key)
        self.writes[key] = None

    async def _watch(self, key: str) -> None:
        name = self._state._watched_name(key)
        if name not in self._watched:
            await self._pipe.watch(name)
            self._watched.add(name)


@contextlib.contextmanager
def _connection_losses_unmasked() -> Iterator[None]:
    """Re-raise a lost connection that redis-py reports as a WatchError while watching.

    The transaction must then be retried after a delay, and checked for a lost commit, not
    counted as a conflict.
    """
    try:
        yield
    except WatchError as error:
        lost = error.__context__
        if isinstance(lost, RETRIABLE):
            raise lost from None
        raise


async def _set_on(conn: RedisClient, name: str, data: bytes, ttl: float | None) -> None:
    if ttl is None:
        await conn.set(name, data, keepttl=True)
    else:
        await conn.set(name, data, px=_ms(ttl))


def _queue_set(pipe: RedisPipeline, name: str, data: bytes, ttl: float | None) -> None:
    if ttl is None:
        pipe.set(name, data, keepttl=True)
    else:
        pipe.set(name, data, px=_ms(ttl))


def _ms(ttl: float) -> int:
    return max(1, round(ttl * 1000))


def _amount_args(amount: int | float) -> list[str | bytes]:
    if isinstance(amount, float):
        return ["f", struct.pack(">d", amount)]
    try:
        as_float = struct.pack(">d", float(amount))
    except OverflowError:
        as_float = b""
    magnitude = min(abs(amount), _INT_LIMIT)  # any larger is out of range all the same
    return [
        "i",
        as_float,
        "-1" if amount < 0 else "1",
        str(magnitude >> 32),
        str(magnitude & 0xFFFFFFFF),
    ]


def _pack_items(items: list[bytes]) -> bytes:
    return pack([unpack(item) for item in items])


def _chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), _BATCH):
        yield items[start : start + _BATCH]


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def _foreign(key: str, kind: bytes) -> TypeError:
    return TypeError(
        f"state key {key!r} holds a Redis {kind.decode()}, which RedisState does not write; "
        "delete it or give this state another namespace"
    )
