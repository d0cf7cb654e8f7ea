"""Redis connections for the Redis backends: explicit, bounded, de-duplicated retries.

redis-py 8 retries failed commands by itself (three times, by default). A blindly retried
XADD can land twice, so our clients are made with redis-py's retries off and every call
that may need one goes through :func:`with_retries`, whose callers make their writes
idempotent (a producer sequence number, a fenced ack, a script that checks first).

redis-py's client is asyncio only: under trio it fails deep inside (``no running event
loop``). :func:`with_retries`, the door every call goes through, first checks the event
loop with :func:`require_asyncio` and raises :class:`UnsupportedEventLoop`, which says why.
The clients :func:`open_client` makes skip their close there (see :class:`_Client`).

A Redis Cluster is reached through redis-py's ``RedisCluster``: :func:`open_client` makes
one for a ``redis+cluster://`` URL, and every backend accepts either client
(:data:`RedisClient`). Each graph keeps all its keys in one hash slot, so every script and
transaction of a graph runs on one master.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar
from urllib.parse import urlsplit, urlunsplit

import anyio
import anyio.lowlevel
import sniffio
import structlog
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    AuthenticationError,
    ClusterDownError,
    MovedError,
    ReadOnlyError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from spark_nodes.backoff import Backoff
from spark_nodes.errors import BackendUnavailable, ClusterClientRequired, UnsupportedEventLoop

__all__ = [
    "CLUSTER_SCHEMES",
    "RETRIABLE",
    "ConnectionRetry",
    "RedisClient",
    "RedisPipeline",
    "check_client",
    "open_client",
    "ready",
    "require_asyncio",
    "scan_slot",
    "with_retries",
]

T = TypeVar("T")

RETRIABLE: tuple[type[Exception], ...] = (
    RedisConnectionError,  # includes BusyLoadingError: a restarted server loading its AOF
    RedisTimeoutError,
    ReadOnlyError,  # a replica promoted away from under us: the URL may lead to the new one
    # A Cluster failing over: a master lost (CLUSTERDOWN, MASTERDOWN, a slot no one serves
    # until a replica takes over), or a slot being moved (TRYAGAIN).
    ClusterDownError,
    SlotNotCoveredError,
    TryAgainError,
)
"""The errors that mean "the server could not be reached", worth a retry."""

RedisClient: TypeAlias = Redis | RedisCluster
"""A redis-py asyncio client: of one server (or a Sentinel's master), or of a Cluster."""

RedisPipeline: TypeAlias = Pipeline | ClusterPipeline
"""A pipeline (or transaction) of either client."""

CLUSTER_SCHEMES: dict[str, str] = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
"""URL schemes that ask for a Cluster client, and the scheme redis-py is given instead."""

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


class _ClusterClient(RedisCluster):
    """redis-py's asyncio Cluster client: learns the cluster first; closes only on asyncio.

    redis-py 8.1 resolves a command's routing (a round trip to a startup node) before it
    initializes the client; concurrent first commands then race that initialization,
    which replaces the startup node's connections under them (``'NoneType' object has no
    attribute 'writelines'``, ``Connection closed by server``).
    """

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        """See ``RedisCluster.execute_command``; initializes the client first."""
        if self._initialize:
            await self.initialize()
        return await super().execute_command(*args, **kwargs)

    async def aclose(self) -> None:
        """Close the connections to every node (see ``RedisCluster.aclose``); only on asyncio."""
        if _on_asyncio():
            await super().aclose()


def open_client(url: str, *, socket_timeout: float = 10.0) -> RedisClient:
    """A redis-py asyncio client for ``url``, with redis-py's own retries off.

    ``redis://``, ``rediss://`` (TLS) and ``unix://`` URLs work, with a username and
    password in the URL (``redis://user:secret@host:6379/0``). ``redis+cluster://host:port``
    (``rediss+cluster://`` with TLS) makes a Cluster client, which learns the other nodes
    from the one named. Replies stay bytes.

    Raises:
        ValueError: ``url`` is not a Redis URL, or a cluster URL names a database other
            than 0.
    """
    options: dict[str, Any] = {
        "decode_responses": False,
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": 5.0,
        "health_check_interval": 30,
    }
    parts = urlsplit(url)
    scheme = CLUSTER_SCHEMES.get(parts.scheme.lower())
    if scheme is None:
        return _Client.from_url(url, retry=Retry(NoBackoff(), 0), **options)
    if parts.path.strip("/") not in ("", "0"):
        raise ValueError(f"a Redis Cluster has only database 0, not {parts.path.strip('/')!r}")
    # Our retries, not redis-py's: a cluster client still follows MOVED and ASK replies.
    return _ClusterClient.from_url(
        urlunsplit(parts._replace(scheme=scheme)), retry=Retry(NoBackoff(), 0), **options
    )


async def ready(redis: RedisClient) -> None:
    """Make a Cluster client learn the cluster (once) before a transaction.

    redis-py 8.1's cluster transactions run their watched commands in a thread with an
    event loop of its own: a client that learns the cluster there keeps connections of a
    loop that is gone. Plain commands initialize the client first (see
    :class:`_ClusterClient`); transactions call this. A no-op for other clients.
    """
    if isinstance(redis, RedisCluster):
        await redis.initialize()


def check_client(redis: object) -> None:
    """Check that ``redis`` is a client the Redis backends can use.

    Raises:
        TypeError: ``redis`` is neither a ``redis.asyncio.Redis`` nor a
            ``redis.asyncio.RedisCluster``.
        ValueError: It was made with ``decode_responses=True`` (the backends read bytes).
    """
    if not isinstance(redis, Redis | RedisCluster):
        raise TypeError(
            f"redis must be a redis.asyncio.Redis or RedisCluster, not {type(redis).__name__}"
        )
    if redis.get_connection_kwargs().get("decode_responses"):
        raise ValueError("the Redis client must be made with decode_responses=False")


async def scan_slot(
    redis: RedisClient, pattern: str, *, slot_of: str, count: int = 1000, type_: str | None = None
) -> list[bytes]:
    """Every key matching ``pattern``, all in the hash slot of the key ``slot_of``.

    On a Cluster only the master that owns that slot is scanned (redis-py would scan every
    master and hand back one cursor per master). ``slot_of`` is the pattern's literal
    prefix, its hash tag unescaped. Keys may repeat, as with ``SCAN``.
    """
    target: dict[str, Any] = {}
    if isinstance(redis, RedisCluster):
        await redis.initialize()  # the slots map, once per client (a no-op after that)
        target["target_nodes"] = redis.get_node_from_key(slot_of)
    found: list[bytes] = []
    cursor: Any = 0
    while True:
        cursor, names = await redis.scan(cursor, match=pattern, count=count, _type=type_, **target)
        if isinstance(cursor, dict):  # a cluster's reply: the one node's cursor
            (cursor,) = cursor.values()
        found.extend(name.encode() if isinstance(name, str) else name for name in names)
        if cursor == 0:
            return found


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
        ClusterClientRequired: The client is of one server, and the server a Cluster
            node that does not hold the key.
        UnsupportedEventLoop: The task runs under trio (or another loop than asyncio),
            which redis-py's client cannot use; nothing was sent.
    """
    require_asyncio(what)
    task = asyncio.current_task()
    cancels = task.cancelling() if task is not None else 0
    failures = 0
    give_up_at = anyio.current_time() + retry.deadline
    while True:
        try:
            with anyio.fail_after(max(give_up_at - anyio.current_time(), 0.0)):
                result = await operation()
        except MovedError as moved:  # a Cluster client follows these: this one is not one
            raise ClusterClientRequired(
                f"{what}: the Redis server is a node of a Redis Cluster ({moved}); connect "
                f"with a redis+cluster://host:port URL or a redis.asyncio.RedisCluster client"
            ) from moved
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
            await _cancelled_if_swallowed(task, cancels)
            await anyio.sleep(delay)
        else:
            await _cancelled_if_swallowed(task, cancels)
            return result


async def _cancelled_if_swallowed(task: asyncio.Task[Any] | None, cancels: int) -> None:
    """Raise a cancellation of ``task`` that redis-py swallowed, if there was one.

    redis-py 8.1 swallows a cancellation that lands while it connects: a task cancelled
    once (an ``asyncio.TaskGroup``'s child) would run on. A checkpoint first lets anyio
    deliver its own cancellations again (as anyio's, which its scopes recognise); one
    that only asyncio made is raised here.
    """
    if task is not None and task.cancelling() > cancels:
        await anyio.lowlevel.checkpoint()
        raise asyncio.CancelledError
