"""Diagrams of a graph: Mermaid, Graphviz DOT and JSON renderings of its wiring and counts."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from examples import actors, agent, custom_channel, hello, instrumented, redis_orders, streaming
from spark_nodes import Graph, JoinNode, Node
from spark_nodes.graphs.diagram import to_dot, to_json, to_mermaid
from spark_nodes.graphs.stats import EdgeStats, GraphStats, NodeStats, Timing
from spark_nodes.nodes.edges import OTHERWISE_PRIORITY

ROOT = Path(__file__).resolve().parent.parent.parent

# -- graphs ------------------------------------------------------------------------------------


def is_big(order: dict[str, Any]) -> bool:
    return bool(order["amount"] > 100)


def needs_tool(answer: dict[str, Any]) -> bool:
    return bool(answer.get("tool"))


def pipeline() -> Graph:
    read, clean, store = Node(id="read"), Node(id="clean"), Node(id="store")
    read >> clean >> store
    return Graph(start=read, name="pipeline")


def fan_out() -> Graph:
    route = Node(id="route")
    refund, review, bill = Node(id="refund"), Node(id="review"), Node(id="bill")
    other, audit = Node(id="other"), Node(id="audit")
    route.on(kind="refund") >> refund
    route.on(is_big).with_priority(2) >> review
    route.on(lambda order: order["kind"] == "sale") >> bill
    route.otherwise() >> other
    route >> audit
    return Graph(start=route, name="fan-out")


def joined() -> Graph:
    split, left, right = Node(id="split"), Node(id="left"), Node(id="right")
    merge, sink = JoinNode(id="merge"), Node(id="sink")
    split >> [left, right] >> merge >> sink
    return Graph(start=split, name="join")


def looped() -> Graph:
    ask, router, tool, done = Node(id="ask"), Node(id="router"), Node(id="tool"), Node(id="done")
    ask >> router
    router.on(needs_tool) >> tool >> router
    router.otherwise() >> done
    done.on(retry=True) >> done
    return Graph(start=ask, name="agent")


def oddly_named() -> Graph:
    quoted = Node(id='say "hi"')
    arrow = Node(id="a->b|c")
    fancy = Node(id="ünï <b>#1</b>\nnext")
    slash = Node(id="C:\\dir\\")
    quoted.on(kind='x "y"') >> arrow >> fancy >> slash
    return Graph(start=quoted, name='odd "graph"')


def node_stats(
    node_id: str, received: int, processed: int, dead_lettered: int = 0, depth: int = 0
) -> NodeStats:
    return NodeStats(
        node_id=node_id,
        received=received,
        processed=processed,
        forwarded=processed,
        terminal_outputs=0,
        failed_attempts=dead_lettered * 2,
        retried=dead_lettered,
        dead_lettered=dead_lettered,
        restarts=0,
        mailbox_depth=depth,
        rate=2.5,
        process_time=Timing(count=3, p50=0.001, p90=0.002, p99=0.003, max=0.004),
        queue_time=None,
    )


def edge_stats(name: str, sent: int) -> EdgeStats:
    source, target = name.split("->")
    return EdgeStats(name=name, source=source, target=target, sent=sent, rate=0.5)


def graph_stats(nodes: list[NodeStats], edges: list[tuple[str, int]]) -> GraphStats:
    return GraphStats(
        graph="pipeline",
        taken_at=1_700_000_000.0,
        elapsed=4.0,
        running=True,
        nodes={stats.node_id: stats for stats in nodes},
        edges={name: edge_stats(name, sent) for name, sent in edges},
    )


def pipeline_stats() -> GraphStats:
    """Counts for ``read`` and ``clean`` and the edge between them; none for ``store``."""
    return graph_stats(
        [node_stats("read", 10, 9, dead_lettered=1), node_stats("clean", 9, 7, depth=2)],
        [("read->clean", 9), ("read->elsewhere", 4)],
    )


# -- well-formedness, for any graph ------------------------------------------------------------

_MERMAID_TEXT = r'"[^"|`<>]*"'  # escaped label text: only <br> may hold "<", checked apart
_MERMAID_LINE = re.compile(
    r"flowchart LR"
    rf"|    (    )?n\d+(\(\[{_MERMAID_TEXT}\]\)|\[{_MERMAID_TEXT}\]|\{{\{{{_MERMAID_TEXT}\}}\}})"
    r'|    subgraph c\d+ \["cycle"\]|    end'
    rf"|    n\d+ (-->|-\.->)(\|{_MERMAID_TEXT}\|)? n\d+"
    r"|    classDef entry stroke-width:3px|    class n\d+(,n\d+)* entry"
)
_DOT_STRING = r'"(?:[^"\\\n]|\\.)*"'


def assert_well_formed_mermaid(text: str) -> None:
    for line in text.replace("<br>", "").splitlines():
        assert _MERMAID_LINE.fullmatch(line), f"unexpected Mermaid line {line!r}"


def assert_well_formed_dot(text: str) -> None:
    lines = text.splitlines()
    assert re.fullmatch(rf"digraph {_DOT_STRING} \{{", lines[0])
    assert lines[-1] == "}"
    for line in lines[1:-1]:
        bare = re.sub(_DOT_STRING, "S", line)
        assert '"' not in bare, f"unbalanced quotes in DOT line {line!r}"
        assert bare.endswith((";", "{", "}")), f"unexpected DOT line {line!r}"


def dot_unquote(text: str) -> str:
    """The string a DOT label holds: ``\\"`` is a quote, ``\\\\`` a backslash, ``\\n`` a break."""
    return re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], text[1:-1])


