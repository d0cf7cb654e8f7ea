"""``spark-nodes dlq`` by graph and by node, on the dead letters a real Redis graph left.

``main()`` runs its own event loop, so these tests are synchronous: the graph runs with
``anyio.run`` first, and the tests read what the command printed with ``capsys``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import anyio
import pytest

from spark_nodes._redis_client import RedisClient, open_client
from spark_nodes.channels import DeadLetter, dead_letters
from spark_nodes.cli import main
from spark_nodes.cli.dlq import error_line
from spark_nodes.graphs.inspecting import mailbox_key
from tests.redis_support import Cluster, new_namespace, purge, with_raw_client
from tests.shop_graph import shop

pytestmark = [pytest.mark.redis]

HEADERS = ["ID", "TIME", "REASON", "DELIVERIES", "ERROR", "PAYLOAD"]


@dataclass
class Shop:
    """The graph ``shop`` after a run: 2 dead letters in pricer, then 1 in billing."""

    url: str
    namespace: str

    def key(self, node: str) -> str:
        return mailbox_key(self.namespace, "shop", node)

    def graph_args(self, action: str, *more: str) -> list[str]:
        return ["dlq", action, "--redis", self.url, "--namespace", self.namespace,
                "--graph", "shop", *more]  # fmt: skip


async def run_shop(url: str, namespace: str) -> None:
    cluster = Cluster(url, namespace)
    try:
        client, worker = cluster.process(shop), cluster.process(shop)
        for order in (-1, 1, -2, 0):  # sent in order: pricer's dead letters come first
            await client.send("pricer", order)
        await client.shutdown()
        with anyio.fail_after(30):
            await worker.serve()
    finally:
        await cluster.aclose()


@pytest.fixture
def graph(redis_url: str) -> Iterator[Shop]:
    namespace = new_namespace()
    anyio.run(run_shop, redis_url, namespace, backend="asyncio")
    yield Shop(redis_url, namespace)
    with_raw_client(redis_url, partial(purge, namespace=namespace))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def letters_of(url: str, key: str) -> list[DeadLetter]:
    async def read() -> list[DeadLetter]:
        client = open_client(url)
        try:
            return await dead_letters(client, key)
        finally:
            await client.aclose()

    return anyio.run(read, backend="asyncio")


def length(url: str, key: str) -> int:

    async def read(client: RedisClient) -> int:
        count: int = await client.xlen(key)
        return count

    return with_raw_client(url, read)


def add_letter(url: str, dead: str, letter_id: str) -> None:
    """Write a dead letter with the id ``letter_id`` straight into the stream ``dead``."""

    async def write(client: RedisClient) -> None:
        await client.xadd(dead, {"reason": "process", "error": "same instant"}, id=letter_id)

    with_raw_client(url, write)


# -- list -----------------------------------------------------------------------------------


def test_dlq_list_by_graph_shows_every_nodes_dead_letters_oldest_first(
    graph: Shop, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(capsys, *graph.graph_args("list"))
    assert (status, err) == (0, "")
    header, *rows, summary = out.splitlines()
    assert header.split() == ["NODE", *HEADERS]
    pricer, billing = (
        letters_of(graph.url, graph.key("pricer")),
        letters_of(graph.url, graph.key("billing")),
    )
    assert [row.split()[:2] for row in rows] == [
        ["pricer", pricer[0].id],
        ["pricer", pricer[1].id],
        ["billing", billing[0].id],
    ]
    assert summary == "3 of 3 dead letters in graph shop"


def test_dlq_list_by_node_shows_that_nodes_dead_letters_only(
    graph: Shop, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(capsys, *graph.graph_args("list", "--node", "pricer"))
    assert status == 0
    header, *rows, summary = out.splitlines()
    assert header.split() == HEADERS
    assert [row.split()[0] for row in rows] == [
        letter.id for letter in letters_of(graph.url, graph.key("pricer"))
    ]
    assert summary == f"2 of 2 dead letters in {graph.key('pricer')}"


def test_the_error_column_shows_the_exception_type_and_first_line(
    graph: Shop, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(capsys, *graph.graph_args("list"))
    assert status == 0
    first, second, third = out.splitlines()[1:4]
    assert "ValueError: bad order -1" in first
    assert "ValueError: bad order -2" in second
    assert "KeyError: 'sku'" in third
    assert "Traceback" not in out
    assert "builtins" not in out  # shown as Python shows it


def test_the_error_line_adds_a_recorded_type_unless_the_error_starts_with_it() -> None:
    def letter(error: str, **details: str) -> DeadLetter:
        return DeadLetter("1-0", "ns:{m}", "process", error, "1-0", 1, "c", None, details, {}, b"")

    assert error_line(letter("bad\nmore", error_type="builtins.ValueError")) == "ValueError: bad"
    assert error_line(letter("no", error_type="shop.errors.OutOfStock")) == (
        "shop.errors.OutOfStock: no"
    )
    assert error_line(letter("", error_type="__main__.Oops")) == "Oops"
    assert error_line(letter("ValueError: bad", error_type="builtins.ValueError")) == (
        "ValueError: bad"
    )
    assert error_line(letter("TimeoutError: slow\nTraceback")) == "TimeoutError: slow"


def test_dlq_list_json_gives_attempts_as_a_number_and_each_letters_node(
    graph: Shop, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(capsys, *graph.graph_args("list", "--json"))
    assert status == 0
    document = json.loads(out)
    assert (document["graph"], document["namespace"]) == ("shop", graph.namespace)
    assert document["mailboxes"] == {
        "billing": graph.key("billing"),
        "pricer": graph.key("pricer"),
    }
    assert (document["total"], document["next_after"]) == (3, None)
    first, _, billing = document["dead_letters"]
    assert (first["node"], first["mailbox"]) == ("pricer", graph.key("pricer"))
    assert first["details"]["attempts"] == 2  # an int, not "2"
    assert first["details"]["error_type"] == "builtins.ValueError"
    assert first["details"]["node"] == "pricer"
    assert first["error"] == "bad order -1"
    assert first["message"]["payload"] == -1
    assert (billing["node"], billing["details"]["attempts"]) == ("billing", 1)


def test_dlq_list_json_by_mailbox_gives_attempts_as_a_number_too(
    graph: Shop, capsys: pytest.CaptureFixture[str]
) -> None:
    key = graph.key("pricer")
    status, out, _ = run(capsys, "dlq", "list", "--redis", graph.url, "--mailbox", key, "--json")
    assert status == 0
    document = json.loads(out)
    assert set(document) == {"mailbox", "total", "dead_letters", "next_after"}
    assert [letter["details"]["attempts"] for letter in document["dead_letters"]] == [2, 2]
    status, out, _ = run(capsys, *graph.graph_args("list", "--node", "pricer", "--json"))
    assert status == 0
    by_node = json.loads(out)
    assert (by_node["graph"], by_node["node"], by_node["mailbox"]) == ("shop", "pricer", key)
    assert by_node["dead_letters"] == document["dead_letters"]


def test_dlq_list_by_graph_pages_across_nodes_even_through_equal_ids(
    graph: Shop, capsys: pytest.CaptureFixture[str]
) -> None:
    # Two nodes' dead letters may share an id (the same millisecond): a page must not end
    # between them, or the next page (--after ID) would skip one.
    for node in ("pricer", "billing"):
        add_letter(graph.url, f"{graph.key(node)}:dead", "99999999999999-0")
    seen: list[tuple[str, str]] = []
    after: list[str] = []
    for _ in range(10):
        status, out, _ = run(capsys, *graph.graph_args("list", "--json", "--count", "1", *after))
        assert status == 0
        document = json.loads(out)
        seen += ((letter["node"], letter["id"]) for letter in document["dead_letters"])
        if document["next_after"] is None:
            break
        after = ["--after", document["next_after"]]
    assert len(seen) == 5
    assert len(set(seen)) == 5
    assert seen[-2:] == [("billing", "99999999999999-0"), ("pricer", "99999999999999-0")]


def test_dlq_list_by_graph_says_when_a_page_is_the_last(
    graph: Shop, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(capsys, *graph.graph_args("list", "--count", "2"))
    assert status == 0
    third = letters_of(graph.url, graph.key("pricer"))[1].id
    assert out.splitlines()[-1] == (
        f"2 of 3 dead letters in graph shop; next page: --after {third}"
    )
    status, out, _ = run(capsys, *graph.graph_args("list", "--after", "99999999999999-0"))
    assert (status, out) == (0, "no dead letters in graph shop after 99999999999999-0\n")


# -- replay and drop ------------------------------------------------------------------------


def test_dlq_replay_by_graph_puts_every_nodes_letters_back(
    graph: Shop, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(capsys, *graph.graph_args("replay", "--all"))
    assert (status, err) == (0, "")
    assert out == "replayed 3 of 3 dead letters to graph shop\n"
    for node, waiting in (("pricer", 2), ("billing", 1)):
        assert letters_of(graph.url, graph.key(node)) == []
        assert length(graph.url, graph.key(node)) == waiting


def test_dlq_replay_by_graph_finds_the_node_of_each_id(
    graph: Shop, capsys: pytest.CaptureFixture[str]
) -> None:
    (billing,) = letters_of(graph.url, graph.key("billing"))
    status, out, _ = run(capsys, *graph.graph_args("replay", "--id", billing.id))
    assert status == 0
    assert out.splitlines() == [
        f"replayed {billing.id} (billing)",
        "replayed 1 of 1 dead letters to graph shop",
    ]
    assert letters_of(graph.url, graph.key("billing")) == []
    assert len(letters_of(graph.url, graph.key("pricer"))) == 2


def test_an_id_in_two_nodes_or_in_none_is_refused_by_graph(
    graph: Shop, capsys: pytest.CaptureFixture[str]
) -> None:
    for node in ("pricer", "billing"):
        add_letter(graph.url, f"{graph.key(node)}:dead", "99999999999999-0")
    status, out, err = run(
        capsys, *graph.graph_args("drop", "--id", "99999999999999-0", "1-0", "42")
    )
    assert status == 1
    assert err.splitlines() == [
        "spark-nodes dlq drop: dead letter id 99999999999999-0 is in more than one node of "
        "graph shop (billing, pricer); choose one with --node",
        "spark-nodes dlq drop: no dead letter 1-0 in graph shop",
        "spark-nodes dlq drop: '42' is not a stream entry id; ids look like 1718000000000-0",
    ]
    assert out == "dropped 0 of 3 dead letters of graph shop\n"
    status, out, _ = run(
        capsys, *graph.graph_args("drop", "--node", "billing", "--id", "99999999999999-0")
    )
    assert status == 0
    assert out.splitlines() == [
        "dropped 99999999999999-0",
        f"dropped 1 of 1 dead letters of {graph.key('billing')}",
    ]
    assert len(letters_of(graph.url, graph.key("pricer"))) == 3


def test_dlq_drop_by_node_or_graph_deletes_all(
    graph: Shop, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(capsys, *graph.graph_args("drop", "--node", "pricer", "--all"))
    assert (status, out) == (0, f"dropped 2 dead letters of {graph.key('pricer')}\n")
    assert len(letters_of(graph.url, graph.key("billing"))) == 1
    status, out, _ = run(capsys, *graph.graph_args("drop", "--all"))
    assert (status, out) == (0, "dropped 1 dead letters of graph shop\n")
    assert letters_of(graph.url, graph.key("billing")) == []


# -- naming what to handle ------------------------------------------------------------------


def test_an_unknown_graph_or_node_exits_1_with_a_message(
    graph: Shop, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["dlq", "list", "--redis", graph.url, "--namespace", graph.namespace]
    status, out, err = run(capsys, *args, "--graph", "nothing")
    assert (status, out) == (1, "")
    assert err == (
        f"spark-nodes dlq list: no mailboxes of graph 'nothing' under namespace "
        f"{graph.namespace!r}; 'spark-nodes inspect --namespace {graph.namespace}' lists "
        f"the mailboxes\n"
    )
    status, out, err = run(capsys, *args, "--graph", "shop", "--node", "taxes")
    assert (status, out) == (1, "")
    assert err.startswith(
        f"spark-nodes dlq list: graph 'shop' has no node 'taxes' under namespace "
        f"{graph.namespace!r} (no mailbox {mailbox_key(graph.namespace, 'shop', 'taxes')!r})"
    )


def test_node_needs_graph_and_graph_excludes_mailbox(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["dlq", "list", "--redis", "redis://localhost", "--mailbox", "x", "--node", "a"])
    assert exit_info.value.code == 2
    assert "--node needs --graph NAME" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["dlq", "list", "--mailbox", "x", "--graph", "g"])
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["dlq", "drop", "--all"])
    assert exit_info.value.code == 2
    assert "one of the arguments --mailbox --graph is required" in capsys.readouterr().err
