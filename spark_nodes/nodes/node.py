"""``Node``: a long-running actor with a mailbox, wired to others with ``>>``."""

from __future__ import annotations

import dis
import inspect
import itertools
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from spark_nodes.channels import BaseChannel, ChannelMessage, InMemoryChannel
from spark_nodes.errors import WiringError
from spark_nodes.nodes.config import NodeConfig
from spark_nodes.nodes.edges import (
    OTHERWISE_PRIORITY,
    Condition,
    Edge,
    EdgeBuilder,
    ErrorRoute,
    Otherwise,
    check_condition,
    connect_all,
    select_edges,
    sorted_edges,
    sources_of,
    targets_of,
)

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from spark_nodes.nodes._runtime import NodeRuntime
    from spark_nodes.nodes.actor import Actor
    from spark_nodes.nodes.context import ExecutionContext

__all__ = ["NO_OUTPUT", "Node"]

_numbers: defaultdict[str, itertools.count[int]] = defaultdict(lambda: itertools.count(1))
_wiring_changes = itertools.count(1)
_wiring = 0  # bumped by every new edge: a graph's topology is computed again after it
NO_OUTPUT: Any = object()
"""``node.last_output`` until the node has produced an output."""
_DEFAULT_CONFIG = NodeConfig()  # frozen, so every node without a config can share it
# How CPython loads the attribute of super(): LOAD_METHOD/LOAD_ATTR up to 3.11, then
# LOAD_SUPER_ATTR (LOAD_ATTR again when the compiler cannot specialise the call).
_ATTRIBUTE_LOADS: Final = frozenset({"LOAD_ATTR", "LOAD_METHOD", "LOAD_SUPER_ATTR"})


