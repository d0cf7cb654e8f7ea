"""Where a node's outputs go: its routes, and how outputs are staged for them.

An output is *staged*, not sent, while the worker loop handles a batch: appended to its
target's list (or, from a durable mailbox to a mailbox it commits to, to the message's
part of the batch's commit). The loop settles what is staged before it waits for anything
(see :mod:`spark_nodes.nodes._settling`), so a batch's outputs leave together, in order,
and a failed attempt's outputs can be dropped.
"""

from __future__ import annotations

from time import time
from typing import TYPE_CHECKING, Any, Final

from spark_nodes.channels import BaseChannel, ChannelMessage
from spark_nodes.channels.mailbox import DurableMailbox, Mailbox, mailbox_of
from spark_nodes.channels.message import new_message_id, unchecked_message
from spark_nodes.errors import StepLimitExceeded
from spark_nodes.nodes._watch import REPLY_PREFIX, invoke_record
from spark_nodes.nodes.edges import Edge, ErrorRoute, select_edges, sorted_edges
from spark_nodes.nodes.message import NodeMessage

if TYPE_CHECKING:
    from spark_nodes.nodes._runtime import RunContext
    from spark_nodes.nodes.node import Node

__all__ = [
    "CORRELATION_DEPTH",
    "ErrorRoutes",
    "Forwarding",
    "Route",
    "Routes",
    "StepFailed",
    "steps_of",
]

CORRELATION_DEPTH: Final = 16  # nested fan-outs remembered; older ids are dropped

Sends = list[tuple[BaseChannel, ChannelMessage]]


def steps_of(inputs: NodeMessage) -> int:
    """The steps a message has taken round cycles (``metadata["steps"]``; 0 if none)."""
    metadata = inputs.raw_metadata
    return metadata.get("steps", 0) if metadata else 0


class StepFailed(Exception):
    """A message's handling failed for good: dead-letter it (``phase`` says where).

    Routing or forwarding failures are final at once (retrying ``process`` would repeat
    them); a ``process`` failure is, after its last attempt.
    """

    def __init__(self, phase: str, error: Exception, attempts: int = 1) -> None:
        super().__init__(phase)
        self.phase = phase
        self.error = error
        self.attempts = attempts


class Route:
    """One edge as the worker loop uses it.

    Attributes:
        name: The edge's name, forwarded as ``metadata["edge"]``.
        channel: The target node's mailbox.
        mailbox: The same, as a :class:`~spark_nodes.channels.mailbox.Mailbox`.
        staged: Outputs staged for the target (shared by every route to it).
        commits: Whether outputs go in the source's commit instead (durable sources).
        owner: The route whose ``staged`` list this is (the first one to the target).
        steps: Whether outputs taking it count ``metadata["steps"]`` up (see
            ``Task.max_steps``): routes along a cycle, and every ``goto``.
        target_id: The target node's id.
        sent: Outputs staged along it, less those that were not sent after all (a failed
            attempt's, a failed send's, a commit's that lost its lease).
        stamps: Whether outputs get ``metadata["sent_at"]`` (``time.time()``): the target
            is metered, and measures how long they wait.
    """

    __slots__ = (
        "channel",
        "commits",
        "mailbox",
        "name",
        "owner",
        "sent",
        "staged",
        "stamps",
        "steps",
        "target_id",
    )

    def __init__(
        self,
        name: str,
        channel: BaseChannel,
        owner: Route | None,
        commits: bool,
        *,
        steps: bool = False,
    ) -> None:
        self.name = name
        self.steps = steps
        """Whether an output taking it takes a step (an edge of a cycle, or a goto)."""
        self.channel = channel
        self.mailbox: Mailbox = mailbox_of(channel)
        self.owner: Route = owner or self
        self.staged: list[ChannelMessage] = [] if owner is None else owner.staged
        self.commits = commits
        self.target_id = ""
        self.sent = 0
        self.stamps = False


class ErrorRoutes:
    """A node's error edges as routes: where the messages it gives up on go.

    Attributes:
        routes: One per target, in wiring order.
        dead_letter: Whether such a message is dead-lettered too, after it was routed.
        routed: Messages sent along them so far (in this run); kept here, not on every
            node's runtime (a 10,000-node graph).
    """

    __slots__ = ("dead_letter", "routed", "routes")

    def __init__(self, routes: list[Route], dead_letter: bool) -> None:
        self.routes = routes
        self.dead_letter = dead_letter
        self.routed = 0


