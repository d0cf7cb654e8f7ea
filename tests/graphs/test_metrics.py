"""Metrics: ``graph.stats()`` and ``MetricsObserver`` in memory, and rate-limited failure logs."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from spark_nodes import (
    ExecutionContext,
    Graph,
    MetricsObserver,
    Node,
    NodeConfig,
    RetryPolicy,
    Task,
    TaskType,
    _log_limit,
)
from spark_nodes.graphs import Timing
from spark_nodes.nodes._metering import SAMPLES
from tests.graph_support import Collect

pytestmark = pytest.mark.anyio

LONG = TaskType.LONG_RUNNING
ONCE = RetryPolicy(max_attempts=1)


class Inc(Node):
    """Adds one."""

    def process(self, context: ExecutionContext) -> Any:
        return context.inputs.content + 1


class Gate(Node):
    """Holds every message until ``opened`` is set."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.opened = anyio.Event()
        self.entered = anyio.Event()

    async def process(self, context: ExecutionContext) -> Any:
        self.entered.set()
        await self.opened.wait()
        return context.inputs.content


class Odd(Node):
    """Raises on odd numbers (after retries), passes even ones on."""

    def process(self, context: ExecutionContext) -> Any:
        if context.inputs.content % 2:
            raise ValueError("odd")
        return context.inputs.content


def pipeline() -> tuple[Graph, Collect]:
    a, b, sink = Inc(id="a"), Inc(id="b"), Collect(id="sink")
    a >> b >> sink
    return Graph(start=a), sink


async def test_stats_count_every_node_and_edge_without_an_observer() -> None:
    graph, sink = pipeline()
    with anyio.fail_after(10):
        async with graph.open_run(Task(type=LONG)):
            for i in range(50):
                await graph.send("a", i)
            await graph.wait_idle()
            stats = await graph.stats()
    assert len(sink.items) == 50
    assert stats.running
    assert list(stats.nodes) == ["a", "b", "sink"]
    assert [(n.received, n.processed) for n in stats.nodes.values()] == [(50, 50)] * 3
    assert stats.nodes["b"].forwarded == 50
    assert stats.nodes["sink"].terminal_outputs == 0  # a probe keeps, returns nothing
    assert {name: e.sent for name, e in stats.edges.items()} == {"a->b": 50, "b->sink": 50}
    assert (stats.edges["a->b"].source, stats.edges["a->b"].target) == ("a", "b")
    assert all(n.process_time is None for n in stats.nodes.values())  # nobody meters
    assert all(n.rate > 0 for n in stats.nodes.values())
    assert not any("sent_at" in m.metadata for m in sink.received)  # no stamps unmetered


async def test_stats_before_and_after_a_run() -> None:
    graph, _ = pipeline()
    before = await graph.stats()
    assert not before.running
    assert before.elapsed == 0.0
    assert all(n.received == 0 for n in before.nodes.values())
    with anyio.fail_after(10):
        result = await graph.run(Task(inputs=1))
    assert result.ok
    after = await graph.stats()
    assert not after.running
    assert after.elapsed > 0
    assert after.nodes["sink"].received == 1
    assert after.to_dict()["nodes"]["a"]["processed"] == 1


async def test_rates_are_since_the_previous_snapshot() -> None:
    graph, _ = pipeline()
    with anyio.fail_after(10):
        async with graph.open_run(Task(type=LONG)):
            await graph.send("a", 1)
            await graph.wait_idle()
            first = await graph.stats()
            second = await graph.stats()  # nothing handled in between
    assert first.nodes["a"].rate > 0
    assert second.nodes["a"].rate == 0.0
    assert second.edges["a->b"].rate == 0.0


