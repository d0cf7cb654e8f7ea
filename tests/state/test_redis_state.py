from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import pytest
from anyio.abc import SocketStream
from redis.asyncio import Redis

from spark_nodes._redis_client import ConnectionRetry
from spark_nodes.channels.codec import pack
from spark_nodes.errors import BackendUnavailable, MessageEncodeError
from spark_nodes.state import GraphState, MemoryState, RedisState, StateTransaction
from spark_nodes.testing import open_redis_server
from spark_nodes.testing.state_contract import StateContract
from tests.redis_support import FAST_RETRY, new_namespace, open_raw_client, purge, raw_client

pytestmark = [pytest.mark.anyio, pytest.mark.redis]  # redis-py: asyncio only


def state_key(namespace: str, key: str, graph: str = "default") -> str:
    """The Redis key of a state key: the layout the module documents."""
    return f"{namespace}:{{{graph}}}#state:{key}"


@contextlib.asynccontextmanager
async def open_states(url: str, count: int, **options: Any) -> AsyncIterator[list[RedisState]]:
    """``count`` states on one fresh namespace, each with its own client: processes."""
    namespace = options.pop("namespace", new_namespace())
    states = [RedisState(url, namespace=namespace, **options) for _ in range(count)]
    try:
        yield states
    finally:
        for state in states:
            await state.aclose()
        async with open_raw_client(url) as client:
            await purge(client, namespace)


class TestRedisState(StateContract):
    @pytest.fixture
    async def state(self, redis_url: str) -> AsyncIterator[GraphState]:
        async with open_states(redis_url, 1) as (state,):
            yield state


class _Results:
    def __init__(self, outputs: dict[str, Any]) -> None:
        self.outputs = outputs

    def result_of(self, node_id: str) -> tuple[bool, Any]:
        return (node_id in self.outputs, self.outputs.get(node_id))

    def result_ids(self) -> list[str]:
        return list(self.outputs)


# -- what is stored in Redis ---------------------------------------------------------------


async def test_values_are_msgpack_bytes_under_namespaced_hash_tagged_keys(redis_url: str) -> None:
    namespace = new_namespace()
    async with (
        open_states(redis_url, 1, namespace=namespace, graph="orders") as (state,),
        open_raw_client(redis_url) as raw,
    ):
        await state.set("profile", {"name": "ada", "tags": ("x",)})
        await state.append("log", "one")
        await state.prepend("log", "zero")
        prefix = f"{namespace}:{{orders}}#state:"
        assert await raw.get(prefix + "profile") == pack({"name": "ada", "tags": ["x"]})
        assert await raw.type(prefix + "log") == b"list"
        assert await raw.lrange(prefix + "log", 0, -1) == [pack("zero"), pack("one")]
        assert sorted(await raw.keys(f"{namespace}:{{orders}}#state:*")) == [
            (prefix + "log").encode(),
            (prefix + "profile").encode(),
        ]


async def test_incr_stores_what_msgpack_packs(redis_url: str) -> None:
    namespace = new_namespace()
    async with (
        open_states(redis_url, 1, namespace=namespace) as (state,),
        open_raw_client(redis_url) as raw,
    ):
        await state.incr("n", 300)
        assert await raw.get(state_key(namespace, "n")) == pack(300)
        await state.incr("n", 0.5)
        assert await raw.get(state_key(namespace, "n")) == pack(300.5)


async def test_a_list_set_whole_becomes_a_redis_list_and_keeps_its_expiry_when_appended_to(
    redis_url: str,
) -> None:
    namespace = new_namespace()
    async with (
        open_states(redis_url, 1, namespace=namespace) as (state,),
        open_raw_client(redis_url) as raw,
    ):
        await state.set("l", [1, {"a": 2}], ttl=100)
        assert await state.prepend("l", 0) == 3
        assert await raw.type(state_key(namespace, "l")) == b"list"
        assert await state.get("l") == [0, 1, {"a": 2}]
        remaining = await state.ttl("l")
        assert remaining is not None
        assert 90 < remaining <= 100


async def test_a_key_of_a_foreign_redis_type_is_reported_not_misread(redis_url: str) -> None:
    namespace = new_namespace()
    async with (
        open_states(redis_url, 1, namespace=namespace) as (state,),
        open_raw_client(redis_url) as raw,
    ):
        await raw.hset(state_key(namespace, "h"), "field", "value")
        with pytest.raises(TypeError, match="holds a Redis hash, which RedisState does not write"):
            await state.get("h")
        with pytest.raises(TypeError, match="holds a Redis hash"):
            await state.append("h", 1)
        with pytest.raises(TypeError, match="holds a Redis hash"):
            await state.incr("h")


# -- several processes ----------------------------------------------------------------------


