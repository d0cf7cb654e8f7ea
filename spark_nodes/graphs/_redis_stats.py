"""Stats of a Redis graph: each serving process publishes its figures, any process reads them.

A process serving nodes of a Redis graph (a distributed run) publishes the figures of the
nodes it hosts every :data:`PUBLISH_INTERVAL` seconds, and once more when its run ends
(stopped, shut down or cancelled), into one hash per graph, under the graph's hash tag::

    {ns}:{G}#stats    field "<node>@<process>", value a msgpack map:
        v           REPORT_VERSION
        node        the node's id
        process     the run's token, "<host>-<pid>-<random>": unique per run
        started     when the run started (unix seconds)
        published   when this report was written (unix seconds)
        interval    the seconds between two reports of this run
        final       whether the run has ended (its last report)
        counters    {counter: int}, the node runtime's COUNTERS
        edges       {edge name: sent}, along the node's routes
        process_times, queue_times
                    up to REPORT_SAMPLES recent durations, newest first (metered nodes only)

When a run ends, its last figures are added to the node's ``"<node>@retired"`` field (a
report with process ``"retired"``, no samples) and its own field is deleted, in one
transaction (:meth:`StatsPublisher.retire`): the hash holds a field per node and live run,
plus one per node for every run that ended. (A run that dies without its last report
leaves its field: it still counts what it last published.)

The hash expires :data:`STATS_TTL` seconds after its last report, so an abandoned graph's
stats do not stay in Redis. A reader (``graph.stats()``, from any process) reads the hash
and every node's mailbox depth in one script call (:data:`STATS_READ`) and sums what the
processes reported (:func:`merge_reports`): the figures are cumulative over every run that
reported since the hash was made (delete it to start over).

Publishing is a task of the run: it never raises into the run, and a failed report (Redis
down, paused, slow past :data:`PUBLISH_TIMEOUT`) is logged once per outage and written
again at the next tick.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import anyio
import structlog
from redis.exceptions import RedisError, WatchError

from spark_nodes._redis_client import ConnectionRetry, ready, with_retries
from spark_nodes.channels.codec import pack, unpack
from spark_nodes.errors import ChannelUnavailable, MessageDecodeError
from spark_nodes.graphs._stats import COUNTERS, Counts
from spark_nodes.nodes._metering import SAMPLES

if TYPE_CHECKING:
    from spark_nodes._redis_client import RedisClient
    from spark_nodes.nodes._runtime import NodeRuntime

__all__ = [
    "DEPTH_COUNT_LIMIT",
    "MERGED_SAMPLES",
    "PUBLISH_INTERVAL",
    "PUBLISH_TIMEOUT",
    "REPORT_SAMPLES",
    "REPORT_VERSION",
    "RUNNING_INTERVALS",
    "STATS_READ",
    "STATS_TTL",
    "Report",
    "StatsPublisher",
    "merge_reports",
    "parse_report",
    "process_token",
    "read_node_counters",
    "stats_key",
]

_log = structlog.get_logger("spark_nodes")

# Not Final: tests (and a worker that wants fresher figures) lower them before a run starts.
PUBLISH_INTERVAL = 1.0
"""Seconds between two reports of a serving process."""

PUBLISH_TIMEOUT = 5.0
"""The longest one report may take; past it, it counts as failed (tried again next tick)."""

STATS_TTL: Final = 7 * 24 * 3600
"""Seconds the stats hash lives after its last report (7 days): an abandoned graph's go."""

RETIRED: Final = "retired"
"""The process name of a node's retired total: what every ended run of it added up to."""

RETIRE_TRIES: Final = 20
"""Tries of the optimistic transaction that retires an ended run's figures."""

REPORT_SAMPLES: Final = 256
"""Timing samples of each kind one report carries (the most recent)."""

MERGED_SAMPLES: Final = SAMPLES
"""Timing samples of each kind a read keeps, over every process (as a metered node)."""

