"""The envelope check: every field's type exactly (``True`` and ``1.0`` are not the version 1).

Regression: ``decode(msgpack.packb({"v": True, ...}))`` returned a message, because
``True == 1 == 1.0`` in Python. What the Redis reader does with such an entry (dead-letters
it) is in ``test_redis_bad_envelopes.py``.
"""

from __future__ import annotations

import enum
from typing import Any

import msgpack
import pytest

from spark_nodes.channels import ChannelMessage, MessageDecodeError, MessageEncodeError
from spark_nodes.channels.codec import decode, encode

GOOD: dict[str, Any] = {"v": 1, "id": "a-1", "payload": 1, "metadata": {}, "shutdown": False}


def envelope(**fields: Any) -> bytes:
    data: bytes = msgpack.packb({**GOOD, **fields})
    return data


def refused(data: bytes) -> str:
    with pytest.raises(MessageDecodeError) as caught:
        decode(data)
    assert caught.value.data == data  # kept for the dead letter
    return caught.value.reason


def test_the_envelope_of_the_issue_with_version_true_is_refused() -> None:
    data = msgpack.packb({"v": True, "id": "a-1", "payload": 1, "metadata": {}, "shutdown": False})
    assert refused(data) == "not a spark_nodes envelope: version 'v' must be an int, got bool True"


@pytest.mark.parametrize(
    ("version", "named"),
    [
        (True, "bool True"),
        (False, "bool False"),
        (1.0, "float 1.0"),
        ("1", "str '1'"),
        (None, "nil None"),
        ([1], "list [1]"),
        (b"\x01", "bytes b'\\x01'"),
    ],
)
def test_a_version_that_is_not_an_int_is_not_an_envelope(version: Any, named: str) -> None:
    reason = refused(envelope(v=version))
    assert reason == f"not a spark_nodes envelope: version 'v' must be an int, got {named}"


def test_an_int_version_other_than_1_is_an_unknown_version() -> None:
    assert refused(envelope(v=2)).startswith("unknown envelope version 2; ")
    assert refused(envelope(v=0)).startswith("unknown envelope version 0; ")


def test_an_envelope_without_a_version_is_not_an_envelope() -> None:
    data = msgpack.packb({k: v for k, v in GOOD.items() if k != "v"})
    assert refused(data) == "not a spark_nodes envelope: no version field 'v'"


@pytest.mark.parametrize(
    ("ident", "named"),
    [("", "''"), (5, "5"), (None, "None"), (b"a-1", "b'a-1'"), (True, "True"), (["a"], "['a']")],
)
def test_an_id_that_is_not_a_non_empty_str_is_not_an_envelope(ident: Any, named: str) -> None:
    reason = refused(envelope(id=ident))
    assert reason == f"not a spark_nodes envelope: 'id' must be a non-empty str, got {named}"


@pytest.mark.parametrize(
    ("metadata", "named"),
    [([1], "list"), (None, "nil"), ("k", "str"), (1, "int"), (True, "bool")],
)
def test_metadata_that_is_not_a_map_is_not_an_envelope(metadata: Any, named: str) -> None:
    reason = refused(envelope(metadata=metadata))
    assert reason == f"not a spark_nodes envelope: 'metadata' must be a map, got {named}"


def test_metadata_with_a_key_that_is_not_a_str_is_not_an_envelope() -> None:
    reason = refused(envelope(metadata={"edge": "a->b", b"raw": 1}))
    assert reason == "not a spark_nodes envelope: 'metadata' keys must be str, got bytes b'raw'"


@pytest.mark.parametrize(
    ("shutdown", "named"),
    [(0, "int 0"), (1, "int 1"), (0.0, "float 0.0"), (None, "nil None"), ("false", "str 'false'")],
)
def test_a_shutdown_flag_that_is_not_a_bool_is_not_an_envelope(shutdown: Any, named: str) -> None:
    reason = refused(envelope(shutdown=shutdown))
    assert reason == f"not a spark_nodes envelope: 'shutdown' must be a bool, got {named}"


def test_a_missing_or_extra_field_is_not_an_envelope() -> None:
    without_payload = msgpack.packb({k: v for k, v in GOOD.items() if k != "payload"})
    assert refused(without_payload) == (
        "not a spark_nodes envelope: missing keys [payload], unexpected keys []"
    )
    assert refused(envelope(trace="x")) == (
        "not a spark_nodes envelope: missing keys [], unexpected keys ['trace']"
    )


def test_an_envelope_with_bytes_field_names_is_not_an_envelope() -> None:
    data = msgpack.packb({key.encode(): value for key, value in GOOD.items()})
    assert refused(data) == "not a spark_nodes envelope: no version field 'v'"


def test_every_field_exactly_right_decodes() -> None:
    message = decode(envelope(payload={"k": [1.0, True]}, metadata={"edge": "a->b"}, shutdown=True))
    assert message.id == "a-1"
    assert message.payload == {"k": [1.0, True]}
    assert message.metadata == {"edge": "a->b"}
    assert message.is_shutdown is True


def test_encode_refuses_a_metadata_key_that_decode_would_refuse() -> None:
    message = ChannelMessage(1, {b"raw": 1})  # type: ignore[dict-item]
    with pytest.raises(MessageEncodeError, match=r"metadata: key b'raw' of type bytes; .* str"):
        encode(message)


def test_unchecked_encode_leaves_the_refusal_to_the_reader() -> None:
    data = encode(ChannelMessage(1, {b"raw": 1}), check=False)  # type: ignore[dict-item]
    assert refused(data).startswith("not a spark_nodes envelope: 'metadata' keys must be str")


class Key(enum.StrEnum):
    EDGE = "edge"


def test_a_str_subclass_metadata_key_travels_as_a_str() -> None:
    decoded = decode(encode(ChannelMessage(1, {Key.EDGE: "a->b"})))
    assert decoded.metadata == {"edge": "a->b"}
    assert type(next(iter(decoded.metadata))) is str
