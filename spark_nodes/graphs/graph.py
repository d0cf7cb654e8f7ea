"""``Graph``: nodes wired with ``>>``, run as one unit."""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, Self

import anyio
import structlog
from anyio import TASK_STATUS_IGNORED
from anyio.abc import TaskStatus
from anyio.lowlevel import checkpoint

from spark_nodes._redis_client import RedisClient
from spark_nodes.channels import BaseChannel, InMemoryChannel
from spark_nodes.channels.message import new_message_id, unchecked_message
from spark_nodes.errors import GraphNotRunning, WiringError
from spark_nodes.graphs._observing import check_attachment
from spark_nodes.graphs._redis_backend import RedisBackend
from spark_nodes.graphs._run import Run
from spark_nodes.graphs._stats import StatsReader, idle_counts, memory_counts
from spark_nodes.graphs._topology import Topology
from spark_nodes.graphs.checkpoint import (
    read_checkpoint,
    restore_checkpoint,
    take_checkpoint,
    write_checkpoint,
)
from spark_nodes.graphs.inspecting import inspect_graph
from spark_nodes.graphs.invoke import InvokeResult, invoke_in_memory, invoke_on_redis
from spark_nodes.graphs.result import GraphResult
from spark_nodes.graphs.running import RunningGraph
from spark_nodes.graphs.task import Budget, Task, TaskType
from spark_nodes.nodes import Node, NodeMessage
from spark_nodes.nodes._runtime import SHUTDOWN_EXTERNAL
from spark_nodes.nodes.message import channel_message_of
from spark_nodes.nodes.node import (
    NO_OUTPUT,
    attach_runtime,
    detach_runtime,
    runs_default_loop,
    wiring_version,
)
from spark_nodes.nodes.observing import GraphObserver, ObserverRegistry, Side
from spark_nodes.state import GraphState, MemoryState, RedisState

if TYPE_CHECKING:
    from spark_nodes.graphs.inspecting import GraphInspection
    from spark_nodes.graphs.metrics import MetricsObserver
    from spark_nodes.graphs.stats import GraphStats

__all__ = ["Graph"]

_log = structlog.get_logger("spark_nodes")

_numbers = itertools.count(1)
_SENDS_PER_YIELD = 128  # as the worker loop: see _loop._CHECKPOINT_EVERY


