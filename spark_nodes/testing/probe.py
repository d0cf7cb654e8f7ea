"""Probes: record what reaches a place in a graph, and let a test expect it (Akka's names).

:class:`BaseProbe` is the one probe API a test learns: what it ``received``, its
``shutdowns``, ``wait_for(n)``, and Akka TestKit's ``expect_message``, ``expect_payload``,
``expect_no_message``, ``expect_shutdown`` and ``fish_for_message``. Two things record into
it: :class:`Probe`, a node you wire into a graph, and a tap
(:func:`spark_nodes.testing.tap`), which watches any node or edge of a built graph through
observers on its mailboxes, without rewiring.
"""

from __future__ import annotations

from collections.abc import Callable, Sized
from functools import partial
from typing import Any, Final

import anyio

from spark_nodes.nodes import ExecutionContext, Node, NodeMessage

__all__ = ["DEFAULT_TIMEOUT", "BaseProbe", "Probe"]

DEFAULT_TIMEOUT: Final = 3.0
"""Seconds an ``expect_*`` call waits when not told (Akka's ``single-expect-default``)."""

_SHOWN = 5  # messages quoted in a failure: enough to see what came, short enough to read


def _show(messages: list[NodeMessage]) -> str:
    quoted = ", ".join(repr(message.content) for message in messages[-_SHOWN:])
    more = len(messages) - _SHOWN
    return f"[... {more} more, {quoted}]" if more > 0 else f"[{quoted}]"


def _longer_than(items: Sized, length: int) -> bool:
    return len(items) > length


