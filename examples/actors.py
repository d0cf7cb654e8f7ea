"""Nodes as actors, without a graph: ``python -m examples.actors``.

``words`` splits each line it is told into words and forwards them to ``tally``
(``words >> tally``), which counts them. Each node runs as an actor on its own mailbox
(``open_actor``): ``tell`` is fire-and-forget, ``ask`` waits for what ``process``
returned for that one message, and raises ``InvokeFailed`` if the message was
dead-lettered. Leaving the blocks shuts ``words`` down first; it passes the shutdown on
to ``tally``, which ends once it has counted everything sent before.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import anyio

from spark_nodes import ExecutionContext, Node, NodeConfig
from spark_nodes.errors import InvokeFailed
from spark_nodes.nodes import RetryPolicy

LINES = [
    "The quick brown fox",
    "jumps over the lazy dog",
    "the dog sleeps",
]


class Words(Node):
    """Splits a line into lowercase words; an empty line is an error."""

    def process(self, context: ExecutionContext) -> list[str]:
        line: str = context.inputs.content
        if not line.strip():
            raise ValueError("an empty line has no words")
        return line.lower().split()


class Tally(Node):
    """Counts the words it gets; forwards nothing."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.counts: Counter[str] = Counter()

    def process(self, context: ExecutionContext) -> None:
        self.counts.update(context.inputs.content)


async def main() -> tuple[list[str], str, Counter[str]]:
    """Tell the lines, ask for one more and for an empty one; return what came back."""
    words = Words(id="words", config=NodeConfig(retry=RetryPolicy(max_attempts=1)))
    tally = Tally(id="tally")
    words >> tally
    async with tally.open_actor(), words.open_actor():  # the head innermost: it ends first
        for line in LINES:
            await words.tell(line)
        answer: list[str] = await words.ask("The end", timeout=5)
        failure = ""
        try:
            await words.ask("   ", timeout=5)
        except InvokeFailed as error:
            failure = str(error)
    return answer, failure, tally.counts


if __name__ == "__main__":
    answer, failure, counts = anyio.run(main)
    print(f"asked 'The end': {answer}")
    print(f"asked an empty line: {failure}")
    print("counted:", ", ".join(f"{word}={n}" for word, n in counts.most_common(4)))
