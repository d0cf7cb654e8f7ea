"""Helpers for testing code built on spark_nodes: probes, recording observers, a real Redis."""

from spark_nodes.testing.inline import InlineOutput, InlineResult, run_inline
from spark_nodes.testing.probe import BaseProbe, Probe
from spark_nodes.testing.recording import ObservedEvent, RecordingObserver
from spark_nodes.testing.redis_server import RedisServer, find_redis_server, open_redis_server
from spark_nodes.testing.taps import Tap, tap

__all__ = [
    "BaseProbe",
    "InlineOutput",
    "InlineResult",
    "ObservedEvent",
    "Probe",
    "RecordingObserver",
    "RedisServer",
    "Tap",
    "find_redis_server",
    "open_redis_server",
    "run_inline",
    "tap",
]
