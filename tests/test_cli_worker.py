"""``spark-nodes worker``: real worker processes on a real Redis, and the command's errors.

The process tests start ``python -m spark_nodes worker tests.cli_worker_graphs:<factory>``
with ``--log-format json`` and await what the workers log on stderr (``serving``, the
gate's ``holding`` / ``stuck`` / ``passed``, ``recorded``, ``worker done``): read from a
pipe, these are events, not sleeps. What the nodes did is also in the graph state in
Redis, where the test reads it through its own copy of the graph. Each test uses a fresh
namespace of the session's Redis server; a failing test prints its workers' logs.

The error tests call :func:`spark_nodes.cli.main` in-process (synchronous tests: ``main``
runs its own event loop when it gets that far) and read stderr with ``capsys``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from subprocess import DEVNULL, PIPE
from typing import Any

import anyio
import pytest
import structlog
from anyio.abc import Process, TaskGroup
from anyio.streams.text import TextReceiveStream
from structlog.testing import capture_logs

from spark_nodes import Graph
from spark_nodes.channels import RedisChannel
from spark_nodes.cli import main, worker
from spark_nodes.cli._settings import OPTIONS, retry_within
from spark_nodes.cli.worker import WorkerSettings, load_graph, prepare_graph, settings_of
from spark_nodes.state import RedisState
from tests import cli_worker_graphs
from tests.redis_support import new_namespace, open_raw_client, purge

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent
GRAPHS = "tests.cli_worker_graphs"
EXIT_LIMIT = 10.0
"""The longest a test waits for a worker to exit once it should."""


@pytest.fixture(autouse=True)
def no_wait_for_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers of these tests give up on an unreachable Redis at once (the default waits)."""
    monkeypatch.setenv("SPARK_NODES_WAIT_FOR_REDIS", "0")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # redis-py is asyncio only


class Worker:
    """One ``spark-nodes worker`` process and the JSON lines it logged so far."""

    def __init__(self, process: Process, label: str) -> None:
        self.process = process
        self.label = label
        self.lines: list[str] = []
        self.events: list[dict[str, Any]] = []
        self._logged = anyio.Event()  # replaced after each batch of lines
        self.log_closed = anyio.Event()

    @property
    def pid(self) -> int:
        return self.process.pid

    async def read_log(self) -> None:
        """Collect stderr line by line until the process closes it (it exited)."""
        assert self.process.stderr is not None
        partial = ""
        try:
            async for chunk in TextReceiveStream(self.process.stderr, errors="replace"):
                *lines, partial = (partial + chunk).split("\n")
                for line in lines:
                    self.lines.append(line)
                    with contextlib.suppress(ValueError):  # a traceback, not a log line
                        self.events.append(json.loads(line))
                self._wake()
        finally:
            if partial:
                self.lines.append(partial)
            self.log_closed.set()
            self._wake()

    def _wake(self) -> None:
        self._logged.set()
        self._logged = anyio.Event()

    def find(self, event: str, **fields: Any) -> dict[str, Any] | None:
        """The first logged ``event`` with these field values, if any."""
        for logged in self.events:
            if logged.get("event") == event and all(
                logged.get(name) == value for name, value in fields.items()
            ):
                return logged
        return None

    async def logged(self, event: str, **fields: Any) -> dict[str, Any]:
        """Wait until the worker logs ``event`` with these field values; return it.

        Raises:
            AssertionError: The worker exited without logging it.
        """
        while True:
            found = self.find(event, **fields)
            if found is not None:
                return found
            if self.log_closed.is_set():
                raise AssertionError(f"{self.label} exited without logging {event!r} {fields}")
            await self._logged.wait()

    def signal(self, number: signal.Signals) -> None:
        self.process.send_signal(number)

    async def exited(self) -> int:
        """Wait (at most ``EXIT_LIMIT`` seconds) for the worker to exit; return its status."""
        with anyio.fail_after(EXIT_LIMIT):
            return await self.process.wait()

    def running(self) -> bool:
        return self.process.returncode is None


class Workers:
    """Starts worker processes of one namespace; kills the ones left at the end."""

    def __init__(self, url: str, namespace: str, tasks: TaskGroup) -> None:
        self.url = url
        self.namespace = namespace
        self.tasks = tasks
        self.started: list[Worker] = []

    async def start(self, factory: str, *options: str, env: dict[str, str] | None = None) -> Worker:
        """Start a worker of ``factory`` with these options and these environment variables.

        Only ``env`` sets ``SPARK_NODES_...`` variables: the test's own are left out.
        """
        command = [
            sys.executable, "-m", "spark_nodes", "worker", f"{GRAPHS}:{factory}",
            "--redis", self.url, "--namespace", self.namespace,
            "--log-level", "info", "--log-format", "json", *options,
        ]  # fmt: skip
        environment = {k: v for k, v in os.environ.items() if not k.startswith("SPARK_NODES_")}
        environment["SPARK_NODES_WAIT_FOR_REDIS"] = "0"  # (an unreachable Redis: exit at once)
        process = await anyio.open_process(
            command, cwd=ROOT, stdin=DEVNULL, stdout=DEVNULL, stderr=PIPE,
            env={**environment, **(env or {})},
        )  # fmt: skip
        worker = Worker(process, f"worker {len(self.started)} ({' '.join(options)})")
        self.started.append(worker)
        self.tasks.start_soon(worker.read_log)
        return worker

    def logs(self) -> str:
        return "\n".join(
            f"--- {worker.label}, pid {worker.pid}, exit {worker.process.returncode}\n"
            + "\n".join(worker.lines[-60:])
            for worker in self.started
        )


