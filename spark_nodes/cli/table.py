"""What ``spark-nodes run`` shows: pure functions from a ``GraphStats`` snapshot to rich tables.

The live view and the final summary are made here and nowhere else, so a test renders them
to text (``render``) and reads them, as a user would.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from spark_nodes.graphs.stats import GraphStats, NodeStats, Timing

__all__ = ["DeadLetterLine", "render", "stats_table", "summary"]

HEADERS: Final = ("NODE", "IN", "DONE", "OUT", "RATE/S", "MAILBOX", "RETRIES", "DEAD")
"""The columns always shown; ``ROUTED`` (once a node routed a failure), ``WORKERS`` (on
Redis) and ``P50``/``P99`` (when metered) follow."""


@dataclass(frozen=True, slots=True)
class DeadLetterLine:
    """One dead letter as the summary lists it.

    Attributes:
        node: The node that gave up on the message.
        error: The error's first line (``"ValueError: bad amount"``).
        payload: A short preview of what the message held.
    """

    node: str
    error: str
    payload: str


def stats_table(stats: GraphStats) -> Table:
    """One row per node: what it took in, handled and sent on, its rate and its backlog.

    ``IN`` counts messages taken from the mailbox, ``DONE`` those processed successfully,
    ``OUT`` the outputs sent on or kept as results, ``MAILBOX`` what waits now, ``RETRIES``
    the retries scheduled and ``DEAD`` the messages dead-lettered. ``ROUTED`` (messages sent
    along error routes) appears once a node routed one, ``WORKERS`` (the processes serving the
    node now) when figures come from Redis, ``P50``/``P99`` (``process`` time) when a node is
    metered. A footer totals the columns when there are several nodes.
    """
    nodes = list(stats.nodes.values())
    routed = any(node.error_routed for node in nodes)
    workers = any(node.workers != 1 for node in nodes)
    metered = any(node.process_time is not None for node in nodes)
    headers = [
        *HEADERS,
        *(["ROUTED"] if routed else []),
        *(["WORKERS"] if workers else []),
        *(["P50", "P99"] if metered else []),
    ]
    totals = _totals(nodes, len(headers), routed=routed) if len(nodes) > 1 else None
    table = Table(
        title=_title(stats),
        title_justify="left",
        box=box.SIMPLE,
        show_edge=False,
        show_footer=totals is not None,
        collapse_padding=True,
        highlight=False,
    )
    for index, header in enumerate(headers):
        footer = "" if totals is None else totals[index]
        if index == 0:
            table.add_column(header, footer=footer, overflow="fold", min_width=4)
        else:
            table.add_column(header, footer=footer, justify="right", no_wrap=True)
    for node in nodes:
        table.add_row(*_row(node, routed=routed, workers=workers, metered=metered))
    return table


def summary(
    stats: GraphStats,
    outcome: str,
    *,
    dead_letters: Sequence[DeadLetterLine] = (),
    more_dead_letters: int = 0,
    notes: Sequence[str] = (),
) -> Group:
    """The final view: the table, how the run ended, then its dead letters (if any).

    Args:
        stats: The last snapshot.
        outcome: How the run ended, in words (``str(result)``, or why it failed).
        dead_letters: Dead letters to list, one line each.
        more_dead_letters: Dead letters there were beyond those listed.
        notes: Lines to add last (where to find what is not shown, say).
    """
    lines: list[RenderableType] = [stats_table(stats), _line(f"run: {outcome}")]
    for letter in dead_letters:
        line = _line("dead letter: ", style="red")
        line.append(f"{letter.node}: {letter.error} (payload {letter.payload})")
        lines.append(line)
    if more_dead_letters:
        lines.append(_line(f"... and {more_dead_letters} more dead letters", style="red"))
    lines += [_line(note) for note in notes]
    return Group(*lines)


def render(renderable: RenderableType, *, width: int = 100) -> str:
    """``renderable`` as plain text, ``width`` columns wide, as ``spark-nodes run`` prints it."""
    console = Console(
        file=io.StringIO(), width=width, color_system=None, highlight=False, emoji=False
    )
    console.print(renderable, crop=False)
    output = console.file
    assert isinstance(output, io.StringIO)
    return output.getvalue()


def _line(text: str, style: str = "") -> Text:
    """A line that is never wrapped (a terminal wraps it; a file or a pipe keeps it whole)."""
    return Text(text, style=style, no_wrap=True, overflow="ignore")


def _title(stats: GraphStats) -> str:
    state = f"running for {stats.elapsed:.1f} s" if stats.running else "not running"
    return f"graph {stats.graph!r}: {state}, {stats.waiting} in mailboxes"


def _row(node: NodeStats, *, routed: bool, workers: bool, metered: bool) -> list[RenderableType]:
    dead = Text(str(node.dead_lettered), style="red" if node.dead_lettered else "")
    cells: list[RenderableType] = [
        node.node_id,
        str(node.received),
        str(node.processed),
        str(node.forwarded + node.terminal_outputs),
        f"{node.rate:.1f}",
        str(node.mailbox_depth),
        str(node.retried),
        dead,
    ]
    if routed:
        cells.append(str(node.error_routed))
    if workers:
        cells.append(str(node.workers))
    if metered:
        cells += [_duration(node.process_time, "p50"), _duration(node.process_time, "p99")]
    return cells


def _totals(nodes: list[NodeStats], columns: int, *, routed: bool) -> list[RenderableType]:
    dead = sum(node.dead_lettered for node in nodes)
    cells: list[RenderableType] = [
        "total",
        str(sum(node.received for node in nodes)),
        str(sum(node.processed for node in nodes)),
        str(sum(node.forwarded + node.terminal_outputs for node in nodes)),
        f"{sum(node.rate for node in nodes):.1f}",
        str(sum(node.mailbox_depth for node in nodes)),
        str(sum(node.retried for node in nodes)),
        Text(str(dead), style="red" if dead else ""),
    ]
    if routed:
        cells.append(str(sum(node.error_routed for node in nodes)))
    return cells + [""] * (columns - len(cells))


def _duration(timing: Timing | None, which: str) -> str:
    if timing is None:
        return "-"
    seconds: float = getattr(timing, which)
    if seconds >= 1:
        return f"{seconds:.2f}s"
    if seconds >= 0.001:
        return f"{seconds * 1000:.1f}ms"
    return f"{seconds * 1_000_000:.0f}us"
