"""Reading a graph's figures into a :class:`~spark_nodes.graphs.stats.GraphStats`.

In memory the figures are the node runtimes' own counts (kept by the worker loop whether
or not anyone reads them), the routes' counts of what they sent, and a metered node's
timings. A :class:`StatsReader` turns two reads into rates: each reader (``graph.stats()``,
each ``MetricsObserver``) keeps its previous read.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from spark_nodes.graphs.stats import EdgeStats, GraphStats, NodeStats, Timing
from spark_nodes.nodes.edges import edge_ends

if TYPE_CHECKING:
    from spark_nodes.graphs._run import Run
    from spark_nodes.graphs._topology import Topology

__all__ = ["COUNTERS", "Counts", "StatsReader", "idle_counts", "memory_counts"]


@dataclass(slots=True)
class Counts:
    """Raw figures of one read, before rates: what a process (or Redis) reports.

    ``nodes`` holds per node id the counters named as :class:`NodeStats` fields, plus
    ``"process_times"``/``"queue_times"`` sample lists where metered; ``edges`` holds per
    edge name the messages sent along it.
    """

    elapsed: float
    running: bool
    started: float = 0.0
    """When the counting started (a run's start): reads with another are of another run."""
    nodes: dict[str, dict[str, object]] = field(default_factory=dict)
    edges: dict[str, int] = field(default_factory=dict)


COUNTERS = (
    "received",
    "processed",
    "forwarded",
    "terminal_outputs",
    "failed_attempts",
    "retried",
    "dead_lettered",
    "error_routed",
    "restarts",
)
"""The cumulative counters of a node, summed over processes."""


def memory_counts(run: Run, *, ended: float | None = None) -> Counts:
    """The figures of an in-memory run (or of this process's part of a Redis run).

    ``ended``: when the run ended (``time.monotonic()``), if it has.
    """
    elapsed = (time.monotonic() if ended is None else ended) - run.started
    counts = Counts(elapsed=elapsed, running=ended is None, started=run.started)
    for node_id, runtime in run.runtimes.items():
        figures: dict[str, object] = {name: getattr(runtime, name) for name in COUNTERS}
        figures["mailbox_depth"] = runtime.waiting()
        meter = runtime.meter
        if meter is not None:
            figures["process_times"] = list(meter.process_times)
            figures["queue_times"] = list(meter.queue_times)
        counts.nodes[node_id] = figures
        for name, sent in runtime.routes.sent_by_edge().items():
            counts.edges[name] = counts.edges.get(name, 0) + sent
    return counts


class StatsReader:
    """Makes snapshots from reads, with rates since its previous snapshot."""

    __slots__ = ("_previous",)

    def __init__(self) -> None:
        # (when, the counts' start, processed per node, sent per edge)
        self._previous: tuple[float, float, dict[str, int], dict[str, int]] | None = None

    def snapshot(self, name: str, topology: Topology, counts: Counts) -> GraphStats:
        """The snapshot of ``counts``; nodes and edges in wiring order (then the others)."""
        now = time.monotonic()
        previous = self._previous
        if previous is None or previous[1] != counts.started:
            # First read, or a new run since: rates over the run so far.
            since = now - counts.elapsed
            processed_then: dict[str, int] = {}
            sent_then: dict[str, int] = {}
        else:
            since, _, processed_then, sent_then = previous
        span = max(now - since, 1e-9)
        nodes: dict[str, NodeStats] = {}
        order = [node.id for node in topology.nodes]
        order += [node_id for node_id in counts.nodes if node_id not in topology.by_id]
        for node_id in order:
            figures = counts.nodes.get(node_id)
            if figures is None:
                continue
            processed = _int(figures, "processed")
            process_times = figures.get("process_times")
            queue_times = figures.get("queue_times")
            nodes[node_id] = NodeStats(
                node_id=node_id,
                **{counter: _int(figures, counter) for counter in COUNTERS},
                mailbox_depth=_int(figures, "mailbox_depth"),
                rate=(processed - processed_then.get(node_id, 0)) / span,
                process_time=Timing.of(process_times) if isinstance(process_times, list) else None,
                queue_time=Timing.of(queue_times) if isinstance(queue_times, list) else None,
                workers=_int(figures, "workers") if "workers" in figures else 1,
            )
        edges: dict[str, EdgeStats] = {}
        names = [edge.name for node in topology.nodes for edge in node.edges]
        names += sorted(set(counts.edges) - set(names))
        for edge_name in dict.fromkeys(names):
            sent = counts.edges.get(edge_name, 0)
            source, target = edge_ends(edge_name)
            edges[edge_name] = EdgeStats(
                name=edge_name,
                source=source,
                target=target,
                sent=sent,
                rate=(sent - sent_then.get(edge_name, 0)) / span,
            )
        self._previous = (
            now,
            counts.started,
            {node_id: stats.processed for node_id, stats in nodes.items()},
            dict(counts.edges),
        )
        return GraphStats(
            graph=name,
            taken_at=time.time(),
            elapsed=counts.elapsed,
            running=counts.running,
            nodes=nodes,
            edges=edges,
        )


def _int(figures: dict[str, object], name: str) -> int:
    value = figures.get(name, 0)
    return value if isinstance(value, int) else 0


def idle_counts(topology: Topology) -> Counts:
    """The figures of a graph that has not run in this process: every count zero."""
    counts = Counts(elapsed=0.0, running=False)
    for node in topology.nodes:
        figures: dict[str, object] = dict.fromkeys(COUNTERS, 0)
        figures["mailbox_depth"] = node.mailbox.statistics().depth
        counts.nodes[node.id] = figures
    return counts
