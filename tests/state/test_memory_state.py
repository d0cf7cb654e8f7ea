from __future__ import annotations

from typing import Any

import pytest

from spark_nodes.state import GraphState, MemoryState
from spark_nodes.testing.state_contract import StateContract


class TestMemoryState(StateContract):
    @pytest.fixture
    def state(self) -> GraphState:
        return MemoryState()


class _Results:
    def __init__(self, outputs: dict[str, Any]) -> None:
        self.outputs = outputs

    def result_of(self, node_id: str) -> tuple[bool, Any]:
        return (node_id in self.outputs, self.outputs.get(node_id))

    def result_ids(self) -> list[str]:
        return list(self.outputs)


@pytest.mark.anyio
async def test_results_are_read_from_the_bound_source_as_plain_copies() -> None:
    state = MemoryState()
    output = {"items": (1, 2)}
    state.bind_results(_Results({"fetch": output}))
    assert await state.get("fetch.__result__") == {"items": [1, 2]}
    assert await state.exists("fetch.__result__")
    assert not await state.exists("other.__result__")
    assert await state.get("other.__result__", "none") == "none"
    assert await state.keys() == ["fetch.__result__"]
    with pytest.raises(ValueError, match="is a node's result"):
        await state.delete("fetch.__result__")


def test_repr_counts_keys() -> None:
    assert repr(MemoryState()) == "<MemoryState keys=0>"
