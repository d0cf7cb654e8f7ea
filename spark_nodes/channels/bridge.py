"""``QueueBridge``: an ``asyncio.Queue``-like face on a channel, for code written for queues."""

from __future__ import annotations

from typing import Any

import structlog

from spark_nodes.channels.base import BaseChannel
from spark_nodes.channels.message import ChannelMessage

__all__ = ["QueueBridge"]

_log = structlog.get_logger("spark_nodes")


class QueueBridge:
    """Wrap a channel so queue-style code can ``put`` and ``get`` plain items.

    ``put(item)`` sends ``ChannelMessage(payload=item)``; ``get()`` receives and returns the
    payload. A message counts as handled once ``get()`` returns it: if it carries an ack,
    ``get()`` acks it (an ack that raises is logged, and the item is still returned: on a
    durable channel the message is then delivered again). A shutdown message comes out as
    its payload, normally ``None``, the usual queue sentinel.

    New code should use channels directly; this is for code written against
    ``asyncio.Queue``.

    Args:
        channel: The channel to read and write.

    Raises:
        TypeError: ``channel`` is not a :class:`BaseChannel`.
    """

    __slots__ = ("_channel",)

    def __init__(self, channel: BaseChannel) -> None:
        if not isinstance(channel, BaseChannel):
            raise TypeError(f"QueueBridge wraps a BaseChannel, not {type(channel).__name__}")
        self._channel = channel

    @property
    def channel(self) -> BaseChannel:
        """The wrapped channel."""
        return self._channel

    async def put(self, item: Any) -> None:
        """Send ``item``, waiting for room if the channel is bounded and full.

        Raises:
            ChannelClosed: The channel is closed.
        """
        await self._channel.send(ChannelMessage(item))

    def put_nowait(self, item: Any) -> None:
        """Send ``item`` without waiting.

        Raises:
            ChannelFull: The channel is bounded and full (an ``asyncio.QueueFull``).
            ChannelClosed: The channel is closed.
        """
        self._channel.send_nowait(ChannelMessage(item))

    async def get(self) -> Any:
        """Receive the next message and return its payload, acking it if it has an ack.

        Raises:
            ChannelClosed: The channel is closed and drained.
        """
        message = await self._channel.receive()
        ack = message.ack
        if ack is not None:
            try:
                await ack()
            except Exception:  # noqa: BLE001 - the item is returned; a durable channel redelivers
                _log.exception("ack failed", channel=self._channel.name, msg_id=message.id)
        return message.payload

    def empty(self) -> bool:
        """Return True if the channel has nothing to get."""
        return self._channel.empty()

    def qsize(self) -> int:
        """Return the number of items waiting.

        Raises:
            NotImplementedError: The channel's backend cannot count its messages.
        """
        return self._channel.qsize()
