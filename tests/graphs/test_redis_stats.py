"""``graph.stats()`` of a Redis graph: what the serving processes publish, read from any one.

"Processes" are graph objects of one Redis graph in the test process (each run publishes
under its own token, as a process would), and, in the last test, real worker processes.
Every test lowers the publishing interval, so that no figure takes a second to show up,
and polls the reader until the figures it waits for are there (another process's work has
no event to await).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from subprocess import DEVNULL
from typing import IO, Any

import anyio
import msgpack
import pytest
from anyio.abc import Process
from redis.asyncio import Redis
from structlog.testing import capture_logs

from spark_nodes import Graph
from spark_nodes.channels import RedisChannel
from spark_nodes.channels.codec import pack
from spark_nodes.graphs import _redis_stats
from spark_nodes.graphs._redis_stats import (
    MERGED_SAMPLES,
    REPORT_SAMPLES,
    STATS_TTL,
    Report,
    merge_reports,
)
from spark_nodes.graphs._stats import Counts
from spark_nodes.graphs.metrics import MetricsObserver
from spark_nodes.graphs.stats import GraphStats
from tests.graphs.redis_stats_graphs import INTERVAL_ENV, pipeline
from tests.redis_support import Cluster, new_namespace, open_raw_client, purge

pytestmark = [pytest.mark.anyio, pytest.mark.redis]  # redis-py: asyncio only

WAIT = 30.0
"""The longest a test waits for anything."""

FAST = 0.05
"""The publishing interval of the tests: figures show up within a twentieth of a second."""

ROOT = Path(__file__).resolve().parent.parent.parent
PUBLISH_FAILED = "stats not published; trying again every interval"


@pytest.fixture
def fast_stats(monkeypatch: pytest.MonkeyPatch) -> None:
    """Serving processes of the test publish every :data:`FAST` seconds."""
    monkeypatch.setattr(_redis_stats, "PUBLISH_INTERVAL", FAST)


async def stats_when(graph: Graph, condition: Callable[[GraphStats], bool]) -> GraphStats:
    """Read ``graph.stats()`` until ``condition`` holds; return that snapshot."""
    while True:
        stats = await graph.stats()
        if condition(stats):
            return stats
        await anyio.sleep(0.02)


async def counts_of(graph: Graph) -> Counts:
    """The figures behind ``graph.stats()``: ``workers`` is 0 there for a node nobody serves."""
    backend = graph._backend
    assert backend is not None
    return await backend.stats_counts(graph.name, graph._topology())


async def serve(graph: Graph, nodes: list[str] | None = None) -> None:
    await graph.serve(nodes)


def stats_key(cluster: Cluster) -> str:
    return f"{cluster.namespace}:{{stats}}#stats"


def processed(*node_ids: str, count: int) -> Callable[[GraphStats], bool]:
    return lambda stats: all(stats.nodes[node_id].processed == count for node_id in node_ids)


# -- what a reader sees ------------------------------------------------------------------------


async def test_a_reader_serving_nothing_sums_the_figures_of_two_serving_processes(
    cluster: Cluster, fast_stats: None
) -> None:
    one, two, reader = (cluster.process(pipeline) for _ in range(3))
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(serve, one, ["first", "second"])
            tasks.start_soon(serve, two, ["second"])  # nobody serves the sink
            for number in range(40):
                await reader.send("first", number)
            live = await stats_when(
                reader,
                lambda s: (
                    processed("first", "second", count=40)(s)
                    # A commit's outputs count as forwarded once it is back from Redis:
                    # a figure published meanwhile has them sent, not yet forwarded.
                    and [s.nodes[n].forwarded for n in ("first", "second")] == [40, 40]
                    and s.nodes["sink"].mailbox_depth == 40
                    and s.edges["second->sink"].sent == 40
                    and s.running  # (both report within three intervals of this read)
                    and [n.workers for n in s.nodes.values()] == [1, 2, 0]
                ),
            )
            one.stop()
            two.stop()
        ended = await reader.stats()
    assert live.running
    assert live.elapsed > 0
    first, second, sink = (live.nodes[node_id] for node_id in ("first", "second", "sink"))
    assert (first.received, first.forwarded, first.mailbox_depth) == (40, 40, 0)
    assert (second.received, second.forwarded, second.mailbox_depth) == (40, 40, 0)
    assert (sink.received, sink.processed) == (0, 0)
    assert live.edges["first->second"].sent == 40
    assert live.waiting == 40  # the sink's, unread
    # Both runs ended with a final report: nothing runs, and nothing was lost.
    assert not ended.running
    assert processed("first", "second", count=40)(ended)
    assert ended.edges["second->sink"].sent == 40
    assert ended.elapsed >= live.elapsed - 0.1


async def test_a_graph_nobody_served_reads_as_zero_with_its_mailbox_depths(
    cluster: Cluster,
) -> None:
    reader = cluster.process(pipeline)
    for number in range(3):
        await reader.send("second", number)
    stats = await reader.stats()
    assert not stats.running
    assert stats.elapsed == 0
    assert [node.processed for node in stats.nodes.values()] == [0, 0, 0]
    assert {node_id: node.mailbox_depth for node_id, node in stats.nodes.items()} == {
        "first": 0,
        "second": 3,
        "sink": 0,
    }
    assert {edge.sent for edge in stats.edges.values()} == {0}
    counts = await counts_of(reader)
    assert [figures["workers"] for figures in counts.nodes.values()] == [0, 0, 0]


async def test_mailbox_depth_counts_entries_unread_by_the_group_and_delivered_ones_not_acked(
    cluster: Cluster, raw: Redis
) -> None:
    reader = cluster.process(pipeline)
    box = reader.nodes["sink"].mailbox
    assert isinstance(box, RedisChannel)
    ids = [await raw.xadd(box.key, {"m": b"x"}) for _ in range(5)]
    await raw.xgroup_create(box.key, box.group, id="0")
    await raw.xreadgroup(box.group, "someone", {box.key: ">"}, count=2)
    await raw.xack(box.key, box.group, ids[0])  # acked, and still in the stream (not trimmed)
    stats = await reader.stats()
    assert stats.nodes["sink"].mailbox_depth == 4  # 1 pending + 3 unread
    assert await raw.xlen(box.key) == 5


@pytest.mark.parametrize(
    "case",  # (entries, delivered, acked, the depth read)
    [
        (2500, 100, 50, 50 + 2400),  # few delivered: counted up to the last delivered one
        (1500, 1200, 1100, 100 + 300),  # many delivered: the unread ones are counted
        (2500, 1200, 1200, 2500),  # many of both: the stream's length, an upper bound
    ],
)
async def test_mailbox_depth_of_a_long_stream_is_counted_from_the_side_that_is_short(
    cluster: Cluster, raw: Redis, case: tuple[int, int, int, int]
) -> None:
    entries, delivered, acked, depth = case
    reader = cluster.process(pipeline)
    box = reader.nodes["sink"].mailbox
    assert isinstance(box, RedisChannel)
    async with raw.pipeline(transaction=False) as pipe:
        for _ in range(entries):
            pipe.xadd(box.key, {"m": b"x"})
        ids = await pipe.execute()
    await raw.xgroup_create(box.key, box.group, id="0")
    await raw.xreadgroup(box.group, "someone", {box.key: ">"}, count=delivered)
    await raw.xack(box.key, box.group, *ids[:acked])  # (not trimmed: they stay in the stream)
    stats = await reader.stats()
    server: Any = await raw.info("server")
    if int(server["redis_version"].split(".")[0]) >= 7:
        depth = entries - acked  # Redis 7 knows the group's lag: the depth is exact
    assert stats.nodes["sink"].mailbox_depth == depth


# -- timings -----------------------------------------------------------------------------------


async def test_timings_of_a_metered_serving_process_are_read_by_a_process_serving_nothing(
    cluster: Cluster, fast_stats: None
) -> None:
    worker, reader = cluster.process(pipeline), cluster.process(pipeline)
    metrics = MetricsObserver()
    worker.observe(metrics)
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(serve, worker, ["first", "second"])
            for number in range(300):
                await reader.send("first", number)
            stats = await stats_when(reader, processed("first", "second", count=300))
            snapshot = await metrics.snapshot()  # the serving process's observer: the same
            worker.stop()
    first, second, sink = (stats.nodes[node_id] for node_id in ("first", "second", "sink"))
    assert first.process_time is not None
    assert first.process_time.count == REPORT_SAMPLES  # the most recent of 300
    assert first.queue_time is None  # sent by the reader, which meters nothing: not stamped
    assert second.process_time is not None
    assert second.queue_time is not None
    assert second.process_time.count == second.queue_time.count == REPORT_SAMPLES
    assert 0 <= second.process_time.p50 <= second.process_time.max < WAIT
    assert 0 <= second.queue_time.p50 <= second.queue_time.p99 <= second.queue_time.max < WAIT
    assert sink.process_time is None  # nobody serves it
    timed = snapshot.nodes["second"].process_time
    assert timed is not None
    assert timed.count == REPORT_SAMPLES


def report(process: str, published: float, samples: list[float], **fields: Any) -> Report:
    return Report(
        node=fields.pop("node", "a"),
        process=process,
        started=fields.pop("started", 0.0),
        published=published,
        interval=1.0,
        final=fields.pop("final", False),
        counters=fields.pop("counters", {"processed": 1}),
        edges=fields.pop("edges", {"a->b": 1}),
        process_times=samples,
        queue_times=None,
    )


def test_merging_interleaves_the_newest_samples_of_every_process_up_to_the_cap() -> None:
    now = 100.0
    reports = [
        report("old", 90.0, [10.0, 11.0]),
        report("new", 99.5, [20.0, 21.0, 22.0]),
        report("many", 99.0, [float(n) for n in range(2000)]),
    ]
    counts = merge_reports(reports, {"a": 7, "b": 0}, now=now)
    times = counts.nodes["a"]["process_times"]
    assert isinstance(times, list)
    assert times[:7] == [20.0, 0.0, 10.0, 21.0, 1.0, 11.0, 22.0]
    assert len(times) == MERGED_SAMPLES
    assert "queue_times" not in counts.nodes["a"]
    assert counts.nodes["a"]["processed"] == 3
    assert counts.nodes["a"]["workers"] == 2  # "old" last reported 10 intervals ago
    assert counts.nodes["a"]["mailbox_depth"] == 7
    assert counts.nodes["b"]["workers"] == 0
    assert counts.edges == {"a->b": 3}


def test_a_run_is_running_while_it_reports_within_three_intervals_and_not_after_its_final_one() -> (
    None
):
    now = 1000.0
    live = report("live", now - 2.5, [], started=900.0)
    stale = report("stale", now - 3.5, [], started=800.0)
    final = report("final", now - 0.1, [], started=950.0, final=True)
    assert merge_reports([live], {}, now=now).running
    assert not merge_reports([stale, final], {}, now=now).running
    running = merge_reports([live, stale, final], {}, now=now)
    assert running.running
    assert running.elapsed == pytest.approx(200.0)  # since the earliest run started
    ended = merge_reports([stale, final], {}, now=now)
    assert ended.elapsed == pytest.approx(now - 0.1 - 800.0)  # until the last report


# -- the end of a run --------------------------------------------------------------------------


async def test_the_final_report_on_shutdown_makes_the_counts_complete(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One report when the run starts, and the final one: no periodic report in between.
    monkeypatch.setattr(_redis_stats, "PUBLISH_INTERVAL", 3600.0)
    worker, reader = cluster.process(pipeline), cluster.process(pipeline)
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(serve, worker, None)
            started = await stats_when(reader, lambda s: s.running)
            for number in range(30):
                await reader.send("first", number)
            await reader.shutdown()
        stats = await reader.stats()
    assert processed("first", "second", "sink", count=0)(started)
    assert not stats.running
    assert processed("first", "second", "sink", count=30)(stats)
    assert stats.nodes["sink"].terminal_outputs == 30
    assert stats.edges["first->second"].sent == stats.edges["second->sink"].sent == 30
    assert stats.waiting == 0
    assert stats.elapsed > 0


async def test_a_cancelled_run_still_publishes_its_final_figures(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_redis_stats, "PUBLISH_INTERVAL", 3600.0)
    worker, reader = cluster.process(pipeline), cluster.process(pipeline)
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(serve, worker, None)
            await stats_when(reader, lambda s: s.running)
            for number in range(30):
                await reader.send("first", number)
            await reader.wait_idle()  # every message handled and acked
            tasks.cancel_scope.cancel()
        stats = await reader.stats()
    assert not stats.running
    assert processed("first", "second", "sink", count=30)(stats)


# -- failures ----------------------------------------------------------------------------------


@pytest.mark.single_server  # pauses the one server
async def test_redis_refusing_reports_for_a_while_is_logged_once_and_the_worker_goes_on(
    cluster: Cluster, raw: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_redis_stats, "PUBLISH_INTERVAL", FAST)
    monkeypatch.setattr(_redis_stats, "PUBLISH_TIMEOUT", 0.2)
    worker, reader = cluster.process(pipeline), cluster.process(pipeline)
    with anyio.fail_after(WAIT), capture_logs() as logs:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(serve, worker, None)
            await stats_when(reader, lambda s: s.running)
            # Every write waits for 1.5 s: the reports of about six ticks time out.
            await raw.client_pause(1500, all=False)  # (CLIENT PAUSE 1500 WRITE)
            while not any(log["event"] == "stats published again" for log in logs):  # noqa: ASYNC110
                await anyio.sleep(0.02)
            for number in range(10):
                await reader.send("first", number)
            stats = await stats_when(reader, lambda s: processed("sink", count=10)(s) and s.running)
            await reader.shutdown()
    failures = [log for log in logs if log["event"] == PUBLISH_FAILED]
    assert len(failures) == 1
    assert failures[0]["log_level"] == "warning"
    assert "TimeoutError" in failures[0]["error"]
    assert stats.running


# -- what is stored ----------------------------------------------------------------------------


async def test_each_run_reports_each_node_it_serves_as_msgpack_in_a_hash_that_expires(
    cluster: Cluster, raw: Redis, fast_stats: None
) -> None:
    worker, reader = cluster.process(pipeline), cluster.process(pipeline)
    key = stats_key(cluster)
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(serve, worker, ["first", "second"])
            await stats_when(reader, lambda s: s.running)
            fields: Any = await raw.hgetall(key)
            ttl = await raw.ttl(key)
            worker.stop()
    assert STATS_TTL - 60 < ttl <= STATS_TTL
    names = sorted(name.decode() for name in fields)
    assert [name.rpartition("@")[0] for name in names] == ["first", "second"]
    token = names[0].rpartition("@")[2]
    assert token == names[1].rpartition("@")[2]  # one token per run
    assert token.startswith(f"{socket.gethostname()}-{os.getpid()}-")
    stored = msgpack.unpackb(fields[f"first@{token}".encode()])
    assert stored["v"] == 1
    assert (stored["node"], stored["process"], stored["final"]) == ("first", token, False)
    assert set(stored) == {
        "v", "node", "process", "started", "published", "interval", "final", "counters", "edges",
    }  # fmt: skip
    assert stored["edges"] == {"first->second": 0}
    assert stored["interval"] == FAST


async def test_fields_this_version_cannot_read_are_left_out(
    cluster: Cluster, raw: Redis, fast_stats: None
) -> None:
    worker, reader = cluster.process(pipeline), cluster.process(pipeline)
    key = stats_key(cluster)
    await raw.hset(key, mapping={"junk": b"\xc1", "newer": pack({"v": 99}), "odd": pack([1])})
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(serve, worker, ["first"])
            await reader.send("first", 1)
            stats = await stats_when(reader, processed("first", count=1))
            worker.stop()
    assert stats.nodes["first"].workers == 1


# -- worker processes --------------------------------------------------------------------------


def open_log(path: Path) -> IO[bytes]:
    return path.open("wb")


@contextlib.contextmanager
def printed_on_failure(paths: list[Path]) -> Iterator[None]:
    try:
        yield
    except BaseException:
        for path in paths:
            print(f"--- {path.name}\n{path.read_text(errors='replace')[-4000:]}")
        raise


async def start_worker(url: str, namespace: str, nodes: str, log: Path) -> Process:
    """``spark-nodes worker`` serving ``nodes`` of the pipeline, publishing every FAST s."""
    command = [
        sys.executable, "-m", "spark_nodes", "worker",
        "tests.graphs.redis_stats_graphs:pipeline", "--redis", url, "--namespace", namespace,
        "--nodes", nodes, "--log-format", "json",
    ]  # fmt: skip
    env = {**os.environ, INTERVAL_ENV: str(FAST)}
    with open_log(log) as stderr:
        return await anyio.open_process(
            command, cwd=ROOT, env=env, stdin=DEVNULL, stdout=DEVNULL, stderr=stderr
        )


async def workers_of(graph: Graph) -> list[int]:
    """Per node, the processes that reported it."""
    counts = await counts_of(graph)
    workers: list[int] = []
    for figures in counts.nodes.values():
        count = figures["workers"]
        assert isinstance(count, int)
        workers.append(count)
    return workers


async def test_worker_processes_publish_their_figures_and_a_final_report_when_stopped(
    redis_url: str, tmp_path: Path
) -> None:
    namespace = new_namespace()
    reader = pipeline()
    reader.use_redis(redis_url, namespace=namespace)
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    processes: list[Process] = []
    try:
        with printed_on_failure(logs), anyio.fail_after(WAIT):
            for nodes, log in zip(("first", "second"), logs, strict=True):
                processes.append(await start_worker(redis_url, namespace, nodes, log))
            while await workers_of(reader) != [1, 1, 0]:  # noqa: ASYNC110 - other processes
                await anyio.sleep(0.02)
            for number in range(20):
                await reader.send("first", number)
            live = await stats_when(
                reader,
                lambda s: (
                    processed("first", "second", count=20)(s)
                    and s.nodes["sink"].mailbox_depth == 20
                    and s.running
                ),
            )
            for process in processes:
                process.send_signal(signal.SIGTERM)
            assert [await process.wait() for process in processes] == [0, 0]
            ended = await reader.stats()
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
            with anyio.CancelScope(shield=True):
                await process.wait()
                await process.aclose()
        await reader.aclose()
        async with open_raw_client(redis_url) as client:
            await purge(client, namespace)
    assert live.running
    assert live.edges["first->second"].sent == live.edges["second->sink"].sent == 20
    assert not ended.running
    assert processed("first", "second", count=20)(ended)


async def test_ended_runs_fold_into_one_retired_total_per_node(
    cluster: Cluster, raw: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_redis_stats, "PUBLISH_INTERVAL", FAST)
    reader = cluster.process(pipeline)
    metrics = MetricsObserver()
    for run in range(3):
        worker = cluster.process(pipeline)
        if run == 2:
            worker.observe(metrics)  # the last run's samples stay with the total
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(serve, worker, None)
                await stats_when(reader, lambda s: s.running)
                for number in range(10):
                    await reader.send("first", number)
                await stats_when(reader, processed("sink", count=10 * (run + 1)))
                worker.stop()
    fields: Any = await raw.hgetall(stats_key(cluster))
    assert sorted(fields) == [b"first@retired", b"second@retired", b"sink@retired"]
    stats = await reader.stats()
    assert not stats.running
    assert processed("first", "second", "sink", count=30)(stats)
    assert stats.edges["second->sink"].sent == 30
    assert [node.workers for node in stats.nodes.values()] == [0, 0, 0]
    timing = stats.nodes["second"].process_time
    assert timing is not None
    assert timing.count == 10  # the samples of the last run that had some
