"""Graphs on a real Redis Cluster of three masters (the ``redis_cluster`` fixture).

The rest of the Redis suite runs on the cluster too, in CI's cluster pass
(``pytest --spark-redis-cluster -m redis``): these tests are about what only a cluster has,
graphs spread over several masters, and what a client of one server does there.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from redis.asyncio import Redis, RedisCluster
from redis.crc import key_slot

from spark_nodes import ExecutionContext, Graph, Node
from spark_nodes._redis_client import open_client
from spark_nodes.channels import ChannelMessage, RedisChannel, find_mailboxes
from spark_nodes.errors import ClusterClientRequired
from spark_nodes.graphs import GraphResult
from spark_nodes.state import RedisState
from spark_nodes.testing.redis_cluster import SLOTS, RedisClusterServer
from tests.redis_support import new_namespace

pytestmark = [pytest.mark.anyio, pytest.mark.redis]  # redis-py: asyncio only

WAIT = 60


class Double(Node):
    def process(self, context: ExecutionContext) -> Any:
        return context.inputs.content * 2


class Collect(Node):
    async def process(self, context: ExecutionContext) -> None:
        await context.graph_state.append("seen", context.inputs.content)


def pipeline(name: str, url: str, namespace: str) -> Graph:
    first, second, sink = Double(id="first"), Double(id="second"), Collect(id="sink")
    first >> second >> sink
    graph = Graph(first, name=name)
    graph.use_redis(url, namespace=namespace)
    return graph


def master_of(cluster: RedisClusterServer, tag: str) -> int:
    """Which master (by index) owns ``tag``'s slot: the fixture splits the slots evenly."""
    share = SLOTS // len(cluster.nodes)
    return min(key_slot(tag.encode()) // share, len(cluster.nodes) - 1)


def graph_names_on_every_master(cluster: RedisClusterServer) -> list[str]:
    """One graph name per master, each hashing to a slot of that master."""
    names: dict[int, str] = {}
    while len(names) < len(cluster.nodes):
        name = f"g-{uuid.uuid4().hex[:8]}"
        names.setdefault(master_of(cluster, name), name)
    return [names[n] for n in range(len(cluster.nodes))]


async def keys_on(url: str, namespace: str) -> list[str]:
    """The keys under ``namespace`` that one master holds (a client of that node alone)."""
    client = Redis.from_url(url)
    try:
        return [key.decode() async for key in client.scan_iter(match=f"{namespace}:*")]
    finally:
        await client.aclose()


@pytest.fixture
async def namespace(redis_cluster_url: str) -> AsyncIterator[str]:
    name = new_namespace()
    yield name
    client = open_client(redis_cluster_url)
    try:
        async for key in client.scan_iter(match=f"{name}:*"):
            await client.delete(key)
    finally:
        await client.aclose()


async def test_graphs_spread_over_the_masters_each_run_with_all_their_keys_on_one(
    redis_cluster: RedisClusterServer, namespace: str
) -> None:
    url = redis_cluster.url
    names = graph_names_on_every_master(redis_cluster)
    # Two worker "processes" per graph, and a client that sends and shuts down.
    workers = [pipeline(name, url, namespace) for name in names for _ in range(2)]
    clients = [pipeline(name, url, namespace) for name in names]
    results: list[GraphResult] = []

    async def serve(graph: Graph) -> None:
        results.append(await graph.serve())

    try:
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tasks:
                for worker in workers:
                    tasks.start_soon(serve, worker)
                for client in clients:
                    for number in range(20):
                        await client.send("first", number)
                for client in clients:
                    await client.shutdown()
        assert len(results) == len(workers)
        assert all(not result.dead_lettered for result in results)
        for client in clients:
            assert sorted(await client.state.get("seen")) == [4 * n for n in range(20)]
    finally:
        for graph in workers + clients:
            await graph.aclose()
    for index, node_url in enumerate(redis_cluster.node_urls):
        held = await keys_on(node_url, namespace)
        assert held, f"master {index} holds none of the graphs' keys"
        # Every key a master holds is of the graph whose slot it owns.
        assert {key.split("{", 1)[1].split("}", 1)[0] for key in held} == {names[index]}


async def test_find_mailboxes_lists_the_graphs_of_every_master(
    redis_cluster: RedisClusterServer, namespace: str
) -> None:
    names = graph_names_on_every_master(redis_cluster)
    client = open_client(redis_cluster.url)
    try:
        for name in names:
            async with RedisChannel(
                redis=client, channel_name=f"{{{name}}}:box", namespace=namespace
            ) as channel:
                await channel.send(ChannelMessage("hello"))
        found = await find_mailboxes(client, namespace)
        assert sorted(found) == sorted(f"{namespace}:{{{name}}}:box" for name in names)
        # By hash tag: only that graph's are listed, and only its master is scanned.
        scanned: list[Any] = []
        scan = client.scan

        async def recording_scan(*args: Any, **kwargs: Any) -> Any:
            scanned.append(kwargs.get("target_nodes"))
            return await scan(*args, **kwargs)

        client.scan = recording_scan  # type: ignore[method-assign]
        assert await find_mailboxes(client, namespace, tag=names[1]) == [
            f"{namespace}:{{{names[1]}}}:box"
        ]
        assert scanned, "nothing was scanned"
        assert {node.port for node in scanned} == {redis_cluster.nodes[1].port}
    finally:
        await client.aclose()


async def test_state_and_its_transactions_work_on_every_master(
    redis_cluster: RedisClusterServer, namespace: str
) -> None:
    for name in graph_names_on_every_master(redis_cluster):
        async with RedisState(redis_cluster.url, namespace=namespace, graph=name) as state:
            await state.set("a", 1)
            await state.append("log", "x")
            await state.incr("n", 2)

            async def move(tx: Any) -> int:
                value = int(await tx.get("a"))
                tx.set("b", value + 1)
                tx.delete("a")
                return value

            assert await state.transaction(move) == 1
            assert await state.keys() == ["b", "log", "n"]


async def test_a_client_of_one_cluster_node_is_told_to_use_a_cluster_client(
    redis_cluster: RedisClusterServer, namespace: str
) -> None:
    # A graph name whose slot the first master does not own: that node answers MOVED.
    name = next(n for n in graph_names_on_every_master(redis_cluster)[1:])
    async with RedisChannel(
        redis_cluster.node_urls[0], f"{{{name}}}:box", namespace=namespace
    ) as channel:
        with pytest.raises(ClusterClientRequired, match=r"redis\+cluster://"):
            await channel.send(ChannelMessage("hello"))


async def test_a_shared_redis_cluster_client_is_accepted_and_left_open(
    redis_cluster: RedisClusterServer, namespace: str
) -> None:
    client = RedisCluster.from_url(redis_cluster.node_urls[0])
    try:
        await client.initialize()  # redis-py: before concurrent first commands (see docs)
        first, sink = Double(id="first"), Collect(id="sink")
        first >> sink
        graph = Graph(first, name="shared")
        graph.use_redis(client, namespace=namespace)
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(graph.serve)
                for number in range(5):
                    await graph.send("first", number)
                await graph.shutdown()
            assert sorted(await graph.state.get("seen")) == [0, 2, 4, 6, 8]
        await graph.aclose()
        assert await client.ping()  # the graph did not close a client it was given
    finally:
        await client.aclose()


def test_cluster_urls_are_checked() -> None:
    with pytest.raises(ValueError, match="only database 0"):
        open_client("redis+cluster://127.0.0.1:7000/3")
    assert isinstance(open_client("rediss+cluster://127.0.0.1:7000"), RedisCluster)
    assert isinstance(open_client("redis+cluster://127.0.0.1:7000/0"), RedisCluster)
    assert not isinstance(open_client("redis://127.0.0.1:7000"), RedisCluster)
