"""A small graph whose nodes dead-letter on purpose: what the inspection and dlq tests read."""

from __future__ import annotations

from typing import Any

from spark_nodes import ExecutionContext, Graph, Node, NodeConfig, RetryPolicy


class Pricer(Node):
    """Fails on a negative order (after two attempts), passes the others on."""

    def process(self, context: ExecutionContext) -> Any:
        order = context.inputs.content
        if order < 0:
            raise ValueError(f"bad order {order}")
        return order


class Billing(Node):
    """Fails on order 0; keeps nothing."""

    def process(self, context: ExecutionContext) -> None:
        if context.inputs.content == 0:
            raise KeyError("sku")


def shop() -> Graph:
    """``pricer >> billing``, named ``shop``."""
    pricer = Pricer(
        id="pricer", config=NodeConfig(retry=RetryPolicy(max_attempts=2, initial_delay=0))
    )
    pricer >> Billing(id="billing")
    return Graph(pricer, name="shop")
