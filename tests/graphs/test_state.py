"""Graph state inside graphs, results, and the Graflow seed examples, with our async API."""

from __future__ import annotations

import time
from typing import Any, TypedDict

import anyio
import pytest

from spark_nodes import ExecutionContext, Graph, MemoryState, Node, NodeMessage, Task
from spark_nodes.errors import MessageEncodeError, WiringError
from spark_nodes.testing import Probe

pytestmark = pytest.mark.anyio


async def run(graph: Graph, inputs: Any = None) -> Any:
    with anyio.fail_after(10):
        return await graph.run(Task(inputs=inputs))


# -- Graflow "Channels" page ------------------------------------------------------------------


async def test_producer_and_consumer_share_state() -> None:
    seen: list[Any] = []

    class Producer(Node):
        async def process(self, context: ExecutionContext) -> str:
            channel = context.graph_state
            await channel.set("user_id", "user_123")
            return "go"

    class Consumer(Node):
        async def process(self, context: ExecutionContext) -> None:
            channel = context.graph_state
            user_id = await channel.get("user_id")
            seen.append(f"User: {user_id}")

    producer, consumer = Producer(id="producer"), Consumer(id="consumer")
    producer >> consumer
    await run(Graph(start=producer))
    assert seen == ["User: user_123"]


async def test_basic_operations() -> None:
    class BasicOperations(Node):
        async def process(self, context: ExecutionContext) -> dict[str, Any]:
            channel = context.graph_state
            # Store values
            await channel.set("user_id", "user_123")
            await channel.set("score", 95.5)
            await channel.set("active", True)
            await channel.set("profile", {"name": "Alice", "age": 30})
            # Retrieve values
            return {
                "user_id": await channel.get("user_id"),
                "score": await channel.get("score"),
                "active": await channel.get("active"),
                "profile": await channel.get("profile"),
                "setting": await channel.get("setting", default="default_value"),
            }

    result = await run(Graph(start=BasicOperations(id="basic")))
    assert result.content == {
        "user_id": "user_123",
        "score": 95.5,
        "active": True,
        "profile": {"name": "Alice", "age": 30},
        "setting": "default_value",
    }


async def test_list_operations() -> None:
    class ListOperations(Node):
        async def process(self, context: ExecutionContext) -> dict[str, Any]:
            channel = context.graph_state
            # Append to end of list (FIFO queue)
            await channel.append("logs", "Log entry 1")
            await channel.append("logs", "Log entry 2")
            await channel.append("logs", "Log entry 3")
            # Prepend to beginning of list (LIFO stack)
            await channel.prepend("stack", "First")
            await channel.prepend("stack", "Second")
            await channel.prepend("stack", "Third")
            return {"logs": await channel.get("logs"), "stack": await channel.get("stack")}

    result = await run(Graph(start=ListOperations(id="lists")))
    assert result.content == {
        "logs": ["Log entry 1", "Log entry 2", "Log entry 3"],
        "stack": ["Third", "Second", "First"],
    }


async def test_time_to_live() -> None:
    class TtlExample(Node):
        async def process(self, context: ExecutionContext) -> None:
            channel = context.graph_state
            # Cache for 5 minutes (300 seconds)
            await channel.set("api_response", {"data": "..."}, ttl=300)
            # Temporary flag expires in a moment (the seed waits 60 s). A second, not
            # 0.1 s: the test reads it back before it expires, after the whole run, which
            # can take longer than 0.1 s on a loaded machine.
            await channel.set("processing", True, ttl=1.0)
            # Collect logs that expire after 10 minutes
            await channel.append("recent_logs", "Error occurred", ttl=600)

    graph = Graph(start=TtlExample(id="ttl"))
    await run(graph)
    assert await graph.state.get("processing") is True
    await anyio.sleep(1.1)  # past the TTL (a sleep never ends early): gone for sure
    assert await graph.state.get("processing") is None
    assert await graph.state.get("api_response") == {"data": "..."}
    remaining = await graph.state.ttl("recent_logs")
    assert remaining is not None
    assert remaining > 500


class UserProfile(TypedDict):
    user_id: str
    name: str
    email: str
    age: int
    premium: bool


async def test_typed_channels() -> None:
    read_back: list[UserProfile | None] = []

    class CollectUserData(Node):
        async def process(self, context: ExecutionContext) -> str:
            typed_channel = context.graph_state.typed(UserProfile)
            user_profile: UserProfile = {
                "user_id": "user_123",
                "name": "Alice",
                "email": "alice@example.com",
                "age": 30,
                "premium": True,
            }
            await typed_channel.set("current_user", user_profile)
            return "stored"

    class ProcessUserData(Node):
        async def process(self, context: ExecutionContext) -> None:
            typed_channel = context.graph_state.typed(UserProfile)
            user = await typed_channel.get("current_user")
            read_back.append(user)

    collect, use = CollectUserData(id="collect"), ProcessUserData(id="use")
    collect >> use
    await run(Graph(start=collect))
    (user,) = read_back
    assert user is not None
    assert (user["name"], user["email"]) == ("Alice", "alice@example.com")


async def test_task_results_in_state() -> None:
    class Calculate(Node):
        def process(self, context: ExecutionContext) -> int:
            return 42

    class UsePreviousResult(Node):
        async def process(self, context: ExecutionContext) -> int:
            previous = await context.get_result("calculate")
            return int(previous) * 2

    calculate, use = Calculate(id="calculate"), UsePreviousResult(id="use")
    calculate >> use
    graph = Graph(start=calculate)
    result = await run(graph)
    assert result.content == 84
    assert await graph.state.get("calculate.__result__") == 42
    assert result.get_result("calculate") == 42
    assert result.get_result("missing", "none") == "none"
    assert "calculate.__result__" in await graph.state.keys()


