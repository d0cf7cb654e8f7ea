"""Nodes: long-running actors with mailboxes, wired into graphs with ``>>`` or run alone."""

from spark_nodes.nodes.actor import Actor
from spark_nodes.nodes.config import NodeConfig, OnError, RestartPolicy, RetryPolicy
from spark_nodes.nodes.context import ExecutionContext, ExecutionMetadata
from spark_nodes.nodes.edges import Condition, Edge, EdgeBuilder, Equals, Otherwise
from spark_nodes.nodes.join import JoinNode
from spark_nodes.nodes.message import NodeMessage
from spark_nodes.nodes.node import NO_OUTPUT, Node
from spark_nodes.nodes.statistics import NodeStatistics

__all__ = [
    "NO_OUTPUT",
    "Actor",
    "Condition",
    "Edge",
    "EdgeBuilder",
    "Equals",
    "ExecutionContext",
    "ExecutionMetadata",
    "JoinNode",
    "Node",
    "NodeConfig",
    "NodeMessage",
    "NodeStatistics",
    "OnError",
    "Otherwise",
    "RestartPolicy",
    "RetryPolicy",
]
