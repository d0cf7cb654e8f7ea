"""``spark-nodes run``: the table it draws, the runs it makes, its errors and its signals.

The table is tested through the function that makes it (``stats_table``, ``summary``),
rendered to text at a fixed width. Runs are made in-process through
:func:`spark_nodes.cli.main` (its stdout is no terminal there, so it prints the final table
only), on the graphs of ``tests/cli_run_graphs.py``. Signals are tested on a real process
(``tests/cli_process.py``): the test waits for the line the command prints once it runs,
or for a node's log line, never for a time.
"""

from __future__ import annotations

import io
import json
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog

from spark_nodes.cli import main
from spark_nodes.cli._logging import configure_logging
from spark_nodes.cli.run import InputError, read_inputs
from spark_nodes.cli.table import DeadLetterLine, render, stats_table, summary
from spark_nodes.graphs import Graph, GraphStats, NodeStats, Timing
from tests import cli_run_graphs
from tests.cli_process import Command
from tests.redis_support import new_namespace, open_raw_client, purge

TARGET = "tests.cli_run_graphs"


@pytest.fixture(autouse=True)
def clean_slate(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No ``$SPARK_NODES_REDIS_URL``, nothing that makes rich take a pipe for a terminal;
    structlog and ``KEPT`` as they were, after the test."""
    for name in ("SPARK_NODES_REDIS_URL", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(name, raising=False)
    config = structlog.get_config()
    cli_run_graphs.KEPT.clear()
    yield
    structlog.configure(**config)
    cli_run_graphs.KEPT.clear()


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def rows(text: str) -> dict[str, list[str]]:
    """The table's rows by their first cell (node id, or ``total``): the other cells."""
    found = {}
    for line in text.splitlines():
        cells = line.split()
        if len(cells) >= 8 and cells[1].replace(".", "").isdigit():
            found[cells[0]] = cells[1:]
    return found


def node(node_id: str, **figures: Any) -> NodeStats:
    values: dict[str, Any] = {
        "received": 0, "processed": 0, "forwarded": 0, "terminal_outputs": 0,
        "failed_attempts": 0, "retried": 0, "dead_lettered": 0, "restarts": 0,
        "mailbox_depth": 0, "rate": 0.0, "process_time": None, "queue_time": None,
    }  # fmt: skip
    values.update(figures)
    return NodeStats(node_id=node_id, **values)


def snapshot(*nodes: NodeStats, running: bool = True, elapsed: float = 12.34) -> GraphStats:
    return GraphStats(
        graph="orders",
        taken_at=0.0,
        elapsed=elapsed,
        running=running,
        nodes={n.node_id: n for n in nodes},
        edges={},
    )


# -- the table ----------------------------------------------------------------------------------


def test_the_table_has_a_row_per_node_with_in_done_out_rate_mailbox_retries_and_dead() -> None:
    stats = snapshot(
        node("parse", received=10, processed=8, forwarded=8, retried=3, dead_lettered=2,
             mailbox_depth=5, rate=12.345),
        node("bill", received=8, processed=8, terminal_outputs=8, rate=9.5),
    )  # fmt: skip
    text = render(stats_table(stats), width=100)
    lines = text.splitlines()
    assert lines[0].strip() == "graph 'orders': running for 12.3 s, 5 in mailboxes"
    assert lines[1].split() == [
        "NODE", "IN", "DONE", "OUT", "RATE/S", "MAILBOX", "RETRIES", "DEAD"
    ]  # fmt: skip
    table = rows(text)
    assert table["parse"] == ["10", "8", "8", "12.3", "5", "3", "2"]
    assert table["bill"] == ["8", "8", "8", "9.5", "0", "0", "0"]  # results count as out
    assert list(table) == ["parse", "bill", "total"]  # wiring order, then the total


def test_the_footer_totals_the_columns_of_several_nodes_and_a_lone_node_has_none() -> None:
    stats = snapshot(
        node("a", received=1, processed=1, forwarded=2, mailbox_depth=4, rate=1.5, retried=1),
        node("b", received=2, processed=2, terminal_outputs=2, rate=2.0, dead_lettered=3),
    )
    assert rows(render(stats_table(stats)))["total"] == ["3", "3", "4", "3.5", "4", "1", "3"]
    alone = render(stats_table(snapshot(node("a", received=1))))
    assert "total" not in alone


def test_a_snapshot_of_a_graph_that_is_not_running_says_so() -> None:
    text = render(stats_table(snapshot(node("a"), running=False, elapsed=0.0)))
    assert text.splitlines()[0].strip() == "graph 'orders': not running, 0 in mailboxes"


def test_workers_and_timing_columns_appear_only_when_they_have_something_to_show() -> None:
    plain = render(stats_table(snapshot(node("a"), node("b"))))
    assert "WORKERS" not in plain
    assert "P50" not in plain
    timing = Timing(count=10, p50=0.0042, p90=0.01, p99=1.5, max=2.0)
    stats = snapshot(node("a", workers=3, process_time=timing), node("b", workers=1))
    text = render(stats_table(stats), width=120)
    assert text.splitlines()[1].split()[-3:] == ["WORKERS", "P50", "P99"]
    table = rows(text)
    assert table["a"][-3:] == ["3", "4.2ms", "1.50s"]
    assert table["b"][-3:] == ["1", "-", "-"]  # not metered


def test_a_routed_column_appears_once_a_node_sent_a_failure_along_its_error_routes() -> None:
    assert "ROUTED" not in render(stats_table(snapshot(node("a"), node("b"))))
    stats = snapshot(
        node("pay", received=5, processed=3, error_routed=2, dead_lettered=1),
        node("refuse", received=2, processed=2, workers=2),
    )
    text = render(stats_table(stats), width=120)
    assert text.splitlines()[1].split()[-3:] == ["DEAD", "ROUTED", "WORKERS"]
    table = rows(text)
    assert table["pay"][-3:] == ["1", "2", "1"]
    assert table["refuse"][-3:] == ["0", "0", "2"]
    assert table["total"][-2:] == ["1", "2"]  # (no total of workers)


def test_a_long_node_id_folds_onto_the_next_line_rather_than_pushing_the_numbers_out() -> None:
    long_id = "a-node-with-a-rather-long-identifier"
    text = render(stats_table(snapshot(node(long_id, received=7))), width=60)
    assert all(len(line) <= 60 for line in text.splitlines())
    folded = [line.split()[0] for line in text.splitlines()[3:] if line.strip()]
    assert "".join(folded) == long_id
    assert text.splitlines()[3].split()[1] == "7"


def test_the_summary_says_how_the_run_ended_and_lists_its_dead_letters() -> None:
    stats = snapshot(node("parse", dead_lettered=12))
    letters = [DeadLetterLine("parse", "ValueError: bad amount", "{'id': 4}")]
    text = render(
        summary(stats, "shutdown; 3 outputs in 0.100 s", dead_letters=letters,
                more_dead_letters=11, notes=["see spark-nodes dlq"]),
    )  # fmt: skip
    lines = text.splitlines()
    assert rows(text)["parse"][-1] == "12"
    assert lines[-4:] == [
        "run: shutdown; 3 outputs in 0.100 s",
        "dead letter: parse: ValueError: bad amount (payload {'id': 4})",
        "... and 11 more dead letters",
        "see spark-nodes dlq",
    ]


# -- reading inputs -----------------------------------------------------------------------------


def test_input_is_one_json_value_and_no_input_is_none() -> None:
    assert read_inputs('{"n": 1}', None) == [{"n": 1}]
    assert read_inputs("null", None) == [None]
    assert read_inputs(None, None) is None


def test_an_input_file_holds_one_json_value_per_line_blank_lines_skipped(tmp_path: Path) -> None:
    path = tmp_path / "inputs.jsonl"
    path.write_text('{"n": 1}\n\n"two"\n  [3]  \n')
    assert read_inputs(None, str(path)) == [{"n": 1}, "two", [3]]


def test_an_input_file_named_dash_is_read_from_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"n": 1}\n{"n": 2}\n'))
    assert read_inputs(None, "-") == [{"n": 1}, {"n": 2}]
    monkeypatch.setattr(sys, "stdin", io.StringIO("{oops\n"))
    with pytest.raises(InputError, match=r"^stdin line 1 is not valid JSON"):
        read_inputs(None, "-")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"n": 1', "--input is not valid JSON: Expecting ',' delimiter at column 8"),
        ("hello", "--input is not valid JSON: Expecting value at column 1; a string needs quotes"),
    ],
)
def test_bad_json_says_what_is_wrong_and_where(text: str, message: str) -> None:
    with pytest.raises(InputError) as caught:
        read_inputs(text, None)
    assert str(caught.value).startswith(message)


