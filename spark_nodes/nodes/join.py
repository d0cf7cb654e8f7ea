"""``JoinNode``: the barrier of a parallel group, merging one message from each branch."""

from __future__ import annotations

import functools
from typing import Any

import anyio

from spark_nodes.channels import ChannelMessage
from spark_nodes.errors import WiringError
from spark_nodes.nodes.context import ExecutionContext
from spark_nodes.nodes.message import NodeMessage
from spark_nodes.nodes.node import Node

__all__ = ["JoinNode"]


class _Group:
    __slots__ = ("deadline", "messages", "parts")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.parts: dict[str, Any] = {}
        self.messages: list[ChannelMessage] = []


class JoinNode(Node):
    """Waits for one message from each predecessor per correlation id, then emits the merge.

    The bulk-synchronous barrier of a parallel group: ``a >> [b, c] >> join``. When an output
    fans out (goes to two or more nodes), its copies carry a new correlation id in
    ``metadata["correlation"]`` (a stack, so groups nest), and every node passes it on. The
    join collects one message per predecessor for that id, emits :meth:`merge` of their
    contents, and pops the id. It acks the parts only once the merge has been forwarded.

    A group that does not complete within ``timeout`` seconds (a branch failed and was
    dead-lettered, say) goes to the dead-letter channel, part by part, instead of waiting
    forever; so does a group still incomplete when the join drains at shutdown. Between a
    fan-out and its join each branch must send one message per input.

    Args:
        timeout: Seconds a group may wait for its missing parts.
        **kwargs: Passed to :class:`Node`.

    Raises:
        ValueError: ``timeout`` is not positive.
    """

    def __init__(self, *, timeout: float = 60.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not timeout > 0:
            raise ValueError(f"timeout must be positive seconds, not {timeout!r}")
        self.timeout = timeout
        self._groups: dict[str, _Group] = {}
        self._armed_for: object = None

    @property
    def held(self) -> list[ChannelMessage]:
        """The messages waiting in incomplete groups (not acked yet)."""
        return [message for group in self._groups.values() for message in group.messages]

    def drop_held(self) -> None:
        """Forget the incomplete groups (a resumed checkpoint delivers their parts again)."""
        self._groups = {}

    def merge(self, parts: dict[str, Any]) -> Any:
        """Combine a complete group into the output; override to merge differently.

        Args:
            parts: Each predecessor's content, by node id, in wiring order.

        Returns:
            The output to forward; the default is ``parts`` itself.
        """
        return parts

    def process(self, context: ExecutionContext) -> Any:
        """Add the input to its group; emit the merge once the group is complete.

        Raises:
            WiringError: The message is not from a predecessor of the join.
            ValueError: The group already has a message from that predecessor.
            RuntimeError: The join is not running in a graph.
        """
        runtime = self._runtime
        if runtime is None:
            raise RuntimeError(f"{self!r} joins messages only while running in a graph")
        if self._armed_for is not runtime.run:
            self._rearm(runtime)  # groups held over from an earlier run get their timers back
        metadata = context.inputs.metadata
        stack: list[str] = metadata.get("correlation") or []
        key = stack[-1] if stack else str(metadata.get("trace_id") or context.inputs.id)
        source = metadata.get("source_node")
        expected = runtime.predecessors
        if source not in expected:
            raise WiringError(
                f"join {self.id!r} got a message from {source!r}, which is not one of its "
                f"predecessors {list(expected)}"
            )
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group(anyio.current_time() + self.timeout)
            runtime.run.call_later(self.timeout, functools.partial(self._expire, key, group))
        if source in group.parts:
            raise ValueError(
                f"join {self.id!r} already has a message from {source!r} for correlation "
                f"{key!r}: between a fan-out and its join, each branch sends one per input"
            )
        group.parts[source] = context.inputs.content
        message = context.message
        assert message is not None
        group.messages.append(message)
        context.hold()
        if len(group.parts) < len(expected):
            return None
        del self._groups[key]
        context.release(group.messages)
        merged = self.merge({node_id: group.parts[node_id] for node_id in expected})
        return NodeMessage(merged, {"correlation": stack[:-1]})

    async def on_drained(self) -> None:
        """Dead-letter the groups that can no longer complete."""
        runtime = self._runtime
        groups, self._groups = self._groups, {}
        if runtime is None:
            return
        for key, group in groups.items():
            await self._dead_letter(key, group, "drained with the group incomplete")

    def _rearm(self, runtime: Any) -> None:
        self._armed_for = runtime.run
        now = anyio.current_time()
        for key, group in self._groups.items():
            callback = functools.partial(self._expire, key, group)
            # Deadlines are on the event loop's clock (virtual in tests). An earlier run in
            # another event loop had another clock (trio's starts at a random offset), so
            # what is left is kept within [0, timeout]: a held-over group waits at most one
            # more timeout.
            left = min(self.timeout, max(0.0, group.deadline - now))
            group.deadline = now + left
            runtime.run.call_later(left, callback)

    async def _expire(self, key: str, group: _Group) -> None:
        if self._groups.get(key) is not group:
            return  # completed, or already given up on
        del self._groups[key]
        await self._dead_letter(key, group, f"timed out after {self.timeout}s")

    async def _dead_letter(self, key: str, group: _Group, why: str) -> None:
        runtime = self._runtime
        assert runtime is not None
        missing = [node_id for node_id in runtime.predecessors if node_id not in group.parts]
        error = TimeoutError(f"join {self.id!r} {why}: waiting for {missing} (correlation {key!r})")
        for message in group.messages:
            await runtime.dead_letter(message, error, "join")
