"""Where a Redis graph keeps ``context.step`` results: one hash per message and node.

``{ns}:{G}#steps:{node}:{message id}``: field = step name, value = the msgpack result; it
expires :data:`~spark_nodes.nodes.steps.STEP_RETENTION` after its last step. A step is one
round trip (HSET and PEXPIRE in one pipeline, without MULTI: both on the graph's slot, and
a retried write lands the same). Hashes of committed messages are deleted with the next
write, or by :meth:`RedisStepStore.flush` (when the run ends, or once
:data:`FORGET_BATCH` wait).
"""

from __future__ import annotations

from typing import Any

from spark_nodes._redis_client import ConnectionRetry, RedisClient, with_retries
from spark_nodes.nodes.steps import STEP_RETENTION

__all__ = ["FORGET_BATCH", "RedisStepStore"]

FORGET_BATCH = 256
"""Hashes of committed messages waiting for deletion before they are deleted on their own."""


class RedisStepStore:
    """The step store of one Redis graph (see :class:`~spark_nodes.nodes.steps.StepStore`).

    Args:
        redis: The graph's client.
        prefix: ``{ns}:{G}#steps:``: the graph's hash tag keeps every key on its slot.
        retry: Retries when Redis cannot be reached.
        retention: Seconds a message's steps are kept after its last step.
    """

    __slots__ = ("_forgotten", "_prefix", "_redis", "_retention_ms", "_retry")

    def __init__(
        self,
        redis: RedisClient,
        prefix: str,
        retry: ConnectionRetry,
        retention: float = STEP_RETENTION,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._retry = retry
        self._retention_ms = max(1, round(retention * 1000))
        self._forgotten: list[str] = []

    def key(self, node_id: str, message_id: str) -> str:
        """``{ns}:{G}#steps:{node}:{message id}``."""
        return f"{self._prefix}{node_id}:{message_id}"

    async def load(self, key: str) -> dict[str, bytes]:
        """The stored results of ``key``, by step name.

        Raises:
            BackendUnavailable: Redis could not be reached within the retries.
        """
        stored: dict[Any, Any] = await with_retries(
            lambda: self._redis.hgetall(key), retry=self._retry, what=f"read steps {key!r}"
        )  # fmt: skip
        return {name.decode(): value for name, value in stored.items()}  # bytes: no decoding

    async def save(self, key: str, name: str, data: bytes) -> None:
        """Store one result (and delete the hashes :meth:`forget` queued), in one round trip.

        Raises:
            BackendUnavailable: Redis could not be reached within the retries; the step's
                result may or may not be stored (a retry of the message finds out).
        """
        forgotten, self._forgotten = self._forgotten, []

        async def write() -> None:
            async with self._redis.pipeline(transaction=False) as pipe:
                if forgotten:  # first: a queued key written again must keep the new result
                    pipe.execute_command("UNLINK", *forgotten)  # (cluster unlink(): one key)
                pipe.hset(key, name, data)
                pipe.pexpire(key, self._retention_ms)
                await pipe.execute()

        try:
            await with_retries(write, retry=self._retry, what=f"store step {name!r} of {key!r}")
        except BaseException:
            self._forgotten[:0] = forgotten  # deleted with a later write
            raise

    def forget(self, key: str) -> None:
        """Queue ``key`` for deletion (its message committed)."""
        self._forgotten.append(key)

    def flush_due(self) -> bool:
        """Whether so many deletions wait that they should not wait for a write."""
        return len(self._forgotten) >= FORGET_BATCH

    async def flush(self) -> None:
        """Delete the queued hashes now; a failure leaves them to their expiry.

        Raises:
            BackendUnavailable: Redis could not be reached within the retries.
        """
        forgotten, self._forgotten = self._forgotten, []
        if forgotten:
            await with_retries(
                lambda: self._redis.execute_command("UNLINK", *forgotten),
                retry=self._retry, what="delete the steps of committed messages",
            )  # fmt: skip
