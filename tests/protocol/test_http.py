"""Tests of `upwire.protocol.http`: headers, reading request and response heads under limits, writing them."""

from __future__ import annotations

import http

import pytest

from upwire.exceptions import InvalidHandshake, UsageError
from upwire.protocol.handshake import ClientHandshake, accept_key
from upwire.protocol.http import (
    DEFAULT_MAX_HEADER_BYTES,
    Headers,
    Request,
    RequestReader,
    Response,
    ResponseReader,
    serialize_request,
    serialize_response,
)

# RFC 6455 §1.3 / §4.1 example request.
RFC_REQUEST = (
    b"GET /chat HTTP/1.1\r\n"
    b"Host: server.example.com\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Origin: http://example.com\r\n"
    b"Sec-WebSocket-Protocol: chat, superchat\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"\r\n"
)
RFC_RESPONSE = (
    b"HTTP/1.1 101 Switching Protocols\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
    b"Sec-WebSocket-Protocol: chat\r\n"
    b"\r\n"
)


def read_request(data: bytes, **limits: int) -> Request:
    request = RequestReader(**limits).feed(data)
    assert request is not None
    return request


def rejected(chunks: list[bytes], **limits: int) -> InvalidHandshake:
    reader = RequestReader(**limits)
    with pytest.raises(InvalidHandshake) as info:
        for chunk in chunks:
            reader.feed(chunk)
    return info.value


def request_with_headers(count: int) -> bytes:
    fields = b"".join(b"X-%d: v\r\n" % i for i in range(count - 1))
    return b"GET / HTTP/1.1\r\nHost: a\r\n" + fields + b"\r\n"


# ---------------------------------------------------------------- Headers


def test_headers_are_looked_up_without_regard_to_case() -> None:
    headers = Headers([("Sec-WebSocket-Key", "k"), ("host", "h")])
    assert headers["sec-websocket-key"] == "k"
    assert headers.get("HOST") == "h"
    assert "SEC-WEBSOCKET-KEY" in headers
    assert "Origin" not in headers
    assert headers.get("Origin") is None
    with pytest.raises(KeyError):
        headers["Origin"]


def test_repeated_headers_are_joined_with_a_comma() -> None:
    headers = Headers([("Connection", "keep-alive"), ("connection", "Upgrade")])
    assert headers.get_all("Connection") == ["keep-alive", "Upgrade"]
    assert headers["Connection"] == "keep-alive, Upgrade"


def test_tokens_are_split_trimmed_and_lower_cased() -> None:
    headers = Headers([("Connection", "keep-alive, Upgrade"), ("Connection", " ,UPGRADE ,")])
    assert headers.tokens("connection") == ["keep-alive", "upgrade", "upgrade"]
    assert headers.tokens("Upgrade") == []


def test_headers_keep_order_and_names_as_given() -> None:
    headers = Headers({"A": "1"})
    headers.add("b", "2")
    assert headers.items() == [("A", "1"), ("b", "2")]
    assert list(headers) == ["A", "b"]
    assert len(headers) == 2
    assert Headers(headers) == headers


def test_headers_take_websockets_headers_with_repeated_fields_and_their_names() -> None:
    # What a program ported from websockets passes as additional_headers: read as a mapping, a repeated
    # field raised websockets' MultipleValuesError, and names came lower-cased.
    from websockets.datastructures import Headers as WebsocketsHeaders

    theirs = WebsocketsHeaders()
    theirs["X-Trace"] = "a"
    theirs["X-Trace"] = "b"  # websockets appends
    theirs["Cookie"] = "c=1"
    assert Headers(theirs).items() == [("X-Trace", "a"), ("X-Trace", "b"), ("Cookie", "c=1")]


def test_headers_convert_to_a_dict_with_repeated_fields_joined() -> None:
    headers = Headers([("Host", "h"), ("Cookie", "a=1"), ("cookie", "b=2")])
    assert headers.keys() == ["Host", "Cookie"]
    assert list(headers) == ["Host", "Cookie"]
    assert len(headers) == 2
    assert dict(headers) == {"Host": "h", "Cookie": "a=1, b=2"}
    assert {name: headers[name] for name in headers} == dict(headers)


