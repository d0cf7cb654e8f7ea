"""``spark-nodes inspect --redis URL``: what every durable mailbox in a namespace holds.

One row per mailbox (its stream key, the entries it holds and how many are pending, the
delayed messages and dead letters, and its counters; for a graph's node, once one routed a
failure, what it sent along its error routes), then one row per consumer (what it holds
and how long it has been idle). Only mailboxes are listed, not every stream under
the namespace (see :func:`~spark_nodes.channels.find_mailboxes`); each is read at one
instant, a graph's mailboxes together. ``--json`` prints the same as one JSON document with
stable keys, for scripts. ``--watch [SECONDS]`` reads and redraws them every SECONDS
(2) until Ctrl-C: in place on a terminal, one reading after the other elsewhere (with
``--json``: one JSON document per line).
"""

from __future__ import annotations

import argparse
import json
import signal
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final

import anyio
from rich.console import Console
from rich.live import Live
from rich.text import Text

from spark_nodes._redis_client import RedisClient
from spark_nodes.channels.inspection import ConsumerInfo, MailboxInfo, inspect_namespace
from spark_nodes.cli._args import positive_float
from spark_nodes.cli._redis import CLI_RETRY, add_redis_option, format_table, run_on_redis
from spark_nodes.graphs._redis_stats import read_node_counters, stats_key

__all__ = [
    "COUNTERS",
    "WATCH_EVERY",
    "add_parser",
    "render",
    "run",
]

COUNTERS: Final = (
    "sent",
    "acked",
    "dead_lettered",
    "rejected_acks",
    "reclaimed",
    "duplicates",
    "delayed",
    "replayed",
)
"""The mailbox counters, in the order they are shown (JSON always has all of them)."""

WATCH_EVERY: Final = 2.0
"""Seconds between readings of ``--watch`` given without a number."""

_DESCRIPTION = """\
Show every durable mailbox under a namespace (dead-letter streams, a graph's invoke reply
streams and other streams are left out): its stream key (what 'spark-nodes dlq --mailbox'
takes), the entries it holds, how many are pending (delivered, not acked yet), delayed
messages, dead letters, and its counters since it was made, each mailbox read at one
instant; ROUTED, for a graph's node, counts the messages it sent along its error routes
(shown once one did); then each consumer, with what it holds and how long it has been
idle. LAG is the entries not delivered to the group yet ('?': too many to count cheaply).
--watch re-reads and redraws them every SECONDS (2) until Ctrl-C; with --json, one JSON
document per line per reading."""


