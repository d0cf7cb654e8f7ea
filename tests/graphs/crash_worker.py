"""The process the checkpoint crash test kills: ``python -m tests.graphs.crash_worker PATH N``.

It streams N items through ``source -> work -> sink``, checkpointing to PATH every 50 ms;
``sink`` appends each item to the graph state list ``done``. The test SIGKILLs it mid-stream
and resumes from the last checkpoint in another process.
"""

from __future__ import annotations

import sys
from typing import Any

import anyio

from spark_nodes import ExecutionContext, Graph, Node, Task, TaskType
from spark_nodes.channels import ChannelMessage


class Work(Node):
    async def process(self, context: ExecutionContext) -> Any:
        await anyio.sleep(0.002)  # slow enough that a kill lands mid-stream
        return context.inputs.content


class Sink(Node):
    async def process(self, context: ExecutionContext) -> None:
        await context.graph_state.append("done", context.inputs.content)


def build() -> Graph:
    """The graph, wired the same way in the killed process and in the resuming one."""
    source, work, sink = Node(id="source"), Work(id="work"), Sink(id="sink")
    source >> work >> sink
    return Graph(start=source, name="crash-test")


async def main(path: str, count: int) -> None:
    graph = build()
    for item in range(count):
        await graph.start.mailbox.send(ChannelMessage(item))
    task = Task(type=TaskType.LONG_RUNNING, checkpoint_path=path, checkpoint_every=0.05)
    await graph.run(task)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], int(sys.argv[2]))
