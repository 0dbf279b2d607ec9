"""The client's inputs on real sockets: what is refused before connecting, what is sent, and the errors of
redirects, proxies and open_timeout.

A raw asyncio server on 127.0.0.1 records every connection and request head it gets, so a test can tell
that a bad input was refused before a socket was opened (none leaks) and what went on the wire.
"""

from __future__ import annotations

import asyncio
import re
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from fractions import Fraction
from typing import Any

import pytest
import pytest_asyncio

import upwire
from upwire.protocol.handshake import accept_key

from .helpers import TEST_TIMEOUT_S, StartServer, echo
from .test_redirects import Routes, redirecting
from .wire import request_headers

pytestmark = pytest.mark.timeout(TEST_TIMEOUT_S * 3)

FORBIDDEN = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"


class RawServer:
    """A TCP server on 127.0.0.1 that records the request heads it reads and answers with `answer`."""

    def __init__(self, answer: Callable[[asyncio.StreamWriter], Awaitable[None]]) -> None:
        self.answer = answer
        self.connections = 0
        self.heads: list[bytes] = []
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            self.heads.append(await reader.readuntil(b"\r\n\r\n"))
            await self.answer(writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def forbid(writer: asyncio.StreamWriter) -> None:
    writer.write(FORBIDDEN)
    await writer.drain()


async def stay_silent(writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(TEST_TIMEOUT_S)


async def reset(writer: asyncio.StreamWriter) -> None:
    # SO_LINGER with a zero timeout: closing sends a reset (RST) instead of a FIN.
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


StartRaw = Callable[[Callable[[asyncio.StreamWriter], Awaitable[None]]], Awaitable[RawServer]]


@pytest_asyncio.fixture
async def raw_server() -> AsyncIterator[StartRaw]:
    """`server = await raw_server(answer)`; closed at teardown."""
    servers: list[asyncio.Server] = []

    async def start(answer: Callable[[asyncio.StreamWriter], Awaitable[None]]) -> RawServer:
        raw = RawServer(answer)
        server = await asyncio.start_server(raw.handle, "127.0.0.1", 0)
        servers.append(server)
        raw.port = server.sockets[0].getsockname()[1]
        return raw

    yield start
    for server in servers:
        server.close()


# ---------------------------------------------------------------- refused before connecting


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"additional_headers": {"X A": "1"}}, upwire.UsageError),
        ({"additional_headers": {"X-A: b": "1"}}, upwire.UsageError),
        ({"additional_headers": {"": "1"}}, upwire.UsageError),
        ({"additional_headers": {"X-A": "1\r\nX-Injected: 2"}}, upwire.UsageError),
        ({"additional_headers": {"Sec-WebSocket-Key": "x"}}, upwire.UsageError),
        ({"origin": "https://a.example\r\nX-Injected: 1"}, upwire.UsageError),
        ({"user_agent": "ua\r\nX-Injected: 1"}, upwire.UsageError),
        ({"subprotocols": "chat"}, TypeError),
        ({"subprotocols": ["a, b"]}, ValueError),
        ({"subprotocols": ["chat", "chat"]}, ValueError),
        ({"proxy": "socks5://127.0.0.1:1080"}, ValueError),
        # Values of the wrong kind, named at once (they failed later with errors naming no option, or
        # were sent as their str(), or, NaN, made a timeout that never expires).
        ({"open_timeout": "5"}, TypeError),
        ({"close_timeout": True}, TypeError),
        ({"ping_interval": float("nan")}, ValueError),
        ({"idle_timeout": 0}, ValueError),
        ({"origin": 5}, TypeError),
        ({"user_agent": b"ua"}, TypeError),
        ({"max_redirects": 1.5}, TypeError),
        ({"max_redirects": None}, TypeError),
        ({"reconnect_backoff": 5}, TypeError),
        ({"reconnect_backoff": (float("nan"), 60)}, ValueError),
        ({"reconnect_backoff": (2, 1)}, ValueError),
        ({"sock": "127.0.0.1:80"}, TypeError),
        ({"unix_socket": 5}, TypeError),
        # Past what zlib's bound and uvloop's write-buffer marks hold (they failed each connection).
        ({"max_message_size": 1 << 63}, ValueError),
        ({"write_limit": 1 << 31}, ValueError),
        ({"open_timeout": 10**400}, ValueError),
    ],
)
async def test_bad_inputs_are_refused_before_a_connection_is_opened(
    raw_server: StartRaw, no_proxy_environment: Any, options: dict[str, Any], error: type
) -> None:
    server = await raw_server(forbid)
    with pytest.raises(error):
        upwire.connect(f"ws://127.0.0.1:{server.port}/", **options)
    await asyncio.sleep(0.05)
    assert server.connections == 0


