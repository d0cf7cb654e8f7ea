"""``spark-nodes dlq list|replay|drop``: the dead letters of a mailbox, a graph or a node.

``list`` shows them oldest first (id, when, why, the error's type and first line,
deliveries, the payload), a page at a time; ``replay`` puts chosen ones (``--id``) or all
of them (``--all``) back into their mailbox, each atomically; ``drop`` deletes them.
``--mailbox`` takes the stream key ``spark-nodes inspect`` shows; ``--graph NAME`` (with
``--namespace``) takes every node's mailbox of a Redis graph, and ``--node ID`` one of them.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from spark_nodes._redis_client import RedisClient
from spark_nodes.channels.inspection import (
    DeadLetter,
    dead_letters,
    drop_dead_letter,
    replay_dead_letter,
)
from spark_nodes.cli._args import positive_int
from spark_nodes.cli._redis import CLI_RETRY, add_redis_option, format_table, run_on_redis
from spark_nodes.graphs.inspecting import find_node_mailboxes, mailbox_key

__all__ = ["add_parser", "error_line", "run"]

_PAGE: Final = 1000  # dead letters read per round trip by --all
_ERROR_WIDTH: Final = 50
_PREVIEW_WIDTH: Final = 40
_ENTRY_ID: Final = re.compile(r"\d+-\d+")
_PYTHON_MODULES: Final = ("builtins.", "__main__.")  # left out of a type's name, as Python does


@dataclass(frozen=True, slots=True)
class _Target:
    """The mailboxes one command handles: one (``--mailbox``, ``--node``) or a graph's."""

    mailboxes: dict[str, str]  # stream key by node id ("": given by --mailbox)
    graph: str | None = None  # set for a whole graph (--graph without --node)

    @property
    def name(self) -> str:
        """What the summary lines call it: the mailbox's key, or ``graph NAME``."""
        if self.graph is not None:
            return f"graph {self.graph}"
        (key,) = self.mailboxes.values()
        return key


