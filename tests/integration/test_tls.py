"""TLS: wss:// between upwire's server and client, with a CA and certificates made at test time (trustme).

The client verifies certificates by default; these tests show it accepts a certificate its context trusts and
refuses, with `InvalidCertificate`, one from an unknown CA or for another host name.
"""

from __future__ import annotations

import asyncio
import datetime
import socket
import ssl

import pytest
import trustme
import uvloop

import upwire

from .helpers import TEST_TIMEOUT_S, StartServer, echo

pytestmark = pytest.mark.timeout(TEST_TIMEOUT_S * 3)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_context(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*(names or ("localhost", "127.0.0.1"))).configure_cert(context)
    return context


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def test_wss_echo_with_a_certificate_the_client_trusts(
    start_server: StartServer, ca: trustme.CA
) -> None:
    server = await start_server(ssl=server_context(ca))
    async with upwire.connect(f"wss://localhost:{server.port}/", ssl=client_context(ca)) as ws:
        await ws.send("over TLS")
        assert await ws.recv() == "over TLS"
        await ws.send(b"\x00" * 100_000)
        assert await ws.recv() == b"\x00" * 100_000
        assert ws.transport is not None
        assert ws.transport.get_extra_info("ssl_object") is not None
    assert ws.close_code == 1000


async def test_ip_address_uri_is_checked_against_the_certificate_ip(
    start_server: StartServer, ca: trustme.CA
) -> None:
    server = await start_server(ssl=server_context(ca))
    async with upwire.connect(f"wss://127.0.0.1:{server.port}/", ssl=client_context(ca)) as ws:
        await ws.send("ip")
        assert await ws.recv() == "ip"


async def test_default_context_refuses_a_certificate_from_an_unknown_ca(
    start_server: StartServer, ca: trustme.CA
) -> None:
    server = await start_server(ssl=server_context(ca))
    with pytest.raises(upwire.InvalidCertificate) as caught:
        await upwire.connect(f"wss://localhost:{server.port}/")
    message = str(caught.value)
    assert f"localhost:{server.port}" in message
    assert "could not be verified" in message
    assert "certificate" in caught.value.verify_message
    assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)
    assert isinstance(caught.value, upwire.InvalidHandshake)
    assert "to trust a private CA" in message


async def test_certificate_for_another_host_name_is_refused(
    start_server: StartServer, ca: trustme.CA
) -> None:
    server = await start_server(ssl=server_context(ca, "other.example"))
    with pytest.raises(upwire.InvalidCertificate) as caught:
        await upwire.connect(f"wss://localhost:{server.port}/", ssl=client_context(ca))
    assert "mismatch" in caught.value.verify_message.lower()
    assert "localhost" in caught.value.verify_message
    # Another CA would not help: the hint says what would.
    assert "server_hostname=" in str(caught.value)
    assert "private CA" not in str(caught.value)


@pytest.mark.parametrize("when", ["expired", "not-yet-valid"])
async def test_a_certificate_out_of_its_dates_is_refused_with_a_hint_at_dates(
    start_server: StartServer, ca: trustme.CA, when: str
) -> None:
    now = datetime.datetime.now(datetime.UTC)
    day = datetime.timedelta(days=1)
    if when == "expired":
        dates = {"not_before": now - 10 * day, "not_after": now - day}
    else:
        dates = {"not_before": now + day, "not_after": now + 10 * day}
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", **dates).configure_cert(context)
    server = await start_server(ssl=context)
    with pytest.raises(upwire.InvalidCertificate) as caught:
        await upwire.connect(f"wss://localhost:{server.port}/", ssl=client_context(ca))
    assert (
        "expired" in caught.value.verify_message or "not yet valid" in caught.value.verify_message
    )
    # Another CA would not help.
    assert "dates and this machine's clock" in str(caught.value)
    assert "private CA" not in str(caught.value)


async def test_server_hostname_checks_the_certificate_against_that_name(
    start_server: StartServer, ca: trustme.CA
) -> None:
    server = await start_server(ssl=server_context(ca, "other.example"))
    async with upwire.connect(
        f"wss://127.0.0.1:{server.port}/", ssl=client_context(ca), server_hostname="other.example"
    ) as ws:
        await ws.send("sni")
        assert await ws.recv() == "sni"


async def test_plain_client_against_a_tls_server_fails_the_handshake(
    start_server: StartServer, ca: trustme.CA
) -> None:
    server = await start_server(ssl=server_context(ca))
    with pytest.raises(upwire.InvalidHandshake):
        await upwire.connect(f"ws://127.0.0.1:{server.port}/", open_timeout=5)


async def test_tls_client_that_never_starts_its_handshake_is_dropped_after_open_timeout(
    start_server: StartServer, ca: trustme.CA
) -> None:
    # The TLS handshake is part of opening: not asyncio's own 60 s default.
    server = await start_server(ssl=server_context(ca), open_timeout=1)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        started = asyncio.get_running_loop().time()
        assert await reader.read() == b""  # connected, said nothing, and dropped
        assert asyncio.get_running_loop().time() - started < 5
        writer.close()