def test_bad_json_in_an_input_file_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "inputs.jsonl"
    path.write_text('{"n": 1}\n\n{"n": 2,}\n')
    with pytest.raises(InputError, match=r"inputs.jsonl line 3 is not valid JSON: .* column 9"):
        read_inputs(None, str(path))


# -- running in memory --------------------------------------------------------------------------


def test_one_input_is_handled_then_the_graph_drains_and_the_final_table_is_printed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, err = cli(capsys, "run", f"{TARGET}:pipeline", "--input", '{"n": 21}')
    assert status == 0
    assert cli_run_graphs.KEPT == [42]
    table = rows(out)
    for node_id in ("parse", "double", "keep"):
        assert table[node_id][:3] == ["1", "1", "1"]  # in, done, out
    assert "run: shutdown; 1 output in " in out
    assert err.splitlines()[0] == (
        "spark-nodes run: running graph 'cli-run' in memory with 1 input (Ctrl-C to stop)"
    )


def test_an_input_file_sends_each_line_as_one_input_in_order(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "orders.jsonl"
    path.write_text("".join(json.dumps({"n": n}) + "\n" for n in range(1, 6)))
    status, out, _ = cli(capsys, "run", f"{TARGET}:pipeline", "--input-file", str(path))
    assert status == 0
    assert cli_run_graphs.KEPT == [2, 4, 6, 8, 10]
    assert rows(out)["keep"][:3] == ["5", "5", "5"]
    assert "5 outputs" in out


def test_dead_letters_are_listed_and_the_run_still_exits_0(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "orders.jsonl"
    path.write_text('{"n": 1}\n"not an order"\n{"n": 2}\n')
    status, out, _ = cli(
        capsys, "run", f"{TARGET}:pipeline", "--input-file", str(path), "--log-level", "error"
    )
    assert status == 0
    assert cli_run_graphs.KEPT == [2, 4]
    assert rows(out)["parse"] == ["3", "2", "2", rows(out)["parse"][3], "0", "1", "1"]
    assert "run: FAILED: shutdown with 1 message dead-lettered; 2 outputs" in out
    assert "dead letter: parse: builtins.ValueError: not an order: 'not an order'" in out
    assert "(payload 'not an order')" in out


def test_a_graph_that_stops_on_an_error_exits_1_saying_so(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, err = cli(
        capsys, "run", f"{TARGET}:stop_on_error", "--input", "1", "--log-level", "error"
    )
    assert status == 1
    assert "run: FAILED: error" in out
    assert err.splitlines()[-1] == (
        "spark-nodes run: graph 'cli-fail' failed: error "
        "(fail: builtins.RuntimeError: cannot handle 1)"
    )


def test_a_graph_that_cannot_start_exits_1_with_one_line_and_no_table(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, err = cli(capsys, "run", f"{TARGET}:cannot_start", "--log-level", "error")
    assert (status, out) == (1, "")
    assert err.startswith("spark-nodes run: graph 'cli-no-start' failed: ")
    assert "RuntimeError: the database is down" in err
    assert "Traceback" not in err


def test_without_inputs_the_graph_runs_until_the_budget_ends_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, err = cli(capsys, "run", f"{TARGET}:pipeline", "--budget", "0.2")
    assert status == 0
    assert "run: budget (max_seconds=0.2 reached); 0 outputs" in out
    assert "in memory until stopped for at most 0.2 s (Ctrl-C to stop)" in err


def test_the_budget_bounds_a_run_with_inputs_too(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = cli(
        capsys, "run", f"{TARGET}:stuck", "--input", '"x"', "--budget", "0.2",
        "--log-level", "error",
    )  # fmt: skip
    assert status == 0  # stopped by its budget: the in-flight message is cancelled after grace
    assert "run: budget (max_seconds=0.2 reached)" in out


def test_on_a_terminal_the_table_is_drawn_live_and_the_summary_printed_after(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # rich: this stdout is a terminal
    monkeypatch.setenv("TTY_INTERACTIVE", "1")
    status, out, _ = cli(
        capsys, "run", f"{TARGET}:pipeline", "--input", '{"n": 1}', "--refresh", "0.05"
    )
    assert status == 0
    assert out.count("NODE") >= 2  # drawn when the run started, then the final table
    assert "\x1b[" in out  # cursor moves: the live table is redrawn in place, then erased
    assert "run: shutdown; 1 output in " in out


# -- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (f"{TARGET}.pipeline", "expected MODULE:GRAPH (e.g. myapp.pipeline:graph)"),
        ("tests.no_such_module:graph", "No module named 'tests.no_such_module'"),
        (f"{TARGET}:no_such_graph", "has no attribute 'no_such_graph'"),
        (f"{TARGET}:HOLD_LIMIT", f"{TARGET}:HOLD_LIMIT is not a Graph"),
        (f"{TARGET}:broken_factory", "cannot wire <Node id='a'> >> 'not a node'"),
    ],
)
def test_a_bad_target_exits_1_with_one_line_saying_what_is_wrong(
    target: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = cli(capsys, "run", target, "--input", "1")
    assert (status, out) == (1, "")
    assert err.startswith("spark-nodes run: ")
    assert message in err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--input", "{bad"], "--input is not valid JSON: Expecting property name"),
        (["--input-file", "no/such/file.jsonl"], "--input-file no/such/file.jsonl: no such file"),
    ],
)
def test_bad_inputs_exit_2_before_anything_runs(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = cli(capsys, "run", f"{TARGET}:pipeline", *argv)
    assert (status, out) == (2, "")
    assert err.startswith(f"spark-nodes run: {message}")
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--input", "1", "--input-file", "f"], "not allowed with argument"),
        (["--budget", "0"], "must be a number > 0, not 0"),
        (["--refresh", "soon"], "not a number: 'soon'"),
        (["--log-format", "xml"], "invalid choice: 'xml'"),
    ],
)
def test_bad_options_are_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert message in usage_error(capsys, "run", f"{TARGET}:pipeline", *argv)


@pytest.fixture
def refusing_url() -> Iterator[str]:
    """A URL whose port is taken but not listening: connections are refused at once."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        yield f"redis://127.0.0.1:{taken.getsockname()[1]}"


def test_an_unreachable_redis_exits_1_naming_the_url(
    refusing_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = cli(capsys, "run", f"{TARGET}:pipeline", "--redis", refusing_url)
    assert (status, out) == (1, "")
    assert err.startswith(f"spark-nodes run: cannot reach Redis at {refusing_url}: ")
    assert len(err.splitlines()) == 1


def test_log_format_json_writes_one_json_object_per_log_line_on_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, err = cli(
        capsys, "run", f"{TARGET}:pipeline", "--input", '"bad"',
        "--log-format", "json", "--log-level", "warning",
    )  # fmt: skip
    assert status == 0
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    (dead,) = [e for e in events if e["event"] == "message dead-lettered"]
    assert (dead["node"], dead["level"]) == ("parse", "warning")
    assert "dead letter: parse" in out


def test_log_lines_go_to_whatever_stderr_is_when_they_are_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A live table replaces sys.stderr to print log lines above itself: they must follow."""
    configure_logging("info", "console")
    replaced = io.StringIO()
    monkeypatch.setattr(sys, "stderr", replaced)
    structlog.get_logger("tests").info("hello", where="here")
    assert "hello" in replaced.getvalue()
    assert "where=here" in replaced.getvalue()


def test_version_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version  # noqa: PLC0415

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"spark-nodes {version('spark-nodes')}\n"


# -- on Redis -----------------------------------------------------------------------------------


@pytest.mark.redis
def test_on_redis_the_inputs_are_handled_there_and_the_graph_shut_down(
    redis_url: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    namespace = new_namespace()
    path = tmp_path / "orders.jsonl"
    path.write_text('{"n": 1}\n{"n": 2}\n"bad"\n')
    try:
        status, out, err = cli(
            capsys, "run", f"{TARGET}:pipeline", "--input-file", str(path),
            "--redis", redis_url, "--namespace", namespace, "--log-level", "error",
        )  # fmt: skip
        kept = anyio.run(_kept_on_redis, redis_url, namespace, backend="asyncio")
    finally:
        anyio.run(_purge, redis_url, namespace, backend="asyncio")
    assert status == 0, err
    assert "running graph 'cli-run' on Redis with 3 inputs" in err
    assert sorted(kept) == [2, 4]
    assert rows(out)["keep"][:3] == ["2", "2", "2"]
    assert rows(out)["parse"][-1] == "0"  # WORKERS serving it now: the run has ended
    assert "run: FAILED: stopped (inputs handled) with 1 message dead-lettered" in out
    assert f"dead letters of parse: spark-nodes dlq list --mailbox '{namespace}:" in out


@pytest.mark.redis
def test_on_redis_ctrl_c_stops_this_process_only_and_exits_0(redis_url: str) -> None:
    namespace = new_namespace()
    argv = ["run", f"{TARGET}:pipeline", "--redis", redis_url, "--namespace", namespace]
    try:
        with Command(*argv) as command:
            command.wait_for("on Redis until stopped (Ctrl-C to stop)")
            command.signal(signal.SIGINT)
            status = command.finish()
    finally:
        anyio.run(_purge, redis_url, namespace, backend="asyncio")
    assert status == 0, command.report()
    assert "SIGINT: stopping; in-flight work finishes (Ctrl-C again to abort)" in command.err
    assert "run: stopped (SIGINT received); 0 outputs" in command.out


async def _kept_on_redis(url: str, namespace: str) -> Any:
    graph: Graph = cli_run_graphs.pipeline()
    graph.use_redis(url, namespace=namespace)
    async with graph:
        return await graph.state.get("kept")


async def _purge(url: str, namespace: str) -> None:
    async with open_raw_client(url) as client:
        await purge(client, namespace)


# -- signals, on a real process -----------------------------------------------------------------


def test_ctrl_c_shuts_the_graph_down_gracefully_and_exits_0() -> None:
    with Command("run", f"{TARGET}:pipeline") as command:
        command.wait_for("(Ctrl-C to stop)")
        command.signal(signal.SIGINT)
        status = command.finish()
    assert status == 0, command.report()
    assert "SIGINT: shutting down gracefully (Ctrl-C again to abort)" in command.err
    assert "run: shutdown; 0 outputs" in command.out
    assert "Traceback" not in command.err


def test_a_second_ctrl_c_aborts_the_work_in_flight_and_exits_130() -> None:
    argv = ["run", f"{TARGET}:stuck", "--input", '"x"', "--log-level", "info"]
    with Command(*argv, "--log-format", "json") as command:
        command.wait_for('"event": "holding"')  # in process(), which sleeps for a minute
        command.signal(signal.SIGINT)
        command.wait_for("shutting down gracefully")  # it waits for the one in flight
        command.signal(signal.SIGINT)
        status = command.finish()
    assert status == 130, command.report()
    assert "SIGINT: aborting, in-flight work is cancelled" in command.err
    assert "run: aborted: in-flight work was cancelled" in command.out
    assert "hold" in command.out  # the table, as it was
    assert "Traceback" not in command.err


def test_sigterm_is_a_graceful_shutdown_too() -> None:
    with Command("run", f"{TARGET}:pipeline") as command:
        command.wait_for("(Ctrl-C to stop)")
        command.signal(signal.SIGTERM)
        status = command.finish()
    assert status == 0, command.report()
    assert "SIGTERM: shutting down gracefully" in command.err
    assert "run: shutdown; 0 outputs" in command.out
