"""Settling handled messages: delivering their outputs, acking them, or dead-lettering them.

In memory, settling a batch is a plain call: one ``offer_many`` per target mailbox
(awaiting only for a full, closed or remote one), then the acks of the inputs that carry
one. From a durable mailbox, the handled messages, their outputs and the node's latest
result go into a :class:`~spark_nodes.channels.mailbox.Commit`, settled in one call for
the whole batch; each message is judged on its own lease there.
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Final

import anyio
import structlog

from spark_nodes._log_limit import RepeatLimiter
from spark_nodes.backoff import Backoff
from spark_nodes.channels import BaseChannel, ChannelMessage
from spark_nodes.channels.codec import pack
from spark_nodes.channels.mailbox import Commit, is_durable
from spark_nodes.errors import BackendUnavailable, LeaseLost, MessageEncodeError, MessageTooLarge
from spark_nodes.nodes._forwarding import Forwarding, Route, Sends, StepFailed
from spark_nodes.nodes._outage import Outage
from spark_nodes.nodes._watch import invoke_record, is_invoke_record
from spark_nodes.state.base import RESULT_SUFFIX, unencodable_result

if TYPE_CHECKING:
    from spark_nodes.channels.mailbox import DurableMailbox

__all__ = ["Settling", "failure_record", "type_name"]

_log = structlog.get_logger("spark_nodes")

# The work is done and only its commit is missing: keep trying (not redo it) while the
# store is unreachable, backing off to one try per 5 s.
_COMMIT_RETRY: Final = Backoff(initial_delay=0.5, max_delay=5.0, multiplier=2.0, jitter=0.2)


class Settling(Forwarding):
    """Delivery, commits, acks and dead letters; a mixin of ``NodeRuntime``."""

    __slots__ = (
        "_log",
        "_outage",
        "commit",
        "commit_handled",
        "dead_lettered",
        "durable",
        "forwarded",
        "processed",
        "repeats",
        "result_index",
        "step_written",
        "stopping",
    )

    durable: DurableMailbox | None
    commit: Commit | None
    commit_handled: list[bool]
    result_index: int | None
    step_written: set[str] | None
    """Ids of the messages whose steps this node stored, until they settle (Redis);
    ``None`` until the node's first step."""
    stopping: bool
    forwarded: int
    processed: int
    dead_lettered: int
    drain_letters: set[int] | None
    """While ``on_drained`` runs: the ids of the messages dead-lettered meanwhile, which
    are settled so (``drained`` does not ack them); ``None`` otherwise."""
    repeats: RepeatLimiter[tuple[str, str]] | None
    """How often each kind of dead letter (phase, error type) was logged, and each kind of
    error route not taken (``"error_route"``, why); made at the first one."""
    _log: Any
    _outage: Outage | None

    @property
    def outage(self) -> Outage:
        """The node's view of its store's outage (made at the first one)."""
        outage = self._outage
        if outage is None:
            outage = self._outage = Outage()
        return outage

    def store_answered(self) -> None:
        """A call to the store succeeded: end the outage going on, if one is."""
        outage = self._outage
        if outage is not None and outage.since is not None:
            outage.ended(self.log)

    @property
    def log(self) -> Any:
        """The node's logger, bound to the graph's name and the node's id."""
        log = self._log
        if log is None:  # bound on first use: 10,000 quiet nodes bind nothing
            graph = getattr(self.run.graph, "name", None)
            log = self._log = _log.bind(graph=graph, node=self.node.id)
        return log

    def report_held_logs(self) -> None:
        """Log the dead letters held back by the rate limit and not reported yet."""
        if self.repeats is None:
            return
        for (phase, error_type), count in self.repeats.held().items():
            self.log.warning("message dead-lettered (repeats not logged one by one)",
                             phase=phase, error_type=error_type, held_back=count)  # fmt: skip

    # -- in memory ----------------------------------------------------------------------

    def deliver(self, *, owner: bool = False) -> Coroutine[Any, Any, None] | None:
        """Deliver the staged outputs: a plain call per target while mailboxes have room.

        ``owner``: everything staged is the outputs of the one message being settled, so
        a send that fails fails that message (see :meth:`_deliver_late`).

        Returns:
            ``None`` once everything is delivered, else a coroutine that sends the rest
            (a mailbox is full, closed, remote or has async observers), to be awaited.
        """
        routes = self.routes
        pending = routes.pending
        if not pending:
            return None
        routes.pending = []
        late: list[tuple[Route, list[ChannelMessage]]] | None = None
        for route in pending:
            staged = route.staged
            count = route.mailbox.offer_many(staged)
            self.forwarded += count
            if self.delivered is not None:
                self.delivered += staged[:count]
            if count < len(staged):
                if late is None:
                    late = []
                late.append((route, staged[count:]))
            staged.clear()
        return None if late is None else self._deliver_late(late, owner=owner)

    async def _deliver_late(
        self, late: list[tuple[Route, list[ChannelMessage]]], *, owner: bool
    ) -> None:
        """Send what could not be offered, awaiting room.

        A send that fails (a closed mailbox, say): with an ``owner``, raises
        :class:`StepFailed` (the message is dead-lettered, not acked, and its outputs not
        sent yet are dropped); else the output itself is dead-lettered, with its error. If
        cancelled, what was not sent yet is put at the head of its target mailbox rather
        than lost (its order there changes; it was due anyway), unless that mailbox is
        durable (Redis): what is not in its store cannot be kept there, and is logged.

        Raises:
            StepFailed: A send failed, with an ``owner``.
        """
        for number, (route, messages) in enumerate(late):
            for index, message in enumerate(messages):
                try:
                    await route.channel.send(message)
                except Exception as error:
                    if owner:
                        unsent = len(messages) - index + sum(len(m) for _, m in late[number + 1 :])
                        self.run.in_flight -= unsent  # this one and the rest never arrive
                        self.unsent(messages[index:])
                        for _, rest in late[number + 1 :]:
                            self.unsent(rest)
                        raise StepFailed("forward", error) from error
                    self.run.in_flight -= 1
                    self.unsent([message])
                    await self.dead_letter(message, error, "forward")
                except BaseException:
                    self._keep_unsent([(route, messages[index:]), *late[number + 1 :]])
                    raise
                else:
                    self.forwarded += 1
                    if self.delivered is not None:
                        self.delivered.append(message)

    def _keep_unsent(self, unsent: list[tuple[Route, list[ChannelMessage]]]) -> None:
        for route, messages in unsent:
            if not is_durable(route.channel):
                route.mailbox.give_back(messages)
                continue
            # A durable mailbox holds only what its store holds: these never got there.
            self.run.in_flight -= len(messages)
            self.unsent(messages)
            self.log.error("outputs lost: cancelled while sending them",
                           target=route.channel.name, count=len(messages))  # fmt: skip

    async def before_waiting(self) -> None:
        """Settle everything staged: the loop is about to wait (for messages, a retry...)."""
        rest = self.deliver()
        if rest is not None:
            await rest
        if self.commit:
            await self.settle_commit()

    # -- durable mailboxes --------------------------------------------------------------

    def add_to_commit(
        self, message: ChannelMessage, sends: Sends, *, handled: bool, produced: bool
    ) -> None:
        """Add a message of a durable mailbox, with its outputs, to the next commit.

        ``handled``: it was handled now (not a held message released); ``produced``: its
        handling had an output (the node's latest result is stored with the commit).
        """
        commit = self.commit
        assert commit is not None
        if produced:
            self.result_index = len(commit.messages)
        commit.add(message).extend(sends)
        self.commit_handled.append(handled)

    async def settle_commit(self) -> None:
        """Commit the handled messages of the durable mailbox, with their outputs.

        Raises:
            BackendUnavailable: The store stayed unreachable while the node is stopping;
                the messages stay pending there and are delivered again.
        """
        commit = self.commit
        if not commit:
            return
        assert commit is not None
        handled = self.commit_handled
        released = _released(handled) if False in handled else frozenset()
        batch = Commit(commit.messages, commit.sends, self._encoded_result(commit), released)
        commit.clear()  # other loops of the node add to the next one while this one waits
        self.commit_handled = []
        self.result_index = None
        committed = await self._commit_until_reachable(batch, handled=handled)
        if self.step_written:
            await self.forget_steps(batch.messages, committed)
        lost = 0
        for done, sends, was_handled in zip(committed, batch.sends, handled, strict=True):
            if done:
                self.forwarded += sum(not is_invoke_record(output) for _, output in sends)
                if self.delivered is not None:
                    self.delivered += (out for _, out in sends if not is_invoke_record(out))
            else:
                lost += 1
                self.run.in_flight -= len(sends)
                self.unsent([output for _, output in sends])
                if was_handled:
                    self.processed -= 1
        if lost:
            self.log.warning(
                "lease lost; outputs dropped: handled where reclaimed",
                messages=lost,
                hint="held past the mailbox's visibility_timeout (a stalled worker): "
                "raise visibility_timeout if handling is this slow",
            )

    async def forget_steps(self, messages: list[ChannelMessage], committed: list[bool]) -> None:
        """Delete the stored steps of committed messages, soon.

        A message whose lease was lost keeps them: its new holder needs them.
        """
        written = self.step_written
        store = self.run.step_store
        assert written is not None
        assert store is not None  # only a store fills ``written``
        for message, done in zip(messages, committed, strict=True):
            ident = message.id
            if ident in written:
                written.discard(ident)
                if done:
                    store.forget(store.key(self.node.id, ident))
        if store.flush_due():
            # Unreachable: they are left to their expiry (no message depends on them).
            with contextlib.suppress(BackendUnavailable):
                await store.flush()

    def _encoded_result(self, commit: Commit) -> tuple[int, bytes] | None:
        index = self.result_index
        if index is None:
            return None
        node = self.node
        try:
            return index, pack(node.last_output, where=f"{node.id}{RESULT_SUFFIX}")
        except MessageEncodeError as error:
            # Stored as the error: every process reads it as this process does (it raises),
            # not as absent or as the node's older output.
            self.log.warning("node result is not plain data; reading it raises",
                             error=str(error))  # fmt: skip
            return index, unencodable_result(error)

    async def _commit_until_reachable(
        self, batch: Commit, *, alone: bool = False, handled: list[bool] | None = None
    ) -> list[bool]:
        """Commit; while the store is unreachable, keep trying rather than redo the work.

        A late commit is safe: the lease check refuses what was reclaimed meanwhile. A
        batch with an output that cannot be sent is committed message by message, unless
        ``alone`` (a batch of one already); ``handled``: which of its messages were
        handled now (the others were released by the handled one before them).

        Raises:
            BackendUnavailable: Only when the node is stopping.
            MessageEncodeError: With ``alone``, an output is not plain data.
            MessageTooLarge: With ``alone``, an output is too large for its target.
        """
        durable = self.durable
        assert durable is not None
        failures = 0
        while True:
            try:
                committed = await durable.commit(batch)
            except BackendUnavailable as error:
                failures += 1
                if self.stopping:
                    raise
                self.outage.began(self.log, error)  # logged once per outage
                await anyio.sleep(_COMMIT_RETRY.delay(failures))
            except (MessageEncodeError, MessageTooLarge):
                if alone:
                    raise
                return await self._commit_one_by_one(batch, handled)
            else:
                self.store_answered()
                return committed

    async def _commit_one_by_one(self, batch: Commit, handled: list[bool] | None) -> list[bool]:
        """Commit each message alone; dead-letter those whose outputs cannot be sent.

        The messages a handled one released (``handled`` False: the entries that follow
        it, a window's or a join's parts, which its outputs were made of) go with it: in
        its commit, acked only if it is, or dead-lettered after it. Never acked without it.
        """
        committed: list[bool] = []
        messages, all_sends = batch.messages, batch.sends
        for start, end in _with_released(handled, len(messages)):
            sends = all_sends[start]
            single = Commit(
                messages[start:end], all_sends[start:end], released=frozenset(range(1, end - start))
            )
            try:
                committed += await self._commit_until_reachable(single, alone=True)
            except (MessageEncodeError, MessageTooLarge) as error:
                message = messages[start]
                self.run.in_flight -= len(sends)
                self.unsent([output for _, output in sends])
                # An invoke's record of this message goes after its dead letter instead.
                replies = [target for target, output in sends if _settles_invoke(output)]
                sends.clear()  # not forwarded: counted as delivered by nobody
                kept = await self.dead_letter(message, error, "forward")
                failure = [self.node.id, "forward", type_name(error), str(error)]
                for target in replies if kept else ():
                    await self.send_record(target, {"forwarded": 0, "failure": failure})
                for released in messages[start + 1 : end]:  # released with it
                    await self.dead_letter(released, error, "forward")
                committed += [True] * (end - start)  # settled, as dead letters
        return committed

    # -- acks and dead letters ------------------------------------------------------------

    def message_done(self) -> None:
        """One message was handled: keep the run's counts, let it check its limits."""
        run = self.run
        run.in_flight -= 1
        run.handled += 1
        if run.watch_each_message:
            run.message_done()

    async def ack(self, message: ChannelMessage) -> None:
        """Ack ``message``; a failure is logged (the work is done; a durable one redelivers)."""
        ack = message.ack
        assert ack is not None
        try:
            await ack()
        except Exception:
            self.log.exception("ack failed", msg_id=message.id)

    async def dead_letter(
        self, message: ChannelMessage, error: Exception, phase: str, attempts: int = 1
    ) -> bool:
        """Keep ``message``, with ``error``, as a dead letter; it is not acked.

        A message of a durable mailbox is kept in that mailbox's dead-letter store, which
        settles it; any other goes to the graph's dead-letter channel: the message (same
        payload, id, ack) with ``metadata["dead_letter"]``. Joins use it too.

        Returns:
            False if the message's lease was lost meanwhile (another worker has it now, and
            settles it); True otherwise.
        """
        node = self.node
        self.dead_lettered += 1
        if self.drain_letters is not None:
            self.drain_letters.add(id(message))
        error_type = type_name(error)
        if self.repeats is None:
            self.repeats = RepeatLimiter()
        held_back = self.repeats.admit((phase, error_type))
        if held_back is not None:  # the same failure again and again: rate-limited, counted
            self.log.warning("message dead-lettered", msg_id=message.id, phase=phase,
                             error_type=error_type, error=str(error), attempts=attempts,
                             held_back=held_back, log_every=self.repeats.interval)  # fmt: skip
        record = failure_record(node.id, error, phase, attempts)
        kept = await self._dead_letter_durably(message, record)
        if kept is not None:
            return kept
        letter = message.clone(metadata={"dead_letter": record})
        await self.run.dead_letters.send(letter)
        return True

    async def _dead_letter_durably(
        self, message: ChannelMessage, record: dict[str, Any]
    ) -> bool | None:
        """Keep a message of the durable mailbox in its own store.

        Returns:
            ``None`` if it is not one, False if its lease was lost, True once kept.
        """
        durable = self.durable
        if durable is None or message.raw_ack is None:
            return None  # an output, or a node without a durable mailbox
        if self.commit:
            await self.settle_commit()  # its place in the order: after what came before
        # Its steps stay stored (for their retention): a replay of it does not repeat them.
        if self.step_written:
            self.step_written.discard(message.id)
        details = {k: v for k, v in record.items() if k not in {"phase", "error"}}
        try:
            await durable.dead_letter(
                message, reason=str(record["phase"]), error=str(record["error"]), details=details
            )
        except LeaseLost:
            self.log.warning("lease lost; not dead-lettered here", msg_id=message.id)  # fmt: skip
            return False
        except ValueError:
            return None  # not one of the mailbox's own messages
        return True

    async def send_record(self, replies: BaseChannel, record: dict[str, Any]) -> None:
        """Write an invoke's record that could not go in a commit; a failure is logged."""
        try:
            await replies.send(invoke_record(record))
        except Exception:
            self.log.exception("invoke record not written", channel=replies.name)


