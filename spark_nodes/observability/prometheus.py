"""``PrometheusExporter``: a graph's figures (``graph.stats()``) as Prometheus metrics.

Prometheus collectors are synchronous and a graph's figures are read with an ``await``
(from Redis, for a distributed graph), so the exporter collects from the latest snapshot
it read: ``await exporter.refresh()`` reads one, ``exporter.run(interval)`` reads one every
``interval`` seconds in a task of yours::

    exporter = PrometheusExporter(graph)          # registered with prometheus_client.REGISTRY
    prometheus_client.start_http_server(9464)
    async with anyio.create_task_group() as tasks:
        await tasks.start(exporter.run, 5.0)      # started once the first snapshot is read
        ...

Metrics, with ``namespace="spark_nodes"``; labels ``graph`` and ``node`` unless said:

- counters: ``spark_nodes_messages_received_total``, ``..._messages_processed_total``,
  ``..._messages_forwarded_total``, ``..._messages_terminal_total`` (outputs that took no
  edge), ``..._messages_dead_lettered_total``, ``..._messages_error_routed_total``
  (messages sent along the node's error routes), ``..._process_failures_total`` (calls
  of ``process`` that raised), ``..._process_retries_total``,
  ``..._worker_restarts_total``, and ``..._edge_messages_sent_total`` (labels ``graph``,
  ``node``: the sender, ``edge``);
- gauges: ``spark_nodes_mailbox_depth`` (messages waiting), ``..._node_rate`` (messages
  processed per second), ``..._node_workers`` (processes reporting the node),
  ``..._graph_running`` (1 while a run goes on; label ``graph`` only);
- quantiles, as gauges with a ``quantile`` label (0.5, 0.9, 0.99):
  ``spark_nodes_process_time_seconds`` and ``..._queue_time_seconds`` (send to process).

The counters are the graph's cumulative counts, so they only grow within a run (a new
in-memory run starts again from zero, which Prometheus' ``rate()`` reads as a reset). The
time quantiles (0.5, 0.9 and 0.99 of the most recent samples) exist only for nodes a
:class:`~spark_nodes.graphs.metrics.MetricsObserver` meters. ``node_rate`` is over the time
since the previous snapshot of the same reader: ``graph.stats()`` is one reader for every
caller, a ``MetricsObserver`` one of its own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Final

import anyio
import structlog

from spark_nodes.graphs import Graph, GraphStats, MetricsObserver

try:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry
except ImportError as error:  # the extra is optional: say which one to install
    raise ImportError(
        "spark_nodes.observability.prometheus needs prometheus-client, which is not "
        "installed: pip install 'spark-nodes[prometheus]'"
    ) from error

if TYPE_CHECKING:
    from anyio.abc import TaskStatus

    from spark_nodes.graphs import Timing

__all__ = ["PrometheusExporter"]

_log = structlog.get_logger("spark_nodes")

_NODE_COUNTERS: Final = (
    # (metric name without "_total", NodeStats field, help)
    ("messages_received", "received", "Messages a node took from its mailbox."),
    ("messages_processed", "processed", "Messages a node processed successfully."),
    ("messages_forwarded", "forwarded", "Outputs a node sent to its successors."),
    ("messages_terminal", "terminal_outputs", "Outputs of a node that took no edge."),
    ("messages_dead_lettered", "dead_lettered", "Messages a node dead-lettered."),
    ("messages_error_routed", "error_routed", "Messages a node sent along its error routes."),
    ("process_failures", "failed_attempts", "Calls of a node's process that raised."),
    ("process_retries", "retried", "Retries of process scheduled after a failed attempt."),
    ("worker_restarts", "restarts", "Times a node's crashed worker loop was restarted."),
)
_QUANTILES: Final = (("0.5", "p50"), ("0.9", "p90"), ("0.99", "p99"))

_Source = Graph | MetricsObserver
_Family = CounterMetricFamily | GaugeMetricFamily
"""What an exporter reads: a graph (``graph.stats()``) or a ``MetricsObserver``."""


class PrometheusExporter(Collector):
    """A Prometheus collector of one or more graphs' figures (see the module).

    ``collect()`` (called by the registry, at each scrape, possibly in the HTTP server's
    thread) yields the latest snapshot that :meth:`refresh` read: nothing before the first,
    zeros for a graph that never ran. Reading one attribute is all it does, so it needs no
    lock.

    Args:
        graph: What to export: a :class:`~spark_nodes.graphs.Graph` (its ``stats()``), a
            :class:`~spark_nodes.graphs.MetricsObserver` attached to one (its
            ``snapshot()``: its scope, timings, rates of its own), or several of these
            (graphs with different names: one set of metric families for all).
        registry: The registry to register with, as in ``prometheus_client``: its global
            ``REGISTRY`` by default; ``None`` registers nowhere (register it yourself).
        namespace: The prefix of the metric names (``""``: none).

    Raises:
        TypeError: ``graph`` is not a graph or a ``MetricsObserver`` (or several).
        ValueError: The registry already has these metric names (another exporter with
            the same namespace: export several graphs with one exporter instead).
    """

    def __init__(
        self,
        graph: _Source | Iterable[_Source],
        registry: CollectorRegistry | None = REGISTRY,
        *,
        namespace: str = "spark_nodes",
    ) -> None:
        sources: list[_Source] = (
            [graph] if isinstance(graph, Graph | MetricsObserver) else list(graph)
        )
        for source in sources:
            if not isinstance(source, Graph | MetricsObserver):
                raise TypeError(
                    f"PrometheusExporter exports a Graph or a MetricsObserver (or a list of "
                    f"them), not {type(source).__name__}"
                )
        self.sources: tuple[_Source, ...] = tuple(sources)
        """What it reads, in order."""
        self.namespace = namespace
        """The prefix of its metric names."""
        self.latest: tuple[GraphStats, ...] = ()
        """The snapshots the last successful :meth:`refresh` read, one per source."""
        if registry is not None:
            registry.register(self)

    async def refresh(self) -> None:
        """Read a snapshot of every source; scrapes report it from now on.

        Raises:
            RuntimeError: A ``MetricsObserver`` source is not attached to a graph.
            ChannelUnavailable: A Redis graph's server could not be reached (the previous
                snapshot stays).
        """
        snapshots: list[GraphStats] = []
        for source in self.sources:
            if isinstance(source, Graph):
                snapshots.append(await source.stats())
            else:
                snapshots.append(await source.snapshot())
        self.latest = tuple(snapshots)

    async def run(
        self,
        interval: float = 5.0,
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Refresh every ``interval`` seconds until cancelled.

        Runs in the task that awaits it (``task_group.start_soon(exporter.run)``, or
        ``await task_group.start(exporter.run)``, which returns once the first refresh
        was tried). A refresh that fails is logged (``"prometheus refresh failed"``) and
        the scrapes keep reporting the previous snapshot until one succeeds.

        Args:
            interval: Seconds between two refreshes.
            task_status: For ``task_group.start``.

        Raises:
            ValueError: ``interval`` is not a positive number.
        """
        if not (interval > 0 and math.isfinite(interval)):
            raise ValueError(f"interval must be a positive number of seconds, not {interval!r}")
        started = False
        while True:
            try:
                await self.refresh()
            except Exception:  # noqa: BLE001 - a metrics outage must not stop the graph
                _log.exception("prometheus refresh failed", graphs=self._names())
            if not started:
                task_status.started()
                started = True
            await anyio.sleep(interval)

    def describe(self) -> list[Metric]:
        """The metric families it yields, without samples (for the registry's checks)."""
        return list(self._families().values())

    def collect(self) -> Iterator[Metric]:
        """The metric families of the latest snapshots (called by the registry)."""
        snapshots = self.latest  # read once: refresh() replaces the tuple whole
        families = self._families()
        for stats in snapshots:
            _add(families, stats)
        yield from families.values()

    def _names(self) -> list[str]:
        return [
            source.name if isinstance(source, Graph) else type(source).__name__
            for source in self.sources
        ]

    def _families(self) -> dict[str, _Family]:
        prefix = f"{self.namespace}_" if self.namespace else ""
        node = ["graph", "node"]
        families: dict[str, _Family] = {
            name: CounterMetricFamily(prefix + name, doc, labels=node)
            for name, _field, doc in _NODE_COUNTERS
        }
        families["edge_messages_sent"] = CounterMetricFamily(
            prefix + "edge_messages_sent",
            "Messages sent along an edge (node: the sender).",
            labels=["graph", "node", "edge"],
        )
        families["mailbox_depth"] = GaugeMetricFamily(
            prefix + "mailbox_depth", "Messages waiting in a node's mailbox.", labels=node
        )
        families["node_rate"] = GaugeMetricFamily(
            prefix + "node_rate",
            "Messages a node processed per second since the previous snapshot.",
            labels=node,
        )
        families["node_workers"] = GaugeMetricFamily(
            prefix + "node_workers",
            "Processes whose figures of a node are summed (1 in memory).",
            labels=node,
        )
        quantiles = [*node, "quantile"]
        families["process_time"] = GaugeMetricFamily(
            prefix + "process_time_seconds",
            "Quantiles of a node's recent process durations (metered nodes only).",
            labels=quantiles,
        )
        families["queue_time"] = GaugeMetricFamily(
            prefix + "queue_time_seconds",
            "Quantiles of a node's recent times from send to process (metered nodes only).",
            labels=quantiles,
        )
        families["graph_running"] = GaugeMetricFamily(
            prefix + "graph_running",
            "1 while a run of the graph goes on, else 0.",
            labels=["graph"],
        )
        return families


def _add(families: dict[str, _Family], stats: GraphStats) -> None:
    """Add one graph's samples to the families."""
    graph = stats.graph
    for node_id, node in stats.nodes.items():
        labels = [graph, node_id]
        for name, field, _doc in _NODE_COUNTERS:
            families[name].add_metric(labels, getattr(node, field))
        families["mailbox_depth"].add_metric(labels, node.mailbox_depth)
        families["node_rate"].add_metric(labels, node.rate)
        families["node_workers"].add_metric(labels, node.workers)
        _add_quantiles(families["process_time"], labels, node.process_time)
        _add_quantiles(families["queue_time"], labels, node.queue_time)
    for edge in stats.edges.values():
        families["edge_messages_sent"].add_metric([graph, edge.source, edge.name], edge.sent)
    families["graph_running"].add_metric([graph], 1 if stats.running else 0)


def _add_quantiles(family: _Family, labels: list[str], timing: Timing | None) -> None:
    if timing is None:  # not metered: no samples rather than made-up zeros
        return
    for quantile, field in _QUANTILES:
        family.add_metric([*labels, quantile], getattr(timing, field))
