"""Result rows and the printed table."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    """A baseline measured in the same run and the largest ratio allowed (None: info only)."""

    baseline: float
    max_ratio: float | None
    baseline_name: str


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
        if self.target is None or self.target.max_ratio is None:
            return None
        assert self.ratio is not None
        return self.ratio <= self.target.max_ratio


def render(results: list[Result]) -> str:
    """Format results as an aligned table."""
    lines = []
    width = max(len(r.name) for r in results)
    for r in results:
        line = f"{r.name:<{width}}  {r.value:9.3f} {r.unit:<7}"
        if r.target is not None:
            line += f" {r.ratio:5.2f}x {r.target.baseline_name}"
            if r.target.max_ratio is not None:
                verdict = "ok" if r.met else "MISSED"
                line += f" (target <= {r.target.max_ratio}x: {verdict})"
        lines.append(line)
    return "\n".join(lines)
