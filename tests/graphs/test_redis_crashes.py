"""Graphs on Redis with real worker processes that are killed, frozen and poisoned.

Each test runs a private ``redis-server`` (it kills and restarts it) and worker processes
started with ``python -m spark_nodes worker``; the graphs are in
``redis_worker_graphs.py``. The test process is the supervisor: it restarts a worker that
died, as a process manager would, and checks what the workers recorded in Redis.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from spark_nodes import Graph
from spark_nodes._redis_client import RedisClient
from spark_nodes.channels import ChannelUnavailable, RedisChannel
from spark_nodes.testing import RedisServer, open_redis_server
from spark_nodes.testing.redis_cluster import RedisClusterServer
from tests.graphs import redis_worker_graphs
from tests.redis_support import purge
from tests.seeds import CHILD_SEED_VARIABLE, child_seed, seeded_random

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # redis-py is asyncio only


class Workers:
    """Worker processes of one graph, supervised by the test."""

    def __init__(
        self,
        url: str,
        factory: str,
        namespace: str,
        logs: Path,
        seeds: random.Random | None = None,
    ) -> None:
        self.url = url
        self.factory = factory
        self.namespace = namespace
        self.logs = logs
        self.nodes: list[str] = []
        self.processes: list[subprocess.Popen[bytes]] = []
        self.spawns: list[int] = []
        self.restarts = 0
        # Each process gets a seed of its own from here (for retry jitter): a generator
        # apart from the test's, so that how many restarts a run needed does not shift
        # the test's own draws (kill timing) when it is replayed.
        self.seeds = seeds

    def start(self, nodes: str) -> int:
        self.nodes.append(nodes)
        self.spawns.append(0)
        self.processes.append(self._spawn(len(self.nodes) - 1))
        return len(self.processes) - 1

    def _log_path(self, index: int) -> Path:
        return self.logs / f"worker-{index}-{self.spawns[index]}.log"

    def serving(self, index: int) -> bool:
        """Whether the current process of worker ``index`` has logged that it serves."""
        path = self._log_path(index)
        return path.exists() and '"event": "serving"' in path.read_text(errors="replace")

    def _spawn(self, index: int) -> subprocess.Popen[bytes]:
        self.spawns[index] += 1
        command = [
            sys.executable, "-m", "spark_nodes", "worker",
            f"tests.graphs.redis_worker_graphs:{self.factory}",
            "--redis", self.url, "--namespace", self.namespace,
            "--nodes", self.nodes[index], "--grace", "5",
            "--log-level", "info", "--log-format", "json",
        ]  # fmt: skip
        env = None
        if self.seeds is not None:
            env = {**os.environ, CHILD_SEED_VARIABLE: child_seed(self.seeds)}
        with self._log_path(index).open("ab") as log:  # the child keeps a copy
            return subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=log, env=env)

    def kill(self, index: int) -> None:
        process = self.processes[index]
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait()
        self.processes[index] = self._spawn(index)

    def revive_dead(self) -> int:
        """Restart the workers that exited on their own; return how many."""
        revived = 0
        for index, process in enumerate(self.processes):
            if process.poll() is not None:
                self.processes[index] = self._spawn(index)
                revived += 1
        self.restarts += revived
        return revived

    def pid(self, index: int) -> int:
        return self.processes[index].pid

    def exit_codes(self, within: float) -> list[int | None]:
        deadline = time.monotonic() + within
        codes: list[int | None] = []
        for process in self.processes:
            try:
                codes.append(process.wait(timeout=max(0.1, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                codes.append(None)
        return codes

    def terminate(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGCONT)  # a frozen one could not die
                process.kill()
            process.wait()

    def log(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
            for path in sorted(self.logs.glob("worker-*.log"))
        )


@contextlib.contextmanager
def supervised(
    url: str, factory: str, logs: Path, seeds: random.Random | None = None
) -> Iterator[Workers]:
    workers = Workers(url, factory, f"crash-{os.getpid()}-{factory}", logs, seeds)
    try:
        yield workers
    finally:
        workers.terminate()


@contextlib.asynccontextmanager
async def client_graph(factory: str, url: str, namespace: str) -> AsyncIterator[Graph]:
    """The graph as the test sees it: to send, shut down and read the state."""
    graph: Graph = getattr(redis_worker_graphs, factory)()
    graph.use_redis(url, namespace=namespace)
    try:
        yield graph
    finally:
        await graph.aclose()


async def mailbox_depth(graph: Graph) -> int:
    """Entries still in the graph's mailboxes: undelivered, prefetched or in progress."""
    redis = _client(graph)
    total = 0
    for node in graph.nodes.values():
        assert isinstance(node.mailbox, RedisChannel)
        total += await redis.xlen(node.mailbox.key)
    return total


