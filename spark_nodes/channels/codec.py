"""The msgpack wire format for a :class:`ChannelMessage`, and for plain values.

An encoded message is a msgpack map, the *envelope*::

    {"v": 1, "id": str, "payload": <value>, "metadata": {str: <value>}, "shutdown": bool}

Every field's type is checked exactly when decoding: ``v`` is the int 1 (not ``True``, not
``1.0``, which equal it), ``id`` a non-empty str, ``metadata`` a map with str keys,
``shutdown`` a bool (not 0 or 1); anything else is not an envelope.

``ack`` is a local callback and never travels. A value is "plain data": ``None``, ``bool``,
``int`` (64-bit), ``float``, ``str``, ``bytes`` (``bytearray``/``memoryview`` arrive as
``bytes``), ``list`` and ``tuple`` (both arrive as ``list``), and ``dict`` with ``str`` or
``bytes`` keys; subclasses arrive as the base type. Maps with other key types are refused
because the decoder accepts only those keys, as msgpack's defences against hash-flooding
require. Nothing is ever pickled.

Encoding checks what it writes decodes, so ``decode(encode(m))`` never fails. Errors name
the problem and its place: ``payload["items"][3]: Decimal cannot be encoded ...``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgpack

from spark_nodes.channels.message import ChannelMessage
from spark_nodes.errors import MessageDecodeError, MessageEncodeError

__all__ = ["ENVELOPE_VERSION", "decode", "encode", "pack", "unpack", "unpack_envelope"]

ENVELOPE_VERSION: Final = 1
"""The envelope version this build writes and reads."""

_ENVELOPE_KEYS: Final = frozenset({"v", "id", "payload", "metadata", "shutdown"})
_NOT_OURS: Final = "not a spark_nodes envelope"
# isinstance bound to str: all(map(_is_str, keys)) checks 4 keys in ~150 ns, a generator 270.
_is_str: Final[Callable[[object], bool]] = str.__instancecheck__
_MAX_DEPTH: Final = 512  # msgpack's own nesting limit when packing
_PLAIN_DATA: Final = (
    "send plain data: dict (str or bytes keys), list, tuple, str, bytes, int, float, bool, None"
)


# packb, not a shared Packer: a Packer keeps a buffer and is not thread-safe. Partials,
# not wrapper functions: the hot paths of Redis mailboxes call these per message.
_packb: Callable[[Any], bytes] = functools.partial(msgpack.packb, use_bin_type=True)


class _ForeignExtension(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


def _refuse_extension(code: int, _data: bytes) -> Any:
    raise _ForeignExtension(code)


unpack_envelope: Callable[[bytes], Any] = functools.partial(
    msgpack.unpackb, raw=False, strict_map_key=True, ext_hook=_refuse_extension
)
"""msgpack-decode bytes as :func:`decode` does, without checking the result.

