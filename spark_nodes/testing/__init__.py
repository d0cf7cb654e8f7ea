"""Helpers for testing code built on spark_nodes: recording observers and a real Redis."""

from spark_nodes.testing.recording import ObservedEvent, RecordingObserver
from spark_nodes.testing.redis_server import RedisServer, find_redis_server, open_redis_server

__all__ = [
    "ObservedEvent",
    "RecordingObserver",
    "RedisServer",
    "find_redis_server",
    "open_redis_server",
]
