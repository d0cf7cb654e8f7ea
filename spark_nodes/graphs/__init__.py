"""Graphs: run wired nodes together, in one pass or as long-running workers."""

from spark_nodes.graphs.graph import Graph
from spark_nodes.graphs.invoke import InvokeFailure, InvokeResult
from spark_nodes.graphs.result import GraphResult, StopReason
from spark_nodes.graphs.running import RunningGraph
from spark_nodes.graphs.task import Budget, Task, TaskType
from spark_nodes.nodes.statistics import NodeStatistics

__all__ = [
    "Budget",
    "Graph",
    "GraphResult",
    "InvokeFailure",
    "InvokeResult",
    "NodeStatistics",
    "RunningGraph",
    "StopReason",
    "Task",
    "TaskType",
]
