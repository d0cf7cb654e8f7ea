"""Handling one message the slow way: attempts, retries, dead letters, control flow.

What becomes of a message that failed for good (a dead letter, or a message along the
node's error routes) is decided in :mod:`spark_nodes.nodes._error_routes`.

The worker loop handles most messages inline (see :mod:`spark_nodes.nodes._loop`); any
message that needs an await (an ``async def process`` the loop cannot inline, a failure to
retry, an ack, a ``goto`` or a ``stop_graph``) comes here, to :meth:`Handling.handle`.
"""

from __future__ import annotations

import enum
import inspect
from time import monotonic, time
from types import CoroutineType
from typing import TYPE_CHECKING, Any, Literal

import anyio
import structlog

from spark_nodes.channels import ChannelMessage
from spark_nodes.errors import BackendUnavailable
from spark_nodes.nodes._error_routes import ROUTED_PHASES, ErrorRouting, Followed
from spark_nodes.nodes._forwarding import Sends, StepFailed, steps_of
from spark_nodes.nodes._settling import type_name
from spark_nodes.nodes._supervision import ON_STOP_TIMEOUT
from spark_nodes.nodes._watch import REPLY_PREFIX, TraceWatch, invoke_record, is_invoke_record
from spark_nodes.nodes.config import OnError
from spark_nodes.nodes.context import Control, ExecutionContext
from spark_nodes.nodes.message import NodeMessage
from spark_nodes.nodes.observing import GraphEvent, NodeObservers, Outcome, edge_of, notify

if TYPE_CHECKING:
    from spark_nodes.channels.mailbox import Commit, DurableMailbox, Mailbox
    from spark_nodes.nodes._metering import Meter

__all__ = ["CallFailed", "Hand", "Handling", "Kind", "View", "kind_of", "view_of"]

_log = structlog.get_logger("spark_nodes")
_new_object = object.__new__

_KINDS_KEPT = 1024  # functions made at run time (lambdas in closures) must not pile up
View = tuple[NodeMessage, str, list[str] | None]
"""What ``process`` sees of a message: (inputs, trace id, correlation stack)."""


class Kind(enum.Enum):
    """What kind of callable a node's ``process`` is."""

    SYNC = "sync"
    ASYNC = "async"
    SYNC_GENERATOR = "sync generator"
    ASYNC_GENERATOR = "async generator"


_kinds: dict[Any, Kind] = {}  # per function: inspect takes ~10 us, 10,000 nodes share a few


def kind_of(process: Any) -> Kind:
    """The :class:`Kind` of ``process`` (a node's bound ``process`` method, usually)."""
    function = getattr(process, "__func__", process)
    kind = _kinds.get(function)
    if kind is None:
        if inspect.isasyncgenfunction(process):
            kind = Kind.ASYNC_GENERATOR
        elif inspect.isgeneratorfunction(process):
            kind = Kind.SYNC_GENERATOR
        elif inspect.iscoroutinefunction(process):
            kind = Kind.ASYNC
        else:
            kind = Kind.SYNC
        if len(_kinds) < _KINDS_KEPT:
            _kinds[function] = kind
    return kind


def view_of(message: ChannelMessage) -> View:
    """The inputs ``process`` gets for ``message``, its trace id and correlation stack.

    The inputs share the message's metadata and borrow its id (formatted only if read).
    """
    payload = message.payload
    if payload.__class__ is NodeMessage:  # a NodeMessage sent as the payload
        inputs: NodeMessage = payload
        metadata = inputs.metadata
        return inputs, metadata.get("trace_id") or inputs.id, metadata.get("correlation")
    metadata = message.metadata
    inputs = _new_object(NodeMessage)
    inputs.content = payload
    inputs.raw_metadata = metadata
    inputs.raw_id = message
    return inputs, metadata.get("trace_id") or message.id, metadata.get("correlation")


class CallFailed(StepFailed):
    """The outputs of a ``process`` call that returned could not be routed or sent.

    Carries what the call asked of the run (``control``: its hold, its releases), which
    the failure settles too (see :meth:`Handling.give_up_call`).
    """

    def __init__(self, failure: StepFailed, control: Control) -> None:
        super().__init__(failure.phase, failure.error, failure.attempts)
        self.control = control


