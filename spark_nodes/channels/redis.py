"""``RedisChannel``: a durable mailbox on a Redis Stream, shared by many processes.

One stream per mailbox, one consumer group per stream (so an ack may delete the entry), one
consumer per channel object. Every key of a mailbox shares its hash tag, so a mailbox (and,
in a distributed graph, the whole graph) lives in one Redis Cluster slot::

    {namespace}:{tag}            the stream; entries have one field, "m": the envelope
    {namespace}:{tag}:dead       dead letters: the original bytes, the reason, the error
    {namespace}:{tag}:delayed    sorted set of envelopes sent with a delay, by due time
    {namespace}:{tag}:stats      counters: sent, acked, dead_lettered, rejected_acks, ...
    {namespace}:{tag}:producer:… each producer's last batch number (retries land once)
    {namespace}:{tag}:idem:…     idempotency keys seen within the window
    {namespace}:{tag}:closed     set when a distributed graph closed this mailbox

Delivery is at least once: an entry stays pending until it is acked, dead-lettered, or
reclaimed by another consumer after ``visibility_timeout`` (with its delivery count up by
one). See ``docs/redis.md`` for the guarantees, stated precisely.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import secrets
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Self, TypeVar

import anyio
import structlog
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from spark_nodes._redis_client import (
    RETRIABLE,
    ConnectionRetry,
    open_client,
    with_retries,
)
from spark_nodes.channels import _redis_scripts as scripts
from spark_nodes.channels._coalesce import Coalescer
from spark_nodes.channels.base import BaseChannel, ChannelStatistics, Observer
from spark_nodes.channels.codec import ENVELOPE_VERSION, _unpackb, decode, encode
from spark_nodes.channels.message import ChannelMessage, _OnceAck
from spark_nodes.errors import (
    ChannelClosed,
    ChannelFull,
    ChannelUnavailable,
    LeaseLost,
    MessageDecodeError,
    MessageTooLarge,
)

if TYPE_CHECKING:
    from spark_nodes.channels.inspection import MailboxInfo

__all__ = ["RedisChannel", "stream_key"]

_log = structlog.get_logger("spark_nodes")
T = TypeVar("T")
_Entry = tuple[bytes, dict[bytes, bytes] | None, int]  # id, fields (None: deleted), deliveries
_consumer_numbers = itertools.count(1)
_new_object = object.__new__
_ENVELOPE_SIZE: Final = 5  # v, id, payload, metadata, shutdown

_PRODUCER_WINDOW_MS: Final = 3_600_000  # how long a producer's batch numbers are remembered
_MOVE_DUE_BATCH: Final = 1000
_NOT_OURS: Final = -1


def has_hash_tag(name: str) -> bool:
    """Whether ``name`` has a Redis Cluster hash tag: ``{...}`` with something inside."""
    start = name.find("{")
    return start != -1 and name.find("}", start + 2) != -1


def stream_key(namespace: str, channel_name: str) -> str:
    """The stream key of a mailbox: ``{namespace}:{channel_name}``, hash-tagged.

    A ``channel_name`` without a hash tag is wrapped in one (``spark_nodes:{orders}``), so
    the mailbox's keys share a Cluster slot; one with a tag keeps it
    (``spark_nodes:{graph}:node``), so several mailboxes can share one.
    """
    tagged = channel_name if has_hash_tag(channel_name) else f"{{{channel_name}}}"
    return f"{namespace}:{tagged}"


def default_consumer_name() -> str:
    """``{hostname}-{pid}-{n}``: unique per channel object among live processes."""
    return f"{socket.gethostname()}-{os.getpid()}-{next(_consumer_numbers)}"


class _Lease:
    """An entry delivered to this consumer and not settled yet (buffered or in progress).

    It is also the received message's ack callback: a fenced XACK of the entry.
    """

    __slots__ = ("channel", "data", "deliveries", "entry", "handed_out", "lost")

    def __init__(self, channel: RedisChannel, entry: bytes, deliveries: int, data: bytes) -> None:
        self.channel = channel
        self.entry = entry
        self.deliveries = deliveries
        self.data = data  # the original envelope, kept for dead-lettering as it was
        self.lost = False
        self.handed_out = False  # by receive(): a handler had it, the delivery counts

    async def __call__(self) -> None:
        await self.channel._ack_leases([self], raise_lost=True)

    def __repr__(self) -> str:
        return f"<redis ack {self.channel.key} {self.entry.decode()}>"


class _Outgoing:
    """A send waiting to be written."""

    __slots__ = ("data", "delay_ms", "done", "error", "idempotency", "message", "nowait", "seq")

    def __init__(
        self,
        message: ChannelMessage,
        data: bytes,
        delay_ms: int,
        idempotency: str | None,
        *,
        nowait: bool,
    ) -> None:
        self.message = message
        self.data = data
        self.delay_ms = delay_ms
        self.idempotency = idempotency
        self.nowait = nowait  # from send_nowait: no caller waits for it
        self.seq = 0  # given when first put in a batch; kept across retries
        self.done = False
        self.error: BaseException | None = None


class _PendingAck:
    """Acks one caller waits for; statuses come back in the same order."""

    __slots__ = ("done", "error", "leases", "statuses")

    def __init__(self, leases: list[_Lease]) -> None:
        self.leases = leases
        self.statuses: list[int] = []
        self.done = False
        self.error: BaseException | None = None


@dataclass(frozen=True, slots=True)
class _Settings:
    """A channel's limits and timings, checked and in the units Redis takes."""

    prefetch: int
    block_ms: int
    visibility_ms: int
    claim_interval: float
    max_deliveries: int
    max_bytes: int
    dead_maxlen: int  # 0: unbounded
    idempotency_ms: int
    max_pending: int
    send_batch: int

    @classmethod
    def check(
        cls,
        *,
        prefetch: int,
        block: float,
        visibility_timeout: float,
        max_deliveries: int,
        max_message_bytes: int,
        dead_letter_maxlen: int | None,
        idempotency_window: float,
        max_pending_sends: int,
        send_batch: int,
    ) -> _Settings:
        """Check each value (TypeError, ValueError naming it) and convert."""
        for label, count in (
            ("prefetch", prefetch),
            ("max_deliveries", max_deliveries),
            ("max_message_bytes", max_message_bytes),
            ("dead_letter_maxlen", 1 if dead_letter_maxlen is None else dead_letter_maxlen),
            ("max_pending_sends", max_pending_sends),
            ("send_batch", send_batch),
        ):
            if isinstance(count, bool) or not isinstance(count, int):
                raise TypeError(f"{label} must be an int, not {count!r}")
            if count < 1:
                raise ValueError(f"{label} must be >= 1, not {count!r}")
        for label, seconds in (
            ("block", block),
            ("visibility_timeout", visibility_timeout),
            ("idempotency_window", idempotency_window),
        ):
            if isinstance(seconds, bool) or not isinstance(seconds, int | float):
                raise TypeError(f"{label} must be a number of seconds, not {seconds!r}")
            if not (seconds > 0 and math.isfinite(seconds)):
                raise ValueError(f"{label} must be a finite number of seconds > 0, not {seconds!r}")
        return cls(
            prefetch=prefetch,
            block_ms=max(1, round(block * 1000)),
            visibility_ms=max(1, round(visibility_timeout * 1000)),
            claim_interval=min(visibility_timeout / 2, 5.0),
            max_deliveries=max_deliveries,
            max_bytes=max_message_bytes,
            dead_maxlen=dead_letter_maxlen or 0,
            idempotency_ms=max(1, round(idempotency_window * 1000)),
            max_pending=max_pending_sends,
            send_batch=send_batch,
        )