async def test_collecting_parallel_results() -> None:
    class FetchData(Node):
        def __init__(self, source: str, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.source = source

        async def process(self, context: ExecutionContext) -> str:
            channel = context.graph_state
            data = f"Data from {self.source}"
            # Collect results with 1-hour expiration
            await channel.append("fetch_results", data, ttl=3600)
            return data

    start = Node(id="start")
    fetches: list[Node] = [FetchData(s, id=f"fetch_{s}") for s in ("api", "db", "cache")]
    start >> fetches
    graph = Graph(start=start)
    await run(graph, "go")
    results = await graph.state.get("fetch_results")
    assert sorted(results) == ["Data from api", "Data from cache", "Data from db"]


# -- Graflow data-flow patterns ------------------------------------------------------------------


class MetricsMessage(TypedDict):
    count: int
    status: str
    timestamp: float


async def test_data_flow_patterns() -> None:
    class Setup(Node):
        async def process(self, context: ExecutionContext) -> str:
            # Pattern 1: shared configuration
            await context.graph_state.set("config", {"batch_size": 100})
            return "configured"

    class ProcessBatch(Node):
        async def process(self, context: ExecutionContext) -> dict[str, int]:
            channel = context.graph_state
            batch_size = (await channel.get("config"))["batch_size"]
            # Pattern 2: accumulating state
            total = await channel.get("total_processed", 0)
            await channel.set("total_processed", total + batch_size)
            # Pattern 3: type-safe messages
            metrics: MetricsMessage = {"count": 100, "status": "success", "timestamp": time.time()}
            await channel.typed(MetricsMessage).set("metrics", metrics)
            return {"processed": batch_size}

    class Report(Node):
        async def process(self, context: ExecutionContext) -> dict[str, Any]:
            # Pattern 4: result dependencies
            data = await context.get_result("process")
            return {"report": data["processed"]}

    setup, process, report = Setup(id="setup"), ProcessBatch(id="process"), Report(id="report")
    setup >> process >> report
    graph = Graph(start=setup)
    result = await run(graph)
    assert result.content == {"report": 100}
    assert await graph.state.get("total_processed") == 100
    metrics = await graph.state.typed(MetricsMessage).get("metrics")
    assert metrics is not None
    assert metrics["status"] == "success"


# -- ours -----------------------------------------------------------------------------------------


async def test_state_outlives_runs_and_a_given_state_is_used() -> None:
    state = MemoryState()

    class Count(Node):
        async def process(self, context: ExecutionContext) -> None:
            await context.graph_state.incr("runs")

    graph = Graph(start=Count(id="count"), state=state)
    assert graph.state is state
    await run(graph, 1)
    await run(graph, 1)
    assert await state.get("runs") == 2


async def test_graph_state_needs_a_graph() -> None:
    context = ExecutionContext(NodeMessage(1), Node(id="alone"))
    with pytest.raises(RuntimeError, match="is not running in a graph"):
        context.graph_state  # noqa: B018
    with pytest.raises(WiringError, match="state must be a GraphState"):
        Graph(Node(), state={})  # type: ignore[arg-type]


async def test_a_result_that_is_not_plain_data_fails_when_read() -> None:
    class Opaque(Node):
        def process(self, context: ExecutionContext) -> object:
            return object()

    opaque, sink = Opaque(id="opaque"), Probe(id="sink")
    opaque >> sink
    graph = Graph(start=opaque)
    result = await run(graph, 1)
    with pytest.raises(MessageEncodeError, match=r"opaque\.__result__: object"):
        result.get_result("opaque")
    with pytest.raises(MessageEncodeError, match=r"opaque\.__result__: object"):
        await graph.state.get("opaque.__result__")


async def test_common_use_cases_from_the_data_flow_readme() -> None:
    class LoadConfig(Node):
        async def process(self, context: ExecutionContext) -> str:
            config = {"db": "postgres", "batch": 100}
            await context.graph_state.set("config", config)
            # Store the connection string, not the connection itself
            await context.graph_state.set("db_url", "postgresql://db.example/app")
            return "loaded"

    class Work(Node):
        async def process(self, context: ExecutionContext) -> None:
            channel = context.graph_state
            config = await channel.get("config")
            assert config["batch"] == 100
            # Metrics collection
            metrics = await channel.get("metrics", {})
            metrics["processed"] = metrics.get("processed", 0) + 1
            await channel.set("metrics", metrics)
            # Error accumulation
            errors = await channel.get("errors", [])
            errors.append({"task": self.id, "error": "..."})
            await channel.set("errors", errors)
            # Don't assume a key exists: give a default
            assert await channel.get("missing_key", default=None) is None

    load, work = LoadConfig(id="load_config"), Work(id="work")
    load >> work
    graph = Graph(start=load)
    await run(graph)
    state = graph.state
    # Debugging: inspect the state
    assert await state.keys() == [
        "config",
        "db_url",
        "errors",
        "load_config.__result__",
        "metrics",
    ]
    assert await state.get("metrics") == {"processed": 1}
    assert await state.get("errors") == [{"task": "work", "error": "..."}]
    assert "config" in await state.keys()
    assert await state.exists("db_url")