@contextlib.asynccontextmanager
async def open_graph(factory: str, url: str) -> AsyncIterator[Graph]:
    """The graph as the test sees it, on a fresh namespace: to send, shut down, read state."""
    graph = load_graph(f"{GRAPHS}:{factory}")  # a factory that takes settings gets defaults
    namespace = new_namespace()
    graph.use_redis(url, namespace=namespace)
    try:
        yield graph
    finally:
        await graph.aclose()
        async with open_raw_client(url) as client:
            await purge(client, namespace)


@contextlib.asynccontextmanager
async def open_workers(url: str, graph: Graph) -> AsyncIterator[Workers]:
    """Worker processes for ``graph``'s namespace; their logs are printed if the test fails."""
    backend = graph._backend
    assert backend is not None
    try:
        async with anyio.create_task_group() as tasks:
            workers = Workers(url, backend.namespace, tasks)
            try:
                yield workers
            except BaseException:
                print(workers.logs())
                raise
            finally:
                with anyio.CancelScope(shield=True), anyio.fail_after(EXIT_LIMIT):
                    for worker in workers.started:
                        if worker.running():
                            worker.process.kill()
                        await worker.process.wait()
                        await worker.log_closed.wait()  # its reader is done with the pipe
                        await worker.process.aclose()
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:  # the test's own failure: show it as it is
            raise group.exceptions[0] from None
        raise


async def poll_until(condition: Callable[[], Awaitable[bool]], interval: float = 0.02) -> None:
    """Wait until ``condition()`` holds: what other processes do has no event to await."""
    while not await condition():  # noqa: ASYNC110 - polling another process's work
        await anyio.sleep(interval)


def mailbox(graph: Graph, node_id: str) -> RedisChannel:
    channel = graph.nodes[node_id].mailbox
    assert isinstance(channel, RedisChannel)
    return channel


async def released_entries(graph: Graph, node_id: str) -> int:
    """Pending entries of a mailbox that were given back: idle for a whole lease already.

    A release makes entries reclaimable at once by setting their idle time to the
    visibility timeout; in a test that lasts seconds, nothing else makes a 60 s lease idle.
    """
    channel = mailbox(graph, node_id)
    backend = graph._backend
    assert backend is not None
    pending: list[dict[str, Any]] = await backend.redis.xpending_range(
        channel.key, channel.group, "-", "+", 100
    )
    lease_ms = channel._settings.visibility_ms
    return sum(1 for entry in pending if entry["time_since_delivered"] >= lease_ms)


# -- stopping on a signal ----------------------------------------------------------------------


async def test_sigterm_gives_back_prefetched_entries_at_once_and_lets_the_one_in_flight_finish(
    redis_url: str,
) -> None:
    async with open_graph("long_lease", redis_url) as graph, open_workers(redis_url, graph) as w:
        with anyio.fail_after(30):
            for payload in ("hold", "b", "c"):
                await graph.send("gate", payload)
            first = await w.start("long_lease", "--nodes", "gate", "--grace", "20")
            await first.logged("holding", payload="hold")  # "b" and "c" are prefetched
            first.signal(signal.SIGTERM)
            await first.logged("graph stopping", reason="stopped")
            with anyio.fail_after(5):  # at once: not after "hold", nor after the 60 s leases
                await poll_until(lambda: _released(graph, 2))
            second = await w.start("long_lease")  # serves gate and record
            await second.logged("recorded", payload="b")
            await second.logged("recorded", payload="c")
            still_running = first.running()  # on "hold": the grace period is 20 s
            went = time.monotonic()
            await graph.state.set("go:hold", True)
            assert await first.exited() == 0
            exit_after_go = time.monotonic() - went
            await second.logged("recorded", payload="hold")  # its output went on
            await graph.shutdown()
            assert await second.exited() == 0
        outputs = await graph.state.get("outputs")
        starts = await graph.state.get("started:hold")
    done = first.find("worker done")
    assert still_running
    assert exit_after_go < 5  # well within the 20 s grace period
    assert done is not None
    assert done["reason"] == "stopped"
    assert done["processed"] == {"gate": 1}
    assert starts == [[first.pid, 1]]  # handled once, by the worker that was stopping
    assert second.find("passed", payload="hold") is None
    assert sorted(outputs) == ["b", "c", "hold"]


async def _released(graph: Graph, count: int) -> bool:
    return await released_entries(graph, "gate") >= count


