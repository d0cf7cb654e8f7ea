"""A ``spark-nodes`` process for the CLI tests: its output read line by line, waits bounded.

Two threads read stdout and stderr as they come, so a test waits for a line the command
prints (``"(Ctrl-C to stop)"``, a log event) instead of sleeping, and every wait has a
deadline: a command that hangs fails the test with what it printed so far, it does not
hang the suite. Leaving the ``with`` block kills a process still running.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Literal, Self

ROOT = Path(__file__).resolve().parent.parent

WAIT_LIMIT = 60.0
"""The longest a test waits for a line or an exit: generous, for a loaded 2-core machine."""

Stream = Literal["out", "err"]


class Command:
    """``python -m spark_nodes *argv`` (or ``program *argv``), started at once."""

    def __init__(self, *argv: str, cwd: Path = ROOT, program: list[str] | None = None) -> None:
        command = [*(program or [sys.executable, "-m", "spark_nodes"]), *argv]
        self.process = subprocess.Popen(
            command,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: dict[Stream, list[str]] = {"out": [], "err": []}
        self._closed: dict[Stream, bool] = {"out": False, "err": False}
        self._changed = threading.Condition()
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=("out", self.process.stdout), daemon=True),
            threading.Thread(target=self._read, args=("err", self.process.stderr), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: Stream, pipe: IO[str]) -> None:
        for line in pipe:
            with self._changed:
                self.lines[stream].append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._closed[stream] = True
            self._changed.notify_all()

    @property
    def out(self) -> str:
        """What it printed on stdout so far."""
        with self._changed:
            return "\n".join(self.lines["out"])

    @property
    def err(self) -> str:
        """What it printed on stderr so far."""
        with self._changed:
            return "\n".join(self.lines["err"])

    def wait_for(self, text: str, stream: Stream = "err", *, after: int = 0) -> int:
        """Wait until a line of ``stream`` (from line ``after`` on) holds ``text``.

        Returns:
            The index of that line (pass ``after=index + 1`` to wait for the next one).

        Raises:
            AssertionError: The stream ended, or ``WAIT_LIMIT`` passed, without such a line.
        """
        deadline = time.monotonic() + WAIT_LIMIT
        with self._changed:
            while True:
                lines = self.lines[stream]
                for index in range(after, len(lines)):
                    if text in lines[index]:
                        return index
                left = deadline - time.monotonic()
                if self._closed[stream] or left <= 0:
                    raise AssertionError(f"no line with {text!r} on std{stream}\n{self.report()}")
                self._changed.wait(left)

    def signal(self, number: signal.Signals) -> None:
        """Send the process a signal."""
        self.process.send_signal(number)

    def finish(self) -> int:
        """Wait (at most ``WAIT_LIMIT`` seconds) for the exit and the end of its output."""
        try:
            status = self.process.wait(timeout=WAIT_LIMIT)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running after {WAIT_LIMIT} s\n{self.report()}") from None
        for reader in self._readers:
            reader.join(timeout=WAIT_LIMIT)
        return status

    def report(self) -> str:
        """What it printed, for a failing test's message."""
        return f"--- stdout:\n{self.out}\n--- stderr:\n{self.err}"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=WAIT_LIMIT)
        for reader in self._readers:
            reader.join(timeout=WAIT_LIMIT)
        if self.process.stdout is not None:
            self.process.stdout.close()
        if self.process.stderr is not None:
            self.process.stderr.close()
