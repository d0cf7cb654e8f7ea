"""``run_inline``: one call of a node's ``process``, outside any graph, fully recorded."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import CoroutineType
from typing import Any

from spark_nodes.nodes import ExecutionContext, Node, NodeMessage
from spark_nodes.nodes.edges import select_edges, sorted_edges
from spark_nodes.state import RESULT_SUFFIX, GraphState, MemoryState
from spark_nodes.testing.probe import Probe

__all__ = ["InlineOutput", "InlineResult", "run_inline"]


@dataclass(frozen=True, slots=True)
class InlineOutput:
    """One output of the call, and where the worker loop would send it.

    Attributes:
        content: The output's content (a returned ``NodeMessage``'s ``content``).
        metadata: The metadata of a returned ``NodeMessage`` (else empty).
        targets: The ids of the nodes it would go to, highest priority first (goto targets, when
            ``context.goto`` applied to it); empty for an output that takes no edge (a
            result of the run) or that is not forwarded.
        edges: The edge of each target: ``"a->b"`` for a wired edge, ``"a~>c"`` for a goto.
        forwarded: Whether the loop would forward it: not after a ``stop_graph`` or
            ``cancel_graph``, nor (except for a generator's items already produced) when
            ``process`` raised.
    """

    content: Any
    metadata: Mapping[str, Any]
    targets: tuple[str, ...]
    edges: tuple[str, ...]
    forwarded: bool


@dataclass(frozen=True, slots=True)
class InlineResult:
    """What one :func:`run_inline` call did.

    Attributes:
        node_id: The node run.
        inputs: The message ``process`` was given.
        outputs: Every output in the order the loop would forward it: a generator's items
            as produced, then the outputs added with ``context.emit``, then the returned
            value.
        goto: The ids ``context.goto`` was called with, in order.
        stopped: The reason given to ``context.stop_graph``, or ``None``.
        cancelled: The reason given to ``context.cancel_graph``, or ``None``.
        held: Whether ``context.hold()`` was called.
        node_state: ``context.state`` after the call (a copy: ``node.state`` is untouched).
        node_state_writes: The keys of ``context.state`` that the call added or changed.
        graph_state: ``context.graph_state`` after the call (results excluded).
        graph_state_writes: The graph-state keys that the call added or changed.
        graph_state_deleted: The graph-state keys that the call deleted.
        error: What ``process`` raised, or ``None``.
        probes: Per target id, a :class:`Probe` standing in for that node: it received
            every forwarded output that would reach it.
    """

    node_id: str
    inputs: NodeMessage
    outputs: tuple[InlineOutput, ...]
    goto: tuple[str, ...]
    stopped: str | None
    cancelled: str | None
    held: bool
    node_state: dict[str, Any]
    node_state_writes: dict[str, Any]
    graph_state: dict[str, Any]
    graph_state_writes: dict[str, Any]
    graph_state_deleted: tuple[str, ...]
    error: Exception | None
    probes: Mapping[str, Probe] = field(default_factory=dict)

    @property
    def contents(self) -> list[Any]:
        """The contents of every output, in order (forwarded or not)."""
        return [output.content for output in self.outputs]

    def sent_to(self, target: Node | str) -> list[Any]:
        """The contents that would reach ``target`` (a node or an id), in order."""
        probe = self.probes.get(target if isinstance(target, str) else target.id)
        return [] if probe is None else [message.content for message in probe.received]

    def raise_error(self) -> InlineResult:
        """Raise what ``process`` raised, if anything; return this result otherwise.

        Raises:
            Exception: :attr:`error`.
        """
        if self.error is not None:
            raise self.error
        return self


class _Results:
    """Serves ``context.get_result(node_id)`` from the ``results=`` given."""

    def __init__(self, results: Mapping[str, Any]) -> None:
        self._results = dict(results)

    def result_of(self, node_id: str) -> tuple[bool, Any]:
        if node_id in self._results:
            return True, self._results[node_id]
        return False, None

    def result_ids(self) -> list[str]:
        return list(self._results)


class _InlineContext(ExecutionContext):
    """A context with no graph: goto is recorded, the states are private copies."""

    __slots__ = ("_goto_ids", "_graph_state", "_node_state")

    def __init__(
        self,
        inputs: NodeMessage,
        node: Node,
        *,
        attempt: int,
        node_state: dict[str, Any],
        graph_state: GraphState,
    ) -> None:
        super().__init__(inputs, node, attempt=attempt)
        self._node_state = node_state
        self._graph_state = graph_state
        self._goto_ids: list[str] = []

    @property
    def state(self) -> dict[str, Any]:
        """The node's state for this call (a copy of ``node.state`` or ``node_state=``)."""
        return self._node_state

    @property
    def graph(self) -> Any:
        """``None``: :func:`run_inline` runs no graph."""
        return None

    @property
    def graph_state(self) -> GraphState:
        """A :class:`MemoryState` seeded with ``state=`` and ``results=``."""
        return self._graph_state

    def goto(self, *targets: Node | str) -> None:
        """Record the targets; any node or id is accepted (there is no graph to check)."""
        control = self._take_control()
        for target in targets:
            self._goto_ids.append(target if isinstance(target, str) else target.id)
        control.goto.extend(target for target in targets if isinstance(target, Node))


class _Recorder:
    """Routes outputs as the worker loop would, into probes."""

    def __init__(self, node: Node, context: _InlineContext, trace_id: str) -> None:
        self.node = node
        self.context = context
        self.trace_id = trace_id
        self.outputs: list[InlineOutput] = []
        self.probes: dict[str, Probe] = {}

    def record(self, output: Any, *, forwarded: bool) -> None:
        if isinstance(output, NodeMessage):
            content, metadata = output.content, dict(output.metadata)
        else:
            content, metadata = output, {}
        control = self.context.control
        if control is not None and (control.cancel or control.stop):
            forwarded = False
        targets: list[str] = []
        edges: list[str] = []
        if forwarded:
            source = self.node.id
            goto = self.context._goto_ids
            if goto:
                targets = list(dict.fromkeys(goto))
                edges = [f"{source}~>{target}" for target in targets]
            else:
                chosen = select_edges(sorted_edges(self.node.edges), content)
                targets = [edge.target.id for edge in chosen]
                edges = [edge.name for edge in chosen]
            for target, edge in zip(targets, edges, strict=True):
                self._deliver(target, edge, content, metadata)
        self.outputs.append(
            InlineOutput(content, metadata, tuple(targets), tuple(edges), forwarded)
        )

    def _deliver(self, target: str, edge: str, content: Any, metadata: dict[str, Any]) -> None:
        probe = self.probes.get(target)
        if probe is None:
            probe = self.probes[target] = Probe(id=target)
        sent = {
            **metadata,
            "trace_id": self.trace_id,
            "source_node": self.node.id,
            "edge": edge,
        }
        probe.process(ExecutionContext(NodeMessage(content, sent), probe))

    def unforward(self, start: int) -> None:
        """Mark the outputs from ``start`` on as dropped (the attempt failed)."""
        for index in range(start, len(self.outputs)):
            output = self.outputs[index]
            if output.forwarded:
                for target in output.targets:
                    self.probes[target].received.pop()
            self.outputs[index] = InlineOutput(output.content, output.metadata, (), (), False)


async def _read_state(state: GraphState) -> dict[str, Any]:
    keys = [key for key in await state.keys() if not key.endswith(RESULT_SUFFIX)]
    return {key: await state.get(key) for key in keys}


async def run_inline(
    node: Node,
    inputs: Any = None,
    *,
    state: Mapping[str, Any] | None = None,
    results: Mapping[str, Any] | None = None,
    node_state: Mapping[str, Any] | None = None,
    attempt: int = 1,
) -> InlineResult:
    """Call ``node.process`` once on ``inputs``, with no graph, and record what it did.

    Nothing runs but ``process``: no graph, mailbox or worker loop. Its outputs are routed
    with the node's edges as the worker loop would route them (conditions, priorities,
    ``otherwise``; ``context.goto`` instead, for the outputs it applies to) and delivered
    to a :class:`Probe` per target, standing in for the successors, which are not touched.
    The node is not changed: its edges, ``state`` and ``last_output`` stay as they were.

    One attempt only: an error is returned in :attr:`InlineResult.error`, not retried
    (pass ``attempt=`` to see how ``process`` behaves on a retry).

    Args:
        node: The node whose ``process`` to call.
        inputs: The input: plain content, or a :class:`NodeMessage` to set its metadata.
        state: Seeds ``context.graph_state``.
        results: Per node id, what ``context.get_result(node_id)`` returns.
        node_state: Seeds ``context.state``; a copy of ``node.state`` by default. Pass the
            ``node_state`` of a previous result to chain calls.
        attempt: ``context.attempt`` (1 for a first attempt).

    Returns:
        An :class:`InlineResult`.

    Raises:
        BaseException: Only what is not an ``Exception`` (a cancellation, say); what
            ``process`` raised is kept in the result.
        MessageEncodeError: A value in ``state`` or ``results`` is not plain data.
    """
    message = inputs if isinstance(inputs, NodeMessage) else NodeMessage(inputs)
    graph_state = MemoryState()
    if state:
        await graph_state.update(state)
    graph_state.bind_results(_Results(results or {}))
    before_graph = await _read_state(graph_state)
    seeded = copy.deepcopy(dict(node.state if node_state is None else node_state))  # nested too
    before_node = copy.deepcopy(seeded)
    context = _InlineContext(
        message, node, attempt=attempt, node_state=seeded, graph_state=graph_state
    )
    trace_id = str(message.metadata.get("trace_id") or message.id)
    recorder = _Recorder(node, context, trace_id)
    last_output = node.last_output
    error: Exception | None = None
    try:
        await _call(node, context, recorder)
    except Exception as raised:  # noqa: BLE001 - the result carries it
        error = raised
    finally:
        node.last_output = last_output
    after_graph = await _read_state(graph_state)
    control = context.control
    return InlineResult(
        node_id=node.id,
        inputs=message,
        outputs=tuple(recorder.outputs),
        goto=tuple(context._goto_ids),
        stopped=control.stop if control is not None else None,
        cancelled=control.cancel if control is not None else None,
        held=control is not None and control.hold,
        node_state=seeded,
        node_state_writes={
            key: value
            for key, value in seeded.items()
            if key not in before_node or before_node[key] != value
        },
        graph_state=after_graph,
        graph_state_writes={
            key: value
            for key, value in after_graph.items()
            if key not in before_graph or before_graph[key] != value
        },
        graph_state_deleted=tuple(key for key in before_graph if key not in after_graph),
        error=error,
        probes=dict(recorder.probes),
    )


async def _call(node: Node, context: _InlineContext, recorder: _Recorder) -> None:
    """Call ``process`` as the worker loop does for its kind (see ``_handling``)."""
    process = node.process
    if inspect.isasyncgenfunction(process):
        async for item in process(context):
            recorder.record(item, forwarded=True)
        outputs: list[Any] = list(context.emitted or ())
    elif inspect.isgeneratorfunction(process):
        for item in process(context):
            recorder.record(item, forwarded=True)
        outputs = list(context.emitted or ())
    else:
        result = process(context)
        if result.__class__ is CoroutineType or inspect.isawaitable(result):
            result = await result
        outputs = [*(context.emitted or ()), *([] if result is None else [result])]
    start = len(recorder.outputs)
    try:
        for output in outputs:
            recorder.record(output, forwarded=True)
    except Exception:
        recorder.unforward(start)  # routing failed: the attempt's outputs are dropped
        raise
