from __future__ import annotations

import pytest

from spark_nodes import Backoff
from spark_nodes.channels import ConnectionRetry
from spark_nodes.nodes import RestartPolicy, RetryPolicy


def test_delays_grow_by_the_multiplier_up_to_the_cap() -> None:
    backoff = Backoff(initial_delay=0.5, max_delay=3.0, multiplier=2.0)
    assert [backoff.delay(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 3.0]


def test_a_very_long_run_of_failures_waits_the_cap_instead_of_overflowing() -> None:
    assert Backoff(initial_delay=1.0, max_delay=5.0).delay(5_000) == 5.0


def test_jitter_spreads_each_delay_within_its_fraction() -> None:
    backoff = Backoff(initial_delay=1.0, max_delay=1.0, jitter=0.5)
    delays = {backoff.delay(1) for _ in range(200)}
    assert all(0.5 <= d <= 1.5 for d in delays)
    assert len(delays) > 1


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"initial_delay": -1.0}, "initial_delay must be finite seconds >= 0"),
        ({"max_delay": float("inf")}, "max_delay must be finite seconds >= 0"),
        ({"multiplier": 0.5}, "multiplier must be >= 1"),
        ({"jitter": 1.0}, r"jitter is a fraction in \[0, 1\)"),
    ],
)
def test_bad_backoffs_are_refused_with_the_field_named(
    arguments: dict[str, float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Backoff(**arguments)


def test_retries_restarts_and_reconnects_are_all_backoffs() -> None:
    for policy in (RetryPolicy(), RestartPolicy(), ConnectionRetry()):
        assert isinstance(policy, Backoff)
    assert RestartPolicy(initial_delay=0.2).delay(2) == 0.4  # no jitter by default
    with pytest.raises(ValueError, match="attempts must be >= 1"):
        ConnectionRetry(attempts=0)
    with pytest.raises(ValueError, match="max_delay must be finite"):
        ConnectionRetry(max_delay=-1)
