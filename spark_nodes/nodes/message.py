"""``NodeMessage``: what a node's ``process`` receives and returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from spark_nodes.channels.message import new_message_id

__all__ = ["NodeMessage"]


@dataclass(slots=True)
class NodeMessage:
    """One message as a node sees it: content, metadata and an id.

    ``context.inputs`` is always a ``NodeMessage``. ``process`` may return one (to set
    metadata on its output) or plain content, which the node wraps.

    Attributes:
        content: The data.
        metadata: Tracing and routing information; the framework sets ``trace_id``,
            ``source_node`` and ``edge`` on every message it forwards.
        id: The id of the channel message that carried it, or a fresh one.
    """

    content: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=new_message_id)
