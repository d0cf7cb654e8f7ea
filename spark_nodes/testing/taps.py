"""Taps: watch what a node of a built graph receives or emits, or one edge, without rewiring.

``tap(...)`` returns a :class:`Tap`, a :class:`~spark_nodes.testing.probe.BaseProbe` (the
same API as :class:`~spark_nodes.testing.Probe`) fed by a sync observer on the mailboxes
involved::

    async with tap(graph, "score") as probe, graph.open_run(task) as run:
        await run.send("parse", "hello")
        await probe.expect_payload({"text": "hello"}, timeout=5)

Leaving the ``async with`` block (or ``probe.close()``) removes the observers, so the graph
is left as it was found.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Self

from spark_nodes.channels import BaseChannel, ChannelMessage
from spark_nodes.errors import WiringError
from spark_nodes.graphs import Graph
from spark_nodes.nodes import Edge, Node, NodeMessage
from spark_nodes.nodes._loop import WAKE
from spark_nodes.nodes.edges import edge_ends
from spark_nodes.testing.probe import BaseProbe

__all__ = ["Tap", "TapPhase", "tap"]

TapPhase = Literal["send", "receive"]
"""When a tap records a message: ``"send"``, as it is put into the mailbox; ``"receive"``,
as a worker loop of this process takes it out."""

_Kind = Literal["message", "shutdown", None]  # what an observed message is to a tap


class Tap(BaseProbe):
    """A probe fed by observers on mailboxes: made by :func:`tap`, closed by :meth:`close`.

    It records, in order, the messages that match what it watches (see :func:`tap`) as
    :class:`~spark_nodes.nodes.NodeMessage` (content, a copy of the metadata, the id), and
    the shutdowns apart in :attr:`shutdowns`. Wake-ups (shutdown messages that only make a
    loop look again) are not recorded. The observer is sync and runs in the task that sends
    (or receives) the message; it only appends and sets an event.

    Use it as an async context manager, or call :meth:`close`, to remove the observers.

    Attributes:
        description: What the tap watches, as failure messages say it.
        phase: When it records (see :data:`TapPhase`).
    """

    def __init__(
        self,
        description: str,
        channels: list[BaseChannel],
        select: Callable[[ChannelMessage], _Kind],
        phase: TapPhase,
    ) -> None:
        super().__init__()
        self.description = description
        self.phase = phase
        self._select = select
        self._channels = channels
        for channel in channels:
            channel.add_observer(self._observe)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return not self._channels

    def close(self) -> None:
        """Remove the tap's observers from the mailboxes; what it recorded stays. Idempotent."""
        channels, self._channels = self._channels, []
        for channel in channels:
            if self._observe in channel.observers:
                channel.remove_observer(self._observe)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    def _observe(self, message: ChannelMessage, channel: BaseChannel, phase: str) -> None:
        if phase != self.phase:
            return
        kind = self._select(message)
        if kind is None:
            return
        metadata = message.raw_metadata
        recorded = NodeMessage(message.payload, dict(metadata) if metadata else {}, message.id)
        if kind == "message":
            self.record(recorded)
        else:
            self.record_shutdown(recorded)

    def _probe_describe(self) -> str:
        return self.description

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<Tap {self.description!r} {state} received={len(self.received)}>"


