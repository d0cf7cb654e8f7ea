"""A graph module that takes a while to import, as a big application does.

It says so on stderr first, so a test can signal the worker during the import.
"""

from __future__ import annotations

import sys
import time

from spark_nodes import Graph, Node

print("importing slowly", file=sys.stderr, flush=True)
time.sleep(1.5)  # module import time: before any event loop


def graph() -> Graph:
    """A one-node graph."""
    return Graph(Node(id="only"), name="slow-import")
