"""The worker command's settings: its options, their environment variables, WorkerSettings.

Each option of ``spark-nodes worker`` (but ``MODULE:GRAPH`` and ``--nodes``) can be given
as a flag or as an environment variable ``SPARK_NODES_...``: a flag wins over its variable,
a variable over the default. A flag's bad value is a usage error from ``argparse``; a
variable's is a :class:`BadSetting` naming the variable. Both end the command with exit
status 2. ``docs/redis.md`` ("Worker settings") has the table.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Final

from spark_nodes._redis_client import ConnectionRetry
from spark_nodes.cli._args import (
    name_text,
    non_negative_float,
    positive_float,
    positive_int,
    seconds_or_forever,
)
from spark_nodes.cli._logging import FORMATS, LEVELS
from spark_nodes.graphs._redis_backend import DEFAULT_PREFETCH

__all__ = [
    "OPTIONS",
    "BadSetting",
    "Option",
    "WorkerSettings",
    "add_options",
    "resolve",
    "retry_within",
]


class BadSetting(ValueError):
    """An environment variable (or a combination of settings) has a value the worker refuses."""


def _text(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def _one_of(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise argparse.ArgumentTypeError(f"must be one of {', '.join(choices)}, not {text!r}")
        return text

    return parse


@dataclass(frozen=True, slots=True)
class Option:
    """One setting: its flag, its environment variable, how its text is read, its default.

    Attributes:
        dest: The :class:`WorkerSettings` field (and the ``argparse`` destination).
        flag: The command-line flag.
        env: The environment variable.
        parse: Reads the text of either; raises ``argparse.ArgumentTypeError`` if bad.
        metavar: What the help shows for the value.
        help: What the setting does; the help adds the variable and the default.
        default: The value when neither the flag nor the variable is given.
        shown_default: How the help shows the default (``None``: the graph decides).
        choices: The values allowed, for a flag that takes one of a few words.
    """

    dest: str
    flag: str
    env: str
    parse: Callable[[str], Any]
    metavar: str | None
    help: str
    default: Any = None
    shown_default: str = ""
    choices: tuple[str, ...] | None = None


OPTIONS: Final = (
    Option("redis_url", "--redis", "SPARK_NODES_REDIS_URL", _text, "URL",
           "redis://, rediss://, unix:// or redis+cluster:// URL", shown_default="none"),
    Option("namespace", "--namespace", "SPARK_NODES_NAMESPACE", _text, "NAME",
           "key prefix", "spark_nodes", "spark_nodes"),
    Option("concurrency", "--concurrency", "SPARK_NODES_CONCURRENCY", positive_int, "N",
           "worker loops per node; raises the prefetch to N if it is lower",
           shown_default="each node's config.concurrency"),
    Option("grace", "--grace", "SPARK_NODES_GRACE", non_negative_float, "SECONDS",
           "how long in-flight work may take after a signal", 10.0, "10"),
    Option("visibility_timeout", "--visibility-timeout", "SPARK_NODES_VISIBILITY_TIMEOUT",
           positive_float, "SECONDS",
           "how long an entry may stay unacked before other workers may reclaim it",
           shown_default="the graph's mailbox_options, else 30"),
    Option("max_deliveries", "--max-deliveries", "SPARK_NODES_MAX_DELIVERIES", positive_int,
           "N", "deliveries without an ack before an entry is dead-lettered",
           shown_default="the graph's mailbox_options, else 3"),
    Option("prefetch", "--prefetch", "SPARK_NODES_PREFETCH", positive_int, "N",
           "entries one read brings in per node (one commit settles them); >= --concurrency",
           shown_default=f"the graph's mailbox_options, else max({DEFAULT_PREFETCH}, concurrency)"),
    Option("batch_size", "--batch-size", "SPARK_NODES_BATCH_SIZE", positive_int, "N",
           "the most messages a mailbox writes in one round trip (RedisChannel send_batch)",
           shown_default="the graph's mailbox_options, else 256"),
    Option("consumer", "--consumer", "SPARK_NODES_CONSUMER", name_text, "NAME",
           "this worker's consumer name in every mailbox it serves: stable across restarts, "
           "unique among live workers (a pod name)", shown_default="a new unique name per start"),
    Option("consumer_max_idle", "--consumer-max-idle", "SPARK_NODES_CONSUMER_MAX_IDLE",
           positive_float, "SECONDS",
           "how long a consumer holding nothing may stay idle before live workers delete it",
           shown_default="the graph's mailbox_options, else 3600"),
    Option("wait_for_redis", "--wait-for-redis", "SPARK_NODES_WAIT_FOR_REDIS",
           seconds_or_forever, "SECONDS",
           "how long to wait at the start for a Redis that cannot be reached (inf: as long "
           "as it takes; 0: exit 1 after a call's retries)", math.inf, "inf"),
    Option("outage_bound", "--outage-bound", "SPARK_NODES_OUTAGE_BOUND", positive_float,
           "SECONDS", "how long a Redis call retries an unreachable server before it fails",
           shown_default="about 4"),
    Option("log_level", "--log-level", "SPARK_NODES_LOG_LEVEL", _one_of(LEVELS), None,
           "log this and above", "info", "info", LEVELS),
    Option("log_format", "--log-format", "SPARK_NODES_LOG_FORMAT", _one_of(FORMATS), None,
           "log lines on stderr: readable, or one JSON object per line", "console", "console",
           FORMATS),
)  # fmt: skip
"""The worker's settings, in the order of its help."""

