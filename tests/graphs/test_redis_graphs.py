"""Graphs on Redis: the same nodes, served by several "processes" (graph objects).

Each test builds the graph anew per process, as separate worker processes would; they
share nothing but the Redis server. Real multi-process runs (kills, stalls) are in
``test_redis_crashes.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import anyio
import pytest
from redis.asyncio import Redis
from structlog.testing import capture_logs

from spark_nodes import (
    ExecutionContext,
    Graph,
    JoinNode,
    Node,
    NodeConfig,
    RetryPolicy,
    StopReason,
    Task,
    TaskType,
)
from spark_nodes.channels import ChannelMessage, InMemoryChannel, RedisChannel
from spark_nodes.errors import MessageEncodeError, WiringError
from spark_nodes.graphs import GraphResult
from spark_nodes.nodes import NO_OUTPUT
from spark_nodes.testing import RecordingObserver
from tests.redis_support import Cluster

pytestmark = [pytest.mark.anyio, pytest.mark.redis]  # redis-py: asyncio only


class Double(Node):
    def process(self, context: ExecutionContext) -> Any:
        return context.inputs.content * 2


class Arrivals:
    """Counts what a sink recorded in this process; tests await a count instead of polling."""

    def __init__(self) -> None:
        self.count = 0
        self._waiters: list[tuple[int, anyio.Event]] = []

    def add(self) -> None:
        self.count += 1
        for wanted, event in self._waiters:
            if self.count >= wanted:
                event.set()

    async def wait_for(self, count: int) -> None:
        if self.count < count:
            event = anyio.Event()
            self._waiters.append((count, event))
            await event.wait()


class Collect(Node):
    """A sink: records what it gets in the graph state (shared by every process)."""

    arrivals: Arrivals | None = None

    async def process(self, context: ExecutionContext) -> None:
        await context.graph_state.append("seen", context.inputs.content)
        if self.arrivals is not None:
            self.arrivals.add()


async def dead_letters_of(raw: Redis, graph: Graph, node_id: str) -> list[dict[bytes, bytes]]:
    mailbox = graph.nodes[node_id].mailbox
    assert isinstance(mailbox, RedisChannel)
    entries: Any = await raw.xrange(f"{mailbox.key}:dead")
    return [fields for _id, fields in entries]


def pipeline() -> Graph:
    first, second, sink = Double(id="first"), Double(id="second"), Collect(id="sink")
    first >> second >> sink
    return Graph(first, name="pipeline")


async def serve_all(*calls: tuple[Graph, list[str] | None]) -> list[GraphResult]:
    results: list[GraphResult] = []

    async def serve(graph: Graph, nodes: list[str] | None) -> None:
        results.append(await graph.serve(nodes))

    async with anyio.create_task_group() as tasks:
        for graph, nodes in calls:
            tasks.start_soon(serve, graph, nodes)
    return results


async def test_a_pipeline_served_by_two_processes_handles_each_message_once(
    cluster: Cluster, raw: Redis
) -> None:
    one, two, client = (cluster.process(pipeline) for _ in range(3))
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tasks:
            results: list[GraphResult] = []

            async def serve(graph: Graph, nodes: list[str]) -> None:
                results.append(await graph.serve(nodes))

            tasks.start_soon(serve, one, ["first", "second"])
            tasks.start_soon(serve, two, ["second", "sink"])
            for number in range(200):
                await client.send("first", number)
            await client.shutdown()
    seen = await client.state.get("seen")
    assert sorted(seen) == [number * 4 for number in range(200)]
    assert {result.stop_reason for result in results} == {StopReason.SHUTDOWN}
    handled = sum(r.node_stats["second"].processed for r in results)
    assert handled == 200  # shared by both processes' consumers, each entry once
    for node_id in ("first", "second", "sink"):
        mailbox = client.nodes[node_id].mailbox
        assert isinstance(mailbox, RedisChannel)
        pending: Any = await raw.xpending(mailbox.key, mailbox.group)
        assert pending["pending"] == 0
        assert await raw.xlen(mailbox.key) == 0


async def test_shutdown_from_any_process_comes_after_everything_sent_before_it(
    cluster: Cluster,
) -> None:
    worker, client = cluster.process(pipeline), cluster.process(pipeline)
    for number in range(100):  # sent before any worker runs: they wait in Redis
        await client.send("first", number)
    await client.shutdown()
    with anyio.fail_after(30):
        result = await worker.serve()
    assert result.stop_reason is StopReason.SHUTDOWN
    assert len(await client.state.get("seen")) == 100


def diamond() -> Graph:
    split, left, right = Double(id="split"), Double(id="left"), Double(id="right")
    join = Collect(id="join")
    split >> left >> join
    split >> right >> join
    return Graph(split, name="diamond")


async def test_a_node_with_two_predecessors_finishes_after_both(cluster: Cluster) -> None:
    processes = [cluster.process(diamond) for _ in range(3)]
    client = cluster.process(diamond)
    for number in range(50):
        await client.send("split", number)
    await client.shutdown()
    with anyio.fail_after(30):
        await serve_all(
            (processes[0], ["split", "left"]),
            (processes[1], ["right", "join"]),
            (processes[2], ["left", "right", "join"]),
        )
    assert sorted(await client.state.get("seen")) == sorted(
        [number * 4 for number in range(50)] * 2
    )


async def test_a_node_served_by_nobody_keeps_its_messages_until_someone_serves_it(
    cluster: Cluster,
) -> None:
    upstream, client = cluster.process(pipeline), cluster.process(pipeline)
    for number in range(10):
        await client.send("first", number)
    await client.shutdown()
    late = cluster.process(pipeline)
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(upstream.serve, ["first", "second"])
            await anyio.sleep(0.3)  # the sink has no worker meanwhile
            assert await client.state.get("seen") is None
            tasks.start_soon(late.serve, ["sink"])
    assert len(await client.state.get("seen")) == 10


async def test_the_graph_runs_again_after_a_shutdown(cluster: Cluster) -> None:
    worker, client = cluster.process(pipeline), cluster.process(pipeline)
    for round_number in range(2):
        await client.send("first", round_number)
        await client.shutdown()
        with anyio.fail_after(30):
            result = await worker.serve()
        assert result.stop_reason is StopReason.SHUTDOWN
    assert sorted(await client.state.get("seen")) == [0, 4]


class Failing(Node):
    def process(self, context: ExecutionContext) -> Any:
        if context.inputs.content == "bad":
            raise ValueError("cannot handle 'bad'")
        return context.inputs.content


def failing() -> Graph:
    check = Failing(
        id="check", config=NodeConfig(retry=RetryPolicy(max_attempts=2, initial_delay=0))
    )
    check >> Collect(id="sink")
    return Graph(check, name="failing")


async def test_a_failing_message_is_dead_lettered_in_its_mailbox_and_the_rest_go_on(
    cluster: Cluster, raw: Redis
) -> None:
    worker, client = cluster.process(failing), cluster.process(failing)
    for content in ["a", "bad", "b"]:
        await client.send("check", content)
    await client.shutdown()
    with anyio.fail_after(30):
        result = await worker.serve()
    assert await client.state.get("seen") == ["a", "b"]
    assert result.node_stats["check"].dead_lettered == 1
    (letter,) = await dead_letters_of(raw, client, "check")
    assert letter[b"reason"] == b"process"
    assert letter[b"error"] == b"cannot handle 'bad'"
    assert letter[b"detail:error_type"] == b"builtins.ValueError"
    assert letter[b"detail:attempts"] == b"2"
    assert b"Traceback" in letter[b"detail:traceback"]
    assert b"bad" in letter[b"m"]  # the original envelope, replayable
    assert worker.dead_letters.empty()  # kept in Redis with the entry, not in this process


class Oversized(Node):
    def process(self, context: ExecutionContext) -> Any:
        return b"x" * 5000


async def test_an_output_too_large_for_its_target_dead_letters_the_input(
    cluster: Cluster, raw: Redis
) -> None:
    def build() -> Graph:
        big = Oversized(id="big")
        big >> Collect(id="sink")
        return Graph(big, name="big")

    worker = cluster.process(build, max_message_bytes=1000)
    await worker.send("big", "small input")
    await worker.shutdown()
    with anyio.fail_after(30):
        result = await worker.serve()
    assert result.node_stats["big"].dead_lettered == 1
    (letter,) = await dead_letters_of(raw, worker, "big")
    assert letter[b"reason"] == b"forward"
    assert b"max_message_bytes=1000" in letter[b"error"]
    sink = worker.nodes["sink"].mailbox
    assert isinstance(sink, RedisChannel)
    assert await raw.xlen(sink.key) == 0  # nothing was forwarded


class Gate(Node):
    """Holds the message "slow" until released; passes everything else straight on."""

    release: anyio.Event

    async def process(self, context: ExecutionContext) -> Any:
        if context.inputs.content == "slow":
            await self.release.wait()
        return context.inputs.content


async def test_a_slow_message_does_not_hold_up_the_others_with_concurrency(
    cluster: Cluster,
) -> None:
    gate_release = anyio.Event()
    arrivals = Arrivals()

    def build() -> Graph:
        gate = Gate(id="gate", config=NodeConfig(concurrency=2))
        gate.release = gate_release
        sink = Collect(id="sink")
        sink.arrivals = arrivals
        gate >> sink
        return Graph(gate, name="gate")

    worker = cluster.process(build)
    await worker.send("gate", "slow")
    for number in range(5):
        await worker.send("gate", number)
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(worker.serve)
            await arrivals.wait_for(5)  # while "slow" is still held up
            assert await worker.state.get("seen") == [0, 1, 2, 3, 4]
            gate_release.set()
            await worker.shutdown()
    assert (await worker.state.get("seen"))[-1] == "slow"


async def test_stop_gives_prefetched_messages_back_for_others(cluster: Cluster) -> None:
    started = anyio.Event()
    release = anyio.Event()

    class Blocking(Node):
        async def process(self, context: ExecutionContext) -> Any:
            started.set()
            await release.wait()
            return context.inputs.content

    def build() -> Graph:
        node = Blocking(id="work")
        node >> Collect(id="sink")
        return Graph(node, name="stopping")

    stopping = cluster.process(build, prefetch=5)
    for number in range(5):
        await stopping.send("work", number)
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(partial(stopping.serve, ["work"]))
            await started.wait()  # one message in progress, four prefetched
            stopping.stop("SIGTERM")
            release.set()  # the one in progress finishes within the grace period
    taker = cluster.process(build)
    await taker.shutdown()
    with anyio.fail_after(30):
        await taker.serve()  # gets the four given back without waiting for a timeout
    assert sorted(await taker.state.get("seen")) == [0, 1, 2, 3, 4]


async def test_observers_of_a_node_mailbox_carry_over_to_its_redis_mailbox(
    cluster: Cluster,
) -> None:
    seen = RecordingObserver()

    def build() -> Graph:
        first = Double(id="first", mailbox=InMemoryChannel(observers=[seen]))
        first >> Collect(id="sink")
        return Graph(first, name="observed")

    worker = cluster.process(build)
    await worker.send("first", 1)
    await worker.shutdown()
    with anyio.fail_after(30):
        await worker.serve()
    assert seen.payloads("receive")[:1] == [1]
    assert "ack" in seen.phases


def watched_pipeline(arrivals: Arrivals) -> Callable[[], Graph]:
    def build() -> Graph:
        graph = pipeline()
        sink = graph.nodes["sink"]
        assert isinstance(sink, Collect)
        sink.arrivals = arrivals
        return graph

    return build


async def test_a_stale_shutdown_from_an_earlier_run_is_ignored(cluster: Cluster) -> None:
    arrivals = Arrivals()
    worker = cluster.process(watched_pipeline(arrivals))
    client = cluster.process(pipeline)
    await client.shutdown()
    with anyio.fail_after(30):
        await worker.serve()  # run 0 ends
    first = worker.nodes["first"].mailbox
    assert isinstance(first, RedisChannel)
    stale = {"source_node": "<external>", "graph_run": 0}
    await first.send(ChannelMessage(None, stale, is_shutdown=True))
    await client.send("first", 5)
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(worker.serve)
            await arrivals.wait_for(1)  # the stale shutdown did not end run 1
            await client.shutdown()  # run 1's own shutdown ends it
    assert await client.state.get("seen") == [20]


async def test_long_running_run_on_redis_serves_every_node_here(cluster: Cluster) -> None:
    arrivals = Arrivals()
    graph = cluster.process(watched_pipeline(arrivals))
    with anyio.fail_after(30):
        async with graph.open_run(Task(inputs=3, type=TaskType.LONG_RUNNING)) as run:
            await arrivals.wait_for(1)
    assert await graph.state.get("seen") == [12]
    assert run.result is not None
    assert run.result.stop_reason is StopReason.SHUTDOWN


# -- wiring mistakes -----------------------------------------------------------------------


async def test_a_mailbox_bound_is_not_applied_on_redis_and_a_warning_says_so(
    redis_url: str,
) -> None:
    bounded = Double(id="bounded", config=NodeConfig(mailbox_maxsize=5))
    with capture_logs() as logs:
        graph = Graph(bounded, Double(id="free"), name="bounds", backend=redis_url)
    try:
        (warning,) = [e for e in logs if e["event"] == "mailbox_maxsize is not applied on Redis"]
        assert (warning["node"], warning["mailbox_maxsize"]) == ("bounded", 5)
        assert isinstance(bounded.mailbox, RedisChannel)
    finally:
        await graph.aclose()


async def test_redis_graph_mistakes_are_reported_when_built(redis_url: str) -> None:
    first = Double(id="first")
    with pytest.raises(WiringError, match="needs a name"):
        Graph(first, backend=redis_url)
    with pytest.raises(WiringError, match="cannot contain"):
        Graph(first, name="{x}", backend=redis_url)
    own = Double(id="own", mailbox=InMemoryChannel(maxsize=0))
    own.mailbox.send_nowait(ChannelMessage("queued"))
    with pytest.raises(WiringError, match="mailbox of its own"):
        Graph(own, name="own", backend=redis_url)
    graph = Graph(Double(id="ok"), name="ok", backend=redis_url)
    with pytest.raises(WiringError, match=r"TaskType\.LONG_RUNNING"):
        await graph.run(Task(inputs=1))
    with pytest.raises(WiringError, match="on Redis already"):
        graph.use_redis(redis_url)
    with pytest.raises(WiringError, match="has no node"):
        await graph.serve(["missing"])
    await graph.aclose()
    with pytest.raises(WiringError, match="serve"):
        await Graph(Double(id="mem")).serve()


async def test_a_message_cancelled_past_the_grace_period_counts_as_delivered(
    cluster: Cluster,
) -> None:
    """Given back with its delivery counted, so one that always outlasts the grace period
    still reaches max_deliveries instead of being retried forever."""
    started = anyio.Event()
    counts: list[int] = []

    class Stuck(Node):
        async def process(self, context: ExecutionContext) -> Any:
            counts.append(context.inputs.metadata["delivery_count"])
            if len(counts) == 1:
                started.set()
                await anyio.sleep_forever()
            return context.inputs.content

    def build() -> Graph:
        stuck = Stuck(id="stuck")
        stuck >> Collect(id="sink")
        return Graph(stuck, name="stuck")

    first = cluster.process(build, visibility_timeout=30)
    await first.send("stuck", "slow")
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(partial(first.serve, grace_period=0.1))
            await started.wait()
            first.stop("leaving")
        second = cluster.process(build, visibility_timeout=30)
        await second.shutdown()
        await second.serve()  # it was given back: no wait for the 30 s lease
    assert counts == [1, 2]
    assert await second.state.get("seen") == ["slow"]


class Label(Node):
    """A sink with an output: its result is its only trace."""

    def process(self, context: ExecutionContext) -> Any:
        return f"got {context.inputs.content}"


class Opaque(Node):
    """A sink whose output is plain data, except for the input 2: an object."""

    def process(self, context: ExecutionContext) -> Any:
        return object() if context.inputs.content == 2 else context.inputs.content


async def test_node_results_are_shared_by_every_process(cluster: Cluster) -> None:
    def build() -> Graph:
        double, label = Double(id="double"), Label(id="label")
        double >> label
        return Graph(double, name="results")

    worker, client = cluster.process(build), cluster.process(build)
    assert await client.state.get("label.__result__", "none") == "none"
    for number in (1, 2, 3):
        await client.send("double", number)
    await client.shutdown()
    with anyio.fail_after(30):
        await worker.serve()
    assert client.nodes["label"].last_output is NO_OUTPUT  # nothing ran in this process
    assert await client.state.get("double.__result__") == 6
    assert await client.state.get("label.__result__") == "got 6"


async def test_send_to_an_unknown_node_of_a_redis_graph_names_its_nodes(cluster: Cluster) -> None:
    client = cluster.process(pipeline)
    with pytest.raises(WiringError) as caught:
        await client.send("nosuch", 1)
    assert str(caught.value) == (
        "graph 'pipeline' has no node 'nosuch'; send to one of its nodes: 'first', 'second', 'sink'"
    )


async def test_a_result_that_is_not_plain_data_reads_the_same_in_every_process(
    cluster: Cluster, raw: Redis
) -> None:
    def build() -> Graph:
        return Graph(Opaque(id="opaque"), name="opaque")

    worker, client = cluster.process(build), cluster.process(build)
    for number in (1, 2):  # 1 is stored; 2's output is not plain data
        await client.send("opaque", number)
    await client.shutdown()
    with anyio.fail_after(30), capture_logs() as logs:
        result = await worker.serve()
    assert result.node_stats["opaque"].processed == 2  # acked, not dead-lettered
    assert await dead_letters_of(raw, client, "opaque") == []
    errors = []
    for graph in (worker, client):  # the serving process and another: one answer
        assert await graph.state.exists("opaque.__result__")
        assert "opaque.__result__" in await graph.state.keys()
        with pytest.raises(MessageEncodeError) as caught:
            await graph.state.get("opaque.__result__")  # never the older output, 1
        errors.append(str(caught.value))
    assert errors[0] == errors[1]
    assert errors[0].startswith("opaque.__result__: object cannot be encoded with msgpack")
    event = "node result is not plain data; reading it raises"
    (warning,) = [entry for entry in logs if entry["event"] == event]
    assert (warning["node"], warning["log_level"]) == ("opaque", "warning")
    assert warning["error"] == errors[0]

    in_memory = Graph(Opaque(id="opaque"))  # and as an in-memory graph answers
    with anyio.fail_after(10):
        await in_memory.run(Task(inputs=2))
    with pytest.raises(MessageEncodeError) as caught:
        await in_memory.state.get("opaque.__result__")
    assert str(caught.value) == errors[0]


async def test_closing_a_graph_writes_what_was_queued_on_its_mailboxes(
    cluster: Cluster, raw: Redis
) -> None:
    graph = cluster.process(pipeline)
    mailbox = graph.nodes["first"].mailbox
    assert isinstance(mailbox, RedisChannel)
    mailbox.send_nowait(ChannelMessage(21))
    await graph.aclose()
    assert await raw.xlen(mailbox.key) == 1


class Shift(Node):
    def process(self, context: ExecutionContext) -> Any:
        return context.inputs.content + 100


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_a_join_served_by_one_process_merges_each_group_once(
    cluster: Cluster, raw: Redis, concurrency: int
) -> None:
    def build() -> Graph:
        start, double, shift = Node(id="start"), Double(id="double"), Shift(id="shift")
        join, sink = JoinNode(id="join"), Collect(id="sink")
        start >> [double, shift] >> join >> sink
        return Graph(start, name="diamond")

    branches, joiner, client = (cluster.process(build) for _ in range(3))
    for number in range(20):
        await client.send("start", number)
    await client.shutdown()
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(branches.serve, ["start", "double", "shift"])
            tasks.start_soon(partial(joiner.serve, ["join", "sink"], concurrency=concurrency))
    merged = await client.state.get("seen")
    assert sorted(merged, key=lambda parts: parts["double"]) == [
        {"double": 2 * n, "shift": n + 100} for n in range(20)
    ]
    mailbox = client.nodes["join"].mailbox
    assert isinstance(mailbox, RedisChannel)
    assert await raw.xlen(mailbox.key) == 0  # every part acked once its merge was forwarded
    assert await dead_letters_of(raw, client, "join") == []


async def test_a_stopped_worker_says_what_it_left_in_redis(cluster: Cluster) -> None:
    started = anyio.Event()

    class Slow(Node):
        async def process(self, context: ExecutionContext) -> Any:
            started.set()
            await anyio.sleep(0.01)
            return None

    def build() -> Graph:
        return Graph(start=Slow(id="slow"), name="leaving")

    worker, client = cluster.process(build), cluster.process(build)
    with anyio.fail_after(30):
        for number in range(20):
            await client.send("slow", number)
        async with anyio.create_task_group() as group:
            run = await group.start(worker.run, Task(type=TaskType.LONG_RUNNING))
            await started.wait()
            run.stop("enough")
    assert run.result is not None
    left = run.result.left["slow"]
    assert 0 < left < 20  # counted in Redis: unread or pending
    assert f"slow: {left}" in str(run.result)


async def test_a_graph_gives_its_redis_client_and_namespace(cluster: Cluster, raw: Redis) -> None:
    graph = cluster.process(pipeline)
    assert graph.namespace == cluster.namespace
    await graph.redis.set(f"{cluster.namespace}:mine", b"1")  # the graph's own client
    assert await raw.get(f"{cluster.namespace}:mine") == b"1"
    in_memory = pipeline()
    assert in_memory.namespace is None
    with pytest.raises(WiringError, match="is in memory: it has no Redis client"):
        _ = in_memory.redis


async def test_a_serving_graph_cancelled_while_process_awaits_redis_ends(
    cluster: Cluster,
) -> None:
    """redis-py swallows a cancellation that lands while it connects; our Redis calls
    raise it again, or the worker loop (a task cancelled once) would run on forever."""
    working = anyio.Event()

    class Busy(Node):
        async def process(self, context: ExecutionContext) -> Any:
            working.set()
            await context.graph_state.set("touched", True)  # a fresh connection: connects
            await anyio.sleep_forever()

    graph = cluster.process(lambda: Graph(Busy(id="busy"), name="busy"))
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(graph.serve)
            await graph.send("busy", 1)
            await working.wait()
            tasks.cancel_scope.cancel()
