from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import anyio
import pytest

from examples import (
    actors,
    agent,
    channels,
    custom_channel,
    hello,
    instrumented,
    redis_orders,
    streaming,
)
from spark_nodes import StopReason
from spark_nodes.channels.mailbox import is_mailbox

pytestmark = pytest.mark.anyio


async def test_the_hello_graph_routes_audits_and_dead_letters() -> None:
    with anyio.fail_after(10):
        result, sinks, dead = await hello.main()
    assert result.stop_reason is StopReason.SHUTDOWN
    assert sorted(sinks["bill"].lines) == [
        "billed: order 1 (40.00)",
        "billed: order 3 (250.00)",
        "billed: order 5 (99.00)",
    ]
    assert sinks["refund"].lines == ["refunded: order 2 (15.00)"]
    assert len(sinks["audit"].lines) == 4
    assert result.node_stats["review"].processed == 1
    assert dead == ["dead letter: order 4: could not convert string to float: 'not a number'"]
    assert result.node_stats["parse"].failed_attempts == 2


async def test_the_instrumented_example_taps_an_edge_times_a_node_and_draws_counts() -> None:
    with anyio.fail_after(20):
        report = await instrumented.main(count=60)
    lines = instrumented.readings(60)
    hot = [line for line in lines if line.endswith(":35.0")]
    assert [alert["degrees"] for alert in report.alerts] == [35.0] * len(hot)
    assert report.slow_calls >= 1  # the lab sensor's lookups sleep 5 ms (threshold 2 ms)
    stats = report.stats
    malformed = sum(line.endswith(":n/a") for line in lines)
    assert stats.nodes["parse"].dead_lettered == malformed
    assert stats.edges["enrich->alert"].sent == len(hot)
    assert stats.nodes["store"].processed == len(lines) - malformed - len(hot)
    enrich = stats.nodes["enrich"].process_time
    assert enrich is not None
    assert enrich.max >= 0.005
    assert report.table.splitlines()[1].split()[:4] == ["NODE", "IN", "DONE", "OUT"]
    assert f"sent {len(hot)}" in report.diagram
    assert report.diagram.startswith("flowchart LR")


async def test_the_actors_example_tells_asks_and_counts_every_word() -> None:
    with anyio.fail_after(10):
        answer, failure, counts = await actors.main()
    assert answer == ["the", "end"]
    assert "ValueError: an empty line has no words" in failure
    assert counts["the"] == 4  # three told lines and the asked one, all counted
    assert counts.total() == 14


async def test_the_channels_demo_delivers_every_order_in_order() -> None:
    with anyio.fail_after(10):
        handled = await channels.main(orders=7)
    assert handled == [f"order {n} via counter->kitchen" for n in range(1, 8)]


async def test_the_custom_channel_example_handles_high_priority_first_both_ways() -> None:
    with anyio.fail_after(10):
        results = await custom_channel.main()
    by_priority = ["T2", "T4", "T1", "T3", "T5"]
    # The seed-only channel is awaited per ticket and for the shutdown; the fast one takes
    # the backlog as one batch and is awaited only for the shutdown.
    assert results == {"PriorityChannel": (by_priority, 6), "FastPriorityChannel": (by_priority, 1)}
    assert not is_mailbox(custom_channel.PriorityChannel())
    assert is_mailbox(custom_channel.FastPriorityChannel())


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # redis-py is asyncio only
async def test_the_redis_orders_example_books_every_order_across_worker_processes(
    redis_url: str,
) -> None:
    with anyio.fail_after(60):
        ledger = await redis_orders.run(redis_url, orders=12, workers=2)
    assert ledger == [f"order {n}: {round(10.0 * n * 1.2, 2)}" for n in range(1, 13)]


async def test_the_agent_example_answers_retries_without_paying_twice_and_stops_a_loop() -> None:
    with anyio.fail_after(10):
        report = await agent.main()
    assert report.answers == {
        "q1": "391",
        "q2": "The Eiffel Tower was completed on 31 March 1889.",
        "q3": "10080",  # the second round: the critic rejected the search, the planner computed
    }
    # q4 is never accepted: three rounds of 3 steps, then the 4th plan is dead-lettered.
    failure = report.stopped["q4"]
    assert list(report.stopped) == ["q4"]
    assert (failure.node, failure.phase) == ("planner", "max_steps")
    assert failure.error_type == "spark_nodes.errors.StepLimitExceeded"
    assert "max_steps=9" in failure.error
    assert report.scratchpads["q4"].count("critic: revise: no figure in that; try another way") == 3
    assert report.dead_lettered == 1
    # Each question's first search call fails (q2, q3, q4) and is retried: 3 retries, and
    # q4's two later rounds search once each: 2 + 2 + 4 calls.
    assert report.search_retries == 3
    assert report.search_calls == 8
    # Paid calls: q1 plan+critique (2), q2 plan+query+critique (3), q3 two rounds (3 + 2),
    # q4 three rounds and the dropped 4th plan (10). The 3 retried searches pay nothing more:
    # their query's reply is a durable step.
    assert report.paid_calls == 20
    assert report.spend_cents == 20 * agent.PRICE_CENTS