_MAILBOX_FIELDS: Final = (
    ("visibility_timeout", "visibility_timeout"),
    ("max_deliveries", "max_deliveries"),
    ("prefetch", "prefetch"),
    ("batch_size", "send_batch"),
    ("consumer", "consumer"),
    ("consumer_max_idle", "consumer_max_idle"),
)
"""WorkerSettings fields that are RedisChannel options, and the options' names."""


def add_options(parser: argparse.ArgumentParser) -> None:
    """Add every option of :data:`OPTIONS` to ``parser``, each defaulting to ``None``.

    ``None`` means "not on the command line": :func:`resolve` then reads the variable.
    """
    for option in OPTIONS:
        shown = f"; default: {option.shown_default}" if option.shown_default else ""
        parser.add_argument(
            option.flag,
            dest=option.dest,
            metavar=option.metavar,
            type=option.parse,
            choices=option.choices,
            default=None,
            help=f"{option.help} (${option.env}{shown})".replace("%", "%%"),
        )


def resolve(args: argparse.Namespace, environ: Mapping[str, str]) -> WorkerSettings:
    """The settings of a worker: each from its flag, else its variable, else its default.

    An empty variable counts as unset.

    Raises:
        BadSetting: A variable's value is bad (the message names it), or the prefetch
            given is below the concurrency.
    """
    values: dict[str, Any] = {}
    said: dict[str, str] = {}  # how each setting was given, for messages
    for option in OPTIONS:
        given = getattr(args, option.dest, None)
        text = environ.get(option.env, "")
        if given is not None:
            values[option.dest] = given
            said[option.dest] = f"{option.flag} {given}"
        elif text:
            try:
                values[option.dest] = option.parse(text)
            except (argparse.ArgumentTypeError, ValueError) as error:
                raise BadSetting(
                    f"${option.env}={text!r}: {error} (it sets {option.flag})"
                ) from None
            said[option.dest] = f"${option.env}={text}"
        else:
            values[option.dest] = option.default
    prefetch, concurrency = values["prefetch"], values["concurrency"]
    if prefetch is not None and concurrency is not None and prefetch < concurrency:
        raise BadSetting(
            f"{said['prefetch']} is below {said['concurrency']}: each worker loop needs "
            f"entries of its own to work on; give a prefetch of {concurrency} or more, or "
            f"leave it out (it is then raised to the concurrency)"
        )
    nodes = getattr(args, "nodes", None)
    return WorkerSettings(nodes=None if nodes is None else tuple(nodes), **values)


