"""Optional observability: OpenTelemetry tracing and a Prometheus exporter for graphs.

- :class:`TracingObserver` (``pip install 'spark-nodes[otel]'``): a graph observer that
  makes a span per hop and carries the W3C trace context in each output's metadata, so
  one input's trace follows it through the graph, across Redis too;
  :func:`inject_trace_context` puts the caller's trace context in an input's metadata.
- :class:`PrometheusExporter` (``pip install 'spark-nodes[prometheus]'``): a Prometheus
  collector of a graph's figures (``graph.stats()``).

Each name is imported on first use: importing this package needs neither extra, and a
missing one is reported (``ImportError`` naming the extra) only by the name that needs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spark_nodes.observability.prometheus import PrometheusExporter
    from spark_nodes.observability.tracing import TracingObserver, inject_trace_context

__all__ = ["PrometheusExporter", "TracingObserver", "inject_trace_context"]

_HOMES = {
    "PrometheusExporter": "spark_nodes.observability.prometheus",
    "TracingObserver": "spark_nodes.observability.tracing",
    "inject_trace_context": "spark_nodes.observability.tracing",
}


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use (it needs an optional extra).

    Raises:
        ImportError: The extra the name needs is not installed (the message names it).
        AttributeError: The package has no such name.
    """
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The package's names, the lazily imported ones included."""
    return sorted({*globals(), *__all__})
