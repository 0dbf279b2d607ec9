"""permessage-deflate (RFC 7692): negotiation of its four parameters, and compression of messages.

Owns: the offer and answer rules of RFC 7692 §7.1 for both sides, compressing outgoing messages and inflating
incoming ones with or without context takeover, RSV1 only on the first frame of a message (§6), and a bound
on the inflated size so that a small frame cannot make the process allocate a huge message.

Must not know: sockets, or the connection state machine beyond the `Extension` interface.

Memory: a compressor with window bits W and memLevel M takes about 2^(W+2) + 2^(M+9) bytes, an inflater 2^W
bytes (zlib's figures). With the defaults (W = 12 for what this side sends, memLevel 5, and up to 15 for
what the peer sends) a connection holds about 64 KiB while compressing; both objects are created on the first
compressed message, so an idle connection pays nothing. A peer that ends its DEFLATE streams with BFINAL blocks
(none of the common ones does) makes the inflater keep the last window of output too: up to 2 × 2^W more.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

from upwire.exceptions import PayloadTooBig, ProtocolError
from upwire.protocol.extensions.base import (
    ClientExtensionFactory,
    Extension,
    ExtensionParams,
    NegotiationError,
    ServerExtensionFactory,
)

__all__ = [
    "ClientPerMessageDeflateFactory",
    "PerMessageDeflate",
    "ServerPerMessageDeflateFactory",
]

NAME = "permessage-deflate"
# Whole messages from this size are sent uncompressed when deflate does not make them smaller.
_CHECK_FROM = 16 * 1024
_RSV1 = 0b100
# RFC 7692 §7.2.1: a compressed message ends with an empty stored block whose last 4 octets are removed.
_TAIL = b"\x00\x00\xff\xff"
_PARAMETERS = frozenset(
    {
        "server_no_context_takeover",
        "client_no_context_takeover",
        "server_max_window_bits",
        "client_max_window_bits",
    }
)


def _inflate(decoder: zlib._Decompress, data: bytes, room: int | None) -> bytes:
    """Inflate `data`; past `room` bytes of output, PayloadTooBig (inflating stops one byte past it)."""
    try:
        if room is None:
            out = decoder.decompress(data)
        else:
            # At most one byte past the limit: a 1 MiB bomb never allocates its gigabyte.
            out = decoder.decompress(data, room + 1)
    except zlib.error as exc:
        raise ProtocolError(f"invalid compressed data ({exc})", 1007) from None
    if room is not None and len(out) > room:
        raise PayloadTooBig("message exceeds max_message_size once decompressed")
    return out


class PerMessageDeflate(Extension):
    """A negotiated permessage-deflate extension for one connection.

    Args:
        local_no_context_takeover: reset the compressor after each message this side sends.
        remote_no_context_takeover: the peer resets its compressor after each message (so we reset the
            inflater too).
        local_max_window_bits: window of this side's compressor (8-15). zlib has no 8-bit compressor:
            for 8 it compresses with 9 bits, whose matches reach back at most 250 bytes (see `_compressor`).
        remote_max_window_bits: the largest window the peer may use (8-15).
        params: the parameters of the handshake answer that produced this extension.
        compress_level: zlib level (1 fastest - 9 smallest).
        mem_level: zlib memLevel (1-9): less memory, a little less compression.
        min_size: messages smaller than this are sent uncompressed (RSV1 clear), which RFC 7692 allows.
    """

    name = NAME
    rsv = _RSV1

    def __init__(
        self,
        *,
        local_no_context_takeover: bool,
        remote_no_context_takeover: bool,
        local_max_window_bits: int,
        remote_max_window_bits: int,
        params: ExtensionParams,
        compress_level: int = 6,
        mem_level: int = 5,
        min_size: int = 0,
    ) -> None:
        if not 8 <= local_max_window_bits <= 15:
            raise ValueError("this side's max window bits must be 8-15")
        self.local_no_context_takeover = local_no_context_takeover
        self.remote_no_context_takeover = remote_no_context_takeover
        self.local_max_window_bits = local_max_window_bits
        self.remote_max_window_bits = remote_max_window_bits
        self._params = params
        self._level = compress_level
        self._mem_level = mem_level
        self._min_size = min_size
        self._encoder: zlib._Compress | None = None
        self._decoder: zlib._Decompress | None = None
        # The latest inflated bytes, a window's worth at least when there are that many (of a large output
        # only its tail): what a new DEFLATE stream after a BFINAL block may refer to (see decode_frame).
        # Kept from one message to the next only for a peer that ended a stream that way before.
        self._recent: list[bytes] = []
        self._recent_size = 0
        self._peer_ends_streams = False
        # Whether this message had a compressed byte yet, and whether the stream ended (a BFINAL block)
        # with the last frame's last byte.
        self._message_fed = False
        self._stream_ended = False
        self._compressing = False

    def __repr__(self) -> str:
        return f"PerMessageDeflate({self._params!r})"

    def check_frame(self, opcode: int, rsv: int, first: bool) -> str | None:
        """RFC 7692 §6: RSV1 marks a compressed message on its first frame only, never on control frames."""
        if rsv & _RSV1 and not first:
            if opcode >= 0x8:
                return "RSV1 set on a control frame"
            return "RSV1 set on a continuation frame"
        return None

    def decode_frame(
        self, payload: bytes, message_rsv: int, fin: bool, max_size: int | None
    ) -> bytes:
        """Inflate one frame of a compressed message (RFC 7692 §7.2.2); other messages pass unchanged."""
        if not message_rsv & _RSV1:
            return payload
        if fin:
            if self._message_fed:  # (flags written only when they change: this is the hot path)
                self._message_fed = False
            elif not payload:
                # A compressed message of no bytes at all: empty. (Its smallest well-formed payload is
                # 0x00; inflating the bare 00 00 ff ff would leave the inflater inside a stored block's
                # header.)
                return b""
            if self._stream_ended:
                self._stream_ended = False
                if not payload:
                    # The stream ended exactly at the previous frame's end, with nothing after its
                    # final block: the appended tail is not data either (as in one frame, below).
                    return b""
            data = payload + _TAIL
        elif payload:
            self._message_fed = True
            self._stream_ended = False
            data = payload
        else:
            return b""  # nothing to inflate yet
        decoder = self._decoder
        if decoder is None:
            # A window at least as large as the peer's decodes its stream; zlib's inflate wants 9 or more.
            decoder = self._decoder = zlib.decompressobj(wbits=-max(self.remote_max_window_bits, 9))
        out = _inflate(decoder, data, max_size)
        if decoder.eof:
            return self._after_final_block(decoder, out, fin, max_size)
        self._keep_window(out, fin)
        return out

    def _keep_window(self, out: bytes, fin: bool) -> None:
        """What the next stream may refer to, after a frame that did not end the stream."""
        if fin:
            if self.remote_no_context_takeover:
                self._decoder = None
            if self._peer_ends_streams:
                # The next message may start a new stream that refers to this one's bytes.
                self._keep_recent(out)
            elif self._recent:
                # The stream goes on in the inflater's own window: nothing to keep past the message.
                self._recent = []
                self._recent_size = 0
        elif out:
            # A message in several frames: a later one may end the stream, and the next stream may
            # refer to these bytes. (A whole message in one frame, the usual case, keeps nothing.)
            self._keep_recent(out)

    def _after_final_block(
        self, decoder: zlib._Decompress, out: bytes, fin: bool, max_size: int | None
    ) -> bytes:
        """Go on after a BFINAL block (RFC 7692 §7.2.3.4): what follows in the frame is a new stream.

        The new stream may still refer to the window (the last 2^W bytes inflated, from this frame and
        those before it): its inflater is preset with them.
        """
        pieces = [out]
        room = None if max_size is None else max_size - len(out)
        while True:
            data = decoder.unused_data
            self._stream_ended = True
            self._decoder = None
            preset = b""
            if not (fin and self.remote_no_context_takeover):
                preset = self._latest(out)
                if preset:
                    self._decoder = zlib.decompressobj(
                        wbits=-max(self.remote_max_window_bits, 9), zdict=preset
                    )
                self._peer_ends_streams = not self.remote_no_context_takeover
            self._recent = [preset] if preset else []
            self._recent_size = len(preset)
            if not data or (fin and data == _TAIL):
                # Nothing after the final block, or only the appended tail (a peer that did not end
                # the message with the empty block's first octet, which §7.2.3.4 says it needs).
                break
            # More after the final block: the new stream's first bytes (at least the 0x00 of the empty
            # stored block that ends the message, which leaves the new stream between blocks).
            self._stream_ended = False
            if self._decoder is None:
                self._decoder = zlib.decompressobj(wbits=-max(self.remote_max_window_bits, 9))
            decoder = self._decoder
            out = _inflate(decoder, data, room)
            pieces.append(out)
            if room is not None:
                room -= len(out)
            if not decoder.eof:
                self._keep_window(out, fin)
                break
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def _latest(self, out: bytes) -> bytes:
        """The last window's worth of what was inflated, `out` last (the preset of a new stream)."""
        window = 1 << max(self.remote_max_window_bits, 9)
        if len(out) >= window:
            return out[-window:]
        return b"".join([*self._recent, out])[-window:]

    def _keep_recent(self, out: bytes) -> None:
        """Add inflated bytes to the latest ones, keeping a window's worth (and at most one more output)."""
        if not out:
            return
        window = 1 << max(self.remote_max_window_bits, 9)
        if len(out) >= window:
            self._recent = [out[-window:]]  # a copy of the tail: the whole output is not kept alive
            self._recent_size = window
            return
        recent = self._recent
        recent.append(out)
        self._recent_size += len(out)
        while self._recent_size - len(recent[0]) >= window:
            self._recent_size -= len(recent.pop(0))

    def encode_frame(self, payload: bytes, first: bool, fin: bool) -> tuple[bytes, int]:
        """Compress one frame of an outgoing message; set RSV1 on the first frame of a compressed one."""
        if first:
            # A whole message below min_size goes out uncompressed; a fragmented one is always compressed.
            self._compressing = not (fin and len(payload) < self._min_size)
        if not self._compressing:
            return payload, 0
        encoder = self._encoder
        if encoder is None:
            encoder = self._encoder = self._compressor()
        data = encoder.compress(payload) + encoder.flush(zlib.Z_SYNC_FLUSH)
        if fin:
            if data.endswith(_TAIL):
                data = data[:-4]
            if first and len(data) >= len(payload) >= _CHECK_FROM:
                # A large whole message that deflate does not shrink (random or already compressed
                # bytes) goes out as it is (RFC 7692 §6.1 lets any message go uncompressed): deflate
                # would make it larger, and peers limit the compressed frame's size (websockets'
                # max_size, Node ws' maxPayload). The compressor saw bytes the peer never will: the
                # next message starts a fresh one, which refers to nothing before it (the peer's
                # inflater goes on as ever: its window only holds more than the references need).
                self._encoder = None
                return payload, 0
            if self.local_no_context_takeover:
                self._encoder = None
        return data, _RSV1 if first else 0

    def _compressor(self) -> zlib._Compress:
        # zlib refuses an 8-bit window for raw deflate. With 9 bits its matches reach back at most
        # 512 - 262 = 250 bytes (deflate.c's MAX_DIST: the window less the lookahead it keeps), so the
        # output fits a 256-byte window: a peer that asked for 8 inflates it (Chromium and Node do the same).
        bits = max(self.local_max_window_bits, 9)
        return zlib.compressobj(self._level, zlib.DEFLATED, -bits, self._mem_level)

    def response_params(self) -> ExtensionParams:
        """The parameters of the handshake answer."""
        return list(self._params)