class Graph:
    """A set of wired nodes, run together by :meth:`run`.

    ``Graph(start=node)`` takes every node reachable from ``start``; ``Graph(a, b, ...)``
    takes the nodes given (the first is the start) and everything reachable from them.
    Edges are read again at every run, so wiring may change between runs, never during.

    A running graph owns its worker loops in one task group: when :meth:`run` returns,
    nothing it started is still running.

    With ``backend="redis://..."`` the graph runs on Redis (see ``docs/redis.md``): every
    node's mailbox becomes a :class:`~spark_nodes.channels.RedisChannel` named
    ``{namespace}:{name}:{node}``, the state a :class:`~spark_nodes.state.RedisState`, and
    any number of processes may :meth:`serve` some or all of the nodes, :meth:`send` into
    the graph and :meth:`shutdown` it. The nodes and the wiring do not change.

    Args:
        *nodes: Entry nodes; the first one is the start unless ``start`` is given.
        start: The node that receives the task's input.
        name: For logs; ``"graph-{n}"`` when omitted. A Redis graph needs one, the same in
            every process: it names the graph's keys.
        dead_letters: Where messages that could not be processed go (each with its error);
            an unbounded :class:`InMemoryChannel` when omitted. Nothing reads it for you.
            In a Redis graph, messages from Redis mailboxes are dead-lettered in their
            mailbox's dead-letter stream instead (``spark-nodes dlq``).
        state: The state the nodes share (``context.graph_state``); a :class:`MemoryState`
            (a :class:`RedisState` in a Redis graph) when omitted. It outlives runs.
        backend: ``None`` (in memory), or a Redis URL or ``redis.asyncio.Redis`` client.
        namespace: A Redis graph's key prefix.
        mailbox_options: Keyword arguments for every :class:`RedisChannel` mailbox
            (``visibility_timeout``, ``max_deliveries``, ``retry``...), when the graph
            runs on Redis (now, or after :meth:`use_redis`).

    Raises:
        WiringError: No node given, something given is not a node, two nodes share an
            id, or a window (``CountWindow``, ``TimeWindow``) is on a cycle; for a Redis
            graph: no ``name``, or a node with a mailbox of its own that is not one of the
            graph's.
    """

    def __init__(
        self,
        *nodes: Node,
        start: Node | None = None,
        name: str | None = None,
        dead_letters: BaseChannel | None = None,
        state: GraphState | None = None,
        backend: str | RedisClient | None = None,
        namespace: str = "spark_nodes",
        mailbox_options: dict[str, Any] | None = None,
    ) -> None:
        entries = ([start] if start is not None else []) + [n for n in nodes if n is not start]
        if not entries:
            raise WiringError("a Graph needs nodes: Graph(start=node) or Graph(node_a, node_b)")
        for entry in entries:
            if not isinstance(entry, Node):
                raise WiringError(f"Graph takes nodes, not {entry!r}")
        if dead_letters is not None and not isinstance(dead_letters, BaseChannel):
            raise WiringError(f"dead_letters must be a channel, not {dead_letters!r}")
        if state is not None and not isinstance(state, GraphState):
            raise WiringError(f"state must be a GraphState, not {state!r}")
        self.name = name or f"graph-{next(_numbers)}"
        self.start: Node = entries[0]
        self._entries = entries
        self.dead_letters: BaseChannel = dead_letters or InMemoryChannel(
            name=f"graph:{self.name}:dead-letters"
        )
        self._run: Run | None = None
        self._last_run: tuple[Run, float] | None = None  # (the run, when it ended)
        self._observers = ObserverRegistry()
        self._stats_reader = StatsReader()
        self._known: tuple[int, Topology] | None = None  # (wiring version, its topology)
        self._sends_to_yield = _SENDS_PER_YIELD
        self._backend: RedisBackend | None = None
        self._owns_state = state is None
        self._named = name is not None
        self._mailbox_options = dict(mailbox_options) if mailbox_options else None
        self._topology()  # wiring mistakes are reported now, not at run time
        self.state: GraphState = state or MemoryState()
        self.state.bind_results(self)
        if backend is not None:
            self.use_redis(backend, namespace=namespace)

    def use_redis(
        self,
        backend: str | RedisClient,
        *,
        namespace: str = "spark_nodes",
        mailbox_options: dict[str, Any] | None = None,
    ) -> None:
        """Move the graph to Redis: what ``Graph(..., backend=...)`` does, after the fact.

        For code that defines a graph once and lets its deployment choose where it runs
        (``spark-nodes worker module:graph --redis URL`` calls it). Every node gets its
        Redis mailbox, made with ``mailbox_options`` (by default the ones the graph was
        built with); the state becomes a :class:`RedisState`, unless one was given.

        Raises:
            WiringError: The graph is running, is on Redis already, has no explicit name,
                or a node has a mailbox of its own.
        """
        if self._run is not None:
            raise WiringError(f"graph {self.name!r} is running: move it to Redis before")
        if self._backend is not None:
            raise WiringError(f"graph {self.name!r} is on Redis already")
        if not self._named:
            raise WiringError(
                "a Redis graph needs a name=..., the same in every process: it names "
                "the graph's keys in Redis"
            )
        options = self._mailbox_options if mailbox_options is None else mailbox_options
        self._backend = RedisBackend(
            backend, namespace=namespace, graph=self.name, channel_options=options
        )
        self._give_redis_mailboxes(self._topology().nodes)
        if self._owns_state:
            self.state = RedisState(self._backend.redis, namespace=namespace, graph=self.name)
            self.state.bind_results(self)

    @property
    def nodes(self) -> dict[str, Node]:
        """Every node of the graph by id, in discovery order (start first)."""
        return {node.id: node for node in self._topology().nodes}

    def result_of(self, node_id: str) -> tuple[bool, Any]:
        """``(True, latest output)`` of a node that has produced one, else ``(False, None)``."""
        node = self._topology().by_id.get(node_id)
        if node is None or node.last_output is NO_OUTPUT:
            return (False, None)
        return (True, node.last_output)

    def result_ids(self) -> list[str]:
        """The ids of the nodes that have produced an output."""
        by_id = self._topology().by_id
        return [i for i, node in by_id.items() if node.last_output is not NO_OUTPUT]

    # -- observing --------------------------------------------------------------------

    def observe(
        self,
        observer: GraphObserver | MetricsObserver,
        *,
        node: str | None = None,
        edge: str | None = None,
        side: Side = "both",
    ) -> None:
        """Call ``observer(event)`` for the events of one edge, one node, or every node.

        Before or during a run; see :mod:`spark_nodes.nodes.observing` for the events.
        ``edge="a->b"``: what is sent along that edge, received and acked at ``b``.
        ``node="b"``: its ``side``: ``"input"`` (receive, process start and end, ack),
        ``"output"`` (sends along its edges) or ``"both"``. Neither: every node, both
        sides. A :class:`~spark_nodes.graphs.metrics.MetricsObserver` meters what it is
        attached to instead of being called per event.

        Raises:
            TypeError: ``observer`` is not callable (nor a ``MetricsObserver``).
            ValueError: ``node`` or ``edge`` is not in the graph, both are given, or
                ``side`` is not one of the three.
        """
        check_attachment(self, observer, node=node, edge=edge, side=side)
        attach = getattr(observer, "attach", None)
        if attach is not None:
            attach(self, node=node, edge=edge, side=side)
        self._observers.add(observer, node=node, edge=edge, side=side)  # type: ignore[arg-type]
        if self._run is not None:
            self._run.apply_observers(self._observers)

    def unobserve(self, observer: GraphObserver | MetricsObserver) -> None:
        """Stop calling ``observer`` (every attachment of it).

        Raises:
            ValueError: ``observer`` is not attached to this graph.
        """
        if not self._observers.remove(observer):  # type: ignore[arg-type]
            raise ValueError(f"{observer!r} does not observe graph {self.name!r}")
        detach = getattr(observer, "detach", None)
        if detach is not None:
            detach(self)
        if self._run is not None:
            self._run.apply_observers(self._observers)

    @property
    def observers(self) -> list[tuple[Any, str | None, str | None, Side]]:
        """Every observer attached, in order, as ``(observer, node, edge, side)``."""
        return self._observers.attached()

    def observer_errors(self, observer: GraphObserver) -> int:
        """How many times ``observer``, attached to this graph, raised when called."""
        return self._observers.errors(observer)

    async def stats(self) -> GraphStats:
        """A snapshot of every node's and edge's figures now (see :class:`GraphStats`).

        In memory: the current run's, else the last run's (all zero if none ran). On
        Redis: summed over every worker process that serves the graph, from any process.
        Rates are since the previous ``stats()`` call (the first: over the run).

        Raises:
            ChannelUnavailable: A Redis graph's server could not be reached.
        """
        return await self.read_stats(self._stats_reader)

    async def read_stats(self, reader: StatsReader) -> GraphStats:
        """:meth:`stats` with rates since ``reader``'s previous snapshot."""
        topology = self._topology()
        if self._backend is not None:
            counts = await self._backend.stats_counts(self.name, topology)
        elif self._run is not None:
            counts = memory_counts(self._run)
        elif self._last_run is not None:
            counts = memory_counts(self._last_run[0], ended=self._last_run[1])
        else:
            counts = idle_counts(topology)
        return reader.snapshot(self.name, topology, counts)

    def to_mermaid(self, stats: GraphStats | None = None) -> str:
        """The graph as a Mermaid flowchart; with ``stats``, live counts on nodes and edges."""
        from spark_nodes.graphs.diagram import to_mermaid  # noqa: PLC0415 - rarely used

        return to_mermaid(self, stats)

    def to_dot(self, stats: GraphStats | None = None) -> str:
        """The graph in Graphviz DOT; with ``stats``, live counts on nodes and edges."""
        from spark_nodes.graphs.diagram import to_dot  # noqa: PLC0415 - rarely used

        return to_dot(self, stats)

    def to_json(self, stats: GraphStats | None = None) -> str:
        """The graph's nodes and edges as JSON; with ``stats``, their live counts."""
        from spark_nodes.graphs.diagram import to_json  # noqa: PLC0415 - rarely used

        return to_json(self, stats)

    @property
    def running(self) -> bool:
        """Whether a run is in progress."""
        return self._run is not None

    @property
    def accepting(self) -> bool:
        """Whether :meth:`send` takes messages now.

        A Redis graph always does (they wait in the mailboxes); an in-memory graph while
        it runs and is neither shutting down nor stopping.
        """
        if self._backend is not None:
            return True
        run = self._run
        return run is not None and run.stop_reason is None and run.shutdown_reason is None

    @property
    def redis(self) -> RedisClient:
        """The Redis client of a Redis graph (for your own reads next to the graph's).

        Raises:
            WiringError: The graph is in memory.
        """
        if self._backend is None:
            raise WiringError(f"graph {self.name!r} is in memory: it has no Redis client")
        return self._backend.redis

    async def inspect(self) -> GraphInspection:
        """Every mailbox of a Redis graph, read at one instant, from any process.

        Per node: length, pending entries per consumer (with idle time), lag, delayed
        messages and dead letters, all read in one atomic script call; then what each node
        sent along its error routes (``error_routed``), read with one ``HGETALL`` of the
        graph's stats hash (see :mod:`spark_nodes.graphs.inspecting`).

        Raises:
            WiringError: The graph is in memory.
            ChannelUnavailable: Redis could not be reached.
        """
        return await inspect_graph(self)

    @property
    def mailbox_options(self) -> dict[str, Any]:
        """The ``mailbox_options`` the graph was built with (a copy; empty when none)."""
        return dict(self._mailbox_options or {})

    @property
    def namespace(self) -> str | None:
        """The key namespace of a Redis graph; ``None`` for an in-memory one."""
        return None if self._backend is None else self._backend.namespace

    @property
    def distributed(self) -> bool:
        """Whether the graph runs on Redis (``backend=...``)."""
        return self._backend is not None

    async def run(
        self,
        task: Task | None = None,
        *,
        resume_from: str | os.PathLike[str] | None = None,
        task_status: TaskStatus[RunningGraph] = TASK_STATUS_IGNORED,
    ) -> GraphResult:
        """Run ``task`` (a one-pass ``Task()`` by default) and return once every loop has ended.

        ``STANDARD``: the start node processes the input, outputs flow along the edges, each
        reached node processes each message it gets, and the run ends when all of them have
        been handled. ``LONG_RUNNING``: every node runs its ``go()`` loop until
        :meth:`shutdown`, a budget, ``idle_timeout`` or a failure ends the run.

        With ``resume_from``, the graph first takes back the state and the messages of that
        checkpoint (see :meth:`checkpoint`), then runs the task; ``inputs`` are sent only
        if given.

        ``await task_group.start(graph.run, task)`` returns a :class:`RunningGraph` once
        every worker loop is started and the graph takes messages (anyio's
        ``task_status``); :meth:`open_run` wraps that in a context manager.

        Raises:
            WiringError: The wiring is wrong, a node is running in another graph, a one-pass
                run meets a node with a custom ``go()`` or ``live=True``, or the checkpoint
                names nodes this graph does not have.
            CheckpointError: ``resume_from`` is not a usable checkpoint.
            GraphFailed: A worker loop crashed more often than its restart policy allows.
            GraphCancelled: A node cancelled the run.
            RuntimeError: This graph is already running.
        """
        if task is None:
            task = Task()
        if not isinstance(task, Task):
            raise TypeError(f"run() takes a Task, not {type(task).__name__}")
        if self._backend is not None and task.type is TaskType.STANDARD:
            raise WiringError(
                f"graph {self.name!r} runs on Redis, where work has no single end: run it "
                f"with TaskType.LONG_RUNNING (or serve()) and end it with shutdown()"
            )
        return await self._execute(
            task, resume_from=resume_from, served=None, task_status=task_status
        )

    @contextlib.asynccontextmanager
    async def open_run(
        self, task: Task | None = None, *, resume_from: str | os.PathLike[str] | None = None
    ) -> AsyncIterator[RunningGraph]:
        """Run the graph for the duration of an ``async with`` block.

        ``async with graph.open_run(task) as run:`` enters once every worker loop is
        started and the graph takes messages, so ``run.send`` and ``run.invoke`` work at
        once. Leaving the block normally shuts the graph down gracefully (as
        :meth:`shutdown`) and waits for the run to end; ``run.result`` then holds the
        :class:`GraphResult`. If the block raises, the run is cancelled and the error
        propagates. If the run fails while the block is running (``GraphFailed``,
        ``GraphCancelled``), the block is cancelled and that error is raised, unwrapped.

        Args:
            task: As for :meth:`run`; a one-pass ``Task()`` by default.
            resume_from: As for :meth:`run`.

        Raises:
            GraphFailed: A worker loop crashed more often than its restart policy allows.
            GraphCancelled: A node cancelled the run.
            WiringError: See :meth:`run`.
        """
        failure: list[BaseException] = []

        async def run_and_keep_failure(*, task_status: TaskStatus[RunningGraph]) -> None:
            started = _Started(task_status)
            try:
                await self.run(task, resume_from=resume_from, task_status=started)
            except Exception as error:
                if not started.done:
                    raise  # before it started: task_group.start raises it
                failure.append(error)  # raised unwrapped, after the task group
                group.cancel_scope.cancel()  # the body: the run is over

        # Errors are kept and raised after the task group, which would wrap them in a group.
        async with anyio.create_task_group() as group:
            try:
                handle: RunningGraph = await group.start(run_and_keep_failure)
            except Exception as error:  # noqa: BLE001 - raised below, unwrapped
                failure.append(error)  # it did not start (a wiring error, on_start...)
            else:
                try:
                    yield handle
                except Exception as error:  # noqa: BLE001 - raised below, unwrapped
                    failure.append(error)
                    group.cancel_scope.cancel()  # the body failed: cancel the run
                else:
                    if handle.result is None and not failure:
                        with contextlib.suppress(GraphNotRunning):
                            await self.shutdown()
        if failure:
            raise failure[0]

    async def serve(
        self,
        nodes: Sequence[Node | str] | None = None,
        *,
        concurrency: int | None = None,
        grace_period: float = 5.0,
        wait_for_redis: float = 0.0,
    ) -> GraphResult:
        """Run the worker loops of ``nodes`` (default: all) of a Redis graph in this process.

        Other processes serve the other nodes (or the same ones: each process is one more
        consumer of their mailboxes). Returns when every served node has finished: the
        graph was shut down (:meth:`shutdown`, from any process) and each served node
        handled everything sent before that; or after :meth:`stop` (a signal, for the
        worker command), leaving the unfinished work to the other consumers: what the
        loops took but had not started is given back at once, what they were handling
        gets ``grace_period`` seconds to finish.

        Args:
            nodes: The nodes (or their ids) to serve here; all of them by default.
            concurrency: Worker loops per served node, instead of each node's
                ``config.concurrency``.
            grace_period: Seconds in-flight work may take after a stop.
            wait_for_redis: Seconds to wait for a Redis that cannot be reached at the
                start (``math.inf``: as long as it takes), logging it once; 0: raise
                ``BackendUnavailable`` after a call's retries. Once serving, an outage of
                any length is waited out (see docs/redis.md).

        Raises:
            WiringError: The graph is not a Redis graph, or a node is not in it.
            ValueError: ``concurrency`` < 1, or ``wait_for_redis`` < 0.
            BackendUnavailable: Redis could not be reached within ``wait_for_redis``.
            GraphFailed: A worker loop crashed more often than its restart policy allows.
            RuntimeError: This graph object is already running here.
        """
        if self._backend is None:
            raise WiringError(
                f"graph {self.name!r} is in memory: serve() is for Redis graphs "
                f"(Graph(..., backend='redis://...')); use run()"
            )
        if concurrency is not None and concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, not {concurrency!r}")
        if not wait_for_redis >= 0:
            raise ValueError(f"wait_for_redis must be >= 0 seconds, not {wait_for_redis!r}")
        served: set[str] | None = None
        if nodes is not None:
            served = set()
            for node in nodes:
                node_id = node if isinstance(node, str) else node.id
                if node_id not in self.nodes:
                    raise WiringError(f"graph {self.name!r} has no node {node_id!r}")
                served.add(node_id)
        task = Task(type=TaskType.LONG_RUNNING, budget=Budget(grace_period=grace_period))
        return await self._execute(
            task, resume_from=None, served=served, concurrency=concurrency,
            wait_for_redis=wait_for_redis,
        )  # fmt: skip

    async def _execute(
        self,
        task: Task,
        *,
        resume_from: str | os.PathLike[str] | None,
        served: set[str] | None,
        concurrency: int | None = None,
        wait_for_redis: float = 0.0,
        task_status: TaskStatus[RunningGraph] = TASK_STATUS_IGNORED,
    ) -> GraphResult:
        if self._run is not None:
            raise RuntimeError(f"graph {self.name!r} is already running")
        topology = self._topology(fresh=True)
        if self._backend is not None:
            self._give_redis_mailboxes(topology.nodes)
        if task.type is TaskType.STANDARD:
            for node in topology.nodes:
                if node.config.live or not runs_default_loop(node):
                    why = "is live" if node.config.live else "has a custom go() loop"
                    raise WiringError(
                        f"node {node.id!r} {why}; a STANDARD run drives nodes through "
                        f"process() once per message, so run it with TaskType.LONG_RUNNING"
                    )
        checkpoint = await read_checkpoint(resume_from) if resume_from is not None else None
        run = Run(
            self, task, topology, backend=self._backend, served=served, concurrency=concurrency
        )
        run.wait_for_redis = wait_for_redis
        run.apply_observers(self._observers)
        attached: list[Node] = []
        try:
            for node_id, runtime in run.runtimes.items():
                attach_runtime(topology.by_id[node_id], runtime)
                attached.append(topology.by_id[node_id])
            self._run = run
            if checkpoint is not None:
                await restore_checkpoint(self, checkpoint)  # (the run counts what it queued)
                run.resumed = True
            handle = RunningGraph(self)
            result = await run.execute(lambda: task_status.started(handle))
            handle.result = result
            return result
        finally:
            if self._run is run:
                self._run = None
                self._last_run = (run, time.monotonic())
                run.close()
            for node in attached:
                detach_runtime(node)

    async def checkpoint(self, path: str | os.PathLike[str]) -> None:
        """Save the graph's state and every unacked message to ``path``, atomically.

        Works while the graph runs or between runs; resume with ``run(task,
        resume_from=path)`` or :meth:`resume`. See :mod:`spark_nodes.graphs.checkpoint`
        for what is and is not saved.

        Raises:
            MessageEncodeError: A message or state value is not plain data.
            OSError: The file could not be written; the previous one is left as it was.
        """
        run = self._run
        held = run.held_messages() if run is not None else {}
        await write_checkpoint(await take_checkpoint(self, held), path)

    async def resume(self, path: str | os.PathLike[str], task: Task | None = None) -> GraphResult:
        """Run ``task`` (a one-pass run by default) from the checkpoint at ``path``.

        The default task handles the checkpoint's messages and what they cause, then ends.

        Raises:
            CheckpointError: ``path`` is not a usable checkpoint.
            WiringError: See :meth:`run`.
        """
        return await self.run(task or Task(), resume_from=path)

    async def send(
        self, node: Node | str, content: Any, *, metadata: dict[str, Any] | None = None
    ) -> None:
        """Send ``content`` into a node's mailbox while the graph runs.

        Args:
            node: The node or its id.
            content: Plain content or a :class:`NodeMessage`.
            metadata: Metadata for the message.

        A Redis graph takes messages from any process, running or not: they wait in the
        node's mailbox for a worker.

        Raises:
            GraphNotRunning: The graph is not running, or is shutting down or stopping
                (in memory); the message says which.
            WiringError: The graph has no node with that id (as :meth:`serve` and
                ``context.goto``); the message lists the ids it has.
            ChannelUnavailable: A Redis graph's server could not be reached.
        """
        node_id = node if node.__class__ is str else node.id  # type: ignore[union-attr]
        if self._backend is not None:
            target = self._topology().by_id.get(node_id)
            if target is not None:
                await target.mailbox.send(channel_message_of(content, metadata))
                return
        else:
            run = self._run
            if run is None or run.stop_reason is not None or run.shutdown_reason is not None:
                if run is None:
                    why = "is not running"
                elif run.stop_reason is not None:
                    why = f"is stopping ({run.stop_reason}: {run.stop_detail})"
                else:
                    why = f"is shutting down ({run.shutdown_reason})"
                raise GraphNotRunning(f"graph {self.name!r} {why}: it takes no messages")
            runtime = run.runtimes.get(node_id)
            if runtime is not None:
                if metadata is None and not isinstance(content, NodeMessage):
                    message = unchecked_message(content)  # the common case: nothing to check
                else:
                    message = channel_message_of(content, metadata)
                run.in_flight += 1
                if not runtime.mailbox.offer(message):  # send() without a coroutine, if it can
                    await runtime.node.mailbox.send(message)
                    return
                self._sends_to_yield -= 1
                if not self._sends_to_yield:
                    # A producer that never had to wait would never let the graph run: its
                    # sends would pile up (and the backlog's upkeep cost a fifth of the
                    # throughput).
                    self._sends_to_yield = _SENDS_PER_YIELD
                    await checkpoint()
                return
        ids = list(self._topology().by_id)
        known = ", ".join(map(repr, ids[:20])) + (f" and {len(ids) - 20} more" if ids[20:] else "")
        raise WiringError(
            f"graph {self.name!r} has no node {node_id!r}; send to one of its nodes: {known}"
        )

    async def invoke(
        self,
        inputs: Any,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the API users know (Pykka's ask)
        node: Node | str | None = None,
    ) -> InvokeResult:
        """Send one input into the running graph and return what *it* caused.

        The input goes to ``node`` (the start node by default); the call returns once
        none of the messages it caused is in flight any more (through fan-outs, joins,
        retries and ``goto``), with the outputs of that input that took no edge. Other
        inputs, and other invokes running at the same time, do not mix in. A Redis graph
        can be invoked from any process, while other processes serve it.

        While an invoke is waiting in memory, the nodes' loops leave their fast path
        (each message is followed): invoke suits requests, ``send`` suits streams. A node
        with a ``go()`` loop of its own reports nothing of what it handles: invoke graphs
        whose nodes use ``process``.

        Args:
            inputs: Plain content or a :class:`NodeMessage`.
            timeout: Seconds to wait for the complete answer; ``None`` waits for ever.
            node: Where the input goes; the start node by default.

        Returns:
            An :class:`~spark_nodes.graphs.invoke.InvokeResult`: ``.content`` is the last
            output's content, ``.outputs`` all of them.

        Raises:
            InvokeTimeout: No complete answer within ``timeout``; what is in flight goes
                on, nothing is left waiting (a Redis reply stream expires in an hour).
            InvokeFailed: A message the input caused was dead-lettered (``.result`` has
                what it did produce).
            GraphNotRunning: The graph is not running, or shutting down (in memory), or
                the run ended before the answer was complete.
            WiringError: No node has that id.
            ChannelUnavailable: A Redis graph's server could not be reached.
        """
        node_id = self.start.id if node is None else node if isinstance(node, str) else node.id
        target = self._topology().by_id.get(node_id)
        if target is None:
            raise WiringError(
                f"graph {self.name!r} has no node {node_id!r}; its nodes: {list(self.nodes)}"
            )
        if self._backend is not None:
            if not self._backend.mailboxes:
                self._give_redis_mailboxes(self._topology().nodes)
            return await invoke_on_redis(self._backend, node_id, inputs, timeout)
        run = self._run
        if run is None or not self.accepting:
            raise GraphNotRunning(f"graph {self.name!r} is not running (or is shutting down)")
        message = channel_message_of(inputs, None)
        message.metadata["trace_id"] = (
            new_message_id()
        )  # its own, even for a NodeMessage sent twice
        return await invoke_in_memory(run, target, message, timeout)

    async def wait_idle(self, *, poll_interval: float = 0.05) -> None:
        """Wait until the graph is idle: every mailbox empty and nothing in flight.

        In memory: every node's mailbox is empty and no loop has a message in hand or an
        output staged; returns at once if so, and when the run ends. A node whose ``go()``
        is a loop of its own counts as idle once its mailbox is empty (what it does with a
        message it took is its own). On Redis, from any process,
        running or not: every mailbox of the graph has nothing unread, pending or delayed
        (read every ``poll_interval`` seconds; bound the wait with ``anyio.fail_after``).
        Messages held on purpose (an open window's) count as idle, on Redis while the
        lease of the worker holding them lives.

        Raises:
            GraphNotRunning: An in-memory graph is not running.
            ChannelUnavailable: A Redis graph's server could not be reached.
        """
        backend = self._backend
        if backend is not None:
            if not backend.mailboxes:
                self._give_redis_mailboxes(self._topology().nodes)
            while not await backend.is_idle():  # noqa: ASYNC110 - Redis has no event for it
                await anyio.sleep(poll_interval)
            return
        run = self._run
        if run is None:
            raise GraphNotRunning(f"graph {self.name!r} is not running")
        await run.wait_idle()

    async def shutdown(self) -> None:
        """Drain the running graph gracefully and let :meth:`run` return.

        Sends a shutdown to each node without predecessors; every node handles what was
        sent before it, finishes its in-flight work, passes the shutdown on and ends.
        Returns once the shutdowns are sent; ``run`` returns when the graph has drained.
        Calling it again is harmless.

        A Redis graph can be shut down from any process: every worker of every node, in
        every process, handles what was sent before it and ends.

        Raises:
            GraphNotRunning: The graph is not running (in memory).
            ChannelUnavailable: A Redis graph's server could not be reached.
        """
        run = self._run
        backend = self._backend
        if backend is not None and run is None:
            epoch = await backend.epoch()
            for node_id in self._topology().sources:
                mailbox = backend.mailboxes[node_id]
                await backend.send_shutdown(mailbox, source=SHUTDOWN_EXTERNAL, epoch=epoch)
            return
        if run is None:
            raise GraphNotRunning(f"graph {self.name!r} is not running")
        await run.shutdown()

    async def aclose(self) -> None:
        """Close what the graph opened: a Redis graph's client and state. Idempotent."""
        if self._owns_state:
            closer = getattr(self.state, "aclose", None)
            if closer is not None:
                await closer()
        if self._backend is not None:
            await self._backend.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _give_redis_mailboxes(self, nodes: list[Node]) -> None:
        backend = self._backend
        assert backend is not None
        for node in nodes:
            mailbox = node.mailbox
            if backend.owns(mailbox):
                continue
            if type(mailbox) is not InMemoryChannel or mailbox.qsize():
                raise WiringError(
                    f"node {node.id!r} has a mailbox of its own ({mailbox!r}); in a Redis "
                    f"graph every node's mailbox is the graph's RedisChannel: give none "
                    f"(set RedisChannel options with mailbox_options=...)"
                )
            node.mailbox = backend.mailbox_for(node)
            if node.config.mailbox_maxsize:
                _log.warning(
                    "mailbox_maxsize is not applied on Redis", node=node.id,
                    mailbox_maxsize=node.config.mailbox_maxsize,
                    hint="a stream has no blocking bound; watch lag with spark-nodes inspect",
                )  # fmt: skip

    def stop(self, reason: str = "stopped from outside") -> None:
        """Stop the running graph gracefully, as a budget would (the result says ``stopped``).

        No new message is taken; in-flight ones get the budget's grace period.

        Raises:
            GraphNotRunning: The graph is not running.
        """
        run = self._run
        if run is None:
            raise GraphNotRunning(f"graph {self.name!r} is not running")
        run.request_stop("stopped", reason)

    def _topology(self, *, fresh: bool = False) -> Topology:
        """The graph's topology, computed again only after the wiring changed (or asked).

        Raises:
            WiringError: Two nodes share an id, or a window is on a cycle.
        """
        version = wiring_version()
        known = self._known
        if known is None or known[0] != version or fresh:
            known = self._known = (version, Topology(self._entries))
        return known[1]

    def __repr__(self) -> str:
        return f"<Graph {self.name!r} start={self.start.id!r}>"


class _Started(TaskStatus[RunningGraph]):
    """A task status that remembers whether the run has started."""

    def __init__(self, status: TaskStatus[RunningGraph]) -> None:
        self.status = status
        self.done = False

    def started(self, value: RunningGraph | None = None) -> None:
        self.done = True
        assert value is not None
        self.status.started(value)
