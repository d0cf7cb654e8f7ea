"""Custom Channel Development, a priority mailbox two ways: ``python -m examples.custom_channel``.

A help desk works through a backlog of tickets, those with ``metadata["priority"] == "high"``
first. ``PriorityChannel`` implements only BaseChannel's seed methods (``send``,
``receive``, ``empty``, ``close``): a complete mailbox, which the worker loop serves one
awaited ``receive()`` per message. ``FastPriorityChannel`` adds the ``Mailbox`` protocol of
:mod:`spark_nodes.channels.mailbox` (``take_nowait``, ``take``, ``give_back``, ``offer``,
``offer_many``, ``empty``): the loop takes a batch per call, and upstream nodes deliver to it
without a coroutine. Same order both ways; the fast one awaits ``receive()`` only for the
shutdown that follows the backlog.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

import anyio

from spark_nodes import ExecutionContext, Graph, Node, Task, TaskType
from spark_nodes.channels import BaseChannel, ChannelClosed, ChannelMessage

TICKETS = [("T1", "low"), ("T2", "high"), ("T3", "low"), ("T4", "high"), ("T5", "low")]


class PriorityChannel(BaseChannel):
    """A mailbox that delivers high-priority messages first; only the seed's methods."""

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name=name)
        self._high: deque[ChannelMessage] = deque()
        self._normal: deque[ChannelMessage] = deque()
        self._arrived: anyio.Event | None = None  # made by a receiver that has to wait
        self.receives = 0  # how often receive() was awaited: what the fast version saves

    async def send(self, message: ChannelMessage) -> None:
        """Enqueue ``message`` by its priority; never waits (unbounded).

        Raises:
            ChannelClosed: The channel is closed.
        """
        if self.closed:
            raise ChannelClosed(f"channel {self.name!r} is closed")
        self._enqueue(message)
        await self._notify(message, "send")  # gives the channel observers

    async def receive(self) -> ChannelMessage:
        """Return the oldest high-priority message, else the oldest other one; wait for one.

        Raises:
            ChannelClosed: The channel is closed and drained.
        """
        self.receives += 1
        while self.empty():
            if self.closed:
                raise ChannelClosed(f"channel {self.name!r} is closed and drained")
            if self._arrived is None:
                self._arrived = anyio.Event()
            await self._arrived.wait()
        message = (self._high or self._normal).popleft()
        await self._notify_receive(message)
        return message

    def empty(self) -> bool:
        """Return True if no message is waiting."""
        return not (self._high or self._normal)

    def close(self) -> None:
        """Refuse new messages; wake waiting receivers (they drain what is queued)."""
        super().close()
        self._wake()

    def _enqueue(self, message: ChannelMessage) -> None:
        high = message.metadata.get("priority") == "high"
        (self._high if high else self._normal).append(message)
        self._wake()

    def _wake(self) -> None:
        if self._arrived is not None:
            self._arrived.set()
            self._arrived = None


class FastPriorityChannel(PriorityChannel):
    """The same mailbox, made fast: it also implements the ``Mailbox`` protocol."""

    def take_nowait(self, limit: int) -> list[ChannelMessage]:
        """Take up to ``limit`` messages in priority order; ``[]`` if none (or observers)."""
        if self.observers:
            return []  # observers are awaited in receive(), which take() uses
        taken: list[ChannelMessage] = []
        while len(taken) < limit and not self.empty():
            queue = self._high or self._normal
            if queue[0].deferred is not None:
                break  # observer work a send_nowait left: receive() runs it
            taken.append(queue.popleft())
        return taken

    async def take(self, limit: int) -> list[ChannelMessage]:
        """Wait for the first message, then take what else is ready (see ``receive``)."""
        first = await self.receive()
        return [first, *self.take_nowait(limit - 1)]

    def give_back(self, messages: Sequence[ChannelMessage], *, started: int = 0) -> None:
        """Put taken messages back at the head, in their order, ahead of everything."""
        self._high.extendleft(reversed(messages))  # they were taken first: they go first
        self._wake()

    def offer(self, message: ChannelMessage) -> bool:
        """Enqueue ``message`` now, if neither a close nor observers call for ``send()``."""
        if self.closed or self.observers:
            return False
        self._enqueue(message)
        return True

    def offer_many(self, messages: list[ChannelMessage]) -> int:
        """Offer each message in order; return how many were enqueued."""
        count = 0
        for message in messages:
            if not self.offer(message):
                break
            count += 1
        return count


class Desk(Node):
    """Notes the id of each ticket it handles."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.handled: list[str] = []

    def process(self, context: ExecutionContext) -> None:
        self.handled.append(context.inputs.content)


async def work_through_backlog(mailbox: PriorityChannel) -> list[str]:
    """Queue the tickets in a desk's mailbox, run the desk until drained; return the order."""
    for ticket, priority in TICKETS:  # tickets that came in while the desk was closed
        await mailbox.send(ChannelMessage(ticket, {"priority": priority}))
    desk = Desk(id="desk", mailbox=mailbox)
    graph = Graph(start=desk, name="help-desk")
    async with graph.open_run(Task(type=TaskType.LONG_RUNNING)) as run:
        await run.wait_idle()  # the backlog is handled: the desk waits for more
    # Leaving the block sent the desk its shutdown, and waited until it stopped.
    return desk.handled


async def main() -> dict[str, tuple[list[str], int]]:
    """Run the desk on each mailbox; per channel class, the order handled and its receives."""
    results: dict[str, tuple[list[str], int]] = {}
    for mailbox in (PriorityChannel(name="seed"), FastPriorityChannel(name="fast")):
        handled = await work_through_backlog(mailbox)
        results[type(mailbox).__name__] = (handled, mailbox.receives)
    return results


if __name__ == "__main__":
    for name, (handled, receives) in anyio.run(main).items():
        print(f"{name:<20} handled {' '.join(handled)}  (awaited receive() {receives}x)")