def test_setting_a_header_replaces_every_field_of_that_name_in_place() -> None:
    headers = Headers([("Server", "a"), ("X", "1"), ("server", "b")])
    headers["SERVER"] = "upwire"
    assert headers.items() == [("Server", "upwire"), ("X", "1")]
    headers["New"] = "v"
    assert headers.items() == [("Server", "upwire"), ("X", "1"), ("New", "v")]


def test_values_set_or_added_are_kept_as_text() -> None:
    headers = Headers()
    headers["X-Count"] = 5  # type: ignore[assignment]
    headers.add("X-Ids", 7)  # type: ignore[arg-type]
    assert headers.items() == [("X-Count", "5"), ("X-Ids", "7")]
    assert headers.tokens("x-ids") == ["7"]


def test_deleting_a_header_removes_every_field_of_that_name() -> None:
    headers = Headers([("Cookie", "a"), ("X", "1"), ("cookie", "b")])
    del headers["COOKIE"]
    assert headers.items() == [("X", "1")]
    with pytest.raises(KeyError):
        del headers["cookie"]


@pytest.mark.parametrize("items", ["OK", b"OK", [("A", "1", "2")], ["AB"], [1]])
def test_headers_that_are_not_pairs_are_a_type_error(items: object) -> None:
    with pytest.raises(TypeError, match=r"mapping or|pair"):
        Headers(items)  # type: ignore[arg-type]


def test_a_response_given_its_body_as_headers_names_body() -> None:
    # websockets' `connection.respond(HTTPStatus.OK, "OK")` ported as `Response(HTTPStatus.OK, "OK")`.
    with pytest.raises(TypeError, match="body="):
        Response(200, "OK\n")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (1000, b"", ValueError),
        (12345678, b"", ValueError),
        (99, b"", ValueError),
        (200.0, b"", TypeError),
        ("200", b"", TypeError),
        (True, b"", TypeError),
        (200, 12345, TypeError),
        (200, None, TypeError),
    ],
)
def test_a_response_that_cannot_be_written_is_refused_when_made(
    status: object, body: object, error: type[Exception]
) -> None:
    # RFC 9112 §4: three digits. "HTTP/1.1 1000 Unknown" and "HTTP/1.1 200.0 OK" went out as they were.
    with pytest.raises(error):
        Response(status, body=body)  # type: ignore[arg-type]


def test_a_response_takes_any_whole_number_and_bytes_like_body() -> None:
    response = Response(http.HTTPStatus.NO_CONTENT, body=bytearray(b""))
    assert (response.status, response.body, type(response.body)) == (204, b"", bytes)
    assert Response(299, body=memoryview(b"x")).body == b"x"


# ---------------------------------------------------------------- RequestReader


def test_rfc_example_request_is_read() -> None:
    request = read_request(RFC_REQUEST)
    assert (request.method, request.target, request.http_version) == ("GET", "/chat", "1.1")
    assert request.headers["sec-websocket-key"] == "dGhlIHNhbXBsZSBub25jZQ=="
    assert request.headers["Sec-WebSocket-Protocol"] == "chat, superchat"
    assert request.path == "/chat"


def test_requests_share_the_field_names_and_common_values_they_keep() -> None:
    # A server keeps every connection's request; the strings every handshake repeats are kept once.
    # The common form (the fast reader) and the h11 path (a head fed in two pieces) alike.
    first = read_request(RFC_REQUEST)
    reader = RequestReader()
    assert reader.feed(RFC_REQUEST[:30]) is None
    second = reader.feed(RFC_REQUEST[30:])
    assert second is not None
    for a, b in ((first, second), (read_request(RFC_REQUEST), first)):
        assert a.headers.items() == b.headers.items()
        for (name_a, value_a), (name_b, value_b) in zip(
            a.headers.items(), b.headers.items(), strict=True
        ):
            assert name_a is name_b
            if name_a in ("Upgrade", "Sec-WebSocket-Version"):
                assert value_a is value_b
    # Values that differ between clients are kept as received.
    assert first.headers["Origin"] == "http://example.com"
    assert first.headers["Sec-WebSocket-Key"] == "dGhlIHNhbXBsZSBub25jZQ=="