async def test_work_that_outlasts_the_grace_period_is_cancelled_and_reclaimed_after_its_lease(
    redis_url: str,
) -> None:
    async with open_graph("short_lease", redis_url) as graph, open_workers(redis_url, graph) as w:
        with anyio.fail_after(30):
            await graph.send("gate", "stuck")
            first = await w.start("short_lease", "--grace", "0.5")
            await first.logged("stuck", payload="stuck")
            signalled = time.monotonic()
            first.signal(signal.SIGTERM)
            assert await first.exited() == 0
            took = time.monotonic() - signalled
            second = await w.start("short_lease")
            await second.logged("recorded", payload="stuck")
            await graph.shutdown()
            assert await second.exited() == 0
        outputs = await graph.state.get("outputs")
        starts = await graph.state.get("started:stuck")
    assert first.find("grace period over; cancelling") is not None
    assert first.find("passed", payload="stuck") is None
    assert 0.5 <= took < 0.5 + 4  # the grace period, then a prompt exit
    assert [pid for pid, _ in starts] == [first.pid, second.pid]  # delivered again, elsewhere
    assert outputs == ["stuck"]


async def test_the_grace_period_holds_even_when_a_node_swallows_a_cancellation(
    redis_url: str,
) -> None:
    async with open_graph("long_lease", redis_url) as graph, open_workers(redis_url, graph) as w:
        with anyio.fail_after(30):
            await graph.send("gate", "stubborn")
            worker = await w.start("long_lease", "--grace", "0.5")
            await worker.logged("stuck", payload="stubborn")
            worker.signal(signal.SIGTERM)
            await worker.logged("cancellation swallowed")
            # anyio cancels again at the next await; asyncio does not. 10 s, not 3: a
            # hang, not a speed (a process's exit on a loaded machine can take seconds).
            with anyio.fail_after(10):
                status = await worker.process.wait()
    assert status == 0


async def test_a_second_sigint_cancels_the_work_in_flight_at_once(redis_url: str) -> None:
    async with open_graph("long_lease", redis_url) as graph, open_workers(redis_url, graph) as w:
        with anyio.fail_after(30):
            await graph.send("gate", "stuck")
            worker = await w.start("long_lease", "--grace", "30")
            await worker.logged("stuck", payload="stuck")
            worker.signal(signal.SIGINT)
            await worker.logged("signal: finishing in-flight work, then exiting", signal="SIGINT")
            signalled = time.monotonic()
            worker.signal(signal.SIGINT)
            status = await worker.exited()
            took = time.monotonic() - signalled
            pending = (await mailbox(graph, "gate").inspect()).pending
    assert status == 0
    assert took < 5  # not the 30 s grace period
    assert worker.find("second signal: cancelling in-flight work") is not None
    assert worker.find("passed", payload="stuck") is None
    assert pending == 1  # left for another worker to reclaim


# -- shutting down from another process --------------------------------------------------------


async def test_a_signal_while_the_graph_module_imports_ends_the_worker_cleanly(
    redis_url: str,
) -> None:
    command = [
        sys.executable, "-m", "spark_nodes", "worker", "tests.slow_import_graphs:graph",
        "--redis", redis_url, "--namespace", new_namespace(),
        "--log-level", "info", "--log-format", "json",
    ]  # fmt: skip
    async with await anyio.open_process(command, cwd=ROOT, stdin=DEVNULL, stdout=DEVNULL) as proc:
        assert proc.stderr is not None
        with anyio.fail_after(EXIT_LIMIT):
            seen = ""
            async for chunk in TextReceiveStream(proc.stderr):
                seen += chunk
                if "importing slowly" in seen:
                    break
            proc.send_signal(signal.SIGTERM)  # mid-import: no event loop, no receiver yet
            async for chunk in TextReceiveStream(proc.stderr):
                seen += chunk
            status = await proc.wait()
    assert status == 0  # not killed by the signal (-15)
    assert "signal before serving: exiting" in seen
    assert '"event": "serving"' not in seen


async def test_graph_shutdown_from_another_process_ends_the_worker_with_exit_0(
    redis_url: str,
) -> None:
    async with open_graph("long_lease", redis_url) as graph, open_workers(redis_url, graph) as w:
        with anyio.fail_after(30):
            worker = await w.start("long_lease")
            serving = await worker.logged("serving")
            await graph.send("gate", "sent before the shutdown")
            await graph.shutdown()
            assert await worker.exited() == 0
            outputs = await graph.state.get("outputs")
    done = worker.find("worker done")
    assert serving["nodes"] == ["gate", "record"]
    assert done is not None
    assert done["reason"] == "shutdown"
    assert done["processed"] == {"gate": 1, "record": 1}
    assert outputs == ["sent before the shutdown"]  # drained before it ended


# -- what a worker serves ----------------------------------------------------------------------


async def test_nodes_option_serves_only_those_nodes(redis_url: str) -> None:
    async with open_graph("long_lease", redis_url) as graph, open_workers(redis_url, graph) as w:
        with anyio.fail_after(30):
            await graph.send("gate", "through the gate")
            await graph.send("record", "straight to record")
            worker = await w.start("long_lease", "--nodes", "gate")
            serving = await worker.logged("serving")
            await worker.logged("passed", payload="through the gate")
            worker.signal(signal.SIGTERM)
            assert await worker.exited() == 0
            record = await mailbox(graph, "record").inspect()
            outputs = await graph.state.get("outputs")
    assert serving["nodes"] == ["gate"]
    assert record.length == 2  # what was sent to it, and the gate's output
    assert record.consumers == ()  # nobody ever read it
    assert outputs is None