@pytest.mark.parametrize(
    ("name", "message"),
    [
        # websockets' name: the error names connect(), never ConnectionOptions, and upwire's name.
        (
            "max_size",
            "connect() got an unexpected keyword argument 'max_size'; did you mean max_message_size?",
        ),
        (
            "ping_intervall",
            "connect() got an unexpected keyword argument 'ping_intervall'; did you mean ping_interval?",
        ),
        ("nonsense", "connect() got an unexpected keyword argument 'nonsense'"),
    ],
)
async def test_an_unknown_option_is_named_as_an_argument_of_connect_and_serve(
    name: str, message: str
) -> None:
    with pytest.raises(TypeError) as caught:
        upwire.connect("ws://127.0.0.1:1/", **{name: 1})
    assert str(caught.value) == message
    with pytest.raises(TypeError) as caught:
        upwire.serve(echo, "127.0.0.1", 0, **{name: 1})
    assert str(caught.value) == message.replace("connect()", "serve()")


@pytest.mark.parametrize("uri", ["ws://127.0.0.1:0/", "ws://user:secret@127.0.0.1:0/"])
async def test_port_0_is_an_invalid_uri_not_port_80(uri: str) -> None:
    with pytest.raises(upwire.InvalidURI, match="port 0") as caught:
        await upwire.connect(uri)
    assert "secret" not in str(caught.value)


# ---------------------------------------------------------------- what is sent


@pytest.mark.parametrize(
    ("path", "target"),
    [("/a b", "/a%20b"), ("/\u20ac", "/%E2%82%AC"), ("/caf\u00e9?q=a b", "/caf%C3%A9?q=a%20b")],
)
async def test_spaces_and_non_ascii_in_the_path_are_sent_percent_encoded(
    start_server: StartServer, path: str, target: str
) -> None:
    async def target_of(ws: upwire.ServerConnection) -> None:
        assert ws.request is not None
        await ws.send(ws.request.target)

    server = await start_server(target_of)
    async with upwire.connect(f"ws://127.0.0.1:{server.port}{path}") as ws:
        assert await ws.recv() == target


