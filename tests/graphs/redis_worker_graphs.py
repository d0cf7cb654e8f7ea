"""Graphs that ``test_redis_crashes.py`` runs in worker processes.

Started as ``python -m spark_nodes worker tests.graphs.redis_worker_graphs:<factory>
--redis URL --namespace NS --nodes ...``: every worker builds the same graph. What the
nodes did is recorded in the graph state (in Redis), where the test reads it:

- ``deliveries:<node>``: one item per ``process`` call (a redelivery adds one more);
- ``done:<n>`` and ``applied``: the sink's effect, applied once per message id whatever
  the redeliveries (a transaction), and how often it was applied;
- ``started:<payload>``: a marker that a stalling message is being worked on;
- ``charges``: one item per charge a durable step made (``charge_once``);
- ``ticks``: one item per tick handled, with its message id (``ticker_pipeline``);
- ``refused``: one item per failure the error handler got (``refusing_pipeline``).
"""

from __future__ import annotations

import os
import signal
from typing import Any

import anyio
import structlog

from spark_nodes import (
    CountWindow,
    ExecutionContext,
    FailedMessage,
    Graph,
    Node,
    NonRetriableError,
    Ticker,
)
from spark_nodes.channels import RedisChannel
from spark_nodes.channels.mailbox import Commit
from spark_nodes.state import StateTransaction
from tests.seeds import seed_this_process

# A worker process started by a randomized test draws (retry jitter) from the seed the test
# gave it, so the test's seed replays the workers too.
seed_this_process()

_log = structlog.get_logger("tests")

# Leases outlive a Redis restart (renewed every second); a killed worker's entries are
# reclaimed after 3 s.
# Random kills every 1-2 s can hit the holders of one message three times on a loaded
# machine (it was dead-lettered once in 2,000, with 29 kills): the crash tests are about
# loss, not poison (that is the poison test's, with QUICK_OPTIONS).
CRASH_OPTIONS = {"visibility_timeout": 3.0, "max_deliveries": 10}
QUICK_OPTIONS = {"visibility_timeout": 1.0, "max_deliveries": 3}
WORK_SECONDS = 0.001  # per message and node: kills land mid-stream


class Step(Node):
    """Records the delivery, works a little, passes the number on."""

    async def process(self, context: ExecutionContext) -> Any:
        number = context.inputs.content["n"]
        await context.graph_state.append(f"deliveries:{self.id}", number)
        await anyio.sleep(WORK_SECONDS)
        return {"n": number}


class IdempotentSink(Node):
    """Applies each message's effect once per idempotency key, however often it arrives."""

    async def process(self, context: ExecutionContext) -> None:
        number = context.inputs.content["n"]
        await context.graph_state.append(f"deliveries:{self.id}", number)

        async def apply_once(tx: StateTransaction) -> None:
            if not await tx.exists(f"done:{number}"):
                tx.set(f"done:{number}", True)
                tx.set("applied", await tx.get("applied", 0) + 1)

        await context.graph_state.transaction(apply_once)


def crash_pipeline() -> Graph:
    """``first >> second >> sink``; the sink's effect is idempotent."""
    first, second, sink = Step(id="first"), Step(id="second"), IdempotentSink(id="sink")
    first >> second >> sink
    return Graph(first, name="crash", mailbox_options=CRASH_OPTIONS)


class Stalling(Node):
    """Marks that it started ``"stall-me"`` and works on it for a while; others pass."""

    async def process(self, context: ExecutionContext) -> Any:
        payload = context.inputs.content
        if payload == "stall-me":
            await context.graph_state.set(f"started:{os.getpid()}", True)
            await anyio.sleep(0.5)  # the test freezes this process meanwhile
        return payload


class Recorder(Node):
    """Appends every output it gets."""

    async def process(self, context: ExecutionContext) -> None:
        await context.graph_state.append("outputs", context.inputs.content)


def stall_pipeline() -> Graph:
    """``slow >> record``: the test stalls a worker of ``slow``."""
    slow = Stalling(id="slow")
    slow >> Recorder(id="record")
    return Graph(slow, name="stall", mailbox_options=QUICK_OPTIONS)


class Poisoned(Node):
    """Kills its own process on ``"poison"``: what a segfault or an OOM kill looks like."""

    async def process(self, context: ExecutionContext) -> Any:
        payload = context.inputs.content
        await context.graph_state.append("deliveries:poisoned", payload)
        if payload == "poison":
            os.kill(os.getpid(), signal.SIGKILL)
        return payload


