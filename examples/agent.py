"""A long-running agent with a deterministic fake LLM: ``python -m examples.agent``.

Questions go round a cycle until the critic accepts an answer::

    planner -(tool="calculator")-> calculator -> critic -(verdict="accept")-> answer
            -(tool="search")-----> search ----->        -(otherwise)-> planner

- **Routing on conditions**: the planner's plan picks the tool (``planner.on(tool=...)``);
  the critic's verdict picks the way out, and ``critic.otherwise()`` sends a rejected
  answer back to the planner.
- **Paid calls are durable steps**: every model call is ``context.step("llm", ...)``, so
  a retry of the node gets the stored reply instead of paying again.
- **A flaky tool, retried**: the search API fails on the first call for each query (the
  same way every run); the search node's ``RetryPolicy`` tries again, and the query the
  model wrote before the failure is not paid for twice.
- **Shared state**: a scratchpad per question, which the planner reads to revise its
  plan, and a spend counter, both in the graph state (``context.graph_state``).
- **A step limit**: the critic never accepts an answer to the meaning of life.
  ``Task(max_steps=...)`` dead-letters the question after three rounds (each hop round
  the cycle is a step), and its ``invoke`` raises ``InvokeFailed`` saying so. Its fourth
  plan was paid for before the limit dropped it: ``process`` runs before routing.
- **Answers through ``graph.invoke``**: the graph runs ``LONG_RUNNING`` in a task group
  (``task_group.start(graph.run, task)``); the questions are asked at the same time, and
  each invoke gets the answer to its own question.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import anyio

from spark_nodes import (
    ExecutionContext,
    Graph,
    InvokeFailed,
    Node,
    NodeConfig,
    RetryPolicy,
    Task,
    TaskType,
)
from spark_nodes.graphs import InvokeFailure

MAX_STEPS = 9  # three rounds of plan -> tool -> critique: 3 hops each
PRICE_CENTS = 3  # what one model call costs

QUESTIONS = {
    "q1": "What is 17 * 23?",
    "q2": "When was the Eiffel Tower finished?",
    "q3": "How many minutes are in a week?",
    "q4": "What is the meaning of life?",
}


class FakeLLM:
    """A deterministic stand-in for a paid model: canned replies, and the invoice.

    ``complete(role, question, notes)`` replies as a model prompted for that role would,
    from the question and the scratchpad. Every call is paid; ``paid_calls`` counts them.
    """

    PLANS: ClassVar[dict[str, list[str]]] = {  # a plan per round; the last one repeats
        QUESTIONS["q1"]: ["calculator: 17 * 23"],
        QUESTIONS["q2"]: ["search"],
        QUESTIONS["q3"]: ["search", "calculator: 7 * 24 * 60"],
        QUESTIONS["q4"]: ["search"],
    }
    QUERIES: ClassVar[dict[str, str]] = {
        QUESTIONS["q2"]: "eiffel tower completed",
        QUESTIONS["q3"]: "minutes in a week",
        QUESTIONS["q4"]: "meaning of life",
    }

    def __init__(self) -> None:
        self.paid_calls = 0

    async def complete(self, role: str, question: str, notes: list[str]) -> str:
        self.paid_calls += 1
        await anyio.lowlevel.checkpoint()  # a real model is a network call
        if role == "plan":
            plans = self.PLANS[question]
            rounds = sum(note.startswith("critic: revise") for note in notes)
            return plans[min(rounds, len(plans) - 1)]
        if role == "query":
            return self.QUERIES[question]
        observation = notes[-1]  # role == "critique": judge the tool's last finding
        if any(char.isdigit() for char in observation):
            return "accept"
        return "revise: no figure in that; try another way"


class SearchAPI:
    """A web search that fails on its first call for each query: flaky, reproducibly."""

    INDEX: ClassVar[dict[str, str]] = {
        "eiffel tower completed": "The Eiffel Tower was completed on 31 March 1889.",
        "minutes in a week": "'How many minutes are in a week? The answer may surprise you'",
        "meaning of life": "many opinions, no agreement",
    }

    def __init__(self) -> None:
        self.calls = 0
        self.tried: set[str] = set()

    async def search(self, query: str) -> str:
        self.calls += 1
        await anyio.lowlevel.checkpoint()
        if query not in self.tried:
            self.tried.add(query)
            raise ConnectionError(f"search API: 503 Service Unavailable for {query!r}")
        return self.INDEX.get(query, "no results")


async def note(context: ExecutionContext, work: dict[str, Any], line: str) -> None:
    """Append ``line`` to the question's scratchpad in the graph state."""
    await context.graph_state.append(f"scratch:{work['id']}", line)


