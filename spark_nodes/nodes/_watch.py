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

from typing import Any, Final

import anyio

from spark_nodes.nodes.message import NodeMessage

__all__ = ["REPLY_PREFIX", "Failure", "TraceWatch"]

REPLY_PREFIX: Final = "invoke:"
"""Trace ids of invokes answered through a reply stream (on Redis) start with it."""

Failure = tuple[str, str, str, str]
"""A dead-lettered message of the trace: (node id, phase, error type, error text)."""


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

    __slots__ = ("done", "ended", "failures", "in_flight", "outputs", "produced")

    def __init__(self) -> None:
        self.in_flight = 1
        self.outputs: list[NodeMessage] = []
        self.produced: list[tuple[str, Any]] = []
        self.failures: list[Failure] = []
        self.done = anyio.Event()
        self.ended: str | None = None

    def emitted(self, node_id: str, content: Any, routes: int) -> None:
        """A node of the trace produced an output, sent to ``routes`` mailboxes."""
        self.produced.append((node_id, content))
        self.in_flight += routes

    def terminal(self, output: NodeMessage) -> None:
        """An output of the trace took no edge."""
        self.outputs.append(output)

    def dropped(self, count: int) -> None:
        """``count`` outputs counted by :meth:`emitted` were not sent after all."""
        self.in_flight -= count

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
