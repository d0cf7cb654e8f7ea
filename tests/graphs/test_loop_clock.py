"""The wall clock of in-memory timers (a ``Ticker``'s): on a real loop the wall clock itself,
which follows a step of it (an NTP sync); on a virtual loop its clock, anchored to epoch
seconds (see also the virtual-clock test in ``tests/nodes/test_timers.py``)."""

from __future__ import annotations

import itertools
import time

import pytest

from spark_nodes.graphs._run import _loop_wall_clock

pytestmark = pytest.mark.anyio


async def test_on_a_real_loop_the_clock_follows_a_step_of_the_wall_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = _loop_wall_clock()
    real = time.time
    assert clock() == pytest.approx(real(), abs=0.05)
    monkeypatch.setattr(time, "time", lambda: real() + 3600.0)  # NTP stepped an hour ahead
    assert clock() - real() == pytest.approx(3600.0, abs=0.05)
    assert _loop_wall_clock()() - real() == pytest.approx(3600.0, abs=0.05)  # later runs too


async def test_a_pause_between_two_clock_reads_does_not_unstep_a_real_loops_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Regression: each call compared the loop's clock with the monotonic clock, read a
    moment apart; a pause of over 1 ms between the reads (GC, a throttled CPU) made that
    call read the anchored time, off by the whole NTP step (a ticker would sleep an hour)."""
    clock = _loop_wall_clock()
    real, real_monotonic = time.time, time.monotonic
    reads = itertools.count()
    with monkeypatch.context() as patch:
        patch.setattr(time, "time", lambda: real() + 3600.0)  # NTP stepped an hour ahead
        # Half a second passes between any two reads of the monotonic clock (the loop's
        # clock on asyncio reads it too): a long pause.
        patch.setattr(time, "monotonic", lambda: real_monotonic() + 0.5 * next(reads))
        stepped = [clock() - real(), _loop_wall_clock()() - real()]
    assert stepped == pytest.approx([3600.0, 3600.0], abs=0.05)
