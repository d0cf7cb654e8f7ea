"""Nodes as actors: a node's default loop on its own mailbox, without a graph.

A node runs as an actor for the duration of ``async with node.open_actor() as actor:``,
or as a task (``task_group.start_soon(node.go)``): its ``config.concurrency`` worker loops
take what arrives in its mailbox, call ``process``, forward each output to the mailboxes
of the nodes it is wired to (``a >> b``: ``b``'s mailbox, whether ``b`` is an actor too or
not running yet) and ack each message after forwarding. A
failing ``process`` is retried per ``config.retry``, then dead-lettered to the actor's
dead-letter channel (or sent along its error routes, ``a.on_error() >> handler``, to the
handler's mailbox); the actor goes on.

Talking to an actor (Pykka's two verbs):

- ``await node.tell(x)`` puts ``x`` in the mailbox and returns (fire-and-forget).
- ``await node.ask(x, timeout=...)`` puts ``x`` in the mailbox and returns what
  ``process`` produced for it, once the actor has handled it.

The actor ends on a shutdown message in its mailbox (``actor.shutdown()``, leaving the
``open_actor`` block, or a shutdown passed on by a node wired to it), after handling
everything that came before it; or when it is stopped (``node.stop()``, or ``process``
calling ``context.stop_graph()``). It then passes a shutdown on to each node it is wired
to, as a graph does, so a chain of actors ends from its head.

The pieces: :class:`_ActorRun` is the run the node's
:class:`~spark_nodes.nodes._runtime.NodeRuntime` belongs to (its dead letters, stop
requests, timers, the traces ``ask`` follows); :class:`Actor` is the user's handle.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

import anyio
import structlog
from anyio.abc import TaskStatus

from spark_nodes.channels import (
    BaseChannel,
    ChannelClosed,
    ChannelFull,
    ChannelMessage,
    InMemoryChannel,
)
from spark_nodes.channels.mailbox import is_restorable
from spark_nodes.channels.message import new_message_id
from spark_nodes.errors import GraphCancelled, GraphFailed, InvokeFailed, InvokeTimeout, WiringError
from spark_nodes.nodes._handling import Kind
from spark_nodes.nodes._loop import TIMERS_FIRED, WAKE
from spark_nodes.nodes._runtime import SHUTDOWN_EXTERNAL, NodeRuntime
from spark_nodes.nodes._supervision import ON_STOP_TIMEOUT, supervise
from spark_nodes.nodes._watch import Failure, InvokeFailure, InvokeResult, TraceWatch
from spark_nodes.nodes.message import NodeMessage, channel_message_of
from spark_nodes.nodes.node import Node, attach_runtime, detach_runtime, runtime_of

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from spark_nodes.channels.mailbox import RestorableMailbox
    from spark_nodes.nodes.statistics import NodeStatistics
    from spark_nodes.nodes.steps import StepStore

__all__ = ["Actor", "actor_of", "ask", "open_actor", "run_actor", "tell"]

_log = structlog.get_logger("spark_nodes")

_GENERATORS: Final = (Kind.SYNC_GENERATOR, Kind.ASYNC_GENERATOR)


class Actor:
    """A handle on a node running as an actor: what ``open_actor`` gives.

    Attributes:
        node: The node.
        dead_letters: Where messages the actor gave up on go (each with its error in
            ``metadata["dead_letter"]``, as in a graph): the channel given to
            ``open_actor``, or an unbounded in-memory channel of the actor's own.
    """

    __slots__ = ("_run", "dead_letters", "node")

    def __init__(self, run: _ActorRun) -> None:
        self._run = run
        self.node: Node = run.actor_node
        self.dead_letters: BaseChannel = run.dead_letters

    @property
    def running(self) -> bool:
        """Whether the actor's loops are running (from start until they all ended)."""
        return self._run.running

    async def tell(self, message: Any) -> None:
        """Put ``message`` in the actor's mailbox; see :meth:`Node.tell`.

        Raises:
            ChannelClosed: The mailbox is closed.
        """
        await tell(self.node, message)

    async def ask(
        self,
        message: Any,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - Pykka's ask, as Graph.invoke
    ) -> Any:
        """Put ``message`` in the mailbox and return what ``process`` produced for it.

        See :meth:`Node.ask`.

        Raises:
            InvokeTimeout: No answer within ``timeout`` seconds.
            InvokeFailed: The actor dead-lettered the message, or it went to the
                actor's error routes (``on_error()``).
            RuntimeError: The actor is not running, or ended before it handled the message.
            ChannelClosed: The mailbox is closed.
        """
        return await ask(self.node, message, timeout=timeout)

    async def shutdown(self) -> None:
        """Put a shutdown in the mailbox: the actor ends once it has handled what came before.

        Does not wait for the end (leaving ``open_actor`` does). A closed mailbox ends the
        actor anyway, once drained: nothing is sent then.
        """
        with contextlib.suppress(ChannelClosed):
            await self.node.mailbox.send(ChannelMessage(None, is_shutdown=True))

    def stop(self) -> None:
        """Stop the actor after the message in hand (``node.stop()``); the rest stays queued."""
        self.node.stop()

    def statistics(self) -> NodeStatistics:
        """What the actor did so far (counts since it started, and its mailbox's)."""
        return self._run.runtime.statistics()

    def __repr__(self) -> str:
        state = "running" if self._run.running else "not running"
        return f"<Actor node={self.node.id!r} {state}>"


