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

    Use it on any channel: ``InMemoryChannel(observers=[recorder])``.
    """

    def __init__(self) -> None:
        self.events: list[ObservedEvent] = []

    def __call__(self, message: ChannelMessage, channel: BaseChannel, phase: str) -> None:
        """Record one event."""
        self.events.append(ObservedEvent(channel.name, phase, message))

    @property
    def phases(self) -> list[str]:
        """The phases seen, in order."""
        return [event.phase for event in self.events]

    def payloads(self, phase: str | None = None) -> list[Any]:
        """The payloads seen, in order, optionally for one phase only."""
        return [e.message.payload for e in self.events if phase is None or e.phase == phase]
