"""``spark-nodes run MODULE:GRAPH``: run a graph in this process and watch its nodes work.

The graph runs as a long-running task, in memory or with ``--redis`` on that Redis. Given
inputs (``--input JSON``, or ``--input-file`` with one JSON value per line), it sends them
to the start node in order, waits until nothing is in flight and ends the run: the run
ends once every input and everything it caused has been handled. Without inputs it runs
until Ctrl-C, ``--budget`` or (on Redis) a shutdown from elsewhere.

On a terminal a table of the nodes is redrawn every ``--refresh`` seconds; at the end the
final table is printed with how the run ended and its dead letters. The first SIGINT or
SIGTERM ends the run gracefully (in memory the graph drains; on Redis this process stops,
leaving what it has not started to the other workers); a second one aborts (cancels
in-flight work) and the command exits ``128 + signal`` (130 for Ctrl-C). Exit status: 0
when the run ended (also with dead letters, which are listed), 1 when the graph failed or
could not run, 2 on a usage error (bad option, bad JSON, missing input file).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus
from rich.console import Console
from rich.live import Live

from spark_nodes._redis_client import RedisClient
from spark_nodes.channels import InMemoryChannel, RedisChannel
from spark_nodes.cli._args import positive_float
from spark_nodes.cli._logging import add_logging_options, configure_logging
from spark_nodes.cli._redis import run_on_redis
from spark_nodes.cli.table import DeadLetterLine, stats_table, summary
from spark_nodes.cli.worker import load_graph
from spark_nodes.errors import BackendUnavailable, GraphNotRunning, SparkNodesError
from spark_nodes.graphs import Budget, Graph, GraphResult, RunningGraph, StopReason, Task, TaskType
from spark_nodes.graphs.stats import GraphStats

__all__ = ["InputError", "add_parser", "read_inputs", "run"]

_log = structlog.get_logger("spark_nodes")

LISTED_DEAD_LETTERS: Final = 10
"""Dead letters of an in-memory run listed at the end (they are gone when the command exits)."""

_PREVIEW: Final = 60

_DESCRIPTION = """\
Run a graph in this process and watch what its nodes do. MODULE:GRAPH names a Graph (or a
function returning one) in an importable module (the current directory included).

The graph runs as a long-running task: in memory, or with --redis on that Redis, where
this process serves every node (other workers may serve them too). With --input (one JSON
value) or --input-file (JSON Lines: one JSON value per line, each one input; '-' reads
stdin), the inputs go to the start node in order, and once nothing is in flight the run
ends: it ends when every input and all it caused has been handled. '--input null' sends
one None, for a start node that needs no input. Without inputs the graph runs until
Ctrl-C or --budget (or, on Redis, until someone shuts it down). --budget ends the run
gracefully after SECONDS, inputs handled or not.

On a terminal, a table of the nodes (taken in, done, sent out, rate, mailbox depth,
retries, dead letters) is redrawn every --refresh seconds; at the end the final table is
printed with how the run ended and its dead letters. When stdout is not a terminal only
the final table is printed.