class Node:
    """An actor: it owns a mailbox and handles what arrives in it, one message at a time.

    Override :meth:`process` (sync or async; return the output, ``None`` for none, or be a
    generator to emit several) and let the default :meth:`go` loop do the rest, or
    override :meth:`go` for a loop of your own. Wire nodes with ``>>`` and run them in a
    :class:`~spark_nodes.graphs.Graph`, or run a node on its own as an actor
    (:meth:`open_actor`) and talk to it with :meth:`tell` and :meth:`ask`.

    Attributes a subclass must not reuse for something else: ``id``, ``mailbox``,
    ``config``, ``edges``, ``state``, ``last_output``, ``_stop_flag`` and ``_runtime``;
    nor the framework methods (``tell``, ``ask``, ``open_actor``, ``connect``, ``on``,
    ``otherwise``, ``on_error``, ``stop``, ``get_next_nodes``).

    Args:
        id: The node's id, unique within a graph; ``"{ClassName}-{n}"`` when omitted (n
            counts per class, so the same program numbers its nodes the same way).
        mailbox: The channel this node receives from. Used as given in every run mode;
            a bounded :class:`InMemoryChannel` named ``node:{ClassName}:{id}`` when omitted.
        config: The node's :class:`NodeConfig`.

    Raises:
        TypeError: ``id`` is not a non-empty str, ``mailbox`` is not a channel or
            ``config`` is not a :class:`NodeConfig`.
    """

    # Slots keep a plain node small (10,000-node graphs); "__dict__" keeps subclasses and
    # instances free to add attributes, with the dict created only when one does.
    __slots__ = (
        "__dict__",
        "__weakref__",
        "_runtime",
        "_stop_flag",
        "config",
        "edges",
        "id",
        "last_output",
        "mailbox",
        "state",
    )

    def __init__(
        self,
        *,
        id: str | None = None,
        mailbox: BaseChannel | None = None,
        config: NodeConfig | None = None,
    ) -> None:
        cls = type(self).__name__
        if id is None:
            id = f"{cls}-{next(_numbers[cls])}"
        elif not isinstance(id, str) or not id:
            raise TypeError(f"node id must be a non-empty str, not {id!r}")
        if config is None:
            config = _DEFAULT_CONFIG
        elif not isinstance(config, NodeConfig):
            raise TypeError(f"config must be a NodeConfig, not {type(config).__name__}")
        if mailbox is None:
            mailbox = InMemoryChannel(maxsize=config.mailbox_maxsize, name=f"node:{cls}:{id}")
        elif not isinstance(mailbox, BaseChannel):
            raise TypeError(f"mailbox must be a BaseChannel, not {type(mailbox).__name__}")
        self.id: str = id
        self.config: NodeConfig = config
        self.mailbox: BaseChannel = mailbox
        self.edges: list[Edge] = []
        self.state: dict[str, Any] = {}
        self.last_output: Any = NO_OUTPUT
        self._stop_flag = False
        self._runtime: NodeRuntime | None = None

    # -- the user hooks -----------------------------------------------------------------

    def process(self, context: ExecutionContext) -> Any:
        """Handle one message; return the output to forward.

        Override it, as ``def`` or ``async def``. Return ``None`` to forward nothing, a
        value or a :class:`NodeMessage` to forward one output, or make it a generator (sync
        or async) to forward each item as it is produced. Raise to fail the attempt: the
        message is retried per ``config.retry``, then dead-lettered.

        Runs in a worker loop task; a sync ``process`` that blocks blocks the event loop
        (move blocking work to a thread with ``anyio.to_thread.run_sync``).

        The default forwards its input unchanged, so a plain ``Node()`` is a relay.
        """
        return context.inputs

    async def go(self) -> None:
        """The worker loop: receive, process, forward, ack, until shutdown or stop.

        Runs in a task of the graph that runs the node (``config.concurrency`` of them).
        A failing ``process`` never ends the loop (retry, then dead-letter). The loop ends
        once the node has received a shutdown from each predecessor (or from outside, for
        a node without predecessors) and its in-flight work is done, or when the graph
        stops it. Override it for a loop of your own: the graph restarts it if it raises
        (``config.restart``) and, once it returns, passes a shutdown on to the node's
        successors for it. An override that only wraps this loop (``await super().go()``
        with logging around it, say) is still the default loop: it runs in one-pass runs
        too (see :func:`runs_default_loop`).

        Called outside a graph (``task_group.start_soon(node.go)``), the default loop
        runs the node as an actor on its own mailbox until a shutdown or a stop ends it:
        see :meth:`open_actor`, which does the same for the length of a block.

        Raises:
            WiringError: Outside a graph: the node is running already (as an actor).
            GraphFailed: Outside a graph: a worker loop crashed more often than
                ``config.restart`` allows.
            GraphCancelled: Outside a graph: ``process`` called ``context.cancel_graph``.
        """
        runtime = self._runtime
        if runtime is None:
            from spark_nodes.nodes.actor import run_actor  # noqa: PLC0415 - it imports us

            await run_actor(self)
            return
        await runtime.run_default_loop()

    async def tell(self, message: Any) -> None:
        """Put ``message`` in the node's mailbox and return: fire-and-forget (Pykka's tell).

        For a node running as an actor (:meth:`open_actor`, or ``go()`` as a task). Allowed
        before the actor starts and after it ended too: the mailbox holds the message for
        the next start (so ``tell`` right after ``task_group.start_soon(node.go)`` is safe).
        A bounded mailbox that is full makes ``tell`` wait for room (backpressure).

        Args:
            message: The content (or a :class:`NodeMessage`, to set its metadata).

        Raises:
            RuntimeError: The node runs in a graph: send with ``graph.send`` there.
            ChannelClosed: The mailbox is closed.
        """
        from spark_nodes.nodes.actor import tell  # noqa: PLC0415 - it imports us

        await tell(self, message)

    async def ask(
        self,
        message: Any,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - Pykka's ask, as Graph.invoke
    ) -> Any:
        """Put ``message`` in the mailbox; return what ``process`` produced for it (Pykka's ask).

        Returns once the actor has handled the message (its outputs are forwarded and it
        is acked), with the output ``process`` produced: ``None`` if it produced none, and
        for a generator ``process`` the list of its items (a ``process`` that also used
        ``context.emit``: the list of its outputs). It does not wait for the nodes the
        outputs went to.

        Args:
            message: The content (or a :class:`NodeMessage`, to set its metadata).
            timeout: Seconds to wait for the answer (the wait for room in a full mailbox
                included); ``None`` waits as long as it takes.

        Raises:
            InvokeTimeout: No answer within ``timeout``; the message stays in the mailbox
                and is handled later, and nothing waits for it.
            InvokeFailed: The message was dead-lettered (after its retries), or went to
                the node's error routes (``on_error()``): ``process`` produced no answer.
                The text names the error; a dead letter is in the actor's
                ``dead_letters``.
            RuntimeError: The node is not running as an actor (start it with
                :meth:`open_actor`), or the actor ended before it handled the message.
            ChannelClosed: The mailbox is closed.
        """
        from spark_nodes.nodes.actor import ask  # noqa: PLC0415 - it imports us

        return await ask(self, message, timeout=timeout)

    def open_actor(
        self, *, dead_letters: BaseChannel | None = None
    ) -> AbstractAsyncContextManager[Actor]:
        """Run the node as an actor for the length of an ``async with`` block.

        ``async with node.open_actor() as actor:`` enters once :meth:`on_start` has run
        and the worker loops are started; leaving the block puts a shutdown in the mailbox
        and waits until the actor has handled everything before it, called
        :meth:`on_drained`, passed a shutdown on to the nodes it is wired to and called
        :meth:`on_stop`. If the block raises, the actor is cancelled instead. See
        :mod:`spark_nodes.nodes.actor`.

        Args:
            dead_letters: Where messages the actor gives up on go; an unbounded in-memory
                channel of its own by default (``actor.dead_letters``).

        Raises:
            WiringError: The node is running already (as an actor or in a graph); a
                node runs in one place at a time.
            GraphFailed: A worker loop crashed more often than ``config.restart`` allows.
            GraphCancelled: ``process`` called ``context.cancel_graph``.
            TypeError: ``dead_letters`` is not a channel.
        """
        from spark_nodes.nodes.actor import open_actor  # noqa: PLC0415 - it imports us

        return open_actor(self, dead_letters=dead_letters)

    @property
    def held(self) -> list[ChannelMessage]:
        """Messages the node keeps, unacked, across calls (a join's incomplete groups).

        Checkpoints save them; the default node keeps none.
        """
        return []

    def drop_held(self) -> None:
        """Forget the held messages (a resumed checkpoint delivers them again)."""
        return

    async def on_start(self) -> None:
        """Called once per run (or actor), before the node handles its first message.

        Runs in the task that starts the run (``graph.run``, before ``open_run`` enters
        or ``task_group.start`` returns), for every node, in discovery order. If it
        raises, nothing is started: the nodes started so far get :meth:`on_stop` and the
        run raises that error. The default does nothing.
        """
        return

    async def on_drained(self) -> Any:
        """Called once the node has drained: every predecessor shut down, all work done.

        Runs in the task of the node's last worker loop, before the shutdown is passed on
        to the successors. What it returns (not ``None``) is forwarded along the node's
        edges like an output of ``process``, before the shutdown; make it an async
        generator to forward several. So a node that keeps a partial window or batch
        flushes it here. An error it raises is logged (what it yielded before is
        forwarded) and the shutdown goes on. An item it yields that cannot be forwarded
        (an edge condition raised, ``max_steps``) has its error raised at that ``yield``:
        catch it to dead-letter what the item was made of and go on. Messages the node
        held (``held``) and no longer holds afterwards are acked, after what it forwarded
        is delivered. On Redis each process serving the node calls it once it has handled
        all it took, before the node's shutdown passes on. A :class:`JoinNode`
        dead-letters its incomplete groups here. The default has nothing to flush.
        """
        return None

    async def on_stop(self) -> None:
        """Called once the node will handle no more messages in this run (or actor).

        Runs in the task that runs the graph, once every loop of the run has ended (after
        :meth:`on_drained`), whatever ended the run, also when it failed or was cancelled:
        shielded from cancellation, the ``on_stop`` hooks of all nodes get 5 s together.
        An error it raises is logged. The default does nothing.
        """
        return

    async def on_failure(self, error: BaseException) -> None:
        """Called when one of the node's worker loops crashed with ``error``.

        Runs in that loop's task, before the graph restarts the loop or, past the
        node's restart policy, fails the run. A failing ``process`` is not a crash (it is
        retried, then dead-lettered): only errors that escape the loop (from ``go()``,
        a mailbox, a commit) are. An error it raises is logged. The default does nothing.
        """
        return

    def stop(self) -> None:
        """Ask the node to stop taking messages.

        Sets ``_stop_flag``; in a running graph the node's idle loops are woken too. The
        message being processed is finished; the node's successors then get a shutdown.
        """
        self._stop_flag = True
        if self._runtime is not None:
            self._runtime.stop_requested()

    # -- wiring -------------------------------------------------------------------------

    def connect(self, target: Node, *, when: Condition | None = None, priority: int = 0) -> Edge:
        """Add an edge to ``target``; ``>>`` and ``on(...) >>`` call this.

        Connecting the same pair twice with the same condition and priority returns the
        existing edge.

        Args:
            target: The node to forward outputs to.
            when: ``None`` (always) or a predicate on the output content.
            priority: The edge's tier; see :class:`Edge`.

        Returns:
            The edge.

        Raises:
            WiringError: ``target`` is not a node, ``when`` is not callable or
                ``priority`` is not an int.
        """
        if not isinstance(target, Node):
            raise WiringError(f"{self!r} can only be connected to a Node, not {target!r}")
        if when is not None and not callable(when):
            raise WiringError(f"an edge condition must be callable, not {type(when).__name__}")
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise WiringError(f"priority must be an int, not {priority!r}")
        for edge in self.edges:
            if edge.target is target and edge.condition == when and edge.priority == priority:
                return edge
        edge = Edge(self, target, when, priority)
        self.edges.append(edge)
        _wired()
        return edge

    def on(self, condition: Condition | None = None, /, **equals: Any) -> EdgeBuilder:
        """Start a conditional edge: ``a.on(lambda out: out["ok"]) >> b``, ``a.on(kind="x") >> b``.

        ``key=value`` pairs all have to equal the output's values (``output.get(key)``
        for a mapping, else ``getattr``). Use ``.with_priority(n)`` on the result to put
        the edge in another tier.

        Raises:
            WiringError: Neither or both of a condition and pairs were given, or the
                condition is not callable.
        """
        return EdgeBuilder(self, check_condition(condition, equals))

    def otherwise(self) -> EdgeBuilder:
        """Start a fallback edge: ``a.otherwise() >> b`` is taken when no condition matched.

        Unconditional edges (``a >> c``) don't count: they are always taken.
        """
        return EdgeBuilder(self, Otherwise(), OTHERWISE_PRIORITY)

    def on_error(self, *, dead_letter: bool = False) -> EdgeBuilder:
        """Start an error route: ``a.on_error() >> handler``.

        A message this node gives up on (its retries exhausted, a ``NonRetriableError``,
        an edge condition that raised, a successor that refused its output) goes to
        ``handler`` instead of the dead-letter channel, as a
        :class:`~spark_nodes.nodes.FailedMessage` (the error, its traceback, the attempts
        and the original message), committed together with the original's ack. Outputs
        never take an error edge. With several error routes, each handler gets the
        message. If the route cannot be taken (a handler's mailbox refused it), the
        message is dead-lettered with its own error. See "Error routes" in
        ``docs/graphs.md``.

        Args:
            dead_letter: Also dead-letter the message, after routing it (the handler
                gets it first; the dead letter keeps it for an operator). If any of the
                node's error routes says so, the message is dead-lettered.

        Raises:
            WiringError: ``dead_letter`` is not a bool.
        """
        if not isinstance(dead_letter, bool):
            raise WiringError(f"on_error(dead_letter=...) takes a bool, not {dead_letter!r}")
        return EdgeBuilder(self, ErrorRoute(dead_letter=dead_letter))

    def __rshift__(self, right: Node | Sequence[Node]) -> Any:
        for target in targets_of(right, self):
            self.connect(target)
        return right

    def __rrshift__(self, left: Sequence[Node]) -> Node:
        connect_all(sources_of(left, self), self)
        return self

    def get_next_nodes(self, output: Any = NO_OUTPUT) -> list[Node]:
        """The nodes an output goes to, following edge conditions and priorities.

        Args:
            output: The output content to route; by default the node's ``last_output``
                (set by the default loop). With no output known, only unconditional
                edges count.

        Returns:
            Each target once, in edge order (never an error route's: outputs don't take
            those).

        Raises:
            Exception: Whatever an edge condition raises.
        """
        if output is NO_OUTPUT:
            output = self.last_output
        edges = sorted_edges(self.edges)
        if output is NO_OUTPUT:
            edges = [edge for edge in edges if edge.condition is None]
        return [edge.target for edge in select_edges(edges, output)]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} id={self.id!r}>"


