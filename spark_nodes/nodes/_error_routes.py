"""Error routes: where a node sends the messages it gives up on (``a.on_error() >> h``).

A message whose handling failed for good (the last attempt raised, a ``NonRetriableError``,
an edge condition raised, a successor's mailbox refused an output) is dead-lettered,
unless the node has error edges: then a :class:`~spark_nodes.nodes.FailedMessage` (the
error and the original message) goes along each of them, settled the way outputs are.

- In memory, the error messages are delivered, then the original is acked (if it
  carries an ack).
- From a durable mailbox (Redis), the error messages and the original's ack are one
  commit, made at once (what the loop handled before goes in the commit before it): a
  crash before it leaves the original pending, to be handled again; after it, both are
  done. Nothing is ever both lost and acked.
- ``on_error(dead_letter=True)``: the error messages are delivered (sent, not committed),
  then the original is dead-lettered as usual, which settles it. A crash between the two
  delivers the error message again when the original is handled again.
- If the route cannot be taken (a handler's mailbox is closed, an error message is too
  large for its stream, one more step would pass ``Task.max_steps``), the original is
  dead-lettered with its own error, and the reason is logged. With several error routes,
  those delivered before the one that failed keep their copy.

Failures that stay dead letters whatever the edges: a join's incomplete group, a message
past ``max_steps``, an output that failed to go out after its message was settled, and on
Redis a message whose outputs cannot be committed (not plain data, too large: found in
the batch's commit) and an entry delivered more than ``max_deliveries`` times (a poison
message).
"""

from __future__ import annotations

from time import time
from typing import TYPE_CHECKING, Any, Final

from spark_nodes._log_limit import RepeatLimiter
from spark_nodes.channels.mailbox import Commit
from spark_nodes.channels.message import new_message_id, unchecked_message
from spark_nodes.errors import MessageEncodeError, MessageTooLarge
from spark_nodes.nodes._forwarding import CORRELATION_DEPTH, StepFailed, steps_of
from spark_nodes.nodes._settling import Settling, failure_record, type_name
from spark_nodes.nodes._watch import invoke_record, is_invoke_record
from spark_nodes.nodes.config import OnError
from spark_nodes.nodes.message import FailedMessage

if TYPE_CHECKING:
    from spark_nodes.channels import BaseChannel, ChannelMessage
    from spark_nodes.nodes._forwarding import ErrorRoutes, Route, Sends
    from spark_nodes.nodes._watch import Failure, TraceWatch
    from spark_nodes.nodes.message import NodeMessage
    from spark_nodes.nodes.observing import Outcome

__all__ = ["ROUTED_PHASES", "ErrorRouting", "Followed", "failed_message"]

ROUTED_PHASES: Final = frozenset({"process", "route", "forward"})
"""The failures an error route takes; others (``max_steps``, a join's) are dead-lettered."""


def failed_message(node_id: str, inputs: NodeMessage, failure: StepFailed) -> FailedMessage:
    """What an error route delivers for the message ``inputs`` that failed with ``failure``."""
    record = failure_record(node_id, failure.error, failure.phase, failure.attempts)
    return FailedMessage(
        node=record["node"],
        phase=record["phase"],
        error_type=record["error_type"],
        error=record["error"],
        traceback=record["traceback"],
        attempts=record["attempts"],
        content=inputs.content,
        message_id=inputs.id,
        metadata=dict(inputs.metadata),
    )


class Followed:
    """Who follows a failed message's trace: an invoke's watch, its reply stream, observers.

    Attributes:
        watch: The trace's watch (an in-memory invoke or ask), if any.
        record: The invoke record of the message, filled in as it is settled.
        replies: Where that record goes (a Redis invoke's reply stream), until it is
            written (in a commit) or must not be (the message's lease was lost).
        carry: The metadata observers added to the outputs of the failed call (a tracing
            observer's context): the error messages carry it too.
    """

    __slots__ = ("carry", "record", "replies", "watch")

    def __init__(
        self,
        watch: TraceWatch | None,
        record: dict[str, Any],
        replies: BaseChannel | None,
        carry: dict[str, Any] | None = None,
    ) -> None:
        self.watch = watch
        self.record = record
        self.replies = replies
        self.carry = carry


