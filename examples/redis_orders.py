"""The orders graph across processes, on Redis: ``python -m examples.redis_orders``.

``build()`` is ordinary graph code: no Redis in it. This script starts a private
``redis-server`` (or uses ``$REDIS_URL``), starts two worker processes with

    python -m spark_nodes worker examples.redis_orders:build --redis URL

sends the orders from here, shuts the graph down from here, and prints what the workers
recorded in the shared graph state. Kill a worker while it runs and the other one finishes
its work: nothing is lost.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import anyio
import structlog

from spark_nodes import ExecutionContext, Graph, Node
from spark_nodes.channels import RedisChannel
from spark_nodes.testing import open_redis_server

log = structlog.get_logger("examples.redis_orders")

ROOT = Path(__file__).resolve().parent.parent


class Price(Node):
    """Adds the tax; a worker process of its own may run it."""

    def process(self, context: ExecutionContext) -> dict[str, Any]:
        order = context.inputs.content
        return {**order, "total": round(order["amount"] * 1.2, 2)}


class Book(Node):
    """Books each order in the shared state, under its id: a redelivery books it once."""

    async def process(self, context: ExecutionContext) -> None:
        order = context.inputs.content
        await context.graph_state.set(f"booked:{order['id']}", order["total"])


def build() -> Graph:
    """The graph, as every process builds it: ``price >> book``."""
    price, book = Price(id="price"), Book(id="book")
    price >> book
    return Graph(price, name="orders")


async def run(url: str, orders: int = 10, workers: int = 2) -> list[str]:
    """Serve the graph with worker processes, send ``orders``, shut down; return the ledger."""
    namespace = f"example-{uuid.uuid4().hex[:8]}"
    command = [
        sys.executable, "-m", "spark_nodes", "worker", "examples.redis_orders:build",
        "--redis", url, "--namespace", namespace, "--log-level", "warning",
    ]  # fmt: skip
    processes = [
        await anyio.open_process(
            command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=None, stderr=None
        )
        for _ in range(workers)
    ]
    graph = build()
    graph.use_redis(url, namespace=namespace)
    try:
        await wait_until_served(graph, workers)
        for number in range(1, orders + 1):
            await graph.send("price", {"id": number, "amount": 10.0 * number})
        await graph.shutdown()  # every order sent before it is booked first, then all exit
        for process in processes:
            await process.wait()
        state = graph.state
        booked = [key for key in await state.keys() if key.startswith("booked:")]
        ledger = [f"order {key[7:]}: {await state.get(key)}" for key in booked]
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
        await graph.aclose()
    return sorted(ledger, key=lambda line: int(line.split()[1].rstrip(":")))


async def wait_until_served(graph: Graph, workers: int) -> None:
    """Wait until ``workers`` consumers read each node's mailbox.

    A worker that starts after the graph was shut down serves the *next* run (a graph on
    Redis can run again), so this script lets every worker join before shutting down.
    """
    for node in graph.nodes.values():
        mailbox = node.mailbox
        assert isinstance(mailbox, RedisChannel)
        while True:
            info = await mailbox.inspect()
            if sum(len(group.consumers) for group in info.groups) >= workers:
                break
            await anyio.sleep(0.05)  # a worker process is still starting


def main() -> None:
    """Run the example on ``$REDIS_URL`` or on a private server."""
    url = os.environ.get("REDIS_URL")
    if url:
        ledger = anyio.run(run, url)
    else:
        with open_redis_server() as server:
            ledger = anyio.run(run, server.url)
    for line in ledger:
        print(line)


if __name__ == "__main__":
    main()
