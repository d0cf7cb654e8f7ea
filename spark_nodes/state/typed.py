"""``TypedState``: a view of graph state whose values must match a ``TypedDict``."""

from __future__ import annotations

import types
import typing
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, Union, get_args, get_origin

from spark_nodes.state.base import check_key

if TYPE_CHECKING:
    from spark_nodes.state.base import GraphState

__all__ = ["TypedState"]

Schema = TypeVar("Schema")


def _is_typeddict(schema: object) -> bool:
    return isinstance(schema, type) and typing.is_typeddict(schema)


def _problem(value: Any, annotation: Any, path: str) -> str | None:  # noqa: PLR0911, PLR0912 - one case per kind of annotation
    """Describe how ``value`` fails ``annotation``, or None if it matches."""
    if annotation is Any or annotation is object:
        return None
    if _is_typeddict(annotation):
        return _dict_problem(value, annotation, path)
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        options = get_args(annotation)
        if any(_problem(value, option, path) is None for option in options):
            return None
        return f"{path} is {type(value).__name__}, expected {annotation}"
    if origin is Literal:
        allowed = get_args(annotation)
        return None if value in allowed else f"{path} is {value!r}, expected one of {allowed}"
    if origin in (list, tuple, set, frozenset) or annotation in (list, tuple):
        if not isinstance(value, list | tuple):
            return f"{path} is {type(value).__name__}, expected a list"
        args = get_args(annotation)
        item_type = args[0] if args and (origin is not tuple or len(args) == 2) else Any
        for index, item in enumerate(value):
            problem = _problem(item, item_type, f"{path}[{index}]")
            if problem:
                return problem
        return None
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            return f"{path} is {type(value).__name__}, expected a dict"
        args = get_args(annotation)
        value_type = args[1] if len(args) == 2 else Any
        for key, item in value.items():
            problem = _problem(item, value_type, f"{path}[{key!r}]")
            if problem:
                return problem
        return None
    if annotation is None or annotation is type(None):
        return None if value is None else f"{path} is {type(value).__name__}, expected None"
    if annotation is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return None if ok else f"{path} is {type(value).__name__}, expected float"
    if annotation is int and isinstance(value, bool):
        return f"{path} is bool, expected int"
    if isinstance(annotation, type):
        ok = isinstance(value, annotation)
        return None if ok else f"{path} is {type(value).__name__}, expected {annotation.__name__}"
    return None  # an annotation we cannot check at run time: let mypy have it


def _dict_problem(value: Any, schema: Any, path: str) -> str | None:
    if not isinstance(value, dict):
        return f"{path} is {type(value).__name__}, expected a {schema.__name__} dict"
    hints = typing.get_type_hints(schema)
    missing = sorted(schema.__required_keys__ - value.keys())
    if missing:
        return f"{path} lacks {schema.__name__} key(s) {missing}"
    extra = sorted(map(str, value.keys() - hints.keys()))
    if extra:
        return f"{path} has key(s) {extra} that {schema.__name__} does not declare"
    for key, item in value.items():
        problem = _problem(item, hints[key], f"{path}[{key!r}]")
        if problem:
            return problem
    return None


class TypedState(Generic[Schema]):
    """``state.typed(MySchema)``: values are ``MySchema`` dicts, checked on the way in and out.

    ``set`` checks the keys (required present, none undeclared) and the value types
    (``str``, ``int``, ``float``, ``bool``, ``None``, ``list[X]``, ``dict[str, X]``,
    ``Literal``, unions and nested ``TypedDict``), and ``get`` checks what it reads, which
    untyped writes may have changed. Under mypy, ``get`` returns ``MySchema | None``.

    Args:
        state: The state to read and write.
        schema: A ``TypedDict`` class.

    Raises:
        TypeError: ``schema`` is not a ``TypedDict`` class.
    """

    def __init__(self, state: GraphState, schema: type[Schema]) -> None:
        if not _is_typeddict(schema):
            raise TypeError(f"typed() takes a TypedDict class, not {schema!r}")
        self._state = state
        self._schema = schema

    @property
    def schema(self) -> type[Schema]:
        """The ``TypedDict`` values must match."""
        return self._schema

    def check(self, value: Any, where: str = "value") -> Schema:
        """Return ``value`` if it matches the schema.

        Raises:
            TypeError: It does not; the message says where and how.
        """
        problem = _dict_problem(value, self._schema, where)
        if problem:
            raise TypeError(problem)
        return typing.cast("Schema", value)

    async def get(self, key: str, default: Schema | None = None) -> Schema | None:
        """Read ``key`` as the schema's type, or ``default``.

        Raises:
            TypeError: The stored value does not match the schema.
        """
        value = await self._state.get(check_key(key), None)
        if value is None:
            return default
        return self.check(value, f"state[{key!r}]")

    async def set(self, key: str, value: Schema, ttl: float | None = None) -> None:
        """Check ``value`` against the schema, then store it (see ``GraphState.set``).

        Raises:
            TypeError: ``value`` does not match the schema; nothing was stored.
        """
        self.check(value, f"state[{key!r}]")
        await self._state.set(key, value, ttl)

    async def delete(self, key: str) -> bool:
        """Remove ``key``; return whether it existed."""
        return await self._state.delete(key)

    async def exists(self, key: str) -> bool:
        """Whether ``key`` is present."""
        return await self._state.exists(key)

    def __repr__(self) -> str:
        return f"<TypedState {self._schema.__name__} over {self._state!r}>"