async def test_two_states_on_one_namespace_see_each_others_writes(redis_url: str) -> None:
    async with open_states(redis_url, 2) as (first, second):
        await first.set("config", {"batch": 100}, ttl=100)
        await second.append("log", "from second")
        await first.append("log", "from first")
        assert await second.get("config") == {"batch": 100}
        assert await first.get("log") == ["from second", "from first"]
        assert await second.keys() == ["config", "log"]
        assert await second.delete("config")
        assert not await first.exists("config")


async def test_fifty_concurrent_incr_tasks_on_two_clients_give_the_exact_total(
    redis_url: str,
) -> None:
    async with open_states(redis_url, 2) as states:

        async def bump(state: RedisState) -> None:
            for _ in range(10):
                await state.incr("hits")

        with anyio.fail_after(20):
            async with anyio.create_task_group() as group:
                for index in range(50):
                    group.start_soon(bump, states[index % 2])
        assert await states[0].get("hits") == 500


async def test_concurrent_appends_onto_a_list_set_whole_lose_nothing(redis_url: str) -> None:
    async with open_states(redis_url, 2) as states:
        await states[0].set("items", ["seed"])

        async def add(state: RedisState, index: int) -> None:
            await state.append("items", index)

        with anyio.fail_after(20):
            async with anyio.create_task_group() as group:
                for index in range(50):
                    group.start_soon(add, states[index % 2], index)
        items = await states[1].get("items")
        assert items[0] == "seed"
        assert sorted(items[1:]) == list(range(50))


async def test_concurrent_transactions_on_two_clients_give_the_exact_total(redis_url: str) -> None:
    async with open_states(redis_url, 2) as states:

        async def add_one(tx: StateTransaction) -> None:
            count = await tx.get("count", 0)
            await anyio.lowlevel.checkpoint()  # let the others read the same count
            tx.set("count", count + 1)

        async def worker(state: RedisState) -> None:
            for _ in range(10):
                await state.transaction(add_one, max_retries=1000)

        with anyio.fail_after(30):
            async with anyio.create_task_group() as group:
                for index in range(10):
                    group.start_soon(worker, states[index % 2])
        assert await states[0].get("count") == 100


# -- exact numbers ----------------------------------------------------------------------------

EDGE_INTS = [0, 1, 127, 128, 255, 256, 65535, 65536, 2**31, 2**32 - 1, 2**32, 2**53 + 1]
EDGE_INTS += [2**63 - 1, 2**64 - 1, -1, -32, -33, -128, -129, -32768, -32769, -(2**31)]
EDGE_INTS += [-(2**31) - 1, -(2**53) - 1, -(2**63)]
AMOUNTS: list[int | float] = [1, -1, 2**32, -(2**32), 2**63, -(2**63), 2**64 - 1, 2**70]
AMOUNTS += [-(2**70), 10**400, 0.5, -0.25, -0.0]


@pytest.mark.parametrize("start", [*EDGE_INTS, 1.5, -0.0, 2.0**70])
async def test_incr_adds_exactly_as_python_does(redis_url: str, start: int | float) -> None:
    namespace = new_namespace()
    async with (
        open_states(redis_url, 1, namespace=namespace) as (state,),
        open_raw_client(redis_url) as raw,
    ):
        for amount in AMOUNTS:
            await state.set("n", start)
            try:
                expected: Any = start + amount
                pack(expected)
            except (OverflowError, MessageEncodeError) as error:
                with pytest.raises(type(error)):
                    await state.incr("n", amount)
                assert await state.get("n") == start, "a failed incr wrote nothing"
                continue
            got = await state.incr("n", amount)
            assert (got, type(got)) == (expected, type(expected)), (start, amount)
            assert await raw.get(state_key(namespace, "n")) == pack(expected), (start, amount)


async def test_big_ints_stay_exact_through_incr(redis_url: str) -> None:
    async with open_states(redis_url, 1) as (state,):
        await state.set("big", 2**63 - 10)
        for _ in range(9):
            await state.incr("big")
        assert await state.get("big") == 2**63 - 1
        assert await state.incr("big", -(2**63 - 1) - 2**63) == -(2**63)
        with pytest.raises(MessageEncodeError, match="outside msgpack's 64-bit range"):
            await state.incr("big", -1)
        assert await state.get("big") == -(2**63)


# -- keys and namespaces --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "neighbour"),
    [("ns*", "nsX"), ("n?", "nX"), ("n[ab]", "na"), ("n\\", "n\\x"), ("n[", "n[x")],
)
async def test_glob_characters_in_names_do_not_leak_into_other_namespaces_keys(
    redis_url: str, name: str, neighbour: str
) -> None:
    tag = uuid.uuid4().hex
    pairs = [
        ({"namespace": tag + name}, {"namespace": tag + neighbour}),
        ({"namespace": tag, "graph": name}, {"namespace": tag, "graph": neighbour}),
    ]
    for mine, theirs in pairs:
        async with (
            open_states(redis_url, 1, **mine) as (state,),
            open_states(redis_url, 1, **theirs) as (other,),
        ):
            await state.set("mine", 1)
            await other.set("theirs", 2)
            assert await state.keys() == ["mine"]
            assert await other.keys() == ["theirs"]
            assert await state.snapshot() == {"mine": (pack(1), None)}


