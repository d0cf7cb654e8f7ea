from __future__ import annotations

from typing import Any

import pytest

from spark_nodes import Graph, Node, WiringError
from spark_nodes.nodes import Equals


def targets(node: Node) -> list[str]:
    return [edge.target.id for edge in node.edges]


def test_rshift_chains_and_returns_the_right_side() -> None:
    a, b, c = Node(id="a"), Node(id="b"), Node(id="c")
    assert (a >> b >> c) is c
    assert targets(a) == ["b"]
    assert targets(b) == ["c"]
    assert a.edges[0].name == "a->b"


def test_fan_out_and_fan_in() -> None:
    a, b, c, d = Node(id="a"), Node(id="b"), Node(id="c"), Node(id="d")
    a >> [b, c] >> d
    assert targets(a) == ["b", "c"]
    assert targets(b) == ["d"]
    assert targets(c) == ["d"]
    e = Node(id="e")
    assert ([b, c] >> e) is e
    assert targets(b) == ["d", "e"]


def test_wiring_the_same_pair_twice_makes_one_edge() -> None:
    a, b = Node(id="a"), Node(id="b")
    a >> b
    a >> b
    a.on(kind="x") >> b
    a.on(kind="x") >> b
    assert len(a.edges) == 2
    assert a.edges[1].condition == Equals({"kind": "x"})


def test_conditions_route_outputs_and_unconditional_edges_always_match() -> None:
    a, high, low, log = Node(id="a"), Node(id="high"), Node(id="low"), Node(id="log")
    a.on(lambda out: out["score"] > 0.5) >> high
    a.on(lambda out: out["score"] <= 0.5) >> low
    a >> log
    assert [n.id for n in a.get_next_nodes({"score": 0.9})] == ["high", "log"]
    assert [n.id for n in a.get_next_nodes({"score": 0.1})] == ["low", "log"]


def test_equality_conditions_read_mappings_and_attributes() -> None:
    class Refund:
        kind = "refund"

    a, refunds = Node(id="a"), Node(id="refunds")
    a.on(kind="refund", currency="EUR") >> refunds
    assert a.get_next_nodes({"kind": "refund", "currency": "EUR"}) == [refunds]
    assert a.get_next_nodes({"kind": "refund"}) == []
    assert a.get_next_nodes({"kind": "sale", "currency": "EUR"}) == []
    b = Node(id="b")
    b.on(kind="refund") >> refunds
    assert b.get_next_nodes(Refund()) == [refunds]
    assert b.get_next_nodes(object()) == []


def test_the_highest_priority_matching_condition_wins_and_unconditional_edges_always_fire() -> None:
    a = Node(id="a")
    urgent, normal, audit, log = (
        Node(id="urgent"),
        Node(id="normal"),
        Node(id="audit"),
        Node(id="log"),
    )
    a.on(lambda out: out["priority"] > 90).with_priority(10) >> urgent
    a.on(lambda out: out["priority"] > 90).with_priority(10) >> audit
    a.on(lambda out: out["priority"] > 0) >> normal  # a fallback for the urgent route
    a >> log  # always
    assert [n.id for n in a.get_next_nodes({"priority": 95})] == ["urgent", "audit", "log"]
    assert [n.id for n in a.get_next_nodes({"priority": 10})] == ["normal", "log"]
    assert [n.id for n in a.get_next_nodes({"priority": -1})] == ["log"]


def test_otherwise_is_taken_when_no_condition_matched() -> None:
    a, refunds, sales, other, log = (Node(id=i) for i in ("a", "refunds", "sales", "other", "log"))
    a.on(kind="refund") >> refunds
    a.on(kind="sale") >> sales
    a.otherwise() >> other
    a >> log
    assert [n.id for n in a.get_next_nodes({"kind": "refund"})] == ["refunds", "log"]
    assert [n.id for n in a.get_next_nodes({"kind": "gift"})] == ["log", "other"]
    assert repr(a.edges[2]) == "<Edge a->other when otherwise()>"


