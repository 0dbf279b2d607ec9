"""The exceptions upwire raises, rooted in one `WebSocketError`.

Owns: the error hierarchy and the wording of messages. Knows nothing about sockets or the protocol's rules;
every other module raises these.

Two families matter most, as in h11: `ProtocolError` means the *peer* broke RFC 6455 (it carries the close code
sent on the wire), `UsageError` means *this program* misused the library (it is a bug to fix in the caller).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from upwire.protocol.http import HeadersLike

__all__ = [
    "ConcurrencyError",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "InvalidCertificate",
    "InvalidHandshake",
    "InvalidRedirect",
    "InvalidStatus",
    "InvalidURI",
    "PayloadTooBig",
    "ProtocolError",
    "ProxyAuthenticationError",
    "ProxyError",
    "UsageError",
    "WebSocketError",
]


class WebSocketError(Exception):
    """Base class of every exception raised by upwire."""


class ProtocolError(WebSocketError):
    """The peer violated the WebSocket protocol.

    Attributes:
        close_code: the close code sent to the peer because of this error (1002, 1007, 1009, ...).
    """

    def __init__(self, message: str, close_code: int = 1002) -> None:
        super().__init__(message)
        self.close_code = close_code


class PayloadTooBig(ProtocolError):
    """A frame or message exceeded a configured size limit (close code 1009)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 1009)


# The longest message a handshake error keeps (see `shown`): room for upwire's own long ones (a long host
# name, a reason, a hint), not for kilobytes quoted from a peer.
MESSAGE_MAX = 512
# C0 and C1 controls, DEL: a value quoted raw would put line breaks or terminal escapes in a log.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f]")


def shown(message: object) -> str:
    """A handshake error's message as it is kept: control characters escaped, as `repr` would, and cut in
    the middle past 512 characters, keeping its start and its end, which says why.

    Such a message quotes what the peer sent (a header's value, a reason phrase, a target), which may be
    kilobytes, or carry terminal escapes; it goes into logs (and, on the server, the response's body).
    """
    message = _CONTROLS.sub(_escaped, str(message))
    if len(message) > MESSAGE_MAX:
        head, tail = MESSAGE_MAX * 3 // 5, MESSAGE_MAX // 4
        cut = len(message) - head - tail
        message = f"{message[:head]} [... {cut} characters ...] {message[-tail:]}"
    return message


def _escaped(match: re.Match[str]) -> str:
    return repr(match.group())[1:-1]


class InvalidHandshake(WebSocketError):
    """The opening handshake failed.

    On the server side, `status`, `headers` and `body` describe the HTTP error response that was (or will be)
    sent; on the client side, they describe what the server answered when it answered with HTTP.

    Attributes:
        status: the HTTP status code (400, 403, 426, ...), or 0 when no HTTP response applies.
        headers: the response headers (a case-insensitive `Headers`: `headers.get("Retry-After")`).
        body: the response body.
    """

    def __init__(
        self,
        message: object,
        status: int = 400,
        headers: HeadersLike = (),
        body: bytes = b"",
    ) -> None:
        # Imported here: the protocol's modules import this one.
        from upwire.protocol.http import Headers

        super().__init__(shown(message))
        self.status = status
        self.headers = Headers(headers)
        self.body = body


class InvalidStatus(InvalidHandshake):
    """The server answered the opening handshake with an HTTP status other than 101."""


class InvalidURI(WebSocketError, ValueError):
    """A WebSocket URI could not be used (wrong scheme, no host, bad port...).

    Not an `InvalidHandshake`: no handshake was tried, and trying again cannot help (a retry loop that
    catches `InvalidHandshake` stops here).
    """

    def __init__(self, uri: str, why: str) -> None:
        super().__init__(f"invalid WebSocket URI {uri!r}: {why}")
        self.uri = uri


class InvalidRedirect(InvalidStatus):
    """The server redirected the opening handshake somewhere the client will not follow.

    Raised for a redirect without a usable Location, from wss:// to ws://, a loop, or more than
    `max_redirects` redirects; `status`, `headers` and `body` are those of the last redirect response.
    """


class InvalidCertificate(InvalidHandshake):
    """The server's TLS certificate could not be verified (untrusted issuer, wrong host name, expired...).

    The `ssl.SSLCertVerificationError` is the `__cause__`.

    Attributes:
        verify_message: OpenSSL's reason, e.g. "Hostname mismatch, certificate is not valid for 'a.test'".
    """

    def __init__(self, message: str, verify_message: str) -> None:
        super().__init__(message, status=0)
        self.verify_message = verify_message


class ProxyError(InvalidHandshake):
    """The HTTP proxy could not be reached or refused to open a tunnel (CONNECT) to the server.

    `status`, `headers` and `body` are those of the proxy's answer (`status` is 0 when it gave none).
    """


class ProxyAuthenticationError(ProxyError):
    """The HTTP proxy asked for credentials or refused the ones given (407, or 401 from some proxies)."""


class ConnectionClosed(WebSocketError):
    """The connection is closed; raised by `recv`, `send` and friends after the end.

    Attributes:
        code: the connection's close code: the peer's (1005 if its close frame had none); the one this side
            failed the connection with (a protocol error, a keepalive or idle timeout, an error in the
            application) when no close frame came back; else 1006 (lost without a close frame).
        reason: the close reason that goes with `code`.
        sent: the (code, reason) of the close frame this side sent (code None for a frame without one),
            or None if it sent none.
    """

    def __init__(
        self,
        code: int,
        reason: str,
        detail: str = "",
        *,
        sent: tuple[int | None, str] | None = None,
    ) -> None:
        text = f"connection closed: code {code}" + (f" ({reason})" if reason else "")
        if detail:
            text += f"; {detail}"
        super().__init__(text)
        self.code = code
        self.reason = reason
        self.sent = sent


class ConnectionClosedOK(ConnectionClosed):
    """The connection closed cleanly: 1000 (normal), 1001 (going away) or a close frame without a code."""


class ConnectionClosedError(ConnectionClosed):
    """The connection closed with an error code, or was lost without a closing handshake."""


class UsageError(WebSocketError):
    """The library was used in a way it does not allow (a bug in the calling code)."""


class ConcurrencyError(UsageError, RuntimeError):
    """Two tasks did at once what only one may do (for example, two concurrent `recv` calls)."""
