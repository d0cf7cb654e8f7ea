from __future__ import annotations

import multiprocessing

import anyio
import pytest

from spark_nodes.channels import AckCallback, ChannelMessage

pytestmark = pytest.mark.anyio


def _counting_ack() -> tuple[list[int], AckCallback]:
    calls: list[int] = []

    async def ack() -> None:
        calls.append(1)

    return calls, ack


def test_constructor_matches_the_seed_dataclass() -> None:
    async def on_processed() -> None:
        return None

    positional = ChannelMessage({"a": 1}, {"k": "v"}, on_processed, True)
    assert positional.payload == {"a": 1}
    assert positional.metadata == {"k": "v"}
    assert positional.ack is not None
    assert positional.is_shutdown is True

    defaults = ChannelMessage(payload="x")
    assert defaults.metadata == {}
    assert defaults.ack is None
    assert defaults.is_shutdown is False


def test_metadata_is_created_once_and_kept() -> None:
    message = ChannelMessage(1)
    message.metadata["trace_id"] = "abc"
    assert message.metadata == {"trace_id": "abc"}

    given = {"k": 1}
    assert ChannelMessage(1, given).metadata is given


def test_bad_constructor_arguments_are_named() -> None:
    with pytest.raises(TypeError, match="metadata must be a dict, not list"):
        ChannelMessage(1, metadata=[("k", "v")])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="ack must be an async callable or None, not str"):
        ChannelMessage(1, ack="done")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="id must be a non-empty str"):
        ChannelMessage(1, id="")
    message = ChannelMessage(1)
    with pytest.raises(TypeError, match="metadata must be a dict, not int"):
        message.metadata = 3  # type: ignore[assignment]
    with pytest.raises(TypeError, match="ack must be an async callable or None, not int"):
        message.ack = 3  # type: ignore[assignment]


def test_id_is_generated_lazily_stable_and_unique() -> None:
    messages = [ChannelMessage(i) for i in range(10_000)]
    ids = [m.id for m in messages]
    assert len(set(ids)) == len(ids)
    assert all(m.id == i for m, i in zip(messages, ids, strict=True))
    assert ChannelMessage(1, id="given").id == "given"


def _child_ids(queue: multiprocessing.Queue[list[str]]) -> None:
    queue.put([ChannelMessage(i).id for i in range(100)])


def test_a_forked_child_does_not_reuse_the_parents_ids() -> None:
    parent = [ChannelMessage(i).id for i in range(100)]
    context = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue[list[str]] = context.Queue()
    child = context.Process(target=_child_ids, args=(queue,))
    child.start()
    child_ids = queue.get(timeout=30)
    child.join(timeout=30)
    assert not set(parent) & set(child_ids)
    assert parent[0].split("-")[0] != child_ids[0].split("-")[0]


def test_clone_merges_metadata_and_never_touches_the_original() -> None:
    original = ChannelMessage({"old": 1}, metadata={"trace_id": "abc", "keep": 1})
    cloned = original.clone(payload={"new": "data"}, metadata={"additional": "info", "keep": 2})

    assert cloned.payload == {"new": "data"}
    assert cloned.metadata == {"trace_id": "abc", "keep": 2, "additional": "info"}
    assert original.payload == {"old": 1}
    assert original.metadata == {"trace_id": "abc", "keep": 1}
    cloned.metadata["later"] = True
    assert "later" not in original.metadata


def test_clone_can_set_the_payload_to_none() -> None:
    assert ChannelMessage({"a": 1}).clone(payload=None).payload is None
    assert ChannelMessage({"a": 1}).clone().payload == {"a": 1}


def test_clone_sets_or_keeps_the_shutdown_flag() -> None:
    assert ChannelMessage(1).clone(is_shutdown=True).is_shutdown is True
    assert ChannelMessage(1, is_shutdown=True).clone().is_shutdown is True


def test_clone_keeps_id_and_ack() -> None:
    _, ack = _counting_ack()
    original = ChannelMessage(1, ack=ack)
    cloned = original.clone(payload=2)
    assert cloned.id == original.id
    assert cloned.ack is original.ack


