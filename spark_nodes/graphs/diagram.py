"""Diagrams of a graph's wiring: Mermaid, Graphviz DOT and JSON, with optional live counts.

``graph.to_mermaid()``, ``graph.to_dot()`` and ``graph.to_json()`` call the functions here.
They read the same wiring objects a run uses (the nodes reachable from the graph's entries,
each node's :class:`~spark_nodes.nodes.Edge` list, the graph's cycles), so the picture is
the graph that runs. The output depends only on the wiring (and the stats given): the
same graph gives the same text, so tests can compare it.

How things are drawn, in Mermaid and DOT alike:

- **Nodes** are boxes labelled with their id, in discovery order (the start first). In
  Mermaid they get safe ids (``n0``, ``n1``... in that order): a node id may hold any
  character, so it only appears in the quoted label.
- **Entry nodes** have a thick border, and in Mermaid are stadiums (``(["parse"])``): the
  graph's start, which takes the task's input, and any other node that no edge leads to
  (back edges of cycles aside), which gets messages only from outside.
- **Joins** (:class:`~spark_nodes.nodes.JoinNode`) are hexagons.
- **Cycles** (each strongly connected component of the wiring, a node wired to itself
  included) are framed in a subgraph (a DOT cluster) labelled ``cycle``; the **back
  edge** that closes each loop, where a depth-first walk from the entries comes back to
  a node it is still in, is dashed (dotted in Mermaid, ``-.->``).
- **Conditional edges** carry their condition: ``kind=refund`` for ``on(kind="refund")``
  (a value that is not a plain word shows as its repr: ``code='404'``), ``otherwise`` for
  ``otherwise()``, a function's ``__name__`` (``lambda`` for a lambda, the class name for
  another callable), followed by ``· priority N`` when the priority is not 0.
- **Error edges** (``a.on_error() >> h``, named ``"a-!>h"``) are dashed (dotted in
  Mermaid, ``-.->``; red in DOT) and labelled ``error`` (``error · dead letter`` for
  ``on_error(dead_letter=True)``): only the messages ``a`` gives up on take them.
- **Counts**, with a :class:`~spark_nodes.graphs.stats.GraphStats`: a node's label gains
  ``in <received> · done <processed> · dlq <dead-lettered> · depth <mailbox depth>``, an
  edge's label ``sent <n>``. A node or edge the stats do not have gets no counts. Edges
  that share a name (two conditions between the same nodes) share one count, which goes
  on the first of them. Edges that are not wired (``goto`` traffic, ``"a~>b"``) are not
  drawn.

The JSON document (``to_json``) holds the same facts as plain data::

    {
      "graph": "orders",                    # the graph's name
      "nodes": [                            # in discovery order, the start first
        {
          "id": "parse",                    # the node's id
          "type": "Parse",                  # its class name
          "join": false,                    # a JoinNode?
          "cycle": null,                    # ids of its cycle (discovery order), or null
          "entry": true,                    # the start, or a node nothing upstream feeds
          "received": 5, ...                # with stats: every NodeStats field but node_id
        }
      ],
      "edges": [                            # by source in node order, then wiring order
        {
          "name": "parse->refund",          # as in metadata["edge"] and GraphStats.edges
          "source": "parse",
          "target": "refund",
          "condition": "kind=refund",       # the label drawn ("error" for an error edge),
                                            # or null if unconditional
          "priority": 0,                    # otherwise() edges: OTHERWISE_PRIORITY, -2**63
          "back_edge": false,               # closes a cycle (drawn dashed)
          "sent": 1, "rate": 0.0            # with stats: EdgeStats' sent and rate
        }
      ]
    }

With stats, a node's counts are ``received``, ``processed``, ``forwarded``,
``terminal_outputs``, ``failed_attempts``, ``retried``, ``dead_lettered``, ``restarts``,
``mailbox_depth``, ``rate``, ``process_time`` and ``queue_time`` (each ``null`` or
``{"count", "p50", "p90", "p99", "max"}``), ``workers`` and ``error_routed``; an edge's
are ``sent`` and ``rate``. Items the stats lack have none of these keys.
"""

from __future__ import annotations

