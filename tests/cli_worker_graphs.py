"""Graphs that ``test_cli_worker.py`` serves with ``python -m spark_nodes worker``.

Every factory builds ``gate >> record`` (in memory: the worker moves it to Redis). The
gate passes its payload on, except:

- ``"hold..."``: appends ``[pid, delivery_count]`` to ``started:<payload>``, logs
  ``"holding"`` and waits until the state key ``go:<payload>`` is set (polling Redis);
- ``"stuck..."``: on its first delivery ever, appends to ``started:<payload>`` too, logs
  ``"stuck"`` and sleeps, touching nothing else, until cancelled; later deliveries pass;
- ``"stubborn..."``: like ``"stuck"``, but swallows the first cancellation (logging
  ``"cancellation swallowed"``) and sleeps again: what a library that eats a
  ``CancelledError`` does (redis-py can, on Python 3.11, when the cancellation lands in a
  command).

``record`` appends what it gets to ``outputs``. Both nodes log what they did
(``"passed"``, ``"recorded"``, with the payload), so the test can await a worker's JSON
log lines rather than poll Redis. The graphs differ in their leases: a long one proves
that a stopping worker gives its prefetched entries back (no test waits a minute), a
short one lets another worker reclaim unfinished work quickly. Both prefetch several
entries, so a worker holds some it has not started.

The rest are targets for the command's error paths, for ``load_graph``, and for the
worker's settings (factories that take them, graphs with mailbox options of their own).
"""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any

import anyio
import structlog

from spark_nodes import ExecutionContext, Graph, Node
from spark_nodes.cli.worker import WorkerSettings

HOLD_LIMIT = 30.0
"""The longest a held payload waits for its ``go``: a forgotten one fails, not hangs."""

LONG_LEASE = {"visibility_timeout": 60.0, "prefetch": 10}
SHORT_LEASE = {"visibility_timeout": 1.0, "prefetch": 10}

_log = structlog.get_logger("tests.cli_worker_graphs")


class Gate(Node):
    """Passes payloads on; holds ``"hold..."`` until told to go; see the module."""

    async def process(self, context: ExecutionContext) -> Any:
        payload: str = context.inputs.content
        state = context.graph_state
        pid = os.getpid()
        if payload.startswith("hold"):
            delivery = context.inputs.metadata.get("delivery_count")
            await state.append(f"started:{payload}", [pid, delivery])
            _log.info("holding", payload=payload, pid=pid)
            with anyio.fail_after(HOLD_LIMIT):
                # The go comes from another process: there is no event to await.
                while not await state.get(f"go:{payload}"):  # noqa: ASYNC110
                    await anyio.sleep(0.01)
        elif payload.startswith(("stuck", "stubborn")):
            delivery = context.inputs.metadata.get("delivery_count")
            if await state.append(f"started:{payload}", [pid, delivery]) == 1:
                _log.info("stuck", payload=payload, pid=pid)
                await _sleep_until_cancelled(swallow_once=payload.startswith("stubborn"))
        _log.info("passed", payload=payload, pid=pid)
        return payload


async def _sleep_until_cancelled(*, swallow_once: bool) -> None:
    if swallow_once:
        try:
            await anyio.sleep(HOLD_LIMIT)
        except anyio.get_cancelled_exc_class():
            _log.info("cancellation swallowed")
    await anyio.sleep(HOLD_LIMIT)


class Recorder(Node):
    """Appends every payload it gets to ``outputs``."""

    async def process(self, context: ExecutionContext) -> None:
        payload = context.inputs.content
        await context.graph_state.append("outputs", payload)
        _log.info("recorded", payload=payload, pid=os.getpid())


def _gated(name: str, options: dict[str, Any]) -> Graph:
    gate = Gate(id="gate")
    gate >> Recorder(id="record")
    return Graph(gate, name=name, mailbox_options=options)


def long_lease() -> Graph:
    """``gate >> record`` with 60 s leases."""
    return _gated("cli-long", LONG_LEASE)


def short_lease() -> Graph:
    """``gate >> record`` with 1 s leases."""
    return _gated("cli-short", SHORT_LEASE)


def unnamed() -> Graph:
    """An in-memory graph without a name: it cannot move to Redis."""
    return Graph(Gate(id="gate"))


in_memory = _gated("cli-in-memory", LONG_LEASE)
"""A graph instance (not a factory), in memory."""

registry = SimpleNamespace(pipelines=SimpleNamespace(gated=in_memory, make=long_lease))
"""Graphs reached by a dotted path: ``registry.pipelines.gated``."""

NOT_A_GRAPH = "a string"


def not_a_graph_factory() -> str:
    """A function that returns something else than a Graph."""
    return NOT_A_GRAPH


# -- factories that take the worker's settings -------------------------------------------------

received: list[WorkerSettings] = []
"""The settings :func:`with_settings` was called with, in this process."""


def with_settings(settings: WorkerSettings) -> Graph:
    """``gate >> record`` (60 s leases) that logs and keeps the settings it was given."""
    received.append(settings)
    _log.info("factory got settings", consumer=settings.consumer, prefetch=settings.prefetch,
              namespace=settings.namespace, concurrency=settings.concurrency)  # fmt: skip
    return _gated("cli-settings", LONG_LEASE)


def on_redis_from_settings(settings: WorkerSettings) -> Graph:
    """A graph that its factory puts on Redis itself, with the worker's mailbox settings."""
    assert settings.redis_url is not None
    gate = Gate(id="gate")
    gate >> Recorder(id="record")
    return Graph(
        gate,
        name="cli-own-redis",
        backend=settings.redis_url,
        namespace=settings.namespace,
        mailbox_options=settings.mailbox_options(LONG_LEASE),
    )


def on_redis_already() -> Graph:
    """A graph on Redis from the start (URL and namespace from ``$CLI_TEST_REDIS``)."""
    url, _, namespace = os.environ["CLI_TEST_REDIS"].rpartition(" ")
    gate = Gate(id="gate")
    gate >> Recorder(id="record")
    return Graph(gate, name="cli-on-redis", backend=url, namespace=namespace)


def plain() -> Graph:
    """``gate >> record`` with no mailbox options of its own: RedisChannel's defaults."""
    return _gated("cli-plain", {})


def own_prefetch() -> Graph:
    """``gate >> record`` built with a small prefetch and a long lease of its own."""
    return _gated("cli-own-prefetch", {"prefetch": 2, "visibility_timeout": 60.0})


def optional_argument(name: str = "cli-optional") -> Graph:
    """A factory whose one parameter has a default: it is called without arguments."""
    return _gated(name, LONG_LEASE)


def two_arguments(settings: WorkerSettings, extra: str) -> Graph:
    """A factory that wants more than the settings: the worker refuses it."""
    return _gated(extra, LONG_LEASE)
