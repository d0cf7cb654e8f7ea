"""The Redis side of a run: shutdown across processes, lease renewal, giving work back.

A run of a Redis graph (``graph.serve()``, or ``run()`` of a graph on Redis) hosts some of
the graph's nodes; other processes may host the same nodes or others. What ties them
together lives in Redis (see :mod:`spark_nodes.graphs._redis_backend` for the protocol):
this module is what one process does in it.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Final

import anyio
import structlog

from spark_nodes.channels.redis import RedisChannel
from spark_nodes.errors import BackendUnavailable
from spark_nodes.graphs._redis_backend import GRAPH_RUN_KEY, RedisBackend
from spark_nodes.graphs._redis_stats import StatsPublisher
from spark_nodes.nodes._outage import Outage
from spark_nodes.nodes._runtime import CYCLE_QUIET, SHUTDOWN_EXTERNAL, NodeRuntime

if TYPE_CHECKING:
    from spark_nodes.channels import ChannelMessage
    from spark_nodes.graphs._topology import Topology

__all__ = ["Distribution"]

_log = structlog.get_logger("spark_nodes")

# What recording a distributed shutdown entry found (see _redis_backend.RECORD), and
# whether a node could finish (FINISH).
_LEASE_LOST, _EARLIER_RUN, _CLOSING = -1, 0, 2
_NOT_YET, _FINISHED, _RUN_OVER, _PENDING, _READY = 0, 1, 2, 3, 4
_RENEWALS_PER_VISIBILITY_TIMEOUT: Final = 3
_CYCLE_POLL: Final = 0.1  # seconds between looks at a cycle waiting to end (one script call)


def _off_cycle(sources: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(source for source in sources if source != CYCLE_QUIET)


class Distribution:
    """One process's part in a distributed run of a graph.

    Args:
        backend: The graph's Redis side.
        graph_name: For logs.
        topology: The graph's topology.
        runtimes: The nodes this process hosts, by id.
    """

    def __init__(
        self,
        backend: RedisBackend,
        graph_name: str,
        topology: Topology,
        runtimes: dict[str, NodeRuntime],
    ) -> None:
        self.backend = backend
        self.graph_name = graph_name
        self.topology = topology
        self.runtimes = runtimes
        self.epoch = 0
        """The run (of the graph, across processes) this one takes part in."""
        self.stats = StatsPublisher(backend.redis, backend.stats_key, runtimes, graph=graph_name)
        """Publishes this process's figures of its nodes: ``stats.run`` is a task of the
        run, ``stats.publish_final`` is awaited when it ends (see ``_redis_stats``)."""
        # Per node, its counts (received, processed) when what it holds was last published:
        # a node holds or lets go of a message only while handling one. Renewals drop the
        # entry, so that the published leases' deadlines move on.
        self._held_published: dict[str, tuple[int, int]] = {}

    def mailbox(self, node_id: str) -> RedisChannel:
        """The Redis mailbox of node ``node_id``."""
        return self.backend.mailboxes[node_id]

    async def start(self, *, wait_for_redis: float = 0.0) -> None:
        """Learn the current run; watch each hosted mailbox for its close.

        ``wait_for_redis``: seconds to wait for a Redis that cannot be reached (logged
        once when the wait begins and once when it ends).

        Raises:
            BackendUnavailable: Redis could not be reached within the retries and then
                ``wait_for_redis``.
        """
        outage, log = Outage(), _log.bind(graph=self.graph_name)
        give_up_at = anyio.current_time() + wait_for_redis
        while True:
            try:
                self.epoch = await self.backend.epoch()
                break
            except BackendUnavailable as error:
                if anyio.current_time() >= give_up_at:
                    raise
                outage.began(log, error)
                await outage.wait()
        outage.ended(log)
        for node_id, runtime in self.runtimes.items():
            self.mailbox(node_id).watch_remote_close(self.epoch, partial(self.idle, runtime))
        _log.info("serving", graph=self.graph_name, nodes=sorted(self.runtimes), run=self.epoch)

    async def shut_down_sources(self) -> None:
        """Start a graceful drain of the whole graph, from any process.

        Raises:
            ChannelUnavailable: Redis could not be reached within the retries.
        """
        for node_id in self.topology.sources:
            await self.backend.send_shutdown(
                self.mailbox(node_id), source=SHUTDOWN_EXTERNAL, epoch=self.epoch
            )

    async def shutdown_received(self, runtime: NodeRuntime, message: ChannelMessage) -> None:
        """Record a shutdown entry; try to finish the node if it is complete."""
        node_id = runtime.node.id
        metadata = message.metadata
        source = metadata.get("source_node", SHUTDOWN_EXTERNAL)
        status = await self.backend.record_shutdown(
            self.mailbox(node_id), message, node_id=node_id,
            required=runtime.shutdown_sources, source=source,
        )  # fmt: skip
        if status == _CLOSING and not runtime.drains_itself:
            # (A node with an on_drained of its own finishes from the idle hook: then its
            # loop no longer holds this entry, so it can drain first.)
            await self.try_finish(runtime)
        elif status == _EARLIER_RUN:
            _log.info("shutdown of an earlier run ignored", node=node_id, source=source,
                      run=metadata.get(GRAPH_RUN_KEY), current=self.epoch)  # fmt: skip
        elif status == _LEASE_LOST:
            _log.warning("shutdown entry reclaimed by another consumer", node=node_id)

    async def idle(self, runtime: NodeRuntime) -> None:
        """A read of a hosted node's mailbox found nothing new (the mailbox's idle hook).

        Publishes what the node holds once its loops have nothing in hand (for
        ``wait_idle``: see :meth:`RedisChannel.publish_held`), and tries to finish it.

        Raises:
            ChannelUnavailable: Redis could not be reached within the retries.
        """
        if runtime.quiet():
            node_id = runtime.node.id
            counts = (runtime.received, runtime.processed)
            published = self._held_published.get(node_id)
            if counts != published:
                await self.mailbox(node_id).publish_held(
                    runtime.node.held, refresh=published is None
                )
                self._held_published[node_id] = counts
        await self.try_finish(runtime)

    async def try_finish(self, runtime: NodeRuntime) -> None:
        """Finish a hosted node if it is closing and drained (every consumer tries).

        Raises:
            ChannelUnavailable: Redis could not be reached within the retries.
        """
        node_id = runtime.node.id
        mailbox = self.mailbox(node_id)
        successors = [self.mailbox(s) for s in self.topology.drain_successors(node_id)]
        finish = partial(
            self.backend.try_finish, mailbox, node_id=node_id, epoch=self.epoch,
            successors=successors, nodes=len(self.topology.nodes),
        )  # fmt: skip
        if runtime.drains_itself and runtime.quiet():
            # Its on_drained goes first, here: what it forwards must reach the successors
            # before its shutdown, and the messages it holds (a window's) keep the node
            # from finishing until it has flushed them.
            held = runtime.node.held
            if not runtime.drained_early or held:
                status = await finish(look_only=True)
                if status == _READY or (status == _PENDING and held):
                    await runtime.drain_early()
                elif status in {_FINISHED, _RUN_OVER}:
                    mailbox.mark_closed_remotely()
                    return
        status = await finish()
        if status in {_FINISHED, _RUN_OVER}:
            mailbox.mark_closed_remotely()  # finished (or the whole run is over): stop reading

    async def end_quiet_cycles(self) -> None:
        """Keep trying to end each cycle a hosted node is on, until it is ended.

        A cycle ends once every node of it has its shutdowns from off the cycle and none of
        its streams has an entry left (``CYCLE_QUIET`` in ``_redis_backend``); every process
        hosting a node of it tries, so the death of one does not stop the drain.
        """
        topology = self.topology
        cycles = {topology.cycle_of[i] for i in self.runtimes if i in topology.cycle_of}
        waiting = [
            [
                (self.mailbox(node_id), node_id, _off_cycle(topology.drain_sources(node_id)))
                for node_id in sorted(cycle)
            ]
            for cycle in cycles
        ]
        while waiting:
            await anyio.sleep(_CYCLE_POLL)
            for cycle in list(waiting):
                try:
                    status = await self.backend.end_cycle_if_quiet(cycle, epoch=self.epoch)
                except Exception:  # noqa: BLE001 - logged; the next round tries again
                    _log.exception("could not look at a cycle", graph=self.graph_name)
                    continue
                if status != _NOT_YET:
                    waiting.remove(cycle)

    async def left(self) -> dict[str, int]:
        """Per hosted node, the entries of its stream unread or pending (only nodes with some).

        What a stop, a budget or a grace period left, for the result; a failure to read
        is logged and leaves the node out.
        """
        left = {}
        for node_id in self.runtimes:
            mailbox = self.mailbox(node_id)
            try:
                info = await mailbox.inspect()
            except Exception:  # noqa: BLE001 - logged; the result says less, nothing is lost
                _log.exception("could not count what was left", channel=mailbox.name)
                continue
            count = sum(
                group.pending + (group.lag if group.lag is not None else info.length)
                for group in info.groups
                if group.name == mailbox.group
            )
            if count:
                left[node_id] = count
        return left

    async def renew_leases(self) -> None:
        """Keep the entries our loops hold from being reclaimed while they work on them.

        Every third of the shortest visibility timeout, one call per mailbox renews all the
        entries this process holds there, however many batches they came in.
        """
        mailboxes = [self.mailbox(node_id) for node_id in self.runtimes]
        if not mailboxes:
            return
        timeout = min(mailbox.visibility_timeout for mailbox in mailboxes)
        interval = timeout / _RENEWALS_PER_VISIBILITY_TIMEOUT
        outage, log = Outage(), _log.bind(graph=self.graph_name, task="lease renewal")
        while True:
            await anyio.sleep(interval)
            self._held_published.clear()  # the held leases' deadlines move on too
            for mailbox in mailboxes:
                try:
                    await mailbox.renew_leases()
                except BackendUnavailable as error:  # an outage: said once, not every round
                    outage.began(log, error)
                except Exception:  # noqa: BLE001 - logged; the next round tries again
                    _log.exception("lease renewal failed", channel=mailbox.name)
                else:
                    outage.ended(log)

    async def release_buffered(self) -> None:
        """Give back what our loops prefetched and did not start: others take it at once."""
        for node_id, runtime in self.runtimes.items():
            runtime.give_back_unstarted()
            mailbox = self.mailbox(node_id)
            try:
                await mailbox.release_buffered()
            except Exception:  # noqa: BLE001 - they are reclaimed after the timeout anyway
                _log.exception("could not release prefetched entries", channel=mailbox.name)
