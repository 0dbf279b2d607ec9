"""HTTP/1.1 messages for the opening handshake and plain HTTP answers, parsed with h11.

Owns: reading an HTTP/1.1 request head (server) or response (client) from bytes under size limits, the
`Request`/`Response`/`Headers` values, and writing requests and responses as bytes. The whole project parses
HTTP with h11 (a well-kept sans-I/O parser); this module is its only user. One shortcut, for speed: a request
head that arrives whole in the common form is recognised by `request_head` (one regular expression), which
takes exactly what h11 would take and leaves everything else to it (a differential test holds it to h11).

Must not know: WebSocket rules (those are in `handshake`) or sockets.
"""

from __future__ import annotations

import base64
import http
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

import h11

from upwire._values import whole_number
from upwire.exceptions import InvalidHandshake, UsageError, shown
from upwire.protocol.request_head import read_common_head

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_HEADERS",
    "DEFAULT_MAX_HEADER_BYTES",
    "DEFAULT_MAX_REQUEST_LINE",
    "FIELD_NAME",
    "Headers",
    "HeadersLike",
    "Request",
    "RequestBodyReader",
    "RequestReader",
    "Response",
    "ResponseReader",
    "basic_authorization",
    "checked_request_head",
    "http_error",
    "redact_uri",
    "serialize_fields",
    "serialize_request",
    "serialize_response",
    "target_authority",
]

DEFAULT_MAX_REQUEST_LINE = 8192
DEFAULT_MAX_HEADER_BYTES = 16384
DEFAULT_MAX_HEADERS = 128
DEFAULT_MAX_BODY_BYTES = 1 << 20


def list_tokens(values: Iterable[str]) -> list[str]:
    """The comma-separated tokens of list-valued fields (Connection, Upgrade), lower-cased, empty ones left out."""
    return [t.strip().lower() for v in values for t in v.split(",") if t.strip()]