# The runtime's side of a node: which run it is in, and its stop flag. Functions rather than
# methods, so that no name is added to what subclasses of Node may use.


def runtime_of(node: Node) -> NodeRuntime | None:
    """The runtime of the run ``node`` takes part in, or ``None``."""
    return node._runtime


def attach_runtime(node: Node, runtime: NodeRuntime) -> None:
    """Make ``node`` part of a run: its stop flag is cleared, ``stop()`` reaches the run.

    Raises:
        WiringError: The node is running already, in a graph or as an actor.
    """
    if node._runtime is not None:
        raise WiringError(
            f"node {node.id!r} is already running (in another graph or as an actor); a node "
            f"runs in one place at a time"
        )
    node._stop_flag = False
    node._runtime = runtime


def detach_runtime(node: Node) -> None:
    """The run ``node`` took part in is over."""
    node._runtime = None


def stop_flag(node: Node) -> bool:
    """Whether ``node`` was asked to stop (``stop()``, or a loop of its own set the flag)."""
    return node._stop_flag


def set_stop_flag(node: Node) -> None:
    """Ask ``node`` to stop without telling its run (the run is telling its nodes)."""
    node._stop_flag = True


def runs_default_loop(node: Node) -> bool:
    """Whether ``node`` runs the default worker loop: its ``go()`` is ``Node.go``, or wraps it.

    A ``go()`` *wraps* the default loop when it awaits ``super().go()`` (or
    ``super(Cls, self).go()``), to log entry and exit around it, say, and the ``go`` that
    call reaches runs the default loop in turn; a ``go`` decorated with a
    ``functools.wraps`` decorator is judged by the function it wraps. Such a node is still
    a ``process`` node: it may run in a one-pass (``STANDARD``) run. The test reads the
    function's bytecode, so it does not see a loop that receives from the mailbox itself
    *and* calls ``super().go()``: don't write one.
    """
    go = type(node).go
    if go is Node.go:
        return True  # the common case, without looking at any bytecode
    return _default_go_after(type(node).__mro__, 0)


