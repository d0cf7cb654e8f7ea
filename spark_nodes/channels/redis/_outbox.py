"""Sending to a Redis mailbox: coalesced, pipelined, written at most once per try.

Concurrent sends share a round trip: a Lua script (``SEND``) appends a whole batch. Every
batch carries its producer's sequence numbers, so a batch retried after a lost reply lands
once. ``send_nowait`` only queues here; the next send, flush or close writes it.
"""

from __future__ import annotations

import itertools
import math
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from typing import Any, Final

from spark_nodes._redis_client import ConnectionRetry, with_retries
from spark_nodes.channels._coalesce import Coalescer
from spark_nodes.channels.codec import encode
from spark_nodes.channels.message import ChannelMessage, not_a_message
from spark_nodes.channels.redis._layout import MailboxKeys, Settings
from spark_nodes.channels.redis._scripts import Scripts
from spark_nodes.errors import ChannelFull, ChannelUnavailable, MessageTooLarge

__all__ = ["Outbox", "Outgoing"]

_PRODUCER_WINDOW_MS: Final = 3_600_000  # how long a producer's batch numbers are remembered


class Outgoing:
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


class Outbox:
    """The sending side of one channel object: encodes, queues and writes its sends.

    Args:
        name: The channel's name, for errors.
        keys: The mailbox's keys.
        scripts: The channel's scripts.
        settings: The channel's settings.
        retry: Retries when Redis cannot be reached.
        written: Awaited with the messages queued by ``send_nowait`` once they are
            written (the channel tells its observers).
    """

    __slots__ = (
        "_keys",
        "_name",
        "_pending",
        "_producer",
        "_producer_pid",
        "_retry",
        "_scripts",
        "_sequence",
        "_settings",
        "_written",
        "sent",
    )

    def __init__(
        self,
        *,
        name: str,
        keys: MailboxKeys,
        scripts: Scripts,
        settings: Settings,
        retry: ConnectionRetry,
        written: Callable[[list[ChannelMessage]], Awaitable[None]],
    ) -> None:
        self._name = name
        self._keys = keys
        self._scripts = scripts
        self._settings = settings
        self._retry = retry
        self._written = written
        self._pending: Coalescer[Outgoing] = Coalescer(self._write, settings.send_batch)
        self._producer = ""
        self._producer_pid = 0
        self._sequence = 0
        self.sent = 0
        """Messages this object wrote to the stream."""

    def prepare(self, message: ChannelMessage, delay: float | None, *, nowait: bool) -> Outgoing:
        """Check and encode ``message`` for sending.

        Raises:
            TypeError: ``message`` is not a :class:`ChannelMessage`.
            ValueError: ``delay`` or ``metadata["idempotency_key"]`` is not valid.
            MessageEncodeError: The message is not plain data.
            MessageTooLarge: It is larger than ``max_message_bytes`` encoded.
        """
        if not isinstance(message, ChannelMessage):
            raise not_a_message(message)
        delay_ms = 0
        if delay is not None:
            if not (isinstance(delay, int | float) and math.isfinite(delay) and delay >= 0):
                raise ValueError(f"delay must be a finite number of seconds >= 0, not {delay!r}")
            delay_ms = math.ceil(delay * 1000)
        metadata = message.raw_metadata
        idempotency = metadata.get("idempotency_key") if metadata else None
        if idempotency is not None and (not isinstance(idempotency, str) or not idempotency):
            raise ValueError(f"idempotency_key must be a non-empty str, not {idempotency!r}")
        return Outgoing(message, self.encode(message), delay_ms, idempotency, nowait=nowait)

    def encode(self, message: ChannelMessage, *, check: bool = True) -> bytes:
        """The envelope of ``message``, checked against ``max_message_bytes``.

        ``check``: see :func:`~spark_nodes.channels.codec.encode`.

        Raises:
            MessageEncodeError: The message is not plain data.
            MessageTooLarge: It is larger than ``max_message_bytes`` encoded.
        """
        data = encode(message, check=check)
        if len(data) > self._settings.max_bytes:
            raise MessageTooLarge(
                f"message {message.id} is {len(data)} bytes encoded, more than channel "
                f"{self._name!r} takes (max_message_bytes={self._settings.max_bytes}); send a "
                f"reference to the data (a key, a URL) instead"
            )
        return data

    async def submit(self, item: Outgoing) -> None:
        """Write ``item`` (with whatever else is queued); return once it is in Redis.

        Raises:
            ChannelUnavailable: Redis could not be reached within the retries.
        """
        await self._pending.submit(item)

    def queue_nowait(self, item: Outgoing) -> None:
        """Queue ``item`` for the next write.

        Raises:
            ChannelFull: ``max_pending_sends`` sends are queued already.
        """
        if len(self._pending.queue) >= self._settings.max_pending:
            raise ChannelFull(
                f"channel {self._name!r} has {self._settings.max_pending} sends queued "
                f"(max_pending_sends); 'await flush()' or 'await send()' writes them"
            )
        self._pending.queue.append(item)

    async def flush(self) -> None:
        """Write everything queued.

        Raises:
            ChannelUnavailable: Some could not be written; they stay queued.
        """
        await self._pending.flush()

    def _new_producer_if_forked(self) -> None:
        if os.getpid() != self._producer_pid:  # a new process (or a fork): a new producer
            self._producer = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(6)}"
            self._producer_pid = os.getpid()
            self._sequence = 0

    async def _write(self, batch: list[Outgoing]) -> None:
        self._new_producer_if_forked()
        for item in batch:
            if not item.seq:
                self._sequence += 1
                item.seq = self._sequence
        if not all(b.seq == a.seq + 1 for a, b in itertools.pairwise(batch)):
            await self._write_runs(batch)  # a withdrawn send left a gap
            return
        keys = self._keys
        script_keys = [keys.stream, keys.stats, keys.producer(self._producer), keys.delayed]
        special: list[str] = []
        for position, item in enumerate(batch, 1):
            if item.idempotency is not None or item.delay_ms:
                index = 0
                if item.idempotency is not None:
                    script_keys.append(keys.idempotency(item.idempotency))
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
                what=f"send to {self._name!r}",
                error=ChannelUnavailable,
            )
        except Exception:
            # Queued by send_nowait, nobody waits for these: keep them for the next write
            # rather than drop them. The senders that wait get the error.
            self._pending.queue[:0] = [item for item in batch if item.nowait]
            raise
        for item in batch:
            item.done = True
        self.sent += len(batch)
        unawaited = [item.message for item in batch if item.nowait]
        if unawaited:  # a send() caller notifies its own observers
            await self._written(unawaited)

    async def _write_runs(self, batch: list[Outgoing]) -> None:
        run: list[Outgoing] = []
        for item in batch:
            if run and item.seq != run[-1].seq + 1:
                await self._write(run)
                run = []
            run.append(item)
        await self._write(run)
