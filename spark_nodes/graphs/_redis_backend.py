"""A graph on Redis: the nodes' mailboxes, and a shutdown that spans processes.

Every node's mailbox is a :class:`RedisChannel` whose stream is ``{ns}:{graph}:{node}``;
the graph's own bookkeeping is one hash, ``{ns}:{graph}#graph``, which no mailbox key can
collide with. All keys carry the ``{graph}`` hash tag: one Cluster slot per graph.
Serving processes publish their figures into ``{ns}:{graph}#stats``, which
``stats_counts`` reads (see :mod:`spark_nodes.graphs._redis_stats`).

The shutdown protocol, per run (``epoch``; a run ends when every node has finished):

1. ``graph.shutdown()`` writes a shutdown entry into each source node's stream.
2. The consumer that receives a node's shutdown entry records it (``RECORD``, atomic with
   its ack). When every predecessor's shutdown is in, the node is *closing*, bounded by the
   latest of those entries: everything sent before them has been delivered (streams deliver
   in order) and is pending somewhere or done.
3. Any consumer of the node, whenever a read finds nothing new, tries to finish it
   (``FINISH``): once nothing before the bound is pending, the node is finished, its
   mailbox is marked closed (every consumer's ``receive`` then ends) and a shutdown entry
   goes to each successor, all in one script, exactly once. Reclaims of dead workers'
   entries happen meanwhile, so a crash delays the finish, never loses it.
4. A node on a cycle also needs a shutdown from the cycle itself (``<cycle quiet>``): every
   process hosting a node of the cycle keeps trying ``CYCLE_QUIET``, which, once every
   node of the cycle has its shutdowns from off the cycle and no entry of the cycle's
   streams is unread, pending or delayed, writes that shutdown into each of them, once.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Final

import structlog
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from spark_nodes._redis_client import (
    ConnectionRetry,
    RedisClient,
    check_client,
    open_client,
    ready,
    with_retries,
)
from spark_nodes.channels import ChannelMessage
from spark_nodes.channels.codec import encode
from spark_nodes.channels.redis import RedisChannel, has_hash_tag, stream_key
from spark_nodes.channels.redis._scripts import TRIM_SETTLED
from spark_nodes.errors import ChannelUnavailable, WiringError
from spark_nodes.graphs._redis_stats import (
    DEPTH_COUNT_LIMIT,
    STATS_READ,
    merge_reports,
    parse_report,
    stats_key,
)
from spark_nodes.graphs._redis_steps import RedisStepStore
from spark_nodes.nodes._runtime import CYCLE_QUIET

if TYPE_CHECKING:
    from spark_nodes.graphs._stats import Counts
    from spark_nodes.graphs._topology import Topology
    from spark_nodes.nodes import Node

__all__ = ["DEFAULT_PREFETCH", "GRAPH_RUN_KEY", "RedisBackend"]

_log = structlog.get_logger("spark_nodes")
_REPLY_CHANNELS_KEPT: Final = 1024  # traces being answered at once, per process, at most

GRAPH_RUN_KEY: Final = "graph_run"
"""Metadata key of a distributed shutdown: the run (epoch) it belongs to."""

DEFAULT_PREFETCH: Final = 100
"""Entries a node's mailbox reads per round trip unless ``mailbox_options`` say otherwise:
one commit settles them all, so a batch this size costs about one round trip."""

RECORD: Final = (
    TRIM_SETTLED
    + """
