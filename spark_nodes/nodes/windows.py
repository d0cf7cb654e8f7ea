"""Windows: nodes that group a stream's messages by count or by time and emit each group.

A :class:`CountWindow` closes a window every ``size`` messages; a :class:`TimeWindow` every
``size`` seconds, of processing time (when messages arrive) or of event time (a field of
each message). Both tumble (each message in one window) or slide (``slide < size``: a new
window every ``slide``, each message in several), per key if given a ``key`` function.
A closed window goes to :meth:`~CountWindow.aggregate`, whose result is forwarded like any
output; every window still open is flushed when the node drains at shutdown.

**Holding.** A message in an open window is not acked: the node holds it
(``context.hold()``) and releases it with the call that forwards the last window it is in
(``context.release``), so on Redis a worker that dies with open windows leaves their
messages pending, and the worker that gets them next builds the windows again. A message
without an ack (most in-memory ones) costs nothing to hold: the node only keeps it, for
checkpoints (:attr:`held`), and says so (``hold``) only when it matters: when observers
watch the node (its ``ack`` event waits for its window), and in a call that closes windows
(if their outputs cannot be forwarded, what the call holds stays in its windows while what
it released is dead-lettered).

**Giving up on a window.** A window whose :meth:`~CountWindow.aggregate` raises fails the
message that closes it, which is retried per the node's ``RetryPolicy`` (the window stays
open meanwhile). At its last attempt the node gives up on the window instead: its messages
are dead-lettered (phase ``"window"``, with the error), it is dropped, and the message goes
on (unless it is in that window: it fails with it). So a window that cannot be aggregated
never blocks the windows of later messages.

**Timers.** A processing-time window closes when its end passes, also while no message
arrives: the node sets a timer (on the event loop's clock) for each window end, and when
it fires sends itself a *flush marker*, a message whose content is ``None`` and whose
metadata has :data:`WINDOW_FLUSH`. ``process`` handles the marker like a message that is no
item: it closes the windows that are due, and their outputs leave with it.

Windows live in the node object, so they are per process: the loops of one node
(``concurrency``) share them, and several worker processes of a Redis graph each window
what they receive. For windows over the whole stream, serve the node in one process.

A window cannot be on a cycle (a graph refuses it when built): it holds messages until it
drains, and a cycle drains only once nothing is left on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import itertools
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Hashable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

import sniffio

from spark_nodes.channels import ChannelClosed, ChannelMessage
from spark_nodes.errors import BackendUnavailable, GraphNotRunning, InvalidEventTime, LateEvent
from spark_nodes.nodes.message import NodeMessage
from spark_nodes.nodes.node import Node

if TYPE_CHECKING:
    from spark_nodes.nodes._runtime import NodeRuntime
    from spark_nodes.nodes.context import ExecutionContext

__all__ = [
    "WINDOW_FLUSH",
    "CountWindow",
    "TimeWindow",
    "Window",
]

WINDOW_FLUSH: Final = "window_flush"
"""The metadata key of a flush marker: a message whose content is ``None`` and whose metadata
has this key is no item. With the value ``"all"`` the window node closes every open window
(``graph.send(window, None, metadata={WINDOW_FLUSH: "all"})``); with any other true value
only the windows that are due (what the node's own timers send)."""

_MISSING: Final[Any] = object()
_FLUSH_RETRY: Final = 1.0
"""Seconds between flush markers while due windows stay open on a Redis graph, where a
marker may be read by another worker process (which flushes its own windows, not ours)."""


@dataclass(frozen=True, slots=True)
class Window:
    """A window that closed, as :meth:`CountWindow.aggregate` gets it.

    Attributes:
        key: What the node's ``key`` function returned for its items; ``None`` without one.
        start: A time window's start (epoch seconds, included); a count window's opening:
            when its first item arrived (processing time, epoch seconds).
        end: A time window's end (excluded); a count window's closing: when its last item
            arrived, or when it was flushed at shutdown.
        items: The contents, in arrival order (fewer than ``size`` for a count window
            flushed at shutdown).
    """

    key: Any
    start: float
    end: float
    items: list[Any]


class _Open:
    """An open window: its items, and the messages it releases when it closes.

    ``messages`` are the messages whose *last* window this is (with a sliding window a
    message is in several, and is released with the last of them): every held message is
    in exactly one open window's list.
    """

    __slots__ = ("end", "items", "key", "messages", "start")

    def __init__(self, key: Any, start: float, end: float) -> None:
        self.key = key
        self.start = start
        self.end = end
        self.items: list[Any] = []
        self.messages: list[ChannelMessage] = []


class _Keyed:
    """The open count windows of one key, oldest first, and how many items it had."""

    __slots__ = ("seen", "windows")

    def __init__(self) -> None:
        self.windows: deque[_Open] = deque()
        self.seen = 0


def _loop_clock() -> Callable[[], float]:
    """The running event loop's clock (what ``anyio.current_time`` reads, virtual in tests).

    Returned as a plain function: ``anyio.current_time()`` looks the backend up on every
    call, ~1 us, against ~0.1 us for ``loop.time`` (a processing-time window reads it once
    a message).
    """
    library = sniffio.current_async_library()
    if library == "asyncio":
        return asyncio.get_running_loop().time
    if library == "trio":
        import trio  # noqa: PLC0415 - only on trio

        return trio.current_time
    import anyio  # noqa: PLC0415 - another backend: the slow, general way

    return anyio.current_time


def _check_key(key: Callable[[Any], Hashable] | None) -> Callable[[Any], Hashable] | None:
    if key is not None and not callable(key):
        raise TypeError(
            f"key must be a function of the content returning a hashable, not {type(key).__name__}"
        )
    return key


def _flush_kind(metadata: dict[str, Any] | None) -> Any:
    """What a message with ``None`` content and ``metadata`` flushes.

    ``"all"``, something else true (the due windows), or ``None``: not a flush marker (an
    item).
    """
    flush = None if metadata is None else metadata.get(WINDOW_FLUSH)
    return flush or None


def _undo(keyed: _Keyed, opened: bool) -> None:
    """Take the last message back out of ``keyed``'s windows (``opened``: it opened one)."""
    windows = keyed.windows
    for window in windows:
        window.items.pop()
    windows[-1].messages.pop()
    keyed.seen -= 1
    if opened:
        windows.pop()


def _releasable(messages: list[ChannelMessage], current: ChannelMessage | None) -> list[Any]:
    """The messages of ``messages`` but ``current`` (settled by its call anyway).

    Those without an ack too: if the call's outputs cannot be forwarded, the run
    dead-letters what the call released.
    """
    return [m for m in messages if m is not None and m is not current]


def _emit(
    context: ExecutionContext, closed: list[tuple[_Open, Any]], current: ChannelMessage | None
) -> Any:
    """Release the ``closed`` windows' messages with this call; return their outputs.

    The last output is returned and the others emitted (``None`` ones aside).
    """
    if not closed:
        return None
    released = _releasable([m for window, _ in closed for m in window.messages], current)
    if released:
        context.release(released)
    outputs = [output for _, output in closed if output is not None]
    for output in outputs[:-1]:
        context.emit(output)
    return outputs[-1] if outputs else None


_Abandoned = list[tuple[_Open, Exception]]
"""Windows a call gave up on (their ``aggregate`` raised at the message's last attempt)."""


class _WindowNode(Node):
    """What count and time windows share: holding, the clock, aggregating, flushing."""

    def __init__(self, key: Callable[[Any], Hashable] | None, **node_kwargs: Any) -> None:
        super().__init__(**node_kwargs)
        self.key = _check_key(key)
        self._run: object = None  # the run the clock and timers were set up for
        self._clock: Callable[[], float] = time.time
        self._offset = 0.0
        # Windows taken out of the open ones whose messages are not settled yet: being
        # flushed at the drain, or given up on and being dead-lettered. Still held.
        self._leaving: deque[_Open] = deque()

    # -- what a subclass overrides ------------------------------------------------------

    def aggregate(self, window: Window) -> Any:
        """Turn a closed window into the output to forward; override to aggregate.

        Called in the worker loop's task, by the ``process`` call that closes the window
        (or by :meth:`on_drained`). If it raises, the message being handled fails and is
        retried per the node's ``RetryPolicy``, the windows staying as they were; at its
        last attempt the node gives up on the window: its messages are dead-lettered
        (phase ``"window"``, with the error), the window is dropped and the message goes
        on (it is dead-lettered too if it is in that window). At shutdown, the window's
        messages are dead-lettered with the error.

        The output must be plain data (dict, list, str, int, float, bytes, None) on a Redis
        graph, which sends it msgpack-encoded.

        Args:
            window: The closed window.

        Returns:
            ``{"key": ..., "start": ..., "end": ..., "items": [...]}``; ``None`` forwards
            nothing.
        """
        return {"key": window.key, "start": window.start, "end": window.end, "items": window.items}

    # -- holding ------------------------------------------------------------------------

    @property
    def held(self) -> list[ChannelMessage]:
        """The messages in open windows, each once: what a checkpoint keeps for them."""
        return [
            m
            for windows in (self._leaving, self._open())
            for window in windows
            for m in window.messages
            if m is not None
        ]

    def drop_held(self) -> None:
        """Forget the open windows (a resumed checkpoint delivers their messages again)."""
        self._leaving.clear()  # (in place: a flush going on sees it)
        self._clear()

    def _clear(self) -> None:
        """Forget the open windows."""
        raise NotImplementedError  # pragma: no cover - each window type has its own

    def _open(self) -> list[_Open]:
        """Every open window, in the order a flush emits them."""
        raise NotImplementedError  # pragma: no cover

    async def on_drained(self) -> AsyncIterator[Any]:  # type: ignore[override]
        """Flush: emit every open window, partial ones included, before the shutdown passes on.

        Runs in the node's last loop's task once every predecessor shut down and the
        mailbox is drained (see :meth:`Node.on_drained`). Each window's output is
        forwarded, and its messages let go once it is: the runtime then acks the messages
        the node no longer holds. A window whose :meth:`aggregate` raises, or whose output
        cannot be forwarded (the runtime raises why at its ``yield``), has its messages
        dead-lettered (phase ``"window"``) instead, and the flush goes on. On Redis each
        process serving the node flushes its windows before the node finishes.

        Raises:
            Exception: A dead letter could not be kept (the dead-letter channel is closed,
                Redis is unreachable); the windows not flushed yet stay held.
        """
        leaving = self._leaving
        leaving.extend(self._open())
        self._clear()
        if not leaving:
            return
        now = self._now()
        while leaving:
            window = leaving[0]
            try:
                output = self.aggregate(self._closed(window, now))
                if output is not None:
                    yield output  # forwarded when this resumes; else its error is raised here
            except Exception as error:  # noqa: BLE001 - its messages go to the dead letters
                await self._dead_letter(window, error)
            else:
                leaving.popleft()  # its output is out: its messages are let go (acked)

    def _closed(self, window: _Open, now: float) -> Window:
        """What :meth:`aggregate` gets for ``window``, closed at ``now``."""
        return Window(window.key, window.start, window.end, window.items)

    def _flush_all(self, context: ExecutionContext) -> Any:
        """Close every open window now (a flush marker saying ``"all"``).

        Raises:
            Exception: What :meth:`aggregate` raised, unless the node gives up on that
                window (see :meth:`_gives_up`); the windows stay open then.
        """
        now = self._now()
        closed: list[tuple[_Open, Any]] = []
        abandoned: _Abandoned = []
        for window in self._open():
            try:
                closed.append((window, self.aggregate(self._closed(window, now))))
            except Exception as error:
                if not self._gives_up(context, error):
                    raise
                abandoned.append((window, error))
        self._clear()
        result = _emit(context, closed, None)
        return self._abandon(abandoned, None, result) if abandoned else result

    # -- giving up on a window ------------------------------------------------------------

    def _observed(self) -> bool:
        """Whether observers watch the node: a message's ``ack`` event waits for its window."""
        runtime = self._runtime
        return runtime is not None and runtime.observed is not None

    def _gives_up(self, context: ExecutionContext, error: Exception) -> bool:
        """Whether the message being handled fails for good with ``error``, from ``aggregate``.

        Then the node gives up on the window instead (see the module): as the worker loop
        decides (``RetryPolicy.should_retry``, and a stopping node retries nothing).
        Outside a run (nowhere to dead-letter to) and while the store is unreachable (no
        attempt is spent) it never does.
        """
        runtime = self._runtime
        if runtime is None:
            return False
        if isinstance(error, BackendUnavailable) and runtime.durable is not None:
            return False
        return runtime.stopping or not self.config.retry.should_retry(context.attempt, error)

    def _abandon(
        self, abandoned: _Abandoned, current: ChannelMessage | None, result: Any
    ) -> Coroutine[Any, Any, Any]:
        """Hold the windows given up on until their messages are dead-lettered; then ``result``.

        Returned by ``process`` (a plain ``def``), which the worker loop then awaits: rare,
        so the fast path keeps its plain calls.
        """
        self._leaving.extend(window for window, _ in abandoned)
        return self._dead_letter_then(abandoned, current, result)

    async def _dead_letter_then(
        self, abandoned: _Abandoned, current: ChannelMessage | None, result: Any
    ) -> Any:
        """Dead-letter the messages of the windows given up on; return ``result``.

        ``current``, the message being handled, is left to the worker loop: if it is in
        one of those windows, this raises that window's error and the loop dead-letters
        it. A window whose dead letters cannot be kept (Redis unreachable, say) is logged
        and stays held: the drain tries it again.

        Raises:
            Exception: The error of the window ``current`` is in.
        """
        failed: Exception | None = None
        for window, error in abandoned:
            if current is not None and any(m is current for m in window.messages):
                failed = error
            try:
                await self._dead_letter(window, error, current)
            except Exception:
                runtime = self._runtime
                if runtime is not None:
                    runtime.log.exception(
                        "window given up on, its messages not dead-lettered yet: held",
                        key=window.key,
                        start=window.start,
                    )
        if failed is not None:
            raise failed
        return result

    async def _dead_letter(
        self, window: _Open, error: Exception, current: ChannelMessage | None = None
    ) -> None:
        """Dead-letter ``window``'s messages (but ``current``), phase ``"window"``; let it go.

        Raises:
            Exception: A dead letter could not be kept; the window stays held.
        """
        runtime = self._runtime
        if runtime is not None:
            for message in window.messages:
                if message is not None and message is not current:
                    await runtime.dead_letter(message, error, "window")
        with contextlib.suppress(ValueError):  # dropped meanwhile (drop_held)
            self._leaving.remove(window)

    # -- the clock ------------------------------------------------------------------------

    def _now(self) -> float:
        """Processing time, epoch seconds, on the event loop's clock (virtual in tests).

        The loop's clock plus the offset to the wall clock taken when the run began: one
        clock for windows and their timers, whatever the loop's clock starts at (trio's at
        a random offset).
        """
        runtime = self._runtime
        if runtime is not None and runtime.run is not self._run:
            self._enter(runtime)
        return self._clock() + self._offset

    def _enter(self, runtime: NodeRuntime) -> None:
        """A new run (or actor): take its clock; timers of an earlier run are gone."""
        self._run = runtime.run
        self._clock = _loop_clock()
        self._offset = time.time() - self._clock()

    def _key_of(self, content: Any) -> Any:
        """The key of ``content`` (``None`` without a key function), checked hashable.

        Raises:
            TypeError: The key function returned something unhashable.
            Exception: What the key function raised.
        """
        key = self.key(content)  # type: ignore[misc]  # (only called with one)
        try:
            hash(key)
        except TypeError:
            raise TypeError(
                f"the key function of window {self.id!r} returned an unhashable "
                f"{type(key).__name__} ({key!r:.60}); return a str, a number or a tuple"
            ) from None
        return key


class CountWindow(_WindowNode):
    """Groups every ``size`` messages into a window and forwards :meth:`aggregate` of it.

    Tumbling by default (each message in one window); with ``slide < size``, sliding: a new
    window opens every ``slide`` messages and each closes once it has ``size`` (so each
    message is in up to ``size / slide`` windows). With ``key``, windows are per key: each
    key counts its own messages. A flush marker (:data:`WINDOW_FLUSH`) saying ``"all"``
    closes every open window; others are ignored.

    When the node drains at shutdown, the windows still open are emitted as they are
    (fewer than ``size`` items). The output of a window is what :meth:`aggregate` returns:
    by default ``{"key", "start", "end", "items"}``, ``start`` and ``end`` being when its
    first item arrived and when it closed (epoch seconds).

    ``process`` is a plain ``def`` and holds messages only when they carry an ack, so an
    in-memory window runs on the worker loop's fast path.

    Args:
        size: Messages per window, >= 1.
        slide: Messages between the starts of two windows, 1 <= slide <= size; ``None``
            (or ``size``) tumbles.
        key: A function of a message's content returning a hashable key (windows per
            key); ``None`` windows all messages together.
        **node_kwargs: Passed to :class:`Node` (``id``, ``mailbox``, ``config``).

    Raises:
        TypeError: ``size`` or ``slide`` is not an int, ``key`` is not callable.
        ValueError: ``size`` < 1, or ``slide`` < 1 or > ``size``.
    """

    def __init__(
        self,
        size: int,
        *,
        slide: int | None = None,
        key: Callable[[Any], Hashable] | None = None,
        **node_kwargs: Any,
    ) -> None:
        if isinstance(size, bool) or not isinstance(size, int):
            raise TypeError(f"size must be an int (messages per window), not {size!r}")
        if size < 1:
            raise ValueError(f"size must be at least 1 message, not {size}")
        if slide is None:
            slide = size
        elif isinstance(slide, bool) or not isinstance(slide, int):
            raise TypeError(f"slide must be an int (messages between windows), not {slide!r}")
        elif not 1 <= slide <= size:
            raise ValueError(
                f"slide must be between 1 and size ({size}) messages, not {slide}: a window "
                f"opens every slide messages and holds size of them"
            )
        super().__init__(key, **node_kwargs)
        self.size = size
        self.slide = slide
        self._keys: dict[Any, _Keyed] = {}

    def process(self, context: ExecutionContext) -> Any:
        """Add the message to its key's open windows; forward the window it completes.

        Raises:
            TypeError: The key function returned something unhashable.
            Exception: What the key function or :meth:`aggregate` raised; the windows are
                left as they were before this message, unless the node gave up on the
                window the message completes (then it fails with that window).
        """
        inputs = context.inputs
        content = inputs.content
        if content is None and (flush := _flush_kind(inputs.raw_metadata)) is not None:
            return self._flush_all(context) if flush == "all" else None  # never due
        key = None if self.key is None else self._key_of(content)
        keyed = self._keys.get(key)
        if keyed is None:
            keyed = self._keys[key] = _Keyed()
        windows = keyed.windows
        opened = keyed.seen % self.slide == 0
        if opened:
            windows.append(_Open(key, self._now(), 0.0))
        for window in windows:
            window.items.append(content)
        message = context.message
        windows[-1].messages.append(message)  # type: ignore[arg-type]  # (None: skipped)
        keyed.seen += 1
        if len(windows[0].items) < self.size:
            # (self._observed(), inlined: run for every message, 20 ns against 67 ns)
            if message is not None and (
                message.raw_ack is not None
                or ((runtime := self._runtime) is not None and runtime.observed is not None)
            ):
                context.hold()
            return None
        return self._complete(context, keyed, opened)

    def _complete(self, context: ExecutionContext, keyed: _Keyed, opened: bool) -> Any:
        """Close ``keyed``'s oldest window, which the message being handled completed.

        ``opened``: the message opened a window. Returns its output, or the coroutine that
        dead-letters it if the node gave up on it (see :meth:`_gives_up`).

        Raises:
            Exception: What :meth:`aggregate` raised; the message was taken back out.
        """
        windows = keyed.windows
        oldest = windows[0]
        abandoned: Exception | None = None
        try:
            output = self.aggregate(Window(oldest.key, oldest.start, self._now(), oldest.items))
        except Exception as error:
            if not self._gives_up(context, error):
                _undo(keyed, opened)  # the message fails; the windows stay as they were
                raise
            output, abandoned = None, error
        except BaseException:
            _undo(keyed, opened)
            raise
        windows.popleft()
        message = context.message
        if windows:
            if message is not None:
                context.hold()  # in the next window too
        else:
            del self._keys[oldest.key]  # tumbling: nothing open for this key any more
        if abandoned is not None:
            return self._abandon([(oldest, abandoned)], message, None)
        released = _releasable(oldest.messages, message)
        if released:
            context.release(released)
        return output

    def _clear(self) -> None:
        self._keys = {}

    def _open(self) -> list[_Open]:
        return [window for keyed in self._keys.values() for window in keyed.windows]

    def _closed(self, window: _Open, now: float) -> Window:
        return Window(window.key, window.start, now, window.items)


class TimeWindow(_WindowNode):
    """Groups messages into windows of ``size`` seconds and forwards :meth:`aggregate` of each.

    Windows are aligned on the epoch: tumbling windows are ``[k * size, (k + 1) * size)``;
    with ``slide < size`` a window starts every ``slide`` seconds, ``[k * slide, k * slide +
    size)``, so a message is in up to ``size / slide`` of them. Only windows that got a
    message are emitted. With ``key``, windows are per key.

    - **Processing time** (no ``time_field``): a message belongs to the windows open when
      it arrives. A window closes once its end has passed: at the next message, or at its
      timer, which sends the node a flush marker (see the module) while no message comes.
      The clock is the event loop's (virtual in tests), as epoch seconds.
    - **Event time** (``time_field="ts"``): a message belongs to the windows of
      ``content["ts"]`` (epoch seconds, or a timezone-aware ``datetime``). The watermark
      is the latest event time seen, less ``allowed_lateness``; a window closes once the
      watermark reaches its end (so when a later event comes, not on a timer). An event
      whose every window closed already fails with :class:`LateEvent`, which is not
      retried: it is dead-lettered at once, with why.

    When the node drains at shutdown, every window still open is emitted. The output of a
    window is what :meth:`aggregate` returns: by default ``{"key", "start", "end",
    "items"}``, with the window's bounds in epoch seconds.

    Args:
        size: Seconds per window (> 0).
        slide: Seconds between the starts of two windows, 0 < slide <= size; ``None`` (or
            ``size``) tumbles.
        time_field: The content field holding the event time; ``None`` windows by
            processing time.
        allowed_lateness: Seconds an event may come behind the latest one and still join
            its window (event time only; >= 0). Windows close that much later.
        key: A function of a message's content returning a hashable key (windows per
            key); ``None`` windows all messages together.
        **node_kwargs: Passed to :class:`Node` (``id``, ``mailbox``, ``config``).

    Raises:
        TypeError: ``size``, ``slide`` or ``allowed_lateness`` is not a number,
            ``time_field`` is not a str, ``key`` is not callable.
        ValueError: ``size`` is not positive and finite, ``slide`` is not in (0, size],
            ``allowed_lateness`` is negative or not finite, or given without
            ``time_field``.
    """

    def __init__(
        self,
        size: float,
        *,
        slide: float | None = None,
        time_field: str | None = None,
        allowed_lateness: float = 0.0,
        key: Callable[[Any], Hashable] | None = None,
        **node_kwargs: Any,
    ) -> None:
        size = _seconds("size", size)
        if not size > 0:
            raise ValueError(f"size must be a positive number of seconds, not {size!r}")
        if slide is None:
            slide = size
        else:
            slide = _seconds("slide", slide)
            if not 0 < slide <= size:
                raise ValueError(
                    f"slide must be more than 0 and at most size ({size}) seconds, not "
                    f"{slide!r}: a window starts every slide seconds and lasts size"
                )
        if time_field is not None and (not isinstance(time_field, str) or not time_field):
            raise TypeError(
                f"time_field must be a non-empty str (a field name), not {time_field!r}"
            )
        allowed_lateness = _seconds("allowed_lateness", allowed_lateness)
        if allowed_lateness < 0:
            raise ValueError(f"allowed_lateness must be >= 0 seconds, not {allowed_lateness!r}")
        if allowed_lateness and time_field is None:
            raise ValueError(
                "allowed_lateness applies to event time: give time_field (the field holding "
                "each event's time) too, or leave allowed_lateness at 0"
            )
        super().__init__(key, **node_kwargs)
        self.size = size
        self.slide = slide
        self.time_field = time_field
        self.allowed_lateness = allowed_lateness
        self._windows: dict[tuple[Any, float], _Open] = {}
        self._ends: list[tuple[float, int, _Open]] = []  # a heap: the next window to close
        self._order = itertools.count()
        self._latest = -math.inf  # the latest event time seen (event time)
        self._armed: set[float] = set()  # window ends with a timer in this run
        self._flush_sent: float | None = None  # when our flush marker went out, unseen yet

    @property
    def watermark(self) -> float:
        """Event time: the latest event time seen, less ``allowed_lateness``.

        ``-inf`` before the first event. The windows ending at or before it are closed.
        """
        return self._latest - self.allowed_lateness

    def process(self, context: ExecutionContext) -> Any:
        """Close the windows that are due, then add the message to its open windows.

        Forwards the closed windows' outputs (in the order of their ends). A flush marker
        only closes what is due.

        Raises:
            InvalidEventTime: Event time: the content has no usable ``time_field``.
            LateEvent: Event time: every window of the event closed already.
            TypeError: The key function returned something unhashable.
            Exception: What the key function or :meth:`aggregate` raised; the windows are
                left as they were before this message (see :meth:`_gives_up` for a
                window's last attempt).
        """
        inputs = context.inputs
        content = inputs.content
        flush = _flush_kind(inputs.raw_metadata) if content is None else None
        if flush == "all":
            return self._flush_all(context)
        if self.time_field is None:
            runtime = self._runtime
            if runtime is not None and runtime.run is not self._run:
                self._enter(runtime)
            now = self._clock() + self._offset  # self._now(), inlined: once a message
            if flush is not None:
                self._flush_sent = None
                return self._emit(context, *self._close(now, context), None)
            return self._add(context, content, now, math.floor(now / self.slide) * self.slide, now)
        if flush is not None:
            return None  # event-time windows close on the watermark only
        event_time = self._event_time(content)
        start = math.floor(event_time / self.slide) * self.slide  # its newest window's
        watermark = self._latest - self.allowed_lateness
        if start + self.size <= watermark:
            raise self._late(event_time, start + self.size)
        until = event_time - self.allowed_lateness
        return self._add(context, content, event_time, start, max(until, watermark))

    def _add(
        self, context: ExecutionContext, content: Any, at: float, start: float, until: float
    ) -> Any:
        """Close the windows ending by ``until``; add ``content`` (of time ``at``) to its others.

        ``start``: the start of the newest window of ``at``.

        Returns what the closed windows produced (see :func:`_emit`). Its newest window
        keeps its message until it closes: held if it has an ack, if observers watch the
        node, or if this call closes windows.

        Raises:
            TypeError: The key function returned something unhashable.
            Exception: What the key function or :meth:`aggregate` raised; nothing changed.
        """
        key = None if self.key is None else self._key_of(content)
        ends = self._ends
        outputs = self._close(until, context) if ends and ends[0][0] <= until else None
        if at > self._latest and self.time_field is not None:
            self._latest = at
        # Into each of its windows still open, newest first (its message goes with the last).
        slide, size = self.slide, self.size
        message = context.message
        window = self._windows.get((key, start))
        if window is None:
            window = self._open_window(key, start)
        window.items.append(content)
        window.messages.append(message)  # type: ignore[arg-type]  # (None: skipped)
        if slide != size:  # sliding: the older windows it is in too
            start -= slide
            while start + size > at and start + size > until:
                window = self._windows.get((key, start)) or self._open_window(key, start)
                window.items.append(content)
                start -= slide
        if message is not None and (
            message.raw_ack is not None or outputs is not None or self._observed()
        ):
            context.hold()
        return None if outputs is None else self._emit(context, *outputs, message)

    def _open_window(self, key: Any, start: float) -> _Open:
        """A new window of ``key`` starting at ``start``; its timer set (processing time)."""
        window = self._windows[(key, start)] = _Open(key, start, start + self.size)
        heapq.heappush(self._ends, (window.end, next(self._order), window))
        if self.time_field is None:
            self._arm(window.end)
        return window

    def _close(
        self, until: float, context: ExecutionContext
    ) -> tuple[list[tuple[_Open, Any]], _Abandoned]:
        """Take the windows ending at or before ``until``, closed or given up on.

        Returns those closed, with their outputs, and those given up on (see
        :meth:`_gives_up`), with their errors.

        Raises:
            Exception: What :meth:`aggregate` raised, unless the node gives up on that
                window; nothing was taken then.
        """
        ends = self._ends
        closing: list[tuple[float, int, _Open]] = []
        while ends and ends[0][0] <= until:
            closing.append(heapq.heappop(ends))
        closed: list[tuple[_Open, Any]] = []
        abandoned: _Abandoned = []
        try:
            for *_, w in closing:
                try:
                    closed.append((w, self.aggregate(Window(w.key, w.start, w.end, w.items))))
                except Exception as error:
                    if not self._gives_up(context, error):
                        raise
                    abandoned.append((w, error))
        except BaseException:
            for entry in closing:
                heapq.heappush(ends, entry)
            raise
        windows = self._windows
        for window, _ in closed:
            del windows[(window.key, window.start)]
        for window, _ in abandoned:
            del windows[(window.key, window.start)]
        return closed, abandoned

    def _emit(
        self,
        context: ExecutionContext,
        closed: list[tuple[_Open, Any]],
        abandoned: _Abandoned,
        current: ChannelMessage | None,
    ) -> Any:
        """What a call that took windows returns: see :func:`_emit` and :meth:`_abandon`."""
        result = _emit(context, closed, current)
        return self._abandon(abandoned, current, result) if abandoned else result

    def _event_time(self, content: Any) -> float:
        """The event time of ``content``, epoch seconds.

        Raises:
            InvalidEventTime: The content has no usable ``time_field``.
        """
        field = self.time_field
        if content.__class__ is dict:  # (what isinstance(Mapping) finds too, at a third)
            value = content.get(field, _MISSING)
            if (value.__class__ is float or value.__class__ is int) and math.isfinite(value):
                return float(value)
        if not isinstance(content, Mapping):
            raise InvalidEventTime(
                f"window {self.id!r} takes event times from field {field!r} of a mapping; "
                f"the content is a {type(content).__name__}: {content!r:.80}"
            )
        try:
            value = content[field]
        except KeyError:
            raise InvalidEventTime(
                f"window {self.id!r}: the content has no field {field!r} (its event time): "
                f"{content!r:.80}"
            ) from None
        if value.__class__ is float or value.__class__ is int:
            if math.isfinite(value):
                return float(value)
        elif isinstance(value, datetime):
            if value.tzinfo is not None:
                return value.timestamp()
            raise InvalidEventTime(
                f"window {self.id!r}: field {field!r} holds a naive datetime ({value}); give "
                f"it a timezone, or send epoch seconds"
            )
        elif (
            isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        ):
            return float(value)  # a subclass (numpy's float64, say)
        raise InvalidEventTime(
            f"window {self.id!r}: field {field!r} holds {value!r:.40} "
            f"({type(value).__name__}), not epoch seconds (a finite number) or an aware datetime"
        )

    def _late(self, event_time: float, last_end: float) -> LateEvent:
        watermark = self.watermark
        return LateEvent(
            f"window {self.id!r}: an event of time {event_time} came {watermark - event_time:.6g}"
            f"s behind the watermark {watermark} (latest event time {self._latest} less "
            f"allowed_lateness {self.allowed_lateness}): its last window, ending at "
            f"{last_end}, was emitted already; raise allowed_lateness to take events this late",
            event_time=event_time,
            watermark=watermark,
            window_end=last_end,
        )

    # -- timers (processing time) ------------------------------------------------------------

    def _enter(self, runtime: NodeRuntime) -> None:
        super()._enter(runtime)
        self._armed = set()
        self._flush_sent = None
        if self.time_field is None:
            for end, _, _ in self._ends:  # windows held over from an earlier run
                self._arm(end)

    def _arm(self, end: float) -> None:
        """Have the run call :meth:`_due` at ``end`` (one timer per end: keys share them)."""
        runtime = self._runtime
        if runtime is None or end in self._armed:
            return
        self._armed.add(end)
        delay = max(0.0, end - self._now())
        runtime.run.call_later(delay, functools.partial(self._due, runtime.run, end))

    async def _due(self, run: object, end: float) -> None:
        """A timer: if windows are due, send the node a flush marker.

        Runs in the run's timer task. While a marker sent is not handled yet no other is
        sent, except on a Redis graph, where another worker process may have read it:
        there, while windows stay due, one more goes every ``_FLUSH_RETRY`` seconds.

        Raises:
            Exception: The marker could not be sent (Redis unreachable, say); logged by
                the run. On Redis the retry timer is set first.
        """
        runtime = self._runtime
        if runtime is None or run is not self._run:
            return  # an earlier run's
        self._armed.discard(end)
        ends = self._ends
        if not ends:
            return  # closed meanwhile, by a message
        now = self._now()
        if ends[0][0] > now:
            self._arm(ends[0][0])  # early (the clocks' rounding), or that window closed
            return
        distributed = runtime.run.distributed
        if distributed:
            self._arm(now + _FLUSH_RETRY)
        sent = self._flush_sent
        if sent is not None and (not distributed or now - sent < _FLUSH_RETRY):
            return  # one is on its way
        if self.mailbox.full():
            return  # messages are queued: each closes what is due when it is handled
        self._flush_sent = now
        marker = NodeMessage(None, {WINDOW_FLUSH: True})
        graph = runtime.run.graph
        try:
            if graph is None:
                await self.tell(marker)  # an actor
            else:
                await graph.send(self.id, marker)
        except (GraphNotRunning, ChannelClosed):
            self._flush_sent = None  # shutting down: the drain flushes every window

    def _clear(self) -> None:
        # The watermark stays: the windows it closed were emitted.
        self._windows = {}
        self._ends = []

    def _open(self) -> list[_Open]:
        return [window for *_, window in sorted(self._ends, key=lambda entry: entry[:2])]


def _seconds(name: str, value: Any) -> float:
    """``value`` as seconds, checked a finite number.

    Raises:
        TypeError: Not a number.
        ValueError: Not finite.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, not {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number of seconds, not {value!r}")
    return value