def add_parser(commands: Any) -> None:
    """Register the ``inspect`` command."""
    parser = commands.add_parser(
        "inspect", help="show the durable mailboxes of a namespace", description=_DESCRIPTION
    )
    add_redis_option(parser)
    parser.add_argument("--namespace", default="spark_nodes", help="key prefix (%(default)s)")
    parser.add_argument("--json", action="store_true", help="print JSON, for scripts")
    parser.add_argument(
        "--all-consumers",
        action="store_true",
        help="list every consumer, also those idle for a minute and holding nothing",
    )
    parser.add_argument(
        "--watch",
        nargs="?",
        type=positive_float,
        const=WATCH_EVERY,
        metavar="SECONDS",
        help=f"re-read and redraw every SECONDS ({WATCH_EVERY:g}) until Ctrl-C",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Print the namespace's mailboxes; return 0, or 1 when Redis cannot be read.

    With ``--watch``, print them again and again until SIGINT or SIGTERM, then return 0.
    """

    async def show(redis: RedisClient) -> int:
        if args.watch is not None:
            await _watch(redis, args.namespace, args.watch, as_json=args.json,
                         all_consumers=args.all_consumers)  # fmt: skip
            return 0
        mailboxes, routed = await _read(redis, args.namespace)
        if args.json:
            print(json.dumps(_document(args.namespace, mailboxes, routed), indent=2))
        else:
            print(render(args.namespace, mailboxes, all_consumers=args.all_consumers,
                         routed=routed))  # fmt: skip
        return 0

    return run_on_redis("inspect", args.redis, show)


def render(
    namespace: str,
    mailboxes: list[MailboxInfo],
    *,
    taken_at: float | None = None,
    every: float | None = None,
    all_consumers: bool = False,
    routed: Mapping[str, int] | None = None,
) -> str:
    """The tables ``inspect`` prints for ``mailboxes`` (or a line saying there are none).

    Args:
        namespace: The namespace they were read from.
        mailboxes: What :func:`~spark_nodes.channels.inspect_namespace` returned.
        taken_at: When they were read (``time.time()``): with ``--watch``, a first line
            says when, and how often they are read again.
        every: Seconds between readings, for that line.
        all_consumers: List every consumer; by default only live ones (holding entries,
            or idle less than a minute), with a line counting the others.
        routed: Per mailbox key, the messages its graph node sent along its error routes
            (a ``ROUTED`` column, if any did).
    """
    lines = []
    if taken_at is not None:
        when = time.strftime("%H:%M:%S", time.localtime(taken_at))
        again = f", every {every:g} s" if every is not None else ""
        lines += [f"namespace {namespace!r} at {when}{again} (Ctrl-C to stop)", ""]
    if mailboxes:
        lines += _tables(mailboxes, all_consumers=all_consumers, routed=routed or {})
    else:
        lines.append(f"no mailboxes under namespace {namespace!r}")
    return "\n".join(lines)


async def _watch(
    redis: RedisClient, namespace: str, every: float, *, as_json: bool, all_consumers: bool
) -> None:
    """Read and show the mailboxes every ``every`` seconds until SIGINT or SIGTERM."""
    console = Console(highlight=False)
    failure: list[Exception] = []
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(_cancel_on_signal, signals, tasks.cancel_scope)
            try:
                if console.is_terminal and not as_json:
                    await _redraw(redis, namespace, every, console, all_consumers)
                else:
                    await _print_readings(redis, namespace, every, as_json=as_json,
                                          all_consumers=all_consumers)  # fmt: skip
            except Exception as error:  # noqa: BLE001 - raised below, not in a group
                failure.append(error)
                tasks.cancel_scope.cancel()
    if failure:
        raise failure[0]  # Redis went away: the caller says so in one line


async def _redraw(
    redis: RedisClient, namespace: str, every: float, console: Console, all_consumers: bool
) -> None:
    with Live(console=console, auto_refresh=False) as live:
        while True:
            mailboxes, routed = await _read(redis, namespace)
            shown = render(namespace, mailboxes, taken_at=time.time(), every=every,
                           all_consumers=all_consumers, routed=routed)  # fmt: skip
            live.update(Text(shown), refresh=True)
            await anyio.sleep(every)  # the readings' pace, not a wait for work


async def _print_readings(
    redis: RedisClient, namespace: str, every: float, *, as_json: bool, all_consumers: bool
) -> None:
    while True:
        mailboxes, routed = await _read(redis, namespace)
        if as_json:
            document: dict[str, Any] = {"taken_at": round(time.time(), 3)}
            document.update(_document(namespace, mailboxes, routed))
            print(json.dumps(document), flush=True)
        else:
            print(render(namespace, mailboxes, taken_at=time.time(), every=every,
                         all_consumers=all_consumers, routed=routed))  # fmt: skip
            print(flush=True)  # a blank line between readings
        await anyio.sleep(every)


async def _cancel_on_signal(signals: AsyncIterator[int], scope: anyio.CancelScope) -> None:
    async for _ in signals:
        scope.cancel()
        return


async def _read(redis: RedisClient, namespace: str) -> tuple[list[MailboxInfo], dict[str, int]]:
    """The namespace's mailboxes, and per graph node's mailbox what the node error-routed.

    A graph's node has the mailbox ``{namespace}:{graph}:{node}``; what it routed is in
    the graph's stats hash (one ``HGETALL`` per graph), where its serving processes
    publish their figures.
    """
    mailboxes = await inspect_namespace(redis, namespace, retry=CLI_RETRY)
    nodes: dict[str, dict[str, str]] = {}  # per graph: node id by mailbox key
    prefix = f"{namespace}:{{"
    for mailbox in mailboxes:
        graph, tagged, node = mailbox.key.removeprefix(prefix).partition("}:")
        if mailbox.key.startswith(prefix) and tagged and node:
            nodes.setdefault(graph, {})[mailbox.key] = node
    routed: dict[str, int] = {}
    for graph, by_key in nodes.items():
        published = await read_node_counters(redis, stats_key(namespace, graph), retry=CLI_RETRY)
        for key, node in by_key.items():
            routed[key] = published.get(node, {}).get("error_routed", 0)
    return mailboxes, routed


def _document(
    namespace: str, mailboxes: list[MailboxInfo], routed: Mapping[str, int]
) -> dict[str, Any]:
    return {"namespace": namespace, "mailboxes": [_json(m, routed) for m in mailboxes]}


def _tables(
    mailboxes: list[MailboxInfo], *, all_consumers: bool, routed: Mapping[str, int]
) -> list[str]:
    shows_routed = any(routed.values())
    rows: list[list[object]] = []
    for m in mailboxes:
        counts = [m.counters.get(name, 0) for name in COUNTERS[:6]]
        rows.append([m.key, m.length, m.pending, m.delayed, m.dead_letters, *counts])
        if shows_routed:
            rows[-1].append(routed.get(m.key, "-"))
    lines = format_table(
        ["MAILBOX", "LENGTH", "PENDING", "DELAYED", "DEAD", "SENT", "ACKED", "DEAD-LETTERED",
         "REJECTED", "RECLAIMED", "DUPLICATES", *(["ROUTED"] if shows_routed else [])],
        rows,
    )  # fmt: skip
    consumers: list[list[object]] = []
    hidden = 0
    for m in mailboxes:
        for group in m.groups:
            lag = "?" if group.lag is None else str(group.lag)
            shown = [c for c in group.consumers if all_consumers or c.live]
            hidden += len(group.consumers) - len(shown)
            rows_of_group: list[list[object]] = [
                [m.key, group.name, lag, c.name, c.pending, f"{c.idle:.1f}s"] for c in shown
            ]
            consumers += rows_of_group or [[m.key, group.name, lag, "-", 0, "-"]]
    if consumers:
        lines.append("")
        lines += format_table(["MAILBOX", "GROUP", "LAG", "CONSUMER", "PENDING", "IDLE"], consumers)
    if hidden:
        lines.append(f"({hidden} idle consumers holding nothing not shown: --all-consumers)")
    return lines


def _consumer_json(consumer: ConsumerInfo) -> dict[str, Any]:
    return {
        "name": consumer.name,
        "pending": consumer.pending,
        "idle": round(consumer.idle, 3),
        "live": consumer.live,
    }


def _json(mailbox: MailboxInfo, routed: Mapping[str, int]) -> dict[str, Any]:
    counters = {name: mailbox.counters.get(name, 0) for name in COUNTERS}
    counters.update(sorted(mailbox.counters.items()))
    return {
        "key": mailbox.key,
        "length": mailbox.length,
        "pending": mailbox.pending,
        "delayed": mailbox.delayed,
        "dead_letters": mailbox.dead_letters,
        "counters": counters,
        "error_routed": routed.get(mailbox.key),
        "groups": [
            {
                "name": group.name,
                "pending": group.pending,
                "lag": group.lag,
                "last_delivered": group.last_delivered,
                "consumers": [_consumer_json(c) for c in group.consumers],
            }
            for group in mailbox.groups
        ],
    }
