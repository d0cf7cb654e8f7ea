"""The per-node side of a run: the default worker loop and what it counts.

A graph run gives every node a :class:`NodeRuntime` (``node._runtime``) bound to the run's
services (the :class:`RunContext` protocol, implemented by the graphs layer): the dead-letter
channel, stop requests, budgets, terminal outputs. Nodes never import graphs.
"""

from __future__ import annotations

import contextlib
import enum
import inspect
import traceback
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from time import monotonic
from types import CoroutineType
from typing import TYPE_CHECKING, Any, Final, Protocol

import anyio
import structlog
from anyio.lowlevel import checkpoint

from spark_nodes.channels import (
    BaseChannel,
    ChannelClosed,
    ChannelFull,
    ChannelMessage,
    ChannelStatistics,
    InMemoryChannel,
)
from spark_nodes.channels.codec import pack
from spark_nodes.channels.message import new_message_id
from spark_nodes.errors import BackendUnavailable, LeaseLost, MessageEncodeError, MessageTooLarge
from spark_nodes.nodes.config import OnError
from spark_nodes.nodes.context import Control, ExecutionContext
from spark_nodes.nodes.edges import Edge
from spark_nodes.nodes.message import NodeMessage
from spark_nodes.state.base import RESULT_SUFFIX

if TYPE_CHECKING:
    from spark_nodes.nodes.node import Node

__all__ = ["SHUTDOWN_EXTERNAL", "NodeRuntime", "NodeStatistics", "RunContext"]

_log = structlog.get_logger("spark_nodes")

SHUTDOWN_EXTERNAL: Final = "<external>"
"""The source a shutdown counts as when it does not name one (``metadata["source_node"]``)."""

_WAKE: Final = "<wake>"
_CORRELATION_DEPTH: Final = 16  # nested fan-outs remembered; older ids are dropped
_CHECKPOINT_EVERY: Final = 256  # messages between yields: ~1 ms of work, a yield costs 5-10 us
_new_object = object.__new__


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

    def message_done(self) -> None:
        """A message was handled (processed, or dead-lettered): check limits."""

    def terminal_output(self, node: Node, output: NodeMessage) -> None:
        """An output took no edge: it is a result of the run."""

    def request_stop(self, reason: str, detail: str) -> None:
        """Stop the whole run gracefully."""

    def start_drain(self, runtime: NodeRuntime) -> None:
        """Start a task running ``runtime.drain()`` (``runtime.active`` already counts it)."""

    def node_stopping(self, runtime: NodeRuntime) -> None:
        """The node's ``_stop_flag`` was just set: wake its loops, or finish it if idle."""

    def node(self, node_id: str) -> Node | None:
        """The node with this id in the run, if any."""

    def request_cancel(self, node_id: str, reason: str) -> None:
        """End the run abnormally, now; ``run`` raises ``GraphCancelled``."""

    def call_later(self, delay: float, callback: Callable[[], Awaitable[None]]) -> None:
        """Await ``callback()`` in ``delay`` seconds, unless the run has ended by then."""

    async def shutdown_received(self, runtime: NodeRuntime, message: ChannelMessage) -> None:
        """A distributed graph's shutdown entry reached one of ``runtime``'s loops."""


@dataclass(frozen=True, slots=True)
class NodeStatistics:
    """What one node did during a run.

    Attributes:
        node_id: The node.
        received: Data messages taken from the mailbox.
        processed: Messages processed successfully (and forwarded, and acked).
        failed_attempts: ``process`` calls (or routing, forwarding) that raised.
        retried: Retries scheduled after a failed attempt.
        dead_lettered: Messages sent to the dead-letter channel.
        forwarded: Messages sent to successors.
        terminal_outputs: Outputs that took no edge (results of the run).
        restarts: Times a crashed worker loop was restarted.
        mailbox: The mailbox's statistics when the run ended.
    """

    node_id: str
    received: int
    processed: int
    failed_attempts: int
    retried: int
    dead_lettered: int
    forwarded: int
    terminal_outputs: int
    restarts: int
    mailbox: ChannelStatistics


