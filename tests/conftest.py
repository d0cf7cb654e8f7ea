"""Shared fixtures: anyio backends for in-memory tests; Redis clients and graphs.

The private Redis server (``redis_url``, ``redis_server``) comes from spark_nodes' own pytest
plugin (``spark_nodes.testing.plugin``), as it would in a user's project.

The Redis fixtures (``raw``, ``channels``, ``cluster``) are asyncio only, like redis-py:
modules that use them are marked ``pytest.mark.redis``, which runs them on asyncio only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from spark_nodes._redis_client import RedisClient
from tests.redis_support import ChannelFactory, Cluster, new_namespace, open_raw_client, purge


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """In-memory code claims both anyio backends, so its tests run on both."""
    backend: str = request.param
    return backend


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``redis`` run on asyncio only (redis-py is asyncio only): their trio
    variants are deselected. With ``--spark-redis-cluster``, so are tests marked
    ``single_server`` (they look at one server's connections or process)."""
    on_cluster = config.getoption("--spark-redis-cluster")
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        trio = callspec is not None and callspec.params.get("anyio_backend") == "trio"
        drop = (trio and item.get_closest_marker("redis")) or (
            on_cluster and item.get_closest_marker("single_server")
        )
        (dropped if drop else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[RedisClient]:
    """A plain redis-py client on the test server: what another program would use."""
    async with open_raw_client(redis_url) as client:
        yield client


@pytest.fixture
async def channels(redis_url: str, raw: RedisClient) -> AsyncIterator[ChannelFactory]:
    """Makes RedisChannels on a fresh namespace; closes them and deletes its keys after."""
    factory = ChannelFactory(redis_url, new_namespace())
    yield factory
    await factory.aclose()
    await purge(raw, factory.namespace)


@pytest.fixture
async def cluster(redis_url: str, raw: RedisClient) -> AsyncIterator[Cluster]:
    """Graph objects of one Redis graph, one per simulated process; keys deleted after."""
    made = Cluster(redis_url, new_namespace())
    yield made
    await made.aclose()
    await purge(raw, made.namespace)
