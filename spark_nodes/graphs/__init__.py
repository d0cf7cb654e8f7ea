"""Graphs: run wired nodes together, in one pass or as long-running workers."""

from spark_nodes.graphs.graph import Graph
from spark_nodes.graphs.inspecting import GraphInspection
from spark_nodes.graphs.invoke import InvokeFailure, InvokeResult
from spark_nodes.graphs.metrics import MetricsObserver
from spark_nodes.graphs.result import GraphResult, StopReason
from spark_nodes.graphs.running import RunningGraph
from spark_nodes.graphs.stats import EdgeStats, GraphStats, NodeStats, Timing
from spark_nodes.graphs.task import Budget, Task, TaskType
from spark_nodes.nodes.observing import GraphEvent, GraphObserver
from spark_nodes.nodes.statistics import NodeStatistics

__all__ = [
    "Budget",
    "EdgeStats",
    "Graph",
    "GraphEvent",
    "GraphInspection",
    "GraphObserver",
    "GraphResult",
    "GraphStats",
    "InvokeFailure",
    "InvokeResult",
    "MetricsObserver",
    "NodeStatistics",
    "NodeStats",
    "RunningGraph",
    "StopReason",
    "Task",
    "TaskType",
    "Timing",
]
