"""``NodeMessage``: what a node's ``process`` receives and returns."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypedDict

from spark_nodes.channels import ChannelMessage
from spark_nodes.channels.message import new_message_id

if TYPE_CHECKING:
    from spark_nodes.nodes.steps import StepResults

__all__ = ["FailedMessage", "NodeMessage", "channel_message_of"]

_new_object = object.__new__


class NodeMessage:
    """One message as a node sees it: content, metadata and an id.

    ``context.inputs`` is always a ``NodeMessage``. ``process`` may return one (to set
    metadata on its output) or plain content, which the node wraps.

    Built like a dataclass, ``NodeMessage(content=None, metadata=None, id=None)``, with the
    same attributes, ``==`` (content and metadata; the id is identity, not value) and
    ``repr``. Hand-written and slotted rather than ``@dataclass`` for the same reason as
    :class:`~spark_nodes.channels.ChannelMessage`: a node builds one per message, and
    formatting the id of every message whether or not anyone reads it cost ~0.5 us a hop.

    Attributes:
        content: The data.
        metadata: Tracing and routing information; the framework sets ``trace_id``,
            ``source_node`` and ``edge`` on every message it forwards.
        id: The id of the channel message that carried it, or a fresh one; made on first
            access.
        raw_metadata: The storage behind ``metadata``: the dict, or ``None`` until used.
        raw_id: The storage behind ``id``: the id, the :class:`ChannelMessage` whose id it
            borrows (the worker loop's view of a received message), or ``None``.
        steps: The results of ``context.step`` calls made for it (see
            :mod:`spark_nodes.nodes.steps`); unset until a step runs.

    Raises:
        TypeError: ``metadata`` is not a dict or ``id`` is not a non-empty str.
    """

    __slots__ = ("content", "raw_id", "raw_metadata", "steps")

    steps: StepResults

    def __init__(
        self,
        content: Any = None,
        metadata: dict[str, Any] | None = None,
        id: str | None = None,
    ) -> None:
        if metadata is not None and not isinstance(metadata, dict):
            raise TypeError(f"metadata must be a dict, not {type(metadata).__name__}")
        if id is not None and (id.__class__ is not str or not id):
            raise TypeError(f"id must be a non-empty str, not {id!r}")
        self.content = content
        self.raw_metadata = metadata
        self.raw_id: str | ChannelMessage | None = id

    @property
    def metadata(self) -> dict[str, Any]:
        """Tracing and routing information; created empty on first access."""
        metadata = self.raw_metadata
        if metadata is None:
            metadata = self.raw_metadata = {}
        return metadata

    @metadata.setter
    def metadata(self, value: dict[str, Any]) -> None:
        if not isinstance(value, dict):
            raise TypeError(f"metadata must be a dict, not {type(value).__name__}")
        self.raw_metadata = value

    @property
    def id(self) -> str:
        """The message id; that of the channel message that carried it, else a fresh one."""
        ident = self.raw_id
        if isinstance(ident, str):
            return ident
        text = new_message_id() if ident is None else ident.id
        self.raw_id = text
        return text

    @id.setter
    def id(self, value: str) -> None:
        if value.__class__ is not str or not value:
            raise TypeError(f"id must be a non-empty str, not {value!r}")
        self.raw_id = value

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, NodeMessage)
        return self.content == other.content and (self.raw_metadata or {}) == (
            other.raw_metadata or {}
        )

    __hash__ = None  # type: ignore[assignment]  # mutable and compared by value

    def __repr__(self) -> str:
        return f"NodeMessage(content={self.content!r}, metadata={self.metadata!r}, id={self.id!r})"


def channel_message_of(
    content: Any, metadata: dict[str, Any] | None = None, *, id: str | None = None
) -> ChannelMessage:
    """The mailbox message for an input: plain ``content`` or a :class:`NodeMessage`.

    A ``NodeMessage`` keeps its metadata (``metadata`` is laid over it) and its id, unless
    ``id`` is given. What ``graph.send``, ``graph.invoke``, a run's input and ``node.tell``
    and ``ask`` put in a mailbox.

    Raises:
        TypeError: ``metadata`` is not a dict.
    """
    if metadata is not None and not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict, not {type(metadata).__name__}")
    if isinstance(content, NodeMessage):
        merged = {**content.metadata, **(metadata or {})}
        return ChannelMessage(content.content, merged or None, id=id or content.id)
    return ChannelMessage(content, dict(metadata) if metadata else None, id=id)


class FailedMessage(TypedDict):
    """What an error route delivers: a message a node gave up on, with why.

    ``a.on_error() >> handler``: the content of what ``handler`` receives
    (``context.inputs.content``). Plain data (msgpack carries it between processes);
    ``content`` and ``metadata`` are as the failed message had them. The first six
    keys are those of a dead letter's ``metadata["dead_letter"]``.

    Attributes:
        node: The id of the node that gave up on the message.
        phase: Where it failed: ``"process"`` (the last attempt raised), ``"route"``
            (an edge condition raised) or ``"forward"`` (a successor's mailbox refused
            an output).
        error_type: The error's ``module.QualifiedName``.
        error: The error's text.
        traceback: The formatted traceback.
        attempts: How many attempts were made.
        content: The failed message's content.
        message_id: The failed message's id.
        metadata: The failed message's metadata (its ``trace_id``, ``source_node``,
            ``edge``...), a copy.
    """

    node: str
    phase: str
    error_type: str
    error: str
    traceback: str
    attempts: int
    content: Any
    message_id: str
    metadata: dict[str, Any]
