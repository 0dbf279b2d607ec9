"""The opening handshake and plain HTTP, probed over raw sockets against `upwire.serve`."""

from __future__ import annotations

import asyncio
import json

import pytest

import upwire

from .helpers import TEST_TIMEOUT_S, StartServer, uri
from .wire import (
    ACCEPT,
    TEXT,
    HttpResponse,
    RawPeer,
    encode_frame,
    parse_response,
    plain_get,
    upgrade_request,
)

# ---------------------------------------------------------------------------- a good request


async def answer_to_upgrade(port: int, request: bytes | None = None) -> HttpResponse:
    """What the server answers a valid Upgrade request with, read to the end of the connection."""
    peer = await RawPeer.connect(port)
    peer.write(upgrade_request() if request is None else request)
    return await peer.read_http_response()


async def test_valid_upgrade_request_gets_101_with_the_correct_accept_key(
    start_server: StartServer,
) -> None:
    server = await start_server()
    async with asyncio.timeout(TEST_TIMEOUT_S):
        peer = await RawPeer.connect(server.port)
        response = await peer.upgrade()
        assert response.status == 101
        assert response.headers["upgrade"].lower() == "websocket"
        assert response.headers["connection"].lower() == "upgrade"
        assert response.headers["sec-websocket-accept"] == ACCEPT
        # The connection now speaks WebSocket: a masked text frame comes back unmasked.
        peer.send_frame(TEXT, "hi")
        frame = await peer.read_frame()
        assert (frame.fin, frame.opcode, frame.payload, frame.masked) == (True, TEXT, b"hi", False)
        peer.close()


async def test_extra_headers_and_the_subprotocol_are_in_the_101_on_the_wire(
    start_server: StartServer,
) -> None:
    server = await start_server(
        subprotocols=["chat"], extra_headers=[("Server", "upwire-test"), ("X-Id", "7")]
    )
    async with asyncio.timeout(TEST_TIMEOUT_S):
        peer = await RawPeer.connect(server.port)
        peer.write(upgrade_request(extra=[("Sec-WebSocket-Protocol", "mqtt, chat")]))
        response = await peer.read_response_head()
        assert response.status == 101
        assert response.headers["sec-websocket-accept"] == ACCEPT
        assert response.headers["sec-websocket-protocol"] == "chat"
        assert (response.headers["server"], response.headers["x-id"]) == ("upwire-test", "7")
        peer.close()


@pytest.mark.parametrize("value", ["a\r\nSet-Cookie: injected=1", "a\nb", "a\x00"])
async def test_serve_refuses_extra_headers_that_would_break_the_101(value: str) -> None:
    with pytest.raises(upwire.UsageError):
        upwire.serve(upwire.Listener, "127.0.0.1", 0, extra_headers=[("X-Bad", value)])


@pytest.mark.parametrize("name", ["X A", "", "X-A:", "Ä", "X\tB"])
async def test_serve_refuses_extra_header_names_that_are_not_tokens(name: str) -> None:
    # RFC 9110 §5.1: else every 101 would be malformed ("X A: v" is no header line).
    with pytest.raises(upwire.UsageError, match="header name"):
        upwire.serve(upwire.Listener, "127.0.0.1", 0, extra_headers=[(name, "v")])


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"origins": "https://example.com"}, TypeError),  # would allow "h", "t", "p", ...
        ({"subprotocols": "chat"}, TypeError),  # would support "c", "h", "a", "t"
        ({"subprotocols": ["a b"]}, ValueError),
        ({"subprotocols": [""]}, ValueError),
    ],
)
async def test_serve_refuses_a_single_string_for_a_list_option(
    options: dict[str, object], error: type[Exception]
) -> None:
    with pytest.raises(error):
        upwire.serve(upwire.Listener, "127.0.0.1", 0, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "headers",
    [{"Bad Name": "v"}, {"Content-Length": "99"}, {"Content-Length": "2"}],
)
async def test_a_process_request_response_with_a_bad_field_gets_500(
    start_server: StartServer, headers: dict[str, str]
) -> None:
    def answer(connection: upwire.ServerConnection, request: upwire.Request) -> upwire.Response:
        return upwire.Response(200, headers, "x")

    server = await start_server(process_request=answer)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        response = await answer_to_upgrade(server.port)
        assert response.status == 500, response


