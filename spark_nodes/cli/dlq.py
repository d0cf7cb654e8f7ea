"""``spark-nodes dlq list|replay|drop --mailbox KEY``: a durable mailbox's dead letters.

``list`` shows them oldest first (id, when, why, the error's first line, deliveries, the
payload), a page at a time; ``replay`` puts chosen ones (``--id``) or all of them
(``--all``) back into the mailbox, each atomically; ``drop`` deletes them. ``--mailbox``
takes the stream key ``spark-nodes inspect`` shows.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from datetime import UTC, datetime
from typing import Any, Final

from redis.asyncio import Redis

from spark_nodes.channels.inspection import (
    DeadLetter,
    dead_letters,
    drop_dead_letter,
    replay_dead_letter,
)
from spark_nodes.cli._args import positive_int
from spark_nodes.cli._redis import CLI_RETRY, add_redis_option, format_table, run_on_redis

__all__ = ["add_parser", "run"]

_PAGE: Final = 1000  # dead letters read per round trip by --all
_ERROR_WIDTH: Final = 50
_PREVIEW_WIDTH: Final = 40


def add_parser(commands: Any) -> None:
    """Register the ``dlq`` command and its actions: ``list``, ``replay``, ``drop``."""
    parser = commands.add_parser(
        "dlq",
        help="list, replay or drop a mailbox's dead letters",
        description="List, replay or drop the dead letters of a durable mailbox.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    lister = actions.add_parser(
        "list",
        help="show dead letters, oldest first",
        description="Show a mailbox's dead letters, oldest first, a page at a time.",
    )
    _add_mailbox_options(lister)
    lister.add_argument(
        "--count", type=positive_int, default=20, help="dead letters to show (%(default)s)"
    )
    lister.add_argument("--after", metavar="ID", help="start after this dead letter (paging)")
    lister.add_argument("--json", action="store_true", help="print JSON, for scripts")
    for action, text in (
        ("replay", "put dead letters back into the mailbox, as new entries"),
        ("drop", "delete dead letters for good"),
    ):
        chooser = actions.add_parser(action, help=text, description=text.capitalize() + ".")
        _add_mailbox_options(chooser)
        which = chooser.add_mutually_exclusive_group(required=True)
        which.add_argument(
            "--id", dest="ids", metavar="ID", nargs="+", action="extend", help="dead letter ids"
        )
        which.add_argument("--all", action="store_true", help="every dead letter there is now")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the chosen action; return 0, or 1 if a dead letter or Redis could not be handled."""
    command = f"dlq {args.action}"
    action = {"list": _list, "replay": _replay, "drop": _drop}[args.action]

    async def work(redis: Redis) -> int:
        if not await redis.exists(args.mailbox, f"{args.mailbox}:dead"):
            _complain(command, f"no mailbox {args.mailbox!r}; 'spark-nodes inspect' lists them")
            return 1
        status: int = await action(redis, args)
        return status

    return run_on_redis(command, args.redis, work)


async def _list(redis: Redis, args: argparse.Namespace) -> int:
    key = args.mailbox
    letters = await dead_letters(redis, key, count=args.count, after=args.after, retry=CLI_RETRY)
    total: int = await redis.xlen(f"{key}:dead")
    more = bool(letters) and bool(await redis.xrange(f"{key}:dead", f"({letters[-1].id}", "+", 1))
    next_after = letters[-1].id if more else None
    if args.json:
        document = {
            "mailbox": key,
            "total": total,
            "dead_letters": [_json(letter) for letter in letters],
            "next_after": next_after,
        }
        print(json.dumps(document, indent=2))
        return 0
    if not letters:
        print(f"no dead letters in {key}" + (f" after {args.after}" if args.after else ""))
        return 0
    rows = [
        [letter.id, _when(letter.time), letter.reason, letter.deliveries,
         _shorten(letter.error.partition("\n")[0], _ERROR_WIDTH), _preview(letter)]
        for letter in letters
    ]  # fmt: skip
    for line in format_table(["ID", "TIME", "REASON", "DELIVERIES", "ERROR", "PAYLOAD"], rows):
        print(line)
    summary = f"{len(letters)} of {total} dead letters in {key}"
    if next_after is not None:
        summary += f"; next page: --after {next_after}"
    print(summary)
    return 0


async def _replay(redis: Redis, args: argparse.Namespace) -> int:
    key = args.mailbox
    ids = await _all_ids(redis, key) if args.all else args.ids
    replayed = failures = 0
    for letter_id in ids:
        try:
            done = await replay_dead_letter(redis, key, letter_id, retry=CLI_RETRY)
        except ValueError as error:
            _complain("dlq replay", str(error))
            failures += 1
            continue
        if done:
            replayed += 1
            if not args.all:
                print(f"replayed {letter_id}")
        elif not args.all:  # with --all, one replayed or dropped meanwhile is not an error
            _complain("dlq replay", f"no dead letter {letter_id} in {key}")
            failures += 1
    print(f"replayed {replayed} of {len(ids)} dead letters to {key}")
    return 1 if failures else 0


async def _drop(redis: Redis, args: argparse.Namespace) -> int:
    key = args.mailbox
    if args.all:
        ids = await _all_ids(redis, key)
        dropped = 0
        for start in range(0, len(ids), _PAGE):  # one XDEL per page, not per letter
            dropped += await redis.xdel(f"{key}:dead", *ids[start : start + _PAGE])
        print(f"dropped {dropped} dead letters of {key}")
        return 0
    dropped = failures = 0
    for letter_id in args.ids:
        try:
            done = await drop_dead_letter(redis, key, letter_id, retry=CLI_RETRY)
        except ValueError as error:
            _complain("dlq drop", str(error))
            failures += 1
            continue
        if done:
            dropped += 1
            print(f"dropped {letter_id}")
        else:
            _complain("dlq drop", f"no dead letter {letter_id} in {key}")
            failures += 1
    print(f"dropped {dropped} of {len(args.ids)} dead letters of {key}")
    return 1 if failures else 0


async def _all_ids(redis: Redis, key: str) -> list[str]:
    """The ids of every dead letter there is now (not those a replay adds meanwhile)."""
    ids: list[str] = []
    after: str | None = None
    while page := await dead_letters(redis, key, count=_PAGE, after=after, retry=CLI_RETRY):
        ids += (letter.id for letter in page)
        after = page[-1].id
    return ids


def _add_mailbox_options(parser: argparse.ArgumentParser) -> None:
    add_redis_option(parser)
    parser.add_argument(
        "--mailbox", metavar="KEY", required=True,
        help="the mailbox's stream key, as 'spark-nodes inspect' shows it",
    )  # fmt: skip


def _json(letter: DeadLetter) -> dict[str, Any]:
    message = letter.message
    return {
        "id": letter.id,
        "time": letter.time,
        "reason": letter.reason,
        "error": letter.error,
        "entry": letter.entry,
        "deliveries": letter.deliveries,
        "consumer": letter.consumer,
        "details": letter.details,
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