RUNNING_INTERVALS: Final = 3
"""A run whose last report is older than this many of its intervals is not running."""

REPORT_VERSION: Final = 1
"""The version of the report map this build writes and reads."""

DEPTH_COUNT_LIMIT: Final = 1000
"""Entries counted on either side of a group's last delivered id when Redis does not know
its lag (Redis < 7), the same bound as ``spark-nodes inspect``'s: entries up to it first
(pending, and settled ones not trimmed yet: few), then, if those are more, entries after
it. Past the bound on both sides, the depth read is the stream's length, an upper bound
(it also counts acked entries behind an older pending one)."""

STATS_READ: Final = """
-- A Redis graph's stats at one instant: its stats hash, and each node's mailbox depth
-- (entries not delivered to its group yet, plus delivered and not acked).
-- KEYS[1] the stats hash; KEYS[2..] the node streams. ARGV[1] the most entries counted on
-- each side of a group's last delivered id; ARGV[2..] each stream's group.
-- Returns {the hash as HGETALL gives it, {depth per stream}}.
local function depth(stream, group_name, limit)
  if redis.call('TYPE', stream)['ok'] ~= 'stream' then return 0 end
  local length = redis.call('XLEN', stream)
  for _, group in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local info = {}
    for f = 1, #group, 2 do info[group[f]] = group[f + 1] end
    if info['name'] == group_name then
      local pending = tonumber(info['pending'])
      if type(info['lag']) == 'number' then return pending + info['lag'] end  -- Redis 7
      -- Redis 6: count one side of the last delivered id. Entries up to it are few (the
      -- settled ones are trimmed): count those first, however long the backlog after it.
      local last = info['last-delivered-id']
      local upto = #redis.call('XRANGE', stream, '-', last, 'COUNT', limit + 1)
      if upto <= limit then return pending + length - upto end
      local after = #redis.call('XRANGE', stream, '(' .. last, '+', 'COUNT', limit + 1)
      if after <= limit then return pending + after end
      return length
    end
  end
  return length  -- nobody has read it yet
end
local depths = {}
for i = 2, #KEYS do
  depths[i - 1] = depth(KEYS[i], ARGV[i], tonumber(ARGV[1]))
end
return {redis.call('HGETALL', KEYS[1]), depths}
"""


def stats_key(namespace: str, graph: str) -> str:
    """The stats hash of a graph: ``{namespace}:{graph}#stats`` (the graph's hash tag)."""
    return f"{namespace}:{{{graph}}}#stats"