# -- a pipeline --------------------------------------------------------------------------------


def test_a_pipeline_in_mermaid_is_a_chain_from_a_stadium_shaped_entry() -> None:
    assert to_mermaid(pipeline()) == (
        "flowchart LR\n"
        '    n0(["read"])\n'
        '    n1["clean"]\n'
        '    n2["store"]\n'
        "    n0 --> n1\n"
        "    n1 --> n2\n"
        "    classDef entry stroke-width:3px\n"
        "    class n0 entry\n"
    )


def test_a_pipeline_in_dot_quotes_every_id_and_gives_the_entry_a_thick_border() -> None:
    assert to_dot(pipeline()) == (
        'digraph "pipeline" {\n'
        "    rankdir=LR;\n"
        "    node [shape=box, style=rounded];\n"
        '    "read" [label="read", penwidth=3];\n'
        '    "clean" [label="clean"];\n'
        '    "store" [label="store"];\n'
        '    "read" -> "clean";\n'
        '    "clean" -> "store";\n'
        "}\n"
    )


def test_a_pipeline_in_json_lists_nodes_in_discovery_order_and_edges_by_source() -> None:
    plain = {"type": "Node", "join": False, "cycle": None}
    straight = {"condition": None, "priority": 0, "back_edge": False}
    assert json.loads(to_json(pipeline())) == {
        "graph": "pipeline",
        "nodes": [
            {"id": "read", **plain, "entry": True},
            {"id": "clean", **plain, "entry": False},
            {"id": "store", **plain, "entry": False},
        ],
        "edges": [
            {"name": "read->clean", "source": "read", "target": "clean", **straight},
            {"name": "clean->store", "source": "clean", "target": "store", **straight},
        ],
    }


def test_the_graph_methods_render_what_the_module_functions_do() -> None:
    graph, stats = pipeline(), pipeline_stats()
    assert graph.to_mermaid() == to_mermaid(graph)
    assert graph.to_dot(stats) == to_dot(graph, stats)
    assert graph.to_json(stats) == to_json(graph, stats)


# -- conditions --------------------------------------------------------------------------------


def test_a_conditional_fan_out_in_mermaid_labels_each_condition_and_a_priority() -> None:
    assert to_mermaid(fan_out()) == (
        "flowchart LR\n"
        '    n0(["route"])\n'
        '    n1["refund"]\n'
        '    n2["review"]\n'
        '    n3["bill"]\n'
        '    n4["other"]\n'
        '    n5["audit"]\n'
        '    n0 -->|"kind=refund"| n1\n'
        '    n0 -->|"is_big · priority 2"| n2\n'
        '    n0 -->|"lambda"| n3\n'
        '    n0 -->|"otherwise"| n4\n'
        "    n0 --> n5\n"
        "    classDef entry stroke-width:3px\n"
        "    class n0 entry\n"
    )