# RFC 7692 §7.1.2: a decimal integer from 8 to 15, without leading zeros.
_WINDOW_BITS = frozenset(str(bits) for bits in range(8, 16))


def _parse_params(params: ExtensionParams, *, is_offer: bool) -> dict[str, str | None]:
    """Check the parameters of an offer or answer (RFC 7692 §7.1); raise NegotiationError if invalid."""
    found: dict[str, str | None] = {}
    for key, value in params:
        if key not in _PARAMETERS:
            raise NegotiationError(f"unknown permessage-deflate parameter {key!r}")
        if key in found:
            raise NegotiationError(f"duplicate permessage-deflate parameter {key!r}")
        if key.endswith("no_context_takeover"):
            if value is not None:
                raise NegotiationError(f"{key} takes no value")
        elif value is None:
            # Only an offer may leave client_max_window_bits without a value.
            if not (is_offer and key == "client_max_window_bits"):
                raise NegotiationError(f"{key} needs a value")
        elif value not in _WINDOW_BITS:
            # Compared as text: no int() of a 5000-digit value, or of "¹" (a digit to isdigit, not to int).
            raise NegotiationError(f"{key}={value[:20]!r} is not a window size from 8 to 15")
        found[key] = value
    return found


def _check_window_bits(name: str, value: int | None, low: int) -> None:
    if value is not None and not low <= value <= 15:
        raise ValueError(f"{name} must be from {low} to 15 or None, not {value!r}")


