"""One run of a graph: worker loops under supervision, shutdown, budgets, the result.

A node is *finished* once it will handle no more messages: it drained (a shutdown from each
predecessor, and its in-flight work done), or it stopped, or all its loops returned. The
run ends when every node has finished and every task it started has ended.

Nodes with the default loop and an in-memory mailbox get workers on demand (see
:meth:`NodeRuntime.drain`); the others get their ``config.concurrency`` loops for the
whole run. Both kinds are restarted by :meth:`Run._supervise` if they crash.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import sys
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import sniffio
import structlog

from spark_nodes.channels import (
    BaseChannel,
    ChannelClosed,
    ChannelFull,
    ChannelMessage,
    InMemoryChannel,
)
from spark_nodes.channels.mailbox import is_restorable
from spark_nodes.errors import GraphCancelled, GraphFailed, WiringError
from spark_nodes.graphs._distributed import Distribution
from spark_nodes.graphs._spawn import Spawner, open_spawner
from spark_nodes.graphs._ticking import (
    LOOKS_PER_LEASE,
    MemoryLedger,
    RedisLedger,
    TickLedger,
    run_ticker,
)
from spark_nodes.graphs.result import GraphResult, StopReason
from spark_nodes.nodes import Node, NodeMessage
from spark_nodes.nodes._loop import TIMERS_FIRED
from spark_nodes.nodes._runtime import CYCLE_QUIET, SHUTDOWN_EXTERNAL, NodeRuntime
from spark_nodes.nodes._supervision import ON_STOP_TIMEOUT, supervise
from spark_nodes.nodes._watch import TraceWatch
from spark_nodes.nodes.message import channel_message_of
from spark_nodes.nodes.observing import ObserverRegistry
from spark_nodes.nodes.steps import StepStore
from spark_nodes.nodes.timers import Ticker

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from spark_nodes.channels.mailbox import RestorableMailbox
    from spark_nodes.graphs._redis_backend import RedisBackend
    from spark_nodes.graphs._topology import Topology
    from spark_nodes.graphs.graph import Graph
    from spark_nodes.graphs.task import Task

_log = structlog.get_logger("spark_nodes")

_LONG_RUNNING_OUTPUTS = 1000  # a stream's results are not kept without bound
_IDLE_POLL = 0.01  # seconds between looks at a run with go() loops of their own, for wait_idle


class Run:
    """The state of one ``graph.run(task)`` or ``graph.serve()``; the nodes' :class:`RunContext`.

    In a Redis graph (``distributed``) the run hosts the ``served`` nodes only; the others
    run in other processes, and shutdown goes through Redis (see ``_distributed``).
    """

    def __init__(
        self,
        graph: Graph,
        task: Task,
        topology: Topology,
        *,
        backend: RedisBackend | None = None,
        served: set[str] | None = None,
        concurrency: int | None = None,
    ) -> None:
        self.graph = graph
        self.task = task
        self.topology = topology
        self.distributed = backend is not None
        self.concurrency = concurrency  # loops per served node, instead of their configs'
        self.wait_for_redis = 0.0  # seconds a distributed run waits for Redis at its start
        self.dead_letters: BaseChannel = graph.dead_letters
        self.one_pass = task.type == "standard"
        self.max_messages = task.budget.max_messages
        self.max_steps = sys.maxsize if task.max_steps is None else task.max_steps
        self.in_flight = 0
        self.handled = 0
        self.watch_each_message = self.one_pass or self.max_messages is not None
        self._idle_waiters: list[anyio.Event] = []
        self._left_in_redis: dict[str, int] = {}
        self.watches: dict[str, TraceWatch] = {}
        self.step_store: StepStore | None = backend.steps if backend is not None else None
        self.outputs: deque[NodeMessage] = deque(
            maxlen=None if self.one_pass else _LONG_RUNNING_OUTPUTS
        )
        self.runtimes = {
            node.id: NodeRuntime(
                node,
                self,
                topology.drain_sources(node.id),
                topology.cycle_of.get(node.id, frozenset()),
                tuple(s for s in topology.shutdown_sources[node.id] if s != SHUTDOWN_EXTERNAL),
            )
            for node in topology.nodes
            if served is None or node.id in served
        }
        # Per cycle, in memory: the nodes still waiting for shutdowns from outside it.
        self._cycles_open: dict[frozenset[str], set[str]] = {}
        if not self.distributed:
            for cycle in set(topology.cycle_of.values()):
                self._cycles_open[cycle] = {
                    node_id
                    for node_id in cycle
                    if topology.drain_sources(node_id) != (CYCLE_QUIET,)
                }
        self._cycles_closed: set[frozenset[str]] = set()
        self.backend = backend
        self.distribution = (
            None if backend is None else Distribution(backend, graph.name, topology, self.runtimes)
        )
        self.unfinished = len(self.runtimes)
        self.shutdown_reason: StopReason | None = None
        self.stop_reason: StopReason | None = None
        self.stop_detail = ""
        self.failure: tuple[str, BaseException] | None = None
        self.cancelled_by: tuple[str, str] | None = None
        self.resumed = False
        self.cancelled = False
        self.started = time.monotonic()
        self._all_finished = anyio.Event()
        self._outer: TaskGroup | None = None
        self._workers: anyio.CancelScope | None = None
        self._spawn: Spawner | None = None
        self._timers: list[tuple[float, int, Callable[[], Awaitable[None]]]] = []
        self._timer_order = itertools.count()
        self._timer_wake: anyio.Event | None = None
        # Messages scheduled in memory (context.schedule) and not sent yet, by number:
        # (the target's runtime, the message, the runtime of the node that scheduled it).
        self._scheduled: dict[int, tuple[NodeRuntime, ChannelMessage, NodeRuntime]] = {}

    # -- RunContext ---------------------------------------------------------------------

    def message_done(self) -> None:
        """A message was handled; check budgets and, in a one-pass run, completion."""
        if self.max_messages is not None and self.handled >= self.max_messages:
            self.request_stop(StopReason.BUDGET, f"max_messages={self.max_messages} reached")
        elif self.one_pass and self.in_flight == 0:
            self.begin_shutdown(StopReason.COMPLETED)

    def loop_idle(self, runtime: NodeRuntime) -> None:
        """A loop of ``runtime`` found its mailbox empty, with everything it handled settled."""
        if self._idle_waiters and self._quiet():
            self._wake_idle_waiters()
        if self._cycles_closed:
            cycle = self.topology.cycle_of.get(runtime.node.id)
            if cycle in self._cycles_closed:
                self._drain_if_quiet(cycle)

    def closed_to_input(self, runtime: NodeRuntime) -> None:
        """A node on a cycle has its shutdowns from outside: the cycle may close."""
        cycle = self.topology.cycle_of[runtime.node.id]
        waiting = self._cycles_open.get(cycle)
        if waiting is None:
            return
        waiting.discard(runtime.node.id)
        if not waiting:
            del self._cycles_open[cycle]
            self._cycles_closed.add(cycle)
            if self._outer is not None:  # (not now: the caller is handling its shutdown)
                self._outer.start_soon(self._check_cycle, cycle)

    async def _check_cycle(self, cycle: frozenset[str]) -> None:
        self._drain_if_quiet(cycle)

    def _drain_if_quiet(self, cycle: frozenset[str]) -> None:
        """If no message is left on the closed ``cycle``, shut all its nodes down."""
        runtimes = [self.runtimes[node_id] for node_id in cycle]
        # A finished node is quiet for good: what it left is in the result's `left`.
        if cycle not in self._cycles_closed or not all(r.finished or r.quiet() for r in runtimes):
            return
        self._cycles_closed.discard(cycle)
        if self._outer is not None:
            self._outer.start_soon(self._send_cycle_quiet, runtimes)

    async def _send_cycle_quiet(self, runtimes: list[NodeRuntime]) -> None:
        for runtime in runtimes:
            if not runtime.finished and not await _send_shutdown(runtime.node, source=CYCLE_QUIET):
                self._mailbox_closed(runtime)

    async def wait_idle(self) -> None:
        """Wait until every node is quiet (see :meth:`_quiet`), or the run has ended.

        Judged when a loop finds its mailbox empty. Loops of a node's own ``go()`` report
        nothing: with one in the run, it is judged every ``_IDLE_POLL`` seconds too.
        """
        if self._quiet() or self._all_finished.is_set():
            return
        idle = anyio.Event()
        self._idle_waiters.append(idle)
        try:
            if not any(runtime.custom_loop for runtime in self.runtimes.values()):
                await idle.wait()
                return
            while not idle.is_set():
                with anyio.move_on_after(_IDLE_POLL):
                    await idle.wait()
                if self._quiet():
                    return
        finally:
            if idle in self._idle_waiters:
                self._idle_waiters.remove(idle)

    def _quiet(self) -> bool:
        """Whether no message is left: mailboxes empty, nothing in hand, staged, scheduled."""
        return not self._scheduled and all(runtime.quiet() for runtime in self.runtimes.values())

    def _wake_idle_waiters(self) -> None:
        waiters, self._idle_waiters = self._idle_waiters, []
        for waiter in waiters:
            waiter.set()

    def terminal_output(self, node: Node, output: NodeMessage) -> None:
        """Keep an output that took no edge."""
        self.outputs.append(output)

    def request_stop(self, reason: str, detail: str) -> None:
        """Stop gracefully: no new messages, in-flight work gets the grace period."""
        if self.stop_reason is not None:
            return
        self.stop_reason = StopReason(reason)
        self.stop_detail = detail
        _log.info("graph stopping", graph=self.graph.name, reason=reason, detail=detail)
        for runtime in self.runtimes.values():
            runtime.stop()  # every node first, so that woken loops see it
        for runtime in self.runtimes.values():
            self.node_stopping(runtime)
        if self._outer is not None:
            self._outer.start_soon(self._cancel_after_grace)
            if self.distribution is not None:  # what was prefetched goes to others now
                self._outer.start_soon(self.distribution.release_buffered)

    def node_stopping(self, runtime: NodeRuntime) -> None:
        """The node was asked to stop: wake its loops, or finish it if idle."""
        if runtime.finished:
            return
        if runtime.on_demand:
            if runtime.active == 0:
                self._finish(runtime)
                if self._outer is not None:
                    self._outer.start_soon(self._pass_shutdown_on, runtime)
        else:
            runtime.wake_for_stop()

    def node(self, node_id: str) -> Node | None:
        """The node with this id in the run, if any."""
        runtime = self.runtimes.get(node_id)
        return None if runtime is None else runtime.node

    def request_cancel(self, node_id: str, reason: str) -> None:
        """End the run abnormally: stop, cancel what is in flight, then raise from ``run``."""
        if self.cancelled_by is None:
            self.cancelled_by = (node_id, reason)
        self.request_stop(StopReason.CANCELLED, f"{node_id}: {reason}")
        if self._workers is not None:
            self.cancelled = True
            self._workers.cancel()

    def call_later(self, delay: float, callback: Callable[[], Awaitable[None]]) -> None:
        """Await ``callback()`` in ``delay`` seconds, unless the run has ended by then.

        Timed by the event loop's clock (``anyio.current_time()``), which a virtual clock in
        tests (trio's ``MockClock``, ``looptime``) drives: a join's 30 s timeout then passes
        as soon as the run is otherwise blocked.
        """
        due = anyio.current_time() + delay
        heapq.heappush(self._timers, (due, next(self._timer_order), callback))
        if self._timer_wake is not None:
            self._timer_wake.set()
        elif self._outer is not None:
            self._timer_wake = anyio.Event()
            self._outer.start_soon(self._run_timers)

    async def schedule(
        self,
        runtime: NodeRuntime,
        target: Node | str,
        message: ChannelMessage,
        delay: float,
        once: str,
    ) -> None:
        """Send ``message`` to ``target`` in ``delay`` seconds (``context.schedule``).

        On Redis it goes to the target's delayed set now, ``once`` its idempotency key; in
        memory a timer of the run sends it (see :meth:`_send_scheduled`).

        Raises:
            WiringError: ``target`` is not a node of the graph.
        """
        node_id = target if isinstance(target, str) else target.id
        node = self.topology.by_id.get(node_id)
        if node is None or (not isinstance(target, str) and node is not target):
            raise WiringError(f"schedule: {target!r} is not a node of graph {self.graph.name!r}")
        if self.distribution is not None:
            mailbox = self.distribution.mailbox(node_id)
            message.metadata.setdefault("idempotency_key", once)
            await mailbox.send(message, delay=delay)
            return
        number = next(self._timer_order)
        self._scheduled[number] = (self.runtimes[node_id], message, runtime)
        self.in_flight += 1
        runtime.timers += 1
        self.call_later(delay, lambda: self._send_scheduled(number))

    async def _send_scheduled(self, number: int) -> None:
        """Put a scheduled message into its mailbox; maybe let its scheduler drain now."""
        if self._spawn is None:
            return  # the loops have ended: the run's end puts it in its mailbox
        scheduled = self._scheduled.pop(number, None)
        if scheduled is None:
            return
        target, message, scheduler = scheduled
        if target.mailbox.offer(message):
            self._scheduled_sent(scheduler)
        elif self._outer is not None:  # a full mailbox: not in the timers' task (it waits)
            self._outer.start_soon(self._send_scheduled_later, target, message, scheduler)

    async def _send_scheduled_later(
        self, target: NodeRuntime, message: ChannelMessage, scheduler: NodeRuntime
    ) -> None:
        try:
            await target.node.mailbox.send(message)
        except ChannelClosed as error:  # the target has ended: kept as a dead letter
            self.in_flight -= 1
            await target.dead_letter(message, error, "schedule")
        finally:
            self._scheduled_sent(scheduler)

    def _scheduled_sent(self, scheduler: NodeRuntime) -> None:
        """One timer of ``scheduler`` fired: it may drain now, if it waited for that."""
        scheduler.timers -= 1
        if scheduler.may_drain() and self._outer is not None:
            self._outer.start_soon(partial(_send_shutdown, scheduler.node, source=TIMERS_FIRED))

    async def _keep_scheduled(self) -> None:
        """The run ends: put the messages not due yet into their mailboxes (kept, early)."""
        scheduled, self._scheduled = self._scheduled, {}
        for target, message, scheduler in scheduled.values():
            scheduler.timers -= 1
            try:
                target.node.mailbox.send_nowait(message)
            except (ChannelFull, ChannelClosed) as error:  # the dead-letter channel keeps it
                await target.dead_letter(message, error, "schedule")
        if scheduled:
            _log.info("scheduled messages not due yet put in their mailboxes",
                      graph=self.graph.name, count=len(scheduled))  # fmt: skip

    def _start_tickers(self, outer: TaskGroup) -> None:
        """Start a task sending the ticks of each ticker the run hosts."""
        for runtime in self.runtimes.values():
            ticker = runtime.node
            if not isinstance(ticker, Ticker):
                continue
            ledger: TickLedger
            if self.distribution is not None:
                backend = self.distribution.backend
                mailbox = self.distribution.mailbox(ticker.id)
                lease = mailbox.visibility_timeout  # a takeover waits as long as a reclaim
                prefix = f"{backend.namespace}:{{{backend.graph}}}#"
                run = (backend.hash_key, self.distribution.epoch)
                ledger = RedisLedger(backend.redis, prefix=prefix, node_id=ticker.id,
                                     lease=lease, retry=backend.retry, run=run)  # fmt: skip
                outer.start_soon(partial(run_ticker, runtime, ledger, mailbox.send,
                                         look_every=lease / LOOKS_PER_LEASE))  # fmt: skip
            else:
                # Nothing to renew: it sleeps until the next tick (its task ends with the run).
                outer.start_soon(partial(
                    run_ticker, runtime, MemoryLedger(ticker), partial(self._tick, runtime),
                    clock=_loop_wall_clock(), look_every=math.inf))  # fmt: skip

    async def _tick(self, runtime: NodeRuntime, message: ChannelMessage) -> None:
        self.in_flight += 1
        if not runtime.mailbox.offer(message):
            await runtime.node.mailbox.send(message)

    async def _run_timers(self) -> None:
        timers = self._timers
        while timers:
            wake = self._timer_wake = anyio.Event()
            with anyio.CancelScope(deadline=timers[0][0]):  # on the loop's clock, as is `due`
                await wake.wait()
            now = anyio.current_time()
            while timers and timers[0][0] <= now:
                _, _, callback = heapq.heappop(timers)
                try:
                    await callback()
                except Exception:  # noqa: BLE001 - one timer's error must not stop the others
                    _log.exception("timer callback failed", graph=self.graph.name)
        self._timer_wake = None

    async def shutdown_received(self, node_id: str, message: ChannelMessage) -> None:
        """A distributed graph's shutdown entry reached a loop of node ``node_id``."""
        assert self.distribution is not None
        await self.distribution.shutdown_received(self.runtimes[node_id], message)

    def apply_observers(self, registry: ObserverRegistry) -> None:
        """Give each node the observers attached to it now; meter the metered ones."""
        metered = registry.metered(self.topology.by_id)
        for node_id, runtime in self.runtimes.items():
            edges = [edge.name for edge in runtime.node.edges]
            runtime.observe(registry.for_node(node_id, edges), metered=node_id in metered)
            runtime.routes.set_metered(metered)

    def reply_channel(self, trace_id: str) -> BaseChannel | None:
        """The reply stream of a Redis invoke's trace; ``None`` in memory."""
        backend = self.backend
        return None if backend is None else backend.reply_channel(trace_id)

    def start_drain(self, runtime: NodeRuntime) -> None:
        """Start an on-demand worker for ``runtime`` (``runtime.active`` counts it)."""
        assert self._spawn is not None
        self._spawn(self._supervise, runtime)

    # -- shutdown -------------------------------------------------------------------------

    def begin_shutdown(self, reason: StopReason) -> None:
        """Start a graceful drain from the source nodes (from sync code)."""
        if self.shutdown_reason is not None or self.stop_reason is not None:
            return
        self.shutdown_reason = reason
        if self._outer is not None:
            self._outer.start_soon(self._shut_down_sources)

    async def shutdown(self) -> None:
        """Start a graceful drain from the source nodes (``graph.shutdown()``)."""
        if self.shutdown_reason is not None or self.stop_reason is not None:
            return
        self.shutdown_reason = StopReason.SHUTDOWN
        await self._shut_down_sources()

    async def _shut_down_sources(self) -> None:
        if self.distribution is not None:
            await self.distribution.shut_down_sources()
            return
        for node_id in self.topology.sources:
            runtime = self.runtimes[node_id]
            if not runtime.finished and not await _send_shutdown(runtime.node, source=None):
                self._mailbox_closed(runtime)

    def _finish(self, runtime: NodeRuntime) -> None:
        runtime.report_held_logs()
        if self.distributed and runtime.draining and self.shutdown_reason is None:
            self.shutdown_reason = StopReason.SHUTDOWN  # shut down from some process
        runtime.finished = True
        self.unfinished -= 1
        if self.unfinished == 0:
            self._all_finished.set()
            self._wake_idle_waiters()  # nothing will run any more
        elif not self.distributed and runtime.node.id in self.topology.cycle_of:
            # Finished some other way (stopped, or a go() of its own that ended): it will
            # take no more input, so its cycle need not wait for its shutdowns any more.
            cycle = self.topology.cycle_of[runtime.node.id]
            if cycle in self._cycles_open:
                self.closed_to_input(runtime)  # (checks the cycle if that closes it)
            elif cycle in self._cycles_closed and self._outer is not None:
                self._outer.start_soon(self._check_cycle, cycle)

    async def _pass_shutdown_on(self, runtime: NodeRuntime) -> None:
        """Send the finished node's shutdown to its successors, whatever its loop was."""
        if self.stop_reason is not None or self.distributed:
            return  # a distributed node's finish sent it, in the same script
        node_id = runtime.node.id
        for successor_id in self.topology.drain_successors(node_id):
            successor = self.runtimes[successor_id]
            if not successor.finished and not await _send_shutdown(successor.node, source=node_id):
                self._mailbox_closed(successor)

    def _mailbox_closed(self, runtime: NodeRuntime) -> None:
        """A shutdown could not be delivered: the mailbox was closed, which ends its input.

        A dedicated loop sees the close itself (``receive`` raises once drained); an
        on-demand node may have no worker to see it, so finish it or start a last one.
        """
        if runtime.finished or not runtime.on_demand or runtime.active:
            return
        if runtime.node.mailbox.empty():
            self._finish(runtime)
            if self._outer is not None:
                self._outer.start_soon(self._pass_shutdown_on, runtime)
        else:
            runtime.on_arrival()

    # -- running --------------------------------------------------------------------------

    async def execute(self, started: Callable[[], None] | None = None) -> GraphResult:
        """Run until every node has finished and every task has ended; return the result.

        Every node's ``on_start`` is called first, its ``on_stop`` once the loops ended.
        ``started`` is called once every worker loop is started and the input sent: the
        graph takes messages from then on.

        Raises:
            GraphFailed: A worker loop crashed more often than its restart policy allows.
            GraphCancelled: A node cancelled the run.
            Exception: What a node's ``on_start`` raised (nothing was started).
        """
        await self._start_nodes()
        try:
            await self._run_loops(started)
        finally:
            why = self.stop_reason or self.shutdown_reason or "cancelled"
            for watch in self.watches.values():
                watch.end(f"the run ended ({why})")  # also when cancelled from outside
            self._wake_idle_waiters()
            with anyio.CancelScope(shield=True):
                await self._keep_scheduled()
            with anyio.CancelScope(shield=True), anyio.move_on_after(ON_STOP_TIMEOUT):
                await self._stop_nodes()
            if self.distribution is not None:  # stats: the final figures (shielded, bounded)
                await self.distribution.stats.publish_final()
            if self.step_store is not None:  # steps of committed messages (else: expiry)
                with anyio.CancelScope(shield=True), anyio.move_on_after(ON_STOP_TIMEOUT):
                    try:
                        await self.step_store.flush()
                    except Exception as flush_error:  # noqa: BLE001 - they expire; said once
                        _log.warning("steps of committed messages not deleted; they expire",
                                     graph=self.graph.name, error=repr(flush_error))  # fmt: skip
        if self.distribution is not None:
            await self.distribution.release_buffered()
            self._left_in_redis = await self.distribution.left()
        if self.task.checkpoint_path is not None:
            await self.graph.checkpoint(self.task.checkpoint_path)  # the final one
        result = self.result()
        if self.cancelled_by is not None:
            node_id, reason = self.cancelled_by
            raise GraphCancelled(reason, node_id=node_id, result=result)
        if self.failure is not None:
            node_id, error = self.failure
            raise GraphFailed(
                f"worker loop of node {node_id!r} crashed more often than its restart policy "
                f"allows ({error.__class__.__name__}: {error}); the other loops were stopped",
                node_id=node_id,
                result=result,
            ) from error
        return result

    async def _start_nodes(self) -> None:
        """Call every node's ``on_start``; if one raises, stop those started and re-raise."""
        started: list[NodeRuntime] = []
        for runtime in self.runtimes.values():
            try:
                await runtime.node.on_start()
            except BaseException:
                with anyio.CancelScope(shield=True), anyio.move_on_after(ON_STOP_TIMEOUT):
                    await self._stop_nodes(started)
                raise
            started.append(runtime)

    async def _stop_nodes(self, runtimes: list[NodeRuntime] | None = None) -> None:
        """Call ``on_stop`` of each node (all by default); log what raises."""
        for runtime in self.runtimes.values() if runtimes is None else runtimes:
            try:
                await runtime.node.on_stop()
            except Exception:  # logged: the other nodes still stop
                runtime.log.exception("on_stop failed")

    async def _run_loops(self, started: Callable[[], None] | None) -> None:
        """Start the loops, feed the input, and wait until every node has finished."""
        budget = self.task.budget
        distribution = self.distribution
        if distribution is not None:
            await distribution.start(wait_for_redis=self.wait_for_redis)
        else:
            # Messages waiting from before the run (a stopped run's, a checkpoint's, sent
            # to a mailbox directly) are in flight too: wait_idle and one-pass runs count.
            self.in_flight += sum(self._queued().values())
        async with anyio.create_task_group() as outer:
            self._outer = outer
            if distribution is not None:
                outer.start_soon(distribution.renew_leases)
                outer.start_soon(distribution.end_quiet_cycles)
                outer.start_soon(distribution.stats.run)  # stats: this process's figures
            if budget.max_seconds is not None:
                outer.start_soon(self._stop_after, budget.max_seconds)
            if self.task.idle_timeout is not None:
                outer.start_soon(self._shut_down_when_idle, self.task.idle_timeout)
            if self.task.checkpoint_every is not None:
                outer.start_soon(self._checkpoint_every, self.task.checkpoint_every)
            self._start_tickers(outer)
            with anyio.CancelScope() as workers:
                self._workers = workers
                try:
                    async with open_spawner() as spawn:
                        self._spawn = spawn
                        for runtime in self.runtimes.values():
                            self._start(runtime, spawn)
                        await self._feed(self.task.inputs)
                        if started is not None:
                            started()
                        await self._all_finished.wait()
                finally:
                    self._spawn = None
            outer.cancel_scope.cancel()  # the timers

    def _start(self, runtime: NodeRuntime, spawn: Spawner) -> None:
        node = runtime.node
        if runtime.on_demand:
            mailbox = node.mailbox
            assert isinstance(mailbox, InMemoryChannel)
            mailbox.set_arrival_callback(runtime.on_arrival, node.config.concurrency)
            for _ in range(min(mailbox.qsize(), node.config.concurrency)):
                runtime.on_arrival()  # messages left from before the run
            return
        loops = self.concurrency or node.config.concurrency
        runtime.loops = runtime.active = loops
        for _ in range(loops):
            spawn(self._supervise, runtime)

    async def _feed(self, inputs: Any) -> None:
        if inputs is None and (self.resumed or not self.one_pass):
            if self.one_pass and self.in_flight == 0:
                # A checkpoint with no message pending: no message_done() will ever come.
                self.begin_shutdown(StopReason.COMPLETED)
            return  # a long-running graph waits for graph.send; a resumed one has its work
        start = self.graph.start
        self.in_flight += 1
        message = channel_message_of(inputs)
        await start.mailbox.send(message)

    async def _supervise(self, runtime: NodeRuntime) -> None:
        """Run one worker of a node; restart it when it crashes; finish the node after."""
        if runtime.custom_loop:
            loop = runtime.node.go
        elif runtime.on_demand:
            loop = runtime.drain
        else:
            loop = runtime.run_default_loop
        try:
            await supervise(
                runtime,
                loop,
                stopping=lambda: runtime.should_stop() or self.stop_reason is not None,
                give_up=lambda error: self._crashed_too_often(runtime, error),
            )
        finally:
            runtime.active -= 1
        await self._worker_ended(runtime)

    def _crashed_too_often(self, runtime: NodeRuntime, error: Exception) -> None:
        node_id = runtime.node.id
        if self.failure is None:
            self.failure = (node_id, error)
        self.request_stop(StopReason.ERROR, f"{node_id} crashed: {error!r}")

    async def _worker_ended(self, runtime: NodeRuntime) -> None:
        """After one of a node's workers ended: maybe restart it, or finish the node."""
        node = runtime.node
        if runtime.active or runtime.finished:
            return
        if runtime.on_demand and not (
            runtime.draining or runtime.should_stop() or node.mailbox.closed
        ):
            if not node.mailbox.empty():
                runtime.on_arrival()  # a crashed worker left messages behind
            return  # idle: the next arrival starts a worker
        if runtime.draining and not runtime.drained_early:
            try:
                await runtime.drained()  # its outputs go before the shutdown passes on
            except Exception:  # logged; the shutdown still goes on
                runtime.log.exception("on_drained failed")
        self._finish(runtime)
        await self._pass_shutdown_on(runtime)

    async def _stop_after(self, seconds: float) -> None:
        await anyio.sleep(seconds)
        self.request_stop(StopReason.BUDGET, f"max_seconds={seconds} reached")

    async def _shut_down_when_idle(self, seconds: float) -> None:
        while True:
            before = self.handled
            await anyio.sleep(seconds)
            if self.handled == before:
                self.begin_shutdown(StopReason.IDLE)
                return

    async def _checkpoint_every(self, seconds: float) -> None:
        path = self.task.checkpoint_path
        assert path is not None
        while True:
            await anyio.sleep(seconds)
            try:
                await self.graph.checkpoint(path)
            except Exception:  # noqa: BLE001 - logged; the run goes on, the next may work
                _log.exception("checkpoint failed", graph=self.graph.name, path=str(path))

    async def _cancel_after_grace(self) -> None:
        await anyio.sleep(self.task.budget.grace_period)
        if self._workers is not None and self.unfinished:
            busy = sorted(i for i, runtime in self.runtimes.items() if not runtime.finished)
            _log.warning("grace period over; cancelling", graph=self.graph.name, nodes=busy)
            self.cancelled = True
            self._workers.cancel()
            while self._spawn is not None:  # until the workers' group is left
                self._spawn.cancel_all()  # again: a task may have swallowed one
                await anyio.sleep(0.05)

    def close(self) -> None:
        """Detach the run from the nodes' mailboxes (after the run ended).

        The shutdown and wake-up messages this run left in mailboxes go: they were this
        run's; the data messages stay for the next.
        """
        for runtime in self.runtimes.values():
            mailbox = runtime.node.mailbox
            if isinstance(mailbox, InMemoryChannel) and runtime.on_demand:
                mailbox.set_arrival_callback(None)
            if is_restorable(mailbox):
                restorable: RestorableMailbox = mailbox  # type: ignore[assignment]
                try:
                    queued = restorable.snapshot()
                except NotImplementedError:
                    continue
                if any(message.is_shutdown for message in queued):
                    restorable.restore([m for m in queued if not m.is_shutdown])

    def held_messages(self) -> dict[str, list[ChannelMessage]]:
        """Per hosted node, the messages its loops took and have not handled yet."""
        return {i: runtime.held_messages() for i, runtime in self.runtimes.items()}

    def result(self) -> GraphResult:
        """The result so far."""
        reason = self.stop_reason or self.shutdown_reason or StopReason.FINISHED
        return GraphResult(
            stop_reason=reason,
            detail=self.stop_detail or str(reason),
            outputs=tuple(self.outputs),
            node_stats={i: runtime.statistics() for i, runtime in self.runtimes.items()},
            dead_lettered=sum(runtime.dead_lettered for runtime in self.runtimes.values()),
            duration=time.monotonic() - self.started,
            cancelled=self.cancelled,
            results={i: self.graph.result_of(i)[1] for i in self.graph.result_ids()},
            left=self._left_in_redis if self.distributed else self._queued(),
        )

    def _queued(self) -> dict[str, int]:
        """Per node, the data messages in its in-memory mailbox (only nodes with some)."""
        left = {}
        for node_id, runtime in self.runtimes.items():
            mailbox = runtime.node.mailbox
            try:
                queued = mailbox.snapshot() if is_restorable(mailbox) else None  # type: ignore[attr-defined]
                count = (
                    sum(not m.is_shutdown for m in queued)
                    if queued is not None
                    else mailbox.qsize()
                )
            except NotImplementedError:
                continue
            if count:
                left[node_id] = count
        return left


# Per event loop: ``None`` if its clock is the monotonic clock (a real loop), else the epoch
# seconds and its clock at one instant (a virtual clock's anchor).
_clock_anchors: weakref.WeakKeyDictionary[object, tuple[float, float] | None] = (
    weakref.WeakKeyDictionary()
)


def _loop_wall_clock() -> Callable[[], float]:
    """Epoch seconds as the event loop's clock tells them (virtual in tests: ticks follow).

    On a real loop (its clock is the monotonic clock) it is the wall clock itself, so a
    step of it (an NTP sync) is followed. On a virtual one it is anchored once per event
    loop, so that the runs of one loop agree on the time: a virtual minute between two
    runs is a minute to a ticker's catch-up too. Which of the two a loop is is decided
    once, by its clock's kind: comparing two reads would flip it whenever a pause (a GC
    pause, a throttled CPU) fell between them.
    """
    loop = anyio.lowlevel.current_token().native_token
    try:
        anchor = _clock_anchors[loop]
    except KeyError:
        anchor = None if _on_the_monotonic_clock() else (time.time(), anyio.current_time())
        _clock_anchors[loop] = anchor
    if anchor is None:
        return _wall_clock
    wall, at = anchor

    def clock() -> float:
        return wall + (anyio.current_time() - at)

    return clock


def _wall_clock() -> float:
    """``time.time()``, looked up at each call (so a test can step it with monkeypatch)."""
    return time.time()


def _on_the_monotonic_clock() -> bool:
    """Whether the running event loop's clock is the real monotonic clock.

    On asyncio: the loop's ``time`` is asyncio's own (``BaseEventLoop.time``) or the loop
    is uvloop's; one that overrides it (looptime's) is virtual. On trio: the clock is
    trio's ``SystemClock`` (a private class: known by its name); ``MockClock`` or any
    other clock is virtual. Another backend is taken as virtual (its time is anchored).
    """
    library = sniffio.current_async_library()
    if library == "asyncio":
        loop = asyncio.get_running_loop()
        own = getattr(loop.time, "__func__", None) is asyncio.BaseEventLoop.time
        return own or type(loop).__module__.startswith("uvloop")
    if library == "trio":
        import trio  # noqa: PLC0415 - only on trio

        return type(trio.lowlevel.current_clock()).__name__ == "SystemClock"
    return False


async def _send_shutdown(node: Node, *, source: str | None) -> bool:
    """Send a shutdown into the node's mailbox; False if the mailbox is closed."""
    metadata = None if source is None else {"source_node": source}
    try:
        await node.mailbox.send(ChannelMessage(None, metadata, is_shutdown=True))
    except ChannelClosed:
        return False
    return True
