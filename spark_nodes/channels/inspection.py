"""Look inside durable mailboxes: their backlog, who holds what, counters and dead letters.

A :class:`~spark_nodes.channels.RedisChannel` mailbox is a Redis Stream read by a consumer
group, with companion keys (see :mod:`spark_nodes.channels.redis`). These functions read
them from any process, with any ``redis.asyncio.Redis`` client made with
``decode_responses=False``; no channel object is needed and nothing is consumed:

- :func:`find_mailboxes` and :func:`inspect_namespace` discover the mailboxes under a
  namespace; :func:`inspect_mailbox` reads one (length, consumer groups, each consumer's
  pending entries and idle time, delayed messages, dead letters, counters), in one script
  call, so every figure is of the same instant; :func:`inspect_mailboxes` reads several
  that way (a graph's, which share a hash tag).
- :func:`dead_letters` pages through a mailbox's dead letters, oldest first;
  :func:`replay_dead_letter` puts one back into its mailbox, atomically, and
  :func:`drop_dead_letter` deletes one.

Every function takes the mailbox's *stream key* (``spark_nodes:{orders}``, as
:func:`~spark_nodes.channels.redis.stream_key` makes it and :func:`find_mailboxes` lists
it). Each reading is a snapshot of one instant: a busy mailbox has moved on by the time it
is shown. ``spark-nodes inspect`` and ``spark-nodes dlq`` are the same functions on the
command line.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from spark_nodes._redis_client import (
    ConnectionRetry,
    RedisClient,
    check_client,
    scan_slot,
    with_retries,
)
from spark_nodes.channels.codec import decode
from spark_nodes.channels.message import ChannelMessage
from spark_nodes.channels.redis._layout import MailboxKeys, has_hash_tag, hash_tag
from spark_nodes.channels.redis._scripts import REPLAY
from spark_nodes.errors import ChannelUnavailable, MessageDecodeError

__all__ = [
    "ConsumerInfo",
    "DeadLetter",
    "GroupInfo",
    "MailboxInfo",
    "dead_letters",
    "drop_dead_letter",
    "find_mailboxes",
    "inspect_mailbox",
    "inspect_mailboxes",
    "inspect_namespace",
    "replay_dead_letter",
]

# Counting a group's lag reads entries (Redis 6.2 has no count-only range): at most this
# many on each side of the last-delivered id, so inspecting a huge backlog stays cheap.
_LAG_COUNT_LIMIT: Final = 1000
_ENTRY_ID: Final = re.compile(r"\d+-\d+")
_GLOB_SPECIAL: Final = re.compile(r"([\\*?\[\]])")
_RECORD_FIELDS: Final = frozenset(
    {b"m", b"reason", b"error", b"entry", b"deliveries", b"consumer", b"time"}
)
# The reply stream of a Redis graph's invoke: {namespace}:{graph}:invoke:<uuid hex> (see
# spark_nodes.graphs.invoke). A RedisChannel too, but the invoker's, not a node's mailbox.
_REPLY_STREAM: Final = re.compile(r"\}:invoke:[0-9a-f]{32}\Z")
_LAYOUT_CHECKS: Final = 500  # candidate streams checked per round trip by find_mailboxes

_MAILBOXES_READ: Final = """
-- Read mailboxes at one instant. KEYS: per mailbox, its stream, delayed set, dead-letter
-- stream and counters hash. ARGV[1]: the most entries counted on each side of a group's
-- last delivered id when Redis does not know its lag (Redis < 7).
-- Returns per mailbox {type of the stream key, length, delayed, dead letters, the
-- counters as HGETALL gives them, groups}; per group {name, pending, last delivered id,
-- lag (-1: too long to count), consumers}; per consumer {name, pending, idle ms}.
local limit = tonumber(ARGV[1])
local function fields(reply)
  local info = {}
  for f = 1, #reply, 2 do info[reply[f]] = reply[f + 1] end
  return info
