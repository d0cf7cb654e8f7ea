"""A 3-node ``Graph`` on Redis vs the same pipeline hand-written with redis-py, same run.

The pipeline: identity >> identity >> count, each stage reading its own stream and writing
the next one. One private ``redis-server`` (AOF on, ``appendfsync everysec``) serves both
sides; everything runs in one asyncio event loop of this process.

Raw: three tasks, each with its own client. A stage reads ``XREADGROUP GROUP g c COUNT 100
BLOCK 100 STREAMS sK >``, decodes each entry (msgpack), then sends ONE ``MULTI`` pipeline
per batch: the re-encoded entries XADDed to the next stream and one XACK of the batch
(stage 3, which counts, only XACKs). Entries are not deleted.

Ours: ``Graph(start=first, name=..., backend=url, namespace=...)`` with its default
mailbox options, served by this process (``await graph.serve()``); the count node counts
in memory and wakes the benchmark when it has seen what it waits for. Ours does more per
message than the raw stages: fenced acks that also delete the entry, mailbox counters, and
each node's latest output kept for the graph state.

Throughput: N small dicts are preloaded into the first stream before the clock starts
(raw: pipelined XADD of msgpack payloads, 100 per round trip; ours: ``send_nowait`` on the
first node's mailbox and ``flush()`` every 100). Timed: from starting the stage tasks (or
``serve()``) until the counter has seen N. Reported: messages per second; this process's
CPU seconds (``time.process_time()``) per 10,000 messages; the server's CPU seconds
(INFO cpu: ``used_cpu_user`` + ``used_cpu_sys``) per 10,000 messages, both over the timed
part. Best of the interleaved repeats (highest rate, lowest CPU).

Latency: with the pipeline running and idle, one message at a time is written to the
first stream (raw: XADD; ours: ``graph.send``) and timed until stage 3 (the count node)
has handled it. The p50 of every round trip of every repeat.
"""

from __future__ import annotations

import statistics
import time
import uuid
from dataclasses import dataclass
from typing import Any

import anyio
import msgpack
from anyio.abc import TaskGroup

from benchmarks._report import Result, Target
from spark_nodes import ExecutionContext, Graph, Node
from spark_nodes._redis_client import RedisClient, open_client
from spark_nodes.channels import ChannelMessage, RedisChannel
from spark_nodes.testing import open_redis_server

BATCH = 100
GROUP = "g"
TIMEOUT = 120.0  # seconds any case may take: a bug shows as an error, not a hang
PER = 10_000  # CPU figures are per this many messages


def _payload(i: int) -> dict[str, Any]:
    return {"i": i, "order": "A-1234", "amount": 12.5}


class _Arrivals:
    """What stage 3 has handled so far; the benchmark awaits a count instead of polling."""

    def __init__(self) -> None:
        self.count = 0
        self._wanted = 0
        self._reached: anyio.Event | None = None

    def add(self, handled: int = 1) -> None:
        self.count += handled
        if self._reached is not None and self.count >= self._wanted:
            self._reached.set()
            self._reached = None

    async def wait_for(self, count: int) -> None:
        if self.count < count:
            self._wanted, self._reached = count, anyio.Event()
            await self._reached.wait()


@dataclass(frozen=True)
class _Throughput:
    rate: float  # messages per second
    cpu: float  # this process's CPU seconds per PER messages
    server_cpu: float  # redis-server's CPU seconds per PER messages


class _Clock:
    """Wall time, this process's CPU and the server's CPU, from ``start()`` to ``stop()``."""

    def __init__(self, admin: RedisClient) -> None:
        self._admin = admin
        self._wall = self._cpu = self._server = 0.0

    async def start(self) -> None:
        self._server = await _server_cpu(self._admin)
        self._cpu = time.process_time()
        self._wall = time.perf_counter()

    async def stop(self, n: int) -> _Throughput:
        wall = time.perf_counter() - self._wall
        cpu = time.process_time() - self._cpu
        server = await _server_cpu(self._admin) - self._server
        return _Throughput(n / wall, cpu / n * PER, server / n * PER)


async def _server_cpu(admin: RedisClient) -> float:
    info: dict[str, Any] = await admin.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def _purge(admin: RedisClient, prefix: str) -> None:
    names = [name async for name in admin.scan_iter(match=f"{prefix}:*", count=1000)]
    if names:
        await admin.delete(*names)


# -- raw redis-py ---------------------------------------------------------------------------


