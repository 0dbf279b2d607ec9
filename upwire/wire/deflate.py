"""permessage-deflate as an observer sees it (RFC 7692): the negotiated parameters and per-direction inflating.

Owns: reading the `Sec-WebSocket-Extensions` answer of a captured 101 response, and inflating each
direction's compressed messages with the context takeover that was negotiated. Small and self-contained on
purpose: an observer needs no offer/answer logic, only what the answer says.

Must not know: frames or connections.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

__all__ = ["DeflateParams", "Inflater", "parse_extensions"]

# RFC 7692 §7.2.2: the sender removed this tail of the flushed block; the receiver appends it again.
_TAIL = b"\x00\x00\xff\xff"


@dataclass(frozen=True, slots=True)
class DeflateParams:
    """The permessage-deflate parameters a server accepted (RFC 7692 §7.1)."""

    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    server_max_window_bits: int = 15
    client_max_window_bits: int = 15


def parse_extensions(header: str | None) -> list[tuple[str, dict[str, str | None]]]:
    """Split a `Sec-WebSocket-Extensions` value into (name, parameters) pairs (RFC 6455 §9.1).

    Example: "permessage-deflate; client_max_window_bits=10" ->
    [("permessage-deflate", {"client_max_window_bits": "10"})].
    """
    result: list[tuple[str, dict[str, str | None]]] = []
    if not header:
        return result
    for item in header.split(","):
        parts = [p.strip() for p in item.split(";")]
        if not parts[0]:
            continue
        params: dict[str, str | None] = {}
        for part in parts[1:]:
            if not part:
                continue
            name, sep, value = part.partition("=")
            params[name.strip().lower()] = value.strip().strip('"') if sep else None
        result.append((parts[0].lower(), params))
    return result


def deflate_params(header: str | None) -> DeflateParams | None:
    """Return the permessage-deflate parameters of an accepted extensions header, or None without it."""
    for name, params in parse_extensions(header):
        if name != "permessage-deflate":
            continue

        return DeflateParams(
            server_no_context_takeover="server_no_context_takeover" in params,
            client_no_context_takeover="client_no_context_takeover" in params,
            server_max_window_bits=_window_bits(params.get("server_max_window_bits")),
            client_max_window_bits=_window_bits(params.get("client_max_window_bits")),
        )
    return None


def _window_bits(value: str | None) -> int:
    # A parameter without a value (allowed in an offer) or out of range means the default, 15.
    return int(value) if value and value.isdigit() and 8 <= int(value) <= 15 else 15


class Inflater:
    """Inflate one direction's compressed messages, fragment by fragment.

    Args:
        window_bits: the sender's LZ77 window (8-15); a 15-bit inflater also reads smaller windows, but
            the negotiated value is used so that a sender exceeding it is caught.
        context_takeover: False when each message starts with a fresh context (`*_no_context_takeover`).
    """

    def __init__(self, window_bits: int, context_takeover: bool) -> None:
        # zlib rejects a raw window of 8 bits; RFC 7692 §7.1.2.1 allows it, and 9 reads it correctly.
        self._wbits = -max(window_bits, 9)
        self._context_takeover = context_takeover
        self._inflater = zlib.decompressobj(self._wbits)
        self.broken = False

    def start_message(self) -> None:
        """A new compressed message begins."""
        if not self._context_takeover:
            self._inflater = zlib.decompressobj(self._wbits)

    def inflate(self, data: bytes, final: bool) -> bytes:
        """Inflate one fragment of a compressed message; `final` on its last fragment.

        Raises:
            zlib.error: when the bytes are not a valid deflate stream in this context.
        """
        try:
            out = self._inflater.decompress(data)
            if final:
                out += self._inflater.decompress(_TAIL)
        except zlib.error:
            self.broken = True
            raise
        return out
