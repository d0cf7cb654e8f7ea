"""``spark-nodes inspect`` and ``spark-nodes dlq``, run in-process against a real Redis.

``main()`` runs its own event loop, so these tests are synchronous: they prepare mailboxes
with ``anyio.run`` and read what the command printed with ``capsys``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from spark_nodes import ExecutionContext, Graph, Node, NonRetriableError
from spark_nodes._redis_client import RedisClient, open_client
from spark_nodes.channels import ChannelMessage, MailboxInfo, RedisChannel, dead_letters
from spark_nodes.channels.inspection import ConsumerInfo, GroupInfo
from spark_nodes.cli import main
from spark_nodes.cli.inspect import render
from tests import redis_support
from tests.cli_process import Command
from tests.redis_support import new_namespace, with_raw_client

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Mailboxes:
    """What ``fill`` made: an orders mailbox with three dead letters and a billing one."""

    url: str
    namespace: str
    orders: str
    billing: str


async def fill(url: str, namespace: str) -> None:
    """Orders: 5 sent, 1 acked, 1 pending, 1 waiting, 3 dead letters; billing: 1 waiting."""
    async with (
        RedisChannel(url, "orders", namespace=namespace, consumer="worker-1", prefetch=1) as orders,
        RedisChannel(url, "{shop}:billing", namespace=namespace) as billing,
    ):
        await orders.send(ChannelMessage({"order": 1}))
        await orders.dead_letter(
            await receive(orders), reason="process", error="ValueError: bad order\nTraceback ..."
        )
        raw = open_client(url)
        try:
            await raw.xadd(orders.key, {"junk": b"\xff"})
        finally:
            await raw.aclose()
        for number in (2, 3, 4, 5):
            await orders.send(ChannelMessage({"order": number}))
        with capture_logs():  # the foreign entry is dead-lettered on the way
            done = await receive(orders)
        assert done.ack is not None
        await done.ack()
        await orders.dead_letter(await receive(orders), reason="process", error="KeyError: 'sku'")
        await receive(orders)
        await billing.send(ChannelMessage(b"invoice"))


async def receive(channel: RedisChannel) -> ChannelMessage:
    with anyio.fail_after(5):
        return await channel.receive()


class Pay(Node):
    """Refuses ``"refused"`` for good; passes anything else on."""

    def process(self, context: ExecutionContext) -> Any:
        if context.inputs.content == "refused":
            raise NonRetriableError("refused")
        return context.inputs.content


def routing() -> Graph:
    """``pay.on_error() >> refuse``, named ``routing``."""
    pay = Pay(id="pay")
    pay.on_error() >> Node(id="refuse")
    return Graph(pay, name="routing")


async def route_one_failure(url: str, namespace: str) -> None:
    """Run the ``routing`` graph on Redis to its end: ``pay`` routes one failure."""
    cluster = redis_support.Cluster(url, namespace)
    try:
        graph = cluster.process(routing)
        await graph.send("pay", "fine")
        await graph.send("pay", "refused")
        await graph.shutdown()
        with anyio.fail_after(30):
            await graph.serve()  # its last figures published as it ends
    finally:
        await cluster.aclose()


def purge(url: str, namespace: str) -> None:
    with_raw_client(url, partial(redis_support.purge, namespace=namespace))


@pytest.fixture
def mailboxes(redis_url: str) -> Iterator[Mailboxes]:
    namespace = new_namespace()
    anyio.run(fill, redis_url, namespace, backend="asyncio")
    yield Mailboxes(
        redis_url, namespace, f"{namespace}:{{orders}}", f"{namespace}:{{shop}}:billing"
    )
    purge(redis_url, namespace)


@pytest.fixture
def refusing_url() -> Iterator[str]:
    """A URL whose port is taken but not listening: connections are refused at once."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        yield f"redis://127.0.0.1:{taken.getsockname()[1]}"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def letters_of(url: str, key: str) -> list[Any]:
    async def read() -> list[Any]:
        client = open_client(url)
        try:
            return await dead_letters(client, key)
        finally:
            await client.aclose()

    return anyio.run(read, backend="asyncio")