class BaseProbe:
    """What every probe records, and how a test waits on it.

    Messages are recorded in arrival order as :class:`~spark_nodes.nodes.NodeMessage`
    (``content``, ``metadata``, ``id``). Shutdown messages are kept apart, in
    :attr:`shutdowns`: they are never payloads, and ``expect_message`` never returns one.

    The ``expect_*`` calls and :meth:`fish_for_message` read the messages in order, each
    once, as Akka TestKit's ``TestProbe`` does: each returns (or checks) the next message
    that no earlier ``expect_*`` call took, waiting for it to arrive if need be, and fails
    with an :class:`AssertionError` that says what it waited for and what came instead.
    :attr:`received` keeps every message whether expected or not. Waits are on an
    ``anyio`` event set by the recorder (no polling); they run on asyncio and on trio.

    Attributes:
        received: Every message recorded so far (not the shutdowns), in order.
        shutdowns: Every shutdown message recorded so far, in order.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.received: list[NodeMessage] = []
        self.shutdowns: list[NodeMessage] = []
        self._probe_next = 0  # index in `received` of the next message to expect
        self._probe_next_shutdown = 0
        self._probe_changed: anyio.Event | None = None  # set (and dropped) on each record

    @property
    def items(self) -> list[Any]:
        """The contents received so far, in order."""
        return [message.content for message in self.received]

    # -- recording (called by whoever feeds the probe) --------------------------------------

    def record(self, message: NodeMessage) -> None:
        """Record ``message`` as received and wake whoever waits on the probe.

        Synchronous and cheap: observers and nodes call it from their own task.
        """
        self.received.append(message)
        self._probe_wake()

    def record_shutdown(self, message: NodeMessage) -> None:
        """Record a shutdown (kept in :attr:`shutdowns`, never among the payloads)."""
        self.shutdowns.append(message)
        self._probe_wake()

    def _probe_wake(self) -> None:
        changed = self._probe_changed
        if changed is not None:
            self._probe_changed = None
            changed.set()

    async def _probe_until(self, ready: Callable[[], bool], limit: float | None) -> bool:
        """Wait until ``ready()``; False if ``limit`` seconds passed first (None: no limit)."""
        with anyio.move_on_after(limit):
            while not ready():
                changed = self._probe_changed
                if changed is None:
                    changed = self._probe_changed = anyio.Event()
                await changed.wait()
            return True
        return False

    def _probe_describe(self) -> str:
        """What the probe watches, for failure messages."""
        return f"{type(self).__name__}"

    # -- waiting ----------------------------------------------------------------------------

    async def wait_for(self, count: int = 1) -> list[Any]:
        """Wait until ``count`` messages have been received; return the contents so far.

        It does not move the ``expect_*`` position. It waits as long as it takes: bound it
        with ``anyio.fail_after`` in tests.
        """
        await self._probe_until(lambda: len(self.received) >= count, None)
        return self.items

    async def expect_message(
        self,
        *,
        timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - Akka TestKit's name and meaning
    ) -> NodeMessage:
        """Return the next message not yet expected, waiting up to ``timeout`` seconds.

        Raises:
            AssertionError: No such message arrived within ``timeout``; the message says
                what the probe watches and what it had received.
        """
        position = self._probe_next
        message = await self._take_next(self.received, position, timeout, "a message")
        self._probe_next = position + 1
        return message

    async def expect_payload(
        self,
        expected: Any,
        *,
        timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - Akka TestKit's name and meaning
    ) -> NodeMessage:
        """Take the next message (as :meth:`expect_message`) and check its content ``== expected``.

        The message is taken even when it does not match, as in Akka.

        Returns:
            The message.

        Raises:
            AssertionError: No message within ``timeout``, or its content differs (the
                message shows both).
        """
        try:
            message = await self.expect_message(timeout=timeout)
        except AssertionError as error:
            raise AssertionError(f"{error}; expected payload {expected!r}") from None
        if message.content != expected:
            raise AssertionError(
                f"{self._probe_describe()}: expected payload {expected!r}, got "
                f"{message.content!r} (message {self._probe_next} of the probe, "
                f"metadata {message.metadata!r})"
            )
        return message

    async def expect_no_message(self, *, within: float) -> None:
        """Check that no message not yet expected is there now or arrives within ``within`` s.

        A message recorded earlier and not taken by an ``expect_*`` call fails it at once,
        as in Akka: take what you expected first. Shutdowns do not count (see
        :meth:`expect_shutdown`). Succeeding takes the whole of ``within``.

        Raises:
            AssertionError: A message was there or came; the message quotes it.
        """
        position = self._probe_next
        if len(self.received) > position:
            raise AssertionError(
                f"{self._probe_describe()}: expected no message, but "
                f"{len(self.received) - position} had arrived and were not expected yet: "
                f"{_show(self.received[position:])}"
            )
        if await self._probe_until(lambda: len(self.received) > position, within):
            raise AssertionError(
                f"{self._probe_describe()}: expected no message for {within} s, got "
                f"{self.received[position].content!r} "
                f"(metadata {self.received[position].metadata!r})"
            )

    async def expect_shutdown(
        self,
        *,
        timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - Akka TestKit's name and meaning
    ) -> NodeMessage:
        """Return the next shutdown not yet expected, waiting up to ``timeout`` seconds.

        Shutdowns are read in their own order, apart from the messages: this neither takes
        nor skips messages.

        Raises:
            AssertionError: No shutdown within ``timeout``.
        """
        position = self._probe_next_shutdown
        shutdown = await self._take_next(self.shutdowns, position, timeout, "a shutdown")
        self._probe_next_shutdown = position + 1
        return shutdown

    async def fish_for_message(
        self,
        predicate: Callable[[NodeMessage], bool],
        *,
        timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - Akka TestKit's name and meaning
    ) -> NodeMessage:
        """Take messages until one satisfies ``predicate(message)``; return that one.

        The messages before it are taken too (skipped). ``timeout`` bounds the whole search.

        Raises:
            AssertionError: No matching message within ``timeout``; the message quotes
                the ones skipped.
            Exception: Whatever ``predicate`` raises (the message it raised on is taken).
        """
        skipped: list[NodeMessage] = []
        with anyio.move_on_after(timeout):
            while True:
                position = self._probe_next
                await self._probe_until(partial(_longer_than, self.received, position), None)
                message = self.received[position]
                self._probe_next = position + 1
                if predicate(message):
                    return message
                skipped.append(message)
        name = getattr(predicate, "__qualname__", repr(predicate))
        raise AssertionError(
            f"{self._probe_describe()}: no message matching {name} within {timeout} s; "
            f"skipped {len(skipped)}: {_show(skipped)}"
        )

    async def _take_next(
        self, entries: list[NodeMessage], position: int, limit: float, what: str
    ) -> NodeMessage:
        """``entries[position]``, waiting up to ``limit`` seconds for it.

        Raises:
            AssertionError: It did not come in time; the message names ``what``.
        """
        if not await self._probe_until(lambda: len(entries) > position, limit):
            raise AssertionError(
                f"{self._probe_describe()}: expected {what} within {limit} s, got none "
                f"({self._probe_so_far()})"
            )
        return entries[position]

    def _probe_so_far(self) -> str:
        count = len(self.received)
        if count == 0:
            return "nothing received so far"
        return f"received {count} so far, all expected already: {_show(self.received)}"


class Probe(BaseProbe, Node):
    """A node that records every message it processes: wire it where a test needs to look.

    It has the whole :class:`BaseProbe` API (``received``, ``items``, ``wait_for(n)``,
    ``expect_message()`` ...). Put it where a test needs to know what arrived (usually at
    the end of a pipeline) and await it rather than polling or sleeping. It records a
    shutdown (see :meth:`BaseProbe.expect_shutdown`) once it has drained, that is once every
    predecessor shut down and every message before was processed. To watch a graph
    without changing it, use :func:`spark_nodes.testing.tap`, which gives the same API.

    Args:
        forward: Pass each input on to the probe's successors (default: forward nothing).
        **kwargs: Passed to :class:`Node` (``id``, ``mailbox``, ``config``).
    """

    def __init__(self, *, forward: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.forward = forward

    def process(self, context: ExecutionContext) -> Any:
        """Record the input, wake whoever waits on the probe, and maybe forward it."""
        self.record(context.inputs)
        return context.inputs if self.forward else None

    async def on_drained(self) -> Any:
        """Record the shutdown that drained the probe; forward nothing."""
        self.record_shutdown(NodeMessage(None, {"node": self.id}))
        return None

    def _probe_describe(self) -> str:
        return f"probe {self.id!r}"
