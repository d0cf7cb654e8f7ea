"""``GraphResult``: how a run ended and what it produced."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from spark_nodes.channels.codec import pack, unpack
from spark_nodes.errors import MessagesDeadLettered
from spark_nodes.nodes import NodeMessage, NodeStatistics

__all__ = ["GraphResult", "StopReason"]


class StopReason(enum.StrEnum):
    """Why a run ended."""

    COMPLETED = "completed"
    """A one-pass run handled every message it caused."""
    SHUTDOWN = "shutdown"
    """``graph.shutdown()`` (or a shutdown sent to the start node) drained the graph."""
    IDLE = "idle"
    """No message was handled for ``idle_timeout`` seconds; the graph drained."""
    BUDGET = "budget"
    """``max_seconds`` or ``max_messages`` was reached; the run stopped gracefully."""
    STOPPED = "stopped"
    """``graph.stop()`` or a node's ``context.stop_graph()`` stopped the run gracefully."""
    CANCELLED = "cancelled"
    """A node's ``context.cancel_graph()`` cancelled the run (``run`` raises)."""
    ERROR = "error"
    """A node whose ``on_error`` is ``stop_graph`` dead-lettered a message, or a worker
    loop crashed more often than its restart policy allows."""
    FINISHED = "finished"
    """Every worker loop returned by itself."""


@dataclass(frozen=True, slots=True)
class GraphResult:
    """The outcome of ``await graph.run(task)``.

    A message that fails for good is dead-lettered and the run goes on, so a run can end
    ``completed`` with failures: check :attr:`ok`, or call :meth:`raise_for_dead_letters`.
    ``str(result)`` says it too.

    Attributes:
        stop_reason: Why the run ended.
        detail: The reason in words (which budget, which node failed ...).
        outputs: Outputs that took no edge, in the order they were produced (the last
            1,000 in a long-running run).
        node_stats: Per node id, what the node did.
        dead_lettered: How many messages were dead-lettered during the run (the messages
            themselves are in ``graph.dead_letters``).
        duration: Seconds the run took.
        cancelled: Whether loops still busy after the grace period were cancelled.
        results: Per node id, its latest output when the run ended (as produced).
        left: Per node id, the messages left in its mailbox when the run ended (a stop, a
            budget or a grace period cut it short); only nodes with some. They stay there
            for the next run (or a checkpoint). On Redis: per node this process served,
            the entries of its stream unread or pending anywhere when this run ended.
    """

    stop_reason: StopReason
    detail: str
    outputs: tuple[NodeMessage, ...]
    node_stats: Mapping[str, NodeStatistics]
    dead_lettered: int
    duration: float
    cancelled: bool
    results: Mapping[str, Any] = field(default_factory=dict)
    left: Mapping[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether nothing failed: no message was dead-lettered, the run did not stop on an error.

        A run a budget, ``stop()`` or ``shutdown()`` ended early is ok if nothing failed
        (``stop_reason`` says how it ended).
        """
        return self.dead_lettered == 0 and self.stop_reason is not StopReason.ERROR

    def raise_for_dead_letters(self) -> GraphResult:
        """Raise if the run had failures (not :attr:`ok`); else return the result.

        For a run whose every message must succeed:
        ``result = (await graph.run(task)).raise_for_dead_letters()``.

        Returns:
            This result.

        Raises:
            MessagesDeadLettered: A message was dead-lettered (or the run stopped on an
                error); the error holds this result.
        """
        if self.ok:
            return self
        raise MessagesDeadLettered(
            f"{self}. The failed messages, with their errors, are in graph.dead_letters "
            f"(a Redis graph's, in its mailboxes' dead-letter streams: spark-nodes dlq)",
            count=self.dead_lettered,
            result=self,
        )

    def get_result(self, node_id: str, default: Any = None) -> Any:
        """Node ``node_id``'s latest output as plain data (like the state's ``.__result__``).

        Raises:
            MessageEncodeError: That output is not plain data.
        """
        if node_id not in self.results:
            return default
        return unpack(pack(self.results[node_id], where=f"{node_id}.__result__"))

    @property
    def output(self) -> NodeMessage | None:
        """The last output (the last node's :class:`NodeMessage`), or ``None``."""
        return self.outputs[-1] if self.outputs else None

    @property
    def content(self) -> Any:
        """The last output's content, or ``None``."""
        output = self.output
        return None if output is None else output.content

    def __str__(self) -> str:
        how = str(self.stop_reason)
        if self.detail and self.detail != how:
            how = f"{how} ({self.detail})"
        count = self.dead_lettered
        if count:
            how = f"FAILED: {how} with {count} message{'s' if count != 1 else ''} dead-lettered"
        elif not self.ok:
            how = f"FAILED: {how}"
        outputs = len(self.outputs)
        text = f"{how}; {outputs} output{'s' if outputs != 1 else ''} in {self.duration:.3f} s"
        if self.left:
            where = ", ".join(f"{node_id}: {count}" for node_id, count in self.left.items())
            text += f"; messages left in mailboxes ({where})"
        return text
