"""``spark-nodes graph MODULE:GRAPH --format mermaid|dot|json``: print a graph's diagram.

The diagram is ``graph.to_mermaid()``, ``graph.to_dot()`` or ``graph.to_json()``: the
wiring, read from the module without running anything. With ``--stats`` it carries the
live counts of the graph's run on Redis (``--redis URL``, or the Redis the graph names),
read from any process by ``graph.stats()``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Final

import anyio

from spark_nodes._redis_client import RedisClient
from spark_nodes.cli._redis import run_on_redis
from spark_nodes.cli.worker import load_graph
from spark_nodes.errors import BackendUnavailable, SparkNodesError
from spark_nodes.graphs import Graph, GraphStats

__all__ = ["FORMATS", "add_parser", "run"]

FORMATS: Final = ("mermaid", "dot", "json")
"""The diagram formats, the default first."""

_DESCRIPTION = """\
Print the diagram of a graph: Mermaid (paste it into Markdown), Graphviz DOT (dot -Tsvg)
or JSON (nodes and edges as data). MODULE:GRAPH names a Graph (or a function returning one)
in an importable module (the current directory included); nothing runs. With --stats, the
nodes and edges carry the live counts of the graph's run on Redis (--redis URL, or the
Redis the graph is built with), from any process."""


def add_parser(commands: Any) -> None:
    """Register the ``graph`` command."""
    parser = commands.add_parser(
        "graph", help="print a graph's diagram (mermaid, dot, json)", description=_DESCRIPTION
    )
    parser.add_argument("target", metavar="MODULE:GRAPH", help="e.g. myapp.pipeline:build")
    parser.add_argument(
        "--format", choices=FORMATS, default=FORMATS[0], help="diagram format (%(default)s)"
    )
    parser.add_argument(
        "--stats", action="store_true", help="add the live counts of the graph's run on Redis"
    )
    parser.add_argument("--redis", metavar="URL", help="the graph's Redis, for --stats")
    parser.add_argument(
        "--namespace", default="spark_nodes", help="key prefix with --redis (%(default)s)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Print the diagram; return 0, 1 if the graph or its stats cannot be had, 2 on misuse."""
    try:
        graph = load_graph(args.target)
    except (ImportError, AttributeError, TypeError, ValueError, SparkNodesError) as error:
        _complain(str(error))
        return 1
    stats = None
    if args.stats:
        found = _live_stats(graph, args)
        if isinstance(found, int):
            return found
        stats = found
    print(_draw(graph, args.format, stats), end="")
    return 0


def _live_stats(graph: Graph, args: argparse.Namespace) -> GraphStats | int:
    """The graph's stats on Redis, or the exit status after saying why there are none."""
    if args.redis is None and not graph.distributed:
        _complain(f"graph {graph.name!r} is in memory: --stats needs --redis URL")
        return 2
    if args.redis is not None and not graph.distributed:
        status = run_on_redis("graph", args.redis, _ping)  # one try: say "unreachable" now
        if status:
            return status
        try:
            graph.use_redis(args.redis, namespace=args.namespace)
        except (ValueError, SparkNodesError) as error:
            _complain(str(error))
            return 1
    try:
        stats: GraphStats = anyio.run(_read_stats, graph, backend="asyncio")
    except BackendUnavailable as error:
        _complain(str(error))
        return 1
    return stats


def _draw(graph: Graph, diagram: str, stats: GraphStats | None) -> str:
    if diagram == "dot":
        return graph.to_dot(stats)
    if diagram == "json":
        return graph.to_json(stats)
    return graph.to_mermaid(stats)


async def _ping(redis: RedisClient) -> int:
    await redis.ping()
    return 0


async def _read_stats(graph: Graph) -> GraphStats:
    try:
        return await graph.stats()
    finally:
        with anyio.CancelScope(shield=True):
            await graph.aclose()


def _complain(problem: str) -> None:
    print(f"spark-nodes graph: {problem}", file=sys.stderr)