class Hand:
    """The batch one worker loop has in hand (a node with several loops has several).

    Attributes:
        taken: The messages taken; those from ``index`` on are not handled yet.
        index: Where the loop is in ``taken``.
        shown: Outputs delivered before their message was settled (a generator's items).
        shown_before: ``shown`` when the message at ``index`` was started.
    """

    __slots__ = ("index", "shown", "shown_before", "taken")

    def __init__(self) -> None:
        self.taken: list[ChannelMessage] = []
        self.index = 0
        self.shown = 0
        self.shown_before = 0

    def unhandled(self) -> list[ChannelMessage]:
        """The messages of the batch not handled yet, the one in hand first."""
        return self.taken[self.index :]


class Handling(ErrorRouting):
    """Attempts, retries, acks and dead letters of one message; a mixin of ``NodeRuntime``."""

    __slots__ = (
        "failed_attempts",
        "kind",
        "mailbox",
        "received",
        "retried",
    )

    kind: Kind
    mailbox: Mailbox
    durable: DurableMailbox | None
    commit: Commit | None
    stopping: bool
    received: int
    processed: int
    failed_attempts: int
    retried: int
    dead_lettered: int
    observed: NodeObservers | None
    """The observers this node calls (see :mod:`spark_nodes.nodes.observing`), if any."""
    meter: Meter | None
    """Its timings, while a metering observer watches it."""

    def new_context(self, view: View, message: ChannelMessage, attempt: int) -> ExecutionContext:
        """A fresh context for one attempt at ``message``."""
        context: ExecutionContext = _new_object(ExecutionContext)
        context.inputs = view[0]
        context.node = self.node
        context.attempt = attempt
        context.started_at = monotonic()
        context.message = message
        context.emitted = None
        context.control = None
        return context

    async def handle(
        self,
        message: ChannelMessage,
        hand: Hand,
        view: View | None = None,
        *,
        first: tuple[ExecutionContext, Any] | None = None,
        failed: Exception | None = None,
    ) -> None:
        """Handle one data message: its attempts, then its outputs and ack, or its failure.

        A failure for good is dead-lettered or sent along the node's error routes (see
        :meth:`give_up_call`).

        ``first``: attempt 1's context and what ``process`` returned, still to be awaited
        or forwarded (the loop started it inline); ``failed``: attempt 1 raised that.

        Raises:
            BaseException: Cancellation: the loop gives the message back to the mailbox
                unless some of its outputs are out already.
        """
        self.received += 1
        if view is None:
            view = view_of(message)
        observed = self.observed
        if observed is not None:
            await self._observe_input(observed, "receive", message)
        outcome: Outcome = "ok"
        watches = self.run.watches
        watch = watches.get(view[1]) if watches else None
        replies = (
            self.run.reply_channel(view[1])
            if message.raw_ack is not None and view[1].startswith(REPLY_PREFIX)
            else None
        )
        outputs_before = self.outputs_made
        settled: dict[str, Any] = {"forwarded": 0}
        control: Control | None = None
        released: Outcome = "ok"  # the parts the call released
        ending = _Ending() if observed is not None else None
        try:
            control, sends = await self._attempts(message, hand, view, first, failed, ending=ending)
            if control is not None and (control.cancel or control.stop):
                await self._obey(control, message)
                if control.cancel:
                    return  # given back, not settled
                outcome = "stop"
            else:
                produced = self.outputs_made != outputs_before
                if replies is not None and sends is not None:
                    # Committed with the message: the invoker counts its trace down.
                    settled["forwarded"] = sum(1 for target, _ in sends if target is not replies)
                    sends.append((replies, invoke_record(settled)))
                    replies = None
                await self.settle_handled(message, control, sends, produced=produced)
        except StepFailed as failure:
            self.failed_attempts += failure.phase == "forward"
            followed = Followed(watch, settled, replies, ending.carry if ending else None)
            if isinstance(failure, CallFailed):
                control = failure.control  # (a failure after settle_handled began has it)
            call = (message, failure, view, followed, control)
            outcome = await self._give_up_and_tell(call, ending)
            replies = followed.replies
            released = "dead_letter"
        if watch is not None:
            watch.settled()
        if replies is not None:
            await self.send_record(replies, settled)
        if observed is not None:
            await self._settle_observed(observed, message, outcome, control, released)

    async def _give_up_and_tell(
        self,
        call: tuple[ChannelMessage, StepFailed, View, Followed, Control | None],
        ending: _Ending | None,
    ) -> Outcome:
        """:meth:`give_up_call`, then the last attempt's ``process_end`` if held back.

        Its outcome is the one :meth:`give_up_call` returned: ``"routed"``,
        ``"dead_letter"`` (also if the error routes could not be taken), or ``"ok"`` if the
        call keeps the message held; ``"retry"`` if giving up was interrupted (the message
        is handled again: given back, or left pending), told then shielded from the
        cancellation for up to ``ON_STOP_TIMEOUT`` seconds, so that an async observer
        gets it whole.
        """
        end = ending.end if ending is not None else None
        if end is None:
            return await self.give_up_call(*call)
        observers, event = end
        try:
            outcome = await self.give_up_call(*call)
        except BaseException:
            event.outcome = "retry"
            with anyio.CancelScope(shield=True), anyio.move_on_after(ON_STOP_TIMEOUT):
                await self._notify(observers, event)
            raise
        event.outcome = outcome
        await self._notify(observers, event)
        return outcome

    async def give_up_call(
        self,
        message: ChannelMessage,
        failure: StepFailed,
        view: View,
        followed: Followed,
        control: Control | None,
    ) -> Outcome:
        """Give up on a message whose handling failed for good, and on what its call released.

        ``control``: what the call asked, if ``process`` returned and then its outputs
        could not be routed or sent. Such a failure is that of the messages the call
        settles: the messages it released (a window's, a join's group: what its outputs
        were made of) are dead-lettered with its error, never acked; the message itself
        is routed or dead-lettered (:meth:`give_up_or_route`), unless the call holds it:
        then it stays the node's (in an open window, say), handled, to be released later.

        Returns:
            The outcome for observers.

        Raises:
            BackendUnavailable: The store stayed unreachable while the node is stopping.
        """
        kept = (
            control is not None
            and control.hold
            and all(part is not message for part in control.release)
        )
        if kept:
            self.processed += 1
            self.message_done()
            outcome: Outcome = "ok"
        else:
            outcome = await self.give_up_or_route(message, failure, view, followed)
        parts = [part for part in control.release if part is not message] if control else []
        for part in parts:
            await self.dead_letter(part, failure.error, failure.phase, failure.attempts)
        if kept:
            node = self.node
            if not parts:  # nothing was made of other messages: only the log tells
                self.log.warning(
                    "outputs of a held message not forwarded; it stays held",
                    msg_id=message.id,
                    phase=failure.phase,
                    error_type=type_name(failure.error),
                    error=str(failure.error),
                )
            if node.config.on_error is OnError.STOP_GRAPH:
                error = failure.error
                self.run.request_stop("error", f"{node.id}: {type_name(error)}: {error}")
        return outcome

    async def _observe_input(
        self,
        observed: NodeObservers,
        phase: Literal["receive", "ack"],
        message: ChannelMessage,
        outcome: Outcome | None = None,
    ) -> None:
        edge = edge_of(message)
        observers = observed.of_input(edge)
        if observers:
            event = GraphEvent(phase, self.node.id, message, edge=edge, outcome=outcome)
            await self._notify(observers, event)

    async def _notify(self, observers: list[Any], event: GraphEvent) -> None:
        observed = self.observed  # (None: detached meanwhile; the failures go uncounted)
        await notify(observers, event, observed.failures if observed is not None else {})

    async def _settle_observed(
        self,
        observed: NodeObservers,
        message: ChannelMessage,
        outcome: Outcome,
        control: Control | None,
        released: Outcome = "ok",
    ) -> None:
        """Settle what is staged now; tell each delivered output's ``send``, then the acks.

        The ``ack`` of the message (unless a join holds it), and of the parts it released
        (their outcome ``released``: ``"dead_letter"`` if the call's outputs failed).
        """
        await self.before_waiting()
        await self.tell_sends()
        held = control is not None and control.hold
        if not held:
            await self._observe_input(observed, "ack", message, outcome)
        for part in control.release if control is not None else ():
            if part is not message:
                await self._observe_input(observed, "ack", part, released)
            elif held:  # a holding message may release itself too (a join)
                await self._observe_input(observed, "ack", part, outcome)

    async def tell_sends(self) -> None:
        """Tell the observers the ``send`` of each output delivered since the last call."""
        observed, delivered = self.observed, self.delivered
        if observed is None or not delivered:
            return
        self.delivered = []
        node_id = self.node.id
        for output in delivered:
            edge = edge_of(output) or ""
            observers = observed.of_output(edge)
            if observers:
                route = self.routes.named(edge)
                target = route.target_id if route is not None else None
                event = GraphEvent("send", node_id, output, edge=edge, target=target)
                await notify(observers, event, observed.failures)

    async def _observe_end(
        self,
        observers: list[Any],
        message: ChannelMessage,
        attempt: int,
        started: float,
        outcome: Outcome,
        *,
        error: BaseException | None = None,
        ending: _Ending | None = None,
    ) -> None:
        """Tell ``process_end``; the final one of a failure is held in ``ending``.

        (The route may not be taken, the call may keep its message: :meth:`_give_up_and_tell`
        tells it once the outcome is known.)
        """
        event = GraphEvent(
            "process_end",
            self.node.id,
            message,
            edge=edge_of(message),
            attempt=attempt,
            duration=monotonic() - started,
            outcome=outcome,
            error=error,
        )
        if ending is not None and outcome in ("routed", "dead_letter"):
            ending.end = (observers, event)
            return
        await self._notify(observers, event)

    async def _attempts(
        self,
        message: ChannelMessage,
        hand: Hand,
        view: View,
        first: tuple[ExecutionContext, Any] | None,
        failed: Exception | None,
        *,
        ending: _Ending | None,
    ) -> tuple[Control | None, Sends | None]:
        """Run attempts until one succeeds; return its control and commit sends.

        ``ending``: where an observed node notes its attempts' carry and a held-back end.

        Raises:
            StepFailed: Routing or forwarding failed, or the last attempt failed (with the
                attempt count); the attempt's staged outputs are dropped.
        """
        attempt = 1
        watches = self.run.watches
        watch = watches.get(view[1]) if watches else None
        observed = self.observed
        # Attempt 1 begun on the fast path was timed there (and told nothing): go on from it.
        begun = first is not None or failed is not None
        process_observers = observed.process if observed is not None and not begun else None
        while True:
            start = _AttemptStart(self, hand, watch)
            sends: Sends | None = (
                [] if self.durable is not None and message.raw_ack is not None else None
            )
            carry = None
            if process_observers:
                carry = await self._observe_start(process_observers, message, attempt, ending)
            started = monotonic()
            try:
                control = await self._attempt(
                    message, hand, view, attempt, first=first, sends=sends, failed=failed,
                    carry=carry, staged=start.staged,
                )  # fmt: skip
            except StepFailed as failure:
                start.failed(message, sends, started if not begun else None)
                if process_observers:
                    final = self._final(failure.phase)
                    await self._observe_end(process_observers, message, attempt, started,
                                            final, error=failure.error, ending=ending)  # fmt: skip
                failure.attempts = attempt
                raise
            except Exception as error:  # process failing is expected: retried, dead-lettered
                if isinstance(error, BackendUnavailable) and self.durable is not None:
                    # The store is out, not the message at fault: no attempt is spent. The
                    # loop waits for the store, and the message is delivered again.
                    self.drop_attempt(start.staged, sends)
                    raise
                start.failed(message, sends, started if not begun else None)
                first = failed = None
                begun = False
                policy = self.node.config.retry
                retry = (
                    not start.shown()  # a retry would repeat outputs others saw
                    and not self.stopping
                    and policy.should_retry(attempt, error)
                )
                if process_observers:
                    ended: Outcome = "retry" if retry else self._final("process")
                    await self._observe_end(process_observers, message, attempt, started, ended,
                                            error=error, ending=ending)  # fmt: skip
                if not retry:
                    raise StepFailed("process", error, attempt) from error
                process_observers = observed.process if observed is not None else None
                self.retried += 1
                await self.before_waiting()
                await anyio.sleep(policy.delay(attempt))
                attempt += 1
                continue
            if self.meter is not None and not begun:
                self.meter.timed(
                    monotonic() - started, time(), message.raw_metadata if attempt == 1 else None
                )
            if process_observers:
                await self._observe_end(
                    process_observers, message, attempt, started, _outcome(control)
                )
            return control, sends

    def _final(self, phase: str) -> Outcome:
        """The outcome of a failure in ``phase`` that is final: routed, or dead-lettered.

        ``"routed"`` is what is tried: the ``process_end`` waits for the route to be taken.
        """
        errors = self.routes.errors
        if errors is not None and not errors.dead_letter and phase in ROUTED_PHASES:
            return "routed"
        return "dead_letter"

    async def _observe_start(
        self, observers: list[Any], message: ChannelMessage, attempt: int, ending: _Ending | None
    ) -> dict[str, Any] | None:
        """Tell ``process_start``; return the metadata observers want outputs to carry.

        (Noted in ``ending`` too: the error messages of a failure carry it.)
        """
        event = GraphEvent(
            "process_start",
            self.node.id,
            message,
            edge=edge_of(message),
            attempt=attempt,
        )
        await self._notify(observers, event)
        carry = event.carry or None
        if ending is not None:
            ending.carry = carry
        return carry

    def drop_attempt(self, staged: list[ChannelMessage], sends: Sends | None) -> None:
        """Take back a failed attempt's outputs: ``staged`` for delivery, ``sends`` for a commit."""
        self.drop_staged(staged)
        if sends:
            self.run.in_flight -= len(sends)
            self.unsent([output for _, output in sends])
            sends.clear()

    async def _attempt(
        self,
        message: ChannelMessage,
        hand: Hand,
        view: View,
        attempt: int,
        *,
        first: tuple[ExecutionContext, Any] | None,
        sends: Sends | None,
        failed: Exception | None,
        carry: dict[str, Any] | None = None,
        staged: list[ChannelMessage] | None = None,
    ) -> Control | None:
        """One attempt: run ``process``, stage its outputs; return what it asked of the run.

        ``first``/``failed``: what attempt 1 did already, on the fast path. ``carry``:
        metadata observers add to every output. ``staged``: where to note the outputs
        staged for delivery.

        Raises:
            Exception: What ``process`` (or routing: :class:`StepFailed`) raised.
        """
        if failed is not None:
            raise failed
        if first is not None:
            context, result = first
        else:
            context = self.new_context(view, message, attempt)
            kind = self.kind
            if kind is Kind.SYNC:
                result = self.node.process(context)
            elif kind is Kind.ASYNC:
                result = await self.node.process(context)
            else:
                try:
                    await self._generate(context, view, sends, hand, (carry, staged))
                except StepFailed as failure:
                    raise _with_control(failure, context.control) from failure.error
                result = None
        if result.__class__ is CoroutineType:
            result = await result  # a plain def that returned a coroutine
        control = context.control
        outputs = [*(context.emitted or ()), *([] if result is None else [result])]
        if control is not None and (control.cancel or control.stop):
            for output in outputs:  # kept as the node's result, not forwarded
                self.node.last_output = (
                    output.content if output.__class__ is NodeMessage else output
                )
            return control
        goto = control.goto if control is not None else None
        try:
            for output in outputs:
                self.forward(
                    output, view[1], view[2], goto, sends,
                    steps=steps_of(view[0]), origin=message, carry=carry, staged=staged,
                )  # fmt: skip
        except StepFailed as failure:
            raise _with_control(failure, control) from failure.error
        return control

    async def _generate(
        self,
        context: ExecutionContext,
        view: View,
        sends: Sends | None,
        hand: Hand,
        noting: tuple[dict[str, Any] | None, list[ChannelMessage] | None],
    ) -> None:
        """Forward each item of a generator ``process`` as it is produced.

        Items are delivered as they come (committed with the message, from a durable
        mailbox). A ``goto`` applies to the items after it; a ``stop_graph`` or
        ``cancel_graph`` forwards nothing more (and takes effect when the attempt ends).
        """
        items = self.node.process(context)
        if self.kind is Kind.ASYNC_GENERATOR:
            async for item in items:
                await self._forward_item(context, item, view, sends, hand, noting)
        else:
            for item in items:
                await self._forward_item(context, item, view, sends, hand, noting)

    async def _forward_item(  # noqa: PLR0917 - the attempt's parts, passed down one level
        self,
        context: ExecutionContext,
        item: Any,
        view: View,
        sends: Sends | None,
        hand: Hand,
        noting: tuple[dict[str, Any] | None, list[ChannelMessage] | None],
    ) -> None:
        """Forward one item as soon as it comes; ``noting``: the attempt's carry and staged."""
        control = context.control
        if control is not None and (control.cancel or control.stop):
            return
        goto = control.goto if control is not None else None
        steps = steps_of(view[0])
        carry, staged = noting
        self.forward(item, view[1], view[2], goto, sends, steps=steps, origin=context.message,
                     carry=carry, staged=staged)  # fmt: skip
        forwarded = self.forwarded
        rest = self.deliver()
        if rest is not None or self.forwarded != forwarded:  # (in a commit: not shown yet)
            hand.shown += 1  # out, or on its way: a retry would repeat it
        if rest is not None:
            await rest

    async def settle_handled(
        self,
        message: ChannelMessage,
        control: Control | None,
        sends: Sends | None,
        *,
        produced: bool,
    ) -> None:
        """After a successful attempt: deliver, then ack (or add to the commit), count.

        ``produced``: the attempt had an output (stored as the node's result, durably).

        Raises:
            StepFailed: An output could not be sent (a closed mailbox, say).
        """
        held = control is not None and control.hold
        released = control.release if control is not None else []
        if sends is not None and self.commit is not None and not held:
            self.add_to_commit(message, sends, handled=True, produced=produced)
            for part in released:
                if part is not message and part.raw_ack is not None:
                    self.add_to_commit(part, [], handled=False, produced=False)
        else:
            await self._deliver_now(sends)
            if not held and message.raw_ack is not None:
                await self.ack(message)
            for part in released:
                if part.raw_ack is not None:
                    await self.ack(part)
        self.processed += 1
        self.message_done()

    async def _deliver_now(self, sends: Sends | None) -> None:
        """Deliver a settled message's outputs before its ack.

        Raises:
            StepFailed: An output could not be sent.
        """
        for channel, output in sends or ():  # held: its outputs cannot wait for its ack
            try:
                await channel.send(output)
            except Exception as error:
                raise StepFailed("forward", error) from error
            if not is_invoke_record(output):
                self.forwarded += 1
                if self.delivered is not None:
                    self.delivered.append(output)
        rest = self.deliver(owner=True)
        if rest is not None:
            await rest

    async def _obey(self, control: Control, message: ChannelMessage) -> None:
        """Carry out cancel_graph or stop_graph, which outrank goto and the edges."""
        node = self.node
        if control.cancel is not None:
            self.mailbox.give_back([message])  # not processed: it waits for the next run
            self.run.request_cancel(node.id, control.cancel)
            return
        self.processed += 1
        if message.raw_ack is not None:
            await self.ack(message)
            if self.step_written:  # acked outside a commit: its steps go now
                await self.forget_steps([message], [True])
        self.message_done()
        self.run.request_stop("stopped", f"{node.id}: {control.stop}")


