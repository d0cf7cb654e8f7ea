"""Nodes: long-running actors with mailboxes, wired into graphs with ``>>`` or run alone."""

from spark_nodes.nodes.actor import Actor
from spark_nodes.nodes.config import NodeConfig, OnError, RestartPolicy, RetryPolicy
from spark_nodes.nodes.context import ExecutionContext, ExecutionMetadata
from spark_nodes.nodes.edges import Condition, Edge, EdgeBuilder, Equals, ErrorRoute, Otherwise
from spark_nodes.nodes.join import JoinNode
from spark_nodes.nodes.message import FailedMessage, NodeMessage
from spark_nodes.nodes.node import NO_OUTPUT, Node
from spark_nodes.nodes.statistics import NodeStatistics
from spark_nodes.nodes.timers import Ticker
from spark_nodes.nodes.windows import CountWindow, TimeWindow, Window

__all__ = [
    "NO_OUTPUT",
    "Actor",
    "Condition",
    "CountWindow",
    "Edge",
    "EdgeBuilder",
    "Equals",
    "ErrorRoute",
    "ExecutionContext",
    "ExecutionMetadata",
    "FailedMessage",
    "JoinNode",
    "Node",
    "NodeConfig",
    "NodeMessage",
    "NodeStatistics",
    "OnError",
    "Otherwise",
    "RestartPolicy",
    "RetryPolicy",
    "Ticker",
    "TimeWindow",
    "Window",
]
