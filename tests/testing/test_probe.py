from __future__ import annotations

import anyio
import pytest

from spark_nodes import Graph, Node, Task
from spark_nodes.testing import Probe

pytestmark = pytest.mark.anyio


async def test_a_probe_records_and_can_be_awaited() -> None:
    start, probe, after = Node(id="start"), Probe(id="probe", forward=True), Probe(id="after")
    start >> probe >> after
    graph = Graph(start=start)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(graph.run, Task(inputs="x"))  # runs only once wait_for waits
            assert await probe.wait_for(1) == ["x"]
    assert probe.items == ["x"]
    assert after.items == ["x"]
    assert probe.received[0].metadata["source_node"] == "start"
    with anyio.fail_after(1):
        assert await probe.wait_for(1) == ["x"]  # already there: returns at once


async def test_a_probe_forwards_nothing_by_default() -> None:
    probe, after = Probe(id="p"), Probe(id="a")
    probe >> after
    with anyio.fail_after(5):
        await Graph(start=probe).run(Task(inputs=1))
    assert after.items == []
