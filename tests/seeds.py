"""Seeds for randomized tests: printed, and replayable with one environment variable.

Every test that draws random numbers (kill timing, pauses, orders) gets its generator from
:func:`seeded_random`. It prints the seed, which pytest shows with a failing test's
captured output, and ``SPARK_NODES_TEST_SEED=N`` replays that run::

    SPARK_NODES_TEST_SEED=N pytest tests/graphs/test_redis_crashes.py -k killed

A test that starts processes passes each one a seed drawn from its generator, in
``$SPARK_NODES_TEST_CHILD_SEED`` (:func:`child_seed`); the child calls
:func:`seed_this_process` when it imports the test's module, which seeds the global
``random`` (the library's retry jitter), so one seed replays the whole run. (Only the draws
replay: what a process is doing when it gets killed still depends on the scheduler.)

Hypothesis tests are derandomized instead (``tests/channels/test_codec.py``): the same
examples every run, so a failure replays by itself.
"""

from __future__ import annotations

import os
import random

__all__ = [
    "CHILD_SEED_VARIABLE",
    "SEED_VARIABLE",
    "child_seed",
    "seed_this_process",
    "seeded_random",
]

SEED_VARIABLE = "SPARK_NODES_TEST_SEED"
"""The environment variable that replays a randomized test with the seed it printed."""
CHILD_SEED_VARIABLE = "SPARK_NODES_TEST_CHILD_SEED"
"""How a test hands a process it starts that process's seed (set by the test, not by you)."""


def seeded_random(test_name: str) -> random.Random:
    """A generator for one test, seeded from ``$SPARK_NODES_TEST_SEED`` or a fresh seed.

    Prints ``seed: N (replay with SPARK_NODES_TEST_SEED=N)``: pytest shows it when the test
    fails (and with ``-s`` or ``-rP`` when it passes).

    Args:
        test_name: The test's name, printed with the seed (several tests may run in one
            session; each gets the same seed when it is given).

    Returns:
        A ``random.Random`` of its own, so other code drawing numbers cannot shift it.

    Raises:
        ValueError: ``$SPARK_NODES_TEST_SEED`` is set but not an integer.
    """
    given = os.environ.get(SEED_VARIABLE, "").strip()
    if given:
        try:
            seed = int(given)
        except ValueError:
            raise ValueError(
                f"{SEED_VARIABLE}={given!r} is not an integer; set it to the seed a test "
                f"printed (seed: N), or unset it for a fresh seed"
            ) from None
    else:
        seed = random.SystemRandom().randrange(1 << 32)
    print(f"{test_name} seed: {seed} (replay with {SEED_VARIABLE}={seed})")
    return random.Random(seed)


def child_seed(rng: random.Random) -> str:
    """A seed for a child process, drawn from the test's generator (pass it in its env).

    Args:
        rng: The test's generator, from :func:`seeded_random`.

    Returns:
        The seed as a string, ready for ``env={..., SEED_VARIABLE: child_seed(rng)}``.
    """
    return str(rng.randrange(1 << 32))


def seed_this_process() -> int | None:
    """Seed the global ``random`` from ``$SPARK_NODES_TEST_CHILD_SEED``, if a test set it.

    For a process a test started; the test process itself never has the variable, so
    importing a module that calls this there changes nothing.

    Returns:
        The seed used, or ``None`` when the variable is not set.
    """
    given = os.environ.get(CHILD_SEED_VARIABLE)
    if not given:
        return None
    seed = int(given)
    random.seed(seed)
    return seed