def add_parser(commands: Any) -> None:
    """Register the ``dlq`` command and its actions: ``list``, ``replay``, ``drop``."""
    parser = commands.add_parser(
        "dlq",
        help="list, replay or drop the dead letters of a mailbox, a graph or a node",
        description="List, replay or drop the dead letters of a durable mailbox, of every "
        "node of a Redis graph (--graph) or of one node (--graph --node).",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    lister = actions.add_parser(
        "list",
        help="show dead letters, oldest first",
        description="Show dead letters, oldest first, a page at a time.",
    )
    _add_target_options(lister)
    lister.add_argument(
        "--count", type=positive_int, default=20, help="dead letters to show (%(default)s)"
    )
    lister.add_argument("--after", metavar="ID", help="start after this dead letter (paging)")
    lister.add_argument("--json", action="store_true", help="print JSON, for scripts")
    for action, text in (
        ("replay", "put dead letters back into their mailbox, as new entries"),
        ("drop", "delete dead letters for good"),
    ):
        chooser = actions.add_parser(action, help=text, description=text.capitalize() + ".")
        _add_target_options(chooser)
        which = chooser.add_mutually_exclusive_group(required=True)
        which.add_argument(
            "--id", dest="ids", metavar="ID", nargs="+", action="extend", help="dead letter ids"
        )
        which.add_argument("--all", action="store_true", help="every dead letter there is now")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the chosen action; return 0, or 1 if a dead letter or Redis could not be handled.

    Raises:
        SystemExit: 2, for ``--node`` without ``--graph`` (a usage error).
    """
    command = f"dlq {args.action}"
    if args.node is not None and args.graph is None:
        args.usage_error("--node needs --graph NAME: the graph the node belongs to")
    action = {"list": _list, "replay": _replay, "drop": _drop}[args.action]

    async def work(redis: RedisClient) -> int:
        target = await _target(redis, args, command)
        if target is None:
            return 1
        status: int = await action(redis, args, target)
        return status

    return run_on_redis(command, args.redis, work)


async def _target(redis: RedisClient, args: argparse.Namespace, command: str) -> _Target | None:
    """The mailboxes the arguments name, or ``None`` after saying there are none."""
    if args.mailbox is not None:
        key: str = args.mailbox
        if not await redis.exists(key, f"{key}:dead"):
            _complain(command, f"no mailbox {key!r}; 'spark-nodes inspect' lists them")
            return None
        return _Target({"": key})
    graph: str = args.graph
    namespace: str = args.namespace
    if args.node is not None:
        key = mailbox_key(namespace, graph, args.node)
        if not await redis.exists(key, f"{key}:dead"):
            _complain(
                command,
                f"graph {graph!r} has no node {args.node!r} under namespace {namespace!r} "
                f"(no mailbox {key!r}); 'spark-nodes inspect --namespace {namespace}' "
                f"lists the mailboxes",
            )
            return None
        return _Target({args.node: key})
    found = await find_node_mailboxes(redis, namespace, graph, retry=CLI_RETRY)
    if not found:
        _complain(
            command,
            f"no mailboxes of graph {graph!r} under namespace {namespace!r}; "
            f"'spark-nodes inspect --namespace {namespace}' lists the mailboxes",
        )
        return None
    return _Target(found, graph=graph)


async def _list(redis: RedisClient, args: argparse.Namespace, target: _Target) -> int:
    if target.graph is not None:
        return await _list_graph(redis, args, target)
    ((node, key),) = target.mailboxes.items()
    letters = await dead_letters(redis, key, count=args.count, after=args.after, retry=CLI_RETRY)
    total: int = await redis.xlen(f"{key}:dead")
    more = bool(letters) and bool(await redis.xrange(f"{key}:dead", f"({letters[-1].id}", "+", 1))
    next_after = letters[-1].id if more else None
    if args.json:
        document: dict[str, Any] = {"mailbox": key}
        if node:
            document.update(graph=args.graph, namespace=args.namespace, node=node)
        document.update(
            total=total,
            dead_letters=[_json(letter) for letter in letters],
            next_after=next_after,
        )
        print(json.dumps(document, indent=2))
        return 0
    if not letters:
        print(f"no dead letters in {key}" + (f" after {args.after}" if args.after else ""))
        return 0
    rows = [_row(letter) for letter in letters]
    for line in format_table(["ID", "TIME", "REASON", "DELIVERIES", "ERROR", "PAYLOAD"], rows):
        print(line)
    summary = f"{len(letters)} of {total} dead letters in {key}"
    if next_after is not None:
        summary += f"; next page: --after {next_after}"
    print(summary)
    return 0


async def _list_graph(redis: RedisClient, args: argparse.Namespace, target: _Target) -> int:
    """Every node's dead letters, merged oldest first (by id), a page at a time."""
    merged: list[tuple[str, DeadLetter]] = []
    total = 0
    for node, key in target.mailboxes.items():
        # One more than a page from each: whether any is left after the page shows.
        page = await dead_letters(
            redis, key, count=args.count + 1, after=args.after, retry=CLI_RETRY
        )
        merged += ((node, letter) for letter in page)
        total += await redis.xlen(f"{key}:dead")
    merged.sort(key=lambda pair: (_id_order(pair[1].id), pair[0]))
    shown = args.count
    # Two nodes' letters may share an id: a page never ends between them, so that the
    # next one (--after ID) starts after both.
    while shown < len(merged) and merged[shown][1].id == merged[shown - 1][1].id:
        shown += 1
    page_of = merged[:shown]
    next_after = page_of[-1][1].id if len(merged) > shown else None
    if args.json:
        document = {
            "graph": target.graph,
            "namespace": args.namespace,
            "mailboxes": target.mailboxes,
            "total": total,
            "dead_letters": [{"node": node, **_json(letter)} for node, letter in page_of],
            "next_after": next_after,
        }
        print(json.dumps(document, indent=2))
        return 0
    if not page_of:
        after = f" after {args.after}" if args.after else ""
        print(f"no dead letters in graph {target.graph}{after}")
        return 0
    rows = [[node, *_row(letter)] for node, letter in page_of]
    headers = ["NODE", "ID", "TIME", "REASON", "DELIVERIES", "ERROR", "PAYLOAD"]
    for line in format_table(headers, rows):
        print(line)
    summary = f"{len(page_of)} of {total} dead letters in graph {target.graph}"
    if next_after is not None:
        summary += f"; next page: --after {next_after}"
    print(summary)
    return 0


async def _replay(redis: RedisClient, args: argparse.Namespace, target: _Target) -> int:
    async def replay(key: str, letter_id: str) -> bool:
        return await replay_dead_letter(redis, key, letter_id, retry=CLI_RETRY)

    return await _settle(redis, args, target, replay, done="replayed", to="to")


async def _drop(redis: RedisClient, args: argparse.Namespace, target: _Target) -> int:
    if args.all:
        dropped = 0
        for key in target.mailboxes.values():
            ids = await _all_ids(redis, key)
            for start in range(0, len(ids), _PAGE):  # one XDEL per page, not per letter
                dropped += await redis.xdel(f"{key}:dead", *ids[start : start + _PAGE])
        print(f"dropped {dropped} dead letters of {target.name}")
        return 0

    async def drop(key: str, letter_id: str) -> bool:
        return await drop_dead_letter(redis, key, letter_id, retry=CLI_RETRY)

    return await _settle(redis, args, target, drop, done="dropped", to="of")


async def _settle(
    redis: RedisClient,
    args: argparse.Namespace,
    target: _Target,
    act: Callable[[str, str], Awaitable[bool]],
    *,
    done: str,
    to: str,
) -> int:
    """Replay or drop (``act``) the chosen dead letters; print each and a summary."""
    command = f"dlq {args.action}"
    chosen: list[tuple[str, str | None, str]] = []  # (node, key, id); key None: none
    if args.all:
        for node, key in target.mailboxes.items():
            chosen += ((node, key, letter_id) for letter_id in await _all_ids(redis, key))
    elif target.graph is None:
        ((node, key),) = target.mailboxes.items()
        chosen = [(node, key, letter_id) for letter_id in args.ids]
    else:
        for letter_id in args.ids:
            chosen.append(await _locate(redis, target, letter_id, command))
    count = failures = 0
    for node, where, letter_id in chosen:
        if where is None:
            failures += 1  # said why already
            continue
        try:
            acted = await act(where, letter_id)
        except ValueError as error:
            _complain(command, str(error))
            failures += 1
            continue
        if acted:
            count += 1
            if not args.all:
                print(f"{done} {letter_id}" + (f" ({node})" if target.graph else ""))
        elif not args.all:  # with --all, one replayed or dropped meanwhile is not an error
            _complain(command, f"no dead letter {letter_id} in {where}")
            failures += 1
    print(f"{done} {count} of {len(chosen)} dead letters {to} {target.name}")
    return 1 if failures else 0


async def _locate(
    redis: RedisClient, target: _Target, letter_id: str, command: str
) -> tuple[str, str | None, str]:
    """The node and mailbox of a graph holding dead letter ``letter_id``, or says why not."""
    if not _ENTRY_ID.fullmatch(letter_id):
        _complain(command, f"{letter_id!r} is not a stream entry id; ids look like 1718000000000-0")
        return ("", None, letter_id)
    pipe = redis.pipeline(transaction=False)
    for key in target.mailboxes.values():
        pipe.xrange(f"{key}:dead", letter_id, letter_id)
    found = [
        (node, key)
        for (node, key), entries in zip(target.mailboxes.items(), await pipe.execute(), strict=True)
        if entries
    ]
    if len(found) == 1:
        ((node, key),) = found
        return (node, key, letter_id)
    if not found:
        _complain(command, f"no dead letter {letter_id} in {target.name}")
    else:
        nodes = ", ".join(node for node, _ in found)
        _complain(
            command,
            f"dead letter id {letter_id} is in more than one node of {target.name} "
            f"({nodes}); choose one with --node",
        )
    return ("", None, letter_id)


async def _all_ids(redis: RedisClient, key: str) -> list[str]:
    """The ids of every dead letter there is now (not those a replay adds meanwhile)."""
    ids: list[str] = []
    after: str | None = None
    while page := await dead_letters(redis, key, count=_PAGE, after=after, retry=CLI_RETRY):
        ids += (letter.id for letter in page)
        after = page[-1].id
    return ids


def _add_target_options(parser: argparse.ArgumentParser) -> None:
    add_redis_option(parser)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--mailbox", metavar="KEY",
        help="the mailbox's stream key, as 'spark-nodes inspect' shows it",
    )  # fmt: skip
    where.add_argument(
        "--graph", metavar="NAME", help="every node of this Redis graph (see --node)"
    )
    parser.add_argument("--node", metavar="ID", help="with --graph: this node only")
    parser.add_argument(
        "--namespace", default="spark_nodes", help="the graph's key prefix (%(default)s)"
    )
    parser.set_defaults(usage_error=parser.error)


