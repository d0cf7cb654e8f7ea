"""The benchmarks are run on demand, not in CI; this keeps their code from rotting."""

from __future__ import annotations

from benchmarks import channels, graphs, redis, redis_graphs
from benchmarks._report import Result, Target, render


def test_the_channel_benchmarks_run_at_a_tiny_size() -> None:
    results = channels.run(n=2_000, repeats=1, round_trips=200)
    assert all(r.value > 0 for r in results)
    assert "InMemoryChannel one hop" in render(results)


def test_the_graph_pipelines_run_and_count_everything() -> None:
    assert graphs._best(graphs._raw_pipeline, 1_000) > 0
    assert graphs._best(graphs._graph_pipeline, 1_000) > 0


def test_the_graph_pipeline_of_async_def_nodes_runs_and_counts_everything() -> None:
    assert graphs._best(graphs._graph_pipeline, 1_000, asynchronous=True) > 0


def test_the_window_pipeline_runs_and_counts_every_item_of_every_window() -> None:
    assert graphs._best(graphs._window_pipeline, 1_050) > 0  # (the last window flushed)


def test_the_redis_benchmark_runs_on_a_private_server_at_a_tiny_size() -> None:
    results = redis.run(n=2_000, repeats=1, round_trips=50)
    assert [r.value > 0 for r in results] == [True] * 4
    assert "RedisChannel end to end, acked, batched" in render(results)


def test_the_redis_graph_benchmark_runs_on_a_private_server_at_a_tiny_size() -> None:
    results = redis_graphs.run(n=300, repeats=1, round_trips=5)
    assert [r.value > 0 for r in results] == [True] * 10
    table = render(results)
    for name in (
        "raw redis-py 3-stage stream pipeline",
        "3-node Redis Graph, served here",
        "3-node Redis Graph, a durable step in the middle node",
        "Redis Graph: this process's CPU per 10k msgs",
        "Redis Graph: redis-server CPU per 10k msgs",
        "Redis Graph single-message latency through 3 nodes p50",
    ):
        assert name in table


def test_targets_report_upper_and_lower_bounds() -> None:
    slow = Result("x", 3.0, "us", Target(1.0, 2.0, "raw"))
    fast = Result("y", 60.0, "k/s", Target(100.0, None, "raw", min_ratio=0.5))
    info = Result("z", 1.0, "us", Target(1.0, None, "raw"))
    assert (slow.met, fast.met, info.met) == (False, True, None)
    assert "MISSED" in render([slow])
    assert "(target >= 0.5x: ok)" in render([fast])
