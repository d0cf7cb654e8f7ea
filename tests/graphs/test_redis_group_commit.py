"""Group commit in a Redis graph: a worker loop settles a batch of messages in one call.

Each node's mailbox is a durable :class:`RedisChannel`; a loop takes a batch, handles it
and commits the outputs and acks of the whole batch in one script call (see
``spark_nodes.channels.mailbox.Commit``). Against a real Redis server, never a mock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from redis.asyncio import Redis

from spark_nodes import ExecutionContext, Graph, Node, StopReason
from spark_nodes.channels import ChannelMessage, RedisChannel
from spark_nodes.graphs import GraphResult
from spark_nodes.state import RESULT_SUFFIX
from tests.redis_support import new_namespace, purge

pytestmark = [pytest.mark.anyio, pytest.mark.redis]  # redis-py: asyncio only

N = 300
"""Messages preloaded into the first node's mailbox."""


class Identity(Node):
    def process(self, context: ExecutionContext) -> Any:
        return context.inputs.content


class Collected:
    """What the last node got, in order, in this process; tests await a count."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._waiters: list[tuple[int, anyio.Event]] = []

    def add(self, item: Any) -> None:
        self.items.append(item)
        for wanted, event in self._waiters:
            if len(self.items) >= wanted:
                event.set()

    async def wait_for(self, count: int) -> None:
        if len(self.items) < count:
            event = anyio.Event()
            self._waiters.append((count, event))
            await event.wait()


class Collect(Node):
    """The last node: records what it gets here (no state writes: no extra scripts)."""

    collected: Collected

    def process(self, context: ExecutionContext) -> None:
        self.collected.add(context.inputs.content)


class Graphs:
    """Redis graphs on one fresh namespace; closed (and their keys deleted) at the end."""

    def __init__(self, url: str, namespace: str) -> None:
        self.url = url
        self.namespace = namespace
        self.made: list[Graph] = []

    def pipeline(self, collected: Collected, **mailbox_options: Any) -> Graph:
        """``first >> second >> last``: two identities and a collector, on Redis."""
        first, second, last = Identity(id="first"), Identity(id="second"), Collect(id="last")
        last.collected = collected
        first >> second >> last
        graph = Graph(
            first,
            name="group-commit",
            backend=self.url,
            namespace=self.namespace,
            mailbox_options=mailbox_options or None,
        )
        self.made.append(graph)
        return graph

    async def aclose(self) -> None:
        for graph in self.made:
            await graph.aclose()


@pytest.fixture
async def graphs(redis_url: str, raw: Redis) -> AsyncIterator[Graphs]:
    made = Graphs(redis_url, new_namespace())
    yield made
    await made.aclose()
    await purge(raw, made.namespace)


def mailbox_of(graph: Graph, node_id: str) -> RedisChannel:
    mailbox = graph.nodes[node_id].mailbox
    assert isinstance(mailbox, RedisChannel)
    return mailbox


async def preload(graph: Graph, payloads: list[Any]) -> None:
    """Write messages into the first node's mailbox before anyone serves it."""
    mailbox = mailbox_of(graph, "first")
    for payload in payloads:
        mailbox.send_nowait(ChannelMessage(payload))
    await mailbox.flush()


async def calls(raw: Redis) -> dict[str, int]:
    """How often the server ran each command so far (commands run by scripts included)."""
    stats: Any = await raw.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(row["calls"]) for name, row in stats.items()}


async def serve_until(graph: Graph, collected: Collected, count: int, raw: Redis) -> dict[str, int]:
    """Serve ``graph`` until ``count`` messages reached its last node; shut it down.

    Returns how many times each command ran while the messages went through (between the
    start of serving and the last arrival: the shutdown's own scripts are not counted).
    """
    results: list[GraphResult] = []

    async def serve() -> None:
        results.append(await graph.serve(concurrency=1))

    with anyio.fail_after(30):
        before = await calls(raw)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(serve)
            await collected.wait_for(count)
            after = await calls(raw)
            await graph.shutdown()
    assert [result.stop_reason for result in results] == [StopReason.SHUTDOWN]
    return {name: after.get(name, 0) - before.get(name, 0) for name in after}


async def test_a_busy_mailbox_is_committed_a_batch_at_a_time(graphs: Graphs, raw: Redis) -> None:
    collected = Collected()
    graph = graphs.pipeline(collected)
    await preload(graph, list(range(N)))
    ran = await serve_until(graph, collected, N, raw)
    assert sorted(collected.items) == list(range(N))
    # Every commit acks its batch with one XACK (called by the script): a commit per
    # message would be N per node, 900 in all. Each node reads 100 entries at a time
    # (DEFAULT_PREFETCH) and commits them together: 9 commits were seen; 90 allows an
    # average batch of 10.
    assert ran.get("xack", 0) <= N * 3 // 10, ran
    # Scripts as a whole: the commits, plus the scripts that run with time, not with
    # messages (moving delayed entries and trying to finish a node after every empty
    # read, every block=0.1 s per node; claims). About 22 were seen; a commit per message
    # alone would be 900 (3 nodes x N). The bound, N, leaves seconds of idle reads free.
    assert ran.get("evalsha", 0) <= N, ran
    assert ran.get("xadd", 0) == 2 * N  # each output written once: to second, then to last


async def test_a_loop_of_concurrency_one_keeps_the_order_of_its_mailbox(
    graphs: Graphs, raw: Redis
) -> None:
    collected = Collected()
    graph = graphs.pipeline(collected)
    await preload(graph, list(range(N)))
    await serve_until(graph, collected, N, raw)
    assert collected.items == list(range(N))


async def test_a_lone_message_on_a_quiet_graph_is_committed_at_once(
    graphs: Graphs, raw: Redis
) -> None:
    collected = Collected()
    # A lease lasts a minute (and is renewed every 20 s): a commit that waited for more
    # messages, for a timer or for the shutdown would leave the entries pending here.
    graph = graphs.pipeline(collected, visibility_timeout=60)
    mailboxes = [mailbox_of(graph, node_id) for node_id in ("first", "second", "last")]

    async def settled_everywhere() -> bool:
        for mailbox in mailboxes:
            summary: Any = await raw.xpending(mailbox.key, mailbox.group)
            if summary["pending"] or await raw.xlen(mailbox.key):
                return False
        return True

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(graph.serve)
            await graph.send("first", "lone")
            with anyio.fail_after(5):  # well under the visibility timeout
                await collected.wait_for(1)
                # The last node commits after it handled the message; that happens in
                # Redis, with no event here to await.
                while not await settled_everywhere():  # noqa: ASYNC110 - see above
                    await anyio.sleep(0.01)
            await graph.shutdown()
    assert collected.items == ["lone"]


async def test_node_results_are_committed_with_the_batches_and_read_by_any_process(
    graphs: Graphs, raw: Redis
) -> None:
    collected = Collected()
    worker, client = graphs.pipeline(collected), graphs.pipeline(Collected())
    await preload(worker, list(range(N)))
    await serve_until(worker, collected, N, raw)
    # The client graph served nothing: what it reads was kept in Redis by the commits.
    assert await client.state.get(f"first{RESULT_SUFFIX}") == N - 1  # the last it handled
    assert await client.state.get(f"second{RESULT_SUFFIX}") == N - 1
    assert not await client.state.exists(f"last{RESULT_SUFFIX}")  # it returned no output
    result_key = mailbox_of(client, "first").result_key
    assert result_key is not None
    assert await raw.exists(result_key)
