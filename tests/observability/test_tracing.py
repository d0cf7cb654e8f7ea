"""TracingObserver: a span per hop, linked across hops by the metadata's trace context."""

from __future__ import annotations

import contextvars
import importlib
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, StatusCode

from spark_nodes import (
    CountWindow,
    ExecutionContext,
    Graph,
    Node,
    NodeConfig,
    RetryPolicy,
    Task,
    TaskType,
)
from spark_nodes.channels import ChannelMessage, InMemoryChannel
from spark_nodes.nodes.observing import GraphEvent
from spark_nodes.observability import TracingObserver, inject_trace_context
from tests.redis_support import Cluster

pytestmark = pytest.mark.anyio


class Spans:
    """A private tracer provider (the global one is left alone) and what it exported."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def observer(self, **options: Any) -> TracingObserver:
        return TracingObserver(tracer_provider=self.provider, **options)

    def finished(self) -> tuple[ReadableSpan, ...]:
        return self.exporter.get_finished_spans()

    def named(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.finished() if span.name == name]


@pytest.fixture
def spans() -> Iterator[Spans]:
    made = Spans()
    yield made
    made.provider.shutdown()


class Inc(Node):
    def process(self, context: ExecutionContext) -> Any:
        return context.inputs.content + 1


class Sink(Node):
    def process(self, context: ExecutionContext) -> None:
        return None


class FailOnce(Node):
    """Raises on its first attempt of each message, succeeds on the second."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.failed: set[Any] = set()

    def process(self, context: ExecutionContext) -> Any:
        if context.inputs.content not in self.failed:
            self.failed.add(context.inputs.content)
            raise ValueError(f"flaky on {context.inputs.content}")
        return context.inputs.content


class Broken(Node):
    def process(self, context: ExecutionContext) -> Any:
        raise RuntimeError("always broken")


class SeesCurrentSpan(Node):
    """Records the span that is current while its process runs."""

    seen: list[SpanContext]

    def process(self, context: ExecutionContext) -> Any:
        self.seen.append(trace.get_current_span().get_span_context())
        return context.inputs.content


async def run_with(
    graph: Graph, observer: TracingObserver, *sends: tuple[str, Any, dict[str, Any] | None]
) -> None:
    graph.observe(observer)
    with anyio.fail_after(10):
        async with graph.open_run(Task(type=TaskType.LONG_RUNNING)):
            for node, content, metadata in sends:
                await graph.send(node, content, metadata=metadata)
            await graph.wait_idle()


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    found: int = span.context.span_id
    return found


def trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    found: int = span.context.trace_id
    return found


async def test_a_pipeline_makes_a_span_per_hop_each_the_child_of_the_hop_before(
    spans: Spans,
) -> None:
    a, b, c = Inc(id="a"), Inc(id="b"), Sink(id="c")
    a >> b >> c
    await run_with(Graph(start=a), spans.observer(), ("a", 1, None))
    [first], [second], [third] = (
        spans.named("process a"),
        spans.named("process b"),
        (spans.named("process c")),
    )
    assert len(spans.finished()) == 3
    assert trace_id(first) == trace_id(second) == trace_id(third)
    assert first.parent is None  # sent from outside with no trace context: a new trace
    assert parent_id(second) == span_id(first)
    assert parent_id(third) == span_id(second)
    assert first.kind is trace.SpanKind.CONSUMER
    assert all(span.status.status_code is StatusCode.OK for span in spans.finished())
    attributes = dict(second.attributes or {})
    assert attributes["spark_nodes.node"] == "b"
    assert attributes["spark_nodes.edge"] == "a->b"
    assert attributes["spark_nodes.attempt"] == 1
    assert attributes["spark_nodes.outcome"] == "ok"
    assert isinstance(attributes["spark_nodes.duration"], float)
    assert isinstance(attributes["spark_nodes.message_id"], str)
    assert (
        attributes["spark_nodes.trace_id"] == dict(third.attributes or {})["spark_nodes.trace_id"]
    )
    assert "spark_nodes.edge" not in dict(first.attributes or {})


async def test_each_input_gets_a_trace_of_its_own(spans: Spans) -> None:
    a, b = Inc(id="a"), Sink(id="b")
    a >> b
    await run_with(Graph(start=a), spans.observer(), ("a", 1, None), ("a", 2, None))
    roots = spans.named("process a")
    assert len(roots) == 2
    assert trace_id(roots[0]) != trace_id(roots[1])
    for leaf in spans.named("process b"):
        [root] = [span for span in roots if span_id(span) == parent_id(leaf)]
        assert trace_id(root) == trace_id(leaf)


async def test_a_fan_out_makes_sibling_spans(spans: Spans) -> None:
    split, left, right = Inc(id="split"), Sink(id="left"), Sink(id="right")
    split >> left
    split >> right
    await run_with(Graph(start=split), spans.observer(), ("split", 1, None))
    [root] = spans.named("process split")
    [one], [two] = spans.named("process left"), spans.named("process right")
    assert parent_id(one) == parent_id(two) == span_id(root)
    assert trace_id(one) == trace_id(two) == trace_id(root)