def process_token() -> str:
    """``<host>-<pid>-<random>``: names one run of one process in the stats hash."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"


class StatsPublisher:
    """Publishes one run's figures of the nodes it hosts (see the module).

    :meth:`run` is a task of the run (started with the worker loops, cancelled with them);
    :meth:`publish_final` is awaited once the loops ended. Neither raises: a report that
    fails is logged (once, until one succeeds again) and the next tick writes a fresh one.

    Args:
        redis: The graph's client.
        key: The graph's stats hash (:func:`stats_key`).
        runtimes: The nodes this process hosts in the run, by id.
        graph: The graph's name, for logs.
    """

    __slots__ = (
        "began",
        "failing",
        "graph",
        "interval",
        "key",
        "published",
        "redis",
        "runtimes",
        "started",
        "timeout",
        "token",
    )

    def __init__(
        self, redis: RedisClient, key: str, runtimes: Mapping[str, NodeRuntime], *, graph: str
    ) -> None:
        self.redis = redis
        self.key = key
        self.runtimes = runtimes
        self.graph = graph
        self.token = process_token()
        self.interval = PUBLISH_INTERVAL
        self.timeout = PUBLISH_TIMEOUT
        self.started = time.time()
        self.began = False
        """Whether :meth:`run` began: a run that never served publishes no final report."""
        self.failing = False
        """Whether the last report failed (an outage is logged once)."""
        self.published = 0
        """Reports written so far (each one a field per hosted node)."""

    async def run(self) -> None:
        """Publish now, then every :attr:`interval` seconds, until cancelled."""
        self.began = True
        while True:
            await self.publish()
            await anyio.sleep(self.interval)

    async def publish_final(self) -> None:
        """Publish the run's last figures, marked final; shielded, bounded by the timeout.

        Awaited when the run ends, also when it is cancelled. A run that hosts nothing,
        or whose loops never started (Redis was down), publishes nothing.
        """
        if not self.began:
            return
        with anyio.CancelScope(shield=True):
            if not await self.retire():
                await self.publish(final=True)  # at least the figures, unfolded

    async def publish(self, *, final: bool = False) -> bool:
        """Write one report per hosted node; whether they were written. Never raises.

        A failure (Redis unreachable, or slower than :attr:`timeout`) is logged as a
        warning at the first failure of an outage, and as ``stats published again`` when
        a report succeeds after one.
        """
        if not self.runtimes:
            return True
        try:
            fields = self.reports(final=final)
            with anyio.fail_after(self.timeout):
                await ready(self.redis)  # a cluster client: learn the cluster first
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.hset(self.key, mapping=fields)  # type: ignore[arg-type]
                    pipe.expire(self.key, STATS_TTL)
                    await pipe.execute()
        except (RedisError, OSError, TimeoutError) as error:  # the server: an outage
            if not self.failing:
                self.failing = True
                _log.warning(
                    "stats not published; trying again every interval",
                    graph=self.graph, key=self.key, interval=self.interval,
                    error=f"{type(error).__name__}: {error}",
                )  # fmt: skip
            return False
        except Exception:  # noqa: BLE001 - a bug of ours: logged, and the run goes on
            if not self.failing:
                self.failing = True
                _log.exception("stats not published", graph=self.graph, key=self.key)
            return False
        self.published += 1
        if self.failing:
            self.failing = False
            _log.info("stats published again", graph=self.graph, key=self.key)
        return True

    async def retire(self) -> bool:
        """Fold this run's last figures into its nodes' retired totals; whether it was done.

        Adds them to each hosted node's retired total and deletes the run's own fields, in
        one transaction. Never raises.

        Optimistic (``WATCH``): other processes write the hash every second, so a few
        tries may be needed; after :data:`RETIRE_TRIES` the caller writes a final report
        instead.
        """
        if not self.runtimes:
            return True
        own = {node_id: f"{node_id}@{self.token}" for node_id in self.runtimes}
        retired = {node_id: f"{node_id}@{RETIRED}" for node_id in self.runtimes}
        finals = self.report_maps(final=True)
        try:
            with anyio.fail_after(self.timeout):
                await ready(self.redis)  # a cluster client: learn the cluster first
                async with self.redis.pipeline(transaction=True) as pipe:
                    for _ in range(RETIRE_TRIES):
                        try:
                            await pipe.watch(self.key)
                            before = await pipe.hmget(self.key, list(retired.values()))
                            totals = {
                                retired[node_id]: pack(
                                    _retired(finals[node_id], old, node_id),
                                    where=f"retired stats of {node_id!r}",
                                )
                                for node_id, old in zip(retired, before, strict=True)
                            }
                            pipe.multi()  # type: ignore[no-untyped-call]
                            pipe.hset(self.key, mapping=totals)  # type: ignore[arg-type]
                            pipe.hdel(self.key, *own.values())
                            pipe.expire(self.key, STATS_TTL)
                            await pipe.execute()
                        except WatchError:
                            continue
                        return True
        except (RedisError, OSError, TimeoutError) as error:
            _log.warning("stats of an ended run not folded", graph=self.graph, key=self.key,
                         error=f"{type(error).__name__}: {error}")  # fmt: skip
        return False

    def reports(self, *, final: bool = False) -> dict[str, bytes]:
        """The hash fields of this process's reports now: one per hosted node."""
        return {
            f"{node_id}@{self.token}": pack(report, where=f"stats of {node_id!r}")
            for node_id, report in self.report_maps(final=final).items()
        }

    def report_maps(self, *, final: bool = False) -> dict[str, dict[str, Any]]:
        """This process's reports now, one per hosted node, before they are packed."""
        now = time.time()
        fields: dict[str, dict[str, Any]] = {}
        for node_id, runtime in self.runtimes.items():
            edges = runtime.routes.sent_by_edge()
            report: dict[str, Any] = {
                "v": REPORT_VERSION,
                "node": node_id,
                "process": self.token,
                "started": self.started,
                "published": now,
                "interval": self.interval,
                "final": final,
                "counters": {name: getattr(runtime, name) for name in COUNTERS},
                "edges": edges,
            }
            meter = runtime.meter
            if meter is not None:
                report["process_times"] = meter.process_times[: -REPORT_SAMPLES - 1 : -1]
                report["queue_times"] = meter.queue_times[: -REPORT_SAMPLES - 1 : -1]
            fields[node_id] = report
        return fields


