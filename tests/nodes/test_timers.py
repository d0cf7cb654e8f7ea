"""Timers in memory: ``context.schedule`` and the ``Ticker`` source node.

Graph tests run on trio and asyncio with a virtual clock (trio's ``MockClock``, a
``looptime`` loop): a tick every 10 s or a message due in a minute takes no real time, and
``fail_after`` bounds follow the virtual clock (pytest-timeout is the real-time watchdog).
"""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from spark_nodes import (
    ExecutionContext,
    Graph,
    Node,
    NodeConfig,
    RetryPolicy,
    StopReason,
    Task,
    TaskType,
    Ticker,
    WiringError,
)
from spark_nodes.graphs._run import _loop_wall_clock
from spark_nodes.nodes.timers import CATCH_UP_LIMIT, delay_until
from spark_nodes.testing import Probe
from tests.virtual_clock import anyio_backend  # noqa: F401 - the virtual clocks

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]  # real seconds: the watchdog

LONG = TaskType.LONG_RUNNING
DOCS = Path(__file__).resolve().parents[2] / "docs" / "time-and-steps.md"


# -- the clock --------------------------------------------------------------------------


async def test_on_a_virtual_loop_the_clock_follows_the_loop_not_the_wall_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = _loop_wall_clock()
    start = clock()
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3600.0)  # the wall clock steps
    # Regression: a virtual clock that had not moved yet agreed with the monotonic clock,
    # so the wall clock was read (and its step followed).
    assert clock() == pytest.approx(start, abs=0.05)
    await anyio.sleep(60)  # virtual: no real time passes
    assert clock() - start == pytest.approx(60.0, abs=0.05)


# -- arguments ----------------------------------------------------------------------------


def test_a_delay_is_a_finite_number_of_seconds_at_least_zero() -> None:
    assert delay_until(2.5, None) == 2.5
    assert delay_until(0, None) == 0.0
    for bad in (-1, -0.001, math.inf, math.nan):
        with pytest.raises(ValueError, match="delay must be a finite number of seconds >= 0"):
            delay_until(bad, None)
    for wrong in ("1", True, None):
        with pytest.raises((TypeError, ValueError)):
            delay_until(wrong, None)  # type: ignore[arg-type]


