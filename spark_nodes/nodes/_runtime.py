"""The per-node side of a run: a node's loops, its counts, its part in shutdown.

A graph run gives every node a :class:`NodeRuntime`, bound to the run's services through
the :class:`RunContext` protocol (implemented by the graphs layer: the dead-letter channel,
stop requests, budgets, terminal outputs); nodes never import graphs. The worker loop
itself is in :mod:`spark_nodes.nodes._loop` (take, handle, settle) and
:mod:`spark_nodes.nodes._handling` (attempts, retries, dead letters, control flow).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, Final, Protocol, cast

import structlog

from spark_nodes.channels import BaseChannel, ChannelMessage
from spark_nodes.channels.mailbox import Commit, DurableMailbox, is_durable, is_mailbox, mailbox_of
from spark_nodes.channels.memory import InMemoryChannel
from spark_nodes.channels.message import new_message_id
from spark_nodes.nodes._forwarding import Routes, StepFailed
from spark_nodes.nodes._handling import Hand, kind_of
from spark_nodes.nodes._loop import CYCLE_QUIET, SHUTDOWN_EXTERNAL, WorkerLoop
from spark_nodes.nodes._metering import Meter
from spark_nodes.nodes._watch import TraceWatch
from spark_nodes.nodes.message import NodeMessage
from spark_nodes.nodes.node import Node, set_stop_flag
from spark_nodes.nodes.observing import NodeObservers, Outcome
from spark_nodes.nodes.statistics import NodeStatistics
from spark_nodes.nodes.steps import StepStore

__all__ = ["CYCLE_QUIET", "SHUTDOWN_EXTERNAL", "NodeRuntime", "RunContext"]

_log = structlog.get_logger("spark_nodes")

_NO_FLAGS: Final[list[bool]] = []  # shared: only a durable mailbox's runtime adds to its own


class RunContext(Protocol):
    """What a node's runtime needs from the run it belongs to (implemented by graphs)."""

    graph: Any
    dead_letters: BaseChannel
    in_flight: int
    """Messages sent to a mailbox of the run and not handled yet (nodes keep it)."""
    handled: int
    """Messages handled (processed or dead-lettered) so far (nodes keep it)."""
    watch_each_message: bool
    """Whether :meth:`message_done` must be called after each handled message."""
    distributed: bool
    """Whether the nodes' mailboxes are shared with other processes (a Redis graph)."""
    max_steps: int
    """Steps (hops round a cycle, gotos) a message may take; more is dead-lettered."""
    watches: dict[str, TraceWatch]
    """Traces followed by ``invoke``/``ask``, by trace id (see :mod:`._watch`)."""
    step_store: StepStore | None
    """Where ``context.step`` results are stored (Redis graphs); ``None``: with the message."""

    def message_done(self) -> None:
        """A message was handled (processed, or dead-lettered): check limits."""

    def loop_idle(self, runtime: NodeRuntime) -> None:
        """A loop of ``runtime`` found its mailbox empty, with everything it handled settled."""

    def closed_to_input(self, runtime: NodeRuntime) -> None:
        """A node on a cycle got every shutdown from outside it: only the cycle feeds it now."""

    def terminal_output(self, node: Node, output: NodeMessage) -> None:
        """An output took no edge: it is a result of the run."""

    def request_stop(self, reason: str, detail: str) -> None:
        """Stop the whole run gracefully."""

    def start_drain(self, runtime: NodeRuntime) -> None:
        """Start a task running ``runtime.drain()`` (``runtime.active`` already counts it)."""

    def node_stopping(self, runtime: NodeRuntime) -> None:
        """The node was asked to stop: wake its loops, or finish it if idle."""

    def node(self, node_id: str) -> Node | None:
        """The node with this id in the run, if any."""

    def request_cancel(self, node_id: str, reason: str) -> None:
        """End the run abnormally, now; ``run`` raises ``GraphCancelled``."""

    def call_later(self, delay: float, callback: Callable[[], Awaitable[None]]) -> None:
        """Await ``callback()`` in ``delay`` seconds, unless the run has ended by then."""

    async def schedule(
        self,
        runtime: NodeRuntime,
        target: Node | str,
        message: ChannelMessage,
        delay: float,
        once: str,
    ) -> None:
        """Send ``message`` to ``target`` in ``delay`` seconds (``context.schedule``).

        ``runtime``: the scheduling node's; ``once`` identifies the schedule, so that a
        redelivery's is dropped.

        Raises:
            WiringError: ``target`` (a node or its id) is not a node of the run.
        """

    async def shutdown_received(self, node_id: str, message: ChannelMessage) -> None:
        """A distributed graph's shutdown entry reached a loop of node ``node_id``."""

    def reply_channel(self, trace_id: str) -> BaseChannel | None:
        """Where the records of an invoke's trace go (a Redis graph's reply stream), if any."""


