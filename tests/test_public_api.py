"""Every public module declares ``__all__``; every public name exists and is documented."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import spark_nodes

ROOT = Path(__file__).resolve().parent.parent


def public_modules() -> list[str]:
    found = pkgutil.walk_packages(spark_nodes.__path__, "spark_nodes.")
    public = [m.name for m in found if not any(p.startswith("_") for p in m.name.split("."))]
    return ["spark_nodes", *public]


@pytest.mark.parametrize("module_name", public_modules())
def test_public_module_declares_all_and_documents_it(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert module.__doc__, f"{module_name} has no docstring"
    assert hasattr(module, "__all__"), f"{module_name} has no __all__"
    for name in module.__all__:
        obj = getattr(module, name)  # raises if __all__ names something missing
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), f"{module_name}.{name} has no docstring"
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if attr.startswith(("_", "test_")) or not (
                    inspect.isfunction(member) or isinstance(member, property)
                ):
                    continue
                assert inspect.getdoc(member), f"{module_name}.{name}.{attr} has no docstring"


def test_top_level_names_are_the_ones_users_import() -> None:
    from spark_nodes.channels import (  # noqa: F401, PLC0415
        BaseChannel,
        ChannelClosed,
        ChannelMessage,
        ForwardingChannel,
        InMemoryChannel,
        QueueBridge,
    )

    assert spark_nodes.ChannelMessage is ChannelMessage


def test_what_invoke_returns_and_raises_is_importable_from_the_top_level() -> None:
    from spark_nodes import (  # noqa: PLC0415
        InvokeFailed,
        InvokeFailure,
        InvokeResult,
        InvokeTimeout,
    )
    from spark_nodes.errors import InvokeFailed as Failed  # noqa: PLC0415
    from spark_nodes.errors import InvokeTimeout as Timeout  # noqa: PLC0415
    from spark_nodes.graphs import InvokeFailure as Failure  # noqa: PLC0415
    from spark_nodes.graphs import InvokeResult as Result  # noqa: PLC0415

    assert (InvokeResult, InvokeFailure, InvokeFailed, InvokeTimeout) == (
        Result,
        Failure,
        Failed,
        Timeout,
    )
    for name in ("InvokeResult", "InvokeFailure", "InvokeFailed", "InvokeTimeout"):
        assert name in spark_nodes.__all__


def test_every_import_shown_in_the_docs_works() -> None:
    pattern = re.compile(r"^(from spark_nodes[\w.]* import .+|import spark_nodes[\w.]*)$", re.M)
    texts = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    imports = [line for path in texts for line in pattern.findall(path.read_text())]
    assert imports
    for line in imports:
        exec(line, {})