class Headers:
    """HTTP header fields: ordered, repeatable, looked up without regard to case.

    Args:
        items: (name, value) pairs, a mapping, or an object with `raw_items()` giving the pairs
            (websockets' `Headers`).
    """

    # One flat list [name, value, name, value, ...]: a server keeps every request's headers for its
    # connection's lifetime, and pairs as tuples would cost ~56 bytes more per field.
    __slots__ = ("_fields",)
    _fields: list[str]

    @classmethod
    def _of(cls, fields: list[str]) -> Headers:
        """Wrap a flat [name, value, ...] list of str without copying it (for the parsers)."""
        headers = cls.__new__(cls)
        headers._fields = fields
        return headers

    def __init__(self, items: HeadersLike = ()) -> None:
        fields: list[str] = []
        if isinstance(items, Headers):
            fields.extend(items._fields)
        elif isinstance(items, str | bytes | bytearray | memoryview):
            raise TypeError(
                f"headers must be a mapping or (name, value) pairs, not {type(items).__name__}"
            )
        else:
            raw_items = getattr(items, "raw_items", None)
            if callable(raw_items):
                # websockets' Headers: a mapping whose items() raise for a repeated field, and whose
                # keys are lower-cased; raw_items() gives every field as it was added.
                pairs = raw_items()
            else:
                pairs = items.items() if isinstance(items, Mapping) else items
            for pair in pairs:
                if not isinstance(pair, tuple | list) or len(pair) != 2:
                    raise TypeError(f"a header field must be a (name, value) pair, not {pair!r}")
                fields.append(str(pair[0]))
                fields.append(str(pair[1]))
        self._fields = fields

    def get(self, name: str, default: str | None = None) -> str | None:
        """Return the value of `name`; repeated fields are joined with ", " (RFC 9110 §5.3)."""
        values = self.get_all(name)
        if not values:
            return default
        return ", ".join(values)

    def get_all(self, name: str) -> list[str]:
        """Return every value of `name`, in order."""
        lower = name.lower()
        fields = self._fields
        return [fields[i + 1] for i in range(0, len(fields), 2) if fields[i].lower() == lower]

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        lower = name.lower()
        return any(field.lower() == lower for field in self._fields[::2])

    def __setitem__(self, name: str, value: str) -> None:
        """Set `name` to `value` alone: the first field of that name takes the value, later ones go
        (a new name is appended). `add` appends another field of a name instead."""
        name, value = str(name), str(value)
        lower = name.lower()
        fields = self._fields
        kept: list[str] = []
        replaced = False
        for i in range(0, len(fields), 2):
            if fields[i].lower() != lower:
                kept += fields[i : i + 2]
            elif not replaced:
                kept += (fields[i], value)
                replaced = True
        if not replaced:
            kept += (name, value)
        self._fields = kept

    def __delitem__(self, name: str) -> None:
        """Remove every field named `name` (KeyError if there is none)."""
        lower = name.lower()
        fields = self._fields
        kept = [
            part
            for i in range(0, len(fields), 2)
            if fields[i].lower() != lower
            for part in fields[i : i + 2]
        ]
        if len(kept) == len(fields):
            raise KeyError(name)
        self._fields = kept

    def __iter__(self) -> Iterator[str]:
        """Each field name once, as `keys()`."""
        return iter(self.keys())

    def __len__(self) -> int:
        """The number of distinct field names, as `keys()` gives them (`items()` has every field)."""
        return len(self.keys())

    def keys(self) -> list[str]:
        """Return each field name once, as first received, in order (so `dict(headers)` works: a
        repeated field's values are joined, as `get` joins them)."""
        seen: set[str] = set()
        names = []
        for name in self._fields[::2]:
            lower = name.lower()
            if lower not in seen:
                seen.add(lower)
                names.append(name)
        return names

    def items(self) -> list[tuple[str, str]]:
        """Return the (name, value) pairs, in order, names as received."""
        fields = self._fields
        return list(zip(fields[::2], fields[1::2], strict=True))

    def add(self, name: str, value: str) -> None:
        """Append a field."""
        self._fields += (str(name), str(value))

    def _collect(self, names: frozenset[str]) -> dict[str, list[str]]:
        """Return every value of each field named in `names` (lower-case), by name, in one pass."""
        found: dict[str, list[str]] = {}
        fields = iter(self._fields)
        for name, value in zip(fields, fields, strict=True):
            lower = name.lower()
            if lower in names:
                values = found.get(lower)
                if values is None:
                    found[lower] = [value]
                else:
                    values.append(value)
        return found

    def tokens(self, name: str) -> list[str]:
        """Return the comma-separated tokens of every `name` field, lower-cased (e.g. Connection)."""
        return list_tokens(self.get_all(name))

    def __repr__(self) -> str:
        return f"Headers({self.items()!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._fields == other._fields

    __hash__ = None  # type: ignore[assignment]


HeadersLike = Headers | Mapping[str, str] | Iterable[tuple[str, str]]


@dataclass(slots=True)
class Request:
    """An HTTP request head.

    Attributes:
        method: e.g. "GET".
        target: the request target as sent, e.g. "/chat?room=1".
        headers: the header fields.
        http_version: e.g. "1.1".
    """

    method: str
    target: str
    headers: Headers
    http_version: str = "1.1"

    @property
    def path(self) -> str:
        """The path part of the target, e.g. "/chat"."""
        return _split_target(self.target)[0]

    @property
    def query(self) -> dict[str, str]:
        """The query string as a dict (the last value wins for repeated keys)."""
        return dict(parse_qsl(_split_target(self.target)[1], keep_blank_values=True))

    @property
    def query_string(self) -> str:
        """The raw query string, without "?"."""
        return _split_target(self.target)[1]

    @property
    def host(self) -> str | None:
        """The host (and port) the request is for: an absolute-form target's authority, which a server must
        use instead of the Host field (RFC 9112 §3.2.2), else the Host field's value; None without either."""
        return target_authority(self.target) or self.headers.get("Host")


def target_authority(target: str) -> str:
    """An absolute-form request target's host and port, without user info; "" for a path (origin-form)
    or a target whose authority does not parse (an unclosed IP literal, a port that is not a number)."""
    if target.startswith("/"):
        return ""
    try:
        return urlsplit(target).netloc.rpartition("@")[2]
    except ValueError:
        return ""


