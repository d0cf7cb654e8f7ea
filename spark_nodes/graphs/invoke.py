"""``graph.invoke``: send one input into a running graph and wait for what it caused.

Every message a node forwards carries the trace id of the input that started its chain,
through fan-outs, joins, retries and ``goto``; the answer to an input is what its trace
produced once none of its messages is in flight any more.

In memory the run follows the trace itself (:class:`~spark_nodes.nodes._watch.TraceWatch`).
On Redis the input's trace id names a reply stream: each worker that settles a message
of the trace writes a record there *in the same script call* that commits the message
(its terminal outputs, and how many messages it forwarded), so the invoking process, any
process, counts the trace down from the stream. A message dead-lettered writes its
record after the dead letter (a worker killed between the two leaves the invoke to its
timeout).
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any, Final

import anyio

from spark_nodes._redis_client import require_asyncio
from spark_nodes.channels import ChannelMessage
from spark_nodes.errors import InvokeFailed, InvokeTimeout
from spark_nodes.nodes import NodeMessage
from spark_nodes.nodes._watch import REPLY_PREFIX, InvokeFailure, InvokeResult, TraceWatch
from spark_nodes.nodes.message import channel_message_of

if TYPE_CHECKING:
    from spark_nodes.graphs._redis_backend import RedisBackend
    from spark_nodes.graphs._run import Run
    from spark_nodes.nodes import Node

__all__ = ["InvokeFailure", "InvokeResult", "invoke_in_memory", "invoke_on_redis"]

REPLY_RETENTION: Final = 3600
"""Seconds a reply stream is kept after its invoke timed out (late records land there)."""


async def invoke_in_memory(
    run: Run, node: Node, message: ChannelMessage, limit: float | None
) -> InvokeResult:
    """Send ``message`` to ``node`` of the in-memory ``run``; wait for its trace to end.

    Raises:
        InvokeTimeout: No complete answer within ``limit``.
        InvokeFailed: A message of the trace was dead-lettered.
        GraphNotRunning: The run ended before the answer was complete.
    """
    from spark_nodes.errors import GraphNotRunning  # noqa: PLC0415 - beside its one use

    watch = TraceWatch()
    trace = message.metadata["trace_id"]
    run.watches[trace] = watch
    started = time.monotonic()
    try:
        with anyio.fail_after(limit):  # the wait for room in a full mailbox included
            run.in_flight += 1
            try:
                await node.mailbox.send(message)
            except BaseException:
                run.in_flight -= 1  # never sent
                raise
            await watch.done.wait()
    except TimeoutError:
        raise _timeout(limit, watch.in_flight, node.id) from None
    finally:
        if run.watches.get(trace) is watch:
            del run.watches[trace]
    if watch.ended is not None:
        raise GraphNotRunning(
            f"graph {run.graph.name!r}: {watch.ended} before the answer to input {trace!r} "
            f"was complete ({watch.in_flight} of its messages were still in flight)"
        )
    failures = tuple(InvokeFailure(*failure) for failure in watch.failures)
    return _answer(tuple(watch.outputs), failures, started)


async def invoke_on_redis(
    backend: RedisBackend, node_id: str, content: Any, limit: float | None
) -> InvokeResult:
    """Send ``content`` into ``mailbox`` of a Redis graph; count its trace down from Redis.

    Raises:
        InvokeTimeout: No complete answer within ``limit``.
        InvokeFailed: A message of the trace was dead-lettered.
        ChannelUnavailable: Redis could not be reached.
    """
    require_asyncio(f"invoke {node_id!r}")  # before a reply stream needs cleaning up
    mailbox = backend.mailboxes[node_id]
    trace = f"{REPLY_PREFIX}{uuid.uuid4().hex}"
    replies = backend.reply_channel(trace, reader=True)
    started = time.monotonic()
    outputs: list[NodeMessage] = []
    failures: list[InvokeFailure] = []
    in_flight = 1
    finished = False
    try:
        message = channel_message_of(content, {"trace_id": trace})
        await mailbox.send(message)
        try:
            with anyio.fail_after(limit):
                while in_flight > 0:
                    reply = await replies.receive()
                    record = reply.payload
                    if "output" in record:
                        outputs.append(NodeMessage(record["output"], record["metadata"]))
                    else:
                        in_flight += record["forwarded"] - 1
                        if "failure" in record:
                            failures.append(InvokeFailure(*record["failure"]))
        except TimeoutError:
            raise _timeout(limit, in_flight, node_id) from None
        finished = True
    finally:
        with anyio.CancelScope(shield=True):
            await backend.drop_reply_channel(
                replies, keep_for=None if finished else REPLY_RETENTION
            )
    return _answer(tuple(outputs), tuple(failures), started)


def _timeout(limit: float | None, in_flight: int, where: str) -> InvokeTimeout:
    return InvokeTimeout(
        f"no complete answer within {limit} s to the input sent to {where!r}: "
        f"{in_flight} of its messages still in flight (they go on; nothing waits for them)",
        in_flight=in_flight,
    )


def _answer(
    outputs: tuple[NodeMessage, ...], failures: tuple[InvokeFailure, ...], started: float
) -> InvokeResult:
    result = InvokeResult(outputs, failures, time.monotonic() - started)
    if failures:
        where = ", ".join(f"{f.node} ({f.phase}: {f.error_type}: {f.error})" for f in failures)
        raise InvokeFailed(
            f"{len(failures)} message(s) caused by the input were dead-lettered: {where}; "
            f"what it did produce is in .result",
            result=result,
        )
    return result