async def test_a_process_request_response_that_cannot_be_sent_gets_500_at_once(
    start_server: StartServer,
) -> None:
    def bad_answer(connection: upwire.ServerConnection, request: upwire.Request) -> upwire.Response:
        return upwire.Response(200, {"X-Bad": "a\r\nSet-Cookie: injected=1"}, "hello\n")

    server = await start_server(process_request=bad_answer)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        response = await answer_to_upgrade(server.port)
        assert response.status == 500
        assert b"injected" not in response.body


async def test_a_204_answer_has_no_content_length_on_the_wire(start_server: StartServer) -> None:
    # RFC 9110 §8.6: a server MUST NOT send Content-Length in a 204, even one the application set.
    def no_content(connection: upwire.ServerConnection, request: upwire.Request) -> upwire.Response:
        return upwire.Response(204, {"Content-Length": "0", "X-Id": "7"})

    server = await start_server(process_request=no_content)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        peer = await RawPeer.connect(server.port)
        peer.write(plain_get("/health"))
        raw = await peer.read_to_eof()
    assert raw.startswith(b"HTTP/1.1 204 No Content\r\n")
    assert b"X-Id: 7\r\n" in raw
    assert b"content-length" not in raw.lower()
    assert raw.endswith(b"\r\n\r\n")


@pytest.mark.parametrize("status", [100, 101])
async def test_a_process_request_answer_that_is_not_final_gets_500(
    start_server: StartServer, status: int
) -> None:
    # A 101 too: without the handshake's fields, and with no connection following it, it was written
    # as it was, and the client failed on a 101 without "Upgrade: websocket".
    def interim(connection: upwire.ServerConnection, request: upwire.Request) -> upwire.Response:
        return upwire.Response(status)

    server = await start_server(process_request=interim)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        peer = await RawPeer.connect(server.port)
        peer.write(plain_get("/"))
        response = await peer.read_http_response()
    assert response.status == 500


# ---------------------------------------------------------------------------- bad requests

HUGE_REQUEST_LINE = b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
# 20 fields of ~1 KiB: a 20 KiB head, over the default max_header_bytes of 16 KiB.
HUGE_HEADER_BLOCK = upgrade_request(extra=[(f"X-Pad-{i}", "p" * 1000) for i in range(20)])
TOO_MANY_HEADERS = upgrade_request(extra=[(f"X-Field-{i}", "v") for i in range(200)])

