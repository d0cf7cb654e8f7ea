"""``graph.invoke``: one input in, the outputs *it* caused out (on Redis: test_redis_invoke)."""

from __future__ import annotations

import random
from typing import Any

import anyio
import pytest

from spark_nodes import (
    Budget,
    ExecutionContext,
    Graph,
    GraphNotRunning,
    InvokeFailed,
    InvokeTimeout,
    JoinNode,
    Node,
    NodeConfig,
    NodeMessage,
    RetryPolicy,
    Task,
    TaskType,
    WiringError,
)
from tests.seeds import seeded_random

pytestmark = pytest.mark.anyio

LONG = Task(type=TaskType.LONG_RUNNING)


class Add(Node):
    """Adds ``n`` after a random pause (seeded), so concurrent inputs interleave."""

    def __init__(self, n: int, pauses: random.Random | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.n = n
        self.pauses = pauses

    async def process(self, context: ExecutionContext) -> Any:
        if self.pauses is not None:
            await anyio.sleep(self.pauses.random() / 200)
        return context.inputs.content + self.n


async def test_invoke_returns_the_output_its_input_caused() -> None:
    a, b = Add(1, id="a"), Add(10, id="b")
    a >> b
    graph = Graph(start=a)
    with anyio.fail_after(10):
        async with graph.open_run(LONG) as run:
            answer = await run.invoke(5, timeout=5)
            assert answer.content == 16
            assert answer.contents == [16]
            assert answer.outputs[0].metadata["source_node"] == "b"
            assert answer.failures == ()


async def test_concurrent_invokes_through_a_fan_out_and_a_join_get_their_own_answers() -> None:
    pauses = seeded_random(
        "test_concurrent_invokes_through_a_fan_out_and_a_join_get_their_own_answers"
    )
    a, b, c = Add(1, pauses, id="a"), Add(10, pauses, id="b"), Add(100, pauses, id="c")
    join = JoinNode(id="join")
    a >> [b, c]
    [b, c] >> join
    graph = Graph(start=a)
    answers: dict[int, Any] = {}

    async def ask(number: int) -> None:
        answers[number] = (await graph.invoke(number, timeout=5)).contents

    with anyio.fail_after(20):
        async with graph.open_run(LONG), anyio.create_task_group() as group:
            for number in range(0, 20_000, 1000):
                group.start_soon(ask, number)
            for number in range(5):  # plain sends meanwhile are not anyone's answer
                await graph.send("a", -number)
    assert answers == {
        number: [{"b": number + 11, "c": number + 101}] for number in range(0, 20_000, 1000)
    }


async def test_invoke_collects_every_end_of_a_fan_out() -> None:
    a, b, c = Add(1, id="a"), Add(10, id="b"), Add(100, id="c")
    a >> [b, c]
    graph = Graph(start=a)
    with anyio.fail_after(10):
        async with graph.open_run(LONG):
            answer = await graph.invoke(0, timeout=5)
    assert sorted(answer.contents) == [11, 101]


async def test_invoke_waits_for_a_retried_message_and_answers_once() -> None:
    failures = [ValueError("flaky")]

    class Flaky(Node):
        def process(self, context: ExecutionContext) -> Any:
            if failures:
                raise failures.pop()
            return context.inputs.content * 2

    flaky = Flaky(
        id="flaky", config=NodeConfig(retry=RetryPolicy(max_attempts=3, initial_delay=0.01))
    )
    graph = Graph(start=flaky)
    with anyio.fail_after(10):
        async with graph.open_run(LONG):
            answer = await graph.invoke(21, timeout=5)
    assert answer.contents == [42]


async def test_invoke_follows_a_goto() -> None:
    class Router(Node):
        def process(self, context: ExecutionContext) -> Any:
            context.goto("far")
            return context.inputs.content

    router, near, far = Router(id="router"), Add(1, id="near"), Add(1000, id="far")
    router >> near
    graph = Graph(router, far)
    with anyio.fail_after(10):
        async with graph.open_run(LONG):
            answer = await graph.invoke(1, timeout=5)
    assert answer.contents == [1001]


async def test_invoke_of_an_input_that_is_dead_lettered_raises_with_what_failed() -> None:
    class Picky(Node):
        def process(self, context: ExecutionContext) -> Any:
            raise ValueError(f"no {context.inputs.content}")

    a = Add(1, id="a")
    a >> [Picky(id="picky"), Add(2, id="fine")]
    graph = Graph(start=a)
    with anyio.fail_after(10):
        async with graph.open_run(LONG):
            with pytest.raises(InvokeFailed, match="picky") as caught:
                await graph.invoke(1, timeout=5)
    result = caught.value.result
    assert result.contents == [4]  # the branch that worked
    (failure,) = result.failures
    assert (failure.node, failure.phase, failure.error) == ("picky", "process", "no 2")
    assert failure.error_type == "builtins.ValueError"


async def test_invoke_timeout_raises_and_leaves_nothing_waiting() -> None:
    release = anyio.Event()

    class Stuck(Node):
        async def process(self, context: ExecutionContext) -> Any:
            await release.wait()
            return context.inputs.content

    graph = Graph(start=Stuck(id="stuck"))
    with anyio.fail_after(10):
        async with graph.open_run(LONG):
            with pytest.raises(InvokeTimeout, match="stuck") as caught:
                await graph.invoke(1, timeout=0.05)
            assert caught.value.in_flight == 1
            assert graph._run is not None
            assert graph._run.watches == {}  # nothing left behind
            release.set()
            answer = await graph.invoke(2, timeout=5)  # the graph works on
    assert answer.contents == [2]


async def test_invoke_on_a_graph_that_is_not_running_or_has_no_such_node_says_so() -> None:
    graph = Graph(start=Add(1, id="a"))
    with pytest.raises(GraphNotRunning):
        await graph.invoke(1)
    with anyio.fail_after(10):
        async with graph.open_run(LONG):
            with pytest.raises(WiringError, match="'a'"):
                await graph.invoke(1, node="nosuch")


async def test_invoke_raises_when_the_run_ends_before_the_answer() -> None:
    started = anyio.Event()

    class Stuck(Node):
        async def process(self, context: ExecutionContext) -> Any:
            started.set()
            await anyio.sleep_forever()

    graph = Graph(start=Stuck(id="stuck"))
    task = Task(type=TaskType.LONG_RUNNING, budget=Budget(grace_period=0.01))

    async def stop_once_started() -> None:
        await started.wait()
        graph.stop("enough")  # the grace period ends, the stuck message is cancelled

    with anyio.fail_after(10):
        async with graph.open_run(task), anyio.create_task_group() as group:
            group.start_soon(stop_once_started)
            with pytest.raises(GraphNotRunning, match="the run ended"):
                await graph.invoke(1)


async def test_an_invoke_settled_by_a_stop_answers_then_the_graph_refuses_more() -> None:
    class Stopper(Node):
        async def process(self, context: ExecutionContext) -> Any:
            context.stop_graph("enough")
            return None

    a = Add(1, id="a")
    a >> Stopper(id="stopper")
    graph = Graph(start=a)
    with anyio.fail_after(10):
        async with graph.open_run(LONG):
            answer = await graph.invoke(1, timeout=5)  # settled by stopping
            assert answer.contents == []
            with pytest.raises(GraphNotRunning):
                await graph.invoke(1, timeout=5)


async def test_invoke_to_another_node_than_the_start() -> None:
    a, b = Add(1, id="a"), Add(10, id="b")
    a >> b
    graph = Graph(start=a)
    with anyio.fail_after(10):
        async with graph.open_run(LONG):
            answer = await graph.invoke(0, node=b, timeout=5)
    assert answer.contents == [10]


async def test_a_failed_attempt_of_a_generator_leaves_nothing_in_the_answer() -> None:
    failures = [ValueError("half way")]

    class Items(Node):
        def process(self, context: ExecutionContext) -> Any:
            yield "first"
            if failures:
                raise failures.pop()
            yield "second"

    # A generator's items go out as they come; with no edge they go nowhere, so a retry
    # is allowed, and the answer holds only the attempt that worked.
    items = Items(
        id="items", config=NodeConfig(retry=RetryPolicy(max_attempts=2, initial_delay=0.001))
    )
    graph = Graph(start=items)
    with anyio.fail_after(10):
        async with graph.open_run(LONG):
            answer = await graph.invoke(None, timeout=5)
    assert answer.contents == ["first", "second"]


async def test_a_retry_in_one_loop_does_not_take_a_sibling_loops_outputs_from_the_answer() -> None:
    failed_once: set[str] = set()
    slow_started = anyio.Event()

    class Split(Node):
        def process(self, context: ExecutionContext) -> Any:
            yield "slow"
            yield "fast"

    class Worker(Node):
        async def process(self, context: ExecutionContext) -> Any:
            item = context.inputs.content
            if item == "slow":
                slow_started.set()
                await anyio.sleep(0.05)  # the fast one finishes meanwhile, in the other loop
                if item not in failed_once:
                    failed_once.add(item)
                    raise RuntimeError("transient")
            else:
                await slow_started.wait()
            return f"{item}-done"

    retry = RetryPolicy(max_attempts=2, initial_delay=0.001)
    split, worker = Split(id="split"), Worker(id="w", config=NodeConfig(concurrency=2, retry=retry))
    split >> worker
    graph = Graph(start=split)
    with anyio.fail_after(10):
        async with graph.open_run(LONG):
            answer = await graph.invoke("go", timeout=5)
    assert sorted(answer.contents) == ["fast-done", "slow-done"]


async def test_concurrent_invokes_of_one_node_message_get_one_answer_each() -> None:
    class Double(Node):
        async def process(self, context: ExecutionContext) -> Any:
            await anyio.sleep(0.01)
            return context.inputs.content * 2

    graph = Graph(start=Double(id="double"))
    message = NodeMessage(21)
    answers: list[Any] = []

    async def ask() -> None:
        answers.append((await graph.invoke(message, timeout=5)).contents)

    with anyio.fail_after(10):
        async with graph.open_run(LONG), anyio.create_task_group() as group:
            group.start_soon(ask)
            group.start_soon(ask)
    assert answers == [[42], [42]]


async def test_an_invoke_waiting_when_the_run_is_cancelled_from_outside_raises() -> None:
    started = anyio.Event()

    class Stuck(Node):
        async def process(self, context: ExecutionContext) -> Any:
            started.set()
            await anyio.sleep_forever()

    graph = Graph(start=Stuck(id="stuck"))
    outcome: list[str] = []

    async def ask() -> None:
        try:
            await graph.invoke(1)  # no timeout: only the end of the run can end it
        except GraphNotRunning:
            outcome.append("not running")

    async def wait() -> None:
        await graph.wait_idle()
        outcome.append("idle")

    with anyio.fail_after(10):
        async with anyio.create_task_group() as waiters:
            with anyio.CancelScope() as scope:
                async with graph.open_run(LONG):
                    waiters.start_soon(ask)
                    await started.wait()
                    waiters.start_soon(wait)
                    await anyio.wait_all_tasks_blocked()  # both are waiting on the run
                    scope.cancel()
    assert sorted(outcome) == ["idle", "not running"]
