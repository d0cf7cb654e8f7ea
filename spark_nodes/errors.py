"""The errors spark_nodes raises, each named for the condition that raises it.

Every error derives from :class:`SparkNodesError`, so ``except SparkNodesError`` catches
anything the framework raises on purpose. Where a standard exception already names the
condition (a full queue, a bad value, a bad type), ours subclasses it too, so code written
against ``asyncio.Queue`` or plain Python keeps working.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # type only: errors sit below every layer and import none of them
    from spark_nodes.graphs.result import GraphResult
    from spark_nodes.nodes._watch import InvokeResult

__all__ = [
    "BackendUnavailable",
    "ChannelClosed",
    "ChannelFull",
    "ChannelUnavailable",
    "CheckpointError",
    "ClusterClientRequired",
    "GraphCancelled",
    "GraphFailed",
    "GraphNotRunning",
    "InvalidEventTime",
    "InvokeFailed",
    "InvokeTimeout",
    "LateEvent",
    "LeaseLost",
    "MessageDecodeError",
    "MessageEncodeError",
    "MessageTooLarge",
    "MessagesDeadLettered",
    "NonRetriableError",
    "SparkNodesError",
    "StateConflict",
    "StepLimitExceeded",
    "UnsupportedEventLoop",
    "WiringError",
]


class SparkNodesError(Exception):
    """Base class of every error spark_nodes raises on purpose."""


class ChannelClosed(SparkNodesError):
    """The channel was closed.

    Raised by ``send``/``send_nowait`` on a closed channel (nothing is enqueued), by a
    sender that was blocked on a full channel when it was closed, and by ``receive`` once
    the channel is closed *and* every message queued before the close was delivered.
    """


class ChannelFull(SparkNodesError, asyncio.QueueFull):
    """``send_nowait`` found a bounded channel full; nothing was enqueued.

    Subclasses :class:`asyncio.QueueFull`, so ``except asyncio.QueueFull`` (the seed's
    documented idiom) catches it.
    """


class MessageEncodeError(SparkNodesError, TypeError):
    """A value cannot be written in the msgpack wire format.

    The message names the offending type and where it sits, for example
    ``payload["items"][3]: Decimal``. Subclasses :class:`TypeError`.
    """


class MessageDecodeError(SparkNodesError, ValueError):
    """Bytes cannot be read as a spark_nodes message.

    Raised for garbage, truncated input, trailing bytes, valid msgpack that is not our
    envelope, and an unknown envelope version. ``reason`` says which, in words; ``data``
    keeps the original bytes so the caller can dead-letter them unchanged.
    """

    def __init__(self, reason: str, data: bytes = b"") -> None:
        super().__init__(reason)
        self.reason = reason
        self.data = data


class WiringError(SparkNodesError, ValueError):
    """A graph is wired wrongly; raised when it is built, before anything runs.

    For example an edge to something that is not a node, two nodes with one id, a window
    on a cycle, a node already running elsewhere (a graph, an actor), or a custom ``go()``
    loop in a one-pass run. Also raised when a node is named that the graph does not have
    (``graph.send``, ``graph.serve``, ``context.goto``).
    """


class GraphFailed(SparkNodesError):
    """A run ended in failure: a worker loop crashed more often than its restart policy allows.

    The other workers were stopped gracefully first. ``__cause__`` is the last crash;
    ``node_id`` names the node, ``result`` holds the run's result up to the failure.
    """

    def __init__(self, message: str, *, node_id: str, result: GraphResult | None = None) -> None:
        super().__init__(message)
        self.node_id = node_id
        self.result = result


class GraphNotRunning(SparkNodesError):
    """``send`` or ``shutdown`` was called on a graph that is not running (or is stopping)."""


class MessagesDeadLettered(SparkNodesError):
    """A run that returned had failures: some of its messages were dead-lettered.

    Raised by ``GraphResult.raise_for_dead_letters()`` (``run`` itself returns such a
    result: a failed message does not end a run). ``result`` is the run's result;
    ``count`` how many messages were dead-lettered (their errors are in the graph's dead
    letters).
    """

    def __init__(self, message: str, *, count: int, result: GraphResult) -> None:
        super().__init__(message)
        self.count = count
        self.result = result


class NonRetriableError(SparkNodesError):
    """Raised by ``process`` (or a step) when retrying cannot help: no retry is made.

    The message is dead-lettered at once, whatever the node's ``RetryPolicy`` allows (a
    declined card, an invalid order). Subclass it for your own such errors, or raise it
    ``from`` the cause.
    """


class LateEvent(NonRetriableError):
    """An event came after every window it belongs to had closed (event time).

    Raised by ``TimeWindow.process`` when the event's time is so far behind the
    watermark (the latest event time seen, less ``allowed_lateness``) that its last window
    has been emitted already. Not retried: the message is dead-lettered at once, with this
    error, so nothing is dropped silently.

    Attributes:
        event_time: The event's time, epoch seconds.
        watermark: The watermark when it came.
        window_end: The end of the last window it belonged to (at most ``watermark``).
    """

    def __init__(
        self, message: str, *, event_time: float, watermark: float, window_end: float
    ) -> None:
        super().__init__(message)
        self.event_time = event_time
        self.watermark = watermark
        self.window_end = window_end


class InvalidEventTime(NonRetriableError, ValueError):
    """A message has no usable event time (event time).

    Raised by ``TimeWindow.process`` when the content is not a mapping, lacks the
    ``time_field`` field, or holds something there that is not epoch seconds (an int or a
    finite float) or a timezone-aware ``datetime``. Not retried: the message is
    dead-lettered at once. Subclasses :class:`ValueError`.
    """


class StateConflict(SparkNodesError):
    """A state transaction kept finding its keys changed by others, and gave up.

    Raised by ``state.transaction(fn)`` after ``max_retries`` re-runs of ``fn``.
    """


class GraphCancelled(SparkNodesError):
    """A node called ``context.cancel_graph(reason)``: the run ended abnormally.

    The work in flight was cancelled; the message being processed when the node cancelled
    went back to its mailbox, unacked. ``reason`` and ``node_id`` say who and why,
    ``result`` holds the run's result up to then.
    """

    def __init__(self, reason: str, *, node_id: str, result: GraphResult | None = None) -> None:
        super().__init__(f"node {node_id!r} cancelled the graph: {reason}")
        self.reason = reason
        self.node_id = node_id
        self.result = result


class CheckpointError(SparkNodesError, ValueError):
    """A checkpoint file cannot be used: not a checkpoint, an unknown version, or damaged."""


class BackendUnavailable(SparkNodesError, ConnectionError):
    """A Redis backend could not reach its server within its bounded retries.

    Raised after the last retry (see ``ConnectionRetry``), never silently: whatever the
    call was doing did not happen, or did so exactly once (sends are de-duplicated across
    retries). Subclasses :class:`ConnectionError`.
    """


class ChannelUnavailable(BackendUnavailable):
    """A durable channel's ``send`` (or ``flush``) could not reach Redis within its retries.

    The messages of that call were not sent, or were sent exactly once: retries are
    de-duplicated. Nothing was dropped silently; the caller decides what to do with them.
    """


class ClusterClientRequired(SparkNodesError, ValueError):
    """A client of one Redis server was pointed at a node of a Redis Cluster.

    The node answered ``MOVED``: a key lives on another master. Connect with a
    ``redis+cluster://`` URL or a ``redis.asyncio.RedisCluster`` client.
    """


class MessageTooLarge(SparkNodesError, ValueError):
    """An encoded message is larger than the channel's ``max_message_bytes``.

    Raised by ``send`` before anything is written. A foreign entry that large found in a
    stream is dead-lettered instead. Subclasses :class:`ValueError`.
    """


class LeaseLost(SparkNodesError):
    """A durable message's lease was lost before its ack (or forward) reached Redis.

    The worker held the message past the visibility timeout and another consumer reclaimed
    it, or it was dead-lettered meanwhile. The ack and the outputs were rejected; the
    message is handled where it now is, so its effects happen once downstream.
    """


class InvokeTimeout(SparkNodesError, TimeoutError):
    """``graph.invoke`` (or ``node.ask``) got no complete answer within its ``timeout``.

    The messages of the input still in flight go on being handled; nothing waits for
    them any more. ``in_flight`` says how many there were.
    """

    def __init__(self, message: str, *, in_flight: int = 0) -> None:
        super().__init__(message)
        self.in_flight = in_flight


class InvokeFailed(SparkNodesError):
    """A message caused by ``graph.invoke``'s input (or ``node.ask``'s) was dead-lettered.

    ``result`` holds what the input did produce, and ``result.failures`` what failed
    where (also kept in the dead letters, as always).
    """

    def __init__(self, message: str, *, result: InvokeResult) -> None:
        super().__init__(message)
        self.result = result


class StepLimitExceeded(SparkNodesError):
    """A message went round a cycle more often than the task's ``max_steps`` allows.

    Not raised to you: it is the error of the dead letter the message becomes (phase
    ``"max_steps"``), so that a self-feeding loop cannot run for ever.
    """


class UnsupportedEventLoop(SparkNodesError, RuntimeError):
    """A Redis backend was used from an event loop other than asyncio (e.g. trio).

    Raised by the first call that would reach Redis (a send, a receive, a state read, a
    graph's ``send``, ``serve``, ``run`` or ``stats``), before anything is sent: redis-py's
    client is asyncio only. Run the program under asyncio (``anyio.run(main,
    backend="asyncio")``) or keep the graph in memory. Subclasses :class:`RuntimeError`.
    """
