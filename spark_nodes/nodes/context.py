"""``ExecutionContext``: what ``process(context)`` is given for one message."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from spark_nodes.errors import WiringError
from spark_nodes.nodes._forwarding import steps_of
from spark_nodes.nodes.message import NodeMessage, channel_message_of
from spark_nodes.nodes.node import runtime_of
from spark_nodes.nodes.steps import run_step
from spark_nodes.nodes.timers import delay_until
from spark_nodes.state import RESULT_SUFFIX, GraphState

if TYPE_CHECKING:
    from datetime import datetime

    from spark_nodes.channels import ChannelMessage
    from spark_nodes.nodes.node import Node

__all__ = ["ExecutionContext", "ExecutionMetadata"]

_SCHEDULE: Final = "schedule:"  # the step a schedule is kept as (once per message)
_NUMBERED: Final = _SCHEDULE + "#"  # ... when it has no key of its own: its number in the call


class Control:
    """What a ``process`` call asked of the run: cancel, stop, goto, holds and releases.

    Cancel outranks stop, which outranks goto. ``hold``/``release`` say which messages to
    ack when the call succeeds.
    """

    __slots__ = ("cancel", "goto", "hold", "release", "stop")

    def __init__(self) -> None:
        self.cancel: str | None = None
        self.stop: str | None = None
        self.goto: list[Node] = []
        self.hold = False
        self.release: list[ChannelMessage] = []


@dataclass(frozen=True, slots=True)
class ExecutionMetadata:
    """Facts about one attempt at processing one message.

    Attributes:
        node_id: The node processing it.
        message_id: The id of the message being processed.
        trace_id: The id of the message that started this chain of messages.
        attempt: 1 for the first attempt, 2 for the first retry, ...
        max_attempts: The retry policy's limit.
        started_at: ``time.monotonic()`` when this attempt started.
    """

    node_id: str
    message_id: str
    trace_id: str
    attempt: int
    max_attempts: int
    started_at: float


class ExecutionContext:
    """The context of one ``process`` call: the input and ways to act on the graph.

    Created by the worker loop for every attempt; don't keep it after ``process`` returns.

    Extra outputs added with :meth:`emit` (see ``outputs``) are forwarded, in order,
    before the value ``process`` returns, and only if the attempt succeeds.

    Attributes:
        inputs: The message being processed (always a :class:`NodeMessage`).
        node: The node processing it.
        message: The channel message that carried the input (its ack, raw metadata), or
            ``None`` outside a worker loop.
        attempt: 1 for the first attempt at this message, 2 for the first retry, ...
        started_at: ``time.monotonic()`` when this attempt started.
        emitted: The storage behind ``outputs``: ``None`` until :meth:`emit` is called.
        control: What this call asked of the run (goto, stop, cancel, hold, release), or
            ``None``; the worker loop carries it out when ``process`` returns.
        step_names: The message and the names of the steps this attempt ran at it
            (:meth:`step`); unset until the first.
    """

    __slots__ = (
        "attempt",
        "control",
        "emitted",
        "inputs",
        "message",
        "node",
        "started_at",
        "step_names",
    )

    step_names: tuple[object, set[str]] | None

    def __init__(
        self,
        inputs: NodeMessage,
        node: Node,
        *,
        attempt: int = 1,
        started_at: float = 0.0,
        message: ChannelMessage | None = None,
    ) -> None:
        self.inputs = inputs
        self.node = node
        self.emitted: list[Any] | None = None
        self.attempt = attempt
        self.started_at = started_at
        self.message = message
        self.control: Control | None = None

    @property
    def outputs(self) -> list[Any]:
        """Extra outputs added with :meth:`emit` (see the class docstring)."""
        outputs = self.emitted
        if outputs is None:
            outputs = self.emitted = []
        return outputs

    @property
    def state(self) -> dict[str, Any]:
        """The node's own state, kept across messages (``node.state``)."""
        return self.node.state

    @property
    def graph(self) -> Any:
        """The running graph (``None`` outside one): ``send``, ``shutdown``, results."""
        runtime = runtime_of(self.node)
        return None if runtime is None else runtime.run.graph

    @property
    def graph_state(self) -> GraphState:
        """The state the graph's nodes share (``graph.state``).

        Raises:
            RuntimeError: The node is not running in a graph.
        """
        graph = self.graph
        if graph is None:
            raise RuntimeError(f"{self.node!r} is not running in a graph: it has no graph state")
        state: GraphState = graph.state
        return state

    async def get_result(self, node_id: str, default: Any = None) -> Any:
        """Return the latest output of node ``node_id`` (a plain-data copy), or ``default``.

        Raises:
            RuntimeError: The node is not running in a graph.
            MessageEncodeError: That output is not plain data.
        """
        return await self.graph_state.get(node_id + RESULT_SUFFIX, default)

    @property
    def metadata(self) -> ExecutionMetadata:
        """The attempt number, timings and ids of this attempt."""
        inputs = self.inputs
        return ExecutionMetadata(
            node_id=self.node.id,
            message_id=inputs.id,
            trace_id=inputs.metadata.get("trace_id", inputs.id),
            attempt=self.attempt,
            max_attempts=self.node.config.retry.max_attempts,
            started_at=self.started_at,
        )

    @property
    def steps_taken(self) -> int:
        """The steps the message has taken so far: hops along edges of cycles, and gotos.

        What the run counts against ``Task.max_steps`` (``metadata["steps"]``, which
        travels with the message, also between Redis workers); 0 off cycles. An output
        that takes one more step when ``steps == max_steps`` is dead-lettered (phase
        ``"max_steps"``), so a node can end a loop itself before that. Not the durable
        steps of :meth:`step`.
        """
        return steps_of(self.inputs)

    @property
    def max_steps(self) -> int | None:
        """The run's step budget (``Task.max_steps``); ``None``: no limit (as in an actor).

        On Redis: the budget of the run handling the message in this process (the task
        given to ``run``; ``serve()`` and the worker command use the default).
        """
        runtime = runtime_of(self.node)
        if runtime is None:
            return None
        budget = runtime.run.max_steps
        return None if budget == sys.maxsize else budget  # runs keep "no limit" as maxsize

    # -- dynamic control flow (priority: cancel > stop > goto > the edges) -----------------

    def goto(self, *targets: Node | str) -> None:
        """Send this call's outputs to ``targets`` only, instead of along the edges.

        Calling it again adds targets. Shutdown follows the wired edges, so a message sent
        this way to a node that has already drained waits in its mailbox, as in a cycle.

        Raises:
            WiringError: A target is not a node of the running graph.
            RuntimeError: The node is not running in a graph.
        """
        runtime = runtime_of(self.node)
        if runtime is None:
            raise RuntimeError(f"{self.node!r} is not running in a graph: it cannot goto")
        control = self._take_control()
        for target in targets:
            node_id = target if isinstance(target, str) else target.id
            node = runtime.run.node(node_id)
            if node is None or (not isinstance(target, str) and node is not target):
                raise WiringError(f"goto: {target!r} is not a node of the running graph")
            control.goto.append(node)

    def stop_graph(self, reason: str = "stopped by a node") -> None:
        """End the run normally after this message: the graph stops gracefully.

        This call's outputs are kept as the node's result but not forwarded; the message
        counts as processed. The result says ``stopped`` with ``reason``.
        """
        self._take_control().stop = reason

    def cancel_graph(self, reason: str = "cancelled by a node") -> None:
        """End the run abnormally: work in flight is cancelled and ``run`` raises.

        This message is not processed: it goes back to its mailbox, unacked, and nothing is
        forwarded. ``run`` raises :class:`~spark_nodes.errors.GraphCancelled` with ``reason``.
        """
        self._take_control().cancel = reason

    def hold(self) -> None:
        """Keep this message unacked when the attempt succeeds (a node that holds it).

        The node must later :meth:`release` it from another call (or dead-letter it), so
        that its ack comes once the work it is part of has been forwarded.
        """
        self._take_control().hold = True

    def release(self, messages: list[ChannelMessage]) -> None:
        """Ack ``messages`` (held earlier) together with this one, after forwarding."""
        self._take_control().release.extend(messages)

    def _take_control(self) -> Control:
        control = self.control
        if control is None:
            control = self.control = Control()
        return control

    async def step(self, name: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` once per message, however often the message is handled.

        The result is stored (with the message in memory; in Redis for a Redis graph)
        before this returns, so before the message is acked. A retry of ``process``, or a
        redelivery after a worker died, gets the stored result back without calling ``fn``
        again. ``fn`` may be a plain or an ``async`` function. Each step of one call needs
        its own ``name``. See :mod:`spark_nodes.nodes.steps`.

        Returns:
            ``fn``'s result as msgpack reads it back (a tuple comes back as a list), on the
            first run as on a replay.

        Raises:
            TypeError: ``name`` is not a non-empty str, or ``fn`` is not callable.
            ValueError: ``name`` was used already in this call.
            MessageEncodeError: The result is not msgpack data; nothing was stored.
            BackendUnavailable: Redis could not be reached; the message is delivered again
                (no attempt is spent).
            Exception: What ``fn`` raised; nothing was stored, so a retry calls it again
                (raise :class:`~spark_nodes.errors.NonRetriableError` to skip the retries).
        """
        runtime = runtime_of(self.node)
        store = written = None
        if runtime is not None:
            store = runtime.run.step_store
            if store is not None:
                written = runtime.step_written
                if written is None:
                    written = runtime.step_written = set()
        return await run_step(self, store, written, (name, fn, args, kwargs))

    async def schedule(
        self,
        content: Any,
        *,
        delay: float | None = None,
        at: float | datetime | None = None,
        to: Node | str | None = None,
        key: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Send ``content`` to this node (or ``to``) after ``delay`` seconds, or at ``at``.

        The message is scheduled when this is called, once per message however often the
        message is handled (a retry of ``process``, or a redelivery, schedules nothing
        new): like :meth:`step`, of which it is one (named ``"schedule:<key>"``). It
        starts a trace of its own; ``metadata["scheduled_by"]`` names this node.

        In memory the timer runs on the event loop's clock (virtual in tests); it counts
        as work in flight (``wait_idle`` and one-pass runs wait for it), and this node
        drains at shutdown only once its timers have fired. A run that ends otherwise
        (stopped, cancelled) puts the messages not due yet into their mailboxes at once,
        so the next run has them. On Redis the message waits in the target mailbox's
        delayed set, in Redis: it survives worker restarts, and is delivered when due
        by whichever worker reads that mailbox.

        Args:
            content: Plain content or a :class:`NodeMessage`.
            delay: Seconds from now (>= 0).
            at: When: epoch seconds or a timezone-aware ``datetime``; a time in the past
                is due at once.
            to: The node (or its id) that gets it; this node by default.
            key: Names this schedule among the message's others (a str): needed only
                when the calls of ``process`` differ from one attempt to the next;
                by default schedules are numbered in the order of the calls.
            metadata: Metadata for the message.

        Raises:
            ValueError: Both or neither of ``delay`` and ``at``, a negative or infinite
                delay, a naive ``at``, or a ``key`` used already in this call.
            TypeError: ``delay``/``at``/``key``/``metadata`` of the wrong type.
            WiringError: ``to`` is not a node of the running graph.
            RuntimeError: The node is not running in a graph or an actor.
            BackendUnavailable: Redis could not be reached (the message is delivered
                again; no attempt is spent).
        """
        seconds = delay_until(delay, at)
        if key is not None and (not isinstance(key, str) or not key):
            raise TypeError(f"key must be a non-empty str, not {key!r}")
        runtime = runtime_of(self.node)
        if runtime is None:
            raise RuntimeError(f"{self.node!r} is not running in a graph: it cannot schedule")
        target = self.node if to is None else to
        message = channel_message_of(content, metadata)
        message.metadata["scheduled_by"] = self.node.id
        if key is None:
            owner = self.message if self.message is not None else self.inputs
            used = getattr(self, "step_names", None)  # (see run_step) unset: no step yet
            earlier = used[1] if used is not None and used[0] is owner else ()
            name = f"{_NUMBERED}{1 + sum(n.startswith(_NUMBERED) for n in earlier)}"
        else:
            name = _SCHEDULE + key
        once = f"{self.node.id}:{self.inputs.id}:{name}"  # a redelivery's is dropped (Redis)
        send = (runtime, target, message, seconds, once)
        await run_step(self, None, None, (name, runtime.run.schedule, send, {}))

    def emit(self, content: Any) -> None:
        """Add an output, besides the value ``process`` returns.

        ``content`` may be a :class:`NodeMessage` (to set its metadata) or plain content.
        """
        self.outputs.append(content)

    def __repr__(self) -> str:
        node, attempt = self.node.id, self.attempt
        return f"<ExecutionContext node={node!r} attempt={attempt} inputs={self.inputs!r}>"