end
local mailboxes = {}
for i = 1, #KEYS, 4 do
  local stream = KEYS[i]
  local kind = redis.call('TYPE', stream)['ok']
  local length, groups = 0, {}
  if kind == 'stream' then
    length = redis.call('XLEN', stream)
    for _, reply in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
      local group = fields(reply)
      local lag = group['lag']
      if type(lag) ~= 'number' then  -- Redis 6, or Redis 7 that cannot tell
        -- Entries up to the last delivered id are few (settled ones are trimmed): count
        -- those first, however long the backlog after it; else count the backlog.
        local last = group['last-delivered-id']
        local upto = #redis.call('XRANGE', stream, '-', last, 'COUNT', limit + 1)
        if upto <= limit then
          lag = length - upto
        else
          local after = #redis.call('XRANGE', stream, '(' .. last, '+', 'COUNT', limit + 1)
          if after <= limit then lag = after else lag = -1 end
        end
      end
      local consumers = {}
      for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', stream, group['name'])) do
        local consumer = fields(c)
        consumers[#consumers + 1] = {consumer['name'], consumer['pending'], consumer['idle']}
      end
      groups[#groups + 1] = {
        group['name'], group['pending'], group['last-delivered-id'], lag, consumers
      }
    end
  end
  mailboxes[#mailboxes + 1] = {
    kind, length, redis.call('ZCARD', KEYS[i + 1]), redis.call('XLEN', KEYS[i + 2]),
    redis.call('HGETALL', KEYS[i + 3]), groups
  }
end
return mailboxes
"""
"""The Lua script :func:`inspect_mailboxes` reads mailboxes with: read-only, one instant."""


LIVE_CONSUMER_IDLE: Final = 60.0
"""Seconds a consumer holding nothing may be idle and still be shown (see ``live``)."""


@dataclass(frozen=True, slots=True)
class ConsumerInfo:
    """One consumer of a group: a receiving channel object (or one that used to be).

    Attributes:
        name: The consumer name (``RedisChannel(consumer=...)``, ``{host}-{pid}-{token}-{n}``
            by default; ``(released)`` holds entries a worker gave back, for any to take).
        pending: Entries delivered to it and neither acked nor dead-lettered yet.
        idle: Seconds since it last read or claimed an entry.
    """

    name: str
    pending: int
    idle: float

    @property
    def live(self) -> bool:
        """Whether it counts: it holds entries (even if its worker died), or read lately.

        A live worker reads every fraction of a second; one idle for a minute and holding
        nothing is gone, and a live worker's sweep deletes it (``consumer_max_idle``).
        """
        return self.pending > 0 or self.idle < LIVE_CONSUMER_IDLE


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """A consumer group of a mailbox's stream (a mailbox normally has one, ``workers``).

    Attributes:
        name: The group's name.
        consumers: Its consumers, as Redis lists them.
        pending: Entries delivered to the group and not acked yet, summed over consumers.
        last_delivered: The id of the newest entry delivered to the group (``0-0``: none).
        lag: Entries in the stream not delivered to the group yet. Exact when known: the
            server's own count on Redis 7 and later; otherwise counted (entries after
            ``last_delivered``, or the stream's length minus those up to it, in one
            atomic read). ``None`` when both sides hold more than 1000 entries: then it
            would take reading them all.
    """

    name: str
    consumers: tuple[ConsumerInfo, ...]
    pending: int
    last_delivered: str
    lag: int | None


@dataclass(frozen=True, slots=True)
class MailboxInfo:
    """What a mailbox holds, read from Redis: the shared view every process sees.

    Attributes:
        key: The stream key.
        length: Entries in the stream: waiting, plus delivered and not acked yet.
        groups: The stream's consumer groups (none until the first receive).
        delayed: Messages sent with a delay that are not due yet.
        dead_letters: Entries in the dead-letter stream (``{key}:dead``).
        counters: The mailbox's counters since it was made, shared by every process:
            ``sent``, ``acked``, ``dead_lettered``, ``rejected_acks`` (acks of leases
            lost to a reclaim), ``duplicates`` (sends dropped by idempotency key),
            ``reclaimed``, ``delayed``, ``replayed``. A counter never incremented is
            absent.
    """

    key: str
    length: int
    groups: tuple[GroupInfo, ...]
    delayed: int
    dead_letters: int
    counters: dict[str, int]

    @property
    def pending(self) -> int:
        """Entries delivered and not acked yet, over every group."""
        return sum(group.pending for group in self.groups)

    @property
    def consumers(self) -> tuple[ConsumerInfo, ...]:
        """Every group's consumers."""
        return tuple(consumer for group in self.groups for consumer in group.consumers)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An entry moved to a mailbox's dead-letter stream, with why.

    Attributes:
        id: The dead letter's own id in ``{mailbox}:dead`` (what replay and drop take).
        mailbox: The mailbox's stream key.
        reason: Why: ``undecodable``, ``not_an_envelope``, ``too_large``,
            ``max_deliveries``, or what the dead-lettering code gave (a graph gives the
            phase that failed: ``process``, ``forward``, ``route`` ...).
        error: What went wrong, in words (may span lines).
        entry: The original entry's id in the mailbox's stream.
        deliveries: How many times the entry had been delivered.
        consumer: The consumer that held it last.
        time: When it was dead-lettered (unix seconds), if recorded.
        details: The ``detail:<name>`` fields, by name, as text (a graph records
            ``traceback``, ``error_type``, ``attempts``, ``node``), and any other field
            this version does not know.
        fields: The other fields of a foreign entry (written by something other than a
            spark_nodes sender), by name.
        data: The original envelope's bytes; empty when the entry had none.
    """

    id: str
    mailbox: str
    reason: str
    error: str
    entry: str
    deliveries: int
    consumer: str
    time: float | None
    details: dict[str, str]
    fields: dict[str, bytes]
    data: bytes

    @property
    def message(self) -> ChannelMessage | None:
        """The original message, decoded; ``None`` if there is no envelope or it is unreadable."""
        if not self.data:
            return None
        try:
            return decode(self.data)
        except MessageDecodeError:
            return None

    @property
    def error_type(self) -> str | None:
        """The error's type as a graph records it (``builtins.ValueError``), if recorded.

        A graph's dead letter keeps the error's message in :attr:`error` and its type
        here (the ``error_type`` detail); other dead-lettering code may give neither.
        """
        return self.details.get("error_type") or None

    @property
    def attempts(self) -> int | None:
        """How many times a graph's node tried the message (the ``attempts`` detail)."""
        value = self.details.get("attempts", "")
        return int(value) if value.isdigit() else None