-- Record a node's shutdown entry from one source, and settle the entry (if its lease is
-- ours): run through RedisChannel.settle_with. KEYS[1] node stream, KEYS[2] node stats,
-- KEYS[3] graph hash. ARGV[1] group, ARGV[2] consumer, ARGV[3] entry id, ARGV[4]
-- deliveries, ARGV[5] epoch ('' for the current one), ARGV[6] node, ARGV[7] source;
-- ARGV[8..] the sources it needs.
-- Returns -1 lease lost, 0 from an earlier run (ignored), 1 recorded, 2 now closing.
redis.replicate_commands()
local p = redis.pcall('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if p.err or #p == 0 or p[1][2] ~= ARGV[2] or tostring(p[1][4]) ~= ARGV[4] then return -1 end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
trim_settled(KEYS[1])
redis.call('HINCRBY', KEYS[2], 'acked', 1)
local epoch = redis.call('HGET', KEYS[3], 'epoch') or '0'
if ARGV[5] ~= '' and ARGV[5] ~= epoch then return 0 end
local prefix = 'shutdown:' .. epoch .. ':' .. ARGV[6] .. ':'
redis.call('HSETNX', KEYS[3], prefix .. ARGV[7], ARGV[3])
local latest = ARGV[3]
for i = 8, #ARGV do
  local id = redis.call('HGET', KEYS[3], prefix .. ARGV[i])
  if not id then return 1 end
  if id_before(latest, id) then latest = id end
end
redis.call('HSETNX', KEYS[3], 'closing:' .. epoch .. ':' .. ARGV[6], latest)
return 2
"""
)

FINISH: Final = """
-- Finish a closing node once nothing sent before its shutdown is still pending: mark it
-- finished, close its mailbox, send its shutdown on. The last node to finish ends the run.
-- KEYS[1] graph hash, KEYS[2] node stream, KEYS[3] node's closed key; then per successor:
-- stream, stats. ARGV[1] group, ARGV[2] epoch, ARGV[3] node, ARGV[4] number of nodes,
-- ARGV[5] '1' to look only (not finish); then per successor: the shutdown envelope.
-- Returns 0 not closing yet, 1 finished (now or before), 2 that run is over, 3 closing
-- with entries pending, 4 closing with none pending (when only looking).
redis.replicate_commands()
local epoch = ARGV[2]
if (redis.call('HGET', KEYS[1], 'epoch') or '0') ~= epoch then return 2 end
if redis.call('HEXISTS', KEYS[1], 'finished:' .. epoch .. ':' .. ARGV[3]) == 1 then return 1 end
local closing = redis.call('HGET', KEYS[1], 'closing:' .. epoch .. ':' .. ARGV[3])
if not closing then return 0 end
local pending = redis.pcall('XPENDING', KEYS[2], ARGV[1], '-', '(' .. closing, 1)
if not pending.err and #pending > 0 then return 3 end  -- no group: nothing is pending
if ARGV[5] == '1' then return 4 end
redis.call('HSET', KEYS[1], 'finished:' .. epoch .. ':' .. ARGV[3], '1')
redis.call('SET', KEYS[3], epoch)
for j = 6, #ARGV do
  local k = 4 + 2 * (j - 6)
  redis.call('XADD', KEYS[k], '*', 'm', ARGV[j])
  redis.call('HINCRBY', KEYS[k + 1], 'sent', 1)
end
if redis.call('HINCRBY', KEYS[1], 'finished:' .. epoch, 1) >= tonumber(ARGV[4]) then
  for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
    if field ~= 'epoch' then redis.call('HDEL', KEYS[1], field) end
  end
  redis.call('HSET', KEYS[1], 'epoch', tonumber(epoch) + 1)
end
return 1
"""


_QUIET: Final = """
-- Whether every pending entry of a stream is held on purpose (a window's) by a consumer
-- whose lease on it lives: published in `held` (see PUBLISH_HELD) with that lease and a
-- deadline not passed at `now` (server ms). Reads the pending entries 100 at a time.
local function held_only(stream, group_name, pending, held, now)
  if redis.call('HLEN', held) < pending then return false end
  local start = '-'
  while true do
    local page = redis.call('XPENDING', stream, group_name, start, '+', 100)
    for _, p in ipairs(page) do
      local lease = redis.call('HGET', held, p[2] .. ' ' .. p[1])
      if not lease then return false end
      local deliveries, deadline = string.match(lease, '(%d+) (%d+)')
      if deliveries ~= tostring(p[4]) or tonumber(deadline) <= now then return false end
    end
    if #page < 100 then return true end
    start = '(' .. page[#page][1]
  end
end

-- Whether a mailbox has no entry unread, pending (in its group) or delayed; with `held`,
-- entries held on purpose (see held_only) do not count as pending.
local function quiet(stream, delayed, group_name, held, now)
  if redis.call('ZCARD', delayed) > 0 then return false end
  if redis.call('EXISTS', stream) == 0 then return true end
  for _, group in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local info = {}
    for f = 1, #group, 2 do info[group[f]] = group[f + 1] end
    if info['name'] == group_name then
      local pending = tonumber(info['pending'])
      if pending > 0 and not (held and held_only(stream, group_name, pending, held, now)) then
        return false
      end
      local unread = redis.call('XRANGE', stream, '(' .. info['last-delivered-id'], '+',
                                'COUNT', 1)
      return #unread == 0
    end
  end
  return redis.call('XLEN', stream) == 0  -- nobody has read it yet
end
"""

IDLE: Final = (
    _QUIET
    + """
-- Whether every mailbox of a graph is quiet, read at one instant; entries held on purpose
-- by live consumers count as quiet. KEYS: per mailbox, its stream, delayed set and held
-- hash. ARGV[1] the group. Returns 1 idle, 0 not.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
for i = 1, #KEYS, 3 do
  if not quiet(KEYS[i], KEYS[i + 1], ARGV[1], KEYS[i + 2], now) then return 0 end
end
return 1
"""
)

CYCLE_QUIET_SCRIPT: Final = (
    _QUIET
    + """
-- Once a cycle is closed to input and quiet, send each of its nodes its last shutdown.
-- KEYS[1] graph hash; then per node of the cycle: stream, delayed set, stats. ARGV[1]
-- group, ARGV[2] epoch, ARGV[3] the cycle's name, ARGV[4] its number of nodes; then per
-- node: its id, the number k of its sources off the cycle, those k ids, the envelope.
-- Returns 0 not yet, 1 sent before, 2 that run is over, 3 sent now.
redis.replicate_commands()
local epoch = ARGV[2]
if (redis.call('HGET', KEYS[1], 'epoch') or '0') ~= epoch then return 2 end
local done = 'cycle-quiet:' .. epoch .. ':' .. ARGV[3]
if redis.call('HEXISTS', KEYS[1], done) == 1 then return 1 end
local count = tonumber(ARGV[4])
local at = 5
local envelopes = {}
for i = 1, count do
  local prefix = 'shutdown:' .. epoch .. ':' .. ARGV[at] .. ':'
  local sources = tonumber(ARGV[at + 1])
  at = at + 2
  for _ = 1, sources do
    if redis.call('HEXISTS', KEYS[1], prefix .. ARGV[at]) == 0 then return 0 end
    at = at + 1
  end
  envelopes[i] = ARGV[at]
  at = at + 1
end
for i = 1, count do
  if not quiet(KEYS[3 * i - 1], KEYS[3 * i], ARGV[1]) then return 0 end
end
redis.call('HSET', KEYS[1], done, '1')
for i = 1, count do
  redis.call('XADD', KEYS[3 * i - 1], '*', 'm', envelopes[i])
  redis.call('HINCRBY', KEYS[3 * i + 1], 'sent', 1)
end
return 3
"""
)


class RedisBackend:
    """A graph's Redis side: its client, its nodes' mailboxes, its distributed shutdown.

    Args:
        redis: A URL (the backend makes and closes the client) or a shared client.
        namespace: Prefix of every key.
        graph: The graph's name: the hash tag of its keys.
        channel_options: Keyword arguments for every mailbox :class:`RedisChannel`.
    """

    def __init__(
        self,
        redis: str | RedisClient,
        *,
        namespace: str,
        graph: str,
        channel_options: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(namespace, str) or not namespace:
            raise WiringError(f"namespace must be a non-empty str, not {namespace!r}")
        if "{" in graph or "}" in graph:
            raise WiringError(f"a Redis graph's name cannot contain '{{' or '}}': {graph!r}")
        if isinstance(redis, str):
            self.redis = open_client(redis)
            self._owns_client = True
        elif isinstance(redis, Redis | RedisCluster):
            check_client(redis)
            self.redis = redis
            self._owns_client = False
        else:
            raise WiringError(f"backend must be a redis:// URL or a Redis client, not {redis!r}")
        self.namespace = namespace
        self.graph = graph
        self.hash_key = f"{namespace}:{{{graph}}}#graph"
        self.options = dict(channel_options or {})
        self.retry: ConnectionRetry = self.options.get("retry") or ConnectionRetry()
        self._record = self.redis.register_script(RECORD)
        self._finish = self.redis.register_script(FINISH)
        self._cycle_quiet = self.redis.register_script(CYCLE_QUIET_SCRIPT)
        self._idle = self.redis.register_script(IDLE)
        self.mailboxes: dict[str, RedisChannel] = {}
        """The mailboxes made for the graph's nodes, by node id."""
        self._replies: OrderedDict[str, RedisChannel] = OrderedDict()
        self.stats_key = stats_key(namespace, graph)
        """The hash where serving processes publish their figures (see ``_redis_stats``)."""
        self._stats_read = self.redis.register_script(STATS_READ)
        self.steps = RedisStepStore(self.redis, f"{namespace}:{{{graph}}}#steps:", self.retry)
        """Where the graph's ``context.step`` results are kept (see ``_redis_steps``)."""

    def channel_name(self, node_id: str) -> str:
        """The mailbox name of ``node_id``: ``{graph}:node_id``."""
        return f"{{{self.graph}}}:{node_id}"

    def mailbox_for(self, node: Node) -> RedisChannel:
        """Make the mailbox of ``node``, reusing its observers; remember it."""
        options = {"prefetch": max(DEFAULT_PREFETCH, node.config.concurrency), **self.options}
        mailbox = RedisChannel(
            redis=self.redis,
            channel_name=self.channel_name(node.id),
            namespace=self.namespace,
            name=f"node:{self.graph}:{node.id}",
            observers=node.mailbox.observers,
            result_key=self.result_key(node.id),
            **options,
        )
        self.mailboxes[node.id] = mailbox
        return mailbox

    def result_key(self, node_id: str) -> str:
        """Where the latest output of ``node_id`` is kept (what :class:`RedisState` reads)."""
        return f"{self.namespace}:{{{self.graph}}}#result:{node_id}"

    def owns(self, channel: object) -> bool:
        """Whether ``channel`` is a mailbox of this graph."""
        return (
            isinstance(channel, RedisChannel)
            and channel.client is self.redis
            and has_hash_tag(channel.key)
            and channel.key.startswith(f"{self.namespace}:{{{self.graph}}}:")
        )

    async def epoch(self) -> int:
        """The current run's number (0 before the first run ended)."""
        value = await with_retries(
            lambda: self.redis.hget(self.hash_key, "epoch"),
            retry=self.retry, what=f"read the run of graph {self.graph!r}",
        )  # fmt: skip
        return int(value or 0)

    async def send_shutdown(self, mailbox: RedisChannel, *, source: str, epoch: int) -> None:
        """Write a shutdown entry of run ``epoch`` from ``source`` into ``mailbox``."""
        await mailbox.send(self.shutdown_message(source, epoch))

    @staticmethod
    def shutdown_message(source: str, epoch: int) -> ChannelMessage:
        """A shutdown from ``source`` (a node id, or the outside) for run ``epoch``."""
        return ChannelMessage(None, {"source_node": source, GRAPH_RUN_KEY: epoch}, is_shutdown=True)

    async def record_shutdown(
        self,
        mailbox: RedisChannel,
        message: ChannelMessage,
        *,
        node_id: str,
        required: tuple[str, ...],
        source: str,
    ) -> int:
        """Record a shutdown entry a consumer of ``node_id`` received (see ``RECORD``).

        Raises:
            ChannelUnavailable: Redis could not be reached within the retries.
        """
        run = message.metadata.get(GRAPH_RUN_KEY)
        return await mailbox.settle_with(
            message,
            self._record,
            keys=[self.hash_key],
            args=["" if run is None else str(run), node_id, source, *required],
            what=f"record a shutdown of {node_id!r}",
        )

    async def try_finish(
        self,
        mailbox: RedisChannel,
        *,
        node_id: str,
        epoch: int,
        successors: list[RedisChannel],
        nodes: int,
        look_only: bool = False,
    ) -> int:
        """Finish ``node_id`` if it is closing and drained (see ``FINISH``).

        ``look_only``: say whether it could finish (4) without finishing it.

        Raises:
            ChannelUnavailable: Redis could not be reached within the retries.
        """
        keys = [self.hash_key, mailbox.key, mailbox.keys.closed]
        args: list[Any] = [mailbox.group, epoch, node_id, nodes, "1" if look_only else "0"]
        for successor in successors:
            keys += (successor.key, successor.keys.stats)
            args.append(encode(self.shutdown_message(node_id, epoch)))
        status: int = await with_retries(
            lambda: self._finish(keys=keys, args=args),
            retry=self.retry, what=f"finish node {node_id!r}", error=ChannelUnavailable,
        )  # fmt: skip
        return status

    async def end_cycle_if_quiet(
        self, cycle: list[tuple[RedisChannel, str, tuple[str, ...]]], *, epoch: int
    ) -> int:
        """Send a closed, quiet cycle's nodes their last shutdown (see ``CYCLE_QUIET``).

        Args:
            cycle: Per node of the cycle: its mailbox, its id, its sources off the cycle.
            epoch: The run.

        Returns:
            0 not yet, 1 sent before, 2 that run is over, 3 sent now.

        Raises:
            ChannelUnavailable: Redis could not be reached within the retries.
        """
        keys = [self.hash_key]
        args: list[Any] = [cycle[0][0].group, epoch, min(node_id for _, node_id, _ in cycle)]
        args.append(len(cycle))
        for mailbox, node_id, sources in cycle:
            keys += (mailbox.key, mailbox.keys.delayed, mailbox.keys.stats)
            args += (node_id, len(sources), *sources)
            args.append(encode(self.shutdown_message(CYCLE_QUIET, epoch)))
        status: int = await with_retries(
            lambda: self._cycle_quiet(keys=keys, args=args),
            retry=self.retry, what="end a cycle", error=ChannelUnavailable,
        )  # fmt: skip
        return status

    def reply_channel(self, trace_id: str, *, reader: bool = False) -> RedisChannel:
        """The reply stream of the invoke whose trace id is ``trace_id``.

        Workers keep one channel per recent trace, to commit records to; the invoker
        (``reader``) gets its own, to read them.
        """
        if not reader:
            channel = self._replies.get(trace_id)
            if channel is not None:
                self._replies.move_to_end(trace_id)
                return channel
        channel = RedisChannel(
            redis=self.redis,
            channel_name=f"{{{self.graph}}}:{trace_id}",
            namespace=self.namespace,
            name=f"reply:{self.graph}:{trace_id}",
            retry=self.retry,
            block=0.05,
        )
        if not reader:
            self._replies[trace_id] = channel
            if len(self._replies) > _REPLY_CHANNELS_KEPT:
                self._replies.popitem(last=False)
        return channel

    async def drop_reply_channel(self, channel: RedisChannel, *, keep_for: float | None) -> None:
        """Delete an invoke's reply stream, or let it expire after ``keep_for`` seconds.

        A failure is logged: the keys then stay (``spark-nodes inspect`` shows them).
        """
        keys = channel.keys
        names = (keys.stream, keys.dead, keys.delayed, keys.stats, keys.closed)
        try:
            if keep_for is None:
                await self.redis.delete(*names)
            else:
                await ready(self.redis)  # a cluster client: learn the cluster first
                async with self.redis.pipeline(transaction=True) as pipe:
                    # Late records land in the stream and count in the stats hash: both
                    # must exist now, or they would be made later, without an expiry.
                    pipe.xgroup_create(keys.stream, channel.group, id="$", mkstream=True)
                    pipe.hincrby(keys.stats, "sent", 0)
                    for name in names:
                        pipe.expire(name, int(keep_for))
                    await pipe.execute(raise_on_error=False)
        except Exception:  # noqa: BLE001 - logged: only keys are left behind
            _log.exception("invoke reply stream not cleaned up", key=keys.stream)
        finally:
            channel.close()

    async def is_idle(self) -> bool:
        """Whether every mailbox of the graph is empty: nothing unread, pending or delayed.

        One script reads them all at one instant (read one by one, an entry could move
        from a mailbox not read yet to one read already). Sends this process has queued
        are written first.

        Raises:
            ChannelUnavailable: Redis could not be reached within the retries.
        """
        keys: list[str] = []
        for mailbox in self.mailboxes.values():
            await mailbox.flush()
            keys += (mailbox.key, mailbox.keys.delayed, mailbox.keys.held)
        if not keys:
            return True
        group = next(iter(self.mailboxes.values())).group
        idle: int = await with_retries(
            lambda: self._idle(keys=keys, args=[group]),
            retry=self.retry, what=f"read whether graph {self.graph!r} is idle",
            error=ChannelUnavailable,
        )  # fmt: skip
        return idle == 1

    async def stats_counts(self, graph_name: str, topology: Topology) -> Counts:
        """Every serving process's figures of the graph, summed, and each mailbox's depth.

        From any process, serving or not: one script call reads the stats hash the serving
        processes publish to and every node's mailbox depth (entries not delivered to its
        consumer group yet, plus delivered and not acked), at one instant; the reports are
        merged by :func:`~spark_nodes.graphs._redis_stats.merge_reports`. Nodes of
        ``topology`` that no process reported have zero counts.

        Args:
            graph_name: The graph's name, for errors.
            topology: The graph's nodes as this process knows them.

        Raises:
            ChannelUnavailable: Redis could not be reached within the retries.
        """
        keys = [self.stats_key]
        args: list[Any] = [DEPTH_COUNT_LIMIT]
        for node in topology.nodes:
            mailbox = self.mailboxes.get(node.id)
            if mailbox is not None:
                keys.append(mailbox.key)
                args.append(mailbox.group)
            else:  # wired after the graph moved to Redis: its mailbox is made at the next run
                keys.append(stream_key(self.namespace, self.channel_name(node.id)))
                args.append(self.options.get("group", "workers"))
        reply: Any = await with_retries(
            lambda: self._stats_read(keys=keys, args=args),
            retry=self.retry, what=f"read the stats of graph {graph_name!r}",
            error=ChannelUnavailable,
        )  # fmt: skip
        fields, depths = reply
        reports = [parse_report(value) for value in fields[1::2]]
        return merge_reports(
            [report for report in reports if report is not None],
            {node.id: int(depth) for node, depth in zip(topology.nodes, depths, strict=True)},
        )

    async def aclose(self) -> None:
        """Close the mailboxes (their queued sends written), then the client if ours.

        A mailbox that cannot write its queued sends is logged, and the rest are closed.
        """
        for node_id, mailbox in self.mailboxes.items():
            try:
                await mailbox.aclose()
            except Exception:  # noqa: BLE001 - logged; the other mailboxes still close
                _log.exception("closing a mailbox failed", node=node_id, channel=mailbox.name)
        if self._owns_client:
            await self.redis.aclose()