def _with_control(failure: StepFailed, control: Control | None) -> StepFailed:
    """``failure`` of a call's outputs, with what the call asked of the run if anything."""
    return failure if control is None else CallFailed(failure, control)


def _outcome(control: Control | None) -> Outcome:
    """How a successful ``process`` call ended, for its ``process_end`` event."""
    if control is None:
        return "ok"
    if control.cancel or control.stop:
        return "stop"
    return "goto" if control.goto else "ok"


class _Ending:
    """How an observed node's attempts at one message ended, for its failure if it fails.

    Attributes:
        carry: The metadata observers add to the last attempt's outputs (a tracing
            observer's context), which the error messages carry too.
        end: The last attempt's ``process_end`` (observers, event) if it failed for
            good, held back while the message is given up on (routed, dead-lettered, or
            kept by its call): its outcome is known then.
    """

    __slots__ = ("carry", "end")

    def __init__(self) -> None:
        self.carry: dict[str, Any] | None = None
        self.end: tuple[list[Any], GraphEvent] | None = None


class _AttemptStart:
    """Where one attempt's outputs start (staged, watched): what undoing it needs."""

    __slots__ = ("hand", "runtime", "shown_before", "staged", "watch", "watched")

    def __init__(self, runtime: Handling, hand: Hand, watch: TraceWatch | None) -> None:
        self.runtime = runtime
        self.hand = hand
        self.staged: list[ChannelMessage] = []
        """The attempt's outputs staged for delivery (noted by ``forward``)."""
        self.watch = watch
        self.watched = watch.mark() if watch is not None else None
        self.shown_before = hand.shown

    def shown(self) -> bool:
        """Whether some of the attempt's outputs are out already (a generator's items)."""
        return self.hand.shown != self.shown_before

    def failed(self, message: ChannelMessage, sends: Sends | None, started: float | None) -> None:
        """Drop the failed attempt's outputs and count it.

        ``started``: when it started, to time it (on a metered node); ``None``: timed already.
        """
        runtime = self.runtime
        if runtime.meter is not None and started is not None:
            runtime.meter.timed(monotonic() - started, time(), None)
        runtime.failed_attempts += 1
        runtime.drop_attempt(self.staged, sends)
        watch, watched = self.watch, self.watched
        if watch is not None and watched is not None and not self.shown():
            watch.rewind(watched, message)