async def inspect_mailbox(
    redis: RedisClient, key: str, *, retry: ConnectionRetry | None = None
) -> MailboxInfo:
    """Read what the mailbox whose stream is ``key`` holds, at one instant.

    One script call reads every figure (the stream, its groups and consumers, the lag
    counts, the delayed set, the dead letters, the counters), so they all agree: the
    ``pending`` and ``length`` of a busy mailbox are of the same moment. A mailbox nobody
    has sent to yet reads as empty.

    Args:
        redis: A client made with ``decode_responses=False``.
        key: The mailbox's stream key.
        retry: Retries when Redis cannot be reached; :class:`ConnectionRetry` by default.

    Raises:
        ValueError: ``key`` holds something other than a stream, or the client decodes
            responses.
        TypeError: ``redis`` is not a ``redis.asyncio.Redis``.
        ChannelUnavailable: Redis could not be reached within the retries.
    """
    (info,) = await inspect_mailboxes(redis, [key], retry=retry)
    return info


async def inspect_mailboxes(
    redis: RedisClient, keys: Sequence[str], *, retry: ConnectionRetry | None = None
) -> list[MailboxInfo]:
    """Read several mailboxes at one instant, in one script call: one reading per key.

    What :func:`inspect_mailbox` reads of one, for all of ``keys`` together, so an entry
    moving from one of them to another is counted once (a graph's mailboxes, read by
    :func:`~spark_nodes.graphs.inspecting.inspect_graph`). On Redis Cluster the keys must
    share a hash tag (a graph's do: ``{graph}``).

    Args:
        redis: A client made with ``decode_responses=False``.
        keys: The mailboxes' stream keys.
        retry: Retries when Redis cannot be reached; :class:`ConnectionRetry` by default.

    Returns:
        One :class:`MailboxInfo` per key, in the order of ``keys``.

    Raises:
        ValueError: A key holds something other than a stream, or the client decodes
            responses.
        TypeError: ``redis`` is not a ``redis.asyncio.Redis``.
        ChannelUnavailable: Redis could not be reached within the retries.
    """
    check_client(redis)
    keys = list(keys)
    if not keys:
        return []
    names: list[str] = []
    for key in keys:
        mailbox = MailboxKeys.of(key)
        names += (mailbox.stream, mailbox.delayed, mailbox.dead, mailbox.stats)
    read = redis.register_script(_MAILBOXES_READ)
    what = f"inspect {keys[0]!r}" if len(keys) == 1 else f"inspect {len(keys)} mailboxes"
    replies: Any = await with_retries(
        lambda: read(keys=names, args=[_LAG_COUNT_LIMIT]),
        retry=retry or ConnectionRetry(),
        what=what,
        error=ChannelUnavailable,
    )
    return [_mailbox_info(key, reply) for key, reply in zip(keys, replies, strict=True)]