def tap(
    where: Graph | Node | Edge,
    what: str | Node | tuple[str | Node, str | Node] | None = None,
    *,
    emits: bool = False,
    phase: TapPhase = "send",
) -> Tap:
    """Watch a node or an edge of a built graph, without rewiring it; return a :class:`Tap`.

    What is watched:

    - ``tap(graph, "b")`` (or ``tap(graph, node_b)``, or ``tap(node_b)`` for a node outside
      a graph): **what b receives**, every message put into its mailbox, whoever sent it
      (an edge, a ``goto``, ``graph.send``, the task's input). Shutdowns reaching b are
      recorded apart (:meth:`~BaseProbe.expect_shutdown`).
    - ``tap(graph, "a", emits=True)`` (or ``tap(node_a, emits=True)``): **what a emits** to
      other nodes, along its edges and by ``goto``; shutdowns a passes on are recorded
      apart. An output that takes no edge (a result of the run, in ``GraphResult.outputs``)
      goes into no mailbox and is not seen. ``tap(node_a, emits=True)`` watches the
      mailboxes of the nodes a is wired to and its own; ``tap(graph, "a", emits=True)``
      those of every node of the graph, as a goto may reach any.
    - ``tap(graph, "a->b")``, ``tap(graph, ("a", "b"))`` or ``tap(edge)`` (an
      :class:`~spark_nodes.nodes.Edge`, e.g. ``graph.nodes["a"].edges[0]``): **what goes
      along the edge**, the messages b's mailbox gets with ``metadata["edge"] == "a->b"``,
      and the shutdowns a passes to b. ``tap(graph, "a~>b")`` watches a's ``goto`` to b,
      ``tap(graph, "a-!>b")`` its error route to b (``a.on_error() >> b``).

    The mailboxes are those of the nodes when the tap is made: make it after wiring (and
    after ``use_redis``). A tap works before a run, while one runs and between runs. It
    costs the tapped mailboxes their fast path (a loop takes one message at a time from a
    mailbox with observers) until it is closed.

    On Redis, mailboxes are shared by processes, but observers are local: with
    ``phase="send"`` a tap sees what **this process** puts into the mailboxes (its
    ``graph.send``, and outputs its workers commit); with ``phase="receive"`` what this
    process's workers take out, whoever sent it (a message delivered again after a lost
    lease is recorded again).

    Args:
        where: The graph, a node, or an edge.
        what: With a graph: a node (or its id), an edge name (``"a->b"``, ``"a~>b"`` for
            a goto, ``"a-!>b"`` for an error route) or a pair of nodes (``(a, b)`` is
            ``"a->b"``). ``None`` with a node or an edge.
        emits: Watch what the node emits rather than what it receives.
        phase: ``"send"`` (default): record a message as it is put into the mailbox.
            ``"receive"``: as a worker loop takes it out (in memory, a message given back
            by a cancelled loop and taken again is recorded again).

    Returns:
        An open :class:`Tap`; close it (``async with``, or :meth:`Tap.close`) when done.

    Raises:
        WiringError: The graph has no such node or edge; the message lists what it has.
        TypeError: ``where`` or ``what`` is of the wrong kind, or ``emits`` was given for
            an edge.
        ValueError: ``phase`` is neither ``"send"`` nor ``"receive"``.
    """
    if phase not in ("send", "receive"):
        raise ValueError(f"phase must be 'send' or 'receive', not {phase!r}")
    if isinstance(where, Edge):
        if what is not None or emits:
            raise TypeError("tap(edge) takes no 'what' and no emits=: an edge is one thing")
        return _edge_tap(where.source, where.target, where.name, phase)
    if isinstance(where, Node):
        if what is not None:
            raise TypeError(
                "tap(node) takes no 'what': tap(graph, ...) names nodes and edges, "
                "tap(edge) takes an edge"
            )
        return _node_tap(where, None, emits=emits, phase=phase)
    if not isinstance(where, Graph):
        raise TypeError(f"tap() watches a Graph, a Node or an Edge, not {where!r}")
    nodes = where.nodes
    if isinstance(what, tuple):
        source, target = (_node_in(where, nodes, end) for end in what)
        return _edge_tap(source, target, f"{source.id}->{target.id}", phase, graph=where)
    if isinstance(what, str) and what not in nodes and edge_ends(what)[1]:
        source_id, target_id = edge_ends(what)
        source, target = _node_in(where, nodes, source_id), _node_in(where, nodes, target_id)
        return _edge_tap(source, target, what, phase, graph=where)
    if what is None:
        raise TypeError("tap(graph, what): name a node (its id) or an edge ('a->b')")
    node = _node_in(where, nodes, what)
    return _node_tap(node, list(nodes.values()), emits=emits, phase=phase)


def _node_in(graph: Graph, nodes: dict[str, Node], which: object) -> Node:
    node_id = which.id if isinstance(which, Node) else which
    if not isinstance(node_id, str):
        raise TypeError(f"name a node by its id or the Node, not {which!r}")
    node = nodes.get(node_id)
    if node is None or (isinstance(which, Node) and node is not which):
        raise WiringError(
            f"graph {graph.name!r} has no node {node_id!r}; its nodes are {sorted(nodes)}"
        )
    return node


def _distinct(channels: list[BaseChannel]) -> list[BaseChannel]:
    """The channels, each once (nodes may share a mailbox), in order."""
    return list({id(channel): channel for channel in channels}.values())


def _node_tap(node: Node, graph_nodes: list[Node] | None, *, emits: bool, phase: TapPhase) -> Tap:
    node_id = node.id
    if not emits:

        def receives(message: ChannelMessage) -> _Kind:
            if not message.is_shutdown:
                return "message"
            metadata = message.raw_metadata
            wake = metadata is not None and metadata.get("source_node") == WAKE
            return None if wake else "shutdown"

        return Tap(f"tap on what node {node_id!r} receives", [node.mailbox], receives, phase)

    def emitted(message: ChannelMessage) -> _Kind:
        metadata = message.raw_metadata
        if metadata is None or metadata.get("source_node") != node_id:
            return None
        if message.is_shutdown:
            return "shutdown"
        return "message" if "edge" in metadata else None  # (graph.send may set source_node)

    if graph_nodes is None:  # a node outside a graph: its successors and itself (goto)
        graph_nodes = [node, *(edge.target for edge in node.edges)]
    mailboxes = _distinct([other.mailbox for other in graph_nodes])
    return Tap(f"tap on what node {node_id!r} emits", mailboxes, emitted, phase)


def _edge_tap(
    source: Node, target: Node, name: str, phase: TapPhase, *, graph: Graph | None = None
) -> Tap:
    goto = "~>" in name
    if not goto and not any(edge.target is target for edge in source.edges):
        where = f"graph {graph.name!r} has" if graph is not None else "there is"
        edges = sorted(edge.name for edge in source.edges)
        raise WiringError(
            f"{where} no edge {name!r}; the edges from {source.id!r} are {edges} "
            f"(tap a goto as '{source.id}~>{target.id}')"
        )
    source_id = source.id

    def along(message: ChannelMessage) -> _Kind:
        metadata = message.raw_metadata
        if metadata is None:
            return None
        if message.is_shutdown:  # a shutdown passed on along wired edges, never by goto
            return "shutdown" if not goto and metadata.get("source_node") == source_id else None
        return "message" if metadata.get("edge") == name else None

    kind = "goto" if goto else "edge"
    return Tap(f"tap on {kind} {name!r}", [target.mailbox], along, phase)
