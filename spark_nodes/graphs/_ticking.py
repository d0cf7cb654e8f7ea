"""Sending a :class:`~spark_nodes.nodes.timers.Ticker`'s ticks while its graph runs.

One task per ticker the run hosts. It asks a :class:`TickLedger` whether it may send (in
memory: always; on Redis: while this process holds the ticker's lease), reads the last
tick sent, sends the ticks due since (per the ticker's ``catch_up``) into the ticker's
own mailbox, and notes the last one. On Redis each tick carries its time as its
idempotency key, so a tick that two processes send (a lease that changed hands while the
old leader was sending) is delivered once, and the last tick is written only by the
lease's holder.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final, Protocol

import anyio
import structlog

from spark_nodes._redis_client import ConnectionRetry, RedisClient, with_retries
from spark_nodes.channels import ChannelMessage
from spark_nodes.errors import BackendUnavailable
from spark_nodes.nodes.timers import Ticker

if TYPE_CHECKING:
    from spark_nodes.nodes._runtime import NodeRuntime

__all__ = [
    "LOOKS_PER_LEASE",
    "MemoryLedger",
    "RedisLedger",
    "TickLedger",
    "run_ticker",
    "tick_message",
]

_log = structlog.get_logger("spark_nodes")

_RETRY_AFTER: Final = 1.0  # seconds before a ticker that failed tries again
LOOKS_PER_LEASE: Final = 3
"""How often a ticker's lease is renewed (or sought) per its time to live."""

# KEYS[1] the lease, KEYS[2] the graph's hash; ARGV[1] this process's token, ARGV[2] the
# lease's time to live (ms), ARGV[3] the run, ARGV[4] the ticker. Returns 1 if this process
# holds the lease now (taken or renewed), 0 if another does, 2 if the ticker has its
# shutdown (closing: no more ticks).
_LEAD = """
if redis.call('HEXISTS', KEYS[2], 'closing:' .. ARGV[3] .. ':' .. ARGV[4]) == 1 then
  redis.call('DEL', KEYS[1])
  return 2
end
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if holder then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# KEYS[1] the lease, KEYS[2] the last tick; ARGV[1] the token, ARGV[2] the tick. Only the
# lease's holder writes (a leader that lost its lease while sending writes nothing).
_SAVE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
return 1
"""


class TickLedger(Protocol):
    """Who may send a ticker's ticks, and the last tick sent."""

    async def lead(self) -> bool | None:
        """Whether this process may send ticks now (taking or renewing a lease).

        ``None`` once the ticker has its shutdown: no more ticks, from any process.
        """

    async def last(self) -> float | None:
        """The time of the last tick sent (``None``: never)."""

    async def save(self, tick: float) -> None:
        """Note ``tick`` as the last one sent."""


class MemoryLedger:
    """A ledger kept on the ticker itself (``ticker.last_tick``): one process, no lease."""

    def __init__(self, ticker: Ticker) -> None:
        self._ticker = ticker

    async def lead(self) -> bool | None:
        """Always: in memory only this process runs the ticker."""
        return True

    async def last(self) -> float | None:
        """``ticker.last_tick``."""
        return self._ticker.last_tick

    async def save(self, tick: float) -> None:
        """Set ``ticker.last_tick``."""
        self._ticker.last_tick = tick


