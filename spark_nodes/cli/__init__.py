"""The ``spark-nodes`` command (also ``python -m spark_nodes``).

``spark-nodes run module:graph [--input JSON]``: run a graph here, with a live table;
``spark-nodes graph module:graph --format mermaid|dot|json``: print its diagram;
``spark-nodes worker module:graph --redis URL``: serve a graph's nodes in this process;
``spark-nodes inspect --redis URL [--watch]``: what the durable mailboxes of a namespace hold;
``spark-nodes dlq list|replay|drop --redis URL (--mailbox KEY | --graph G [--node N])``:
handle dead letters;
``spark-nodes --version``. Each command lives in a module of this package with
``add_parser(subparsers)``, which registers it and sets ``run``: ``run(args) -> exit status``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from spark_nodes.cli import dlq, graph, inspect, run, worker
from spark_nodes.cli.worker import WorkerSettings

__all__ = ["WorkerSettings", "main", "version_text"]

_COMMANDS = (run, graph, worker, inspect, dlq)


def version_text() -> str:
    """``spark-nodes <version>``: the installed distribution's version."""
    try:
        number = version("spark-nodes")
    except PackageNotFoundError:  # imported from a source tree that was never installed
        number = "unknown (not installed)"
    return f"spark-nodes {number}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (``sys.argv[1:]`` by default); return the exit status.

    0: done; 1: the command failed (the reason is printed); 2: a usage error; 128 + N: a
    run aborted by a second signal N (130 for Ctrl-C).
    """
    parser = argparse.ArgumentParser(
        prog="spark-nodes",
        description="Run and inspect spark_nodes graphs.",
    )
    parser.add_argument("--version", action="version", version=version_text())
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in _COMMANDS:
        command.add_parser(commands)
    args = parser.parse_args(argv)
    status: int = args.run(args)
    return status


if __name__ == "__main__":  # pragma: no cover - python -m spark_nodes.cli
    sys.exit(main())