async def pending_entries(graph: Graph) -> int:
    redis = _client(graph)
    total = 0
    for node in graph.nodes.values():
        mailbox = node.mailbox
        assert isinstance(mailbox, RedisChannel)
        with contextlib.suppress(Exception):  # no group yet: nothing pending
            summary: Any = await redis.xpending(mailbox.key, mailbox.group)
            total += summary["pending"]
    return total


async def dead_letter_count(graph: Graph) -> int:
    redis = _client(graph)
    total = 0
    for node in graph.nodes.values():
        assert isinstance(node.mailbox, RedisChannel)
        total += await redis.xlen(f"{node.mailbox.key}:dead")
    return total


async def dead_letter_reasons(graph: Graph) -> list[tuple[str, str, str]]:
    """(node, reason, error) of every dead letter: what a failed crash test prints."""
    redis = _client(graph)
    reasons = []
    for node_id, node in graph.nodes.items():
        assert isinstance(node.mailbox, RedisChannel)
        entries: Any = await redis.xrange(f"{node.mailbox.key}:dead")
        for _, fields in entries:
            reason, error = fields.get(b"reason", b""), fields.get(b"error", b"")
            reasons.append((node_id, reason.decode(), error.decode()[:200]))
    return reasons


def _client(graph: Graph) -> RedisClient:
    return graph.redis


async def done_count(graph: Graph) -> int:
    return len([key for key in await graph.state.keys() if key.startswith("done:")])


async def under_way(graph: Graph) -> bool:
    """Whether some messages went through every node, and more are on their way."""
    return await done_count(graph) >= 50


async def send_all(graph: Graph, count: int) -> None:
    """Send ``count`` numbers with idempotency keys; re-send what an outage refused."""

    async def send(number: int) -> None:
        metadata = {"idempotency_key": f"n-{number}"}
        while True:
            try:
                await graph.send("first", {"n": number}, metadata=metadata)
            except ChannelUnavailable:
                await anyio.sleep(0.2)  # Redis is restarting: the key makes a re-send safe
            else:
                return

    for start in range(0, count, 100):
        async with anyio.create_task_group() as tasks:
            for number in range(start, min(count, start + 100)):
                tasks.start_soon(send, number)


async def poll_until(condition: Callable[[], Awaitable[bool]], interval: float = 0.05) -> None:
    """Wait until ``condition()`` holds: what other processes do has no event to await."""
    while not await condition():  # noqa: ASYNC110 - polling another process's work
        await anyio.sleep(interval)


async def wait_ready(workers: Workers) -> None:
    """Wait until every current worker process serves (it logs ``serving``).

    A worker that starts after a shutdown has gone through belongs to the graph's next
    run, so the test shuts down only once every restarted worker has joined this one.
    """

    async def all_serving() -> bool:
        workers.revive_dead()
        return all(workers.serving(index) for index in range(len(workers.processes)))

    await poll_until(all_serving)


async def wait_drained(graph: Graph, workers: Workers, produced: anyio.Event) -> None:
    """Wait until everything sent went through (the mailboxes are empty), reviving workers."""

    async def drained() -> bool:
        workers.revive_dead()
        try:
            return produced.is_set() and await mailbox_depth(graph) == 0
        except RedisConnectionError:
            return False  # Redis is restarting: look again in a moment

    await poll_until(drained, interval=0.2)


