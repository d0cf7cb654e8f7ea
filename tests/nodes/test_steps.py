"""Durable steps in memory: ``context.step`` runs its function once per message, and
``NonRetriableError`` skips the retries. (On Redis: ``tests/graphs/test_redis_steps.py``.)"""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import pytest

from spark_nodes import (
    ExecutionContext,
    Graph,
    GraphResult,
    MessageEncodeError,
    Node,
    NodeConfig,
    NonRetriableError,
    RetryPolicy,
    Task,
    TaskType,
)
from spark_nodes.channels import ChannelMessage

pytestmark = pytest.mark.anyio

RETRY = RetryPolicy(max_attempts=4, initial_delay=0.001, jitter=0.0)


class Collect(Node):
    """Keeps what it gets, in order."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.seen: list[Any] = []

    def process(self, context: ExecutionContext) -> None:
        self.seen.append(context.inputs.content)


class Calls:
    """Counts the calls of a step's function, by argument."""

    def __init__(self) -> None:
        self.calls: list[Any] = []

    def charge(self, amount: Any) -> dict[str, Any]:
        self.calls.append(amount)
        return {"receipt": f"r-{amount}", "amount": amount}

    async def charge_async(self, amount: Any) -> tuple[str, Any]:
        await anyio.lowlevel.checkpoint()
        self.calls.append(amount)
        return ("paid", amount)


class ChargeThenFail(Node):
    """Charges, then fails ``failures`` attempts after the charge; passes the receipt on."""

    def __init__(self, calls: Calls, failures: int, **kw: Any) -> None:
        super().__init__(config=NodeConfig(retry=RETRY), **kw)
        self.calls = calls
        self.failures = failures

    async def process(self, context: ExecutionContext) -> Any:
        receipt = await context.step("charge", self.calls.charge, context.inputs.content)
        if context.attempt <= self.failures:
            raise RuntimeError(f"the shipping service is down (attempt {context.attempt})")
        return receipt


async def run(graph: Graph, *inputs: Any) -> GraphResult:
    with anyio.fail_after(10):
        return await graph.run(Task(inputs=list(inputs) if len(inputs) > 1 else inputs[0]))


async def dead_letter_records(graph: Graph, count: int) -> list[dict[str, Any]]:
    records = []
    with anyio.fail_after(5):
        for _ in range(count):
            letter: ChannelMessage = await graph.dead_letters.receive()
            records.append(letter.metadata["dead_letter"])
    return records


async def test_a_step_runs_once_however_often_process_is_retried() -> None:
    calls = Calls()
    node, sink = ChargeThenFail(calls, failures=3, id="pay"), Collect(id="sink")
    node >> sink
    await run(Graph(start=node), 30)
    assert calls.calls == [30]  # four attempts, one charge
    assert sink.seen == [{"receipt": "r-30", "amount": 30}]


async def test_each_message_has_its_own_steps() -> None:
    calls = Calls()
    node, sink = ChargeThenFail(calls, failures=1, id="pay"), Collect(id="sink")
    node >> sink
    graph = Graph(start=node)
    with anyio.fail_after(10):
        async with graph.open_run(Task(type=TaskType.LONG_RUNNING)) as running:
            for amount in (1, 2, 3):
                await running.send("pay", amount)
            await running.wait_idle()
    assert sorted(calls.calls) == [1, 2, 3]
    assert sorted(r["amount"] for r in sink.seen) == [1, 2, 3]


async def test_messages_handled_one_after_another_each_run_their_own_steps() -> None:
    # No failure: the worker loop's fast path reuses one context (and its inputs) for the
    # next message; the earlier message's steps must not carry over.
    calls = Calls()
    node, sink = ChargeThenFail(calls, failures=0, id="pay"), Collect(id="sink")
    node >> sink
    graph = Graph(start=node)
    with anyio.fail_after(10):
        async with graph.open_run(Task(type=TaskType.LONG_RUNNING)) as running:
            for amount in range(5):
                await running.send("pay", amount)
            await running.wait_idle()
    assert calls.calls == [0, 1, 2, 3, 4]
    assert [r["amount"] for r in sink.seen] == [0, 1, 2, 3, 4]


