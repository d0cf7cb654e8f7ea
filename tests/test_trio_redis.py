"""The Redis backend under trio: one clear error at the first call, before any I/O.

redis-py's client is asyncio only. These tests need no Redis server: the URL leads
nowhere, and the error comes before anything tries to reach it. They are not marked
``redis`` (that mark deselects trio variants).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from spark_nodes import (
    ExecutionContext,
    Graph,
    Node,
    SparkNodesError,
    Task,
    TaskType,
    UnsupportedEventLoop,
)
from spark_nodes._redis_client import require_asyncio
from spark_nodes.channels import ChannelMessage, RedisChannel
from spark_nodes.state import RedisState

pytestmark = pytest.mark.anyio

UNREACHABLE = "redis://127.0.0.1:1/0"  # nothing listens on port 1: a call must not get that far
WHY_AND_WHAT = (
    r"cannot run under trio: it talks to Redis through redis-py's asyncio client, which "
    r"needs an asyncio event loop; run the program under asyncio "
    r"\(anyio\.run\(main, backend=\"asyncio\"\)\) or keep the graph in memory"
)


@pytest.fixture
def anyio_backend() -> str:
    """Trio only: what is tested is the refusal of a loop other than asyncio."""
    return "trio"


class Echo(Node):
    def process(self, context: ExecutionContext) -> Any:
        return context.inputs.content


def redis_graph() -> Graph:
    return Graph(Echo(id="echo"), name="trio-refused", backend=UNREACHABLE)


async def raises_unsupported(call: Callable[[], Awaitable[object]]) -> str:
    with anyio.fail_after(5), pytest.raises(UnsupportedEventLoop, match=WHY_AND_WHAT) as caught:
        await call()
    return str(caught.value)


def test_unsupported_event_loop_is_a_runtime_error_of_the_family() -> None:
    assert issubclass(UnsupportedEventLoop, SparkNodesError)
    assert issubclass(UnsupportedEventLoop, RuntimeError)


async def test_graph_send_on_redis_under_trio_raises_unsupported_event_loop() -> None:
    async with redis_graph() as graph:
        message = await raises_unsupported(lambda: graph.send("echo", 1))
    assert message.startswith("send to 'node:trio-refused:echo': ")


async def test_graph_use_redis_then_send_under_trio_raises_unsupported_event_loop() -> None:
    async with Graph(Echo(id="echo"), name="trio-refused") as graph:
        graph.use_redis(UNREACHABLE)
        await raises_unsupported(lambda: graph.send("echo", 1))


async def test_graph_serve_and_run_on_redis_under_trio_raise_unsupported_event_loop() -> None:
    async with redis_graph() as graph:
        await raises_unsupported(graph.serve)
    async with redis_graph() as graph:
        await raises_unsupported(lambda: graph.run(Task(type=TaskType.LONG_RUNNING)))


async def test_graph_stats_and_shutdown_on_redis_under_trio_raise_unsupported_event_loop() -> None:
    async with redis_graph() as graph:
        await raises_unsupported(graph.stats)
        await raises_unsupported(graph.shutdown)


async def test_graph_invoke_on_redis_under_trio_raises_before_making_a_reply_stream() -> None:
    with capture_logs() as logs:
        async with redis_graph() as graph:
            message = await raises_unsupported(lambda: graph.invoke(1, timeout=1))
    assert message.startswith("invoke 'echo': ")
    assert [log for log in logs if log["log_level"] == "error"] == []  # no cleanup failure


async def test_redis_channel_send_under_trio_raises_unsupported_event_loop() -> None:
    async with RedisChannel(UNREACHABLE, "trio-refused") as channel:
        message = await raises_unsupported(lambda: channel.send(ChannelMessage(1)))
    assert message.startswith("send to 'trio-refused': ")


async def test_redis_channel_receive_under_trio_raises_unsupported_event_loop() -> None:
    async with RedisChannel(UNREACHABLE, "trio-refused") as channel:
        await raises_unsupported(channel.receive)


async def test_redis_state_get_under_trio_raises_unsupported_event_loop() -> None:
    async with RedisState(UNREACHABLE) as state:
        message = await raises_unsupported(lambda: state.get("key"))
        await raises_unsupported(lambda: state.set("key", 1))
    assert message.startswith("RedisState.get('key'): ")


async def test_closing_redis_objects_under_trio_after_an_asyncio_run_does_not_fail() -> None:
    # An asyncio run (asyncio.run, an asyncio test) leaves "no current event loop" set on
    # purpose; redis-py's close would ask asyncio for one and raise, hiding the real error.
    asyncio.set_event_loop(None)
    async with redis_graph() as graph:
        await raises_unsupported(lambda: graph.send("echo", 1))
    async with RedisChannel(UNREACHABLE, "trio-refused") as channel:
        await raises_unsupported(lambda: channel.send(ChannelMessage(1)))
    async with RedisState(UNREACHABLE) as state:
        await raises_unsupported(lambda: state.get("key"))


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_require_asyncio_lets_asyncio_through() -> None:
    require_asyncio("anything")