class ErrorRouting(Settling):
    """Routing or dead-lettering a message that failed for good; a mixin of ``NodeRuntime``."""

    __slots__ = ()

    @property
    def error_routed(self) -> int:
        """Messages the node gave up on and routed along its error edges (in this run)."""
        errors = self.routes.errors
        return 0 if errors is None else errors.routed

    async def give_up_or_route(
        self,
        message: ChannelMessage,
        failure: StepFailed,
        view: tuple[NodeMessage, str, list[str] | None],
        followed: Followed,
    ) -> Outcome:
        """Route ``message`` along the node's error edges if it has any, else dead-letter it.

        ``view``: the message's inputs, trace id and correlation. With
        ``on_error(dead_letter=True)``, or if the routes cannot be taken, the message is
        dead-lettered (with its own error).

        Returns:
            The outcome for observers.

        Raises:
            BackendUnavailable: The store stayed unreachable while the node is stopping.
        """
        errors = self.routes.errors
        routed = (
            errors is not None
            and failure.phase in ROUTED_PHASES
            and await self._route(message, failure, view, errors, followed)
        )
        if routed and errors is not None and not errors.dead_letter:
            return "routed"
        await self._dead_letter(message, failure, followed)
        return "dead_letter"

    async def _route(
        self,
        message: ChannelMessage,
        failure: StepFailed,
        view: tuple[NodeMessage, str, list[str] | None],
        errors: ErrorRoutes,
        followed: Followed,
    ) -> bool:
        """Send a :class:`FailedMessage` along each error route; False if they can't be taken.

        Settles ``message`` too (ack or commit), unless it is to be dead-lettered as well.
        """
        node_id = self.node.id
        error = failure.error
        inputs, trace_id, correlation = view
        routes = errors.routes
        steps = steps_of(inputs)
        if steps >= self.run.max_steps and any(route.steps for route in routes):
            why = f"one step more would pass the task's max_steps={self.run.max_steps}"
            self._not_routed("max_steps", why)
            return False
        report = failed_message(node_id, inputs, failure)
        if len(routes) > 1:  # a fan-out, as forward() marks one (for joins downstream)
            correlation = [*(correlation or ()), new_message_id()][-CORRELATION_DEPTH:]
        commits = not errors.dead_letter and self.commit is not None and message.raw_ack is not None
        sends: Sends | None = [] if commits else None
        ids = (node_id, trace_id)
        outputs = [
            (route, _error_output(route, report, ids, (correlation, followed.carry), steps))
            for route in routes
        ]
        record: Failure = (node_id, failure.phase, type_name(error), str(error))
        if not await self._send_routed(message, record, outputs, sends, followed):
            return False
        if sends is not None:
            committed = await self._commit_routed(message, sends, followed.replies, len(routes))
            if committed is None:
                return False
            errors.routed += committed
            self.message_done()
            followed.replies = None  # its record is in the commit, or is the new holder's
            return True
        errors.routed += 1
        followed.record["forwarded"] = len(routes)
        if errors.dead_letter:
            return True  # settled as a dead letter
        if message.raw_ack is not None:
            await self.ack(message)
            if self.step_written:  # acked outside a commit: its steps go now
                await self.forget_steps([message], [True])
        self.message_done()
        return True

    async def _send_routed(
        self,
        message: ChannelMessage,
        record: Failure,
        outputs: list[tuple[Route, ChannelMessage]],
        sends: Sends | None,
        followed: Followed,
    ) -> bool:
        """Stage each error message on its route and deliver those not for ``sends``.

        ``sends``: the commit's outputs (a durable mailbox commits to the handlers), or
        ``None``: everything is delivered now. False if a handler's mailbox refused one
        (nothing is counted for those not sent).
        """
        routes = len(outputs)
        # Counted before they can arrive (as forward() does): a handler may settle first.
        self.run.in_flight += routes
        if followed.watch is not None:
            followed.watch.routed(record, routes, message)
        written = None
        if sends is None and followed.replies is not None:
            # Sent, not committed (dead_letter=True): a Redis invoke counts its trace from
            # records, so this one goes first, before a handler can settle its copy.
            written, followed.replies = followed.replies, None
            await self.send_record(written, {"forwarded": routes, "failure": list(record)})
        for route, output in outputs:
            route.sent += 1
            self._stage(route, output, sends, None)
        forwarded = self.forwarded
        try:
            rest = self.deliver(owner=True)
            if rest is not None:
                await rest
        except StepFailed as refused:  # (what was not sent is uncounted already)
            if sends:
                self.run.in_flight -= len(sends)
                self.unsent([output for _, output in sends])
            if written is not None:  # take back the copies counted and not sent
                sent = self.forwarded - forwarded
                await self.send_record(written, {"forwarded": sent - routes + 1})
            kind = type_name(refused.error)
            self._not_routed(kind, f"a handler's mailbox refused it: {kind}: {refused.error}")
            return False
        return True

    async def _commit_routed(
        self,
        message: ChannelMessage,
        sends: Sends,
        replies: BaseChannel | None,
        routes: int,
    ) -> bool | None:
        """Commit the original's ack with its error messages (``sends``), alone and now.

        Returns:
            True once committed; False if the message's lease was lost (the worker that
            has it now handles it again); ``None`` if an error message cannot be sent
            (not committed: the caller dead-letters the original).
        """
        if self.commit:
            await self.settle_commit()  # its place in the order: after what came before
        if replies is not None:  # the invoke's record, committed with the message
            sends.append((replies, invoke_record({"forwarded": routes})))
        outputs = [output for _, output in sends if not is_invoke_record(output)]
        try:
            (done,) = await self._commit_until_reachable(Commit([message], [sends]), alone=True)
        except (MessageEncodeError, MessageTooLarge) as error:
            self.run.in_flight -= len(outputs)
            self.unsent(outputs)
            kind = type_name(error)
            self._not_routed(kind, f"it cannot be committed: {kind}: {error}")
            return None
        if self.step_written:
            await self.forget_steps([message], [done])
        if not done:
            self.run.in_flight -= len(outputs)
            self.unsent(outputs)
            self.log.warning("lease lost; error route not taken here", msg_id=message.id)
            return False
        self.forwarded += len(outputs)
        if self.delivered is not None:
            self.delivered += outputs
        return True

    async def _dead_letter(
        self, message: ChannelMessage, failure: StepFailed, followed: Followed
    ) -> None:
        """Dead-letter ``message`` with its own error; tell whoever follows its trace."""
        error = failure.error
        kept = await self.give_up(message, error, failure.attempts, failure.phase)
        record: Failure = (self.node.id, failure.phase, type_name(error), str(error))
        if followed.watch is not None:
            followed.watch.failed(record)
        followed.record["failure"] = list(record)
        if not kept:
            followed.replies = None  # its lease was lost: the worker that has it settles it

    def _not_routed(self, kind: str, why: str) -> None:
        """Log (rate-limited) that an error route could not be taken, of ``kind``.

        The message is dead-lettered next, with its own error (which that logs).
        """
        if self.repeats is None:
            self.repeats = RepeatLimiter()
        held_back = self.repeats.admit(("error_route", kind))
        if held_back is not None:
            self.log.warning("error route not taken; the message is dead-lettered",
                             reason=why, held_back=held_back)  # fmt: skip

    async def give_up(
        self, message: ChannelMessage, error: Exception, attempts: int, phase: str
    ) -> bool:
        """Dead-letter a message whose handling failed for good; stop the graph if asked.

        Returns:
            False if its lease was lost meanwhile (see :meth:`dead_letter`).
        """
        kept = await self.dead_letter(message, error, phase, attempts)
        self.message_done()
        node = self.node
        if node.config.on_error is OnError.STOP_GRAPH:
            self.run.request_stop("error", f"{node.id}: {type_name(error)}: {error}")
        return kept


def _error_output(
    route: Route,
    report: FailedMessage,
    ids: tuple[str, str],
    carried: tuple[list[str] | None, dict[str, Any] | None],
    steps: int,
) -> ChannelMessage:
    """The error message along ``route``, with the metadata ``forward()`` would give it.

    ``ids``: the source node's id and the trace id; ``carried``: the correlation stack
    and what observers add to the failed call's outputs.
    """
    source, trace_id = ids
    correlation, carry = carried
    metadata: dict[str, Any] = {"trace_id": trace_id, "source_node": source, "edge": route.name}
    if correlation:
        metadata["correlation"] = correlation
    if route.steps:
        metadata["steps"] = steps + 1
    if carry:
        metadata.update(carry)
    if route.stamps:
        metadata["sent_at"] = time()
    return unchecked_message(report, metadata)
