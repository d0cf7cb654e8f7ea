"""The layering and the privacy rules of docs/architecture.md, checked on the source.

Layers, lowest first: errors, backoff and the Redis client helper; channels; state; nodes;
graphs; cli and testing. A module may import from its own layer and the ones below, never
from a layer above. No module reads or writes an underscore attribute that another module
defines (a subclass may use what its base class defines, through ``self``), nor imports
another module's underscore names (asyncio's included).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "spark_nodes"

LAYERS = {
    "errors": 0,
    "backoff": 0,
    "_log_limit": 0,
    "_redis_client": 0,
    "channels": 1,
    "state": 2,
    "nodes": 3,
    "graphs": 4,
    "cli": 5,
    "testing": 5,
    "observability": 5,
}
"""Each subpackage (or module) of spark_nodes by layer; the package itself is above all."""

TYPE_ONLY_EXCEPTIONS = {
    ("spark_nodes.errors", "spark_nodes.graphs.result"),
    ("spark_nodes.errors", "spark_nodes.nodes._watch"),
}
"""Imports up the layers made only for type hints (under ``TYPE_CHECKING``), each with its
reason. errors: ``GraphFailed.result`` is a ``GraphResult`` and ``InvokeFailed.result`` an
``InvokeResult``, for users' type checkers."""

NAMEDTUPLE_API = {"_replace", "_asdict", "_fields", "_make"}


def _modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path


def _layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:
        return len(set(LAYERS.values()))  # spark_nodes itself: above everything
    return LAYERS.get(parts[1], len(set(LAYERS.values())))


def _type_only_lines(tree: ast.Module) -> set[int]:
    """The line numbers of imports under ``if TYPE_CHECKING:``."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.If)
            and isinstance(node.test, ast.Name)
            and node.test.id == "TYPE_CHECKING"
        ):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import | ast.ImportFrom):
                    lines.add(inner.lineno)
    return lines


def _imports(tree: ast.Module) -> Iterator[tuple[str, ast.stmt]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, node
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node


def test_no_module_imports_from_a_layer_above_its_own() -> None:
    wrong = []
    for module, path in _modules():
        tree = ast.parse(path.read_text())
        type_only = _type_only_lines(tree)
        own = _layer(module)
        for imported, node in _imports(tree):
            if not imported.startswith("spark_nodes") or _layer(imported) <= own:
                continue
            if node.lineno in type_only and (module, imported) in TYPE_ONLY_EXCEPTIONS:
                continue
            wrong.append(f"{module} (layer {own}) imports {imported} (layer {_layer(imported)})")
    assert wrong == []


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _defined_private_names(tree: ast.Module) -> set[str]:
    """Underscore names a module defines: functions, classes, attributes, slots, globals."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.ctx, ast.Store)
            and isinstance(node.value, ast.Name)
            and node.value.id in {"self", "cls"}
        ):
            names.add(node.attr)  # (a store into another object is a reach, not a definition)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets)
            and isinstance(node.value, ast.Tuple | ast.List)
        ):
            names |= {
                element.value
                for element in node.value.elts
                if isinstance(element, ast.Constant) and isinstance(element.value, str)
            }
    return {name for name in names if _private(name)}


def _reaches(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """Where a module uses another module's underscore names: (line, what)."""
    own = _defined_private_names(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            target = node.value
            if isinstance(target, ast.Name) and target.id in {"self", "cls"}:
                continue  # a class's own, or what its base defines for it
            if node.attr not in own and node.attr not in NAMEDTUPLE_API:
                yield node.lineno, ast.unparse(node)
        elif isinstance(node, ast.ImportFrom):  # ours, or asyncio's, or anyone's
            for alias in node.names:
                if _private(alias.name):
                    yield node.lineno, f"imports {node.module}.{alias.name}"


def test_no_module_touches_another_modules_private_attributes() -> None:
    wrong = [
        f"{module}:{line}: {what}"
        for module, path in _modules()
        for line, what in _reaches(ast.parse(path.read_text()))
    ]
    assert wrong == []


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("def f(other):\n    other._hidden = 1", True),
        ("class A:\n    def f(self):\n        self._mine = 1", False),
        ("class A:\n    __slots__ = ('_x',)\n\ndef f(a):\n    return a._x", False),
        ("from spark_nodes.channels.message import _sequence", True),
        ("from asyncio import _get_running_loop", True),
        ("import asyncio\nasyncio._get_running_loop()", True),
        ("def f(parts):\n    return parts._replace(netloc='')", False),
    ],
)
def test_the_privacy_check_tells_a_reach_into_another_module(source: str, found: bool) -> None:
    assert bool(list(_reaches(ast.parse(source)))) is found


@pytest.mark.parametrize(
    ("module", "imported", "above"),
    [
        ("spark_nodes.channels.memory", "spark_nodes.nodes.node", True),
        ("spark_nodes.graphs.graph", "spark_nodes.channels", False),
        ("spark_nodes.state.redis", "spark_nodes._redis_client", False),
        ("spark_nodes.testing.probe", "spark_nodes.graphs", False),
    ],
)
def test_the_layer_check_orders_the_layers(module: str, imported: str, above: bool) -> None:
    assert (_layer(imported) > _layer(module)) is above


def test_the_layer_check_knows_every_subpackage() -> None:
    subpackages = {path.name for path in PACKAGE.iterdir() if (path / "__init__.py").exists()}
    modules = {path.stem for path in PACKAGE.glob("*.py")} - {"__init__", "__main__"}
    assert subpackages | modules <= set(LAYERS)
