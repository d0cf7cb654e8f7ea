"""The wall clock of in-memory timers (a ``Ticker``'s): the loop's clock, anchored to epoch
seconds, which follows a step of the wall clock on a real loop (an NTP sync)."""

from __future__ import annotations

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