async def find_mailboxes(
    redis: RedisClient,
    namespace: str = "spark_nodes",
    *,
    tag: str | None = None,
    retry: ConnectionRetry | None = None,
) -> list[str]:
    """The stream keys of the mailboxes under ``namespace``, sorted.

    Scans the keyspace (``SCAN ... TYPE stream``, which does not block the server) for
    streams under ``{namespace}:`` that have a mailbox's layout (see
    :mod:`spark_nodes.channels.redis`): a hash tag after the namespace, and a consumer
    group or the counters hash (``{key}:stats``) beside the stream, which every send,
    receive and dead letter makes. Other streams are not mailboxes and are left out: a
    mailbox's dead-letter stream (``{key}:dead``), the reply stream of a Redis graph's
    ``invoke`` (``{namespace}:{graph}:invoke:<id>``), a graph's own keys
    (``{namespace}:{graph}#...``), and any stream of your own. On Redis Cluster, it sees
    the keys of the node the client talks to.

    Args:
        redis: A client made with ``decode_responses=False``.
        namespace: The key prefix.
        tag: Only the mailboxes whose hash tag is ``tag``, right after the namespace (a
            Redis graph's name: ``{namespace}:{tag}...``).
        retry: Retries when Redis cannot be reached; :class:`ConnectionRetry` by default.

    Raises:
        ValueError: The client decodes responses.
        TypeError: ``redis`` is not a ``redis.asyncio.Redis``.
        ChannelUnavailable: Redis could not be reached within the retries.
    """
    check_client(redis)
    prefix = f"{namespace}:" if tag is None else f"{namespace}:{{{tag}}}"
    pattern = _GLOB_SPECIAL.sub(r"\\\1", prefix) + "*"

    async def scan() -> list[str]:
        found: set[str] = set()  # SCAN may return a key more than once
        if tag is not None:  # one slot: on a cluster, one master to scan
            names = await scan_slot(redis, pattern, slot_of=prefix, type_="stream")
            found.update(name.decode(errors="replace") for name in names)
        else:  # on a cluster, redis-py scans every master
            async for name in redis.scan_iter(match=pattern, count=1000, _type="stream"):
                found.add(name.decode(errors="replace"))
        return await _with_mailbox_layout(redis, namespace, found)

    return await with_retries(
        scan, retry=retry or ConnectionRetry(), what=f"scan {namespace!r}", error=ChannelUnavailable
    )


async def inspect_namespace(
    redis: RedisClient, namespace: str = "spark_nodes", *, retry: ConnectionRetry | None = None
) -> list[MailboxInfo]:
    """Read every mailbox under ``namespace`` (see :func:`find_mailboxes`), by key.

    The mailboxes that share a hash tag (a graph's) are read together, at one instant
    (:func:`inspect_mailboxes`); the others one by one.

    Raises:
        ValueError: The client decodes responses.
        TypeError: ``redis`` is not a ``redis.asyncio.Redis``.
        ChannelUnavailable: Redis could not be reached within the retries.
    """
    keys = await find_mailboxes(redis, namespace, retry=retry)
    by_tag: dict[str, list[str]] = {}
    for key in keys:
        by_tag.setdefault(hash_tag(key), []).append(key)
    read: dict[str, MailboxInfo] = {}
    for tagged in by_tag.values():
        for info in await inspect_mailboxes(redis, tagged, retry=retry):
            read[info.key] = info
    return [read[key] for key in keys]