def test_request_fed_one_byte_at_a_time_is_read_once_complete() -> None:
    reader = RequestReader()
    for i in range(len(RFC_REQUEST) - 1):
        assert reader.feed(RFC_REQUEST[i : i + 1]) is None
    request = reader.feed(RFC_REQUEST[-1:])
    assert request is not None
    assert request.headers == read_request(RFC_REQUEST).headers


def test_bytes_after_the_request_head_are_kept_as_trailing_data() -> None:
    frame = bytes.fromhex("818537fa213d7f9f4d5158")
    reader = RequestReader()
    assert reader.feed(RFC_REQUEST + frame) is not None
    assert reader.trailing_data == frame


def test_path_and_query_are_parsed_from_the_target() -> None:
    request = read_request(b"GET /room/1?user=ann&x=&x=2 HTTP/1.1\r\nHost: a\r\n\r\n")
    assert request.path == "/room/1"
    assert request.query_string == "user=ann&x=&x=2"
    assert request.query == {"user": "ann", "x": "2"}


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        # RFC 9112 §3.2.1: origin-form is absolute-path ["?" query]; empty segments are part of the
        # path, not an authority (a proxy's rule for /admin must not be passed by //x/admin).
        ("//x/admin?a=1", "//x/admin", "a=1"),
        ("//admin", "//admin", ""),
        ("/a//b?c", "/a//b", "c"),
        ("/?", "/", ""),
        ("/p?q#f", "/p", "q"),
        ("http://example.com//x/admin?a=1", "//x/admin", "a=1"),
        ("ws://example.com", "/", ""),
    ],
)
def test_the_path_is_the_targets_own_even_when_it_starts_with_two_slashes(
    target: str, path: str, query: str
) -> None:
    request = read_request(f"GET {target} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
    assert (request.path, request.query_string) == (path, query)


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (b"GARBAGE\r\n\r\n", b"request line"),
        (b"GET / HTTP/1.1\r\nHost a\r\n\r\n", b"header"),
        (b"GET / HTTP/1.1\r\n\r\n", b"Host"),
    ],
    ids=["request-line", "header-line", "no-host"],
)
def test_malformed_request_is_a_400_with_a_body_saying_what_is_wrong(
    data: bytes, what: bytes
) -> None:
    error = rejected([data])
    assert error.status == 400
    assert what.lower() in str(error).lower().encode()
    # The server answers with `error.body`: the client must be told what is wrong.
    assert what.lower() in error.body.lower(), error.body
    assert b"bytearray" not in error.body  # h11's quoting of the line, as a bytes literal


def test_request_line_of_max_request_line_bytes_is_accepted() -> None:
    line = b"GET /" + b"a" * 95 + b" HTTP/1.1"
    head = line + b"\r\nHost: a\r\n\r\n"
    assert read_request(head, max_request_line=len(line)).target == "/" + "a" * 95


def test_request_line_of_max_request_line_bytes_is_accepted_when_fed_byte_by_byte() -> None:
    line = b"GET /" + b"a" * 95 + b" HTTP/1.1"
    head = line + b"\r\nHost: a\r\n\r\n"
    reader = RequestReader(max_request_line=len(line))
    results = [reader.feed(head[i : i + 1]) for i in range(len(head))]
    assert results[-1] is not None


def test_request_line_over_max_request_line_is_a_414() -> None:
    # RFC 9112 §3: a target longer than the server parses gets 414 URI Too Long.
    line = b"GET /" + b"a" * 96 + b" HTTP/1.1"
    error = rejected([line + b"\r\nHost: a\r\n\r\n"], max_request_line=len(line) - 1)
    assert error.status == 414
    assert "max_request_line" in str(error)


def test_request_line_over_max_request_line_is_a_414_before_its_end_arrives() -> None:
    chunks = [b"GET /" + b"a" * 50 for _ in range(200)]  # no CRLF ever
    assert rejected(chunks, max_request_line=1000).status == 414


