"""PrometheusExporter: a graph's figures as Prometheus metrics, refreshed from stats()."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import anyio
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from structlog.testing import capture_logs

from spark_nodes import (
    ExecutionContext,
    Graph,
    MetricsObserver,
    Node,
    NodeConfig,
    RetryPolicy,
    Task,
    TaskType,
)
from spark_nodes.observability import PrometheusExporter

pytestmark = pytest.mark.anyio


class Inc(Node):
    def process(self, context: ExecutionContext) -> Any:
        return context.inputs.content + 1


class Sink(Node):
    def process(self, context: ExecutionContext) -> None:
        if context.inputs.content < 0:
            raise ValueError("negative")


class FailOnce(Node):
    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.failed: set[Any] = set()

    def process(self, context: ExecutionContext) -> Any:
        if context.inputs.content not in self.failed:
            self.failed.add(context.inputs.content)
            raise ValueError("flaky")
        return context.inputs.content


def pipeline(name: str = "pipe") -> Graph:
    a, b, c = Inc(id="a"), Inc(id="b"), Sink(id="c")
    a >> b >> c
    return Graph(start=a, name=name)


def lines(registry: CollectorRegistry) -> list[str]:
    return generate_latest(registry).decode().splitlines()


async def send_all(graph: Graph, *contents: Any) -> None:
    with anyio.fail_after(10):
        async with graph.open_run(Task(type=TaskType.LONG_RUNNING)):
            for content in contents:
                await graph.send(graph.start, content)
            await graph.wait_idle()


async def test_a_refresh_exports_the_counters_gauges_and_edge_counts() -> None:
    graph, registry = pipeline(), CollectorRegistry()
    exporter = PrometheusExporter(graph, registry)
    await send_all(graph, 1, 2, 3, -4)  # -4 + 2 = -2: dead-lettered at c
    await exporter.refresh()
    exported = lines(registry)
    for line in [
        'spark_nodes_messages_received_total{graph="pipe",node="a"} 4.0',
        'spark_nodes_messages_processed_total{graph="pipe",node="a"} 4.0',
        'spark_nodes_messages_forwarded_total{graph="pipe",node="b"} 4.0',
        'spark_nodes_messages_processed_total{graph="pipe",node="c"} 3.0',
        'spark_nodes_messages_dead_lettered_total{graph="pipe",node="c"} 1.0',
        'spark_nodes_process_failures_total{graph="pipe",node="c"} 1.0',
        'spark_nodes_process_retries_total{graph="pipe",node="c"} 0.0',
        'spark_nodes_edge_messages_sent_total{edge="a->b",graph="pipe",node="a"} 4.0',
        'spark_nodes_edge_messages_sent_total{edge="b->c",graph="pipe",node="b"} 4.0',
        'spark_nodes_mailbox_depth{graph="pipe",node="c"} 0.0',
        'spark_nodes_node_workers{graph="pipe",node="b"} 1.0',
        'spark_nodes_graph_running{graph="pipe"} 0.0',
        "# TYPE spark_nodes_messages_received_total counter",
        "# TYPE spark_nodes_node_rate gauge",
    ]:
        assert line in exported
    assert any(
        line.startswith('spark_nodes_node_rate{graph="pipe",node="a"} ') for line in exported
    )
    # Not metered: no quantiles rather than made-up zeros.
    assert not any(line.startswith("spark_nodes_process_time_seconds{") for line in exported)


async def test_retries_are_counted() -> None:
    a = Inc(id="a")
    flaky = FailOnce(
        id="flaky", config=NodeConfig(retry=RetryPolicy(max_attempts=2, initial_delay=0.001))
    )
    a >> flaky
    graph, registry = Graph(start=a, name="retrying"), CollectorRegistry()
    exporter = PrometheusExporter(graph, registry)
    await send_all(graph, 1, 2)
    await exporter.refresh()
    exported = lines(registry)
    assert 'spark_nodes_process_retries_total{graph="retrying",node="flaky"} 2.0' in exported
    assert 'spark_nodes_messages_processed_total{graph="retrying",node="flaky"} 2.0' in exported


async def test_messages_sent_along_error_routes_are_counted_apart_from_dead_letters() -> None:
    a, c = Inc(id="a"), Sink(id="c")
    a >> c
    c.on_error() >> Node(id="handler")
    graph, registry = Graph(start=a, name="routing"), CollectorRegistry()
    exporter = PrometheusExporter(graph, registry)
    await send_all(graph, 1, -5, -6)  # -4 and -5 fail at c: routed, not dead-lettered
    await exporter.refresh()
    exported = lines(registry)
    assert 'spark_nodes_messages_error_routed_total{graph="routing",node="c"} 2.0' in exported
    assert 'spark_nodes_messages_error_routed_total{graph="routing",node="a"} 0.0' in exported
    assert 'spark_nodes_messages_dead_lettered_total{graph="routing",node="c"} 0.0' in exported


async def test_a_metrics_observer_source_exports_process_and_queue_time_quantiles() -> None:
    graph, registry = pipeline("metered"), CollectorRegistry()
    metrics = MetricsObserver()
    graph.observe(metrics)
    exporter = PrometheusExporter(metrics, registry)
    await send_all(graph, *range(10))
    await exporter.refresh()
    exported = lines(registry)
    for quantile in ("0.5", "0.9", "0.99"):
        labels = f'{{graph="metered",node="b",quantile="{quantile}"}}'
        assert any(
            line.startswith(f"spark_nodes_process_time_seconds{labels} ") for line in exported
        )
        assert any(line.startswith(f"spark_nodes_queue_time_seconds{labels} ") for line in exported)
    assert 'spark_nodes_messages_processed_total{graph="metered",node="c"} 10.0' in exported


async def test_a_graph_that_never_ran_exports_zeros() -> None:
    graph, registry = pipeline("idle"), CollectorRegistry()
    exporter = PrometheusExporter(graph, registry, namespace="app")
    await exporter.refresh()
    exported = lines(registry)
    assert 'app_messages_received_total{graph="idle",node="a"} 0.0' in exported
    assert 'app_edge_messages_sent_total{edge="b->c",graph="idle",node="b"} 0.0' in exported
    assert 'app_mailbox_depth{graph="idle",node="c"} 0.0' in exported
    assert 'app_graph_running{graph="idle"} 0.0' in exported


def test_before_the_first_refresh_the_families_have_no_samples() -> None:
    registry = CollectorRegistry()
    PrometheusExporter(pipeline("early"), registry)
    exported = lines(registry)
    assert "# TYPE spark_nodes_messages_received_total counter" in exported
    assert not [line for line in exported if not line.startswith("#")]


async def test_label_values_are_escaped() -> None:
    graph, registry = pipeline('say "hi"\\\nbye'), CollectorRegistry()
    exporter = PrometheusExporter(graph, registry)
    await exporter.refresh()
    assert 'spark_nodes_mailbox_depth{graph="say \\"hi\\"\\\\\\nbye",node="a"} 0.0' in lines(
        registry
    )


async def test_several_graphs_share_one_set_of_metric_families() -> None:
    one, two, registry = pipeline("one"), pipeline("two"), CollectorRegistry()
    exporter = PrometheusExporter([one, two], registry)
    await exporter.refresh()
    exported = lines(registry)
    assert exported.count("# TYPE spark_nodes_mailbox_depth gauge") == 1
    assert 'spark_nodes_mailbox_depth{graph="one",node="a"} 0.0' in exported
    assert 'spark_nodes_mailbox_depth{graph="two",node="a"} 0.0' in exported


def test_a_second_exporter_with_the_same_names_is_refused_by_the_registry() -> None:
    registry = CollectorRegistry()
    PrometheusExporter(pipeline("first"), registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        PrometheusExporter(pipeline("second"), registry)
    PrometheusExporter(pipeline("third"), registry, namespace="other")  # other names: fine


def test_an_exporter_made_with_no_registry_registers_nowhere() -> None:
    exporter = PrometheusExporter(pipeline("loose"), None)
    registry = CollectorRegistry()
    registry.register(exporter)
    assert "# TYPE spark_nodes_mailbox_depth gauge" in lines(registry)


def test_only_graphs_and_metrics_observers_can_be_exported() -> None:
    with pytest.raises(TypeError, match="exports a Graph or a MetricsObserver"):
        PrometheusExporter(["not a graph"], None)  # type: ignore[list-item]


class CountingExporter(PrometheusExporter):
    """Sets ``done`` at its ``wanted``-th refresh."""

    def __init__(self, graph: Graph, registry: CollectorRegistry, wanted: int) -> None:
        super().__init__(graph, registry)
        self.refreshes = 0
        self.wanted = wanted
        self.done = anyio.Event()

    async def refresh(self) -> None:
        await super().refresh()
        self.refreshes += 1
        if self.refreshes == self.wanted:
            self.done.set()


async def test_run_refreshes_every_interval_until_cancelled() -> None:
    registry = CollectorRegistry()
    exporter = CountingExporter(pipeline("looping"), registry, wanted=3)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tasks:
            await tasks.start(exporter.run, 0.001)
            assert exporter.refreshes >= 1  # started once the first snapshot is read
            assert 'spark_nodes_graph_running{graph="looping"} 0.0' in lines(registry)
            await exporter.done.wait()
            tasks.cancel_scope.cancel()
    assert exporter.refreshes >= 3


async def test_run_logs_a_failed_refresh_and_goes_on() -> None:
    unattached = MetricsObserver()  # its snapshot() raises RuntimeError
    exporter = PrometheusExporter(unattached, CollectorRegistry())
    with capture_logs() as logs, anyio.fail_after(10):
        async with anyio.create_task_group() as tasks:
            await tasks.start(exporter.run, 0.001)
            tasks.cancel_scope.cancel()
    assert [log["event"] for log in logs] == ["prometheus refresh failed"]
    assert exporter.latest == ()


@pytest.mark.parametrize("interval", [0, -1.0, float("nan"), float("inf")])
async def test_run_refuses_an_interval_that_is_not_a_positive_number(interval: float) -> None:
    exporter = PrometheusExporter(pipeline(), None)
    with pytest.raises(ValueError, match="interval must be a positive number"):
        await exporter.run(interval)


def test_without_prometheus_client_the_import_error_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [m for m in sys.modules if m.partition(".")[0] == "prometheus_client"]:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    monkeypatch.delitem(sys.modules, "spark_nodes.observability.prometheus")
    with pytest.raises(ImportError, match=r"pip install 'spark-nodes\[prometheus\]'"):
        importlib.import_module("spark_nodes.observability.prometheus")
