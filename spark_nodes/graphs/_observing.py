"""Checking where a graph observer is attached (``graph.observe``), and a run applying them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, get_args

from spark_nodes.nodes.observing import Side

if TYPE_CHECKING:
    from spark_nodes.graphs.graph import Graph

__all__ = ["check_attachment"]


def check_attachment(
    graph: Graph, observer: Any, *, node: str | None, edge: str | None, side: str
) -> None:
    """Refuse an attachment ``graph.observe`` could not honour, naming the problem.

    Raises:
        TypeError: ``observer`` is neither callable nor metering.
        ValueError: An unknown node, edge or side, or both a node and an edge.
    """
    if not (callable(observer) or getattr(observer, "metered", False)):
        raise TypeError(
            f"a graph observer must be callable as observer(event) or be a MetricsObserver, "
            f"not {type(observer).__name__}"
        )
    if side not in get_args(Side):
        raise ValueError(f"side must be one of {get_args(Side)}, not {side!r}")
    if node is not None and edge is not None:
        raise ValueError("observe one node or one edge, not both (node= and edge=)")
    nodes = graph.nodes
    if node is not None and node not in nodes:
        raise ValueError(f"graph {graph.name!r} has no node {node!r}; its nodes: {sorted(nodes)}")
    if edge is not None:
        edges = sorted({e.name for n in nodes.values() for e in n.edges})
        if edge not in edges:
            raise ValueError(f"graph {graph.name!r} has no edge {edge!r}; its edges: {edges}")
        if side != "both":
            raise ValueError("side= applies to a node; an edge observer sees both its ends")