async def test_an_async_step_function_is_awaited_and_its_result_reads_back_as_msgpack() -> None:
    calls = Calls()

    class Pay(Node):
        async def process(self, context: ExecutionContext) -> Any:
            first = await context.step("charge", calls.charge_async, 5)
            assert first == ["paid", 5]  # a tuple reads back as a list, the first time too
            if context.attempt == 1:
                raise RuntimeError("after the charge")
            return first

    node, sink = Pay(id="pay", config=NodeConfig(retry=RETRY)), Collect(id="sink")
    node >> sink
    await run(Graph(start=node), None)
    assert calls.calls == [5]
    assert sink.seen == [["paid", 5]]


async def test_a_step_that_raises_stores_nothing_and_runs_again_on_the_retry() -> None:
    tries: list[int] = []

    def flaky_charge(attempt: int) -> str:
        tries.append(attempt)
        if attempt == 1:
            raise ConnectionError("the card processor timed out")
        return "ok"

    class Pay(Node):
        async def process(self, context: ExecutionContext) -> Any:
            return await context.step("charge", flaky_charge, context.attempt)

    node, sink = Pay(id="pay", config=NodeConfig(retry=RETRY)), Collect(id="sink")
    node >> sink
    await run(Graph(start=node), None)
    assert tries == [1, 2]
    assert sink.seen == ["ok"]


async def test_two_steps_need_two_names() -> None:
    calls = Calls()

    class Twice(Node):
        async def process(self, context: ExecutionContext) -> Any:
            await context.step("charge", calls.charge, 1)
            return await context.step("charge", calls.charge, 2)

    node = Twice(id="twice", config=NodeConfig(retry=RETRY))
    graph = Graph(start=node)
    result = await run(graph, None)
    assert result.dead_lettered == 1
    (record,) = await dead_letter_records(graph, 1)
    assert record["error_type"] == "builtins.ValueError"
    assert "step 'charge' ran already" in record["error"]
    assert calls.calls == [1]  # retried: the first step's result was kept; the second refused


async def test_a_result_msgpack_cannot_encode_fails_the_step_and_is_not_kept() -> None:
    made: list[int] = []

    def make_a_set() -> set[int]:
        made.append(1)
        return {1, 2}

    class Pay(Node):
        async def process(self, context: ExecutionContext) -> Any:
            return await context.step("charge", make_a_set)

    node = Pay(id="pay", config=NodeConfig(retry=RetryPolicy(max_attempts=2, initial_delay=0)))
    graph = Graph(start=node)
    result = await run(graph, None)
    assert result.dead_lettered == 1
    (record,) = await dead_letter_records(graph, 1)
    assert record["error_type"] == f"{MessageEncodeError.__module__}.MessageEncodeError"
    assert "the result of step 'charge' of 'pay'" in record["error"]
    assert made == [1, 1]  # nothing was stored: the retry ran it again


async def test_bad_step_arguments_are_refused_clearly() -> None:
    errors: list[str] = []

    class Bad(Node):
        async def process(self, context: ExecutionContext) -> None:
            for name, fn in (("", print), (3, print), ("ok", "not callable")):
                try:
                    await context.step(name, fn)  # type: ignore[arg-type]
                except TypeError as error:
                    errors.append(str(error))

    await run(Graph(start=Bad(id="bad")), None)
    assert errors == [
        "a step name must be a non-empty str, not ''",
        "a step name must be a non-empty str, not 3",
        "step 'ok': fn must be callable, not str",
    ]


async def test_a_non_retriable_error_skips_the_remaining_retries() -> None:
    attempts: list[int] = []

    class Decline(Node):
        def process(self, context: ExecutionContext) -> None:
            attempts.append(context.attempt)
            raise NonRetriableError("card declined")

    node = Decline(id="pay", config=NodeConfig(retry=RetryPolicy(max_attempts=5)))
    graph = Graph(start=node)
    result = await run(graph, None)
    assert attempts == [1]
    assert result.dead_lettered == 1
    (record,) = await dead_letter_records(graph, 1)
    assert (record["error_type"], record["attempts"]) == (
        "spark_nodes.errors.NonRetriableError",
        1,
    )


async def test_a_subclass_of_non_retriable_error_is_not_retried_either() -> None:
    class Declined(NonRetriableError):
        pass

    assert not RetryPolicy(max_attempts=5).should_retry(1, Declined("no"))
    assert RetryPolicy(max_attempts=5).should_retry(1, RuntimeError("maybe"))
