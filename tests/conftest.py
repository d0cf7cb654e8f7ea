"""Shared fixtures: anyio backends for in-memory tests, a real private Redis server."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from spark_nodes.testing import open_redis_server


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """In-memory code claims both anyio backends, so its tests run on both."""
    backend: str = request.param
    return backend


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real Redis: ``$REDIS_URL`` if set, else a private server on a free port."""
    external = os.environ.get("REDIS_URL")
    if external:
        yield external
        return
    with open_redis_server() as server:
        yield server.url
