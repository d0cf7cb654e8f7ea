"""Credentials, TLS and the wire format of the Redis backends, against real servers.

The redis-server the tests run is built without TLS, so the TLS test puts a TLS
terminator in front of it (a certificate made with ``openssl``): the client side of
``rediss://`` (handshake, certificate check) is real.
"""

from __future__ import annotations

import contextlib
import pickle
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import ByteStream
from anyio.streams.tls import TLSListener, TLSStream
from redis.exceptions import AuthenticationError, ResponseError

from spark_nodes import Graph, Node
from spark_nodes.channels import ChannelMessage, RedisChannel
from spark_nodes.channels.codec import decode
from spark_nodes.state import RedisState
from spark_nodes.testing import open_redis_server
from tests.redis_support import FAST_RETRY, open_raw_client

pytestmark = [pytest.mark.anyio, pytest.mark.redis]  # redis-py: asyncio only


async def round_trip(url: str) -> ChannelMessage:
    async with RedisChannel(url, "secure", retry=FAST_RETRY) as channel:
        await channel.send(ChannelMessage({"card": "4242"}))
        with anyio.fail_after(5):
            message = await channel.receive()
        assert message.ack is not None
        await message.ack()
        return message


async def test_a_password_in_the_url_is_used() -> None:
    with open_redis_server(options=["--requirepass", "s3cret"]) as server:
        url = f"redis://:s3cret@127.0.0.1:{server.port}/0"
        assert (await round_trip(url)).payload == {"card": "4242"}
        with pytest.raises((AuthenticationError, ResponseError), match=r"(?i)auth"):
            await round_trip(server.url)  # no password: refused, not retried as an outage


async def test_an_acl_user_in_the_url_is_used() -> None:
    with open_redis_server() as server:
        async with open_raw_client(server.url) as admin:
            await admin.acl_setuser(
                "worker", enabled=True, passwords=["+w0rker"], keys=["spark_nodes:*"],
                commands=["+@all"],
            )  # fmt: skip
        url = f"redis://worker:w0rker@127.0.0.1:{server.port}/0"
        assert (await round_trip(url)).payload == {"card": "4242"}
        state = RedisState(url, graph="g")
        try:
            await state.set("k", 1)
            assert await state.get("k") == 1
        finally:
            await state.aclose()


def make_certificate(directory: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is needed to make the test certificate")
    certificate, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout", str(key), "-out", str(certificate),
        ],
        check=True, capture_output=True,
    )  # fmt: skip
    return certificate, key


@contextlib.asynccontextmanager
async def tls_terminator(certificate: Path, key: Path, upstream_port: int) -> AsyncIterator[int]:
    """A TLS endpoint on a free port that relays to the plain server; yields its port."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate, key)

    async def relay(source: ByteStream, target: ByteStream) -> None:
        with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, OSError):
            async for chunk in source:
                await target.send(chunk)
        with contextlib.suppress(Exception):
            await target.send_eof()

    async def serve(client: TLSStream) -> None:
        upstream = await anyio.connect_tcp("127.0.0.1", upstream_port)
        async with client, upstream, anyio.create_task_group() as pipes:
            pipes.start_soon(relay, client, upstream)
            pipes.start_soon(relay, upstream, client)

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    tls = TLSListener(listener, context, standard_compatible=False)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with tls, anyio.create_task_group() as tasks:
        tasks.start_soon(tls.serve, serve)
        yield port
        tasks.cancel_scope.cancel()


async def test_a_rediss_url_talks_tls_and_checks_the_certificate(tmp_path: Path) -> None:
    certificate, key = make_certificate(tmp_path)
    with open_redis_server() as server:
        async with tls_terminator(certificate, key, server.port) as port:
            trusted = f"rediss://localhost:{port}/0?ssl_ca_certs={certificate}"
            assert (await round_trip(trusted)).payload == {"card": "4242"}
            with pytest.raises(Exception, match=r"(?i)certificate"):
                await round_trip(f"rediss://localhost:{port}/0")  # not trusted: refused


async def test_nothing_is_pickled_on_the_wire_or_at_rest(redis_url: str) -> None:
    class Echo(Node):
        def process(self, context: object) -> None:
            return None

    graph = Graph(Echo(id="echo"), name="wire", backend=redis_url, namespace="wire-test")
    try:
        await graph.send("echo", {"user": "ada", "amounts": [1, 2.5]})
        await graph.state.set("profile", {"name": "ada"})
        async with open_raw_client(redis_url) as raw:
            mailbox = graph.nodes["echo"].mailbox
            assert isinstance(mailbox, RedisChannel)
            entries: Any = await raw.xrange(mailbox.key)
            ((_, fields),) = entries
            data = fields[b"m"]
            assert decode(data).payload == {"user": "ada", "amounts": [1, 2.5]}  # msgpack
            values = [
                await raw.get(key) async for key in raw.scan_iter(match="wire-test:*#state:*")
            ]
            for blob in [data, *values]:
                with pytest.raises(pickle.UnpicklingError):
                    pickle.loads(blob)
            names = [key async for key in raw.scan_iter(match="wire-test:*")]
            await raw.delete(*names)
    finally:
        await graph.aclose()
