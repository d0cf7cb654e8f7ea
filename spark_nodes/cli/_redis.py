"""What the commands that talk to Redis share: the ``--redis`` option, one-shot runs, tables."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Final
from urllib.parse import urlsplit, urlunsplit

import anyio
from redis.exceptions import RedisError

from spark_nodes._redis_client import RETRIABLE, ConnectionRetry, RedisClient, open_client
from spark_nodes.errors import BackendUnavailable

CLI_RETRY: Final = ConnectionRetry(attempts=1)
"""One try: an operator at a terminal wants the error now, not after backoff."""

_UNREACHABLE: Final[tuple[type[Exception], ...]] = (BackendUnavailable, *RETRIABLE)


def add_redis_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--redis URL``, defaulting to ``$SPARK_NODES_REDIS_URL``."""
    parser.add_argument(
        "--redis",
        metavar="URL",
        default=os.environ.get("SPARK_NODES_REDIS_URL"),
        help="redis://, rediss://, unix:// or redis+cluster:// URL "
        "(default: $SPARK_NODES_REDIS_URL)",
    )


def run_on_redis(
    command: str, url: str | None, work: Callable[[RedisClient], Awaitable[int]]
) -> int:
    """Run ``work(client)`` on a client for ``url`` in a new event loop; close the client.

    A failure to reach or read Redis is printed as one line naming the command and the URL
    (its password hidden), and so is a ``ValueError`` (a bad URL or argument); both give
    status 1.

    Returns:
        What ``work`` returned, or 1.
    """
    if not url:
        print(
            f"spark-nodes {command}: give --redis URL (or $SPARK_NODES_REDIS_URL)", file=sys.stderr
        )
        return 1

    async def main() -> int:
        redis = open_client(url)
        try:
            return await work(redis)
        finally:
            await redis.aclose()

    try:
        status: int = anyio.run(main, backend="asyncio")
    except _UNREACHABLE as error:
        cause = error.__cause__ if isinstance(error, BackendUnavailable) else error
        print(
            f"spark-nodes {command}: cannot reach Redis at {_without_password(url)}: {cause}",
            file=sys.stderr,
        )
        return 1
    except RedisError as error:
        print(f"spark-nodes {command}: Redis at {_without_password(url)}: {error}", file=sys.stderr)
        return 1
    except ValueError as error:  # a bad URL, a bad id, a key that is not a mailbox
        print(f"spark-nodes {command}: {error}", file=sys.stderr)
        return 1
    return status


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    """Lay out rows under headers: text columns to the left, numbers to the right."""
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [
        max([len(header)] + [len(row[i]) for row in cells]) for i, header in enumerate(headers)
    ]
    numeric = [all(isinstance(row[i], int | float) for row in rows) for i in range(len(headers))]
    lines = []
    for line in [list(headers), *cells]:
        padded = [
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(line, widths, numeric, strict=True)
        ]
        lines.append("  ".join(padded).rstrip())
    return lines


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
