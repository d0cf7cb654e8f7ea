"""Virtual time: budgets, timeouts, delays, backoff and join timeouts follow the loop's clock.

Each test runs on trio with ``MockClock(autojump_threshold=0)`` and on asyncio with a
``looptime`` event loop (both through anyio's backend options). Every test waits tens of
seconds of loop time, so it checks both the behaviour and that it took little *real* time.

A virtual clock also drives ``anyio.fail_after``, so it cannot guard against a feature that
went back to ``time.monotonic()``: the real-time watchdog is pytest-timeout's marker below
(its signal method interrupts the test after 20 real seconds, whatever the loop's clock says).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import pytest

from spark_nodes import (
    Budget,
    ExecutionContext,
    Graph,
    InvokeTimeout,
    JoinNode,
    Node,
    NodeConfig,
    RestartPolicy,
    RetryPolicy,
    StopReason,
    Task,
    TaskType,
)
from tests.graph_support import Collect
from tests.virtual_clock import anyio_backend  # noqa: F401 - the virtual clocks

pytestmark = pytest.mark.timeout(20)  # real seconds: the watchdog (see the module)

LONG = TaskType.LONG_RUNNING
# A bound on real time for a loaded 2-core machine, not a speed target: every test waits at
# least 20 s of loop time, so a clock that stopped being virtual shows as >= 20 s (or as the
# watchdog's timeout).
REAL_SECONDS = 5.0


@contextmanager
def at_most_real_seconds(limit: float = REAL_SECONDS) -> Iterator[None]:
    """Fail if the block took ``limit`` seconds or more of real (not loop) time."""
    started = time.perf_counter()
    yield
    took = time.perf_counter() - started
    assert took < limit, f"took {took:.1f} real seconds: the loop's clock is not virtual here"


class Stuck(Node):
    """Handles nothing: waits until cancelled."""

    async def process(self, context: ExecutionContext) -> None:
        await anyio.sleep_forever()


class Flaky(Node):
    """Fails the first ``failures`` attempts at each message, then passes it on."""

    def __init__(self, failures: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.failures = failures
        self.attempts: list[float] = []

    def process(self, context: ExecutionContext) -> Any:
        self.attempts.append(anyio.current_time())
        if context.attempt <= self.failures:
            raise RuntimeError(f"attempt {context.attempt} fails")
        return context.inputs.content


@pytest.mark.anyio
async def test_a_30_second_budget_ends_the_run_in_virtual_time() -> None:
    stuck = Stuck(id="stuck")
    budget = Budget(max_seconds=30, grace_period=5)
    with at_most_real_seconds():
        began = anyio.current_time()
        result = await Graph(start=stuck).run(Task(inputs="x", type=LONG, budget=budget))
        waited = anyio.current_time() - began
    assert result.stop_reason is StopReason.BUDGET
    assert result.detail == "max_seconds=30 reached"
    assert result.cancelled  # the stuck message was cancelled after the grace period
    assert 35 <= waited < 36  # budget, then grace period, on the loop's clock


@pytest.mark.anyio
async def test_an_invoke_timeout_of_60_seconds_raises_in_virtual_time() -> None:
    graph = Graph(start=Stuck(id="stuck"))
    with at_most_real_seconds():
        async with graph.open_run(Task(type=LONG, budget=Budget(grace_period=1))) as run:
            began = anyio.current_time()
            with pytest.raises(InvokeTimeout, match="no complete answer within 60 s") as caught:
                await run.invoke("x", timeout=60)
            assert anyio.current_time() - began >= 60
            assert caught.value.in_flight == 1
            run.stop()


@pytest.mark.anyio
async def test_retry_backoff_of_10_seconds_passes_in_virtual_time() -> None:
    policy = RetryPolicy(max_attempts=3, initial_delay=10, multiplier=2, max_delay=60, jitter=0.0)
    flaky, sink = Flaky(2, id="flaky", config=NodeConfig(retry=policy)), Collect(id="sink")
    flaky >> sink
    with at_most_real_seconds():
        result = await Graph(start=flaky).run(Task(inputs="x"))
    assert sink.items == ["x"]
    assert result.dead_lettered == 0
    first, second, third = flaky.attempts
    assert second - first == pytest.approx(10, abs=0.5)
    assert third - second == pytest.approx(20, abs=0.5)


@pytest.mark.anyio
async def test_a_30_second_join_timeout_expires_its_group_in_virtual_time() -> None:
    start, ok, silent = Node(id="start"), Node(id="ok"), Stuck(id="silent")
    join = JoinNode(id="join", timeout=30)
    start >> [ok, silent] >> join
    graph = Graph(start=start)
    with at_most_real_seconds():
        async with graph.open_run(Task(type=LONG, budget=Budget(grace_period=1))) as run:
            began = anyio.current_time()
            await run.send(start, "x")
            letter = await graph.dead_letters.receive()  # the part "ok" sent, given up on
            waited = anyio.current_time() - began
            assert join.held == []
            run.stop()
    details = letter.metadata["dead_letter"]
    assert details["phase"] == "join"
    assert "timed out after 30s: waiting for ['silent']" in details["error"]
    assert 30 <= waited < 31


@pytest.mark.anyio
async def test_a_20_second_idle_timeout_shuts_down_in_virtual_time() -> None:
    a, sink = Node(id="a"), Collect(id="sink")
    a >> sink
    with at_most_real_seconds():
        began = anyio.current_time()
        result = await Graph(start=a).run(Task(inputs="x", type=LONG, idle_timeout=20))
        waited = anyio.current_time() - began
    assert result.stop_reason is StopReason.IDLE
    assert sink.items == ["x"]
    assert 20 <= waited < 41  # idle for a whole 20 s period: the first or the second


@pytest.mark.anyio
async def test_restarts_spaced_wider_than_the_window_do_not_count_together() -> None:
    # Restart n waits 20 s * 2 ** (n - 1): on the loop's clock no two crashes share a 10 s
    # window, so the loop is restarted every time; on a clock that stood still, the third
    # crash would be one too many and fail the run.
    class CrashThrice(Node):
        starts = 0

        async def go(self) -> None:
            self.starts += 1
            if self.starts <= 3:
                raise RuntimeError(f"crash {self.starts}")

    policy = RestartPolicy(max_restarts=1, within_seconds=10, initial_delay=20, max_delay=100)
    node = CrashThrice(id="crashy", config=NodeConfig(restart=policy))
    with at_most_real_seconds():
        began = anyio.current_time()
        result = await Graph(start=node).run(Task(type=LONG))
        waited = anyio.current_time() - began
    assert node.starts == 4
    assert result.node_stats["crashy"].restarts == 3
    assert waited == pytest.approx(
        60
    )  # 20 s before each restart: each crash is alone in its window
