from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest

from spark_nodes import ExecutionContext, Node, NodeMessage
from spark_nodes.testing import InlineResult, run_inline

pytestmark = pytest.mark.anyio


class Score(Node):
    def process(self, context: ExecutionContext) -> Any:
        text = context.inputs.content["text"]
        return {"text": text, "score": len(text) / 10}


def routed() -> tuple[Score, Node, Node, Node]:
    router, high, low, audit = Score(id="router"), Node(id="high"), Node(id="low"), Node(id="audit")
    router.on(lambda out: out["score"] > 0.5) >> high
    router.otherwise() >> low
    router >> audit
    return router, high, low, audit


async def test_an_output_is_routed_along_the_edges_it_would_take() -> None:
    router, high, low, _ = routed()
    result = await run_inline(router, {"text": "a long text"})
    assert result.error is None
    [output] = result.outputs
    assert output.content == {"text": "a long text", "score": 1.1}
    assert output.targets == ("high", "audit")
    assert output.edges == ("router->high", "router->audit")
    assert output.forwarded
    assert result.sent_to(high) == [{"text": "a long text", "score": 1.1}]
    assert result.sent_to("audit") == [output.content]
    assert result.sent_to(low) == []
    message = result.probes["high"].received[0]
    assert message.metadata["source_node"] == "router"
    assert message.metadata["edge"] == "router->high"
    assert message.metadata["trace_id"] == result.inputs.id

    short = await run_inline(router, {"text": "ab"})
    assert short.outputs[0].targets == ("audit", "low")  # the fallback comes last


async def test_the_node_wiring_state_and_last_output_are_left_as_they_were() -> None:
    router, high, low, audit = routed()
    router.state["kept"] = 1
    edges = list(router.edges)
    await run_inline(router, {"text": "abc"})
    assert router.edges == edges
    assert [edge.target for edge in router.edges] == [high, low, audit]
    assert router.state == {"kept": 1}
    assert high.state == {}


async def test_an_output_with_no_edge_is_a_result_of_the_run() -> None:
    result = await run_inline(Score(id="alone"), {"text": "x"})
    assert result.outputs[0].targets == ()
    assert result.outputs[0].forwarded
    assert result.contents == [{"text": "x", "score": 0.1}]
    assert result.probes == {}


async def test_emitted_outputs_come_before_the_returned_one_and_keep_their_metadata() -> None:
    class Split(Node):
        def process(self, context: ExecutionContext) -> Any:
            for word in context.inputs.content.split()[:-1]:
                context.emit(NodeMessage(word, {"part": True}))
            return context.inputs.content.split()[-1]

    split, sink = Split(id="split"), Node(id="sink")
    split >> sink
    result = await run_inline(split, "a b c")
    assert result.contents == ["a", "b", "c"]
    assert [output.metadata for output in result.outputs] == [{"part": True}, {"part": True}, {}]
    assert result.sent_to(sink) == ["a", "b", "c"]
    assert result.probes["sink"].received[0].metadata["part"] is True


async def test_goto_sends_the_outputs_to_its_targets_instead_of_the_edges() -> None:
    class Jump(Node):
        def process(self, context: ExecutionContext) -> Any:
            context.goto("retry-later", ending)
            return context.inputs.content

    jump, wired, ending = Jump(id="jump"), Node(id="wired"), Node(id="end")
    jump >> wired
    result = await run_inline(jump, 7)
    assert result.goto == ("retry-later", "end")
    assert result.outputs[0].targets == ("retry-later", "end")
    assert result.outputs[0].edges == ("jump~>retry-later", "jump~>end")
    assert result.sent_to("retry-later") == [7]
    assert result.sent_to(ending) == [7]
    assert result.sent_to(wired) == []


async def test_stop_graph_is_recorded_and_its_outputs_are_not_forwarded() -> None:
    class Enough(Node):
        def process(self, context: ExecutionContext) -> Any:
            context.stop_graph("found it")
            return "last"

    enough, after = Enough(id="enough"), Node(id="after")
    enough >> after
    result = await run_inline(enough, None)
    assert result.stopped == "found it"
    assert result.cancelled is None
    assert result.contents == ["last"]
    assert not result.outputs[0].forwarded
    assert result.sent_to(after) == []


async def test_cancel_graph_is_recorded() -> None:
    class Abort(Node):
        def process(self, context: ExecutionContext) -> Any:
            context.cancel_graph("bad input")
            return "ignored"

    abort = Abort(id="abort")
    abort >> Node(id="after")
    result = await run_inline(abort, None)
    assert result.cancelled == "bad input"
    assert result.stopped is None
    assert not result.outputs[0].forwarded
    assert result.sent_to("after") == []


async def test_hold_is_recorded() -> None:
    class Holder(Node):
        def process(self, context: ExecutionContext) -> None:
            context.hold()

    assert (await run_inline(Holder(), "x")).held
    assert not (await run_inline(Node(), "x")).held


