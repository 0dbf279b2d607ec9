"""The asyncio WebSocket client: `connect("ws://...")`.

Owns: parsing ws:// and wss:// URIs, opening the TCP (and TLS) connection, directly or through an HTTP proxy
(`proxy`), sending the Upgrade request and checking the answer through `protocol.handshake`, following
redirects (`redirects`), all within `open_timeout`.
"""

from __future__ import annotations

import asyncio
import re
import ssl as ssl_module
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from upwire.connection import Connection, ConnectionOptions, extension_factories
from upwire.exceptions import InvalidCertificate, InvalidHandshake, InvalidStatus, InvalidURI
from upwire.protocol.connection import Connection as ProtocolConnection
from upwire.protocol.connection import Role
from upwire.protocol.extensions import ClientExtensionFactory, ClientPerMessageDeflateFactory
from upwire.protocol.handshake import ClientHandshake
from upwire.protocol.http import (
    Headers,
    HeadersLike,
    ResponseReader,
    basic_authorization,
    serialize_request,
)
from upwire.proxy import ProxyOption, open_tunnel, select_proxy
from upwire.redirects import RedirectChain, headers_for_redirect

__all__ = ["ClientConnection", "WebSocketURI", "connect", "parse_uri"]

USER_AGENT = "upwire (Python)"


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
    authentication. Error messages never show them.

    Raises:
        InvalidURI: for another scheme, a missing host, a bad port, or a fragment.
    """
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        raise InvalidURI(redact_uri(uri), str(exc)) from None
    if parts.scheme not in ("ws", "wss"):
        raise InvalidURI(redact_uri(uri), "the scheme must be ws:// or wss://")
    if not parts.hostname:
        raise InvalidURI(redact_uri(uri), "no host")
    if parts.fragment or uri.endswith("#"):
        # RFC 6455 §3: fragment identifiers are meaningless in WebSocket URIs and MUST NOT be used.
        raise InvalidURI(redact_uri(uri), "a WebSocket URI cannot have a #fragment")
    secure = parts.scheme == "wss"
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return WebSocketURI(
        secure, parts.hostname, port or (443 if secure else 80), target, basic_authorization(parts)
    )


_USER_INFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#@]*@")


def redact_uri(uri: str) -> str:
    """`uri` with its user information (user name and password) replaced by `***`, for messages."""
    return _USER_INFO.sub(r"\1***@", uri)


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
        self.transport.write(serialize_request(self._handshake.request))

    def _handshake_data(self, data: bytes) -> None:
        try:
            response = self._reader.feed(data)
            if response is None:
                return
            self.response = response
            self.subprotocol = self._handshake.check_response(response)
        except InvalidHandshake as exc:
            self._handshake_failed(exc)
            return
        protocol = ProtocolConnection(
            Role.CLIENT,
            extensions=self._handshake.extensions,
            max_message_size=self.options.max_message_size,
            max_frame_size=self.options.max_frame_size,
        )
        if not self._opening.done():
            self._opening.set_result(None)
        self._opened(protocol, self._reader.trailing_data)

    def _handshake_failed(self, error: InvalidHandshake) -> None:
        if not self._opening.done():
            self._opening.set_exception(error)
        if self.transport is not None:
            self.transport.close()

    def eof_received(self) -> bool | None:
        """The server closed its side; during the handshake this may complete an error response."""
        if self.protocol is None and not self._opening.done():
            try:
                response = self._reader.feed_eof()
                if response is not None:
                    self.response = response
                    self._handshake.check_response(response)
                raise InvalidHandshake("connection closed during the opening handshake", 0)
            except InvalidHandshake as exc:
                self._handshake_failed(exc)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        """Fail the opening if it was still in progress."""
        if not self._opening.done():
            error = InvalidHandshake(
                f"connection lost during the opening handshake{f': {exc}' if exc else ''}", 0
            )
            self._opening.set_exception(error)
        super().connection_lost(exc)


class connect:  # a class used like a function: `async with connect(...)` or `await connect(...)`
    """Open a WebSocket connection to `uri`.

    Use as `async with connect(uri) as ws:` (closes on exit) or `ws = await connect(uri)`.

    Args:
        uri: a ws:// or wss:// URI.
        subprotocols: subprotocols to offer, in order of preference.
        additional_headers: more header fields for the Upgrade request.
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
        **options: the connection options of `ConnectionOptions` (max_message_size, open_timeout, ...).

    Raises:
        InvalidURI: for a URI that is not ws:// or wss://.
        InvalidStatus: when the server answers with an HTTP status other than 101.
        InvalidRedirect: for a redirect that is not followed (loop, too many, wss:// to ws://, no Location).
        InvalidCertificate: when the server's TLS certificate cannot be verified.
        ProxyError: when the proxy cannot be reached or refuses the tunnel (`ProxyAuthenticationError` for
            407 and 401 answers).
        InvalidHandshake: when the server's answer breaks RFC 6455.
        OSError: when the TCP connection fails (refused, unreachable...).
        TimeoutError: when the opening handshake takes longer than `open_timeout`.
    """

    def __init__(
        self,
        uri: str,
        *,
        subprotocols: Sequence[str] = (),
        additional_headers: HeadersLike = (),
        origin: str | None = None,
        user_agent: str | None = USER_AGENT,
        ssl: ssl_module.SSLContext | None = None,
        server_hostname: str | None = None,
        proxy: ProxyOption = True,
        max_redirects: int = 10,
        compression: str | None = "deflate",
        extensions: Sequence[ClientExtensionFactory] | None = None,
        **options: Any,
    ) -> None:
        self.uri = parse_uri(uri)
        if not self.uri.secure and (ssl is not None or server_hostname is not None):
            raise InvalidURI(redact_uri(uri), "ssl and server_hostname need a wss:// URI")
        if not isinstance(proxy, str | bool | None):
            raise TypeError(
                f"proxy must be a URL string, True (from the environment) or None, not {proxy!r}"
            )
        # Redirects start from the URI without its credentials (the Authorization header carries them):
        # they stay out of relative Locations and of error messages.
        self._raw_uri = _USER_INFO.sub(r"\1", uri)
        RedirectChain(
            self._raw_uri, max_redirects
        )  # checks max_redirects now, not at the first redirect
        self._max_redirects = max_redirects
        self._proxy = proxy
        self._user_agent = user_agent
        self.options = ConnectionOptions(**options)
        headers = Headers()
        if origin is not None:
            headers.add("Origin", origin)
        if user_agent is not None:
            headers.add("User-Agent", user_agent)
        for name, value in Headers(additional_headers).items():
            headers.add(name, value)
        # Credentials in the URI are sent as an Authorization header would be (one given wins), so they
        # follow a redirect to the same origin only.
        if self.uri.authorization is not None and "authorization" not in headers:
            headers.add("Authorization", self.uri.authorization)
        self._headers = headers
        self._subprotocols = list(subprotocols)
        self._extensions = extension_factories(
            compression, extensions, ClientPerMessageDeflateFactory
        )
        self._ssl = ssl
        self._server_hostname = server_hostname
        self.connection: ClientConnection | None = None

    async def _create(self) -> ClientConnection:
        chain = RedirectChain(self._raw_uri, self._max_redirects)
        uri, headers = self.uri, self._headers
        async with asyncio.timeout(self.options.open_timeout):
            while True:
                try:
                    connection = await self._open(uri, headers)
                    break
                except InvalidStatus as exc:
                    location = chain.next_uri(exc)
                    if location is None:
                        raise
                    headers = headers_for_redirect(headers, chain.uris[-2], location)
                    uri = parse_uri(location)
                    if uri.authorization is not None and "authorization" not in headers:
                        headers = Headers(headers.items())
                        headers.add("Authorization", uri.authorization)
        self.connection = connection
        return connection

    async def _open(self, uri: WebSocketURI, headers: Headers) -> ClientConnection:
        """Connect to `uri` (through the proxy, if any) and run the opening handshake once."""
        handshake = ClientHandshake(
            uri.host_header,
            uri.target,
            subprotocols=self._subprotocols,
            extensions=self._extensions,
            extra_headers=headers,
        )
        ssl_context = None
        server_hostname = None
        if uri.secure:
            ssl_context = self._ssl or ssl_module.create_default_context()
            same_host = uri.host == self.uri.host
            server_hostname = (self._server_hostname if same_host else None) or uri.host
        loop = asyncio.get_running_loop()
        options = self.options
        proxy = select_proxy(uri.secure, uri.host, uri.port, self._proxy)
        try:
            if proxy is None:
                _, connection = await loop.create_connection(
                    lambda: ClientConnection(options, handshake),
                    uri.host,
                    uri.port,
                    ssl=ssl_context,
                    server_hostname=server_hostname,
                )
            else:
                # TLS to the server runs inside the tunnel: the proxy sees only encrypted bytes.
                sock = await open_tunnel(proxy, uri.host, uri.port, user_agent=self._user_agent)
                _, connection = await loop.create_connection(
                    lambda: ClientConnection(options, handshake),
                    sock=sock,
                    ssl=ssl_context,
                    server_hostname=server_hostname,
                )
        except ssl_module.SSLCertVerificationError as exc:
            reason = exc.verify_message or str(exc)
            raise InvalidCertificate(
                f"the TLS certificate of {uri.host}:{uri.port} could not be verified: {reason} "
                "(to trust a private CA, pass ssl=ssl.create_default_context(cafile=...))",
                reason,
            ) from exc
        try:
            await connection._opening
        except BaseException:
            if connection.transport is not None:
                connection.transport.abort()
            raise
        return connection

    def __await__(self) -> Generator[Any, None, ClientConnection]:
        return self._create().__await__()

    async def __aenter__(self) -> ClientConnection:
        return await self._create()

    async def __aexit__(self, *exc_info: object) -> None:
        if self.connection is not None:
            await self.connection.close()
