"""Result rows and the printed table."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    """A baseline (measured in the same run, or a fixed limit) and the ratio allowed.

    ``max_ratio`` bounds value/baseline from above (times, memory), ``min_ratio`` from below
    (throughput); neither set means the row is for information.
    """

    baseline: float
    max_ratio: float | None
    baseline_name: str
    min_ratio: float | None = None


@dataclass(frozen=True)
class Result:
    """One measured figure, optionally compared with a baseline."""

    name: str
    value: float
    unit: str
    target: Target | None = None

    @property
    def ratio(self) -> float | None:
        return None if self.target is None else self.value / self.target.baseline

    @property
    def met(self) -> bool | None:
        target = self.target
        if target is None or (target.max_ratio is None and target.min_ratio is None):
            return None
        ratio = self.ratio
        assert ratio is not None
        if target.max_ratio is not None and ratio > target.max_ratio:
            return False
        return target.min_ratio is None or ratio >= target.min_ratio


def render(results: list[Result]) -> str:
    """Format results as an aligned table."""
    lines = []
    width = max(len(r.name) for r in results)
    for r in results:
        line = f"{r.name:<{width}}  {r.value:9.3f} {r.unit:<7}"
        if r.target is not None:
            line += f" {r.ratio:5.2f}x {r.target.baseline_name}"
            if r.met is not None:
                verdict = "ok" if r.met else "MISSED"
                bound = (
                    f"<= {r.target.max_ratio}x"
                    if r.target.max_ratio is not None
                    else f">= {r.target.min_ratio}x"
                )
                line += f" (target {bound}: {verdict})"
        lines.append(line)
    return "\n".join(lines)
