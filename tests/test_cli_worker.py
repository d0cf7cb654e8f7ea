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

import contextlib
import json
import signal
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

from spark_nodes import Graph
from spark_nodes.channels import RedisChannel
from spark_nodes.cli import main
from spark_nodes.cli.worker import load_graph
from tests import cli_worker_graphs
from tests.redis_support import new_namespace, open_raw_client, purge

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent
GRAPHS = "tests.cli_worker_graphs"
EXIT_LIMIT = 10.0
"""The longest a test waits for a worker to exit once it should."""


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

    async def start(self, factory: str, *options: str) -> Worker:
        command = [
            sys.executable, "-m", "spark_nodes", "worker", f"{GRAPHS}:{factory}",
            "--redis", self.url, "--namespace", self.namespace,
            "--log-level", "info", "--log-format", "json", *options,
        ]  # fmt: skip
        process = await anyio.open_process(
            command, cwd=ROOT, stdin=DEVNULL, stdout=DEVNULL, stderr=PIPE
        )
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
    graph: Graph = getattr(cli_worker_graphs, factory)()
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
    """No ``$SPARK_NODES_REDIS_URL``; structlog as it was before the command configured it."""
    monkeypatch.delenv("SPARK_NODES_REDIS_URL", raising=False)
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