def expected_sensor_minutes() -> list[dict[str, Any]]:
    """The streaming example's minutes, worked out the plain way from its input lines.

    Every well-formed reading, calibrated, per sensor and minute of its timestamp; but the
    one that arrives 170 s late, after its minute was emitted.
    """
    minutes: dict[tuple[str, int], list[float]] = defaultdict(list)
    for line in streaming.lines():
        fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
        try:
            ts, sensor, raw = int(fields["ts"]), fields["sensor"], float(fields["celsius"])
        except (KeyError, ValueError):
            continue  # malformed: parse dead-letters it
        if (sensor, ts) == ("s2", streaming.START + 130):
            continue  # too late: the window dead-letters it
        minutes[sensor, ts - ts % 60].append(round(raw + streaming.SENSORS[sensor].offset, 2))
    return [
        {
            "sensor": sensor,
            "site": streaming.SENSORS[sensor].site,
            "minute": minute,
            "readings": len(celsius),
            "mean": round(math.fsum(celsius) / len(celsius), 2),
            "min": min(celsius),
            "max": max(celsius),
        }
        for (sensor, minute), celsius in sorted(minutes.items())
    ]


STREAMING_DEAD_LETTERS = [
    ("parse", "examples.streaming.MalformedLine", "### gateway gw-7 restarted ###"),
    ("parse", "examples.streaming.MalformedLine", "ts=1717236095 sensor=s3 celsius=ERR"),
    ("parse", "examples.streaming.MalformedLine", "ts=1717236200 sensor=s1"),
    (
        "per_minute",
        "spark_nodes.errors.LateEvent",
        {"ts": 1717236130, "sensor": "s2", "celsius": 3.3, "site": "cold-room"},
    ),
]


def check_sensor_minutes(report: streaming.Report) -> None:
    minutes = report.minutes
    assert minutes == expected_sensor_minutes()
    assert len(minutes) == 4 * streaming.MINUTES  # every sensor, every minute
    by_key = {(minute["sensor"], minute["minute"] - streaming.START): minute for minute in minutes}
    assert by_key["s1", 180]["mean"] == -13.7  # the freezer door was open at 10:02-10:03
    assert by_key["s4", 0]["readings"] == 6  # its reading 10 s late joined the minute
    assert by_key["s2", 120]["readings"] == 5  # its reading 170 s late did not
    assert sum(minute["readings"] for minute in minutes) == report.lines - 4
    dead = [(letter.node, letter.error_type, letter.content) for letter in report.rejected]
    assert dead == STREAMING_DEAD_LETTERS  # nothing lost: each line is a minute's or here


async def test_the_streaming_example_windows_per_sensor_minute_and_pushes_back() -> None:
    with anyio.fail_after(20):
        report = await streaming.main()
    check_sensor_minutes(report)
    pressure = report.backpressure
    # Bounded mailboxes fill up behind the slow enrich, and never past their bounds.
    assert pressure.peaks == {
        "parse": (streaming.PARSE_MAILBOX, streaming.PARSE_MAILBOX),
        "enrich": (streaming.ENRICH_MAILBOX, streaming.ENRICH_MAILBOX),
    }
    # parse's mailbox holds 16 lines: once it is full, the producer can send at most 16 more
    # each time parse takes its messages out, so 147 lines make it wait several times...
    assert pressure.waited >= 5
    # ... and it spends most of its time waiting: it goes at enrich's pace (143 lookups of
    # 1 ms), not its own (microseconds a send).
    assert pressure.waited_seconds > 0.5 * pressure.seconds


@pytest.mark.redis
async def test_the_streaming_example_gives_the_same_minutes_served_by_two_worker_processes(
    redis_url: str,
) -> None:
    with anyio.fail_after(20):
        report = await streaming.main(redis_url)
    check_sensor_minutes(report)
    assert report.worker_exit_codes == [0, 0]  # the flushed window let the shutdown finish
    assert report.left_pending == 0  # every held reading was acked with its minute
