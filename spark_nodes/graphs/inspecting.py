"""Look inside a Redis graph's mailboxes, all of them at one instant, from any process.

A graph on Redis gives each node a durable mailbox, ``{namespace}:{graph}:{node}``; the
``{graph}`` hash tag keeps them in one Redis Cluster slot, so one script call reads them
all (:func:`inspect_graph`, what ``graph.inspect()`` returns). The figures of every node
are of the same instant: a message moving from one node to the next is counted once. What
each node sent along its error routes is read next, from the figures the serving
processes publish (as ``graph.stats()`` reads them).
:func:`find_node_mailboxes` finds a graph's mailboxes without the graph's code (what
``spark-nodes dlq --graph`` uses).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from spark_nodes.channels.inspection import (
    ConsumerInfo,
    MailboxInfo,
    find_mailboxes,
    inspect_mailboxes,
)
from spark_nodes.channels.redis import RedisChannel, stream_key
from spark_nodes.graphs._redis_stats import read_node_counters, stats_key

if TYPE_CHECKING:
    from spark_nodes._redis_client import ConnectionRetry, RedisClient
    from spark_nodes.graphs.graph import Graph

__all__ = ["GraphInspection", "find_node_mailboxes", "inspect_graph", "mailbox_key"]


@dataclass(frozen=True, slots=True)
class GraphInspection:
    """What every mailbox of a Redis graph holds, read at one instant.

    Attributes:
        graph: The graph's name.
        namespace: The graph's key namespace.
        mailboxes: Each node's mailbox by node id, in the graph's node order (start
            first): its length, consumer groups with each consumer's pending entries and
            idle time, lag, delayed messages, dead letters and counters (see
            :class:`~spark_nodes.channels.MailboxInfo`; ``key`` is its stream key, what
            ``spark-nodes dlq --mailbox`` takes).
        error_routed: Per node id, the messages it gave up on and sent along its error
            routes (``a.on_error() >> h``), as the serving processes last published
            them (see ``graph.stats()``); 0 for a node that routed none.
    """

    graph: str
    namespace: str
    mailboxes: dict[str, MailboxInfo]
    error_routed: dict[str, int] = field(default_factory=dict)

    @property
    def length(self) -> int:
        """Entries in every node's stream: waiting, plus delivered and not acked yet."""
        return sum(mailbox.length for mailbox in self.mailboxes.values())

    @property
    def pending(self) -> int:
        """Entries delivered to a consumer and not acked yet, over every node."""
        return sum(mailbox.pending for mailbox in self.mailboxes.values())

    @property
    def delayed(self) -> int:
        """Messages sent with a delay that are not due yet, over every node."""
        return sum(mailbox.delayed for mailbox in self.mailboxes.values())

    @property
    def dead_letters(self) -> int:
        """Dead letters held now, over every node."""
        return sum(mailbox.dead_letters for mailbox in self.mailboxes.values())

    @property
    def consumers(self) -> dict[str, tuple[ConsumerInfo, ...]]:
        """Each node's consumers (of every group), by node id."""
        return {node: mailbox.consumers for node, mailbox in self.mailboxes.items()}


def mailbox_key(namespace: str, graph: str, node_id: str) -> str:
    """The stream key of the mailbox of node ``node_id`` of the Redis graph ``graph``.

    ``{namespace}:{graph}:{node_id}``, the graph's name as hash tag: what a node's
    ``RedisChannel`` has as ``key``.
    """
    return stream_key(namespace, f"{{{graph}}}:{node_id}")


async def inspect_graph(graph: Graph) -> GraphInspection:
    """Read every node's mailbox of a Redis graph at one instant, in one script call.

    Then what each node sent along its error routes (one ``HGETALL`` of the graph's stats
    hash). Works from any process that has the graph (built with the same name and
    namespace), serving it or not; nothing is consumed. A node nobody has sent to yet
    reads as empty.

    Raises:
        WiringError: The graph is in memory (it has no mailboxes in Redis).
        ChannelUnavailable: Redis could not be reached within the retries.
    """
    redis = graph.redis  # raises WiringError for an in-memory graph
    namespace = graph.namespace
    assert namespace is not None  # a graph with a Redis client has a namespace
    keys: dict[str, str] = {}
    for node_id, node in graph.nodes.items():
        mailbox = node.mailbox
        # A node wired after the graph moved to Redis gets its mailbox at the next run.
        keys[node_id] = (
            mailbox.key
            if isinstance(mailbox, RedisChannel)
            else mailbox_key(namespace, graph.name, node_id)
        )
    read = await inspect_mailboxes(redis, list(keys.values()))
    published = await read_node_counters(redis, stats_key(namespace, graph.name))
    routed = {node_id: published.get(node_id, {}).get("error_routed", 0) for node_id in keys}
    return GraphInspection(graph.name, namespace, dict(zip(keys, read, strict=True)), routed)


async def find_node_mailboxes(
    redis: RedisClient,
    namespace: str,
    graph: str,
    *,
    retry: ConnectionRetry | None = None,
) -> dict[str, str]:
    """The mailboxes of the Redis graph ``graph`` found in Redis: stream key by node id.

    For code that has no graph object (an operator's shell): the nodes are those whose
    mailbox exists (see :func:`~spark_nodes.channels.find_mailboxes`), sorted by id.

    Raises:
        ValueError: The client decodes responses.
        TypeError: ``redis`` is not a ``redis.asyncio.Redis``.
        ChannelUnavailable: Redis could not be reached within the retries.
    """
    prefix = mailbox_key(namespace, graph, "")
    keys = await find_mailboxes(redis, namespace, tag=graph, retry=retry)
    return {key[len(prefix) :]: key for key in keys if key.startswith(prefix)}
