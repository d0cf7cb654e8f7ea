"""A streaming pipeline: ``python -m examples.streaming`` (in memory) or ``--redis``.

Temperature sensors of a cold store report through a gateway, as text lines
(``ts=1717236010 sensor=s2 celsius=3.4``). The pipeline turns them into the mean, minimum
and maximum of each sensor per minute::

    source -> parse -> enrich -> per_minute -> store

- **source**: :func:`feed`, the producer: it sends each line with ``graph.send``.
- **parse**: a line -> a reading. A malformed line raises :class:`MalformedLine`, a
  ``NonRetriableError``: it is dead-lettered at once, with why. Nothing is lost.
- **enrich**: looks the sensor up in a registry (its site, and the calibration offset
  added to its readings): a service call of about a millisecond, the slow step.
- **per_minute**: a ``TimeWindow`` of 60 s of *event time* (``time_field="ts"``), per
  sensor: its results depend on the readings only, not on how fast they come. A reading
  10 s late still joins its minute (``allowed_lateness=10``); one that comes after its
  minute was emitted is dead-lettered (``LateEvent``), never dropped silently.
- **store**: writes each minute to the graph state, under ``minute:{sensor}:{start}``
  (a redelivery overwrites the same key: at-least-once delivery stores each minute once).

**Backpressure, in memory.** ``parse`` and ``enrich`` have bounded mailboxes
(``NodeConfig(mailbox_maxsize=...)``). The slow ``enrich`` fills its mailbox, so ``parse``'s
forwards wait for room, so ``parse``'s mailbox fills, so the producer's ``graph.send`` waits:
the whole pipeline runs at the pace of its slowest node, with at most the bounds queued.
:class:`Backpressure` reports how many sends waited, for how long, and each bounded
mailbox's peak depth, which never passes its bound.

**On Redis** (``--redis``, :func:`run_on_redis`) the same :func:`build` is served by two
worker processes (``spark-nodes worker examples.streaming:build --nodes ...``), ``ingest``
(parse, enrich) and ``aggregate`` (per_minute, store); this process feeds the lines, waits,
shuts the graph down and reads the minutes from the graph state. Three things differ:

- ``mailbox_maxsize`` is not applied on Redis: a backlog waits in the node's stream, where
  it is durable (watch it with ``spark-nodes inspect``). The producer never waits.
- A window lives in one process's memory (its messages stay pending in Redis until the
  window is emitted, so a crash loses none of them). So ``per_minute`` is served by *one*
  process. ``parse`` and ``enrich`` could be served by more, but readings would then reach
  the window out of order: raise ``allowed_lateness`` to match.
- The last minute of each sensor is still open when the input ends: the shutdown flushes
  it, in memory as on Redis (the process serving the window emits its open windows and
  acks their readings before the window's shutdown passes on to ``store``).
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import itemgetter
from pathlib import Path
from typing import Any

import anyio

from spark_nodes import (
    ExecutionContext,
    Graph,
    Node,
    NodeConfig,
    NonRetriableError,
    Task,
    TaskType,
    TimeWindow,
    Window,
)
from spark_nodes.channels import dead_letters
from spark_nodes.state import GraphState
from spark_nodes.testing import open_redis_server

ROOT = Path(__file__).resolve().parent.parent

START = 1_717_236_000  # 2024-06-01 10:00:00 UTC, on a minute
MINUTES = 6  # of readings, one from each sensor every 10 s (see _MINUTE_BY_MINUTE)
LOOKUP_SECONDS = 0.001  # what a registry call takes
PARSE_MAILBOX = 16  # the bounds: how much may queue before a sender waits
ENRICH_MAILBOX = 8

# On Redis: which worker process serves which nodes. The window is in one process only.
WORKERS = {"ingest": ("parse", "enrich"), "aggregate": ("per_minute", "store")}


@dataclass(frozen=True)
class Sensor:
    """What the registry knows of a sensor."""

    site: str
    offset: float  # its calibration, added to what it reads


SENSORS = {
    "s1": Sensor("freezer", 0.3),
    "s2": Sensor("cold-room", -0.2),
    "s3": Sensor("loading-dock", 0.0),
    "s4": Sensor("office", 0.5),
}
_TYPICAL = {"s1": -18.0, "s2": 3.5, "s3": 12.0, "s4": 21.0}  # what each reads, about
_MINUTE_BY_MINUTE = {  # and what happens: the freezer door is left open at 10:02
    "s1": [0.0, 0.0, 2.5, 4.0, 1.5, 0.5],
    "s2": [0.0, 0.0, 0.0, 0.5, 0.0, 0.0],
    "s3": [0.0, 0.5, 1.0, 1.5, 2.0, 2.5],  # the sun reaches the dock
    "s4": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
}


def lines() -> list[str]:
    """The gateway's lines, in the order they arrive.

    A reading from each sensor every 10 s for ``MINUTES`` minutes, and some trouble: three
    malformed lines, a reading of ``s4`` that arrives 10 s late (it still counts), and one
    of ``s2`` that the gateway buffered through an outage and sends 170 s late (too late:
    its minute is out).
    """
    delayed = {("s4", START + 50): 10, ("s2", START + 130): 170}  # seconds late
    arriving: list[tuple[int, int, str]] = [  # (arrival, after the readings due then, line)
        (START + 95, 1, f"ts={START + 95} sensor=s3 celsius=ERR"),
        (START + 205, 1, f"ts={START + 200} sensor=s1"),
        (START + 265, 1, "### gateway gw-7 restarted ###"),
    ]
    for step in range(MINUTES * 6):
        ts = START + 10 * step
        for number, sensor in enumerate(SENSORS):
            drift = _MINUTE_BY_MINUTE[sensor][step // 6]
            celsius = _TYPICAL[sensor] + drift + ((step * 7 + number * 3) % 9 - 4) / 10
            late = delayed.get((sensor, ts), 0)
            arriving.append(
                (ts + late, int(late > 0), f"ts={ts} sensor={sensor} celsius={celsius:.1f}")
            )
    arriving.sort(key=itemgetter(0, 1))  # stable: readings due together keep their order
    return [line for *_, line in arriving]


class MalformedLine(NonRetriableError, ValueError):
    """A line that is not a reading. No retry can fix it: it is dead-lettered at once."""


class Parse(Node):
    """``"ts=... sensor=... celsius=..."`` -> ``{"ts", "sensor", "celsius"}``."""

    def process(self, context: ExecutionContext) -> dict[str, Any]:
        line: str = context.inputs.content
        fields: dict[str, str] = {}
        for part in line.split():
            name, _, value = part.partition("=")
            fields[name] = value
        missing = [name for name in ("ts", "sensor", "celsius") if not fields.get(name)]
        if missing:
            raise MalformedLine(f"no {', '.join(missing)} in {line!r}")
        ts, celsius = fields["ts"], fields["celsius"]
        if not ts.isdigit():
            raise MalformedLine(f"ts {ts!r} is not epoch seconds in {line!r}")
        try:
            degrees = float(celsius)
        except ValueError:
            degrees = math.nan
        if not math.isfinite(degrees):
            raise MalformedLine(f"celsius {celsius!r} is not a number in {line!r}")
        return {"ts": int(ts), "sensor": fields["sensor"], "celsius": degrees}


async def lookup(sensor: str) -> Sensor:
    """The sensor registry: a service call, so it takes a while."""
    await anyio.sleep(LOOKUP_SECONDS)
    return SENSORS[sensor]


class Enrich(Node):
    """Adds the sensor's site and applies its calibration; the slow node."""

    async def process(self, context: ExecutionContext) -> dict[str, Any]:
        reading = context.inputs.content
        sensor = await lookup(reading["sensor"])
        celsius = round(reading["celsius"] + sensor.offset, 2)
        return {**reading, "celsius": celsius, "site": sensor.site}