Ctrl-C (SIGINT) or SIGTERM ends the run gracefully: in memory the graph drains (what was
sent is handled first); on Redis this process stops, as a worker does, leaving what it has
not started in Redis for the other workers (graph.shutdown() from Python ends them all). A
second one aborts: in-flight work is cancelled. Exit status: 0 when the run ended (also
with dead letters: they are listed); 1 when the graph failed or could not run; 2 on a
usage error; 130 when aborted by a second Ctrl-C (128 + the signal)."""


class InputError(Exception):
    """An input given on the command line cannot be read: bad JSON, or no such file."""


def add_parser(commands: Any) -> None:
    """Register the ``run`` command."""
    parser = commands.add_parser(
        "run",
        help="run a graph here, with a live table of its nodes",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("target", metavar="MODULE:GRAPH", help="e.g. myapp.pipeline:build")
    given = parser.add_mutually_exclusive_group()
    given.add_argument(
        "--input", metavar="JSON", help="one input, as JSON: '{\"id\": 1}', '\"text\"', null"
    )
    given.add_argument(
        "--input-file",
        metavar="FILE",
        help="inputs as JSON Lines: one JSON value per line, each one input ('-': stdin)",
    )
    parser.add_argument(
        "--budget", type=positive_float, metavar="SECONDS", help="end the run after SECONDS"
    )
    parser.add_argument(
        "--redis",
        metavar="URL",
        help="run on this Redis (default: in memory, or where the graph says)",
    )
    parser.add_argument(
        "--namespace", default="spark_nodes", help="key prefix with --redis (%(default)s)"
    )
    parser.add_argument(
        "--refresh",
        type=positive_float,
        default=1.0,
        metavar="SECONDS",
        help="redraw the table every SECONDS (%(default)s)",
    )
    add_logging_options(parser, level="warning")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the graph and print its table; return the exit status (see the module)."""
    configure_logging(args.log_level, args.log_format)
    try:
        inputs = read_inputs(args.input, args.input_file)
    except InputError as error:
        _say(str(error))
        return 2
    try:
        return _load_and_run(args, inputs)
    except KeyboardInterrupt:  # before the event loop took the signal over (an import)
        _say("interrupted")
        return 128 + signal.SIGINT


def read_inputs(text: str | None, file: str | None) -> list[Any] | None:
    """The inputs ``--input`` or ``--input-file`` gives, decoded; ``None`` if neither does.

    Args:
        text: One JSON value.
        file: A JSON Lines file (``-``: stdin): one value per line; blank lines are skipped.

    Raises:
        InputError: The JSON is not valid (the message says where), or the file cannot be
            read.
    """
    if text is not None:
        return [_decode(text, "--input")]
    if file is None:
        return None
    if file == "-":
        content, name = sys.stdin.read(), "stdin"
    else:
        try:
            content = Path(file).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise InputError(f"--input-file {file}: no such file") from None
        except UnicodeDecodeError as error:
            raise InputError(f"--input-file {file}: not UTF-8 text ({error.reason})") from None
        except OSError as error:
            raise InputError(f"--input-file {file}: {error.strerror or error}") from None
        name = file
    return [
        _decode(line, f"{name} line {number}")
        for number, line in enumerate(content.splitlines(), 1)
        if line.strip()
    ]


