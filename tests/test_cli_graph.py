"""``spark-nodes graph``: the diagram of a graph, in three formats, with live counts on Redis.

Most tests call :func:`spark_nodes.cli.main` in-process and compare what it printed with
what the graph's own ``to_mermaid``/``to_dot``/``to_json`` give. One runs the installed
console script in a directory holding the graph's module, which must be importable from
there as it is with ``python -m spark_nodes``.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
import structlog

from spark_nodes.cli import main
from tests import cli_run_graphs
from tests.cli_process import Command
from tests.redis_support import new_namespace, open_raw_client, purge

TARGET = "tests.cli_run_graphs:pipeline"


@pytest.fixture(autouse=True)
def clean_slate(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No ``$SPARK_NODES_REDIS_URL``; structlog as it was, after the test."""
    monkeypatch.delenv("SPARK_NODES_REDIS_URL", raising=False)
    config = structlog.get_config()
    yield
    structlog.configure(**config)


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize("diagram", ["mermaid", "dot", "json"])
def test_each_format_prints_the_graphs_own_diagram(
    diagram: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = cli(capsys, "graph", TARGET, "--format", diagram)
    expected = getattr(cli_run_graphs.pipeline(), f"to_{diagram}")()
    assert (status, out, err) == (0, expected, "")


def test_mermaid_is_the_default(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = cli(capsys, "graph", TARGET)
    assert status == 0
    assert out == cli_run_graphs.pipeline().to_mermaid()


def test_json_names_the_nodes_and_edges(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = cli(capsys, "graph", TARGET, "--format", "json")
    document = json.loads(out)
    assert status == 0
    assert document["graph"] == "cli-run"
    assert [n["id"] for n in document["nodes"]] == ["parse", "double", "keep"]
    assert [e["name"] for e in document["edges"]] == ["parse->double", "double->keep"]
    assert "received" not in document["nodes"][0]  # no counts without --stats


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("tests.cli_run_graphs", "expected MODULE:GRAPH"),
        ("tests.nowhere:graph", "No module named 'tests.nowhere'"),
        ("tests.cli_run_graphs:KEPT", "is not a Graph"),
    ],
)
def test_a_bad_target_exits_1_with_one_line(
    target: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = cli(capsys, "graph", target)
    assert (status, out) == (1, "")
    assert err.startswith("spark-nodes graph: ")
    assert message in err
    assert len(err.splitlines()) == 1


def test_an_unknown_format_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["graph", TARGET, "--format", "svg"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'svg'" in capsys.readouterr().err


def test_stats_of_an_in_memory_graph_need_a_redis_url(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = cli(capsys, "graph", TARGET, "--stats")
    assert (status, out) == (2, "")
    assert err == "spark-nodes graph: graph 'cli-run' is in memory: --stats needs --redis URL\n"


@pytest.mark.redis
def test_stats_on_redis_add_the_counts_of_the_graphs_run_there(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    namespace = new_namespace()
    where = ["--redis", redis_url, "--namespace", namespace]
    try:
        ran = cli(capsys, "run", TARGET, "--input", '{"n": 1}', *where, "--log-level", "error")
        status, out, err = cli(capsys, "graph", TARGET, "--format", "json", "--stats", *where)
    finally:
        anyio.run(_purge, redis_url, namespace, backend="asyncio")
    assert ran[0] == 0, ran
    assert (status, err) == (0, "")
    document = json.loads(out)
    assert [(n["id"], n["processed"]) for n in document["nodes"]] == [
        ("parse", 1), ("double", 1), ("keep", 1),
    ]  # fmt: skip
    assert [e["sent"] for e in document["edges"]] == [1, 1]


async def _purge(url: str, namespace: str) -> None:
    async with open_raw_client(url) as client:
        await purge(client, namespace)


MODULE = """\
from spark_nodes import Graph, Node

a = Node(id="a")
a >> Node(id="b")
g = Graph(a, name="from-the-current-directory")
"""


def test_the_console_script_imports_a_graph_module_from_the_current_directory(
    tmp_path: Path,
) -> None:
    """A regression test: console scripts do not put the current directory on sys.path."""
    script = Path(sys.executable).with_name("spark-nodes")
    if not script.exists():
        found = shutil.which("spark-nodes")
        if found is None:
            pytest.skip("the spark-nodes console script is not installed")
        script = Path(found)
    (tmp_path / "mod.py").write_text(MODULE)
    with Command("graph", "mod:g", "--format", "json", cwd=tmp_path, program=[str(script)]) as c:
        status = c.finish()
    assert status == 0, c.report()
    document = json.loads(c.out)
    assert document["graph"] == "from-the-current-directory"
    assert [n["id"] for n in document["nodes"]] == ["a", "b"]