# -- inspect --------------------------------------------------------------------------------


def test_inspect_prints_a_row_per_mailbox_then_a_row_per_consumer(
    mailboxes: Mailboxes, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(
        capsys, "inspect", "--redis", mailboxes.url, "--namespace", mailboxes.namespace
    )
    assert (status, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == [
        "MAILBOX", "LENGTH", "PENDING", "DELAYED", "DEAD", "SENT", "ACKED", "DEAD-LETTERED",
        "REJECTED", "RECLAIMED", "DUPLICATES",
    ]  # fmt: skip
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:3]}
    assert rows[mailboxes.orders] == ["2", "1", "0", "3", "5", "1", "3", "0", "0", "0"]
    assert rows[mailboxes.billing] == ["1", "0", "0", "0", "1", "0", "0", "0", "0", "0"]
    assert lines[3] == ""
    assert lines[4].split() == ["MAILBOX", "GROUP", "LAG", "CONSUMER", "PENDING", "IDLE"]
    consumer = lines[5].split()
    assert consumer[:5] == [mailboxes.orders, "workers", "1", "worker-1", "1"]
    assert consumer[5].endswith("s")
    assert len(lines) == 6


def test_inspect_json_has_stable_keys_for_scripts(
    mailboxes: Mailboxes, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(
        capsys, "inspect", "--redis", mailboxes.url, "--namespace", mailboxes.namespace, "--json"
    )
    assert status == 0
    document = json.loads(out)
    assert document["namespace"] == mailboxes.namespace
    orders, billing = document["mailboxes"]
    assert orders["key"] == mailboxes.orders
    assert {k: orders[k] for k in ("length", "pending", "delayed", "dead_letters")} == {
        "length": 2, "pending": 1, "delayed": 0, "dead_letters": 3,
    }  # fmt: skip
    assert orders["counters"] == {
        "sent": 5, "acked": 1, "dead_lettered": 3, "rejected_acks": 0, "reclaimed": 0,
        "duplicates": 0, "delayed": 0, "replayed": 0,
    }  # fmt: skip
    (group,) = orders["groups"]
    assert set(group) == {"name", "pending", "lag", "last_delivered", "consumers"}
    assert (group["name"], group["pending"], group["lag"]) == ("workers", 1, 1)
    (consumer,) = group["consumers"]
    assert set(consumer) == {"name", "pending", "idle", "live"}
    assert (consumer["name"], consumer["pending"]) == ("worker-1", 1)
    assert billing["key"] == mailboxes.billing
    assert billing["groups"] == []
    assert set(billing) == set(orders)
    assert (orders["error_routed"], billing["error_routed"]) == (None, 0)  # (not / a node)


def test_inspect_shows_what_a_graphs_nodes_sent_along_their_error_routes(
    mailboxes: Mailboxes, capsys: pytest.CaptureFixture[str]
) -> None:
    with capture_logs():
        anyio.run(route_one_failure, mailboxes.url, mailboxes.namespace, backend="asyncio")
    argv = ["inspect", "--redis", mailboxes.url, "--namespace", mailboxes.namespace]
    status, out, _ = run(capsys, *argv)
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split()[-2:] == ["DUPLICATES", "ROUTED"]
    routed = {line.split()[0]: line.split()[-1] for line in lines[1:5]}
    pay, refuse = (f"{mailboxes.namespace}:{{routing}}:{node}" for node in ("pay", "refuse"))
    assert routed == {mailboxes.orders: "-", mailboxes.billing: "0", pay: "1", refuse: "0"}
    status, out, _ = run(capsys, *argv, "--json")
    document = {m["key"]: m["error_routed"] for m in json.loads(out)["mailboxes"]}
    assert document == {mailboxes.orders: None, mailboxes.billing: 0, pay: 1, refuse: 0}


def test_inspect_lists_only_mailboxes_not_every_stream_under_the_namespace(
    mailboxes: Mailboxes, capsys: pytest.CaptureFixture[str]
) -> None:

    async def write(client: RedisClient) -> None:
        reply = f"{mailboxes.namespace}:{{shop}}:invoke:{'5e' * 16}"  # a graph's invoke reply
        await client.xadd(reply, {"m": b"x"})
        await client.xgroup_create(reply, "workers", id="0")
        await client.hset(f"{reply}:stats", "sent", 1)
        await client.xadd(f"{mailboxes.namespace}:{{mine}}:events", {"v": "1"})  # its own
        await client.xadd(f"{mailboxes.namespace}:audit", {"v": "1"})

    with_raw_client(mailboxes.url, write)
    status, out, _ = run(
        capsys, "inspect", "--redis", mailboxes.url, "--namespace", mailboxes.namespace
    )
    assert status == 0
    assert [line.split()[0] for line in out.splitlines()[1:3]] == [
        mailboxes.orders,
        mailboxes.billing,
    ]
    assert out.splitlines()[3] == ""  # then the consumers' table: no third mailbox row
    assert "invoke" not in out
    assert "events" not in out
    assert ":dead" not in out
    status, out, _ = run(
        capsys, "inspect", "--redis", mailboxes.url, "--namespace", mailboxes.namespace, "--json"
    )
    keys = [mailbox["key"] for mailbox in json.loads(out)["mailboxes"]]
    assert keys == [mailboxes.orders, mailboxes.billing]


def test_inspect_reads_the_url_from_the_environment(
    mailboxes: Mailboxes, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPARK_NODES_REDIS_URL", mailboxes.url)
    status, out, _ = run(capsys, "inspect", "--namespace", mailboxes.namespace, "--json")
    assert status == 0
    assert len(json.loads(out)["mailboxes"]) == 2


def test_inspect_of_an_empty_namespace_says_so(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    namespace = new_namespace()
    status, out, _ = run(capsys, "inspect", "--redis", redis_url, "--namespace", namespace)
    assert (status, out) == (0, f"no mailboxes under namespace {namespace!r}\n")


def test_an_unreachable_redis_exits_1_naming_the_url_without_a_traceback(
    refusing_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(capsys, "inspect", "--redis", refusing_url)
    assert (status, out) == (1, "")
    assert err.startswith(f"spark-nodes inspect: cannot reach Redis at {refusing_url}: ")
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1


def test_a_password_in_the_url_is_not_printed(
    refusing_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = refusing_url.replace("redis://", "redis://admin:s3cret@")
    status, _, err = run(capsys, "dlq", "list", "--redis", url, "--mailbox", "x:{y}")
    assert status == 1
    assert "admin:***@127.0.0.1" in err
    assert "s3cret" not in err


def test_a_missing_or_bad_url_exits_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SPARK_NODES_REDIS_URL", raising=False)
    status, _, err = run(capsys, "inspect")
    assert status == 1
    assert "give --redis URL (or $SPARK_NODES_REDIS_URL)" in err
    status, _, err = run(capsys, "inspect", "--redis", "http://localhost")
    assert status == 1
    assert err.startswith("spark-nodes inspect: ")
    assert "Traceback" not in err


def test_the_command_runs_as_python_dash_m_spark_nodes(mailboxes: Mailboxes) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "spark_nodes",
            "inspect",
            "--json",
            "--namespace",
            mailboxes.namespace,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "SPARK_NODES_REDIS_URL": mailboxes.url},
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")
    keys = [m["key"] for m in json.loads(done.stdout)["mailboxes"]]
    assert keys == [mailboxes.orders, mailboxes.billing]


# -- inspect --watch ------------------------------------------------------------------------


def test_a_watched_reading_says_when_it_was_taken_and_how_often() -> None:
    taken_at = time.mktime((2026, 11, 21, 13, 6, 48, 0, 0, -1))
    orders = MailboxInfo(
        key="ns:{orders}", length=3, groups=(), delayed=1, dead_letters=2, counters={"sent": 5}
    )
    lines = render("ns", [orders], taken_at=taken_at, every=0.5).splitlines()
    assert lines[0] == "namespace 'ns' at 13:06:48, every 0.5 s (Ctrl-C to stop)"
    assert lines[1] == ""
    assert lines[2].split()[:5] == ["MAILBOX", "LENGTH", "PENDING", "DELAYED", "DEAD"]
    assert lines[3].split()[:6] == ["ns:{orders}", "3", "0", "1", "2", "5"]
    assert render("ns", [], taken_at=taken_at).splitlines() == [
        "namespace 'ns' at 13:06:48 (Ctrl-C to stop)",
        "",
        "no mailboxes under namespace 'ns'",
    ]


def test_an_unwatched_reading_is_the_tables_alone() -> None:
    assert render("ns", []) == "no mailboxes under namespace 'ns'"


def test_watch_reads_again_and_again_until_ctrl_c_then_exits_0(mailboxes: Mailboxes) -> None:
    argv = ["inspect", "--redis", mailboxes.url, "--namespace", mailboxes.namespace]
    with Command(*argv, "--watch", "0.1") as command:
        first = command.wait_for(f"namespace {mailboxes.namespace!r} at ", "out")
        command.wait_for(f"namespace {mailboxes.namespace!r} at ", "out", after=first + 1)
        command.signal(signal.SIGINT)
        status = command.finish()
    assert (status, command.err) == (0, ""), command.report()
    readings = command.out.split(f"namespace {mailboxes.namespace!r} at ")[1:]
    assert len(readings) >= 2
    assert all(mailboxes.orders in reading for reading in readings)


def test_watch_with_json_prints_one_document_per_line_per_reading(mailboxes: Mailboxes) -> None:
    argv = ["inspect", "--redis", mailboxes.url, "--namespace", mailboxes.namespace, "--json"]
    with Command(*argv, "--watch", "0.1") as command:
        first = command.wait_for('"mailboxes"', "out")
        command.wait_for('"mailboxes"', "out", after=first + 1)
        command.signal(signal.SIGTERM)
        status = command.finish()
    assert status == 0, command.report()
    documents = [json.loads(line) for line in command.out.splitlines()]
    assert len(documents) >= 2
    for document in documents:
        assert set(document) == {"taken_at", "namespace", "mailboxes"}
        assert [m["key"] for m in document["mailboxes"]] == [mailboxes.orders, mailboxes.billing]
    assert documents[0]["taken_at"] < documents[1]["taken_at"]


def test_watch_takes_a_positive_number_of_seconds(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["inspect", "--redis", "redis://127.0.0.1:1", "--watch", "0"])
    assert exit_info.value.code == 2
    assert "must be a number > 0, not 0" in capsys.readouterr().err


def test_watch_of_an_unreachable_redis_exits_1_naming_the_url(
    refusing_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(capsys, "inspect", "--redis", refusing_url, "--watch", "0.1")
    assert (status, out) == (1, "")
    assert err.startswith(f"spark-nodes inspect: cannot reach Redis at {refusing_url}: ")
    assert len(err.splitlines()) == 1


# -- dlq list -------------------------------------------------------------------------------


def test_dlq_list_shows_each_letter_with_why_and_a_payload_preview(
    mailboxes: Mailboxes, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(
        capsys, "dlq", "list", "--redis", mailboxes.url, "--mailbox", mailboxes.orders
    )
    assert status == 0
    header, *rows, summary = out.splitlines()
    assert header.split() == ["ID", "TIME", "REASON", "DELIVERIES", "ERROR", "PAYLOAD"]
    ids = [letter.id for letter in letters_of(mailboxes.url, mailboxes.orders)]
    assert [row.split()[0] for row in rows] == ids
    first, foreign, second = rows
    assert first.split()[2:4] == ["process", "1"]
    assert "ValueError: bad order" in first
    assert "Traceback" not in first  # the error's first line only
    assert first.endswith("{'order': 1}")
    assert "not_an_envelope" in foreign
    assert foreign.endswith("no envelope; junk=b'\\xff'")
    assert "KeyError: 'sku'" in second
    assert summary == f"3 of 3 dead letters in {mailboxes.orders}"


def test_dlq_list_pages_with_count_and_after(
    mailboxes: Mailboxes, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = [letter.id for letter in letters_of(mailboxes.url, mailboxes.orders)]
    base = ["dlq", "list", "--redis", mailboxes.url, "--mailbox", mailboxes.orders, "--count", "2"]
    status, out, _ = run(capsys, *base)
    assert status == 0
    assert out.splitlines()[-1] == (
        f"2 of 3 dead letters in {mailboxes.orders}; next page: --after {ids[1]}"
    )
    status, out, _ = run(capsys, *base, "--after", ids[1])
    assert status == 0
    assert [line.split()[0] for line in out.splitlines()[1:-1]] == [ids[2]]
    status, out, _ = run(capsys, *base, "--after", ids[2])
    assert (status, out) == (0, f"no dead letters in {mailboxes.orders} after {ids[2]}\n")


def test_dlq_list_json_gives_every_field_and_the_decoded_message(
    mailboxes: Mailboxes, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(
        capsys, "dlq", "list", "--redis", mailboxes.url, "--mailbox", mailboxes.orders,
        "--json", "--count", "2",
    )  # fmt: skip
    assert status == 0
    document = json.loads(out)
    assert (document["mailbox"], document["total"]) == (mailboxes.orders, 3)
    first, foreign = document["dead_letters"]
    assert document["next_after"] == foreign["id"]
    assert set(first) == {
        "id", "mailbox", "time", "reason", "error", "entry", "deliveries", "consumer", "details",
        "fields", "data", "message",
    }  # fmt: skip
    assert first["mailbox"] == mailboxes.orders
    assert first["error"] == "ValueError: bad order\nTraceback ..."
    assert first["consumer"] == "worker-1"
    assert first["message"]["payload"] == {"order": 1}
    assert set(first["message"]) == {"id", "payload", "metadata", "is_shutdown"}
    assert foreign["message"] is None
    assert (foreign["data"], foreign["fields"]) == ("", {"junk": "/w=="})


def test_dlq_list_json_shows_bytes_as_base64(
    mailboxes: Mailboxes, capsys: pytest.CaptureFixture[str]
) -> None:
    async def dead_letter_bytes() -> None:
        async with RedisChannel(
            mailboxes.url, "{shop}:billing", namespace=mailboxes.namespace
        ) as billing:
            await billing.dead_letter(await receive(billing), reason="process", error="no")

    anyio.run(dead_letter_bytes, backend="asyncio")
    status, out, _ = run(
        capsys, "dlq", "list", "--redis", mailboxes.url, "--mailbox", mailboxes.billing, "--json"
    )
    assert status == 0
    (letter,) = json.loads(out)["dead_letters"]
    assert letter["message"]["payload"] == {"base64": "aW52b2ljZQ=="}


def test_dlq_on_an_unknown_mailbox_exits_1(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    key = f"{new_namespace()}:{{nothing}}"
    status, out, err = run(capsys, "dlq", "list", "--redis", redis_url, "--mailbox", key)
    assert (status, out) == (1, "")
    assert err == f"spark-nodes dlq list: no mailbox {key!r}; 'spark-nodes inspect' lists them\n"


# -- dlq replay and drop --------------------------------------------------------------------


def test_dlq_replay_puts_chosen_letters_back_into_the_mailbox(
    mailboxes: Mailboxes, capsys: pytest.CaptureFixture[str]
) -> None:
    first, _foreign, second = letters_of(mailboxes.url, mailboxes.orders)
    status, out, err = run(
        capsys, "dlq", "replay", "--redis", mailboxes.url, "--mailbox", mailboxes.orders,
        "--id", first.id, second.id,
    )  # fmt: skip
    assert (status, err) == (0, "")
    assert out.splitlines() == [
        f"replayed {first.id}",
        f"replayed {second.id}",
        f"replayed 2 of 2 dead letters to {mailboxes.orders}",
    ]
    assert [letter.reason for letter in letters_of(mailboxes.url, mailboxes.orders)] == [
        "not_an_envelope"
    ]

    async def receive_replayed() -> list[Any]:
        async with RedisChannel(
            mailboxes.url, "orders", namespace=mailboxes.namespace, consumer="worker-2"
        ) as orders:
            return [(await receive(orders)).payload for _ in range(3)]

    # The one never delivered comes first, then the replayed ones, in replay order.
    assert anyio.run(receive_replayed, backend="asyncio") == [
        {"order": 5},
        {"order": 1},
        {"order": 3},
    ]


def test_dlq_replay_all_skips_letters_without_an_envelope_and_exits_1(
    mailboxes: Mailboxes, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(
        capsys, "dlq", "replay", "--redis", mailboxes.url, "--mailbox", mailboxes.orders, "--all"
    )
    assert status == 1
    assert out == f"replayed 2 of 3 dead letters to {mailboxes.orders}\n"
    assert "has no envelope to replay" in err
    (left,) = letters_of(mailboxes.url, mailboxes.orders)
    assert left.reason == "not_an_envelope"


def test_dlq_drop_deletes_chosen_letters_or_all(
    mailboxes: Mailboxes, capsys: pytest.CaptureFixture[str]
) -> None:
    first, *_ = letters_of(mailboxes.url, mailboxes.orders)
    base = ["dlq", "drop", "--redis", mailboxes.url, "--mailbox", mailboxes.orders]
    status, out, _ = run(capsys, *base, "--id", first.id)
    assert status == 0
    assert out.splitlines() == [
        f"dropped {first.id}",
        f"dropped 1 of 1 dead letters of {mailboxes.orders}",
    ]
    assert len(letters_of(mailboxes.url, mailboxes.orders)) == 2
    status, out, _ = run(capsys, *base, "--all")
    assert (status, out) == (0, f"dropped 2 dead letters of {mailboxes.orders}\n")
    assert letters_of(mailboxes.url, mailboxes.orders) == []


@pytest.mark.parametrize("action", ["replay", "drop"])
def test_an_unknown_or_malformed_id_exits_1_with_a_message(
    mailboxes: Mailboxes, capsys: pytest.CaptureFixture[str], action: str
) -> None:
    base = ["dlq", action, "--redis", mailboxes.url, "--mailbox", mailboxes.orders]
    status, _, err = run(capsys, *base, "--id", "1-0")
    assert status == 1
    assert err == f"spark-nodes dlq {action}: no dead letter 1-0 in {mailboxes.orders}\n"
    status, _, err = run(capsys, *base, "--id", "42")
    assert status == 1
    assert err == (
        f"spark-nodes dlq {action}: '42' is not a stream entry id; ids look like 1718000000000-0\n"
    )
    assert len(letters_of(mailboxes.url, mailboxes.orders)) == 3


def test_replay_and_drop_need_ids_or_all(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["dlq", "replay", "--redis", "redis://localhost", "--mailbox", "x"])
    assert exit_info.value.code == 2
    assert "one of the arguments --id --all is required" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["dlq", "drop", "--mailbox", "x", "--id", "1-0", "--all"])
    assert exit_info.value.code == 2


def test_inspect_shows_live_consumers_and_counts_the_others() -> None:
    consumers = (
        ConsumerInfo(name="busy", pending=2, idle=3600.0),  # dead, but holds entries
        ConsumerInfo(name="reading", pending=0, idle=0.1),
        ConsumerInfo(name="gone", pending=0, idle=3600.0),
    )
    group = GroupInfo(name="workers", consumers=consumers, pending=2, last_delivered="1-0", lag=0)
    box = MailboxInfo(
        key="ns:{box}", length=2, groups=(group,), delayed=0, dead_letters=0, counters={}
    )
    shown = render("ns", [box]).splitlines()
    names = [line.split()[3] for line in shown if line.startswith("ns:{box}") and "workers" in line]
    assert names == ["busy", "reading"]
    assert shown[-1] == "(1 idle consumers holding nothing not shown: --all-consumers)"
    every = render("ns", [box], all_consumers=True).splitlines()
    assert [line.split()[3] for line in every if "workers" in line] == ["busy", "reading", "gone"]
    assert [c.live for c in consumers] == [True, True, False]