@dataclass(frozen=True, slots=True)
class _Keys:
    stream: str
    dead: str
    delayed: str
    stats: str
    closed: str
    prefix: str  # for producer and idempotency keys

    @classmethod
    def of(cls, stream: str) -> _Keys:
        """The keys of the mailbox whose stream is ``stream``."""
        return cls(
            stream=stream,
            dead=f"{stream}:dead",
            delayed=f"{stream}:delayed",
            stats=f"{stream}:stats",
            closed=f"{stream}:closed",
            prefix=f"{stream}:",
        )


class RedisChannel(BaseChannel):
    """A durable mailbox: a Redis Stream read by a consumer group, at-least-once.

    Many processes may send to and receive from one channel name; each receiving channel
    object is one consumer of the group. A received message carries an ack: ``await
    message.ack()`` deletes its entry, *if this consumer still holds it* (a fenced ack: a
    worker that stalled past ``visibility_timeout`` has lost the entry to another consumer
    and its ack raises :class:`~spark_nodes.errors.LeaseLost`). A message never acked is
    delivered again: to this consumer after a restart with the same ``consumer`` name, or
    to another one once it has been idle for ``visibility_timeout`` seconds. After
    ``max_deliveries`` deliveries without an ack, it goes to the dead-letter stream
    instead, with why: so does an entry that cannot be decoded or is too large.

    ``send`` writes through a coalescing pipeline: concurrent sends share a round trip and
    a Lua script appends the whole batch. It returns once the message is in Redis; a
    failed try is retried (see ``retry``) without ever writing a message twice, then
    :class:`~spark_nodes.errors.ChannelUnavailable` is raised. ``send(message,
    delay=seconds)`` delivers it when due. A message whose ``metadata["idempotency_key"]``
    was sent within ``idempotency_window`` seconds is dropped, atomically.

    ``send_nowait`` only queues the message in this process (raising
    :class:`~spark_nodes.errors.ChannelFull` when ``max_pending_sends`` are queued); it is
    written by the next ``send``, :meth:`flush` or :meth:`aclose`. Observers see its
    ``"send"`` once it is written.

    ``receive`` reads up to ``prefetch`` entries at a time into a local buffer, blocking
    in Redis for at most ``block`` seconds, so ``close()`` wakes a waiting receiver within
    ``block``. ``empty()`` and ``qsize()`` describe that local buffer; :meth:`inspect`
    reads the stream. Metadata of a received message gains ``stream_entry`` (the entry id)
    and ``delivery_count``.

    ``close()`` refuses new sends here and ends receiving once the local buffer is
    delivered; it does not touch Redis. :meth:`aclose` also writes queued sends and closes
    the client if the channel made it. ``async with RedisChannel(...)`` does both.

    Use from one asyncio event loop (redis-py's asyncio client).

    Args:
        redis_url: ``redis://``, ``rediss://`` (TLS) or ``unix://`` URL, user and password
            included if needed. Give this or ``redis``.
        channel_name: The mailbox's name; the stream key is ``{namespace}:{channel_name}``
            with a hash tag (see :func:`stream_key`).
        redis: A shared ``redis.asyncio.Redis`` client (``decode_responses=False``); the
            channel does not close it. Make it with redis-py's retries off (our retries
            are explicit and de-duplicated): ``Redis(..., retry=Retry(NoBackoff(), 0))``.
        namespace: Prefix of every key.
        group: The consumer group (one per mailbox).
        consumer: This receiver's consumer name; ``{host}-{pid}-{n}`` when omitted. Give a
            stable one (a pod name) to have a restarted worker finish its own entries first.
        name: For logs and observers; ``channel_name`` when omitted.
        observers: See :class:`BaseChannel`.
        prefetch: Entries read per round trip (and buffered here).
        block: Seconds a read waits in Redis for new entries.
        visibility_timeout: Seconds an entry may stay unacked before others may reclaim it.
        max_deliveries: Deliveries without an ack before an entry is dead-lettered.
        max_message_bytes: The largest encoded message ``send`` accepts.
        dead_letter_maxlen: Dead letters kept (oldest trimmed first, approximately);
            ``None`` keeps all.
        idempotency_window: Seconds an idempotency key is remembered.
        max_pending_sends: The most messages ``send_nowait`` may queue.
        send_batch: The most messages written in one round trip.
        retry: Retries when Redis cannot be reached; :class:`ConnectionRetry` by default.

    Raises:
        TypeError: Neither or both of ``redis_url`` and ``redis`` are given, or
            ``channel_name`` is missing.
        ValueError: A number is out of range.
    """

    __slots__ = (
        "_acks",
        "_buffer",
        "_claim_start",
        "_close_epoch",
        "_fetching",
        "_group_ready",
        "_held",
        "_keys",
        "_next_claim",
        "_next_move_due",
        "_on_idle",
        "_outbox",
        "_own_cursor",
        "_owns_client",
        "_peak",
        "_producer",
        "_producer_pid",
        "_read_own_first",
        "_received",
        "_redis",
        "_remote_closed",
        "_result_key",
        "_retry",
        "_scripts",
        "_sent",
        "_sequence",
        "_settings",
        "_waiting_receivers",
        "_waiting_senders",
        "consumer",
        "group",
        "key",
    )

    def __init__(
        self,
        redis_url: str | None = None,
        channel_name: str | None = None,
        *,
        redis: Redis | None = None,
        namespace: str = "spark_nodes",
        group: str = "workers",
        consumer: str | None = None,
        name: str | None = None,
        observers: Iterable[Observer] | None = None,
        prefetch: int = 10,
        block: float = 0.1,
        visibility_timeout: float = 30.0,
        max_deliveries: int = 3,
        max_message_bytes: int = 1 << 20,
        dead_letter_maxlen: int | None = 10_000,
        idempotency_window: float = 86_400.0,
        max_pending_sends: int = 10_000,
        send_batch: int = 256,
        retry: ConnectionRetry | None = None,
    ) -> None:
        if (redis_url is None) == (redis is None):
            raise TypeError("give RedisChannel either redis_url='redis://...' or redis=<client>")
        if not isinstance(channel_name, str) or not channel_name:
            raise TypeError(f"channel_name must be a non-empty str, not {channel_name!r}")
        for label, text in (("namespace", namespace), ("group", group)):
            if not isinstance(text, str) or not text:
                raise TypeError(f"{label} must be a non-empty str, not {text!r}")
        if consumer is not None and (not isinstance(consumer, str) or not consumer):
            raise TypeError(f"consumer must be a non-empty str, not {consumer!r}")
        settings = _Settings.check(
            prefetch=prefetch,
            block=block,
            visibility_timeout=visibility_timeout,
            max_deliveries=max_deliveries,
            max_message_bytes=max_message_bytes,
            dead_letter_maxlen=dead_letter_maxlen,
            idempotency_window=idempotency_window,
            max_pending_sends=max_pending_sends,
            send_batch=send_batch,
        )
        super().__init__(name=name or channel_name, observers=observers)
        if redis is None:
            assert redis_url is not None
            redis = open_client(redis_url)
            self._owns_client = True
        else:
            if not isinstance(redis, Redis):
                raise TypeError(f"redis must be a redis.asyncio.Redis, not {type(redis).__name__}")
            if redis.connection_pool.connection_kwargs.get("decode_responses"):
                raise ValueError("the Redis client must be made with decode_responses=False")
            self._owns_client = False
        self._redis: Redis = redis
        self.key = stream_key(namespace, channel_name)
        """The stream's key."""
        self.group = group
        """The consumer group."""
        self.consumer = consumer or default_consumer_name()
        """This channel's consumer name."""
        self._keys = _Keys.of(self.key)
        self._scripts = _Scripts(redis)
        self._settings = settings
        self._retry = retry or ConnectionRetry()
        self._outbox: Coalescer[_Outgoing] = Coalescer(self._write_sends, settings.send_batch)
        self._acks: Coalescer[_PendingAck] = Coalescer(self._write_acks, 512)
        self._producer = ""
        self._producer_pid = 0
        self._sequence = 0
        self._buffer: deque[ChannelMessage] = deque()
        self._held: dict[bytes, _Lease] = {}
        self._fetching: anyio.Event | None = None
        self._group_ready = False
        self._read_own_first = True
        self._own_cursor = "0"
        self._next_claim = self._next_move_due = 0.0
        self._claim_start = "-"
        self._close_epoch: int | None = None
        self._remote_closed = False
        # Where a distributed graph keeps this node's latest output (written by _commit).
        self._result_key: str | None = None
        # A distributed graph's hook, awaited after a read that found nothing new.
        self._on_idle: Callable[[], Awaitable[None]] | None = None
        self._sent = self._received = self._peak = 0
        self._waiting_senders = self._waiting_receivers = 0

    # -- sending ----------------------------------------------------------------------------

    async def send(self, message: ChannelMessage, *, delay: float | None = None) -> None:
        """Write ``message`` to the stream; return once it is in Redis.

        Concurrent sends share round trips. A try that failed is retried with backoff; a
        retried batch whose first try landed is not written again.

        Args:
            message: The message. ``metadata["idempotency_key"]`` (a str) drops it if a
                message with that key was sent within ``idempotency_window``.
            delay: Seconds until it is delivered (it waits in a sorted set meanwhile).

        Raises:
            ChannelClosed: The channel is closed; nothing was written.
            MessageEncodeError: The payload or metadata is not plain data (a
                ``TypeError`` naming the path); nothing was written.
            MessageTooLarge: The encoded message exceeds ``max_message_bytes``.
            ChannelUnavailable: Redis could not be reached within the retries; the
                message was not written (or, if a try landed, written once).
            TypeError: ``message`` is not a :class:`ChannelMessage`.
            ValueError: ``delay`` is negative or not finite; ``idempotency_key`` is not a
                non-empty str.
        """
        item = self._prepare(message, delay, nowait=False)
        self._waiting_senders += 1
        try:
            await self._outbox.submit(item)
        finally:
            self._waiting_senders -= 1
        if self._observers:
            await self._notify(message, "send")

    def send_nowait(self, message: ChannelMessage) -> None:
        """Queue ``message`` in this process; the next ``send``/``flush``/``aclose`` writes it.

        Raises:
            ChannelFull: ``max_pending_sends`` messages are queued already.
            ChannelClosed: The channel is closed.
            MessageEncodeError: The message is not plain data.
            MessageTooLarge: The encoded message exceeds ``max_message_bytes``.
            TypeError: ``message`` is not a :class:`ChannelMessage`.
        """
        if len(self._outbox.queue) >= self._settings.max_pending:
            raise ChannelFull(
                f"channel {self.name!r} has {self._settings.max_pending} sends queued "
                f"(max_pending_sends); 'await flush()' or 'await send()' writes them"
            )
        self._outbox.queue.append(self._prepare(message, None, nowait=True))

    async def flush(self) -> None:
        """Write every queued send now.

        Raises:
            ChannelUnavailable: Redis could not be reached for some of them; the others
                were written.
        """
        await self._outbox.flush()

    def _prepare(self, message: ChannelMessage, delay: float | None, *, nowait: bool) -> _Outgoing:
        if not isinstance(message, ChannelMessage):
            raise TypeError(
                f"channels carry ChannelMessage objects, not {type(message).__name__}; "
                f"wrap the value: ChannelMessage(payload=value)"
            )
        if self._closed:
            raise ChannelClosed(f"channel {self.name!r} is closed; it accepts no more messages")
        delay_ms = 0
        if delay is not None:
            if not (isinstance(delay, int | float) and math.isfinite(delay) and delay >= 0):
                raise ValueError(f"delay must be a finite number of seconds >= 0, not {delay!r}")
            delay_ms = math.ceil(delay * 1000)
        idempotency = message.metadata.get("idempotency_key") if message._metadata else None
        if idempotency is not None and (not isinstance(idempotency, str) or not idempotency):
            raise ValueError(f"idempotency_key must be a non-empty str, not {idempotency!r}")
        data = self._encode(message)
        return _Outgoing(message, data, delay_ms, idempotency, nowait=nowait)

    def _encode(self, message: ChannelMessage) -> bytes:
        data = encode(message)
        if len(data) > self._settings.max_bytes:
            raise MessageTooLarge(
                f"message {message.id} is {len(data)} bytes encoded, more than channel "
                f"{self.name!r} takes (max_message_bytes={self._settings.max_bytes}); send a "
                f"reference to the data (a key, a URL) instead"
            )
        return data

    async def _write_sends(self, batch: list[_Outgoing]) -> None:
        if os.getpid() != self._producer_pid:  # a new process (or a fork): a new producer
            self._producer = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(6)}"
            self._producer_pid = os.getpid()
            self._sequence = 0
        for item in batch:
            if not item.seq:
                self._sequence += 1
                item.seq = self._sequence
        keys = self._keys
        script_keys = [keys.stream, keys.stats, f"{keys.prefix}producer:{self._producer}"]
        script_keys.append(keys.delayed)
        contiguous = all(b.seq == a.seq + 1 for a, b in itertools.pairwise(batch))
        if not contiguous:  # a withdrawn send left a gap: write the runs one by one
            await self._write_runs(batch)
            return
        special: list[str] = []
        for position, item in enumerate(batch, 1):
            if item.idempotency is not None or item.delay_ms:
                index = 0
                if item.idempotency is not None:
                    script_keys.append(f"{keys.prefix}idem:{item.idempotency}")
                    index = len(script_keys)
                special.append(f"{position} {item.delay_ms} {index} ")
        args: list[Any] = [
            _PRODUCER_WINDOW_MS,
            self._settings.idempotency_ms,
            batch[0].seq,
            "".join(special),
            *[item.data for item in batch],
        ]
        try:
            await with_retries(
                lambda: self._scripts.send(keys=script_keys, args=args),
                retry=self._retry,
                what=f"send to {self.name!r}",
                error=ChannelUnavailable,
            )
        except Exception:
            # Queued by send_nowait, nobody waits for these: keep them for the next write
            # rather than drop them. The senders that wait get the error.
            self._outbox.queue[:0] = [item for item in batch if item.nowait]
            raise
        for item in batch:
            item.done = True
        self._sent += len(batch)
        if self._observers:
            for item in batch:
                if item.nowait:  # a send() caller notifies its own observers
                    await self._notify(item.message, "send")

    async def _write_runs(self, batch: list[_Outgoing]) -> None:
        run: list[_Outgoing] = []
        for item in batch:
            if run and item.seq != run[-1].seq + 1:
                await self._write_sends(run)
                run = []
            run.append(item)
        await self._write_sends(run)

    # -- receiving --------------------------------------------------------------------------

    async def receive(self) -> ChannelMessage:
        """Return the next message, reading more from Redis when the local buffer is empty.

        Entries come in this order: this consumer's own unacked entries (after a restart
        with the same ``consumer`` name), entries reclaimed from consumers idle past the
        visibility timeout, then new ones. An entry that cannot be decoded, is larger than
        ``max_message_bytes`` or was delivered ``max_deliveries`` times is dead-lettered
        (with the reason and its original bytes) and the next one is returned.

        Raises:
            ChannelClosed: The channel was closed (here, or by its distributed graph) and
                the local buffer is drained.
            ChannelUnavailable: Redis could not be reached within the retries.
        """
        buffer = self._buffer
        while not buffer:
            if self._closed or self._remote_closed:
                raise ChannelClosed(f"channel {self.name!r} is closed and drained")
            self._waiting_receivers += 1
            try:
                await self._fill()
            finally:
                self._waiting_receivers -= 1
        message = buffer.popleft()
        self._received += 1
        ack = message._ack
        if isinstance(ack, _Lease):
            ack.handed_out = True
        elif isinstance(ack, _OnceAck) and isinstance(ack.callback, _Lease):
            ack.callback.handed_out = True
        if message._pending is not None or self._observers:
            resume = self._observe_receive(message)
            if resume is not None:
                try:
                    await self._finish_receive(message, resume)
                except BaseException:
                    buffer.appendleft(message)
                    self._received -= 1
                    raise
        return message

    async def receive_batch(self, max_messages: int = 100) -> list[ChannelMessage]:
        """Return between 1 and ``max_messages`` messages, waiting for the first.

        Takes what the local buffer holds (reading from Redis only if it is empty), so a
        consumer that handles messages in batches pays one round trip per batch. Pair it
        with :meth:`ack_batch`.

        Raises:
            ChannelClosed: See :meth:`receive`.
            ChannelUnavailable: See :meth:`receive`.
            ValueError: ``max_messages`` < 1.
        """
        if max_messages < 1:
            raise ValueError(f"max_messages must be >= 1, not {max_messages}")
        batch = [await self.receive()]
        buffer = self._buffer
        if self._observers:
            while buffer and len(batch) < max_messages:
                batch.append(await self.receive())
            return batch
        while buffer and len(batch) < max_messages and buffer[0]._pending is None:
            message = buffer.popleft()  # receive() minus its coroutine: no observers
            ack = message._ack
            if isinstance(ack, _Lease):
                ack.handed_out = True
            batch.append(message)
        self._received += len(batch) - 1
        return batch

    async def ack_batch(self, messages: Sequence[ChannelMessage]) -> int:
        """Ack received messages in one round trip; return how many were acked.

        Each ack is fenced like ``message.ack()``: a message whose lease was lost is not
        acked (``message.acked`` stays False; it is handled where it was reclaimed).

        Raises:
            ChannelUnavailable: Redis could not be reached within the retries; nothing
                was acked for sure (a later ack or redelivery settles them).
            ValueError: A message was not received from this channel.
        """
        leases = [self._lease_of(message) for message in messages]
        statuses = await self._ack_leases(leases, raise_lost=False)
        acked = 0
        for message, status in zip(messages, statuses, strict=True):
            if status == 1:
                acked += 1
                await _settle(message)
        return acked

    def empty(self) -> bool:
        """Whether the local buffer is empty (the stream may hold more; see :meth:`inspect`)."""
        return not self._buffer

    def qsize(self) -> int:
        """Messages in the local buffer, received from Redis and not handed out yet."""
        return len(self._buffer)

    async def _fill(self) -> None:
        """Read more entries into the buffer, or wait for the read another receiver does."""
        fetching = self._fetching
        if fetching is not None:
            await fetching.wait()
            return
        fetching = self._fetching = anyio.Event()
        try:
            await with_retries(
                self._fetch, retry=self._retry, what=f"receive from {self.name!r}",
                error=ChannelUnavailable,
            )  # fmt: skip
            if not self._buffer and self._on_idle is not None and not self._remote_closed:
                try:
                    await self._on_idle()
                except Exception:  # noqa: BLE001 - logged; the next idle read calls it again
                    _log.exception("idle hook failed", channel=self.name)
        finally:
            self._fetching = None
            fetching.set()

    async def _fetch(self) -> None:
        """One round trip: due delayed entries, the close flag, then entries to deliver.

        What is read, by priority: our own pending entries (once, at start), stale
        entries of others (every ``claim_interval``, in small batches), new entries.
        """
        if not self._group_ready:
            await self._create_group()
        own_first = self._read_own_first
        now = time.monotonic()
        claim = not own_first and now >= self._next_claim
        move_due = now >= self._next_move_due
        if move_due:  # delayed messages are delivered at most this much late
            self._next_move_due = now + self._settings.block_ms / 1000
        watching_close = self._close_epoch is not None
        try:
            replies = await self._read(
                own_first=own_first, claim=claim, move_due=move_due, alone=not watching_close
            )
        except ResponseError as error:
            if "NOGROUP" in str(error):
                self._group_ready = False  # the stream was deleted: make it again
                return
            raise
        if move_due:
            replies = replies[1:]  # how many were moved
        if watching_close:
            closed = replies.pop(0)
            if closed is not None and int(closed) >= (self._close_epoch or 0):
                self._remote_closed = True
        if own_first:
            entries = self._own_entries(*replies)
        elif claim:
            entries = self._claimed_entries(replies[0])
            entries.extend((entry, fields, 1) for entry, fields in _entries_of(replies[1]))
        else:
            entries = [(entry, fields, 1) for entry, fields in _entries_of(replies[0])]
        if entries:
            await self._accept(entries)

    async def _read(
        self, *, own_first: bool, claim: bool, move_due: bool, alone: bool
    ) -> list[Any]:
        """Send the fetch's commands; return their replies, in order."""
        if alone and not (own_first or claim or move_due):
            # The common read alone: a plain command costs less than a pipeline of one.
            read = self._redis.xreadgroup(
                self.group, self.consumer, {self.key: ">"},
                count=self._settings.prefetch, block=self._settings.block_ms,
            )  # fmt: skip
            return [await self._run(read)]
        if not self._scripts.loaded:
            await self._run(self._scripts.load(self._redis))
        async with self._redis.pipeline(transaction=False) as pipe:
            self._queue_reads(pipe, own_first=own_first, claim=claim, move_due=move_due)
            replies: list[Any] = await self._run(pipe.execute())
        return replies

    def _queue_reads(self, pipe: Pipeline, *, own_first: bool, claim: bool, move_due: bool) -> None:
        """Queue the fetch's commands: due delayed entries, the close flag, the reads."""
        keys = self._keys
        settings = self._settings
        if move_due:
            self._scripts.queue(
                pipe, self._scripts.move_due, [keys.delayed, keys.stream, keys.stats],
                [_MOVE_DUE_BATCH],
            )  # fmt: skip
        if self._close_epoch is not None:
            pipe.get(keys.closed)
        cursor = self._own_cursor
        streams: dict[Any, Any] = {keys.stream: cursor if own_first else ">"}
        if own_first:
            # Our own pending entries, after the last one read (reading one counts a delivery).
            pipe.xreadgroup(self.group, self.consumer, streams, count=settings.prefetch)
            pipe.xpending_range(
                keys.stream, self.group, "-" if cursor == "0" else f"({cursor}", "+",
                settings.prefetch, consumername=self.consumer,
            )  # fmt: skip
        elif claim:
            self._scripts.queue(
                pipe, self._scripts.claim, [keys.stream, keys.dead, keys.stats],
                [
                    self.group, self.consumer, settings.visibility_ms, self._claim_start,
                    settings.prefetch, settings.max_deliveries, settings.dead_maxlen,
                    _now_text(),
                ],
            )  # fmt: skip
            pipe.xreadgroup(self.group, self.consumer, streams, count=settings.prefetch)
        else:
            pipe.xreadgroup(
                self.group, self.consumer, streams, count=settings.prefetch, block=settings.block_ms
            )

    def _own_entries(self, read: Any, pending: list[dict[str, Any]]) -> list[_Entry]:
        counts = {p["message_id"]: p["times_delivered"] for p in pending}
        entries = [(entry, fields, counts.get(entry, 1)) for entry, fields in _entries_of(read)]
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
            _log.warning("entries dead-lettered after max_deliveries", channel=self.name,
                         count=dead, max_deliveries=self._settings.max_deliveries)  # fmt: skip
        return [
            (entry, {b"m": envelope} if envelope else {}, count)
            for entry, count, envelope in zip(ids, counts, envelopes, strict=True)
        ]

    async def _run(self, call: Awaitable[T]) -> T:
        """Await a call that may use the scripts by sha; see :class:`_Scripts`."""
        try:
            return await call
        except RETRIABLE:
            self._scripts.loaded = False  # the server may come back without them
            raise
        except NoScriptError as error:
            self._scripts.loaded = False
            raise RedisConnectionError("the server lost its scripts: load them again") from error

    async def _create_group(self) -> None:
        try:
            # From id 0: entries sent before the first consumer existed are delivered too.
            await self._redis.xgroup_create(self.key, self.group, id="0", mkstream=True)
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        self._group_ready = True

    async def _accept(self, entries: list[_Entry]) -> None:
        """Buffer the good entries; dead-letter the ones that cannot be delivered."""
        bad: list[tuple[_Lease, str, str, dict[bytes, bytes]]] = []
        held = self._held
        buffer = self._buffer
        for entry, fields, deliveries in entries:
            known = held.get(entry)
            if known is not None:  # reclaimed from ourselves: we still have it
                known.deliveries = deliveries
                continue
            if not fields:  # deleted from the stream while pending: nothing to deliver
                bad.append((_Lease(self, entry, deliveries, b""), "", "", {}))
                continue
            data = fields.get(b"m")
            lease = _Lease(self, entry, deliveries, data if isinstance(data, bytes) else b"")
            if data is None:
                names = ", ".join(sorted(k.decode(errors="replace") for k in fields))
                bad.append((lease, "not_an_envelope",
                            f"entry has no 'm' field (fields: {names}); it was not written "
                            f"by a spark_nodes sender", fields))  # fmt: skip
                continue
            if len(data) > self._settings.max_bytes:
                bad.append((lease, "too_large",
                            f"entry is {len(data)} bytes, more than max_message_bytes="
                            f"{self._settings.max_bytes}", fields))  # fmt: skip
                continue
            if deliveries > self._settings.max_deliveries:
                bad.append((lease, "max_deliveries",
                            f"delivered {deliveries} times (max_deliveries="
                            f"{self._settings.max_deliveries}) without an ack; this consumer "
                            f"restarted while holding it each time", fields))  # fmt: skip
                continue
            try:
                message = _decode(data, lease)
            except MessageDecodeError as error:
                bad.append((lease, "undecodable", error.reason, fields))
                continue
            metadata = message.metadata
            metadata["stream_entry"] = entry.decode()
            metadata["delivery_count"] = deliveries
            held[entry] = lease
            buffer.append(message)
        if len(buffer) > self._peak:
            self._peak = len(buffer)
        for lease, reason, why, fields in bad:
            if not reason:
                await self._redis.xack(self.key, self.group, lease.entry)
                continue
            _log.warning("entry dead-lettered", channel=self.name, entry=lease.entry.decode(),
                         reason=reason, error=why)  # fmt: skip
            await self._move_to_dead_letters(lease, reason, why, fields)

    # -- acks, dead letters, leases ---------------------------------------------------------

    async def _ack_leases(self, leases: list[_Lease], *, raise_lost: bool) -> list[int]:
        """Ack entries (fenced), sharing round trips with concurrent acks; return statuses."""
        pending = _PendingAck(leases)
        self._acks.queue.append(pending)
        await self._acks.wait(pending)
        if pending.error is not None:
            raise pending.error
        statuses = pending.statuses
        if raise_lost and statuses and statuses[0] != 1:
            lease = leases[0]
            raise LeaseLost(
                f"entry {lease.entry.decode()} of {self.name!r} is no longer held by "
                f"{self.consumer!r} (it was reclaimed after visibility_timeout, or "
                f"dead-lettered): the ack was rejected and it will be handled there"
            )
        return statuses

    async def _write_acks(self, batch: list[_PendingAck]) -> None:
        keys = self._keys
        leases = [lease for item in batch for lease in item.leases]
        # The consumer's leases in the batch's id range: the batch, plus what it holds.
        ids = sorted(_id_order(lease.entry) for lease in leases)
        low, high = (b"%d-%d" % ids[0], b"%d-%d" % ids[-1])
        most = len(self._held) + len(leases)
        args: list[Any] = [self.group, self.consumer, _lease_words(leases), most, low, high]
        # A consumer that acks with nothing left in its buffer reads next: read the next
        # entries in the same round trip (not from the start, nor when a claim is due).
        read_along = (
            not self._buffer
            and self._fetching is None
            and self._group_ready
            and not (self._read_own_first or self._closed or self._remote_closed)
            and time.monotonic() < self._next_claim
        )
        tries = 0

        async def ack() -> tuple[list[int], Any]:
            nonlocal tries
            tries += 1
            if not read_along:
                result: list[int] = await self._scripts.ack(
                    keys=[keys.stream, keys.stats], args=args
                )
                return result, None
            if not self._scripts.loaded:
                await self._run(self._scripts.load(self._redis))
            async with self._redis.pipeline(transaction=False) as pipe:
                self._scripts.queue(pipe, self._scripts.ack, [keys.stream, keys.stats], args)
                pipe.xreadgroup(
                    self.group, self.consumer, {keys.stream: ">"}, count=self._settings.prefetch
                )
                statuses, read = await self._run(pipe.execute())
            return statuses, read

        statuses, read = await with_retries(
            ack, retry=self._retry, what=f"ack on {self.name!r}", error=ChannelUnavailable
        )
        if read:
            await self._accept([(entry, fields, 1) for entry, fields in _entries_of(read)])
        held = self._held
        position = 0
        for item in batch:
            for lease in item.leases:
                status = statuses[position]
                position += 1
                # Not pending any more, after a try that may have landed: that try acked it.
                if status == 0 and tries > 1:
                    status = 1
                elif status != 1:
                    lease.lost = True
                item.statuses.append(status)
                held.pop(lease.entry, None)
            item.done = True

    async def dead_letter(
        self,
        message: ChannelMessage,
        *,
        reason: str,
        error: str = "",
        details: dict[str, Any] | None = None,
    ) -> None:
        """Move a received message's entry to the dead-letter stream, with why; settle it.

        The dead letter keeps the entry's original bytes, so it can be replayed as it was,
        with ``reason``, ``error`` and each of ``details`` (as text) as fields.

        Raises:
            LeaseLost: This consumer no longer holds the entry; nothing was moved.
            ChannelUnavailable: Redis could not be reached within the retries.
            ValueError: ``message`` was not received from this channel.
        """
        lease = self._lease_of(message)
        extra = {f"detail:{k}".encode(): str(v).encode() for k, v in (details or {}).items()}
        status = await self._move_to_dead_letters(lease, reason, error, extra)
        if status != 1:
            raise LeaseLost(
                f"entry {lease.entry.decode()} of {self.name!r} is no longer held by "
                f"{self.consumer!r}; it was not dead-lettered here"
            )
        await _settle(message)

    async def _move_to_dead_letters(
        self, lease: _Lease, reason: str, error: str, fields: dict[bytes, bytes]
    ) -> int:
        record: list[Any] = [
            "m", lease.data, "reason", reason, "error", error, "entry", lease.entry,
            "deliveries", lease.deliveries, "consumer", self.consumer, "time", _now_text(),
        ]  # fmt: skip
        for field, value in fields.items():
            if field.startswith(b"detail:"):
                record += (field, value)
            elif field != b"m":
                record += (b"field:" + field, value)
        keys = self._keys
        tries = 0

        async def move() -> int:
            nonlocal tries
            tries += 1
            status: int = await self._scripts.dead_letter(
                keys=[keys.stream, keys.dead, keys.stats],
                args=[self.group, self.consumer, lease.entry, lease.deliveries,
                      self._settings.dead_maxlen, *record],
            )  # fmt: skip
            return status

        status = await with_retries(
            move, retry=self._retry, what=f"dead-letter on {self.name!r}", error=ChannelUnavailable
        )
        self._held.pop(lease.entry, None)
        return 1 if status == 0 and tries > 1 else int(status)

    async def renew_leases(self) -> int:
        """Reset the idle time of every entry this consumer holds; return how many.

        A worker that keeps a message longer than ``visibility_timeout`` calls this (a
        distributed graph does, every third of it) so the entry is not reclaimed while it
        is still being worked on. Entries lost already are marked: their ack will raise
        :class:`~spark_nodes.errors.LeaseLost`.

        Raises:
            ChannelUnavailable: Redis could not be reached within the retries.
        """
        leases = list(self._held.values())
        if not leases:
            return 0
        args: list[Any] = [self.group, self.consumer, _lease_words(leases)]
        statuses = await with_retries(
            lambda: self._scripts.renew(keys=[self._keys.stream], args=args),
            retry=self._retry, what=f"renew leases on {self.name!r}", error=ChannelUnavailable,
        )  # fmt: skip
        renewed = 0
        for lease, status in zip(leases, statuses, strict=True):
            if status == 1:
                renewed += 1
            else:
                lease.lost = True
                self._held.pop(lease.entry, None)
        return renewed

    async def release_buffered(self) -> int:
        """Give back the buffered messages (received from Redis, not handed out yet).

        They become reclaimable by other consumers at once, and their delivery counts go
        back to what they were, unless ``receive`` handed them out before (a worker put
        back the message it was cancelled on: that delivery counts, so a message that
        always outlasts the grace period still reaches ``max_deliveries``). A worker
        that stops calls this, so its prefetched entries do not wait out the visibility
        timeout.

        Returns:
            How many entries were released.

        Raises:
            ChannelUnavailable: Redis could not be reached within the retries; the entries
                stay held (others reclaim them after the visibility timeout).
        """
        leases = [self._lease_of(m) for m in self._buffer if m._ack is not None]
        if not leases:
            return 0
        # Local wake-ups stay: a loop blocked in receive() is waiting for one.
        kept = [message for message in self._buffer if message._ack is None]
        self._buffer.clear()
        self._buffer.extend(kept)
        args: list[Any] = [
            self.group,
            self.consumer,
            self._settings.visibility_ms,
            b"".join(
                b"%s %d %d " % (lease.entry, lease.deliveries, not lease.handed_out)
                for lease in leases
            ),
        ]
        for lease in leases:
            self._held.pop(lease.entry, None)
        released: int = await with_retries(
            lambda: self._scripts.release(keys=[self._keys.stream], args=args),
            retry=self._retry, what=f"release on {self.name!r}", error=ChannelUnavailable,
        )  # fmt: skip
        return released

    def _lease_of(self, message: ChannelMessage) -> _Lease:
        ack = message._ack
        if isinstance(ack, _OnceAck):
            ack = ack.callback
        if not isinstance(ack, _Lease) or ack.channel is not self:
            raise ValueError(f"message {message.id} was not received from {self.name!r}")
        return ack

    # -- the graph runtime's hooks ------------------------------------------------------------

    _transactional = True

    def _stages_for(self, target: BaseChannel) -> bool:
        # One script may touch keys of one Cluster slot only: same client, same hash tag.
        return (
            isinstance(target, RedisChannel)
            and target._redis is self._redis
            and not target._closed
            and _hash_tag(target.key) == _hash_tag(self.key)
        )

    async def _commit(
        self,
        message: ChannelMessage,
        sends: list[tuple[BaseChannel, ChannelMessage]],
        result: bytes | None = None,
    ) -> None:
        """Send ``sends`` (RedisChannels :meth:`_stages_for` accepts) and ack ``message``.

        One script does both, and stores ``result`` as the node's latest output if this
        is a graph's mailbox, after checking this consumer still holds the entry: a
        worker that lost its lease forwards nothing and stores nothing.

        Raises:
            LeaseLost: The lease was lost; nothing was sent or acked.
            MessageEncodeError: An output is not plain data; nothing was sent or acked.
            MessageTooLarge: An output is too large for its target; ditto.
            ChannelUnavailable: Redis could not be reached within the retries.
        """
        lease = self._lease_of(message)
        keys = self._keys
        result_key = self._result_key
        if result is None or result_key is None:
            result_key, result = keys.stats, b""  # a slot-mate stands in for the result key
        script_keys = [keys.stream, keys.stats, result_key]
        args: list[Any] = [self.group, self.consumer, lease.entry, lease.deliveries, result]
        targets: list[RedisChannel] = []
        for target, output in sends:
            assert isinstance(target, RedisChannel)
            args.append(target._encode(output))
            script_keys += (target.key, target._keys.stats)
            targets.append(target)
        tries = 0

        async def commit() -> int:
            nonlocal tries
            tries += 1
            status: int = await self._scripts.commit(keys=script_keys, args=args)
            return status

        status = await with_retries(
            commit, retry=self._retry, what=f"forward from {self.name!r}",
            error=ChannelUnavailable,
        )  # fmt: skip
        self._held.pop(lease.entry, None)
        if status == 0 and tries > 1:
            status = 1  # an earlier try landed
        if status != 1:
            lease.lost = True
            raise LeaseLost(
                f"entry {lease.entry.decode()} of {self.name!r} is no longer held by "
                f"{self.consumer!r}: its outputs were not forwarded and it was not acked"
            )
        for target, (_, output) in zip(targets, sends, strict=True):
            target._sent += 1
            if target._observers:
                await target._notify(output, "send")
        await _settle(message)

    async def _keep_dead_letter(self, message: ChannelMessage, record: dict[str, Any]) -> bool:
        details = {k: v for k, v in record.items() if k not in {"phase", "error"}}
        await self.dead_letter(
            message,
            reason=str(record.get("phase", "")),
            error=str(record.get("error", "")),
            details=details,
        )
        return True

    def _wake(self, message: ChannelMessage) -> None:
        if self._closed:
            raise ChannelClosed(f"channel {self.name!r} is closed")
        self._buffer.append(message)

    def _requeue_front(self, message: ChannelMessage) -> bool:
        self._buffer.appendleft(message)
        self._received -= 1
        return True

    def _watch_remote_close(self, epoch: int, on_idle: Callable[[], Awaitable[None]]) -> None:
        """Treat the mailbox as closed once its ``:closed`` key holds ``epoch`` or more.

        ``on_idle`` is awaited after every read that found nothing new.
        """
        self._close_epoch = epoch
        self._remote_closed = False
        self._on_idle = on_idle

    # -- closing ----------------------------------------------------------------------------

    def close(self) -> None:
        """Refuse new sends; receivers get the buffered messages, then ChannelClosed.

        Entries held but not handed out stay pending in Redis and are redelivered (to this
        consumer name after a restart, or to others after the visibility timeout).
        Idempotent.
        """
        self._closed = True

    async def aclose(self) -> None:
        """Close; write queued sends and acks; give back the buffer; close an own client.

        Messages prefetched and not received yet are given back (see
        :meth:`release_buffered`); the client is closed if the channel made it.

        Raises:
            ChannelUnavailable: Queued sends could not be written; the client is closed
                anyway.
        """
        self.close()
        try:
            await self._outbox.flush()
            await self._acks.flush()
            if any(message._ack is not None for message in self._buffer):
                with contextlib.suppress(ChannelUnavailable):  # else reclaimed after a timeout
                    await self.release_buffered()
        finally:
            if self._owns_client:
                await self._redis.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- statistics ---------------------------------------------------------------------------

    def statistics(self) -> ChannelStatistics:
        """This channel object's counts; :meth:`inspect` reads the shared stream's."""
        depth = len(self._buffer)
        return ChannelStatistics(
            name=self.name,
            depth=depth,
            peak_depth=self._peak,
            maxsize=0,
            waiting_senders=self._waiting_senders,
            waiting_receivers=self._waiting_receivers,
            sent=self._sent,
            received=self._received,
            closed=self._closed,
            observer_errors=self._observer_errors,
        )

    async def inspect(self) -> MailboxInfo:
        """Read the shared mailbox in Redis: length, groups, consumers, dead letters, counters.

        What every process sees, unlike :meth:`statistics` (this object's own counts).
        See :func:`~spark_nodes.channels.inspection.inspect_mailbox`.

        Raises:
            ChannelUnavailable: Redis could not be reached within the retries.
        """
        # Imported here: the inspection module reads this module's key layout.
        from spark_nodes.channels.inspection import inspect_mailbox  # noqa: PLC0415

        return await inspect_mailbox(self._redis, self.key, retry=self._retry)

    def __repr__(self) -> str:
        return (
            f"<RedisChannel name={self.name!r} key={self.key!r} consumer={self.consumer!r} "
            f"buffered={len(self._buffer)} closed={self._closed}>"
        )


