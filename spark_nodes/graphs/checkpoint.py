"""Checkpoints: a graph's state and unacked messages in one msgpack file, written atomically.

A checkpoint holds the graph state (values and the seconds left on their TTLs) and, per
node, every message not yet acked: the one being processed (in flight), the ones a join
holds, then the queued ones, in the order they will be handled again. Mailboxes are read
before the state, so a message handled meanwhile is at worst done twice, never lost. The
file is written to a temporary file beside the target, flushed, fsynced and renamed over it,
so a crash leaves the previous checkpoint or the new one, never half of one.

Not saved: acks (local callbacks), ``node.state`` (keep what must survive in the graph
state), results, messages of durable mailboxes (they keep their own), and messages a custom
``go()`` loop has taken from its mailbox.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import anyio

from spark_nodes.channels import ChannelMessage
from spark_nodes.channels.codec import decode, encode, pack, unpack
from spark_nodes.channels.mailbox import is_restorable
from spark_nodes.errors import CheckpointError, MessageDecodeError, MessageEncodeError, WiringError

if TYPE_CHECKING:
    from spark_nodes.channels.mailbox import RestorableMailbox
    from spark_nodes.graphs.graph import Graph
    from spark_nodes.nodes import Node

__all__ = ["FORMAT", "VERSION", "Checkpoint", "read_checkpoint", "take_checkpoint"]

FORMAT: Final = "spark_nodes.checkpoint"
VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A checkpoint's contents.

    Attributes:
        graph: The name of the graph it was taken from.
        created_at: When (``time.time()``).
        state: Per key, the packed value and the seconds its TTL had left (or ``None``).
        messages: Per node id, the encoded messages, in the order they are to be handled.
    """

    graph: str
    created_at: float
    state: dict[str, tuple[bytes, float | None]]
    messages: dict[str, list[bytes]]

    def to_bytes(self) -> bytes:
        """The file's bytes."""
        return pack(
            {
                "format": FORMAT,
                "version": VERSION,
                "graph": self.graph,
                "created_at": self.created_at,
                "state": {key: [data, ttl] for key, (data, ttl) in self.state.items()},
                "messages": self.messages,
            },
            where="checkpoint",
        )

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "checkpoint") -> Checkpoint:
        """Read a checkpoint's bytes.

        Raises:
            CheckpointError: They are not a spark_nodes checkpoint of a known version.
        """
        try:
            raw = unpack(data)
        except MessageDecodeError as error:
            raise CheckpointError(
                f"{source} is not a spark_nodes checkpoint: {error.reason}"
            ) from None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise CheckpointError(f"{source} is not a spark_nodes checkpoint")
        if raw.get("version") != VERSION:
            raise CheckpointError(
                f"{source} is a version {raw.get('version')!r} checkpoint; this spark_nodes "
                f"reads version {VERSION}"
            )
        try:
            state = {key: (bytes(value), ttl) for key, (value, ttl) in raw["state"].items()}
            messages = {node: [bytes(m) for m in items] for node, items in raw["messages"].items()}
            return cls(str(raw["graph"]), float(raw["created_at"]), state, messages)
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"{source} is damaged: {error!r}") from None


def _pending(node: Node, in_progress: Iterable[ChannelMessage]) -> list[ChannelMessage] | None:
    mailbox = node.mailbox
    if not is_restorable(mailbox):
        return None  # a durable mailbox keeps its own messages
    restorable: RestorableMailbox = mailbox  # type: ignore[assignment]
    try:
        queued = restorable.snapshot()
    except NotImplementedError:
        return None  # an edge into a mailbox that keeps its own messages
    return [*in_progress, *node.held, *(m for m in queued if not m.is_shutdown)]


async def take_checkpoint(
    graph: Graph, in_progress: dict[str, list[ChannelMessage]] | None = None
) -> Checkpoint:
    """Capture ``graph``'s unacked messages, then its state.

    Args:
        graph: The graph.
        in_progress: Per node, messages its running loops took and have not handled.

    Raises:
        MessageEncodeError: A message's payload or metadata is not plain data; the error
            names the node.
    """
    in_progress = in_progress or {}
    messages: dict[str, list[bytes]] = {}
    for node in graph.nodes.values():  # no await in this loop: one consistent moment
        pending = _pending(node, in_progress.get(node.id, ()))
        if pending is None:
            continue
        try:
            messages[node.id] = [encode(message) for message in pending]
        except MessageEncodeError as error:
            raise MessageEncodeError(
                f"node {node.id!r} has a message that cannot be checkpointed: {error}"
            ) from None
    state = await graph.state.snapshot()
    return Checkpoint(graph.name, time.time(), state, messages)


async def write_checkpoint(checkpoint: Checkpoint, path: str | os.PathLike[str]) -> None:
    """Write ``checkpoint`` to ``path`` atomically (temp file, fsync, rename, fsync dir).

    Raises:
        OSError: The file could not be written; the previous one is left as it was.
    """
    await anyio.to_thread.run_sync(_write_atomically, Path(path), checkpoint.to_bytes())


def _write_atomically(path: Path, data: bytes) -> None:
    directory = path.parent if str(path.parent) else Path()
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory_handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(directory_handle)  # the rename itself must survive a crash
    finally:
        os.close(directory_handle)


async def read_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read the checkpoint at ``path``.

    Raises:
        CheckpointError: The file is not a checkpoint this version can read.
        OSError: The file cannot be read.
    """
    data = await anyio.to_thread.run_sync(Path(path).read_bytes)
    return Checkpoint.from_bytes(data, source=str(path))


async def restore_checkpoint(graph: Graph, checkpoint: Checkpoint) -> int:
    """Put ``checkpoint``'s state and messages back into ``graph``; return the message count.

    Mailboxes named in the checkpoint get exactly its messages (what they held is replaced);
    nodes' held messages are dropped, since the checkpoint delivers them again.

    Raises:
        WiringError: The checkpoint has messages for a node this graph does not have.
        CheckpointError: A message in it cannot be decoded.
    """
    nodes = graph.nodes
    unknown = sorted(set(checkpoint.messages) - set(nodes))
    if unknown:
        raise WiringError(
            f"the checkpoint of graph {checkpoint.graph!r} has messages for nodes {unknown} "
            f"that graph {graph.name!r} does not have"
        )
    restored: dict[str, list[ChannelMessage]] = {}
    for node_id, envelopes in checkpoint.messages.items():
        try:
            restored[node_id] = [decode(envelope) for envelope in envelopes]
        except MessageDecodeError as error:
            raise CheckpointError(f"a message for node {node_id!r}: {error.reason}") from None
    await graph.state.restore(checkpoint.state)
    for node in nodes.values():
        node.drop_held()
    for node_id, messages in restored.items():
        mailbox = nodes[node_id].mailbox
        if not is_restorable(mailbox):
            raise NotImplementedError(f"{mailbox!r} cannot be restored from a checkpoint")
        restorable: RestorableMailbox = mailbox  # type: ignore[assignment]
        restorable.restore(messages)
    return sum(len(messages) for messages in restored.values())


def describe(checkpoint: Checkpoint) -> dict[str, Any]:
    """A short summary: graph, age, keys and messages per node (for logs)."""
    return {
        "graph": checkpoint.graph,
        "age_seconds": round(time.time() - checkpoint.created_at, 3),
        "state_keys": len(checkpoint.state),
        "messages": {node: len(items) for node, items in checkpoint.messages.items()},
    }