async def test_a_failed_then_retried_attempt_is_an_error_span_then_an_ok_span(
    spans: Spans,
) -> None:
    start = Inc(id="start")
    flaky = FailOnce(
        id="flaky", config=NodeConfig(retry=RetryPolicy(max_attempts=2, initial_delay=0.001))
    )
    sink = Sink(id="sink")
    start >> flaky >> sink
    await run_with(Graph(start=start), spans.observer(), ("start", 1, None))
    failed, retried = sorted(
        spans.named("process flaky"),
        key=lambda s: str(dict(s.attributes or {})["spark_nodes.attempt"]),
    )
    [root], [last] = spans.named("process start"), spans.named("process sink")
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description == "ValueError: flaky on 2"
    assert dict(failed.attributes or {})["spark_nodes.outcome"] == "retry"
    assert [event.name for event in failed.events] == ["exception"]
    assert retried.status.status_code is StatusCode.OK
    assert dict(retried.attributes or {})["spark_nodes.attempt"] == 2
    assert parent_id(failed) == parent_id(retried) == span_id(root)
    assert parent_id(last) == span_id(retried)  # the output of the attempt that succeeded


async def test_a_dead_lettered_message_is_an_error_span_with_the_exception(spans: Spans) -> None:
    start, broken = Inc(id="start"), Broken(id="broken")
    start >> broken
    await run_with(Graph(start=start), spans.observer(), ("start", 1, None))
    [span] = spans.named("process broken")
    assert span.status.status_code is StatusCode.ERROR
    assert dict(span.attributes or {})["spark_nodes.outcome"] == "dead_letter"
    [event] = span.events
    assert event.name == "exception"
    attributes = dict(event.attributes or {})
    assert attributes["exception.type"] == "RuntimeError"
    assert attributes["exception.message"] == "always broken"


async def test_an_error_handlers_span_is_the_child_of_the_failed_call_in_its_trace(
    spans: Spans,
) -> None:
    start, broken, handler = Inc(id="start"), Broken(id="broken"), Node(id="handler")
    start >> broken
    broken.on_error() >> handler >> Sink(id="after")
    await run_with(Graph(start=start), spans.observer(), ("start", 1, None))
    [root], [failed] = spans.named("process start"), spans.named("process broken")
    [handled], [after] = spans.named("process handler"), spans.named("process after")
    assert dict(failed.attributes or {})["spark_nodes.outcome"] == "routed"
    assert failed.status.status_code is StatusCode.ERROR
    assert trace_id(handled) == trace_id(failed) == trace_id(root)
    assert parent_id(handled) == span_id(failed)
    assert dict(handled.attributes or {})["spark_nodes.edge"] == "broken-!>handler"
    assert parent_id(after) == span_id(handled)


async def test_a_failed_call_whose_route_cannot_be_taken_ends_as_a_dead_letter(
    spans: Spans,
) -> None:
    closed = InMemoryChannel(name="closed-handler")
    broken, handler = Broken(id="broken"), Node(id="handler", mailbox=closed)
    broken.on_error() >> handler
    closed.close()
    await run_with(Graph(broken), spans.observer(), ("broken", 1, None))
    [failed] = spans.named("process broken")
    assert dict(failed.attributes or {})["spark_nodes.outcome"] == "dead_letter"
    assert spans.named("process handler") == []


async def test_a_call_that_keeps_its_message_when_its_outputs_fail_ends_with_outcome_ok(
    spans: Spans,
) -> None:
    """Its message stays held in the open window (not dead-lettered: the span said so)."""
    window, sink = CountWindow(2, slide=1, id="w"), Sink(id="sink")
    conditions = iter([False])

    def first_output_unroutable(output: Any) -> bool:
        if next(conditions, True):
            return True
        raise RuntimeError("the edge condition broke once")

    window.on(first_output_unroutable) >> sink
    await run_with(Graph(window), spans.observer(), ("w", 0, None), ("w", 1, None))
    calls = spans.named("process w")
    assert [dict(span.attributes or {})["spark_nodes.outcome"] for span in calls] == ["ok"] * 2
    # The second call's outputs failed: its span records that error all the same.
    assert [span.status.status_code for span in calls] == [StatusCode.OK, StatusCode.ERROR]
    assert "the edge condition broke once" in (calls[1].status.description or "")


async def test_an_input_sent_with_a_traceparent_continues_the_senders_trace(
    spans: Spans,
) -> None:
    a, b = Inc(id="a"), Sink(id="b")
    a >> b
    tracer = spans.provider.get_tracer("caller")
    metadata: dict[str, Any] = {}
    with tracer.start_as_current_span("caller") as caller:
        inject_trace_context(metadata)
    assert "traceparent" in metadata
    await run_with(Graph(start=a), spans.observer(), ("a", 1, metadata))
    [first], [second] = spans.named("process a"), spans.named("process b")
    assert trace_id(first) == trace_id(second) == caller.get_span_context().trace_id
    assert parent_id(first) == caller.get_span_context().span_id
    assert parent_id(second) == span_id(first)


