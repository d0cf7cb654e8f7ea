"""A 3-node ``Graph`` pipeline vs the same over ``asyncio.Queue``; a 10,000-node graph.

Pipeline: a feeder sends N small dicts to the first stage; stage 1 and 2 pass each on
unchanged, stage 3 counts. The raw version is three tasks and three queues; ours is a
LONG_RUNNING graph of default ``go()`` loops fed with ``graph.send`` and drained with
``graph.shutdown()``. Best of interleaved repeats.

Scale: a chain of 10,000 relay nodes is built, started, passes one message end to end and
shuts down, in a fresh interpreter so its peak memory is its own.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import subprocess
import sys
import time
import tracemalloc
from typing import Any

import anyio

from benchmarks._report import Result, Target
from spark_nodes import ExecutionContext, Graph, Node, Task, TaskType


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


async def _graph_pipeline(n: int) -> float:
    first, second, counter = _Identity(id="first"), _Identity(id="second"), _Count(id="count")
    first >> second >> counter
    graph = Graph(start=first)

    async def feed() -> None:
        for i in range(n):
            await graph.send(first, {"i": i})
        await graph.shutdown()

    start = time.perf_counter()
    async with anyio.create_task_group() as group:
        group.start_soon(feed)
        await graph.run(Task(type=TaskType.LONG_RUNNING))
    elapsed = time.perf_counter() - start
    assert counter.state["count"] == n
    return elapsed


def _best(run: Any, n: int) -> float:
    gc.collect()
    return float(anyio.run(run, n))


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
    raw = ours = float("inf")
    for _ in range(repeats):
        raw = min(raw, _best(_raw_pipeline, n))
        ours = min(ours, _best(_graph_pipeline, n))
    scale = min((_scale(10_000) for _ in range(3)), key=lambda figures: figures["total"])
    raw_rate, our_rate = n / raw * 1e-3, n / ours * 1e-3
    return [
        Result("raw 3-stage asyncio.Queue pipeline", raw_rate, "k msg/s"),
        Result(
            "3-node LONG_RUNNING Graph",
            our_rate,
            "k msg/s",
            Target(raw_rate, None, "raw pipeline", min_ratio=0.5),
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
