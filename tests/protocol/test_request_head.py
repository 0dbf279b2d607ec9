"""Differential tests of the request-head fast path (`upwire.protocol.request_head`) against h11.

`RequestReader` reads the common request head with one regular expression and leaves everything else to
h11. These tests hold it to the reader that used h11 for every request (kept below as the reference): on
random and mutated heads, fed whole or in pieces, under random limits, both accept the same requests with
the same fields and trailing bytes, and refuse the same ones with the same status and message. The
serializers are held to their former field-by-field writer the same way.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from itertools import pairwise

import h11
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from upwire.exceptions import InvalidHandshake, UsageError
from upwire.protocol.http import (
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_MAX_HEADERS,
    DEFAULT_MAX_REQUEST_LINE,
    Headers,
    Request,
    RequestReader,
    Response,
    _check_field,
    _raw_headers,
    http_error,
    serialize_request,
    serialize_response,
)
from upwire.protocol.request_head import read_common_head, read_common_head_py

MANY = settings(max_examples=1500, deadline=None)
# The C reader against its Python twin takes UPWIRE_FUZZ_FACTOR times as many, like tests/protocol/test_speedups.py.
FUZZ = settings(max_examples=1500 * int(os.environ.get("UPWIRE_FUZZ_FACTOR", "1")), deadline=None)

# The head reader in use (the C one when the extension is built) and its pure-Python twin: the tests of
# the fast path hold each to h11.
HEAD_READERS = [
    pytest.param(read_common_head, id="selected"),
    pytest.param(read_common_head_py, id="python"),
]


class ReferenceRequestReader:
    """The request reader as it was before the fast path: h11 reads every request."""

    def __init__(
        self,
        *,
        max_request_line: int = DEFAULT_MAX_REQUEST_LINE,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        max_headers: int = DEFAULT_MAX_HEADERS,
    ) -> None:
        self._parser = h11.Connection(h11.SERVER, max_incomplete_event_size=max_header_bytes)
        self._max_request_line = max_request_line
        self._max_headers = max_headers
        self._max_header_bytes = max_header_bytes
        self._seen = bytearray()
        self._received = 0
        self._skipped = 0
        self.request: Request | None = None
        self.trailing_data = b""

    def feed(self, data: bytes) -> Request | None:
        if self.request is not None:
            self.trailing_data += data
            return self.request
        limit = self._max_request_line
        if self._received == 0:
            # Empty lines before the request line are ignored (RFC 9112 §2.2), a request line's worth.
            rest = bytes(data).lstrip(b"\r\n")
            self._skipped += len(data) - len(rest)
            if self._skipped > limit:
                raise http_error(400, "no request line: only empty lines received")
            data = rest
            if not data:
                return None
        if len(self._seen) < limit + 2:
            self._seen += data[: limit + 2 - len(self._seen)]
            line_end = self._seen.find(b"\r\n")
            if line_end > limit or (line_end < 0 and len(self._seen) >= limit + 2):
                raise http_error(414, f"request line longer than max_request_line={limit} bytes")
        self._received += len(data)
        self._parser.receive_data(data)
        try:
            event = self._parser.next_event()
        except h11.RemoteProtocolError as exc:
            if exc.error_status_hint == 431:
                raise self._too_large() from None
            # h11's `bytearray(b'...')` quoting of the line, as upwire's reader words it (`b'...'`).
            message = re.sub(r"bytearray\((b(['\"]).*\2)\)", r"\1", str(exc))
            raise http_error(exc.error_status_hint, f"malformed HTTP request ({message})") from None
        if event is h11.NEED_DATA:
            return None
        assert isinstance(event, h11.Request)
        trailing = bytes(self._parser.trailing_data[0])
        if self._received - len(trailing) > self._max_header_bytes:
            raise self._too_large()
        raw = event.headers.raw_items()
        if len(raw) > self._max_headers:
            raise http_error(
                431, f"{len(raw)} header fields exceed max_headers={self._max_headers}"
            )
        self.request = Request(
            method=event.method.decode("ascii"),
            target=event.target.decode("ascii", "replace"),
            headers=_raw_headers(event.headers),
            http_version=event.http_version.decode("ascii"),
        )
        self.trailing_data = trailing
        return self.request

    def _too_large(self) -> InvalidHandshake:
        return http_error(
            431, f"request head larger than max_header_bytes={self._max_header_bytes} bytes"
        )


Outcome = tuple[object, ...]


def outcome(reader: RequestReader | ReferenceRequestReader, chunks: list[bytes]) -> Outcome:
    """What a reader makes of `chunks`: the request and trailing bytes, or the refusal, and when."""
    for index, chunk in enumerate(chunks):
        try:
            request = reader.feed(chunk)
        except InvalidHandshake as exc:
            return ("refused", index, exc.status, str(exc), exc.headers, exc.body)
        if request is not None:
            fields = request.headers.items()
            head = (request.method, request.target, request.http_version, fields)
            # Bytes fed after the head is complete are kept too.
            reader.feed(b"after")
            return ("read", index, head, reader.trailing_data)
    return ("waiting",)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in pairwise(points)] or [b""]


# ---------------------------------------------------------------- strategies

TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
tokens = st.text(TOKEN_CHARS, min_size=1, max_size=12)
good_names = st.one_of(
    st.sampled_from(
        [
            "Host",
            "host",
            "HOST",
            "Upgrade",
            "Connection",
            "Sec-WebSocket-Key",
            "Sec-WebSocket-Version",
            "Content-Length",
            "content-length",
            "Transfer-Encoding",
            "Origin",
            "X-Host",
            "Hostname",
        ]
    ),
    tokens,
)
value_chars = st.sampled_from(list(' \t\x01\x1f\x7f\x80\xa0\xff:,;="/') + list("abcXYZ019"))
good_values = st.one_of(
    st.sampled_from(
        ["websocket", "Upgrade", "13", "dGhlIHNhbXBsZSBub25jZQ==", "0", "5", "chunked"]
    ),
    st.text(value_chars, max_size=20),
)
any_text = st.text(st.characters(max_codepoint=255), max_size=12)
odd_line_ends = st.sampled_from(["\n", "\r", "\r\r\n", " \r\n", "\n\r"])
good_request_lines = st.tuples(
    st.sampled_from(["GET"] * 8 + ["POST", "get"]) | tokens,
    st.sampled_from(["/"] * 5 + ["/chat?room=1", "*", "http://a/b", "/%C3%A9", "/\x7e"]),
    st.sampled_from(["HTTP/1.1"] * 20 + ["HTTP/1.0", "HTTP/2.0", "HTTP/0.9"]),
).map(" ".join)
FLAWS = [
    "request-line",
    "before-request-line",
    "line-end",
    "all-bare-lf",
    "name",
    "value",
    "separator",
    "obs-fold",
    "unfinished",
    "byte",
]


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    """A request head: valid two times in three (common or rare form), else with one flaw of FLAWS."""
    flaw = draw(st.sampled_from(FLAWS)) if not draw(st.integers(0, 2)) else None
    request_line = draw(good_request_lines)
    if flaw == "request-line":
        request_line = draw(
            any_text | good_request_lines.map(lambda line: line.replace(" ", "  ", 1))
        )
    fields = [("Host", "example.com")] if draw(st.integers(0, 9)) else []
    fields += draw(st.lists(st.tuples(good_names, good_values), max_size=8))
    fields = draw(st.permutations(fields))
    lines = [request_line] + [
        f"{name}:{draw(st.sampled_from([' ', '', '  ', chr(9)]))}{value}" for name, value in fields
    ]
    if fields and flaw in ("name", "value", "separator", "obs-fold"):
        at = draw(st.integers(1, len(fields)))
        name, value = fields[at - 1]
        if flaw == "name":
            lines[at] = f"{draw(any_text)}: {value}"
        elif flaw == "value":
            lines[at] = f"{name}: {value}{draw(any_text)}"
        elif flaw == "separator":
            lines[at] = f"{name}{draw(st.sampled_from([' :', '', ' ', ': :']))}{value}"
        else:
            lines.insert(at + 1, draw(st.sampled_from([" ", "\t", "  "])) + draw(good_values))
    line_ends = ["\r\n"] * (len(lines) + 1)
    if flaw == "line-end":
        line_ends[draw(st.integers(0, len(lines)))] = draw(odd_line_ends)
    elif flaw == "all-bare-lf":
        line_ends = ["\n"] * (len(lines) + 1)
    text = "".join(line + end for line, end in zip(lines, line_ends, strict=False))
    text += "" if flaw == "unfinished" else line_ends[-1]
    if flaw == "before-request-line":
        text = draw(st.sampled_from(["\r\n", "\n", " ", "\t", "\x16"])) + text
    data = text.encode("latin-1")
    if draw(st.booleans()):
        data += draw(st.binary(max_size=20))  # frames sent right behind the head, say
    if flaw == "byte" and data:
        at = draw(st.integers(0, len(data) - 1))
        byte = bytes([draw(st.integers(0, 255))])
        changed = [data[:at] + byte + data[at + 1 :], data[:at] + byte + data[at:]]
        data = draw(st.sampled_from([*changed, data[:at] + data[at + 1 :]]))
    return data


limits = st.fixed_dictionaries(
    {},
    optional={
        "max_request_line": st.integers(1, 100),
        "max_header_bytes": st.integers(1, 400),
        "max_headers": st.integers(0, 10),
    },
)

RFC_HEAD = (
    b"GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://example.com\r\n"
    b"Sec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


# ---------------------------------------------------------------- the fast path against h11


@MANY
@given(heads(), st.lists(st.integers(0, 400), max_size=4), limits)
@example(RFC_HEAD, [], {})
@example(RFC_HEAD + b"\x81\x85", [], {"max_header_bytes": len(RFC_HEAD) - 1})
@example(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", [], {})
@example(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n", [], {})
@example(b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", [], {})
@example(b"GET / HTTP/1.1\r\nHost:  a \t\r\nX:\t\r\n\r\n", [], {})
@example(b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", [], {})
@example(b"GET / HTTP/1.1\nHost: a\n\n", [], {})
@example(b"GET / HTTP/1.1\r\nHost: a\r\nX: \x0b\r\n\r\n", [], {})
@example(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", [], {"max_headers": 0})
def test_request_reader_agrees_with_h11_on_any_head(
    data: bytes, cuts: list[int], limits: dict[str, int]
) -> None:
    chunks = split(data, cuts)
    expected = outcome(ReferenceRequestReader(**limits), chunks)
    assert outcome(RequestReader(**limits), chunks) == expected


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_any_bytes_like_segment_is_read_and_its_trailing_data_is_bytes(kind: type) -> None:
    for head in (RFC_HEAD, RFC_HEAD.replace(b"HTTP/1.1", b"HTTP/1.0")):
        reader = RequestReader()
        request = reader.feed(kind(head + b"\x88\x80"))
        assert request is not None
        assert reader.trailing_data == b"\x88\x80"
        assert type(reader.trailing_data) is bytes


@pytest.mark.parametrize("read_head", HEAD_READERS)
@MANY
@given(data=heads())
def test_a_head_the_fast_path_reads_is_one_h11_reads_the_same_way(
    read_head: Callable[[bytes], object], data: bytes
) -> None:
    head = read_head(data)
    if head is None:
        return
    method, target, fields, size = head
    expected = outcome(ReferenceRequestReader(max_header_bytes=1 << 20), [data])
    assert expected[0] == "read"
    assert expected[2] == (method, target, "1.1", Headers._of(fields).items())
    assert expected[3] == data[size:] + b"after"


@pytest.mark.parametrize(
    "data",
    [
        RFC_HEAD,
        RFC_HEAD + b"\x88\x80\x00\x00\x00\x00",
        b"GET / HTTP/1.1\r\nhost: a\r\n\r\n",
        b"GET /x?y HTTP/1.1\r\nHost: a\r\nX-Empty:\r\nX-Tab:\tv\t\r\n\r\n",
    ],
)
@pytest.mark.parametrize("read_head", HEAD_READERS)
def test_common_heads_take_the_fast_path(read_head: Callable[[bytes], object], data: bytes) -> None:
    assert read_head(data) is not None


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\nHost: a\r\n",  # incomplete
        b"GET / HTTP/1.0\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\nHost: a\n\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\ntransfer-encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\x00\r\n\r\n",
        b"GET / HTTP/1.1\r\nHo st: a\r\n\r\n",
    ],
    ids=[
        "incomplete",
        "http-1.0",
        "bare-lf",
        "obs-fold",
        "no-host",
        "two-hosts",
        "content-length",
        "transfer-encoding",
        "nul",
        "bad-name",
    ],
)
@pytest.mark.parametrize("read_head", HEAD_READERS)
def test_other_heads_are_left_to_h11(read_head: Callable[[bytes], object], data: bytes) -> None:
    assert read_head(data) is None


def _near_the_limit(size: int) -> bytes:
    """A common head of `size` bytes (at least 50), its one long field filling the rest."""
    start = b"GET / HTTP/1.1\r\nHost: a\r\nX: "
    return start + b"v" * (size - len(start) - 4) + b"\r\n\r\n"


@FUZZ
@given(
    data=heads()
    | st.binary(max_size=80)
    | st.builds(lambda head, cut: head[:cut], heads(), st.integers(0, 300))
    | st.sampled_from([_near_the_limit(n) for n in (65535, 65536, 65537)]).map(
        lambda head: head + b"\r\n"
    )
)
@example(_near_the_limit(65536))
@example(_near_the_limit(65537))
@example(b"GET / HTTP/1.1\r\nHost: a\r\nX: \xff\x80 \t\r\n\r\n")
@example(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n")
@example(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\r\n\r\n")
@example(b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n")
@example(b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n")
@example(b"GET / HTTP/1.1\r\nHOST: a\r\nhost: b\r\n\r\n")
@example(b"GET / HTTP/1.1\r\nHost: a\r\nCONTENT-LENGTH: 0\r\n\r\n")
@example(b"GET / HTTP/1.1\r\n: a\r\nHost: a\r\n\r\n")
def test_the_c_head_reader_gives_what_its_python_twin_gives(data: bytes) -> None:
    # The C reader against the reference on anything: valid and flawed heads, cut short, random bytes,
    # and heads that end just inside and just past the first 64 KiB.
    assert read_common_head(data) == read_common_head_py(data)


# ---------------------------------------------------------------- serializers against the former writer


TOKEN_CHARACTERS = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


def reference_write_head(start_line: str, headers: list[tuple[str, str]]) -> bytes:
    out = bytearray(start_line.encode("ascii"))
    out += b"\r\n"
    for name, value in headers:
        if not name or any(c not in TOKEN_CHARACTERS for c in name):  # RFC 9110 §5.1
            raise UsageError(f"invalid HTTP header name {name!r}")
        out += name.encode("ascii")
        out += b": "
        out += _check_field(value, "header value").encode("latin-1")
        out += b"\r\n"
    out += b"\r\n"
    return bytes(out)


def reference_serialize_response(response: Response, close: bool) -> bytes:
    headers = response.headers.items()
    if response.status != 101:
        lengths = [value for name, value in headers if name.lower() == "content-length"]
        if not lengths:
            headers.append(("Content-Length", str(len(response.body))))
        elif lengths != [str(len(response.body))]:
            raise UsageError("a Content-Length that is not the body's")
        if close and "connection" not in response.headers:
            headers.append(("Connection", "close"))
    line = f"HTTP/1.1 {response.status} {_check_field(response.reason, 'reason')}"
    return reference_write_head(line, headers) + response.body


def result(write: object, *args: object) -> object:
    try:
        return write(*args)  # type: ignore[operator]
    except (UsageError, UnicodeEncodeError) as exc:
        return type(exc)


field_text = st.text(st.sampled_from(list("aZ09-: \t\r\n\x00é\u0100;=")), max_size=8)


@MANY
@given(
    st.sampled_from([101, 200, 400, 426, 599]),
    field_text,
    st.lists(st.tuples(field_text, field_text), max_size=5),
    st.binary(max_size=8),
    st.booleans(),
)
def test_serialize_response_writes_what_the_former_writer_wrote(
    status: int, reason: str, fields: list[tuple[str, str]], body: bytes, close: bool
) -> None:
    response = Response(status, fields, body, reason)
    expected = result(reference_serialize_response, response, close)
    assert result(lambda: serialize_response(response, close=close)) == expected


@MANY
@given(field_text, field_text, st.lists(st.tuples(field_text, field_text), max_size=5))
def test_serialize_request_writes_what_the_former_writer_wrote(
    method: str, target: str, fields: list[tuple[str, str]]
) -> None:
    request = Request(method or "GET", target, Headers(fields))

    def reference() -> bytes:
        line = f"{request.method} {_check_field(request.target, 'target')} HTTP/1.1"
        return reference_write_head(line, request.headers.items())

    assert result(lambda: serialize_request(request)) == result(reference)