async def test_concurrency_option_runs_that_many_loops_per_node(redis_url: str) -> None:
    async with open_graph("long_lease", redis_url) as graph, open_workers(redis_url, graph) as w:
        with anyio.fail_after(30):
            await graph.send("gate", "hold-1")
            await graph.send("gate", "hold-2")
            worker = await w.start("long_lease", "--nodes", "gate", "--concurrency", "2")
            # Neither can finish before its go: both in flight at once in one process.
            await worker.logged("holding", payload="hold-1")
            await worker.logged("holding", payload="hold-2")
            started = [await graph.state.get(f"started:hold-{n}") for n in (1, 2)]
            await graph.state.update({"go:hold-1": True, "go:hold-2": True})
            await worker.logged("passed", payload="hold-1")
            await worker.logged("passed", payload="hold-2")
            worker.signal(signal.SIGTERM)
            assert await worker.exited() == 0
    assert started == [[[worker.pid, 1]], [[worker.pid, 1]]]
    done = worker.find("worker done")
    assert done is not None
    assert done["processed"] == {"gate": 2}


# -- errors ------------------------------------------------------------------------------------


@pytest.fixture
def no_redis_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No ``$SPARK_NODES_...`` variables; structlog as it was before the command configured it."""
    for name in list(os.environ):
        if name.startswith("SPARK_NODES_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SPARK_NODES_WAIT_FOR_REDIS", "0")  # (an unreachable Redis: exit)
    config = structlog.get_config()
    yield
    structlog.configure(**config)


@pytest.mark.usefixtures("no_redis_url")
@pytest.mark.parametrize(
    ("target", "message"),
    [
        (f"{GRAPHS}.long_lease", "expected MODULE:GRAPH (e.g. myapp.pipeline:graph)"),
        (f"{GRAPHS}:", "expected MODULE:GRAPH"),
        (":long_lease", "expected MODULE:GRAPH"),
        ("tests.no_such_module:graph", "No module named 'tests.no_such_module'"),
        (f"{GRAPHS}:no_such_graph", "has no attribute 'no_such_graph'"),
        (f"{GRAPHS}:NOT_A_GRAPH", f"{GRAPHS}:NOT_A_GRAPH is not a Graph"),
        (f"{GRAPHS}:not_a_graph_factory", "is not a Graph (nor a function returning one)"),
    ],
)
def test_a_bad_target_exits_1_saying_what_is_wrong(
    target: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["worker", target, "--redis", "redis://127.0.0.1:1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("spark-nodes worker: ")
    assert message in err
    assert "Traceback" not in err


@pytest.mark.usefixtures("no_redis_url")
def test_an_in_memory_graph_without_redis_exits_1_asking_for_a_url(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["worker", f"{GRAPHS}:long_lease"]) == 1
    err = capsys.readouterr().err
    assert "graph 'cli-long' is in memory: give --redis URL (or $SPARK_NODES_REDIS_URL)" in err


@pytest.mark.usefixtures("no_redis_url")
def test_a_graph_without_a_name_cannot_move_to_redis_and_exits_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["worker", f"{GRAPHS}:unnamed", "--redis", "redis://127.0.0.1:1"]) == 1
    assert "a Redis graph needs a name=" in capsys.readouterr().err


@pytest.mark.usefixtures("no_redis_url")
def test_an_unknown_node_id_exits_1_naming_it_without_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A regression test: the serve() error came out of the task group as a traceback."""
    command = ["worker", f"{GRAPHS}:long_lease", "--redis", "redis://127.0.0.1:1"]
    assert main([*command, "--nodes", "gate,nope", "--log-level", "warning"]) == 1
    err = capsys.readouterr().err
    assert err == "spark-nodes worker: graph 'cli-long' has no node 'nope'\n"


@pytest.mark.usefixtures("no_redis_url")
def test_an_unreachable_server_exits_1_after_the_retries(
    capsys: pytest.CaptureFixture[str],
) -> None:
    command = ["worker", f"{GRAPHS}:long_lease", "--redis", "redis://127.0.0.1:1"]
    assert main([*command, "--log-level", "error"]) == 1  # about 4 s of retries
    err = capsys.readouterr().err
    assert err.startswith("spark-nodes worker: ")
    assert "Redis could not be reached after 8 tries" in err
    assert "Traceback" not in err


