"""Run the benchmarks: ``python -m benchmarks [--quick] [suite ...]``."""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Callable

from benchmarks import channels, graphs, redis
from benchmarks._report import Result, render

SUITES: dict[str, Callable[..., list[Result]]] = {
    "channels": channels.run,
    "graphs": graphs.run,
    "redis": redis.run,
}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("suites", nargs="*", choices=[*SUITES, []], help="default: all")
    parser.add_argument("--quick", action="store_true", help="fewer messages and repeats")
    args = parser.parse_args()
    print(f"python {platform.python_version()} on {platform.machine()}, {platform.system()}")
    missed = False
    for name in args.suites or list(SUITES):
        options = {"n": 50_000, "repeats": 2, "round_trips": 5_000} if args.quick else {}
        results = SUITES[name](**options)
        print(f"\n== {name} ==")
        print(render(results))
        missed |= any(r.met is False for r in results)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
