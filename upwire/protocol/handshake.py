"""The opening handshake (RFC 6455 §4): the client's Upgrade request and the server's 101 answer.

Owns: every rule of the opening handshake on both sides — request validation with the right HTTP error
(400, 405, 426, 505), `Sec-WebSocket-Key`/`Accept`, version, subprotocol negotiation, and the client's checks of
the server's answer.

Must not know: sockets, or how HTTP bytes are parsed (`http` does that).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Callable, Sequence
from typing import NamedTuple

from upwire.exceptions import InvalidHandshake, InvalidStatus, UsageError
from upwire.protocol.extensions.base import (
    ClientExtensionFactory,
    Extension,
    NegotiationError,
    ServerExtensionFactory,
    parse_extensions,
    serialize_extensions,
)
from upwire.protocol.frames import select_speedup
from upwire.protocol.http import (
    FIELD_NAME,
    Headers,
    HeadersLike,
    Request,
    Response,
    checked_request_head,
    http_error,
    list_tokens,
    serialize_fields,
    serialize_response,
    target_authority,
)

__all__ = [
    "GUID",
    "ClientHandshake",
    "ServerHandshake",
    "accept_key",
    "accept_key_py",
    "check_subprotocols",
    "generate_key",
]

# RFC 6455 §1.3: the GUID appended to the key before hashing.
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

SubprotocolSelector = Callable[[Sequence[str]], str | None]


def generate_key() -> str:
    """Return a fresh Sec-WebSocket-Key: base64 of 16 random bytes (RFC 6455 §4.1)."""
    return base64.b64encode(os.urandom(16)).decode("ascii")


def accept_key_py(key: str) -> str:
    """Return the Sec-WebSocket-Accept value for `key` (RFC 6455 §4.2.2).

    The pure-Python reference; `accept_key` is the C version from `upwire._speedups` when it is built
    (its own SHA-1: hashlib's object costs more to set up than hashing the 60 bytes).
    """
    digest = hashlib.sha1((key + GUID).encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


accept_key = select_speedup(accept_key_py)


class Accepted(NamedTuple):
    """A valid opening handshake request, ready to be answered with `response`.

    Attributes:
        response: the 101 response.
        subprotocol: the subprotocol chosen, if any.
        extensions: the extensions accepted, in the order they apply.
        head: `response` written as bytes, what `serialize_response(response)` gives.
    """

    response: Response
    subprotocol: str | None
    extensions: list[Extension]
    head: bytes


class ServerHandshake:
    """Validate a client's Upgrade request and build the 101 response.

    Args:
        subprotocols: the subprotocols this server supports, in order of preference.
        select_subprotocol: optional hook choosing from the client's offer (returns None for none).
        extensions: the extensions this server can accept (e.g. permessage-deflate), in order of
            preference.
        origins: the allowed values of the Origin header (None in the list allows requests without one;
            a compiled pattern allows the origins it matches whole); None allows every origin.
        extra_headers: header fields added to every 101 response.
    """

    def __init__(
        self,
        *,
        subprotocols: Sequence[str] | None = (),
        select_subprotocol: SubprotocolSelector | None = None,
        extensions: Sequence[ServerExtensionFactory] = (),
        origins: Sequence[str | re.Pattern[str] | None] | None = None,
        extra_headers: HeadersLike = (),
    ) -> None:
        self._subprotocols = check_subprotocols(subprotocols, unique=False)
        self._select = select_subprotocol
        self._extensions = list(extensions)
        if isinstance(origins, str | bytes):
            raise TypeError(
                f"origins must be a list of origins, not a single string: [{origins!r}]"
            )
        self._origins: set[str | None] | None = None
        self._origin_patterns: list[re.Pattern[str]] = []
        if origins is not None:
            self._origins = set()
            for allowed in origins:
                if isinstance(allowed, re.Pattern) and isinstance(allowed.pattern, str):
                    self._origin_patterns.append(allowed)
                elif allowed is None or isinstance(allowed, str):
                    self._origins.add(allowed)
                else:
                    raise TypeError(
                        f"origins takes strings, None and compiled str patterns, not {allowed!r}"
                    )
        self._extra_headers = Headers(extra_headers)
        # The end of every 101 head, written (and its fields checked) once, here.
        self._head_end = serialize_fields(self._extra_headers._fields) + b"\r\n"

    def accept(self, request: Request) -> Accepted:
        """Check `request` against RFC 6455 §4.2.1 and build the 101 Switching Protocols response.

        Raises:
            InvalidHandshake: with the HTTP status, headers and body of the error response to send.
        """
        # Every field the handshake reads, gathered in one pass over the headers.
        found = request.headers._collect(_REQUEST_FIELDS)
        key = _check_request(request, found)
        if self._origins is not None:
            origins = found.get("origin")
            origin = ", ".join(origins) if origins else None
            if origin not in self._origins and not (
                origin is not None and any(p.fullmatch(origin) for p in self._origin_patterns)
            ):
                # RFC 6455 §4.2.2 (§10.2): a server may refuse origins it does not trust, with 403.
                shown = "(none)" if origin is None else origin or "(empty)"
                raise http_error(403, f"origin {shown} is not allowed")
        answer = accept_key(key)
        fields = [*_HEAD_FIELDS, answer]
        # The head is written from its parts: the fixed start, the key's answer, the negotiated fields
        # (checked as they are written) and the end made at construction.
        head = _HEAD_START + answer.encode("ascii") + b"\r\n"
        negotiated: list[str] = []
        subprotocol = None
        offered = found.get("sec-websocket-protocol")
        if offered:
            subprotocol = self._choose_subprotocol(offered)
            if subprotocol is not None:
                negotiated += ("Sec-WebSocket-Protocol", subprotocol)
        extensions: list[Extension] = []
        offers = found.get("sec-websocket-extensions")
        if offers and self._extensions:
            extensions, answers = self._negotiate_extensions(offers)
            if answers:
                negotiated += ("Sec-WebSocket-Extensions", answers)
        if negotiated:
            fields += negotiated
            head += serialize_fields(negotiated)
        fields += self._extra_headers._fields
        response = Response._of(101, Headers._of(fields))
        return Accepted(response, subprotocol, extensions, head + self._head_end)

    def _negotiate_extensions(self, values: list[str]) -> tuple[list[Extension], str]:
        """Accept the client's offers in its order (RFC 6455 §9.1), each by the first factory that takes it."""
        try:
            offers = parse_extensions(values)
        except NegotiationError as exc:
            raise http_error(400, str(exc)) from None
        accepted: list[Extension] = []
        for name, params in offers:
            for factory in self._extensions:
                if factory.name != name:
                    continue
                extension = factory.accept(params, accepted)
                if extension is not None:
                    accepted.append(extension)
                    break
        answer = serialize_extensions([(ext.name, ext.response_params()) for ext in accepted])
        return accepted, answer

    def _choose_subprotocol(self, values: list[str]) -> str | None:
        offered = [t for v in values for t in _split(v)]
        # RFC 6455 §4.2.1 (8) and §11.3.4: the field is a list of one or more tokens; §4.2.1 says a
        # request that does not follow the grammar gets an error (empty list elements are ignored,
        # RFC 9110 §5.6.1).
        for token in offered:
            if not FIELD_NAME.fullmatch(token):
                raise http_error(400, f"Sec-WebSocket-Protocol: {token!r} is not a token")
        if not offered:
            raise http_error(400, "empty Sec-WebSocket-Protocol: it names no subprotocol")
        if self._select is not None:
            chosen = self._select(offered)
            if chosen is not None and chosen not in offered:
                raise ValueError(
                    f"select_subprotocol chose {chosen!r}, which the client did not offer"
                )
            return chosen
        for protocol in self._subprotocols:
            if protocol in offered:
                return protocol
        if self._subprotocols:
            # RFC 6455 lets the server answer without one, but a client that asked for one fails such
            # an answer (browsers, Node's ws) or speaks a protocol the server does not: refuse here, with
            # what each side has (as websockets does).
            raise http_error(
                400,
                f"no subprotocol in common: the client offered {', '.join(offered)}; "
                f"this server speaks {', '.join(self._subprotocols)}",
            )
        return None


# The fields every 101 response starts with, before Sec-WebSocket-Accept's value, and its head up to there.
_HEAD_FIELDS = ("Upgrade", "websocket", "Connection", "Upgrade", "Sec-WebSocket-Accept")
_HEAD_START = serialize_response(Response._of(101, Headers._of(list(_HEAD_FIELDS[:4]))))[:-2] + (
    b"Sec-WebSocket-Accept: "
)

# The request fields the server's side of the handshake reads (lower-case).
_REQUEST_FIELDS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "upgrade",
        "connection",
        "sec-websocket-version",
        "sec-websocket-key",
        "origin",
        "sec-websocket-protocol",
        "sec-websocket-extensions",
    }
)


