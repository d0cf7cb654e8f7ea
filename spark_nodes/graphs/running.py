"""``RunningGraph``: a handle on a run in progress, from ``open_run`` or ``task_group.start``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spark_nodes.graphs.graph import Graph
    from spark_nodes.graphs.invoke import InvokeResult
    from spark_nodes.graphs.result import GraphResult
    from spark_nodes.nodes import Node

__all__ = ["RunningGraph"]


class RunningGraph:
    """A run in progress: what ``async with graph.open_run(task) as run`` gives.

    ``await task_group.start(graph.run, task)`` returns one too. By the time you hold it,
    every worker loop has been started and every mailbox takes messages: ``send`` and
    ``invoke`` work at once. The methods are the graph's, for the run in hand.

    Attributes:
        graph: The graph that runs.
        result: The :class:`GraphResult`, once the run has ended (``None`` before).
    """

    __slots__ = ("graph", "result")

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.result: GraphResult | None = None

    @property
    def running(self) -> bool:
        """Whether the run is still going here: not ended, not shutting down (in memory)."""
        return self.result is None and self.graph.running and self.graph.accepting

    async def send(
        self, node: Node | str, content: Any, *, metadata: dict[str, Any] | None = None
    ) -> None:
        """Send into a node's mailbox: :meth:`Graph.send`."""
        await self.graph.send(node, content, metadata=metadata)

    async def invoke(
        self,
        inputs: Any,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - as Graph.invoke
        node: Node | str | None = None,
    ) -> InvokeResult:
        """Send one input and return the output(s) it caused: :meth:`Graph.invoke`."""
        return await self.graph.invoke(inputs, timeout=timeout, node=node)

    async def wait_idle(self) -> None:
        """Wait until nothing is in flight: :meth:`Graph.wait_idle`."""
        await self.graph.wait_idle()

    async def shutdown(self) -> None:
        """Drain gracefully and end the run: :meth:`Graph.shutdown`."""
        await self.graph.shutdown()

    def stop(self, reason: str = "stopped from outside") -> None:
        """Stop as a budget would: :meth:`Graph.stop`."""
        self.graph.stop(reason)

    def __repr__(self) -> str:
        state = "ended" if self.result is not None else "running"
        return f"<RunningGraph {self.graph.name!r} {state}>"