class NodeRuntime(WorkerLoop):
    """One node's state in one run: its loops' counts, its routes, its shutdown.

    Args:
        node: The node.
        run: The run's services.
        shutdown_sources: Whom the node waits for before it drains: the ids of its
            predecessors (back edges of cycles excluded), or :data:`SHUTDOWN_EXTERNAL`.
        cycle: The ids of the nodes on the node's cycle, if it is on one.
        predecessors: The ids of the nodes wired to it (back edges of cycles excluded):
            whose parts a join waits for. By default, ``shutdown_sources`` but the outside.
    """

    __slots__ = (
        "drain_letters",
        "drained_early",
        "drains_itself",
        "finished",
        "meter",
        "observed",
        "on_demand",
        "predecessors",
        "restarts",
    )

    def __init__(
        self,
        node: Node,
        run: RunContext,
        shutdown_sources: tuple[str, ...],
        cycle: frozenset[str] = frozenset(),
        predecessors: tuple[str, ...] | None = None,
    ) -> None:
        self.node = node
        self.run = run
        self.shutdown_sources = shutdown_sources
        if predecessors is None:
            predecessors = tuple(s for s in shutdown_sources if s != SHUTDOWN_EXTERNAL)
        self.predecessors = predecessors
        self.pending_shutdowns: set[str] | None = None  # made at the first shutdown
        self.custom_loop = type(node).go is not Node.go
        channel = node.mailbox
        self.mailbox = mailbox_of(channel)
        self.native_mailbox = is_mailbox(channel)
        self.durable: DurableMailbox | None = channel if is_durable(channel) else None  # type: ignore[assignment]
        # Workers on demand need to know of every arrival: only our own in-memory channel
        # reports them (a subclass might override send without calling ours).
        self.on_demand = not self.custom_loop and type(channel) is InMemoryChannel
        self.kind = kind_of(node.process)
        self.routes = Routes(node, self.durable, cycle)
        self.commit: Commit | None = Commit() if self.durable is not None else None
        self.commit_handled: list[bool] = [] if self.durable is not None else _NO_FLAGS
        self.result_index: int | None = None
        self.step_written: set[str] | None = None  # made by the first step (10k nodes: 2 MiB)
        self.hands: list[Hand] = []
        self.bail: Any = None
        self.slow_process = False
        self.outputs_made = 0
        self.finished = False
        self.stopping = False
        self.draining = False
        self.timers = 0
        self.drains_itself = type(node).on_drained is not Node.on_drained
        self.drained_early = False
        self.drain_letters: set[int] | None = None
        self.active = 0
        self.loops = node.config.concurrency
        self.idle = 0
        self.received = 0
        self.processed = 0
        self.failed_attempts = 0
        self.retried = 0
        self.dead_lettered = 0
        self.forwarded = 0
        self.terminal_outputs = 0
        self.restarts = 0
        self.observed: NodeObservers | None = None
        self.delivered: list[ChannelMessage] | None = None
        self.meter: Meter | None = None
        self.repeats = None
        self._log = None
        self._outage = None

    def observe(self, observers: NodeObservers | None, *, metered: bool) -> None:
        """Call ``observers`` from now on (``None``: none); keep timings if ``metered``.

        From the next batch: a batch the fast path has in hand goes on unobserved.
        """
        self.observed = observers
        if observers is None:
            self.delivered = None
        elif self.delivered is None:  # (kept if it has outputs not told yet)
            self.delivered = []
        if metered:
            if self.meter is None:
                self.meter = Meter()
        else:
            self.meter = None

    # -- starting and stopping ------------------------------------------------------------

    async def run_default_loop(self) -> None:
        """Receive and handle messages until the node drains or is stopped."""
        await self.serve(exit_when_idle=False)

    async def drain(self) -> None:
        """Handle messages until the mailbox is empty, the node drains or is stopped.

        The on-demand form of the loop: a node whose mailbox is an in-memory channel has
        no task while it has nothing to do, and the mailbox starts one (:meth:`on_arrival`)
        when a message comes. 10,000 idle nodes then cost no task and no stack.
        """
        await self.serve(exit_when_idle=True)

    def on_arrival(self) -> None:
        """A message reached the mailbox: start a worker if one more may run."""
        if self.active < self.node.config.concurrency and not (
            self.finished or self.draining or self.stopping
        ):
            self.active += 1
            self.run.start_drain(self)

    def stop_requested(self) -> None:
        """``node.stop()`` was called: take no new message, wake the idle loops."""
        self.stopping = True
        self.run.node_stopping(self)

    def stop(self) -> None:
        """The run stops every node: flag this one, without telling the run again."""
        set_stop_flag(self.node)
        self.stopping = True

    async def drained(self) -> None:
        """Call ``node.on_drained()`` and forward what it returns (or yields), then deliver.

        Then ack the messages the node held before and holds no more (what it flushed),
        but those it dead-lettered: after their outputs are delivered, so a crash in
        between delivers them again. A node lets a message go once what it was flushed in
        is forwarded (a generator: when it resumes after that ``yield``), so an error acks
        only what went out before it.

        Raises:
            Exception: What ``on_drained`` raised (what it produced before is forwarded),
                such as the error of an output it yielded and could not be forwarded
                (see :meth:`_forward_each`).
        """
        node = self.node
        held = node.held
        trace_id = new_message_id()  # a chain of its own: no message caused it
        dead: set[int] = set()
        self.drain_letters = dead
        try:
            if inspect.isasyncgenfunction(node.on_drained):
                items = cast("AsyncGenerator[Any, None]", node.on_drained())
                await self._forward_each(items, trace_id)
            else:
                output = await node.on_drained()
                if output is not None:
                    self.forward(output, trace_id, None)
        finally:
            await self.before_waiting()
            await self.tell_sends()
            self.drain_letters = None
            if held:
                await self._let_go(held, {id(message) for message in node.held}, dead)

    async def _let_go(self, held: list[ChannelMessage], still: set[int], dead: set[int]) -> None:
        """Ack the messages of ``held`` the node let go of, but the ``dead`` letters.

        ``still``: those it still holds. Observers are told the ``ack`` of each.
        """
        observed = self.observed
        for message in held:
            ident = id(message)
            if ident in still:
                continue
            if ident not in dead and message.ack is not None and not message.acked:
                await self.ack(message)
            if observed is not None:
                outcome: Outcome = "dead_letter" if ident in dead else "ok"
                await self._observe_input(observed, "ack", message, outcome)

    async def _forward_each(self, items: AsyncGenerator[Any, None], trace_id: str) -> None:
        """Forward each item ``items`` yields; raise the error of one that cannot be at its yield.

        An edge condition that raises, ``max_steps``: the generator may catch the error,
        dead-letter what that output was made of and go on (a window does).

        Raises:
            Exception: What the generator raised (that error too, if it did not catch it).
        """
        try:
            item = await anext(items)
            while True:
                try:
                    self.forward(item, trace_id, None)
                except StepFailed as failure:
                    item = await items.athrow(failure.error)
                else:
                    item = await anext(items)
        except StopAsyncIteration:
            return
        finally:
            await items.aclose()

    async def drain_early(self) -> None:
        """Call ``on_drained`` before a distributed node finishes; ack what it let go.

        On Redis a node finishes (and passes its shutdown on) once nothing sent to it
        before its shutdown is pending: what ``on_drained`` forwards must go before that,
        and the messages the node holds (an open window's) are pending until it flushes
        them. So each process that hosts the node calls it once it has handled all it
        took, and then acks the messages the node no longer holds.
        """
        self.drained_early = True
        try:
            await self.drained()
        except Exception:  # logged; the shutdown still goes on
            self.log.exception("on_drained failed")

    def quiet(self) -> bool:
        """Whether the node has nothing to do: mailbox empty, nothing in hand or staged.

        Nor scheduled by it (in memory): a cycle is quiet only once its timers fired.
        """
        if self.routes.pending or self.timers or not self.mailbox.empty():
            return False
        return all(hand.index >= len(hand.taken) for hand in self.hands)

    def waiting(self) -> int:
        """Messages waiting for the node: in its mailbox, or taken by a loop and not started."""
        in_hand = sum(max(0, len(hand.taken) - hand.index - 1) for hand in self.hands)
        return self.node.mailbox.statistics().depth + in_hand

    def held_messages(self) -> list[ChannelMessage]:
        """Messages the loops took and have not handled: what a checkpoint must keep.

        Read while the loops are suspended: each in the middle of its message in hand.
        """
        return [message for hand in self.hands for message in hand.unhandled()]

    def statistics(self) -> NodeStatistics:
        """A snapshot of what the node did in this run."""
        return NodeStatistics(
            node_id=self.node.id,
            received=self.received,
            processed=self.processed,
            failed_attempts=self.failed_attempts,
            retried=self.retried,
            dead_lettered=self.dead_lettered,
            forwarded=self.forwarded,
            terminal_outputs=self.terminal_outputs,
            restarts=self.restarts,
            mailbox=self.node.mailbox.statistics(),
            error_routed=self.error_routed,
        )
