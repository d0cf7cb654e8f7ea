from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import anyio
import pytest

from spark_nodes import ExecutionContext, Node, NodeConfig, NodeMessage
from spark_nodes.channels import BaseChannel, ChannelMessage, InMemoryChannel
from spark_nodes.nodes.node import runs_default_loop

N = TypeVar("N", bound=Node)


class Worker(Node):
    async def go(self) -> None:
        while not self._stop_flag:
            message = await self.mailbox.receive()
            if message.is_shutdown:
                break


def test_a_node_without_an_id_gets_one_per_class() -> None:
    first, second = Worker(), Worker()
    assert first.id.startswith("Worker-")
    assert first.id != second.id
    assert Node(id="given").id == "given"


def test_the_default_mailbox_is_named_after_class_and_id_and_sized_by_config() -> None:
    node = Worker(id="w1", config=NodeConfig(mailbox_maxsize=7))
    assert isinstance(node.mailbox, InMemoryChannel)
    assert node.mailbox.name == "node:Worker:w1"
    assert node.mailbox.maxsize == 7


def test_a_given_mailbox_is_used_as_is() -> None:
    mailbox = InMemoryChannel(name="custom", maxsize=50)
    assert Node(mailbox=mailbox).mailbox is mailbox


@pytest.mark.parametrize(
    ("arguments", "text"),
    [
        ({"id": ""}, "node id must be a non-empty str"),
        ({"id": 3}, "node id must be a non-empty str"),
        ({"mailbox": "inbox"}, "mailbox must be a BaseChannel, not str"),
        ({"config": {"live": True}}, "config must be a NodeConfig, not dict"),
    ],
)
def test_bad_constructor_arguments_are_named(arguments: dict[str, Any], text: str) -> None:
    with pytest.raises(TypeError, match=text):
        Node(**arguments)


def test_unknown_constructor_arguments_are_refused() -> None:
    with pytest.raises(TypeError):
        Node(name="x")  # type: ignore[call-arg]


def test_a_subclass_that_only_overrides_go_can_be_instantiated() -> None:
    node = Worker()
    assert node.config == NodeConfig()
    assert node._stop_flag is False


def test_the_default_process_passes_the_input_through() -> None:
    node = Node()
    inputs = NodeMessage({"x": 1})
    assert node.process(ExecutionContext(inputs, node)) is inputs


def test_stop_sets_the_stop_flag() -> None:
    node = Worker()
    node.stop()
    assert node._stop_flag is True


def test_plain_nodes_take_extra_attributes() -> None:
    node = Node()
    node.note = "attributes beyond the framework's still work"  # type: ignore[attr-defined]
    assert node.note.startswith("attributes")  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_the_default_loop_outside_a_graph_runs_the_node_as_an_actor() -> None:
    alone = Node(id="alone")  # more in tests/nodes/test_actor.py
    await alone.tell("hello")
    await alone.mailbox.send(ChannelMessage(None, is_shutdown=True))
    with anyio.fail_after(5):
        await alone.go()  # handles "hello", then ends on the shutdown
    assert alone.last_output == "hello"


def test_repr_names_class_and_id() -> None:
    assert repr(Worker(id="w")) == "<Worker id='w'>"


def test_every_node_gets_a_fresh_state_dict() -> None:
    first, second = Node(), Node()
    first.state["k"] = 1
    assert second.state == {}


def test_mailbox_attribute_is_a_channel() -> None:
    assert isinstance(Node().mailbox, BaseChannel)


class LoggedGo(Node):
    async def go(self) -> None:
        try:
            await super().go()
        finally:
            pass


class ExplicitSuperGo(LoggedGo):
    async def go(self) -> None:
        await super(ExplicitSuperGo, self).go()  # noqa: UP008 - the form under test


class WrapsACustomLoop(Worker):
    async def go(self) -> None:
        await super().go()  # reaches Worker.go: a loop of its own


class CallsAnotherSuperMethod(Node):
    async def go(self) -> None:
        super().on_drained  # noqa: B018 - loads an attribute of super(), not go
        await anyio.lowlevel.checkpoint()


def _logged(
    function: Callable[[N], Coroutine[Any, Any, None]],
) -> Callable[[N], Coroutine[Any, Any, None]]:
    @functools.wraps(function)
    async def wrapper(node: N) -> None:
        await function(node)

    return wrapper


class DecoratedGo(Node):
    @_logged  # judged by the function it wraps (functools.wraps)
    async def go(self) -> None:
        await super().go()


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (Node, True),
        (LoggedGo, True),
        (ExplicitSuperGo, True),
        (DecoratedGo, True),
        (Worker, False),
        (WrapsACustomLoop, False),
        (CallsAnotherSuperMethod, False),
    ],
)
def test_runs_default_loop_sees_a_go_that_only_wraps_super_go(
    kind: type[Node], expected: bool
) -> None:
    assert runs_default_loop(kind()) is expected
