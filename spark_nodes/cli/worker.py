"""``spark-nodes worker module:graph --redis URL``: serve a graph's nodes in this process.

The graph is a :class:`~spark_nodes.Graph` (or a function returning one, which may take
the :class:`WorkerSettings`) defined in an importable module; ``--redis`` moves it to
Redis (``graph.use_redis``, with the worker's mailbox settings) unless it is there
already. Every option has an environment variable (``SPARK_NODES_...``, see
:mod:`spark_nodes.cli._settings`); a flag wins over its variable. The worker serves
until the graph is shut down (``graph.shutdown()`` from any process), or until
SIGTERM/SIGINT: then it takes no new messages, gives back what it had prefetched, lets
in-flight work finish and ack within ``--grace`` seconds, and exits 0.
Work it could not finish stays pending in Redis and is reclaimed by other workers. A
second signal cancels the in-flight work at once (it is reclaimed the same way).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import signal
import sys
from collections.abc import Mapping
from typing import Any

import anyio
import structlog

from spark_nodes.cli._logging import configure_logging
from spark_nodes.cli._settings import BadSetting, WorkerSettings, add_options, resolve
from spark_nodes.errors import GraphFailed, GraphNotRunning, SparkNodesError
from spark_nodes.graphs import Graph, GraphResult
from spark_nodes.state import RedisState

__all__ = ["WorkerSettings", "add_parser", "load_graph", "prepare_graph", "run", "settings_of"]

_log = structlog.get_logger("spark_nodes")

_DESCRIPTION = """\
Serve the nodes of a graph on Redis in this process. MODULE:GRAPH names a Graph (or a
function returning one; a function with one parameter gets the worker's settings) in an
importable module; --redis moves it to Redis, with the mailbox settings below, unless it is
there already. The worker serves until the graph is shut down from any process, or until
SIGTERM/SIGINT: then it takes no new messages, gives back what it prefetched, lets
in-flight work finish within --grace seconds and exits 0; other workers reclaim what it
could not finish. A second signal cancels in-flight work at once."""

_EPILOG = """\
Every option but --nodes can be set by its environment variable instead; a flag wins over
its variable, a variable over the default. A bad value exits 2."""


def add_parser(commands: Any) -> None:
    """Register the ``worker`` command."""
    parser = commands.add_parser(
        "worker",
        help="serve a graph's nodes in this process",
        description=_DESCRIPTION,
        epilog=_EPILOG,
    )
    parser.add_argument("target", metavar="MODULE:GRAPH", help="e.g. myapp.pipeline:graph")
    parser.add_argument(
        "--nodes", type=_node_ids, help="comma-separated ids of the nodes to serve (default: all)"
    )
    add_options(parser)
    parser.set_defaults(run=run)


def settings_of(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> WorkerSettings:
    """The worker's settings: parsed flags, else ``environ`` (``os.environ``), else defaults.

    Raises:
        BadSetting: A variable's value is bad, or the prefetch is below the concurrency.
    """
    return resolve(args, os.environ if environ is None else environ)


def run(args: argparse.Namespace) -> int:
    """Serve the graph: 0 when it ended or was stopped, 1 when it failed, 2: a bad setting."""
    try:
        settings = settings_of(args)
    except BadSetting as error:
        print(f"spark-nodes worker: {error}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    # A signal while the graph's module is imported (seconds, for a big application)
    # must not kill the worker half-way: remember it, and stop before serving.
    # (The event loop's signal receiver replaces this handler once it is installed.)
    early: list[int] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda received, _frame: early.append(received))
    try:
        graph = prepare_graph(args.target, settings)
    except (ImportError, AttributeError, TypeError, ValueError, SparkNodesError) as error:
        print(f"spark-nodes worker: {error}", file=sys.stderr)
        return 1
    status: int = anyio.run(_serve, graph, settings, early, backend="asyncio")
    return status


def load_graph(target: str, settings: WorkerSettings | None = None) -> Graph:
    """Import ``module:attribute`` and return the graph it names (or that it makes).

    The attribute is a :class:`Graph`, or a function that returns one: called with
    ``settings`` (the defaults when ``None``) if it has one required positional
    parameter, with nothing if it has none.

    The current directory comes first on ``sys.path`` (if it is not there already), as it
    does for ``python -m spark_nodes``: the ``spark-nodes`` console script does not put it
    there, so ``spark-nodes worker shop:build`` finds ``./shop.py`` too.

    Raises:
        ValueError: ``target`` is not ``module:attribute``.
        ImportError: The module cannot be imported.
        AttributeError: The module has no such attribute.
        TypeError: The attribute is neither a Graph nor a function returning one, or the
            function takes more than one required argument.
    """
    return _load(target, settings or WorkerSettings())[0]


def prepare_graph(target: str, settings: WorkerSettings) -> Graph:
    """Load the graph ``target`` names and move it to Redis as ``settings`` say.

    What the command does before serving. A graph built in memory goes to
    ``settings.redis_url`` with :meth:`WorkerSettings.mailbox_options` over its own
    mailbox options, and (with an ``outage_bound``) a state whose calls retry as long.
    A graph on Redis already is served as it is; mailbox settings it did not get from
    its factory are logged as ignored.

    Raises:
        SparkNodesError: The graph is in memory and no URL was given; ``use_redis``
            refused it (a ``WiringError``: no name, say).
        ValueError, ImportError, AttributeError, TypeError: See :func:`load_graph`.
    """
    graph, took_settings = _load(target, settings)
    if graph.distributed:
        ignored = settings.mailbox_options()
        if ignored and not took_settings:
            _log.warning(
                "graph is on Redis already: its mailboxes keep their options; take the "
                "settings in its factory (def build(settings): ...) to apply them",
                graph=graph.name, ignored=sorted(ignored),
            )  # fmt: skip
        return graph
    if settings.redis_url is None:
        raise SparkNodesError(
            f"graph {graph.name!r} is in memory: give --redis URL (or $SPARK_NODES_REDIS_URL)"
        )
    own = graph.mailbox_options
    options = settings.mailbox_options(own)
    state = graph.state
    graph.use_redis(
        settings.redis_url,
        namespace=settings.namespace,
        mailbox_options=None if options == own else options,
    )
    retry = settings.connection_retry()
    if retry is not None and graph.state is not state:
        # use_redis made the state (the graph was given none): it retries as long too.
        graph.state = RedisState(
            graph.redis, namespace=settings.namespace, graph=graph.name, retry=retry
        )
        graph.state.bind_results(graph)
    return graph


def _load(target: str, settings: WorkerSettings) -> tuple[Graph, bool]:
    """The graph ``target`` names, and whether its factory was given ``settings``."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"expected MODULE:GRAPH (e.g. myapp.pipeline:graph), not {target!r}")
    _import_from_the_current_directory()
    found: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        found = getattr(found, part)
    took_settings = False
    if not isinstance(found, Graph) and callable(found):
        arguments = _required_positional(found)
        if arguments > 1:
            raise TypeError(
                f"{target} takes {arguments} arguments: a graph factory takes none, or one "
                f"(the WorkerSettings)"
            )
        took_settings = arguments == 1
        found = found(settings) if took_settings else found()
    if not isinstance(found, Graph):
        raise TypeError(f"{target} is not a Graph (nor a function returning one): {found!r}")
    return found, took_settings


def _required_positional(factory: Any) -> int:
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # a callable without a readable signature: call it bare
        return 0
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(1 for p in parameters if p.kind in positional and p.default is p.empty)


def _import_from_the_current_directory() -> None:
    here = os.getcwd()
    if "" not in sys.path and here not in sys.path:  # "": the current directory, for -m
        sys.path.insert(0, here)


async def _serve(graph: Graph, settings: WorkerSettings, early: list[int]) -> int:
    status = 0
    result: GraphResult | None = None
    given = settings.given()
    given.pop("redis_url", None)  # it may hold a password
    _log.info("worker starting", graph=graph.name, nodes=list(settings.nodes or ()) or "all",
              pid=os.getpid(), settings=given)  # fmt: skip
    nodes = None if settings.nodes is None else list(settings.nodes)
    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(_stop_on_signals, graph, tasks.cancel_scope, early)
            try:
                result = await graph.serve(
                    nodes, concurrency=settings.concurrency, grace_period=settings.grace,
                    wait_for_redis=settings.wait_for_redis,
                )  # fmt: skip
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