For readers that check a well-formed envelope faster themselves and fall back to
:func:`decode` (which says what is wrong) otherwise. Raises whatever msgpack raises for
bytes that are not msgpack.
"""


def pack(value: Any, *, where: str = "value") -> bytes:
    """Encode a plain value with msgpack.

    Args:
        value: The value (see the module docstring for what is plain data).
        where: How to name the value in an error message, e.g. ``"state['k']"``.

    Returns:
        The msgpack bytes; :func:`unpack` reads them back.

    Raises:
        MessageEncodeError: The value (or something inside it) cannot be encoded; the
            message names its type and path. A :class:`TypeError`.
    """
    try:
        data = _packb(value)
        unpack_envelope(data)  # what we write must read back: catches non-str map keys
    except (TypeError, ValueError, OverflowError, _ForeignExtension) as error:
        raise MessageEncodeError(_explain(value, where, error)) from None
    return data


def unpack(data: bytes | bytearray | memoryview) -> Any:
    """Decode a plain value written by :func:`pack`.

    Raises:
        MessageDecodeError: The bytes are not one complete msgpack value of plain data.
    """
    raw = _as_bytes(data)
    return _read(raw)


def encode(message: ChannelMessage, *, check: bool = True) -> bytes:
    """Encode ``message`` as an envelope (its ``ack`` is not encoded).

    Args:
        message: The message.
        check: Also make sure the bytes read back (msgpack writes dicts with int keys,
            which :func:`decode` refuses). Without it, such a message is refused by its
            reader instead (dead-lettered there, its bytes kept); a value msgpack cannot
            write at all is refused here either way. Checking costs a decode.

    Raises:
        MessageEncodeError: The payload or metadata holds something msgpack cannot encode;
            the message names its type and path, e.g. ``payload["items"][3]: Decimal``.
            With ``check``, also a metadata key that is not a str (decode refuses it).
        TypeError: ``message`` is not a :class:`ChannelMessage`.
    """
    if not isinstance(message, ChannelMessage):
        raise TypeError(f"encode() takes a ChannelMessage, not {type(message).__name__}")
    metadata = message.raw_metadata or {}
    if check and metadata and not all(map(_is_str, metadata)):
        key = next(key for key in metadata if not _is_str(key))
        raise MessageEncodeError(
            f"metadata: key {key!r} of type {type(key).__name__}; metadata keys must be str"
        )
    envelope = {
        "v": ENVELOPE_VERSION,
        "id": message.id,
        "payload": message.payload,
        "metadata": metadata,
        "shutdown": bool(message.is_shutdown),
    }
    try:
        data = _packb(envelope)
        if check:
            unpack_envelope(data)
    except (TypeError, ValueError, OverflowError, _ForeignExtension) as error:
        problem = _find_problem(message.payload, "payload", set(), 0) or _find_problem(
            metadata, "metadata", set(), 0
        )
        raise MessageEncodeError(
            f"{problem}; {_PLAIN_DATA}" if problem else f"message cannot be encoded: {error}"
        ) from None
    return data


def decode(
    data: bytes | bytearray | memoryview, *, ack: Callable[[], Awaitable[None]] | None = None
) -> ChannelMessage:
    """Decode an envelope written by :func:`encode`.

    Args:
        data: The bytes.
        ack: The ack callback to give the decoded message (the receiving backend's).

    Returns:
        The message, with the sender's id.

    Raises:
        MessageDecodeError: The bytes are garbage, truncated, followed by trailing bytes,
            valid msgpack that is not an envelope (a field missing, extra or of another
            type, checked exactly: a version ``True`` or ``1.0`` is not 1), or an envelope
            of an unknown version; ``reason`` says which and ``data`` keeps the bytes.
    """
    raw = _as_bytes(data)
    envelope = _read(raw)
    if type(envelope) is not dict:
        raise MessageDecodeError(f"{_NOT_OURS}: expected a map, got {_type_name(envelope)}", raw)
    if "v" not in envelope:
        raise MessageDecodeError(f"{_NOT_OURS}: no version field 'v'", raw)
    version = envelope["v"]
    if type(version) is not int:  # exactly: True and 1.0 equal 1, and are not versions
        raise MessageDecodeError(
            f"{_NOT_OURS}: version 'v' must be an int, got {_type_name(version)} {version!r}",
            raw,
        )
    if version != ENVELOPE_VERSION:
        raise MessageDecodeError(
            f"unknown envelope version {version!r}; this spark_nodes reads version "
            f"{ENVELOPE_VERSION} (upgrade the reader or drain with the writer's version)",
            raw,
        )
    if envelope.keys() != _ENVELOPE_KEYS:
        missing = ", ".join(sorted(_ENVELOPE_KEYS - envelope.keys()))
        extra = ", ".join(sorted(map(repr, envelope.keys() - _ENVELOPE_KEYS)))
        raise MessageDecodeError(
            f"{_NOT_OURS}: missing keys [{missing}], unexpected keys [{extra}]", raw
        )
    ident, metadata, shutdown = envelope["id"], envelope["metadata"], envelope["shutdown"]
    if type(ident) is not str or not ident:
        raise MessageDecodeError(f"{_NOT_OURS}: 'id' must be a non-empty str, got {ident!r}", raw)
    if type(metadata) is not dict:
        raise MessageDecodeError(
            f"{_NOT_OURS}: 'metadata' must be a map, got {_type_name(metadata)}", raw
        )
    for key in metadata:
        if type(key) is not str:
            raise MessageDecodeError(
                f"{_NOT_OURS}: 'metadata' keys must be str, got {_type_name(key)} {key!r}", raw
            )
    if type(shutdown) is not bool:
        raise MessageDecodeError(
            f"{_NOT_OURS}: 'shutdown' must be a bool, got {_type_name(shutdown)} {shutdown!r}",
            raw,
        )
    return ChannelMessage(envelope["payload"], metadata or None, ack, shutdown, id=ident)


def _as_bytes(data: bytes | bytearray | memoryview) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    raise TypeError(f"expected bytes, not {type(data).__name__}")


def _read(raw: bytes) -> Any:
    if not raw:
        raise MessageDecodeError("empty input: no msgpack value", raw)
    try:
        return unpack_envelope(raw)
    except msgpack.ExtraData as error:
        raise MessageDecodeError(
            f"trailing bytes: {len(error.extra)} byte(s) after one complete msgpack value", raw
        ) from None
    except msgpack.FormatError:
        raise MessageDecodeError("not msgpack: the bytes are no valid msgpack value", raw) from None
    except msgpack.StackError:
        raise MessageDecodeError("nested too deeply to decode", raw) from None
    except _ForeignExtension as error:
        raise MessageDecodeError(
            f"unsupported msgpack extension type {error.code}: only plain data is accepted", raw
        ) from None
    except UnicodeDecodeError:
        raise MessageDecodeError("a msgpack string is not valid UTF-8", raw) from None
    except ValueError as error:
        text = str(error)
        if "incomplete" in text:
            raise MessageDecodeError(
                f"truncated: the input ends inside a msgpack value ({len(raw)} bytes read)", raw
            ) from None
        raise MessageDecodeError(f"not plain msgpack data: {text}", raw) from None
    except Exception as error:  # noqa: BLE001 - msgpack raises assorted types on garbage
        raise MessageDecodeError(f"not msgpack: {type(error).__name__}: {error}", raw) from None


def _type_name(value: Any) -> str:
    return "nil" if value is None else type(value).__name__


def _explain(value: Any, where: str, error: BaseException) -> str:
    problem = _find_problem(value, where, set(), 0)
    if problem is None:
        return f"{where} cannot be encoded with msgpack: {error}"
    return f"{problem}; {_PLAIN_DATA}"


def _key_text(key: str | bytes) -> str:
    return json.dumps(key, ensure_ascii=False) if isinstance(key, str) else repr(key)


_SCALARS: Final = (str, bytes, bytearray, memoryview, bool, float)
_INT64_MIN: Final = -(2**63)
_UINT64_MAX: Final = 2**64 - 1


def _find_problem(  # noqa: PLR0911, PLR0912 - one case per kind of value, read top-down
    value: Any, path: str, seen: set[int], depth: int
) -> str | None:
    """Describe the first thing under ``value`` that msgpack plain data cannot hold."""
    if value is None or isinstance(value, _SCALARS):
        return None
    if isinstance(value, int):
        if _INT64_MIN <= value <= _UINT64_MAX:
            return None
        return f"{path}: int {value} is outside msgpack's 64-bit range"
    if isinstance(value, msgpack.ExtType | msgpack.Timestamp):
        kind = type(value).__name__
        return f"{path}: {kind} cannot be encoded: msgpack extensions are not plain data"
    if depth >= _MAX_DEPTH:
        return f"{path}: nested deeper than {_MAX_DEPTH} levels"
    if isinstance(value, dict | list | tuple):
        if id(value) in seen:
            return f"{path}: refers back to a container that holds it (a cycle)"
        seen.add(id(value))
        try:
            if isinstance(value, dict):
                for key, item in value.items():
                    if not isinstance(key, str | bytes):
                        return (
                            f"{path}: map key {key!r} of type {type(key).__name__}; msgpack maps "
                            f"here need str or bytes keys"
                        )
                    problem = _find_problem(item, f"{path}[{_key_text(key)}]", seen, depth + 1)
                    if problem:
                        return problem
            else:
                for index, item in enumerate(value):
                    problem = _find_problem(item, f"{path}[{index}]", seen, depth + 1)
                    if problem:
                        return problem
        finally:
            seen.discard(id(value))
        return None
    return f"{path}: {type(value).__name__} cannot be encoded with msgpack"