def test_a_conditional_fan_out_in_dot_labels_each_condition_and_a_priority() -> None:
    assert to_dot(fan_out()) == (
        'digraph "fan-out" {\n'
        "    rankdir=LR;\n"
        "    node [shape=box, style=rounded];\n"
        '    "route" [label="route", penwidth=3];\n'
        '    "refund" [label="refund"];\n'
        '    "review" [label="review"];\n'
        '    "bill" [label="bill"];\n'
        '    "other" [label="other"];\n'
        '    "audit" [label="audit"];\n'
        '    "route" -> "refund" [label="kind=refund"];\n'
        '    "route" -> "review" [label="is_big · priority 2"];\n'
        '    "route" -> "bill" [label="lambda"];\n'
        '    "route" -> "other" [label="otherwise"];\n'
        '    "route" -> "audit";\n'
        "}\n"
    )


def test_a_conditional_fan_out_in_json_has_each_condition_and_its_raw_priority() -> None:
    document = json.loads(to_json(fan_out()))
    assert [node["id"] for node in document["nodes"]] == [
        "route",
        "refund",
        "review",
        "bill",
        "other",
        "audit",
    ]
    edges = [(e["target"], e["condition"], e["priority"]) for e in document["edges"]]
    assert edges == [
        ("refund", "kind=refund", 0),
        ("review", "is_big", 2),
        ("bill", "lambda", 0),
        ("other", "otherwise", OTHERWISE_PRIORITY),
        ("audit", None, 0),
    ]
    assert {e["source"] for e in document["edges"]} == {"route"}
    assert not any(e["back_edge"] for e in document["edges"])


class AtLeast:
    def __init__(self, floor: int) -> None:
        self.floor = floor

    def __call__(self, output: Any) -> bool:
        return bool(output >= self.floor)


def test_a_condition_reads_as_its_pairs_its_name_or_its_class() -> None:
    source = Node(id="source")
    targets = [Node(id=f"t{n}") for n in range(5)]
    source.on(kind="refund", code="404", flag=True, word="None") >> targets[0]
    source.on(AtLeast(3)) >> targets[1]
    source.on(functools.partial(is_big)) >> targets[2]
    source.on(needs_tool).with_priority(-1) >> targets[3]
    source.connect(targets[4], priority=5)  # drawn as wired, though it changes nothing
    conditions = [e["condition"] for e in json.loads(to_json(Graph(source)))["edges"]]
    assert conditions == [
        "kind=refund, code='404', flag=True, word='None'",
        "AtLeast",
        "partial",
        "needs_tool",
        None,
    ]
    dot = to_dot(Graph(source))
    assert '"source" -> "t3" [label="needs_tool · priority -1"];' in dot
    assert '"source" -> "t4" [label="priority 5"];' in dot


# -- joins and cycles --------------------------------------------------------------------------


def test_a_join_in_mermaid_is_a_hexagon() -> None:
    assert to_mermaid(joined()) == (
        "flowchart LR\n"
        '    n0(["split"])\n'
        '    n1["left"]\n'
        '    n2{{"merge"}}\n'
        '    n3["sink"]\n'
        '    n4["right"]\n'
        "    n0 --> n1\n"
        "    n0 --> n4\n"
        "    n1 --> n2\n"
        "    n2 --> n3\n"
        "    n4 --> n2\n"
        "    classDef entry stroke-width:3px\n"
        "    class n0 entry\n"
    )


def test_a_join_in_dot_is_a_hexagon() -> None:
    assert to_dot(joined()) == (
        'digraph "join" {\n'
        "    rankdir=LR;\n"
        "    node [shape=box, style=rounded];\n"
        '    "split" [label="split", penwidth=3];\n'
        '    "left" [label="left"];\n'
        '    "merge" [label="merge", shape=hexagon];\n'
        '    "sink" [label="sink"];\n'
        '    "right" [label="right"];\n'
        '    "split" -> "left";\n'
        '    "split" -> "right";\n'
        '    "left" -> "merge";\n'
        '    "merge" -> "sink";\n'
        '    "right" -> "merge";\n'
        "}\n"
    )


def test_a_join_in_json_is_marked_with_its_class() -> None:
    nodes = json.loads(to_json(joined()))["nodes"]
    assert [(n["id"], n["type"], n["join"]) for n in nodes] == [
        ("split", "Node", False),
        ("left", "Node", False),
        ("merge", "JoinNode", True),
        ("sink", "Node", False),
        ("right", "Node", False),
    ]
    assert [n["id"] for n in nodes if n["entry"]] == ["split"]