class ServerPerMessageDeflateFactory(ServerExtensionFactory):
    """Accept permessage-deflate offers on a server.

    Args:
        server_no_context_takeover: always reset the server's compressor after each message.
        client_no_context_takeover: ask clients to reset theirs after each message.
        server_max_window_bits: the window of the server's compressor (8-15; None: 15, or what the client
            asks for). Default 12: 4 KiB of history compresses typical messages almost as well as 32 KiB.
        client_max_window_bits: the window clients should use, when they offer to limit it (8-15; None:
            theirs). `websockets` (17.4) clients fail the handshake on 8.
        compress_level, mem_level, min_size: see `PerMessageDeflate`.
    """

    name = NAME

    def __init__(
        self,
        *,
        server_no_context_takeover: bool = False,
        client_no_context_takeover: bool = False,
        server_max_window_bits: int | None = 12,
        client_max_window_bits: int | None = None,
        compress_level: int = 6,
        mem_level: int = 5,
        min_size: int = 0,
    ) -> None:
        _check_window_bits("server_max_window_bits", server_max_window_bits, 8)
        _check_window_bits("client_max_window_bits", client_max_window_bits, 8)
        self.server_no_context_takeover = server_no_context_takeover
        self.client_no_context_takeover = client_no_context_takeover
        self.server_max_window_bits = server_max_window_bits
        self.client_max_window_bits = client_max_window_bits
        self._settings = {
            "compress_level": compress_level,
            "mem_level": mem_level,
            "min_size": min_size,
        }

    def accept(self, offer: ExtensionParams, accepted: Sequence[Extension]) -> Extension | None:
        """Answer one offer; None declines it (invalid parameters, or permessage-deflate accepted already)."""
        if any(ext.name == NAME for ext in accepted):
            return None  # RFC 7692 §5: at most one permessage-deflate per connection
        try:
            found = _parse_params(offer, is_offer=True)
        except NegotiationError:
            return None  # RFC 7692 §5: decline an offer with invalid parameters
        answer: ExtensionParams = []
        server_no_takeover = (
            self.server_no_context_takeover or "server_no_context_takeover" in found
        )
        if server_no_takeover:
            answer.append(("server_no_context_takeover", None))
        client_no_takeover = (
            self.client_no_context_takeover or "client_no_context_takeover" in found
        )
        if client_no_takeover:
            answer.append(("client_no_context_takeover", None))
        # server_max_window_bits: the client's limit, lowered to ours; ours alone if it set none.
        offered = found.get("server_max_window_bits")
        server_bits = self.server_max_window_bits
        if offered is not None:
            server_bits = int(offered) if server_bits is None else min(server_bits, int(offered))
        if server_bits is not None:
            answer.append(("server_max_window_bits", str(server_bits)))
        # client_max_window_bits: only when the client offered it (§7.1.2.2); its value is a ceiling.
        client_bits = 15
        if "client_max_window_bits" in found:
            ceiling = found["client_max_window_bits"]
            wanted = self.client_max_window_bits
            if ceiling is not None:
                wanted = int(ceiling) if wanted is None else min(wanted, int(ceiling))
            if wanted is not None:
                client_bits = wanted
                answer.append(("client_max_window_bits", str(wanted)))
        return PerMessageDeflate(
            local_no_context_takeover=server_no_takeover,
            remote_no_context_takeover=client_no_takeover,
            local_max_window_bits=server_bits or 15,
            remote_max_window_bits=client_bits,
            params=answer,
            **self._settings,
        )


