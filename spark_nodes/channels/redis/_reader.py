"""Reading a Redis mailbox: prefetching entries, decoding them, dead-lettering bad ones.

One round trip (``fetch``) moves due delayed entries into the stream, reads the close flag
of a distributed graph, and reads entries to deliver, by priority: this consumer's own
pending entries (once, at start, after a restart), stale entries of others (every
``claim_interval``), new entries (``prefetch`` at a time). An entry delivered before comes
alone: see ``_queue_reads``. Every ``sweep_interval`` the same round trip deletes the
group's stale consumers (``SWEEP_CONSUMERS``). Good entries go to a local buffer; an
entry that cannot be decoded, is too large or was delivered ``max_deliveries`` times is
dead-lettered with the reason and its original bytes.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

import anyio
import structlog
from redis.exceptions import ResponseError

from spark_nodes._redis_client import ConnectionRetry, RedisClient, RedisPipeline, with_retries
from spark_nodes.channels.codec import ENVELOPE_VERSION, decode, unpack_envelope
from spark_nodes.channels.message import ChannelMessage, unchecked_message
from spark_nodes.channels.redis._layout import RELEASED_CONSUMER, MailboxKeys, Settings
from spark_nodes.channels.redis._leases import Lease, LeaseBook, lease_or_none, now_text
from spark_nodes.channels.redis._scripts import Scripts
from spark_nodes.errors import ChannelUnavailable, MessageDecodeError

if TYPE_CHECKING:
    from spark_nodes.channels.redis._channel import RedisChannel

__all__ = ["Reader", "entries_of"]

_log = structlog.get_logger("spark_nodes")
_Entry = tuple[bytes, dict[bytes, bytes] | None, int]  # id, fields (None: deleted), deliveries
_ENVELOPE_SIZE: Final = 5  # v, id, payload, metadata, shutdown
_MOVE_DUE_BATCH: Final = 1000


class Reader:
    """The receiving side of one channel object: its buffer and how it is filled.

    Args:
        channel: The channel (the consumer) the leases belong to.
        redis: The client.
        keys: The mailbox's keys.
        group: The consumer group.
        consumer: This consumer.
        scripts: The channel's scripts.
        settings: The channel's settings.
        retry: Retries when Redis cannot be reached.
        leases: The channel's lease book.
    """

    __slots__ = (
        "_channel",
        "_claim_start",
        "_close_epoch",
        "_consumer",
        "_fetching",
        "_group",
        "_group_ready",
        "_in_idle_hook",
        "_keys",
        "_leases",
        "_name",
        "_next_claim",
        "_next_move_due",
        "_next_sweep",
        "_on_idle",
        "_own_cursor",
        "_read_own_first",
        "_redis",
        "_retry",
        "_scripts",
        "_settings",
        "buffer",
        "joined",
        "peak",
        "remote_closed",
    )

    def __init__(
        self,
        *,
        channel: RedisChannel,
        redis: RedisClient,
        keys: MailboxKeys,
        group: str,
        consumer: str,
        scripts: Scripts,
        settings: Settings,
        retry: ConnectionRetry,
        leases: LeaseBook,
    ) -> None:
        self._channel = channel
        self._name = channel.name
        self._redis = redis
        self._keys = keys
        self._group = group
        self._consumer = consumer
        self._scripts = scripts
        self._settings = settings
        self._retry = retry
        self._leases = leases
        self.buffer: deque[ChannelMessage] = deque()
        """Messages read and not taken yet, oldest first."""
        self.peak = 0
        self.remote_closed = False
        """Set once the mailbox's distributed graph closed it (see watch_remote_close)."""
        self._fetching: anyio.Event | None = None
        self._in_idle_hook = False
        self._group_ready = False
        self._read_own_first = True
        self._own_cursor = "0"
        self._next_claim = self._next_move_due = 0.0
        # Sweeps start at the first read: a restarted worker clears what dead ones left.
        self._next_sweep = 0.0 if settings.consumer_max_idle_ms else float("inf")
        self.joined = False
        """Set at the first read: the consumer may exist in Redis from then on."""
        self._claim_start = "-"
        self._close_epoch: int | None = None
        self._on_idle: Callable[[], Awaitable[None]] | None = None

    def watch_remote_close(self, epoch: int, on_idle: Callable[[], Awaitable[None]]) -> None:
        """Treat the mailbox as closed once its ``closed`` key holds ``epoch`` or more."""
        self._close_epoch = epoch
        self.remote_closed = False
        self._on_idle = on_idle

    def may_read_along(self, closed: bool) -> bool:
        """Whether a settling call may read the next entries in its round trip.

        Only when the buffer is empty (the consumer reads next anyway), no read is under
        way, and neither a claim, a sweep nor due delayed entries are waiting for a full
        fetch.
        """
        now = time.monotonic()
        return (
            not self.buffer
            and self._fetching is None
            and self._group_ready
            and not (self._read_own_first or closed or self.remote_closed)
            and now < self._next_claim
            and now < self._next_move_due
            and now < self._next_sweep
        )

    async def wait_fetched(self) -> None:
        """Wait for the read under way, if any, to end (whatever it brought is buffered).

        Not for the idle hook after it (the read is over by then), which may be what
        calls this.
        """
        fetching = self._fetching
        if fetching is not None and not self._in_idle_hook:
            await fetching.wait()

    async def fill(self) -> None:
        """Read more entries into the buffer, or wait for the read another receiver does.

        Raises:
            ChannelUnavailable: Redis could not be reached within the retries.
        """
        fetching = self._fetching
        if fetching is not None:
            await fetching.wait()
            return
        fetching = self._fetching = anyio.Event()
        try:
            await with_retries(
                self._fetch, retry=self._retry, what=f"receive from {self._name!r}",
                error=ChannelUnavailable,
            )  # fmt: skip
            if not self.buffer and self._on_idle is not None and not self.remote_closed:
                self._in_idle_hook = True
                try:
                    await self._on_idle()
                except Exception:  # noqa: BLE001 - logged; the next idle read calls it again
                    _log.exception("idle hook failed", channel=self._name)
                finally:
                    self._in_idle_hook = False
        finally:
            self._fetching = None
            fetching.set()

    async def _fetch(self) -> None:
        if not self._group_ready:
            await self._create_group()
        own_first = self._read_own_first
        now = time.monotonic()
        claim = not own_first and now >= self._next_claim
        move_due = now >= self._next_move_due
        if move_due:  # delayed messages are delivered at most this much late
            self._next_move_due = now + self._settings.block_ms / 1000
        sweep = now >= self._next_sweep
        if sweep:
            self._next_sweep = now + self._settings.sweep_interval
        watching_close = self._close_epoch is not None
        self.joined = True
        try:
            replies = await self._read(
                own_first=own_first, claim=claim, move_due=move_due, sweep=sweep,
                alone=not watching_close,
            )  # fmt: skip
        except ResponseError as error:
            if "NOGROUP" in str(error):
                self._group_ready = False  # the stream was deleted: make it again
                return
            raise
        if move_due or watching_close or sweep:
            replies = self._strip_extras(
                replies, move_due=move_due, watching_close=watching_close, sweep=sweep
            )
        if own_first:
            entries = self._own_entries(*replies)
        elif claim:
            entries = self._claimed_entries(replies[0])
        else:
            entries = [(entry, fields, 1) for entry, fields in entries_of(replies[0])]
        if entries:
            await self.accept(entries)

    def _strip_extras(
        self, replies: list[Any], *, move_due: bool, watching_close: bool, sweep: bool
    ) -> list[Any]:
        """Act on the replies queued before the read's (see ``_queue_reads``); the rest."""
        if move_due:
            replies = replies[1:]  # how many were moved
        if watching_close:
            closed = replies.pop(0)
            if closed is not None and int(closed) >= (self._close_epoch or 0):
                self.remote_closed = True
        if sweep:
            deleted = replies.pop(0)
            if deleted:
                _log.info("stale consumers removed", channel=self._name,
                          consumers=[name.decode(errors="replace") for name in deleted],
                          max_idle=self._settings.consumer_max_idle_ms / 1000)  # fmt: skip
        return replies

    async def _read(
        self, *, own_first: bool, claim: bool, move_due: bool, sweep: bool, alone: bool
    ) -> list[Any]:
        """Send the fetch's commands; return their replies, in order."""
        scripts = self._scripts
        if alone and not (own_first or claim or move_due or sweep):
            # The common read alone: a plain command costs less than a pipeline of one.
            read = self._redis.xreadgroup(
                self._group, self._consumer, {self._keys.stream: ">"},
                count=self._settings.prefetch, block=self._settings.block_ms,
            )  # fmt: skip
            return [await scripts.run(read)]
        if not scripts.loaded:
            await scripts.run(scripts.load(self._redis))
        async with self._redis.pipeline(transaction=False) as pipe:
            self._queue_reads(
                pipe, own_first=own_first, claim=claim, move_due=move_due, sweep=sweep
            )
            replies: list[Any] = await scripts.run(pipe.execute())
        return replies

    def _queue_reads(
        self, pipe: RedisPipeline, *, own_first: bool, claim: bool, move_due: bool, sweep: bool
    ) -> None:
        keys = self._keys
        settings = self._settings
        scripts = self._scripts
        if move_due:
            scripts.queue(
                pipe, scripts.move_due, [keys.delayed, keys.stream, keys.stats], [_MOVE_DUE_BATCH]
            )
        if self._close_epoch is not None:
            pipe.get(keys.closed)
        if sweep:
            scripts.queue(
                pipe, scripts.sweep_consumers, [keys.stream],
                [self._group, settings.consumer_max_idle_ms, self._consumer],
            )  # fmt: skip
        cursor = self._own_cursor
        streams: dict[Any, Any] = {keys.stream: cursor if own_first else ">"}
        group, consumer = self._group, self._consumer
        # An entry delivered before (ours before a restart, or a dead worker's) may be what
        # killed its worker: it is read alone, so that the worker holds nothing else while
        # it works on it, and a message that kills its workers costs no other a delivery.
        if own_first:
            # Our own pending entries, after the last one read (reading one counts a delivery).
            pipe.xreadgroup(group, consumer, streams, count=1)
            pipe.xpending_range(
                keys.stream, group, "-" if cursor == "0" else f"({cursor}", "+", 1,
                consumername=consumer,
            )  # fmt: skip
        elif claim:
            scripts.queue(
                pipe, scripts.claim, [keys.stream, keys.dead, keys.stats],
                [
                    group, consumer, settings.visibility_ms, self._claim_start, 1,
                    settings.max_deliveries, settings.dead_maxlen, now_text(), RELEASED_CONSUMER,
                ],
            )  # fmt: skip
        else:
            pipe.xreadgroup(
                group, consumer, streams, count=settings.prefetch, block=settings.block_ms
            )

    def _own_entries(self, read: Any, pending: list[dict[str, Any]]) -> list[_Entry]:
        counts = {p["message_id"]: p["times_delivered"] for p in pending}
        entries = [(entry, fields, counts.get(entry, 1)) for entry, fields in entries_of(read)]
        if entries:
            self._own_cursor = entries[-1][0].decode()
        else:
            self._read_own_first = False  # all ours are delivered again: on to new ones
        return entries

    def _claimed_entries(self, claimed: Any) -> list[_Entry]:
        next_start, ids, counts, envelopes, dead = claimed
        if next_start == b"0":  # the scan is complete: the next one in claim_interval
            self._claim_start = "-"
            self._next_claim = time.monotonic() + self._settings.claim_interval
        else:
            self._claim_start = next_start.decode()
        if dead:
            _log.warning("entries dead-lettered after max_deliveries", channel=self._name,
                         count=dead, max_deliveries=self._settings.max_deliveries)  # fmt: skip
        return [
            (entry, {b"m": envelope} if envelope else {}, count)
            for entry, count, envelope in zip(ids, counts, envelopes, strict=True)
        ]

    async def _create_group(self) -> None:
        try:
            # From id 0: entries sent before the first consumer existed are delivered too.
            await self._redis.xgroup_create(self._keys.stream, self._group, id="0", mkstream=True)
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        self._group_ready = True

    def drop_stale(self) -> None:
        """Drop buffered messages whose lease may have lapsed; they are delivered again.

        A buffered lease not renewed for ``visibility_timeout`` (Redis was unreachable,
        say) may have been reclaimed by another consumer, which is handling it now: it is
        not handed out. This consumer forgets it; its entry, idle past the visibility
        timeout, is reclaimed by whoever reads next (this consumer included), counted as a
        new delivery. Costs one clock read when nothing is stale: the buffer's head holds
        the oldest lease.
        """
        buffer = self.buffer
        if not buffer:
            return
        limit = self._settings.visibility_ms / 1000
        now = time.monotonic()
        head = lease_or_none(buffer[0])
        if head is None or now - head.since <= limit:
            return
        held = self._leases.held
        kept: list[ChannelMessage] = []
        stale: list[str] = []
        for message in buffer:
            lease = lease_or_none(message)
            if lease is not None and now - lease.since > limit:
                held.pop(lease.entry, None)
                stale.append(lease.entry.decode())
            else:
                kept.append(message)
        if stale:
            buffer.clear()
            buffer.extend(kept)
            _log.warning("stale messages not handled: their leases lapsed, so others may hold "
                         "them; they are delivered again", channel=self._name,
                         count=len(stale), entries=stale[:10])  # fmt: skip

    async def accept_read(self, reply: Any) -> None:
        """Take the entries of an XREADGROUP reply of new entries (a read-along)."""
        await self.accept([(entry, fields, 1) for entry, fields in entries_of(reply)])

    async def accept(self, entries: list[_Entry]) -> None:
        """Buffer the good entries; dead-letter the ones that cannot be delivered."""
        bad: list[tuple[Lease, str, str, dict[bytes, bytes]]] = []
        held = self._leases.held
        buffer = self.buffer
        now = time.monotonic()
        max_bytes = self._settings.max_bytes
        max_deliveries = self._settings.max_deliveries
        for entry, fields, deliveries in entries:
            known = held.get(entry)
            if known is not None:  # reclaimed from ourselves: we still have it
                known.deliveries = deliveries
                known.since = now
                continue
            if not fields:  # deleted from the stream while pending: nothing to deliver
                bad.append((Lease(self._channel, entry, deliveries, b"", now), "", "", {}))
                continue
            data = fields.get(b"m")
            lease = Lease(
                self._channel, entry, deliveries, data if isinstance(data, bytes) else b"", now
            )
            if data is None:
                names = ", ".join(sorted(k.decode(errors="replace") for k in fields))
                bad.append((lease, "not_an_envelope",
                            f"entry has no 'm' field (fields: {names}); it was not written "
                            f"by a spark_nodes sender", fields))  # fmt: skip
                continue
            if len(data) > max_bytes:
                bad.append((lease, "too_large",
                            f"entry is {len(data)} bytes, more than max_message_bytes="
                            f"{max_bytes}", fields))  # fmt: skip
                continue
            if deliveries > max_deliveries:
                bad.append((lease, "max_deliveries",
                            f"delivered {deliveries} times (max_deliveries={max_deliveries}) "
                            f"without an ack; this consumer restarted while holding it each "
                            f"time", fields))  # fmt: skip
                continue
            try:
                message = _decode(data, lease)
            except MessageDecodeError as error:
                bad.append((lease, "undecodable", error.reason, fields))
                continue
            metadata = message.metadata
            metadata["stream_entry"] = entry.decode()
            metadata["delivery_count"] = deliveries
            if b"replayed" in fields:  # a dead letter put back: handled before
                metadata["replayed"] = True
            held[entry] = lease
            buffer.append(message)
        if len(buffer) > self.peak:
            self.peak = len(buffer)
        for lease, reason, why, fields in bad:
            if not reason:
                await self._redis.xack(self._keys.stream, self._group, lease.entry)
                continue
            _log.warning("entry dead-lettered", channel=self._name, entry=lease.entry.decode(),
                         reason=reason, error=why)  # fmt: skip
            await self._leases.dead_letter(lease, reason, why, fields)


