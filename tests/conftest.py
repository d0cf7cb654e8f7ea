"""Shared fixtures: anyio backends for in-memory tests; Redis clients and graphs.

The private Redis server (``redis_url``, ``redis_server``) comes from spark_nodes' own pytest
plugin (``spark_nodes.testing.plugin``), as it would in a user's project.

The Redis fixtures (``raw``, ``channels``, ``cluster``) are asyncio only, like redis-py:
modules that use them pin ``anyio_backend`` to ``"asyncio"``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from tests.redis_support import ChannelFactory, Cluster, new_namespace, open_raw_client, purge


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """In-memory code claims both anyio backends, so its tests run on both."""
    backend: str = request.param
    return backend


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[Redis]:
    """A plain redis-py client on the test server: what another program would use."""
    async with open_raw_client(redis_url) as client:
        yield client


@pytest.fixture
async def channels(redis_url: str, raw: Redis) -> AsyncIterator[ChannelFactory]:
    """Makes RedisChannels on a fresh namespace; closes them and deletes its keys after."""
    factory = ChannelFactory(redis_url, new_namespace())
    yield factory
    await factory.aclose()
    await purge(raw, factory.namespace)


@pytest.fixture
async def cluster(redis_url: str, raw: Redis) -> AsyncIterator[Cluster]:
    """Graph objects of one Redis graph, one per simulated process; keys deleted after."""
    made = Cluster(redis_url, new_namespace())
    yield made
    await made.aclose()
    await purge(raw, made.namespace)
