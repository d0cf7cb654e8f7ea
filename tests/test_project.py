"""The README's promises: two set-up commands CI runs exactly, and code that runs as shown."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def readme_setup_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Set up", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert block is not None, "README's 'Set up' section needs a ```sh block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_gives_two_setup_commands_install_and_demo_then_tests() -> None:
    install_and_demo, tests = readme_setup_commands()
    assert "pip install -e '.[dev]'" in install_and_demo
    assert "examples.hello" in install_and_demo
    assert "pytest" in tests


def test_ci_runs_the_readme_commands_verbatim() -> None:
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    for command in readme_setup_commands():
        assert command in ci_lines, f".ci/run must run the README command: {command}"


def test_the_readme_taste_runs(capsys: pytest.CaptureFixture[str]) -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## A taste\n\n```python\n(.*?)```", readme, re.DOTALL)
    assert block is not None
    exec(compile(block.group(1), "README.md", "exec"), {"__name__": "readme"})
    assert capsys.readouterr().out.splitlines() == [
        "{'text': 'a one-pass run', 'score': 1.4}",
        "{'text': 'is this long?', 'score': 1.3}",
        "high",  # the answer to the invoke
        "{'text': 'hi', 'score': 0.2}",
        "{'text': 'a much longer message', 'score': 2.1}",
    ]


def test_the_readme_and_the_examples_use_the_structured_start_not_a_testing_helper() -> None:
    for path in [ROOT / "README.md", *sorted((ROOT / "examples").glob("*.py"))]:
        assert "wait_all_tasks_blocked" not in path.read_text(), (
            f"{path.name}: start a graph with open_run or task_group.start(graph.run, ...) "
            f"and wait with wait_idle() or an event, not anyio.wait_all_tasks_blocked()"
        )