@pytest.mark.usefixtures("no_redis_url")
@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--concurrency", "0"], "must be >= 1, not 0"),
        (["--concurrency", "two"], "not an integer: 'two'"),
        (["--nodes", " , "], "give at least one node id"),
        (["--prefetch", "0"], "argument --prefetch: must be >= 1, not 0"),
        (["--max-deliveries", "many"], "argument --max-deliveries: not an integer: 'many'"),
        (["--batch-size", "-3"], "argument --batch-size: must be >= 1, not -3"),
        (["--visibility-timeout", "0"], "argument --visibility-timeout: must be a number > 0"),
        (["--outage-bound", "inf"], "argument --outage-bound: must be a number > 0, not inf"),
        (["--grace", "-1"], "argument --grace: must be a number >= 0, not -1"),
        (["--consumer", "pod 7"], "argument --consumer: must be printable characters without"),
        (["--consumer", ""], "argument --consumer: must not be empty"),
        (["--log-format", "xml"], "argument --log-format: must be one of console, json"),
    ],
)
def test_a_bad_option_is_a_usage_error_with_exit_2(
    option: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["worker", f"{GRAPHS}:long_lease", "--redis", "redis://127.0.0.1:1", *option])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


# -- load_graph --------------------------------------------------------------------------------


def test_load_graph_returns_a_graph_instance() -> None:
    assert load_graph(f"{GRAPHS}:in_memory") is cli_worker_graphs.in_memory


def test_load_graph_calls_a_factory_function() -> None:
    graph = load_graph(f"{GRAPHS}:long_lease")
    assert isinstance(graph, Graph)
    assert graph.name == "cli-long"
    assert sorted(graph.nodes) == ["gate", "record"]


def test_load_graph_follows_a_dotted_attribute_path() -> None:
    assert load_graph(f"{GRAPHS}:registry.pipelines.gated") is cli_worker_graphs.in_memory
    assert load_graph(f"{GRAPHS}:registry.pipelines.make").name == "cli-long"


def test_load_graph_raises_for_a_target_that_is_no_graph() -> None:
    with pytest.raises(TypeError, match="is not a Graph"):
        load_graph(f"{GRAPHS}:not_a_graph_factory")
    with pytest.raises(AttributeError, match="no_such_part"):
        load_graph(f"{GRAPHS}:registry.no_such_part")
    with pytest.raises(ValueError, match="expected MODULE:GRAPH"):
        load_graph(GRAPHS)


CWD_MODULE = """\
from spark_nodes import Graph, Node

graph = Graph(Node(id="only"), name="from-the-current-directory")
"""


def test_load_graph_imports_from_the_current_directory_as_python_dash_m_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A regression test: ``spark-nodes worker shop:build`` did not find ``./shop.py``.

    ``python -m`` puts the current directory on ``sys.path``; a console script does not.
    """
    name = f"cwd_graph_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(CWD_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    try:
        graph = load_graph(f"{name}:graph")
    finally:
        sys.modules.pop(name, None)
    assert graph.name == "from-the-current-directory"
    assert sys.path[0] == str(tmp_path)
    load_graph(f"{GRAPHS}:long_lease")  # once is enough: it is not added again
    assert sys.path.count(str(tmp_path)) == 1


@pytest.mark.usefixtures("no_redis_url")
def test_the_redis_url_defaults_to_the_environment_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The unnamed graph gets as far as ``use_redis``: a URL was there to use."""
    monkeypatch.setenv("SPARK_NODES_REDIS_URL", "redis://127.0.0.1:1")
    assert main(["worker", f"{GRAPHS}:unnamed"]) == 1
    assert "a Redis graph needs a name=" in capsys.readouterr().err


# -- settings: flags, environment variables, what reaches the mailboxes ------------------------


def settings_from(*argv: str, env: dict[str, str] | None = None) -> WorkerSettings:
    """The settings the command resolves for ``argv`` in the environment ``env`` (only)."""
    parser = argparse.ArgumentParser(prog="spark-nodes")
    worker.add_parser(parser.add_subparsers())
    args = parser.parse_args(["worker", f"{GRAPHS}:long_lease", *argv])
    return settings_of(args, env or {})


@contextlib.asynccontextmanager
async def prepared(factory: str, settings: WorkerSettings) -> AsyncIterator[Graph]:
    """The graph as the command prepares it (in this process); its keys deleted after."""
    graph = prepare_graph(f"{GRAPHS}:{factory}", settings)
    try:
        yield graph
    finally:
        await graph.aclose()
        assert settings.redis_url is not None
        async with open_raw_client(settings.redis_url) as client:
            await purge(client, settings.namespace)


def mailboxes(graph: Graph) -> list[RedisChannel]:
    return [mailbox(graph, node_id) for node_id in graph.nodes]


SAMPLES: dict[str, tuple[str, Any, str, Any]] = {
    # setting: (variable's text, its value, flag's text, its value)
    "redis_url": ("redis://env:1/0", "redis://env:1/0", "redis://flag:2/0", "redis://flag:2/0"),
    "namespace": ("env-ns", "env-ns", "flag-ns", "flag-ns"),
    "concurrency": ("3", 3, "5", 5),
    "grace": ("2.5", 2.5, "0", 0.0),
    "visibility_timeout": ("12.5", 12.5, "7", 7.0),
    "max_deliveries": ("4", 4, "9", 9),
    "prefetch": ("40", 40, "50", 50),
    "batch_size": ("16", 16, "32", 32),
    "consumer": ("env-pod", "env-pod", "flag-pod", "flag-pod"),
    "consumer_max_idle": ("120", 120.0, "90", 90.0),
    "wait_for_redis": ("5", 5.0, "inf", math.inf),
    "outage_bound": ("0.5", 0.5, "2", 2.0),
    "log_level": ("debug", "debug", "error", "error"),
    "log_format": ("json", "json", "console", "console"),
}
"""A valid value of every setting, as its variable and as its flag would give it."""


