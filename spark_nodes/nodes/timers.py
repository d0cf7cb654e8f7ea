"""Time as input: messages scheduled for later, and :class:`Ticker`, a node that ticks.

``context.schedule(content, delay=..., at=..., to=...)`` sends a message after a delay or
at a time (see :meth:`~spark_nodes.nodes.context.ExecutionContext.schedule`); this module
checks its arguments (:func:`delay_until`). A :class:`Ticker` is a source node that emits
a tick every ``every`` seconds or on a cron schedule; the graph that runs it sends the
ticks (``spark_nodes.graphs._ticking``): in memory from the event loop's clock, on Redis
from one worker process at a time (a leader lease), each tick once, with the last tick
kept in Redis so that ticks missed while no worker ran are caught up or skipped, as
``catch_up`` says.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, tzinfo
from typing import Any, Final, Literal, TypeAlias
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from spark_nodes.nodes.node import Node

__all__ = ["CATCH_UP_LIMIT", "CatchUp", "Ticker", "delay_until"]

CatchUp: TypeAlias = Literal["latest", "all", "skip"]
"""What a :class:`Ticker` does with ticks that came due while it could not send them."""

CATCH_UP_LIMIT: Final = 1000
"""The most missed ticks ``catch_up="all"`` sends at once; older ones are skipped."""

_CATCH_UPS: Final = ("latest", "all", "skip")
_ON_TIME_MOST: Final = 100  # ticks within ``grace`` looked at besides the missed ones


def delay_until(delay: float | None, at: float | datetime | None) -> float:
    """The seconds from now until a message scheduled with ``delay`` or ``at`` is due.

    Args:
        delay: Seconds from now (a finite number >= 0), or ``None``.
        at: When: epoch seconds or a timezone-aware ``datetime`` (a time in the past is
            due at once), or ``None``.

    Raises:
        ValueError: Both or neither were given; ``delay`` is negative or not finite;
            ``at`` is a naive datetime.
        TypeError: ``delay`` or ``at`` is of the wrong type.
    """
    if (delay is None) == (at is None):
        raise ValueError("schedule needs one of delay= (seconds) or at= (a time), not both")
    if delay is not None:
        if isinstance(delay, bool) or not isinstance(delay, int | float):
            raise TypeError(f"delay must be a number of seconds, not {type(delay).__name__}")
        if not (math.isfinite(delay) and delay >= 0):
            raise ValueError(f"delay must be a finite number of seconds >= 0, not {delay!r}")
        return float(delay)
    if isinstance(at, datetime):
        if at.tzinfo is None:
            raise ValueError(f"at must be timezone-aware (a naive datetime is ambiguous): {at}")
        at = at.timestamp()
    elif isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at):
        raise TypeError(f"at must be epoch seconds or an aware datetime, not {at!r}")
    return max(0.0, float(at) - time.time())


class Ticker(Node):
    """A source node that emits a tick on a clock: every ``every`` seconds, or on ``cron``.

    Each tick is a message in the ticker's own mailbox with the content
    ``{"at": <epoch seconds the tick was due>, "missed": <ticks it stands for, besides
    itself>}``; ``process`` handles it like any message (the default forwards it, so
    ``Ticker(every=60) >> heartbeat`` sends ``heartbeat`` a tick a minute; override
    ``process`` to turn ticks into work). Ticks run while the graph runs as a long-running
    task, and stop once the ticker has its shutdown.

    Ticks are due at fixed times: every multiple of ``every`` seconds since the epoch
    (``every=60`` ticks on the minute), or when ``cron`` matches. In memory, the event
    loop's clock paces them (a virtual clock in tests drives them). On Redis, one worker
    process at a time sends them (it holds a lease, renewed; when it dies another takes
    over within the mailbox's ``visibility_timeout``), each tick at most once (a tick's
    time is its idempotency key), and the last tick sent is kept in Redis, so a ticker
    that starts again after a stop or a crash knows which ticks it missed.

    Args:
        every: Seconds between ticks (> 0).
        cron: A cron expression, read by ``croniter``: 5 fields, or 6 with seconds as the
            sixth (``"* * * * * */15"``: every 15 s).
        tz: The time zone ``cron`` is read in: a ``tzinfo`` or an IANA name; UTC if
            omitted.
        catch_up: Ticks that came due while the ticker could not send them (no worker
            ran, or the event loop was blocked for longer than ``grace``): ``"latest"``
            sends the latest of them only (its ``missed`` says how many it stands for),
            ``"all"`` sends each, oldest first (at most :data:`CATCH_UP_LIMIT`), ``"skip"``
            sends none of them.
        grace: Seconds a tick may be late and still count as on time.
        **kwargs: Passed to :class:`Node`.

    Raises:
        ValueError: Neither or both of ``every`` and ``cron``; ``every`` or ``grace`` is
            not a positive finite number; ``cron`` does not parse; ``catch_up`` is not one
            of the three; ``tz`` names no time zone.
        TypeError: ``cron`` is not a str, ``tz`` not a str or ``tzinfo``.
    """

    def __init__(
        self,
        *,
        every: float | None = None,
        cron: str | None = None,
        tz: tzinfo | str | None = None,
        catch_up: CatchUp = "latest",
        grace: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if (every is None) == (cron is None):
            raise ValueError("a Ticker needs one of every= (seconds) or cron= (an expression)")
        if every is not None and not (
            isinstance(every, int | float)
            and not isinstance(every, bool)
            and math.isfinite(every)
            and every > 0
        ):
            raise ValueError(f"every must be a finite number of seconds > 0, not {every!r}")
        if cron is not None:
            if not isinstance(cron, str):
                raise TypeError(f"cron must be a str, not {type(cron).__name__}")
            if not croniter.is_valid(cron):
                raise ValueError(f"cron expression {cron!r} does not parse (croniter)")
        if catch_up not in _CATCH_UPS:
            raise ValueError(f"catch_up must be one of {_CATCH_UPS}, not {catch_up!r}")
        if not (isinstance(grace, int | float) and math.isfinite(grace) and grace > 0):
            raise ValueError(f"grace must be a finite number of seconds > 0, not {grace!r}")
        self.every = None if every is None else float(every)
        self.cron = cron
        self.tz = _zone(tz)
        self.catch_up: CatchUp = catch_up
        self.grace = float(grace)
        self.last_tick: float | None = None
        """The time of the last tick sent (in memory: kept across runs of this object)."""

    def next_after(self, moment: float) -> float:
        """The first time a tick is due after ``moment`` (epoch seconds)."""
        if self.every is not None:
            return round((self._index(moment) + 1) * self.every, 6)
        assert self.cron is not None
        start = datetime.fromtimestamp(moment, self.tz)
        return float(croniter(self.cron, start).get_next(float))

    def due(self, last: float, now: float) -> tuple[list[float], int]:
        """The ticks to send now: those due after ``last`` and by ``now``, per ``catch_up``.

        A tick more than ``grace`` seconds old is *missed*; at most
        :data:`CATCH_UP_LIMIT` missed ticks are looked at (the newest), so a long
        downtime costs no more than that, also for a cron expression.

        Returns:
            The ticks' times, oldest first, and how many due ticks are not among them (for
            a cron ticker down for longer than the limit covers, an estimate). The caller
            remembers :meth:`latest_due` as the last tick, whatever was sent.
        """
        recent, older = self._recent(last, now, CATCH_UP_LIMIT + _ON_TIME_MOST)
        on_time = [tick for tick in reversed(recent) if now - tick <= self.grace]
        missed = [tick for tick in reversed(recent) if now - tick > self.grace]
        skipped = older + max(0, len(missed) - CATCH_UP_LIMIT)
        missed = missed[-CATCH_UP_LIMIT:]
        if self.catch_up == "all":
            return missed + on_time, skipped
        if self.catch_up == "latest" and missed and not on_time:
            return missed[-1:], skipped + len(missed) - 1
        return on_time, skipped + len(missed)

    def latest_due(self, last: float, now: float) -> float:
        """The time of the last tick due by ``now`` (``last`` if none is after it)."""
        return max(last, self._at_or_before(now))

    def _at_or_before(self, moment: float) -> float:
        """The last tick due at or before ``moment``."""
        if self.every is not None:
            tick = round(self._index(moment) * self.every, 6)
            return tick if tick <= moment else round(tick - self.every, 6)
        assert self.cron is not None
        before = float(croniter(self.cron, datetime.fromtimestamp(moment, self.tz)).get_prev(float))
        following = self.next_after(before)
        return following if following <= moment else before

    def _recent(self, last: float, now: float, most: int) -> tuple[list[float], int]:
        """At most ``most`` ticks due after ``last`` and by ``now``, newest first.

        Also how many more there are: estimated from the listed ticks' spacing, for cron.
        """
        newest = self._at_or_before(now)
        if newest <= last:
            return [], 0
        if self.every is not None:
            count = round((newest - self.next_after(last)) / self.every) + 1
            listed = min(count, most)
            return [round(newest - i * self.every, 6) for i in range(listed)], count - listed
        assert self.cron is not None
        ticks, tick = [newest], newest
        earlier = croniter(self.cron, datetime.fromtimestamp(newest, self.tz))
        while len(ticks) < most:
            tick = float(earlier.get_prev(float))
            if tick <= last:
                return ticks, 0
            ticks.append(tick)
        if self.next_after(last) >= ticks[-1]:
            return ticks, 0
        spacing = (ticks[0] - ticks[-1]) / (len(ticks) - 1)
        return ticks, max(1, round((ticks[-1] - last) / spacing) - 1)

    def _index(self, moment: float) -> int:
        """The number of the last ``every`` tick at or before ``moment``, to the µs.

        Ticks are kept to the µs (``round(n * every, 6)``), which may fall a hair short of
        ``n * every``: a µs of slack keeps a tick's own number its own.
        """
        assert self.every is not None
        return math.floor((moment + 1e-6) / self.every)

    def __repr__(self) -> str:
        clock = f"every={self.every}" if self.every is not None else f"cron={self.cron!r}"
        return f"<Ticker {self.id!r} {clock}>"


def _zone(tz: tzinfo | str | None) -> tzinfo:
    if tz is None:
        return UTC
    if isinstance(tz, tzinfo):
        return tz
    if not isinstance(tz, str):
        raise TypeError(f"tz must be a tzinfo or an IANA zone name, not {type(tz).__name__}")
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(f"tz {tz!r} names no time zone: {error}") from error
