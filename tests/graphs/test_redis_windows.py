"""Windows on Redis: a window's messages stay pending, held, until its output is forwarded.

Each "process" is a graph object of its own, sharing nothing but Redis (see
``test_redis_graphs.py``); at the end a real worker process is SIGKILLed with an open
window (its graph is ``window_pipeline`` in ``redis_worker_graphs.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest

from spark_nodes import CountWindow, ExecutionContext, Graph, Node, TimeWindow, Window
from spark_nodes._redis_client import RedisClient
from spark_nodes.channels import RedisChannel
from spark_nodes.nodes.windows import WINDOW_FLUSH
from spark_nodes.testing import RedisServer
from tests.graphs.test_redis_crashes import (
    client_graph,
    dead_letter_count,
    pending_entries,
    poll_until,
    supervised,
    wait_ready,
)
from tests.redis_support import Cluster, purge

pytestmark = [pytest.mark.anyio, pytest.mark.redis]  # redis-py: asyncio only

WAIT = 30


class Seen:
    """What a sink got in this process, and how many windows; tests await a count."""

    def __init__(self) -> None:
        self.windows: list[list[Any]] = []
        self.handled = 0
        self._changed = anyio.Event()

    def changed(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def wait(self, ready: Callable[[], bool]) -> None:
        while not ready():
            await self._changed.wait()


class Noted(CountWindow):
    """A count window that tells ``seen`` how many messages it handled."""

    def __init__(self, seen: Seen, size: int, **kwargs: Any) -> None:
        super().__init__(size, **kwargs)
        self.seen = seen

    def process(self, context: ExecutionContext) -> Any:
        output = super().process(context)
        self.seen.handled += 1
        self.seen.changed()
        return output


def pipeline(
    seen: Seen, window: Callable[[], Node], when: Callable[[Any], bool] | None = None
) -> Callable[[], Graph]:
    """Builds ``window >> sink``, the sink recording each window's items in the graph state
    (and in ``seen``, in the process that serves it). A new window node per "process".
    ``when``: the edge's condition."""

    class Sink(Node):
        async def process(self, context: ExecutionContext) -> None:
            items = context.inputs.content["items"]
            await context.graph_state.append("windows", items)
            seen.windows.append(items)
            seen.changed()

    def build() -> Graph:
        node = window()
        if when is None:
            node >> Sink(id="sink")
        else:
            node.on(when) >> Sink(id="sink")
        return Graph(node, name="windows")

    return build


async def serve_and_send(
    seen: Seen,
    worker: Graph,
    client: Graph,
    items: Iterable[Any],
    *,
    until: Callable[[], bool] | None = None,
    within: float = WAIT,
) -> None:
    """Serve ``worker`` while ``client`` sends ``items`` to the window node; once
    ``until()`` holds (if given), shut the graph down, which flushes what is open."""
    with anyio.fail_after(within):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(worker.serve)
            for item in items:
                await client.send("window", item)
            if until is not None:
                await seen.wait(until)
            await client.shutdown()


async def stream_left(raw: RedisClient, graph: Graph, node_id: str) -> tuple[int, int]:
    """Entries of a node's stream (acked ones are deleted), and its pending entries."""
    mailbox = graph.nodes[node_id].mailbox
    assert isinstance(mailbox, RedisChannel)
    summary: Any = await raw.xpending(mailbox.key, mailbox.group)
    return await raw.xlen(mailbox.key), summary["pending"]


async def test_a_count_window_on_a_redis_graph_forwards_each_window_once(
    cluster: Cluster, raw: RedisClient
) -> None:
    seen = Seen()
    build = pipeline(seen, lambda: CountWindow(5, id="window"))
    worker, client = cluster.process(build), cluster.process(build)
    await serve_and_send(seen, worker, client, range(15), until=lambda: len(seen.windows) == 3)
    assert await client.state.get("windows") == [
        [0, 1, 2, 3, 4],
        [5, 6, 7, 8, 9],
        [10, 11, 12, 13, 14],
    ]
    assert await stream_left(raw, client, "window") == (0, 0)  # all acked with their window


