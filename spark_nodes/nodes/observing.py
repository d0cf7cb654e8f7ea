"""Observers of a graph's edges and nodes: the events they get, and who gets which.

A graph observer is ``observer(event)``, a plain function or an ``async def``, attached with
``graph.observe(observer, edge=..., node=..., side=...)``. It gets a :class:`GraphEvent`
per message and phase:

- ``"receive"``: a node took the message from its mailbox, to handle it;
- ``"process_start"`` / ``"process_end"``: one call of ``process`` (one per attempt), the
  end with its ``duration`` and ``outcome``: ``"ok"``, ``"retry"`` (it raised and will be
  tried again), ``"dead_letter"`` (it raised for the last time), ``"routed"`` (it raised for
  the last time, and the message goes to the node's error routes), ``"goto"`` or
  ``"stop"`` (it asked for ``goto``, or ``stop_graph``/``cancel_graph``); the last end of
  a message given up on comes once that is done (see :data:`Outcome`: a window that keeps
  its message when its outputs failed ends ``"ok"``, with the ``error``);
- ``"send"``: an output was handed to the next node's mailbox along an edge (for a
  durable mailbox: committed);
- ``"ack"``: the node is done with the message (its outcome ``"ok"``, ``"dead_letter"``,
  ``"routed"`` or ``"stop"``), its outputs sent.

Observers are called in the order they were attached, each awaited before the next; one
that raises is logged (and counted) and never breaks delivery. A node that anything
observes takes the worker loop's general path (with an await per event); a graph nobody
observes pays nothing. ``process_start`` events carry ``carry``: metadata an observer
may add to every output of that call (a tracing observer puts its trace context there).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog

from spark_nodes.channels import ChannelMessage
from spark_nodes.nodes.edges import edge_ends

__all__ = [
    "GraphEvent",
    "GraphObserver",
    "NodeObservers",
    "ObserverRegistry",
    "Outcome",
    "Phase",
    "Side",
    "edge_of",
    "notify",
]

_log = structlog.get_logger("spark_nodes")

Phase = Literal["send", "receive", "ack", "process_start", "process_end"]
"""An event's phase (see the module)."""
Outcome = Literal["ok", "retry", "dead_letter", "routed", "goto", "stop"]
"""How a ``process`` call (``process_end``) or a message (``ack``) ended.

The last ``process_end`` of a message given up on is told once the outcome is known:
``"routed"`` or ``"dead_letter"``; ``"ok"`` if the call returned, its outputs could not be
routed or sent, and it keeps the message held (a window still open: ``error`` says what
failed; the message's ``ack`` comes when it is let go of, and the messages the call
released are acked ``"dead_letter"``); ``"retry"`` if giving up was interrupted (the
message is handled again).
"""
Side = Literal["input", "output", "both"]
"""Which events of a node an observer attached to it gets: what comes in (``receive``,
``process_*``, ``ack``), what goes out (``send`` on its edges), or both."""


@dataclass(slots=True)
class GraphEvent:
    """One event of one message at one node or edge.

    Attributes:
        phase: What happened (see :data:`Phase`).
        node: The node it happened at: the sender for ``"send"``, else the receiver.
        message: The message (for ``"send"``, the output sent).
        edge: The edge the message took (``metadata["edge"]``); ``None`` for an input
            sent into the graph from outside.
        target: For ``"send"``: the id of the node it was sent to.
        attempt: For ``process_*``: which attempt (1 first).
        duration: For ``process_end``: seconds the call took.
        outcome: For ``process_end`` and ``ack`` (see :data:`Outcome`).
        error: For ``process_end`` with ``retry``/``dead_letter``: what it raised.
        carry: For ``process_start``: metadata added to every output of this call.
    """

    phase: Phase
    node: str
    message: ChannelMessage
    edge: str | None = None
    target: str | None = None
    attempt: int = 0
    duration: float | None = None
    outcome: Outcome | None = None
    error: BaseException | None = None
    carry: dict[str, Any] = field(default_factory=dict)


GraphObserver = Callable[[GraphEvent], Awaitable[None] | None]
"""``observer(event)``: a plain function or an ``async def``."""


def edge_of(message: ChannelMessage) -> str | None:
    """The edge ``message`` took (``metadata["edge"]``); ``None`` if sent from outside."""
    metadata = message.raw_metadata
    return metadata.get("edge") if metadata else None


async def notify(
    observers: Iterable[GraphObserver], event: GraphEvent, failures: dict[int, int]
) -> None:
    """Call each observer with ``event`` in order, awaiting async ones; isolate failures.

    An observer that raises is logged with its name the first time, then counted in
    ``failures`` (by the observer's ``id``: its registry's, which holds it); the others are
    still called.
    """
    for observer in observers:
        try:
            result = observer(event)
            if result is not None and inspect.isawaitable(result):
                await result
        except Exception:  # noqa: BLE001 - an observer must never break delivery
            count = failures.get(id(observer), 0)
            failures[id(observer)] = count + 1
            if count == 0:
                _log.exception(
                    "graph observer failed (logged once; later failures are counted)",
                    observer=getattr(observer, "__qualname__", None) or repr(observer),
                    phase=event.phase,
                    node=event.node,
                    msg_id=event.message.id,
                )


