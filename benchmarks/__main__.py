"""Run the benchmarks: ``python -m benchmarks [--quick] [suite ...]``."""

from __future__ import annotations

import argparse
import logging
import platform
import sys
from collections.abc import Callable
from typing import Any

import structlog

from benchmarks import channels, graphs, redis, redis_graphs
from benchmarks._report import Result, render

SUITES: dict[str, Callable[..., list[Result]]] = {
    "channels": channels.run,
    "graphs": graphs.run,
    "redis": redis.run,
    "redis_graphs": redis_graphs.run,
}

QUICK: dict[str, dict[str, Any]] = {
    "channels": {"n": 50_000, "repeats": 2, "round_trips": 5_000},
    "graphs": {"n": 50_000, "repeats": 2},
    "redis": {"n": 50_000, "repeats": 2, "round_trips": 5_000},
    "redis_graphs": {"n": 5_000, "repeats": 2, "round_trips": 200},
}
"""Each suite's ``--quick`` options: fewer messages and repeats than its defaults."""


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("suites", nargs="*", choices=[*SUITES, []], help="default: all")
    parser.add_argument("--quick", action="store_true", help="fewer messages and repeats")
    args = parser.parse_args()
    # The graphs log "serving" and the like at info; keep the tables readable, and warnings
    # (a retried Redis call, a failed observer) visible, on stderr.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    print(f"python {platform.python_version()} on {platform.machine()}, {platform.system()}")
    missed = False
    for name in args.suites or list(SUITES):
        results = SUITES[name](**(QUICK[name] if args.quick else {}))
        print(f"\n== {name} ==")
        print(render(results))
        missed |= any(r.met is False for r in results)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
