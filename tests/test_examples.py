from __future__ import annotations

import anyio
import pytest

from examples import actors, channels, custom_channel, hello, instrumented, redis_orders
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
