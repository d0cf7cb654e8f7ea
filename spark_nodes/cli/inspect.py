"""``spark-nodes inspect --redis URL``: what every durable mailbox in a namespace holds.

One row per mailbox (its stream key, the entries it holds and how many are pending, the
delayed messages and dead letters, and its counters), then one row per consumer (what it
holds and how long it has been idle). ``--json`` prints the same as one JSON document with
stable keys, for scripts.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Final

from redis.asyncio import Redis

from spark_nodes.channels.inspection import MailboxInfo, inspect_namespace
from spark_nodes.cli._redis import CLI_RETRY, add_redis_option, format_table, run_on_redis

__all__ = [
    "COUNTERS",
    "add_parser",
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

_DESCRIPTION = """\
Show every durable mailbox under a namespace: its stream key (what 'spark-nodes dlq
--mailbox' takes), the entries it holds, how many are pending (delivered, not acked yet),
delayed messages, dead letters, and its counters since it was made; then each consumer,
with what it holds and how long it has been idle. LAG is the entries not delivered to the
group yet ('?': too many to count cheaply)."""


def add_parser(commands: Any) -> None:
    """Register the ``inspect`` command."""
    parser = commands.add_parser(
        "inspect", help="show the durable mailboxes of a namespace", description=_DESCRIPTION
    )
    add_redis_option(parser)
    parser.add_argument("--namespace", default="spark_nodes", help="key prefix (%(default)s)")
    parser.add_argument("--json", action="store_true", help="print JSON, for scripts")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Print the namespace's mailboxes; return 0, or 1 when Redis cannot be read."""

    async def show(redis: Redis) -> int:
        mailboxes = await inspect_namespace(redis, args.namespace, retry=CLI_RETRY)
        if args.json:
            document = {"namespace": args.namespace, "mailboxes": [_json(m) for m in mailboxes]}
            print(json.dumps(document, indent=2))
        elif not mailboxes:
            print(f"no mailboxes under namespace {args.namespace!r}")
        else:
            print("\n".join(_tables(mailboxes)))
        return 0

    return run_on_redis("inspect", args.redis, show)


def _tables(mailboxes: list[MailboxInfo]) -> list[str]:
    rows: list[list[object]] = []
    for m in mailboxes:
        counts = [m.counters.get(name, 0) for name in COUNTERS[:6]]
        rows.append([m.key, m.length, m.pending, m.delayed, m.dead_letters, *counts])
    lines = format_table(
        ["MAILBOX", "LENGTH", "PENDING", "DELAYED", "DEAD", "SENT", "ACKED", "DEAD-LETTERED",
         "REJECTED", "RECLAIMED", "DUPLICATES"],
        rows,
    )  # fmt: skip
    consumers: list[list[object]] = []
    for m in mailboxes:
        for group in m.groups:
            lag = "?" if group.lag is None else str(group.lag)
            rows_of_group: list[list[object]] = [
                [m.key, group.name, lag, c.name, c.pending, f"{c.idle:.1f}s"]
                for c in group.consumers
            ]
            consumers += rows_of_group or [[m.key, group.name, lag, "-", 0, "-"]]
    if consumers:
        lines.append("")
        lines += format_table(["MAILBOX", "GROUP", "LAG", "CONSUMER", "PENDING", "IDLE"], consumers)
    return lines


def _json(mailbox: MailboxInfo) -> dict[str, Any]:
    counters = {name: mailbox.counters.get(name, 0) for name in COUNTERS}
    counters.update(sorted(mailbox.counters.items()))
    return {
        "key": mailbox.key,
        "length": mailbox.length,
        "pending": mailbox.pending,
        "delayed": mailbox.delayed,
        "dead_letters": mailbox.dead_letters,
        "counters": counters,
        "groups": [
            {
                "name": group.name,
                "pending": group.pending,
                "lag": group.lag,
                "last_delivered": group.last_delivered,
                "consumers": [
                    {"name": c.name, "pending": c.pending, "idle": round(c.idle, 3)}
                    for c in group.consumers
                ],
            }
            for group in mailbox.groups
        ],
    }