def entries_of(reply: Any) -> list[tuple[bytes, dict[bytes, bytes] | None]]:
    """The (id, fields) pairs of an XREADGROUP reply (RESP2 or RESP3)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        streams = list(reply.values())
        return [(entry, fields) for stream in streams for entry, fields in stream[0]]
    return [(entry, fields) for _name, stream_entries in reply for entry, fields in stream_entries]


def _decode(data: bytes, lease: Lease) -> ChannelMessage:
    """``decode(data, ack=lease)``, with the common case (a well-formed envelope) inlined."""
    try:
        envelope = unpack_envelope(data)
    except Exception:  # noqa: BLE001 - decode() says what is wrong with it
        return decode(data, ack=lease)
    if (
        envelope.__class__ is not dict
        or len(envelope) != _ENVELOPE_SIZE
        or envelope.get("v").__class__ is not int  # exactly: True and 1.0 equal 1 too
        or envelope["v"] != ENVELOPE_VERSION
    ):
        return decode(data, ack=lease)
    ident = envelope.get("id")
    metadata = envelope.get("metadata")
    shutdown = envelope.get("shutdown")
    if not (
        ident.__class__ is str
        and ident
        and metadata.__class__ is dict
        and (not metadata or all(map(str.__instancecheck__, metadata)))  # str keys only
        and shutdown.__class__ is bool
        and "payload" in envelope
    ):
        return decode(data, ack=lease)
    return unchecked_message(envelope["payload"], metadata, lease, shutdown, ident)
