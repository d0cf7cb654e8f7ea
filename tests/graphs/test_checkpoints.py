"""Checkpoints: state and unacked messages saved atomically, and runs resumed from them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from spark_nodes import (
    CheckpointError,
    ExecutionContext,
    Graph,
    JoinNode,
    Node,
    NodeConfig,
    StopReason,
    Task,
    TaskType,
    WiringError,
)
from spark_nodes.channels import ChannelMessage
from spark_nodes.errors import MessageEncodeError
from spark_nodes.graphs.checkpoint import Checkpoint, read_checkpoint
from spark_nodes.testing import Probe
from tests.graphs import crash_worker

ROOT = Path(__file__).resolve().parents[2]


class Slow(Node):
    """Relays, but only once ``release`` is set: messages pile up in flight and queued."""

    def __init__(self, release: anyio.Event | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.release = release
        self.waiting = anyio.Event()  # set once a message waits for the release

    async def process(self, context: ExecutionContext) -> Any:
        if self.release is not None:
            self.waiting.set()
            await self.release.wait()
        return context.inputs  # the NodeMessage: its metadata travels on


def pipeline(release: anyio.Event | None = None) -> tuple[Graph, Node, Probe]:
    start, slow, sink = Node(id="start"), Slow(release, id="slow"), Probe(id="sink")
    start >> slow >> sink
    return Graph(start=start, name="pipe"), slow, sink


@pytest.mark.anyio
async def test_a_checkpoint_between_runs_carries_state_and_queued_messages(tmp_path: Path) -> None:
    graph, slow, _ = pipeline()
    await graph.state.set("config", {"batch": 3}, ttl=300)
    await graph.state.append("log", "started")
    await slow.mailbox.send(ChannelMessage("queued-1"))
    await slow.mailbox.send(ChannelMessage("queued-2", {"tenant": "acme"}))
    path = tmp_path / "pipe.checkpoint"
    await graph.checkpoint(path)

    fresh, _, sink = pipeline()  # a new process would build the graph anew
    with anyio.fail_after(10):
        result = await fresh.resume(path)
    assert result.stop_reason is StopReason.COMPLETED
    assert sink.items == ["queued-1", "queued-2"]
    assert sink.received[1].metadata["tenant"] == "acme"
    assert await fresh.state.get("config") == {"batch": 3}
    assert await fresh.state.get("log") == ["started"]
    remaining = await fresh.state.ttl("config")
    assert remaining is not None
    assert 250 < remaining <= 300


@pytest.mark.anyio
async def test_a_checkpoint_keeps_what_each_loop_of_a_node_has_in_flight(tmp_path: Path) -> None:
    release, three_waiting = anyio.Event(), anyio.Event()
    started: list[Any] = []

    class Wait(Node):
        async def process(self, context: ExecutionContext) -> Any:
            started.append(context.inputs.content)
            if len(started) == 3:
                three_waiting.set()
            await release.wait()
            return context.inputs.content

    wait = Wait(id="wait", config=NodeConfig(concurrency=3))
    graph = Graph(start=wait, name="loops")
    path = tmp_path / "loops.checkpoint"
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            await group.start(graph.run, Task(type=TaskType.LONG_RUNNING))
            for item in range(4):
                await graph.send(wait, item)
            await three_waiting.wait()  # three loops each wait, one queued
            assert sorted(started) == [0, 1, 2]
            await graph.checkpoint(path)
            group.cancel_scope.cancel()
    checkpoint = await read_checkpoint(path)
    assert len(checkpoint.messages["wait"]) == 4  # 3 in flight, one per loop + 1 queued


@pytest.mark.anyio
async def test_a_checkpoint_while_running_keeps_in_flight_held_and_queued(tmp_path: Path) -> None:
    class Holding(JoinNode):
        """A join that tells when it holds three parts."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.holds_three = anyio.Event()

        def process(self, context: ExecutionContext) -> Any:
            merged = super().process(context)
            if len(self.held) == 3:
                self.holds_three.set()
            return merged

    release = anyio.Event()
    start = Node(id="start")
    slow, quick = Slow(release, id="slow"), Node(id="quick")
    join, sink = Holding(id="join"), Probe(id="sink")
    start >> [slow, quick] >> join >> sink
    graph = Graph(start=start, name="diamond")
    path = tmp_path / "diamond.checkpoint"
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            await group.start(graph.run, Task(type=TaskType.LONG_RUNNING))
            for item in range(3):
                await graph.send(start, item)
            await slow.waiting.wait()  # slow has one in flight, two queued
            await join.holds_three.wait()  # quick's parts
            await graph.checkpoint(path)
            group.cancel_scope.cancel()  # a crash: nothing after the checkpoint counts
    checkpoint = await read_checkpoint(path)
    assert len(checkpoint.messages["slow"]) == 3  # 1 in flight + 2 queued
    assert len(checkpoint.messages["join"]) == 3  # quick's parts, held by the join

    start2 = Node(id="start")
    slow2, quick2 = Slow(id="slow"), Node(id="quick")
    join2, sink2 = JoinNode(id="join"), Probe(id="sink")
    start2 >> [slow2, quick2] >> join2 >> sink2
    with anyio.fail_after(10):
        await Graph(start=start2).resume(path)
    assert sorted(sink2.items, key=lambda merged: merged["slow"]) == [
        {"slow": item, "quick": item} for item in range(3)
    ]


