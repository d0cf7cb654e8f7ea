"""``GraphStats``: a live snapshot of what a graph's nodes and edges are doing.

``graph.stats()`` and :class:`~spark_nodes.graphs.metrics.MetricsObserver` return it. Counts
are cumulative over the run (on Redis: over every worker process that served the graph and
reported); rates are over the time since the previous snapshot of the same reader; timings
exist only where a ``MetricsObserver`` meters the node (they cost a clock read or two per
message, which a graph nobody meters does not pay). A worker loop counts the messages it
handles on its fast path when their batch ends (at most 128 messages, or one ``await``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["EdgeStats", "GraphStats", "NodeStats", "Timing"]


@dataclass(frozen=True, slots=True)
class Timing:
    """Percentiles of recent durations, in seconds (the last samples kept, see ``count``).

    Attributes:
        count: Samples the percentiles are taken over (the most recent ones).
        p50: Median.
        p90: 90th percentile.
        p99: 99th percentile.
        max: Largest sample.
    """

    count: int
    p50: float
    p90: float
    p99: float
    max: float

    @classmethod
    def of(cls, samples: list[float]) -> Timing | None:
        """The percentiles of ``samples`` (nearest rank); ``None`` if there are none."""
        if not samples:
            return None
        ordered = sorted(samples)
        last = len(ordered) - 1
        return cls(
            count=len(ordered),
            p50=ordered[round(0.50 * last)],
            p90=ordered[round(0.90 * last)],
            p99=ordered[round(0.99 * last)],
            max=ordered[last],
        )


@dataclass(frozen=True, slots=True)
class NodeStats:
    """One node's figures.

    Attributes:
        node_id: The node.
        received: Data messages taken from its mailbox.
        processed: Messages processed successfully.
        forwarded: Outputs delivered to successors.
        terminal_outputs: Outputs that took no edge (results).
        failed_attempts: ``process`` calls (or routing, forwarding) that raised.
        retried: Retries scheduled after a failed attempt.
        dead_lettered: Messages dead-lettered.
        restarts: Times a crashed worker loop was restarted.
        mailbox_depth: Messages waiting for it now: in its mailbox, or taken in a batch and
            not started (on Redis: not yet delivered to a worker, plus delivered and not
            acked).
        rate: Messages processed per second since the reader's previous snapshot.
        process_time: Recent ``process`` durations, if metered.
        queue_time: Recent times from send to the start of ``process``, if metered.
        workers: Worker processes serving the node now: 1 in memory; on Redis those
            whose runs reported lately and have not ended (the counts also sum ended ones).
        error_routed: Messages it gave up on and sent along its error routes
            (``a.on_error() >> h``), each counted once; also in ``dead_lettered`` when
            routed with ``dead_letter=True``.
    """

    node_id: str
    received: int
    processed: int
    forwarded: int
    terminal_outputs: int
    failed_attempts: int
    retried: int
    dead_lettered: int
    restarts: int
    mailbox_depth: int
    rate: float
    process_time: Timing | None
    queue_time: Timing | None
    workers: int = 1
    error_routed: int = 0


@dataclass(frozen=True, slots=True)
class EdgeStats:
    """One edge's figures (edges with the same name, ``"a->b"``, count as one).

    Attributes:
        name: ``"{source}->{target}"`` (``"{source}~>{target}"`` for a ``goto``).
        source: The sending node's id.
        target: The receiving node's id.
        sent: Messages sent along it.
        rate: Messages per second since the reader's previous snapshot.
    """

    name: str
    source: str
    target: str
    sent: int
    rate: float


@dataclass(frozen=True, slots=True)
class GraphStats:
    """A snapshot of a graph: every node's and edge's figures at one moment.

    Attributes:
        graph: The graph's name.
        taken_at: When (``time.time()``).
        elapsed: Seconds the run has been going (once it ended: how long it went; 0 if
            none ran).
        running: Whether a run was going on in this process (on Redis: whether any
            worker reported in the last few seconds).
        nodes: Per node id, in wiring order.
        edges: Per edge name, in wiring order.
    """

    graph: str
    taken_at: float
    elapsed: float
    running: bool
    nodes: dict[str, NodeStats]
    edges: dict[str, EdgeStats]

    def to_dict(self) -> dict[str, Any]:
        """The snapshot as plain data (JSON-encodable)."""
        return asdict(self)

    @property
    def waiting(self) -> int:
        """Messages waiting for the nodes (their ``mailbox_depth``), over all nodes."""
        return sum(node.mailbox_depth for node in self.nodes.values())
