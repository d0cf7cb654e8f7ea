"""The contract every :class:`~spark_nodes.state.GraphState` backend keeps, as a test suite.

Subclass :class:`StateContract` in a test module and give it a ``state`` fixture that yields
a fresh, empty backend::

    class TestMyState(StateContract):
        @pytest.fixture
        async def state(self) -> AsyncIterator[GraphState]:
            yield MyState(...)

Every test is async (pytest's ``anyio`` marker); override ``anyio_backend`` in the subclass
to pin one event loop. TTL tests wait real time (a few tenths of a second): expiry is what
they check, and the server's clock is the one that counts.
"""

from __future__ import annotations

from typing import Any, TypedDict

import anyio
import pytest

from spark_nodes.errors import MessageEncodeError, StateConflict
from spark_nodes.state import GraphState, StateTransaction

__all__ = ["StateContract"]

PLAIN_VALUES: list[Any] = [
    "text",
    "",
    0,
    -7,
    2**63 - 1,
    3.25,
    True,
    False,
    None,
    b"\x00bytes",
    [1, "two", [3.0]],
    {"nested": {"list": [1, 2], "none": None}},
]


class _Profile(TypedDict):
    user_id: str
    age: int
    tags: list[str]


class StateContract:
    """Tests a backend against the :class:`GraphState` contract (see the module docs)."""

    pytestmark = pytest.mark.anyio

    # -- values ----------------------------------------------------------------------------

    async def test_a_missing_key_reads_as_the_default(self, state: GraphState) -> None:
        assert await state.get("missing") is None
        assert await state.get("missing", default=42) == 42
        assert not await state.exists("missing")

    @pytest.mark.parametrize("value", PLAIN_VALUES, ids=repr)
    async def test_plain_values_read_back_equal_and_of_the_same_type(
        self, state: GraphState, value: Any
    ) -> None:
        await state.set("k", value)
        read = await state.get("k")
        assert read == value
        assert type(read) is type(value)

    async def test_tuples_read_back_as_lists(self, state: GraphState) -> None:
        await state.set("k", (1, (2, 3)))
        assert await state.get("k") == [1, [2, 3]]

    async def test_reads_are_copies(self, state: GraphState) -> None:
        stored = {"items": [1, 2]}
        await state.set("k", stored)
        stored["items"].append(3)
        read = await state.get("k")
        read["items"].append(4)
        assert await state.get("k") == {"items": [1, 2]}

    async def test_a_bad_value_fails_at_set_naming_it_and_writes_nothing(
        self, state: GraphState
    ) -> None:
        await state.set("k", "before")
        with pytest.raises(
            MessageEncodeError, match=r"state\['k'\]\['when'\]|state\['k'\]\[\"when\"\]"
        ):
            await state.set("k", {"when": object()})
        with pytest.raises(TypeError, match="map key 1 of type int"):
            await state.set("k", {1: "int keys do not survive msgpack"})
        assert await state.get("k") == "before"

    async def test_keys_must_be_non_empty_strings(self, state: GraphState) -> None:
        with pytest.raises(TypeError, match="state keys are non-empty str"):
            await state.set("", 1)
        with pytest.raises(TypeError, match="state keys are non-empty str"):
            await state.get(5)  # type: ignore[arg-type]

    async def test_results_are_read_only(self, state: GraphState) -> None:
        with pytest.raises(ValueError, match="is a node's result"):
            await state.set("node.__result__", 1)

    # -- delete, exists, keys, update ----------------------------------------------------------

    async def test_delete_reports_whether_the_key_existed(self, state: GraphState) -> None:
        await state.set("k", 1)
        assert await state.delete("k")
        assert not await state.delete("k")
        assert not await state.exists("k")

    async def test_keys_are_sorted_and_skip_deleted_ones(self, state: GraphState) -> None:
        for key in ("b", "a", "c"):
            await state.set(key, 1)
        await state.delete("c")
        assert await state.keys() == ["a", "b"]

    async def test_update_writes_all_or_nothing(self, state: GraphState) -> None:
        await state.update({"a": 1, "b": [2]})
        assert (await state.get("a"), await state.get("b")) == (1, [2])
        with pytest.raises(MessageEncodeError):
            await state.update({"a": 10, "bad": {1, 2}})
        assert await state.get("a") == 1
        assert not await state.exists("bad")

    # -- lists ---------------------------------------------------------------------------------

    async def test_append_and_prepend_build_lists_and_return_lengths(
        self, state: GraphState
    ) -> None:
        assert await state.append("logs", "one") == 1
        assert await state.append("logs", "two") == 2
        assert await state.prepend("logs", "zero") == 3
        assert await state.get("logs") == ["zero", "one", "two"]
        assert await state.prepend("stack", "first") == 1
        assert await state.prepend("stack", "second") == 2
        assert await state.get("stack") == ["second", "first"]

    async def test_list_operations_refuse_a_key_holding_something_else(
        self, state: GraphState
    ) -> None:
        await state.set("scalar", "text")
        with pytest.raises(TypeError, match="holds a str, not a list"):
            await state.append("scalar", 1)
        assert await state.get("scalar") == "text"

    async def test_a_list_set_whole_can_be_appended_to(self, state: GraphState) -> None:
        await state.set("k", [1])
        assert await state.append("k", 2) == 2
        assert await state.get("k") == [1, 2]

    # -- incr ----------------------------------------------------------------------------------

    async def test_incr_counts_from_zero_and_keeps_ints_ints(self, state: GraphState) -> None:
        assert await state.incr("n") == 1
        assert await state.incr("n", 5) == 6
        value = await state.get("n")
        assert (value, type(value)) == (6, int)
        assert await state.incr("n", 0.5) == 6.5
        assert await state.incr("f", -1.5) == -1.5

    async def test_incr_refuses_non_numbers(self, state: GraphState) -> None:
        await state.set("s", "text")
        with pytest.raises(TypeError, match="holds a str; incr\\(\\) needs an int or float"):
            await state.incr("s")
        with pytest.raises(TypeError, match="incr\\(\\) adds an int or float, not bool"):
            await state.incr("n", True)

    async def test_incr_is_atomic_under_concurrency(self, state: GraphState) -> None:
        async def bump() -> None:
            for _ in range(20):
                await state.incr("n")

        with anyio.fail_after(10):
            async with anyio.create_task_group() as group:
                for _ in range(5):
                    group.start_soon(bump)
        assert await state.get("n") == 100

    # -- ttl -----------------------------------------------------------------------------------

    async def test_an_expired_key_reads_as_absent(self, state: GraphState) -> None:
        await state.set("temp", "soon gone", ttl=0.2)
        await state.append("recent", "x", ttl=0.2)
        assert await state.exists("temp")
        remaining = await state.ttl("temp")
        assert remaining is not None
        assert 0 < remaining <= 0.2
        await anyio.sleep(0.35)
        assert await state.get("temp", "gone") == "gone"
        assert not await state.exists("temp")
        assert await state.get("recent") is None
        assert "temp" not in await state.keys()

    async def test_overwrites_and_updates_keep_the_expiry(self, state: GraphState) -> None:
        await state.set("k", 1, ttl=100)
        await state.set("k", 2)
        await state.append("l", "a", ttl=100)
        await state.append("l", "b")
        await state.set("n", 1, ttl=100)
        await state.incr("n")
        await state.update({"u": 1}, ttl=100)
        await state.update({"u": 2})
        for key in ("k", "l", "n", "u"):
            remaining = await state.ttl(key)
            assert remaining is not None, key
            assert 90 < remaining <= 100, key

    async def test_a_new_ttl_replaces_the_old_and_persist_removes_it(
        self, state: GraphState
    ) -> None:
        await state.set("k", 1, ttl=100)
        await state.set("k", 1, ttl=5)
        remaining = await state.ttl("k")
        assert remaining is not None
        assert remaining <= 5
        assert await state.persist("k")
        assert await state.ttl("k") is None
        assert not await state.persist("k")
        assert await state.ttl("missing") is None

    async def test_a_key_set_after_expiry_has_no_leftover_expiry(self, state: GraphState) -> None:
        await state.set("k", 1, ttl=0.1)
        await anyio.sleep(0.2)
        await state.set("k", 2)
        assert await state.ttl("k") is None
        assert await state.get("k") == 2

    async def test_bad_ttls_are_refused(self, state: GraphState) -> None:
        for ttl in (0, -1, "5"):
            with pytest.raises(ValueError, match="ttl is a positive number of seconds"):
                await state.set("k", 1, ttl=ttl)  # type: ignore[arg-type]

    # -- transactions --------------------------------------------------------------------------

    async def test_transactions_make_read_modify_write_atomic(self, state: GraphState) -> None:
        async def add_one(tx: StateTransaction) -> int:
            count = await tx.get("count", 0)
            await anyio.lowlevel.checkpoint()  # let the other transactions interleave
            tx.set("count", count + 1)
            return int(count) + 1

        async def worker() -> None:
            for _ in range(10):
                await state.transaction(add_one)

        with anyio.fail_after(20):
            async with anyio.create_task_group() as group:
                for _ in range(5):
                    group.start_soon(worker)
        assert await state.get("count") == 50

    async def test_a_transaction_reads_its_own_writes_and_returns_its_result(
        self, state: GraphState
    ) -> None:
        await state.set("old", 1)

        async def move(tx: StateTransaction) -> str:
            value = await tx.get("old")
            tx.set("new", value)
            tx.delete("old")
            assert await tx.get("new") == 1
            assert not await tx.exists("old")
            return "moved"

        assert await state.transaction(move) == "moved"
        assert (await state.get("new"), await state.exists("old")) == (1, False)

    async def test_a_transaction_reads_what_is_stored_and_what_is_not(
        self, state: GraphState
    ) -> None:
        await state.set("present", 0)
        await state.append("items", "a")

        async def look(tx: StateTransaction) -> tuple[bool, bool, bool, Any, Any]:
            return (
                await tx.exists("present"),
                await tx.exists("items"),
                await tx.exists("absent"),
                await tx.get("present"),
                await tx.get("absent", "default"),
            )

        assert await state.transaction(look) == (True, True, False, 0, "default")

    async def test_a_transaction_that_keeps_conflicting_gives_up(self, state: GraphState) -> None:
        runs = 0

        async def contested(tx: StateTransaction) -> None:
            nonlocal runs
            runs += 1
            value = await tx.get("k", 0)
            await state.set("k", value + 100)  # someone else writes the key meanwhile
            tx.set("k", value + 1)

        with pytest.raises(StateConflict, match="changed 3 times in a row"):
            await state.transaction(contested, max_retries=3)
        assert runs == 3
        assert await state.get("k") == 300

    # -- snapshots -----------------------------------------------------------------------------

    async def test_a_snapshot_restores_values_lists_and_expiries(self, state: GraphState) -> None:
        await state.set("plain", {"a": 1})
        await state.append("list", 1)
        await state.append("list", 2)
        await state.set("temp", "t", ttl=100)
        taken = await state.snapshot()
        await state.delete("plain")
        await state.set("extra", 1)
        await state.restore(taken)
        assert await state.keys() == ["list", "plain", "temp"]
        assert await state.get("list") == [1, 2]
        assert await state.append("list", 3) == 3
        remaining = await state.ttl("temp")
        assert remaining is not None
        assert 90 < remaining <= 100

    # -- typed views ---------------------------------------------------------------------------

    async def test_a_typed_view_checks_values_both_ways(self, state: GraphState) -> None:
        profiles = state.typed(_Profile)
        alice: _Profile = {"user_id": "u1", "age": 30, "tags": ["admin"]}
        await profiles.set("current_user", alice)
        assert await profiles.get("current_user") == alice
        assert await profiles.get("nobody") is None
        bad_values: list[tuple[Any, str]] = [
            ({"user_id": "u2", "age": 30}, r"lacks _Profile key\(s\) \['tags'\]"),
            ({"user_id": "u2", "age": 30, "tags": [], "x": 1}, "does not declare"),
            ({"user_id": "u2", "age": "30", "tags": []}, r"\['age'\] is str, expected int"),
            ({"user_id": "u2", "age": True, "tags": []}, r"\['age'\] is bool, expected int"),
            ({"user_id": "u2", "age": 3, "tags": [1]}, r"\['tags'\]\[0\] is int, expected str"),
            ("not a dict", "expected a _Profile dict"),
        ]
        for value, message in bad_values:
            with pytest.raises(TypeError, match=message):
                await profiles.set("someone", value)
        assert not await profiles.exists("someone")
        await state.set("current_user", {"user_id": "u1"})  # an untyped write
        with pytest.raises(TypeError, match="lacks _Profile key"):
            await profiles.get("current_user")

    async def test_typed_needs_a_typeddict(self, state: GraphState) -> None:
        with pytest.raises(TypeError, match="typed\\(\\) takes a TypedDict class"):
            state.typed(dict)
