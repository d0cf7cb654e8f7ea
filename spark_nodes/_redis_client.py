"""Redis connections for the Redis backends: explicit, bounded, de-duplicated retries.

redis-py 8 retries failed commands by itself (three times, by default). A blindly retried
XADD can land twice, so our clients are made with redis-py's retries off and every call
that may need one goes through :func:`with_retries`, whose callers make their writes
idempotent (a producer sequence number, a fenced ack, a script that checks first).

redis-py's client is asyncio only: under trio it fails deep inside (``no running event
loop``). :func:`with_retries`, the door every call goes through, first checks the event
loop with :func:`require_asyncio` and raises :class:`UnsupportedEventLoop`, which says why.
The clients :func:`open_client` makes skip their close there (see :class:`_Client`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import anyio
import sniffio
import structlog
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, ReadOnlyError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from spark_nodes.backoff import Backoff
from spark_nodes.errors import BackendUnavailable, UnsupportedEventLoop

__all__ = ["RETRIABLE", "ConnectionRetry", "open_client", "require_asyncio", "with_retries"]

T = TypeVar("T")

RETRIABLE: tuple[type[Exception], ...] = (
    RedisConnectionError,  # includes BusyLoadingError: a restarted server loading its AOF
    RedisTimeoutError,
    ReadOnlyError,  # a replica promoted away from under us: the URL may lead to the new one
)
"""The errors that mean "the server could not be reached", worth a retry."""

_FAILED_TRIES: tuple[type[Exception], ...] = (*RETRIABLE, TimeoutError)
"""What ends a try: the server unreachable, or hanging past the call's deadline."""

_log = structlog.get_logger("spark_nodes")


@dataclass(frozen=True, slots=True)
class ConnectionRetry(Backoff):
    """How a Redis backend retries a call when the server cannot be reached.

    A :class:`~spark_nodes.backoff.Backoff`: delays grow exponentially from
    ``initial_delay`` up to ``max_delay``, each spread by ``+- jitter`` (half of it by
    default), so many workers losing one server do not come back in step (no reconnect
    storm). After ``attempts`` failed tries the call raises
    :class:`~spark_nodes.errors.BackendUnavailable` (``ChannelUnavailable`` for channels).
    The defaults give up after about 4 seconds.

    Attributes:
        attempts: Tries in all, the first included.

    Raises:
        ValueError: ``attempts`` < 1, or a delay is out of range.
    """

    attempts: int = 8
    initial_delay: float = 0.05
    max_delay: float = 1.0
    multiplier: float = 2.0
    jitter: float = 0.5
    try_timeout: float = 2.0
    """Seconds added to the waits for the tries themselves (see :attr:`deadline`)."""

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be >= 1, not {self.attempts!r}")
        if not self.try_timeout > 0:
            raise ValueError(f"try_timeout must be > 0, not {self.try_timeout!r}")
        Backoff.__post_init__(self)

    @property
    def deadline(self) -> float:
        """Seconds a call may take in all, tries and waits.

        A server that hangs (frozen, or behind a partition that drops packets) fails a
        call about as fast as one that refuses connections. The longest the waits between
        the tries can be (jitter included), plus :attr:`try_timeout`; about 7 s with the
        defaults.
        """
        waits = sum(
            min(self.initial_delay * self.multiplier ** (n - 1), self.max_delay)
            for n in range(1, self.attempts)
        )
        return waits * (1 + self.jitter) + self.try_timeout


class _Client(Redis):
    """redis-py's asyncio client, whose close does nothing unless asyncio runs it.

    Under trio every call was refused before it connected (:func:`require_asyncio`), so
    there is nothing to close; redis-py's close would still ``asyncio.gather`` the pool's
    connections, which makes a stray asyncio event loop (or raises ``There is no current
    event loop``) and hides the error the user should see.
    """

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        """Close the connections (see ``redis.asyncio.Redis.aclose``); only on asyncio."""
        if _on_asyncio():
            await super().aclose(close_connection_pool)


def open_client(url: str, *, socket_timeout: float = 10.0) -> Redis:
    """A redis-py asyncio client for ``url``, with redis-py's own retries off.

    ``redis://``, ``rediss://`` (TLS) and ``unix://`` URLs work, with a username and
    password in the URL (``redis://user:secret@host:6379/0``). Replies stay bytes.

    Raises:
        ValueError: ``url`` is not a Redis URL.
    """
    return _Client.from_url(
        url,
        retry=Retry(NoBackoff(), 0),
        decode_responses=False,
        socket_timeout=socket_timeout,
        socket_connect_timeout=5.0,
        health_check_interval=30,
    )


def require_asyncio(what: str) -> None:
    """Raise :class:`UnsupportedEventLoop` unless asyncio runs the current task.

    Costs about 0.5 us (sniffio), against a round trip of 50 us or more: checked per call.

    Args:
        what: The call, for the message (``"send to 'orders'"``).

    Raises:
        UnsupportedEventLoop: Another event loop (trio) runs the task: redis-py cannot.
    """
    if not _on_asyncio():
        library = sniffio.current_async_library()
        raise UnsupportedEventLoop(
            f"{what}: the Redis backend cannot run under {library}: it talks to Redis through "
            f"redis-py's asyncio client, which needs an asyncio event loop; run the program "
            f'under asyncio (anyio.run(main, backend="asyncio")) or keep the graph in memory'
        )


def _on_asyncio() -> bool:
    """Whether asyncio runs the current task (or a loop sniffio cannot name: let it try)."""
    try:
        return sniffio.current_async_library() == "asyncio"
    except sniffio.AsyncLibraryNotFoundError:
        return True


async def with_retries(
    operation: Callable[[], Awaitable[T]],
    *,
    retry: ConnectionRetry,
    what: str,
    error: type[BackendUnavailable] = BackendUnavailable,
) -> T:
    """Await ``operation()``; when Redis cannot be reached, try again per ``retry``.

    ``operation`` must be safe to repeat: it may have taken effect before the connection
    failed. Wrong credentials are not an outage: ``AuthenticationError`` is raised at once.

    Raises:
        BackendUnavailable: ``error``, after ``retry.attempts`` failed tries; its
            ``__cause__`` is the last failure.
        UnsupportedEventLoop: The task runs under trio (or another loop than asyncio),
            which redis-py's client cannot use; nothing was sent.
    """
    require_asyncio(what)
    failures = 0
    give_up_at = anyio.current_time() + retry.deadline
    while True:
        try:
            with anyio.fail_after(max(give_up_at - anyio.current_time(), 0.0)):
                return await operation()
        except _FAILED_TRIES as failure:
            if isinstance(failure, AuthenticationError):
                raise  # wrong credentials: a configuration error, not an outage
            failures += 1
            if failures >= retry.attempts or anyio.current_time() >= give_up_at:
                raise error(
                    f"{what}: Redis could not be reached after {failures} tries "
                    f"({type(failure).__name__}: {failure}); check the URL and that the "
                    f"server is up, or allow more tries (ConnectionRetry.attempts)"
                ) from failure
            delay = retry.delay(failures)
            # One warning per call that fails: its later tries are logged at debug level.
            log = _log.warning if failures == 1 else _log.debug
            log("redis unreachable; retrying", what=what, failures=failures,
                delay=round(delay, 3), error=str(failure))  # fmt: skip
            await anyio.sleep(delay)
