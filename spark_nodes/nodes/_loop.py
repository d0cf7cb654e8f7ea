"""The default worker loop: take a batch, handle each message, settle the batch.

``serve`` is the loop, in three phases. *Take*: what the mailbox has ready, up to a batch
(waiting only when it has nothing). *Handle*: each message, on the fast path while it can
(:mod:`spark_nodes.nodes._inline`), else the general way
(:meth:`~spark_nodes.nodes._handling.Handling.handle`: retries, dead letters, control
flow). *Settle* (:mod:`spark_nodes.nodes._settling`): deliver the outputs and ack or
commit the inputs, before the loop waits for anything: before a ``take`` that would
block, a retry's sleep, a yield to the other tasks. A lone message on a quiet mailbox is
therefore settled at once; a busy mailbox, a batch at a time.
"""

from __future__ import annotations

from typing import Final

from anyio.lowlevel import checkpoint

from spark_nodes.channels import ChannelClosed, ChannelFull, ChannelMessage
from spark_nodes.nodes._handling import Hand
from spark_nodes.nodes._inline import SETTLE_FIRST, Bail, Inline
from spark_nodes.nodes.node import stop_flag

__all__ = ["BATCH", "CYCLE_QUIET", "SHUTDOWN_EXTERNAL", "WAKE", "WorkerLoop"]

BATCH: Final = 128
"""The most messages a loop takes at once from an in-memory mailbox."""
# Messages between yields, to let timers, budgets, cancellation and the other nodes in.
# At 128 a three-node pipeline keeps fewer messages alive than CPython's threshold for a
# young-generation collection (700 objects); at 256 those collections took 14 % of it.
_CHECKPOINT_EVERY: Final = 128
_EMPTY: Final[list[ChannelMessage]] = []

SHUTDOWN_EXTERNAL: Final = "<external>"
"""The source a shutdown counts as when it does not name one (``metadata["source_node"]``)."""

CYCLE_QUIET: Final = "<cycle quiet>"
"""The source of the shutdown every node on a cycle gets once the cycle is quiet: each has
its shutdowns from outside the cycle, and no message is left on it (see the run)."""

WAKE: Final = "<wake>"
"""The source of a local wake-up: a shutdown message that only makes a loop look again."""

TIMERS_FIRED: Final = "<timers fired>"
"""The source of the shutdown a node gets once the last of its timers (``context.schedule``)
has fired, when its drain waited for them."""