class PerMinute(TimeWindow):
    """Each sensor's readings per minute of event time -> their count, mean, min and max."""

    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__(
            60, time_field="ts", allowed_lateness=10, key=itemgetter("sensor"), **node_kwargs
        )

    def aggregate(self, window: Window) -> dict[str, Any]:
        celsius = [reading["celsius"] for reading in window.items]
        return {
            "sensor": window.key,
            "site": window.items[0]["site"],
            "minute": int(window.start),
            "readings": len(celsius),
            "mean": round(math.fsum(celsius) / len(celsius), 2),  # fsum: any order, one sum
            "min": min(celsius),
            "max": max(celsius),
        }


class Store(Node):
    """The sink: each minute into the graph state, keyed, so storing it twice is harmless."""

    async def process(self, context: ExecutionContext) -> None:
        minute = context.inputs.content
        await context.graph_state.set(f"minute:{minute['sensor']}:{minute['minute']}", minute)


def build() -> Graph:
    """The graph, in memory or served by worker processes: no Redis in it."""
    parse = Parse(id="parse", config=NodeConfig(mailbox_maxsize=PARSE_MAILBOX))
    enrich = Enrich(id="enrich", config=NodeConfig(mailbox_maxsize=ENRICH_MAILBOX))
    per_minute, store = PerMinute(id="per_minute"), Store(id="store")
    parse >> enrich >> per_minute >> store
    return Graph(parse, name="sensor_minutes")