def failure_record(node_id: str, error: Exception, phase: str, attempts: int) -> dict[str, Any]:
    """Why a node gave up on a message: a dead letter's ``metadata["dead_letter"]``.

    Also the first keys of what an error route delivers (a ``FailedMessage``).
    """
    return {
        "node": node_id,
        "phase": phase,
        "error_type": type_name(error),
        "error": str(error),
        "traceback": "".join(traceback.format_exception(error)),
        "attempts": attempts,
    }


def type_name(error: BaseException) -> str:
    """``module.QualifiedName`` of an error's type, as dead letters record it."""
    return f"{type(error).__module__}.{type(error).__qualname__}"


def _settles_invoke(output: ChannelMessage) -> bool:
    """Whether ``output`` is the record that settles a message of a Redis invoke."""
    return is_invoke_record(output) and "forwarded" in output.payload


def _released(handled: list[bool]) -> frozenset[int]:
    """The positions of a commit's messages released by a handled one before them."""
    return frozenset(index for index, was_handled in enumerate(handled) if not was_handled)


def _with_released(handled: list[bool] | None, count: int) -> list[tuple[int, int]]:
    """``(start, end)`` per handled message of a commit: it, then those it released."""
    if handled is None:
        return [(index, index + 1) for index in range(count)]
    starts = [index for index, was_handled in enumerate(handled) if was_handled or index == 0]
    return list(zip(starts, [*starts[1:], count], strict=True))