@pytest.mark.anyio
async def test_a_failed_checkpoint_leaves_the_previous_file_whole(tmp_path: Path) -> None:
    graph, slow, _ = pipeline()
    path = tmp_path / "pipe.checkpoint"
    await graph.checkpoint(path)
    before = await anyio.Path(path).read_bytes()
    await slow.mailbox.send(ChannelMessage({"opaque": object()}))
    with pytest.raises(MessageEncodeError, match="node 'slow' has a message that cannot be"):
        await graph.checkpoint(path)
    assert await anyio.Path(path).read_bytes() == before
    assert [p.name async for p in anyio.Path(tmp_path).iterdir()] == ["pipe.checkpoint"]


@pytest.mark.anyio
async def test_periodic_checkpoints_and_a_final_one(tmp_path: Path) -> None:
    graph, _, _ = pipeline()
    path = tmp_path / "pipe.checkpoint"

    class Record(Node):
        async def process(self, context: ExecutionContext) -> None:
            await context.graph_state.append("seen", context.inputs.content)

    record = Record(id="record")
    graph.start >> record
    task = Task(inputs="x", checkpoint_path=path, checkpoint_every=0.01)
    with anyio.fail_after(10):
        await graph.run(task)
    checkpoint = await read_checkpoint(path)
    assert checkpoint.graph == "pipe"
    assert "seen" in checkpoint.state
    assert all(not messages for messages in checkpoint.messages.values())


@pytest.mark.anyio
async def test_resuming_the_final_checkpoint_of_a_finished_run_completes(tmp_path: Path) -> None:
    graph, _, sink = pipeline()
    path = tmp_path / "pipe.checkpoint"
    with anyio.fail_after(10):
        await graph.run(Task(inputs="x", checkpoint_path=path, checkpoint_every=60))
    assert sink.items == ["x"]

    fresh, _, fresh_sink = pipeline()
    with anyio.fail_after(10):  # it used to wait forever for a message that never came
        result = await fresh.resume(path)
    assert result.stop_reason is StopReason.COMPLETED
    assert fresh_sink.items == []
    assert all(stats.processed == 0 for stats in result.node_stats.values())


@pytest.mark.anyio
async def test_resuming_a_checkpoint_taken_before_any_run_completes(tmp_path: Path) -> None:
    graph, _, _ = pipeline()
    await graph.state.set("config", {"batch": 3})
    path = tmp_path / "pipe.checkpoint"
    await graph.checkpoint(path)

    fresh, _, sink = pipeline()
    with anyio.fail_after(10):
        result = await fresh.resume(path)
    assert result.stop_reason is StopReason.COMPLETED
    assert await fresh.state.get("config") == {"batch": 3}

    assert sink.items == []

    again, _, again_sink = pipeline()
    with anyio.fail_after(10):  # with an input, the resumed run handles it as usual
        result = await again.run(Task(inputs="y"), resume_from=path)
    assert result.stop_reason is StopReason.COMPLETED
    assert again_sink.items == ["y"]


@pytest.mark.anyio
async def test_unusable_checkpoints_are_clear_errors(tmp_path: Path) -> None:
    graph, _, _ = pipeline()
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\xc1\xc1")
    with pytest.raises(CheckpointError, match="is not a spark_nodes checkpoint"):
        await graph.resume(garbage)
    other = tmp_path / "other"
    other.write_bytes(Checkpoint("g", 0.0, {}, {}).to_bytes().replace(b"\x01", b"\x07", 1))
    with pytest.raises(
        CheckpointError, match="version 7 checkpoint; this spark_nodes reads version 1"
    ):
        await graph.resume(other)
    foreign = tmp_path / "foreign"
    foreign.write_bytes(Checkpoint("elsewhere", 0.0, {}, {"ghost": []}).to_bytes())
    with pytest.raises(WiringError, match=r"messages for nodes \['ghost'\]"):
        await graph.resume(foreign)
    assert not graph.running


def test_checkpoint_settings_go_together() -> None:
    with pytest.raises(ValueError, match="go together"):
        Task(checkpoint_path="x")
    with pytest.raises(ValueError, match="checkpoint_every must be positive"):
        Task(checkpoint_path="x", checkpoint_every=0)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_run_killed_mid_stream_resumes_from_its_checkpoint_without_loss(
    tmp_path: Path,
) -> None:
    path = tmp_path / "crash.checkpoint"
    count = 600
    child = subprocess.Popen(  # noqa: ASYNC220 - a real process to SIGKILL
        [sys.executable, "-m", "tests.graphs.crash_worker", str(path), str(count)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        with anyio.fail_after(60):
            while True:  # another process: there is no event to await, so poll the file
                await anyio.sleep(0.05)
                if child.poll() is not None:
                    pytest.fail(f"the worker exited early ({child.returncode})")
                if path.exists():
                    done = (await read_checkpoint(path)).state.get("done")
                    if done is not None and len(_unpack_list(done[0])) >= count // 4:
                        break
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL

    checkpoint = await read_checkpoint(path)
    done_before = _unpack_list(checkpoint.state["done"][0])
    assert len(done_before) < count, "the kill should land mid-stream"

    graph = crash_worker.build()
    with anyio.fail_after(60):
        result = await graph.run(
            Task(type=TaskType.LONG_RUNNING, idle_timeout=0.5), resume_from=path
        )
    assert result.stop_reason is StopReason.IDLE
    done = await graph.state.get("done")
    assert set(done) == set(range(count)), f"lost: {sorted(set(range(count)) - set(done))[:10]}"
    print(f"crash test: {len(done_before)} done at the checkpoint, {len(done)} after resume")


def _unpack_list(data: bytes) -> list[Any]:
    from spark_nodes.channels.codec import unpack  # noqa: PLC0415

    value = unpack(data)
    assert isinstance(value, list)
    return value
