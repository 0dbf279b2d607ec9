"""permessage-deflate as an observer sees it (RFC 7692): the negotiated parameters and per-direction inflating.

Owns: turning a captured 101 response's `Sec-WebSocket-Extensions` answer into the parameters that matter to
an observer (each side's window and context takeover), leniently: a value a strict peer would refuse falls
back to the default so that the frames still inflate, and the rule breaks are reported elsewhere.

Reuses the core for everything else, so each rule has one owner: the header grammar is
`upwire.protocol.extensions.base.parse_extensions`, and inflating (the `00 00 ff ff` tail, context takeover,
a stream ended by a BFINAL block) is `PerMessageDeflate.decode_frame`, run in the receiving side's role.

Must not know: frames or connections.
"""

from __future__ import annotations

from dataclasses import dataclass

from upwire.exceptions import ProtocolError
from upwire.protocol.extensions.base import parse_extensions
from upwire.protocol.extensions.permessage_deflate import PerMessageDeflate

__all__ = ["DeflateParams", "Inflater", "deflate_params"]

_RSV1 = 0b100


@dataclass(frozen=True, slots=True)
class DeflateParams:
    """The permessage-deflate parameters a server accepted (RFC 7692 §7.1)."""

    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    server_max_window_bits: int = 15
    client_max_window_bits: int = 15


def deflate_params(header: str | None) -> DeflateParams | None:
    """Return the permessage-deflate parameters of an accepted extensions header, or None without it.

    Raises:
        NegotiationError: when the header does not follow the grammar of RFC 6455 §9.1.
    """
    for name, pairs in parse_extensions([header] if header else []):
        if name != "permessage-deflate":
            continue
        params = dict(pairs)
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


# A capture may hold a compression bomb: no message is inflated past this (the rest of the direction is
# then reported as not inflatable, like corrupt data).
MAX_INFLATED_MESSAGE = 64 << 20


class Inflater:
    """Inflate one direction's compressed messages, fragment by fragment.

    Args:
        window_bits: the sender's LZ77 window (8-15).
        context_takeover: False when each message starts with a fresh context (`*_no_context_takeover`).
        max_message_size: the most bytes one message may inflate to.
    """

    def __init__(
        self, window_bits: int, context_takeover: bool, max_message_size: int = MAX_INFLATED_MESSAGE
    ) -> None:
        # The receiving side's extension: only its decoding half is used (the local values are unused).
        self._extension = PerMessageDeflate(
            local_no_context_takeover=False,
            remote_no_context_takeover=not context_takeover,
            local_max_window_bits=15,
            remote_max_window_bits=window_bits,
            params=[],
        )
        self._max_message_size = max_message_size
        self._message_size = 0
        self.broken = False

    def inflate(self, data: bytes, final: bool) -> bytes:
        """Inflate one fragment of a compressed message; `final` on its last fragment.

        Raises:
            ProtocolError: when the bytes are not a valid deflate stream in this context (what a peer
                would close with 1007), or inflate past `max_message_size` (1009); later messages of
                the direction cannot be inflated after it.
        """
        room = self._max_message_size - self._message_size
        try:
            out = self._extension.decode_frame(data, _RSV1, final, room)
        except ProtocolError:
            self.broken = True
            raise
        self._message_size = 0 if final else self._message_size + len(out)
        return out
