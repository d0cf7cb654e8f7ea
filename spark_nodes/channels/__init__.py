"""Channels: the transport between nodes.

A channel is an async FIFO of :class:`ChannelMessage`. :class:`InMemoryChannel` is the
default mailbox; :class:`RedisChannel` is a durable one on a Redis Stream, shared by many
processes; :class:`ForwardingChannel` is one edge into another channel (metadata
defaults, per-edge observers); :class:`QueueBridge` gives queue-style code ``put``/``get``;
:mod:`spark_nodes.channels.codec` is the msgpack wire format used wherever a message leaves
the process. Subclass :class:`BaseChannel` for another backend.
"""

from spark_nodes.channels._redis_client import ConnectionRetry
from spark_nodes.channels.base import BaseChannel, ChannelStatistics, Observer, ObserverPhase
from spark_nodes.channels.bridge import QueueBridge
from spark_nodes.channels.forwarding import ForwardingChannel
from spark_nodes.channels.memory import InMemoryChannel
from spark_nodes.channels.message import AckCallback, ChannelMessage, new_message_id
from spark_nodes.channels.redis import RedisChannel
from spark_nodes.errors import (
    ChannelClosed,
    ChannelFull,
    ChannelUnavailable,
    LeaseLost,
    MessageDecodeError,
    MessageEncodeError,
    MessageTooLarge,
)

__all__ = [
    "AckCallback",
    "BaseChannel",
    "ChannelClosed",
    "ChannelFull",
    "ChannelMessage",
    "ChannelStatistics",
    "ChannelUnavailable",
    "ConnectionRetry",
    "ForwardingChannel",
    "InMemoryChannel",
    "LeaseLost",
    "MessageDecodeError",
    "MessageEncodeError",
    "MessageTooLarge",
    "Observer",
    "ObserverPhase",
    "QueueBridge",
    "RedisChannel",
    "new_message_id",
]
