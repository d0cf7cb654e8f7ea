"""Channels: the transport between nodes.

A channel is an async FIFO of :class:`ChannelMessage`. :class:`InMemoryChannel` is the
default mailbox; :class:`RedisChannel` is a durable one on a Redis Stream, shared by many
processes; :class:`ForwardingChannel` is one edge into another channel (metadata
defaults, per-edge observers); :class:`QueueBridge` gives queue-style code ``put``/``get``;
:mod:`spark_nodes.channels.codec` is the msgpack wire format used wherever a message leaves
the process; :mod:`spark_nodes.channels.inspection` reads durable mailboxes from any process
(backlog, consumers, dead letters, replay). Subclass :class:`BaseChannel` for another backend;
:mod:`spark_nodes.channels.mailbox` says what makes one fast or durable as a node's mailbox.
"""

from spark_nodes._redis_client import ConnectionRetry
from spark_nodes.channels.base import BaseChannel, ChannelStatistics, Observer, ObserverPhase
from spark_nodes.channels.bridge import QueueBridge
from spark_nodes.channels.forwarding import ForwardingChannel
from spark_nodes.channels.inspection import (
    ConsumerInfo,
    DeadLetter,
    GroupInfo,
    MailboxInfo,
    dead_letters,
    drop_dead_letter,
    find_mailboxes,
    inspect_mailbox,
    inspect_mailboxes,
    inspect_namespace,
    replay_dead_letter,
)
from spark_nodes.channels.mailbox import Commit, DurableMailbox, Mailbox, RestorableMailbox
from spark_nodes.channels.memory import InMemoryChannel
from spark_nodes.channels.message import AckCallback, ChannelMessage, OnceAck, new_message_id
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
    "Commit",
    "ConnectionRetry",
    "ConsumerInfo",
    "DeadLetter",
    "DurableMailbox",
    "ForwardingChannel",
    "GroupInfo",
    "InMemoryChannel",
    "LeaseLost",
    "Mailbox",
    "MailboxInfo",
    "MessageDecodeError",
    "MessageEncodeError",
    "MessageTooLarge",
    "Observer",
    "ObserverPhase",
    "OnceAck",
    "QueueBridge",
    "RedisChannel",
    "RestorableMailbox",
    "dead_letters",
    "drop_dead_letter",
    "find_mailboxes",
    "inspect_mailbox",
    "inspect_mailboxes",
    "inspect_namespace",
    "new_message_id",
    "replay_dead_letter",
]
