"""The worker loop's fast path: a run of messages handled in one frame.

For a node whose ``process`` is a plain ``def`` or an ``async def``, the loop hands a
batch here. Each message is handled with no call but ``process`` itself: its inputs and
context are built field by field, its output is staged for the one route a node with a
single unconditional edge has, and counts are kept in locals until the run ends. An
``async def process`` is awaited right here; one that returns without waiting costs about
what a plain one does. Anything unusual (a shutdown, an ack in memory, a failure, an
output with control flow, a fan-out...) ends the run at that message, and the loop hands
it to :meth:`~spark_nodes.nodes._handling.Handling.handle`.

Building the objects field by field and counting in locals is what separates ~60 % of a
hand-written ``asyncio.Queue`` pipeline from ~30 % on a three-node pipeline (a call costs
about as much as building an object).
"""

from __future__ import annotations

import sys
from time import monotonic, time
from types import CoroutineType
from typing import TYPE_CHECKING, Any, Final

from spark_nodes.channels import ChannelMessage
from spark_nodes.channels.message import unchecked_message
from spark_nodes.nodes._forwarding import steps_of
from spark_nodes.nodes._handling import Hand, Handling, Kind, View
from spark_nodes.nodes._watch import REPLY_PREFIX
from spark_nodes.nodes.context import ExecutionContext
from spark_nodes.nodes.message import NodeMessage

if TYPE_CHECKING:
    from spark_nodes.nodes._forwarding import Route, Sends
    from spark_nodes.nodes.node import Node

__all__ = ["SETTLE_FIRST", "Bail", "Inline"]

Bail = tuple[View, tuple[ExecutionContext, Any] | None, Exception | None]
"""A message the fast path started: its view, and attempt 1's (context, result) or error."""
SETTLE_FIRST: Final[Any] = ((), None, None)  # compared by identity
_COMMIT_AFTER: Final = 0.05  # seconds a durable batch stays open while sync work goes on
_SLOW_PROCESS: Final = 0.001  # an await of process this long waited for I/O: settle before
_NONE: Final[Any] = object()
_NO_SAMPLES: Final[tuple[list[float], list[float]]] = ([], [])  # unmetered: never appended to
_new_object = object.__new__
_refcount = sys.getrefcount
_UNSHARED: Final = 2  # the local name and getrefcount's own argument


