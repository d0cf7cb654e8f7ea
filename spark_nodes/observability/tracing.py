"""``TracingObserver``: an OpenTelemetry span per hop, the trace carried in the metadata.

Attach it to a graph like any observer::

    graph.observe(TracingObserver())                       # the global tracer provider
    graph.observe(TracingObserver(tracer_provider=mine))   # or your own

Each call of a node's ``process`` (each attempt) is a span named ``"process {node}"``, of
kind ``CONSUMER``. Its parent is the span of the hop that produced the message, read from
the W3C trace context in the message's metadata (``metadata["traceparent"]`` and
``metadata["tracestate"]``); the span's own context is written into the metadata of every
output of the call (through ``GraphEvent.carry``), so the next hop is its child. Metadata
travels in the message envelope, so a trace crosses Redis hops and worker processes like
in-memory ones. An input sent from outside the graph with no ``traceparent`` starts a new
trace; one sent with a ``traceparent`` (``graph.send(node, content, metadata=...)``, see
``inject_trace_context``) continues that trace.

While ``process`` runs, its span is the current span of the worker loop's task, so spans
the node's own code starts (an HTTP client's, a database driver's) are its children.

A span ends with the call: status ``ERROR`` with the exception recorded for an attempt that
raised (outcome ``"retry"``, ``"dead_letter"`` or ``"routed"``), ``OK`` otherwise. A message
sent along an error route (``a.on_error() >> h``) carries the failed call's context, as
its outputs would: the handler's span is that call's child. Attributes:

==============================  ==================================================================
``spark_nodes.node``            the node's id
``spark_nodes.edge``            the edge the message took (absent for an input)
``spark_nodes.message_id``      the message's id
``spark_nodes.attempt``         which attempt (1 first)
``spark_nodes.trace_id``        the graph's own ``metadata["trace_id"]``, if any
``spark_nodes.outcome``         ``ok``, ``retry``, ``dead_letter``, ``routed``, ``goto``, ``stop``
``spark_nodes.duration``        seconds ``process`` took
==============================  ==================================================================

Nodes the observer is not attached to start no span and carry nothing on: attach it to the
whole graph to follow a message end to end.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.context import Context
    from opentelemetry.trace import SpanKind, Status, StatusCode
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError as error:  # the extra is optional: say which one to install
    raise ImportError(
        "spark_nodes.observability.tracing needs OpenTelemetry, which is not installed: "
        "pip install 'spark-nodes[otel]' (and an SDK, opentelemetry-sdk, to export spans)"
    ) from error

if TYPE_CHECKING:
    from collections.abc import MutableMapping
    from contextvars import Token

    from spark_nodes.nodes.observing import GraphEvent

__all__ = ["TracingObserver", "inject_trace_context"]

_PROPAGATOR = TraceContextTextMapPropagator()

_Key = tuple[str, str, int]
"""An open span's key: (node id, message id, attempt)."""


def inject_trace_context(
    metadata: MutableMapping[str, Any], context: Context | None = None
) -> None:
    """Write the current span's W3C trace context into ``metadata`` (``traceparent``...).

    Send the metadata with an input (``graph.send(node, content, metadata=metadata)``) and
    the input's spans join the caller's trace.

    Args:
        metadata: The message metadata to write into.
        context: The OpenTelemetry context whose span to use; the current one by default.
    """
    _PROPAGATOR.inject(metadata, context=context)