def _split_target(target: str) -> tuple[str, str]:
    """A request target's path and query string.

    A target in origin-form is a path and a query (RFC 9112 §3.2.1), even when it starts with "//": that
    is a path whose first segment is empty, not an authority (`urlsplit("//x/admin").path` is "/admin",
    which would route a request for `//x/admin` as one for `/admin`, past a proxy's rule for `/admin`).
    """
    if target.startswith("/"):
        path, _, query = target.partition("#")[0].partition("?")
        return path, query
    parts = urlsplit(target)  # absolute-form: http://host/path?query
    return parts.path or "/", parts.query


@dataclass(slots=True)
class Response:
    """An HTTP response.

    Args:
        status: the status code: three digits (TypeError or ValueError otherwise).
        headers: header fields; Content-Length is added when writing a response (one given must be the
            body's length).
        body: the body, bytes-like or `str`; a `str` is encoded as UTF-8 (and a non-empty one gets a
            text/plain content type if none is set).
        reason: the reason phrase; the standard one when empty.
    """

    status: int
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    reason: str = ""

    def __init__(
        self,
        status: int,
        headers: HeadersLike = (),
        body: bytes | str = b"",
        reason: str = "",
    ) -> None:
        # RFC 9112 §4: a status code is three digits. (A float, 1000 or 12345678 went out as it was.)
        status = whole_number("Response status", status)
        if not 100 <= status <= 999:
            raise ValueError(f"Response status must be three digits (100-599 in use), not {status}")
        self.status = status
        if isinstance(headers, str | bytes | bytearray | memoryview):
            # websockets' `connection.respond(status, text)` ported as `Response(status, text)`.
            raise TypeError(
                f"Response(status, headers, body): headers must be a mapping or (name, value)"
                f" pairs, not {type(headers).__name__}; pass the body as body=..."
            )
        self.headers = Headers(headers)
        if isinstance(body, str):
            if body and "content-type" not in self.headers:  # (a 204 or 304 has no content to type)
                self.headers.add("Content-Type", "text/plain; charset=utf-8")
            body = body.encode("utf-8")
        elif isinstance(body, bytearray | memoryview):
            body = bytes(body)
        elif not isinstance(body, bytes):
            raise TypeError(f"Response body must be bytes or str, not {type(body).__name__}")
        self.body = body
        self.reason = reason or _reason(status)

    @classmethod
    def _of(cls, status: int, headers: Headers) -> Response:
        """A response without a body that takes `headers` as they are (no copy; for the handshake)."""
        response = cls.__new__(cls)
        response.status = status
        response.headers = headers
        response.body = b""
        response.reason = _reason(status)
        return response


def http_error(status: int, message: str, headers: HeadersLike = ()) -> InvalidHandshake:
    """Build the error for a refused request: the response it gets has a body saying what is wrong.

    Args:
        status: the HTTP status to answer with (400, 405, 426, 431, ...).
        message: what is wrong, in a sentence without a final period.
        headers: extra response header fields (e.g. `Sec-WebSocket-Version: 13` for a 426).

    The message is bounded as every handshake error's is (`exceptions.shown`): it quotes what the client
    sent, and goes into the response and the server's log line.
    """
    message = shown(message)
    body = f"Failed to open a WebSocket connection: {message}.\n".encode()
    all_headers = Headers(headers)
    all_headers.add("Content-Type", "text/plain; charset=utf-8")
    return InvalidHandshake(message, status, all_headers.items(), body)


# RFC 9110's phrases: Python's table still has older ones for some codes before 3.13.
_REASONS = {status.value: status.phrase for status in http.HTTPStatus} | {
    413: "Content Too Large",
    414: "URI Too Long",
    416: "Range Not Satisfiable",
    422: "Unprocessable Content",
}
# RFC 9110 §5.1: a field name is a token.
FIELD_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", re.ASCII)

# A server keeps each connection's request, headers included, for as long as the connection: ~50 bytes per
# str. The field names clients send and the values that are the same in every handshake are kept once per
# process instead (a fixed table: what clients send cannot grow it).
_COMMON_FIELD_STRINGS = {
    s: s
    for s in (
        "Host",
        "Upgrade",
        "Connection",
        "Sec-WebSocket-Key",
        "Sec-WebSocket-Version",
        "Sec-WebSocket-Extensions",
        "Sec-WebSocket-Protocol",
        "Origin",
        "User-Agent",
        "Accept-Encoding",
        "Accept-Language",
        "Cache-Control",
        "Pragma",
        "Cookie",
        "Authorization",
        "X-Forwarded-For",
        "X-Forwarded-Proto",
        "X-Real-IP",
        "host",
        "upgrade",
        "connection",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "origin",
        "user-agent",
        "accept-encoding",
        "accept-language",
        "websocket",
        "keep-alive, Upgrade",
        "13",
        "no-cache",
        "gzip, deflate",
        "gzip, deflate, br",
        "gzip, deflate, br, zstd",
        "permessage-deflate",
        "permessage-deflate; client_max_window_bits",
        "permessage-deflate; client_no_context_takeover",
    )
}


