"""Edges between nodes: conditions, priorities, and the ``>>`` wiring helpers."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

from spark_nodes.errors import WiringError

if TYPE_CHECKING:
    from spark_nodes.nodes.node import Node

__all__ = [
    "OTHERWISE_PRIORITY",
    "Condition",
    "Edge",
    "EdgeBuilder",
    "Equals",
    "ErrorRoute",
    "Otherwise",
    "edge_ends",
    "select_edges",
    "sorted_edges",
]

Condition = Callable[[Any], bool]
"""A predicate on a node's output content: ``lambda out: out["score"] > 0.5``."""

_MISSING = object()

OTHERWISE_PRIORITY: Final = -(2**63)
"""The priority of ``otherwise()`` edges: below any other conditional edge."""


class Otherwise:
    """The condition of ``node.otherwise() >> x``: taken when no other condition matched."""

    __slots__ = ()

    def __call__(self, output: Any) -> bool:
        """Always True; its lowest priority makes it a fallback."""
        return True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Otherwise)

    def __hash__(self) -> int:
        return hash(Otherwise)

    def __repr__(self) -> str:
        return "otherwise()"


class ErrorRoute:
    """The condition of an error route, ``a.on_error() >> handler``: no output takes it.

    An edge with this condition is an *error edge*: outputs never take it (it never
    matches, and the worker loop leaves it out of the routes outputs take); a message
    the source gives up on (its retries exhausted, a ``NonRetriableError``, an edge
    condition that raised, a successor that refused its output) goes along it instead
    of to the dead-letter channel, as a :class:`~spark_nodes.nodes.FailedMessage`. Its
    name is ``"{source}-!>{target}"``.

    Attributes:
        dead_letter: Whether the message is also dead-lettered, after it was routed
            (``a.on_error(dead_letter=True)``).
    """

    __slots__ = ("dead_letter",)

    def __init__(self, *, dead_letter: bool = False) -> None:
        self.dead_letter = dead_letter

    def __call__(self, output: Any) -> bool:
        """Always False: an output never takes an error edge."""
        return False

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ErrorRoute) and other.dead_letter == self.dead_letter

    def __hash__(self) -> int:
        return hash((ErrorRoute, self.dead_letter))

    def __repr__(self) -> str:
        return "on_error(dead_letter=True)" if self.dead_letter else "on_error()"


class Equals:
    """The condition ``a.on(kind="refund")`` builds: every key equals its value.

    A mapping output is read with ``output.get(key)``, any other object with
    ``getattr``; a missing key never matches. Two ``Equals`` with the same pairs are
    equal, so wiring the same ``on(...)`` twice makes one edge.
    """

    __slots__ = ("expected",)

    def __init__(self, expected: Mapping[str, Any]) -> None:
        self.expected = dict(expected)

    def __call__(self, output: Any) -> bool:
        """Return True if every expected key of ``output`` has its expected value."""
        if isinstance(output, Mapping):
            return all(output.get(k, _MISSING) == v for k, v in self.expected.items())
        return all(getattr(output, k, _MISSING) == v for k, v in self.expected.items())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Equals) and other.expected == self.expected

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.expected.items(), key=repr)))

    def __repr__(self) -> str:
        return "on(" + ", ".join(f"{k}={v!r}" for k, v in self.expected.items()) + ")"


class Edge:
    """A directed edge ``source -> target``, taken when its condition holds.

    An output takes every unconditional edge (fan-out) and, of the conditional edges that
    match it, those with the highest ``priority``: a lower-priority conditional edge is a
    fallback, taken only when no higher one matches, and ``otherwise()`` edges are taken
    only when no other conditional edge matches. Each output reaches a given target at
    most once, whichever edges match. (Priority does not apply to unconditional edges.)

    An *error edge* (``a.on_error() >> h``, its condition an :class:`ErrorRoute`) is
    taken by no output: only by the messages its source gives up on.

    Attributes:
        source: The node whose outputs travel along the edge.
        target: The node whose mailbox receives them.
        condition: ``None`` (always taken) or a predicate on the output content.
        priority: The tier; higher tiers are tried first.
        name: ``"{source.id}->{target.id}"`` (``"{source.id}-!>{target.id}"`` for an
            error edge); forwarded messages carry it as ``metadata["edge"]``.
    """

    __slots__ = ("condition", "name", "priority", "source", "target")

    def __init__(
        self, source: Node, target: Node, condition: Condition | None = None, priority: int = 0
    ) -> None:
        self.source = source
        self.target = target
        self.condition = condition
        self.priority = priority
        arrow = "-!>" if isinstance(condition, ErrorRoute) else "->"
        self.name = f"{source.id}{arrow}{target.id}"

    @property
    def is_error_route(self) -> bool:
        """Whether this is an error edge (``a.on_error() >> h``), which no output takes."""
        return isinstance(self.condition, ErrorRoute)

    def matches(self, content: Any) -> bool:
        """Whether an output with this content takes the edge.

        Raises:
            Exception: Whatever the condition raises.
        """
        return self.condition is None or bool(self.condition(content))

    def __repr__(self) -> str:
        condition = "" if self.condition is None else f" when {self.condition!r}"
        tier = f" priority={self.priority}" if self.priority not in (0, OTHERWISE_PRIORITY) else ""
        return f"<Edge {self.name}{condition}{tier}>"


