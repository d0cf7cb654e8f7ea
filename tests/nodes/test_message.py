"""Turning inputs into mailbox messages."""

from __future__ import annotations

import pytest

from spark_nodes.nodes import NodeMessage
from spark_nodes.nodes.message import channel_message_of


def test_channel_message_of_keeps_a_node_messages_metadata_and_id_and_checks_metadata() -> None:
    inputs = NodeMessage({"x": 1}, {"a": 1})
    message = channel_message_of(inputs, {"b": 2})
    assert (message.payload, message.metadata, message.id) == (
        {"x": 1},
        {"a": 1, "b": 2},
        inputs.id,
    )
    assert channel_message_of(inputs, id="fresh").id == "fresh"
    plain = channel_message_of(5)
    assert (plain.payload, plain.raw_metadata) == (5, None)
    with pytest.raises(TypeError, match="metadata must be a dict"):
        channel_message_of(5, [("a", 1)])  # type: ignore[arg-type]