def _decode(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        hint = ""
        if error.pos == 0 and error.msg == "Expecting value":
            hint = "; a string needs quotes: '\"text\"'"
        raise InputError(
            f"{where} is not valid JSON: {error.msg} at column {error.colno}{hint}"
        ) from None


def _load_and_run(args: argparse.Namespace, inputs: list[Any] | None) -> int:
    try:
        graph = load_graph(args.target)
    except (ImportError, AttributeError, TypeError, ValueError, SparkNodesError) as error:
        _say(str(error))
        return 1
    if args.redis is not None and not graph.distributed:
        # One try, before anything runs: an operator wants "unreachable" now, with the URL.
        unreachable = run_on_redis("run", args.redis, _ping)
        if unreachable:
            return unreachable
        try:
            graph.use_redis(args.redis, namespace=args.namespace)
        except (ValueError, SparkNodesError) as error:
            _say(str(error))
            return 1
    status: int = anyio.run(_run_and_close, graph, inputs, args, backend="asyncio")
    return status


async def _ping(redis: RedisClient) -> int:
    await redis.ping()
    return 0


async def _run_and_close(graph: Graph, inputs: list[Any] | None, args: argparse.Namespace) -> int:
    try:
        return await _Session(graph, inputs, args).run()
    finally:
        with anyio.CancelScope(shield=True):
            await graph.aclose()


class _Session:
    """One ``spark-nodes run``: the graph's run, its inputs, the signals and the display."""

    def __init__(self, graph: Graph, inputs: list[Any] | None, args: argparse.Namespace) -> None:
        self.graph = graph
        self.inputs = inputs
        self.budget: float | None = args.budget
        self.refresh: float = args.refresh
        self.console = Console(highlight=False)
        self.started = False  # the graph takes messages
        self.stopping = False  # a graceful end was asked for: send nothing more
        self.signalled = False
        self.aborted: int | None = None  # the signal that aborted the run
        self.failure: Exception | None = None
        self.result: GraphResult | None = None
        self.last: GraphStats | None = None
        self.scope = anyio.CancelScope()  # replaced by the task group's

    async def run(self) -> int:
        """Run the graph until it ends, showing its table; print the summary; the status."""
        budget = Budget(max_seconds=self.budget) if self.budget else Budget()
        task = Task(type=TaskType.LONG_RUNNING, budget=budget)
        self.last = await self._stats()
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with self._live() as live, anyio.create_task_group() as tasks:
                self.scope = tasks.cancel_scope
                tasks.start_soon(self._on_signals, signals, tasks)
                try:
                    await tasks.start(self._run_graph, task)
                except Exception as error:  # noqa: BLE001 - it did not start: reported below
                    self._fail(error)
                else:
                    _say(f"running {self._what()} (Ctrl-C to stop)")
                    tasks.start_soon(self._feed)
                    if live is not None:
                        tasks.start_soon(self._redraw, live)
        return await self._report()

    async def _run_graph(self, task: Task, *, task_status: TaskStatus[RunningGraph]) -> None:
        try:
            self.result = await self.graph.run(task, task_status=_Started(task_status, self))
        except Exception as error:
            if not self.started:
                raise  # tasks.start raises it
            self.failure = error
        finally:
            if self.started:
                self.scope.cancel()  # the run is over: so are the feed and the display

    async def _feed(self) -> None:
        """Send the inputs in order, wait until nothing is in flight, then shut down."""
        if self.inputs is None:
            return
        graph = self.graph
        try:
            for value in self.inputs:
                if self.stopping:
                    return
                await graph.send(graph.start, value)
            await graph.wait_idle()
        except GraphNotRunning:
            return  # the run is ending already (a budget, a failure, a shutdown)
        except SparkNodesError as error:  # Redis went away: the run cannot go on
            self._fail(error)
            return
        if not self.stopping:
            self.stopping = True
            await self._end("inputs handled")

    async def _on_signals(self, signals: AsyncIterator[int], tasks: TaskGroup) -> None:
        """First signal: shut down gracefully; a second one (or one before the start): abort."""
        async for number in signals:
            name = signal.Signals(number).name
            if self.signalled or not self.started:
                _say(f"{name}: aborting, in-flight work is cancelled")
                self.aborted = number
                self.scope.cancel()
                return
            self.signalled = self.stopping = True
            if self.graph.distributed:
                _say(f"{name}: stopping; in-flight work finishes (Ctrl-C again to abort)")
            else:
                _say(f"{name}: shutting down gracefully (Ctrl-C again to abort)")
            tasks.start_soon(self._end, f"{name} received")  # it may wait for a full mailbox

    async def _end(self, reason: str) -> None:
        """End the run gracefully: in memory, drain the graph; on Redis, stop this process.

        On Redis, ``graph.shutdown()`` would end every worker of the graph, everywhere; this
        command serves it beside them, so it stops its own loops only (as the worker
        command does on a signal): what it has not started stays in Redis for the others.
        """
        try:
            if self.graph.distributed:
                self.graph.stop(reason)
            else:
                await self.graph.shutdown()
        except GraphNotRunning:
            return  # it ended meanwhile
        except SparkNodesError as error:  # Redis went away
            self._fail(error)

    def _fail(self, error: Exception) -> None:
        """Keep the first failure, reported at the end, and end the run at once."""
        if self.failure is None:
            self.failure = error
        self.scope.cancel()

    async def _redraw(self, live: Live) -> None:
        while True:
            await anyio.sleep(self.refresh)  # the display's own pace, not a wait for work
            self.last = await self._stats()
            if self.last is not None:
                live.update(stats_table(self.last), refresh=True)

    async def _stats(self) -> GraphStats | None:
        try:
            return await self.graph.stats()
        except BackendUnavailable as error:
            _log.warning("stats unavailable", graph=self.graph.name, error=str(error))
            return self.last

    @contextlib.asynccontextmanager
    async def _live(self) -> AsyncIterator[Live | None]:
        """A live table on a terminal (gone when the run ends); nothing elsewhere."""
        if not self.console.is_terminal:
            yield None
            return
        shown = stats_table(self.last) if self.last is not None else ""
        with Live(shown, console=self.console, auto_refresh=False, transient=True) as live:
            yield live

    async def _report(self) -> int:
        """Print the final table and how the run ended; return the exit status."""
        if self.aborted is not None:
            outcome, status = "aborted: in-flight work was cancelled", 128 + self.aborted
        elif self.failure is not None:
            why = _describe(self.failure)
            outcome, status = f"FAILED: {why}", 1
            _say(f"graph {self.graph.name!r} failed: {why}")
            if not self.started:
                return status  # nothing ran: there is no table to show
        else:
            result = self.result
            assert result is not None
            outcome = str(result)
            status = 1 if result.stop_reason is StopReason.ERROR else 0
            if status:
                _say(f"graph {self.graph.name!r} failed: {result.stop_reason} ({result.detail})")
        with anyio.CancelScope(shield=True):
            stats = await self._stats()
            letters, more = await self._dead_letters()
        if stats is not None:
            stats = _averaged(stats, self.result.duration if self.result else stats.elapsed)
            notes = self._dead_letter_notes(stats)
            shown = summary(
                stats, outcome, dead_letters=letters, more_dead_letters=more, notes=notes
            )
            self.console.print(shown, crop=False)  # long lines whole: a terminal wraps them
        return status

    async def _dead_letters(self) -> tuple[list[DeadLetterLine], int]:
        """The first dead letters of an in-memory run, and how many more there are."""
        channel = self.graph.dead_letters
        if not isinstance(channel, InMemoryChannel):
            return [], 0
        letters: list[DeadLetterLine] = []
        while len(letters) < LISTED_DEAD_LETTERS and not channel.empty():
            letter = await channel.receive()
            record = letter.metadata.get("dead_letter", {})
            error = f"{record.get('error_type', 'error')}: {record.get('error', '')}"
            letters.append(
                DeadLetterLine(
                    node=str(record.get("node", "?")),
                    error=error.partition("\n")[0],
                    payload=_shorten(repr(letter.payload), _PREVIEW),
                )
            )
        return letters, channel.qsize()

    def _dead_letter_notes(self, stats: GraphStats) -> list[str]:
        """On Redis: where each node's dead letters are kept, and how to list them."""
        notes = []
        for node_id, node_stats in stats.nodes.items():
            mailbox = self.graph.nodes[node_id].mailbox
            if node_stats.dead_lettered and isinstance(mailbox, RedisChannel):
                notes.append(
                    f"dead letters of {node_id}: spark-nodes dlq list --mailbox '{mailbox.key}'"
                )
        return notes

    def _what(self) -> str:
        where = "on Redis" if self.graph.distributed else "in memory"
        if self.inputs is None:
            what = " until stopped"
        else:
            count = len(self.inputs)
            what = f" with {count} input{'s' if count != 1 else ''}"
        limit = f" for at most {self.budget:g} s" if self.budget else ""
        return f"graph {self.graph.name!r} {where}{what}{limit}"


class _Started(TaskStatus[RunningGraph]):
    """Passes the run's start on, and notes it: a failure after it ends the run, not start."""

    def __init__(self, status: TaskStatus[RunningGraph], session: _Session) -> None:
        self.status = status
        self.session = session

    def started(self, value: RunningGraph | None = None) -> None:
        assert value is not None  # graph.run always passes its handle
        self.session.started = True
        self.status.started(value)


def _averaged(stats: GraphStats, seconds: float) -> GraphStats:
    """``stats`` with each node's rate over ``seconds`` (the run), not since the last look."""
    if seconds <= 0:
        return stats
    nodes = {
        node_id: dataclasses.replace(node, rate=node.processed / seconds)
        for node_id, node in stats.nodes.items()
    }
    return dataclasses.replace(stats, nodes=nodes)


def _describe(error: Exception) -> str:
    """Our errors say what happened; anyone else's needs its type to make sense."""
    if isinstance(error, SparkNodesError):
        return str(error)
    return f"{type(error).__name__}: {error}"


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _say(text: str) -> None:
    print(f"spark-nodes run: {text}", file=sys.stderr, flush=True)
