"""Channels: the transport between nodes.

A channel is an async FIFO of :class:`ChannelMessage`. :class:`InMemoryChannel` is the
default mailbox; :class:`ForwardingChannel` is one edge into another channel (metadata
defaults, per-edge observers); :class:`QueueBridge` gives queue-style code ``put``/``get``;
:mod:`spark_nodes.channels.codec` is the msgpack wire format used wherever a message leaves
the process. Subclass :class:`BaseChannel` for another backend.
"""

from spark_nodes.channels.base import BaseChannel, ChannelStatistics, Observer, ObserverPhase
from spark_nodes.channels.bridge import QueueBridge
from spark_nodes.channels.forwarding import ForwardingChannel
from spark_nodes.channels.memory import InMemoryChannel
from spark_nodes.channels.message import AckCallback, ChannelMessage, new_message_id
from spark_nodes.errors import ChannelClosed, ChannelFull, MessageDecodeError, MessageEncodeError

__all__ = [
    "AckCallback",
    "BaseChannel",
    "ChannelClosed",
    "ChannelFull",
    "ChannelMessage",
    "ChannelStatistics",
    "ForwardingChannel",
    "InMemoryChannel",
    "MessageDecodeError",
    "MessageEncodeError",
    "Observer",
    "ObserverPhase",
    "QueueBridge",
    "new_message_id",
]
