from __future__ import annotations

import pytest

from spark_nodes import ExecutionContext, Node, NodeConfig, NodeMessage, OnError
from spark_nodes.nodes import RestartPolicy, RetryPolicy


def test_retry_delays_grow_exponentially_within_the_jitter() -> None:
    policy = RetryPolicy(
        max_attempts=5, initial_delay=0.1, multiplier=2.0, max_delay=0.5, jitter=0.1
    )
    for attempt, expected in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.5), (5, 0.5)]:
        for _ in range(20):
            assert expected * 0.9 <= policy.delay(attempt) <= expected * 1.1


def test_retry_stops_at_max_attempts_and_on_errors_not_worth_retrying() -> None:
    policy = RetryPolicy(max_attempts=3, give_up_on=(ValueError,))
    assert policy.should_retry(1, RuntimeError())
    assert policy.should_retry(2, RuntimeError())
    assert not policy.should_retry(3, RuntimeError())
    assert not policy.should_retry(1, ValueError())
    assert not RetryPolicy().should_retry(1, RuntimeError())


@pytest.mark.parametrize(
    "arguments",
    [{"max_attempts": 0}, {"initial_delay": -1}, {"multiplier": 0.5}, {"jitter": 1.0}],
)
def test_bad_retry_policies_are_refused(arguments: dict[str, float]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        RetryPolicy(**arguments)  # type: ignore[arg-type]


def test_restart_delays_and_validation() -> None:
    policy = RestartPolicy(initial_delay=0.1, multiplier=3.0, max_delay=0.5)
    assert [policy.delay(n) for n in (1, 2, 3)] == pytest.approx([0.1, 0.3, 0.5])
    with pytest.raises(ValueError, match="max_restarts must be >= 0"):
        RestartPolicy(max_restarts=-1)
    with pytest.raises(ValueError, match="within_seconds must be > 0"):
        RestartPolicy(within_seconds=0)


def test_node_config_checks_and_coerces() -> None:
    assert NodeConfig(on_error="stop_graph").on_error is OnError.STOP_GRAPH  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="concurrency must be >= 1"):
        NodeConfig(concurrency=0)
    with pytest.raises(ValueError, match="mailbox_maxsize must be >= 0"):
        NodeConfig(mailbox_maxsize=-1)
    with pytest.raises(ValueError, match="'sometimes' is not a valid OnError"):
        NodeConfig(on_error="sometimes")  # type: ignore[arg-type]


def test_node_message_defaults() -> None:
    first, second = NodeMessage({"a": 1}), NodeMessage()
    assert first.metadata == {}
    assert first.id != second.id
    assert second.content is None


def test_execution_context_gives_inputs_state_metadata_and_emit() -> None:
    node = Node(id="n")
    inputs = NodeMessage({"x": 1}, {"trace_id": "t-1"}, "m-1")
    context = ExecutionContext(inputs, node, attempt=2, started_at=12.5)
    context.state["seen"] = True
    assert node.state == {"seen": True}
    metadata = context.metadata
    assert (metadata.node_id, metadata.message_id, metadata.trace_id) == ("n", "m-1", "t-1")
    assert (metadata.attempt, metadata.max_attempts, metadata.started_at) == (2, 1, 12.5)
    assert context.graph is None
    assert context.message is None
    context.emit("extra")
    assert context.outputs == ["extra"]
    assert "attempt=2" in repr(context)


def test_a_first_message_is_its_own_trace() -> None:
    inputs = NodeMessage("x", {}, "m-9")
    assert ExecutionContext(inputs, Node()).metadata.trace_id == "m-9"
