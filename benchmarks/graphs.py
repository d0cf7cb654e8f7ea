"""A 3-node ``Graph`` pipeline vs the same over ``asyncio.Queue``; a 10,000-node graph.

Pipeline: a feeder sends N small dicts to the first stage; stage 1 and 2 pass each on
unchanged, stage 3 counts. The raw version is three tasks and three queues; ours is a
LONG_RUNNING graph of default ``go()`` loops fed with ``graph.send`` and drained with
``graph.shutdown()``, twice: with nodes whose ``process`` is a plain ``def``, and with the
same nodes as ``async def process`` (no awaits inside: the figure is the cost of driving a
coroutine per message). Each repeat runs the three cases one after the other; the best run
of each counts. A fourth case puts a ``CountWindow(size=100)`` in place of the middle
identity node (the last node counts the windows' items), against the identity pipeline of
the same run.

Request/response: ``graph.invoke`` one input at a time through the same three stages,
against a hand-written request/reply over three ``asyncio.Queue`` stages (each request
carries a future that the last stage resolves).

Scale: a chain of 10,000 relay nodes is built, started, passes one message end to end and
shuts down, in a fresh interpreter so its peak memory is its own.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import itertools
import json
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from benchmarks._report import Result, Target
from spark_nodes import (
    CountWindow,
    ExecutionContext,
    Graph,
    MetricsObserver,
    Node,
    Task,
    TaskType,
)


async def _raw_pipeline(n: int) -> float:
    q1: asyncio.Queue[Any] = asyncio.Queue()
    q2: asyncio.Queue[Any] = asyncio.Queue()
    q3: asyncio.Queue[Any] = asyncio.Queue()
    counted = 0

    async def feed() -> None:
        for i in range(n):
            await q1.put({"i": i})

    async def relay(source: asyncio.Queue[Any], target: asyncio.Queue[Any]) -> None:
        for _ in range(n):
            await target.put(await source.get())

    async def count() -> None:
        nonlocal counted
        for _ in range(n):
            await q3.get()
            counted += 1

    start = time.perf_counter()
    async with anyio.create_task_group() as group:
        group.start_soon(count)
        group.start_soon(relay, q2, q3)
        group.start_soon(relay, q1, q2)
        group.start_soon(feed)
    elapsed = time.perf_counter() - start
    assert counted == n
    return elapsed


class _Identity(Node):
    def process(self, context: ExecutionContext) -> Any:
        return context.inputs


class _Count(Node):
    def process(self, context: ExecutionContext) -> None:
        self.state["count"] = self.state.get("count", 0) + 1


class _AsyncIdentity(Node):
    async def process(self, context: ExecutionContext) -> Any:
        return context.inputs


class _AsyncCount(Node):
    async def process(self, context: ExecutionContext) -> None:
        self.state["count"] = self.state.get("count", 0) + 1


async def _graph_pipeline(n: int, *, asynchronous: bool = False, metered: bool = False) -> float:
    """Time ``n`` messages through identity >> identity >> count (``async def`` nodes if asked).

    ``metered``: with a ``MetricsObserver`` on the whole graph (every node and edge).
    """
    identity, count = (_AsyncIdentity, _AsyncCount) if asynchronous else (_Identity, _Count)
    first, second, counter = identity(id="first"), identity(id="second"), count(id="count")
    first >> second >> counter
    graph = Graph(start=first)
    metrics = MetricsObserver()
    if metered:
        graph.observe(metrics)

    elapsed = await _feed_and_run(graph, first, n)
    assert counter.state["count"] == n
    if metered:
        stats = await metrics.snapshot()
        timing = stats.nodes["count"].process_time
        assert timing is not None
        assert timing.count > 0
        assert stats.edges["second->count"].sent == n
    return elapsed


class _CountItems(Node):
    def process(self, context: ExecutionContext) -> None:
        self.state["count"] = self.state.get("count", 0) + len(context.inputs.content["items"])


async def _window_pipeline(n: int) -> float:
    """Time ``n`` messages through identity >> CountWindow(size=100) >> count of the items."""
    first, window, counter = _Identity(id="first"), CountWindow(100, id="window"), _CountItems()
    first >> window >> counter
    elapsed = await _feed_and_run(Graph(start=first), first, n)
    assert counter.state["count"] == n  # the last, partial window flushed at shutdown
    return elapsed


async def _feed_and_run(graph: Graph, first: Node, n: int) -> float:
    """Run ``graph`` long-running, send ``n`` messages to ``first``, shut it down; seconds."""

    async def feed() -> None:
        for i in range(n):
            await graph.send(first, {"i": i})
        await graph.shutdown()

    start = time.perf_counter()
    async with anyio.create_task_group() as group:
        group.start_soon(feed)
        await graph.run(Task(type=TaskType.LONG_RUNNING))
    return time.perf_counter() - start


async def _raw_requests(n: int) -> float:
    """Time ``n`` request/replies, one at a time, through three queue stages."""
    q1: asyncio.Queue[Any] = asyncio.Queue()
    q2: asyncio.Queue[Any] = asyncio.Queue()
    q3: asyncio.Queue[Any] = asyncio.Queue()

    async def relay(source: asyncio.Queue[Any], target: asyncio.Queue[Any]) -> None:
        while True:
            await target.put(await source.get())

    async def answer() -> None:
        while True:
            payload, future = await q3.get()
            future.set_result(payload)

    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    async with anyio.create_task_group() as group:
        group.start_soon(answer)
        group.start_soon(relay, q2, q3)
        group.start_soon(relay, q1, q2)
        for i in range(n):
            future = loop.create_future()
            await q1.put(({"i": i}, future))
            assert (await future)["i"] == i
        group.cancel_scope.cancel()
    return time.perf_counter() - start


async def _graph_invokes(n: int) -> float:
    """Time ``n`` invokes, one at a time, through identity >> identity >> identity."""
    first, second, third = _Identity(id="first"), _Identity(id="second"), _Identity(id="third")
    first >> second >> third
    graph = Graph(start=first)
    start = time.perf_counter()
    async with graph.open_run(Task(type=TaskType.LONG_RUNNING)) as running:
        for i in range(n):
            assert (await running.invoke({"i": i})).content["i"] == i
    return time.perf_counter() - start


def _best(run: Callable[..., Awaitable[float]], n: int, **options: Any) -> float:
    """One timed run of ``run(n, **options)`` in a fresh event loop, after a collection."""
    gc.collect()
    return float(anyio.run(functools.partial(run, n, **options)))


async def _chain(length: int) -> dict[str, float]:
    start = time.perf_counter()
    nodes = [Node(id=f"n{i}") for i in range(length)]
    for left, right in itertools.pairwise(nodes):
        left >> right
    graph = Graph(start=nodes[0])
    built = time.perf_counter()
    result = await graph.run(Task(inputs={"hello": "world"}))
    done = time.perf_counter()
    assert result.content == {"hello": "world"}, result
    assert result.node_stats[f"n{length - 1}"].processed == 1
    return {"build": built - start, "run": done - built, "total": done - start}


def scale_main(length: int) -> None:
    """Entry point of the fresh interpreter: print timings, then peak memory, as JSON."""
    timings = anyio.run(_chain, length)
    gc.collect()
    tracemalloc.start()
    anyio.run(_chain, length)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(json.dumps({**timings, "peak_mib": peak / 2**20}))


def _scale(length: int) -> dict[str, float]:
    completed = subprocess.run(  # noqa: S603 - our own module, fixed argv
        [sys.executable, "-c", f"from benchmarks.graphs import scale_main; scale_main({length})"],
        capture_output=True,
        text=True,
        check=True,
    )
    figures: dict[str, float] = json.loads(completed.stdout.strip().splitlines()[-1])
    return figures


def run(*, n: int = 200_000, repeats: int = 5, round_trips: int = 0) -> list[Result]:
    """Run the graph benchmarks and return one result per figure."""
    del round_trips
    raw = sync = asynchronous = metered = windowed = raw_requests = invokes = float("inf")
    requests = max(1, n // 40)
    for _ in range(repeats):
        raw = min(raw, _best(_raw_pipeline, n))
        sync = min(sync, _best(_graph_pipeline, n))
        metered = min(metered, _best(_graph_pipeline, n, metered=True))
        asynchronous = min(asynchronous, _best(_graph_pipeline, n, asynchronous=True))
        windowed = min(windowed, _best(_window_pipeline, n))
        raw_requests = min(raw_requests, _best(_raw_requests, requests))
        invokes = min(invokes, _best(_graph_invokes, requests))
    scale = min((_scale(10_000) for _ in range(3)), key=lambda figures: figures["total"])
    raw_rate = n / raw * 1e-3
    return [
        Result("raw 3-stage asyncio.Queue pipeline", raw_rate, "k msg/s"),
        Result(
            "3-node LONG_RUNNING Graph, sync process",
            n / sync * 1e-3,
            "k msg/s",
            Target(raw_rate, None, "raw pipeline", min_ratio=0.6),
        ),
        Result(
            "same, with a MetricsObserver on every node and edge",
            n / metered * 1e-3,
            "k msg/s",
            Target(n / sync * 1e-3, None, "without one", min_ratio=0.65),
        ),
        Result(
            "3-node LONG_RUNNING Graph, async def process",
            n / asynchronous * 1e-3,
            "k msg/s",
            Target(raw_rate, None, "raw pipeline", min_ratio=0.5),
        ),
        Result(
            "same, sync process, a CountWindow(size=100) as the middle node",
            n / windowed * 1e-3,
            "k msg/s",
            Target(n / sync * 1e-3, None, "identity middle node", min_ratio=0.8),
        ),
        Result("raw request/reply through 3 queue stages", raw_requests / requests * 1e6, "us"),
        Result(
            "graph.invoke through 3 nodes, one at a time",
            invokes / requests * 1e6,
            "us",
            Target(raw_requests / requests * 1e6, None, "raw request/reply"),
        ),
        Result("10,000-node chain: build", scale["build"] * 1000, "ms"),
        Result("10,000-node chain: start, 1 message, shutdown", scale["run"] * 1000, "ms"),
        Result(
            "10,000-node chain: total",
            scale["total"] * 1000,
            "ms",
            Target(1000.0, 1.0, "of 1 s"),
        ),
        Result(
            "10,000-node chain: peak traced memory",
            scale["peak_mib"],
            "MiB",
            Target(30.0, 1.0, "of 30 MiB"),
        ),
    ]