async def test_mailbox_depth_shows_what_waits() -> None:
    gate, sink = Gate(id="gate"), Collect(id="sink")
    gate >> sink
    graph = Graph(start=gate)
    with anyio.fail_after(10):
        async with graph.open_run(Task(type=LONG)):
            for i in range(5):
                await graph.send("gate", i)
            await gate.entered.wait()  # the first message is in process
            stats = await graph.stats()
            gate.opened.set()
            await graph.wait_idle()
    assert stats.nodes["gate"].mailbox_depth == 4
    assert stats.waiting == 4
    assert sink.items == [0, 1, 2, 3, 4]


async def test_metrics_observer_times_process_and_queue() -> None:
    graph, _ = pipeline()
    metrics = MetricsObserver()
    graph.observe(metrics)
    with anyio.fail_after(10):
        async with graph.open_run(Task(type=LONG)):
            for i in range(20):
                await graph.send("a", i)
            await graph.wait_idle()
            stats = await metrics.snapshot()
    for node in ("a", "b", "sink"):
        timing = stats.nodes[node].process_time
        assert timing is not None
        assert timing.count == 20
        assert 0 <= timing.p50 <= timing.p90 <= timing.p99 <= timing.max
    assert stats.nodes["a"].queue_time is None  # sent from outside: no stamp
    queued = stats.nodes["b"].queue_time
    assert queued is not None
    assert queued.count == 20
    assert queued.p50 >= 0


async def test_metrics_observer_on_a_node_meters_that_node_and_reports_its_edges() -> None:
    graph, _ = pipeline()
    metrics = MetricsObserver()
    graph.observe(metrics, node="b")
    with anyio.fail_after(10):
        async with graph.open_run(Task(type=LONG)):
            await graph.send("a", 1)
            await graph.wait_idle()
            mine = await metrics.snapshot()
            everything = await graph.stats()
    assert list(mine.nodes) == ["b"]
    assert set(mine.edges) == {"a->b", "b->sink"}
    assert mine.nodes["b"].process_time is not None
    assert everything.nodes["a"].process_time is None
    assert everything.nodes["sink"].process_time is None


async def test_retries_dead_letters_and_failed_attempts_are_counted() -> None:
    retry = RetryPolicy(max_attempts=3, initial_delay=0.001, jitter=0.0)
    odd, sink = Odd(id="odd", config=NodeConfig(retry=retry)), Collect(id="sink")
    odd >> sink
    graph = Graph(start=odd)
    with anyio.fail_after(10):
        async with graph.open_run(Task(type=LONG)):
            for i in range(4):
                await graph.send("odd", i)
            await graph.wait_idle()
            stats = await graph.stats()
    figures = stats.nodes["odd"]
    assert (figures.received, figures.processed, figures.dead_lettered) == (4, 2, 2)
    assert (figures.failed_attempts, figures.retried) == (6, 4)
    assert stats.edges["odd->sink"].sent == 2  # a failed attempt's outputs are not counted


async def test_timings_keep_the_most_recent_samples() -> None:
    graph, _ = pipeline()
    metrics = MetricsObserver()
    graph.observe(metrics, node="a")
    with anyio.fail_after(30):
        async with graph.open_run(Task(type=LONG)):
            for i in range(3 * SAMPLES):
                await graph.send("a", i)
            await graph.wait_idle()
            stats = await metrics.snapshot()
    timing = stats.nodes["a"].process_time
    assert timing is not None
    assert timing.count == SAMPLES
    assert stats.nodes["a"].processed == 3 * SAMPLES


def test_timing_percentiles_are_nearest_rank() -> None:
    timing = Timing.of([float(i) for i in range(101)])
    assert timing == Timing(count=101, p50=50.0, p90=90.0, p99=99.0, max=100.0)
    assert Timing.of([]) is None


async def test_a_metrics_observer_observes_one_graph() -> None:
    metrics = MetricsObserver()
    with pytest.raises(RuntimeError, match="attach this MetricsObserver first"):
        await metrics.snapshot()
    first, _ = pipeline()
    second, _ = pipeline()
    first.observe(metrics)
    with pytest.raises(ValueError, match="make one per graph"):
        second.observe(metrics)
    first.unobserve(metrics)
    second.observe(metrics)  # free again once detached
    assert (await metrics.snapshot()).graph == second.name