async def dead_letters(
    redis: RedisClient,
    key: str,
    *,
    count: int = 100,
    after: str | None = None,
    retry: ConnectionRetry | None = None,
) -> list[DeadLetter]:
    """Up to ``count`` dead letters of the mailbox ``key``, oldest first.

    Page through them by passing the last one's id as ``after``; an empty list is the end.

    Args:
        redis: A client made with ``decode_responses=False``.
        key: The mailbox's stream key.
        count: The most dead letters to return.
        after: Start after this dead letter's id (``None``: from the oldest).
        retry: Retries when Redis cannot be reached; :class:`ConnectionRetry` by default.

    Raises:
        ValueError: ``count`` < 1, ``after`` is not an entry id (``<ms>-<seq>``), or the
            client decodes responses.
        TypeError: ``redis`` is not a ``redis.asyncio.Redis``.
        ChannelUnavailable: Redis could not be reached within the retries.
    """
    check_client(redis)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be an int >= 1, not {count!r}")
    start = "-" if after is None else f"({_checked_id(after)}"
    dead = MailboxKeys.of(key).dead
    entries: Any = await with_retries(
        lambda: redis.xrange(dead, start, "+", count=count),
        retry=retry or ConnectionRetry(),
        what=f"read dead letters of {key!r}",
        error=ChannelUnavailable,
    )
    return [_dead_letter(key, entry, fields) for entry, fields in entries]


async def replay_dead_letter(
    redis: RedisClient, key: str, letter_id: str, *, retry: ConnectionRetry | None = None
) -> bool:
    """Put a dead letter's message back into its mailbox, as a new entry, and remove it.

    One script does both, so a letter is replayed once even if two operators replay it
    at the same time. The message is the original envelope, byte for byte (same id,
    payload and metadata); it is delivered as new, with a fresh delivery count. One that
    could not be decoded goes back as it was and is dead-lettered again by the next
    receiver, unless that receiver reads it now.

    Returns:
        True if it was replayed; False if there is no such dead letter (replayed or
        dropped already, or trimmed).

    Raises:
        ValueError: The letter has no envelope to replay (a foreign entry, without an
            ``m`` field: its fields are in :attr:`DeadLetter.fields`; send a new message
            instead, or drop it), ``letter_id`` is not an entry id, or the client decodes
            responses.
        TypeError: ``redis`` is not a ``redis.asyncio.Redis``.
        ChannelUnavailable: Redis could not be reached within the retries.
    """
    check_client(redis)
    letter_id = _checked_id(letter_id)
    keys = MailboxKeys.of(key)
    retry = retry or ConnectionRetry()
    found: Any = await with_retries(
        lambda: redis.xrange(keys.dead, letter_id, letter_id),
        retry=retry,
        what=f"read dead letter {letter_id} of {key!r}",
        error=ChannelUnavailable,
    )
    if not found:
        return False
    # A stream entry never changes, so what is checked here still holds in the script.
    if not found[0][1].get(b"m"):
        raise ValueError(
            f"dead letter {letter_id} of {key!r} has no envelope to replay: the entry was "
            f"not written by a spark_nodes sender; read its fields (spark-nodes dlq list "
            f"--json) and send a new message, or drop it"
        )
    replay = redis.register_script(REPLAY)
    tries = 0

    async def run() -> int:
        nonlocal tries
        tries += 1
        status: int = await replay(keys=[keys.dead, keys.stream, keys.stats], args=[letter_id])
        return status

    status = await with_retries(
        run, retry=retry, what=f"replay {letter_id} of {key!r}", error=ChannelUnavailable
    )
    # Gone after a try that may have landed: that try replayed it.
    return status == 1 or (status == 0 and tries > 1)


async def drop_dead_letter(
    redis: RedisClient, key: str, letter_id: str, *, retry: ConnectionRetry | None = None
) -> bool:
    """Delete a dead letter for good.

    Returns:
        True if it was deleted; False if there is no such dead letter.

    Raises:
        ValueError: ``letter_id`` is not an entry id, or the client decodes responses.
        TypeError: ``redis`` is not a ``redis.asyncio.Redis``.
        ChannelUnavailable: Redis could not be reached within the retries.
    """
    check_client(redis)
    letter_id = _checked_id(letter_id)
    dead = MailboxKeys.of(key).dead
    tries = 0

    async def delete() -> int:
        nonlocal tries
        tries += 1
        deleted: int = await redis.xdel(dead, letter_id)
        return deleted

    deleted = await with_retries(
        delete, retry=retry or ConnectionRetry(), what=f"drop {letter_id} of {key!r}",
        error=ChannelUnavailable,
    )  # fmt: skip
    return deleted == 1 or tries > 1


