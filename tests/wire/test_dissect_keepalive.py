"""The dissector on keep-alive connections: ordinary HTTP exchanges before the Upgrade are skipped."""

from __future__ import annotations

from pathlib import Path

from upwire.protocol.frames import Opcode
from upwire.wire import dissect
from upwire.wire.websocket import WebSocketObserver

from .pcapbuild import REQUEST, RESPONSE, Conversation, client_frame, server_frame, write_capture

GET = b"GET /index.html HTTP/1.1\r\nHost: example.test:8080\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/html\r\n\r\nhello"
POST = b"POST /form HTTP/1.1\r\nHost: example.test:8080\r\nContent-Length: 7\r\n\r\na=1&b=2"
NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"
CHUNKED_POST = (
    b"POST /upload HTTP/1.1\r\nHost: example.test:8080\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"4\r\nGET \r\n3;ext=1\r\n/x \r\n0\r\nTrailer: 1\r\n\r\n"
)
CHUNKED_OK = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nHTTP/\r\n6\r\n1.1 10\r\n0\r\n\r\n"
)


def one_connection(tmp_path: Path, conversation: Conversation):  # type: ignore[no-untyped-def]
    [connection] = dissect(write_capture(tmp_path / "c.pcap", conversation.packets)).connections
    return connection


def test_requests_before_the_upgrade_are_skipped_and_noted(tmp_path: Path) -> None:
    conversation = Conversation().handshake()
    for request, response in [(GET, OK), (POST, NO_CONTENT), (CHUNKED_POST, CHUNKED_OK)]:
        conversation.send(True, request)
        conversation.send(False, response)
    conversation.send(True, REQUEST)
    conversation.send(False, RESPONSE)
    conversation.send(True, client_frame(Opcode.TEXT, b"hello"))
    conversation.send(False, server_frame(Opcode.TEXT, b"hello"))
    connection = one_connection(tmp_path, conversation)
    observer = connection.observer
    assert observer.is_websocket
    assert observer.request is not None and observer.request.target == "/chat"
    assert observer.response is not None and observer.response.status == 101
    # The handshake's own bytes, not the exchanges before it (the summary's overhead uses them).
    assert (observer.request_head_bytes, observer.response_head_bytes) == (
        len(REQUEST),
        len(RESPONSE),
    )
    assert [(f.direction, f.text) for f in connection.frames] == [
        ("client-to-server", "hello"),
        ("server-to-client", "hello"),
    ]
    assert observer.notes == [
        "the Upgrade request came after 3 HTTP requests on this connection "
        "(keep-alive; the first: GET /index.html → 200 OK)"
    ]


def test_pipelined_requests_and_bytes_cut_anywhere_give_the_same_result(tmp_path: Path) -> None:
    # Bodies that look like requests and responses, every request sent before any answer, and every
    # segment 7 bytes long: the body framing (Content-Length, chunked, HEAD) decides, not the bytes.
    head = b"HEAD /big HTTP/1.1\r\nHost: example.test:8080\r\n\r\n"
    head_answer = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"  # no body: it answers HEAD
    conversation = Conversation().handshake()
    conversation.send(True, CHUNKED_POST + head + GET + REQUEST, segment=7)
    conversation.send(
        False,
        CHUNKED_OK + head_answer + OK + RESPONSE + server_frame(Opcode.TEXT, b"hi"),
        segment=7,
    )
    conversation.send(True, client_frame(Opcode.BINARY, b"\x00\x01"), segment=3)
    connection = one_connection(tmp_path, conversation)
    assert connection.observer.is_websocket
    assert [(f.opcode, f.data) for f in connection.frames] == [
        (Opcode.TEXT, b"hi"),
        (Opcode.BINARY, b"\x00\x01"),
    ]
    assert "after 3 HTTP requests" in connection.observer.notes[0]
    assert "the first: POST /upload → 200 OK" in connection.observer.notes[0]


def test_the_response_may_come_before_the_request_body_ends(tmp_path: Path) -> None:
    # A server that answers (and keeps the connection) before the client sent its whole body.
    start, rest = POST[:-4], POST[-4:]
    conversation = Conversation().handshake()
    conversation.send(True, start)
    conversation.send(False, NO_CONTENT)
    conversation.send(True, rest + REQUEST)
    conversation.send(False, RESPONSE + server_frame(Opcode.TEXT, b"ok"))
    connection = one_connection(tmp_path, conversation)
    assert connection.observer.is_websocket
    assert [f.text for f in connection.frames] == ["ok"]


