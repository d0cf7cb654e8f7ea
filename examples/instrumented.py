"""Instrumenting a graph's edges: ``python -m examples.instrumented``.

Sensor readings stream through ``parse -> enrich``; a hot reading takes ``enrich -> alert``,
the others ``enrich -> store``; a malformed one is dead-lettered by ``parse``. Three kinds of
instrument watch it, none of them touching the nodes:

- an **edge observer** on ``enrich->alert`` keeps every alert sent (a tap on one edge);
- a **node observer** on ``enrich``'s input counts the calls slower than a threshold;
- a **MetricsObserver** on the whole graph: counts, rates, mailbox depth, process and
  queue times per node and edge, shown as the live table ``spark-nodes run`` draws,
  and as a Mermaid diagram with the counts on it.

The same graph runs in the CLI's live view:
``spark-nodes run examples.instrumented:build --input-file readings.jsonl``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import anyio

from spark_nodes import (
    ExecutionContext,
    Graph,
    GraphEvent,
    GraphStats,
    MetricsObserver,
    Node,
    Task,
    TaskType,
)
from spark_nodes.cli.table import render, stats_table

HOT = 30.0  # degrees: a reading above it raises an alert
SLOW = 0.002  # seconds: an enrich call longer than this is counted as slow


class Parse(Node):
    """``"sensor:degrees"`` -> a reading; raises on a malformed line (dead-lettered)."""

    def process(self, context: ExecutionContext) -> dict[str, Any]:
        sensor, _, degrees = context.inputs.content.partition(":")
        return {"sensor": sensor, "degrees": float(degrees)}


class Enrich(Node):
    """Adds where the sensor is (a lookup that is slow now and then)."""

    SITES: ClassVar[dict[str, str]] = {"s1": "roof", "s2": "cellar", "s3": "lab"}

    async def process(self, context: ExecutionContext) -> dict[str, Any]:
        reading = context.inputs.content
        if reading["sensor"] == "s3":
            await anyio.sleep(0.005)  # the lab's lookup goes over the network, say
        return {**reading, "site": self.SITES.get(reading["sensor"], "unknown")}


class Keep(Node):
    """A sink: keeps what it gets."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kept: list[dict[str, Any]] = []

    def process(self, context: ExecutionContext) -> None:
        self.kept.append(context.inputs.content)


def build() -> Graph:
    """Wire the graph (also what ``spark-nodes run examples.instrumented:build`` loads)."""
    parse, enrich = Parse(id="parse"), Enrich(id="enrich")
    alert, store = Keep(id="alert"), Keep(id="store")
    parse >> enrich
    enrich.on(lambda reading: reading["degrees"] > HOT) >> alert
    enrich.otherwise() >> store
    return Graph(start=parse, name="sensors")


@dataclass
class SlowCalls:
    """A node observer: counts the ``process`` calls that took longer than ``threshold``."""

    threshold: float
    slow: list[float] = field(default_factory=list)

    def __call__(self, event: GraphEvent) -> None:
        if event.phase == "process_end" and (event.duration or 0.0) > self.threshold:
            self.slow.append(event.duration or 0.0)


def readings(count: int) -> list[str]:
    """``count`` readings from three sensors, every 10th malformed, every 7th hot."""
    lines = []
    for number in range(count):
        sensor = f"s{number % 3 + 1}"
        degrees = "n/a" if number % 10 == 9 else f"{35.0 if number % 7 == 0 else 20.0 + number % 5}"
        lines.append(f"{sensor}:{degrees}")
    return lines


@dataclass
class Report:
    """What the demo saw."""

    alerts: list[Any]
    slow_calls: int
    stats: GraphStats
    table: str
    diagram: str


async def main(count: int = 60) -> Report:
    """Stream ``count`` readings through the instrumented graph; return what it saw."""
    graph = build()
    alerts: list[Any] = []

    def tap(event: GraphEvent) -> None:  # an edge observer sees send, receive and ack
        if event.phase == "send":
            alerts.append(event.message.payload)

    graph.observe(tap, edge="enrich->alert")
    slow = SlowCalls(SLOW)
    graph.observe(slow, node="enrich", side="input")
    metrics = MetricsObserver()
    graph.observe(metrics)
    async with graph.open_run(Task(type=TaskType.LONG_RUNNING)) as run:
        for line in readings(count):
            await run.send("parse", line)
        await graph.wait_idle()
        stats = await metrics.snapshot()  # while it runs: what a live view shows
    return Report(
        alerts=alerts,
        slow_calls=len(slow.slow),
        stats=stats,
        table=render(stats_table(stats)),
        diagram=graph.to_mermaid(stats),
    )


if __name__ == "__main__":
    report = anyio.run(main)
    print(report.table)
    print(f"{len(report.alerts)} alerts sent along enrich->alert")
    print(f"{report.slow_calls} enrich calls slower than {SLOW * 1000:.0f} ms")
    print(report.diagram)