async def _with_mailbox_layout(redis: RedisClient, namespace: str, streams: set[str]) -> list[str]:
    """The keys among ``streams`` (under ``namespace``) that have a mailbox's layout, sorted."""
    candidates = sorted(
        key
        for key in streams
        if has_hash_tag(key[len(namespace) + 1 :])
        and "}#" not in key  # a graph's own keys
        and not _REPLY_STREAM.search(key)
        and not (key.endswith(":dead") and key[: -len(":dead")] in streams)
    )
    found: list[str] = []
    for start in range(0, len(candidates), _LAYOUT_CHECKS):
        chunk = candidates[start : start + _LAYOUT_CHECKS]
        pipe = redis.pipeline(transaction=False)
        for key in chunk:
            pipe.exists(MailboxKeys.of(key).stats)
            pipe.xinfo_groups(key)
        replies = await pipe.execute(raise_on_error=False)
        for index, key in enumerate(chunk):
            stats, groups = replies[2 * index], replies[2 * index + 1]
            # An error: the stream was deleted since the scan, so it is no mailbox now.
            if stats == 1 or (isinstance(groups, list) and groups):
                found.append(key)
    return found


def _mailbox_info(key: str, reply: Any) -> MailboxInfo:
    """A :class:`MailboxInfo` of one mailbox's part of a ``_MAILBOXES_READ`` reply."""
    kind, length, delayed, dead, stats, replies = reply
    if kind not in (b"stream", b"none"):
        raise ValueError(
            f"{key!r} is a Redis {kind.decode()}, not a mailbox's stream; find_mailboxes() "
            f"lists the mailboxes"
        )
    counters = {
        name.decode(): int(value)
        for name, value in zip(stats[::2], stats[1::2], strict=True)
        if value.isdigit()
    }
    groups = tuple(
        GroupInfo(
            name=name.decode(errors="replace"),
            consumers=tuple(
                ConsumerInfo(consumer.decode(errors="replace"), held, idle / 1000)
                for consumer, held, idle in consumers
            ),
            pending=pending,
            last_delivered=last.decode(),
            lag=None if lag < 0 else lag,
        )
        for name, pending, last, lag, consumers in replies
    )
    return MailboxInfo(key, length, groups, delayed, dead, counters)


def _dead_letter(mailbox: str, entry: bytes, record: dict[bytes, bytes]) -> DeadLetter:
    details: dict[str, str] = {}
    fields: dict[str, bytes] = {}
    for name, value in record.items():
        if name.startswith(b"field:"):
            fields[name[6:].decode(errors="replace")] = value
        elif name.startswith(b"detail:"):
            details[name[7:].decode(errors="replace")] = value.decode(errors="replace")
        elif name not in _RECORD_FIELDS:
            details[name.decode(errors="replace")] = value.decode(errors="replace")
    deliveries = record.get(b"deliveries", b"")
    stamp = record.get(b"time", b"")
    try:
        time: float | None = float(stamp) if stamp else None
    except ValueError:
        time = None
    return DeadLetter(
        id=entry.decode(),
        mailbox=mailbox,
        reason=record.get(b"reason", b"").decode(errors="replace"),
        error=record.get(b"error", b"").decode(errors="replace"),
        entry=record.get(b"entry", b"").decode(errors="replace"),
        deliveries=int(deliveries) if deliveries.isdigit() else 0,
        consumer=record.get(b"consumer", b"").decode(errors="replace"),
        time=time,
        details=details,
        fields=fields,
        data=record.get(b"m", b""),
    )


def _checked_id(text: str) -> str:
    # A bare "<ms>" is a valid range bound but means every entry of that millisecond.
    if not isinstance(text, str) or not _ENTRY_ID.fullmatch(text):
        raise ValueError(f"{text!r} is not a stream entry id; ids look like 1718000000000-0")
    return text
