"""``spark-nodes worker module:graph --redis URL``: serve a graph's nodes in this process.

The graph is a :class:`~spark_nodes.Graph` (or a function returning one) defined in an
importable module; ``--redis`` moves it to Redis (``graph.use_redis``) unless it is there
already. The worker serves until the graph is shut down (``graph.shutdown()`` from any
process), or until SIGTERM/SIGINT: then it takes no new messages, gives back what it had
prefetched, lets in-flight work finish and ack within ``--grace`` seconds, and exits 0.
Work it could not finish stays pending in Redis and is reclaimed by other workers. A
second signal cancels the in-flight work at once (it is reclaimed the same way).
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from typing import Any

import anyio
import structlog

from spark_nodes.cli._args import positive_int
from spark_nodes.cli._logging import add_logging_options, configure_logging
from spark_nodes.errors import GraphFailed, GraphNotRunning, SparkNodesError
from spark_nodes.graphs import Graph, GraphResult

__all__ = ["add_parser", "load_graph", "run"]

_log = structlog.get_logger("spark_nodes")

_DESCRIPTION = """\
Serve the nodes of a graph on Redis in this process. MODULE:GRAPH names a Graph (or a
function returning one) in an importable module; --redis moves it to Redis unless it is
there already. The worker serves until the graph is shut down from any process, or until
SIGTERM/SIGINT: then it takes no new messages, gives back what it prefetched, lets
in-flight work finish within --grace seconds and exits 0; other workers reclaim what it
could not finish. A second signal cancels in-flight work at once."""


def add_parser(commands: Any) -> None:
    """Register the ``worker`` command."""
    parser = commands.add_parser(
        "worker",
        help="serve a graph's nodes in this process",
        description=_DESCRIPTION,
    )
    parser.add_argument("target", metavar="MODULE:GRAPH", help="e.g. myapp.pipeline:graph")
    parser.add_argument(
        "--redis",
        metavar="URL",
        default=os.environ.get("SPARK_NODES_REDIS_URL"),
        help="redis:// or rediss:// URL (default: $SPARK_NODES_REDIS_URL)",
    )
    parser.add_argument("--namespace", default="spark_nodes", help="key prefix (%(default)s)")
    parser.add_argument(
        "--nodes", type=_node_ids, help="comma-separated ids of the nodes to serve (default: all)"
    )
    parser.add_argument(
        "--concurrency", type=positive_int, help="worker loops per node (default: its config)"
    )
    parser.add_argument(
        "--grace", type=float, default=10.0, help="seconds in-flight work may take on a signal"
    )
    add_logging_options(parser, level="info")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Serve the graph; return 0 when it ended or was stopped, 1 when it failed."""
    configure_logging(args.log_level, args.log_format)
    # A signal while the graph's module is imported (seconds, for a big application)
    # must not kill the worker half-way: remember it, and stop before serving.
    # (The event loop's signal receiver replaces this handler once it is installed.)
    early: list[int] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda received, _frame: early.append(received))
    try:
        graph = _prepare(load_graph(args.target), args)
    except (ImportError, AttributeError, TypeError, ValueError, SparkNodesError) as error:
        print(f"spark-nodes worker: {error}", file=sys.stderr)
        return 1
    status: int = anyio.run(_serve, graph, args, early, backend="asyncio")
    return status


def load_graph(target: str) -> Graph:
    """Import ``module:attribute`` and return the graph it names (or that it makes).

    The current directory comes first on ``sys.path`` (if it is not there already), as it
    does for ``python -m spark_nodes``: the ``spark-nodes`` console script does not put it
    there, so ``spark-nodes worker shop:build`` finds ``./shop.py`` too.

    Raises:
        ValueError: ``target`` is not ``module:attribute``.
        ImportError: The module cannot be imported.
        AttributeError: The module has no such attribute.
        TypeError: The attribute is neither a Graph nor a function returning one.
    """
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"expected MODULE:GRAPH (e.g. myapp.pipeline:graph), not {target!r}")
    _import_from_the_current_directory()
    found: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        found = getattr(found, part)
    if not isinstance(found, Graph) and callable(found):
        found = found()
    if not isinstance(found, Graph):
        raise TypeError(f"{target} is not a Graph (nor a function returning one): {found!r}")
    return found


def _import_from_the_current_directory() -> None:
    here = os.getcwd()
    if "" not in sys.path and here not in sys.path:  # "": the current directory, for -m
        sys.path.insert(0, here)


def _prepare(graph: Graph, args: argparse.Namespace) -> Graph:
    if graph.distributed:
        return graph
    if args.redis is None:
        raise SparkNodesError(
            f"graph {graph.name!r} is in memory: give --redis URL (or $SPARK_NODES_REDIS_URL)"
        )
    graph.use_redis(args.redis, namespace=args.namespace)
    return graph


async def _serve(graph: Graph, args: argparse.Namespace, early: list[int]) -> int:
    status = 0
    result: GraphResult | None = None
    _log.info("worker starting", graph=graph.name, nodes=args.nodes or "all", pid=os.getpid())
    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(_stop_on_signals, graph, tasks.cancel_scope, early)
            try:
                result = await graph.serve(
                    args.nodes, concurrency=args.concurrency, grace_period=args.grace
                )
            except GraphFailed as failure:
                _log.error("worker failed", graph=graph.name, error=str(failure))
                status = 1
            except SparkNodesError as error:  # e.g. an unknown --nodes id, Redis unreachable
                print(f"spark-nodes worker: {error}", file=sys.stderr)
                status = 1
            tasks.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await graph.aclose()
    if result is not None:
        _log.info(
            "worker done",
            graph=graph.name,
            reason=str(result.stop_reason),
            processed={i: s.processed for i, s in result.node_stats.items()},
            dead_lettered=result.dead_lettered,
        )
    return status


async def _stop_on_signals(graph: Graph, scope: anyio.CancelScope, early: list[int]) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        if early:  # received before the receiver was in place: stop before serving
            _log.info("signal before serving: exiting", signal=signal.Signals(early[0]).name)
            scope.cancel()
            return
        stopping = False
        async for received in signals:
            name = signal.Signals(received).name
            if stopping:
                _log.warning("second signal: cancelling in-flight work", signal=name)
                scope.cancel()
                return
            stopping = True
            _log.info("signal: finishing in-flight work, then exiting", signal=name)
            try:
                graph.stop(f"{name} received")
            except GraphNotRunning:
                scope.cancel()  # not serving yet: nothing to finish
                return


def _node_ids(text: str) -> list[str]:
    ids = [part.strip() for part in text.split(",") if part.strip()]
    if not ids:
        raise argparse.ArgumentTypeError("give at least one node id")
    return ids