async def test_a_window_larger_than_the_prefetch_and_a_batch_completes(
    cluster: Cluster, raw: RedisClient
) -> None:
    """150 messages held at once, read 10 at a time (a loop takes at most 128 at once):
    held messages never keep the worker from reading more."""
    seen = Seen()
    build = pipeline(seen, lambda: CountWindow(150, id="window"))
    worker = cluster.process(build, prefetch=10)
    client = cluster.process(build, prefetch=10)
    await serve_and_send(seen, worker, client, range(300), until=lambda: len(seen.windows) == 2)
    assert await client.state.get("windows") == [list(range(150)), list(range(150, 300))]
    assert await stream_left(raw, client, "window") == (0, 0)


async def test_a_sliding_window_releases_a_message_with_the_last_window_it_is_in(
    cluster: Cluster, raw: RedisClient
) -> None:
    seen = Seen()
    build = pipeline(seen, lambda: Noted(seen, 4, slide=2, id="window"))
    worker, client = cluster.process(build), cluster.process(build)
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(worker.serve)
            for number in range(6):
                await client.send("window", number)
            await seen.wait(lambda: len(seen.windows) == 2 and seen.handled == 6)
            # [0..3] and [2..5] are out: 0 and 1 were released with the first, 2 and 3
            # with the second; 4 and 5 wait in the window [4, 8).
            assert await stream_left(raw, client, "window") == (2, 2)
            for number in range(6, 8):
                await client.send("window", number)
            await seen.wait(lambda: len(seen.windows) == 3)
            await client.shutdown()  # a sliding window always has one open: flushed now
    assert await client.state.get("windows") == [
        [0, 1, 2, 3],
        [2, 3, 4, 5],
        [4, 5, 6, 7],
        [6, 7],
    ]
    assert await stream_left(raw, client, "window") == (0, 0)


async def test_the_messages_of_a_stopped_worker_s_open_window_complete_it_elsewhere(
    cluster: Cluster, raw: RedisClient
) -> None:
    """A worker holds three messages of a window of five and stops (as if it died): they
    stay pending, are reclaimed by the next worker after the visibility timeout, and the
    window it completes has every message once."""
    seen = Seen()
    build = pipeline(seen, lambda: Noted(seen, 5, id="window"))
    dying = cluster.process(build, visibility_timeout=1.0)
    taking_over = cluster.process(build, visibility_timeout=1.0)
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(partial(dying.serve, grace_period=0.1))
            for number in range(3):
                await dying.send("window", number)
            await seen.wait(lambda: seen.handled == 3)
            dying.stop("leaving")  # its window is lost with it; its messages are not
        assert len(dying.nodes["window"].held) == 3
        assert await stream_left(raw, dying, "window") == (3, 3)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(taking_over.serve)
            for number in range(3, 5):
                await taking_over.send("window", number)
            await seen.wait(lambda: len(seen.windows) == 1)
            await taking_over.shutdown()
    (window,) = await taking_over.state.get("windows")
    assert sorted(window) == [0, 1, 2, 3, 4]  # each once: 0-2 redelivered, 3-4 new
    assert await stream_left(raw, taking_over, "window") == (0, 0)


class Stalling(CountWindow):
    """A count window whose worker stalls on the message that closes its first window:
    another consumer reclaims that message's entry before the commit."""

    def __init__(self, raw: RedisClient, size: int, **kwargs: Any) -> None:
        super().__init__(size, **kwargs)
        self.raw = raw
        self.stalled = False

    async def process(self, context: ExecutionContext) -> Any:
        output = super().process(context)
        if output is not None and not self.stalled:
            self.stalled = True
            mailbox = self.mailbox
            assert isinstance(mailbox, RedisChannel)
            entry = context.inputs.metadata["stream_entry"]
            await self.raw.xclaim(mailbox.key, mailbox.group, "reclaimer", 0, [entry])
        return output