class WorkerLoop(Inline):
    """The loop of a node with the default ``go()``; a mixin of ``NodeRuntime``."""

    __slots__ = (
        "active",
        "custom_loop",
        "draining",
        "hands",
        "idle",
        "loops",
        "native_mailbox",
        "pending_shutdowns",
        "shutdown_sources",
        "timers",
    )

    idle: int
    """Loops waiting for messages on the empty mailbox."""
    loops: int
    """The most loops the node runs at once (its concurrency, or the run's)."""
    active: int
    """Loops running for the node (a loop of its own counts too)."""
    custom_loop: bool
    """Whether the node runs a ``go()`` of its own rather than this loop."""
    native_mailbox: bool
    """Whether the node's mailbox implements the mailbox contract itself."""
    shutdown_sources: tuple[str, ...]
    """The nodes whose shutdowns this node waits for (its predecessors)."""
    pending_shutdowns: set[str] | None
    """Those it still waits for; ``None`` until the first arrives."""
    draining: bool
    """Whether every shutdown arrived: the loops end once the mailbox is empty."""
    hands: list[Hand]
    """The batch each running loop has in hand."""
    timers: int
    """Messages the node scheduled in memory (``context.schedule``) that are not sent yet:
    the node drains only once they are."""

    async def serve(self, *, exit_when_idle: bool) -> None:
        """Take, handle and settle batches until the node drains or is stopped.

        With ``exit_when_idle`` (an on-demand worker) also return once the mailbox is
        empty. Runs in a task of the graph; an exception it raises is a crash, which the
        graph's supervision restarts.
        """
        mailbox = self.mailbox
        limit = self.batch_limit()
        until_checkpoint = _CHECKPOINT_EVERY
        hand = Hand()
        self.hands.append(hand)
        try:
            while not self.should_stop():
                taken = mailbox.take_nowait(limit)
                if not taken:
                    await self.before_waiting()
                    self.run.loop_idle(self)  # type: ignore[arg-type]  # (a NodeRuntime)
                    if self.should_stop():
                        break  # asked while settling: a stop wakes only idle loops
                    if exit_when_idle and mailbox.empty():
                        return  # no await since the check: an arrival starts a new worker
                    taken = await self._take(limit)
                    if not taken:
                        return  # the mailbox was closed
                hand.taken, hand.index = taken, 0
                try:
                    ended = await self._handle_taken(hand)
                except BaseException:
                    self._give_back_unhandled(hand)
                    raise
                if ended:
                    return
                hand.taken = _EMPTY
                rest = self.deliver()
                if rest is not None:
                    await rest
                until_checkpoint -= len(taken)
                if until_checkpoint <= 0:
                    # A loop that always finds work would never yield: let timers, budgets,
                    # cancellation and the other nodes in.
                    until_checkpoint = _CHECKPOINT_EVERY
                    await self.before_waiting()
                    await checkpoint()
            await self.before_waiting()
        finally:
            self.hands.remove(hand)

    def batch_limit(self) -> int:
        """How many messages a loop takes at once.

        One, for a node with several loops, so that a loop busy with one message does not
        hold others its siblings could start (their handled messages still settle
        together: the loops of a node share its commit).
        """
        return BATCH if self.loops == 1 else 1

    async def _take(self, limit: int) -> list[ChannelMessage]:
        """Wait for messages; ``[]`` if the mailbox was closed (and drained)."""
        self.idle += 1
        try:
            taken = await self.mailbox.take(limit)
        except ChannelClosed:
            if self.run.distributed:
                self.draining = True  # its distributed graph drained it
            return []
        finally:
            self.idle -= 1
        if self.durable is not None:
            self.store_answered()  # (after an outage: logs its end)
        return taken

    def give_back_unstarted(self) -> None:
        """Give back the messages of the batches in hand that the loops have not started.

        For a worker that stops while its loops wait on messages: the rest of each batch
        goes back to the mailbox now (to be released to other workers) instead of after
        that message. Each loop then ends its batch with the message it is on.
        """
        for hand in self.hands:
            taken = hand.taken
            rest = taken[hand.index + 1 :]
            if rest:
                del taken[hand.index + 1 :]
                self.mailbox.give_back(rest)

    def _give_back_unhandled(self, hand: Hand) -> None:
        """Cancelled (or crashed) mid-batch: what was not handled goes back to the mailbox.

        The message being handled goes back too, unless some of its outputs are out
        already (a generator's items): handling it again would repeat them.
        """
        taken, start = hand.taken, hand.index
        if hand.shown != hand.shown_before:
            self.mailbox.give_back(taken[start + 1 :])
        elif start < len(taken):
            self.mailbox.give_back(taken[start:], started=1)

    async def _handle_taken(self, hand: Hand) -> bool:
        """Handle a batch: inline where possible; True if a shutdown ended this loop."""
        taken = hand.taken
        index = await self.handle_inline(hand, 0)
        while index < len(taken):
            bail, self.bail = self.bail, None
            if bail is None and self.should_stop():
                self.mailbox.give_back(taken[index:])  # stopped: not started, not ours
                return False
            hand.index = index
            hand.shown_before = hand.shown
            message = taken[index]
            if bail is SETTLE_FIRST:
                await self.before_waiting()  # settle, then go on inline
            elif self._redelivered(message):
                await self._handle_alone(message, bail, hand)
                index += 1
            elif await self._handle_one(message, bail, hand):
                self.mailbox.give_back(taken[index + 1 :])
                return True
            else:
                index += 1
            if self.should_stop():
                self.mailbox.give_back(taken[index:])
                return False
            if index < len(taken):
                index = await self.handle_inline(hand, index)
        return False

    def _redelivered(self, message: ChannelMessage) -> bool:
        """Whether a data message of the durable mailbox was delivered before, unsettled."""
        durable = self.durable
        return (
            durable is not None
            and not message.is_shutdown
            and message.raw_ack is not None
            and durable.redelivered(message)
        )

    async def _handle_alone(self, message: ChannelMessage, bail: Bail | None, hand: Hand) -> None:
        """Handle a redelivered message between two commits.

        Its worker may have died of it: what was handled before it is committed first, so
        that if it kills this worker too, they are not handled again; and it is committed
        as soon as it is handled. (A Redis mailbox also delivers such messages alone, so
        that a worker holds nothing else while it handles one.)
        """
        await self.before_waiting()
        await self._handle_one(message, bail, hand)
        await self.settle_commit()

    async def _handle_one(self, message: ChannelMessage, bail: Bail | None, hand: Hand) -> bool:
        """Handle a message the general way; True if it was a shutdown that ends the loop."""
        rest = self.deliver()  # nothing stays staged while this message awaits
        if rest is not None:
            await rest
        if message.is_shutdown:
            await self.before_waiting()  # a shutdown comes after all that came before it
            return await self.on_shutdown(message)
        if bail is None:
            await self.handle(message, hand)
        else:
            view, first, failed = bail
            await self.handle(message, hand, view, first=first, failed=failed)
        return False

    def should_stop(self) -> bool:
        """Whether the loops must take no new message (checked between batches)."""
        if not self.stopping and stop_flag(self.node):
            self.stopping = True  # a loop of its own set the seed's flag
        return self.stopping or self.draining

    # -- shutdown -------------------------------------------------------------------------

    async def on_shutdown(self, message: ChannelMessage) -> bool:
        """Count a shutdown message; return True when this loop should end."""
        if message.raw_ack is not None:
            if self.run.distributed:
                await self.run.shutdown_received(self.node.id, message)
                return False  # the loops end when the graph closes the mailbox
            await self.ack(message)
        if self.stopping or self.draining:
            return True
        metadata = message.raw_metadata
        source = metadata.get("source_node", SHUTDOWN_EXTERNAL) if metadata else SHUTDOWN_EXTERNAL
        if source in {WAKE, TIMERS_FIRED}:  # a wake-up makes the caller look at the flags
            return source == TIMERS_FIRED and self.may_drain() and self._drain()
        pending = self.pending_shutdowns
        if pending is None:
            pending = self.pending_shutdowns = set(self.shutdown_sources)
        if source not in pending:
            self.log.info(
                "shutdown ignored",
                source=source,
                reason=(
                    "a second one from this source"
                    if source in self.shutdown_sources
                    else "not from a predecessor"
                ),
                waiting_for=sorted(pending),
            )
            return False
        pending.discard(source)
        if pending and len(pending) == 1 and CYCLE_QUIET in pending:
            self.run.closed_to_input(self)  # type: ignore[arg-type]  # the cycle drains when quiet
        # What it scheduled is its work in flight: then TIMERS_FIRED comes once it is sent.
        return self.may_drain() and self._drain()

    def may_drain(self) -> bool:
        """Whether every shutdown came and every timer fired, and the node is not draining."""
        pending = self.pending_shutdowns
        return pending is not None and not pending and not self.timers and not self.draining

    def _drain(self) -> bool:
        self.draining = True
        if self.idle:
            self.wake(self.idle)  # sibling loops blocked on the empty mailbox
        return True

    def wake(self, count: int) -> None:
        """Put ``count`` wake-ups at the head of the mailbox for loops blocked on it."""
        wake_ups = [
            ChannelMessage(None, {"source_node": WAKE}, is_shutdown=True) for _ in range(count)
        ]
        if not wake_ups:
            return
        if self.custom_loop and not self.native_mailbox:
            # A loop of its own receives from the channel itself, not from our adapter.
            for wake_up in wake_ups:
                try:
                    self.node.mailbox.send_nowait(wake_up)
                except (ChannelFull, ChannelClosed, NotImplementedError):
                    return  # full: the loops are busy, not blocked; closed: they will end
            return
        self.mailbox.give_back(wake_ups)

    def wake_for_stop(self) -> None:
        """Wake the loops that could be blocked in receive, after the node was stopped."""
        self.wake(self.active if self.custom_loop else self.idle)
