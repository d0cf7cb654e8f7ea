"""The pytest plugin, run in a fresh pytest process per async runner (pytester).

Each run writes its own ini file, so that the project's settings (asyncio strict mode,
warnings as errors) don't leak in: the plugin must work with whatever the user chose.
"""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

_RUN_TIMEOUT = 120  # seconds for one pytest subprocess: a bound, not an expectation

_SHARED = """
import asyncio
import os

import anyio
import pytest
import redis
import sniffio

from spark_nodes import ExecutionContext, Graph, Node, NodeConfig, Task, TaskType
from spark_nodes.errors import GraphCancelled
from spark_nodes.nodes import RetryPolicy
from spark_nodes.testing import Probe
from spark_nodes.testing.plugin import LeakedTasks, UnobservedFailure


class Double(Node):
    def process(self, context: ExecutionContext) -> int:
        return context.inputs.content * 2


class Fails(Node):
    def process(self, context: ExecutionContext) -> None:
        raise ValueError("boom")


class Cancels(Node):
    def process(self, context: ExecutionContext) -> None:
        context.cancel_graph("no thanks")


class Hangs(Node):
    async def process(self, context: ExecutionContext) -> None:
        await anyio.sleep_forever()


MARK


async def test_graph_runner_starts_the_graph_and_a_probe_sees_its_output(graph_runner, probe):
    start = Double(id="double")
    start >> probe
    with anyio.fail_after(10):
        async with graph_runner(Graph(start=start)) as run:
            await run.send("double", 21)
            assert await probe.wait_for(1) == [42]
        assert run.result is not None
        assert run.result.stop_reason == "shutdown"
        assert not Graph(start=start).running


async def test_graph_runner_fails_the_test_on_an_unobserved_dead_letter(graph_runner):
    node = Fails(id="fails", config=NodeConfig(retry=RetryPolicy(max_attempts=1)))
    with anyio.fail_after(10), pytest.raises(UnobservedFailure, match="1 message dead-lettered"):
        async with graph_runner(Graph(start=node)) as run:
            await run.send("fails", 1)
            await run.wait_idle()


async def test_graph_runner_accepts_the_dead_letters_a_test_expects(graph_runner):
    node = Fails(id="fails", config=NodeConfig(retry=RetryPolicy(max_attempts=1)))
    with anyio.fail_after(10):
        async with graph_runner(Graph(start=node), dead_letters=1) as run:
            await run.send("fails", 1)
            await run.wait_idle()
    assert run.result.dead_lettered == 1


async def test_graph_runner_raises_a_cancelled_run(graph_runner):
    node = Cancels(id="cancels")
    with anyio.fail_after(10), pytest.raises(GraphCancelled, match="no thanks"):
        async with graph_runner(Graph(start=node)) as run:
            await run.send("cancels", 1)
            await anyio.sleep_forever()


async def test_graph_runner_bounds_the_drain(graph_runner):
    graph_runner.shutdown_timeout = 0.2
    node = Hangs(id="hangs")
    with anyio.fail_after(10), pytest.raises(TimeoutError, match="did not drain"):
        async with graph_runner(Graph(start=node)) as run:
            await run.send("hangs", 1)
            await anyio.wait_all_tasks_blocked()


def test_redis_url_is_a_real_private_server(redis_url, redis_server):
    assert redis_url == redis_server.url
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.ping()
        assert client.config_get("appendonly")["appendonly"] == os.environ["EXPECT_AOF"]
    finally:
        client.close()


def test_one_server_serves_the_whole_run(redis_url, redis_server, pytestconfig):
    assert redis_server.running
    assert redis_url == redis_server.url


async def test_graph_runner_fails_the_test_on_a_leaked_task(graph_runner):
    if sniffio.current_async_library() != "asyncio":
        pytest.skip("a leak made with asyncio.create_task")
    leaked = []

    class Leaks(Node):
        def process(self, context: ExecutionContext) -> None:
            leaked.append(asyncio.get_running_loop().create_task(asyncio.sleep(3600)))

    try:
        with anyio.fail_after(10), pytest.raises(LeakedTasks, match="still running"):
            async with graph_runner(Graph(start=Leaks(id="leaks"))) as run:
                await run.send("leaks", 1)
                await run.wait_idle()
    finally:
        for task in leaked:
            task.cancel()
"""

