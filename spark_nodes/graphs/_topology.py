"""A graph's topology: its nodes, their shutdown order, the back edges of its cycles.

Computed from the edges, once per wiring change (see
:func:`~spark_nodes.nodes.node.wiring_version`) and again at the start of every run.
"""

from __future__ import annotations

from collections.abc import Sequence

from spark_nodes.errors import WiringError
from spark_nodes.nodes import Node
from spark_nodes.nodes._runtime import SHUTDOWN_EXTERNAL

__all__ = ["Topology"]


class Topology:
    """The nodes reachable from a graph's entries, and how shutdown travels among them.

    Attributes:
        nodes: Every node, in discovery order (depth first from the entries).
        by_id: The same, by id.
        shutdown_sources: For each node, whom it waits for before it drains: the ids of
            its predecessors (back edges of cycles excluded), or ``SHUTDOWN_EXTERNAL``.
        forward_successors: For each node, whom it passes shutdown on to.
        sources: The nodes without predecessors: where a shutdown starts.

    Raises:
        WiringError: Two nodes share an id.
    """

    __slots__ = ("by_id", "forward_successors", "nodes", "shutdown_sources", "sources")

    def __init__(self, entries: Sequence[Node]) -> None:
        nodes, back_edges = _discover(entries)
        by_id: dict[str, Node] = {}
        for node in nodes:
            other = by_id.setdefault(node.id, node)
            if other is not node:
                raise WiringError(f"two nodes share the id {node.id!r}: {other!r} and {node!r}")
        # Insertion-ordered (a dict, not a set): a join merges its parts in wiring order.
        predecessors: dict[str, dict[str, None]] = {node.id: {} for node in nodes}
        successors: dict[str, list[str]] = {node.id: [] for node in nodes}
        for node in nodes:
            for edge in node.edges:
                if (id(node), id(edge.target)) in back_edges:
                    continue
                predecessors[edge.target.id][node.id] = None
                if edge.target.id not in successors[node.id]:
                    successors[node.id].append(edge.target.id)
        self.nodes = nodes
        self.by_id = by_id
        self.shutdown_sources = {
            node_id: tuple(preds) if preds else (SHUTDOWN_EXTERNAL,)
            for node_id, preds in predecessors.items()
        }
        self.forward_successors = successors
        self.sources = [node.id for node in nodes if not predecessors[node.id]]


def _discover(entries: Sequence[Node]) -> tuple[list[Node], set[tuple[int, int]]]:
    """The nodes reachable from ``entries`` (depth first) and the back edges of cycles."""
    nodes: list[Node] = []
    back_edges: set[tuple[int, int]] = set()
    state: dict[int, int] = {}  # 1: on the DFS stack, 2: done
    for entry in entries:
        if id(entry) in state:
            continue
        stack: list[tuple[Node, int]] = [(entry, 0)]
        state[id(entry)] = 1
        nodes.append(entry)
        while stack:
            node, index = stack[-1]
            if index == len(node.edges):
                stack.pop()
                state[id(node)] = 2
                continue
            stack[-1] = (node, index + 1)
            target = node.edges[index].target
            mark = state.get(id(target))
            if mark == 1:
                back_edges.add((id(node), id(target)))
            elif mark is None:
                state[id(target)] = 1
                nodes.append(target)
                stack.append((target, 0))
    return nodes, back_edges