@pytest.mark.parametrize(
    "framing",
    [b"", b"Content-Length: 100000000000\r\n", b"Transfer-Encoding: chunked\r\n"],
    ids=["until-close", "length-never-reached", "chunks-never-ending"],
)
async def test_an_error_answer_whose_body_never_ends_is_its_status(
    raw_server: StartRaw, no_proxy_environment: Any, framing: bytes
) -> None:
    # The body lasts until the server closes (RFC 9112 §6.3), which this one never does, or its length
    # or last chunk never comes. At open_timeout its status is the answer, not a TimeoutError, which
    # `async for` would retry for ever on a 403.
    body = b"7\r\nnot you\r\n" if b"chunked" in framing else b"not you"

    async def refuse_and_stay(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\n" + framing)
        writer.write(b"\r\n" + body)
        await writer.drain()
        await asyncio.sleep(TEST_TIMEOUT_S)

    server = await raw_server(refuse_and_stay)
    uri = f"ws://127.0.0.1:{server.port}/"
    async with asyncio.timeout(TEST_TIMEOUT_S):
        with pytest.raises(upwire.InvalidStatus) as caught:
            await upwire.connect(uri, open_timeout=0.3)
        assert (caught.value.status, caught.value.body) == (403, b"not you")
        with pytest.raises(upwire.InvalidStatus):
            async for _ in upwire.connect(uri, open_timeout=0.3, reconnect_backoff=(0.05, 0.05)):
                pytest.fail("connected")
    assert server.connections == 2  # not retried


async def test_an_error_answer_with_a_malformed_body_is_its_status(
    raw_server: StartRaw, no_proxy_environment: Any
) -> None:
    # A bad chunk header after a whole head: the status and its fields are what the server said.
    async def refuse_badly(writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=x\r\n"
            b"Transfer-Encoding: chunked\r\n\r\nzz\r\n"
        )
        await writer.drain()
        await asyncio.sleep(TEST_TIMEOUT_S)

    server = await raw_server(refuse_badly)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        with pytest.raises(upwire.InvalidStatus) as caught:
            await upwire.connect(f"ws://127.0.0.1:{server.port}/", open_timeout=TEST_TIMEOUT_S / 2)
    assert caught.value.status == 401
    assert caught.value.headers.get("WWW-Authenticate") == "Basic realm=x"


async def test_endless_interim_answers_are_refused_at_the_head_size_limit(
    raw_server: StartRaw, no_proxy_environment: Any
) -> None:
    # RFC 9110 §15.2: 1xx answers are read and skipped, but not without end: together they are bounded
    # as a head is (16 KiB), so the client stops long before open_timeout.
    async def continue_for_ever(writer: asyncio.StreamWriter) -> None:
        for _ in range(100_000):
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" * 100)
            await writer.drain()

    server = await raw_server(continue_for_ever)
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with asyncio.timeout(TEST_TIMEOUT_S):
        with pytest.raises(upwire.InvalidHandshake, match="interim 1xx answers"):
            await upwire.connect(f"ws://127.0.0.1:{server.port}/", open_timeout=TEST_TIMEOUT_S / 2)
    assert loop.time() - start < TEST_TIMEOUT_S / 4


@pytest.mark.parametrize("version", ["1.0", "1.1"])
async def test_a_101_must_be_http_1_1(
    raw_server: StartRaw, no_proxy_environment: Any, version: str
) -> None:
    # The Upgrade is HTTP/1.1's, and HTTP/1.0 has no 1xx status: such a 101 is no handshake.
    server: RawServer

    async def switch(writer: asyncio.StreamWriter) -> None:
        key = re.search(rb"Sec-WebSocket-Key: (\S+)", server.heads[-1])
        assert key is not None
        writer.write(
            f"HTTP/{version} 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept_key(key[1].decode())}\r\n\r\n".encode()
        )
        await writer.drain()
        await asyncio.sleep(TEST_TIMEOUT_S)

    server = await raw_server(switch)
    uri = f"ws://127.0.0.1:{server.port}/"
    async with asyncio.timeout(TEST_TIMEOUT_S):
        if version == "1.1":
            ws = await upwire.connect(uri, close_timeout=0.1)
            await ws.close()
        else:
            with pytest.raises(upwire.InvalidHandshake, match=r"101 response in HTTP/1\.0"):
                await upwire.connect(uri)


async def _head_sent(raw_server: StartRaw, **options: Any) -> tuple[Any, bytes]:
    """Connect with `options` to a server that refuses with 403; return it and the request head it got."""
    server = await raw_server(forbid)
    with pytest.raises(upwire.InvalidStatus):
        await upwire.connect(f"ws://127.0.0.1:{server.port}/", **options)
    (head,) = server.heads
    return server, head


async def test_additional_headers_replace_user_agent_origin_and_host(
    raw_server: StartRaw, no_proxy_environment: Any
) -> None:
    _, head = await _head_sent(
        raw_server,
        origin="https://a.example",
        additional_headers={
            "user-agent": "app/1",
            "Origin": "https://b.example",
            "Host": "virtual.example",
        },
    )
    for name in (b"user-agent", b"origin", b"host"):
        assert head.lower().count(b"\r\n" + name + b":") == 1
    headers = request_headers(head)
    assert headers["user-agent"] == "app/1"
    assert headers["origin"] == "https://b.example"
    assert headers["host"] == "virtual.example"


async def test_options_fill_in_user_agent_and_origin_when_not_in_additional_headers(
    raw_server: StartRaw, no_proxy_environment: Any
) -> None:
    server, head = await _head_sent(
        raw_server, origin="https://a.example", additional_headers={"X-Trace": "1"}
    )
    headers = request_headers(head)
    assert headers["user-agent"] == "upwire (Python)"
    assert headers["origin"] == "https://a.example"
    assert headers["host"] == f"127.0.0.1:{server.port}"


# ---------------------------------------------------------------- redirects


async def test_a_location_with_a_space_is_followed_percent_encoded(
    start_server: StartServer,
) -> None:
    async def target_of(ws: upwire.ServerConnection) -> None:
        assert ws.request is not None
        await ws.send(ws.request.target)

    routes: Routes = {"/": (302, "/a b?x=c d")}
    server = await start_server(target_of, process_request=redirecting(routes))
    async with upwire.connect(f"ws://127.0.0.1:{server.port}/") as ws:
        assert await ws.recv() == "/a%20b?x=c%20d"


@pytest.mark.parametrize(
    ("location", "why"),
    [
        ("ws://127.0.0.1:99999/", "Port out of range"),
        ("ws://[::1/", "Invalid IPv6 URL"),
        ("ws://127.0.0.1:0/", "whose port is 0"),
    ],
)
async def test_a_location_with_a_bad_port_is_an_invalid_redirect(
    start_server: StartServer, location: str, why: str
) -> None:
    server = await start_server(process_request=redirecting({"/": (302, location)}))
    with pytest.raises(upwire.InvalidRedirect, match=why) as caught:
        await upwire.connect(f"ws://127.0.0.1:{server.port}/")
    assert caught.value.status == 302


async def test_credentials_in_a_location_never_appear_in_errors(start_server: StartServer) -> None:
    routes: Routes = {}
    server = await start_server(process_request=redirecting(routes))
    base = f"ws://bob:s3cret@127.0.0.1:{server.port}"
    routes.update({"/": (302, f"{base}/u"), "/u": (302, f"{base}/v"), "/v": (302, f"{base}/u")})
    with pytest.raises(upwire.InvalidRedirect, match="redirect loop") as caught:
        await upwire.connect(f"ws://127.0.0.1:{server.port}/")
    assert "s3cret" not in str(caught.value) and "bob" not in str(caught.value)
    assert f"ws://***@127.0.0.1:{server.port}/u" in str(caught.value)


# ---------------------------------------------------------------- proxies


async def test_a_proxy_that_resets_the_connection_is_a_proxy_error(
    raw_server: StartRaw, no_proxy_environment: Any
) -> None:
    proxy = await raw_server(reset)
    with pytest.raises(upwire.ProxyError) as caught:
        await upwire.connect("ws://127.0.0.1:9/", proxy=f"http://127.0.0.1:{proxy.port}")
    assert caught.value.status == 0
    assert f"the proxy http://127.0.0.1:{proxy.port}" in str(caught.value)
    assert isinstance(caught.value.__cause__, ConnectionResetError)


async def test_a_malformed_no_proxy_entry_does_not_stop_wss_going_through_the_proxy(
    raw_server: StartRaw, no_proxy_environment: pytest.MonkeyPatch
) -> None:
    proxy = await raw_server(forbid)
    no_proxy_environment.setenv("https_proxy", f"http://127.0.0.1:{proxy.port}")
    no_proxy_environment.setenv("no_proxy", "[::1]:x, [::1]:")
    with pytest.raises(upwire.ProxyError, match="refused to open a tunnel") as caught:
        await upwire.connect("wss://127.0.0.1:9/")
    assert caught.value.status == 403
    assert proxy.heads[0].startswith(b"CONNECT 127.0.0.1:9 HTTP/1.1\r\n")


# ---------------------------------------------------------------- open_timeout


async def test_open_timeout_says_what_timed_out(
    raw_server: StartRaw, no_proxy_environment: Any
) -> None:
    server = await raw_server(stay_silent)
    with pytest.raises(TimeoutError) as caught:
        await upwire.connect(f"ws://user:secret@127.0.0.1:{server.port}/x", open_timeout=0.2)
    assert str(caught.value) == (
        f"timed out after open_timeout=0.2 s opening ws://127.0.0.1:{server.port}/x "
        "(waiting for the handshake response)"
    )
    proxy = await raw_server(stay_silent)
    with pytest.raises(TimeoutError, match=f"through the proxy http://127.0.0.1:{proxy.port}"):
        await upwire.connect(
            "ws://127.0.0.1:9/", proxy=f"http://127.0.0.1:{proxy.port}", open_timeout=0.2
        )


def test_a_misspelt_parameter_of_connect_or_serve_itself_is_named() -> None:
    cases = [
        (lambda: upwire.connect("ws://127.0.0.1:1/", max_redirect=2), "max_redirects"),
        (lambda: upwire.connect("ws://127.0.0.1:1/", extra_headers={}), "additional_headers"),
        (lambda: upwire.serve(echo, "127.0.0.1", 0, proces_request=None), "process_request"),
        (lambda: upwire.serve(echo, "127.0.0.1", 0, additional_headers={}), "extra_headers"),
        # websockets passes these on to create_connection: a socket connected by the caller does it.
        (lambda: upwire.connect("ws://127.0.0.1:1/", host="10.0.0.1", port=80), "sock"),
        (lambda: upwire.connect("ws://127.0.0.1:1/", local_addr=("127.0.0.1", 0)), "sock"),
        (lambda: upwire.serve(echo, "127.0.0.1", 0, family=2), "sock"),
    ]
    for call, meant in cases:
        with pytest.raises(TypeError, match=f"did you mean {meant}\\?$"):
            call()


def test_numbers_of_other_types_are_taken_as_numbers() -> None:
    # numpy's float32 and int64 (a Real that is not a float, an int that is not an int) worked before the
    # options were checked, and must still: here Fraction and a class with __index__ stand for them.
    class Count:
        def __init__(self, value: int) -> None:
            self.value = value

        def __index__(self) -> int:
            return self.value

    connect = upwire.connect(
        "ws://127.0.0.1:1/",
        open_timeout=Fraction(1, 2),
        max_redirects=Count(3),
        max_message_size=Count(4096),
        reconnect_backoff=(Fraction(1, 4), 2),
    )
    assert connect.options.open_timeout == 0.5 and type(connect.options.open_timeout) is float
    assert (
        connect.options.max_message_size == 4096 and type(connect.options.max_message_size) is int
    )
    for value in (True, 1.0):
        with pytest.raises(TypeError, match="max_redirects must be a whole number"):
            upwire.connect("ws://127.0.0.1:1/", max_redirects=value)


async def test_what_the_server_answered_is_shown_escaped_and_bounded_in_errors(
    raw_server: StartRaw, no_proxy_environment: Any
) -> None:
    # A reason phrase with terminal escapes, a 12 kB Sec-WebSocket-Accept: the client's error quotes
    # them, and an application logs it: one line, at most 512 characters, the end saying why.
    async def hostile_403(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 403 Go\x1b[2J\x9b away\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()

    async def long_accept(writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + b"A" * 12000 + b"\r\n\r\n"
        )
        await writer.drain()

    for answer, error in (
        (hostile_403, upwire.InvalidStatus),
        (long_accept, upwire.InvalidHandshake),
    ):
        server = await raw_server(answer)
        async with asyncio.timeout(TEST_TIMEOUT_S):
            with pytest.raises(error) as caught:
                await upwire.connect(f"ws://127.0.0.1:{server.port}/")
        message = str(caught.value)
        assert len(message) <= 512, message
        assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in message), message
        if answer is hostile_403:
            assert "Go\\x1b[2J\\x9b away" in message
