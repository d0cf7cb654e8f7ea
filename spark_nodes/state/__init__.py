"""Graph state: key-value data a graph's nodes share, with TTLs, lists, typed views.

:class:`GraphState` is the contract; :class:`MemoryState` keeps it in this process (the
default), :class:`RedisState` in Redis, shared by every process that runs the graph;
``state.typed(MyTypedDict)`` gives a :class:`TypedState` view.
"""

from spark_nodes.state.base import RESULT_SUFFIX, GraphState, ResultSource, StateTransaction
from spark_nodes.state.memory import MemoryState
from spark_nodes.state.redis import RedisState
from spark_nodes.state.typed import TypedState

__all__ = [
    "RESULT_SUFFIX",
    "GraphState",
    "MemoryState",
    "RedisState",
    "ResultSource",
    "StateTransaction",
    "TypedState",
]