BAD_REQUESTS = {
    "no-upgrade-header": (upgrade_request(headers={"Upgrade": None}), 426),
    "wrong-version": (upgrade_request(headers={"Sec-WebSocket-Version": "8"}), 426),
    "key-not-base64": (upgrade_request(headers={"Sec-WebSocket-Key": "not base64!"}), 400),
    "key-wrong-length": (upgrade_request(headers={"Sec-WebSocket-Key": "c2hvcnQ="}), 400),
    "no-key": (upgrade_request(headers={"Sec-WebSocket-Key": None}), 400),
    "no-connection-upgrade": (upgrade_request(headers={"Connection": "keep-alive"}), 400),
    "post": (upgrade_request(method="POST"), 405),
    "oversized-request-line": (HUGE_REQUEST_LINE, 414),
    "oversized-header-block": (HUGE_HEADER_BLOCK, 431),
    "too-many-headers": (TOO_MANY_HEADERS, 431),
    "garbage": (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03garbage\r\n\r\n", 400),
    "http-1.0": (upgrade_request().replace(b"HTTP/1.1", b"HTTP/1.0", 1), 400),
    # RFC 9112 §2.3: another major version on an HTTP/1 connection is not HTTP/1.
    "http-2.0": (upgrade_request().replace(b"HTTP/1.1", b"HTTP/2.0", 1), 505),
    # HTTP/2's connection preface (prior knowledge): its method PRI does not make it a 405.
    "http-2-preface": (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
    # RFC 9112 §3.2: a Host field with an invalid value gets 400.
    "invalid-host": (upgrade_request(headers={"Host": "a b/c@d"}), 400),
    "host-with-path": (upgrade_request(headers={"Host": "example.com/chat"}), 400),
    # RFC 6455 §3 / RFC 9112 §3.2: a path or an absolute URI, no fragment, not asterisk-form.
    "asterisk-target": (upgrade_request(path="*"), 400),
    "fragment-in-target": (upgrade_request(path="/chat#frag"), 400),
    # RFC 9112 §3.2.2: an absolute-form target's authority is the request's host: it must be one.
    "absolute-form-unclosed-ip-literal": (upgrade_request(path="ws://[::1/chat"), 400),
    "absolute-form-without-host": (upgrade_request(path="ws:///chat"), 400),
    "absolute-form-bad-host": (upgrade_request(path="ws://a^b/chat"), 400),
}


@pytest.mark.parametrize(
    ("request_bytes", "status"), list(BAD_REQUESTS.values()), ids=list(BAD_REQUESTS)
)
async def test_bad_request_gets_an_error_status_and_the_connection_is_closed(
    start_server: StartServer, request_bytes: bytes, status: int
) -> None:
    server = await start_server()
    # Short: a server that wrongly accepts the request keeps the connection open and this times out.
    async with asyncio.timeout(3):
        peer = await RawPeer.connect(server.port)
        peer.write(request_bytes)
        # read_http_response reads to EOF: it returns only because the server closed the connection.
        response = await peer.read_http_response()
        assert response.status == status, response.raw[:300]
        assert int(response.headers["content-length"]) == len(response.body)
        assert b"Traceback" not in response.raw
        assert b'File "' not in response.raw
        assert b".py" not in response.body


async def test_request_without_upgrade_gets_426_that_asks_for_websocket(
    start_server: StartServer,
) -> None:
    server = await start_server()
    async with asyncio.timeout(TEST_TIMEOUT_S):
        peer = await RawPeer.connect(server.port)
        peer.write(upgrade_request(headers={"Upgrade": None}))
        response = await peer.read_http_response()
        assert response.status == 426
        assert response.headers["upgrade"].lower() == "websocket"
        # RFC 9110 §7.8: the "upgrade" connection option goes with Upgrade; and the server closes.
        assert response.headers["connection"] == "Upgrade, close"
        assert b"Upgrade" in response.body


async def test_wrong_version_gets_426_naming_version_13(start_server: StartServer) -> None:
    server = await start_server()
    async with asyncio.timeout(TEST_TIMEOUT_S):
        peer = await RawPeer.connect(server.port)
        peer.write(upgrade_request(headers={"Sec-WebSocket-Version": "8"}))
        response = await peer.read_http_response()
        assert response.status == 426
        # RFC 6455 §4.4: the server lists the versions it supports.
        assert response.headers["sec-websocket-version"] == "13"
        # RFC 9110 §15.5.22: a 426 names the protocol to upgrade to, and §7.8 the connection option.
        assert response.headers["upgrade"].lower() == "websocket"
        assert response.headers["connection"] == "Upgrade, close"


@pytest.mark.parametrize(
    "body_fields",
    [
        [("Content-Length", "14")],
        [("Transfer-Encoding", "chunked")],
        [("Content-Length", "14"), ("Content-Length", "14")],
    ],
    ids=["content-length", "chunked", "two-content-lengths"],
)
async def test_request_with_a_body_is_refused_and_its_body_never_read_as_frames(
    start_server: StartServer, body_fields: list[tuple[str, str]]
) -> None:
    # The body of an upgrade request belongs to HTTP (RFC 9112 §6.3): read as WebSocket data, it
    # would smuggle a message past an intermediary that saw it as a body.
    server = await start_server()
    smuggled = encode_frame(TEXT, "smuggled")
    assert len(smuggled) == 14
    body = (
        smuggled
        if body_fields[0][0] == "Content-Length"
        else b"e\r\n" + smuggled + b"\r\n0\r\n\r\n"
    )
    async with asyncio.timeout(TEST_TIMEOUT_S):
        peer = await RawPeer.connect(server.port)
        peer.write(upgrade_request(extra=body_fields) + body)
        raw = await peer.read_to_eof()
        response = parse_response(raw)
        assert response.status == 400, raw[:300]
        assert b"no body" in response.body
        assert b"smuggled" not in raw


async def test_request_with_content_length_0_upgrades(start_server: StartServer) -> None:
    server = await start_server()
    async with asyncio.timeout(TEST_TIMEOUT_S):
        peer = await RawPeer.connect(server.port)
        peer.write(upgrade_request(extra=[("Content-Length", "0")]))
        response = await peer.read_response_head()
        assert response.status == 101
        peer.send_frame(TEXT, "after")
        assert (await peer.read_frame()).payload == b"after"
        peer.close()


async def test_head_request_gets_405_without_a_body(start_server: StartServer) -> None:
    server = await start_server()
    async with asyncio.timeout(TEST_TIMEOUT_S):
        peer = await RawPeer.connect(server.port)
        peer.write(upgrade_request(method="HEAD"))
        raw = await peer.read_to_eof()
        # RFC 9110 §9.3.2: no content in a response to HEAD; Content-Length is what GET would get.
        _, _, rest = raw.partition(b"\r\n\r\n")
        response = parse_response(raw)
        assert response.status == 405
        assert response.headers["allow"] == "GET"
        assert int(response.headers["content-length"]) > 0
        assert rest == b""


async def test_process_request_answer_to_head_has_no_body(start_server: StartServer) -> None:
    server = await start_server(
        process_request=lambda connection, request: upwire.Response(200, body="OK\n")
    )
    async with asyncio.timeout(TEST_TIMEOUT_S):
        peer = await RawPeer.connect(server.port)
        peer.write(b"HEAD /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        raw = await peer.read_to_eof()
        assert raw.startswith(b"HTTP/1.1 200 ")
        assert b"Content-Length: 3\r\n" in raw
        assert raw.endswith(b"\r\n\r\n")


@pytest.mark.parametrize(
    "host", ["example.com", "127.0.0.1:8765", "[::1]:8765", "[::1]", "xn--bcher-kva.example:80"]
)
async def test_valid_host_values_upgrade(start_server: StartServer, host: str) -> None:
    server = await start_server()
    async with asyncio.timeout(TEST_TIMEOUT_S):
        peer = await RawPeer.connect(server.port)
        peer.write(upgrade_request(headers={"Host": host}))
        assert (await peer.read_response_head()).status == 101
        peer.close()


async def test_empty_lines_before_the_request_line_are_ignored(start_server: StartServer) -> None:
    # RFC 9112 §2.2: a server SHOULD ignore at least one empty line received before the request line.
    server = await start_server()
    async with asyncio.timeout(TEST_TIMEOUT_S):
        peer = await RawPeer.connect(server.port)
        peer.write(b"\r\n")
        await asyncio.sleep(0.05)
        peer.write(b"\r\n" + upgrade_request())
        assert (await peer.read_response_head()).status == 101
        peer.close()


async def test_absolute_form_target_upgrades_and_routes_by_its_path(
    start_server: StartServer,
) -> None:
    # RFC 9112 §3.2.2: the target's authority is the request's host, whatever the Host field says.
    async def where(ws: upwire.ServerConnection) -> None:
        assert ws.request is not None
        await ws.send(f"{ws.request.host} {ws.request.path}")

    server = await start_server({"/chat": where})
    async with asyncio.timeout(TEST_TIMEOUT_S):
        for target, host in (
            ("ws://example.test:81/chat?x=1", "example.test:81"),
            ("/chat", "127.0.0.1"),
        ):
            peer = await RawPeer.connect(server.port)
            peer.write(upgrade_request(path=target))
            assert (await peer.read_response_head()).status == 101
            assert (await peer.read_frame()).payload == f"{host} /chat".encode()
            peer.close()


async def test_a_path_starting_with_two_slashes_is_not_routed_as_a_shorter_one(
    start_server: StartServer,
) -> None:
    # `//x/admin` is a path (RFC 9112 §3.2.1), not the authority x and the path /admin: a proxy that
    # refuses /admin passes it on, and it must not reach /admin's handler.
    async def admin(ws: upwire.ServerConnection) -> None:
        await ws.send("admin")

    server = await start_server({"/admin": admin, "/": admin})
    async with asyncio.timeout(TEST_TIMEOUT_S):
        for target, status in (("/admin", 101), ("//x/admin", 404), ("//admin", 404)):
            peer = await RawPeer.connect(server.port)
            peer.write(upgrade_request(path=target))
            assert (await peer.read_response_head()).status == status, target
            peer.close()


@pytest.mark.parametrize(
    ("key", "explanation"),
    [("not base64!", b"is not base64"), ("c2hvcnQ=", b"decodes to 5 bytes instead of 16")],
    ids=["not-base64", "wrong-length"],
)
async def test_bad_key_gets_400_with_a_body_that_says_what_is_wrong(
    start_server: StartServer, key: str, explanation: bytes
) -> None:
    server = await start_server()
    async with asyncio.timeout(TEST_TIMEOUT_S):
        peer = await RawPeer.connect(server.port)
        peer.write(upgrade_request(headers={"Sec-WebSocket-Key": key}))
        response = await peer.read_http_response()
        assert response.status == 400
        assert response.headers["content-type"].startswith("text/plain")
        assert b"Sec-WebSocket-Key" in response.body
        assert explanation in response.body


async def test_post_gets_405_allowing_only_get(start_server: StartServer) -> None:
    server = await start_server()
    async with asyncio.timeout(TEST_TIMEOUT_S):
        peer = await RawPeer.connect(server.port)
        peer.write(upgrade_request(method="POST"))
        response = await peer.read_http_response()
        assert response.status == 405
        assert response.headers["allow"] == "GET"


async def test_refused_request_still_sending_gets_its_answer_and_a_clean_close(
    start_server: StartServer,
) -> None:
    # The server answers 431 while the client is still sending the head. Closing the socket at once
    # with unread bytes makes the kernel send a reset, which can destroy the 431 before it is read
    # (RFC 9112 §9.6): the server sends its FIN, drops what arrives, and closes when the client does.
    server = await start_server()
    async with asyncio.timeout(TEST_TIMEOUT_S):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(HUGE_HEADER_BLOCK[:-2])
        for _ in range(64):  # 2 MiB more of the never-ending head, after the server answered
            writer.write(b"X-More: " + b"m" * 32760 + b"\r\n")
            await writer.drain()
        # Answered, and then this side's end: an EOF, not a reset.
        raw = await reader.read()
        assert parse_response(raw).status == 431
        assert reader.at_eof()
        writer.close()


async def test_oversized_header_block_sent_in_pieces_gets_431(start_server: StartServer) -> None:
    server = await start_server()
    async with asyncio.timeout(TEST_TIMEOUT_S):
        peer = await RawPeer.connect(server.port)
        # Read from the start: the server may answer (and close) before the whole head is written.
        reading = asyncio.create_task(peer.read_to_eof())
        try:
            for start in range(0, len(HUGE_HEADER_BLOCK), 1000):
                peer.write(HUGE_HEADER_BLOCK[start : start + 1000])
                await peer.writer.drain()
                await asyncio.sleep(0.002)
        except ConnectionError:
            pass  # the server answered and closed before the end of the head: expected
        response = parse_response(await reading)
        assert response.status == 431


async def test_client_that_says_nothing_is_dropped_after_open_timeout(
    start_server: StartServer,
) -> None:
    server = await start_server(open_timeout=0.3)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        peer = await RawPeer.connect(server.port)
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await peer.read_to_eof() == b""
        elapsed = loop.time() - started
        assert 0.25 <= elapsed < 2.0, elapsed


async def test_client_that_stops_mid_request_is_dropped_after_open_timeout(
    start_server: StartServer,
) -> None:
    server = await start_server(open_timeout=0.3)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        peer = await RawPeer.connect(server.port)
        peer.write(upgrade_request()[:40])
        loop = asyncio.get_running_loop()
        started = loop.time()
        await peer.read_to_eof()
        assert 0.25 <= loop.time() - started < 2.0


# ---------------------------------------------------------------------------- process_request


def check_request(
    connection: upwire.ServerConnection, request: upwire.Request
) -> upwire.Response | None:
    """A health check on /health and a token on everything else."""
    if request.path == "/health":
        return upwire.Response(200, body="OK\n")
    if request.headers.get("Authorization") != "Bearer secret":
        return upwire.Response(401, {"WWW-Authenticate": "Bearer"}, "Missing or wrong token.\n")
    return None


async def test_process_request_answers_a_health_check_with_plain_http(
    start_server: StartServer,
) -> None:
    server = await start_server(process_request=check_request)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        peer = await RawPeer.connect(server.port)
        peer.write(plain_get("/health"))
        response = await peer.read_http_response()
        assert response.status == 200
        assert response.body == b"OK\n"


async def test_process_request_rejects_a_missing_token_with_401(
    start_server: StartServer,
) -> None:
    server = await start_server(process_request=check_request)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        with pytest.raises(upwire.InvalidStatus) as caught:
            await upwire.connect(uri(server))
        assert caught.value.status == 401
        assert caught.value.body == b"Missing or wrong token.\n"
        assert caught.value.headers.get_all("WWW-Authenticate") == ["Bearer"]


async def test_process_request_returning_none_upgrades(start_server: StartServer) -> None:
    server = await start_server(process_request=check_request)
    async with (
        asyncio.timeout(TEST_TIMEOUT_S),
        upwire.connect(uri(server), additional_headers={"Authorization": "Bearer secret"}) as ws,
    ):
        await ws.send("through")
        assert await ws.recv() == "through"


async def test_async_process_request_works(start_server: StartServer) -> None:
    async def slow_check(
        connection: upwire.ServerConnection, request: upwire.Request
    ) -> upwire.Response | None:
        await asyncio.sleep(0.01)
        if request.query.get("token") != "ok":
            return upwire.Response(403, body="Forbidden.\n")
        return None

    server = await start_server(process_request=slow_check)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        with pytest.raises(upwire.InvalidStatus) as caught:
            await upwire.connect(uri(server, "/?token=no"))
        assert caught.value.status == 403
        async with upwire.connect(uri(server, "/?token=ok")) as ws:
            await ws.send("in")
            assert await ws.recv() == "in"


# ---------------------------------------------------------------------------- routing and request data


async def test_mapping_of_paths_dispatches_by_path_and_unknown_paths_get_404(
    start_server: StartServer,
) -> None:
    async def handler_a(ws: upwire.ServerConnection) -> None:
        await ws.send("a")

    async def handler_b(ws: upwire.ServerConnection) -> None:
        await ws.send("b")

    server = await start_server({"/a": handler_a, "/b": handler_b})
    async with asyncio.timeout(TEST_TIMEOUT_S):
        for path, expected in [("/a", "a"), ("/b", "b"), ("/a?x=1", "a")]:
            async with upwire.connect(uri(server, path)) as ws:
                assert await ws.recv() == expected
        with pytest.raises(upwire.InvalidStatus) as caught:
            await upwire.connect(uri(server, "/c"))
        assert caught.value.status == 404


async def test_handler_sees_path_query_and_headers_of_the_request(
    start_server: StartServer,
) -> None:
    async def describe(ws: upwire.ServerConnection) -> None:
        assert ws.request is not None
        await ws.send(
            json.dumps(
                {
                    "path": ws.request.path,
                    "query": ws.request.query,
                    "custom": ws.request.headers.get("x-custom-header"),
                    "CUSTOM": ws.request.headers["X-CUSTOM-HEADER"],
                    "host": ws.request.headers["host"],
                }
            )
        )

    server = await start_server(describe)
    async with (
        asyncio.timeout(TEST_TIMEOUT_S),
        upwire.connect(
            uri(server, "/chat/room?user=alice&n=1"),
            additional_headers={"X-Custom-Header": "yes"},
        ) as ws,
    ):
        seen = json.loads(await ws.recv())
    assert seen == {
        "path": "/chat/room",
        "query": {"user": "alice", "n": "1"},
        "custom": "yes",
        "CUSTOM": "yes",
        "host": f"127.0.0.1:{server.port}",
    }


async def test_remote_address_is_the_clients_address(start_server: StartServer) -> None:
    async def tell_address(ws: upwire.ServerConnection) -> None:
        host, port = ws.remote_address[:2]
        await ws.send(f"{host}:{port}")

    server = await start_server(tell_address)
    async with asyncio.timeout(TEST_TIMEOUT_S), upwire.connect(uri(server)) as ws:
        host, port = ws.local_address[:2]
        assert await ws.recv() == f"{host}:{port}"
        assert host == "127.0.0.1"
        assert ws.remote_address[:2] == ("127.0.0.1", server.port)


async def test_status_lines_carry_rfc_9110_reason_phrases(start_server: StartServer) -> None:
    # Python 3.11's table still says "Request-URI Too Long"; RFC 9110 §15.5.15 names it "URI Too Long".
    server = await start_server()
    async with asyncio.timeout(TEST_TIMEOUT_S):
        peer = await RawPeer.connect(server.port)
        peer.write(HUGE_REQUEST_LINE)
        response = await peer.read_http_response()
        assert response.raw.startswith(b"HTTP/1.1 414 URI Too Long\r\n")


async def test_process_response_adds_fields_to_this_connections_101(
    start_server: StartServer,
) -> None:
    def add_cookie(
        connection: upwire.ServerConnection, request: upwire.Request, response: upwire.Response
    ) -> None:
        assert response.status == 101
        response.headers.add("Set-Cookie", f"session={request.query_string or 'none'}")

    server = await start_server(process_response=add_cookie)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        for query in ("a", "b"):
            async with upwire.connect(uri(server) + "?" + query) as ws:
                assert ws.response.headers["Set-Cookie"] == f"session={query}"
                await ws.send("still a WebSocket")
                assert await ws.recv() == "still a WebSocket"


async def test_process_response_may_set_fields_as_in_a_mapping(start_server: StartServer) -> None:
    def set_fields(
        connection: upwire.ServerConnection, request: upwire.Request, response: upwire.Response
    ) -> None:
        response.headers["X-Request-Id"] = "1"
        response.headers["x-request-id"] = "2"  # replaces the first

    server = await start_server(process_response=set_fields)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with upwire.connect(uri(server)) as ws:
            assert ws.response.headers.get_all("X-Request-Id") == ["2"]
            await ws.send("still a WebSocket")
            assert await ws.recv() == "still a WebSocket"


async def test_process_response_may_refuse_after_negotiation(start_server: StartServer) -> None:
    def refuse_without_subprotocol(
        connection: upwire.ServerConnection, request: upwire.Request, response: upwire.Response
    ) -> upwire.Response | None:
        if connection.subprotocol is None:
            return upwire.Response(400, body="choose a subprotocol\n")
        return None

    refused: list[upwire.ServerConnection] = []

    def refuse_chat_for_guests(
        connection: upwire.ServerConnection, request: upwire.Request, response: upwire.Response
    ) -> upwire.Response | None:
        if request.path == "/guest":
            refused.append(connection)
            return upwire.Response(403)
        return refuse_without_subprotocol(connection, request, response)

    server = await start_server(subprotocols=["chat"], process_response=refuse_chat_for_guests)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        with pytest.raises(upwire.InvalidStatus) as caught:
            await upwire.connect(uri(server))
        assert caught.value.status == 400
        with pytest.raises(upwire.InvalidStatus):
            await upwire.connect(uri(server, "/guest"), subprotocols=["chat"])
        # Answered with plain HTTP: no subprotocol was agreed after all.
        assert refused[0].subprotocol is None
        async with upwire.connect(uri(server), subprotocols=["chat"]) as ws:
            assert ws.subprotocol == "chat"


@pytest.mark.parametrize(
    "bad",
    [
        "a field with CR LF",
        "a new 101",
        "the status changed in place",
        "the extensions removed",
        "the accept key replaced",
    ],
)
async def test_process_response_that_breaks_the_101_gets_500(
    start_server: StartServer, bad: str
) -> None:
    def breaking(
        connection: upwire.ServerConnection, request: upwire.Request, response: upwire.Response
    ) -> upwire.Response | None:
        if bad == "a new 101":
            return upwire.Response(101)
        if bad == "the status changed in place":
            # The head would say 403, and frames would follow it.
            response.status = 403
            return None
        if bad == "the extensions removed":
            # The server would compress what the client does not expect compressed.
            del response.headers["Sec-WebSocket-Extensions"]
            return None
        if bad == "the accept key replaced":
            response.headers["Sec-WebSocket-Accept"] = "injected="
            return None
        response.headers.add("X-Bad", "a\r\nSet-Cookie: injected=1")
        return None

    server = await start_server(process_response=breaking)
    offer = upgrade_request(headers={"Sec-WebSocket-Extensions": "permessage-deflate"})
    async with asyncio.timeout(TEST_TIMEOUT_S):
        response = await answer_to_upgrade(server.port, offer)
    assert response.status == 500
    assert b"injected" not in response.raw
    assert b"Switching" not in response.raw
