"""Graphs that ``test_redis_stats.py`` serves, in the test process and in worker processes.

Worker processes are started as ``python -m spark_nodes worker
tests.graphs.redis_stats_graphs:pipeline --redis URL --namespace NS --nodes ...``; when
:data:`INTERVAL_ENV` is set in their environment, they publish their stats that often
instead of every second (a test does not wait seconds for a figure).
"""

from __future__ import annotations

import os
from typing import Any

from spark_nodes import ExecutionContext, Graph, Node
from spark_nodes.graphs import _redis_stats

INTERVAL_ENV = "SPARK_NODES_TEST_STATS_INTERVAL"
"""Seconds between two stats reports of a worker process started by the tests."""

_interval = os.environ.get(INTERVAL_ENV)
if _interval:
    _redis_stats.PUBLISH_INTERVAL = float(_interval)


class Pass(Node):
    """Passes its input on."""

    def process(self, context: ExecutionContext) -> Any:
        return context.inputs.content


def pipeline() -> Graph:
    """``first >> second >> sink``, named ``stats``; the sink's outputs take no edge."""
    first, second, sink = Pass(id="first"), Pass(id="second"), Pass(id="sink")
    first >> second >> sink
    return Graph(first, name="stats")