async def test_the_hop_span_is_current_while_process_runs(spans: Spans) -> None:
    a, b = Inc(id="a"), SeesCurrentSpan(id="b")
    b.seen = []
    a >> b
    await run_with(Graph(start=a), spans.observer(), ("a", 1, None))
    [span] = spans.named("process b")
    assert b.seen == [span.context]
    assert not trace.get_current_span().get_span_context().is_valid  # nothing leaked here


def traced_pipeline() -> Graph:
    first, second, sink = Inc(id="first"), Inc(id="second"), Sink(id="sink")
    first >> second >> sink
    return Graph(first, name="traced")


@pytest.mark.redis  # redis-py: asyncio only
async def test_the_trace_crosses_redis_hops_between_worker_processes(
    cluster: Cluster, spans: Spans
) -> None:
    one, two, client = (cluster.process(traced_pipeline) for _ in range(3))
    one.observe(spans.observer())  # each "process" has an observer of its own
    two.observe(spans.observer())
    metadata: dict[str, Any] = {}
    with spans.provider.get_tracer("caller").start_as_current_span("caller") as caller:
        inject_trace_context(metadata)
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(one.serve, ["first"])
            tasks.start_soon(two.serve, ["second", "sink"])
            await client.send("first", 1, metadata=metadata)
            await client.shutdown()  # served once everything sent before it is
    [first], [second], [sink] = (spans.named(f"process {n}") for n in ("first", "second", "sink"))
    assert trace_id(first) == trace_id(second) == trace_id(sink)
    assert trace_id(first) == caller.get_span_context().trace_id
    assert parent_id(first) == caller.get_span_context().span_id
    assert parent_id(second) == span_id(first)  # the hop through Redis, to the other process
    assert parent_id(sink) == span_id(second)
    assert dict(second.attributes or {})["spark_nodes.edge"] == "first->second"


def refusing_shop() -> Graph:
    start, broken = Inc(id="start"), Broken(id="broken")
    start >> broken
    broken.on_error() >> Sink(id="handler")
    return Graph(start, name="refusing")


@pytest.mark.redis  # redis-py: asyncio only
async def test_an_error_route_keeps_the_trace_across_redis_worker_processes(
    cluster: Cluster, spans: Spans
) -> None:
    one, two, client = (cluster.process(refusing_shop) for _ in range(3))
    one.observe(spans.observer())
    two.observe(spans.observer())
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(one.serve, ["start", "broken"])
            tasks.start_soon(two.serve, ["handler"])
            await client.send("start", 1)
            await client.shutdown()
    [root], [failed] = spans.named("process start"), spans.named("process broken")
    [handled] = spans.named("process handler")
    assert trace_id(handled) == trace_id(failed) == trace_id(root)
    assert parent_id(handled) == span_id(failed)  # through Redis, to the other process


def event(phase: Any, message: ChannelMessage, **fields: Any) -> GraphEvent:
    return GraphEvent(phase, "node", message, attempt=1, **fields)


def calls(observer: TracingObserver, *events: GraphEvent) -> None:
    """Call the observer in a context of its own, as a worker loop's task would."""

    def run() -> None:
        for one in events:
            observer(one)

    contextvars.copy_context().run(run)


def test_spans_whose_end_never_comes_are_ended_beyond_the_bound(spans: Spans) -> None:
    observer = spans.observer(max_open_spans=2)
    messages = [ChannelMessage(payload=n) for n in range(3)]
    calls(observer, *(event("process_start", message) for message in messages))
    assert observer.open_spans == 2
    [abandoned] = spans.finished()
    assert dict(abandoned.attributes or {})["spark_nodes.message_id"] == messages[0].id
    assert dict(abandoned.attributes or {})["spark_nodes.outcome"] == "abandoned"
    calls(observer, *(event("process_end", m, outcome="ok", duration=0.0) for m in messages))
    assert observer.open_spans == 0
    assert len(spans.finished()) == 3


def test_a_start_of_a_message_already_open_ends_the_stale_span(spans: Spans) -> None:
    observer = spans.observer()
    message = ChannelMessage(payload=1)
    # Started again (redelivered, its worker cancelled) before its end came:
    calls(observer, event("process_start", message), event("process_start", message))
    assert observer.open_spans == 1
    [stale] = spans.finished()
    assert dict(stale.attributes or {})["spark_nodes.outcome"] == "abandoned"


def test_the_bound_on_open_spans_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_open_spans must be at least 1"):
        TracingObserver(max_open_spans=0)


def test_without_opentelemetry_the_import_error_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [m for m in sys.modules if m.partition(".")[0] == "opentelemetry"]:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    monkeypatch.delitem(sys.modules, "spark_nodes.observability.tracing")
    with pytest.raises(ImportError, match=r"pip install 'spark-nodes\[otel\]'"):
        importlib.import_module("spark_nodes.observability.tracing")


def test_importing_the_library_imports_neither_extra() -> None:
    # (redis-py imports opentelemetry itself when it is installed: only ours are checked.)
    code = (
        "import sys, spark_nodes, spark_nodes.observability\n"
        "ours = ('spark_nodes.observability.tracing', 'spark_nodes.observability.prometheus',"
        " 'prometheus_client')\n"
        "loaded = [m for m in ours if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