def test_connections_that_cannot_carry_another_request_are_not_websocket(tmp_path: Path) -> None:
    closing = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    cases = {
        "response closes": ([GET, closing], "HTTP GET /index.html → 200 OK without Upgrade"),
        "request closes": (
            [GET.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"), OK],
            "HTTP GET /index.html → 200 OK without Upgrade",
        ),
        "HTTP/1.0": (
            [b"GET / HTTP/1.0\r\n\r\n", b"HTTP/1.0 200 OK\r\n\r\n"],
            "HTTP GET / without Upgrade",
        ),
        "h2c": (
            [
                GET.replace(b"\r\n\r\n", b"\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"),
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
            ],
            "HTTP GET /index.html switched to h2c, not WebSocket",
        ),
        "no length": (  # the body runs to the end of the connection
            [GET, b"HTTP/1.1 200 OK\r\n\r\n" + RESPONSE],
            "HTTP GET /index.html without Upgrade",
        ),
        "bad chunk": (
            [CHUNKED_POST.replace(b"4\r\n", b"zz\r\n")],
            "bad HTTP request body",
        ),
    }
    for name, (messages, expected) in cases.items():
        conversation = Conversation().handshake()
        for index, message in enumerate(messages):
            conversation.send(index % 2 == 0, message)
        # What would be a WebSocket upgrade afterwards, if the connection went on.
        conversation.send(True, REQUEST)
        conversation.send(False, RESPONSE + server_frame(Opcode.TEXT, b"no"))
        connection = one_connection(tmp_path, conversation)
        assert not connection.observer.is_websocket, name
        assert not connection.frames, name
        [note] = connection.observer.notes
        assert note.startswith("not a WebSocket connection: ") and expected in note, (name, note)


def test_a_connection_of_many_requests_is_given_up_on_without_deep_recursion() -> None:
    # Ten thousand pipelined requests in one piece, then their answers: bounded work, one note.
    observer = WebSocketObserver(0, "10.0.0.1:1", "10.0.0.2:2")
    assert observer.feed(True, GET * 10_000, 0.0, None) == []
    assert observer.feed(False, OK * 10_000, 0.0, None) == []
    observer.finish()
    assert not observer.is_websocket
    assert observer.notes == [
        "not a WebSocket connection: 101 HTTP requests without Upgrade: websocket "
        "(the first: GET /index.html → 200 OK)"
    ]


def test_a_keep_alive_connection_that_never_upgrades_says_how_many_requests_it_carried(
    tmp_path: Path,
) -> None:
    conversation = Conversation().handshake()
    for _ in range(3):
        conversation.send(True, GET)
        conversation.send(False, OK)
    conversation.send(True, POST)  # the capture ends before its answer
    connection = one_connection(tmp_path, conversation)
    assert connection.observer.notes == [
        "not a WebSocket connection: 4 HTTP requests without Upgrade: websocket "
        "(the first: GET /index.html → 200 OK)"
    ]


def test_an_upgrade_tried_again_after_a_refusal_on_the_same_connection_is_decoded(
    tmp_path: Path,
) -> None:
    # RFC 6455 §4.1: after a 401 the client may send the request again, with credentials.
    refusal = (
        b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic\r\nContent-Length: 4\r\n\r\nwho?"
    )
    conversation = Conversation().handshake()
    conversation.send(True, REQUEST)
    conversation.send(False, refusal)
    conversation.send(True, REQUEST.replace(b"\r\n\r\n", b"\r\nAuthorization: Basic YTpi\r\n\r\n"))
    conversation.send(False, RESPONSE + server_frame(Opcode.TEXT, b"welcome"))
    connection = one_connection(tmp_path, conversation)
    assert connection.observer.is_websocket
    assert connection.observer.request is not None
    assert connection.observer.request.headers["Authorization"] == "Basic YTpi"
    assert [f.text for f in connection.frames] == ["welcome"]
    assert connection.observer.notes == [
        "the server refused the Upgrade: HTTP 401 Unauthorized; the connection stays open",
        "the Upgrade request came after 1 HTTP request on this connection "
        "(keep-alive; the first: GET /chat → 401 Unauthorized)",
    ]


def test_a_refused_upgrade_on_a_connection_left_open_shows_the_exchange_and_how_it_ended(
    tmp_path: Path,
) -> None:
    # A 400 with a Content-Length and no "Connection: close" leaves the connection open (RFC 9112
    # §9.3): the request and the answer are still the connection's handshake, and its end is told.
    refusal = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 11\r\n\r\nbad request"
    endings = {
        "server first": (
            [False, True],
            "the server closed the connection (FIN, packet 6), then the client (packet 7)",
        ),
        "client only": ([True], "the client closed the connection (FIN, packet 6)"),
        "none": ([], "the capture ends with the connection open"),
    }
    for name, (closers, ending) in endings.items():
        conversation = Conversation().handshake()
        conversation.send(True, REQUEST)
        conversation.send(False, refusal)
        for from_client in closers:
            conversation.close(from_client)
        observer = one_connection(tmp_path, conversation).observer
        assert not observer.is_websocket, name
        assert observer.request is not None and observer.request.target == "/chat", name
        assert observer.response is not None and observer.response.status == 400, name
        assert observer.notes == [
            f"the server refused the Upgrade: HTTP 400 Bad Request; then {ending}"
        ], name


def test_bytes_waiting_for_an_answer_are_bounded() -> None:
    observer = WebSocketObserver(0, "10.0.0.1:1", "10.0.0.2:2")
    observer.feed(True, GET, 0.0, None)
    for _ in range(17):  # 17 MiB pipelined behind a request that is never answered
        observer.feed(True, b"x" * (1 << 20), 0.0, None)
    assert not observer.is_websocket
    assert observer.notes == [
        "not a WebSocket connection: more than 16777216 bytes came before the answer they wait for"
    ]
    assert sum(map(len, observer._early.values())) == 0
