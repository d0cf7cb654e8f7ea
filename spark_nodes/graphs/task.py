"""``Task``, ``TaskType`` and ``Budget``: what a graph run is asked to do, and its limits."""

from __future__ import annotations

import enum
import math
import os
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DEFAULT_MAX_STEPS", "Budget", "Task", "TaskType"]

DEFAULT_MAX_STEPS = 1000
"""``Task.max_steps`` by default: far more than an agent's tool loop, and finite."""


class TaskType(enum.StrEnum):
    """How a graph runs a task."""

    STANDARD = "standard"
    """One pass: the start node processes the input, each output flows along the edges,
    and the run ends when every message it caused has been handled."""
    LONG_RUNNING = "long_running"
    """Every node's worker loop runs until the graph is shut down or stopped."""


@dataclass(frozen=True, slots=True)
class Budget:
    """Limits of a run; reaching one stops the run gracefully (the result says ``budget``).

    A graceful stop stops taking new messages, lets the ones in flight finish for up to
    ``grace_period`` seconds, then cancels what is left.

    Attributes:
        max_seconds: Wall-clock limit, or ``None``.
        max_messages: Limit on messages handled (processed or dead-lettered) by all nodes
            together, or ``None``.
        grace_period: Seconds in-flight work may take after any graceful stop.

    Raises:
        ValueError: A limit is not positive.
    """

    max_seconds: float | None = None
    max_messages: int | None = None
    grace_period: float = 5.0

    def __post_init__(self) -> None:
        if self.max_seconds is not None and not (
            self.max_seconds > 0 and math.isfinite(self.max_seconds)
        ):
            raise ValueError(f"max_seconds must be a positive number, not {self.max_seconds!r}")
        if self.max_messages is not None and self.max_messages < 1:
            raise ValueError(f"max_messages must be >= 1, not {self.max_messages!r}")
        if not self.grace_period >= 0:
            raise ValueError(f"grace_period must be >= 0, not {self.grace_period!r}")


@dataclass(frozen=True, slots=True)
class Task:
    """A run's input, mode and limits.

    Attributes:
        inputs: What the start node receives first: a :class:`NodeMessage` or plain content.
            A one-pass run always runs the start node, with ``None`` if there is no input;
            a long-running graph without input waits for ``graph.send``.
        type: :class:`TaskType`; ``STANDARD`` by default.
        budget: Limits; none by default.
        idle_timeout: Shut down gracefully after this many seconds in which no message was
            handled; ``None`` (the default) never does.
        checkpoint_path: Write a checkpoint here every ``checkpoint_every`` seconds while the
            run goes on, and once more when it ends.
        checkpoint_every: Seconds between checkpoints (with ``checkpoint_path``).
        max_steps: Steps a message may take round cycles (each hop along an edge of a
            cycle, and each ``goto``, is one; outputs carry ``metadata["steps"]``). The
            message that would take one more is dead-lettered with
            :class:`~spark_nodes.errors.StepLimitExceeded` (phase ``"max_steps"``), so a
            self-feeding loop ends. ``None`` lifts the limit. LangGraph's recursion limit
            is the same guard.

    Raises:
        ValueError: ``idle_timeout``, ``checkpoint_every`` or ``max_steps`` is not positive,
            or only one of ``checkpoint_path`` and ``checkpoint_every`` is given.
    """

    inputs: Any = None
    type: TaskType = TaskType.STANDARD
    budget: Budget = field(default_factory=Budget)
    idle_timeout: float | None = None
    checkpoint_path: str | os.PathLike[str] | None = None
    checkpoint_every: float | None = None
    max_steps: int | None = DEFAULT_MAX_STEPS

    def __post_init__(self) -> None:
        object.__setattr__(self, "type", TaskType(self.type))
        if self.idle_timeout is not None and not self.idle_timeout > 0:
            raise ValueError(f"idle_timeout must be positive, not {self.idle_timeout!r}")
        if (self.checkpoint_path is None) != (self.checkpoint_every is None):
            raise ValueError("checkpoint_path and checkpoint_every go together")
        if self.max_steps is not None and not (
            isinstance(self.max_steps, int) and self.max_steps >= 1
        ):
            raise ValueError(f"max_steps must be an int >= 1 or None, not {self.max_steps!r}")
        if self.checkpoint_every is not None and not self.checkpoint_every > 0:
            raise ValueError(f"checkpoint_every must be positive, not {self.checkpoint_every!r}")