@dataclass(frozen=True)
class Rejected:
    """A dead letter: what a node gave up on, and why."""

    node: str
    error_type: str
    error: str
    content: Any


@dataclass
class Backpressure:
    """What the producer felt, and how deep the bounded mailboxes got (in memory)."""

    sends: int = 0
    waited: int = 0  # sends that found parse's mailbox full, and waited for room
    waited_seconds: float = 0.0  # how long those sends took
    seconds: float = 0.0  # how long the producer took to send every line
    peaks: dict[str, tuple[int, int]] = field(default_factory=dict)  # node: (peak, bound)


@dataclass
class Report:
    """What a run of the pipeline produced."""

    lines: int
    minutes: list[dict[str, Any]]  # by sensor, then minute
    rejected: list[Rejected]  # by node, then content
    backpressure: Backpressure
    worker_exit_codes: list[int] = field(default_factory=list)  # on Redis
    left_pending: int = 0  # on Redis: entries delivered and never acked, at the end


async def feed(graph: Graph, lines: Sequence[str]) -> Backpressure:
    """The source: send each line to ``parse``; count the sends that had to wait."""
    parse = graph.nodes["parse"].mailbox
    pressure = Backpressure(sends=len(lines))
    began = time.perf_counter()
    for line in lines:
        if parse.full():  # the send waits until parse takes messages out: backpressure
            started = time.perf_counter()
            await graph.send("parse", line)
            pressure.waited += 1
            pressure.waited_seconds += time.perf_counter() - started
        else:
            await graph.send("parse", line)
    pressure.seconds = time.perf_counter() - began
    return pressure


async def stored_minutes(state: GraphState) -> list[dict[str, Any]]:
    """What ``store`` wrote, by sensor and minute."""
    minutes = [await state.get(key) for key in await state.keys() if key.startswith("minute:")]
    return sorted(minutes, key=itemgetter("sensor", "minute"))


async def run_in_memory() -> Report:
    """Run the pipeline in this process; the graph drains (and flushes) at the end."""
    graph = build()
    sent = lines()
    async with graph.open_run(Task(type=TaskType.LONG_RUNNING)) as run:
        pressure = await feed(graph, sent)
    # Leaving the block drained the graph: every line was handled, and the minutes still
    # open were emitted when per_minute drained.
    assert run.result is not None
    for node_id in ("parse", "enrich"):
        mailbox = run.result.node_stats[node_id].mailbox
        pressure.peaks[node_id] = (mailbox.peak_depth, mailbox.maxsize)
    rejected = []
    while not graph.dead_letters.empty():
        letter = await graph.dead_letters.receive()
        why = letter.metadata["dead_letter"]
        rejected.append(Rejected(why["node"], why["error_type"], why["error"], letter.payload))
    return Report(
        lines=len(sent),
        minutes=await stored_minutes(graph.state),
        rejected=sorted(rejected, key=lambda letter: (letter.node, str(letter.content))),
        backpressure=pressure,
    )


async def run_on_redis(url: str) -> Report:
    """Serve the pipeline with two worker processes on ``url``; feed, drain and shut down."""
    namespace = f"streaming-{uuid.uuid4().hex[:8]}"
    workers = [
        await anyio.open_process(
            worker_command(url, namespace, name, nodes),
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=None,
            stderr=None,
        )
        for name, nodes in WORKERS.items()
    ]
    graph = build()
    graph.use_redis(url, namespace=namespace)
    try:
        await wait_until_served(graph)
        sent = lines()
        pressure = await feed(graph, sent)  # nothing waits: Redis applies no mailbox bound
        await graph.shutdown()  # everything sent before is handled first, then both exit
        codes = [await worker.wait() for worker in workers]
        rejected = []
        reading = await graph.inspect()
        for node_id, mailbox in reading.mailboxes.items():
            if mailbox.dead_letters:
                for letter in await dead_letters(graph.redis, mailbox.key):
                    message = letter.message
                    content = None if message is None else message.payload
                    error_type = letter.error_type or letter.reason
                    rejected.append(Rejected(node_id, error_type, letter.error, content))
        minutes = await stored_minutes(graph.state)
        left_pending = reading.pending  # the window's held readings were acked: 0
    finally:
        for worker in workers:
            if worker.returncode is None:
                worker.kill()
                await worker.wait()
        await graph.aclose()
    return Report(
        lines=len(sent),
        minutes=minutes,
        rejected=sorted(rejected, key=lambda letter: (letter.node, str(letter.content))),
        backpressure=pressure,
        worker_exit_codes=codes,
        left_pending=left_pending,
    )