class Routes:
    """A node's edges, made into routes once per run.

    Args:
        node: The node whose edges they are.
        durable: The node's mailbox if it is durable (outputs it can commit go there).
        cycle: The ids of the nodes on the node's cycle (empty if it is on none).
    """

    __slots__ = (
        "_by_edge",
        "_cycle",
        "_durable",
        "_goto",
        "_node",
        "edges",
        "errors",
        "fixed",
        "metered_targets",
        "pending",
        "single",
        "targets",
    )

    def __init__(
        self, node: Node, durable: DurableMailbox | None, cycle: frozenset[str] = frozenset()
    ) -> None:
        self._node = node
        self._durable = durable
        self._cycle = cycle
        self.targets: list[Route] = []
        """One route per target: the owners of the ``staged`` lists."""
        self.pending: list[Route] = []
        """The owners with outputs staged, in the order of their first one: delivered in
        that order, so that the target that got the first output hears of it first."""
        self._goto: dict[int, Route] | None = None
        self.metered_targets: set[str] | frozenset[str] = frozenset()
        """The targets whose routes stamp outputs (metered nodes; see :attr:`Route.stamps`)."""
        edges = node.edges
        # Kept small: a 10,000-node graph makes one of these per node and run.
        plain = all(edge.condition is None for edge in edges)
        error_edges = None
        if not plain and any(isinstance(edge.condition, ErrorRoute) for edge in edges):
            # No output takes an error edge: outputs route as if it were not there.
            error_edges = [edge for edge in edges if isinstance(edge.condition, ErrorRoute)]
            edges = [edge for edge in edges if not isinstance(edge.condition, ErrorRoute)]
            plain = all(edge.condition is None for edge in edges)
        if plain:
            self.edges: list[Edge] = []
            self._by_edge: dict[int, Route] = {}
            routes = [self._route(edge.name, edge.target) for edge in select_edges(edges, None)]
            self.fixed: list[Route] | None = routes if routes != self.targets else self.targets
        else:
            self.edges = sorted_edges(edges)
            self._by_edge = {id(edge): self._route(edge.name, edge.target) for edge in self.edges}
            self.fixed = None
        """Every output's routes, if no edge has a condition."""
        fixed = self.fixed
        self.single: Route | None = (
            fixed[0]
            if fixed is not None and len(fixed) == 1 and not (fixed[0].commits or fixed[0].steps)
            else None
        )
        """The one route every output takes, staged in memory: the loop's inlined case."""
        self.errors: ErrorRoutes | None = (
            None if error_edges is None else self._error_routes(error_edges)
        )
        """Where the messages the node gives up on go (``a.on_error() >> h``), if anywhere."""

    def _error_routes(self, edges: list[Edge]) -> ErrorRoutes:
        if self.fixed is self.targets:  # shared to save memory; an error route's target
            self.fixed = list(self.targets)  # must not become every output's
        routes: list[Route] = []
        for edge in edges:
            if all(route.target_id != edge.target.id for route in routes):
                routes.append(self._route(edge.name, edge.target))
        dead_letter = any(
            isinstance(edge.condition, ErrorRoute) and edge.condition.dead_letter for edge in edges
        )
        return ErrorRoutes(routes, dead_letter)

    def _route(self, name: str, target: Node, *, goto: bool = False) -> Route:
        channel = target.mailbox
        steps = goto or target.id in self._cycle
        owner = next((known for known in self.targets if known.channel is channel), None)
        if owner is not None:
            route = Route(name, channel, owner, owner.commits, steps=steps)
        else:
            durable = self._durable
            commits = durable is not None and durable.commits_to(channel)
            route = Route(name, channel, None, commits, steps=steps)
            self.targets.append(route)
        route.target_id = target.id
        route.stamps = target.id in self.metered_targets
        return route

    def every_route(self) -> list[Route]:
        """Every route made so far: one per edge, and per ``goto`` target."""
        routes = list(self.fixed) if self.fixed is not None else list(self._by_edge.values())
        if self.errors is not None:
            routes += self.errors.routes
        return routes + list((self._goto or {}).values())

    def sent_by_edge(self) -> dict[str, int]:
        """What was sent along each edge (and goto) so far, by name."""
        sent: dict[str, int] = {}
        for route in self.every_route():
            sent[route.name] = sent.get(route.name, 0) + route.sent
        return sent

    def named(self, name: str) -> Route | None:
        """The route of the edge (or goto) called ``name``, if one was made."""
        return next((route for route in self.every_route() if route.name == name), None)

    def set_metered(self, targets: set[str]) -> None:
        """Stamp outputs to ``targets`` from now on (see :attr:`Route.stamps`)."""
        self.metered_targets = targets
        for route in self.every_route():
            route.stamps = route.target_id in targets

    def select(self, content: Any) -> list[Route]:
        """The routes an output with ``content`` takes (see :func:`select_edges`).

        Raises:
            StepFailed: An edge condition raised.
        """
        fixed = self.fixed
        if fixed is not None:
            return fixed
        try:
            edges = select_edges(self.edges, content)
        except Exception as error:
            raise StepFailed("route", error) from error
        by_edge = self._by_edge
        return [by_edge[id(edge)] for edge in edges]

    def goto(self, targets: list[Node]) -> list[Route]:
        """Routes to ``targets`` (a ``goto``), wired or not, each target once.

        Their name, forwarded as ``metadata["edge"]``, is ``"{source}~>{target}"``: a
        message sent by ``goto`` took no wired edge (``"{source}->{target}"``), even to a
        target that one also leads to.
        """
        known = self._goto
        if known is None:
            known = self._goto = {}
            if self.fixed is self.targets:  # shared to save memory; a goto's new target
                self.fixed = list(self.targets)  # must not become every output's
        routes = []
        for target in dict.fromkeys(targets):
            route = known.get(id(target))
            if route is None:
                name = f"{self._node.id}~>{target.id}"
                route = known[id(target)] = self._route(name, target, goto=True)
            routes.append(route)
        return routes