async def send_while_killing(
    graph: Graph,
    workers: Workers,
    total: int,
    rng: random.Random,
    every: tuple[float, float],
    *,
    within: float,
    after_kill: Callable[[int], None] | None = None,
) -> tuple[int, list[int | None]]:
    """Send ``total`` numbers while a random worker is SIGKILLed every ``every`` seconds
    (``after_kill(kills)`` after each kill), until all went through; then shut the graph
    down. Returns the kills and the workers' exit codes; prints their logs on a failure."""
    produced = anyio.Event()
    kills = 0
    try:
        with anyio.fail_after(within):
            async with anyio.create_task_group() as tasks:

                async def produce() -> None:
                    await send_all(graph, total)
                    produced.set()

                async def kill_now_and_then() -> None:
                    nonlocal kills
                    while True:
                        await anyio.sleep(rng.uniform(*every))
                        workers.kill(rng.randrange(len(workers.processes)))
                        kills += 1
                        if after_kill is not None:
                            after_kill(kills)

                tasks.start_soon(produce)
                tasks.start_soon(kill_now_and_then)
                await wait_drained(graph, workers, produced)
                tasks.cancel_scope.cancel()
            await wait_ready(workers)
            await graph.shutdown()
            return kills, workers.exit_codes(within=60)
    except BaseException:
        print(workers.log())
        raise


LOOPS_PER_WORKER = 1
"""Worker loops per process in the crash test: ``spark-nodes worker`` without
``--concurrency`` runs each node's ``config.concurrency`` loops, and ``Step`` and
``IdempotentSink`` keep the default of 1."""


def duplicate_bound(*, processes: int, worker_kills: int, redis_kills: int, revived: int) -> int:
    """The most duplicate deliveries the crash test's crashes can cause (docs/redis.md,
    "Duplicates are bounded").

    A delivery is recorded at the start of ``process`` (``deliveries:<node>``), and the
    message is settled by a fenced commit (``COMMIT``, forward and ack in one script). It
    is delivered again only if the commit did not land for that consumer: what each loop
    had handled and not committed when its worker died or lost Redis.

    How much is that per loop? ``process`` here is an ``async def`` that waits for Redis
    and sleeps 1 ms, so it is "slow" (over ``_SLOW_PROCESS`` = 1 ms): the fast path
    (``Inline._inline_durable``) commits what it handled before it starts the next
    message, and a redelivered message is handled and committed alone
    (``WorkerLoop._handle_alone``). So a loop holds at most one handled, uncommitted
    message: the one it is on. Its prefetch (100 entries) costs nothing: prefetched
    entries that never reached ``process`` were never recorded, and are redelivered
    (given back or reclaimed after ``visibility_timeout``) to run once.

    - A worker SIGKILL: at most 1 per loop of that process (``LOOPS_PER_WORKER``).
    - A Redis SIGKILL: every loop of every process may be mid-message. Its delivery
      record landed (in the AOF) and its commit either landed with the reply lost (the
      retry then finds it settled: no duplicate) or never ran: the worker retries the
      commit for about 4 s; if Redis is back, fine, if not the loop crashes, or the
      lease expires (3 s idle) and another worker reclaims the entry. Either way that
      message runs once more: at most 1 per loop, ``processes * LOOPS_PER_WORKER``.
      (This is what the old bound, one per kill, missed: 8 duplicates with 5 worker
      kills and 1 Redis kill.)
    - A worker that exited on its own and was revived (``revived``; normally 0, e.g. one
      that gave up on Redis during the outage): a crash like a kill, 1 per loop.

    What is not bounded here, and would fail the test: a worker frozen past its lease
    (3 s without a renewal, which runs every second) whose entry another worker took.
    """
    per_crash = LOOPS_PER_WORKER
    return (worker_kills + revived) * per_crash + redis_kills * processes * per_crash