async def test_a_window_whose_closing_message_s_lease_was_lost_keeps_its_messages_pending(
    cluster: Cluster, raw: RedisClient
) -> None:
    """The output of a window is refused with the lease of the message that closed it: the
    messages it released are not acked either, and all are delivered again, together."""
    seen = Seen()
    build = pipeline(seen, lambda: Stalling(raw, 2, id="window"))
    worker, client = cluster.process(build, visibility_timeout=1.0), cluster.process(build)
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(worker.serve)
            for number in range(2):
                await client.send("window", number)
            await seen.wait(lambda: len(seen.windows) == 1)  # after both were reclaimed
            await client.shutdown()
    (window,) = await client.state.get("windows")
    assert sorted(window) == [0, 1]
    assert await stream_left(raw, client, "window") == (0, 0)


async def test_wait_idle_on_redis_counts_what_an_open_window_holds_as_idle(
    cluster: Cluster, raw: RedisClient
) -> None:
    """As in memory: held messages of an open window are not in flight. The entries stay
    pending, published as held by the live worker."""
    seen = Seen()
    build = pipeline(seen, lambda: Noted(seen, 3, id="window"))
    worker, client = cluster.process(build), cluster.process(build)
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(worker.serve)
            for number in range(2):
                await client.send("window", number)
            await client.wait_idle()
            assert seen.handled == 2
            assert await stream_left(raw, client, "window") == (2, 2)
            await client.send("window", 2)
            await client.wait_idle()  # the window went out, and the sink handled it
            assert seen.windows == [[0, 1, 2]]
            await client.shutdown()
    assert await stream_left(raw, client, "window") == (0, 0)


async def test_wait_idle_on_redis_reads_more_held_entries_than_one_page(
    cluster: Cluster, raw: RedisClient
) -> None:
    """The idle check reads pending entries 100 at a time: 250 held are all looked at."""
    seen = Seen()
    build = pipeline(seen, lambda: Noted(seen, 300, id="window"))
    worker, client = cluster.process(build), cluster.process(build)
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(worker.serve)
            for number in range(250):
                await client.send("window", number)
            await client.wait_idle()
            assert seen.handled == 250
            assert await stream_left(raw, client, "window") == (250, 250)
            await client.shutdown()
    (window,) = await client.state.get("windows")
    assert sorted(window) == list(range(250))


async def test_wait_idle_on_redis_waits_for_held_messages_whose_worker_is_gone(
    cluster: Cluster, raw: RedisClient
) -> None:
    """Held entries whose lease is not renewed any more are going to be delivered again:
    not idle, until another worker holds them."""
    seen = Seen()
    build = pipeline(seen, lambda: Noted(seen, 3, id="window"))
    dying = cluster.process(build, visibility_timeout=1.0)
    taking_over = cluster.process(build, visibility_timeout=1.0)
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(partial(dying.serve, grace_period=0.1))
            for number in range(2):
                await dying.send("window", number)
            await dying.wait_idle()
            dying.stop("leaving")  # it no longer renews the leases of its window
        backend = taking_over._backend
        assert backend is not None

        async def lapsed() -> bool:  # a visibility timeout after its last publication
            return not await backend.is_idle()

        await poll_until(lapsed)
        assert await stream_left(raw, taking_over, "window") == (2, 2)  # still pending
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(taking_over.serve)
            await taking_over.wait_idle()  # reclaimed, and held again, by the live worker
            assert seen.handled == 4  # 0 and 1 twice
            await taking_over.shutdown()
    assert await taking_over.state.get("windows") == [[0, 1]]  # the flush at shutdown