class TracingObserver:
    """A graph observer that makes an OpenTelemetry span per hop (see the module).

    It is a plain (synchronous) observer: the worker loop of the node calls it, in the
    loop's task, at the start and end of each ``process`` call; it ignores the other
    events. If it raises, the graph logs that and delivery goes on (as for any observer).

    A span whose end never comes (its worker was cancelled in the middle of ``process``)
    stays open until ``max_open_spans`` spans are open: the oldest is then ended, with the
    attribute ``spark_nodes.outcome = "abandoned"`` and no status, and forgotten. An open
    SDK span costs about 3.5 kB (measured), so the default bound keeps at most ~35 MB.

    Args:
        tracer_provider: Where spans go; OpenTelemetry's global tracer provider (as set by
            ``opentelemetry.trace.set_tracer_provider``) by default.
        tracer_name: The instrumentation scope of the spans.
        max_open_spans: How many spans may be open at once (see above).

    Raises:
        ValueError: ``max_open_spans`` is below 1.
    """

    __slots__ = ("_max_open", "_open", "_tracer")

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        tracer_name: str = "spark_nodes",
        *,
        max_open_spans: int = 10_000,
    ) -> None:
        if max_open_spans < 1:
            raise ValueError(f"max_open_spans must be at least 1, not {max_open_spans}")
        self._tracer = trace.get_tracer(tracer_name, tracer_provider=tracer_provider)
        self._max_open = max_open_spans
        # Insertion-ordered: the first entry is the oldest open span.
        self._open: dict[_Key, tuple[trace.Span, Context, Token[Context]]] = {}

    @property
    def open_spans(self) -> int:
        """Spans started and not ended yet (calls of ``process`` going on, or abandoned)."""
        return len(self._open)

    def __call__(self, event: GraphEvent) -> None:
        """Start a span at ``process_start``, end it at ``process_end``; ignore the rest."""
        phase = event.phase
        if phase == "process_start":
            self._start(event)
        elif phase == "process_end":
            self._end(event)

    def _start(self, event: GraphEvent) -> None:
        message = event.message
        metadata = message.raw_metadata
        # No traceparent (an input from outside): an empty context, so a new trace.
        parent = _PROPAGATOR.extract(metadata) if metadata else Context()
        attributes: dict[str, str | int] = {
            "spark_nodes.node": event.node,
            "spark_nodes.message_id": message.id,
            "spark_nodes.attempt": event.attempt,
        }
        if event.edge is not None:
            attributes["spark_nodes.edge"] = event.edge
        if metadata:
            trace_id = metadata.get("trace_id")
            if trace_id is not None:
                attributes["spark_nodes.trace_id"] = str(trace_id)
        span = self._tracer.start_span(
            f"process {event.node}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
        )
        current = trace.set_span_in_context(span, parent)
        _PROPAGATOR.inject(event.carry, context=current)
        key = (event.node, message.id, event.attempt)
        stale = self._open.pop(key, None)
        if stale is not None:  # delivered again in this process before its end came
            _abandon(stale[0])
        # The loop's task runs process() next: spans its code starts are this one's
        # children. _end detaches, in the same task.
        self._open[key] = (span, current, otel_context.attach(current))
        if len(self._open) > self._max_open:
            oldest = next(iter(self._open))
            _abandon(self._open.pop(oldest)[0])

    def _end(self, event: GraphEvent) -> None:
        entry = self._open.pop((event.node, event.message.id, event.attempt), None)
        if entry is None:  # started before the observer was attached, or abandoned
            return
        span, current, token = entry
        if otel_context.get_current() is current:
            # Only then: from another task (whose context the token is not of), or with
            # another context attached since, resetting would log an error or clobber it.
            otel_context.detach(token)
        outcome = event.outcome
        if outcome is not None:
            span.set_attribute("spark_nodes.outcome", outcome)
        if event.duration is not None:
            span.set_attribute("spark_nodes.duration", event.duration)
        error = event.error
        if outcome in ("retry", "dead_letter", "routed") or error is not None:
            if error is not None:
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
            else:
                span.set_status(Status(StatusCode.ERROR, outcome))
        else:
            span.set_status(Status(StatusCode.OK))
        span.end()


def _abandon(span: trace.Span) -> None:
    """End a span whose ``process_end`` never came."""
    span.set_attribute("spark_nodes.outcome", "abandoned")
    span.end()
