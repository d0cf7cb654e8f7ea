"""A graph's topology: its nodes, their shutdown order, the back edges of its cycles.

Computed from the edges, once per wiring change (see
:func:`~spark_nodes.nodes.node.wiring_version`) and again at the start of every run; so
the wiring mistakes it finds are refused when the graph is built and when a run starts.
"""

from __future__ import annotations

from collections.abc import Sequence

from spark_nodes.errors import WiringError
from spark_nodes.nodes import CountWindow, Node, TimeWindow
from spark_nodes.nodes._runtime import CYCLE_QUIET, SHUTDOWN_EXTERNAL

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
        cycle_of: For each node on a cycle, the ids of the nodes of its cycle (its
            strongly connected component, the node included).

    A cycle drains as one: see :meth:`drain_sources` (in memory the run, on Redis the
    ``CYCLE_QUIET`` script, sends the last shutdown).

    Raises:
        WiringError: Two nodes share an id, or a window (``CountWindow``,
            ``TimeWindow``) is on a cycle.
    """

    __slots__ = (
        "by_id",
        "cycle_of",
        "forward_successors",
        "nodes",
        "predecessors",
        "shutdown_sources",
        "sources",
    )

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
        self.predecessors: dict[str, list[str]] = {node.id: [] for node in nodes}
        for node in nodes:
            for target in dict.fromkeys(edge.target.id for edge in node.edges):
                self.predecessors[target].append(node.id)
        self.cycle_of: dict[str, frozenset[str]] = {}
        for component in _cycles(nodes):
            for node_id in component:
                self.cycle_of[node_id] = component
        for node in nodes:
            if isinstance(node, CountWindow | TimeWindow) and node.id in self.cycle_of:
                raise WiringError(_window_on_cycle(node, nodes, self.cycle_of[node.id]))

    def drain_sources(self, node_id: str) -> tuple[str, ...]:
        """Whose shutdowns ``node_id`` waits for, in memory, where cycles drain as one.

        A node on a cycle waits for its predecessors off the cycle, then for
        :data:`CYCLE_QUIET`: the run sends that to every node of the cycle once all of
        them have their shutdowns from outside and no message is left on the cycle.
        """
        cycle = self.cycle_of.get(node_id)
        if cycle is None:
            return self.shutdown_sources[node_id]
        outside = tuple(p for p in self.predecessors[node_id] if p not in cycle)
        if not outside and node_id in self.sources:
            outside = (SHUTDOWN_EXTERNAL,)  # where a shutdown of the whole graph comes in
        return (*outside, CYCLE_QUIET)

    def drain_successors(self, node_id: str) -> list[str]:
        """Whom ``node_id`` passes its shutdown on to, in memory: not its own cycle."""
        cycle = self.cycle_of.get(node_id)
        successors = self.forward_successors[node_id]
        return successors if cycle is None else [s for s in successors if s not in cycle]


def _window_on_cycle(window: Node, nodes: list[Node], cycle: frozenset[str]) -> str:
    """Why a window cannot be on ``cycle``, and what to do instead."""
    kind = type(window).__name__
    if len(cycle) == 1:
        where = "is wired to itself (a cycle of one node)"
    else:
        ids = [node.id for node in nodes if node.id in cycle]  # in discovery order
        named = ", ".join(map(repr, ids[:20])) + (f" and {len(ids) - 20} more" if ids[20:] else "")
        where = f"is on a cycle with the nodes {named}"
    return (
        f"window node {window.id!r} ({kind}) {where}: a window holds its messages until "
        f"it flushes, and a cycle drains only once no message is left on it, so on Redis "
        f"the graph would never drain and in memory its last windows would reach the cycle "
        f"after it drained; put the window outside the cycle (where messages leave it)"
    )


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


def _cycles(nodes: list[Node]) -> list[frozenset[str]]:
    """The strongly connected components with a cycle (2+ nodes, or a node wired to itself).

    Tarjan's algorithm, iterative (a 10,000-node chain must not hit the recursion limit).
    """
    index_of: dict[int, int] = {}
    low: dict[int, int] = {}
    on_stack: set[int] = set()
    stack: list[Node] = []
    found: list[frozenset[str]] = []
    counter = 0
    for root in nodes:
        if id(root) in index_of:
            continue
        work: list[tuple[Node, int]] = [(root, 0)]
        while work:
            node, edge_index = work[-1]
            if edge_index == 0:
                index_of[id(node)] = low[id(node)] = counter
                counter += 1
                stack.append(node)
                on_stack.add(id(node))
            if edge_index < len(node.edges):
                work[-1] = (node, edge_index + 1)
                target = node.edges[edge_index].target
                if id(target) not in index_of:
                    work.append((target, 0))
                elif id(target) in on_stack:
                    low[id(node)] = min(low[id(node)], index_of[id(target)])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[id(parent)] = min(low[id(parent)], low[id(node)])
            if low[id(node)] == index_of[id(node)]:
                members: list[Node] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(id(member))
                    members.append(member)
                    if member is node:
                        break
                if len(members) > 1 or any(e.target is node for e in node.edges):
                    found.append(frozenset(member.id for member in members))
    return found