def poison_pipeline() -> Graph:
    """``victim >> record``: ``"poison"`` kills whichever worker of ``victim`` takes it."""
    victim = Poisoned(id="victim")
    victim >> Recorder(id="record")
    return Graph(victim, name="poison", mailbox_options=QUICK_OPTIONS)


class ChargeOnce(Node):
    """Charges in a durable step (the charge is recorded in the graph state); on a first
    delivery it then logs ``charged`` and hangs, for the test to SIGKILL its worker."""

    async def process(self, context: ExecutionContext) -> Any:
        order = context.inputs.content

        async def charge() -> dict[str, Any]:
            await context.graph_state.append("charges", order)
            return {"receipt": f"r-{order}", "pid": os.getpid()}

        receipt = await context.step("charge", charge)
        assert context.message is not None
        if context.message.metadata["delivery_count"] == 1:
            _log.info("charged", order=order)
            await anyio.sleep_forever()  # killed here: the step is stored, nothing committed
        return {"order": order, **receipt}


def charge_once() -> Graph:
    """``pay >> ship``: a charge in a step, then the order is shipped (recorded)."""
    pay, ship = ChargeOnce(id="pay"), Recorder(id="ship")
    pay >> ship
    return Graph(pay, name="charge", mailbox_options=QUICK_OPTIONS)


class NotedWindow(CountWindow):
    """A count window that records each delivery (``deliveries:<node>``) before holding it."""

    async def process(self, context: ExecutionContext) -> Any:
        await context.graph_state.append(f"deliveries:{self.id}", context.inputs.content)
        return super().process(context)


def window_pipeline() -> Graph:
    """``window >> record``: windows of six messages; the test kills a worker holding some."""
    window = NotedWindow(6, id="window")
    window >> Recorder(id="record")
    return Graph(window, name="window", mailbox_options=QUICK_OPTIONS)


class TickRecorder(Node):
    """Records each tick it gets as ``"<at> <message id>"`` (``ticks``): a redelivery has
    the tick's id again, a tick sent twice would have another."""

    async def process(self, context: ExecutionContext) -> None:
        tick = context.inputs.content
        await context.graph_state.append("ticks", f"{tick['at']!r} {context.inputs.id}")


def ticker_pipeline() -> Graph:
    """``tick >> record``: a tick every 0.25 s, missed ones caught up; the test kills the
    worker processes that serve the ticker."""
    tick = Ticker(every=0.25, catch_up="all", id="tick")
    tick >> TickRecorder(id="record")
    return Graph(tick, name="ticker", mailbox_options=QUICK_OPTIONS)


class Refusing(Node):
    """Refuses every order for good (it goes to the error route), recording each delivery.

    It makes its process's commits of a route hang on an order's first delivery, before
    the commit (order ``"hang before"``) or after it (``"hang after"``), logging
    ``route commit hangs``: the test SIGKILLs the worker there.
    """

    async def process(self, context: ExecutionContext) -> Any:
        order = context.inputs.content
        await context.graph_state.append("deliveries:pay", order)
        _hang_in_route_commits()
        raise NonRetriableError(f"refused {order}")


def _hang_in_route_commits() -> None:
    """Patch ``RedisChannel.commit`` in this (worker) process, once (see ``Refusing``)."""
    commit = RedisChannel.commit
    if getattr(commit, "hangs", False):
        return

    async def hanging(self: RedisChannel, batch: Commit) -> list[bool]:
        edges = {output.metadata.get("edge") for sends in batch.sends for _, output in sends}
        firsts = [m.payload for m in batch.messages if m.metadata.get("delivery_count") == 1]
        where = firsts[0] if "pay-!>refuse" in edges and firsts else None
        if where == "hang before":
            _log.info("route commit hangs", where=where)
            await anyio.sleep_forever()  # killed here: nothing committed
        done = await commit(self, batch)
        if where == "hang after":
            _log.info("route commit hangs", where=where)
            await anyio.sleep_forever()  # killed here: routed and acked
        return done

    hanging.hangs = True  # type: ignore[attr-defined]
    RedisChannel.commit = hanging  # type: ignore[method-assign]


class RecordRefusal(Node):
    """The error handler: records each failure it gets (``refused``)."""

    async def process(self, context: ExecutionContext) -> None:
        failed: FailedMessage = context.inputs.content
        seen = {"order": failed["content"], "message_id": failed["message_id"]}
        await context.graph_state.append("refused", seen)


def refusing_pipeline() -> Graph:
    """``pay.on_error() >> refuse``: the test kills pay's worker in a route's commit."""
    pay = Refusing(id="pay")
    pay.on_error() >> RecordRefusal(id="refuse")
    return Graph(pay, name="refusing", mailbox_options=QUICK_OPTIONS)