def test_request_head_over_max_header_bytes_is_a_431_while_incomplete() -> None:
    head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"y" * 2000
    assert rejected([head[:100], head[100:]], max_header_bytes=1000).status == 431


def test_request_head_over_max_header_bytes_is_a_431_even_when_it_arrives_whole() -> None:
    head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"y" * 2000 + b"\r\n\r\n"
    assert rejected([head], max_header_bytes=1000).status == 431


def test_default_max_header_bytes_rejects_a_20_kb_head_with_431() -> None:
    head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"y" * 20000 + b"\r\n\r\n"
    assert len(head) > DEFAULT_MAX_HEADER_BYTES
    assert rejected([head]).status == 431


def test_max_headers_fields_are_accepted_and_one_more_is_a_431() -> None:
    assert len(read_request(request_with_headers(10), max_headers=10).headers) == 10
    error = rejected([request_with_headers(11)], max_headers=10)
    assert error.status == 431
    assert "max_headers=10" in str(error)


# ---------------------------------------------------------------- serializers


def test_rfc_example_response_is_written_byte_for_byte() -> None:
    response = Response(
        101,
        [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            ("Sec-WebSocket-Protocol", "chat"),
        ],
    )
    assert serialize_response(response) == RFC_RESPONSE


def test_error_response_gets_content_length_connection_close_and_a_text_body() -> None:
    data = serialize_response(Response(400, body="bad key\n"))
    assert data == (
        b"HTTP/1.1 400 Bad Request\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: 8\r\n"
        b"Connection: close\r\n"
        b"\r\n"
        b"bad key\n"
    )


def test_no_content_responses_get_no_content_length() -> None:
    # RFC 9110 §8.6: a 204 never carries Content-Length, not even one the application set.
    assert serialize_response(Response(204, [("Content-Length", "0")])) == (
        b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"
    )
    # A 304's Content-Length, when given, is the length a 200 would have had: kept as given.
    assert serialize_response(Response(304, [("ETag", '"x"'), ("Content-Length", "12")])) == (
        b'HTTP/1.1 304 Not Modified\r\nETag: "x"\r\nContent-Length: 12\r\nConnection: close\r\n\r\n'
    )
    assert b"Content-Length" not in serialize_response(Response(304))


@pytest.mark.parametrize(
    ("response", "why"),
    [
        (Response(204, body="x"), "no body"),
        (Response(304, body="x"), "no body"),
        (Response(100), "final response"),
        (Response(199), "final response"),
    ],
)
def test_responses_that_cannot_be_are_refused(response: Response, why: str) -> None:
    with pytest.raises(UsageError, match=why):
        serialize_response(response)


def test_request_is_written_byte_for_byte() -> None:
    request = Request(
        "GET",
        "/chat",
        Headers(
            [
                ("Host", "server.example.com"),
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("Origin", "http://example.com"),
                ("Sec-WebSocket-Protocol", "chat, superchat"),
                ("Sec-WebSocket-Version", "13"),
            ]
        ),
    )
    assert serialize_request(request) == RFC_REQUEST


@pytest.mark.parametrize("bad", ["a\r\nX-Injected: 1", "a\nb", "a\0b"])
def test_crlf_in_a_header_value_is_refused(bad: str) -> None:
    with pytest.raises(UsageError):
        serialize_response(Response(400, [("X-Why", bad)]))
    with pytest.raises(UsageError):
        serialize_request(Request("GET", "/", Headers([("X-Why", bad)])))


def test_crlf_in_a_request_target_is_refused() -> None:
    with pytest.raises(UsageError):
        serialize_request(Request("GET", "/\r\nHost: evil", Headers([("Host", "a")])))


# ---------------------------------------------------------------- ResponseReader


def rfc_request() -> Request:
    return read_request(RFC_REQUEST)


