"""``inspect_graph``: every mailbox of a Redis graph, read at one instant from any process."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection

from spark_nodes import Graph
from spark_nodes.channels import ChannelMessage, MailboxInfo, RedisChannel
from spark_nodes.errors import WiringError
from spark_nodes.graphs.inspecting import (
    GraphInspection,
    find_node_mailboxes,
    inspect_graph,
    mailbox_key,
)
from tests.redis_support import Cluster
from tests.shop_graph import shop

pytestmark = [pytest.mark.anyio, pytest.mark.redis]  # redis-py: asyncio only


@contextlib.contextmanager
def commands_sent(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The names of the commands every client of this process sends meanwhile."""
    sent: list[str] = []
    pack = AbstractConnection.pack_command

    def recording(connection: AbstractConnection, *args: Any) -> list[bytes]:
        name = args[0]
        sent.append((name.decode() if isinstance(name, bytes) else str(name)).split()[0].upper())
        return pack(connection, *args)

    with monkeypatch.context() as patch:
        patch.setattr(AbstractConnection, "pack_command", recording)
        yield sent


async def run_to_the_end(cluster: Cluster, client: Graph, *orders: int) -> None:
    """Send ``orders`` into the pricer, shut the graph down and serve it until it ends."""
    worker = cluster.process(shop)
    for order in orders:
        await client.send("pricer", order)
    await client.shutdown()
    with anyio.fail_after(30):
        await worker.serve()


async def receive(channel: RedisChannel) -> ChannelMessage:
    with anyio.fail_after(5):
        return await channel.receive()


async def test_a_graph_is_read_whole_with_consumers_delayed_messages_and_dead_letters(
    cluster: Cluster, redis_url: str
) -> None:
    client = cluster.process(shop)
    await run_to_the_end(cluster, client, 1, -1, 0, 2, -2)  # 2 dead in pricer, 1 in billing
    # Two workers of billing hold entries; a third entry waits; one pricer message is due
    # in an hour.
    for order in (10, 11, 12, 13):
        await client.send("billing", order)
    billing = f"{{{client.name}}}:billing"
    async with (
        RedisChannel(redis_url, billing, namespace=cluster.namespace, consumer="a", prefetch=1)
        as worker_a,
        RedisChannel(redis_url, billing, namespace=cluster.namespace, consumer="b", prefetch=2)
        as worker_b,
    ):  # fmt: skip
        await receive(worker_a)
        await receive(worker_b)
        pricer = client.nodes["pricer"].mailbox
        assert isinstance(pricer, RedisChannel)
        await pricer.send(ChannelMessage(3), delay=3600)
        inspection = await client.inspect()
    assert isinstance(inspection, GraphInspection)
    assert (inspection.graph, inspection.namespace) == ("shop", cluster.namespace)
    assert list(inspection.mailboxes) == ["pricer", "billing"]
    prices, bills = inspection.mailboxes["pricer"], inspection.mailboxes["billing"]
    assert isinstance(bills, MailboxInfo)
    assert bills.key == mailbox_key(cluster.namespace, "shop", "billing")
    assert (bills.length, bills.pending, bills.delayed, bills.dead_letters) == (4, 3, 0, 1)
    (group,) = bills.groups
    assert group.lag == 1
    held = {c.name: c.pending for c in group.consumers}
    assert (held["a"], held["b"]) == (1, 2)
    assert sum(held.values()) == 3  # the run's own consumer holds nothing
    assert all(0 <= c.idle < 60 for c in group.consumers)
    assert (prices.length, prices.pending, prices.delayed, prices.dead_letters) == (0, 0, 1, 2)
    assert prices.counters["dead_lettered"] == 2
    assert (inspection.length, inspection.pending) == (4, 3)
    assert (inspection.delayed, inspection.dead_letters) == (1, 3)
    assert inspection.consumers["billing"] == bills.consumers


async def test_every_mailbox_of_a_graph_is_read_in_one_script_call(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = cluster.process(shop)
    await client.send("pricer", 1)
    await client.send("billing", 2)
    await inspect_graph(client)  # loads the script
    with commands_sent(monkeypatch) as sent:
        inspection = await client.inspect()
    # PING: health checks; HGETALL: the stats hash, for what was sent along error routes.
    assert [name for name in sent if name != "PING"] == ["EVALSHA", "HGETALL"]
    assert [m.length for m in inspection.mailboxes.values()] == [1, 1]


async def test_a_graph_is_read_from_a_process_that_does_not_serve_it(
    cluster: Cluster, raw: Redis
) -> None:
    client, onlooker = cluster.process(shop), cluster.process(shop)
    await run_to_the_end(cluster, client, -1)
    inspection = await inspect_graph(onlooker)
    assert inspection.mailboxes["pricer"].dead_letters == 1
    assert inspection.mailboxes["billing"].counters["sent"] == 1  # its shutdown entry
    assert await raw.xlen(inspection.mailboxes["pricer"].key) == 0


async def test_a_node_nobody_sent_to_reads_as_empty(cluster: Cluster) -> None:
    inspection = await inspect_graph(cluster.process(shop))
    assert [(m.length, m.groups, m.counters) for m in inspection.mailboxes.values()] == [
        (0, (), {}),
        (0, (), {}),
    ]


async def test_an_in_memory_graph_has_nothing_to_inspect_in_redis() -> None:
    with pytest.raises(WiringError, match="in memory"):
        await inspect_graph(shop())


async def test_a_graphs_mailboxes_are_found_without_the_graph_but_not_its_reply_streams(
    cluster: Cluster, raw: Redis
) -> None:
    client = cluster.process(shop)
    await run_to_the_end(cluster, client, 1, -1)
    for node_id, node in client.nodes.items():
        mailbox = node.mailbox
        assert isinstance(mailbox, RedisChannel)
        assert mailbox.key == mailbox_key(cluster.namespace, "shop", node_id)
    reply = f"{cluster.namespace}:{{shop}}:invoke:{'0f' * 16}"
    await raw.xadd(reply, {"m": b"x"})
    await raw.xgroup_create(reply, "workers", id="0")
    found = await find_node_mailboxes(raw, cluster.namespace, "shop")
    assert found == {
        "billing": mailbox_key(cluster.namespace, "shop", "billing"),
        "pricer": mailbox_key(cluster.namespace, "shop", "pricer"),
    }
    assert await find_node_mailboxes(raw, cluster.namespace, "other") == {}
