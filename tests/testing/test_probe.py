from __future__ import annotations

import anyio
import pytest

from spark_nodes import Graph, Node, Task
from spark_nodes.nodes import NodeMessage
from spark_nodes.testing import BaseProbe, Probe

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


async def test_a_wired_probe_expects_messages_in_order_and_its_shutdown() -> None:
    start, probe = Node(id="start"), Probe(id="probe")
    start >> probe
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(Graph(start=start).run, Task(inputs="x"))
            message = await probe.expect_message(timeout=5)
            assert (message.content, message.metadata["edge"]) == ("x", "start->probe")
            await probe.expect_shutdown(timeout=5)
    assert probe.items == ["x"]  # the shutdown is not a payload
    assert len(probe.shutdowns) == 1


# -- the expect_* API, on the base every probe shares -------------------------------------


def recorded(*contents: object) -> BaseProbe:
    probe = BaseProbe()
    for content in contents:
        probe.record(NodeMessage(content))
    return probe


async def record_soon(probe: BaseProbe, content: object) -> None:
    """Record ``content`` from another task: it runs once the test's task waits."""
    probe.record(NodeMessage(content))


async def test_expect_message_returns_each_message_once_in_order() -> None:
    probe = recorded("a", "b")
    with anyio.fail_after(5):
        assert (await probe.expect_message()).content == "a"
        assert (await probe.expect_message()).content == "b"
    assert probe.items == ["a", "b"]  # received keeps everything, expected or not


async def test_expect_message_waits_for_a_message_recorded_later() -> None:
    probe = BaseProbe()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(record_soon, probe, "late")  # runs once we wait
            assert (await probe.expect_message(timeout=5)).content == "late"


async def test_expect_message_times_out_saying_what_it_waited_for() -> None:
    probe = recorded("seen")
    with anyio.fail_after(5):
        await probe.expect_message()
        with pytest.raises(AssertionError) as caught:
            await probe.expect_message(timeout=0.05)
    text = str(caught.value)
    assert "BaseProbe: expected a message within 0.05 s, got none" in text
    assert "received 1 so far, all expected already: ['seen']" in text


async def test_expect_payload_checks_the_content_and_names_both_sides() -> None:
    probe = recorded({"n": 1}, {"n": 2})
    with anyio.fail_after(5):
        assert (await probe.expect_payload({"n": 1})).content == {"n": 1}
        with pytest.raises(AssertionError, match=r"expected payload \{'n': 3\}, got \{'n': 2\}"):
            await probe.expect_payload({"n": 3})
        with pytest.raises(AssertionError, match=r"got none .*; expected payload 4"):
            await probe.expect_payload(4, timeout=0.01)


async def test_expect_no_message_passes_when_nothing_comes() -> None:
    probe = recorded("a")
    with anyio.fail_after(5):
        await probe.expect_payload("a")
        await probe.expect_no_message(within=0.02)


async def test_expect_no_message_fails_at_once_on_a_message_not_expected_yet() -> None:
    probe = recorded("early")
    with anyio.fail_after(1), pytest.raises(AssertionError, match=r"1 had arrived .*\['early'\]"):
        await probe.expect_no_message(within=60)  # does not wait the minute


async def test_expect_no_message_fails_when_a_message_comes_meanwhile() -> None:
    probe = BaseProbe()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(record_soon, probe, "intruder")
            with pytest.raises(AssertionError, match="for 30 s, got 'intruder'"):
                await probe.expect_no_message(within=30)


async def test_shutdowns_are_kept_apart_from_messages() -> None:
    probe = recorded("a")
    probe.record_shutdown(NodeMessage(None, {"source_node": "x"}))
    with anyio.fail_after(5):
        shutdown = await probe.expect_shutdown()
        assert shutdown.metadata == {"source_node": "x"}
        assert (await probe.expect_message()).content == "a"  # not taken by expect_shutdown
        with pytest.raises(AssertionError, match=r"expected a shutdown within 0\.01 s"):
            await probe.expect_shutdown(timeout=0.01)
        await probe.expect_no_message(within=0.01)  # shutdowns are no messages
    assert probe.items == ["a"]


async def test_fish_for_message_skips_until_one_matches() -> None:
    probe = recorded(1, 2, 3, 4)
    with anyio.fail_after(5):
        assert (await probe.fish_for_message(lambda m: m.content > 2)).content == 3
        assert (await probe.expect_message()).content == 4  # 1 and 2 were skipped


async def test_fish_for_message_waits_for_later_messages_and_reports_the_skipped() -> None:
    probe = recorded("a")
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(record_soon, probe, "b")
            found = await probe.fish_for_message(lambda m: m.content == "b", timeout=5)
            assert found.content == "b"

        def is_c(message: NodeMessage) -> bool:
            return bool(message.content == "c")

        probe.record(NodeMessage("d"))
        with pytest.raises(AssertionError, match=r"no message matching .*is_c within 0.02 s; "):
            await probe.fish_for_message(is_c, timeout=0.02)


async def test_wait_for_does_not_move_the_expect_position() -> None:
    probe = recorded("a", "b")
    with anyio.fail_after(5):
        assert await probe.wait_for(2) == ["a", "b"]
        assert (await probe.expect_message()).content == "a"