async def test_a_processing_time_window_closes_on_its_timer_through_the_redis_mailbox(
    cluster: Cluster, raw: RedisClient
) -> None:
    seen = Seen()
    build = pipeline(seen, lambda: TimeWindow(0.5, id="window"))
    worker, client = cluster.process(build), cluster.process(build)
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(worker.serve)
            for number in range(3):
                await client.send("window", number)
            # No message comes after them: the timer's flush marker closes the window(s)
            # (three sends may straddle a window's end).
            await seen.wait(lambda: sum(map(len, seen.windows)) == 3)
            await client.shutdown()
    windows = await client.state.get("windows")
    assert [item for window in windows for item in window] == [0, 1, 2]
    assert await stream_left(raw, client, "window") == (0, 0)  # the markers too


async def test_a_processing_time_window_open_at_shutdown_is_flushed_by_its_timer(
    cluster: Cluster, raw: RedisClient
) -> None:
    """The drain waits for the window's held messages: its timer closes it, and the node
    finishes once they are released (within the window's size)."""
    seen = Seen()
    build = pipeline(seen, lambda: TimeWindow(0.5, id="window"))
    worker, client = cluster.process(build), cluster.process(build)
    await serve_and_send(seen, worker, client, range(3))  # at once: the window is still open
    windows = await client.state.get("windows")
    assert [item for window in windows for item in window] == [0, 1, 2]
    assert await stream_left(raw, client, "window") == (0, 0)


async def test_a_partial_count_window_is_flushed_at_shutdown_on_redis(cluster: Cluster) -> None:
    """Its held messages keep the node from finishing until on_drained flushed and acked
    them: before its shutdown passes on, so the sink gets the window."""
    seen = Seen()
    build = pipeline(seen, lambda: CountWindow(5, id="window"))
    worker, client = cluster.process(build), cluster.process(build)
    await serve_and_send(seen, worker, client, range(3), within=5)
    assert await client.state.get("windows") == [[0, 1, 2]]


async def test_a_flush_marker_sent_by_hand_is_no_item(cluster: Cluster) -> None:
    seen = Seen()
    build = pipeline(seen, lambda: Noted(seen, 2, id="window"))
    worker, client = cluster.process(build), cluster.process(build)
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(worker.serve)
            await client.send("window", None, metadata={WINDOW_FLUSH: True})
            for number in range(2):
                await client.send("window", number)
            await seen.wait(lambda: len(seen.windows) == 1)
            await client.shutdown()
    assert await client.state.get("windows") == [[0, 1]]


def no_zero(output: dict[str, Any]) -> bool:
    """An edge condition that raises on the window with 0."""
    if 0 in output["items"]:
        raise ValueError("no zero")
    return True


async def test_a_window_whose_output_cannot_be_routed_has_its_messages_dead_lettered_on_redis(
    cluster: Cluster, raw: RedisClient
) -> None:
    """The window's first message is not left pending (the shutdown waited for it)."""
    seen = Seen()
    build = pipeline(seen, lambda: CountWindow(2, id="window"), when=no_zero)
    worker, client = cluster.process(build), cluster.process(build)
    await serve_and_send(seen, worker, client, range(4), until=lambda: len(seen.windows) == 1)
    assert await client.state.get("windows") == [[2, 3]]
    assert await dead_letter_count(client) == 2  # 0 and 1
    assert await stream_left(raw, client, "window") == (0, 0)


async def test_a_sliding_window_keeps_the_message_that_closed_a_window_it_could_not_route(
    cluster: Cluster, raw: RedisClient
) -> None:
    """3 closes [0..3], which fails: 0 and 1 (in no other window) are dead-lettered; 3
    stays held in [2..5], which goes out with 2 and 3 acked, each message settled once."""
    seen = Seen()
    build = pipeline(seen, lambda: CountWindow(4, slide=2, id="window"), when=no_zero)
    worker, client = cluster.process(build), cluster.process(build)
    await serve_and_send(seen, worker, client, range(6), until=lambda: len(seen.windows) == 1)
    assert await client.state.get("windows") == [[2, 3, 4, 5], [4, 5]]
    assert await dead_letter_count(client) == 2  # 0 and 1
    assert await stream_left(raw, client, "window") == (0, 0)


