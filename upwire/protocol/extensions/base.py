"""The extensions API (RFC 6455 §9): negotiation in the handshake, then per-frame transforms.

Owns: the `Sec-WebSocket-Extensions` header grammar, and the three roles an extension plays — a client factory
that makes an offer and accepts the server's answer, a server factory that picks an offer and answers it, and
the negotiated `Extension` that the connection state machine calls for every data frame. permessage-deflate
is one implementation; the core knows only this interface.

Must not know: sockets, or any particular extension.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Sequence

from upwire.exceptions import InvalidHandshake

__all__ = [
    "ClientExtensionFactory",
    "Extension",
    "ExtensionParams",
    "NegotiationError",
    "ServerExtensionFactory",
    "parse_extensions",
    "serialize_extensions",
]

# One offer or answer: the extension name and its parameters (a parameter without a value has None).
ExtensionParams = list[tuple[str, str | None]]


class NegotiationError(InvalidHandshake):
    """An extension offer or answer could not be accepted."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 400)


class Extension(abc.ABC):
    """A negotiated extension, applied to the data frames of one connection.

    Incoming frames go through `decode_frame` (extensions in reverse negotiation order), outgoing ones through
    `encode_frame` (in order). Control frames never pass through extensions.
    """

    name: str
    #: The RSV bits this extension gives a meaning to (RSV1 = 0b100).
    rsv: int

    @abc.abstractmethod
    def check_frame(self, opcode: int, rsv: int, first: bool) -> str | None:
        """Return why a received frame's RSV bits break this extension's rules, or None when they are fine.

        Args:
            opcode: the frame's opcode.
            rsv: the frame's RSV bits.
            first: True for the first frame of a data message (TEXT or BINARY).
        """

    @abc.abstractmethod
    def decode_frame(
        self, payload: bytes, message_rsv: int, fin: bool, max_size: int | None
    ) -> bytes:
        """Transform the payload of a received data frame.

        Args:
            payload: the payload (unmasked).
            message_rsv: the RSV bits of the message's first frame.
            fin: True for the message's last frame.
            max_size: the most bytes this frame may decode to (None: no limit).

        Raises:
            ProtocolError: for data the extension cannot decode (1007), or past `max_size` (1009).
        """

    @abc.abstractmethod
    def encode_frame(self, payload: bytes, first: bool, fin: bool) -> tuple[bytes, int]:
        """Transform the payload of a data frame to send; return it with the RSV bits to set."""

    @abc.abstractmethod
    def response_params(self) -> ExtensionParams:
        """The parameters as written in the handshake (the server's answer)."""


class ServerExtensionFactory(abc.ABC):
    """Server side of the negotiation of one extension."""

    name: str

    @abc.abstractmethod
    def accept(self, offer: ExtensionParams, accepted: Sequence[Extension]) -> Extension | None:
        """Accept one offer of the client (parameters of one element of its header), or decline with None.

        Args:
            offer: the offer's parameters.
            accepted: the extensions already accepted in this handshake (to refuse a conflicting one).
        """


class ClientExtensionFactory(abc.ABC):
    """Client side of the negotiation of one extension."""

    name: str

    @abc.abstractmethod
    def offer(self) -> ExtensionParams:
        """The parameters to offer."""

    @abc.abstractmethod
    def accept(self, answer: ExtensionParams, accepted: Sequence[Extension]) -> Extension:
        """Accept the server's answer to our offer.

        Raises:
            NegotiationError: when the answer is not one the offer allows.
        """


# RFC 6455 §9.1 / RFC 9110 §5.6.2: extension names and parameter names are tokens; values are tokens or
# quoted strings.
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_ELEMENT = re.compile(
    rf"\s*(?P<name>{_TOKEN})\s*(?P<params>(?:;\s*{_TOKEN}\s*(?:=\s*(?:{_TOKEN}|\"(?:[^\"\\]|\\.)*\"))?\s*)*)"
)
_PARAM = re.compile(
    rf";\s*(?P<key>{_TOKEN})\s*(?:=\s*(?P<value>{_TOKEN}|\"(?:[^\"\\]|\\.)*\"))?\s*"
)


def parse_extensions(values: Sequence[str]) -> list[tuple[str, ExtensionParams]]:
    """Parse `Sec-WebSocket-Extensions` header values into (name, parameters) elements, in order.

    Raises:
        NegotiationError: when a value does not follow the grammar of RFC 6455 §9.1.
    """
    elements: list[tuple[str, ExtensionParams]] = []
    for value in values:
        if not value.strip(" \t,"):
            # RFC 6455 §9.1: the field is a list of one or more extensions.
            raise NegotiationError(f"empty Sec-WebSocket-Extensions header: {value!r}")
        pos = 0
        while pos < len(value):
            # RFC 9110 §5.6.1: empty list elements ("a, , b", a trailing comma) are accepted and ignored.
            while pos < len(value) and value[pos] in " \t,":
                pos += 1
            if pos == len(value):
                break
            match = _ELEMENT.match(value, pos)
            if match is None or match.end() == pos:
                raise NegotiationError(f"invalid Sec-WebSocket-Extensions header: {value!r}")
            params: ExtensionParams = []
            for param in _PARAM.finditer(match.group("params")):
                raw = param.group("value")
                if raw is not None and raw.startswith('"'):
                    raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
                    # RFC 6455 §9.1: a quoted value must still be a token once unquoted.
                    if not re.fullmatch(_TOKEN, raw):
                        raise NegotiationError(f"invalid extension parameter value: {raw!r}")
                params.append((param.group("key").lower(), raw))
            elements.append((match.group("name").lower(), params))
            pos = match.end()
            rest = value[pos:].lstrip()
            if rest and not rest.startswith(","):
                raise NegotiationError(f"invalid Sec-WebSocket-Extensions header: {value!r}")
            pos = len(value) - len(rest) + (1 if rest else 0)
    return elements


def serialize_extensions(elements: Sequence[tuple[str, ExtensionParams]]) -> str:
    """Write (name, parameters) elements as a `Sec-WebSocket-Extensions` value."""
    return ", ".join(
        "; ".join([name, *(key if value is None else f"{key}={value}" for key, value in params)])
        for name, params in elements
    )