class Inline(Handling):
    """The fast paths of the worker loop; a mixin of ``NodeRuntime``."""

    __slots__ = ("bail", "slow_process")

    bail: Bail | None
    """Where the fast path left the message it stopped at: its view and what attempt 1 did
    (``None``: nothing yet; :data:`SETTLE_FIRST`: it stopped only to settle)."""
    slow_process: bool
    """Whether the last awaited ``process`` waited (for I/O, say): settle before the next."""

    async def handle_inline(self, hand: Hand, start: int) -> int:
        """Handle what the fast path can of ``hand.taken[start:]``; return where it stopped."""
        kind = self.kind
        if (
            (kind is not Kind.SYNC and kind is not Kind.ASYNC)
            or self.run.watches
            or self.observed is not None
        ):
            return start  # generators, traces being followed, observers: the general path
        if self.durable is not None:
            return await self._inline_durable(hand, start)
        return await self._inline_memory(hand, start)

    async def _inline_memory(self, hand: Hand, start: int) -> int:  # noqa: PLR0912, PLR0915
        """The fast path for a node with an in-memory mailbox (see the module).

        One frame for the whole run, on purpose: a call costs about what building an
        object does, and splitting this loop up took it from 60 % of a hand-written
        pipeline to under 50 %.
        """
        node, routes, asynchronous = self.node, self.routes, self.kind is Kind.ASYNC
        process, route, per_message = node.process, routes.single, self.run.watch_each_message
        staged = route.staged if route is not None else []
        meter, stamp = self.meter, route is not None and route.stamps
        timed = meter is not None or stamp  # one test a message when neither
        process_times, queue_times = (
            (meter.process_times, meter.queue_times) if meter is not None else _NO_SAMPLES
        )
        handled = outputs = 0
        last: Any = _NONE
        previous, slow = 0.0, self.slow_process  # when the last awaited process started
        context, inputs = _new_context(node), _new_object(NodeMessage)
        taken = hand.taken
        index, count = start, len(taken)
        try:
            while index < count:
                message = taken[index]
                payload, metadata = message.payload, message.raw_metadata
                if message.raw_ack is not None or message.is_shutdown:
                    break
                if payload.__class__ is NodeMessage:
                    break
                if metadata is None:
                    metadata = message.raw_metadata = {}
                # The previous message's objects, unless something kept them (a context
                # handed on, inputs stored): building them is a third of a hop's cost.
                if _refcount(context) > _UNSHARED:  # (its inputs go with it)
                    context, inputs = _new_context(node), _new_object(NodeMessage)
                elif _refcount(inputs) > _UNSHARED + 1:  # + context.inputs
                    inputs = _new_object(NodeMessage)
                inputs.content, inputs.raw_metadata, inputs.raw_id = payload, metadata, message
                context.inputs, context.message = inputs, message
                context.started_at = started = monotonic()
                if asynchronous:
                    # The previous process was slow if it started long ago: timed so, one
                    # clock read a message (a second one costs 5 % of a hop).
                    if previous:
                        slow = started - previous > _SLOW_PROCESS
                    previous = started
                    hand.index = index
                    if slow and routes.pending:
                        await self.before_waiting()  # (before process: it is not to blame)
                try:
                    result = process(context)
                    if asynchronous:
                        result = await result
                        count = len(taken)  # a stopping worker may shorten the batch
                except Exception as error:  # noqa: BLE001 - handled (retried...) the general way
                    if meter is not None:  # timed here: the general path goes on from it
                        meter.timed(monotonic() - started, time(), metadata)
                    self.bail = (_view(inputs, message, metadata), None, error)
                    break
                if timed:
                    now = time()
                    if meter is not None:  # Meter.timed(), inlined
                        duration = monotonic() - started
                        process_times.append(duration)
                        sent = metadata.get("sent_at")
                        if sent is not None:
                            queue_times.append(now - duration - sent)
                if result.__class__ is CoroutineType or context.emitted or context.control:
                    self.bail = (_view(inputs, message, metadata), (context, result), None)
                    break
                if result is not None:
                    trace_id = metadata.get("trace_id") or message.id
                    correlation = metadata.get("correlation")
                    content, extra = (
                        (result.content, result.raw_metadata)
                        if result.__class__ is NodeMessage
                        else (result, None)
                    )
                    if route is None or correlation or (extra and "correlation" in extra):
                        view = _view(inputs, message, metadata)
                        if not self._forward_or_bail(result, trace_id, correlation, view):
                            break
                        last = _NONE  # forward() kept the node's last output
                    else:
                        if extra:
                            out = extra.copy()  # copy-then-set: 45% cheaper than {**extra, ...}
                            out["trace_id"], out["source_node"] = trace_id, node.id
                            out["edge"] = route.name
                        else:
                            out = {"trace_id": trace_id, "source_node": node.id, "edge": route.name}
                        if timed:
                            if stamp:
                                out["sent_at"] = now
                            elif "sent_at" in out:
                                del out["sent_at"]  # a relayed input's: not this hop's
                        forwarded: ChannelMessage = _new_object(ChannelMessage)
                        forwarded.payload, forwarded.raw_metadata = content, out
                        forwarded.raw_ack = forwarded.raw_id = forwarded.deferred = None
                        forwarded.is_shutdown = False
                        if not staged:
                            routes.pending.append(route)
                        staged.append(forwarded)
                        outputs += 1
                        last = content
                    result = None  # not a reference that keeps the inputs from reuse
                handled += 1
                index += 1
                if per_message:
                    self._count(handled, outputs, last, route)
                    handled = outputs = 0
                    self.run.message_done()
                if self.stopping:
                    break
        finally:
            self._count(handled, outputs, last, route)
            if meter is not None:
                meter.trim()
            if previous:
                self.slow_process = monotonic() - previous > _SLOW_PROCESS
        return index

    def _forward_or_bail(
        self, result: Any, trace_id: str, correlation: list[str] | None, view: View
    ) -> bool:
        """Forward the general way (conditions, fan-out); False, with a bail, if it failed."""
        try:
            self.forward(result, trace_id, correlation, None, None, steps=steps_of(view[0]))
        except Exception as error:  # noqa: BLE001 - a StepFailed: dead-lettered
            self.bail = (view, None, error)
            return False
        return True

    def _count(self, handled: int, outputs: int, last: Any, route: Route | None) -> None:
        """Count ``handled`` messages handled inline, with ``outputs`` staged on ``route``."""
        if route is not None:
            route.sent += outputs
        self.received += handled
        self.processed += handled
        run = self.run
        run.in_flight += outputs - handled
        run.handled += handled
        if outputs:
            self.outputs_made += outputs
        if last is not _NONE:
            self.node.last_output = last

    async def _inline_durable(self, hand: Hand, start: int) -> int:  # noqa: PLR0912, PLR0915
        """The fast path for a node with a durable mailbox: outputs go in the commit.

        Stops at a message delivered before (the loop handles it alone), and once the
        batch has been open for a while, to commit it (with :data:`SETTLE_FIRST`).
        """
        node, asynchronous, routes = self.node, self.kind is Kind.ASYNC, self.routes
        route, commit, durable = routes.fixed, self.commit, self.durable
        assert durable is not None
        assert commit is not None
        single = (
            route[0]
            if route is not None and len(route) == 1 and route[0].commits and not route[0].steps
            else None
        )
        per_message = self.run.watch_each_message
        meter = self.meter
        opened = monotonic()
        handled = 0
        taken, index = hand.taken, start
        while index < len(taken):  # not cached: a stopping worker may shorten the batch
            message = taken[index]
            if message.is_shutdown or message.payload.__class__ is NodeMessage:
                break
            if message.raw_ack is None or durable.redelivered(message):
                break  # a local wake-up, or a message to handle alone
            metadata = message.metadata
            inputs: NodeMessage = _new_object(NodeMessage)
            inputs.content, inputs.raw_metadata, inputs.raw_id = message.payload, metadata, message
            view = _view(inputs, message, metadata)
            if view[1].startswith(REPLY_PREFIX):
                break  # an invoke's: its records go in the commit (the general path)
            context = _new_context(node)
            context.inputs, context.message = inputs, message
            context.started_at = monotonic()
            if context.started_at - opened > _COMMIT_AFTER:
                self.bail = SETTLE_FIRST
                break
            hand.index = index
            if asynchronous and self.slow_process and (commit or routes.pending):
                self._count_durable(handled)
                handled = 0
                await self.before_waiting()  # (before process: it is not to blame)
            timed = False
            try:
                result = node.process(context)
                if asynchronous:
                    result = await result
                    self.slow_process = monotonic() - context.started_at > _SLOW_PROCESS
                if meter is not None:
                    meter.timed(monotonic() - context.started_at, time(), metadata)
                    timed = True
                if result.__class__ is CoroutineType or context.emitted or context.control:
                    self.bail = (view, (context, result), None)
                    break
                sends: Sends = []
                if result is not None:
                    content, extra = (
                        (result.content, result.raw_metadata)
                        if result.__class__ is NodeMessage
                        else (result, None)
                    )
                    if single is None or view[2] or (extra and "correlation" in extra):
                        self.forward(result, view[1], view[2], None, sends, steps=steps_of(view[0]))
                    else:  # forward(), inlined for the pipeline case: one route, no join
                        node.last_output = content
                        self.outputs_made += 1
                        out = extra.copy() if extra else {}
                        out["trace_id"], out["source_node"] = view[1], node.id
                        out["edge"] = single.name
                        single.sent += 1
                        if single.stamps:
                            out["sent_at"] = time()
                        elif meter is not None and "sent_at" in out:
                            del out["sent_at"]  # a relayed input's: not this hop's
                        sends.append((single.channel, unchecked_message(content, out)))
                        self.run.in_flight += 1
            except Exception as error:  # noqa: BLE001 - handled (retried...) the general way
                if meter is not None and not timed:  # timed here: the general path goes on
                    meter.timed(monotonic() - context.started_at, time(), metadata)
                self.bail = (view, None, error)
                break
            if result is not None:
                self.result_index = len(commit.messages)
            commit.messages.append(message)  # add_to_commit(), inlined
            commit.sends.append(sends)
            self.commit_handled.append(True)
            handled += 1
            index += 1
            if per_message:
                self._count_durable(handled)
                handled = 0
            if self.stopping:
                break
        self._count_durable(handled)
        return index

    def _count_durable(self, handled: int) -> None:
        """Count ``handled`` messages handled inline, their outputs in the commit."""
        self.received += handled
        self.processed += handled
        run = self.run
        run.in_flight -= handled  # (their outputs were counted when staged)
        run.handled += handled
        if handled and run.watch_each_message:
            run.message_done()


def _view(inputs: NodeMessage, message: ChannelMessage, metadata: dict[str, Any]) -> View:
    """The view of a message the fast path built ``inputs`` for."""
    return inputs, metadata.get("trace_id") or message.id, metadata.get("correlation")


def _new_context(node: Node) -> ExecutionContext:
    """A context for attempt 1 at a message of ``node``; the fast path fills in the rest."""
    context: ExecutionContext = _new_object(ExecutionContext)
    context.node = node
    context.attempt = 1
    context.emitted = None
    context.control = None
    return context