def test_rfc_example_response_is_read_with_the_frames_after_it() -> None:
    frame = bytes.fromhex("810548656c6c6f")
    reader = ResponseReader(rfc_request())
    response = reader.feed(RFC_RESPONSE + frame)
    assert response is not None
    assert response.status == 101
    assert response.reason == "Switching Protocols"
    assert response.headers["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert reader.trailing_data == frame


def test_101_response_fed_one_byte_at_a_time_is_read_once_its_head_is_complete() -> None:
    reader = ResponseReader(rfc_request())
    for i in range(len(RFC_RESPONSE) - 1):
        assert reader.feed(RFC_RESPONSE[i : i + 1]) is None
    response = reader.feed(RFC_RESPONSE[-1:])
    assert response is not None
    assert response.status == 101


def test_error_response_is_read_with_its_body() -> None:
    data = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 5\r\n\r\nnope!"
    response = ResponseReader(rfc_request()).feed(data)
    assert response is not None
    assert (response.status, response.reason, response.body) == (403, "Forbidden", b"nope!")


def test_error_response_body_is_bounded_by_max_body_bytes() -> None:
    data = b"HTTP/1.1 500 Oops\r\nContent-Length: 100\r\n\r\n" + b"z" * 100
    response = ResponseReader(rfc_request(), max_body_bytes=10).feed(data)
    assert response is not None
    assert response.body == b"z" * 10


def test_error_response_without_length_ends_at_eof() -> None:
    reader = ResponseReader(rfc_request())
    assert reader.feed(b"HTTP/1.1 404 Not Found\r\n\r\nmissing") is None
    response = reader.feed_eof()
    assert response is not None
    assert (response.status, response.body) == (404, b"missing")


def test_informational_responses_before_the_101_are_skipped() -> None:
    response = ResponseReader(rfc_request()).feed(b"HTTP/1.1 100 Continue\r\n\r\n" + RFC_RESPONSE)
    assert response is not None
    assert response.status == 101


@pytest.mark.parametrize(
    "body",
    [b"zz\r\n", b"7\r\nnot you\r\nzz\r\n", b"7\r\nnot you!!"],
    ids=["bad-chunk-size", "bad-chunk-after-one", "chunk-without-crlf"],
)
def test_an_error_answer_with_a_malformed_body_is_still_its_status(body: bytes) -> None:
    # The head was whole: its status (and Retry-After, say) is the answer, with the body read so far.
    reader = ResponseReader(rfc_request())
    head = (
        b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    response = reader.feed(head + body)
    assert response is not None
    assert (response.status, response.headers.get("Retry-After")) == (503, "3")
    assert response.body in (b"", b"not you")
    assert not reader.keeps_alive


def test_interim_answers_count_against_max_header_bytes() -> None:
    # RFC 9110 §15.2: a client reads 1xx answers and goes on; a server that sends them without end is
    # bounded like one long head, and said to be so.
    interim = b"HTTP/1.1 100 Continue\r\n\r\n"  # 25 bytes as measured
    reader = ResponseReader(rfc_request(), max_header_bytes=1000)
    assert reader.feed(interim * 39) is None
    with pytest.raises(
        InvalidHandshake, match=r"with 40 interim 1xx answers\) larger than max_header"
    ) as info:
        reader.feed(interim * 2)
    assert info.value.status == 0
    # Fewer of them, and a 101 within the bound: the handshake goes on.
    response = ResponseReader(rfc_request(), max_header_bytes=1000).feed(
        interim * 20 + RFC_RESPONSE
    )
    assert response is not None and response.status == 101


@pytest.mark.parametrize(
    ("target", "fields", "host"),
    [
        ("/chat", [("Host", "a.example:8765")], "a.example:8765"),
        ("ws://b.example:81/chat?x=1", [("Host", "a.example")], "b.example:81"),
        ("https://user:pw@b.example/chat", [("Host", "a.example")], "b.example"),
        ("/chat", [], None),
        # An authority that does not parse (such a request gets 400 from the server): the Host field.
        ("ws://[::1/chat", [("Host", "a.example")], "a.example"),
    ],
)
def test_the_request_host_is_the_absolute_targets_authority_else_the_host_field(
    target: str, fields: list[tuple[str, str]], host: str | None
) -> None:
    # RFC 9112 §3.2.2: a server ignores Host when the target is in absolute form.
    assert Request("GET", target, Headers(fields)).host == host


def test_malformed_response_is_an_invalid_handshake_with_status_0() -> None:
    with pytest.raises(InvalidHandshake) as info:
        ResponseReader(rfc_request()).feed(b"SSH-2.0-OpenSSH\r\n\r\n")
    assert info.value.status == 0


@pytest.mark.parametrize(
    "pieces",
    [
        [b"SSH-2.0-OpenSSH_9.2\r\n"],  # a banner, then the server waits for the client
        [b"S"],
        [b"HTT", b"P/1.1 1O1 Switching Protocols\r\n"],  # a status line that is not one
        [b"\r\nHTTP/1.1 101 Switching Protocols\r\n"],
        [b"+OK ready\n"],
    ],
)
def test_an_answer_that_is_not_http_is_refused_by_its_first_line(pieces: list[bytes]) -> None:
    # Without waiting for a head that would end with an empty line (Node's ws fails such an answer at
    # once too; websockets waits for open_timeout): the client learns at once.
    reader = ResponseReader(rfc_request())
    with pytest.raises(InvalidHandshake, match="malformed HTTP response: the answer starts with"):
        for piece in pieces:
            reader.feed(piece)


@pytest.mark.parametrize("size", [1, 3, 7])
def test_a_status_line_in_pieces_is_waited_for(size: int) -> None:
    reader = ResponseReader(rfc_request())
    pieces = [RFC_RESPONSE[i : i + size] for i in range(0, len(RFC_RESPONSE), size)]
    results = [reader.feed(piece) for piece in pieces]
    assert results[:-1] == [None] * (len(pieces) - 1)
    assert results[-1] is not None
    assert results[-1].status == 101


@pytest.mark.parametrize(
    "cut",
    [
        b"HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nno ac",
        b"HTTP/1.1 403 Forbidden\r\nContent-Length: 100\r\n\r\nno ac",
    ],
)
def test_an_error_response_whose_body_is_cut_short_keeps_its_status(cut: bytes) -> None:
    reader = ResponseReader(rfc_request())
    assert reader.feed(cut) is None
    response = reader.feed_eof()
    assert response is not None
    assert (response.status, response.body) == (403, b"no ac")


def test_eof_before_any_response_is_an_invalid_handshake() -> None:
    reader = ResponseReader(rfc_request())
    assert reader.feed(b"HTTP/1.1 10") is None
    with pytest.raises(InvalidHandshake, match="connection closed before a complete HTTP response"):
        reader.feed_eof()


def test_eof_with_no_byte_received_says_the_connection_closed() -> None:
    with pytest.raises(InvalidHandshake, match="connection closed before") as info:
        ResponseReader(rfc_request()).feed_eof()
    assert info.value.status == 0


def big_101(size: int) -> bytes:
    """The RFC's 101 with one more field, so that the head is `size` bytes long."""
    pad = size - len(RFC_RESPONSE) - len("X-Pad: \r\n")
    return RFC_RESPONSE[:-2] + b"X-Pad: " + b"p" * pad + b"\r\n\r\n"


@pytest.mark.parametrize("pieces", [1, 64])
def test_response_head_over_max_header_bytes_is_refused_however_it_arrives(pieces: int) -> None:
    data = big_101(40 * 1024)
    reader = ResponseReader(rfc_request(), max_header_bytes=16 * 1024)
    step = -(-len(data) // pieces)
    with pytest.raises(InvalidHandshake, match="max_header_bytes=16384"):
        for start in range(0, len(data), step):
            reader.feed(data[start : start + step])


def test_response_head_of_max_header_bytes_is_accepted() -> None:
    data = big_101(4096)
    response = ResponseReader(rfc_request(), max_header_bytes=4096).feed(data)
    assert response is not None and response.status == 101


def test_bytes_fed_after_a_101_are_trailing_data_too() -> None:
    # What RequestReader does: a client layer that feeds a read after the head keeps its frames.
    handshake = ClientHandshake("h", "/")
    key = handshake.request.headers["Sec-WebSocket-Key"]
    reader = ResponseReader(handshake.request)
    head = (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n"
    ).encode()
    assert reader.feed(head + b"\x81") is not None
    assert reader.trailing_data == b"\x81"
    assert reader.feed(b"\x02hi") is not None
    assert reader.trailing_data == b"\x81\x02hi"