class Counter(Node):
    async def process(self, context: ExecutionContext) -> Any:
        context.state["seen"] = context.state.get("seen", 0) + 1
        total = await context.graph_state.incr("total")
        await context.graph_state.delete("stale")
        await context.graph_state.set("limit", 10)  # unchanged: not a write
        upstream = await context.get_result("upstream", default="none")
        return {"total": total, "upstream": upstream}


async def test_state_writes_are_reported_and_seeded_from_state_and_results() -> None:
    counter = Counter(id="counter")
    result = await run_inline(
        counter,
        "x",
        state={"total": 4, "stale": True, "limit": 10},
        results={"upstream": {"answer": 42}},
    )
    assert result.error is None
    assert result.contents == [{"total": 5, "upstream": {"answer": 42}}]
    assert result.node_state == {"seen": 1}
    assert result.node_state_writes == {"seen": 1}
    assert result.graph_state == {"total": 5, "limit": 10}
    assert result.graph_state_writes == {"total": 5}
    assert result.graph_state_deleted == ("stale",)
    assert counter.state == {}

    again = await run_inline(counter, "y", node_state=result.node_state)
    assert again.node_state == {"seen": 2}
    assert again.contents == [{"total": 1, "upstream": "none"}]
    assert result.node_state == {"seen": 1}  # a copy was changed, not the earlier result


async def test_a_sync_generator_forwards_each_item_and_stops_forwarding_after_stop_graph() -> None:
    class Items(Node):
        def process(self, context: ExecutionContext) -> Iterator[int]:
            yield 1
            yield 2
            context.stop_graph("two is enough")
            yield 3

    items, sink = Items(id="items"), Node(id="sink")
    items >> sink
    result = await run_inline(items, None)
    assert result.contents == [1, 2, 3]
    assert [output.forwarded for output in result.outputs] == [True, True, False]
    assert result.sent_to(sink) == [1, 2]
    assert result.stopped == "two is enough"


async def test_an_async_generator_forwards_each_item_with_the_goto_then_in_force() -> None:
    class Items(Node):
        async def process(self, context: ExecutionContext) -> AsyncIterator[str]:
            yield "a"
            await anyio.lowlevel.checkpoint()
            context.goto("side")
            yield "b"

    items, sink = Items(id="items"), Node(id="sink")
    items >> sink
    result = await run_inline(items, None)
    assert [output.targets for output in result.outputs] == [("sink",), ("side",)]
    assert result.sent_to(sink) == ["a"]
    assert result.sent_to("side") == ["b"]


async def test_an_error_is_returned_once_with_no_retry_and_outputs_dropped() -> None:
    calls: list[int] = []

    class Flaky(Node):
        async def process(self, context: ExecutionContext) -> Any:
            calls.append(context.attempt)
            context.emit("before")
            raise ValueError("boom")

    flaky, sink = Flaky(id="flaky"), Node(id="sink")
    flaky >> sink
    result = await run_inline(flaky, None)
    assert isinstance(result.error, ValueError)
    assert str(result.error) == "boom"
    assert calls == [1]
    assert result.outputs == ()
    assert result.sent_to(sink) == []
    with pytest.raises(ValueError, match="boom"):
        result.raise_error()

    await run_inline(flaky, None, attempt=3)
    assert calls == [1, 3]


async def test_a_generator_error_keeps_the_items_it_produced_before() -> None:
    class Half(Node):
        def process(self, context: ExecutionContext) -> Iterator[int]:
            yield 1
            raise RuntimeError("half way")

    half, sink = Half(id="half"), Node(id="sink")
    half >> sink
    result = await run_inline(half, None)
    assert isinstance(result.error, RuntimeError)
    assert result.sent_to(sink) == [1]


async def test_an_edge_condition_that_raises_fails_the_call_and_drops_its_outputs() -> None:
    def broken(_: Any) -> bool:
        raise KeyError("no such field")

    source, target, audit = Node(id="source"), Node(id="target"), Node(id="audit")
    source >> audit
    source.on(broken) >> target
    result = await run_inline(source, "x")
    assert isinstance(result.error, KeyError)
    assert result.sent_to(audit) == []
    assert result.outputs == ()


async def test_a_node_message_input_keeps_its_metadata_and_id() -> None:
    class Echo(Node):
        def process(self, context: ExecutionContext) -> Any:
            return (context.inputs.metadata["lang"], context.metadata.trace_id)

    result = await run_inline(Echo(), NodeMessage("x", {"lang": "en", "trace_id": "t-1"}))
    assert result.contents == [("en", "t-1")]
    assert isinstance(result, InlineResult)


async def test_the_default_process_relays_its_input() -> None:
    relay, sink = Node(id="relay"), Node(id="sink")
    relay >> sink
    result = await run_inline(relay, {"k": 1})
    assert result.sent_to(sink) == [{"k": 1}]


async def test_run_inline_leaves_nested_node_state_untouched() -> None:
    class Keeper(Node):
        def process(self, context: ExecutionContext) -> None:
            context.state.setdefault("items", []).append(context.inputs.content)

    keeper = Keeper(id="keeper")
    keeper.state["items"] = []
    result = await run_inline(keeper, "x")
    assert result.node_state == {"items": ["x"]}
    assert keeper.state == {"items": []}  # a deep copy: the list in it was not touched