async def _stage(
    client: RedisClient,
    source: str,
    target: str | None,
    arrivals: _Arrivals | None,
    limit: int | None,
) -> None:
    """A raw stage: read a batch, decode it, forward and ack it in one MULTI, ``limit`` times."""
    handled = 0
    while limit is None or handled < limit:
        reply: Any = await client.xreadgroup(GROUP, "c", {source: ">"}, count=BATCH, block=100)
        if not reply:
            continue
        entries = reply[0][1]
        async with client.pipeline(transaction=True) as pipe:
            for _entry, fields in entries:
                payload = msgpack.unpackb(fields[b"m"])
                if target is not None:
                    pipe.xadd(target, {"m": msgpack.packb(payload)})
            pipe.xack(source, GROUP, *[entry for entry, _ in entries])
            await pipe.execute()
        handled += len(entries)
        if arrivals is not None:
            arrivals.add(len(entries))


class _RawPipeline:
    """Three streams with their groups, and a client per stage."""

    def __init__(self, url: str) -> None:
        self.prefix = f"bench-raw-{uuid.uuid4().hex}"
        self.streams = [f"{self.prefix}:s{k}" for k in (1, 2, 3)]
        self.clients = [open_client(url) for _ in self.streams]
        self.arrivals = _Arrivals()

    async def create(self) -> None:
        for stream in self.streams:
            await self.clients[0].xgroup_create(stream, GROUP, id="0", mkstream=True)

    def start(self, group: TaskGroup, limit: int | None) -> None:
        s1, s2, s3 = self.streams
        c1, c2, c3 = self.clients
        group.start_soon(_stage, c3, s3, None, self.arrivals, limit)
        group.start_soon(_stage, c2, s2, s3, None, limit)
        group.start_soon(_stage, c1, s1, s2, None, limit)

    async def aclose(self, admin: RedisClient) -> None:
        await _purge(admin, self.prefix)
        for client in self.clients:
            await client.aclose()


async def _raw_throughput(url: str, admin: RedisClient, n: int) -> _Throughput:
    raw = _RawPipeline(url)
    try:
        await raw.create()
        for start in range(0, n, BATCH):
            async with admin.pipeline(transaction=False) as pipe:
                for i in range(start, min(n, start + BATCH)):
                    pipe.xadd(raw.streams[0], {"m": msgpack.packb(_payload(i))})
                await pipe.execute()
        clock = _Clock(admin)
        await clock.start()
        async with anyio.create_task_group() as group:
            raw.start(group, limit=n)
            await raw.arrivals.wait_for(n)
            figures = await clock.stop(n)
    finally:
        await raw.aclose(admin)
    return figures


async def _raw_latencies(url: str, admin: RedisClient, count: int) -> list[float]:
    raw = _RawPipeline(url)
    times = []
    try:
        await raw.create()
        async with anyio.create_task_group() as group:
            raw.start(group, limit=None)
            for i in range(count):
                start = time.perf_counter()
                await admin.xadd(raw.streams[0], {"m": msgpack.packb(_payload(i))})
                await raw.arrivals.wait_for(i + 1)
                times.append(time.perf_counter() - start)
            group.cancel_scope.cancel()
    finally:
        await raw.aclose(admin)
    return times


# -- ours -----------------------------------------------------------------------------------


class _Identity(Node):
    def process(self, context: ExecutionContext) -> Any:
        return context.inputs


class _Count(Node):
    def __init__(self, *, id: str, arrivals: _Arrivals) -> None:
        super().__init__(id=id)
        self.arrivals = arrivals

    def process(self, context: ExecutionContext) -> None:
        self.arrivals.add()


def _echo(value: Any) -> Any:
    return value


class _Stepped(Node):
    """Passes its input through a durable step: one stored result per message."""

    async def process(self, context: ExecutionContext) -> Any:
        return await context.step("echo", _echo, context.inputs.content)


class _OurPipeline:
    """first >> second >> counter as a Redis graph on its own namespace; with ``step``,
    ``second`` runs a durable step per message."""

    def __init__(self, url: str, *, step: bool = False) -> None:
        suffix = uuid.uuid4().hex
        self.namespace = f"bench-graph-{suffix}"
        self.arrivals = _Arrivals()
        self.first = _Identity(id="first")
        second = _Stepped(id="second") if step else _Identity(id="second")
        self.first >> second >> _Count(id="count", arrivals=self.arrivals)
        self.graph = Graph(
            start=self.first, name=f"pipeline-{suffix}", backend=url, namespace=self.namespace
        )

    async def aclose(self, admin: RedisClient) -> None:
        await self.graph.aclose()
        await _purge(admin, self.namespace)


