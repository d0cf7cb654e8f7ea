"""``GraphResult``: how a run ended and what it produced."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from spark_nodes.channels.codec import pack, unpack
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

    Attributes:
        stop_reason: Why the run ended.
        detail: The reason in words (which budget, which node failed ...).
        outputs: Outputs that took no edge, in the order they were produced (the last
            1,000 in a long-running run).
        node_stats: Per node id, what the node did.
        dead_letters: Messages dead-lettered during the run.
        duration: Seconds the run took.
        cancelled: Whether loops still busy after the grace period were cancelled.
        results: Per node id, its latest output when the run ended (as produced).
    """

    stop_reason: StopReason
    detail: str
    outputs: tuple[NodeMessage, ...]
    node_stats: Mapping[str, NodeStatistics]
    dead_letters: int
    duration: float
    cancelled: bool
    results: Mapping[str, Any] = field(default_factory=dict)

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