def test_a_time_is_epoch_seconds_or_an_aware_datetime_and_the_past_is_due_now() -> None:
    soon = datetime.now(UTC) + timedelta(seconds=30)
    assert 28 < delay_until(None, soon) <= 30
    assert 28 < delay_until(None, time.time() + 30) <= 30
    assert delay_until(None, time.time() - 60) == 0.0
    with pytest.raises(ValueError, match="timezone-aware"):
        delay_until(None, datetime.now())
    with pytest.raises(TypeError, match="epoch seconds or an aware datetime"):
        delay_until(None, "tomorrow")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"one of delay= .* or at="):
        delay_until(1, time.time())
    with pytest.raises(ValueError, match=r"one of delay= .* or at="):
        delay_until(None, None)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({}, ValueError, "one of every= .* or cron="),
        ({"every": 1, "cron": "* * * * *"}, ValueError, "one of every="),
        ({"every": 0}, ValueError, "every must be a finite number of seconds > 0"),
        ({"every": -5}, ValueError, "every must be"),
        ({"every": math.inf}, ValueError, "every must be"),
        ({"cron": "every monday"}, ValueError, "cron expression 'every monday' does not parse"),
        ({"cron": "61 * * * *"}, ValueError, "does not parse"),
        ({"cron": 5}, TypeError, "cron must be a str"),
        ({"every": 1, "catch_up": "some"}, ValueError, "catch_up must be one of"),
        ({"every": 1, "grace": 0}, ValueError, "grace must be"),
        ({"cron": "* * * * *", "tz": "Mars/Olympus"}, ValueError, "names no time zone"),
        ({"cron": "* * * * *", "tz": 3}, TypeError, "tz must be a tzinfo"),
    ],
)
def test_a_ticker_with_a_bad_clock_fails_at_construction(
    options: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        Ticker(**options)


# -- when ticks are due -------------------------------------------------------------------


def test_every_ticks_on_multiples_of_its_period_since_the_epoch() -> None:
    ticker = Ticker(every=60)
    assert ticker.next_after(1_000_000_000.0) == 1_000_000_020.0
    assert ticker.next_after(1_000_000_020.0) == 1_000_000_080.0  # strictly after
    assert ticker.latest_due(1_000_000_020.0, 1_000_000_200.0) == 1_000_000_200.0
    assert ticker.latest_due(1_000_000_020.0, 1_000_000_050.0) == 1_000_000_020.0


@given(
    every=st.sampled_from([0.001, 0.05, 0.1, 1 / 3, 0.7, 7.7, 60.0, 3600.0]),
    start=st.floats(min_value=1.5e9, max_value=2.5e9),
)
def test_every_ticks_exactly_once_per_period_however_floats_round(
    every: float, start: float
) -> None:
    ticker = Ticker(every=every)
    tick = ticker.next_after(start)
    assert start < tick <= start + every + 1e-6
    for _ in range(200):
        following = ticker.next_after(tick)
        assert following - tick == pytest.approx(every, abs=2e-6)
        tick = following


def test_cron_ticks_when_the_expression_matches_in_its_time_zone() -> None:
    noon = datetime(2026, 6, 1, 11, 59, tzinfo=UTC).timestamp()
    assert (
        Ticker(cron="0 12 * * *").next_after(noon)
        == datetime(2026, 6, 1, 12, 0, tzinfo=UTC).timestamp()
    )
    # Noon in Paris is 10:00 UTC in June (CEST).
    paris = Ticker(cron="0 12 * * *", tz="Europe/Paris")
    assert paris.next_after(noon) == datetime(2026, 6, 2, 10, 0, tzinfo=UTC).timestamp()
    seconds = Ticker(cron="* * * * * */15")  # six fields: the sixth is seconds
    assert seconds.next_after(noon + 1) == noon + 15


def test_ticks_due_by_now_are_sent_and_missed_ones_follow_catch_up() -> None:
    last, now = 1000.0, 1050.5  # ticks at 1010 ... 1050 are due; 1050 is on time
    assert Ticker(every=10, catch_up="all").due(last, now) == ([1010, 1020, 1030, 1040, 1050], 0)
    assert Ticker(every=10, catch_up="latest").due(last, now) == ([1050], 4)
    assert Ticker(every=10, catch_up="skip").due(last, now) == ([1050], 4)
    late = 1059.5  # nothing on time: "latest" sends the newest missed one, "skip" none
    assert Ticker(every=10, catch_up="latest").due(last, late) == ([1050], 4)
    assert Ticker(every=10, catch_up="skip").due(last, late) == ([], 5)
    assert Ticker(every=10).due(last, 1009.0) == ([], 0)
    assert Ticker(every=10).due(last, 1010.2) == ([1010], 0)


def test_catching_up_all_sends_at_most_the_limit_and_counts_the_rest() -> None:
    ticker = Ticker(every=1, catch_up="all")
    ticks, skipped = ticker.due(0.0, 10_000_000.0)  # four months at one tick a second
    assert len(ticks) == CATCH_UP_LIMIT + 2  # the missed ones kept, and two on time (1 s)
    assert ticks[-1] == 10_000_000.0
    assert ticks == sorted(ticks)
    assert skipped + len(ticks) == 10_000_000


def test_the_last_tick_due_is_the_last_one_sent_even_a_hair_before_a_tick() -> None:
    ticker = Ticker(every=1, catch_up="all", grace=10)
    assert ticker.due(0.0, 4.9999995) == ([1.0, 2.0, 3.0, 4.0], 0)
    assert ticker.latest_due(0.0, 4.9999995) == 4.0  # 5.0 is not due yet: sent next time
    assert ticker.latest_due(4.0, 4.5) == 4.0


def test_a_cron_ticker_down_for_a_day_looks_at_no_more_than_the_limit() -> None:
    """A per-second cron down for a day: the newest missed ticks, the rest estimated."""
    start = datetime(2026, 6, 1, tzinfo=UTC).timestamp()
    every_second = Ticker(cron="* * * * * *", catch_up="all")
    ticks, skipped = every_second.due(start, start + 86_400)
    assert len(ticks) == CATCH_UP_LIMIT + 2  # the last two within the 1 s grace
    assert ticks[-1] == start + 86_400
    assert ticks == sorted(ticks)
    assert skipped == pytest.approx(86_400 - len(ticks), abs=2)
    latest, missed = Ticker(cron="* * * * * *").due(start, start + 86_400.5)
    assert latest == [start + 86_400]
    assert missed == pytest.approx(86_399, abs=2)


# -- context.schedule ---------------------------------------------------------------------


class Scheduler(Node):
    """Schedules what its input says: ``{"send": x, "delay": s, "to": id}``."""

    async def process(self, context: ExecutionContext) -> Any:
        order = context.inputs.content
        if isinstance(order, dict) and "send" in order:
            await context.schedule(order["send"], delay=order["delay"], to=order.get("to"))
            return None
        return {"arrived": order, "at": anyio.current_time()}


async def test_a_scheduled_message_arrives_after_its_delay_at_the_node_it_names() -> None:
    scheduler, sink = Scheduler(id="scheduler"), Probe(id="sink")
    other = Scheduler(id="other")
    scheduler >> [sink, other]  # wired, so that the run knows it
    other >> sink
    graph = Graph(start=scheduler)
    with anyio.fail_after(300):
        async with graph.open_run(Task(type=LONG)) as run:
            start = anyio.current_time()
            await run.send(scheduler, {"send": "self", "delay": 60})
            await run.send(scheduler, {"send": "there", "delay": 30, "to": "other"})
            await sink.wait_for(3)  # "self" arrives, and its output goes through other too
    first, second = [item for item in sink.items if item["arrived"] in ("self", "there")]
    assert first["arrived"] == "there"
    assert first["at"] - start == pytest.approx(30, abs=0.5)
    assert second["arrived"] == "self"
    assert second["at"] - start == pytest.approx(60, abs=0.5)


async def test_a_one_pass_run_and_wait_idle_wait_for_what_is_scheduled() -> None:
    scheduler, sink = Scheduler(id="scheduler"), Probe(id="sink")
    scheduler >> sink
    graph = Graph(start=scheduler)
    with anyio.fail_after(300):
        start = anyio.current_time()
        result = await graph.run(Task(inputs={"send": "later", "delay": 45}))
    assert result.stop_reason is StopReason.COMPLETED
    assert [item["arrived"] for item in sink.items] == ["later"]
    assert anyio.current_time() - start >= 45
    with anyio.fail_after(300):
        async with graph.open_run(Task(type=LONG)) as run:
            await run.send(scheduler, {"send": "again", "delay": 20})
            await run.wait_idle()
            assert [item["arrived"] for item in sink.items] == ["later", "again"]


async def test_a_node_drains_only_once_its_timers_have_fired() -> None:
    """A shutdown that comes while a message is scheduled waits for it: the message is
    handled, and what it causes forwarded, before the shutdown passes on."""
    scheduler, sink = Scheduler(id="scheduler"), Probe(id="sink")
    scheduler >> sink
    graph = Graph(start=scheduler)
    with anyio.fail_after(300):
        async with graph.open_run(Task(type=LONG)) as run:
            await run.send(scheduler, {"send": "last", "delay": 90})
        # leaving the block shuts the graph down at once
    assert [item["arrived"] for item in sink.items] == ["last"]
    assert run.result is not None
    assert run.result.stop_reason is StopReason.SHUTDOWN


async def test_a_cycle_drains_only_once_the_timers_of_its_nodes_have_fired() -> None:
    """On a cycle a node drains when the cycle is quiet: a node's pending timer keeps it
    from being quiet, so what the scheduled message causes still goes round."""
    source, scheduler, recorder = Node(id="source"), Scheduler(id="a"), Probe(id="b")
    source >> scheduler >> recorder
    recorder >> scheduler  # a cycle: b's outputs (none) would go back to a
    graph = Graph(start=source)
    with anyio.fail_after(300):
        async with graph.open_run(Task(type=LONG)) as run:
            await run.send(source, {"send": "later", "delay": 60})
    assert [item["arrived"] for item in recorder.items] == ["later"]
    assert run.result is not None
    assert run.result.left == {}


async def test_a_full_mailbox_holds_up_its_own_scheduled_message_only() -> None:
    """Timers share a task: a message due for a full mailbox waits apart from it, so a
    later timer to another node still fires on time."""
    release = anyio.Event()

    class Blocked(Node):
        async def process(self, context: ExecutionContext) -> None:
            await release.wait()

    class Orders(Node):
        async def process(self, context: ExecutionContext) -> None:
            for number in range(3):
                await context.schedule(number, delay=1, to="blocked")
            await context.schedule("on time", delay=2, to="sink")

    orders, sink = Orders(id="orders"), Probe(id="sink")
    blocked = Blocked(id="blocked", config=NodeConfig(mailbox_maxsize=1))
    orders >> [blocked, sink]
    graph = Graph(start=orders)
    with anyio.fail_after(300):
        async with graph.open_run(Task(type=LONG)) as run:
            start = anyio.current_time()
            await run.send(orders, "go")
            await sink.wait_for(1)
            assert anyio.current_time() - start == pytest.approx(2, abs=0.5)
            release.set()
    assert sink.items == ["on time"]
    assert run.result is not None
    assert run.result.node_stats["blocked"].processed == 3


async def test_a_retried_process_schedules_once() -> None:
    class Flaky(Node):
        attempts = 0

        async def process(self, context: ExecutionContext) -> None:
            await context.schedule("ping", delay=5, to="sink")
            await context.schedule("pong", delay=6, to="sink")
            Flaky.attempts += 1
            if Flaky.attempts < 3:
                raise RuntimeError("flaky")

    flaky = Flaky(id="flaky", config=NodeConfig(retry=RetryPolicy(max_attempts=3, initial_delay=0)))
    sink = Probe(id="sink")
    flaky >> sink
    with anyio.fail_after(300):
        result = await Graph(start=flaky).run(Task(inputs="go"))
    assert Flaky.attempts == 3
    assert sink.items == ["ping", "pong"]
    assert result.dead_lettered == 0


async def test_a_stopped_run_keeps_what_is_not_due_yet_in_its_mailbox() -> None:
    scheduled = anyio.Event()

    class Telling(Scheduler):
        async def process(self, context: ExecutionContext) -> Any:
            output = await super().process(context)
            scheduled.set()
            return output

    scheduler, sink = Telling(id="scheduler"), Probe(id="sink")
    scheduler >> sink
    graph = Graph(start=scheduler)
    with anyio.fail_after(300):
        async with graph.open_run(Task(type=LONG)) as run:
            await run.send(scheduler, {"send": "kept", "delay": 3600})
            await scheduled.wait()
            run.stop()
    assert sink.items == []
    assert scheduler.mailbox.qsize() == 1  # put in its mailbox early: the next run has it
    with anyio.fail_after(300):
        async with graph.open_run(Task(type=LONG)):
            await sink.wait_for(1)
    assert [item["arrived"] for item in sink.items] == ["kept"]


@pytest.mark.parametrize(
    ("arguments", "error", "match"),
    [
        ({"delay": -1}, ValueError, "delay must be a finite number of seconds >= 0"),
        ({}, ValueError, "one of delay="),
        ({"delay": 1, "to": "nowhere"}, WiringError, "'nowhere' is not a node of graph"),
        ({"delay": 1, "key": ""}, TypeError, "key must be a non-empty str"),
    ],
)
async def test_bad_schedule_arguments_fail_the_call_with_a_clear_error(
    arguments: dict[str, Any], error: type[Exception], match: str
) -> None:
    failures: list[BaseException] = []

    class Bad(Node):
        async def process(self, context: ExecutionContext) -> None:
            try:
                await context.schedule("x", **arguments)
            except Exception as caught:
                failures.append(caught)
                raise

    bad = Bad(id="bad")
    with anyio.fail_after(300):
        result = await Graph(start=bad).run(Task(inputs="go"))
    (failure,) = failures
    assert isinstance(failure, error)
    assert re.search(match, str(failure))
    assert result.dead_lettered == 1  # the message is kept, not lost


async def test_a_key_used_twice_in_one_call_is_refused() -> None:
    failures: list[BaseException] = []

    class Twice(Node):
        async def process(self, context: ExecutionContext) -> None:
            if context.inputs.content != "go":
                return
            await context.schedule("a", delay=1, key="reminder")
            try:
                await context.schedule("b", delay=2, key="reminder")
            except ValueError as caught:
                failures.append(caught)

    twice, sink = Twice(id="twice"), Probe(id="sink")
    twice >> sink
    with anyio.fail_after(300):
        await Graph(start=twice).run(Task(inputs="go"))
    assert "ran already" in str(failures[0])
    assert sink.items == []  # to itself: "a" came back to twice, which forwards nothing


async def test_an_actor_schedules_to_itself() -> None:
    class Reminder(Node):
        def __init__(self) -> None:
            super().__init__(id="reminder")
            self.seen: list[Any] = []

        async def process(self, context: ExecutionContext) -> None:
            self.seen.append(context.inputs.content)
            if context.inputs.content == "remind me":
                await context.schedule("reminder", delay=10)

    reminder = Reminder()
    with anyio.fail_after(300):
        async with reminder.open_actor() as actor:
            await actor.tell("remind me")
        # the actor drained only once its timer fired
    assert reminder.seen == ["remind me", "reminder"]


# -- Ticker -------------------------------------------------------------------------------


async def test_a_ticker_ticks_on_its_clock_until_the_graph_shuts_down() -> None:
    ticker, sink = Ticker(every=10, id="ticker"), Probe(id="sink")
    ticker >> sink
    graph = Graph(start=ticker)
    with anyio.fail_after(300):
        async with graph.open_run(Task(type=LONG)):
            await sink.wait_for(4)
    ticks = [item["at"] for item in sink.items]
    assert len(ticks) >= 4
    assert all(later - earlier == pytest.approx(10) for earlier, later in pairwise(ticks))
    assert all(tick % 10 == pytest.approx(0, abs=1e-6) for tick in ticks)
    assert all(item["missed"] == 0 for item in sink.items)
    count = len(sink.items)
    await anyio.sleep(60)  # the run is over: no more ticks
    assert len(sink.items) == count


async def test_a_ticker_restarted_after_a_pause_catches_up_as_configured() -> None:
    outcomes = {}
    for catch_up in ("latest", "all", "skip"):
        ticker = Ticker(every=10, catch_up=catch_up, id="ticker")
        sink = Probe(id="sink")
        ticker >> sink
        graph = Graph(start=ticker)
        with anyio.fail_after(300):
            async with graph.open_run(Task(type=LONG)):
                await sink.wait_for(1)
            first, before = sink.items[-1]["at"], len(sink.items)
            await anyio.sleep(55)  # five ticks come due while nothing runs
            async with graph.open_run(Task(type=LONG)):
                await sink.wait_for(before + 1)
                await anyio.sleep(0.5)  # virtual: what the restart sends at once is out
        ticks = sink.items[before:]
        outcomes[catch_up] = (first, [(item["at"] - first, item["missed"]) for item in ticks])
    _, latest = outcomes["latest"]
    assert latest[0][1] >= 4  # one tick stands for the missed ones
    assert latest[1:] == []
    _, every_one = outcomes["all"]
    assert [round(offset) for offset, _ in every_one][:5] == [10, 20, 30, 40, 50]
    _, skipped = outcomes["skip"]
    assert skipped == [] or skipped[0][0] > 55  # none of the missed ones


async def test_a_ticker_s_process_turns_ticks_into_work() -> None:
    class Heartbeat(Ticker):
        def process(self, context: ExecutionContext) -> Any:
            return f"alive at {datetime.fromtimestamp(context.inputs.content['at'], UTC):%S}"

    heartbeat, sink = Heartbeat(cron="* * * * * */15", id="heartbeat"), Probe(id="sink")
    heartbeat >> sink
    with anyio.fail_after(300):
        async with Graph(start=heartbeat).open_run(Task(type=LONG)):
            await sink.wait_for(2)
    assert {item[-2:] for item in sink.items} <= {"00", "15", "30", "45"}


async def test_the_docs_example_reminds_once_and_reports_every_hour(
    capsys: pytest.CaptureFixture[str],
) -> None:
    section = DOCS.read_text().split("## Timers and schedules", 1)[1].split("\n## ", 1)[0]
    (example,) = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    example = example.replace("anyio.run(main)", "")
    namespace: dict[str, Any] = {"__name__": "docs_example"}
    exec(compile(example, str(DOCS), "exec"), namespace)
    with anyio.fail_after(3 * 86_400):  # virtual seconds
        await namespace["main"]()
    printed = capsys.readouterr().out.splitlines()
    assert printed.count("reminding about order 1") == 1
    assert not any("order 2" in line for line in printed)
    assert sum(line.startswith("hourly report due at") for line in printed) == 48
