"""Park a task in a line of waiters and wake it, on asyncio or trio, without anyio's overhead.

A waiter is an object with ``done()`` and ``set_result(None)``: an ``asyncio.Future`` on
asyncio, a :class:`_TrioWaiter` on trio. Callers keep waiters in a ``list`` and re-check
their condition after waking, so a spurious wake-up is harmless and a lost one is not
possible: a task that is woken and cancelled before it runs passes the wake-up on.

Only the blocking path comes here; a channel that can complete at once never parks, which
is why this is not an ``anyio.Event`` (an allocation and several calls per wait). Lines are
lists, not deques: they hold a waiter or two, and an empty deque costs 760 bytes against a
list's 56 (10,000 mailboxes).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Protocol

import sniffio


class Waiter(Protocol):
    """What a waker needs from a parked task's handle."""

    def done(self) -> bool:
        """True once woken or cancelled."""
        ...

    def set_result(self, result: None, /) -> None:
        """Wake the parked task."""
        ...


async def park(waiters: list[Any]) -> None:
    """Wait at the end of ``waiters`` until :func:`wake_one` or :func:`wake_all` wakes us.

    Raises:
        BaseException: Whatever cancelled the task; a wake-up that arrived first is
            handed to the next waiter so it is not lost.
    """
    if sniffio.current_async_library() == "trio":
        await _park_trio(waiters)
        return
    future = asyncio.get_running_loop().create_future()
    waiters.append(future)
    try:
        await future
    except BaseException:
        if future.cancelled():
            # Still in line (wakers skip only what they pop): leave the line.
            with contextlib.suppress(ValueError):
                waiters.remove(future)
        else:
            # Woken, then cancelled before running: someone else must use the wake-up.
            wake_one(waiters)
        raise


def wake_one(waiters: list[Any]) -> None:
    """Wake the first waiter still waiting, if any."""
    while waiters:
        waiter = waiters.pop(0)
        if not waiter.done():
            waiter.set_result(None)
            return


def wake_all(waiters: list[Any]) -> None:
    """Wake every waiter."""
    while waiters:
        waiter = waiters.pop(0)
        if not waiter.done():
            waiter.set_result(None)


class _TrioWaiter:
    __slots__ = ("_done", "_reschedule", "_task")

    def __init__(self, task: Any, reschedule: Any) -> None:
        self._task = task
        self._reschedule = reschedule
        self._done = False

    def done(self) -> bool:
        return self._done

    def set_result(self, _result: None) -> None:
        self._done = True
        self._reschedule(self._task)


async def _park_trio(waiters: list[Any]) -> None:
    import trio  # noqa: PLC0415 - optional; sniffio saw it running, so it is installed

    waiter = _TrioWaiter(trio.lowlevel.current_task(), trio.lowlevel.reschedule)
    waiters.append(waiter)

    def abort(_raise_cancel: Any) -> trio.lowlevel.Abort:
        # Trio calls this only while we are still parked, never after a reschedule,
        # so no wake-up can be lost here.
        waiter._done = True
        waiters.remove(waiter)
        return trio.lowlevel.Abort.SUCCEEDED

    await trio.lowlevel.wait_task_rescheduled(abort)