class Forwarding:
    """The worker loop's forwarding: stage outputs along the routes they take.

    A mixin of :class:`~spark_nodes.nodes._runtime.NodeRuntime`, whose attributes it uses.
    """

    __slots__ = (
        "delivered",
        "node",
        "outputs_made",
        "routes",
        "run",
        "terminal_outputs",
    )

    node: Node
    run: RunContext
    routes: Routes
    terminal_outputs: int
    outputs_made: int
    """Outputs forwarded (or kept as terminal) so far: a new one is a new node result."""
    delivered: list[ChannelMessage] | None
    """With observers: the outputs delivered (or committed) and not told yet, for their
    ``send`` events; ``None`` when nothing observes the node."""

    def forward(  # noqa: PLR0912 - one frame: a call per output costs what staging does
        self,
        output: Any,
        trace_id: str,
        correlation: list[str] | None,
        goto: list[Node] | None = None,
        sends: Sends | None = None,
        *,
        steps: int = 0,
        origin: object = None,
        carry: dict[str, Any] | None = None,
        staged: list[ChannelMessage] | None = None,
    ) -> None:
        """Stage ``output`` along the edges it takes (or to the ``goto`` targets).

        ``sends``: the commit list of the message being handled, for routes a durable
        mailbox commits to. An output that takes no edge is a terminal output of the run.
        ``steps``: the steps the message being handled has taken (see :func:`steps_of`).
        ``origin``: that message, for a trace being watched (see ``_watch``).
        ``carry``: metadata observers add to every output of the call (see ``observing``).
        ``staged``: where to note the outputs staged for delivery (an attempt's, which a
        failure takes back).

        Raises:
            StepFailed: An edge condition raised, or the output would take one step more
                than the run's ``max_steps`` (phase ``"max_steps"``).
        """
        node = self.node
        if output.__class__ is NodeMessage:
            content = output.content
            extra: dict[str, Any] | None = output.raw_metadata
        else:
            content = output
            extra = None
        node.last_output = content
        self.outputs_made += 1
        routes = self.routes.goto(goto) if goto else self.routes.select(content)
        if steps >= self.run.max_steps or self.run.watches:
            self._check_and_watch(content, routes, trace_id, steps, origin)
        if not routes:
            self._terminal(content, extra, trace_id, sends, origin)
            return
        if extra and "correlation" in extra:
            correlation = extra["correlation"]  # the output's own (a join pops it)
        if len(routes) > 1:  # a fan-out: its copies share a new correlation id (for joins)
            correlation = [*(correlation or ()), new_message_id()][-CORRELATION_DEPTH:]
        source = node.id
        for route in routes:
            route.sent += 1
            if extra:
                metadata = extra.copy()  # copy-then-set: 45% cheaper than {**extra, ...}
                metadata["trace_id"] = trace_id
                metadata["source_node"] = source
                metadata["edge"] = route.name
            else:
                metadata = {"trace_id": trace_id, "source_node": source, "edge": route.name}
            if correlation:
                metadata["correlation"] = correlation
            elif extra and "correlation" in metadata:
                del metadata["correlation"]  # a join popped the last id
            if route.steps:
                metadata["steps"] = steps + 1
            if carry:
                metadata.update(carry)
            if route.stamps:
                metadata["sent_at"] = time()
            elif extra and "sent_at" in metadata:
                del metadata["sent_at"]  # a relayed input's: not this hop's
            self._stage(route, unchecked_message(content, metadata), sends, staged)
        self.run.in_flight += len(routes)

    def _check_and_watch(
        self, content: Any, routes: list[Route], trace_id: str, steps: int, origin: object
    ) -> None:
        """Refuse an output one step past ``max_steps``; tell a watch of its trace of it.

        Raises:
            StepFailed: The output would take one step too many (phase ``"max_steps"``).
        """
        run = self.run
        if steps >= run.max_steps and any(route.steps for route in routes):
            where = ", ".join(route.name for route in routes if route.steps)
            error = StepLimitExceeded(
                f"the message took {steps} steps (round a cycle, or by goto), and {where} "
                f"would be one more than the task's max_steps={run.max_steps}; raise "
                f"Task(max_steps=...) if this many are expected"
            )
            raise StepFailed("max_steps", error)
        watch = run.watches.get(trace_id) if run.watches else None
        if watch is not None:
            watch.emitted(self.node.id, content, len(routes), origin)

    def _stage(
        self,
        route: Route,
        message: ChannelMessage,
        sends: Sends | None,
        noted: list[ChannelMessage] | None,
    ) -> None:
        if sends is not None and route.commits:
            sends.append((route.channel, message))
            return
        staged = route.staged
        if not staged:
            self.routes.pending.append(route.owner)
        staged.append(message)
        if noted is not None:
            noted.append(message)

    def _terminal(
        self,
        content: Any,
        extra: dict[str, Any] | None,
        trace_id: str,
        sends: Sends | None,
        origin: object,
    ) -> None:
        """An output that took no edge: a result of the run (and of an invoke on Redis)."""
        node = self.node
        self.terminal_outputs += 1
        metadata = {**extra} if extra else {}
        metadata.pop("sent_at", None)  # a relayed input's stamp: not part of a result
        metadata["trace_id"] = trace_id
        metadata["source_node"] = node.id
        output = NodeMessage(content, metadata)
        self.run.terminal_output(node, output)
        watches = self.run.watches
        watch = watches.get(trace_id) if watches else None
        if watch is not None:
            watch.terminal(output, origin)
        if sends is not None and trace_id.startswith(REPLY_PREFIX):
            replies = self.run.reply_channel(trace_id)
            if replies is not None:  # committed with the message that produced it
                record = {"output": content, "metadata": metadata}
                sends.append((replies, invoke_record(record)))

    def unsent(self, messages: list[ChannelMessage]) -> None:
        """Outputs that will not be sent after all: nothing counts them any more.

        Their edges take them off ``sent``; the traces watching them stop waiting for them.
        """
        routes = self.routes
        for message in messages:
            metadata = message.raw_metadata
            route = routes.named(metadata.get("edge", "")) if metadata else None
            if route is not None:
                route.sent -= 1
        watches = self.run.watches
        if not watches:
            return
        for message in messages:
            metadata = message.raw_metadata
            watch = watches.get(metadata.get("trace_id", "")) if metadata else None
            if watch is not None:
                watch.dropped(1)

    def drop_staged(self, outputs: list[ChannelMessage]) -> None:
        """Take ``outputs`` (a failed attempt's) back from what is staged for delivery.

        Those another loop of the node delivered meanwhile are out: they stay counted.
        """
        if not outputs:
            return
        dropping = {id(output) for output in outputs}
        dropped: list[ChannelMessage] = []
        routes = self.routes
        for route in routes.targets:
            staged = route.staged
            if staged:
                kept = [output for output in staged if id(output) not in dropping]
                if len(kept) != len(staged):
                    dropped += [output for output in staged if id(output) in dropping]
                    staged[:] = kept
        routes.pending = [route for route in routes.pending if route.staged]
        self.unsent(dropped)
        self.run.in_flight -= len(dropped)
