"""spark_nodes: actor-style message-passing graphs.

Long-running nodes each own a mailbox channel; graphs wire nodes with ``>>``; messages and
shutdown signals flow through continuous worker loops, in one process (in-memory mailboxes)
or across processes over Redis.
"""

from spark_nodes import errors
from spark_nodes.backoff import Backoff
from spark_nodes.channels import (
    BaseChannel,
    ChannelClosed,
    ChannelFull,
    ChannelMessage,
    ChannelStatistics,
    ForwardingChannel,
    InMemoryChannel,
    QueueBridge,
    RedisChannel,
)
from spark_nodes.errors import (
    BackendUnavailable,
    ChannelUnavailable,
    CheckpointError,
    GraphCancelled,
    GraphFailed,
    GraphNotRunning,
    InvokeFailed,
    InvokeTimeout,
    LeaseLost,
    MessageDecodeError,
    MessageEncodeError,
    MessagesDeadLettered,
    MessageTooLarge,
    SparkNodesError,
    StepLimitExceeded,
    WiringError,
)
from spark_nodes.graphs import Budget, Graph, GraphResult, StopReason, Task, TaskType
from spark_nodes.nodes import (
    ExecutionContext,
    JoinNode,
    Node,
    NodeConfig,
    NodeMessage,
    OnError,
    RestartPolicy,
    RetryPolicy,
)
from spark_nodes.state import GraphState, MemoryState, RedisState, TypedState

__all__ = [
    "BackendUnavailable",
    "Backoff",
    "BaseChannel",
    "Budget",
    "ChannelClosed",
    "ChannelFull",
    "ChannelMessage",
    "ChannelStatistics",
    "ChannelUnavailable",
    "CheckpointError",
    "ExecutionContext",
    "ForwardingChannel",
    "Graph",
    "GraphCancelled",
    "GraphFailed",
    "GraphNotRunning",
    "GraphResult",
    "GraphState",
    "InMemoryChannel",
    "InvokeFailed",
    "InvokeTimeout",
    "JoinNode",
    "LeaseLost",
    "MemoryState",
    "MessageDecodeError",
    "MessageEncodeError",
    "MessageTooLarge",
    "MessagesDeadLettered",
    "Node",
    "NodeConfig",
    "NodeMessage",
    "OnError",
    "QueueBridge",
    "RedisChannel",
    "RedisState",
    "RestartPolicy",
    "RetryPolicy",
    "SparkNodesError",
    "StepLimitExceeded",
    "StopReason",
    "Task",
    "TaskType",
    "TypedState",
    "WiringError",
    "errors",
]