async def test_killed_workers_and_a_killed_redis_lose_nothing(tmp_path: Path) -> None:
    """5,000 messages through 3 nodes x 2 worker processes; a worker SIGKILLed every ~2 s
    and Redis SIGKILLed once: nothing lost, nothing left pending, duplicate deliveries
    within what the crashes can cost (see the bound below), and no duplicate effect where
    the sink uses idempotency keys. Its random draws replay with the seed it prints."""
    total = 5000
    rng = seeded_random("test_killed_workers_and_a_killed_redis_lose_nothing")
    spawn_seeds = random.Random(rng.randrange(1 << 32))  # (see Workers.seeds)
    nodes = ("first", "first", "second", "second", "sink", "sink")  # one process each
    with (
        open_redis_server(appendonly=True) as server,
        supervised(server.url, "crash_pipeline", tmp_path, spawn_seeds) as workers,
    ):
        for node in nodes:
            workers.start(node)
        async with client_graph("crash_pipeline", server.url, workers.namespace) as graph:
            redis_kills = 0
            started = time.monotonic()

            def kill_redis_once(kills: int) -> None:
                nonlocal redis_kills
                if kills == 2:
                    server.kill()  # mid-stream, with work in every mailbox
                    server.start()  # same port and directory: AOF replay
                    redis_kills += 1

            worker_kills, codes = await send_while_killing(
                graph, workers, total, rng, (1.5, 2.5), within=300, after_kill=kill_redis_once
            )
            state = graph.state
            deliveries = {
                node: await state.get(f"deliveries:{node}", []) for node in dict.fromkeys(nodes)
            }
            done = await done_count(graph)
            applied = await state.get("applied", 0)
            duplicates = {node: len(got) - len(set(got)) for node, got in deliveries.items()}
            lost = total - done
            pending = await pending_entries(graph)
            dead = await dead_letter_count(graph)
            reasons = await dead_letter_reasons(graph)
        bound = duplicate_bound(
            processes=len(nodes),
            worker_kills=worker_kills,
            redis_kills=redis_kills,
            revived=workers.restarts,
        )
        print(
            f"\ncrash test: {total} messages in {time.monotonic() - started:.1f} s; "
            f"kills: {worker_kills} workers + {redis_kills} redis, {workers.restarts} revived; "
            f"lost {lost}; duplicate deliveries {duplicates} (total {sum(duplicates.values())}, "
            f"bound {bound}); "
            f"effects applied {applied} for {done} messages; pending {pending}; "
            f"dead letters {dead} {reasons}; exit codes {codes}"
        )
    assert redis_kills == 1
    assert lost == 0
    assert all(set(got) == set(range(total)) for got in deliveries.values())
    assert sum(duplicates.values()) <= bound
    assert applied == total  # idempotent effect: once per message, whatever the redeliveries
    assert pending == 0
    assert dead == 0
    assert codes == [0] * len(codes)


async def test_the_loss_checker_reports_loss_when_redis_keeps_nothing(tmp_path: Path) -> None:
    """The same scenario on a Redis without persistence: a restart loses what it held,
    and the checks above see it (they can fail)."""
    total = 2000
    with (
        open_redis_server(appendonly=False) as server,
        supervised(server.url, "crash_pipeline", tmp_path) as workers,
    ):
        for node in ("first", "first", "second", "second", "sink", "sink"):
            workers.start(node)
        async with client_graph("crash_pipeline", server.url, workers.namespace) as graph:
            produced = anyio.Event()
            try:
                with anyio.fail_after(120):
                    await send_all(graph, total)
                    produced.set()
                    await poll_until(lambda: under_way(graph), interval=0.1)
                    server.kill()
                    server.start()  # empty: no AOF, no RDB
                    await wait_drained(graph, workers, produced)
                    await wait_ready(workers)
                    await graph.shutdown()
                    workers.exit_codes(within=60)
            except BaseException:
                print(workers.log())
                raise
            done = await done_count(graph)
            lost = total - done
        print(f"\nwithout persistence: {total} sent, {done} done after the restart, lost {lost}")
    assert lost > 0


