"""``NodeConfig`` and the policies it holds: retries, restarts, and what to do on failure."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from spark_nodes.backoff import Backoff
from spark_nodes.errors import NonRetriableError

__all__ = ["NodeConfig", "OnError", "RestartPolicy", "RetryPolicy"]


class OnError(enum.StrEnum):
    """What a node does with a message whose processing failed on its last attempt."""

    DEAD_LETTER = "dead_letter"
    """Send it to the graph's dead-letter channel and go on with the next message."""
    STOP_GRAPH = "stop_graph"
    """Dead-letter it, then stop the whole graph gracefully (the result says ``error``)."""


@dataclass(frozen=True, slots=True)
class RetryPolicy(Backoff):
    """How often and how fast ``process`` is retried for one message.

    A :class:`~spark_nodes.backoff.Backoff`: attempt ``n`` (from 1) that fails waits
    ``initial_delay * multiplier ** (n - 1)`` seconds, capped at ``max_delay`` and spread by
    ``+- jitter`` (a fraction), before attempt ``n + 1``. After ``max_attempts`` the message
    is dead-lettered. Exceptions in ``give_up_on``, and
    :class:`~spark_nodes.errors.NonRetriableError`, are not retried.

    Raises:
        ValueError: A count or delay is out of range.
    """

    max_attempts: int = 1
    initial_delay: float = 0.1
    max_delay: float = 10.0
    multiplier: float = 2.0
    jitter: float = 0.1
    give_up_on: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(
                f"max_attempts must be >= 1 (1 means no retry), not {self.max_attempts}"
            )
        Backoff.__post_init__(self)

    def should_retry(self, attempt: int, error: BaseException) -> bool:
        """Whether a failure of attempt ``attempt`` with ``error`` gets another attempt."""
        return (
            attempt < self.max_attempts
            and not isinstance(error, self.give_up_on)
            and not isinstance(error, NonRetriableError)
        )


@dataclass(frozen=True, slots=True)
class RestartPolicy(Backoff):
    """How the graph restarts a worker loop (``go()``) that crashed.

    A :class:`~spark_nodes.backoff.Backoff` (without jitter by default): a loop may be
    restarted ``max_restarts`` times within any ``within_seconds`` window, waiting
    ``initial_delay * multiplier ** (n - 1)`` (capped at ``max_delay``) before restart
    ``n``. One more crash in the window fails the run with
    :class:`~spark_nodes.errors.GraphFailed`.

    Raises:
        ValueError: A count or delay is out of range.
    """

    max_restarts: int = 3
    within_seconds: float = 60.0
    initial_delay: float = 0.05
    max_delay: float = 5.0
    multiplier: float = 2.0
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if self.max_restarts < 0:
            raise ValueError(f"max_restarts must be >= 0, not {self.max_restarts}")
        if self.within_seconds <= 0:
            raise ValueError(f"within_seconds must be > 0, not {self.within_seconds}")
        Backoff.__post_init__(self)


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """A node's settings.

    Attributes:
        live: Marks a continuous worker (the seed's "continuous mode"): it runs only in a
            ``LONG_RUNNING`` graph; a one-pass ``STANDARD`` run refuses it.
        retry: How ``process`` is retried for a failing message.
        on_error: What happens after the last failed attempt (dead-letter, or also stop
            the graph).
        restart: How a crashed worker loop is restarted.
        concurrency: Worker loops sharing the node's mailbox. With more than one, messages
            are handled in parallel and their order is no longer FIFO.
        mailbox_maxsize: Bound of the default mailbox (0: unbounded); a bounded mailbox
            makes senders wait (backpressure).

    Raises:
        ValueError: ``concurrency`` < 1 or ``mailbox_maxsize`` < 0.
    """

    live: bool = False
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    on_error: OnError = OnError.DEAD_LETTER
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    concurrency: int = 1
    mailbox_maxsize: int = 0

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, not {self.concurrency}")
        if self.mailbox_maxsize < 0:
            raise ValueError(
                f"mailbox_maxsize must be >= 0 (0: unbounded), not {self.mailbox_maxsize}"
            )
        object.__setattr__(self, "on_error", OnError(self.on_error))
