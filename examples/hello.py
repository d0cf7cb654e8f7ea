"""A first spark_nodes graph, all in memory: ``python -m examples.hello``.

Orders stream into a long-running graph. ``parse`` normalises each order; refunds and sales
take different edges; ``audit`` sees everything; a sale of more than 100 goes to ``review``
first (a higher-priority edge, with ``bill`` as the fallback). Malformed orders are retried,
then dead-lettered, and the graph keeps going. ``graph.open_run`` starts the graph and
enters once it takes messages; leaving the block shuts it down gracefully, draining the
pipeline: every order sent is handled before the run ends.
"""

from __future__ import annotations

from typing import Any

import anyio
import structlog

from spark_nodes import ExecutionContext, Graph, Node, NodeConfig, Task, TaskType
from spark_nodes.graphs import GraphResult
from spark_nodes.nodes import RetryPolicy

log = structlog.get_logger("examples.hello")

ORDERS = [
    {"id": 1, "kind": "sale", "amount": "40"},
    {"id": 2, "kind": "refund", "amount": "15"},
    {"id": 3, "kind": "sale", "amount": "250"},
    {"id": 4, "kind": "sale", "amount": "not a number"},
    {"id": 5, "kind": "sale", "amount": "99"},
]


class Parse(Node):
    def process(self, context: ExecutionContext) -> dict[str, Any]:
        order = context.inputs.content
        return {**order, "amount": float(order["amount"])}  # raises on a malformed amount


class Record(Node):
    """Keeps a line per order it sees; forwards nothing."""

    def __init__(self, label: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.label = label
        self.lines: list[str] = []

    async def process(self, context: ExecutionContext) -> None:
        order = context.inputs.content
        self.lines.append(f"{self.label}: order {order['id']} ({order['amount']:.2f})")


class Review(Node):
    async def process(self, context: ExecutionContext) -> dict[str, Any]:
        await anyio.sleep(0.01)  # a slow check, say a fraud service
        return {**context.inputs.content, "reviewed": True}


def build() -> tuple[Graph, dict[str, Record]]:
    """Wire the graph; return it and its recording nodes."""
    retry = RetryPolicy(max_attempts=2, initial_delay=0.001)
    parse = Parse(id="parse", config=NodeConfig(retry=retry))
    sinks = {
        "bill": Record("billed", id="bill"),
        "refund": Record("refunded", id="refund"),
        "audit": Record("audited", id="audit"),
    }
    review = Review(id="review")
    parse.on(kind="refund") >> sinks["refund"]
    (
        parse.on(lambda order: order["kind"] == "sale" and order["amount"] > 100).with_priority(1)
        >> review
    )
    parse.on(kind="sale") >> sinks["bill"]  # the fallback tier for sales
    review >> sinks["bill"]
    parse >> sinks["audit"]
    return Graph(start=parse, name="orders"), sinks


async def main() -> tuple[GraphResult, dict[str, Record], list[str]]:
    """Stream the orders through the graph, shut it down; return result, sinks, dead letters."""
    graph, sinks = build()
    async with graph.open_run(Task(type=TaskType.LONG_RUNNING)) as run:
        for order in ORDERS:
            await run.send("parse", order)
    # Leaving the block shut the graph down: every order sent was handled first.
    assert run.result is not None
    dead: list[str] = []
    while not graph.dead_letters.empty():
        letter = await graph.dead_letters.receive()
        details = letter.metadata["dead_letter"]
        dead.append(f"dead letter: order {letter.payload['id']}: {details['error']}")
    return run.result, sinks, dead


if __name__ == "__main__":
    result, sinks, dead = anyio.run(main)
    for sink in sinks.values():
        print("\n".join(sink.lines))
    print("\n".join(dead))
    print(f"stopped: {result.stop_reason}")
    for node_id, stats in result.node_stats.items():
        print(f"  {node_id:<7} processed={stats.processed} failed_attempts={stats.failed_attempts}")