def error_line(letter: DeadLetter) -> str:
    """What ``dlq list`` shows as ERROR: the error's type (if recorded) and first line.

    A graph records the type apart (``builtins.ValueError``): it is shown as Python shows
    it in a traceback (``ValueError: bad order``), unless the error already starts with it.
    """
    line = letter.error.partition("\n")[0]
    kind = letter.error_type
    if kind is None:
        return line
    for module in _PYTHON_MODULES:
        kind = kind.removeprefix(module)
    if line.startswith(kind):
        return line
    return f"{kind}: {line}" if line else kind


def _row(letter: DeadLetter) -> list[object]:
    return [
        letter.id, _when(letter.time), letter.reason, letter.deliveries,
        _shorten(error_line(letter), _ERROR_WIDTH), _preview(letter),
    ]  # fmt: skip


def _id_order(letter_id: str) -> tuple[int, int]:
    milliseconds, _, sequence = letter_id.partition("-")
    return (int(milliseconds), int(sequence))


def _json(letter: DeadLetter) -> dict[str, Any]:
    message = letter.message
    details: dict[str, Any] = dict(letter.details)
    if letter.attempts is not None:
        details["attempts"] = letter.attempts  # a count: a number in JSON, not text
    return {
        "id": letter.id,
        "mailbox": letter.mailbox,
        "time": letter.time,
        "reason": letter.reason,
        "error": letter.error,
        "entry": letter.entry,
        "deliveries": letter.deliveries,
        "consumer": letter.consumer,
        "details": details,
        "fields": {name: _base64(value) for name, value in letter.fields.items()},
        "data": _base64(letter.data),
        "message": None
        if message is None
        else {
            "id": message.id,
            "payload": _plain(message.payload),
            "metadata": _plain(message.metadata),
            "is_shutdown": message.is_shutdown,
        },
    }


def _plain(value: Any) -> Any:
    """``value`` as JSON can hold it: bytes become ``{"base64": ...}``, map keys text."""
    if isinstance(value, bytes):
        return {"base64": _base64(value)}
    if isinstance(value, dict):
        return {
            key.decode(errors="backslashreplace") if isinstance(key, bytes) else key: _plain(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _base64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _preview(letter: DeadLetter) -> str:
    message = letter.message
    if message is not None:
        text = repr(message.payload)
    elif letter.data:
        text = f"undecodable {letter.data[:_PREVIEW_WIDTH]!r}"
    elif letter.fields:
        text = "no envelope; " + ", ".join(f"{k}={v!r}" for k, v in letter.fields.items())
    else:
        text = "no envelope"
    return _shorten(text, _PREVIEW_WIDTH)


def _when(stamp: float | None) -> str:
    if stamp is None:
        return "-"
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _complain(command: str, problem: str) -> None:
    print(f"spark-nodes {command}: {problem}", file=sys.stderr)