def _retired(final: dict[str, Any], before: object, node_id: str) -> dict[str, Any]:
    """The node's retired total: ``before`` (a packed one, if any) plus a run's ``final``.

    Its samples are the latest run's that had some (a sum of samples means nothing).
    """
    old = parse_report(before) if isinstance(before, bytes) else None
    counters, edges = dict(final["counters"]), dict(final["edges"])
    started, published = final["started"], final["published"]
    if old is not None:
        for name, value in old.counters.items():
            counters[name] = counters.get(name, 0) + value
        for name, value in old.edges.items():
            edges[name] = edges.get(name, 0) + value
        started, published = min(started, old.started), max(published, old.published)
    total: dict[str, Any] = {
        "v": REPORT_VERSION,
        "node": node_id,
        "process": RETIRED,
        "started": started,
        "published": published,
        "interval": final["interval"],
        "final": True,
        "counters": counters,
        "edges": edges,
    }
    for kind in ("process_times", "queue_times"):
        samples = final.get(kind) or (getattr(old, kind) if old is not None else None)
        if samples:
            total[kind] = samples
    return total


@dataclass(frozen=True, slots=True)
class Report:
    """One process's report of one node, as read back (see the module for the fields)."""

    node: str
    process: str
    started: float
    published: float
    interval: float
    final: bool
    counters: dict[str, int]
    edges: dict[str, int]
    process_times: list[float] | None = None
    queue_times: list[float] | None = None

    def live(self, now: float) -> bool:
        """Whether its run was still going at ``now`` (reported lately, not finally)."""
        return not self.final and now - self.published < RUNNING_INTERVALS * self.interval


def parse_report(data: bytes) -> Report | None:
    """Read one field of the stats hash; ``None`` if it is not a report this build reads."""
    try:
        raw = unpack(data)
    except MessageDecodeError:
        return None
    if not isinstance(raw, dict) or raw.get("v") != REPORT_VERSION:
        return None
    node, process = raw.get("node"), raw.get("process")
    numbers = [raw.get(name) for name in ("started", "published", "interval")]
    counters, edges = raw.get("counters"), raw.get("edges")
    if not (
        isinstance(node, str)
        and isinstance(process, str)
        and all(_is_number(value) for value in numbers)
        and isinstance(counters, dict)
        and isinstance(edges, dict)
    ):
        return None
    started, published, interval = (float(value) for value in numbers)  # type: ignore[arg-type]
    return Report(
        node=node,
        process=process,
        started=started,
        published=published,
        interval=interval,
        final=raw.get("final") is True,
        counters=_counts(counters),
        edges=_counts(edges),
        process_times=_samples(raw.get("process_times")),
        queue_times=_samples(raw.get("queue_times")),
    )


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _counts(raw: dict[Any, Any]) -> dict[str, int]:
    return {
        name: value
        for name, value in raw.items()
        if isinstance(name, str) and isinstance(value, int) and not isinstance(value, bool)
    }