def basic_authorization(url: SplitResult) -> str | None:
    """The `Authorization` value for HTTP Basic authentication (RFC 7617) with a URL's user information
    (percent-decoded: `%40` stands for "@", `%3A` for ":"), or None for a URL without one."""
    if url.username is None and url.password is None:
        return None
    credentials = f"{unquote(url.username or '')}:{unquote(url.password or '')}"
    return "Basic " + base64.b64encode(credentials.encode("utf-8")).decode("ascii")


_USER_INFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#@]*@")


def redact_uri(uri: str, replacement: str = "***@") -> str:
    """`uri` with its user information (user name and password) replaced by `***`, for messages.

    With `replacement=""`, the URI without its user information.
    """
    return _USER_INFO.sub(lambda match: match.group(1) + replacement, uri)


def _reason(status: int) -> str:
    return _REASONS.get(status, "Unknown")


def _check_field(text: str, what: str) -> str:
    # A CR or LF in a field would let a value inject headers or a second response.
    if "\r" in text or "\n" in text or "\0" in text:
        raise UsageError(f"invalid character in HTTP {what}: {text!r}")
    return text


def _check_name(name: str) -> str:
    if not FIELD_NAME.fullmatch(name):
        raise UsageError(
            f"invalid HTTP header name {name!r}: a token (letters, digits and !#$%&'*+-.^_`|~)"
        )
    return name


def _write_head(start_line: str, fields: list[str]) -> bytes:
    """Write a head from its start line and a flat [name, value, ...] list of header fields."""
    pairs = iter(fields)
    lines = "".join([f"{name}: {value}\r\n" for name, value in zip(pairs, pairs, strict=True)])
    text = f"{start_line}\r\n{lines}\r\n"
    # The usual case: one join and one encode. The only CR and LF are then the line ends (one per
    # field, two more), there is no NUL, the start line is ASCII and the names are tokens; else the
    # checks field by field below give the same result and name the field to blame.
    line_ends = len(fields) // 2 + 2
    if (
        text.count("\n") == line_ends
        and text.count("\r") == line_ends
        and "\0" not in text
        and start_line.isascii()
        and all(map(FIELD_NAME.fullmatch, fields[::2]))
    ):
        try:
            return text.encode("latin-1")
        except UnicodeEncodeError:
            pass  # a value outside Latin-1
    return start_line.encode("ascii") + b"\r\n" + serialize_fields(fields) + b"\r\n"


def serialize_fields(fields: list[str]) -> bytes:
    """Write header field lines (`name: value` and CRLF each) from a flat [name, value, ...] list.

    Raises:
        UsageError: for a name that is not a token, or a CR, LF or NUL in a value (it would inject fields
            or a second head).
        UnicodeEncodeError: for a value outside Latin-1.
    """
    out = bytearray()
    pairs = iter(fields)
    for name, value in zip(pairs, pairs, strict=True):
        out += _check_name(name).encode("ascii")
        out += b": "
        out += _check_field(value, "header value").encode("latin-1")
        out += b"\r\n"
    return bytes(out)