async def test_node_results_are_read_from_redis_and_from_the_bound_source(
    redis_url: str,
) -> None:
    namespace = new_namespace()
    async with (
        open_states(redis_url, 1, namespace=namespace, graph="g") as (state,),
        open_raw_client(redis_url) as raw,
    ):
        await raw.set(f"{namespace}:{{g}}#result:remote", pack({"rows": [1, 2]}))
        state.bind_results(_Results({"local": (1, 2), "remote": "shadowed"}))
        assert await state.get("remote.__result__") == {"rows": [1, 2]}
        assert await state.get("local.__result__") == [1, 2]
        assert await state.get("missing.__result__", "none") == "none"
        assert await state.exists("remote.__result__")
        assert await state.exists("local.__result__")
        assert not await state.exists("missing.__result__")
        await state.set("plain", 1)
        assert await state.keys() == ["local.__result__", "plain", "remote.__result__"]
        assert set(await state.snapshot()) == {"plain"}
        with pytest.raises(ValueError, match="is a node's result"):
            await state.delete("remote.__result__")
        with pytest.raises(ValueError, match="is a node's result"):
            await state.append("remote.__result__", 1)

        async def read_result(tx: StateTransaction) -> Any:
            return await tx.get("remote.__result__")

        assert await state.transaction(read_result) == {"rows": [1, 2]}
        state.bind_results(None)
        assert await state.keys() == ["plain", "remote.__result__"]


# -- snapshots across backends ------------------------------------------------------------


async def fill(state: GraphState) -> None:
    await state.set("plain", {"a": [1, 2.5, None]})
    await state.set("whole", ["x", b"y"])
    await state.append("log", "one")
    await state.append("log", {"two": 2})
    await state.prepend("log", 0)
    await state.set("empty", [])
    await state.incr("n", 2**63 - 1)


async def test_a_snapshot_has_the_shape_memory_state_gives_and_restores_across_backends(
    redis_url: str,
) -> None:
    memory = MemoryState()
    await fill(memory)
    async with open_states(redis_url, 2) as (state, other):
        await fill(state)
        taken = await state.snapshot()
        assert taken == await memory.snapshot()

        restored = MemoryState()
        await restored.restore(taken)
        assert await restored.snapshot() == taken

        await other.set("stale", 1)
        await other.restore(await memory.snapshot())
        assert await other.keys() == sorted(taken)
        for key in taken:
            assert await other.get(key) == await memory.get(key), key
        assert await other.append("empty", 1) == 1
        assert await other.append("log", 3) == 4


# -- clients --------------------------------------------------------------------------------


@pytest.mark.single_server
async def test_aclose_leaves_a_shared_client_open(redis_url: str) -> None:
    client = raw_client(redis_url)
    try:
        before = await client.client_id()
        namespace = new_namespace()
        async with RedisState(client, namespace=namespace) as state:
            await state.set("k", 1)
            assert repr(state) == f"<RedisState namespace={namespace!r} graph='default'>"
        assert await client.client_id() == before  # the same connection, never closed
        await purge(client, namespace)
    finally:
        await client.aclose()


@pytest.mark.single_server
async def test_aclose_closes_a_client_the_state_opened(redis_url: str) -> None:
    state = RedisState(redis_url, namespace=new_namespace())
    await state.get("k")
    assert isinstance(state._client, Redis)
    pool = state._client.connection_pool
    # The connection get() used: the pool hands it back (redis-py leaves this unannotated).
    connection = await pool.get_connection()  # type: ignore[no-untyped-call]
    await pool.release(connection)
    assert connection.is_connected
    await state.aclose()
    assert not connection.is_connected


async def test_bad_constructor_arguments_are_refused_clearly(redis_url: str) -> None:
    with pytest.raises(TypeError, match="namespace must be a non-empty str"):
        RedisState(redis_url, namespace="")
    with pytest.raises(TypeError, match="graph must be a non-empty str"):
        RedisState(redis_url, graph=7)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"graph 'a\{b' contains a brace"):
        RedisState(redis_url, graph="a{b")
    with pytest.raises(ValueError, match=r"namespace 'x\}' contains a brace"):
        RedisState(redis_url, namespace="x}")
    with pytest.raises(
        TypeError, match=r"a Redis URL \(str\), a redis\.asyncio\.Redis or a RedisCluster"
    ):
        RedisState(6379)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="retry must be a ConnectionRetry"):
        RedisState(redis_url, retry=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="scheme"):
        RedisState("http://localhost:6379")
    client = raw_client(redis_url, decode_responses=True)
    try:
        with pytest.raises(ValueError, match="decode_responses=False"):
            RedisState(client)
    finally:
        await client.aclose()


