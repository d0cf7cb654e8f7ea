"""Testing the hello example's graph with the spark_nodes test kit (docs/testing.md).

Run with ``pytest examples/test_hello.py``: the ``graph_runner`` fixture comes from the
pytest plugin installed with spark_nodes; taps watch nodes without rewiring the graph.
"""

from __future__ import annotations

import anyio
import pytest

from examples.hello import Parse, build
from spark_nodes.testing import run_inline, tap
from spark_nodes.testing.plugin import GraphRunner

pytestmark = pytest.mark.anyio


async def test_a_big_sale_is_reviewed_before_it_is_billed(graph_runner: GraphRunner) -> None:
    graph, _ = build()
    with anyio.fail_after(10):
        async with (
            tap(graph, ("review", "bill")) as reviewed,
            tap(graph, "audit") as audited,
            graph_runner(graph) as run,
        ):
            await run.send("parse", {"id": 7, "kind": "sale", "amount": "500"})
            order = await reviewed.expect_message()
            assert order.content == {"id": 7, "kind": "sale", "amount": 500.0, "reviewed": True}
            await audited.expect_payload({"id": 7, "kind": "sale", "amount": 500.0})


async def test_a_refund_is_not_billed(graph_runner: GraphRunner) -> None:
    graph, sinks = build()
    with anyio.fail_after(10):
        async with tap(graph, "bill") as billed, graph_runner(graph) as run:
            await run.send("parse", {"id": 8, "kind": "refund", "amount": "15"})
            await run.wait_idle()
            await billed.expect_no_message(within=0.01)
    assert sinks["refund"].lines == ["refunded: order 8 (15.00)"]


async def test_a_malformed_order_is_dead_lettered_and_the_test_says_it_expected_it(
    graph_runner: GraphRunner,
) -> None:
    graph, _ = build()
    with anyio.fail_after(10):
        async with graph_runner(graph, dead_letters=1) as run:
            await run.send("parse", {"id": 9, "kind": "sale", "amount": "lots"})
            await run.wait_idle()


async def test_parse_alone_routes_by_kind_and_amount() -> None:
    graph, _ = build()
    parse = graph.nodes["parse"]
    assert isinstance(parse, Parse)
    result = await run_inline(parse, {"id": 1, "kind": "sale", "amount": "250"})
    assert result.outputs[0].targets == ("review", "audit")  # the priority tier, then audit
    failed = await run_inline(parse, {"id": 2, "kind": "sale", "amount": "?"})
    assert isinstance(failed.error, ValueError)