async def test_a_stalled_worker_loses_its_lease_and_its_late_work_is_rejected(
    tmp_path: Path,
) -> None:
    with (
        open_redis_server() as server,
        supervised(server.url, "stall_pipeline", tmp_path) as workers,
    ):
        slow = [workers.start("slow"), workers.start("slow")]
        workers.start("record")
        async with client_graph("stall_pipeline", server.url, workers.namespace) as graph:
            try:
                with anyio.fail_after(60):
                    await graph.send("slow", "stall-me")
                    taker: list[int] = []

                    async def taken() -> bool:
                        for index in slow:
                            if await graph.state.get(f"started:{workers.pid(index)}"):
                                taker.append(index)  # noqa: PERF401 - an await per item
                        return bool(taker)

                    async def finished_elsewhere() -> bool:
                        return "stall-me" in await graph.state.get("outputs", [])

                    await poll_until(taken, interval=0.02)
                    os.kill(workers.pid(taker[0]), signal.SIGSTOP)  # past the 1 s timeout
                    await poll_until(finished_elsewhere)  # the other worker reclaimed it
                    os.kill(workers.pid(taker[0]), signal.SIGCONT)  # its late commit comes now
                    for number in range(3):
                        await graph.send("slow", number)
                    await graph.shutdown()
                    codes = workers.exit_codes(within=30)
            except BaseException:
                print(workers.log())
                raise
            outputs = await graph.state.get("outputs")
            mailbox = graph.nodes["slow"].mailbox
            assert isinstance(mailbox, RedisChannel)
            stats: Any = await _client(graph).hgetall(f"{mailbox.key}:stats")
    assert sorted(map(str, outputs)) == ["0", "1", "2", "stall-me"]  # one output, not two
    assert int(stats[b"rejected_acks"]) >= 1  # the stale worker's commit was refused
    assert int(stats[b"reclaimed"]) >= 1
    assert codes == [0, 0, 0]


async def test_a_message_that_kills_its_worker_is_dead_lettered_after_max_deliveries(
    tmp_path: Path,
) -> None:
    with (
        open_redis_server() as server,
        supervised(server.url, "poison_pipeline", tmp_path) as workers,
    ):
        workers.start("victim")
        workers.start("victim")
        workers.start("record")
        async with client_graph("poison_pipeline", server.url, workers.namespace) as graph:
            healthy = [f"ok-{number}" for number in range(20)]
            try:
                with anyio.fail_after(90):
                    await graph.send("victim", "poison")
                    for payload in healthy:
                        await graph.send("victim", payload)

                    async def settled() -> bool:
                        workers.revive_dead()  # a process manager restarts the dead
                        outputs = await graph.state.get("outputs", [])
                        return await dead_letter_count(graph) > 0 and len(outputs) >= len(healthy)

                    await poll_until(settled, interval=0.1)
                    await wait_ready(workers)
                    await graph.shutdown()
                    codes = workers.exit_codes(within=30)
            except BaseException:
                print(workers.log())
                raise
            outputs = await graph.state.get("outputs")
            deliveries = await graph.state.get("deliveries:poisoned")
            mailbox = graph.nodes["victim"].mailbox
            assert isinstance(mailbox, RedisChannel)
            letters: Any = await _client(graph).xrange(f"{mailbox.key}:dead")
    assert sorted(outputs) == sorted(healthy)  # every other message, once
    assert deliveries.count("poison") == 3  # max_deliveries, then no more
    ((_, letter),) = letters
    assert letter[b"reason"] == b"max_deliveries"
    assert b"poison" in letter[b"m"]
    assert workers.restarts >= 3
    assert codes == [0, 0, 0]


OUTAGE_SECONDS = 60.0
"""How long Redis stays down in the outage test: far past any call's retries (about 7 s)
and the mailboxes' visibility timeout (3 s): leases lapse, loops wait, nobody exits."""


async def test_workers_of_every_node_live_through_a_minute_long_redis_outage(
    tmp_path: Path,
) -> None:
    """Redis stopped for 60 s mid-stream with a worker process per node: nothing lost, no
    process exits, no loop restarts, every worker exits 0 after the shutdown."""
    total = 1000
    nodes = ("first", "second", "sink")
    with (
        open_redis_server(appendonly=True) as server,
        supervised(server.url, "crash_pipeline", tmp_path) as workers,
    ):
        for node in nodes:
            workers.start(node)
        async with client_graph("crash_pipeline", server.url, workers.namespace) as graph:
            try:
                with anyio.fail_after(OUTAGE_SECONDS + 240):
                    await wait_ready(workers)
                    await send_all(graph, total)
                    await poll_until(lambda: under_way(graph))  # mid-stream
                    server.stop()
                    await anyio.sleep(OUTAGE_SECONDS)  # the outage itself
                    alive = [process.poll() is None for process in workers.processes]
                    server.start()  # same port and directory: the append-only file
                    produced = anyio.Event()
                    produced.set()
                    await wait_drained(graph, workers, produced)
                    await graph.shutdown()
                    codes = workers.exit_codes(within=60)
            except BaseException:
                print(workers.log())
                raise
            done = await done_count(graph)
            pending = await pending_entries(graph)
            dead = await dead_letter_count(graph)
        logs = _whole_logs(tmp_path)
    assert alive == [True, True, True]  # nobody gave up during the outage
    assert workers.restarts == 0
    assert codes == [0, 0, 0]
    assert done == total  # nothing lost
    assert pending == 0
    assert dead == 0
    assert "worker loop crashed" not in logs  # an outage spends no restart
    assert "redis unreachable: the node's loops wait for it" in logs
    assert "redis reachable again" in logs