class _ActorRuntime(NodeRuntime):
    """The runtime of a node running as an actor: dedicated loops, any shutdown counts."""

    __slots__ = ()

    def __init__(self, node: Node, run: _ActorRun) -> None:
        super().__init__(node, run, (SHUTDOWN_EXTERNAL,))
        # Dedicated loops: workers on demand need a run that starts them on arrival, and an
        # actor has one node, so an idle actor costs its few tasks only.
        self.on_demand = False

    async def on_shutdown(self, message: ChannelMessage) -> bool:
        """Count a shutdown: an actor drains on the first one, whoever sent it.

        An actor does not know who is wired to it (edges live on their source), so a
        shutdown passed on by another actor (``metadata["source_node"]``) counts as much
        as one from outside.
        """
        metadata = message.raw_metadata
        source = metadata.get("source_node", SHUTDOWN_EXTERNAL) if metadata else SHUTDOWN_EXTERNAL
        if source != WAKE and self.pending_shutdowns is None:
            self.pending_shutdowns = {source}
        return await super().on_shutdown(message)


class _AskWatch(TraceWatch):
    """Follows one asked message on its own actor: done once that actor settled it.

    Unlike a graph's trace (``graph.invoke``), the outputs' journeys on to other mailboxes
    are not waited for: the answer is what the actor itself produced.
    """

    __slots__ = ("dead_lettered", "error_routed")

    def __init__(self) -> None:
        super().__init__()
        self.error_routed = False
        self.dead_lettered = False

    def emitted(self, node_id: str, content: Any, routes: int, origin: object = None) -> None:
        """Keep an output of the asked message (the routes it took are not followed)."""
        if not self.done.is_set():
            super().emitted(node_id, content, 0, origin)

    def routed(self, failure: Failure, routes: int, origin: object = None) -> None:
        """The asked message failed, and went to the actor's error routes: no answer."""
        if not self.done.is_set():
            self.error_routed = True
            self.failures.append(failure)

    def failed(self, failure: Failure) -> None:
        """The asked message was dead-lettered (after its error routes, if it has any)."""
        if not self.done.is_set():
            self.dead_lettered = True
            if failure not in self.failures:
                self.failures.append(failure)

    def settled(self) -> None:
        """The actor handled (or dead-lettered) the asked message: the answer is known."""
        self.in_flight -= 1
        self.done.set()