class _Kind(enum.Enum):
    SYNC = "sync"
    ASYNC = "async"
    SYNC_GENERATOR = "sync generator"
    ASYNC_GENERATOR = "async generator"


def _kind_of(process: Any) -> _Kind:
    if inspect.isasyncgenfunction(process):
        return _Kind.ASYNC_GENERATOR
    if inspect.isgeneratorfunction(process):
        return _Kind.SYNC_GENERATOR
    if inspect.iscoroutinefunction(process):
        return _Kind.ASYNC
    return _Kind.SYNC


class _StepFailed(Exception):
    """Routing or forwarding failed: dead-letter at once, retrying process would repeat it."""

    def __init__(self, phase: str, error: Exception) -> None:
        super().__init__(phase)
        self.phase = phase
        self.error = error


def select_edges(edges: list[Edge], content: Any) -> list[Edge]:
    """The edges ``content`` takes, one per target.

    Every unconditional edge; and of the conditional edges that match, those of the highest
    priority (a lower priority, ``otherwise()`` lowest of all, is a fallback).

    Args:
        edges: The node's edges sorted by priority, highest first (stable).
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


def sorted_edges(edges: list[Edge]) -> list[Edge]:
    """``edges`` by priority, highest first, in wiring order within a priority."""
    return sorted(edges, key=lambda edge: -edge.priority)


class NodeRuntime:
    """One node's state in one run, and its default worker loop.

    Args:
        node: The node.
        run: The run's services.
        shutdown_sources: Whom the node waits for before it drains: the ids of its
            predecessors (back edges of cycles excluded), or :data:`SHUTDOWN_EXTERNAL`.
    """

    __slots__ = (
        "_all_edges",
        "_edges",
        "_kind",
        "_sync_process",
        "_transactional",
        "active",
        "custom_loop",
        "dead_lettered",
        "draining",
        "failed_attempts",
        "finished",
        "forwarded",
        "idle",
        "in_progress",
        "node",
        "on_demand",
        "outputs_staged",
        "pending_shutdowns",
        "predecessors",
        "processed",
        "received",
        "restarts",
        "retried",
        "run",
        "shutdown_sources",
        "terminal_outputs",
    )

    def __init__(self, node: Node, run: RunContext, shutdown_sources: tuple[str, ...]) -> None:
        self.node = node
        self.run = run
        self.shutdown_sources = shutdown_sources
        self.predecessors = tuple(s for s in shutdown_sources if s != SHUTDOWN_EXTERNAL)
        self.pending_shutdowns: set[str] | None = None  # made at the first shutdown
        self.custom_loop = type(node).go is not _default_go()
        # Workers on demand need to know of every arrival: only our own in-memory channel
        # reports them (a subclass might override send without calling ours).
        self.on_demand = not self.custom_loop and type(node.mailbox) is InMemoryChannel
        self.finished = False
        self.in_progress: list[ChannelMessage] = []  # taken from the mailbox, not yet done
        self.active = 0
        self.idle = 0
        self.draining = False
        self.received = 0
        self.processed = 0
        self.failed_attempts = 0
        self.retried = 0
        self.dead_lettered = 0
        self.forwarded = 0
        self.terminal_outputs = 0
        self.outputs_staged = 0  # outputs of durable-mailbox attempts: a new result to store
        self.restarts = 0
        self._kind = _kind_of(node.process)
        self._sync_process = self._kind is _Kind.SYNC
        edges = sorted_edges(node.edges)
        # All edges unconditional: every output takes all of them (one per target).
        self._all_edges: list[Edge] | None = (
            select_edges(edges, None) if all(e.condition is None for e in edges) else None
        )
        self._edges = edges
        # A durable mailbox acks a message and sends its outputs in one step (staged).
        self._transactional = node.mailbox._transactional

    # -- the default loop ---------------------------------------------------------------

    async def run_default_loop(self) -> None:
        """Receive and handle messages until the node drains or is stopped."""
        await self._serve(exit_when_idle=False)

    async def drain(self) -> None:
        """Handle messages until the mailbox is empty, the node drains or is stopped.

        The on-demand form of the loop: a node whose mailbox is an in-memory channel has
        no task while it has nothing to do, and the mailbox starts one (``on_arrival``)
        when a message comes. 10,000 idle nodes then cost no task and no stack.
        """
        await self._serve(exit_when_idle=True)

    def on_arrival(self) -> None:
        """A message reached the mailbox: start a worker if one more may run."""
        if self.active < self.node.config.concurrency and not (
            self.finished or self.draining or self.node._stop_flag
        ):
            self.active += 1
            self.run.start_drain(self)

    async def _serve(self, *, exit_when_idle: bool) -> None:
        node = self.node
        mailbox = node.mailbox
        until_checkpoint = _CHECKPOINT_EVERY
        while not (node._stop_flag or self.draining):
            message = mailbox._receive_ready()
            if message is None:
                if exit_when_idle and mailbox.empty():
                    return  # no await since the check: an arrival now starts a new worker
                self.idle += 1
                try:
                    message = await mailbox.receive()
                except ChannelClosed:
                    if self.run.distributed:
                        self.draining = True  # its distributed graph drained it
                    return
                finally:
                    self.idle -= 1
            if message.is_shutdown:
                if await self._on_shutdown(message):
                    return
                continue
            # self.node, not node: mypy would keep the loop condition's narrowing across
            # the await, but the flag may have been set meanwhile.
            if self.node._stop_flag and mailbox._requeue_front(message):
                return  # stopping: take no new work; the message stays for the next run
            rest = self.handle_now(message)
            if rest is not None:
                # Only awaited handling can be seen half-way by a checkpoint; the sync
                # path needs no bookkeeping.
                in_progress = self.in_progress
                in_progress.append(message)
                try:
                    await rest
                finally:
                    in_progress.remove(message)
            until_checkpoint -= 1
            if not until_checkpoint:
                # A loop that always finds work would never yield: let timers, budgets,
                # cancellation and the other nodes in.
                until_checkpoint = _CHECKPOINT_EVERY
                await checkpoint()

    async def _on_shutdown(self, message: ChannelMessage) -> bool:
        """Count a shutdown; return True when this loop should end."""
        if message._ack is not None:
            if self.run.distributed:
                await self.run.shutdown_received(self, message)
                return False  # the loops end when the graph closes the mailbox
            await self._ack(message)
        node = self.node
        if node._stop_flag or self.draining:
            return True
        metadata = message._metadata
        source = metadata.get("source_node", SHUTDOWN_EXTERNAL) if metadata else SHUTDOWN_EXTERNAL
        pending = self.pending_shutdowns
        if pending is None:
            pending = self.pending_shutdowns = set(self.shutdown_sources)
        if source not in pending:
            _log.info(
                "shutdown ignored",
                node=node.id,
                source=source,
                reason="not from a predecessor, or a second one",
                waiting_for=sorted(pending),
            )
            return False
        pending.discard(source)
        if pending:
            return False
        self.draining = True
        if self.idle:
            self.wake(self.idle)  # sibling loops blocked on the empty mailbox
        return True

    def handle_now(self, message: ChannelMessage) -> Coroutine[Any, Any, None] | None:
        """Handle a data message with plain calls when nothing needs awaiting.

        The common case, a sync ``process`` that succeeds, successors with room and no
        ack, runs without a coroutine (8% fewer instructions a hop than :meth:`handle`).
        Anything else, such as a failure to retry, a full mailbox or an ack, hands the
        rest to a coroutine, which the caller must await.

        Returns:
            ``None`` once the message is fully handled, else the coroutine that finishes it.
        """
        if not self._sync_process or message._ack is not None:
            return self.handle(message)
        node = self.node
        self.received += 1
        payload = message.payload
        if payload.__class__ is NodeMessage:
            inputs = payload
            metadata = inputs.metadata
            trace_id = metadata.get("trace_id") or inputs.id
        else:  # NodeMessage._of(message), inlined: one call less per hop
            metadata = message.metadata
            inputs = _new_object(NodeMessage)
            inputs.content = payload
            inputs._metadata = metadata
            inputs._id = message
            trace_id = metadata.get("trace_id") or message.id
        correlation = metadata.get("correlation")
        context = _new_object(ExecutionContext)
        context.inputs = inputs
        context.node = node
        context._attempt = 1
        context._started_at = monotonic()
        context._message = message
        context._outputs = None
        context._control = None
        forwarded_before = self.forwarded
        try:
            result = node.process(context)
            if (
                result.__class__ is CoroutineType
                or context._outputs is not None
                or context._control is not None
            ):
                return self.handle(message, inputs, trace_id, first=(context, result))
            if result is not None:
                waiting = self._forward(result, trace_id, None, correlation)
                if waiting:
                    return self._finish_sending(message, waiting, forwarded_before)
        except _StepFailed as failure:
            return self._step_failed(message, failure, 1)
        except Exception as error:  # noqa: BLE001 - process failing is expected
            return self.handle(message, inputs, trace_id, failed=(1, error, forwarded_before))
        self.processed += 1
        run = self.run
        run.in_flight -= 1
        run.handled += 1
        if run.watch_each_message:
            run.message_done()
        return None

    async def handle(  # noqa: PLR0912, PLR0915 - the attempt loop, kept in one piece
        self,
        message: ChannelMessage,
        inputs: NodeMessage | None = None,
        trace_id: str = "",
        *,
        first: tuple[ExecutionContext, Any] | None = None,
        failed: tuple[int, Exception, int] | None = None,
    ) -> None:
        """Process one data message: attempts, forwarding, ack, or dead-letter.

        Called by the worker loop for each message, or by :meth:`handle_now` to finish
        one it started: ``first`` is attempt 1's context and ``process`` result, still to
        be awaited or forwarded; ``failed`` is (attempt, error, forwarded count before it).

        Raises:
            BaseException: Cancellation; a message nothing was forwarded for yet goes back
                to the head of the mailbox first, so it is not lost.
        """
        node = self.node
        if inputs is None:
            self.received += 1
            payload = message.payload
            if payload.__class__ is NodeMessage:
                inputs = payload
                trace_id = inputs.metadata.get("trace_id") or inputs.id
            else:
                metadata = message.metadata
                inputs = _new_object(NodeMessage)
                inputs.content = payload
                inputs._metadata = metadata
                inputs._id = message
                trace_id = metadata.get("trace_id") or message.id
        correlation = inputs.metadata.get("correlation")
        attempt = 1
        forwarded_before = self.forwarded
        staged: list[tuple[BaseChannel, ChannelMessage]] | None = None
        try:
            while True:
                error: Exception | None = None
                if self._transactional and message._ack is not None:
                    staged = []  # this attempt's outputs, sent with the ack (commit)
                    outputs_before = self.outputs_staged
                if failed is not None:
                    attempt, error, forwarded_before = failed
                    failed = None
                else:
                    ran = first is not None  # handle_now ran process for attempt 1
                    if first is not None:
                        context, result = first
                        first = None
                    else:
                        context = _new_object(ExecutionContext)
                        context.inputs = inputs
                        context.node = node
                        context._attempt = attempt
                        context._started_at = monotonic()
                        context._message = message
                        context._outputs = None
                        context._control = None
                        result = None
                    try:
                        if ran:
                            pass
                        elif self._sync_process:
                            result = node.process(context)
                        elif self._kind is _Kind.ASYNC:
                            result = await node.process(context)
                        else:
                            await self._generate(context, trace_id, correlation, staged)
                        if result.__class__ is CoroutineType:
                            result = await result
                        outputs = [*(context._outputs or ()), *([] if result is None else [result])]
                        control = context._control
                        if control is not None and (control.cancel or control.stop):
                            await self._obey(control, message, outputs)
                            return
                        goto = control.goto if control is not None else None
                        for output in outputs:
                            waiting = self._forward(output, trace_id, goto, correlation, staged)
                            if waiting:
                                await self._send_waiting(waiting)
                        if staged is not None:
                            if control is not None and control.hold:
                                await self._send_waiting(staged)  # the ack waits: no commit
                                staged = None
                            elif not await self._commit(
                                message, staged, produced=self.outputs_staged != outputs_before
                            ):
                                break  # the lease was lost: the message is handled elsewhere
                    except _StepFailed as failure:
                        self.failed_attempts += 1
                        await self._give_up(message, failure.error, attempt, failure.phase)
                        break
                    except Exception as caught:  # noqa: BLE001 - process failing is expected
                        error = caught
                if error is not None:
                    if staged:  # this attempt's outputs are dropped with it
                        self.run.in_flight -= len(staged)
                        staged = None
                    self.failed_attempts += 1
                    policy = node.config.retry
                    if (
                        self.forwarded == forwarded_before
                        and not node._stop_flag
                        and policy.should_retry(attempt, error)
                    ):
                        self.retried += 1
                        await anyio.sleep(policy.delay(attempt))
                        attempt += 1
                        forwarded_before = self.forwarded
                        continue
                    await self._give_up(message, error, attempt, "process")
                    break
                self.processed += 1
                control = context._control
                held = control is not None and control.hold
                if not held and message._ack is not None and staged is None:
                    await self._ack(message)  # (a staged attempt was committed: acked already)
                if control is not None:
                    for released in control.release:
                        if released._ack is not None:
                            await self._ack(released)
                break
        except BaseException:
            if self.forwarded == forwarded_before:
                node.mailbox._requeue_front(message)
            raise
        self._message_done()

    async def _obey(self, control: Control, message: ChannelMessage, outputs: list[Any]) -> None:
        """Carry out cancel_graph or stop_graph, which outrank goto and the edges."""
        node = self.node
        if control.cancel is not None:
            node.mailbox._requeue_front(message)  # not processed: it waits for the next run
            self.run.request_cancel(node.id, control.cancel)
            return
        for output in outputs:  # kept as the node's result, not forwarded
            node.last_output = output.content if output.__class__ is NodeMessage else output
        self.processed += 1
        if message._ack is not None:
            await self._ack(message)
        self._message_done()
        self.run.request_stop("stopped", f"{node.id}: {control.stop}")

    async def _finish_sending(
        self,
        message: ChannelMessage,
        waiting: list[tuple[BaseChannel, ChannelMessage]],
        forwarded_before: int,
    ) -> None:
        try:
            await self._send_waiting(waiting)
        except _StepFailed as failure:
            self.failed_attempts += 1
            await self._give_up(message, failure.error, 1, failure.phase)
        except BaseException:
            if self.forwarded == forwarded_before:
                self.node.mailbox._requeue_front(message)
            raise
        else:
            self.processed += 1
        self._message_done()

    async def _step_failed(
        self, message: ChannelMessage, failure: _StepFailed, attempt: int
    ) -> None:
        self.failed_attempts += 1
        await self._give_up(message, failure.error, attempt, failure.phase)
        self._message_done()

    def _message_done(self) -> None:
        run = self.run
        run.in_flight -= 1
        run.handled += 1
        if run.watch_each_message:
            run.message_done()

    async def _generate(
        self,
        context: ExecutionContext,
        trace_id: str,
        correlation: list[str] | None,
        staged: list[tuple[BaseChannel, ChannelMessage]] | None,
    ) -> None:
        """Forward each item of a generator ``process`` as it is produced.

        A ``goto`` applies to the items after it; a ``stop_graph`` or ``cancel_graph``
        forwards nothing more (and takes effect when the attempt ends).
        """
        items = self.node.process(context)
        if self._kind is _Kind.ASYNC_GENERATOR:
            async for item in items:
                await self._forward_item(context, item, trace_id, correlation, staged)
        else:
            for item in items:
                await self._forward_item(context, item, trace_id, correlation, staged)

    async def _forward_item(
        self,
        context: ExecutionContext,
        item: Any,
        trace_id: str,
        correlation: list[str] | None,
        staged: list[tuple[BaseChannel, ChannelMessage]] | None,
    ) -> None:
        control = context._control
        if control is not None and (control.cancel or control.stop):
            return
        goto = control.goto if control is not None else None
        waiting = self._forward(item, trace_id, goto, correlation, staged)
        if waiting:
            await self._send_waiting(waiting)

    def _forward(  # noqa: PLR0912, PLR0915 - the hot path, inlined on purpose
        self,
        output: Any,
        trace_id: str,
        goto: list[Node] | None = None,
        correlation: list[str] | None = None,
        staged: list[tuple[BaseChannel, ChannelMessage]] | None = None,
    ) -> list[tuple[BaseChannel, ChannelMessage]] | None:
        """Send ``output`` along the edges it takes, without waiting where there is room.

        With ``staged`` (a durable mailbox's attempt), the sends the mailbox can commit
        with the ack are added to it instead.

        Returns:
            The sends that have to wait (a bounded mailbox is full, or has async
            observers), in edge order; ``None`` if there are none.

        Raises:
            _StepFailed: An edge condition raised, or a mailbox refused the message.
        """
        node = self.node
        if output.__class__ is NodeMessage:
            content = output.content
            extra: dict[str, Any] | None = output._metadata
        else:
            content = output
            extra = None
        node.last_output = content
        if staged is not None:
            self.outputs_staged += 1
        edges = self._all_edges
        if goto:
            edges = [Edge(node, target) for target in dict.fromkeys(goto)]
        elif edges is None:
            try:
                edges = select_edges(self._edges, content)
            except Exception as error:
                raise _StepFailed("route", error) from error
        if not edges:
            self.terminal_outputs += 1
            metadata = {**extra} if extra else {}
            metadata["trace_id"] = trace_id
            metadata["source_node"] = node.id
            self.run.terminal_output(node, NodeMessage(content, metadata))
            return None
        run = self.run
        source = node.id
        waiting = None
        if extra and "correlation" in extra:
            correlation = extra["correlation"]  # the output's own (a join pops it)
        if len(edges) > 1:  # a fan-out: its copies share a new correlation id (for joins)
            correlation = [*(correlation or ()), new_message_id()][-_CORRELATION_DEPTH:]
        for edge in edges:
            if extra:
                metadata = extra.copy()  # copy-then-set: 45% cheaper than {**extra, ...}
                metadata["trace_id"] = trace_id
                metadata["source_node"] = source
                metadata["edge"] = edge.name
            else:
                metadata = {"trace_id": trace_id, "source_node": source, "edge": edge.name}
            if correlation:
                metadata["correlation"] = correlation
            elif extra and "correlation" in metadata:
                del metadata["correlation"]  # a join popped the last id
            message = _new_object(ChannelMessage)  # inline: a constructor call per hop adds up
            message.payload = content
            message._metadata = metadata
            message._ack = None
            message.is_shutdown = False
            message._id = None
            message._pending = None
            mailbox = edge.target.mailbox
            run.in_flight += 1
            if staged is not None and node.mailbox._stages_for(mailbox):
                staged.append((mailbox, message))
            elif mailbox._offer(message):
                self.forwarded += 1
            elif waiting is None:
                waiting = [(mailbox, message)]
            else:
                waiting.append((mailbox, message))
        return waiting

    async def _send_waiting(self, waiting: list[tuple[BaseChannel, ChannelMessage]]) -> None:
        for sent, (mailbox, message) in enumerate(waiting):
            try:
                await mailbox.send(message)
            except Exception as error:
                self.run.in_flight -= len(waiting) - sent  # this one and the rest never arrive
                raise _StepFailed("forward", error) from error
            self.forwarded += 1

    async def _commit(
        self,
        message: ChannelMessage,
        staged: list[tuple[BaseChannel, ChannelMessage]],
        *,
        produced: bool,
    ) -> bool:
        """Send the staged outputs and ack ``message`` in one step; False if the lease was lost.

        ``produced``: the attempt had an output, so the node's result is stored with them
        (one that is not plain data stays in this process only).

        Raises:
            _StepFailed: An output cannot be sent (not plain data, too large).
            ChannelUnavailable: The backend could not be reached: the loop crashes and is
                restarted; the message is still held, and is handled again.
        """
        result = None
        if produced:
            # One that is not plain data is kept here only, as node.last_output.
            with contextlib.suppress(MessageEncodeError):
                result = pack(self.node.last_output, where=f"{self.node.id}{RESULT_SUFFIX}")
        try:
            await self._commit_until_reachable(message, staged, result)
        except LeaseLost as lost:
            self.run.in_flight -= len(staged)
            _log.warning("lease lost; outputs dropped", node=self.node.id, msg_id=message.id,
                         detail=str(lost))  # fmt: skip
            self._message_done()
            return False
        except (MessageEncodeError, MessageTooLarge) as error:
            self.run.in_flight -= len(staged)
            raise _StepFailed("forward", error) from error
        self.forwarded += len(staged)
        return True

    async def _commit_until_reachable(
        self,
        message: ChannelMessage,
        staged: list[tuple[BaseChannel, ChannelMessage]],
        result: bytes | None,
    ) -> None:
        """Commit; while the backend is unreachable, keep trying rather than redo the work.

        The work is done and only its commit is missing: processing the message again
        would repeat its side effects. The lease check makes a late commit safe. Gives up
        (raising) only when the node is stopping.
        """
        failures = 0
        while True:
            try:
                await self.node.mailbox._commit(message, staged, result)
            except BackendUnavailable:
                failures += 1
                if self.node._stop_flag:
                    raise
                _log.warning("commit failed: backend unreachable; trying again",
                             node=self.node.id, msg_id=message.id, failures=failures)  # fmt: skip
                await anyio.sleep(min(5.0, 0.5 * failures))
            else:
                return

    async def _give_up(
        self, message: ChannelMessage, error: Exception, attempts: int, phase: str
    ) -> None:
        await self.dead_letter(message, error, phase, attempts)
        node = self.node
        if node.config.on_error is OnError.STOP_GRAPH:
            error_type = f"{type(error).__module__}.{type(error).__qualname__}"
            self.run.request_stop("error", f"{node.id}: {error_type}: {error}")

    async def dead_letter(
        self, message: ChannelMessage, error: Exception, phase: str, attempts: int = 1
    ) -> None:
        """Send ``message``, with ``error``, to the graph's dead-letter channel.

        The letter is the message (same payload, id, ack) with ``metadata["dead_letter"]``;
        the message itself is not acked. Nodes that hold messages (joins) use it too.
        """
        node = self.node
        self.dead_lettered += 1
        error_type = f"{type(error).__module__}.{type(error).__qualname__}"
        _log.warning(
            "message dead-lettered",
            node=node.id,
            msg_id=message.id,
            phase=phase,
            error_type=error_type,
            error=str(error),
            attempts=attempts,
        )
        record = {
            "node": node.id,
            "phase": phase,
            "error_type": error_type,
            "error": str(error),
            "traceback": "".join(traceback.format_exception(error)),
            "attempts": attempts,
        }
        if self._transactional and message._ack is not None:
            try:
                if await node.mailbox._keep_dead_letter(message, record):
                    return  # kept with the mailbox, which settled the message
            except LeaseLost:
                _log.warning("lease lost; not dead-lettered here", node=node.id,
                             msg_id=message.id)  # fmt: skip
                return
        letter = message.clone(metadata={"dead_letter": record})
        await self.run.dead_letters.send(letter)

    async def _ack(self, message: ChannelMessage) -> None:
        ack = message.ack
        assert ack is not None
        try:
            await ack()
        except Exception:  # noqa: BLE001 - the work is done; a durable channel redelivers
            _log.exception("ack failed", node=self.node.id, msg_id=message.id)

    # -- waking loops -------------------------------------------------------------------

    def wake(self, count: int) -> None:
        """Put ``count`` wake-up shutdowns in the mailbox for loops blocked in receive."""
        mailbox = self.node.mailbox
        for _ in range(count):
            try:
                mailbox._wake(ChannelMessage(None, {"source_node": _WAKE}, is_shutdown=True))
            except (ChannelFull, ChannelClosed, NotImplementedError):
                return  # full: the loops are busy, not blocked; closed: they will end

    def wake_for_stop(self) -> None:
        """Wake the loops that could be blocked in receive, after ``_stop_flag`` was set."""
        self.wake(self.active if self.custom_loop else self.idle)

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
        )


def _default_go() -> Any:
    from spark_nodes.nodes.node import Node  # noqa: PLC0415 - node.py imports this module

    return Node.go
