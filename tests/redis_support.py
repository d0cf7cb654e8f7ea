"""Helpers for tests against the real Redis server of the ``redis_url`` fixture."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import anyio
from redis.asyncio import Redis, RedisCluster

from spark_nodes import Graph
from spark_nodes._redis_client import CLUSTER_SCHEMES, RedisClient
from spark_nodes.channels import ConnectionRetry, RedisChannel

T = TypeVar("T")

FAST_RETRY = ConnectionRetry(attempts=3, initial_delay=0.01, max_delay=0.05)
"""Retries that give up within a fraction of a second: for tests of a server that is down."""


def new_namespace() -> str:
    """A namespace no other test uses."""
    return f"test-{uuid.uuid4().hex[:12]}"


async def purge(client: RedisClient, namespace: str) -> None:
    """Delete every key under ``namespace``."""
    names = [name async for name in client.scan_iter(match=f"{namespace}:*", count=1000)]
    if names:
        await client.delete(*names)


def raw_client(url: str, **options: Any) -> RedisClient:
    """A redis-py client made as a user would, by redis-py alone: a ``RedisCluster`` for
    a ``redis+cluster://`` URL (the test cluster's), else a ``Redis``."""
    scheme, _, rest = url.partition("://")
    if scheme in CLUSTER_SCHEMES:
        return RedisCluster.from_url(f"{CLUSTER_SCHEMES[scheme]}://{rest}", **options)
    return Redis.from_url(url, **options)


def with_raw_client(url: str, work: Callable[[RedisClient], Awaitable[T]]) -> T:
    """Run ``work(client)`` on a fresh :func:`raw_client` in a new event loop: for sync
    fixtures. (redis-py's blocking cluster client leaves a socket open when closed.)"""

    async def main() -> T:
        async with open_raw_client(url) as client:
            return await work(client)

    return anyio.run(main, backend="asyncio")


@contextlib.asynccontextmanager
async def open_raw_client(url: str) -> AsyncIterator[RedisClient]:
    """A plain redis-py client (a Cluster client for a cluster URL): what another program
    writing to Redis would use."""
    client = raw_client(url)
    try:
        yield client
    finally:
        await client.aclose()


class ChannelFactory:
    """Makes channels on one fresh namespace and closes them all at the end."""

    def __init__(self, url: str, namespace: str) -> None:
        self.url = url
        self.namespace = namespace
        self.made: list[RedisChannel] = []

    def __call__(self, channel_name: str = "box", **options: Any) -> RedisChannel:
        options.setdefault("namespace", self.namespace)
        channel = RedisChannel(self.url, channel_name, **options)
        self.made.append(channel)
        return channel

    async def aclose(self) -> None:
        for channel in self.made:
            with contextlib.suppress(Exception):  # a test may have stopped the server
                await channel.aclose()


class Cluster:
    """Graph objects of one Redis graph, one per simulated process; closed at the end."""

    def __init__(self, url: str, namespace: str) -> None:
        self.url = url
        self.namespace = namespace
        self.graphs: list[Graph] = []

    def process(self, build: Callable[[], Graph], **options: Any) -> Graph:
        graph = build()
        graph.use_redis(self.url, namespace=self.namespace, mailbox_options=options or None)
        self.graphs.append(graph)
        return graph

    async def aclose(self) -> None:
        for graph in self.graphs:
            await graph.aclose()