def worker_command(url: str, namespace: str, name: str, nodes: Sequence[str]) -> list[str]:
    """``spark-nodes worker`` serving ``nodes`` of :func:`build`'s graph, as consumer ``name``."""
    return [
        sys.executable, "-m", "spark_nodes", "worker", "examples.streaming:build",
        "--redis", url, "--namespace", namespace, "--nodes", ",".join(nodes),
        "--consumer", name, "--log-level", "warning",
    ]  # fmt: skip


async def wait_until_served(graph: Graph) -> None:
    """Wait until a worker reads each node's mailbox.

    A worker that starts after the graph was shut down would serve the *next* run, so
    every worker joins before anything is sent.
    """
    while True:
        reading = await graph.inspect()
        if all(
            any(group.consumers for group in mailbox.groups)
            for mailbox in reading.mailboxes.values()
        ):
            return
        await anyio.sleep(0.05)  # a worker process is still starting


async def main(redis_url: str | None = None) -> Report:
    """Run the pipeline in memory, or, given ``redis_url``, on that Redis with two workers."""
    if redis_url is None:
        return await run_in_memory()
    return await run_on_redis(redis_url)


def summary(report: Report) -> str:
    """The report, for people."""
    readings = sum(minute["readings"] for minute in report.minutes)
    out = [
        f"{report.lines} lines -> {readings} readings in {len(report.minutes)} sensor-minutes; "
        f"{len(report.rejected)} dead letters",
        "",
        f"{'mean °C':<22}" + "".join(f"{_clock(START + 60 * n):>8}" for n in range(MINUTES)),
    ]
    for sensor_id, sensor in SENSORS.items():
        means = {m["minute"]: m["mean"] for m in report.minutes if m["sensor"] == sensor_id}
        row = "".join(f"{means.get(START + 60 * n, float('nan')):>8.2f}" for n in range(MINUTES))
        out.append(f"{sensor_id} {sensor.site:<19}{row}")
    out.append("")
    for letter in report.rejected:
        kind = letter.error_type.rpartition(".")[2]
        out.append(f"dead letter at {letter.node}: {kind}: {letter.error}")
    pressure = report.backpressure
    out.append("")
    if report.worker_exit_codes:
        out.append(
            f"on Redis: workers {', '.join(WORKERS)} exited with "
            f"{', '.join(map(str, report.worker_exit_codes))}; {report.left_pending} entries "
            f"left pending; no mailbox bound there, so {pressure.waited} of {pressure.sends} "
            f"sends waited"
        )
    else:
        peaks = ", ".join(
            f"{node} {peak}/{bound}" for node, (peak, bound) in pressure.peaks.items()
        )
        out.append(
            f"backpressure: {pressure.waited} of {pressure.sends} sends found parse's mailbox "
            f"full and waited, {pressure.waited_seconds:.2f} s of the {pressure.seconds:.2f} s "
            f"the producer took: it went at enrich's pace (a lookup per reading)"
        )
        out.append(f"peak mailbox depth / bound: {peaks}")
    return "\n".join(out)


def _clock(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%H:%M")


def cli(argv: Sequence[str] | None = None) -> None:
    """``python -m examples.streaming [--redis]``."""
    parser = argparse.ArgumentParser(prog="python -m examples.streaming", description=__doc__)
    parser.add_argument(
        "--redis",
        action="store_true",
        help="serve the graph with two worker processes on $REDIS_URL or a private redis-server",
    )
    args = parser.parse_args(argv)
    if not args.redis:
        report = anyio.run(main)
    elif url := os.environ.get("REDIS_URL"):
        report = anyio.run(main, url)
    else:
        with open_redis_server() as server:
            report = anyio.run(main, server.url)
    print(summary(report))


if __name__ == "__main__":
    cli()
