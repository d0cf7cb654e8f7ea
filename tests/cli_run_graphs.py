"""Graphs that ``test_cli_run.py`` and ``test_cli_graph.py`` run with ``spark-nodes``.

``pipeline``: ``parse >> double >> keep``. ``parse`` takes ``{"n": <int>}`` and passes the
number on; anything else raises ``ValueError`` (retried once, then dead-lettered).
``double`` doubles it; ``keep`` records what it gets in the state key ``kept`` (and, in
memory, in :data:`KEPT`, which a test in this process reads) and returns it (a result).

``stuck``: a single ``hold`` node that logs ``"holding"`` and sleeps until cancelled, for
the tests that abort a run. ``stop_on_error``: a node whose failure stops the graph
(``OnError.STOP_GRAPH``): the run ends ``error``. ``cannot_start``: a node whose
``on_start`` raises.
"""

from __future__ import annotations

import os
from typing import Any

import anyio
import structlog

from spark_nodes import ExecutionContext, Graph, Node, NodeConfig
from spark_nodes.nodes import OnError, RetryPolicy

HOLD_LIMIT = 60.0
"""The longest ``hold`` sleeps: a test that forgets to abort fails, it does not hang."""

KEPT: list[Any] = []
"""What ``keep`` got in this process, in order (tests clear it first)."""

_log = structlog.get_logger("tests.cli_run_graphs")


class Parse(Node):
    """``{"n": 3}`` -> 3; anything else raises."""

    def process(self, context: ExecutionContext) -> int:
        content = context.inputs.content
        if not isinstance(content, dict) or not isinstance(content.get("n"), int):
            raise ValueError(f"not an order: {content!r}")
        number: int = content["n"]
        return number


class Double(Node):
    """Doubles a number."""

    def process(self, context: ExecutionContext) -> int:
        number: int = context.inputs.content
        return number * 2


class Keep(Node):
    """Appends what it gets to the state key ``kept``; returns it."""

    async def process(self, context: ExecutionContext) -> Any:
        KEPT.append(context.inputs.content)
        await context.graph_state.append("kept", context.inputs.content)
        return context.inputs.content


class Hold(Node):
    """Logs ``"holding"`` and sleeps until cancelled (at most ``HOLD_LIMIT`` seconds)."""

    async def process(self, context: ExecutionContext) -> None:
        _log.info("holding", payload=context.inputs.content, pid=os.getpid())
        await anyio.sleep(HOLD_LIMIT)


class Fail(Node):
    """Raises for every message."""

    def process(self, context: ExecutionContext) -> None:
        raise RuntimeError(f"cannot handle {context.inputs.content!r}")


class NoStart(Node):
    """A node whose ``on_start`` raises: the graph cannot start."""

    async def on_start(self) -> None:
        raise RuntimeError("the database is down")


def pipeline() -> Graph:
    """``parse >> double >> keep``, named ``cli-run``."""
    retry = RetryPolicy(max_attempts=2, initial_delay=0.001)
    parse = Parse(id="parse", config=NodeConfig(retry=retry))
    parse >> Double(id="double") >> Keep(id="keep")
    return Graph(parse, name="cli-run")


def stuck() -> Graph:
    """One ``hold`` node, named ``cli-stuck``."""
    return Graph(Hold(id="hold"), name="cli-stuck")


def stop_on_error() -> Graph:
    """One ``fail`` node whose failure stops the graph, named ``cli-fail``."""
    return Graph(Fail(id="fail", config=NodeConfig(on_error=OnError.STOP_GRAPH)), name="cli-fail")


def cannot_start() -> Graph:
    """One node whose ``on_start`` raises, named ``cli-no-start``."""
    return Graph(NoStart(id="nostart"), name="cli-no-start")


def broken_factory() -> Graph:
    """A factory whose wiring is wrong: a node wired to something that is not one."""
    node = Node(id="a")
    node >> "not a node"  # type: ignore[operator]
    return Graph(node)