def retry_within(seconds: float) -> ConnectionRetry:
    """The :class:`ConnectionRetry` whose waits add up to at most ``seconds``.

    It keeps the default backoff (0.05 s doubling up to 1 s, +-50 % jitter) and takes
    as many tries as fit: the sum of the longest waits jitter can give stays within
    ``seconds``. Time spent in the tries themselves is not counted: a refused
    connection fails at once, a server that does not answer takes up to the client's
    socket timeout per try.

    Raises:
        ValueError: ``seconds`` is not > 0.
    """
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ValueError(f"seconds must be finite and > 0, not {seconds!r}")
    shape = ConnectionRetry()
    stretch = 1 + shape.jitter
    waited, waits = 0.0, 0
    while True:
        wait = stretch * min(shape.max_delay, shape.initial_delay * shape.multiplier**waits)
        if waited + wait > seconds:
            break
        if wait >= stretch * shape.max_delay:  # every wait from here on is the longest
            waits += int((seconds - waited) // wait)
            break
        waited += wait
        waits += 1
    return ConnectionRetry(
        attempts=waits + 1,
        initial_delay=shape.initial_delay,
        max_delay=shape.max_delay,
        multiplier=shape.multiplier,
        jitter=shape.jitter,
    )


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """What ``spark-nodes worker`` was told: flags, else environment variables, else defaults.

    A graph factory named by ``MODULE:FACTORY`` that takes one positional parameter is
    called with these (``def build(settings: WorkerSettings) -> Graph``). ``None`` means
    "not given": the graph's own ``mailbox_options`` apply, else RedisChannel's defaults.

    Attributes:
        redis_url: ``--redis``: the server, for a graph built in memory.
        namespace: ``--namespace``: the key prefix.
        nodes: ``--nodes``: the ids of the nodes served here; ``None``: all.
        concurrency: ``--concurrency``: worker loops per served node.
        grace: ``--grace``: seconds in-flight work may take after a signal.
        visibility_timeout: ``--visibility-timeout``: seconds before an unacked entry
            may be reclaimed by another worker.
        max_deliveries: ``--max-deliveries``: deliveries before an entry is dead-lettered.
        prefetch: ``--prefetch``: entries one read brings in, per node.
        batch_size: ``--batch-size``: the most messages a mailbox writes in one round trip
            (RedisChannel's ``send_batch``).
        consumer: ``--consumer``: this worker's consumer name in each mailbox it serves.
        consumer_max_idle: ``--consumer-max-idle``: seconds a consumer holding nothing may
            be idle before live workers delete it.
        wait_for_redis: ``--wait-for-redis``: seconds to wait at the start for a Redis
            that cannot be reached (``math.inf``: as long as it takes).
        outage_bound: ``--outage-bound``: seconds a Redis call retries an unreachable
            server (see :meth:`connection_retry`).
        log_level: ``--log-level``.
        log_format: ``--log-format``: ``console`` or ``json``.

    Raises:
        ValueError: A value is out of range, or ``prefetch`` < ``concurrency``.
    """

    redis_url: str | None = None
    namespace: str = "spark_nodes"
    nodes: tuple[str, ...] | None = None
    concurrency: int | None = None
    grace: float = 10.0
    visibility_timeout: float | None = None
    max_deliveries: int | None = None
    prefetch: int | None = None
    batch_size: int | None = None
    consumer: str | None = None
    consumer_max_idle: float | None = None
    wait_for_redis: float = math.inf
    outage_bound: float | None = None
    log_level: str = "info"
    log_format: str = "console"

    def __post_init__(self) -> None:
        for name in ("concurrency", "max_deliveries", "prefetch", "batch_size"):
            count = getattr(self, name)
            if count is not None and (
                isinstance(count, bool) or not isinstance(count, int) or count < 1
            ):
                raise ValueError(f"{name} must be an int >= 1 or None, not {count!r}")
        for name in ("visibility_timeout", "outage_bound"):
            seconds = getattr(self, name)
            if seconds is not None and not (
                isinstance(seconds, int | float) and seconds > 0 and math.isfinite(seconds)
            ):
                raise ValueError(f"{name} must be finite seconds > 0 or None, not {seconds!r}")
        if not (isinstance(self.grace, int | float) and self.grace >= 0):
            raise ValueError(f"grace must be seconds >= 0, not {self.grace!r}")
        if self.consumer is not None and not (isinstance(self.consumer, str) and self.consumer):
            raise ValueError(f"consumer must be a non-empty str or None, not {self.consumer!r}")
        if self.log_level not in LEVELS or self.log_format not in FORMATS:
            raise ValueError(
                f"log_level must be one of {LEVELS} and log_format one of {FORMATS}, not "
                f"{self.log_level!r} and {self.log_format!r}"
            )
        if (
            self.prefetch is not None
            and self.concurrency is not None
            and self.prefetch < self.concurrency
        ):
            raise ValueError(
                f"prefetch ({self.prefetch}) must be >= concurrency ({self.concurrency})"
            )

    def connection_retry(self) -> ConnectionRetry | None:
        """The retry of every Redis call for ``outage_bound``; ``None`` if it was not given.

        See :func:`retry_within`: the waits between tries add up to at most
        ``outage_bound`` seconds.
        """
        return None if self.outage_bound is None else retry_within(self.outage_bound)

    def mailbox_options(self, base: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """RedisChannel options for a graph's mailboxes: ``base`` with these settings over it.

        ``base`` is what the graph was built with (``Graph(mailbox_options=...)``). Each
        setting given replaces its option (``batch_size`` is ``send_batch``;
        ``outage_bound`` gives ``retry``). With ``concurrency`` and no ``prefetch``, the
        prefetch is raised to the concurrency if it would be lower (the graph's, or the
        default of ``max(100, node concurrency)``).
        """
        options = dict(base or {})
        for name, option in _MAILBOX_FIELDS:
            value = getattr(self, name)
            if value is not None:
                options[option] = value
        retry = self.connection_retry()
        if retry is not None:
            options["retry"] = retry
        if self.prefetch is None and self.concurrency is not None:
            prefetch = options.get("prefetch", DEFAULT_PREFETCH)
            if isinstance(prefetch, int) and prefetch < self.concurrency:
                options["prefetch"] = self.concurrency
        return options

    def given(self) -> dict[str, Any]:
        """The settings that differ from their defaults, by name (what a worker logs)."""
        return {
            field.name: getattr(self, field.name)
            for field in fields(self)
            if getattr(self, field.name) != field.default
        }