def _default_go_after(mro: tuple[type, ...], start: int) -> bool:
    """Whether the ``go`` that ``mro[start:]`` resolves runs the default loop."""
    for index in range(start, len(mro)):
        go = mro[index].__dict__.get("go")
        if go is None:
            continue
        function = inspect.unwrap(go) if callable(go) else go
        if function is Node.go:
            return True
        return _awaits_super_go(function) and _default_go_after(mro, index + 1)
    return False


def _awaits_super_go(function: object) -> bool:
    """Whether the coroutine function loads ``go`` from ``super(...)``."""
    if not inspect.iscoroutinefunction(function):
        return False
    after_super = False
    for instruction in dis.get_instructions(function):
        if instruction.opname == "LOAD_GLOBAL" and instruction.argval == "super":
            after_super = True
        elif after_super and instruction.opname in _ATTRIBUTE_LOADS:
            if instruction.argval == "go":
                return True
            after_super = False  # super().other: not the loop
    return False


def _wired() -> None:
    global _wiring  # noqa: PLW0603 - one process-wide counter of wiring changes
    _wiring = next(_wiring_changes)


def wiring_version() -> int:
    """A number that changes whenever an edge is added (``>>``, ``connect``), anywhere.

    Graphs keep their topology until it changes. Code that edits ``node.edges`` by hand
    instead of ``connect`` is seen at the next run, which always reads the edges again.
    """
    return _wiring
