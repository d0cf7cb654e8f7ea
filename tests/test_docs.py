"""The examples of docs/testing.md run as tests, as a user's test files would."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

DOC = Path(__file__).parent.parent / "docs" / "testing.md"
_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def _test_modules() -> list[str]:
    """The python blocks that are whole test modules (fragments say so in a comment)."""
    blocks = _BLOCK.findall(DOC.read_text())
    return [block for block in blocks if "def test_" in block and "(a fragment" not in block]


def test_the_testing_docs_have_runnable_examples() -> None:
    assert len(_test_modules()) >= 4  # graph_runner, Redis, run_inline, taps


@pytest.mark.parametrize("index", range(len(_test_modules())))
def test_a_testing_docs_example_passes(pytester: pytest.Pytester, index: int) -> None:
    pytester.makepyfile(**{f"test_doc_example_{index}": _test_modules()[index]})
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    result = pytester.runpytest_subprocess(
        "-p", "no:looptime_plugin", "-p", "no:looptime_chronometers",
        "-p", "no:looptime_timeproxies", "-p", "no:cacheprovider", timeout=120,
    )  # fmt: skip
    result.assert_outcomes(passed=result.parseoutcomes().get("passed", 0), failed=0, errors=0)
    assert result.parseoutcomes().get("passed", 0) >= 1, result.stdout.str()
