"""A Redis mailbox's keys, names and settings: where everything of one mailbox lives.

One stream per mailbox, one consumer group per stream, one consumer per channel object.
Every key of a mailbox shares its hash tag, so a mailbox (and, in a distributed graph, the
whole graph) lives in one Redis Cluster slot::

    {namespace}:{tag}            the stream; entries have one field, "m": the envelope
    {namespace}:{tag}:dead       dead letters: the original bytes, the reason, the error
    {namespace}:{tag}:delayed    sorted set of envelopes sent with a delay, by due time
    {namespace}:{tag}:stats      counters: sent, acked, dead_lettered, rejected_acks, ...
    {namespace}:{tag}:producer:… each producer's last batch number (retries land once)
    {namespace}:{tag}:idem:…     idempotency keys seen within the window
    {namespace}:{tag}:closed     set when a distributed graph closed this mailbox
    {namespace}:{tag}:held       entries consumers hold on purpose (a window's), by lease

Consumers come and go with the channel objects that read: a consumer is made by its first
read, deleted by its channel's ``aclose`` once it holds nothing, and deleted by any live
consumer's periodic sweep once it has held nothing for ``consumer_max_idle``. Entries given
back (``release_buffered``) are parked on the consumer :data:`RELEASED_CONSUMER`, where any
consumer reclaims them at once.
"""

from __future__ import annotations

import itertools
import math
import os
import secrets
import socket
import threading
from dataclasses import dataclass
from typing import Final

__all__ = [
    "RELEASED_CONSUMER",
    "MailboxKeys",
    "Settings",
    "default_consumer_name",
    "has_hash_tag",
    "hash_tag",
    "stream_key",
]

RELEASED_CONSUMER: Final = "(released)"
"""The consumer that holds given-back entries until another one reclaims them (at once:
they are parked idle past the visibility timeout). No channel reads under this name."""

# Sweeps of stale consumers: at most this often per channel object, however long the age.
_MAX_SWEEP_INTERVAL: Final = 60.0

_consumer_numbers = itertools.count(1)
_naming = threading.Lock()
_process_token: tuple[int, str] = (0, "")


def has_hash_tag(name: str) -> bool:
    """Whether ``name`` has a Redis Cluster hash tag: ``{...}`` with something inside."""
    return hash_tag(name) != name  # what Redis Cluster hashes: not the whole name


def hash_tag(key: str) -> str:
    """The part of ``key`` Redis Cluster hashes: inside its first ``{...}``, else all of it."""
    start = key.find("{")
    end = key.find("}", start + 1)
    return key[start + 1 : end] if start != -1 and end > start + 1 else key


def stream_key(namespace: str, channel_name: str) -> str:
    """The stream key of a mailbox: ``{namespace}:{channel_name}``, hash-tagged.

    A ``channel_name`` without a hash tag is wrapped in one (``spark_nodes:{orders}``), so
    the mailbox's keys share a Cluster slot; one with a tag keeps it
    (``spark_nodes:{graph}:node``), so several mailboxes can share one.
    """
    tagged = channel_name if has_hash_tag(channel_name) else f"{{{channel_name}}}"
    return f"{namespace}:{tagged}"


def default_consumer_name() -> str:
    """``{hostname}-{pid}-{token}-{n}``: unique per channel object among live processes.

    ``n`` counts the channel objects of this process (threads and event loops included);
    ``token`` is random per process, because host name and pid alone repeat: containers
    sharing the host's network (and so its host name) each run their worker as pid 1.
    """
    global _process_token  # noqa: PLW0603 - one token per process, renewed after a fork
    with _naming:
        pid = os.getpid()
        if _process_token[0] != pid:
            _process_token = (pid, secrets.token_hex(3))
        number = next(_consumer_numbers)
    return f"{socket.gethostname()}-{pid}-{_process_token[1]}-{number}"


@dataclass(frozen=True, slots=True)
class MailboxKeys:
    """The keys of one mailbox (see the module docstring).

    Attributes:
        stream: The stream.
        dead: The dead-letter stream.
        delayed: The sorted set of delayed sends.
        stats: The hash of counters.
        closed: Set when a distributed graph closed the mailbox.
        held: Hash of the entries consumers hold on purpose (a window's, a join's), each
            to ``"consumer deliveries"``: ``Graph.wait_idle`` counts those as idle.
        prefix: What producer and idempotency keys start with.
    """

    stream: str
    dead: str
    delayed: str
    stats: str
    closed: str
    held: str
    prefix: str

    @classmethod
    def of(cls, stream: str) -> MailboxKeys:
        """The keys of the mailbox whose stream is ``stream``."""
        return cls(
            stream=stream,
            dead=f"{stream}:dead",
            delayed=f"{stream}:delayed",
            stats=f"{stream}:stats",
            closed=f"{stream}:closed",
            held=f"{stream}:held",
            prefix=f"{stream}:",
        )

    def producer(self, producer: str) -> str:
        """The key holding ``producer``'s last batch number."""
        return f"{self.prefix}producer:{producer}"

    def idempotency(self, key: str) -> str:
        """The key remembering idempotency key ``key``."""
        return f"{self.prefix}idem:{key}"


@dataclass(frozen=True, slots=True)
class Settings:
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
    consumer_max_idle_ms: int  # 0: stale consumers are kept
    sweep_interval: float

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
        consumer_max_idle: float | None = 3600.0,
    ) -> Settings:
        """Check each value and convert it.

        Raises:
            TypeError: A count is not an int or a time not a number (the name is given).
            ValueError: A value is out of range (the name is given).
        """
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
            ("consumer_max_idle", 1.0 if consumer_max_idle is None else consumer_max_idle),
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
            consumer_max_idle_ms=(
                0 if consumer_max_idle is None else max(1, round(consumer_max_idle * 1000))
            ),
            sweep_interval=min((consumer_max_idle or 0.0) / 2, _MAX_SWEEP_INTERVAL),
        )