def test_clone_rejects_non_dict_metadata() -> None:
    with pytest.raises(TypeError, match="metadata must be a dict"):
        ChannelMessage(1).clone(metadata="x")  # type: ignore[arg-type]


async def test_acking_a_clone_acks_the_original_once() -> None:
    calls, ack = _counting_ack()
    original = ChannelMessage(1, ack=ack)
    cloned = original.clone()
    assert cloned.ack is not None
    await cloned.ack()
    assert original.ack is not None
    await original.ack()
    assert calls == [1]
    assert original.acked
    assert cloned.acked


async def test_calling_ack_twice_runs_the_callback_once() -> None:
    calls, ack = _counting_ack()
    message = ChannelMessage(1, ack=ack)
    assert not message.acked
    assert message.ack is not None
    await message.ack()
    await message.ack()
    assert calls == [1]
    assert message.acked


async def test_concurrent_acks_run_the_callback_once() -> None:
    calls: list[int] = []
    release = anyio.Event()

    async def slow_ack() -> None:
        calls.append(1)
        await release.wait()

    message = ChannelMessage(1, ack=slow_ack)
    ack = message.ack
    assert ack is not None

    async def first_ack() -> None:
        await ack()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(first_ack)
            await anyio.wait_all_tasks_blocked()
            await ack()  # returns at once: the first call is running
            release.set()
    assert calls == [1]


async def test_an_ack_that_failed_can_be_retried() -> None:
    attempts: list[int] = []

    async def flaky() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("lost")

    message = ChannelMessage(1, ack=flaky)
    ack = message.ack
    assert ack is not None
    with pytest.raises(ConnectionError):
        await ack()
    acked_after_failure = message.acked
    await ack()
    assert (acked_after_failure, message.acked) == (False, True)
    assert attempts == [1, 1]


def test_a_message_without_ack_is_not_acked() -> None:
    assert ChannelMessage(1).acked is False


def test_equality_compares_the_seed_fields_not_the_id() -> None:
    async def ack() -> None:
        return None

    assert ChannelMessage({"a": 1}) == ChannelMessage({"a": 1})
    assert ChannelMessage(1, {}) == ChannelMessage(1)
    assert ChannelMessage(1) != ChannelMessage(2)
    assert ChannelMessage(1, {"k": 1}) != ChannelMessage(1, {"k": 2})
    assert ChannelMessage(1, is_shutdown=True) != ChannelMessage(1)
    wrapped = ChannelMessage(1, ack=ack)
    assert wrapped.ack is not None  # now wrapped for idempotence
    assert wrapped == ChannelMessage(1, ack=ack)
    assert ChannelMessage(1) != "ChannelMessage(1)"


def test_messages_are_unhashable_like_the_seed_dataclass() -> None:
    with pytest.raises(TypeError):
        hash(ChannelMessage(1))


def test_repr_shows_the_fields() -> None:
    text = repr(ChannelMessage({"a": 1}, {"k": "v"}, id="m-1"))
    assert text == (
        "ChannelMessage(payload={'a': 1}, metadata={'k': 'v'}, ack=None, "
        "is_shutdown=False, id='m-1')"
    )


class _SettledElsewhere:
    """An ack callback whose work a batch settled: it says so with ``done``."""

    def __init__(self) -> None:
        self.done = False
        self.calls = 0

    async def __call__(self) -> None:
        self.calls += 1
        self.done = True


async def test_an_ack_callback_that_says_it_is_done_counts_as_acked_and_is_not_called() -> None:
    callback = _SettledElsewhere()
    message = ChannelMessage("x", ack=callback)
    assert not message.acked
    callback.done = True  # settled another way (a commit)
    assert message.acked
    ack = message.ack
    assert ack is not None
    await ack()
    assert callback.calls == 0


async def test_an_ack_callback_not_done_yet_is_called_once() -> None:
    callback = _SettledElsewhere()
    message = ChannelMessage("x", ack=callback)
    ack = message.ack
    assert ack is not None
    await ack()
    await ack()
    assert callback.calls == 1
    assert message.acked
