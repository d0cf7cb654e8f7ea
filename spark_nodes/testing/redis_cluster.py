"""A private Redis Cluster for tests: three masters on free loopback ports, one binary.

Each master is a :class:`~spark_nodes.testing.redis_server.RedisServer` started with
``cluster-enabled yes``; the cluster is formed the way ``redis-cli --cluster create`` does
it, without needing ``redis-cli``: each master is given a third of the 16384 slots
(``CLUSTER ADDSLOTS``), the masters are introduced to each other (``CLUSTER MEET``), and the
helper waits until every master reports ``cluster_state:ok`` and knows every slot's owner.
"""

from __future__ import annotations

import contextlib
import random
import socket
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from spark_nodes.testing.redis_server import RedisServer

__all__ = ["SLOTS", "RedisClusterServer", "open_redis_cluster"]

_CLUSTER_OPTIONS = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")

SLOTS = 16384
"""Hash slots of a Redis Cluster."""


class RedisClusterServer:
    """A Redis Cluster of ``masters`` processes (no replicas) on 127.0.0.1.

    Args:
        directory: Where each master keeps its data and its ``nodes.conf`` (one
            sub-directory each).
        masters: How many masters; the slots are split evenly between them.
        binary: The ``redis-server`` to run (:func:`find_redis_server` when omitted).
        options: More ``redis-server`` arguments for every master.
    """

    def __init__(
        self,
        directory: Path,
        *,
        masters: int = 3,
        binary: str | None = None,
        options: Sequence[str] = (),
    ) -> None:
        if masters < 1:
            raise ValueError(f"a cluster needs at least one master, not {masters!r}")
        self.nodes: list[RedisServer] = []
        for n in range(masters):
            node_directory = directory / f"node-{n}"
            node_directory.mkdir(parents=True, exist_ok=True)
            self.nodes.append(
                RedisServer(
                    node_directory,
                    appendonly=False,
                    binary=binary,
                    options=[*_CLUSTER_OPTIONS, *options],
                )
            )
            self.nodes[-1].port = _free_cluster_port()

    @property
    def url(self) -> str:
        """``redis+cluster://127.0.0.1:<port of the first master>``: a client's way in."""
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    @property
    def node_urls(self) -> list[str]:
        """Each master's plain ``redis://`` URL (for a client of that node alone)."""
        return [node.url for node in self.nodes]

    def start(self, timeout: float = 30.0) -> None:
        """Start the masters, share out the slots, join them, and wait for the cluster.

        Raises:
            RuntimeError: A master did not start, or the cluster was not ``ok`` within
                ``timeout`` seconds; the message says what each master reported.
        """
        try:
            for node in self.nodes:
                node.start()
        except BaseException:
            self.kill()
            raise
        share = SLOTS // len(self.nodes)
        for n, node in enumerate(self.nodes):
            first = n * share
            last = SLOTS - 1 if n == len(self.nodes) - 1 else first + share - 1
            _command(node.port, "CLUSTER", "ADDSLOTS", *map(str, range(first, last + 1)))
        for node in self.nodes[1:]:
            _command(node.port, "CLUSTER", "MEET", "127.0.0.1", str(self.nodes[0].port))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self._ready(node) for node in self.nodes):
                return
            time.sleep(0.05)
        reports = "\n".join(
            f"{node.port}: {_command(node.port, 'CLUSTER', 'INFO')!r}" for node in self.nodes
        )
        self.kill()
        raise RuntimeError(f"the Redis Cluster did not form within {timeout}s:\n{reports}")

    def kill(self) -> None:
        """Kill every master at once (SIGKILL)."""
        for node in self.nodes:
            node.kill()

    def _ready(self, node: RedisServer) -> bool:
        info = _command(node.port, "CLUSTER", "INFO")
        return (
            "cluster_state:ok" in info
            and f"cluster_known_nodes:{len(self.nodes)}" in info
            and f"cluster_slots_assigned:{SLOTS}" in info
        )


def _free_cluster_port() -> int:
    """A free port whose cluster bus port (10000 higher) is free too.

    Redis 6.2 has no ``cluster-port`` option: the bus is always on port + 10000, so the
    port must be at most 55535.
    """
    rng = random.SystemRandom()
    for _ in range(1000):
        port = rng.randrange(20000, 55536)
        try:
            with contextlib.ExitStack() as stack:
                for candidate in (port, port + 10000):
                    probe = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                    probe.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("no free pair of ports (port, port + 10000) for a cluster node")


def _command(port: int, *words: str) -> str:
    """Send one command to the server on ``port`` and return its reply's text.

    Good for the replies used here (a status or one bulk string); an error reply raises.

    Raises:
        RuntimeError: The server answered with an error.
    """
    request = f"*{len(words)}\r\n".encode() + b"".join(
        f"${len(word.encode())}\r\n{word}\r\n".encode() for word in words
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request)
        reply = b""
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            reply += chunk
            if reply.startswith((b"+", b"-")) and reply.endswith(b"\r\n"):
                break
            if reply.startswith(b"$"):
                header, _, body = reply.partition(b"\r\n")
                if len(body) >= int(header[1:]) + 2:
                    break
    text = reply.decode(errors="replace")
    if text.startswith("-"):
        raise RuntimeError(f"redis at port {port}: {' '.join(words[:2])}: {text.strip()}")
    return text


@contextlib.contextmanager
def open_redis_cluster(*, masters: int = 3) -> Iterator[RedisClusterServer]:
    """Run a private Redis Cluster in a temporary directory for the ``with`` block.

    Raises:
        FileNotFoundError: No ``redis-server`` binary was found.
        RuntimeError: The cluster did not form.
    """
    with tempfile.TemporaryDirectory(prefix="spark-nodes-redis-cluster-") as directory:
        cluster = RedisClusterServer(Path(directory), masters=masters)
        cluster.start()
        try:
            yield cluster
        finally:
            cluster.kill()