def edge_ends(name: str) -> tuple[str, str]:
    """``(source, target)`` of an edge name; ``(name, "")`` for a name with no arrow.

    The name of a wired edge is ``"a->b"``, of a goto ``"a~>b"``, of an error edge
    ``"a-!>b"``.
    """
    for arrow in ("-!>", "->", "~>"):
        source, found, target = name.partition(arrow)
        if found:
            return source, target
    return name, ""


def sorted_edges(edges: list[Edge]) -> list[Edge]:
    """``edges`` by priority, highest first, in wiring order within a priority."""
    return sorted(edges, key=lambda edge: -edge.priority)


def select_edges(edges: list[Edge], content: Any) -> list[Edge]:
    """The edges an output with ``content`` takes, one per target.

    Every unconditional edge; and of the conditional edges that match, those of the highest
    priority (a lower priority, ``otherwise()`` lowest of all, is a fallback). Error edges
    never match: no output takes them.

    Args:
        edges: The node's edges sorted by priority, highest first (:func:`sorted_edges`).
        content: The output content.

    Raises:
        Exception: Whatever an edge condition raises.
    """
    best: int | None = None
    chosen: list[Edge] = []
    for edge in edges:
        if edge.condition is not None:
            if best is not None and edge.priority < best:
                continue
            if not edge.matches(content):
                continue
            best = edge.priority
        if all(c.target is not edge.target for c in chosen):
            chosen.append(edge)
    return chosen


def check_condition(condition: Condition | None, equals: Mapping[str, Any]) -> Condition:
    """Build the condition of ``node.on(condition, **equals)``.

    Raises:
        WiringError: Neither or both were given, or the condition is not callable.
    """
    if condition is not None and equals:
        raise WiringError("on() takes a condition or key=value pairs, not both")
    if condition is None:
        if not equals:
            raise WiringError(
                "on() needs a condition (on(lambda out: ...)) or key=value pairs (on(kind='x')); "
                "for an unconditional edge write a >> b"
            )
        return Equals(equals)
    if not callable(condition):
        raise WiringError(f"an edge condition must be callable, not {type(condition).__name__}")
    return condition


def targets_of(right: object, left: object) -> list[Node]:
    """The nodes on the right of ``left >> right``.

    Raises:
        WiringError: ``right`` is not a node nor a non-empty list/tuple of nodes.
    """
    return _nodes_of(right, left, right, "right", "targets")


def sources_of(left: object, right: object) -> list[Node]:
    """The nodes on the left of ``left >> right`` (``[a, b] >> c``).

    Raises:
        WiringError: ``left`` is not a node nor a non-empty list/tuple of nodes.
    """
    return _nodes_of(left, left, right, "left", "sources")


def _nodes_of(side: object, left: object, right: object, which: str, role: str) -> list[Node]:
    """The nodes ``side`` (one side of ``left >> right``) stands for; errors name the expression."""
    from spark_nodes.nodes.node import Node  # noqa: PLC0415 - edges and nodes refer to each other

    if isinstance(side, Node):
        return [side]
    if isinstance(side, list | tuple):
        if not side:
            raise WiringError(f"{left!r} >> {right!r}: the list of {role} is empty")
        bad = [item for item in side if not isinstance(item, Node)]
        if bad:
            raise WiringError(
                f"{left!r} >> {right!r}: {bad[0]!r} is not a Node; only nodes can be wired"
            )
        return list(side)
    raise WiringError(
        f"cannot wire {left!r} >> {right!r}: the {which} side must be a Node or a list of Nodes"
    )


class EdgeBuilder:
    """What ``on(...)``, ``otherwise()`` and ``on_error()`` return: ``>>`` it to add edges.

    ``builder >> node`` (or a list of nodes) adds an edge with the builder's condition
    from its source to each, and returns the right side, so chains go on.
    """

    __slots__ = ("_condition", "_priority", "_source")

    def __init__(self, source: Node, condition: Condition, priority: int = 0) -> None:
        self._source = source
        self._condition = condition
        self._priority = priority

    def with_priority(self, priority: int) -> EdgeBuilder:
        """Return a builder whose edges have ``priority`` (higher wins).

        Among the conditional edges an output matches, only the highest priority is taken.

        Raises:
            WiringError: ``priority`` is not an int, or this builds error routes
                (``on_error()``), which have no priority.
        """
        if isinstance(self._condition, ErrorRoute):
            raise WiringError(
                f"{self!r}.with_priority(): error routes have no priority; every error "
                f"route of a node gets the message it gives up on"
            )
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise WiringError(f"priority must be an int, not {priority!r}")
        return EdgeBuilder(self._source, self._condition, priority)

    def __rshift__(self, right: Node | list[Node] | tuple[Node, ...]) -> Any:
        for target in targets_of(right, self):
            self._source.connect(target, when=self._condition, priority=self._priority)
        return right

    def __repr__(self) -> str:
        if isinstance(self._condition, ErrorRoute):
            return f"{self._source!r}.{self._condition!r}"
        return f"{self._source!r}.on({self._condition!r})"


def connect_all(sources: Iterable[Node], target: Node) -> None:
    """Wire every source to ``target`` (``[b, c] >> d``)."""
    for source in sources:
        source.connect(target)