def test_each_target_is_reached_once_whatever_matches() -> None:
    a, b = Node(id="a"), Node(id="b")
    a.on(lambda out: out > 0) >> b
    a.on(lambda out: out > 10) >> b
    assert a.get_next_nodes(50) == [b]


def test_without_an_output_only_unconditional_edges_count() -> None:
    a, b, c = Node(id="a"), Node(id="b"), Node(id="c")
    a >> b
    a.on(kind="x") >> c
    assert a.get_next_nodes() == [b]
    a.last_output = {"kind": "x"}
    assert a.get_next_nodes() == [b, c]


@pytest.mark.parametrize(
    ("wire", "text"),
    [
        (lambda a, b: a >> "b", "the right side must be a Node or a list of Nodes"),
        (lambda a, b: a >> [], "the list of targets is empty"),
        (lambda a, b: a >> [b, 3], "3 is not a Node"),
        (lambda a, b: ["x", b] >> a, "'x' is not a Node"),
        (lambda a, b: a.on() >> b, r"on\(\) needs a condition"),
        (lambda a, b: a.on(lambda out: True, kind="x") >> b, "not both"),
        (lambda a, b: a.on("kind") >> b, "edge condition must be callable"),
        (lambda a, b: a.on(kind="x").with_priority("high") >> b, "priority must be an int"),
        (lambda a, b: a.connect(b, priority=True), "priority must be an int"),
        (lambda a, b: a.connect("b"), "can only be connected to a Node"),
        (lambda a, b: a.connect(b, when=5), "edge condition must be callable"),
    ],
)
def test_wiring_mistakes_are_clear_errors(wire: Any, text: str) -> None:
    a, b = Node(id="a"), Node(id="b")
    with pytest.raises(WiringError, match=text):
        wire(a, b)


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (
            lambda a, b: 5 >> a,
            "cannot wire 5 >> <Node id='a'>: the left side must be a Node or a list of Nodes",
        ),
        (
            lambda a, b: a >> 5,
            "cannot wire <Node id='a'> >> 5: the right side must be a Node or a list of Nodes",
        ),
        (lambda a, b: [] >> a, "[] >> <Node id='a'>: the list of sources is empty"),
        (
            lambda a, b: ["x", b] >> a,
            "['x', <Node id='b'>] >> <Node id='a'>: 'x' is not a Node; only nodes can be wired",
        ),
    ],
)
def test_a_wiring_error_names_the_expression_as_written(wire: Any, message: str) -> None:
    a, b = Node(id="a"), Node(id="b")
    with pytest.raises(WiringError) as caught:
        wire(a, b)
    assert str(caught.value) == message


def test_graph_wiring_mistakes_are_found_when_the_graph_is_built() -> None:
    with pytest.raises(WiringError, match="a Graph needs nodes"):
        Graph()
    with pytest.raises(WiringError, match="Graph takes nodes, not 'a'"):
        Graph("a")  # type: ignore[arg-type]
    a, twin = Node(id="same"), Node(id="same")
    a >> twin
    with pytest.raises(WiringError, match="two nodes share the id 'same'"):
        Graph(start=a)
    with pytest.raises(WiringError, match="dead_letters must be a channel"):
        Graph(Node(), dead_letters=[])  # type: ignore[arg-type]


def test_graph_finds_nodes_by_following_edges() -> None:
    a, b, c, loose = Node(id="a"), Node(id="b"), Node(id="c"), Node(id="loose")
    a >> b >> c >> a
    assert list(Graph(start=a).nodes) == ["a", "b", "c"]
    graph = Graph(a, loose)
    assert list(graph.nodes) == ["a", "b", "c", "loose"]
    assert graph.start is a
    assert Graph(loose, start=b).start is b


def test_edge_repr_shows_condition_and_priority() -> None:
    a, b = Node(id="a"), Node(id="b")
    edge = a.on(kind="x").with_priority(2) >> b
    assert edge is b
    assert repr(a.edges[0]) == "<Edge a->b when on(kind='x') priority=2>"
