"""``RedisChannel``: a durable mailbox on a Redis Stream, shared by many processes.

Delivery is at least once: an entry stays pending until it is acked, dead-lettered, or
reclaimed by another consumer after ``visibility_timeout`` (with its delivery count up by
one). See ``docs/redis.md`` for the guarantees, stated precisely, and
:mod:`spark_nodes.channels.redis._layout` for the keys.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Self

import structlog
from redis.commands.core import AsyncScript

from spark_nodes._redis_client import ConnectionRetry, RedisClient, check_client, open_client
from spark_nodes.channels.base import BaseChannel, ChannelStatistics, Observer
from spark_nodes.channels.mailbox import Commit
from spark_nodes.channels.message import ChannelMessage, OnceAck
from spark_nodes.channels.redis._layout import (
    RELEASED_CONSUMER,
    MailboxKeys,
    Settings,
    default_consumer_name,
    hash_tag,
    stream_key,
)
from spark_nodes.channels.redis._leases import (
    Lease,
    LeaseBook,
    lease_or_none,
    settle,
    settle_nowait,
)
from spark_nodes.channels.redis._outbox import Outbox
from spark_nodes.channels.redis._reader import Reader
from spark_nodes.channels.redis._scripts import Scripts
from spark_nodes.errors import ChannelClosed, ChannelUnavailable

if TYPE_CHECKING:
    from spark_nodes.channels.inspection import MailboxInfo

__all__ = ["RedisChannel"]

_log = structlog.get_logger("spark_nodes")


def _check_names(channel_name: object, namespace: object, group: object, consumer: object) -> str:
    """Return ``channel_name``, having checked it and the other names."""
    if not isinstance(channel_name, str) or not channel_name:
        raise TypeError(f"channel_name must be a non-empty str, not {channel_name!r}")
    for label, text in (("namespace", namespace), ("group", group)):
        if not isinstance(text, str) or not text:
            raise TypeError(f"{label} must be a non-empty str, not {text!r}")
    if consumer is not None and (not isinstance(consumer, str) or not consumer):
        raise TypeError(f"consumer must be a non-empty str, not {consumer!r}")
    if consumer == RELEASED_CONSUMER:
        raise ValueError(
            f"consumer name {RELEASED_CONSUMER!r} is reserved (it holds given-back entries); "
            f"choose another"
        )
    return channel_name


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
    and ``delivery_count`` (and ``replayed``, for a dead letter put back).

    ``close()`` refuses new sends here and ends receiving once the local buffer is
    delivered; it does not touch Redis. :meth:`aclose` also writes queued sends, gives
    back prefetched entries, deletes this consumer from the group if it holds nothing
    (:meth:`remove_consumer`) and closes the client if the channel made it. ``async with
    RedisChannel(...)`` does both. A consumer left behind (its process died, or exited
    holding entries) is deleted by any live consumer of the group once its entries were
    reclaimed and it has been idle for ``consumer_max_idle``.

    It is a durable mailbox (:class:`~spark_nodes.channels.mailbox.DurableMailbox`): a worker
    loop takes what is prefetched, handles it, and settles the whole batch (its outputs to
    other mailboxes of the same hash tag, its acks, the node's result) in one fenced
    :meth:`commit`.

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
        consumer: This receiver's consumer name; ``{host}-{pid}-{token}-{n}`` when omitted
            (unique per channel object). Give a stable one (a pod name) to have a
            restarted worker finish its own entries first; two live channel objects of
            one mailbox must never share one (they would take each other's entries).
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
        result_key: Where a commit keeps the node's latest output (a graph's mailbox sets
            it; it must share the mailbox's hash tag); ``None`` keeps none.
        consumer_max_idle: Seconds after which a consumer of the group that holds no
            entry and has not read is deleted by this one (checked every half of it, at
            most every 60 s, while this one receives); ``None`` deletes none. A live
            consumer reads every ``block``, so only a dead or paused one is deleted (a
            paused one comes back with its next read).

    Raises:
        TypeError: Neither or both of ``redis_url`` and ``redis`` are given, or
            ``channel_name`` is missing.
        ValueError: A number is out of range, or ``consumer`` is the reserved name
            ``"(released)"``.
    """

    __slots__ = (
        "_leases",
        "_outbox",
        "_owns_client",
        "_reader",
        "_received",
        "_redis",
        "_retry",
        "_scripts",
        "_settings",
        "_waiting_receivers",
        "_waiting_senders",
        "consumer",
        "group",
        "key",
        "keys",
        "result_key",
    )

    def __init__(
        self,
        redis_url: str | None = None,
        channel_name: str | None = None,
        *,
        redis: RedisClient | None = None,
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
        result_key: str | None = None,
        consumer_max_idle: float | None = 3600.0,
    ) -> None:
        if (redis_url is None) == (redis is None):
            raise TypeError("give RedisChannel either redis_url='redis://...' or redis=<client>")
        channel_name = _check_names(channel_name, namespace, group, consumer)
        settings = Settings.check(
            prefetch=prefetch,
            block=block,
            visibility_timeout=visibility_timeout,
            max_deliveries=max_deliveries,
            max_message_bytes=max_message_bytes,
            dead_letter_maxlen=dead_letter_maxlen,
            idempotency_window=idempotency_window,
            max_pending_sends=max_pending_sends,
            send_batch=send_batch,
            consumer_max_idle=consumer_max_idle,
        )
        super().__init__(name=name or channel_name, observers=observers)
        self._owns_client = redis is None
        if redis is None:
            assert redis_url is not None
            redis = open_client(redis_url)
        else:
            check_client(redis)
        self._redis: RedisClient = redis
        self.key = stream_key(namespace, channel_name)
        """The stream's key."""
        self.keys = MailboxKeys.of(self.key)
        """All the mailbox's keys."""
        if result_key is not None and hash_tag(result_key) != hash_tag(self.key):
            raise ValueError(
                f"result_key {result_key!r} must share the mailbox's hash tag "
                f"{{{hash_tag(self.key)}}}: one script writes both"
            )
        self.result_key = result_key
        """Where commits keep the node's latest output, or ``None``."""
        self.group = group
        """The consumer group."""
        self.consumer = consumer or default_consumer_name()
        """This channel's consumer name."""
        self._scripts = Scripts(redis)
        self._settings = settings
        self._retry = retry or ConnectionRetry()
        self._outbox = Outbox(
            name=self.name, keys=self.keys, scripts=self._scripts, settings=settings,
            retry=self._retry, written=self._sent_nowait,
        )  # fmt: skip
        self._leases = LeaseBook(
            name=self.name, redis=redis, keys=self.keys, group=group, consumer=self.consumer,
            scripts=self._scripts, settings=settings, retry=self._retry,
            read_along=self._may_read_along, accept=self._accept_read,
        )  # fmt: skip
        self._reader = Reader(
            channel=self, redis=redis, keys=self.keys, group=group, consumer=self.consumer,
            scripts=self._scripts, settings=settings, retry=self._retry, leases=self._leases,
        )  # fmt: skip
        self._received = 0
        self._waiting_senders = self._waiting_receivers = 0

    @property
    def client(self) -> RedisClient:
        """The redis-py client the channel talks through."""
        return self._redis

    @property
    def visibility_timeout(self) -> float:
        """Seconds an entry may stay unsettled before other consumers may reclaim it."""
        return self._settings.visibility_ms / 1000

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
        self._refuse_if_closed()
        item = self._outbox.prepare(message, delay, nowait=False)
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
        self._refuse_if_closed()
        self._outbox.queue_nowait(self._outbox.prepare(message, None, nowait=True))

    async def flush(self) -> None:
        """Write every queued send now.

        Raises:
            ChannelUnavailable: Redis could not be reached for some of them; the others
                were written.
        """
        await self._outbox.flush()

    def encode(self, message: ChannelMessage, *, check: bool = True) -> bytes:
        """The envelope this channel would write for ``message``.

        ``check``: see :func:`~spark_nodes.channels.codec.encode`.

        Raises:
            MessageEncodeError: The message is not plain data.
            MessageTooLarge: The encoded message exceeds ``max_message_bytes``.
        """
        return self._outbox.encode(message, check=check)

    def record_sent_nowait(self, count: int) -> None:
        """Count ``count`` messages as sent here (see :meth:`record_sent`); no observers."""
        self._outbox.sent += count

    async def record_sent(self, messages: Sequence[ChannelMessage]) -> None:
        """Count ``messages`` as sent here and tell the observers.

        For messages another channel wrote into this stream (a commit of the mailbox
        they were forwarded from), so that this channel's figures and observers see them.
        """
        self._outbox.sent += len(messages)
        if self._observers:
            for message in messages:
                await self._notify(message, "send")

    async def _sent_nowait(self, messages: list[ChannelMessage]) -> None:
        if self._observers:
            for message in messages:
                await self._notify(message, "send")

    def _refuse_if_closed(self) -> None:
        if self._closed:
            raise ChannelClosed(f"channel {self.name!r} is closed; it accepts no more messages")

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
        buffer = self._reader.buffer
        self._reader.drop_stale()
        while not buffer:
            await self._fill()
        message = buffer.popleft()
        self._received += 1
        _hand_out(message)
        if message.deferred is not None or self._observers:
            resume = self._observe_receive(message)
            if resume is not None:
                try:
                    await self._finish_receive(message, resume)
                except BaseException:
                    self.give_back([message], started=1)
                    raise
        return message

    async def _fill(self) -> None:
        if self._closed or self._reader.remote_closed:
            raise ChannelClosed(f"channel {self.name!r} is closed and drained")
        self._waiting_receivers += 1
        try:
            await self._reader.fill()
        finally:
            self._waiting_receivers -= 1

    def take_nowait(self, limit: int) -> list[ChannelMessage]:
        """Take up to ``limit`` buffered messages without a round trip; ``[]`` if none.

        With observers, ``[]``: :meth:`take` runs them. (Messages read from Redis carry
        no deferred observer work: nothing sent them through a channel of this process.)
        """
        buffer = self._reader.buffer
        if not buffer or self._observers:
            return []
        self._reader.drop_stale()
        if len(buffer) <= limit:
            taken = list(buffer)
            buffer.clear()
        else:
            pop = buffer.popleft
            taken = [pop() for _ in range(limit)]
        for message in taken:
            lease = message.raw_ack
            if lease.__class__ is Lease:
                lease.handed_out = True
            else:
                _hand_out(message)  # a wrapped ack, or a local wake-up
        self._received += len(taken)
        return taken

    async def take(self, limit: int) -> list[ChannelMessage]:
        """Return between 1 and ``limit`` messages, waiting for the first.

        Takes what the local buffer holds (reading from Redis only if it is empty), so a
        consumer that handles messages in batches pays one round trip per batch.

        Raises:
            ChannelClosed: See :meth:`receive`.
            ChannelUnavailable: See :meth:`receive`.
        """
        buffer = self._reader.buffer
        while not buffer:
            await self._fill()
        taken = self.take_nowait(limit)  # (drops stale messages; receive() does too)
        if taken:
            return taken
        taken = [await self.receive()]
        try:
            while buffer and len(taken) < limit:
                taken.append(await self.receive())
        except BaseException:
            self.give_back(taken)
            raise
        return taken

    async def receive_batch(self, max_messages: int = 100) -> list[ChannelMessage]:
        """Return between 1 and ``max_messages`` messages, waiting for the first.

        :meth:`take` by its older name; pair it with :meth:`ack_batch`.

        Raises:
            ChannelClosed: See :meth:`receive`.
            ChannelUnavailable: See :meth:`receive`.
            ValueError: ``max_messages`` < 1.
        """
        if max_messages < 1:
            raise ValueError(f"max_messages must be >= 1, not {max_messages}")
        return await self.take(max_messages)

    def give_back(self, messages: Sequence[ChannelMessage], *, started: int = 0) -> None:
        """Put taken messages back at the head of the local buffer, in their order.

        Their leases stay held. The first ``started`` were being handled: their delivery
        counts; the others' does not, if they are released (see :meth:`release_buffered`).
        """
        for message in messages[started:]:
            lease = lease_or_none(message)
            if lease is not None:
                lease.handed_out = False
        self._reader.buffer.extendleft(reversed(messages))
        self._received -= len(messages)

    def redelivered(self, message: ChannelMessage) -> bool:
        """Whether ``message`` was delivered before (to a consumer that never settled it).

        Raises:
            ValueError: ``message`` was not received from this channel.
        """
        lease = message.raw_ack
        if lease.__class__ is not Lease or lease.channel is not self:
            lease = self.lease_of(message)  # the worker loop's case is the first, the cheap one
        return lease.deliveries > 1

    def offer(self, message: ChannelMessage) -> bool:
        """Always False: a send to Redis is a round trip (use :meth:`send` or a commit)."""
        return False

    def offer_many(self, messages: list[ChannelMessage]) -> int:
        """Always 0 (see :meth:`offer`)."""
        return 0

    def empty(self) -> bool:
        """Whether the local buffer is empty (the stream may hold more; see :meth:`inspect`)."""
        return not self._reader.buffer

    def qsize(self) -> int:
        """Messages in the local buffer, received from Redis and not handed out yet."""
        return len(self._reader.buffer)

    def _may_read_along(self) -> bool:
        return self._reader.may_read_along(self._closed)

    async def _accept_read(self, reply: Any) -> None:
        await self._reader.accept_read(reply)

    # -- settling ---------------------------------------------------------------------------

    async def ack_batch(self, messages: Sequence[ChannelMessage]) -> int:
        """Ack received messages in one round trip; return how many were acked.

        Each ack is fenced like ``message.ack()``: a message whose lease was lost is not
        acked (``message.acked`` stays False; it is handled where it was reclaimed).

        Raises:
            ChannelUnavailable: Redis could not be reached within the retries; nothing
                was acked for sure (a later ack or redelivery settles them).
            ValueError: A message was not received from this channel.
        """
        leases = [self.lease_of(message) for message in messages]
        statuses = await self._leases.ack(leases)
        acked = 0
        for message, status in zip(messages, statuses, strict=True):
            if status == 1:
                acked += 1
                await settle(message)
        return acked

    async def ack_leases(self, leases: list[Lease]) -> None:
        """Ack the entries of ``leases`` (fenced); a message's ack calls this.

        Raises:
            LeaseLost: The first lease was no longer held by this consumer.
            ChannelUnavailable: Redis could not be reached within the retries.
        """
        statuses = await self._leases.ack(leases)
        if statuses and statuses[0] != 1:
            raise self._leases.lost_error(
                leases[0], "the ack was rejected and it will be handled there"
            )

    def commits_to(self, target: BaseChannel) -> bool:
        """Whether a send to ``target`` can be committed with our acks, in one script.

        One script may touch keys of one Cluster slot only: a RedisChannel on the same
        client with the same hash tag, still open.
        """
        return (
            isinstance(target, RedisChannel)
            and target._redis is self._redis
            and not target._closed
            and hash_tag(target.key) == hash_tag(self.key)
        )

    async def commit(self, batch: Commit) -> list[bool]:
        """Forward each message's outputs and ack it, the whole batch in one script call.

        Each message is judged on its own lease: one whose lease was lost forwards
        nothing, is not acked and reports False; so does one of ``batch.released`` whose
        releasing message did not commit (it is given back at once, for any consumer to
        take); the others commit. The batch's result
        is kept at ``result_key`` if the message it came from committed. Reads the next
        entries in the same round trip when the buffer is empty.

        Returns:
            Whether each message committed, in order.

        An output whose bytes would not read back (a dict with int keys) is not refused
        here but by the target's reader, which dead-letters it (its bytes kept).

        Raises:
            MessageEncodeError: An output is not plain data; nothing was committed.
            MessageTooLarge: An output is too large for its target; nothing was committed.
            ChannelUnavailable: Redis could not be reached within the retries; nothing
                was committed for sure, and committing the batch again is safe.
            ValueError: A message was not received from this channel, or a target is not
                one :meth:`commits_to` accepts.
        """
        if not batch.messages:
            return []
        leases = [
            ack if ack.__class__ is Lease and ack.channel is self else self.lease_of(message)
            for message in batch.messages
            for ack in (message.raw_ack,)
        ]
        targets: list[RedisChannel] = []
        numbers: dict[int, int] = {}
        outputs: list[int] = []
        target_of: list[int] = []
        envelopes: list[bytes] = []
        for sends in batch.sends:
            outputs.append(len(sends))
            for target, output in sends:
                number = numbers.get(id(target))
                if number is None:
                    if not self.commits_to(target):
                        raise ValueError(f"{self.name!r} cannot commit sends to {target!r}")
                    assert isinstance(target, RedisChannel)
                    targets.append(target)
                    number = numbers[id(target)] = len(targets)
                target_of.append(number)
                # Unchecked (a decode less per output): a dict with int keys in an output is
                # refused by the target's reader, dead-lettered there with its bytes.
                envelopes.append(targets[number - 1].encode(output, check=False))
        committed = await self._leases.commit(
            leases, outputs=outputs, target_of=target_of, envelopes=envelopes,
            targets=[t.keys for t in targets], result=batch.result, result_key=self.result_key,
            released=batch.released,
        )  # fmt: skip
        await self._after_commit(batch, committed, targets, target_of)
        if batch.released:
            await self._give_back_stranded(batch.released, leases, committed)
        return committed

    async def _give_back_stranded(
        self, released: frozenset[int], leases: list[Lease], committed: list[bool]
    ) -> None:
        """Give back at once the released messages whose releaser did not commit.

        Still ours, they would wait out the visibility timeout; given back, another read
        takes them now (the window is built again where its closing message went).
        """
        stranded = [leases[index] for index in sorted(released) if not committed[index]]
        if not stranded:
            return
        try:
            await self._leases.release(stranded)
        except ChannelUnavailable:  # they are reclaimed after the visibility timeout
            _log.warning("could not give back the messages of an uncommitted window",
                         channel=self.name, messages=len(stranded))  # fmt: skip

    async def _after_commit(
        self,
        batch: Commit,
        committed: list[bool],
        targets: list[RedisChannel],
        target_of: list[int],
    ) -> None:
        """Settle the committed messages here; count (and observe) their sends there."""
        sent = [0] * len(targets)
        position = 0
        for done, message, sends in zip(committed, batch.messages, batch.sends, strict=True):
            if done:
                for number in target_of[position : position + len(sends)]:
                    sent[number - 1] += 1
                if not settle_nowait(message):
                    await settle(message)
            position += len(sends)
        for number, target in enumerate(targets):
            if target.observers:
                outputs = [
                    output
                    for done, sends in zip(committed, batch.sends, strict=True)
                    if done
                    for channel, output in sends
                    if channel is target
                ]
                await target.record_sent(outputs)
            else:
                target.record_sent_nowait(sent[number])

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
        lease = self.lease_of(message)
        extra = {f"detail:{k}".encode(): str(v).encode() for k, v in (details or {}).items()}
        status = await self._leases.dead_letter(lease, reason, error, extra)
        if status != 1:
            raise self._leases.lost_error(lease, "it was not dead-lettered here")
        await settle(message)

    async def settle_with(
        self,
        message: ChannelMessage,
        script: AsyncScript,
        *,
        keys: Sequence[Any] = (),
        args: Sequence[Any] = (),
        what: str,
    ) -> int:
        """Run a Lua script of your own that settles a message this consumer holds.

        For backends that settle a message together with state of their own (a
        distributed graph records a shutdown this way). The script is called with
        ``KEYS = [stream, stats, *keys]`` and ``ARGV = [group, consumer, entry id,
        deliveries, *args]``; it must check the lease (the entry is pending for that
        consumer at that delivery count), return -1 without touching anything if it is
        not, and else settle the entry (XACK it). The message counts as settled unless
        -1 comes back.

        Returns:
            What the script returned.

        Raises:
            ChannelUnavailable: Redis could not be reached within the retries.
            ValueError: ``message`` was not received from this channel.
        """
        lease = self.lease_of(message)
        status = await self._leases.run_settling(lease, script, list(keys), list(args), what)
        if status != -1:
            await settle(message)
        return status

    async def renew_leases(self) -> int:
        """Reset the idle time of every entry this consumer holds; return how many.

        A worker that keeps a message longer than ``visibility_timeout`` calls this (a
        distributed graph does, every third of it) so the entry is not reclaimed while it
        is still being worked on. Entries lost already are marked: their ack will raise
        :class:`~spark_nodes.errors.LeaseLost`.

        Raises:
            ChannelUnavailable: Redis could not be reached within the retries.
        """
        return await self._leases.renew()

    async def publish_held(
        self, messages: Iterable[ChannelMessage], *, refresh: bool = False
    ) -> None:
        """Tell Redis that this consumer holds ``messages`` on purpose, and no others.

        A window or a join keeps messages unacked, pending, across calls: in Redis they
        look like messages being worked on. :meth:`Graph.wait_idle` counts an entry
        published here as idle while its lease is ours and for ``visibility_timeout``
        after the call (by the server's clock), as it counts held messages in memory. A
        distributed graph calls this when a node's loops are idle and its holdings may
        have changed, and with ``refresh`` after each lease renewal (new deadlines); it
        writes only what changed. Messages not received from this channel (no lease here)
        and leases lost already are left out.

        Raises:
            ChannelUnavailable: Redis could not be reached within the retries.
        """
        leases = [lease_or_none(message) for message in messages]
        await self._leases.publish_held(
            [lease for lease in leases if lease is not None and lease.channel is self],
            refresh=refresh,
        )

    async def release_buffered(self) -> int:
        """Give back the buffered messages (received from Redis, not handed out yet).

        They become reclaimable by other consumers at once (they are parked on the
        consumer :data:`RELEASED_CONSUMER`, so this one no longer holds them and may
        leave the group), and their delivery counts go back to what they were, unless a
        handler took them before (a worker gave back the message it was cancelled on:
        that delivery counts, so a message that always outlasts the grace period still
        reaches ``max_deliveries``). A worker that stops calls this, so its prefetched
        entries do not wait out the visibility timeout.

        Returns:
            How many entries were released.

        Raises:
            ChannelUnavailable: Redis could not be reached within the retries; the entries
                stay held (others reclaim them after the visibility timeout).
        """
        buffer = self._reader.buffer
        leases = [self.lease_of(m) for m in buffer if m.raw_ack is not None]
        if not leases:
            return 0
        # Local wake-ups stay: a loop blocked in receive() is waiting for one.
        kept = [message for message in buffer if message.raw_ack is None]
        buffer.clear()
        buffer.extend(kept)
        return await self._leases.release(leases)

    async def remove_consumer(self) -> bool:
        """Delete this channel's consumer from the group, unless it holds entries.

        Atomic: a consumer that holds entries (handed out and not settled; given-back
        ones do not count, see :meth:`release_buffered`) is kept, since deleting it
        would drop them; they are reclaimed by others after ``visibility_timeout`` and
        the consumer is deleted later by a live one's sweep (see ``consumer_max_idle``).
        Receiving again makes the consumer anew. :meth:`aclose` calls this.

        Returns:
            Whether the consumer is gone (or never existed).

        Raises:
            ChannelUnavailable: Redis could not be reached within the retries.
        """
        return await self._leases.remove_consumer()

    def lease_of(self, message: ChannelMessage) -> Lease:
        """The lease of a message received from this channel.

        Raises:
            ValueError: ``message`` was not received from this channel.
        """
        ack = message.raw_ack
        if isinstance(ack, OnceAck):
            ack = ack.callback
        if not isinstance(ack, Lease) or ack.channel is not self:
            raise ValueError(f"message {message.id} was not received from {self.name!r}")
        return ack

    # -- a distributed graph's close ----------------------------------------------------------

    def watch_remote_close(self, epoch: int, on_idle: Callable[[], Awaitable[None]]) -> None:
        """Treat the mailbox as closed once its ``closed`` key holds ``epoch`` or more.

        A distributed graph closes a node's mailbox for every consumer this way, run by
        run. ``on_idle`` is awaited after every read that found nothing new (a moment to
        check whether the node can finish).
        """
        self._reader.watch_remote_close(epoch, on_idle)

    def mark_closed_remotely(self) -> None:
        """Stop reading: the distributed graph closed this mailbox (for this run)."""
        self._reader.remote_closed = True

    # -- closing ----------------------------------------------------------------------------

    def close(self) -> None:
        """Refuse new sends; receivers get the buffered messages, then ChannelClosed.

        Entries held but not handed out stay pending in Redis and are redelivered (to this
        consumer name after a restart, or to others after the visibility timeout).
        Idempotent.
        """
        self._closed = True

    async def aclose(self) -> None:
        """Close; write queued sends and acks; give back the buffer; leave; close a client.

        Messages prefetched and not received yet are given back (see
        :meth:`release_buffered`), then this consumer is deleted from the group if it
        holds nothing more (see :meth:`remove_consumer`; failures to do either are
        logged); the client is closed if the channel made it.

        Raises:
            ChannelUnavailable: Queued sends could not be written; the client is closed
                anyway.
        """
        self.close()
        try:
            await self._outbox.flush()
            await self._leases.flush_acks()
            await self._reader.wait_fetched()  # what a read under way brings is given back too
            if await self._give_back_buffer():
                await self._leave_group()
        finally:
            if self._owns_client:
                await self._redis.aclose()

    async def _give_back_buffer(self) -> bool:
        """Release what is buffered, on close; whether nothing is left held for it."""
        if not any(message.raw_ack is not None for message in self._reader.buffer):
            return True
        try:
            await self.release_buffered()
        except ChannelUnavailable:
            _log.warning("could not give back prefetched entries on close; others "
                         "reclaim them after the visibility timeout",
                         channel=self.name, exc_info=True)  # fmt: skip
            return False
        return True

    async def _leave_group(self) -> None:
        """Delete our consumer on close if it holds nothing; log why it stays otherwise."""
        if not self._reader.joined:
            return  # never read: Redis has no consumer of ours
        try:
            gone = await self.remove_consumer()
        except ChannelUnavailable:
            _log.warning("could not remove the consumer on close; live consumers delete it "
                         "after consumer_max_idle", channel=self.name, consumer=self.consumer,
                         exc_info=True)  # fmt: skip
            return
        if not gone:
            _log.info("consumer kept on close: it holds entries, which others reclaim after "
                      "the visibility timeout", channel=self.name, consumer=self.consumer,
                      held=len(self._leases.held))  # fmt: skip

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- statistics ---------------------------------------------------------------------------

    def statistics(self) -> ChannelStatistics:
        """This channel object's counts; :meth:`inspect` reads the shared stream's."""
        reader = self._reader
        return ChannelStatistics(
            name=self.name,
            depth=len(reader.buffer),
            peak_depth=reader.peak,
            maxsize=0,
            waiting_senders=self._waiting_senders,
            waiting_receivers=self._waiting_receivers,
            sent=self._outbox.sent,
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
            f"buffered={len(self._reader.buffer)} closed={self._closed}>"
        )


def _hand_out(message: ChannelMessage) -> None:
    """Mark a message's lease as taken by a handler: its delivery counts from now on."""
    lease = lease_or_none(message)
    if lease is not None:
        lease.handed_out = True
