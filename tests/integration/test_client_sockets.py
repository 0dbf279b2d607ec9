"""`connect` over a Unix socket (`unix_socket=`) and over a socket the caller connected (`sock=`)."""

from __future__ import annotations

import asyncio
import errno
import gc
import os
import socket
import ssl
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

import upwire
from upwire.client import _retry_delay

from .helpers import TEST_TIMEOUT_S, StartServer, tls_contexts
from .wire import RawPeer


async def path_and_headers(ws: upwire.ServerConnection) -> None:
    assert ws.request is not None
    await ws.send(f"{ws.request.path} host={ws.request.headers.get('Host')}")
    async for message in ws:
        await ws.send(message)


@pytest_asyncio.fixture
async def unix_server() -> AsyncIterator[str]:
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "ws.sock")
        listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listening.bind(path)
        async with upwire.serve(path_and_headers, sock=listening, ping_interval=None):
            yield path


async def test_connect_over_a_unix_socket(unix_server: str) -> None:
    async with (
        asyncio.timeout(TEST_TIMEOUT_S),
        upwire.connect("ws://app.internal/chat?room=1", unix_socket=unix_server) as ws,
    ):
        # The URI still gives the Host header and the target.
        assert await ws.recv() == "/chat host=app.internal"
        await ws.send(b"\x00" * 70_000)
        assert await ws.recv() == b"\x00" * 70_000