def test_every_setting_has_a_sample() -> None:
    assert set(SAMPLES) == {option.dest for option in OPTIONS}


@pytest.mark.parametrize("option", OPTIONS, ids=lambda option: option.flag)
def test_each_setting_comes_from_its_variable_unless_its_flag_is_given(option: Any) -> None:
    env_text, env_value, flag_text, flag_value = SAMPLES[option.dest]
    env = {option.env: env_text}
    default = getattr(settings_from(), option.dest)
    from_env = getattr(settings_from(env=env), option.dest)
    from_flag = getattr(settings_from(option.flag, flag_text, env=env), option.dest)
    assert default == option.default
    assert from_env == env_value
    assert from_flag == flag_value


def test_an_empty_variable_counts_as_unset() -> None:
    settings = settings_from(env={"SPARK_NODES_PREFETCH": "", "SPARK_NODES_LOG_FORMAT": ""})
    assert settings.prefetch is None
    assert settings.log_format == "console"


@pytest.mark.usefixtures("no_redis_url")
@pytest.mark.parametrize(
    ("variable", "text", "message"),
    [
        ("SPARK_NODES_PREFETCH", "0", "$SPARK_NODES_PREFETCH='0': must be >= 1, not 0 (it sets"),
        ("SPARK_NODES_MAX_DELIVERIES", "3.5", "$SPARK_NODES_MAX_DELIVERIES='3.5': not an integer"),
        ("SPARK_NODES_BATCH_SIZE", "big", "$SPARK_NODES_BATCH_SIZE='big': not an integer: 'big'"),
        ("SPARK_NODES_VISIBILITY_TIMEOUT", "-5", "$SPARK_NODES_VISIBILITY_TIMEOUT='-5': must be"),
        ("SPARK_NODES_OUTAGE_BOUND", "nan", "$SPARK_NODES_OUTAGE_BOUND='nan': must be a"),
        ("SPARK_NODES_CONCURRENCY", "0", "$SPARK_NODES_CONCURRENCY='0': must be >= 1"),
        ("SPARK_NODES_GRACE", "soon", "$SPARK_NODES_GRACE='soon': not a number"),
        ("SPARK_NODES_CONSUMER", "pod\t7", "$SPARK_NODES_CONSUMER='pod\\t7': must be printable"),
        ("SPARK_NODES_LOG_FORMAT", "xml", "$SPARK_NODES_LOG_FORMAT='xml': must be one of console"),
        ("SPARK_NODES_LOG_LEVEL", "loud", "$SPARK_NODES_LOG_LEVEL='loud': must be one of debug"),
    ],
)  # fmt: skip
def test_a_bad_variable_exits_2_naming_it(
    variable: str,
    text: str,
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(variable, text)
    assert main(["worker", f"{GRAPHS}:long_lease", "--redis", "redis://127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("spark-nodes worker: ")
    assert message in err
    assert "Traceback" not in err


async def test_each_mailbox_setting_reaches_the_redis_channel_of_every_node(
    redis_url: str,
) -> None:
    settings = settings_from(
        "--redis", redis_url, "--namespace", new_namespace(),
        "--visibility-timeout", "12.5", "--max-deliveries", "7", "--prefetch", "33",
        "--batch-size", "64", "--consumer", "pod-7", "--outage-bound", "1",
        "--consumer-max-idle", "90",
    )  # fmt: skip
    async with prepared("long_lease", settings) as graph:
        boxes = mailboxes(graph)
        backend = graph._backend
        assert backend is not None
        assert isinstance(graph.state, RedisState)
        state_retry = graph.state._retry
        backend_retry = backend.retry
    assert [box.key.rpartition(":")[2] for box in boxes] == ["gate", "record"]
    for box in boxes:
        assert box.visibility_timeout == 12.5
        assert box._settings.max_deliveries == 7
        assert box._settings.prefetch == 33
        assert box._settings.send_batch == 64
        assert box.consumer == "pod-7"
        assert box._settings.consumer_max_idle_ms == 90_000
        assert box._retry == retry_within(1.0)
    assert retry_within(1.0).attempts == 4  # waits of at most 0.075 + 0.15 + 0.3 s
    assert backend_retry == retry_within(1.0)
    assert state_retry == retry_within(1.0)


async def test_without_settings_the_graph_keeps_its_own_mailbox_options(redis_url: str) -> None:
    settings = settings_from("--redis", redis_url, "--namespace", new_namespace())
    async with prepared("long_lease", settings) as graph:
        boxes = mailboxes(graph)
    for box in boxes:
        assert box.visibility_timeout == cli_worker_graphs.LONG_LEASE["visibility_timeout"]
        assert box._settings.prefetch == cli_worker_graphs.LONG_LEASE["prefetch"]
        assert box.consumer.startswith(f"{socket.gethostname()}-{os.getpid()}-")


async def test_a_setting_given_replaces_only_its_own_option_of_the_graph(redis_url: str) -> None:
    settings = settings_from(
        "--redis", redis_url, "--namespace", new_namespace(), "--consumer", "c"
    )
    async with prepared("own_prefetch", settings) as graph:
        boxes = mailboxes(graph)
    for box in boxes:
        assert box.consumer == "c"
        assert box.visibility_timeout == 60.0  # the graph's own, kept
        assert box._settings.prefetch == 2


async def test_concurrency_raises_the_graphs_own_prefetch_to_match(redis_url: str) -> None:
    settings = settings_from(
        "--redis", redis_url, "--namespace", new_namespace(), "--concurrency", "4"
    )
    async with prepared("own_prefetch", settings) as graph:
        boxes = mailboxes(graph)
    assert [box._settings.prefetch for box in boxes] == [4, 4]
    assert [box.visibility_timeout for box in boxes] == [60.0, 60.0]


@pytest.mark.parametrize(
    ("concurrency", "prefetch"),
    [("150", 150), ("4", 100)],  # above the default of 100: raised; below: the default holds
)
async def test_concurrency_raises_the_default_prefetch_to_match(
    redis_url: str, concurrency: str, prefetch: int
) -> None:
    settings = settings_from(
        "--redis", redis_url, "--namespace", new_namespace(), "--concurrency", concurrency
    )
    async with prepared("plain", settings) as graph:
        boxes = mailboxes(graph)
    assert [box._settings.prefetch for box in boxes] == [prefetch, prefetch]


def test_a_prefetch_given_with_concurrency_must_be_at_least_the_concurrency() -> None:
    assert settings_from("--concurrency", "8", "--prefetch", "8").prefetch == 8
    settings = settings_from("--concurrency", "8", "--prefetch", "20")
    assert settings.mailbox_options() == {"prefetch": 20}
    with pytest.raises(ValueError, match=r"prefetch \(4\) must be >= concurrency \(8\)"):
        WorkerSettings(concurrency=8, prefetch=4)


@pytest.mark.usefixtures("no_redis_url")
@pytest.mark.parametrize(
    ("options", "env", "message"),
    [
        (["--concurrency", "8", "--prefetch", "4"], {}, "--prefetch 4 is below --concurrency 8"),
        (["--concurrency", "8"], {"SPARK_NODES_PREFETCH": "4"},
         "$SPARK_NODES_PREFETCH=4 is below --concurrency 8"),
        (["--prefetch", "4"], {"SPARK_NODES_CONCURRENCY": "8"},
         "--prefetch 4 is below $SPARK_NODES_CONCURRENCY=8"),
    ],
)  # fmt: skip
def test_a_prefetch_below_the_concurrency_exits_2_explaining(
    options: list[str],
    env: dict[str, str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    command = ["worker", f"{GRAPHS}:long_lease", "--redis", "redis://127.0.0.1:1", *options]
    assert main(command) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "give a prefetch of 8 or more, or leave it out" in err


# -- factories that take the settings ----------------------------------------------------------


def test_a_factory_with_one_parameter_is_called_with_the_settings() -> None:
    settings = WorkerSettings(consumer="pod-3", prefetch=12)
    cli_worker_graphs.received.clear()
    graph = load_graph(f"{GRAPHS}:with_settings", settings)
    assert graph.name == "cli-settings"
    assert cli_worker_graphs.received == [settings]
    load_graph(f"{GRAPHS}:with_settings")
    assert cli_worker_graphs.received[-1] == WorkerSettings()  # the defaults


def test_a_factory_whose_parameter_has_a_default_is_called_without_arguments() -> None:
    assert load_graph(f"{GRAPHS}:optional_argument", WorkerSettings()).name == "cli-optional"


def test_a_factory_with_two_parameters_is_refused() -> None:
    with pytest.raises(TypeError, match="takes 2 arguments: a graph factory takes none, or one"):
        load_graph(f"{GRAPHS}:two_arguments", WorkerSettings())


async def test_a_factory_may_put_its_graph_on_redis_with_the_settings(redis_url: str) -> None:
    settings = settings_from(
        "--redis", redis_url, "--namespace", new_namespace(), "--max-deliveries", "5"
    )
    with capture_logs() as logs:
        async with prepared("on_redis_from_settings", settings) as graph:
            boxes = mailboxes(graph)
    assert graph.namespace == settings.namespace
    assert [box._settings.max_deliveries for box in boxes] == [5, 5]
    assert [box.visibility_timeout for box in boxes] == [60.0, 60.0]  # its own, merged
    assert not [log for log in logs if log["log_level"] == "warning"]


async def test_settings_a_graph_on_redis_already_cannot_take_are_logged_as_ignored(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    namespace = new_namespace()
    monkeypatch.setenv("CLI_TEST_REDIS", f"{redis_url} {namespace}")
    settings = settings_from("--redis", redis_url, "--namespace", namespace, "--prefetch", "7")
    with capture_logs() as logs:
        async with prepared("on_redis_already", settings) as graph:
            boxes = mailboxes(graph)
    warnings = [log for log in logs if log["log_level"] == "warning"]
    assert [box._settings.prefetch for box in boxes] == [100, 100]  # its own: the default
    assert len(warnings) == 1
    assert warnings[0]["ignored"] == ["prefetch"]
    assert "take the settings in its factory" in warnings[0]["event"]


# -- settings in real worker processes ---------------------------------------------------------


async def consumer_names(graph: Graph, node_id: str) -> list[str]:
    channel = mailbox(graph, node_id)
    found = await graph.redis.xinfo_consumers(channel.key, channel.group)
    return sorted(c["name"].decode() if isinstance(c["name"], bytes) else c["name"] for c in found)


@pytest.mark.parametrize(
    ("options", "env", "name"),
    [
        (["--consumer", "from-flag"], {"SPARK_NODES_CONSUMER": "from-env"}, "from-flag"),
        ([], {"SPARK_NODES_CONSUMER": "from-env"}, "from-env"),
    ],
)
async def test_a_workers_consumer_name_is_the_one_given_in_every_mailbox(
    redis_url: str, options: list[str], env: dict[str, str], name: str
) -> None:
    async with open_graph("long_lease", redis_url) as graph, open_workers(redis_url, graph) as w:
        with anyio.fail_after(30):
            one = await w.start("long_lease", *options, "--concurrency", "2", env=env)
            await one.logged("serving")
            await graph.send("gate", "named")
            await one.logged("recorded", payload="named")
            names = {node_id: await consumer_names(graph, node_id) for node_id in graph.nodes}
            await graph.shutdown()
            assert await one.exited() == 0
    starting = one.find("worker starting")
    assert starting is not None
    assert starting["settings"]["consumer"] == name
    assert names == {"gate": [name], "record": [name]}  # one consumer per mailbox, 2 loops


async def test_a_worker_calls_a_factory_that_takes_the_settings_with_them(
    redis_url: str,
) -> None:
    async with open_graph("with_settings", redis_url) as graph, open_workers(redis_url, graph) as w:
        with anyio.fail_after(30):
            one = await w.start(
                "with_settings", "--concurrency", "3", env={"SPARK_NODES_PREFETCH": "9"}
            )
            got = await one.logged("factory got settings")
            await graph.send("gate", "through")
            await one.logged("recorded", payload="through")
            await graph.shutdown()
            assert await one.exited() == 0
    assert got["prefetch"] == 9
    assert got["concurrency"] == 3
    assert got["namespace"] == graph.namespace
    assert got["consumer"] is None


@pytest.mark.usefixtures("no_redis_url")
@pytest.mark.parametrize(
    ("options", "env", "tries"),
    [
        (["--outage-bound", "0.3"], {}, 3),  # waits of at most 0.075 + 0.15 s
        ([], {"SPARK_NODES_OUTAGE_BOUND": "0.1"}, 2),
    ],
)
def test_the_outage_bound_sets_how_long_an_unreachable_server_is_retried(
    options: list[str],
    env: dict[str, str],
    tries: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    command = ["worker", f"{GRAPHS}:long_lease", "--redis", "redis://127.0.0.1:1"]
    started = time.monotonic()
    assert main([*command, *options, "--log-level", "error"]) == 1
    took = time.monotonic() - started
    err = capsys.readouterr().err
    assert f"Redis could not be reached after {tries} tries" in err
    assert took < 3  # not the default's 8 tries (waits of 2.5 s on average)


CONSOLE_SCRIPT = Path(sys.executable).with_name("spark-nodes")


@pytest.mark.skipif(not CONSOLE_SCRIPT.exists(), reason="the console script is not installed")
async def test_the_console_script_imports_a_graph_module_from_the_current_directory(
    tmp_path: Path,
) -> None:
    """``spark-nodes worker shop:build`` finds ``./shop.py`` (a console script, not ``-m``)."""
    (tmp_path / "cwd_shop.py").write_text(CWD_MODULE)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SPARK_NODES_")}
    environment.pop("PYTHONPATH", None)
    environment["SPARK_NODES_WAIT_FOR_REDIS"] = "0"
    command = [
        str(CONSOLE_SCRIPT), "worker", "cwd_shop:graph", "--redis", "redis://127.0.0.1:1",
        "--outage-bound", "0.1", "--log-level", "error",
    ]  # fmt: skip
    with anyio.fail_after(EXIT_LIMIT):
        done = await anyio.run_process(command, cwd=tmp_path, env=environment, check=False)
    err = done.stderr.decode()
    assert done.returncode == 1
    assert "No module named" not in err
    assert "Redis could not be reached after 2 tries" in err  # imported, then Redis failed


def test_the_docs_list_every_setting_with_its_variable() -> None:
    """In the worker settings table of ``docs/redis.md``."""
    text = (ROOT / "docs" / "redis.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| `--")]
    for option in OPTIONS:
        assert any(f"`{option.flag}" in row and f"`{option.env}`" in row for row in rows), option