async def test_a_tls_handshake_still_pending_at_shutdown_opens_no_connection(
    ca: trustme.CA,
) -> None:
    # Accepted before close(), its TLS handshake only after: no 101, no handler, and wait_closed()
    # does not wait for the handshake's timeout (Python 3.12+ waits for every accepted transport).
    handled: list[upwire.ServerConnection] = []

    async def handler(ws: upwire.ServerConnection) -> None:
        handled.append(ws)

    server = await upwire.serve(
        handler, "127.0.0.1", 0, ssl=server_context(ca), open_timeout=30, ping_interval=None
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=TEST_TIMEOUT_S) as sock:
        await asyncio.sleep(0.2)  # accepted: the server waits for the client's TLS hello
        started = asyncio.get_running_loop().time()
        server.close()
        await asyncio.wait_for(server.wait_closed(), TEST_TIMEOUT_S)
        assert asyncio.get_running_loop().time() - started < 2

        def handshake_then_upgrade() -> bytes:
            with client_context(ca).wrap_socket(sock, server_hostname="localhost") as tls:
                tls.sendall(
                    b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    b"Sec-WebSocket-Version: 13\r\n\r\n"
                )
                return tls.recv(4096)

        with pytest.raises(OSError):  # the server dropped it (SSLError is an OSError)
            answer = await asyncio.to_thread(handshake_then_upgrade)
            pytest.fail(f"the closed server answered: {answer!r}")
    assert handled == []


async def test_ssl_options_with_a_ws_uri_are_refused(ca: trustme.CA) -> None:
    with pytest.raises(upwire.InvalidURI, match="wss://"):
        upwire.connect("ws://localhost:1/", ssl=client_context(ca))
    with pytest.raises(upwire.InvalidURI, match="wss://"):
        upwire.connect("ws://localhost:1/", server_hostname="localhost")


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2])
async def test_a_server_requiring_a_client_certificate_is_named_in_the_error(
    start_server: StartServer, ca: trustme.CA, version: ssl.TLSVersion
) -> None:
    # TLS 1.3: the client's handshake ends first, then the server closes without answering the request;
    # TLS 1.2: the server breaks off the handshake. Either way the error says what may be missing.
    context = server_context(ca)
    context.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(context)
    server = await start_server(ssl=context)
    client = client_context(ca)
    client.maximum_version = version
    expected = upwire.InvalidHandshake if version is ssl.TLSVersion.TLSv1_3 else OSError
    async with asyncio.timeout(TEST_TIMEOUT_S):
        with pytest.raises(expected, match="requires a client certificate"):
            await upwire.connect(f"wss://127.0.0.1:{server.port}/", ssl=client)
        # With a certificate from the CA the server trusts, the same server lets the client in.
        ca.issue_cert("client@example.test").configure_cert(client)
        async with upwire.connect(f"wss://127.0.0.1:{server.port}/", ssl=client) as ws:
            await ws.send("with a certificate")
            assert await ws.recv() == "with a certificate"


async def test_wss_to_a_server_without_tls_that_closes_on_the_hello_suggests_ws() -> None:
    # A plain server that reads the client's TLS hello as a bad request and closes without answering
    # (websockets' does): the error names that cause, not only client certificates.
    async def close_on_hello(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(4096)
        writer.close()

    server = await asyncio.start_server(close_on_hello, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with asyncio.timeout(TEST_TIMEOUT_S):
            with pytest.raises(OSError, match="should the URI be ws://"):
                await upwire.connect(f"wss://127.0.0.1:{port}/")
    finally:
        server.close()


async def test_wss_to_a_server_without_tls_that_answers_in_plain_http_suggests_ws(
    start_server: StartServer,
) -> None:
    # upwire's own server (and nginx) answer the TLS hello with a plain HTTP 400: OpenSSL then says
    # only "wrong version number"; the error says why, and names the server.
    server = await start_server()
    async with asyncio.timeout(TEST_TIMEOUT_S):
        with pytest.raises(ssl.SSLError, match="should the URI be ws://") as caught:
            await upwire.connect(f"wss://127.0.0.1:{server.port}/")
    assert f"127.0.0.1:{server.port}" in str(caught.value)
    assert caught.value.reason == "WRONG_VERSION_NUMBER"


def test_the_client_certificate_hint_on_uvloop_too(ca: trustme.CA) -> None:
    # uvloop reports the server's close during the TLS 1.3 handshake as a lost connection, without
    # eof_received: the hint must come from there too.
    context = server_context(ca)
    context.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(context)

    async def run() -> None:
        async with (
            asyncio.timeout(TEST_TIMEOUT_S),
            upwire.serve(echo, "127.0.0.1", 0, ssl=context) as server,
        ):
            with pytest.raises(upwire.InvalidHandshake, match="requires a client certificate"):
                await upwire.connect(f"wss://127.0.0.1:{server.port}/", ssl=client_context(ca))

    uvloop.run(run())


async def test_idle_timeout_does_not_close_a_peer_that_keeps_sending_while_the_handler_lags(
    start_server: StartServer, ca: trustme.CA
) -> None:
    # Over TLS the peer's bytes wait in the TLS layer's buffer, not in the socket, while the handler
    # leaves its recv queue full: the peer is not idle all the same.
    got: list[str] = []

    async def lagging(ws: upwire.ServerConnection) -> None:
        await asyncio.sleep(1.0)  # more than twice idle_timeout
        async for message in ws:
            got.append(message)

    server = await start_server(
        lagging, ssl=server_context(ca), idle_timeout=0.4, ping_interval=None, max_queue=2
    )
    async with asyncio.timeout(TEST_TIMEOUT_S):
        ws = await upwire.connect(f"wss://localhost:{server.port}/", ssl=client_context(ca))
        for i in range(15):
            await ws.send(f"{i:03d}" * 30)
            await asyncio.sleep(0.1)
        assert ws.close_code is None  # still open after 1.5 s of a peer that never went quiet
        await ws.close()
    assert len(got) == 15