class _ActorRun:
    """The run a node's runtime belongs to while the node is an actor (its RunContext).

    Owns the actor's task group (worker loops, timers), its dead letters and the traces
    ``ask`` follows. ``in_flight`` and ``handled`` are kept by the loops as in a graph;
    only ``handled`` means anything here (nobody counts what others send to the mailbox).
    """

    graph: Any = None  # not in a graph: context.graph is None, goto reaches wired nodes
    watch_each_message = False
    distributed = False
    max_steps = sys.maxsize

    def __init__(self, node: Node, dead_letters: BaseChannel | None) -> None:
        if not isinstance(node, Node):
            raise TypeError(f"only a Node runs as an actor, not {node!r}")
        if dead_letters is not None and not isinstance(dead_letters, BaseChannel):
            raise TypeError(f"dead_letters must be a channel, not {dead_letters!r}")
        self.actor_node = node
        self.dead_letters: BaseChannel = dead_letters or InMemoryChannel(
            name=f"actor:{node.id}:dead-letters"
        )
        self.in_flight = 0
        self.handled = 0
        self.watches: dict[str, TraceWatch] = {}
        self.step_store: StepStore | None = None  # an actor's steps live with each message
        self.runtime = _ActorRuntime(node, self)
        self.handle = Actor(self)
        self.running = False
        self.started = False
        self.failure: Exception | None = None
        self.cancelled_by: tuple[str, str] | None = None
        self.stop_reason: str | None = None
        self._group: TaskGroup | None = None
        self._scheduled: dict[int, tuple[Node, ChannelMessage]] = {}  # (context.schedule)
        self._numbers = itertools.count()
        self._workers: anyio.CancelScope | None = None

    # -- RunContext -----------------------------------------------------------------------

    def message_done(self) -> None:
        """Not called: ``watch_each_message`` is False (an actor has no budget to check)."""

    def loop_idle(self, runtime: NodeRuntime) -> None:
        """Nothing to do: nobody waits for an actor to be idle."""

    def closed_to_input(self, runtime: NodeRuntime) -> None:
        """Not called: an actor is on no cycle of a graph."""

    def terminal_output(self, node: Node, output: NodeMessage) -> None:
        """Keep nothing: the output is ``node.last_output``, and ``ask``'s answer."""

    def request_stop(self, reason: str, detail: str) -> None:
        """End the actor gracefully: the loops finish the message in hand, then end."""
        if self.stop_reason is None:
            self.stop_reason = reason
            _log.info("actor stopping", node=self.actor_node.id, reason=reason, detail=detail)
        self.runtime.stop()
        self.node_stopping(self.runtime)

    def start_drain(self, runtime: NodeRuntime) -> None:
        """Not called: an actor's loops are dedicated, not started on demand."""
        raise AssertionError("an actor runs dedicated loops")  # pragma: no cover

    def node_stopping(self, runtime: NodeRuntime) -> None:
        """The node was asked to stop: wake its loops blocked on the empty mailbox."""
        if self.running:
            runtime.wake_for_stop()

    def node(self, node_id: str) -> Node | None:
        """The actor's node, or a node it is wired to (what ``context.goto`` may reach)."""
        node = self.actor_node
        if node_id == node.id:
            return node
        for edge in node.edges:
            if edge.target.id == node_id:
                return edge.target
        return None

    def request_cancel(self, node_id: str, reason: str) -> None:
        """End the actor now (``context.cancel_graph``): its loops are cancelled."""
        if self.cancelled_by is None:
            self.cancelled_by = (node_id, reason)
        self.request_stop("cancelled", f"{node_id}: {reason}")
        if self._workers is not None:
            self._workers.cancel()

    def call_later(self, delay: float, callback: Callable[[], Awaitable[None]]) -> None:
        """Await ``callback()`` in ``delay`` seconds, unless the actor has ended by then."""
        if self._group is not None:
            self._group.start_soon(self._later, delay, callback)

    async def schedule(
        self,
        runtime: NodeRuntime,
        target: Node | str,
        message: ChannelMessage,
        delay: float,
        once: str,
    ) -> None:
        """Send ``message`` to the actor (or a node it is wired to) in ``delay`` seconds.

        Raises:
            WiringError: ``target`` is neither.
        """
        node_id = target if isinstance(target, str) else target.id
        node = self.node(node_id)
        if node is None or (not isinstance(target, str) and node is not target):
            raise WiringError(
                f"schedule: {target!r} is neither actor {self.actor_node.id!r} nor wired to it"
            )
        number = next(self._numbers)
        self._scheduled[number] = (node, message)
        runtime.timers += 1

        async def send() -> None:
            if self._scheduled.pop(number, None) is None:
                return  # the actor ended: it is in the mailbox already
            try:
                await node.mailbox.send(message)
            finally:
                runtime.timers -= 1
                if runtime.may_drain():
                    fired = ChannelMessage(None, {"source_node": TIMERS_FIRED}, is_shutdown=True)
                    with contextlib.suppress(ChannelClosed):
                        await self.actor_node.mailbox.send(fired)

        self.call_later(delay, send)

    async def _later(self, delay: float, callback: Callable[[], Awaitable[None]]) -> None:
        await anyio.sleep(delay)
        try:
            await callback()
        except Exception:  # noqa: BLE001 - logged; the actor goes on
            _log.exception("timer callback failed", node=self.actor_node.id)

    async def shutdown_received(self, node_id: str, message: ChannelMessage) -> None:
        """Not called: an actor is not distributed."""

    def reply_channel(self, trace_id: str) -> BaseChannel | None:
        """``None``: ``ask`` follows its message in memory."""
        return None

    # -- the actor's life -----------------------------------------------------------------

    async def serve(
        self, *, via_go: bool, task_status: TaskStatus[Actor] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the actor until its loops end: ``on_start``, the loops, shutdown, ``on_stop``.

        ``via_go``: called from ``Node.go`` itself, so the loops run the default loop
        directly (a ``go`` that wraps ``super().go()`` is running around this already).

        Raises:
            WiringError: The node is running already, as an actor or in a graph.
            GraphFailed: A worker loop crashed more often than ``config.restart`` allows.
            GraphCancelled: ``process`` called ``context.cancel_graph``.
            Exception: What ``on_start`` raised (nothing was started).
        """
        node, runtime = self.actor_node, self.runtime
        existing = runtime_of(node)
        if existing is not None:
            run = existing.run
            where = "as an actor" if isinstance(run, _ActorRun) else f"in {run.graph!r}"
            raise WiringError(
                f"node {node.id!r} is already running {where}; a node runs in one place at "
                f"a time: end that first"
            )
        attach_runtime(node, runtime)
        try:
            await node.on_start()
        except BaseException:
            detach_runtime(node)
            raise
        try:
            await self._run_loops(via_go, task_status)
        finally:
            self.running = False
            runtime.finished = True
            why = self.stop_reason or (
                "drained" if runtime.draining else "stopped" if runtime.stopping else "ended"
            )
            for watch in self.watches.values():
                watch.end(f"the actor ended ({why})")
            with anyio.CancelScope(shield=True), anyio.move_on_after(ON_STOP_TIMEOUT):
                try:
                    await node.on_stop()
                except Exception:  # noqa: BLE001 - logged, as a graph does
                    _log.exception("on_stop failed", node=node.id)
            detach_runtime(node)
            self._remove_shutdowns()
        if self.cancelled_by is not None:
            node_id, reason = self.cancelled_by
            raise GraphCancelled(reason, node_id=node_id)
        if self.failure is not None:
            error = self.failure
            raise GraphFailed(
                f"worker loop of actor {node.id!r} crashed more often than its restart policy "
                f"allows ({error.__class__.__name__}: {error}); the actor ended",
                node_id=node.id,
            ) from error

    async def _run_loops(self, via_go: bool, task_status: TaskStatus[Actor]) -> None:
        """Start the loops, wait for them all; then drain out and pass the shutdown on."""
        runtime = self.runtime
        loops = self.actor_node.config.concurrency
        async with anyio.create_task_group() as group:
            self._group = group  # the timers (call_later) run here
            with anyio.CancelScope() as workers:
                self._workers = workers
                async with anyio.create_task_group() as workers_group:
                    runtime.loops = runtime.active = loops
                    for _ in range(loops):
                        workers_group.start_soon(self._supervise, via_go)
                    self.running = self.started = True
                    task_status.started(self.handle)
            self.running = False
            self._group = None  # no new timers
            with anyio.CancelScope(shield=True):
                await self._keep_scheduled()
            if self.cancelled_by is None:
                if runtime.draining:
                    try:
                        await runtime.drained()  # its outputs go before the shutdown passes on
                    except Exception:  # noqa: BLE001 - logged; the shutdown still goes on
                        _log.exception("on_drained failed", node=self.actor_node.id)
                await self._pass_shutdown_on()
            group.cancel_scope.cancel()  # the timers left

    async def _keep_scheduled(self) -> None:
        """The loops ended: put what is scheduled and not due yet into its mailbox now."""
        scheduled, self._scheduled = self._scheduled, {}
        for node, message in scheduled.values():
            self.runtime.timers -= 1
            try:
                node.mailbox.send_nowait(message)
            except (ChannelFull, ChannelClosed) as error:  # the dead letters keep it
                await self.runtime.dead_letter(message, error, "schedule")
        if scheduled:
            _log.info("scheduled messages not due yet put in their mailboxes",
                      node=self.actor_node.id, count=len(scheduled))  # fmt: skip

    async def _supervise(self, via_go: bool) -> None:
        """Run one worker loop; restart it when it crashes, per ``config.restart``."""
        node, runtime = self.actor_node, self.runtime
        loop = node.go if runtime.custom_loop and not via_go else runtime.run_default_loop
        try:
            await supervise(runtime, loop, stopping=runtime.should_stop, give_up=self._give_up)
        finally:
            runtime.active -= 1

    def _give_up(self, error: Exception) -> None:
        if self.failure is None:
            self.failure = error
        self.request_stop("error", f"{self.actor_node.id} crashed: {error!r}")

    async def _pass_shutdown_on(self) -> None:
        """Send a shutdown to each node the actor is wired to (each once, never itself)."""
        node = self.actor_node
        seen = {id(node)}
        for edge in node.edges:
            target = edge.target
            if id(target) in seen:
                continue
            seen.add(id(target))
            shutdown = ChannelMessage(None, {"source_node": node.id}, is_shutdown=True)
            with contextlib.suppress(ChannelClosed):  # a closed one ends its node's input
                await target.mailbox.send(shutdown)

    def _remove_shutdowns(self) -> None:
        """Drop the shutdowns and wake-ups left in the mailbox: they were for this actor.

        (Sent after it had drained, by a second node wired to it, say.) The data messages
        stay for the next start.
        """
        mailbox = self.actor_node.mailbox
        if not is_restorable(mailbox):
            return
        restorable: RestorableMailbox = mailbox  # type: ignore[assignment]
        try:
            queued = restorable.snapshot()
        except NotImplementedError:
            return
        if any(message.is_shutdown for message in queued):
            restorable.restore([message for message in queued if not message.is_shutdown])


# -- the entry points -------------------------------------------------------------------


def actor_of(node: Node) -> Actor | None:
    """The handle of ``node`` while it runs as an actor (also when started with ``go()``).

    Returns:
        The :class:`Actor`, or ``None`` if the node is not running as one.
    """
    runtime = runtime_of(node)
    run = None if runtime is None else runtime.run
    return run.handle if isinstance(run, _ActorRun) else None


async def run_actor(node: Node) -> None:
    """Run ``node`` as an actor until it ends: what ``node.go()`` does outside a graph.

    Runs in the calling task (its loops and timers in a task group of its own). Messages
    the actor gives up on go to a dead-letter channel of its own (see :func:`actor_of`).

    Raises:
        WiringError: The node is running already, as an actor or in a graph.
        GraphFailed: A worker loop crashed more often than ``config.restart`` allows.
        GraphCancelled: ``process`` called ``context.cancel_graph``.
        Exception: What ``on_start`` raised.
    """
    await _ActorRun(node, None).serve(via_go=True)


@contextlib.asynccontextmanager
async def open_actor(
    node: Node, *, dead_letters: BaseChannel | None = None
) -> AsyncIterator[Actor]:
    """Run ``node`` as an actor for the duration of an ``async with`` block.

    The block is entered once ``on_start`` has run and the loops are started, so ``tell``
    and ``ask`` work at once. Leaving the block normally puts a shutdown in the mailbox
    and waits for the actor to end: what was told before is handled first. If the block
    raises, the actor is cancelled (``on_stop`` still runs) and the error propagates. If
    the actor fails while the block runs (``GraphFailed``, ``GraphCancelled``), the block
    is cancelled and that error is raised, unwrapped.

    Args:
        node: The node.
        dead_letters: Where messages the actor gives up on go; an unbounded in-memory
            channel of its own when omitted (``actor.dead_letters``).

    Raises:
        WiringError: The node is running already, as an actor or in a graph.
        GraphFailed: A worker loop crashed more often than ``config.restart`` allows.
        GraphCancelled: ``process`` called ``context.cancel_graph``.
        TypeError: ``node`` is not a node, or ``dead_letters`` not a channel.
        Exception: What ``on_start`` raised (nothing was started).
    """
    run = _ActorRun(node, dead_letters)
    failure: list[BaseException] = []

    async def serve_and_keep_failure(*, task_status: TaskStatus[Actor]) -> None:
        try:
            await run.serve(via_go=False, task_status=task_status)
        except Exception as error:
            if not run.started:
                raise  # before it started: group.start raises it
            failure.append(error)  # raised unwrapped, after the task group
            group.cancel_scope.cancel()  # the body: the actor is over

    # Errors are kept and raised after the task group, which would wrap them in a group.
    async with anyio.create_task_group() as group:
        try:
            actor: Actor = await group.start(serve_and_keep_failure)
        except Exception as error:  # noqa: BLE001 - raised after the task group
            failure.append(error)  # it did not start (running elsewhere, on_start...)
        else:
            try:
                yield actor
            except Exception as error:  # noqa: BLE001 - raised after the task group
                failure.append(error)
                group.cancel_scope.cancel()  # the body failed: cancel the actor
            else:
                if run.running:
                    await actor.shutdown()
    if failure:
        raise failure[0]


async def tell(node: Node, message: Any) -> None:
    """Put ``message`` in ``node``'s mailbox (what ``node.tell`` does).

    Allowed before the actor starts, and after it ended: the mailbox holds the message
    for the next start (a bounded, full mailbox makes ``tell`` wait for room).

    Raises:
        RuntimeError: The node runs in a graph (send with ``graph.send`` there).
        ChannelClosed: The mailbox is closed.
    """
    runtime = runtime_of(node)
    if runtime is not None and not isinstance(runtime.run, _ActorRun):
        raise RuntimeError(
            f"{node!r} runs in {runtime.run.graph!r}: send to it with graph.send"
            f"({node.id!r}, ...), or run it on its own with node.open_actor()"
        )
    await node.mailbox.send(channel_message_of(message))


async def ask(
    node: Node,
    message: Any,
    *,
    timeout: float | None = None,  # noqa: ASYNC109 - Pykka's ask, as Graph.invoke
) -> Any:
    """Put ``message`` in ``node``'s mailbox; return what ``process`` produced for it.

    What ``node.ask`` does: see there.

    Raises:
        InvokeTimeout: No answer within ``timeout`` seconds.
        InvokeFailed: The actor dead-lettered the message, or it went to the actor's
            error routes (``on_error()``).
        RuntimeError: ``node`` is not running as an actor, or ended before it handled the
            message.
        ChannelClosed: The mailbox is closed.
    """
    runtime = runtime_of(node)
    run = None if runtime is None else runtime.run
    if run is not None and not isinstance(run, _ActorRun):
        raise RuntimeError(
            f"{node!r} runs in {run.graph!r}, not as an actor: ask its graph with "
            f"graph.invoke(...), or run the node on its own with node.open_actor()"
        )
    if run is None or not run.running:
        raise RuntimeError(
            f"{node!r} is not running as an actor{'' if run is None else ' any more'}: ask "
            f"needs a running actor to answer; start it with `async with node.open_actor():` "
            f"(or `task_group.start_soon(node.go)`, and ask once it runs)"
        )
    trace = new_message_id()
    asked = channel_message_of(message, {"trace_id": trace}, id=trace)
    watch = _AskWatch()
    run.watches[trace] = watch
    started = time.monotonic()
    try:
        with anyio.fail_after(timeout):
            await node.mailbox.send(asked)
            await watch.done.wait()
    except TimeoutError:
        raise InvokeTimeout(
            f"{node!r} did not answer within {timeout} s: the message is still in its "
            f"mailbox or being handled (it goes on; nothing waits for it)",
            in_flight=1,
        ) from None
    finally:
        del run.watches[trace]
    if watch.ended is not None:
        raise RuntimeError(f"{node!r}: {watch.ended} before it handled the asked message")
    contents = [content for _, content in watch.produced]
    if watch.failures:
        failures = tuple(InvokeFailure(*failure) for failure in watch.failures)
        first = failures[0]
        result = InvokeResult(
            tuple(NodeMessage(content) for content in contents),
            failures,
            time.monotonic() - started,
        )
        why = f"({first.phase}: {first.error_type}: {first.error})"
        if not watch.error_routed:
            text = f"{node!r} dead-lettered the asked message {why}"
        else:
            text = f"{node!r} failed on the asked message {why}; it went to its error routes"
        if watch.dead_lettered:
            text += "; it is in the actor's dead letters"
        raise InvokeFailed(text, result=result)
    if run.runtime.kind in _GENERATORS:
        return contents
    if not contents:
        return None
    return contents[0] if len(contents) == 1 else contents