# -- an unreachable server, lost replies ------------------------------------------------------


async def test_a_server_that_is_down_raises_backend_unavailable_until_it_is_back() -> None:
    retry = ConnectionRetry(attempts=2, initial_delay=0.01)
    with open_redis_server(appendonly=False) as server:
        async with RedisState(server.url, retry=retry) as state:
            await state.append("log", "before")
            server.stop()
            with anyio.fail_after(10):
                with pytest.raises(BackendUnavailable, match=r"RedisState.get\('log'\).*2 tries"):
                    await state.get("log")
                with pytest.raises(BackendUnavailable):
                    await state.append("log", "while down")
                with pytest.raises(BackendUnavailable):
                    await state.keys()
            server.start()  # empty: no persistence, and no scripts loaded
            with anyio.fail_after(10):
                assert await state.append("log", "after") == 1
                assert await state.get("log") == ["after"]
                assert await state.incr("n") == 1


class CuttingProxy:
    """A TCP proxy to Redis that can drop a reply together with its connection.

    That is a lost reply: the request reached the server and was applied, the client sees
    its connection die and cannot know.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.armed = False
        self.cuts = 0

    async def handle(self, client: SocketStream) -> None:
        async with (
            client,
            await anyio.connect_tcp(self.host, self.port) as server,
            anyio.create_task_group() as group,
        ):

            async def upstream() -> None:
                with contextlib.suppress(anyio.BrokenResourceError):
                    async for chunk in client:
                        await server.send(chunk)
                group.cancel_scope.cancel()

            async def downstream() -> None:
                with contextlib.suppress(anyio.BrokenResourceError):
                    async for chunk in server:
                        if self.armed:
                            self.armed = False
                            self.cuts += 1
                            break
                        await client.send(chunk)
                group.cancel_scope.cancel()

            group.start_soon(upstream)
            group.start_soon(downstream)


@contextlib.asynccontextmanager
async def open_cutting_proxy(redis_url: str) -> AsyncIterator[tuple[CuttingProxy, str]]:
    parts = urlsplit(redis_url)
    proxy = CuttingProxy(parts.hostname or "127.0.0.1", parts.port or 6379)
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
    async with listener, anyio.create_task_group() as group:
        group.start_soon(listener.serve, proxy.handle)
        try:
            yield proxy, urlunsplit(parts._replace(netloc=netloc))
        finally:
            group.cancel_scope.cancel()


async def lose_one_reply(
    proxy: CuttingProxy, call: Callable[[], Awaitable[Any]], arm: bool = True
) -> Any:
    proxy.armed = arm
    with anyio.fail_after(10):
        result = await call()
    assert proxy.cuts == 1, "the reply was not lost: the test proved nothing"
    proxy.cuts = 0
    return result


@pytest.mark.single_server  # a proxy in front of one server
async def test_a_push_or_incr_whose_reply_is_lost_is_applied_once(redis_url: str) -> None:
    namespace = new_namespace()
    async with (
        open_cutting_proxy(redis_url) as (proxy, url),
        open_states(url, 1, namespace=namespace, retry=FAST_RETRY) as (state,),
        open_states(redis_url, 1, namespace=namespace) as (direct,),
    ):
        await state.append("warm-up", 0)  # connected, and every script loaded
        await state.incr("warm-up-n")
        assert await lose_one_reply(proxy, lambda: state.append("log", "a")) == 1
        assert await lose_one_reply(proxy, lambda: state.prepend("log", "b")) == 2
        assert await lose_one_reply(proxy, lambda: state.incr("n", 5)) == 5
        assert await direct.get("log") == ["b", "a"]
        assert await direct.get("n") == 5


@pytest.mark.single_server  # a proxy in front of one server
async def test_a_transaction_whose_commit_reply_is_lost_is_applied_once(redis_url: str) -> None:
    namespace = new_namespace()
    async with (
        open_cutting_proxy(redis_url) as (proxy, url),
        open_states(url, 1, namespace=namespace, retry=FAST_RETRY) as (state,),
        open_states(redis_url, 1, namespace=namespace) as (direct,),
    ):
        await direct.set("count", 41)
        runs = 0

        async def add_one(tx: StateTransaction) -> int:
            nonlocal runs
            runs += 1
            count = int(await tx.get("count"))
            if runs == 1:
                proxy.armed = True  # the next reply on this connection is the commit's
            tx.set("count", count + 1)
            return count + 1

        assert await lose_one_reply(proxy, lambda: state.transaction(add_one), arm=False) == 42
        assert await direct.get("count") == 42
        assert runs == 1, "the lost commit was found applied, not run again"
