"""spark_nodes channels on their own, all in memory: ``python -m examples.channels``.

A producer sends orders through an edge (a ForwardingChannel that stamps its name on each
message) into a bounded mailbox; a consumer reads the mailbox until it is closed and
drained, acking each order. An observer on the mailbox logs every send, receive and ack.
"""

from __future__ import annotations

import anyio
import structlog

from spark_nodes.channels import BaseChannel, ChannelMessage, ForwardingChannel, InMemoryChannel

log = structlog.get_logger("examples.channels")


def trace(message: ChannelMessage, channel: BaseChannel, phase: str) -> None:
    log.info(phase, channel=channel.name, order=message.payload["order"], msg_id=message.id)


async def main(orders: int = 5) -> list[str]:
    """Run the demo; return one line per order the consumer handled."""
    mailbox = InMemoryChannel(name="kitchen", maxsize=2)  # bounded: the producer waits
    edge = ForwardingChannel(
        mailbox, name="counter->kitchen", metadata_defaults={"edge": "counter->kitchen"}
    )
    mailbox.add_observer(trace)
    handled: list[str] = []

    async def producer() -> None:
        for number in range(1, orders + 1):

            async def acked(number: int = number) -> None:
                log.info("order done", order=number)

            await edge.send(ChannelMessage({"order": number}, ack=acked))
        mailbox.close()  # queued orders are still delivered; then the consumer's loop ends

    async def consumer() -> None:
        async for message in mailbox:
            handled.append(f"order {message.payload['order']} via {message.metadata['edge']}")
            if message.ack:
                await message.ack()

    async with anyio.create_task_group() as group:
        group.start_soon(consumer)
        group.start_soon(producer)

    stats = mailbox.statistics()
    log.info("done", sent=stats.sent, received=stats.received, peak_depth=stats.peak_depth)
    return handled


if __name__ == "__main__":
    for line in anyio.run(main):
        print(line)
