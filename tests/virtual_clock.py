"""Both anyio backends on a virtual clock, for the tests of time: import ``anyio_backend``.

``from tests.virtual_clock import anyio_backend`` in a test module runs its tests on trio
(``MockClock``) and on asyncio (a ``looptime`` loop): a sleep of an hour takes no real
time, and ``anyio.fail_after`` bounds follow the virtual clock (keep pytest-timeout as the
real-time watchdog).
"""

from __future__ import annotations

from typing import Any

import looptime
import pytest
from trio.testing import MockClock

__all__ = ["anyio_backend"]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """Both anyio backends, each with a virtual clock."""
    if request.param == "trio":
        return ("trio", {"clock": MockClock(autojump_threshold=0)})
    return ("asyncio", {"loop_factory": looptime.new_event_loop})
