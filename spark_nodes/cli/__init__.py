"""The ``spark-nodes`` command (also ``python -m spark_nodes``).

``spark-nodes worker module:graph --redis URL``: serve a graph's nodes in this process;
``spark-nodes inspect --redis URL``: what the durable mailboxes of a namespace hold;
``spark-nodes dlq list|replay|drop --redis URL --mailbox KEY``: handle dead letters.
Each command lives in a module of this package with ``add_parser(subparsers)``, which
registers it and sets ``run``: ``run(args) -> exit status``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from spark_nodes.cli import dlq, inspect, worker

__all__ = ["main"]

_COMMANDS = (worker, inspect, dlq)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (``sys.argv[1:]`` by default); return the exit status.

    0: done; 1: the command failed (the reason is printed); 2: a usage error.
    """
    parser = argparse.ArgumentParser(
        prog="spark-nodes",
        description="Run and inspect spark_nodes graphs.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in _COMMANDS:
        command.add_parser(commands)
    args = parser.parse_args(argv)
    status: int = args.run(args)
    return status


if __name__ == "__main__":  # pragma: no cover - python -m spark_nodes.cli
    sys.exit(main())