class RedisLedger:
    """A ticker's lease and last tick in Redis, on the graph's slot.

    ``{ns}:{G}#ticker:{node}`` holds the last tick, ``{ns}:{G}#ticker-lease:{node}`` the
    token of the process that sends (expiring unless renewed).

    Args:
        redis: The graph's client.
        prefix: ``{ns}:{G}#``: the graph's hash tag keeps both keys on its slot.
        node_id: The ticker.
        lease: Seconds a lease lives without renewal (takeover after a crash).
        retry: Retries when Redis cannot be reached.
        run: The graph's hash and the run's number: once the ticker has its shutdown in
            that run, no process sends ticks.
    """

    def __init__(
        self,
        redis: RedisClient,
        *,
        prefix: str,
        node_id: str,
        lease: float,
        retry: ConnectionRetry,
        run: tuple[str, int],
    ) -> None:
        self._redis = redis
        self._node_id = node_id
        self._run = run
        self.last_key = f"{prefix}ticker:{node_id}"
        self.lease_key = f"{prefix}ticker-lease:{node_id}"
        self._token = uuid.uuid4().hex
        self._lease_ms = max(1, round(lease * 1000))
        self._retry = retry
        self._lead = redis.register_script(_LEAD)
        self._save = redis.register_script(_SAVE)

    async def lead(self) -> bool | None:
        """Take or renew the lease; whether this process holds it (``None``: closing)."""
        hash_key, epoch = self._run
        keys = [self.lease_key, hash_key]
        args: list[str | int] = [self._token, self._lease_ms, epoch, self._node_id]
        held: int = await with_retries(
            lambda: self._lead(keys=keys, args=args),
            retry=self._retry, what=f"take the lease {self.lease_key!r}",
        )  # fmt: skip
        return None if held == 2 else held == 1

    async def last(self) -> float | None:
        """The last tick sent, as Redis keeps it."""
        value = await with_retries(
            lambda: self._redis.get(self.last_key),
            retry=self._retry, what=f"read {self.last_key!r}",
        )  # fmt: skip
        return None if value is None else float(value)

    async def save(self, tick: float) -> None:
        """Write the last tick, if this process still holds the lease."""
        keys, args = [self.lease_key, self.last_key], [self._token, repr(tick)]
        await with_retries(
            lambda: self._save(keys=keys, args=args),
            retry=self._retry, what=f"write {self.last_key!r}",
        )  # fmt: skip


def tick_message(ticker: Ticker, tick: float, missed: int) -> ChannelMessage:
    """The message of one tick; its time is its idempotency key (Redis drops a second)."""
    return ChannelMessage(
        {"at": tick, "missed": missed},
        {"idempotency_key": f"tick:{ticker.id}:{tick!r}", "scheduled_by": ticker.id},
    )


async def run_ticker(
    runtime: NodeRuntime,
    ledger: TickLedger,
    send: Callable[[ChannelMessage], Awaitable[None]],
    *,
    clock: Callable[[], float] = time.time,
    look_every: float = 1.0,
) -> None:
    """Send the ticks of ``runtime``'s ticker until it drains or stops (a task of the run).

    Args:
        runtime: The ticker's runtime in this run.
        ledger: Who may send, and the last tick.
        send: Puts a tick into the ticker's mailbox.
        clock: Epoch seconds now.
        look_every: The longest sleep: how soon a lease is renewed or sought, and a stop
            seen.
    """
    ticker = runtime.node
    assert isinstance(ticker, Ticker)
    leading = False
    carried = 0  # ticks skipped, told with the next tick sent
    last: float | None = None
    while not _ended(runtime):
        try:
            lead = await ledger.lead()
            if lead is None:
                return  # shut down (on Redis: seen by any process)
            if not lead:
                if leading:
                    _log.info("ticker lease lost", node=ticker.id)
                leading = False
                await anyio.sleep(look_every)
                continue
            if not leading:
                leading = True
                last = await ledger.last()
            now = clock()
            if last is None:
                last = now  # its first run: the first tick is the next one due
            ticks, skipped = ticker.due(last, now)
            carried += skipped
            if skipped:
                _log.warning("ticks missed", node=ticker.id, skipped=skipped,
                             catch_up=ticker.catch_up)  # fmt: skip
            for tick in ticks:
                if _ended(runtime):
                    return
                await send(tick_message(ticker, tick, carried))
                carried = 0
            newest = ticker.latest_due(last, now)
            if newest > last:
                await ledger.save(newest)
                last = newest
        except BackendUnavailable as error:
            _log.warning("ticker waits for Redis", node=ticker.id, error=str(error))
            leading = False
            await anyio.sleep(min(look_every, _RETRY_AFTER))
            continue
        except Exception:  # noqa: BLE001 - logged; the ticker tries again, the run goes on
            _log.exception("ticker failed to tick; trying again", node=ticker.id)
            leading = False
            await anyio.sleep(min(look_every, _RETRY_AFTER))
            continue
        await anyio.sleep(max(0.0, min(ticker.next_after(last), clock() + look_every) - clock()))


def _ended(runtime: NodeRuntime) -> bool:
    return runtime.finished or runtime.draining or runtime.should_stop()