class ModelNode(Node):
    """A node that calls the model: each call a durable step, its cost added to the spend."""

    def __init__(self, llm: FakeLLM, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.llm = llm

    async def call_model(self, context: ExecutionContext, role: str, question: str) -> str:
        """One paid call per message at this node, however often the message is handled."""
        notes = await context.graph_state.get(f"scratch:{context.inputs.content['id']}", [])

        async def paid_call() -> str:
            reply = await self.llm.complete(role, question, notes)
            await context.graph_state.incr("spend_cents", PRICE_CENTS)  # runs once, as the call
            return reply

        reply: str = await context.step("llm", paid_call)
        return reply


class Planner(ModelNode):
    async def process(self, context: ExecutionContext) -> dict[str, Any]:
        work = context.inputs.content
        plan = await self.call_model(context, "plan", work["question"])
        tool, _, tool_input = plan.partition(":")
        await note(context, work, f"planner: {tool} {tool_input.strip()}".rstrip())
        return {
            "id": work["id"],
            "question": work["question"],
            "tool": tool,
            "input": tool_input.strip(),
        }


class Calculator(Node):
    def process(self, context: ExecutionContext) -> dict[str, Any]:
        work = context.inputs.content
        product = math.prod(int(factor) for factor in work["input"].split("*"))
        return {**work, "observation": str(product)}


class Search(ModelNode):
    def __init__(self, llm: FakeLLM, api: SearchAPI, **kwargs: Any) -> None:
        super().__init__(llm, **kwargs)
        self.api = api

    async def process(self, context: ExecutionContext) -> dict[str, Any]:
        work = context.inputs.content
        query = await self.call_model(context, "query", work["question"])  # paid once per message
        found = await self.api.search(query)  # raises on the first call: the retry's job
        return {**work, "observation": found}


class Critic(ModelNode):
    async def process(self, context: ExecutionContext) -> dict[str, Any]:
        work = context.inputs.content
        await note(context, work, f"{work['tool']}: {work['observation']}")
        verdict = await self.call_model(context, "critique", work["question"])
        await note(context, work, f"critic: {verdict}")
        return {**work, "verdict": verdict.partition(":")[0]}


class Answer(Node):
    """Ends a question: the answer is what the critic accepted; the scratchpad goes."""

    async def process(self, context: ExecutionContext) -> str:
        work = context.inputs.content
        await context.graph_state.delete(f"scratch:{work['id']}")
        answer: str = work["observation"]
        return answer


def build(llm: FakeLLM, api: SearchAPI) -> Graph:
    """Wire the agent: planner -> tool -> critic, and back to the planner until accepted."""
    planner = Planner(llm, id="planner")
    calculator = Calculator(id="calculator")
    search = Search(
        llm,
        api,
        id="search",
        config=NodeConfig(retry=RetryPolicy(max_attempts=3, initial_delay=0.01)),
    )
    critic, answer = Critic(llm, id="critic"), Answer(id="answer")
    planner.on(tool="calculator") >> calculator >> critic
    planner.on(tool="search") >> search >> critic
    critic.on(verdict="accept") >> answer
    critic.otherwise() >> planner  # revise: another round, with the critique in the pad
    return Graph(start=planner, name="agent")


@dataclass
class Report:
    """What the agent did: answers, the questions it gave up on, and what it cost."""

    answers: dict[str, str] = field(default_factory=dict)
    stopped: dict[str, InvokeFailure] = field(default_factory=dict)  # why, per question
    scratchpads: dict[str, list[str]] = field(default_factory=dict)  # of the stopped ones
    paid_calls: int = 0  # the model's invoice
    spend_cents: int = 0  # the agent's own count, in the graph state
    search_calls: int = 0
    search_retries: int = 0
    dead_lettered: int = 0


async def main() -> Report:
    """Serve the agent in the background, ask every question at once, shut down."""
    llm, api = FakeLLM(), SearchAPI()
    graph = build(llm, api)
    report = Report()

    async def ask(question_id: str) -> None:
        question = {"id": question_id, "question": QUESTIONS[question_id]}
        try:
            reply = await graph.invoke(question, timeout=5)
        except InvokeFailed as error:  # here: the step limit dead-lettered it
            report.stopped[question_id] = error.result.failures[0]
            report.scratchpads[question_id] = await graph.state.get(f"scratch:{question_id}")
        else:
            report.answers[question_id] = reply.content

    async with anyio.create_task_group() as group:
        run = await group.start(graph.run, Task(type=TaskType.LONG_RUNNING, max_steps=MAX_STEPS))
        async with anyio.create_task_group() as questions:
            for question_id in QUESTIONS:
                questions.start_soon(ask, question_id)
        await run.shutdown()  # graceful: returns at once, the run ends when drained
    assert run.result is not None  # the run ended with the task group
    report.paid_calls, report.search_calls = llm.paid_calls, api.calls
    report.spend_cents = await graph.state.get("spend_cents", 0)
    report.search_retries = run.result.node_stats["search"].retried
    report.dead_lettered = run.result.dead_lettered
    return report


if __name__ == "__main__":
    report = anyio.run(main)
    for question_id, question in QUESTIONS.items():
        print(f"{question_id} {question}")
        if question_id in report.answers:
            print(f"    answer: {report.answers[question_id]}")
        else:
            failure = report.stopped[question_id]
            print(f"    stopped at {failure.node} ({failure.phase}): {failure.error}")
            print("".join(f"    | {line}\n" for line in report.scratchpads[question_id]), end="")
    print(f"search API: {report.search_calls} calls, {report.search_retries} retries")
    print(f"model: {report.paid_calls} paid calls, {report.spend_cents} cents spent")
    print(f"dead letters: {report.dead_lettered}")
