"""``RedisChannel``: a durable mailbox on a Redis Stream, shared by many processes.

The package is split by concern: ``_layout`` (keys, names, settings), ``_outbox``
(sending), ``_reader`` (reading and decoding), ``_leases`` (acks, commits, dead letters,
lease renewal), ``_scripts`` (the Lua scripts) and ``_channel`` (the class itself).
"""

from spark_nodes.channels.redis._channel import RedisChannel
from spark_nodes.channels.redis._layout import (
    RELEASED_CONSUMER,
    MailboxKeys,
    has_hash_tag,
    hash_tag,
    stream_key,
)
from spark_nodes.channels.redis._leases import Lease

__all__ = [
    "RELEASED_CONSUMER",
    "Lease",
    "MailboxKeys",
    "RedisChannel",
    "has_hash_tag",
    "hash_tag",
    "stream_key",
]