async def test_connect_over_a_unix_socket_ignores_the_proxy_environment(
    unix_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9/")  # nothing listens there
    async with (
        asyncio.timeout(TEST_TIMEOUT_S),
        upwire.connect("ws://localhost/", unix_socket=unix_server) as ws,
    ):
        assert await ws.recv() == "/ host=localhost"


async def test_connect_on_a_socket_the_caller_connected(unix_server: str) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(unix_server)
    sock.setblocking(False)
    async with asyncio.timeout(TEST_TIMEOUT_S), upwire.connect("ws://localhost/x", sock=sock) as ws:
        assert await ws.recv() == "/x host=localhost"
        await ws.send("over the given socket")
        assert await ws.recv() == "over the given socket"
    assert ws.close_code == 1000


async def test_connect_on_a_tcp_socket_the_caller_connected() -> None:
    async with upwire.serve(path_and_headers, "127.0.0.1", 0, ping_interval=None) as server:
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.setblocking(False)
        async with (
            asyncio.timeout(TEST_TIMEOUT_S),
            upwire.connect("ws://example.test/", sock=sock) as ws,
        ):
            assert await ws.recv() == "/ host=example.test"


def test_unix_socket_and_sock_together_are_refused() -> None:
    with socket.socket() as sock, pytest.raises(TypeError, match="not both"):
        upwire.connect("ws://localhost/", unix_socket="/tmp/x", sock=sock)
    with pytest.raises(TypeError, match="unix_socket or a proxy, not both"):
        upwire.connect("ws://localhost/", unix_socket="/tmp/x", proxy="http://proxy:3128")
    with socket.socket() as sock, pytest.raises(TypeError, match="sock or a proxy, not both"):
        upwire.connect("ws://localhost/", sock=sock, proxy="http://proxy:3128")


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_unix_socket_that_is_not_there_or_refuses_is_named(loop: str, tmp_path: Path) -> None:
    # As a TCP refusal names host and port: "[Errno 2] No such file or directory" said nothing of which.
    import uvloop

    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as left:
        left.bind(str(stale))  # a socket file nobody listens on: refused

    async def main() -> None:
        async with asyncio.timeout(TEST_TIMEOUT_S):
            missing = tmp_path / "missing.sock"
            with pytest.raises(FileNotFoundError, match=r"missing\.sock") as caught:
                await upwire.connect("ws://localhost/", unix_socket=missing)
            assert caught.value.errno == errno.ENOENT
            with pytest.raises(ConnectionRefusedError, match=r"stale\.sock"):
                await upwire.connect("ws://localhost/", unix_socket=stale)
            with pytest.raises(OSError, match="AF_UNIX path too long"):  # libuv: "No such file"
                await upwire.connect("ws://localhost/", unix_socket=tmp_path / ("x" * 200))

    (uvloop.run if loop == "uvloop" else asyncio.run)(main())


# ---------------------------------------------------------------- async for ws in connect(...)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def hello(ws: upwire.ServerConnection) -> None:
    await ws.send("hello")
    await ws.wait_closed()


async def test_async_for_reconnects_until_the_server_is_up_and_after_it_restarts() -> None:
    port = free_port()
    servers: list[upwire.Server] = []

    async def start_later(delay: float) -> None:
        await asyncio.sleep(delay)
        servers.append(await upwire.serve(hello, "127.0.0.1", port))

    connected = 0
    async with asyncio.timeout(TEST_TIMEOUT_S):
        starting = asyncio.create_task(start_later(0.3))  # down at first: refused, and retried
        async for ws in upwire.connect(f"ws://127.0.0.1:{port}/", reconnect_backoff=(0.05, 0.2)):
            connected += 1
            assert await ws.recv() == "hello"
            if connected == 2:
                break
            servers[-1].close()  # a restart: this connection ends with 1001, the next one follows
            await servers[-1].wait_closed()
            with pytest.raises(upwire.ConnectionClosedOK):
                await ws.recv()
            starting = asyncio.create_task(start_later(0.3))
        await starting
        servers[-1].close()
        await servers[-1].wait_closed()
    assert connected == 2


async def test_async_for_retries_a_503_and_raises_a_403() -> None:
    answers = [upwire.Response(503, {"Retry-After": "0"}), None]

    def process_request(
        connection: upwire.ServerConnection, request: upwire.Request
    ) -> upwire.Response | None:
        if request.path == "/forbidden":
            return upwire.Response(403)
        return answers.pop(0)

    async with (
        asyncio.timeout(TEST_TIMEOUT_S),
        upwire.serve(hello, "127.0.0.1", 0, process_request=process_request) as server,
    ):
        async for ws in upwire.connect(
            f"ws://127.0.0.1:{server.port}/", reconnect_backoff=(0.05, 0.1)
        ):
            assert await ws.recv() == "hello"
            break
        assert answers == []  # the 503, then the upgrade
        with pytest.raises(upwire.InvalidStatus) as caught:
            async for _ws in upwire.connect(f"ws://127.0.0.1:{server.port}/forbidden"):
                raise AssertionError("a 403 is not retried into a connection")
        assert caught.value.status == 403


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("kind", ["abstract bytes", "abstract str", "path bytes", "pathlike"])
def test_connect_takes_the_unix_socket_names_serve_takes(loop: str, kind: str) -> None:
    # A Linux abstract name (leading NUL) as bytes or str, a path as bytes or a Path: serve takes each.
    # uvloop's (libuv's) connect takes no abstract name: the error says so.
    import uvloop

    refused = loop == "uvloop" and kind.startswith("abstract")

    name = f"upwire-test-{os.getpid()}-{loop}-{kind.replace(' ', '-')}"

    async def main() -> None:
        with tempfile.TemporaryDirectory() as directory:
            given: str | bytes | Path = {
                "abstract bytes": b"\0" + name.encode(),
                "abstract str": "\0" + name,
                "path bytes": os.path.join(directory, "ws.sock").encode(),
                "pathlike": Path(directory) / "ws.sock",
            }[kind]
            async with (
                asyncio.timeout(TEST_TIMEOUT_S),
                upwire.serve(path_and_headers, unix_socket=given, ping_interval=None),
            ):
                if refused:
                    with pytest.raises(OSError, match="cannot connect to a Linux abstract name"):
                        await upwire.connect("ws://localhost/", unix_socket=given)
                    return
                async with upwire.connect("ws://localhost/", unix_socket=given) as ws:
                    assert await ws.recv() == "/ host=localhost"

    (uvloop.run if loop == "uvloop" else asyncio.run)(main())


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_refused_connection_says_which_host(loop: str) -> None:
    # uvloop's refusal names neither host nor port (asyncio's does); the type and errno stay the same.
    import uvloop

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: refused

    async def main() -> None:
        async with asyncio.timeout(TEST_TIMEOUT_S):
            with pytest.raises(ConnectionRefusedError, match=rf"127\.0\.0\.1.*{port}") as refused:
                await upwire.connect(f"ws://127.0.0.1:{port}/")
            assert refused.value.errno == errno.ECONNREFUSED

    (uvloop.run if loop == "uvloop" else asyncio.run)(main())


def test_a_name_that_does_not_resolve_says_which_host() -> None:
    # getaddrinfo's own message names nothing. (Resolving needs DNS, which a test cannot count on here.)
    from upwire.client import _naming, parse_uri

    unknown = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    named = _naming(unknown, parse_uri("wss://nowhere.invalid/"))
    assert type(named) is socket.gaierror and named.errno == socket.EAI_NONAME
    assert (
        str(named)
        == f"[Errno {socket.EAI_NONAME}] Name or service not known (connecting to nowhere.invalid:443)"
    )
    said = ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed ('127.0.0.1', 9)")
    assert _naming(said, parse_uri("ws://127.0.0.1:9/")) is None  # it says already
    # A name that occurs in the reason is still named; an IPv6 address in brackets.
    service = _naming(unknown, parse_uri("ws://service/"))
    assert service is not None and str(service).endswith("(connecting to service:80)")
    refused = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
    ipv6 = _naming(refused, parse_uri("ws://[::1]:9/"))
    assert ipv6 is not None and str(ipv6).endswith("(connecting to [::1]:9)")


@pytest.mark.parametrize("host", ["a..example", "x" * 64 + ".example"])
async def test_a_host_name_with_an_empty_or_too_long_label_is_an_invalid_uri(host: str) -> None:
    # The resolver's IDNA encoding refuses it before any DNS query: a UnicodeError from inside asyncio.
    async with asyncio.timeout(TEST_TIMEOUT_S):
        with pytest.raises(upwire.InvalidURI, match="bad host name"):
            await upwire.connect(f"ws://{host}/")


async def test_with_a_unix_socket_the_host_only_fills_the_host_field(tmp_path: Path) -> None:
    # Never resolved: a name DNS would refuse is fine there.
    path = str(tmp_path / "ws.sock")
    hosts: list[str] = []

    async def handler(ws: upwire.ServerConnection) -> None:
        assert ws.request is not None
        hosts.append(ws.request.headers["Host"])

    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(path)
    async with (
        asyncio.timeout(TEST_TIMEOUT_S),
        upwire.serve(handler, sock=unix),
        upwire.connect("ws://a..b/", unix_socket=path) as ws,
    ):
        await ws.wait_closed()
    assert hosts == ["a..b"]


def test_reconnecting_a_given_socket_is_refused() -> None:
    with socket.socket() as sock, pytest.raises(upwire.UsageError, match="sock="):
        upwire.connect("ws://localhost/", sock=sock).__aiter__()


def test_reconnect_backoff_is_checked() -> None:
    with pytest.raises(ValueError, match="reconnect_backoff"):
        upwire.connect("ws://localhost/", reconnect_backoff=(2.0, 1.0))


def test_the_backoff_stays_at_its_longest_delay_however_long_the_outage() -> None:
    # 2.0**1024 overflows a float: after 1024 failures in a row (13 h at the defaults) the loop died.
    refused = ConnectionRefusedError(111, "refused")
    for failures in (0, 1, 5, 1023, 1024, 10**6):
        delay = _retry_delay(refused, 1.0, 60.0, failures)
        assert delay is not None
        assert min(60.0, 2.0 ** min(failures, 64)) / 2 <= delay <= 60.0


async def test_async_for_retries_a_server_that_closes_before_answering() -> None:
    # A server restarting, or a load balancer without a backend: TCP accepted, then closed (FIN, or
    # a reset) before any answer. Retried, as a refused connection is.
    closings = ["fin", "reset"]

    async def close_early(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        how = closings.pop(0) if closings else None
        if how == "reset":
            writer.transport.abort()
        elif how == "fin":
            writer.close()

    early = await asyncio.start_server(close_early, "127.0.0.1", 0)
    port = early.sockets[0].getsockname()[1]
    async with asyncio.timeout(TEST_TIMEOUT_S):
        uri = f"ws://127.0.0.1:{port}/"
        attempts = 0
        with pytest.raises(TimeoutError):
            # Both early closes are retried; the third attempt then waits for an answer that never
            # comes, and open_timeout ends it (a timeout is retried too: the loop is stopped here).
            async with asyncio.timeout(1.5):
                async for _ws in upwire.connect(uri, reconnect_backoff=(0.05, 0.1), open_timeout=5):
                    attempts += 1
        assert closings == []  # both early closes were met, and retried
        assert attempts == 0
    early.close()


async def test_async_for_raises_a_tls_handshake_that_fails_by_itself(
    start_server: StartServer,
) -> None:
    # wss:// to a server without TLS: its answer to the TLS hello is not TLS, and will not be next time
    # (it was retried forever, as an OSError). A TLS connection lost mid-handshake is still retried.
    server = await start_server()
    attempts = 0
    async with asyncio.timeout(TEST_TIMEOUT_S):
        with pytest.raises(ssl.SSLError) as caught:
            async for _ws in upwire.connect(
                f"wss://127.0.0.1:{server.port}/", reconnect_backoff=(0.05, 0.1)
            ):
                attempts += 1
    assert attempts == 0
    assert caught.value.reason == "WRONG_VERSION_NUMBER"
    assert _retry_delay(ssl.SSLEOFError(8, "EOF occurred in violation of protocol"), 1.0, 2.0, 0)
    # An alert that may pass (internal_error; unrecognized_name from a router without its route yet);
    # not one that refuses this client, raised by itself or (TLS 1.3) as a lost opening's cause.
    for reason, passes in [
        ("TLSV1_ALERT_INTERNAL_ERROR", True),
        ("TLSV1_UNRECOGNIZED_NAME", True),
        ("SSLV3_ALERT_HANDSHAKE_FAILURE", False),
        ("TLSV13_ALERT_CERTIFICATE_REQUIRED", False),
        ("TLSV1_ALERT_UNKNOWN_CA", False),
    ]:
        alert = ssl.SSLError(1, f"[SSL: {reason}] alert")
        alert.reason = reason
        lost = upwire.InvalidHandshake("connection lost during the opening handshake", 0)
        lost.__cause__ = alert
        for error in (alert, lost):
            assert (_retry_delay(error, 1.0, 2.0, 0) is not None) is passes, (reason, error)


async def test_async_for_raises_a_certificate_it_cannot_verify(start_server: StartServer) -> None:
    # InvalidCertificate's cause is an OSError (ssl.SSLCertVerificationError): it was retried forever.
    server_context, _ = tls_contexts()
    server = await start_server(ssl=server_context)
    attempts = 0
    async with asyncio.timeout(TEST_TIMEOUT_S):
        with pytest.raises(upwire.InvalidCertificate):
            async for _ws in upwire.connect(
                f"wss://localhost:{server.port}/", reconnect_backoff=(0.05, 0.1)
            ):
                attempts += 1
    assert attempts == 0


async def test_async_for_retries_a_tls_server_that_closes_before_answering() -> None:
    # A TLS server restarting: the TLS handshake completes, then the connection closes before the
    # 101. Retried, as over plain TCP (the hint about client certificates dropped the cause).
    server_context, client_context = tls_contexts()
    attempts: list[str] = []

    async def close_first(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        attempts.append("tls")
        if len(attempts) == 1:
            await reader.readuntil(b"\r\n\r\n")
            writer.close()
            return
        await RawPeer.accept(reader, writer)
        await reader.read()  # until the client closes
        writer.close()

    server = await asyncio.start_server(close_first, "localhost", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    try:
        async with asyncio.timeout(TEST_TIMEOUT_S):
            async for ws in upwire.connect(
                f"wss://localhost:{port}/", ssl=client_context, reconnect_backoff=(0.05, 0.1)
            ):
                ws.transport.abort()  # type: ignore[union-attr]
                break
        assert attempts == ["tls", "tls"]
    finally:
        server.close()


async def test_a_connection_that_ends_at_once_counts_as_a_failed_attempt() -> None:
    # A server that accepts, then closes at once (1013 Try Again Later): without backoff the loop spins.
    async def busy(ws: upwire.ServerConnection) -> None:
        await ws.close(1013, "try again later")

    async with upwire.serve(busy, "127.0.0.1", 0) as server:
        opened = 0
        async with asyncio.timeout(TEST_TIMEOUT_S):
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(1.0):
                    async for ws in upwire.connect(
                        f"ws://127.0.0.1:{server.port}/", reconnect_backoff=(0.1, 0.4)
                    ):
                        opened += 1
                        with pytest.raises(upwire.ConnectionClosedError):
                            await ws.recv()
        # Delays of 0.05-0.1, 0.1-0.2, 0.2-0.4, 0.2-0.4 s...: a handful in one second, not hundreds.
        assert 2 <= opened <= 8, opened


async def test_connect_cancelled_while_asyncio_makes_the_connection_logs_nothing() -> None:
    # Cancelled just as the TCP connection is made: asyncio closes the transport it had made, whose loss
    # fails the opening that no one awaits any more. That must not be reported as "Future exception was
    # never retrieved" (it was, on every attempt, through the loop's exception handler).
    loop = asyncio.get_running_loop()
    reported: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _, context: reported.append(context))
    connecting: asyncio.Future[object] | None = None

    async def cancel_on_accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert connecting is not None
        connecting.cancel()
        await asyncio.sleep(0.1)
        writer.close()

    server = await asyncio.start_server(cancel_on_accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with asyncio.timeout(TEST_TIMEOUT_S):
            for _ in range(10):
                connecting = asyncio.ensure_future(upwire.connect(f"ws://127.0.0.1:{port}/"))
                with pytest.raises(asyncio.CancelledError):
                    await connecting
                connecting = None
            await asyncio.sleep(0.2)
            gc.collect()  # a future's unretrieved exception is reported when it is freed
            await asyncio.sleep(0)
    finally:
        server.close()
        loop.set_exception_handler(None)
    assert reported == []