class ClientPerMessageDeflateFactory(ClientExtensionFactory):
    """Offer permessage-deflate from a client and accept the server's answer.

    Args:
        server_no_context_takeover: ask the server to reset its compressor after each message.
        client_no_context_takeover: reset the client's compressor after each message (and say so).
        server_max_window_bits: ask the server to use at most this window (8-15; None: no request).
        client_max_window_bits: offer to limit the client's window to this (8-15), or True to let the
            server choose (the default, as browsers do), or None not to offer it.
        compress_level, mem_level, min_size: see `PerMessageDeflate`.
    """

    name = NAME

    def __init__(
        self,
        *,
        server_no_context_takeover: bool = False,
        client_no_context_takeover: bool = False,
        server_max_window_bits: int | None = None,
        client_max_window_bits: int | bool | None = True,
        compress_level: int = 6,
        mem_level: int = 5,
        min_size: int = 0,
    ) -> None:
        _check_window_bits("server_max_window_bits", server_max_window_bits, 8)
        if not isinstance(client_max_window_bits, bool):
            _check_window_bits("client_max_window_bits", client_max_window_bits, 8)
        self.server_no_context_takeover = server_no_context_takeover
        self.client_no_context_takeover = client_no_context_takeover
        self.server_max_window_bits = server_max_window_bits
        self.client_max_window_bits = client_max_window_bits
        self._settings = {
            "compress_level": compress_level,
            "mem_level": mem_level,
            "min_size": min_size,
        }

    def offer(self) -> ExtensionParams:
        """The offer's parameters."""
        params: ExtensionParams = []
        if self.server_no_context_takeover:
            params.append(("server_no_context_takeover", None))
        if self.client_no_context_takeover:
            params.append(("client_no_context_takeover", None))
        if self.server_max_window_bits is not None:
            params.append(("server_max_window_bits", str(self.server_max_window_bits)))
        if self.client_max_window_bits is True:
            params.append(("client_max_window_bits", None))
        elif self.client_max_window_bits:
            params.append(("client_max_window_bits", str(self.client_max_window_bits)))
        return params

    def accept(self, answer: ExtensionParams, accepted: Sequence[Extension]) -> Extension:
        """Check the server's answer against the offer (RFC 7692 §7.1) and build the extension.

        Raises:
            NegotiationError: for an answer the offer does not allow.
        """
        if any(ext.name == NAME for ext in accepted):
            raise NegotiationError("server accepted permessage-deflate twice")
        found = _parse_params(answer, is_offer=False)
        if self.server_no_context_takeover and "server_no_context_takeover" not in found:
            raise NegotiationError("server ignored server_no_context_takeover")
        server_bits_text = found.get("server_max_window_bits")
        server_bits = 15 if server_bits_text is None else int(server_bits_text)
        # §7.1.2.1: a server accepting the parameter must answer with it; one that leaves it out of its
        # answer to 15 (aiohttp) still keeps to it, 15 bits being no limit at all.
        if self.server_max_window_bits is not None and (
            (server_bits_text is None and self.server_max_window_bits != 15)
            or server_bits > self.server_max_window_bits
        ):
            raise NegotiationError(
                f"server_max_window_bits={server_bits_text} does not honour the offered "
                f"{self.server_max_window_bits}"
            )
        client_bits_text = found.get("client_max_window_bits")
        client_bits = 15
        if client_bits_text is not None:
            # §7.1.2.2: the server may set it only if offered, and not above the offered value.
            if not self.client_max_window_bits:
                raise NegotiationError("server set client_max_window_bits, which was not offered")
            client_bits = int(client_bits_text)
            if (
                self.client_max_window_bits is not True
                and client_bits > self.client_max_window_bits
            ):
                raise NegotiationError(
                    f"client_max_window_bits={client_bits} is above the offered "
                    f"{self.client_max_window_bits}"
                )
        elif isinstance(self.client_max_window_bits, int) and not isinstance(
            self.client_max_window_bits, bool
        ):
            client_bits = self.client_max_window_bits
        return PerMessageDeflate(
            local_no_context_takeover=(
                self.client_no_context_takeover or "client_no_context_takeover" in found
            ),
            remote_no_context_takeover="server_no_context_takeover" in found,
            local_max_window_bits=client_bits,
            remote_max_window_bits=server_bits,
            params=answer,
            **self._settings,
        )