import dataclasses
import json
import keyword
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from spark_nodes.graphs._topology import Topology
from spark_nodes.nodes import Edge, Equals, ErrorRoute, JoinNode, Node, Otherwise
from spark_nodes.nodes.edges import OTHERWISE_PRIORITY

if TYPE_CHECKING:
    from spark_nodes.graphs.graph import Graph
    from spark_nodes.graphs.stats import EdgeStats, GraphStats, NodeStats

__all__ = ["to_dot", "to_json", "to_mermaid"]

_INDENT = "    "


def to_mermaid(graph: Graph, stats: GraphStats | None = None) -> str:
    """Draw ``graph`` as a Mermaid ``flowchart LR`` (see the module docstring for the look).

    Args:
        graph: The graph to draw.
        stats: A snapshot whose counts are added to the labels, or ``None``.

    Returns:
        The flowchart's source, ending with a newline.

    Raises:
        WiringError: Two nodes of the graph share an id.
    """
    wiring = _Wiring(graph, stats)
    safe = {node.id: f"n{index}" for index, node in enumerate(wiring.nodes)}
    lines = ["flowchart LR"]

    def declare(node: Node, indent: str) -> None:
        label = _mermaid_label(wiring.node_lines(node))
        if isinstance(node, JoinNode):
            shape = f"{{{{{label}}}}}"
        elif node.id in wiring.entries:
            shape = f"([{label}])"
        else:
            shape = f"[{label}]"
        lines.append(f"{indent}{safe[node.id]}{shape}")

    for item in wiring.layout():
        if isinstance(item, Node):
            declare(item, _INDENT)
            continue
        lines.append(f'{_INDENT}subgraph c{item.number} ["cycle"]')
        for member in item.members:
            declare(member, _INDENT * 2)
        lines.append(f"{_INDENT}end")
    for edge in wiring.edges:
        arrow = "-.->" if wiring.is_back_edge(edge) or edge.is_error_route else "-->"
        label_lines = wiring.edge_lines(edge)
        label = f"|{_mermaid_label(label_lines)}|" if label_lines else ""
        lines.append(f"{_INDENT}{safe[edge.source.id]} {arrow}{label} {safe[edge.target.id]}")
    entries = [safe[node.id] for node in wiring.nodes if node.id in wiring.entries]
    lines.append(f"{_INDENT}classDef entry stroke-width:3px")
    lines.append(f"{_INDENT}class {','.join(entries)} entry")
    return "\n".join(lines) + "\n"