def test_cycles_in_mermaid_are_subgraphs_and_their_back_edges_are_dotted() -> None:
    assert to_mermaid(looped()) == (
        "flowchart LR\n"
        '    n0(["ask"])\n'
        '    subgraph c0 ["cycle"]\n'
        '        n1["router"]\n'
        '        n2["tool"]\n'
        "    end\n"
        '    subgraph c1 ["cycle"]\n'
        '        n3["done"]\n'
        "    end\n"
        "    n0 --> n1\n"
        '    n1 -->|"needs_tool"| n2\n'
        '    n1 -->|"otherwise"| n3\n'
        "    n2 -.-> n1\n"
        '    n3 -.->|"retry=True"| n3\n'
        "    classDef entry stroke-width:3px\n"
        "    class n0 entry\n"
    )


def test_cycles_in_dot_are_dashed_clusters_and_their_back_edges_are_dashed() -> None:
    assert to_dot(looped()) == (
        'digraph "agent" {\n'
        "    rankdir=LR;\n"
        "    node [shape=box, style=rounded];\n"
        '    "ask" [label="ask", penwidth=3];\n'
        '    subgraph "cluster_cycle_0" {\n'
        '        label="cycle";\n'
        "        style=dashed;\n"
        '        "router" [label="router"];\n'
        '        "tool" [label="tool"];\n'
        "    }\n"
        '    subgraph "cluster_cycle_1" {\n'
        '        label="cycle";\n'
        "        style=dashed;\n"
        '        "done" [label="done"];\n'
        "    }\n"
        '    "ask" -> "router";\n'
        '    "router" -> "tool" [label="needs_tool"];\n'
        '    "router" -> "done" [label="otherwise"];\n'
        '    "tool" -> "router" [style=dashed];\n'
        '    "done" -> "done" [label="retry=True", style=dashed];\n'
        "}\n"
    )


def test_cycles_in_json_list_each_nodes_cycle_and_mark_the_back_edges() -> None:
    document = json.loads(to_json(looped()))
    assert [(n["id"], n["cycle"], n["entry"]) for n in document["nodes"]] == [
        ("ask", None, True),
        ("router", ["router", "tool"], False),
        ("tool", ["router", "tool"], False),
        ("done", ["done"], False),
    ]
    assert [(e["name"], e["condition"], e["back_edge"]) for e in document["edges"]] == [
        ("ask->router", None, False),
        ("router->tool", "needs_tool", False),
        ("router->done", "otherwise", False),
        ("tool->router", None, True),
        ("done->done", "retry=True", True),
    ]


def test_every_node_nothing_upstream_feeds_is_an_entry() -> None:
    orders, refunds, ledger = Node(id="orders"), Node(id="refunds"), Node(id="ledger")
    orders >> ledger
    refunds >> ledger
    graph = Graph(orders, refunds)
    assert [n["id"] for n in json.loads(to_json(graph))["nodes"] if n["entry"]] == [
        "orders",
        "refunds",
    ]
    assert to_mermaid(graph).endswith("    class n0,n2 entry\n")
    assert '"refunds" [label="refunds", penwidth=3];' in to_dot(graph)


