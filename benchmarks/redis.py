"""RedisChannel end to end vs a raw redis-py loop on the same server, in the same run.

Throughput: a producer task sends N small messages and a consumer task receives and acks
them, concurrently, in one event loop. The raw loop is what one writes by hand with
redis-py: pipelined XADD of msgpack payloads in batches of 100, XREADGROUP COUNT 100, one
XACK per batch. Ours: ``send_nowait`` + ``flush()`` per 100 (one Lua script per batch,
with de-duplication of retries and idempotency), ``receive_batch(100)`` and
``ack_batch()`` (fenced acks that also delete the entries, which the raw loop does not).

Round trip: one message at a time, send then receive then ack, in one task; the median.

A private ``redis-server`` (AOF on, ``appendfsync everysec``, as documented for production)
serves both sides; cases are interleaved and the best run of each counts.
"""

from __future__ import annotations

import statistics
import time
import uuid
from typing import Any

import anyio
import msgpack

from benchmarks._report import Result, Target
from spark_nodes._redis_client import RedisClient, open_client
from spark_nodes.channels import ChannelMessage, RedisChannel
from spark_nodes.testing import open_redis_server

BATCH = 100


def _payload(i: int) -> dict[str, Any]:
    return {"i": i, "order": "A-1234", "amount": 12.5}


async def _raw_throughput(url: str, n: int) -> float:
    key = f"bench:raw:{uuid.uuid4().hex}"
    producer, consumer = open_client(url), open_client(url)
    await consumer.xgroup_create(key, "workers", id="0", mkstream=True)
    received = 0

    async def produce() -> None:
        for start in range(0, n, BATCH):
            async with producer.pipeline(transaction=False) as pipe:
                for i in range(start, min(n, start + BATCH)):
                    pipe.xadd(key, {"m": msgpack.packb(_payload(i))})
                await pipe.execute()

    async def consume() -> None:
        nonlocal received
        while received < n:
            reply: Any = await consumer.xreadgroup(
                "workers", "c1", {key: ">"}, count=BATCH, block=100
            )
            if not reply:
                continue
            entries = reply[0][1]
            for _entry, fields in entries:
                msgpack.unpackb(fields[b"m"])
            await consumer.xack(key, "workers", *[entry for entry, _ in entries])
            received += len(entries)

    start = time.perf_counter()
    async with anyio.create_task_group() as group:
        group.start_soon(produce)
        group.start_soon(consume)
    elapsed = time.perf_counter() - start
    await producer.delete(key)
    await producer.aclose()
    await consumer.aclose()
    return n / elapsed


async def _channel_throughput(url: str, n: int) -> float:
    name = f"bench-{uuid.uuid4().hex}"
    sender = RedisChannel(url, name, namespace="bench")
    receiver = RedisChannel(url, name, namespace="bench", prefetch=BATCH)
    received = 0

    async def produce() -> None:
        for start in range(0, n, BATCH):
            for i in range(start, min(n, start + BATCH)):
                sender.send_nowait(ChannelMessage(_payload(i)))
            await sender.flush()

    async def consume() -> None:
        nonlocal received
        while received < n:
            batch = await receiver.receive_batch(BATCH)
            await receiver.ack_batch(batch)
            received += len(batch)

    start = time.perf_counter()
    async with anyio.create_task_group() as group:
        group.start_soon(produce)
        group.start_soon(consume)
    elapsed = time.perf_counter() - start
    redis: RedisClient = sender._redis
    await redis.delete(sender.key, f"{sender.key}:stats")
    await sender.aclose()
    await receiver.aclose()
    return n / elapsed


async def _raw_round_trips(url: str, count: int) -> float:
    key = f"bench:raw:{uuid.uuid4().hex}"
    redis = open_client(url)
    await redis.xgroup_create(key, "workers", id="0", mkstream=True)
    times = []
    for i in range(count):
        start = time.perf_counter()
        await redis.xadd(key, {"m": msgpack.packb(_payload(i))})
        reply: Any = await redis.xreadgroup("workers", "c1", {key: ">"}, count=1, block=100)
        (entry, fields) = reply[0][1][0]
        msgpack.unpackb(fields[b"m"])
        await redis.xack(key, "workers", entry)
        times.append(time.perf_counter() - start)
    await redis.delete(key)
    await redis.aclose()
    return statistics.median(times) * 1e6


async def _channel_round_trips(url: str, count: int) -> float:
    channel = RedisChannel(url, f"bench-{uuid.uuid4().hex}", namespace="bench", prefetch=1)
    times = []
    for i in range(count):
        start = time.perf_counter()
        await channel.send(ChannelMessage(_payload(i)))
        message = await channel.receive()
        assert message.ack is not None
        await message.ack()
        times.append(time.perf_counter() - start)
    redis: RedisClient = channel._redis
    await redis.delete(channel.key, f"{channel.key}:stats")
    await channel.aclose()
    return statistics.median(times) * 1e6


async def _measure(url: str, n: int, repeats: int, round_trips: int) -> list[Result]:
    raw_rates, our_rates, raw_trips, our_trips = [], [], [], []
    for _ in range(repeats):
        raw_rates.append(await _raw_throughput(url, n))
        our_rates.append(await _channel_throughput(url, n))
        raw_trips.append(await _raw_round_trips(url, round_trips))
        our_trips.append(await _channel_round_trips(url, round_trips))
    raw_rate, our_rate = max(raw_rates), max(our_rates)
    raw_trip, our_trip = min(raw_trips), min(our_trips)
    return [
        Result("raw redis-py loop (XADD/XREADGROUP/XACK)", raw_rate / 1000, "k msg/s"),
        Result(
            "RedisChannel end to end, acked, batched",
            our_rate / 1000,
            "k msg/s",
            Target(raw_rate / 1000, None, "raw loop", min_ratio=1.0),
        ),
        Result("raw single-message round trip p50", raw_trip, "us"),
        Result(
            "RedisChannel single-message round trip p50",
            our_trip,
            "us",
            Target(raw_trip, None, "raw"),
        ),
    ]


def run(*, n: int = 200_000, repeats: int = 3, round_trips: int = 2_000) -> list[Result]:
    """Measure on a private redis-server (AOF on) and return the rows."""
    scale = max(1, n // 4)  # 50,000 messages per throughput run at the default n
    with open_redis_server(appendonly=True) as server:
        results: list[Result] = anyio.run(
            _measure, server.url, scale, repeats, min(round_trips, 2_000), backend="asyncio"
        )
    return results
