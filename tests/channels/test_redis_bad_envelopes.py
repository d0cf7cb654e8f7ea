"""Entries another client wrote raw into a graph's mailbox that are not quite our envelope.

Regression: an envelope whose version was ``True`` or ``1.0`` (equal to 1 in Python) passed
the reader's fast path and reached ``process()``. Each field's type is now checked exactly,
and such an entry is dead-lettered with its bytes, like any entry that is not an envelope.
"""

from __future__ import annotations

from typing import Any

import anyio
import msgpack
import pytest
from redis.asyncio import Redis

from spark_nodes import ExecutionContext, Graph, Node, StopReason
from spark_nodes.channels import RedisChannel
from tests.redis_support import Cluster

pytestmark = [pytest.mark.anyio, pytest.mark.redis]  # redis-py: asyncio only

GOOD: dict[str, Any] = {"v": 1, "id": "raw-1", "payload": "bad", "metadata": {}, "shutdown": False}


class Collect(Node):
    """Records what reaches ``process`` in the graph state (shared by every process)."""

    async def process(self, context: ExecutionContext) -> None:
        await context.graph_state.append("seen", context.inputs.content)


def sink() -> Graph:
    return Graph(Collect(id="sink"), name="bad-envelopes")


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"v": True}, b"version 'v' must be an int, got bool True"),
        ({"v": 1.0}, b"version 'v' must be an int, got float 1.0"),
        ({"shutdown": 1}, b"'shutdown' must be a bool, got int 1"),
        ({"shutdown": 0}, b"'shutdown' must be a bool, got int 0"),
        ({"id": b"raw-1"}, b"'id' must be a non-empty str, got b'raw-1'"),
        ({"metadata": {b"edge": "x"}}, b"'metadata' keys must be str, got bytes b'edge'"),
    ],
    ids=["version-true", "version-float", "shutdown-1", "shutdown-0", "id-bytes", "metadata-key"],
)
async def test_a_raw_entry_with_a_wrongly_typed_field_is_dead_lettered_not_processed(
    cluster: Cluster, raw: Redis, fields: dict[str, Any], error: bytes
) -> None:
    worker, client = cluster.process(sink), cluster.process(sink)
    mailbox = client.nodes["sink"].mailbox
    assert isinstance(mailbox, RedisChannel)
    data = msgpack.packb({**GOOD, **fields})
    await client.send("sink", "before")
    entry = await raw.xadd(mailbox.key, {"m": data})
    await client.send("sink", "after")
    await client.shutdown()  # the run ends once everything sent before it is settled

    with anyio.fail_after(30):
        result = await worker.serve()

    assert result.stop_reason is StopReason.SHUTDOWN
    assert await client.state.get("seen") == ["before", "after"]  # and never "bad"
    letters: Any = await raw.xrange(f"{mailbox.key}:dead")
    ((_, letter),) = letters
    assert letter[b"reason"] == b"undecodable"
    assert letter[b"error"] == b"not a spark_nodes envelope: " + error
    assert letter[b"entry"] == entry
    assert letter[b"m"] == data  # the original bytes, byte for byte
    pending: Any = await raw.xpending(mailbox.key, mailbox.group)
    assert pending["pending"] == 0
