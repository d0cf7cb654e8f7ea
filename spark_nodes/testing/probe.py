"""``Probe``: a node that records what reaches it, so tests can await it instead of sleeping."""

from __future__ import annotations

from typing import Any

import anyio

from spark_nodes.nodes import ExecutionContext, Node, NodeMessage

__all__ = ["Probe"]


class Probe(Node):
    """A node that records every message it processes; ``await probe.wait_for(n)``.

    Put it where a test needs to know what arrived (usually at the end of a pipeline) and
    await :meth:`wait_for` rather than polling or sleeping.

    Args:
        forward: Pass each input on to the probe's successors (default: forward nothing).
        **kwargs: Passed to :class:`Node` (``id``, ``mailbox``, ``config``).
    """

    def __init__(self, *, forward: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.forward = forward
        self.received: list[NodeMessage] = []
        self._waiters: list[tuple[int, anyio.Event]] = []

    @property
    def items(self) -> list[Any]:
        """The contents received so far, in order."""
        return [message.content for message in self.received]

    def process(self, context: ExecutionContext) -> Any:
        """Record the input, wake whoever waits for this many, and maybe forward it."""
        self.received.append(context.inputs)
        count = len(self.received)
        for needed, event in self._waiters:
            if count >= needed:
                event.set()
        return context.inputs if self.forward else None

    async def wait_for(self, count: int = 1) -> list[Any]:
        """Wait until ``count`` messages have been received; return the contents so far.

        Bound it with ``anyio.fail_after`` in tests: it waits as long as it takes.
        """
        if len(self.received) < count:
            event = anyio.Event()
            self._waiters.append((count, event))
            try:
                await event.wait()
            finally:
                self._waiters.remove((count, event))
        return self.items
