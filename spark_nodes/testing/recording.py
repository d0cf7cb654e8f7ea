"""``RecordingObserver``: an observer that remembers what it saw, for tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from spark_nodes.channels import BaseChannel, ChannelMessage

__all__ = ["ObservedEvent", "RecordingObserver"]


@dataclass(frozen=True, slots=True)
class ObservedEvent:
    """One observer call: which channel, which phase, which message."""

    channel: str
    phase: str
    message: ChannelMessage


class RecordingObserver:
    """A sync observer that appends every call to :attr:`events`.

    Use it on any channel: ``InMemoryChannel(observers=[recorder])``. :attr:`events` and
    :attr:`phases` keep every call, shutdown messages included; :meth:`payloads` and
    :meth:`messages` leave the shutdowns out (a graph's internal shutdown and wake-up
    messages carry no payload: they would show as ``None``), and :meth:`shutdowns` has
    them apart.
    """

    def __init__(self) -> None:
        self.events: list[ObservedEvent] = []

    def __call__(self, message: ChannelMessage, channel: BaseChannel, phase: str) -> None:
        """Record one event."""
        self.events.append(ObservedEvent(channel.name, phase, message))

    @property
    def phases(self) -> list[str]:
        """The phases seen, in order (of every event, shutdowns included)."""
        return [event.phase for event in self.events]

    def messages(self, phase: str | None = None) -> list[ChannelMessage]:
        """The messages seen that are not shutdowns, in order, optionally for one phase."""
        return [
            e.message
            for e in self.events
            if not e.message.is_shutdown and (phase is None or e.phase == phase)
        ]

    def payloads(self, phase: str | None = None) -> list[Any]:
        """The payloads seen, in order, optionally for one phase; shutdowns are left out."""
        return [message.payload for message in self.messages(phase)]

    def shutdowns(self, phase: str | None = None) -> list[ChannelMessage]:
        """The shutdown messages seen (wake-ups included), in order, optionally for one phase."""
        return [
            e.message
            for e in self.events
            if e.message.is_shutdown and (phase is None or e.phase == phase)
        ]
