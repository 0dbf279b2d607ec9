"""The asyncio WebSocket client: `connect("ws://...")`.

Owns: parsing ws:// and wss:// URIs, opening the TCP (and TLS) connection, directly or through an HTTP proxy
(`proxy`), sending the Upgrade request and checking the answer through `protocol.handshake`, following
redirects (`redirects`), all within `open_timeout`.
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import logging
import os
import random
import re
import socket
import ssl as ssl_module
from collections.abc import AsyncIterator, Generator, Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import quote, urlsplit

from upwire._values import seconds
from upwire.connection import (
    Connection,
    ConnectionOptions,
    connection_options,
    extension_factories,
)
from upwire.exceptions import (
    InvalidCertificate,
    InvalidHandshake,
    InvalidRedirect,
    InvalidStatus,
    InvalidURI,
    ProxyError,
    UsageError,
)
from upwire.protocol.connection import Connection as ProtocolConnection
from upwire.protocol.connection import Role
from upwire.protocol.extensions import ClientExtensionFactory, ClientPerMessageDeflateFactory
from upwire.protocol.handshake import ClientHandshake, check_subprotocols
from upwire.protocol.http import (
    Headers,
    HeadersLike,
    Response,
    ResponseReader,
    basic_authorization,
    redact_uri,
)
from upwire.proxy import ProxyOption, open_tunnel, parse_proxy, select_proxy
from upwire.redirects import RedirectChain, headers_for_redirect

logger = logging.getLogger("upwire")

__all__ = ["ClientConnection", "WebSocketURI", "connect", "parse_uri", "redact_uri"]

USER_AGENT = "upwire (Python)"
# OpenSSL's verify codes for a certificate valid for other names (X509_V_ERR_HOSTNAME_MISMATCH,
# X509_V_ERR_IP_ADDRESS_MISMATCH): another CA would not help.
_NAME_MISMATCH = frozenset({62, 64})
# X509_V_ERR_CERT_NOT_YET_VALID and X509_V_ERR_CERT_HAS_EXPIRED: the dates, or the clock.
_OUT_OF_DATE = frozenset({9, 10})


@dataclass(frozen=True, slots=True)
class WebSocketURI:
    """A parsed ws:// or wss:// URI.

    Attributes:
        authorization: the HTTP Basic `Authorization` value for a `ws://user:password@host/` URI's
            credentials, or None.
    """

    secure: bool
    host: str
    port: int
    target: str
    authorization: str | None = None

    @property
    def host_header(self) -> str:
        """The Host header value: the port is left out when it is the scheme's default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.secure else 80
        return host if self.port == default else f"{host}:{self.port}"


def parse_uri(uri: str) -> WebSocketURI:
    """Parse a WebSocket URI (RFC 6455 §3).

    Credentials (`ws://user:password@host/`) become `authorization`, which `connect` sends as HTTP Basic
    authentication. Error messages never show them. Spaces, control and non-ASCII characters in the path
    and query are sent percent-encoded (as UTF-8), and a non-ASCII host name in its IDNA form, as browsers
    do.

    Raises:
        InvalidURI: for another scheme, a missing host, a bad port (0 included), or a fragment.
    """
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        raise InvalidURI(redact_uri(uri), str(exc)) from None
    if parts.scheme not in ("ws", "wss"):
        raise InvalidURI(redact_uri(uri), "the scheme must be ws:// or wss://")
    host = parts.hostname
    if not host:
        raise InvalidURI(redact_uri(uri), "no host")
    if port == 0:
        raise InvalidURI(redact_uri(uri), "port 0 is not a port to connect to")
    if parts.fragment or uri.endswith("#"):
        # RFC 6455 §3: fragment identifiers are meaningless in WebSocket URIs and MUST NOT be used.
        raise InvalidURI(redact_uri(uri), "a WebSocket URI cannot have a #fragment")
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise InvalidURI(redact_uri(uri), f"bad host name: {exc}") from None
    secure = parts.scheme == "wss"
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    # RFC 3986 §2.1, RFC 9112 §3.2: a request target is visible ASCII; other characters are percent-encoded.
    target = _NOT_IN_TARGET.sub(lambda match: quote(match.group(), safe=""), target)
    default_port = 443 if secure else 80
    return WebSocketURI(
        secure,
        host,
        default_port if port is None else port,
        target,
        basic_authorization(parts),
    )


