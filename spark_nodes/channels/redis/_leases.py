"""What a consumer holds of a Redis mailbox, and every way of settling it.

A *lease* is an entry pending for this consumer at one delivery count. Settling it (an ack,
a commit with outputs, a dead letter) is fenced: a script checks that the entry is still
pending for this consumer at that count, so a worker that stalled past the visibility
timeout, whose entry was reclaimed meanwhile, cannot settle it twice.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from spark_nodes._redis_client import ConnectionRetry, RedisClient, with_retries
from spark_nodes.channels._coalesce import Coalescer
from spark_nodes.channels.message import ChannelMessage, OnceAck
from spark_nodes.channels.redis._layout import RELEASED_CONSUMER, MailboxKeys, Settings
from spark_nodes.channels.redis._scripts import Scripts
from spark_nodes.errors import ChannelUnavailable, LeaseLost

if TYPE_CHECKING:
    from spark_nodes.channels.redis._channel import RedisChannel

__all__ = ["Lease", "LeaseBook", "lease_or_none", "settle", "settle_nowait"]

ReadAlong = Callable[[], bool]
"""Whether a settling call should read the next entries in the same round trip."""


class Lease:
    """An entry delivered to this consumer and not settled yet (buffered or being handled).

    It is also the received message's ack callback: a fenced XACK of the entry.

    Attributes:
        channel: The channel object (the consumer) holding it.
        entry: The stream entry id.
        deliveries: Its delivery count when this consumer got it.
        data: The entry's original envelope, kept for dead-lettering it as it was.
        handed_out: Set once a handler took it (its delivery then counts).
        since: ``time.monotonic()`` when it was last known to be ours: when it was read,
            or before its last successful renewal. Past ``visibility_timeout`` from then,
            others may have reclaimed it (a renewal could not reach Redis): it is stale.
        done: Set once the entry was settled here (acked, committed, dead-lettered): the
            message counts as acked, and acking it again does nothing.
    """

    __slots__ = ("channel", "data", "deliveries", "done", "entry", "handed_out", "since")

    def __init__(
        self, channel: RedisChannel, entry: bytes, deliveries: int, data: bytes, since: float
    ) -> None:
        self.channel = channel
        self.entry = entry
        self.deliveries = deliveries
        self.data = data
        self.since = since
        self.handed_out = False
        self.done = False

    async def __call__(self) -> None:
        if not self.done:
            await self.channel.ack_leases([self])
            self.done = True

    def __repr__(self) -> str:
        return f"<redis ack {self.channel.key} {self.entry.decode()}>"


class _PendingAck:
    """Acks one caller waits for; statuses come back in the same order."""

    __slots__ = ("done", "error", "leases", "statuses")

    def __init__(self, leases: list[Lease]) -> None:
        self.leases = leases
        self.statuses: list[int] = []
        self.done = False
        self.error: BaseException | None = None


class LeaseBook:
    """The leases one consumer holds, and the scripts that settle them.

    Args:
        name: The channel's name, for errors and logs.
        redis: The client.
        keys: The mailbox's keys.
        group: The consumer group.
        consumer: This consumer.
        scripts: The channel's scripts.
        settings: The channel's settings.
        retry: Retries when Redis cannot be reached.
        read_along: Whether a settling call may read the next entries too.
        accept: Awaited with what such a read returned.
    """

    __slots__ = (
        "_accept",
        "_acks",
        "_consumer",
        "_group",
        "_keys",
        "_name",
        "_published",
        "_read_along",
        "_redis",
        "_retry",
        "_scripts",
        "_settings",
        "held",
    )

    def __init__(
        self,
        *,
        name: str,
        redis: RedisClient,
        keys: MailboxKeys,
        group: str,
        consumer: str,
        scripts: Scripts,
        settings: Settings,
        retry: ConnectionRetry,
        read_along: ReadAlong,
        accept: Callable[[Any], Awaitable[None]],
    ) -> None:
        self._name = name
        self._redis = redis
        self._keys = keys
        self._group = group
        self._consumer = consumer
        self._scripts = scripts
        self._settings = settings
        self._retry = retry
        self._read_along = read_along
        self._accept = accept
        self._acks: Coalescer[_PendingAck] = Coalescer(self._write_acks, 512)
        self.held: dict[bytes, Lease] = {}
        """Leases by entry id: what this consumer got and has not settled."""
        self._published: dict[bytes, int] = {}  # what publish_held last wrote: deliveries

    # -- acks -------------------------------------------------------------------------------

    async def ack(self, leases: list[Lease]) -> list[int]:
        """Ack entries (fenced), sharing round trips with concurrent acks; return statuses.

        Statuses: 1 acked, 0 not pending any more, -1 the lease is someone else's.

        Raises:
            ChannelUnavailable: Redis could not be reached within the retries.
        """
        pending = _PendingAck(leases)
        self._acks.queue.append(pending)
        await self._acks.wait(pending)
        if pending.error is not None:
            raise pending.error
        return pending.statuses

    async def flush_acks(self) -> None:
        """Write queued acks now.

        Raises:
            ChannelUnavailable: Redis could not be reached within the retries.
        """
        await self._acks.flush()

    def lost_error(self, lease: Lease, what: str) -> LeaseLost:
        """The error for a settling call refused because ``lease`` was lost."""
        return LeaseLost(
            f"entry {lease.entry.decode()} of {self._name!r} is no longer held by "
            f"{self._consumer!r} (it was reclaimed after visibility_timeout, or "
            f"dead-lettered): {what}"
        )

    async def _write_acks(self, batch: list[_PendingAck]) -> None:
        leases = [lease for item in batch for lease in item.leases]
        args = [self._group, self._consumer, lease_words(leases), len(self.held) + len(leases)]
        keys = [self._keys.stream, self._keys.stats]
        statuses, tries = await self._settle_call(self._scripts.ack, keys, args, "ack")
        position = 0
        for item in batch:
            for lease in item.leases:
                status = self._status(statuses[position], tries, lease)
                position += 1
                item.statuses.append(status)
            item.done = True

    # -- commits ------------------------------------------------------------------------------

    async def commit(
        self,
        leases: list[Lease],
        *,
        outputs: list[int],
        target_of: list[int],
        envelopes: list[bytes],
        targets: list[MailboxKeys],
        result: tuple[int, bytes] | None,
        result_key: str | None,
        released: frozenset[int] = frozenset(),
    ) -> list[bool]:
        """Forward and ack a batch in one fenced script call (see ``COMMIT``).

        Args:
            leases: The batch's leases, in order.
            outputs: How many envelopes are each lease's (in order).
            target_of: For each envelope, its target's index (from 1) in ``targets``.
            envelopes: The encoded outputs, lease by lease.
            targets: The keys of each target.
            result: (position of the lease from 0, encoded output): the latest result.
            result_key: Where results are kept; ``None`` keeps none.
            released: Positions (from 0) of leases acked only with the one before them
                that is not released.

        Returns:
            For each lease, whether it committed.

        Raises:
            ChannelUnavailable: Redis could not be reached within the retries.
        """
        keys = self._keys
        result_at, value = (0, b"")
        if result is not None and result_key is not None:
            result_at, value = result[0] + 1, result[1]
        script_keys = [keys.stream, keys.stats, result_key or keys.stats]
        for target in targets:
            script_keys += (target.stream, target.stats)
        if released:
            words = b"".join(
                b"%s %d %d%s " % (lease.entry, lease.deliveries, count, b"r" * (i in released))
                for i, (lease, count) in enumerate(zip(leases, outputs, strict=True))
            )
        else:
            words = b"".join(
                b"%s %d %d " % (lease.entry, lease.deliveries, count)
                for lease, count in zip(leases, outputs, strict=True)
            )
        most = len(self.held) + len(leases)
        args: list[Any] = [
            self._group, self._consumer, words, most, result_at, value,
            " ".join(map(str, target_of)), *envelopes,
        ]  # fmt: skip
        statuses, tries = await self._settle_call(self._scripts.commit, script_keys, args, "commit")
        return [
            self._status(status, tries, lease) == 1
            for status, lease in zip(statuses, leases, strict=True)
        ]

    # -- dead letters, renewal, release -----------------------------------------------------

    async def dead_letter(
        self, lease: Lease, reason: str, error: str, fields: dict[bytes, bytes]
    ) -> int:
        """Move ``lease``'s entry to the dead-letter stream with why; return its status.

        Raises:
            ChannelUnavailable: Redis could not be reached within the retries.
        """
        record: list[Any] = [
            "m", lease.data, "reason", reason, "error", error, "entry", lease.entry,
            "deliveries", lease.deliveries, "consumer", self._consumer, "time", now_text(),
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
                args=[self._group, self._consumer, lease.entry, lease.deliveries,
                      self._settings.dead_maxlen, *record],
            )  # fmt: skip
            return status

        status = await with_retries(
            move, retry=self._retry, what=f"dead-letter on {self._name!r}", error=ChannelUnavailable
        )
        return self._status(status, tries, lease)

    async def renew(self) -> int:
        """Reset the idle time of every held entry; return how many are still ours.

        Raises:
            ChannelUnavailable: Redis could not be reached within the retries.
        """
        leases = list(self.held.values())
        if not leases:
            return 0
        started = time.monotonic()
        args: list[Any] = [self._group, self._consumer, lease_words(leases)]
        statuses = await with_retries(
            lambda: self._scripts.renew(keys=[self._keys.stream], args=args),
            retry=self._retry, what=f"renew leases on {self._name!r}", error=ChannelUnavailable,
        )  # fmt: skip
        renewed = 0
        for lease, status in zip(leases, statuses, strict=True):
            if status == 1:
                renewed += 1
                lease.since = started
            else:
                self.held.pop(lease.entry, None)
        return renewed

    async def publish_held(self, leases: list[Lease], *, refresh: bool = False) -> None:
        """Write which entries this consumer holds on purpose, if that changed.

        See ``PUBLISH_HELD``; ``refresh``: write them all again, with new deadlines.
        Leases lost already (renewal found them reclaimed) are left out.

        Raises:
            ChannelUnavailable: Redis could not be reached within the retries.
        """
        held = self.held
        now = {lease.entry: lease.deliveries for lease in leases if held.get(lease.entry) is lease}
        published = self._published
        if (now == published and not refresh) or not (now or published):
            return
        gone = b"".join(b"%s " % entry for entry in published if entry not in now)
        words = b"".join(
            b"%s %d " % (entry, deliveries)
            for entry, deliveries in now.items()
            if refresh or published.get(entry) != deliveries
        )
        args: list[Any] = [self._consumer, self._settings.visibility_ms, gone, words]
        await with_retries(
            lambda: self._scripts.publish_held(keys=[self._keys.held], args=args),
            retry=self._retry, what=f"publish held entries of {self._name!r}",
            error=ChannelUnavailable,
        )  # fmt: skip
        self._published = now

    async def release(self, leases: list[Lease]) -> int:
        """Make ``leases`` reclaimable by others at once; return how many were released.

        Their entries move to :data:`RELEASED_CONSUMER` (see ``RELEASE``).

        Raises:
            ChannelUnavailable: Redis could not be reached within the retries (they stay
                held: others reclaim them after the visibility timeout).
        """
        for lease in leases:
            self.held.pop(lease.entry, None)
        args: list[Any] = [
            self._group,
            self._consumer,
            self._settings.visibility_ms,
            b"".join(
                b"%s %d %d " % (lease.entry, lease.deliveries, not lease.handed_out)
                for lease in leases
            ),
            RELEASED_CONSUMER,
        ]
        released: int = await with_retries(
            lambda: self._scripts.release(keys=[self._keys.stream], args=args),
            retry=self._retry, what=f"release on {self._name!r}", error=ChannelUnavailable,
        )  # fmt: skip
        return released

    async def remove_consumer(self) -> bool:
        """Delete this consumer from the group if it holds no entry; whether it is gone.

        Atomic (``REMOVE_CONSUMER``): a consumer holding entries is kept, so none is lost.

        Raises:
            ChannelUnavailable: Redis could not be reached within the retries.
        """
        keys = [self._keys.stream]
        args = [self._group, self._consumer]
        gone: int = await with_retries(
            lambda: self._scripts.remove_consumer(keys=keys, args=args),
            retry=self._retry, what=f"remove consumer {self._consumer!r} of {self._name!r}",
            error=ChannelUnavailable,
        )  # fmt: skip
        return gone == 1

    async def run_settling(
        self, lease: Lease, script: Any, keys: list[Any], args: list[Any], what: str
    ) -> int:
        """Run ``script``, which settles ``lease``, with the lease in front of its arguments.

        Raises:
            ChannelUnavailable: Redis could not be reached within the retries.
        """
        script_keys = [self._keys.stream, self._keys.stats, *keys]
        script_args = [self._group, self._consumer, lease.entry, lease.deliveries, *args]
        status: int = await with_retries(
            lambda: script(keys=script_keys, args=script_args),
            retry=self._retry, what=what, error=ChannelUnavailable,
        )  # fmt: skip
        self.held.pop(lease.entry, None)
        return status

    # -- shared ---------------------------------------------------------------------------------

    async def _settle_call(
        self, script: Any, keys: list[Any], args: list[Any], what: str
    ) -> tuple[list[int], int]:
        """Call a settling script, reading along if asked; return (statuses, tries)."""
        read_along = self._read_along()
        tries = 0

        async def call() -> tuple[list[int], Any]:
            nonlocal tries
            tries += 1
            if not read_along:
                statuses: list[int] = await script(keys=keys, args=args)
                return statuses, None
            scripts = self._scripts
            if not scripts.loaded:
                await scripts.run(scripts.load(self._redis))
            async with self._redis.pipeline(transaction=False) as pipe:
                scripts.queue(pipe, script, keys, args)
                pipe.xreadgroup(
                    self._group, self._consumer, {self._keys.stream: ">"},
                    count=self._settings.prefetch,
                )  # fmt: skip
                statuses, read = await scripts.run(pipe.execute())
            return statuses, read

        statuses, read = await with_retries(
            call, retry=self._retry, what=f"{what} on {self._name!r}", error=ChannelUnavailable
        )
        if read:
            await self._accept(read)
        return statuses, tries

    def _status(self, status: int, tries: int, lease: Lease) -> int:
        """Settle the local side of a lease after a fenced call returned ``status``."""
        # Not pending any more, after a try that may have landed: that try settled it.
        if status == 0 and tries > 1:
            status = 1
        self.held.pop(lease.entry, None)
        return status


def settle_nowait(message: ChannelMessage) -> bool:
    """:func:`settle`, when no observer watches the ack (the usual case); False otherwise.

    Nobody can watch an ack that was never wrapped: the lease is marked done (no object,
    no coroutine per message).
    """
    ack = message.raw_ack
    if ack.__class__ is Lease:
        ack.done = True
        return True
    if ack.__class__ is OnceAck:
        return False
    assert ack is not None
    message.raw_ack = OnceAck.already_done(ack)
    return True


async def settle(message: ChannelMessage) -> None:
    """Mark a message acked another way (a batch ack, a commit); tell watching observers."""
    ack = message.raw_ack
    if ack.__class__ is OnceAck:
        assert isinstance(ack, OnceAck)
        await ack.settled()
    else:
        assert ack is not None
        message.raw_ack = OnceAck.already_done(ack)


def lease_or_none(message: ChannelMessage) -> Lease | None:
    """The lease of a received message (behind an observer's wrapper), or ``None``."""
    ack = message.raw_ack
    if isinstance(ack, OnceAck):
        ack = ack.callback
    return ack if isinstance(ack, Lease) else None


def lease_words(leases: Iterable[Lease]) -> bytes:
    """``b"id deliveries id deliveries ..."``: one script argument for many leases."""
    return b"".join(b"%s %d " % (lease.entry, lease.deliveries) for lease in leases)


def now_text() -> str:
    """The time, for dead-letter records."""
    return f"{time.time():.3f}"