def serialize_response(response: Response, *, close: bool = True, body: bool = True) -> bytes:
    """Write a response as bytes; a non-101 response gets Content-Length and, with `close`, Connection: close.

    With `body` False (the answer to a HEAD request, RFC 9110 §9.3.2) the head alone is written, its
    Content-Length still the body's. A 204 or 304 has no content (§6.4.1): no Content-Length is added
    (a 204 never has one, §8.6; a 304's, when given, is the length a 200 would have had).

    Raises:
        UsageError: for a body whose length is not the Content-Length given, a body in a 204 or 304, a
            status under 200 other than 101 (not a final answer), or what HTTP/1.1 cannot carry.
    """
    fields = response.headers._fields
    status = response.status
    if status != 101:
        fields = list(fields)
        length = str(len(response.body))
        given = response.headers.get_all("content-length")
        if status < 200 or status in (204, 304):
            if status < 200:
                raise UsageError(
                    f"cannot answer with {status}: a final response has a status of 200 or more"
                )
            if response.body:
                raise UsageError(
                    f"a {status} response has no body (RFC 9110 §6.4.1), got {length} bytes"
                )
            if status == 204:
                fields = [
                    f
                    for name, value in zip(fields[::2], fields[1::2], strict=True)
                    if name.lower() != "content-length"
                    for f in (name, value)
                ]
        elif not given:
            fields += ("Content-Length", length)
        elif given != [length]:
            # A length that is not the body's would leave the client waiting, or reading garbage.
            raise UsageError(f"Content-Length {', '.join(given)} for a body of {length} bytes")
        if close and "close" not in response.headers.tokens("connection"):
            # RFC 9112 §9.6: the connection closes after this response; say so, even next to the
            # application's own Connection options.
            fields += ("Connection", "close")
    head = _write_head(
        f"HTTP/1.1 {response.status} {_check_field(response.reason, 'reason')}", fields
    )
    return head + response.body if response.body and body else head


def serialize_request(request: Request) -> bytes:
    """Write a request head as bytes."""
    line = f"{request.method} {_check_field(request.target, 'target')} HTTP/{request.http_version}"
    return _write_head(line, request.headers._fields)


def checked_request_head(request: Request) -> bytes:
    """Write a request head as `serialize_request` does, once h11 agrees that HTTP/1.1 allows it.

    For requests this program builds (the client's), so that a bad header or target is refused before a
    connection is opened for it.

    Raises:
        UsageError: for what HTTP/1.1 cannot carry: a header name that is not a token (RFC 9110 §5.1), a
            CR, LF or NUL or surrounding white space in a value (§5.5), a name outside ASCII or a value
            outside Latin-1, a space or non-ASCII character in the target, several Host fields.
    """
    try:
        head = serialize_request(request)
        _h11_request(request)
    except UnicodeEncodeError as exc:
        raise UsageError(
            f"cannot send {exc.object!r} in an HTTP request: header names are ASCII, values Latin-1"
        ) from None
    except h11.LocalProtocolError as exc:
        raise UsageError(f"cannot send this HTTP request: {exc}") from None
    return head


def _h11_request(request: Request) -> h11.Request:
    # As bytes: h11 encodes a str as ASCII, and a received request's values are Latin-1 (obs-text).
    return h11.Request(
        method=request.method.encode("latin-1"),
        target=request.target.encode("latin-1"),
        headers=[
            (name.encode("latin-1"), value.encode("latin-1"))
            for name, value in request.headers.items()
        ],
    )


def _raw_headers(headers: h11._headers.Headers) -> Headers:
    """Convert h11's headers to ours, keeping the names as received."""
    return Headers(
        (name.decode("ascii"), value.decode("latin-1")) for name, value in headers.raw_items()
    )