_NOT_IN_TARGET = re.compile(r"[^\x21-\x7e]+")


class ClientConnection(Connection):
    """A connection opened by `connect`."""

    __slots__ = ("_handshake", "_opening", "_reader")

    def __init__(self, options: ConnectionOptions, handshake: ClientHandshake) -> None:
        super().__init__(options)
        self._handshake = handshake
        self._reader = ResponseReader(handshake.request)
        self._opening: asyncio.Future[None] = self.loop.create_future()
        self.request = handshake.request

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Send the Upgrade request."""
        super().connection_made(transport)
        assert self.transport is not None
        self.transport.write(self._handshake.head)

    def _handshake_data(self, data: bytes) -> None:
        try:
            response = self._reader.feed(data)
            if response is None:
                return
            self.response = response
            self.subprotocol = self._handshake.check_response(response, self._reader.http_version)
        except InvalidHandshake as exc:
            self._handshake_failed(exc)
            return
        protocol = ProtocolConnection(
            Role.CLIENT,
            extensions=self._handshake.extensions,
            max_message_size=self.options.max_message_size,
            max_frame_size=self.options.max_frame_size,
            max_fragments=self.options.max_fragments,
        )
        if not self._opening.done():
            self._opening.set_result(None)
        self._opened(protocol, self._reader.trailing_data)

    def _handshake_failed(self, error: InvalidHandshake) -> None:
        self._fail_opening(error)
        if self.transport is not None:
            self.transport.close()

    def eof_received(self) -> bool | None:
        """The server closed its side; during the handshake this may complete an error response."""
        if self.protocol is None and not self._opening.done():
            try:
                response = self._reader.feed_eof()
                if response is not None:
                    self.response = response
                    self._handshake.check_response(response, self._reader.http_version)
                raise InvalidHandshake("connection closed during the opening handshake", 0)
            except InvalidHandshake as exc:
                if exc.status == 0 and exc.__cause__ is None:
                    # Closed before a whole answer, as a restarting server does: `async for` retries it.
                    exc.__cause__ = EOFError("the server closed the connection")
                self._handshake_failed(self._with_tls_hint(exc))
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        """Fail the opening if it was still in progress."""
        if not self._opening.done():
            error = InvalidHandshake(
                f"connection lost during the opening handshake{f': {exc}' if exc else ''}", 0
            )
            error.__cause__ = exc or EOFError("the connection was lost")
            self._fail_opening(self._with_tls_hint(error))
        super().connection_lost(exc)

    def _fail_opening(self, error: InvalidHandshake) -> None:
        opening = self._opening
        if not opening.done():
            opening.set_exception(error)
            # Marked as seen: `connect` may be gone already (cancelled, or its open_timeout expired
            # while asyncio was still making the connection, which asyncio then closes), and asyncio
            # would log "Future exception was never retrieved". An awaiter still gets it raised.
            opening.exception()

    def _with_tls_hint(self, error: InvalidHandshake) -> InvalidHandshake:
        """Name the likely cause when a TLS server closes before answering at all.

        Over TLS 1.3 the client's handshake ends before the server checks the client's certificate;
        a server that requires one then closes without answering (asyncio reports an EOF, uvloop only
        the connection's loss).
        """
        cause = error.__cause__
        if (
            self._tls_info is None
            or self._reader.received
            or (
                isinstance(cause, ssl_module.SSLError)
                and not isinstance(cause, _SSL_CONNECTION_LOST)
            )
        ):
            return error  # an answer came, or the server's TLS alert, which the error names
        hinted = InvalidHandshake(
            f"{error}: the server closed the TLS connection without answering the Upgrade request "
            "(a server that requires a client certificate does so when none is offered: see "
            "ssl.SSLContext.load_cert_chain)",
            0,
        )
        # The cause stays: a server restarting closes the same way, and `async for` retries it (one
        # that wants a certificate is retried too, with the hint in each attempt's error).
        hinted.__cause__ = cause
        return hinted


# What connecting to a Unix socket fails with: the error names the socket (see `_naming_unix`).
_UNIX_CONNECT_ERRORS = frozenset(
    {
        errno.ENOENT,
        errno.ECONNREFUSED,
        errno.EACCES,
        errno.EPERM,
        errno.EAGAIN,
        errno.ENOTSOCK,
        errno.ENOTDIR,
        errno.ELOOP,
        errno.ENAMETOOLONG,
        errno.EINVAL,
    }
)


def _naming_unix(error: OSError, path: str | bytes) -> OSError:
    """`error` from connecting to the Unix socket `path`, as the same type, saying which (as a TCP
    refusal names host and port: "[Errno 2] No such file or directory" alone does not say which file)."""
    reason = error.strerror or str(error) or type(error).__name__
    if error.errno == errno.EINVAL and path[:1] in ("\0", b"\0"):
        # libuv's connect takes no Linux abstract name (serve takes one on either loop).
        reason += "; this event loop cannot connect to a Linux abstract name (asyncio's can)"
    message = f"{reason} (connecting to the Unix socket {path!r})"
    return type(error)(message) if error.errno is None else type(error)(error.errno, message)


def _retryable(error: Exception) -> bool:
    """True for an error that trying again later may not meet: the server or the network may be back."""
    if isinstance(error, InvalidStatus):
        return error.status in (500, 502, 503, 504)
    if isinstance(error, ProxyError):
        return error.status in (0, 500, 502, 503, 504)
    if isinstance(error, InvalidCertificate):
        return False  # the same certificate next time (its cause is an OSError all the same)
    if isinstance(error, InvalidHandshake):
        # The connection closed or was lost before the server answered (a server restarting, a load
        # balancer without a backend): `ClientConnection` gives these their cause. Over TLS 1.3 the
        # server's refusal of the client (its certificate, say) comes as such a cause too.
        cause = error.__cause__
        if isinstance(cause, ssl_module.SSLError):
            return _tls_may_pass(cause)
        return isinstance(cause, OSError | EOFError)
    if isinstance(error, ssl_module.SSLError):
        return _tls_may_pass(error)
    return isinstance(error, OSError | TimeoutError)


def _tls_may_pass(error: ssl_module.SSLError) -> bool:
    """A TLS failure worth trying again: the connection was lost, or an alert a server sends while it is
    not ready (internal_error; unrecognized_name from a router whose route is not there yet). Any other
    (no TLS on the port, no version or cipher in common, a certificate refused) is the same next time."""
    return isinstance(error, _SSL_CONNECTION_LOST) or getattr(error, "reason", None) in _TLS_PASSING


# TLS errors that say only that the connection went away (retried, as any lost connection).
_SSL_CONNECTION_LOST = (
    ssl_module.SSLEOFError,
    ssl_module.SSLSyscallError,
    ssl_module.SSLZeroReturnError,
)
_TLS_PASSING = frozenset({"TLSV1_ALERT_INTERNAL_ERROR", "TLSV1_UNRECOGNIZED_NAME"})


def _retry_after(error: Exception, most: float) -> float | None:
    """A 503's Retry-After in seconds (RFC 9110 §10.2.3), at most `most`; the date form is not read."""
    if isinstance(error, InvalidStatus):
        value = error.headers.get("Retry-After") or ""
        if value.isascii() and value.isdigit() and len(value) < 10:
            return min(float(value), most)
    return None


def _backoff(first: float, most: float, failures: int) -> float:
    """The delay after `failures` failed attempts: a ceiling doubling from `first` up to `most`, the delay
    drawn from its upper half (jitter: clients that lost one server do not come back all at once)."""
    ceiling = min(most, first * 2.0 ** min(failures, 64))  # 2.0**1024 would overflow
    return random.uniform(ceiling / 2, ceiling)


def _retry_delay(error: Exception, first: float, most: float, failures: int) -> float | None:
    """Seconds to wait before the next attempt after `error` (`_backoff`, or a 503's Retry-After if
    longer), or None when trying again cannot help."""
    if not _retryable(error):
        return None
    delay = _backoff(first, most, failures)
    retry_after = _retry_after(error, most)
    return delay if retry_after is None else max(delay, retry_after)


def _naming(error: OSError, uri: WebSocketURI) -> OSError | None:
    """`error` (a name that does not resolve, a refused connection) as the same type, saying which host
    and port it was about; None if it says already (asyncio's default loop names a refused address,
    getaddrinfo and uvloop do not)."""
    reason = error.strerror or str(error) or type(error).__name__
    if f"'{uri.host}', {uri.port}" in reason:  # asyncio's "Connect call failed ('::1', 9, 0, 0)"
        return None
    host = f"[{uri.host}]" if ":" in uri.host else uri.host
    message = f"{reason} (connecting to {host}:{uri.port})"
    return type(error)(message) if error.errno is None else type(error)(error.errno, message)


class connect:  # a class used like a function: `async with connect(...)` or `await connect(...)`
    """Open a WebSocket connection to `uri`.

    Use as `async with connect(uri) as ws:` (closes on exit) or `ws = await connect(uri)`; or
    `async for ws in connect(uri):` to reconnect each time a connection ends (see `__aiter__`).

    Args:
        uri: a ws:// or wss:// URI.
        subprotocols: subprotocols to offer, in order of preference.
        additional_headers: more header fields for the Upgrade request. An Origin, User-Agent or
            Authorization field here replaces the one from `origin`, `user_agent` or the URI's credentials,
            and a Host field replaces the URI's (on redirects to another origin it is dropped). The fields
            the handshake sets (Upgrade, Connection, Sec-WebSocket-*) are refused.
        origin: an Origin header value.
        user_agent: the User-Agent header (None to send none).
        ssl: an `ssl.SSLContext` for wss:// (default: `ssl.create_default_context()`, which verifies the
            server's certificate and host name against the system's CAs).
        server_hostname: the name to check the server certificate against (default: the URI's host).
        proxy: True (default) to use the `https_proxy` (wss://) or `http_proxy` (ws://) environment variable
            unless `no_proxy` covers the host; a URL such as "http://user:password@proxy:3128" to use that
            HTTP proxy; None or False to connect directly. The client asks the proxy for a tunnel (CONNECT).
        compression: "deflate" (the default) offers permessage-deflate (RFC 7692) with
            `ClientPerMessageDeflateFactory`'s defaults; None disables compression.
        extensions: the extension factories to offer, instead of what `compression` selects.
        max_redirects: how many 301/302/303/307/308 answers to follow (0: none); never from wss:// to ws://.
        unix_socket: the path of a Unix socket to connect to instead of the URI's host and port, which
            still give the Host header, the path, and TLS's server name for wss:// (no proxy is used).
            Redirects to the same host and port connect to it again.
        sock: a connected socket (TCP or Unix) to run the handshake on, instead of connecting: the first
            attempt only (a redirect opens a connection of its own). Not with `unix_socket`.
        reconnect_backoff: (first, most) seconds between attempts of `async for ws in connect(...)`: a
            ceiling that doubles from `first` up to `most` after each failed attempt, each delay drawn
            between half the ceiling and the ceiling (jitter; default (1.0, 60.0)).
        **options: the connection options of `ConnectionOptions` (max_message_size, open_timeout, ...).

    Raises:
        InvalidURI: for a URI that is not ws:// or wss://, or has a bad port (0 included).
        UsageError: at once, for a header HTTP/1.1 cannot carry (a name that is not a token; CR, LF or NUL
            in a value...) or one the handshake sets itself.
        TypeError: at once, for `subprotocols` given as one string, or a `proxy` of another type.
        ValueError: at once, for a subprotocol that is not a token or is repeated, or a bad proxy URL.
        InvalidStatus: when the server answers with an HTTP status other than 101.
        InvalidRedirect: for a redirect that is not followed (loop, too many, wss:// to ws://, no Location).
        InvalidCertificate: when the server's TLS certificate cannot be verified.
        ProxyError: when the proxy cannot be reached or refuses the tunnel (`ProxyAuthenticationError` for
            407 and 401 answers).
        InvalidHandshake: when the server's answer breaks RFC 6455.
        OSError: when the TCP connection fails (refused, unreachable...).
        TimeoutError: when the opening handshake takes longer than `open_timeout`; the message names the
            URI, the timeout and the stage (connecting, the proxy's tunnel, waiting for the answer).
    """

    def __init__(
        self,
        uri: str,
        *,
        subprotocols: Sequence[str] | None = (),
        additional_headers: HeadersLike = (),
        origin: str | None = None,
        user_agent: str | None = USER_AGENT,
        ssl: ssl_module.SSLContext | None = None,
        server_hostname: str | None = None,
        proxy: ProxyOption = True,
        max_redirects: int = 10,
        compression: str | None = "deflate",
        extensions: Sequence[ClientExtensionFactory] | None = None,
        unix_socket: str | bytes | os.PathLike[str] | os.PathLike[bytes] | None = None,
        sock: socket.socket | None = None,
        reconnect_backoff: tuple[float, float] = (1.0, 60.0),
        **options: Any,
    ) -> None:
        if not isinstance(reconnect_backoff, tuple | list) or len(reconnect_backoff) != 2:
            raise TypeError(
                f"reconnect_backoff must be (first, most) in seconds, not {reconnect_backoff!r}"
            )
        first = seconds("reconnect_backoff's first delay", reconnect_backoff[0], optional=False)
        most = seconds("reconnect_backoff's longest delay", reconnect_backoff[1], optional=False)
        assert first is not None and most is not None
        if not first <= most:
            raise ValueError(
                f"reconnect_backoff must be (first, most) with 0 < first <= most, not {reconnect_backoff!r}"
            )
        self._backoff = (first, most)
        self.uri = parse_uri(uri)
        if unix_socket is not None and sock is not None:
            raise TypeError("give unix_socket or sock, not both")
        if isinstance(proxy, str) and (unix_socket is not None or sock is not None):
            raise TypeError(
                f"give {'sock' if sock is not None else 'unix_socket'} or a proxy, not both"
            )
        if unix_socket is not None and not isinstance(unix_socket, str | bytes | os.PathLike):
            raise TypeError(f"unix_socket must be a path, not {unix_socket!r}")
        if sock is not None and not isinstance(sock, socket.socket):
            raise TypeError(f"sock must be a connected socket.socket, not {sock!r}")
        for name, text in (("origin", origin), ("user_agent", user_agent)):
            if text is not None and not isinstance(text, str):
                raise TypeError(f"{name} must be a string or None, not {text!r}")
        self._unix_socket = None if unix_socket is None else os.fspath(unix_socket)
        self._sock = sock
        if not self.uri.secure and (ssl is not None or server_hostname is not None):
            raise InvalidURI(redact_uri(uri), "ssl and server_hostname need a wss:// URI")
        if isinstance(proxy, str):
            parse_proxy(proxy)  # a bad URL is refused now, not when connecting
        elif not isinstance(proxy, bool | None):
            raise TypeError(
                f"proxy must be a URL string, True (from the environment) or None, not {proxy!r}"
            )
        # Redirects start from the URI without its credentials (the Authorization header carries them):
        # they stay out of relative Locations and of error messages.
        self._raw_uri = redact_uri(uri, replacement="")
        RedirectChain(
            self._raw_uri, max_redirects
        )  # checks max_redirects now, not at the first redirect
        self._max_redirects = max_redirects
        self._proxy = proxy
        self.options = connection_options("connect", options, _CONNECT_PARAMETERS)
        # A field in additional_headers replaces the one an option makes (RFC 9110 §5.3: these fields are
        # not lists, so they are sent once). Credentials in the URI are sent as an Authorization header
        # would be, so they follow a redirect to the same origin only.
        given = Headers(additional_headers)
        defaults = [
            ("Origin", origin),
            ("User-Agent", user_agent),
            ("Authorization", self.uri.authorization),
        ]
        self._headers = Headers(
            [(k, v) for k, v in defaults if v is not None and k not in given] + given.items()
        )
        self._user_agent = self._headers.get("User-Agent")  # also sent to the proxy with CONNECT
        self._subprotocols = check_subprotocols(subprotocols)
        self._extensions = extension_factories(
            compression, extensions, ClientPerMessageDeflateFactory
        )
        # The request is built and checked now (headers, target), before any connection is opened for
        # it; the first attempt sends it (a redirect builds its own, with a fresh key).
        self._first: ClientHandshake | None = self._handshake(self.uri, self._headers)
        self._ssl = ssl
        self._server_hostname = server_hostname
        self._stage = ""
        self._cut_short: Response | None = None
        self.connection: ClientConnection | None = None

    def _handshake(self, uri: WebSocketURI, headers: Headers) -> ClientHandshake:
        """The handshake for one attempt (a fresh key each time); it checks the request it builds."""
        return ClientHandshake(
            uri.host_header,
            uri.target,
            subprotocols=self._subprotocols,
            extensions=self._extensions,
            extra_headers=headers,
        )

    async def _create(self) -> ClientConnection:
        chain = RedirectChain(self._raw_uri, self._max_redirects)
        uri, headers = self.uri, self._headers
        handshake, self._first = self._first or self._handshake(uri, headers), None
        timeout = asyncio.timeout(self.options.open_timeout)
        try:
            async with timeout:
                while True:
                    try:
                        connection = await self._open(uri, handshake)
                        break
                    except InvalidStatus as exc:
                        location = chain.next_uri(exc)
                        if location is None:
                            raise
                        try:
                            uri = parse_uri(location)
                        except InvalidURI as error:
                            raise InvalidRedirect(
                                f"redirect to an {error}", exc.status, exc.headers, exc.body
                            ) from None
                        headers = headers_for_redirect(headers, chain.uris[-2], location)
                        if uri.authorization is not None and "authorization" not in headers:
                            headers = Headers(headers.items())
                            headers.add("Authorization", uri.authorization)
                        handshake = self._handshake(uri, headers)
        except TimeoutError:
            if not timeout.expired():
                raise
            if self._cut_short is not None:
                handshake.check_response(self._cut_short)  # InvalidStatus: a 403 is not retried
            raise TimeoutError(
                f"timed out after open_timeout={self.options.open_timeout} s opening "
                f"{redact_uri(chain.uris[-1])} ({self._stage})"
            ) from None
        self.connection = connection
        return connection

    async def _open(self, uri: WebSocketURI, handshake: ClientHandshake) -> ClientConnection:
        """Connect to `uri` (through the proxy, if any) and run the opening `handshake` once."""
        self._cut_short = None
        ssl_context = None
        server_hostname = None
        if uri.secure:
            ssl_context = self._ssl or ssl_module.create_default_context()
            same_host = uri.host == self.uri.host
            server_hostname = (self._server_hostname if same_host else None) or uri.host
        loop = asyncio.get_running_loop()
        options = self.options
        connecting = "connecting" + (" and TLS handshake" if uri.secure else "")
        # A socket given, or a Unix socket, stands for the URI's origin: not for a redirect elsewhere.
        same_origin = (uri.host, uri.port) == (self.uri.host, self.uri.port)
        sock, self._sock = self._sock, None
        unix_socket = self._unix_socket if same_origin else None
        direct = sock is not None or unix_socket is not None
        proxy = None if direct else select_proxy(uri.secure, uri.host, uri.port, self._proxy)
        try:
            if unix_socket is not None:
                self._stage = f"{connecting} (Unix socket {unix_socket!r})"
                if unix_socket[:1] not in ("\0", b"\0") and len(os.fsencode(unix_socket)) > 107:
                    # asyncio says so; libuv (uvloop) says "No such file or directory".
                    too_long = OSError(errno.ENAMETOOLONG, "AF_UNIX path too long")
                    raise _naming_unix(too_long, unix_socket)
                try:
                    _, connection = await loop.create_unix_connection(
                        lambda: ClientConnection(options, handshake),
                        cast(str, unix_socket),  # or bytes, which asyncio and uvloop take too
                        ssl=ssl_context,
                        server_hostname=server_hostname,
                    )
                except OSError as exc:
                    if exc.errno not in _UNIX_CONNECT_ERRORS:
                        raise
                    raise _naming_unix(exc, unix_socket) from exc
            elif sock is not None:
                self._stage = f"{connecting} (on the socket given)"
                _, connection = await loop.create_connection(
                    lambda: ClientConnection(options, handshake),
                    sock=sock,
                    ssl=ssl_context,
                    server_hostname=server_hostname,
                )
            elif proxy is None:
                self._stage = connecting
                try:
                    _, connection = await loop.create_connection(
                        lambda: ClientConnection(options, handshake),
                        uri.host,
                        uri.port,
                        ssl=ssl_context,
                        server_hostname=server_hostname,
                    )
                except (socket.gaierror, ConnectionRefusedError) as exc:
                    named = _naming(exc, uri)
                    if named is None:
                        raise
                    raise named from exc
                except UnicodeError as exc:
                    # The resolver's IDNA encoding: a label empty or over 63 characters. (Only a name
                    # to resolve: with unix_socket= or sock=, the host fills the Host field only.)
                    scheme = "wss" if uri.secure else "ws"
                    where = f"{scheme}://{uri.host_header}{uri.target}"
                    raise InvalidURI(where, f"bad host name: {exc}") from None
            else:
                self._stage = f"opening a tunnel through the proxy {proxy.url}"
                sock = await open_tunnel(proxy, uri.host, uri.port, user_agent=self._user_agent)
                self._stage = connecting
                try:
                    # TLS to the server runs inside the tunnel: the proxy sees only encrypted bytes.
                    _, connection = await loop.create_connection(
                        lambda: ClientConnection(options, handshake),
                        sock=sock,
                        ssl=ssl_context,
                        server_hostname=server_hostname,
                    )
                except BaseException:
                    sock.close()
                    raise
        except ssl_module.SSLCertVerificationError as exc:
            reason = exc.verify_message or str(exc)
            if exc.verify_code in _NAME_MISMATCH:
                hint = "the certificate is for another name: connect by a name it is for, or pass server_hostname="
            elif exc.verify_code in _OUT_OF_DATE:
                hint = "check the certificate's dates and this machine's clock"
            else:
                # SSL_CERT_FILE serves a ws:// URI redirected to wss:// and the CLI, which take no ssl=.
                hint = (
                    "to trust a private CA, pass ssl=ssl.create_default_context(cafile=...), or set "
                    "SSL_CERT_FILE to its certificate file"
                )
            raise InvalidCertificate(
                f"the TLS certificate of {uri.host}:{uri.port} could not be verified: {reason} ({hint})",
                reason,
            ) from exc
        except ssl_module.SSLError as exc:
            if exc.reason != "WRONG_VERSION_NUMBER":
                raise
            # What came back is no TLS record: a server without TLS that answered the hello in plain
            # HTTP (a 400), as upwire's own and nginx's do.
            error = ssl_module.SSLError(
                exc.errno,
                f"{uri.host}:{uri.port} answered the TLS handshake with something that is not TLS "
                f"({exc.reason}): a server without TLS on that port does so (should the URI be ws://?)",
            )
            # What code that tells TLS errors apart reads.
            error.reason, error.library = exc.reason, exc.library
            raise error from exc
        except (ConnectionResetError, ConnectionAbortedError) as exc:
            if not uri.secure:
                raise
            # TCP was open (a refused connect is ConnectionRefusedError): TLS failed, and the server
            # said only that. A server without TLS that does not answer the TLS hello in plain HTTP
            # ends this way, and with TLS 1.2 a missing client certificate.
            detail = f"{exc.strerror or str(exc) or type(exc).__name__}; "
            message = (
                f"{uri.host}:{uri.port} closed the connection during the TLS handshake ({detail}a "
                "server without TLS on that port does so (should the URI be ws://?), and so does one "
                "that requires a client certificate when none is offered: see "
                "ssl.SSLContext.load_cert_chain)"
            )
            raise (
                type(exc)(message) if exc.errno is None else type(exc)(exc.errno, message)
            ) from exc
        self._stage = "waiting for the handshake response"
        try:
            await connection._opening
        except BaseException:
            if connection.transport is not None:
                connection.transport.abort()
            # An error answer whose body has not ended (it lasts until the server closes, from a server
            # that keeps the connection open; or its length or last chunk never comes): if open_timeout
            # ended the wait, its status is the answer (see `_create`), not a TimeoutError to retry.
            self._cut_short = connection._reader.answer_so_far()
            # The error's traceback holds this frame, and so the connection: the connection must not
            # hold the error in turn, or the cycle would wait for a full garbage collection.
            connection._opening = connection.loop.create_future()
            connection._opening.cancel()
            raise
        return connection

    def __await__(self) -> Generator[Any, None, ClientConnection]:
        return self._create().__await__()

    async def __aenter__(self) -> ClientConnection:
        return await self._create()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        """Close the connection as `ClientConnection.__aexit__` does (1011 when the block raised)."""
        if self.connection is not None:
            await self.connection.__aexit__(exc_type, exc, tb)

    def __aiter__(self) -> AsyncIterator[ClientConnection]:
        """`async for websocket in connect(uri):` a connection, then a new one each time the loop's body
        ends (the connection closed, say), reconnecting with backoff after errors that may pass.

        Retried: a failed or lost TCP connection (`OSError`, or the server closing before its answer),
        `open_timeout`, an HTTP 500, 502, 503 or 504 answer (a 503's `Retry-After` in seconds is
        honoured, within the backoff's maximum), a proxy that cannot be reached, a TLS alert that may pass
        (internal_error, unrecognized_name). Anything else (a 403, a bad certificate, a TLS handshake the
        server refuses with an alert: no TLS on the port, no version or cipher in common, a client
        certificate missing or refused; a handshake that breaks RFC 6455) is raised. A connection that
        ends within `reconnect_backoff`'s first delay counts as a failed attempt. A connection is closed
        when its iteration ends; after `break` (or an exception) only when the iterator is finalized,
        so close it first if that matters.
        """
        if self._sock is not None:
            raise UsageError("cannot reconnect on a socket given with sock=: connect again instead")
        return self._reconnecting()

    async def _reconnecting(self) -> AsyncIterator[ClientConnection]:
        loop = asyncio.get_running_loop()
        first, most = self._backoff
        failures = 0
        while True:
            try:
                connection = await self._create()
            except Exception as exc:
                delay = _retry_delay(exc, first, most, failures)
                if delay is None:
                    raise
                failures += 1
                logger.info(
                    "connecting to %s failed (%s); attempt %d in %.2f s",
                    redact_uri(self._raw_uri),
                    exc,
                    failures + 1,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            opened = loop.time()
            try:
                yield connection
            finally:
                await connection.close()
            if loop.time() - opened >= first:
                failures = 0
                continue
            # Over within `first` seconds (a server that accepts, then closes at once: 1013, an
            # authorization check after the handshake): a failed attempt, or the loop would spin.
            failures += 1
            await asyncio.sleep(_backoff(first, most, failures - 1))


# The parameters of `connect` itself, for the hint of an unknown keyword (see `connection_options`).
_CONNECT_PARAMETERS = tuple(inspect.signature(connect.__init__).parameters)[1:-1]