def _whole_logs(directory: Path) -> str:
    """Every worker log of ``directory``, whole (``Workers.log`` keeps the ends only)."""
    return "".join(path.read_text(errors="replace") for path in sorted(directory.glob("*.log")))


async def test_killed_workers_on_a_redis_cluster_lose_nothing(
    redis_cluster: RedisClusterServer, tmp_path: Path
) -> None:
    """The crash test on a Redis Cluster of three masters: 2,000 messages through 3 nodes x
    2 worker processes, a worker SIGKILLed every 1-2 s: nothing lost, nothing pending, no
    dead letters, the idempotent effect once per message. Replays with the seed it prints."""
    total = 2000
    rng = seeded_random("test_killed_workers_on_a_redis_cluster_lose_nothing")
    nodes = ("first", "first", "second", "second", "sink", "sink")
    url = redis_cluster.url
    with supervised(url, "crash_pipeline", tmp_path) as workers:
        for node in nodes:
            workers.start(node)
        async with client_graph("crash_pipeline", url, workers.namespace) as graph:
            kills, codes = await send_while_killing(
                graph, workers, total, rng, (1.0, 2.0), within=240
            )
            done = await done_count(graph)
            applied = await graph.state.get("applied", 0)
            pending = await pending_entries(graph)
            dead = await dead_letter_count(graph)
            reasons = await dead_letter_reasons(graph)
            await purge(graph.redis, workers.namespace)
    print(
        f"\ncluster crash test: {kills} worker kills; {done} of {total} done; "
        f"effects applied {applied}; pending {pending}; dead letters {dead} {reasons}"
    )
    assert kills >= 1
    assert done == total
    assert applied == total
    assert (pending, dead) == (0, 0)
    assert codes == [0] * len(codes)


async def test_a_durable_step_does_not_run_again_after_its_worker_is_killed(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """A worker charges (a ``context.step``) and is SIGKILLed before its commit; the worker
    that gets the message next finds the charge stored and ships without charging again."""
    with supervised(redis_server.url, "charge_once", tmp_path) as workers:
        workers.start("pay")
        workers.start("ship")
        async with client_graph("charge_once", redis_server.url, workers.namespace) as graph:
            try:
                with anyio.fail_after(60):
                    await wait_ready(workers)
                    await graph.send("pay", "book-1")
                    await poll_until(lambda: _logged(workers, 0, '"event": "charged"'))
                    workers.kill(0)  # and started again: it reclaims the message (1 s lease)
                    await poll_until(lambda: _has(graph, "outputs"))
                    await graph.shutdown()
                    codes = workers.exit_codes(within=30)
            except BaseException:
                print(workers.log())
                raise
            charges = await graph.state.get("charges")
            (shipped,) = await graph.state.get("outputs")
            deliveries = await pending_entries(graph), await dead_letter_count(graph)
            await purge(graph.redis, workers.namespace)
    assert charges == ["book-1"]  # once, though two workers handled the message
    assert shipped["order"] == "book-1"
    assert shipped["receipt"] == "r-book-1"
    assert deliveries == (0, 0)
    assert codes == [0, 0]


async def _logged(workers: Workers, index: int, text: str) -> bool:
    path = workers.logs / f"worker-{index}-1.log"
    return path.exists() and text in path.read_text(errors="replace")


async def _has(graph: Graph, key: str) -> bool:
    return bool(await graph.state.get(key))