async def test_a_failure_repeating_is_logged_with_a_rate_limit_and_a_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_log_limit, "REPEAT_INTERVAL", 3600.0)  # all within one interval
    odd, sink = Odd(id="odd"), Collect(id="sink")
    odd >> sink
    graph = Graph(start=odd)
    with capture_logs() as logs, anyio.fail_after(20):
        async with graph.open_run(Task(type=LONG)):
            for i in range(600):
                await graph.send("odd", i)
            await graph.wait_idle()
    lines = [log for log in logs if log["event"].startswith("message dead-lettered")]
    assert len(lines) == 2  # the first, then what the limit held back when the node ended
    first, summary = lines
    assert (first["node"], first["graph"], first["held_back"]) == ("odd", graph.name, 0)
    assert first["error_type"] == "builtins.ValueError"
    assert summary["held_back"] == 299
    assert first["log_every"] == 3600.0
    assert "repeats not logged one by one" in summary["event"]


def test_the_repeat_limiter_lets_one_through_per_interval_with_the_count_held_back() -> None:
    limiter: _log_limit.RepeatLimiter[str] = _log_limit.RepeatLimiter(interval=0.0)
    assert [limiter.admit("a"), limiter.admit("a")] == [0, 0]  # an interval of 0: every one
    slow: _log_limit.RepeatLimiter[str] = _log_limit.RepeatLimiter(interval=3600.0)
    admitted = [slow.admit("a"), slow.admit("a"), slow.admit("a"), slow.admit("b")]
    assert admitted == [0, None, None, 0]
    assert slow.held() == {"a": 2}
    assert slow.held() == {}  # reported once


async def test_after_a_run_ended_rates_fall_to_zero() -> None:
    graph, _ = pipeline()
    with anyio.fail_after(10):
        await graph.run(Task(inputs=1))
    first, second = await graph.stats(), await graph.stats()
    assert first.nodes["a"].rate > 0  # over the run
    assert second.nodes["a"].rate == 0.0  # nothing handled since
    assert second.edges["a->b"].rate == 0.0


async def test_each_call_is_timed_once_whichever_path_handles_it() -> None:
    class Emits(Node):
        def process(self, context: ExecutionContext) -> None:
            context.emit(context.inputs.content)  # the fast path hands it to the general one

    class SlowFailure(Node):
        async def process(self, context: ExecutionContext) -> Any:
            await anyio.sleep(0.02)
            raise ValueError("slow, then fails")

    emits, slow = Emits(id="emits"), SlowFailure(id="slow", config=NodeConfig(retry=ONCE))
    emits >> slow
    graph = Graph(start=emits)
    metrics = MetricsObserver()
    graph.observe(metrics)
    with anyio.fail_after(10):
        async with graph.open_run(Task(type=LONG)):
            for i in range(10):
                await graph.send("emits", i)
            await graph.wait_idle()
            stats = await metrics.snapshot()
    emitted, failing = stats.nodes["emits"], stats.nodes["slow"]
    assert emitted.processed == 10
    assert emitted.process_time is not None
    assert emitted.process_time.count == 10
    assert failing.process_time is not None
    assert failing.process_time.count == 10
    assert failing.process_time.p50 >= 0.02  # the failed call's own duration
    assert failing.queue_time is not None
    assert failing.queue_time.count == 10


async def test_stamps_do_not_reach_results_or_unmetered_nodes() -> None:
    a, b, c = Node(id="a"), Node(id="b"), Node(id="c")  # relays: they pass metadata on
    a >> b >> c
    graph = Graph(start=a)
    graph.observe(MetricsObserver(), node="b")
    with anyio.fail_after(10):
        result = await graph.run(Task(inputs="x"))
    assert [output.content for output in result.outputs] == ["x"]
    assert all("sent_at" not in output.metadata for output in result.outputs)