@dataclass(frozen=True, slots=True)
class _Attachment:
    observer: GraphObserver
    node: str | None  # None: every node
    edge: str | None  # an edge name: that edge only
    side: Side


@dataclass(slots=True)
class NodeObservers:
    """The observers one node's runtime calls (made by :class:`ObserverRegistry`).

    Attributes:
        inputs: ``(observer, edge)`` pairs for ``receive``/``ack`` (only messages that
            took ``edge``, if not ``None``).
        process: Observers of ``process_start``/``process_end``.
        outputs: Per edge name, the observers of ``send`` along it; ``"*"``: every edge.
    """

    inputs: list[tuple[GraphObserver, str | None]] = field(default_factory=list)
    process: list[GraphObserver] = field(default_factory=list)
    outputs: dict[str, list[GraphObserver]] = field(default_factory=dict)
    failures: dict[int, int] = field(default_factory=dict)
    """How often each observer raised (its registry's counts, shared)."""
    output_order: list[GraphObserver] = field(default_factory=list)
    """The observers of ``send``, in the order they were attached."""

    def of_input(self, edge: str | None) -> list[GraphObserver]:
        """The observers of a ``receive``/``ack`` of a message that took ``edge``."""
        return [o for o, only in self.inputs if only is None or only == edge]

    def of_output(self, edge: str) -> list[GraphObserver]:
        """The observers of a ``send`` along ``edge``, in the order they were attached."""
        every, own = self.outputs.get("*"), self.outputs.get(edge)
        if own is None:
            return every or []
        if every is None:
            return own
        return [o for o in self.output_order if o in every or o in own]


class ObserverRegistry:
    """Which observers a graph has, attached where; what each node's runtime calls."""

    __slots__ = ("_attachments", "failures")

    def __init__(self) -> None:
        self._attachments: list[_Attachment] = []
        self.failures: dict[int, int] = {}
        """How often each attached observer raised, by ``id`` (see :meth:`errors`)."""

    def add(
        self, observer: GraphObserver, *, node: str | None, edge: str | None, side: Side
    ) -> None:
        """Attach ``observer`` (validated by the graph)."""
        self._attachments.append(_Attachment(observer, node, edge, side))

    def remove(self, observer: GraphObserver) -> int:
        """Detach every attachment of ``observer``; return how many there were.

        Compared by equality: a bound method is made anew on each access.
        """
        gone = [a for a in self._attachments if a.observer == observer]
        self._attachments = [a for a in self._attachments if a.observer != observer]
        for attachment in gone:
            self.failures.pop(id(attachment.observer), None)
        return len(gone)

    def errors(self, observer: GraphObserver) -> int:
        """How often ``observer`` (attached here) raised when called."""
        ids = {id(a.observer) for a in self._attachments if a.observer == observer}
        return sum(self.failures.get(each, 0) for each in ids)

    def attached(self) -> list[tuple[GraphObserver, str | None, str | None, Side]]:
        """Every attachment, in order: ``(observer, node, edge, side)``."""
        return [(a.observer, a.node, a.edge, a.side) for a in self._attachments]

    def for_node(self, node_id: str, out_edges: Iterable[str]) -> NodeObservers | None:
        """The observers node ``node_id`` calls (``out_edges``: its edges' names), or None.

        Observers whose ``metered`` attribute is true (a ``MetricsObserver``) are not
        called per event: the runtime meters the node for them instead.
        """
        out = set(out_edges)
        found = NodeObservers(failures=self.failures)
        for a in self._attachments:
            if getattr(a.observer, "metered", False):
                continue
            if a.edge is not None:
                source, target = edge_ends(a.edge)
                if target == node_id:
                    found.inputs.append((a.observer, a.edge))
                if source == node_id and a.edge in out:
                    found.outputs.setdefault(a.edge, []).append(a.observer)
                else:
                    continue
                found.output_order.append(a.observer)
                continue
            if a.node is not None and a.node != node_id:
                continue
            if a.side in ("input", "both"):
                found.inputs.append((a.observer, None))
                found.process.append(a.observer)
            if a.side in ("output", "both"):
                found.outputs.setdefault("*", []).append(a.observer)
                found.output_order.append(a.observer)
        if not (found.inputs or found.process or found.outputs):
            return None
        return found

    def metered(self, node_ids: Iterable[str]) -> set[str]:
        """The nodes a metering observer (``metered = True``) is attached to.

        Attached to a node or the whole graph; one attached to an edge times nothing.
        """
        metered: set[str] = set()
        ids = list(node_ids)
        for a in self._attachments:
            if not getattr(a.observer, "metered", False) or a.edge is not None:
                continue
            if a.node is None:
                return set(ids)
            if a.side != "output":
                metered.add(a.node)
        return metered