class Unencodable(CountWindow):
    """The window with 0 makes an output msgpack cannot encode: its commit fails."""

    def aggregate(self, window: Window) -> Any:
        items = set(window.items) if 0 in window.items else window.items
        return {"items": items}


async def test_a_window_output_that_cannot_be_committed_dead_letters_every_message_of_it(
    cluster: Cluster, raw: RedisClient
) -> None:
    seen = Seen()
    build = pipeline(seen, lambda: Unencodable(2, id="window"))
    worker, client = cluster.process(build), cluster.process(build)
    await serve_and_send(seen, worker, client, range(4), until=lambda: len(seen.windows) == 1)
    assert await client.state.get("windows") == [[2, 3]]
    assert await dead_letter_count(client) == 2  # 0 and 1: not acked with empty sends
    assert await stream_left(raw, client, "window") == (0, 0)


async def test_one_commit_of_several_windows_with_one_unencodable_settles_each_window_apart(
    cluster: Cluster, raw: RedisClient
) -> None:
    """Six messages read in one batch close three windows, committed together; the first
    window's output cannot be encoded, so each window is committed on its own: 0 and 1
    are dead-lettered, the other two windows go out."""
    seen = Seen()
    build = pipeline(seen, lambda: Unencodable(2, id="window"))
    worker, client = cluster.process(build), cluster.process(build)
    for number in range(6):
        await client.send("window", number)  # before the worker reads: one batch
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(worker.serve)
            await seen.wait(lambda: len(seen.windows) == 2)
            await client.shutdown()
    assert await client.state.get("windows") == [[2, 3], [4, 5]]
    assert await dead_letter_count(client) == 2
    assert await stream_left(raw, client, "window") == (0, 0)


async def test_a_window_flushed_at_the_drain_that_cannot_be_routed_is_dead_lettered_not_acked(
    cluster: Cluster, raw: RedisClient
) -> None:
    """Key 0's window fails its edge condition; key 1's is still flushed."""
    seen = Seen()

    def window() -> Node:
        return CountWindow(10, key=lambda number: number % 2, id="window")

    build = pipeline(seen, window, when=no_zero)
    worker, client = cluster.process(build), cluster.process(build)
    await serve_and_send(seen, worker, client, range(4))
    assert await client.state.get("windows") == [[1, 3]]
    assert await dead_letter_count(client) == 2  # 0 and 2
    assert await stream_left(raw, client, "window") == (0, 0)


async def test_a_killed_worker_s_open_window_is_rebuilt_by_the_next_one(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """A worker process holding a window's first messages is SIGKILLed: restarted, a worker
    reclaims them (1 s lease) and completes the window with every message exactly once."""
    with supervised(redis_server.url, "window_pipeline", tmp_path) as workers:
        workers.start("window")
        workers.start("record")
        async with client_graph("window_pipeline", redis_server.url, workers.namespace) as graph:
            try:
                with anyio.fail_after(60):
                    await wait_ready(workers)
                    for number in range(4):
                        await graph.send("window", number)

                    async def all_held() -> bool:
                        return len(await graph.state.get("deliveries:window", [])) == 4

                    await poll_until(all_held)  # four of six held, unacked
                    workers.kill(0)  # and started again: it reclaims them
                    await wait_ready(workers)
                    for number in range(4, 6):
                        await graph.send("window", number)
                    await poll_until(lambda: _has(graph, "outputs"))
                    await graph.shutdown()
                    codes = workers.exit_codes(within=30)
            except BaseException:
                print(workers.log())
                raise
            (window,) = await graph.state.get("outputs")
            deliveries = await graph.state.get("deliveries:window")
            left = await pending_entries(graph), await dead_letter_count(graph)
            await purge(graph.redis, workers.namespace)
    assert sorted(window["items"]) == [0, 1, 2, 3, 4, 5]  # each exactly once
    assert sorted(deliveries) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 5]  # 0-3 handled twice
    assert left == (0, 0)
    assert codes == [0, 0]


async def _has(graph: Graph, key: str) -> bool:
    return bool(await graph.state.get(key))