def to_dot(graph: Graph, stats: GraphStats | None = None) -> str:
    """Draw ``graph`` as a Graphviz ``digraph`` (see the module docstring for the look).

    Node ids are DOT's quoted strings; every node has an explicit ``label``.

    Args:
        graph: The graph to draw.
        stats: A snapshot whose counts are added to the labels, or ``None``.

    Returns:
        The DOT source, ending with a newline.

    Raises:
        WiringError: Two nodes of the graph share an id.
    """
    wiring = _Wiring(graph, stats)
    lines = [
        f"digraph {_dot_quote(graph.name)} {{",
        f"{_INDENT}rankdir=LR;",
        f"{_INDENT}node [shape=box, style=rounded];",
    ]

    def declare(node: Node, indent: str) -> None:
        attributes = [f"label={_dot_label(wiring.node_lines(node))}"]
        if isinstance(node, JoinNode):
            attributes.append("shape=hexagon")
        if node.id in wiring.entries:
            attributes.append("penwidth=3")
        lines.append(f"{indent}{_dot_quote(node.id)} [{', '.join(attributes)}];")

    for item in wiring.layout():
        if isinstance(item, Node):
            declare(item, _INDENT)
            continue
        lines.append(f'{_INDENT}subgraph "cluster_cycle_{item.number}" {{')
        lines.append(f'{_INDENT * 2}label="cycle";')
        lines.append(f"{_INDENT * 2}style=dashed;")
        for member in item.members:
            declare(member, _INDENT * 2)
        lines.append(f"{_INDENT}}}")
    for edge in wiring.edges:
        attributes = []
        label_lines = wiring.edge_lines(edge)
        if label_lines:
            attributes.append(f"label={_dot_label(label_lines)}")
        if wiring.is_back_edge(edge) or edge.is_error_route:
            attributes.append("style=dashed")
        if edge.is_error_route:
            attributes.append("color=red")
        listed = f" [{', '.join(attributes)}]" if attributes else ""
        source, target = _dot_quote(edge.source.id), _dot_quote(edge.target.id)
        lines.append(f"{_INDENT}{source} -> {target}{listed};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_json(graph: Graph, stats: GraphStats | None = None) -> str:
    """Describe ``graph`` as JSON, in the schema of the module docstring.

    Args:
        graph: The graph to describe.
        stats: A snapshot whose counts are added to the nodes and edges, or ``None``.

    Returns:
        The document, indented by 2 and ending with a newline; non-ASCII text is kept as is.

    Raises:
        WiringError: Two nodes of the graph share an id.
    """
    wiring = _Wiring(graph, stats)
    nodes: list[dict[str, Any]] = []
    for node in wiring.nodes:
        cycle = wiring.cycle_members(node)
        item: dict[str, Any] = {
            "id": node.id,
            "type": type(node).__name__,
            "join": isinstance(node, JoinNode),
            "cycle": [member.id for member in cycle] if cycle else None,
            "entry": node.id in wiring.entries,
        }
        node_stats = wiring.node_stats(node)
        if node_stats is not None:
            item.update(
                (field.name, _plain(getattr(node_stats, field.name)))
                for field in dataclasses.fields(node_stats)
                if field.name != "node_id"
            )
        nodes.append(item)
    edges: list[dict[str, Any]] = []
    for edge in wiring.edges:
        entry: dict[str, Any] = {
            "name": edge.name,
            "source": edge.source.id,
            "target": edge.target.id,
            "condition": _condition_label(edge),
            "priority": edge.priority,
            "back_edge": wiring.is_back_edge(edge),
        }
        edge_stats = wiring.edge_stats(edge)
        if edge_stats is not None:
            entry["sent"] = edge_stats.sent
            entry["rate"] = edge_stats.rate
        edges.append(entry)
    document = {"graph": graph.name, "nodes": nodes, "edges": edges}
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


# -- the facts every format draws ----------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class _Cycle:
    """A cycle to frame: its number (0, 1... in discovery order) and its nodes, in order."""

    number: int
    members: list[Node]


class _Wiring:
    """A graph's nodes, edges, entries and cycles, in a fixed order; and the labels to draw.

    Raises:
        WiringError: Two nodes share an id.
    """

    def __init__(self, graph: Graph, stats: GraphStats | None) -> None:
        # The public node list is in discovery order from the entries, so a Topology of
        # it walks the same depth-first tree as the graph's own: the same back edges.
        topology = Topology(list(graph.nodes.values()))
        self.nodes = topology.nodes
        self.order = {node.id: index for index, node in enumerate(self.nodes)}
        self.entries = {graph.start.id, *topology.sources}
        self.cycle_of = topology.cycle_of
        self.forward = topology.forward_successors  # the successors along non-back edges
        self.edges: list[Edge] = [edge for node in self.nodes for edge in node.edges]
        self.stats = stats
        counted: set[str] = set()
        self.counted_edges: set[int] = set()  # the first edge of each name carries its count
        for edge in self.edges:
            if edge.name not in counted:
                counted.add(edge.name)
                self.counted_edges.add(id(edge))

    def cycle_members(self, node: Node) -> list[Node]:
        """The nodes of ``node``'s cycle in discovery order; ``[]`` if it is on none."""
        component = self.cycle_of.get(node.id)
        if component is None:
            return []
        return [self.nodes[index] for index in sorted(self.order[i] for i in component)]

    def layout(self) -> list[Node | _Cycle]:
        """What to declare, in discovery order: nodes, and each cycle where it is first met."""
        items: list[Node | _Cycle] = []
        framed: set[str] = set()
        cycles = 0
        for node in self.nodes:
            members = self.cycle_members(node)
            if not members:
                items.append(node)
            elif node.id not in framed:
                framed.update(member.id for member in members)
                items.append(_Cycle(cycles, members))
                cycles += 1
        return items

    def is_back_edge(self, edge: Edge) -> bool:
        """Whether ``edge`` closes a cycle (the depth-first walk meets its target on its path)."""
        return edge.target.id not in self.forward[edge.source.id]

    def node_stats(self, node: Node) -> NodeStats | None:
        """``node``'s figures in the stats, if any."""
        return None if self.stats is None else self.stats.nodes.get(node.id)

    def edge_stats(self, edge: Edge) -> EdgeStats | None:
        """``edge``'s figures, if the stats have them and it is the first edge of its name."""
        if self.stats is None or id(edge) not in self.counted_edges:
            return None
        return self.stats.edges.get(edge.name)

    def node_lines(self, node: Node) -> list[str]:
        """A node's label, line by line (raw text, escaped by each format)."""
        figures = self.node_stats(node)
        if figures is None:
            return [node.id]
        counts = (
            f"in {figures.received} · done {figures.processed} · "
            f"dlq {figures.dead_lettered} · depth {figures.mailbox_depth}"
        )
        return [node.id, counts]

    def edge_lines(self, edge: Edge) -> list[str]:
        """An edge's label, line by line; ``[]`` for a plain unconditional edge."""
        lines: list[str] = []
        condition = _condition_label(edge)
        if edge.priority not in (0, OTHERWISE_PRIORITY):
            priority = f"priority {edge.priority}"
            condition = priority if condition is None else f"{condition} · {priority}"
        if condition is not None:
            lines.append(condition)
        figures = self.edge_stats(edge)
        if figures is not None:
            lines.append(f"sent {figures.sent}")
        return lines


def _condition_label(edge: Edge) -> str | None:
    """How an edge's condition reads: ``kind=refund``, ``otherwise``, ``error``, ``is_big``..."""
    condition = edge.condition
    if condition is None:
        return None
    if isinstance(condition, Otherwise):
        return "otherwise"
    if isinstance(condition, ErrorRoute):
        return "error · dead letter" if condition.dead_letter else "error"
    if isinstance(condition, Equals):
        return ", ".join(
            f"{key}={_value_label(value)}" for key, value in condition.expected.items()
        )
    name = getattr(condition, "__name__", None)
    if not isinstance(name, str):
        return type(condition).__name__  # a callable object, a functools.partial...
    return "lambda" if name == "<lambda>" else name


def _value_label(value: Any) -> str:
    """An expected value of ``on(key=value)``: a word as is (``refund``), else its repr.

    So ``on(code="404")`` reads ``code='404'``, unlike ``on(code=404)``.
    """
    if isinstance(value, str) and value.isidentifier() and not keyword.iskeyword(value):
        return value
    return repr(value)


def _plain(value: Any) -> Any:
    """A stats field as JSON data (a ``Timing`` becomes a dict)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


# -- escaping --------------------------------------------------------------------------------

# Mermaid reads "#name;" and "#35;" as entities, so "#" itself is escaped first of all;
# "<", ">" and "&" would be HTML in its labels, "`" starts a markdown string, "|" ends an
# edge label and '"' the quoted text.
_MERMAID_ESCAPES = str.maketrans(
    {
        "#": "#35;",
        '"': "#quot;",
        "&": "#amp;",
        "<": "#lt;",
        ">": "#gt;",
        "|": "#124;",
        "`": "#96;",
    }
)


def _mermaid_label(lines: list[str]) -> str:
    """Quoted Mermaid label text: each line escaped, lines (and newlines in them) as ``<br>``."""
    escaped = [
        _split_lines(line, lambda part: part.translate(_MERMAID_ESCAPES), "<br>") for line in lines
    ]
    return '"' + "<br>".join(escaped) + '"'


def _dot_quote(text: str) -> str:
    r"""A DOT quoted string for ``text`` (an id or a label).

    Backslashes are doubled: in a label a backslash starts an escape (``\N``, ``\l``), and
    an id ending in one would otherwise escape the closing quote.
    """
    return '"' + _split_lines(text, _dot_escape, "\\n") + '"'


def _dot_label(lines: list[str]) -> str:
    """A quoted DOT label of ``lines``, centred line by line."""
    return _dot_quote("\n".join(lines))


def _dot_escape(text: str) -> str:
    """``text`` with DOT's backslash and double quote escaped."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _split_lines(text: str, escape: Callable[[str], str], newline: str) -> str:
    """``text`` escaped line by line, each of its line breaks (CR LF, CR, LF) as ``newline``."""
    parts = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return newline.join(escape(part) for part in parts)
