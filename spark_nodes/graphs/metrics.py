"""``MetricsObserver``: per node and edge counts, rates, queue and process times.

Attach it like any graph observer (``graph.observe(metrics)``, or to one node or edge)
and read it with ``await metrics.snapshot()``. It is not called per event: the nodes it is
attached to keep their recent timings themselves (two clock reads and two appends a
message), and their counts are kept whether or not anyone watches. On Redis its snapshot
covers every worker process serving the graph, like ``graph.stats()``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from spark_nodes.graphs._stats import StatsReader
from spark_nodes.graphs.stats import GraphStats

if TYPE_CHECKING:
    from spark_nodes.graphs.graph import Graph

__all__ = ["MetricsObserver"]


class MetricsObserver:
    """Figures of the nodes and edges it is attached to (see the module).

    Attached to the whole graph: every node (timed) and edge. To a node: that node (timed)
    and its edges in and out. To an edge: that edge and its two nodes (not timed).
    One observer observes one graph.
    """

    metered: ClassVar[bool] = True
    """Marks an observer the graph meters for rather than calls per event."""

    __slots__ = ("_graph", "_reader", "_scopes")

    def __init__(self) -> None:
        self._graph: Graph | None = None
        self._reader = StatsReader()
        self._scopes: list[tuple[str | None, str | None]] = []

    def attach(self, graph: Graph, *, node: str | None, edge: str | None, side: str) -> None:
        """Called by ``graph.observe``: remember the graph and the scope.

        Raises:
            ValueError: It already observes another graph.
        """
        del side  # a node's figures are its own; its edges are both sides
        if self._graph is not None and self._graph is not graph:
            raise ValueError(
                f"this MetricsObserver observes graph {self._graph.name!r}; make one per graph"
            )
        self._graph = graph
        self._scopes.append((node, edge))

    def detach(self, graph: Graph) -> None:
        """Called by ``graph.unobserve``: forget the graph."""
        if self._graph is graph:
            self._graph = None
            self._scopes.clear()

    async def snapshot(self) -> GraphStats:
        """The figures of what it observes now; rates since its previous snapshot.

        Raises:
            RuntimeError: It was never attached to a graph.
        """
        graph = self._graph
        if graph is None:
            raise RuntimeError("attach this MetricsObserver first: graph.observe(metrics)")
        stats = await graph.read_stats(self._reader)
        if any(node is None and edge is None for node, edge in self._scopes):
            return stats
        nodes: set[str] = set()
        edges: set[str] = set()
        for node, edge in self._scopes:
            for name, figures in stats.edges.items():
                if name == edge or node in (figures.source, figures.target):
                    edges.add(name)
                    if name == edge:
                        nodes.update((figures.source, figures.target))
            if node is not None:
                nodes.add(node)
        return GraphStats(
            graph=stats.graph,
            taken_at=stats.taken_at,
            elapsed=stats.elapsed,
            running=stats.running,
            nodes={k: v for k, v in stats.nodes.items() if k in nodes},
            edges={k: v for k, v in stats.edges.items() if k in edges},
        )
