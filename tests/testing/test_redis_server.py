from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import redis

from spark_nodes.testing import RedisServer, find_redis_server, open_redis_server


def test_a_private_server_answers_and_goes_away() -> None:
    with open_redis_server() as server:
        client = redis.Redis.from_url(server.url)
        assert client.ping()
        client.close()
        assert server.running
    assert not server.running


def test_data_written_with_aof_survives_a_kill_and_restart() -> None:
    with open_redis_server(appendonly=True) as server:
        client = redis.Redis.from_url(server.url)
        client.set("k", "v")
        client.config_set("appendfsync", "always")
        client.set("durable", "yes")
        client.close()
        server.kill()
        assert not server.running
        server.start()
        client = redis.Redis.from_url(server.url)
        assert client.get("durable") == b"yes"
        client.close()


def test_without_persistence_a_kill_loses_everything() -> None:
    with open_redis_server(appendonly=False) as server:
        client = redis.Redis.from_url(server.url)
        client.set("k", "v")
        client.close()
        server.kill()
        server.start()
        client = redis.Redis.from_url(server.url)
        assert client.get("k") is None
        client.close()


def test_a_server_that_cannot_start_reports_its_log() -> None:
    with tempfile.TemporaryDirectory() as directory:
        server = RedisServer(Path(directory) / "missing-dir", appendonly=False)
        with pytest.raises(RuntimeError, match="redis-server exited at start"):
            server.start()


def test_find_redis_server_honours_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPARK_NODES_REDIS_SERVER", raising=False)  # (it would win)
    monkeypatch.setenv("REDIS_SERVER", "/opt/redis/bin/redis-server")
    assert find_redis_server() == "/opt/redis/bin/redis-server"
    monkeypatch.delenv("REDIS_SERVER")
    assert Path(find_redis_server()).name == "redis-server"