# RFC 3986 §3.2.2-3.2.3 host (an IP literal in brackets, or IPv4 / a registered name) and optional port.
_HOST = re.compile(
    r"(?:\[[0-9A-Za-z:.%!$&'()*+,;=~_-]+\]|[0-9A-Za-z.%!$&'()*+,;=~_-]+)(?::[0-9]*)?", re.ASCII
)
# An absolute-form request target starts with a scheme and "://" (RFC 9112 §3.2.2).
_ABSOLUTE_FORM = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://", re.ASCII)


def _absolute_form_host(target: str) -> bool:
    """Whether `target` is an absolute URI with a valid host (RFC 9112 §3.2.2: the request's host then)."""
    return (
        bool(_ABSOLUTE_FORM.match(target)) and _HOST.fullmatch(target_authority(target)) is not None
    )


def check_request(request: Request) -> str:
    """Validate an opening handshake request; return its Sec-WebSocket-Key.

    Raises:
        InvalidHandshake: 405 for a method other than GET, 400 for a malformed request (a bad target or
            Host, or a body), 426 when the request is not a WebSocket Upgrade or asks for a version other
            than 13, 505 for an HTTP major version other than 1.
    """
    return _check_request(request, request.headers._collect(_REQUEST_FIELDS))


def _check_request(request: Request, found: dict[str, list[str]]) -> str:
    """`check_request` over the fields `Headers._collect` found."""
    # RFC 6455 §4.2.1 (1): the method MUST be GET and the version at least HTTP/1.1. The version
    # first: another major version is not HTTP/1 (RFC 9112 §2.3), and its method means nothing here
    # (HTTP/2's connection preface, `PRI * HTTP/2.0`, gets 505, not 405).
    if not request.http_version.startswith("1.") and request.http_version != "0.9":
        raise http_error(505, f"HTTP/{request.http_version} is not supported; use HTTP/1.1")
    if request.method != "GET":
        raise http_error(
            405, f"method {request.method} is not allowed, use GET", [("Allow", "GET")]
        )
    if request.http_version in ("0.9", "1.0"):
        raise http_error(400, f"HTTP/{request.http_version} cannot upgrade; HTTP/1.1 is required")
    # (1) The Request-URI: a path (origin-form) or an absolute URI, without a fragment (RFC 6455 §3,
    # RFC 9112 §3.2): not `*` nor an authority.
    target = request.target
    if "#" in target or not (target.startswith("/") or _absolute_form_host(target)):
        raise http_error(400, f"request target {target!r} is neither a path nor an absolute URI")
    # A handshake request has no content (RFC 6455 §4.1); bytes sent as one would be read as frames.
    lengths = found.get("content-length")
    if "transfer-encoding" in found or (lengths and not all(map(_is_zero, lengths))):
        raise http_error(
            400, "an opening handshake request has no body (Content-Length or Transfer-Encoding)"
        )
    # (2) Exactly one Host header field with a valid value (RFC 9112 §3.2): host, IP literal, port.
    hosts = found.get("host")
    if not hosts or not ", ".join(hosts).strip():
        raise http_error(400, "missing Host header")
    if len(hosts) != 1 or not _HOST.fullmatch(hosts[0].strip(" \t")):
        raise http_error(400, f"invalid Host header {', '.join(hosts)!r}")
    # (3) Upgrade MUST include "websocket" (case-insensitive). (What browsers send is checked first.)
    upgrade = found.get("upgrade")
    if upgrade != ["websocket"] and "websocket" not in list_tokens(upgrade or ()):
        raise http_error(
            426,
            "this is a WebSocket endpoint; the request has no 'Upgrade: websocket' header",
            # RFC 9110 §7.8: Upgrade goes with the "upgrade" connection option; the server closes after.
            [("Upgrade", "websocket"), ("Connection", "Upgrade, close")],
        )
    # (4) Connection MUST include the "Upgrade" token (case-insensitive).
    connection = found.get("connection")
    if connection != ["Upgrade"] and "upgrade" not in list_tokens(connection or ()):
        raise http_error(400, "the Connection header does not include the 'Upgrade' token")
    # (6) Sec-WebSocket-Version MUST be 13; otherwise 426 listing the supported versions (§4.4).
    versions = found.get("sec-websocket-version")
    if versions != ["13"]:
        found_versions = ", ".join(versions) if versions else "none"
        raise http_error(
            426,
            f"unsupported Sec-WebSocket-Version ({found_versions}); this server speaks version 13",
            # A 426 names the protocol to upgrade to (RFC 9110 §15.5.22); §4.4 adds the versions.
            [
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade, close"),
                ("Sec-WebSocket-Version", "13"),
            ],
        )
    # (5) Sec-WebSocket-Key MUST be base64 of 16 bytes, sent once.
    keys = found.get("sec-websocket-key")
    if keys is None or len(keys) != 1:
        raise http_error(400, "there must be exactly one Sec-WebSocket-Key header")
    key = keys[0].strip()
    try:
        raw = base64.b64decode(key.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise http_error(400, f"Sec-WebSocket-Key {key!r} is not base64") from None
    if len(raw) != 16:
        raise http_error(400, f"Sec-WebSocket-Key decodes to {len(raw)} bytes instead of 16")
    return key


def _split(value: str) -> list[str]:
    # Optional white space is spaces and tabs only (RFC 9110 §5.6.3): `str.strip` would take more.
    return [t for t in (e.strip(" \t") for e in value.split(",")) if t]


# The fields the client's request gets from the handshake itself, and what to use instead of giving them.
_HANDSHAKE_FIELDS = {
    "upgrade": "it is always 'websocket'",
    "connection": "it is always 'Upgrade'",
    "sec-websocket-key": "it is fresh for every handshake",
    "sec-websocket-version": "it is always 13",
    "sec-websocket-protocol": "use subprotocols=",
    "sec-websocket-extensions": "use extensions= or compression=",
}


def _is_zero(length: str) -> bool:
    """A Content-Length value that says no content ("0", "00", ...)."""
    length = length.strip()
    return bool(length) and not length.strip("0")


def check_subprotocols(subprotocols: Sequence[str] | None, *, unique: bool = True) -> list[str]:
    """Return the subprotocols offered (by a client) or supported (by a server) as a list, once checked.

    A client offers each once (`unique`); a server's list may repeat one harmlessly. None (websockets'
    default) is none.

    Raises:
        TypeError: for a single string instead of a list of them.
        ValueError: for a name that is not a token or is given twice (RFC 6455 §4.1 item 10).
    """
    if isinstance(subprotocols, str | bytes):
        raise TypeError(
            f"subprotocols must be a list of names, not a single string: [{subprotocols!r}]"
        )
    names = [] if subprotocols is None else list(subprotocols)
    for i, name in enumerate(names):
        # RFC 6455 §4.1 (10): each offered subprotocol is a token, and no two are the same.
        if not isinstance(name, str) or not FIELD_NAME.fullmatch(name):
            raise ValueError(
                f"subprotocol {name!r} is not a token (letters, digits and !#$%&'*+-.^_`|~, not empty)"
            )
        if unique and name in names[:i]:
            raise ValueError(f"subprotocol {name!r} is listed twice")
    return names


class ClientHandshake:
    """Build the client's Upgrade request and check the server's answer (RFC 6455 §4.1).

    Args:
        host: the Host header value (host[:port]).
        target: the request target (path and query).
        subprotocols: subprotocols to offer, in order of preference.
        extensions: extensions to offer (e.g. permessage-deflate), in order of preference.
        extra_headers: more header fields (Origin, User-Agent, cookies, auth...); a Host field replaces
            the one made from `host`.
        key: the Sec-WebSocket-Key; a fresh random one by default (tests pass fixed keys).

    Attributes:
        request: the Upgrade request.
        head: `request` written as bytes, checked against HTTP/1.1's rules.
        extensions: after `check_response`, the extensions the server accepted, in its order.

    Raises:
        TypeError: for `subprotocols` given as one string.
        ValueError: for a subprotocol that is not a token or is offered twice.
        UsageError: for an extra header that the handshake sets itself (Upgrade, Sec-WebSocket-*...), or
            a target or header HTTP/1.1 cannot carry.
    """

    def __init__(
        self,
        host: str,
        target: str,
        *,
        subprotocols: Sequence[str] = (),
        extensions: Sequence[ClientExtensionFactory] = (),
        extra_headers: HeadersLike = (),
        key: str | None = None,
    ) -> None:
        self.key = key or generate_key()
        self.subprotocols = check_subprotocols(subprotocols)
        self._extension_factories = list(extensions)
        self.extensions: list[Extension] = []
        extra = Headers(extra_headers)
        for name in extra:
            instead = _HANDSHAKE_FIELDS.get(name.lower())
            if instead is not None:
                raise UsageError(f"the {name} header is set by the opening handshake; {instead}")
            if name.lower() == "proxy-authorization":
                # Sent in the request, it would reach the server (through a proxy's tunnel too), not
                # the proxy: the proxy's credentials would go to a third party.
                raise UsageError(
                    "the Proxy-Authorization header would go to the server, not to the proxy; put the "
                    "proxy's credentials in its URL (proxy='http://user:password@host:port')"
                )
        # A Host field among the extra headers replaces the one made from `host` (a virtual host reached
        # by its IP address, for example).
        fields = [] if "host" in extra else ["Host", host]
        fields += (
            "Upgrade",
            "websocket",
            "Connection",
            "Upgrade",
            "Sec-WebSocket-Key",
            self.key,
            "Sec-WebSocket-Version",
            "13",
        )
        if self.subprotocols:
            fields += ("Sec-WebSocket-Protocol", ", ".join(self.subprotocols))
        if self._extension_factories:
            offers = [(factory.name, factory.offer()) for factory in self._extension_factories]
            fields += ("Sec-WebSocket-Extensions", serialize_extensions(offers))
        self.request = Request("GET", target, Headers._of(fields + extra._fields))
        self.head = checked_request_head(self.request)

    def check_response(self, response: Response, http_version: str = "1.1") -> str | None:
        """Check the server's answer; return the negotiated subprotocol (or None).

        Args:
            response: the answer.
            http_version: the version its status line named.

        Raises:
            InvalidStatus: when the status is not 101.
            InvalidHandshake: when the 101 response breaks RFC 6455 §4.1.
        """
        if response.status != 101:
            raise InvalidStatus(
                f"server rejected the WebSocket handshake: HTTP {response.status} {response.reason}",
                response.status,
                response.headers.items(),
                response.body,
            )
        if http_version != "1.1":
            # The Upgrade is HTTP/1.1's (RFC 6455 §4.1, RFC 9110 §7.8); HTTP/1.0 has no 1xx status.
            raise InvalidHandshake(f"101 response in HTTP/{http_version}, not HTTP/1.1", 101)
        headers = response.headers
        # RFC 6455 §4.1 (2): an Upgrade field with any value other than "websocket" fails the connection.
        upgrade = headers.tokens("Upgrade")
        if set(upgrade) != {"websocket"}:
            if "websocket" in upgrade:
                raise InvalidHandshake(
                    f"101 response with 'Upgrade: {', '.join(headers.get_all('Upgrade'))}' "
                    "(only 'websocket' may be named)",
                    101,
                )
            raise InvalidHandshake("101 response without 'Upgrade: websocket'", 101)
        if "upgrade" not in headers.tokens("Connection"):
            raise InvalidHandshake("101 response without 'Connection: Upgrade'", 101)
        accepts = headers.get_all("Sec-WebSocket-Accept")
        if accepts != [accept_key(self.key)]:
            if len(accepts) > 1:
                raise InvalidHandshake(
                    f"{len(accepts)} Sec-WebSocket-Accept fields ({', '.join(accepts)}); one is required",
                    101,
                )
            raise InvalidHandshake(
                f"wrong Sec-WebSocket-Accept {', '.join(accepts) or '(missing)'}", 101
            )
        self.extensions = self._accept_extensions(headers.get_all("Sec-WebSocket-Extensions"))
        values = headers.get_all("Sec-WebSocket-Protocol")
        if not values:
            return None
        if len(values) > 1:
            raise InvalidHandshake(
                "more than one Sec-WebSocket-Protocol field in the 101 response", 101
            )
        # RFC 6455 §4.1 (6) / §11.3.4: the field names one subprotocol, one of those offered: not a
        # list ("chat," is not "chat"), not empty.
        chosen = ", ".join(values).strip(" \t")
        if not chosen.strip(" \t,"):
            raise InvalidHandshake("empty Sec-WebSocket-Protocol in the 101 response", 101)
        if chosen not in self.subprotocols:
            raise InvalidHandshake(
                f"server chose subprotocol {chosen!r}, which was not offered", 101
            )
        return chosen

    def _accept_extensions(self, values: list[str]) -> list[Extension]:
        """RFC 6455 §4.1: an extension the client did not offer fails the connection."""
        if not values:
            return []
        try:
            answers = parse_extensions(values)
        except NegotiationError as exc:
            raise InvalidHandshake(str(exc), 101) from None
        accepted: list[Extension] = []
        for name, params in answers:
            # RFC 7692 §5: a client may offer an extension several times, in its order of preference;
            # the answer is valid when it accepts one of those offers.
            offers = [f for f in self._extension_factories if f.name == name]
            if not offers:
                raise InvalidHandshake(
                    f"server accepted extension {name}, which was not offered", 101
                )
            refusals: list[str] = []
            for factory in offers:
                try:
                    accepted.append(factory.accept(params, accepted))
                    break
                except NegotiationError as exc:
                    refusals.append(str(exc))
            else:
                why = (
                    refusals[0]
                    if len(refusals) == 1
                    else "; ".join(
                        f"offer {number}: {reason}" for number, reason in enumerate(refusals, 1)
                    )
                )
                raise InvalidHandshake(f"invalid {name} answer: {why}", 101)
        return accepted