def _samples(raw: object) -> list[float] | None:
    if not isinstance(raw, list):
        return None
    return [float(value) for value in raw if _is_number(value)]


def merge_reports(
    reports: Iterable[Report], depths: Mapping[str, int], *, now: float | None = None
) -> Counts:
    """Sum what every process reported into one read's :class:`Counts`.

    Counters and edges' ``sent`` are summed over the reports; ``workers`` is the number of
    processes serving a node now (their runs live); timing samples are interleaved newest
    first (the most recently published report's first), at most :data:`MERGED_SAMPLES`.
    ``running``: some run reported within :data:`RUNNING_INTERVALS` of its interval and has
    not ended;
    ``elapsed``: since the earliest run started (until now, or until the last report if
    nothing runs). Every node of ``depths`` (the topology's) is in the result, those no
    process reported with zero counts.

    Args:
        reports: Every report of the stats hash.
        depths: Each node's mailbox depth, by id.
        now: The time of the read (``time.time()`` by default).
    """
    now = time.time() if now is None else now
    by_node: dict[str, list[Report]] = {node_id: [] for node_id in depths}
    edges: dict[str, int] = {}
    every: list[Report] = []
    for report in reports:
        every.append(report)
        by_node.setdefault(report.node, []).append(report)
        for name, sent in report.edges.items():
            edges[name] = edges.get(name, 0) + sent
    running = any(report.live(now) for report in every)
    if every:
        first_start = min(report.started for report in every)
        until = now if running else max(report.published for report in every)
        elapsed = max(until - first_start, 0.0)
    else:
        elapsed = 0.0
    started = min((report.started for report in every), default=0.0)
    counts = Counts(elapsed=elapsed, running=running, started=started, edges=edges)
    for node_id, node_reports in by_node.items():
        node_reports.sort(key=lambda report: report.published, reverse=True)
        figures: dict[str, object] = {
            name: sum(report.counters.get(name, 0) for report in node_reports) for name in COUNTERS
        }
        figures["mailbox_depth"] = depths.get(node_id, 0)
        figures["workers"] = len({r.process for r in node_reports if r.live(now)})
        for kind in ("process_times", "queue_times"):
            samples = [getattr(report, kind) for report in node_reports]
            kept = [each for each in samples if each is not None]
            if kept:
                figures[kind] = _interleave(kept, MERGED_SAMPLES)
        counts.nodes[node_id] = figures
    return counts


async def read_node_counters(
    redis: RedisClient, key: str, *, retry: ConnectionRetry | None = None
) -> dict[str, dict[str, int]]:
    """Each node's :data:`COUNTERS` in the stats hash ``key``, summed over its reports.

    One ``HGETALL``; a node nobody reported is absent (an empty dict if the hash is).

    Raises:
        ChannelUnavailable: Redis could not be reached within the retries.
    """
    fields: dict[bytes, bytes] = await with_retries(
        lambda: redis.hgetall(key),  # type: ignore[arg-type,return-value]
        retry=retry or ConnectionRetry(), what=f"read the stats hash {key!r}",
        error=ChannelUnavailable,
    )  # fmt: skip
    nodes: dict[str, dict[str, int]] = {}
    for value in fields.values():
        report = parse_report(value) if isinstance(value, bytes) else None
        if report is None:
            continue
        counters = nodes.setdefault(report.node, dict.fromkeys(COUNTERS, 0))
        for name in COUNTERS:
            counters[name] += report.counters.get(name, 0)
    return nodes


def _interleave(lists: list[list[float]], limit: int) -> list[float]:
    """The first of each list, then the second of each, and so on; at most ``limit``."""
    merged: list[float] = []
    for rank in range(max(len(each) for each in lists)):
        merged += [each[rank] for each in lists if rank < len(each)]
        if len(merged) >= limit:
            break
    return merged[:limit]