class RequestReader:
    """Read one request head on the server side.

    A head that arrives whole in the first segment and has the common form is read by
    `request_head.read_common_head` (one regular expression); everything else goes through h11, which
    stays the reference for what is valid and for every error message.

    Args:
        max_request_line: the longest request line accepted (414 URI Too Long past it: the target is
            what makes a request line long).
        max_header_bytes: the largest request head accepted (431 past it).
        max_headers: the most header fields accepted (431 past it).
    """

    __slots__ = (
        "_max_header_bytes",
        "_max_headers",
        "_max_request_line",
        "_parser",
        "_received",
        "_seen",
        "_skipped",
        "request",
        "trailing_data",
    )

    def __init__(
        self,
        *,
        max_request_line: int = DEFAULT_MAX_REQUEST_LINE,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        max_headers: int = DEFAULT_MAX_HEADERS,
    ) -> None:
        # h11 is set up only when a request does not take the fast path (see `feed`).
        self._parser: h11.Connection | None = None
        self._max_request_line = max_request_line
        self._max_headers = max_headers
        self._max_header_bytes = max_header_bytes
        self._seen = bytearray()
        self._received = 0
        self._skipped = 0
        self.request: Request | None = None
        self.trailing_data = b""

    def feed(self, data: bytes) -> Request | None:
        """Feed received bytes; return the request once its head is complete.

        Raises:
            InvalidHandshake: with the status to answer (400, 414, 431) when the request is malformed or too
                large.
        """
        if self.request is not None:
            self.trailing_data += data
            return self.request
        limit = self._max_request_line
        if self._received == 0 and data[:1] in (b"\r", b"\n"):
            # Empty lines before the request line are ignored (RFC 9112 §2.2), a request line's worth.
            data = bytes(data)
            start = len(data) - len(data.lstrip(b"\r\n"))
            self._skipped += start
            if self._skipped > limit:
                raise http_error(400, "no request line: only empty lines received")
            data = data[start:]
            if not data:
                return None
        if self._received == 0 and data:
            # The first segment: the same check as below, without copying it.
            data = bytes(data)  # a no-op for bytes; trailing_data is bytes whatever was fed
            line_end = data.find(b"\r\n", 0, limit + 2)
            if line_end > limit or (line_end < 0 and len(data) >= limit + 2):
                raise _too_long(limit)
            head = read_common_head(data)
            if head is not None:
                method, target, fields, size = head
                self._received = len(data)
                return self._accept(Request(method, target, Headers._of(fields)), data[size:])
        if len(self._seen) < limit + 2:
            # Keep just enough of the start to find the end of the request line (its CRLF).
            self._seen += data[: limit + 2 - len(self._seen)]
            line_end = self._seen.find(b"\r\n")
            if line_end > limit or (line_end < 0 and len(self._seen) >= limit + 2):
                raise _too_long(limit)
        self._received += len(data)
        parser = self._parser
        if parser is None:
            parser = self._parser = h11.Connection(
                h11.SERVER, max_incomplete_event_size=self._max_header_bytes
            )
        parser.receive_data(data)
        event = _next_event(parser)
        if type(event) is _Malformed:
            if event.status_hint == 431:
                raise self._too_large()
            raise http_error(event.status_hint, f"malformed HTTP request ({event.message})")
        if event is h11.NEED_DATA:
            return None
        if not isinstance(event, h11.Request):  # pragma: no cover - h11 yields a Request first
            raise http_error(400, f"unexpected HTTP event {type(event).__name__}")
        request = Request(
            method=event.method.decode("ascii"),
            target=event.target.decode("ascii", "replace"),
            headers=_raw_headers(event.headers),
            http_version=event.http_version.decode("ascii"),
        )
        # What follows the head: h11 keeps it unread once the request asks to switch protocols or ends.
        return self._accept(request, bytes(parser.trailing_data[0]))

    def _accept(self, request: Request, trailing: bytes) -> Request:
        # h11 bounds only an incomplete head; a complete one that arrived at once must be checked too.
        if self._received - len(trailing) > self._max_header_bytes:
            raise self._too_large()
        fields = request.headers._fields
        count = len(fields) // 2
        if count > self._max_headers:
            raise http_error(431, f"{count} header fields exceed max_headers={self._max_headers}")
        fields[:] = map(_COMMON_FIELD_STRINGS.get, fields, fields)
        self.request = request
        self.trailing_data = trailing
        return request

    def _too_large(self) -> InvalidHandshake:
        return http_error(
            431, f"request head larger than max_header_bytes={self._max_header_bytes} bytes"
        )


def _too_long(limit: int) -> InvalidHandshake:
    return http_error(414, f"request line longer than max_request_line={limit} bytes")


class RequestBodyReader:
    """Find where the body of a request read by `RequestReader` ends, to read the next request after it.

    For an observer of a keep-alive connection (`upwire dissect`): the body is skipped, not kept. h11
    reads its framing (Content-Length, chunked, or none).

    Raises:
        InvalidHandshake: (status 400) when the request's framing is invalid, here or in the body.
    """

    __slots__ = ("_parser",)

    def __init__(self, request: Request) -> None:
        self._parser = h11.Connection(h11.SERVER)
        try:
            head = serialize_request(request)
        except (UsageError, UnicodeError) as exc:
            raise http_error(400, f"malformed HTTP request ({exc})") from None
        self._parser.receive_data(head)
        self._next()

    def feed(self, data: bytes) -> bytes | None:
        """Feed the bytes that follow the head; return what follows the body once it has ended."""
        self._parser.receive_data(data)
        while True:
            event = self._next()
            if event is h11.NEED_DATA:
                return None
            if isinstance(event, h11.EndOfMessage):
                return bytes(self._parser.trailing_data[0])

    def _next(self) -> object:
        event = _next_event(self._parser)
        if type(event) is _Malformed:
            raise http_error(400, f"malformed HTTP request ({event.message})")
        return event


