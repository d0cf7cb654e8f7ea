"""``NodeStatistics``: what one node did during a run."""

from __future__ import annotations

from dataclasses import dataclass

from spark_nodes.channels import ChannelStatistics

__all__ = ["NodeStatistics"]


@dataclass(frozen=True, slots=True)
class NodeStatistics:
    """What one node did during a run.

    Attributes:
        node_id: The node.
        received: Data messages taken from the mailbox.
        processed: Messages processed successfully (and forwarded, and acked).
        failed_attempts: ``process`` calls (or routing, forwarding) that raised.
        retried: Retries scheduled after a failed attempt.
        dead_lettered: Messages sent to the dead-letter channel.
        forwarded: Messages sent to successors.
        terminal_outputs: Outputs that took no edge (results of the run).
        restarts: Times a crashed worker loop was restarted.
        mailbox: The mailbox's statistics when the run ended.
        error_routed: Messages the node gave up on and sent along its error routes
            (``a.on_error() >> h``) rather than only dead-lettering them; each is
            counted once, however many error routes it took (``forwarded`` counts
            every copy). With ``on_error(dead_letter=True)`` it is in
            ``dead_lettered`` too.
    """

    node_id: str
    received: int
    processed: int
    failed_attempts: int
    retried: int
    dead_lettered: int
    forwarded: int
    terminal_outputs: int
    restarts: int
    mailbox: ChannelStatistics
    error_routed: int = 0
