"""Windows in memory: count and time windows, tumbling and sliding, keyed, flushed at the end.

Every test runs on trio and asyncio with a virtual clock (trio's ``MockClock``, a
``looptime`` loop), so that processing-time windows and their timers take no real time and
do not depend on the machine's load; one test runs on the real clock. pytest-timeout is the
real-time watchdog (``fail_after`` follows the virtual clock).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import pytest

from spark_nodes import (
    CountWindow,
    ExecutionContext,
    Graph,
    GraphResult,
    InvalidEventTime,
    LateEvent,
    Node,
    NodeConfig,
    NonRetriableError,
    RetryPolicy,
    StopReason,
    Task,
    TaskType,
    TimeWindow,
    Window,
)
from spark_nodes.channels import ChannelMessage
from spark_nodes.graphs import GraphEvent
from spark_nodes.graphs.checkpoint import read_checkpoint
from spark_nodes.nodes.windows import WINDOW_FLUSH
from spark_nodes.testing import Probe
from tests.virtual_clock import anyio_backend  # noqa: F401 - the virtual clocks

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]  # real seconds: the watchdog

LONG = TaskType.LONG_RUNNING
DOCS = Path(__file__).resolve().parents[2] / "docs" / "time-and-steps.md"


class Run:
    """A window wired to a probe in a long-running graph: what came out, what failed.

    ``when``: the edge's condition. ``acks``: send each item as a message that carries an
    ack (as a bridged queue's do), recorded in :attr:`acked`.
    """

    def __init__(
        self, window: Node, *, when: Callable[[Any], bool] | None = None, acks: bool = False
    ) -> None:
        self.window = window
        self.sink = Probe(id="sink")
        if when is None:
            window >> self.sink
        else:
            window.on(when) >> self.sink
        self.graph = Graph(start=window)
        self.result: GraphResult | None = None
        self.acks = acks
        self.acked: list[Any] = []

    async def feed(self, items: Iterable[Any]) -> list[Any]:
        """Send ``items``, shut the graph down (the drain flushes); return the outputs."""
        with anyio.fail_after(30):
            async with self.graph.open_run(Task(type=LONG)) as run:
                for item in items:
                    await self.send(item)
        self.result = run.result
        return self.sink.items

    async def send(self, item: Any) -> None:
        if not self.acks:
            await self.graph.send(self.window, item)
            return

        async def ack() -> None:
            self.acked.append(item)

        await self.window.mailbox.send(ChannelMessage(item, ack=ack))

    async def dead_letters(self) -> list[dict[str, Any]]:
        letters = []
        while not self.graph.dead_letters.empty():
            letter = await self.graph.dead_letters.receive()
            letters.append({"payload": letter.payload, **letter.metadata["dead_letter"]})
        return letters


def items_of(outputs: list[dict[str, Any]]) -> list[list[Any]]:
    return [output["items"] for output in outputs]


# -- count windows ------------------------------------------------------------------------


async def test_a_count_window_forwards_every_size_messages_and_the_rest_at_the_end() -> None:
    run = Run(CountWindow(3, id="window"))
    outputs = await run.feed(range(8))
    assert items_of(outputs) == [[0, 1, 2], [3, 4, 5], [6, 7]]  # [6, 7]: flushed as it drained
    assert all(output["key"] is None for output in outputs)
    assert run.result is not None
    assert run.result.stop_reason is StopReason.SHUTDOWN
    assert run.result.dead_lettered == 0


async def test_a_count_window_starts_when_its_first_item_comes_and_ends_when_it_closes() -> None:
    window = CountWindow(2, id="window")
    run = Run(window)
    graph = run.graph
    with anyio.fail_after(30):
        async with graph.open_run(Task(type=LONG)) as running:
            await running.send(window, "a")
            await anyio.sleep(7)  # on the virtual clock
            await running.send(window, "b")
            await run.sink.wait_for(1)
    (output,) = run.sink.items
    assert output["items"] == ["a", "b"]
    assert output["end"] - output["start"] == pytest.approx(7)
    assert abs(output["start"] - datetime.now(UTC).timestamp()) < 60  # epoch seconds


async def test_a_sliding_count_window_opens_a_window_every_slide_messages() -> None:
    outputs = await Run(CountWindow(4, slide=2, id="window")).feed(range(9))
    assert items_of(outputs) == [
        [0, 1, 2, 3],
        [2, 3, 4, 5],
        [4, 5, 6, 7],
        [6, 7, 8],  # flushed at the end, with the window that opened at 8
        [8],
    ]


async def test_keyed_count_windows_count_each_key_apart() -> None:
    window = CountWindow(2, key=lambda word: word[0], id="window")
    outputs = await Run(window).feed(["apple", "bean", "avocado", "beet", "apricot", "corn"])
    assert [(output["key"], output["items"]) for output in outputs] == [
        ("a", ["apple", "avocado"]),
        ("b", ["bean", "beet"]),
        ("a", ["apricot"]),  # flushed at the end, key by key
        ("c", ["corn"]),
    ]


async def test_a_window_acks_its_messages_once_the_last_window_they_are_in_is_forwarded() -> None:
    """Messages that carry an ack (a bridged queue, say) are held: each is acked with the
    call that forwards the last window it is in, after that window went out."""
    acked: list[int] = []

    def ack_for(number: int) -> Any:
        async def ack() -> None:
            acked.append(number)

        return ack

    window = CountWindow(3, slide=1, id="window")
    run = Run(window)
    with anyio.fail_after(30):
        async with run.graph.open_run(Task(type=LONG)) as running:
            for number in range(2):
                await window.mailbox.send(ChannelMessage(number, ack=ack_for(number)))
            await running.wait_idle()
            assert acked == []
            assert [message.payload for message in window.held] == [0, 1]
            await window.mailbox.send(ChannelMessage(2, ack=ack_for(2)))
            await run.sink.wait_for(1)
            await running.wait_idle()
            assert acked == [0]  # 1 and 2 are in the next windows too
            assert [message.payload for message in window.held] == [1, 2]
    assert items_of(run.sink.items) == [[0, 1, 2], [1, 2], [2]]
    assert sorted(acked) == [0, 1, 2]  # the rest with the flush


async def test_aggregate_turns_a_window_into_the_output_and_none_forwards_nothing() -> None:
    class Total(CountWindow):
        def aggregate(self, window: Window) -> Any:
            total = sum(window.items)
            return None if total == 0 else {"total": total, "count": len(window.items)}

    outputs = await Run(Total(2, id="total")).feed([0, 0, 1, 2, 3])
    assert outputs == [{"total": 3, "count": 2}, {"total": 3, "count": 1}]


async def test_a_window_whose_aggregate_fails_at_the_last_attempt_is_dead_lettered() -> None:
    """The node gives up on the window, not on the key: the next window goes on."""

    class Picky(CountWindow):
        def aggregate(self, window: Window) -> Any:
            if "bad" in window.items:
                raise ValueError("no bad apples")
            return window.items

    run = Run(Picky(3, id="window"))
    outputs = await run.feed(["a", "b", "bad", "c", "d", "e"])
    assert outputs == [["c", "d", "e"]]
    letters = await run.dead_letters()
    assert sorted((letter["payload"], letter["phase"]) for letter in letters) == [
        ("a", "window"),
        ("b", "window"),
        ("bad", "process"),  # the message that completed it fails with it
    ]
    assert {letter["error"] for letter in letters} == {"no bad apples"}


async def test_a_window_whose_aggregate_fails_at_the_end_has_its_messages_dead_lettered() -> None:
    class Picky(CountWindow):
        def aggregate(self, window: Window) -> Any:
            if len(window.items) < self.size:
                raise ValueError("only whole windows")
            return window.items

    run = Run(Picky(2, id="window"))
    outputs = await run.feed(["a", "b", "c"])
    assert outputs == [["a", "b"]]
    (letter,) = await run.dead_letters()  # nothing lost: "c" is a dead letter
    assert (letter["payload"], letter["phase"], letter["node"]) == ("c", "window", "window")
    assert letter["error"] == "only whole windows"


async def test_a_one_pass_run_flushes_its_partial_window_when_it_completes() -> None:
    window, sink = CountWindow(10, id="window"), Probe(id="sink")
    window >> sink
    with anyio.fail_after(30):
        result = await Graph(start=window).run(Task(inputs="only"))
    assert result.stop_reason is StopReason.COMPLETED
    assert items_of(sink.items) == [["only"]]


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])  # real clocks: file I/O in a thread
async def test_a_checkpoint_keeps_the_messages_of_open_windows_and_a_resume_flushes_them(
    tmp_path: Path,
) -> None:
    path = tmp_path / "windows.checkpoint"
    window = CountWindow(5, id="window")
    run = Run(window)
    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            running = await group.start(run.graph.run, Task(type=LONG))
            for number in range(3):
                await running.send(window, number)
            await running.wait_idle()
            await run.graph.checkpoint(path)
            group.cancel_scope.cancel()  # a crash: the open window is lost with the process
    checkpoint = await read_checkpoint(path)
    assert len(checkpoint.messages["window"]) == 3

    again, sink = CountWindow(5, id="window"), Probe(id="sink")
    again >> sink
    with anyio.fail_after(30):
        await Graph(start=again).resume(path)
    assert items_of(sink.items) == [[0, 1, 2]]


async def test_a_count_window_with_several_loops_takes_every_message_once() -> None:
    window = CountWindow(10, id="window", config=NodeConfig(concurrency=3))
    outputs = await Run(window).feed(range(95))
    windows = items_of(outputs)
    assert sorted(item for items in windows for item in items) == list(range(95))
    assert sorted(map(len, windows)) == [5] + [10] * 9  # one process: one set of windows


async def test_a_flush_marker_saying_all_closes_every_open_window_now() -> None:
    window = CountWindow(10, key=lambda n: n % 2, id="window")
    run = Run(window)
    with anyio.fail_after(30):
        async with run.graph.open_run(Task(type=LONG)) as running:
            for number in range(5):
                await running.send(window, number)
            await running.send(window, None, metadata={WINDOW_FLUSH: True})  # due: none
            await running.send(window, None, metadata={WINDOW_FLUSH: "all"})
            await run.sink.wait_for(2)
            assert window.held == []
            await running.send(window, 5)
    assert [(output["key"], output["items"]) for output in run.sink.items] == [
        (0, [0, 2, 4]),
        (1, [1, 3]),
        (1, [5]),
    ]


# -- time windows ---------------------------------------------------------------------------


async def test_a_processing_time_window_closes_on_its_timer_while_no_message_comes() -> None:
    window = TimeWindow(10, id="window")
    run = Run(window)
    with anyio.fail_after(60):  # virtual seconds
        async with run.graph.open_run(Task(type=LONG)) as running:
            for number in range(3):
                await running.send(window, number)
            (output,) = await run.sink.wait_for(1)  # the clock jumps to the window's end
            assert output["items"] == [0, 1, 2]
            await anyio.sleep(10)  # a window later
            await running.send(window, 3)
            await run.sink.wait_for(2)
    first, second = run.sink.items
    assert first["end"] - first["start"] == 10
    assert first["start"] % 10 == 0  # aligned on the epoch
    assert second["items"] == [3]
    assert second["start"] >= first["end"]
    assert window.held == []


async def test_sliding_processing_time_windows_each_close_on_time() -> None:
    window = TimeWindow(10, slide=5, id="window")
    run = Run(window)
    with anyio.fail_after(60):
        async with run.graph.open_run(Task(type=LONG)) as running:
            await running.send(window, "x")
            await run.sink.wait_for(2)  # the two windows "x" is in, one after the other
    first, second = run.sink.items
    assert (first["items"], second["items"]) == (["x"], ["x"])
    assert second["start"] - first["start"] == 5
    assert second["end"] - first["end"] == 5


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])  # the real clocks
async def test_a_processing_time_window_closes_on_its_timer_on_the_real_clock() -> None:
    window = TimeWindow(0.05, id="window")
    run = Run(window)
    with anyio.fail_after(10):
        async with run.graph.open_run(Task(type=LONG)) as running:
            for number in range(3):
                await running.send(window, number)
            while sum(len(items) for items in items_of(run.sink.items)) < 3:
                await run.sink.wait_for(len(run.sink.items) + 1)  # (3 sends may straddle an end)
    assert [item for items in items_of(run.sink.items) for item in items] == [0, 1, 2]
    assert all(o["end"] - o["start"] == pytest.approx(0.05) for o in run.sink.items)


def events(*times: float, key: str = "s") -> list[dict[str, Any]]:
    return [{"ts": at, "sensor": key} for at in times]


def times_of(outputs: list[dict[str, Any]]) -> list[tuple[float, float, list[float]]]:
    return [(o["start"], o["end"], [item["ts"] for item in o["items"]]) for o in outputs]


async def test_event_time_windows_close_when_the_watermark_passes_their_end() -> None:
    window = TimeWindow(10, time_field="ts", allowed_lateness=3, id="window")
    run = Run(window)
    with anyio.fail_after(30):
        async with run.graph.open_run(Task(type=LONG)) as running:
            for event in events(1, 5, 11, 12, 8):  # 8: 4 s behind the latest, 3 allowed...
                await running.send(window, event)
            await running.wait_idle()
            assert run.sink.items == []  # ...as the watermark is 9: [0, 10) is still open
            assert window.watermark == 9
            await running.send(window, events(13)[0])  # the watermark reaches 10
            await run.sink.wait_for(1)
            assert times_of(run.sink.items) == [(0, 10, [1, 5, 8])]
    assert times_of(run.sink.items)[1:] == [(10, 20, [11, 12, 13])]  # flushed at the end


async def test_sliding_event_time_windows_put_each_event_in_every_window_of_its_time() -> None:
    run = Run(TimeWindow(10, slide=5, time_field="ts", id="window"))
    outputs = await run.feed(events(1, 6, 12, 30))
    assert times_of(outputs) == [
        (-5, 5, [1]),
        (0, 10, [1, 6]),
        (5, 15, [6, 12]),
        (10, 20, [12]),
        (25, 35, [30]),
        (30, 40, [30]),
    ]


async def test_a_failing_aggregate_is_retried_with_the_time_windows_as_they_were() -> None:
    failures = [ValueError("the database is down")] * 2
    seen: list[float] = []

    class Flaky(TimeWindow):
        def aggregate(self, window: Window) -> Any:
            seen.append(self.watermark)
            if failures:
                raise failures.pop()
            return super().aggregate(window)

    retry = RetryPolicy(max_attempts=3, initial_delay=1)
    window = Flaky(10, time_field="ts", id="window", config=NodeConfig(retry=retry))
    run = Run(window)
    outputs = await run.feed(events(1, 2, 12, 13))  # 12 closes [0, 10): fails twice
    assert times_of(outputs) == [(0, 10, [1, 2]), (10, 20, [12, 13])]
    assert seen[:3] == [2, 2, 2]  # each attempt found the watermark as it was
    assert await run.dead_letters() == []
    assert window.watermark == 13


async def test_keyed_event_time_windows_share_the_watermark() -> None:
    window = TimeWindow(10, time_field="ts", key=lambda event: event["sensor"], id="window")
    stream = [*events(1, key="a"), *events(2, key="b"), *events(4, key="a"), *events(15, key="b")]
    outputs = await Run(window).feed(stream)
    assert [(o["key"], o["start"], [e["ts"] for e in o["items"]]) for o in outputs] == [
        ("a", 0, [1, 4]),  # closed by b's event at 15
        ("b", 0, [2]),
        ("b", 10, [15]),  # at the end
    ]


async def test_an_event_behind_the_watermark_is_dead_lettered_at_once_as_a_late_event() -> None:
    window = TimeWindow(
        10,
        time_field="ts",
        allowed_lateness=2,
        id="window",
        config=NodeConfig(retry=RetryPolicy(max_attempts=5, initial_delay=1)),
    )
    run = Run(window)
    outputs = await run.feed(events(3, 14, 7, 12))  # 7 after 14: its window [0, 10) closed
    assert times_of(outputs) == [(0, 10, [3]), (10, 20, [14, 12])]
    (letter,) = await run.dead_letters()
    assert letter["payload"] == {"ts": 7, "sensor": "s"}
    assert letter["error_type"] == "spark_nodes.errors.LateEvent"
    assert letter["attempts"] == 1  # not retried: the retry policy's 5 attempts unused
    assert "behind the watermark 12.0" in letter["error"]
    assert "raise allowed_lateness" in letter["error"]
    assert run.result is not None
    assert run.result.dead_lettered == 1
    assert issubclass(LateEvent, NonRetriableError)


async def test_event_times_may_be_aware_datetimes() -> None:
    base = datetime(2025, 1, 1, tzinfo=UTC)
    paris = timezone(timedelta(hours=1))
    stream = [
        {"ts": base + timedelta(seconds=30)},
        {"ts": (base + timedelta(seconds=90)).astimezone(paris)},
        {"ts": base.timestamp() + 61},
    ]
    outputs = await Run(TimeWindow(60, time_field="ts", id="window")).feed(stream)
    assert [(o["start"] - base.timestamp(), len(o["items"])) for o in outputs] == [(0, 1), (60, 2)]


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ({"at": 5}, "has no field 'ts'"),
        ({"ts": "noon"}, "holds 'noon' (str), not epoch seconds"),
        ({"ts": True}, "holds True (bool)"),
        ({"ts": math.nan}, "holds nan (float)"),
        ({"ts": datetime(2025, 1, 1)}, "naive datetime"),
        ([1, 2], "the content is a list"),
    ],
)
async def test_content_without_a_usable_event_time_is_dead_lettered_at_once(
    content: Any, why: str
) -> None:
    window = TimeWindow(
        10, time_field="ts", id="window", config=NodeConfig(retry=RetryPolicy(max_attempts=3))
    )
    run = Run(window)
    outputs = await run.feed([content, {"ts": 1}])
    assert items_of(outputs) == [[{"ts": 1}]]  # the next one is windowed as usual
    (letter,) = await run.dead_letters()
    assert letter["error_type"] == "spark_nodes.errors.InvalidEventTime"
    assert why in letter["error"]
    assert letter["attempts"] == 1
    assert issubclass(InvalidEventTime, ValueError)


@pytest.mark.parametrize("window_type", [CountWindow, TimeWindow])
async def test_an_unhashable_key_fails_the_message_with_a_clear_error(window_type: Any) -> None:
    run = Run(window_type(10, key=lambda content: content["tags"], id="window"))
    outputs = await run.feed([{"tags": ["a"]}, {"tags": "b"}])
    assert [o["key"] for o in outputs] == ["b"]
    (letter,) = await run.dead_letters()
    assert letter["error_type"] == "builtins.TypeError"
    assert (
        "returned an unhashable list (['a']); return a str, a number or a tuple"
        in (letter["error"])
    )


async def test_a_time_window_runs_as_an_actor_and_its_timer_tells_it_to_flush() -> None:
    window, sink = TimeWindow(5, id="window"), Probe(id="sink")
    window >> sink
    with anyio.fail_after(60):
        async with sink.open_actor(), window.open_actor():
            await window.tell("alone")
            (output,) = await sink.wait_for(1)  # the timer's flush marker, no shutdown
            assert output["items"] == ["alone"]


async def test_a_window_s_timer_sends_one_flush_marker_per_window_end_for_every_key() -> None:
    seen: list[Any] = []

    class Counting(TimeWindow):
        def process(self, context: ExecutionContext) -> Any:
            seen.append(context.inputs.content)
            return super().process(context)

    window = Counting(10, key=lambda word: word, id="window")
    run = Run(window)
    with anyio.fail_after(60):
        async with run.graph.open_run(Task(type=LONG)) as running:
            for word in ("a", "b", "c", "a"):
                await running.send(window, word)
            await run.sink.wait_for(3)
    assert seen == ["a", "b", "c", "a", None]  # one marker for the three keys' windows
    assert sorted((o["key"], len(o["items"])) for o in run.sink.items) == [
        ("a", 2),
        ("b", 1),
        ("c", 1),
    ]


# -- failures -------------------------------------------------------------------------------


def payloads(letters: list[dict[str, Any]]) -> list[tuple[Any, str]]:
    return sorted(((letter["payload"], letter["phase"]) for letter in letters), key=repr)


@pytest.mark.parametrize("acks", [False, True])
async def test_a_window_whose_output_cannot_be_routed_has_every_message_dead_lettered(
    acks: bool,
) -> None:
    """An edge condition raises on the first window's output: the messages released with
    it are dead-lettered with the one that closed it, never acked."""

    def no_a(output: dict[str, Any]) -> bool:
        if "a" in output["items"]:
            raise ValueError("no a")
        return True

    window = CountWindow(2, id="window")
    run = Run(window, when=no_a, acks=acks)
    outputs = await run.feed(["a", "b", "c", "d"])
    assert items_of(outputs) == [["c", "d"]]
    letters = await run.dead_letters()
    assert payloads(letters) == [("a", "route"), ("b", "route")]
    assert {letter["error"] for letter in letters} == {"no a"}
    assert window.held == []
    assert sorted(run.acked) == (["c", "d"] if acks else [])


@pytest.mark.parametrize("acks", [False, True])
async def test_a_message_that_stays_in_a_sliding_window_is_not_dead_lettered_with_the_one_it_closed(
    acks: bool,
) -> None:
    """12 closes [-5, 5) and [0, 10), whose output fails: 1 is in no other window and is
    dead-lettered; 12 stays in [5, 15) and [10, 20), which go out at the end."""
    failed: list[Any] = []

    def once(output: dict[str, Any]) -> bool:
        if not failed:
            failed.append(output)
            raise RuntimeError("the edge is down")
        return True

    run = Run(TimeWindow(10, slide=5, time_field="ts", id="window"), when=once, acks=acks)
    outputs = await run.feed(events(1, 12))
    assert times_of(outputs) == [(5, 15, [12]), (10, 20, [12])]
    letters = await run.dead_letters()
    assert [(letter["payload"]["ts"], letter["phase"]) for letter in letters] == [(1, "route")]
    assert [event["ts"] for event in run.acked] == ([12] if acks else [])


@pytest.mark.parametrize("acks", [False, True])
async def test_a_window_that_cannot_be_routed_at_the_drain_is_dead_lettered_and_the_others_go_out(
    acks: bool,
) -> None:
    def no_a(output: dict[str, Any]) -> bool:
        if output["key"] == "a":
            raise ValueError("no a")
        return True

    window = CountWindow(10, key=lambda item: item[0], id="window")
    run = Run(window, when=no_a, acks=acks)
    outputs = await run.feed(["a1", "b1", "a2", "c1"])
    assert [(output["key"], output["items"]) for output in outputs] == [
        ("b", ["b1"]),
        ("c", ["c1"]),
    ]
    letters = await run.dead_letters()
    assert payloads(letters) == [("a1", "window"), ("a2", "window")]
    assert {letter["error"] for letter in letters} == {"no a"}
    assert window.held == []
    assert sorted(run.acked) == (["b1", "c1"] if acks else [])  # a1, a2: not acked


async def test_a_window_whose_aggregate_always_fails_does_not_block_the_later_ones() -> None:
    """Processing time: x's window is due at its timer, whose flush marker fails on it;
    given up on (its message dead-lettered), it no longer fails the later messages."""

    class Picky(TimeWindow):
        def aggregate(self, window: Window) -> Any:
            if window.key == "x":
                raise ValueError("cannot aggregate key x")
            return window.items

    window = Picky(10, key=lambda item: item["k"], id="window")
    run = Run(window)
    with anyio.fail_after(300):  # virtual seconds
        async with run.graph.open_run(Task(type=LONG)) as running:
            await running.send(window, {"k": "x"})
            await anyio.sleep(15)
            for number in range(3):
                await running.send(window, {"k": "y", "i": number})
                await anyio.sleep(12)
            await run.sink.wait_for(3)
    assert [[item["i"] for item in items] for items in run.sink.items] == [[0], [1], [2]]
    letters = await run.dead_letters()
    assert payloads(letters) == [({"k": "x"}, "window")]  # the flush marker is not one
    assert letters[0]["error"] == "cannot aggregate key x"
    assert window.held == []


async def test_an_observed_window_acks_each_message_once_its_window_went_out() -> None:
    records: list[GraphEvent] = []
    window = CountWindow(2, id="window")
    run = Run(window)
    run.graph.observe(records.append, node="window", side="input")
    await run.feed(["a", "b", "c"])
    assert [
        (event.phase, event.message.payload)
        for event in records
        if event.phase in {"receive", "ack"}
    ] == [
        ("receive", "a"),
        ("receive", "b"),
        ("ack", "b"),  # the message that closed the window, then those it released
        ("ack", "a"),
        ("receive", "c"),
        ("ack", "c"),  # flushed at the drain
    ]


# -- arguments ------------------------------------------------------------------------------


# Untyped: these pass what the signatures forbid, as code without type checks may.
Count: Any = CountWindow
Time: Any = TimeWindow


@pytest.mark.parametrize(
    ("make", "error", "text"),
    [
        (lambda: Count(0), ValueError, "size must be at least 1 message, not 0"),
        (lambda: Count(-3), ValueError, "size must be at least 1 message"),
        (lambda: Count(2.5), TypeError, "size must be an int"),
        (lambda: Count(True), TypeError, "size must be an int"),
        (lambda: Count(5, slide=6), ValueError, "slide must be between 1 and size (5)"),
        (lambda: Count(5, slide=0), ValueError, "slide must be between 1 and size (5)"),
        (lambda: Count(5, slide="2"), TypeError, "slide must be an int"),
        (lambda: Count(5, key="sensor"), TypeError, "key must be a function"),
        (lambda: Time(0), ValueError, "size must be a positive number of seconds, not 0"),
        (lambda: Time(-1.5), ValueError, "size must be a positive number of seconds"),
        (lambda: Time(math.inf), ValueError, "size must be a finite number"),
        (lambda: Time("60"), TypeError, "size must be a number of seconds"),
        (lambda: Time(60, slide=90), ValueError, "at most size (60) seconds, not 90"),
        (lambda: Time(60, slide=0), ValueError, "slide must be more than 0"),
        (lambda: Time(60, slide=-5), ValueError, "slide must be more than 0"),
        (lambda: Time(60, key=42), TypeError, "key must be a function"),
        (lambda: Time(60, time_field=""), TypeError, "time_field must be a non-empty str"),
        (lambda: Time(60, time_field=3), TypeError, "time_field must be a non-empty str"),
        (
            lambda: Time(60, time_field="ts", allowed_lateness=-1),
            ValueError,
            "allowed_lateness must be >= 0 seconds, not -1",
        ),
        (
            lambda: Time(60, allowed_lateness=5),
            ValueError,
            "allowed_lateness applies to event time: give time_field",
        ),
    ],
)
def test_bad_window_arguments_are_clear_errors(make: Any, error: type, text: str) -> None:
    with pytest.raises(error, match=re.escape(text)):
        make()


def test_the_windows_example_of_the_docs_runs(capsys: pytest.CaptureFixture[str]) -> None:
    section = DOCS.read_text().split("## Windows", 1)[1].split("\n## ", 1)[0]
    (example,) = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    exec(compile(example, str(DOCS), "exec"), {"__name__": "__main__"})
    printed = capsys.readouterr().out
    assert "sensor-1" in printed
    assert "late" in printed