class _Malformed(NamedTuple):
    """h11's error about the bytes it was given, as data."""

    status_hint: int
    message: str


def _next_event(parser: h11.Connection) -> object:
    """h11's next event, or its error as a `_Malformed`.

    h11's error holds itself through its traceback (the frame that re-raises it), and so every frame that
    traceback reaches, and their callers' (the connection's among them), until a full garbage collection.
    Its traceback is dropped here, and it is not raised on as another error's context.
    """
    try:
        return parser.next_event()
    except h11.RemoteProtocolError as exc:
        exc.__traceback__ = None
        # h11 quotes the offending line as `bytearray(b'...')`: the bytes literal says it.
        return _Malformed(exc.error_status_hint, _BYTEARRAY_REPR.sub(r"\1", str(exc)))


_BYTEARRAY_REPR = re.compile(r"bytearray\((b(['\"]).*\2)\)")

# A response's status line (RFC 9112 §4), loosely: h11 checks it exactly once the head is whole.
_HTTP_PREFIX = b"HTTP/"
_STATUS_LINE = re.compile(rb"HTTP/[0-9]\.[0-9] [0-9]{3}(?: [^\r\n]*)?\r?\n")


class ResponseReader:
    """Read the response to a request on the client side (101, or an HTTP error with a bounded body).

    Args:
        request: the request that was sent (h11 checks the response against it).
        max_header_bytes: the largest response head accepted.
        max_body_bytes: the most body bytes kept from an error response.
    """

    def __init__(
        self,
        request: Request,
        *,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        self._parser = h11.Connection(h11.CLIENT, max_incomplete_event_size=max_header_bytes)
        self._parser.send(_h11_request(request))
        self._max_body_bytes = max_body_bytes
        self._max_header_bytes = max_header_bytes
        self._response: Response | None = None
        self._body = bytearray()
        self._eof = False
        self.received = 0  # bytes fed
        self.trailing_data = b""
        # The HTTP version of the response's status line ("1.1", "1.0"), once it is read.
        self.http_version = ""
        # The start of the answer, until its status line is complete and looks like one (see `feed`).
        self._status_line: bytes | None = b""
        # The heads read so far (interim 1xx ones and the final one), and how many were interim.
        self._head_bytes = 0
        self._interim = 0

    def feed(self, data: bytes) -> Response | None:
        """Feed received bytes; return the response once complete (for 101: once its head is).

        Raises:
            InvalidHandshake: (status 0) when the response is not valid HTTP/1.1.
        """
        self.received += len(data)
        if self._status_line is not None:
            self._check_status_line(data)
        self._parser.receive_data(data)
        return self._next()

    def _check_status_line(self, data: bytes) -> None:
        """Refuse an answer that is not HTTP as soon as its first bytes say so.

        h11 judges a response once its whole head has arrived: a server that speaks another protocol
        (SSH's banner, a line of a text protocol) and then waits would hold the client until
        open_timeout.
        """
        longest = self._max_header_bytes
        start = self._status_line = (self._status_line or b"") + data[:longest]
        end = start.find(b"\n")
        line = start if end < 0 else start[: end + 1]
        if end < 0 and len(start) < longest:
            if _HTTP_PREFIX.startswith(start[: len(_HTTP_PREFIX)]):
                return  # so far, the start of a status line
        elif _STATUS_LINE.fullmatch(line):
            self._status_line = None  # h11 reads the rest
            return
        raise InvalidHandshake(f"malformed HTTP response: the answer starts with {line[:80]!r}", 0)

    def feed_eof(self) -> Response | None:
        """Tell the reader the server closed the connection; return the response if that completes it."""
        self._eof = True
        self._parser.receive_data(b"")
        return self._next()

    def _next(self) -> Response | None:
        while True:
            event = _next_event(self._parser)
            if type(event) is _Malformed:
                response = self._response
                if self._eof and response is None:
                    raise InvalidHandshake("connection closed before a complete HTTP response", 0)
                if response is not None and response.status != 101:
                    # The head was whole and the body is cut short (a chunked body without its last
                    # chunk, fewer bytes than its Content-Length) or malformed (a bad chunk header):
                    # the status and the body so far are still the answer.
                    response.body = bytes(self._body)
                    return response
                if event.status_hint == 431:  # h11's bound on a head still arriving
                    raise self._too_large()
                raise InvalidHandshake(f"malformed HTTP response: {event.message}", 0)
            if event is h11.NEED_DATA:
                return None
            if event is h11.PAUSED:
                if self._response is not None and self._response.status == 101:
                    # Bytes fed after the 101 are the connection's too (what `RequestReader` does).
                    self.trailing_data = bytes(self._parser.trailing_data[0])
                return self._response
            if isinstance(event, h11.InformationalResponse | h11.Response):
                # h11 bounds only a head still arriving; one that arrived whole is measured here.
                self._check_head_size(event)
                self.http_version = event.http_version.decode("ascii")
            if isinstance(event, h11.InformationalResponse):
                if event.status_code == 101:
                    self._response = Response(
                        101, _raw_headers(event.headers), reason=event.reason.decode("latin-1")
                    )
                    self.trailing_data = bytes(self._parser.trailing_data[0])
                    return self._response
                continue  # 1xx other than 101: ignore and keep reading (RFC 9110 §15.2)
            if isinstance(event, h11.Response):
                self._response = Response(
                    event.status_code,
                    _raw_headers(event.headers),
                    reason=event.reason.decode("latin-1"),
                )
            elif isinstance(event, h11.Data):
                room = self._max_body_bytes - len(self._body)
                self._body += event.data[: max(room, 0)]
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                if self._response is None:
                    raise InvalidHandshake("connection closed before an HTTP response", 0)
                self._response.body = bytes(self._body)
                # What came after the response (a keep-alive connection's next one, for an observer).
                self.trailing_data = bytes(self._parser.trailing_data[0])
                return self._response

    def body_until_close(self) -> Response | None:
        """A response whose body lasts until the connection closes (no length given), with its body so far.

        None until such a response's head arrived, and for a response whose body has a length (`feed`
        returns it once complete). For a caller that needs the status, not the whole body: a proxy
        refusing a tunnel may keep the connection open after such an answer.
        """
        response = self._response
        if response is not None and (
            "Content-Length" in response.headers or "Transfer-Encoding" in response.headers
        ):
            return None
        return self.answer_so_far()

    def answer_so_far(self) -> Response | None:
        """The answer other than 101 whose head arrived, with its body so far; else None.

        For a caller out of time: the status is the answer, however its body's end was to come (a
        length, a last chunk, the connection's close) and whether or not it ever would.
        """
        response = self._response
        if response is None or response.status == 101:
            return None
        response.body = bytes(self._body)
        return response

    @property
    def keeps_alive(self) -> bool:
        """After a complete response other than 101: the connection may carry another request."""
        return self._parser.their_state is h11.DONE

    def _check_head_size(self, event: h11.InformationalResponse | h11.Response) -> None:
        # The status line and each field line as written with the least white space: "HTTP/1.1 NNN
        # reason", "name: value", each with its CRLF, and the blank line. Interim (1xx) heads count
        # together with the final one: a server that sends them without end would otherwise keep the
        # client parsing until open_timeout.
        size = 15 + len(event.reason) + 2
        size += sum(len(name) + len(value) + 4 for name, value in event.headers.raw_items())
        self._head_bytes += size
        if self._head_bytes > self._max_header_bytes:
            raise self._too_large()
        if isinstance(event, h11.InformationalResponse) and event.status_code != 101:
            self._interim += 1

    def _too_large(self) -> InvalidHandshake:
        heads = f" (with {self._interim} interim 1xx answers)" if self._interim else ""
        return InvalidHandshake(
            f"response head{heads} larger than max_header_bytes={self._max_header_bytes} bytes", 0
        )