async def _graph_throughput(
    url: str, admin: RedisClient, n: int, *, step: bool = False
) -> _Throughput:
    ours = _OurPipeline(url, step=step)
    try:
        mailbox = ours.first.mailbox
        assert isinstance(mailbox, RedisChannel), mailbox
        for start in range(0, n, BATCH):
            for i in range(start, min(n, start + BATCH)):
                mailbox.send_nowait(ChannelMessage(_payload(i)))
            await mailbox.flush()
        clock = _Clock(admin)
        await clock.start()
        async with anyio.create_task_group() as group:
            group.start_soon(ours.graph.serve)
            await ours.arrivals.wait_for(n)
            figures = await clock.stop(n)
            await ours.graph.shutdown()
    finally:
        await ours.aclose(admin)
    return figures


async def _graph_latencies(
    url: str, admin: RedisClient, count: int, *, step: bool = False
) -> list[float]:
    ours = _OurPipeline(url, step=step)
    times = []
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(ours.graph.serve)
            for i in range(count):
                start = time.perf_counter()
                await ours.graph.send(ours.first, _payload(i))
                await ours.arrivals.wait_for(i + 1)
                times.append(time.perf_counter() - start)
            await ours.graph.shutdown()
    finally:
        await ours.aclose(admin)
    return times


# -- the suite ------------------------------------------------------------------------------


async def _measure(url: str, n: int, repeats: int, round_trips: int) -> list[Result]:
    admin = open_client(url)
    raw_runs: list[_Throughput] = []
    our_runs: list[_Throughput] = []
    raw_times: list[float] = []
    our_times: list[float] = []
    step_runs: list[_Throughput] = []
    step_times: list[float] = []
    try:
        for _ in range(repeats):
            with anyio.fail_after(TIMEOUT):
                raw_runs.append(await _raw_throughput(url, admin, n))
            with anyio.fail_after(TIMEOUT):
                our_runs.append(await _graph_throughput(url, admin, n))
            with anyio.fail_after(TIMEOUT):
                raw_times += await _raw_latencies(url, admin, round_trips)
            with anyio.fail_after(TIMEOUT):
                our_times += await _graph_latencies(url, admin, round_trips)
            with anyio.fail_after(TIMEOUT):
                step_runs.append(await _graph_throughput(url, admin, n, step=True))
            with anyio.fail_after(TIMEOUT):
                step_times += await _graph_latencies(url, admin, round_trips, step=True)
    finally:
        await admin.aclose()
    raw_rate = max(run.rate for run in raw_runs) / 1000
    raw_cpu = min(run.cpu for run in raw_runs)
    raw_server = min(run.server_cpu for run in raw_runs)
    raw_p50 = statistics.median(raw_times) * 1e6
    our_rate = max(run.rate for run in our_runs) / 1000
    our_p50 = statistics.median(our_times) * 1e6
    return [
        Result("raw redis-py 3-stage stream pipeline", raw_rate, "k msg/s"),
        Result(
            "3-node Redis Graph, served here",
            max(run.rate for run in our_runs) / 1000,
            "k msg/s",
            Target(raw_rate, None, "raw pipeline", min_ratio=1.0),
        ),
        Result("raw pipeline: this process's CPU per 10k msgs", raw_cpu, "s"),
        Result(
            "Redis Graph: this process's CPU per 10k msgs",
            min(run.cpu for run in our_runs),
            "s",
            Target(raw_cpu, None, "raw"),
        ),
        Result("raw pipeline: redis-server CPU per 10k msgs", raw_server, "s"),
        Result(
            "Redis Graph: redis-server CPU per 10k msgs",
            min(run.server_cpu for run in our_runs),
            "s",
            Target(raw_server, None, "raw"),
        ),
        Result("raw single-message latency through 3 stages p50", raw_p50, "us"),
        Result(
            "Redis Graph single-message latency through 3 nodes p50",
            our_p50,
            "us",
            Target(raw_p50, None, "raw"),
        ),
        Result(
            "3-node Redis Graph, a durable step in the middle node",
            max(run.rate for run in step_runs) / 1000,
            "k msg/s",
            Target(our_rate, None, "no step"),
        ),
        Result(
            "its single-message latency through 3 nodes p50",
            statistics.median(step_times) * 1e6,
            "us",
            Target(our_p50, None, "no step"),
        ),
    ]


def run(*, n: int = 20_000, repeats: int = 3, round_trips: int = 500) -> list[Result]:
    """Measure on a private redis-server (AOF on) and return the rows."""
    with open_redis_server(appendonly=True) as server:
        results: list[Result] = anyio.run(
            _measure, server.url, n, repeats, round_trips, backend="asyncio"
        )
    return results
