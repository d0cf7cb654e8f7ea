"""Helpers for testing code built on spark_nodes: probes, recording observers, a real Redis."""

from spark_nodes.testing.probe import Probe
from spark_nodes.testing.recording import ObservedEvent, RecordingObserver
from spark_nodes.testing.redis_server import RedisServer, find_redis_server, open_redis_server

__all__ = [
    "ObservedEvent",
    "Probe",
    "RecordingObserver",
    "RedisServer",
    "find_redis_server",
    "open_redis_server",
]