_MODES = {
    # name: (marker line, ini lines, extra arguments, expected passes)
    "asyncio-strict": (
        "pytestmark = pytest.mark.asyncio",
        "asyncio_mode = strict\nasyncio_default_fixture_loop_scope = function",
        ["-p", "no:anyio"],
        8,
    ),
    "asyncio-auto": (
        "",
        "asyncio_mode = auto\nasyncio_default_fixture_loop_scope = function",
        ["-p", "no:anyio"],
        8,
    ),
    "anyio": (
        "pytestmark = pytest.mark.anyio\n\n"
        "@pytest.fixture(params=['asyncio', 'trio'])\n"
        "def anyio_backend(request):\n"
        "    return request.param",
        "",
        # pytest-asyncio stays loaded (in its default strict mode, it leaves anyio's tests
        # alone): that is how most projects have both installed.
        [],
        # 5 async tests x 2 backends, the leak test on asyncio only, the 2 sync tests once
        5 * 2 + 1 + 2,
    ),
}


def _write(pytester: pytest.Pytester, mode: str, ini_extra: str = "") -> None:
    marker, ini, _, _ = _MODES[mode]
    body = _SHARED.replace("MARK", marker)
    pytester.makepyfile(test_user=body)
    pytester.makeini(f"[pytest]\n{ini}\n{ini_extra}\n")


@pytest.mark.parametrize("mode", list(_MODES))
def test_the_fixtures_work_under_each_async_plugin(
    pytester: pytest.Pytester, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("EXPECT_AOF", "yes")
    _write(pytester, mode)
    _, _, arguments, passes = _MODES[mode]
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", *arguments, "-v", timeout=_RUN_TIMEOUT
    )
    skipped = 1 if mode == "anyio" else 0
    result.assert_outcomes(passed=passes, skipped=skipped)
    result.stdout.no_fnmatch_line("*Mode.AUTO*" if mode != "asyncio-auto" else "*Mode.STRICT*")


def test_the_plugin_sets_no_asyncio_mode(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_mode="""
        def test_mode(pytestconfig):
            assert pytestconfig.getini("asyncio_mode") in ("strict", None)
            assert pytestconfig.getoption("asyncio_mode", None) is None
        """
    )
    pytester.makeini("[pytest]\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=_RUN_TIMEOUT)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*mode=Mode.STRICT*"])  # pytest-asyncio's own default


def test_aof_can_be_turned_off_from_the_command_line(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("EXPECT_AOF", "no")
    _write(pytester, "asyncio-strict")
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "no:anyio", "--spark-redis-aof=no",
        "-k", "redis or server", timeout=_RUN_TIMEOUT,
    )  # fmt: skip
    result.assert_outcomes(passed=2)


def test_aof_can_be_turned_off_in_the_ini_file(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("EXPECT_AOF", "no")
    _write(pytester, "asyncio-strict", "spark_redis_aof = false")
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "no:anyio", "-k", "redis or server", timeout=_RUN_TIMEOUT
    )
    result.assert_outcomes(passed=2)


def test_redis_url_honours_the_environment_and_starts_no_server(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("REDIS_SERVER", "/nonexistent/redis-server")  # starting one would fail
    pytester.makepyfile(
        test_env="""
        import os
        import redis

        def test_env(redis_url):
            assert redis_url == os.environ["REDIS_URL"]
            client = redis.Redis.from_url(redis_url)
            try:
                assert client.ping()
            finally:
                client.close()
        """
    )
    pytester.makeini("[pytest]\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=_RUN_TIMEOUT)
    result.assert_outcomes(passed=1)
