"""Durable steps: ``await context.step(name, fn, *args)`` runs ``fn`` once per message.

A step's result is stored before ``step`` returns, so before the message can be acked:
when the message is handled again (a retry of ``process``, or on Redis a redelivery after
a worker died), ``step`` returns the stored result instead of calling ``fn`` again. That
makes side effects that cost money or cannot be undone (a charge, an e-mail, a paid model
call) happen once per message, as far as the step's own effect is atomic with its return.

Where results are kept:

- In memory (a graph without Redis), with the message while it is handled: retries reuse
  them. Nothing survives the process, and nothing needs to: an in-memory message dies with
  it too.
- On Redis, in one hash per message (``{ns}:{G}#steps:{node}:{message id}``), written in one
  round trip per step. A first delivery's first attempt reads nothing (nothing can be
  stored yet); a retry, a redelivery or a replayed dead letter (``metadata["replayed"]``)
  reads the hash once. The hash is deleted once the
  message is committed (queued, and sent with the next step's write or a later flush, so
  it costs no round trip of its own); a dead-lettered message keeps its steps for
  :data:`STEP_RETENTION`, so replaying it does not repeat them.

Results are msgpack data (what messages carry): a result msgpack cannot encode fails the
step (:class:`~spark_nodes.errors.MessageEncodeError`) and nothing is stored; ``step``
returns what a later delivery would read, so a tuple comes back as a list, on the first
run as on a replay.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Protocol

import anyio

from spark_nodes.channels.codec import pack, unpack

if TYPE_CHECKING:
    from spark_nodes.nodes.context import ExecutionContext

__all__ = ["STEP_RETENTION", "StepStore", "run_step"]

STEP_RETENTION: Final = 7 * 24 * 3600.0
"""Seconds a message's stored steps are kept after its last step (Redis); 7 days."""


class StepStore(Protocol):
    """Where a distributed graph keeps step results (implemented by the graphs layer)."""

    def key(self, node_id: str, message_id: str) -> str:
        """The key of one message's steps at one node."""

    async def load(self, key: str) -> dict[str, bytes]:
        """The stored results of ``key``, by step name (empty if none)."""

    async def save(self, key: str, name: str, data: bytes) -> None:
        """Store one step's encoded result; it must be durable when this returns."""

    def forget(self, key: str) -> None:
        """Delete ``key`` soon (its message was committed): with the next save or flush."""

    def flush_due(self) -> bool:
        """Whether :meth:`flush` should run now rather than wait for a save."""

    async def flush(self) -> None:
        """Delete what :meth:`forget` queued now."""


class StepResults:
    """One message's step results at one node, kept with the message while it is handled.

    Attributes:
        node_id: The node whose steps these are (a message forwarded as it is keeps it).
        owner: The channel message they belong to (the inputs object is reused).
        results: Encoded results by step name.
        loaded: Whether the store was read for this message (once per delivery).
        lock: Held while the store is read, so concurrent steps read it once.
    """

    __slots__ = ("loaded", "lock", "node_id", "owner", "results")

    def __init__(self, node_id: str, owner: object) -> None:
        self.node_id = node_id
        self.owner = owner
        self.results: dict[str, bytes] = {}
        self.loaded = False
        self.lock = anyio.Lock()


async def run_step(
    context: ExecutionContext,
    store: StepStore | None,
    written: set[str] | None,
    call: tuple[str, Callable[..., Any], tuple[Any, ...], dict[str, Any]],
) -> Any:
    """Run one step of ``context``'s attempt (see :meth:`ExecutionContext.step`).

    ``call``: the step's name, function and arguments. ``written``: where the ids of
    messages whose steps went to ``store`` are noted (the node's runtime forgets their
    steps once they commit).

    Raises:
        TypeError: ``name`` is not a non-empty str, or ``fn`` is not callable.
        ValueError: ``name`` was used already in this attempt.
        MessageEncodeError: ``fn``'s result is not msgpack data; nothing was stored.
        BackendUnavailable: The store could not be reached (the message is delivered
            again; no attempt is spent).
        Exception: What ``fn`` raised; nothing was stored.
    """
    name, fn, args, kwargs = call
    if not isinstance(name, str) or not name:
        raise TypeError(f"a step name must be a non-empty str, not {name!r}")
    if not callable(fn):
        raise TypeError(f"step {name!r}: fn must be callable, not {type(fn).__name__}")
    node_id = context.node.id
    message = context.message
    inputs = context.inputs
    # The worker loop reuses a context and its inputs for the next message when nothing
    # kept them: what they hold of an earlier message's steps is not this one's.
    owner: object = message if message is not None else inputs
    used = getattr(context, "step_names", None)  # unset: no step yet
    if used is None or used[0] is not owner:
        used = context.step_names = (owner, set())
    names = used[1]
    if name in names:
        raise ValueError(
            f"step {name!r} ran already in this call of {node_id!r}.process: give each "
            f"step of a message its own name (say, {name + '-2'!r})"
        )
    names.add(name)
    steps: StepResults | None = getattr(inputs, "steps", None)
    if steps is None or steps.node_id != node_id or steps.owner is not owner:
        steps = StepResults(node_id, owner)
        inputs.steps = steps
    message_id = message.id if message is not None else inputs.id
    key = store.key(node_id, message_id) if store is not None else ""
    if store is not None and not steps.loaded:
        async with steps.lock:  # concurrent steps of one call read the store once
            if not steps.loaded:
                await _read_back(context, store, written, steps, (message_id, key))
    stored = steps.results.get(name)
    if stored is not None:
        return unpack(stored)
    result = fn(*args, **kwargs)
    if inspect.isawaitable(result):
        result = await result
    data = pack(result, where=f"the result of step {name!r} of {node_id!r}")
    if store is not None:
        if written is not None:
            # Before the write: a write that fails may still have landed, and a retry or
            # a give-back must read it (forgotten once the message commits).
            written.add(message_id)
        await store.save(key, name, data)
    steps.results[name] = data
    return unpack(data)


async def _read_back(
    context: ExecutionContext,
    store: StepStore,
    written: set[str] | None,
    steps: StepResults,
    ids: tuple[str, str],
) -> None:
    """Read a message's stored steps into ``steps``, unless none can be stored yet.

    A first delivery's first attempt can have none: no read. A message this node stored
    steps for and then gave back (Redis was out) comes again as a first delivery:
    ``written`` remembers it.
    """
    message_id, key = ids
    message = context.message
    metadata = message.metadata if message is not None else {}
    again = (
        context.attempt > 1
        or metadata.get("delivery_count", 1) > 1
        or metadata.get("replayed", False)
        or (written is not None and message_id in written)
    )
    if again:
        steps.results.update(await store.load(key))
        if steps.results and written is not None:
            written.add(message_id)  # this node's commit of it deletes them
    steps.loaded = True