def test_the_same_wiring_renders_the_same_text_in_any_process() -> None:
    # Cycles are sets of ids, whose order changes with the hash seed from one process to
    # the next: the diagrams must not.
    script = (
        "from tests.graphs.test_diagram import looped, oddly_named\n"
        "for graph in (looped(), oddly_named()):\n"
        "    print(graph.to_mermaid(), graph.to_dot(), graph.to_json())\n"
    )
    outputs = set()
    for seed in ("1", "2", "3"):
        done = subprocess.run(
            [sys.executable, "-c", script],
            cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        outputs.add(done.stdout)
    assert len(outputs) == 1
    here = "".join(
        f"{g.to_mermaid()} {g.to_dot()} {g.to_json()}\n" for g in (looped(), oddly_named())
    )
    assert outputs == {here}


# -- escaping ----------------------------------------------------------------------------------


def test_mermaid_gives_nodes_safe_ids_and_escapes_their_labels() -> None:
    text = to_mermaid(oddly_named())
    assert text == (
        "flowchart LR\n"
        '    n0(["say #quot;hi#quot;"])\n'
        '    n1["a-#gt;b#124;c"]\n'
        '    n2["ünï #lt;b#gt;#35;1#lt;/b#gt;<br>next"]\n'
        '    n3["C:\\dir\\"]\n'
        "    n0 -->|\"kind='x #quot;y#quot;'\"| n1\n"
        "    n1 --> n2\n"
        "    n2 --> n3\n"
        "    classDef entry stroke-width:3px\n"
        "    class n0 entry\n"
    )
    assert_well_formed_mermaid(text)


def test_dot_quotes_ids_and_escapes_quotes_backslashes_and_line_breaks() -> None:
    text = to_dot(oddly_named())
    assert text == (
        'digraph "odd \\"graph\\"" {\n'
        "    rankdir=LR;\n"
        "    node [shape=box, style=rounded];\n"
        '    "say \\"hi\\"" [label="say \\"hi\\"", penwidth=3];\n'
        '    "a->b|c" [label="a->b|c"];\n'
        '    "ünï <b>#1</b>\\nnext" [label="ünï <b>#1</b>\\nnext"];\n'
        '    "C:\\\\dir\\\\" [label="C:\\\\dir\\\\"];\n'
        '    "say \\"hi\\"" -> "a->b|c" [label="kind=\'x \\"y\\"\'"];\n'
        '    "a->b|c" -> "ünï <b>#1</b>\\nnext";\n'
        '    "ünï <b>#1</b>\\nnext" -> "C:\\\\dir\\\\";\n'
        "}\n"
    )
    assert_well_formed_dot(text)
    labels = re.findall(rf"label=({_DOT_STRING})", text)
    assert [dot_unquote(label) for label in labels[:4]] == list(oddly_named().nodes)


def test_json_round_trips_any_id() -> None:
    graph = oddly_named()
    document = json.loads(to_json(graph))
    assert document["graph"] == 'odd "graph"'
    assert [node["id"] for node in document["nodes"]] == list(graph.nodes)
    assert [edge["name"] for edge in document["edges"]] == [
        'say "hi"->a->b|c',
        "a->b|c->ünï <b>#1</b>\nnext",
        "ünï <b>#1</b>\nnext->C:\\dir\\",
    ]
    assert document["edges"][0]["condition"] == "kind='x \"y\"'"


# -- counts ------------------------------------------------------------------------------------


def test_counts_from_stats_appear_on_node_and_edge_labels_in_mermaid() -> None:
    assert to_mermaid(pipeline(), pipeline_stats()) == (
        "flowchart LR\n"
        '    n0(["read<br>in 10 · done 9 · dlq 1 · depth 0"])\n'
        '    n1["clean<br>in 9 · done 7 · dlq 0 · depth 2"]\n'
        '    n2["store"]\n'
        '    n0 -->|"sent 9"| n1\n'
        "    n1 --> n2\n"
        "    classDef entry stroke-width:3px\n"
        "    class n0 entry\n"
    )


def test_counts_from_stats_appear_on_node_and_edge_labels_in_dot() -> None:
    assert to_dot(pipeline(), pipeline_stats()) == (
        'digraph "pipeline" {\n'
        "    rankdir=LR;\n"
        "    node [shape=box, style=rounded];\n"
        '    "read" [label="read\\nin 10 · done 9 · dlq 1 · depth 0", penwidth=3];\n'
        '    "clean" [label="clean\\nin 9 · done 7 · dlq 0 · depth 2"];\n'
        '    "store" [label="store"];\n'
        '    "read" -> "clean" [label="sent 9"];\n'
        '    "clean" -> "store";\n'
        "}\n"
    )


def test_counts_from_stats_appear_in_json_for_what_the_stats_have() -> None:
    document = json.loads(to_json(pipeline(), pipeline_stats()))
    read, clean, store = document["nodes"]
    assert read == {
        "id": "read",
        "type": "Node",
        "join": False,
        "cycle": None,
        "entry": True,
        "received": 10,
        "processed": 9,
        "forwarded": 9,
        "terminal_outputs": 0,
        "failed_attempts": 2,
        "retried": 1,
        "dead_lettered": 1,
        "restarts": 0,
        "mailbox_depth": 0,
        "rate": 2.5,
        "process_time": {"count": 3, "p50": 0.001, "p90": 0.002, "p99": 0.003, "max": 0.004},
        "queue_time": None,
        "workers": 1,
        "error_routed": 0,
    }
    assert clean["mailbox_depth"] == 2
    assert "received" not in store  # the stats have no figures for it
    counted, uncounted = document["edges"]
    assert (counted["sent"], counted["rate"]) == (9, 0.5)
    assert "sent" not in uncounted


def test_edges_sharing_a_name_show_their_shared_count_once() -> None:
    source, target = Node(id="source"), Node(id="target")
    source.on(kind="a") >> target
    source.on(kind="b") >> target
    graph = Graph(source)
    stats = graph_stats([], [("source->target", 5)])
    assert to_mermaid(graph, stats).count("sent 5") == 1
    assert to_dot(graph, stats).count("sent 5") == 1
    edges = json.loads(to_json(graph, stats))["edges"]
    assert [(e["condition"], e.get("sent")) for e in edges] == [("kind=a", 5), ("kind=b", None)]


# -- the examples ------------------------------------------------------------------------------


def actors_wiring() -> Graph:
    """``examples/actors.py`` wires its two actors in ``main()`` and runs no graph: the same."""
    words, tally = actors.Words(id="words"), actors.Tally(id="tally")
    words >> tally
    return Graph(words, name="actors")


def help_desk() -> Graph:
    """``examples/custom_channel.py`` builds its graph inside a run: the same graph."""
    desk = custom_channel.Desk(id="desk", mailbox=custom_channel.FastPriorityChannel(name="d"))
    return Graph(start=desk, name="help-desk")


EXAMPLE_GRAPHS: dict[str, Callable[[], Graph]] = {
    "hello": lambda: hello.build()[0],
    "instrumented": instrumented.build,
    "redis_orders": redis_orders.build,  # no Redis until the graph is moved there
    "actors": actors_wiring,
    "custom_channel": help_desk,
    "agent": lambda: agent.build(agent.FakeLLM(), agent.SearchAPI()),
    "streaming": streaming.build,
}
"""Every example with a graph or wiring, by module: its factory, or a copy of its wiring."""

EXAMPLES_WITHOUT_NODES = {"channels"}
"""Examples that use channels alone: nothing to draw."""


def test_every_example_is_drawn_or_listed_as_having_nothing_to_draw() -> None:
    modules = {
        path.stem
        for path in (ROOT / "examples").glob("*.py")
        if path.stem != "__init__" and not path.stem.startswith("test_")
    }
    assert modules == set(EXAMPLE_GRAPHS) | EXAMPLES_WITHOUT_NODES


@pytest.mark.parametrize("example", sorted(EXAMPLE_GRAPHS))
def test_every_example_graph_renders_every_node_in_every_format(example: str) -> None:
    graph = EXAMPLE_GRAPHS[example]()
    ids = list(graph.nodes)
    mermaid, dot = to_mermaid(graph), to_dot(graph)
    assert_well_formed_mermaid(mermaid)
    assert_well_formed_dot(dot)
    for node_id in ids:
        assert f'"{node_id}"' in mermaid
        assert f'"{node_id}" [label="{node_id}"' in dot
    document = json.loads(to_json(graph))
    assert [node["id"] for node in document["nodes"]] == ids
    wired = [edge.name for node in graph.nodes.values() for edge in node.edges]
    assert [edge["name"] for edge in document["edges"]] == wired


def test_the_hello_example_draws_its_routing() -> None:
    graph, _ = hello.build()
    assert to_mermaid(graph) == (
        "flowchart LR\n"
        '    n0(["parse"])\n'
        '    n1["refund"]\n'
        '    n2["review"]\n'
        '    n3["bill"]\n'
        '    n4["audit"]\n'
        '    n0 -->|"kind=refund"| n1\n'
        '    n0 -->|"lambda · priority 1"| n2\n'
        '    n0 -->|"kind=sale"| n3\n'
        "    n0 --> n4\n"
        "    n2 --> n3\n"
        "    classDef entry stroke-width:3px\n"
        "    class n0 entry\n"
    )
