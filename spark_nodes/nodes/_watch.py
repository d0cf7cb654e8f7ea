"""Following one input through a run: what ``graph.invoke`` and ``node.ask`` wait on.

Every message a node forwards carries the trace id of the input that started its chain
(``metadata["trace_id"]``), through fan-outs, joins, retries and ``goto``. A
:class:`TraceWatch` registered under a trace id in the run's ``watches`` is told, by the
worker loops, of each output of that trace (how many mailboxes it went to, or that it was
terminal) and of each message of the trace that was settled (handled or dead-lettered).
It counts the trace's messages still in flight: when none is left, every output the
input caused is known.

Loops take the general path (not the fast one) while any watch is registered, so that a
run nobody watches pays nothing for this.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import anyio

from spark_nodes.channels import ChannelMessage
from spark_nodes.channels.message import unchecked_message
from spark_nodes.nodes.message import NodeMessage

__all__ = [
    "REPLY_PREFIX",
    "Failure",
    "InvokeFailure",
    "InvokeResult",
    "TraceWatch",
    "invoke_record",
    "is_invoke_record",
]

REPLY_PREFIX: Final = "invoke:"
"""Trace ids of invokes answered through a reply stream (on Redis) start with it."""

Failure = tuple[str, str, str, str]
"""A dead-lettered message of the trace: (node id, phase, error type, error text)."""


_RECORD: Final = "invoke_record"


def invoke_record(payload: dict[str, Any]) -> ChannelMessage:
    """A record for a Redis invoke's reply stream (not an output: not counted as one)."""
    return unchecked_message(payload, {_RECORD: True})


def is_invoke_record(message: ChannelMessage) -> bool:
    """Whether ``message`` is a record made by :func:`invoke_record`."""
    metadata = message.raw_metadata
    return metadata is not None and _RECORD in metadata


def _drop_from(entries: list[Any], origins: list[object], start: int, origin: object) -> None:
    """Remove the entries from ``start`` on whose origin is ``origin`` (from both lists)."""
    keep = [i for i in range(start, len(entries)) if origins[i] is not origin]
    entries[start:] = [entries[i] for i in keep]
    origins[start:] = [origins[i] for i in keep]


class TraceWatch:
    """Counts the messages of one trace still in flight; keeps its outputs and failures.

    Attributes:
        in_flight: Messages of the trace sent and not settled (the input counts as one).
        outputs: Terminal outputs of the trace (they took no edge), in order.
        produced: Every output of the trace: (node id, content), in order.
        failures: Messages of the trace that were dead-lettered.
        done: Set once nothing of the trace is in flight, or the run ended.
        ended: Why it is done early (the run ended), or ``None``.
    """

    __slots__ = (
        "_outputs_by",
        "_produced_by",
        "done",
        "ended",
        "failures",
        "in_flight",
        "outputs",
        "produced",
    )

    def __init__(self) -> None:
        self.in_flight = 1
        self.outputs: list[NodeMessage] = []
        self.produced: list[tuple[str, Any]] = []
        self._produced_by: list[object] = []  # per entry, the message that produced it
        self._outputs_by: list[object] = []
        self.failures: list[Failure] = []
        self.done = anyio.Event()
        self.ended: str | None = None

    def emitted(self, node_id: str, content: Any, routes: int, origin: object = None) -> None:
        """A node of the trace produced an output, sent to ``routes`` mailboxes.

        ``origin``: the message whose handling produced it (see :meth:`rewind`).
        """
        self.produced.append((node_id, content))
        self._produced_by.append(origin)
        self.in_flight += routes

    def terminal(self, output: NodeMessage, origin: object = None) -> None:
        """An output of the trace took no edge (``origin`` as for :meth:`emitted`)."""
        self.outputs.append(output)
        self._outputs_by.append(origin)

    def dropped(self, count: int) -> None:
        """``count`` outputs counted by :meth:`emitted` were not sent after all."""
        self.in_flight -= count

    def mark(self) -> tuple[int, int]:
        """Where the outputs stand, before an attempt (see :meth:`rewind`)."""
        return len(self.outputs), len(self.produced)

    def rewind(self, mark: tuple[int, int], origin: object) -> None:
        """Forget what handling ``origin`` produced since ``mark``: that attempt failed unseen.

        Other messages of the trace may have been handled meanwhile (other nodes, sibling
        loops): only what ``origin`` produced goes.
        """
        outputs, produced = mark
        _drop_from(self.outputs, self._outputs_by, outputs, origin)
        _drop_from(self.produced, self._produced_by, produced, origin)

    def routed(self, failure: Failure, routes: int, origin: object = None) -> None:
        """A message of the trace failed for good and goes along ``routes`` error edges.

        Not a failure of the trace: the error messages are followed like outputs (the
        answer is what the handlers produce). ``origin`` as for :meth:`emitted`.
        """
        self.in_flight += routes

    def failed(self, failure: Failure) -> None:
        """A message of the trace was dead-lettered (it is settled too: see :meth:`settled`)."""
        self.failures.append(failure)

    def settled(self) -> None:
        """A message of the trace was handled or dead-lettered."""
        self.in_flight -= 1
        if self.in_flight <= 0:
            self.done.set()

    def end(self, why: str) -> None:
        """The run ended before the trace did."""
        if not self.done.is_set():
            self.ended = why
            self.done.set()


@dataclass(frozen=True, slots=True)
class InvokeFailure:
    """A message caused by an invoked input that was dead-lettered.

    Attributes:
        node: The node that gave up on it.
        phase: Where it failed (``"process"``, ``"forward"``, ``"max_steps"`` ...).
        error_type: The error's ``module.QualifiedName``.
        error: The error's text.
    """

    node: str
    phase: str
    error_type: str
    error: str


@dataclass(frozen=True, slots=True)
class InvokeResult:
    """What one input caused: its terminal outputs, once none of its messages is in flight.

    Attributes:
        outputs: The outputs that took no edge, in the order they were produced (several
            after a fan-out to several ends; none if every branch ended without output).
        failures: Messages of the input that were dead-lettered (empty on success).
        duration: Seconds from the send to the answer.
    """

    outputs: tuple[NodeMessage, ...]
    failures: tuple[InvokeFailure, ...]
    duration: float

    @property
    def output(self) -> NodeMessage | None:
        """The last output, or ``None``."""
        return self.outputs[-1] if self.outputs else None

    @property
    def content(self) -> Any:
        """The last output's content, or ``None``: the answer, for a graph with one end."""
        output = self.output
        return None if output is None else output.content

    @property
    def contents(self) -> list[Any]:
        """Every output's content, in order."""
        return [output.content for output in self.outputs]
