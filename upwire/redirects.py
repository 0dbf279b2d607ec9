"""Redirects of the opening handshake, for the client.

Owns: which answers are redirects (301, 302, 303, 307, 308), where a Location leads (relative or absolute;
http:// and https:// stand for ws:// and wss://, as in browsers), and the limits: never from wss:// to ws://,
no loops, at most `max_redirects` in a row. Which request headers may follow a redirect to another origin.

Must not know: sockets or the handshake's rules.
"""

from __future__ import annotations

from typing import NoReturn
from urllib.parse import urljoin, urlsplit, urlunsplit

from upwire._values import whole_number
from upwire.exceptions import InvalidRedirect, InvalidStatus
from upwire.protocol.http import Headers, redact_uri

__all__ = ["REDIRECT_STATUSES", "RedirectChain", "headers_for_redirect", "same_origin"]

# RFC 9110 §15.4: the opening handshake is a GET, so every one of these repeats it at the new location.
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

# Fields the caller meant for one server (credentials, a Host that replaces the URI's); they are not sent
# to another origin after a redirect.
_ORIGIN_BOUND_HEADERS = frozenset({"authorization", "cookie", "host"})

_SCHEMES = {"ws": "ws", "wss": "wss", "http": "ws", "https": "wss"}


def _origin(uri: str) -> tuple[str, str, int]:
    parts = urlsplit(uri)
    secure = parts.scheme in ("wss", "https")
    return (
        "wss" if secure else "ws",
        (parts.hostname or "").lower(),
        parts.port or (443 if secure else 80),
    )


def same_origin(a: str, b: str) -> bool:
    """Tell whether two ws:// or wss:// URIs have the same scheme, host and port."""
    return _origin(a) == _origin(b)


def headers_for_redirect(headers: Headers, old: str, new: str) -> Headers:
    """Return the headers to send to `new` after a redirect from `old`: credentials (and a Host given by
    the caller) stay with their origin."""
    if same_origin(old, new):
        return headers
    return Headers((k, v) for k, v in headers.items() if k.lower() not in _ORIGIN_BOUND_HEADERS)


class RedirectChain:
    """Follow the redirects of one `connect`, within limits.

    Args:
        uri: the URI first connected to.
        max_redirects: how many redirects may be followed in a row (0: none).
    """

    def __init__(self, uri: str, max_redirects: int) -> None:
        count = whole_number("max_redirects", max_redirects, "a whole number (0: none)")
        if count < 0:
            raise ValueError(f"max_redirects must be 0 or more, not {max_redirects!r}")
        self.max_redirects = count
        self.uris = [uri]

    def next_uri(self, error: InvalidStatus) -> str | None:
        """Return the URI that a non-101 answer redirects to, or None when it is not a redirect.

        Raises:
            InvalidRedirect: for a redirect that must not be followed (no Location, another scheme, wss:// to
                ws://, a loop, more than `max_redirects`).
        """
        if error.status not in REDIRECT_STATUSES or self.max_redirects == 0:
            return None
        current = self.uris[-1]
        locations = Headers(error.headers).get_all("Location")
        if len(locations) != 1 or not locations[0].strip():
            self._fail(error, f"HTTP {error.status} redirect without a single Location header")
        location = _as_characters(locations[0].strip())
        try:
            # urljoin knows ws:// and wss:// have a path, so "../b" and "/b?x" resolve as for http://.
            target = urlsplit(urljoin(current, location))
            port = target.port
        except ValueError as exc:  # a bad port or IPv6 literal
            self._fail(
                error, f"redirect to {redact_uri(location)!r}, which is not a valid URI: {exc}"
            )
        scheme = _SCHEMES.get(target.scheme.lower())
        if scheme is None or not target.hostname:
            self._fail(
                error, f"redirect to {redact_uri(location)!r}, which is not a ws:// or wss:// URI"
            )
        if port == 0:
            self._fail(error, f"redirect to {redact_uri(location)!r}, whose port is 0")
        uri = urlunsplit((scheme, target.netloc, target.path or "/", target.query, ""))
        # Messages show URIs without their credentials.
        shown = [redact_uri(u) for u in [*self.uris, uri]]
        if urlsplit(current).scheme == "wss" and scheme == "ws":  # urlsplit lower-cases the scheme
            self._fail(
                error, f"redirect from {shown[-2]} to {shown[-1]} would drop TLS; not followed"
            )
        if uri in self.uris:
            chain = " -> ".join(shown[self.uris.index(uri) :])
            self._fail(error, f"redirect loop: {chain}")
        if len(self.uris) > self.max_redirects:
            self._fail(
                error,
                f"more than max_redirects={self.max_redirects} redirects "
                f"({shown[0]} -> ... -> {shown[-2]} -> {shown[-1]})",
            )
        self.uris.append(uri)
        return uri

    def _fail(self, error: InvalidStatus, why: str) -> NoReturn:
        raise InvalidRedirect(why, error.status, error.headers, error.body)


def _as_characters(location: str) -> str:
    """A Location field's value as the characters its bytes stand for.

    Header values are read as Latin-1 (one character per byte); a server that puts a non-ASCII path in
    Location sends it as UTF-8, as browsers and HTTP clients read it: read that way, the path is sent
    percent-encoded as the same UTF-8 (`/caf%C3%A9`, not `/caf%C3%83%C2%A9`). Bytes that are not UTF-8
    are percent-encoded one by one.
    """
    if location.isascii():
        return location
    try:
        raw = location.encode("latin-1")
    except UnicodeEncodeError:
        return location  # not a value read from the wire: characters already
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "".join(chr(byte) if byte < 0x80 else f"%{byte:02X}" for byte in raw)
