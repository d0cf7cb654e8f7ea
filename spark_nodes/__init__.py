"""spark_nodes: actor-style message-passing graphs.

Long-running nodes each own a mailbox channel; graphs wire nodes with ``>>``; messages and
shutdown signals flow through continuous worker loops, in one process (in-memory mailboxes)
or across processes over Redis.
"""

from spark_nodes import errors
from spark_nodes.channels import (
    BaseChannel,
    ChannelClosed,
    ChannelFull,
    ChannelMessage,
    ChannelStatistics,
    ForwardingChannel,
    InMemoryChannel,
    QueueBridge,
)
from spark_nodes.errors import MessageDecodeError, MessageEncodeError, SparkNodesError

__all__ = [
    "BaseChannel",
    "ChannelClosed",
    "ChannelFull",
    "ChannelMessage",
    "ChannelStatistics",
    "ForwardingChannel",
    "InMemoryChannel",
    "MessageDecodeError",
    "MessageEncodeError",
    "QueueBridge",
    "SparkNodesError",
    "errors",
]