class _Scripts:
    """The channel's Lua scripts, registered on its client (each loaded once per server).

    Called directly, a script loads itself when the server does not know it. In a
    pipeline, redis-py would check all its scripts first, in an extra round trip per
    pipeline; so pipelines queue ``EVALSHA`` themselves (:meth:`queue`) after
    :meth:`load`, which a server restart (seen as a connection error) makes necessary
    again.
    """

    __slots__ = (
        "ack",
        "claim",
        "commit",
        "dead_letter",
        "loaded",
        "move_due",
        "release",
        "renew",
        "replay",
        "send",
    )

    def __init__(self, redis: Redis) -> None:
        self.send = redis.register_script(scripts.SEND)
        self.ack = redis.register_script(scripts.ACK)
        self.commit = redis.register_script(scripts.COMMIT)
        self.dead_letter = redis.register_script(scripts.DEAD_LETTER)
        self.claim = redis.register_script(scripts.CLAIM)
        self.renew = redis.register_script(scripts.RENEW)
        self.move_due = redis.register_script(scripts.MOVE_DUE)
        self.replay = redis.register_script(scripts.REPLAY)
        self.release = redis.register_script(scripts.RELEASE)
        self.loaded = False

    async def load(self, redis: Redis) -> None:
        """Make sure the server knows every script (one round trip)."""
        async with redis.pipeline(transaction=False) as pipe:
            for script in (self.ack, self.claim, self.move_due):
                pipe.script_load(script.script)
            await pipe.execute()
        self.loaded = True

    @staticmethod
    def queue(pipe: Pipeline, script: AsyncScript, keys: list[Any], args: list[Any]) -> None:
        """Queue ``script`` in ``pipe`` by its sha (see the class docstring)."""
        pipe.evalsha(script.sha, len(keys), *keys, *args)


