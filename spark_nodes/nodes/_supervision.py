"""Supervision: restart a node's crashed worker loop per its ``RestartPolicy``, or give up.

Shared by graph runs and actors. A crash is an error escaping the loop (from a ``go()`` of
the node's own, a mailbox, a commit), not a failing ``process`` (retried, dead-lettered).
A durable mailbox's store being unreachable is no crash: the loop waits for it and starts
again, however long that takes (see :mod:`spark_nodes.nodes._outage`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import anyio

from spark_nodes.errors import BackendUnavailable

if TYPE_CHECKING:
    from spark_nodes.nodes._runtime import NodeRuntime

__all__ = ["ON_STOP_TIMEOUT", "supervise"]

ON_STOP_TIMEOUT = 5.0
"""Seconds the ``on_stop`` hooks of a run (or an actor) get together, shielded."""


async def supervise(
    runtime: NodeRuntime,
    loop: Callable[[], Awaitable[None]],
    *,
    stopping: Callable[[], bool],
    give_up: Callable[[Exception], None],
) -> None:
    """Await ``loop()`` until it returns; after each crash, restart it or give up.

    Each crash is told to ``node.on_failure`` first (an error it raises is logged). A crash
    while ``stopping()`` ends the loop quietly. More than ``max_restarts`` crashes within
    ``within_seconds`` calls ``give_up(error)`` and returns; otherwise the loop is started
    again after ``RestartPolicy.delay(n)`` (unless the node was stopped meanwhile).
    """
    node = runtime.node
    policy = node.config.restart
    crashes: list[float] = []
    while True:
        try:
            await loop()
        except BackendUnavailable as error:
            if runtime.durable is None or stopping():
                raise  # no store to wait for, or no loop wanted any more
            runtime.outage.began(runtime.log, error)  # (logged once per outage)
            await runtime.outage.wait()
            if runtime.should_stop():
                return
            continue  # not a crash: the restart policy is not spent on an outage
        except Exception as error:  # a crash: this is where it is handled
            try:
                await node.on_failure(error)
            except Exception:  # logged; supervision goes on
                runtime.log.exception("on_failure failed")
            if stopping():
                runtime.log.info("worker loop ended with an error while stopping",
                                 error=repr(error))  # fmt: skip
                return
            now = anyio.current_time()  # the clock the restart delays sleep on
            crashes = [t for t in crashes if now - t <= policy.within_seconds]
            if len(crashes) >= policy.max_restarts:
                runtime.log.exception("worker loop crashed too often",
                                      restarts=len(crashes), exc_info=error)  # fmt: skip
                give_up(error)
                return
            crashes.append(now)
            runtime.restarts += 1
            runtime.log.warning("worker loop crashed; restarting", restart=len(crashes),
                                exc_info=error)  # fmt: skip
        else:
            return
        await anyio.sleep(policy.delay(len(crashes)))
        if runtime.should_stop():  # may have been asked while we slept
            return