def _entries_of(reply: Any) -> list[tuple[bytes, dict[bytes, bytes] | None]]:
    """The (id, fields) pairs of an XREADGROUP reply (RESP2 or RESP3)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        streams = list(reply.values())
        return [(entry, fields) for stream in streams for entry, fields in stream[0]]
    return [(entry, fields) for _name, stream_entries in reply for entry, fields in stream_entries]


def _decode(data: bytes, lease: _Lease) -> ChannelMessage:
    """``decode(data, ack=lease)``, with the common case (a well-formed envelope) inlined."""
    try:
        envelope = _unpackb(data)
    except Exception:  # noqa: BLE001 - decode() says what is wrong with it
        return decode(data, ack=lease)
    if (
        envelope.__class__ is not dict
        or len(envelope) != _ENVELOPE_SIZE
        or envelope.get("v") != ENVELOPE_VERSION
    ):
        return decode(data, ack=lease)
    ident = envelope.get("id")
    metadata = envelope.get("metadata")
    shutdown = envelope.get("shutdown")
    if not (
        ident.__class__ is str
        and ident
        and metadata.__class__ is dict
        and shutdown.__class__ is bool
        and "payload" in envelope
    ):
        return decode(data, ack=lease)
    message: ChannelMessage = _new_object(ChannelMessage)
    message.payload = envelope["payload"]
    message._metadata = metadata
    message._ack = lease
    message.is_shutdown = shutdown
    message._id = ident
    message._pending = None
    return message


async def _settle(message: ChannelMessage) -> None:
    """Mark a message acked another way (a batch ack, a commit); tell watching observers."""
    ack = message._ack
    if ack.__class__ is _OnceAck:
        assert isinstance(ack, _OnceAck)
        await ack.settled()
    else:
        assert ack is not None
        message._ack = _OnceAck.already_done(ack)


def _id_order(entry: bytes) -> tuple[int, int]:
    milliseconds, _, sequence = entry.partition(b"-")
    return int(milliseconds), int(sequence)


def _lease_words(leases: Iterable[_Lease]) -> bytes:
    """``b"id deliveries id deliveries ..."``: one script argument for many leases."""
    return b"".join(b"%s %d " % (lease.entry, lease.deliveries) for lease in leases)


def _hash_tag(key: str) -> str:
    start = key.find("{")
    end = key.find("}", start + 1)
    return key[start + 1 : end] if start != -1 and end > start + 1 else key


def _now_text() -> str:
    return f"{time.time():.3f}"
