"""One observed WebSocket connection: the opening handshake, then every frame of both directions.

Owns: finding the Upgrade request and its 101 answer in a connection's bytes (parsed by
`upwire.protocol.http`; ordinary requests and their responses before them on a keep-alive connection are
skipped), splitting each direction into frames with the core's `FrameParser` in an observer role
(violations recorded, never raised), grouping frames into messages, UTF-8 decoding of text, inflating
permessage-deflate messages per direction, parsing close payloads, and the byte counts behind `--summary`.

Must not know: where the bytes come from (a capture file or the tap's sockets) or how records are printed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from upwire.exceptions import InvalidHandshake, ProtocolError
from upwire.protocol.close import parse_close_payload
from upwire.protocol.extensions.base import NegotiationError
from upwire.protocol.frames import (
    CONTROL_OPCODES,
    FrameParser,
    Opcode,
    apply_mask,
    check_header,
    decode_header,
)
from upwire.protocol.http import (
    Request,
    RequestBodyReader,
    RequestReader,
    Response,
    ResponseReader,
)
from upwire.protocol.utf8 import IncrementalUTF8Decoder
from upwire.wire.deflate import DeflateParams, Inflater, deflate_params

__all__ = [
    "CLIENT_TO_SERVER",
    "SERVER_TO_CLIENT",
    "DirectionStats",
    "FrameRecord",
    "WebSocketObserver",
]

CLIENT_TO_SERVER: Final = "client-to-server"
SERVER_TO_CLIENT: Final = "server-to-client"

_OPCODE_NAMES: Final = {int(op): op.name.lower() for op in Opcode}
# A head larger than this is not a handshake worth waiting for.
_MAX_HEAD_BYTES = 64 * 1024
# Ordinary requests on one connection (keep-alive) after which an Upgrade is no longer looked for.
_MAX_PLAIN_REQUESTS = 100
# Bytes of one direction held while they wait for the other's answer (pipelined requests, frames sent
# before the 101): past this the connection is not decoded, whatever a peer sends.
_MAX_EARLY_BYTES = 16 * 1024 * 1024


def opcode_name(opcode: int) -> str:
    """Return "text", "binary", "continuation", "close", "ping", "pong" or "reserved-0x3"."""
    return _OPCODE_NAMES.get(opcode, f"reserved-{opcode:#x}")


@dataclass(slots=True)
class FrameRecord:
    """Everything about one frame as it went over the wire and what it meant.

    The field names are those of `upwire dissect --json` (see docs/wire.md); `to_json` writes them.
    """

    stream: int
    index: int
    time: float
    packet: int | None
    direction: str
    src: str
    dst: str
    fin: bool
    rsv: int
    opcode: int
    masked: bool
    mask_key: bytes | None
    payload_length: int
    length_bits: int
    header_length: int
    header: bytes
    payload: bytes
    message: int | None
    message_opcode: int | None
    compressed: bool = False
    inflated: bytes | None = None
    text: str | None = None
    message_end: bool = False
    message_length: int | None = None
    close_code: int | None = None
    close_reason: str | None = None
    violations: list[str] = field(default_factory=list)

    @property
    def payload_masked(self) -> bytes:
        """The payload as sent (masked for a masked frame)."""
        if self.mask_key is None:
            return self.payload
        return apply_mask(self.payload, self.mask_key)

    @property
    def wire(self) -> bytes:
        """The frame's bytes exactly as they were on the wire."""
        return self.header + self.payload_masked

    @property
    def data(self) -> bytes:
        """The payload as meant: unmasked and, for a compressed message, inflated."""
        return self.inflated if self.inflated is not None else self.payload

    @property
    def is_control(self) -> bool:
        """True for close, ping and pong."""
        return self.opcode in CONTROL_OPCODES

    def to_json(self, *, payload_limit: int | None = None) -> dict[str, object]:
        """Return the frame as the JSON object `upwire dissect --json` prints (hex for bytes)."""

        def hexed(data: bytes | None) -> str | None:
            if data is None:
                return None
            return (data if payload_limit is None else data[:payload_limit]).hex()

        return {
            "type": "frame",
            "stream": self.stream,
            "index": self.index,
            "time": round(self.time, 6),
            "packet": self.packet,
            "direction": self.direction,
            "src": self.src,
            "dst": self.dst,
            "fin": self.fin,
            "rsv1": bool(self.rsv & 4),
            "rsv2": bool(self.rsv & 2),
            "rsv3": bool(self.rsv & 1),
            "opcode": self.opcode,
            "opcode_name": opcode_name(self.opcode),
            "masked": self.masked,
            "mask_key": self.mask_key.hex() if self.mask_key is not None else None,
            "payload_length": self.payload_length,
            "length_bits": self.length_bits,
            "header_length": self.header_length,
            "payload_masked": hexed(self.payload_masked) if self.masked else None,
            "payload": hexed(self.payload),
            "compressed": self.compressed,
            "inflated": hexed(self.inflated),
            "text": self.text,
            "close_code": self.close_code,
            "close_reason": self.close_reason,
            "message": self.message,
            "message_opcode": opcode_name(self.message_opcode)
            if self.message_opcode is not None
            else None,
            "message_end": self.message_end,
            "message_length": self.message_length,
            "violations": list(self.violations),
        }


@dataclass(slots=True)
class DirectionStats:
    """Byte counts of one direction, for `--summary`."""

    frames: int = 0
    control_frames: int = 0
    messages: int = 0
    header_bytes: int = 0
    payload_bytes: int = 0  # as on the wire (compressed when compressed)
    message_bytes: int = 0  # the application's bytes (inflated)
    message_sizes: list[int] = field(default_factory=list)

    @property
    def wire_bytes(self) -> int:
        """Every byte of every frame."""
        return self.header_bytes + self.payload_bytes


@dataclass(slots=True)
class _Message:
    index: int
    opcode: int
    compressed: bool
    length: int = 0
    decoder: IncrementalUTF8Decoder | None = None
    invalid_utf8: bool = False


class _Direction:
    """One direction's frame parser, message in progress and inflater."""

    def __init__(
        self, name: str, client: bool, allowed_rsv: int, inflater: Inflater | None
    ) -> None:
        self.name = name
        self.client = client
        # The observer role of the core: masking is checked (a client must mask, a server must not)
        # but a violation is recorded in place instead of raised.
        self.parser = FrameParser(expect_masked=client, allowed_rsv=allowed_rsv, strict=False)
        # A capture that starts mid-connection: this direction's first bytes are not yet known to
        # start a frame.
        self.unchecked = False
        self.raw = bytearray()  # the same bytes as the parser's buffer, to keep each frame's header
        self.inflater = inflater
        self.message: _Message | None = None
        self.stats = DirectionStats()
        self.stopped: str | None = None  # why this direction is no longer decoded (a gap)
        self.close_sent = False


class WebSocketObserver:
    """Watch one TCP connection's bytes and turn them into `FrameRecord`s.

    Feed each direction's bytes in order with `feed` (`from_a` tells the direction: `a` is the endpoint
    that opened the connection, or the first one seen). Notes about the connection go to `notes`; the
    opening handshake to `request`/`response`.

    Args:
        stream: the connection's number (Wireshark's `tcp.stream`).
        a, b: the two endpoints as "host:port".
        mid_connection: the capture started after the connection opened (no SYN seen).
        opened_by_a: `a` sent the SYN (without ACK) that opened the connection: it is the client.
    """

    def __init__(
        self,
        stream: int,
        a: str,
        b: str,
        *,
        mid_connection: bool = False,
        opened_by_a: bool = False,
    ) -> None:
        self.stream = stream
        self.a = a
        self.b = b
        self.mid_connection = mid_connection
        self._opened_by_a = opened_by_a
        self._sent_with_request = 0  # client bytes that came in the same piece as the request's end
        # Client bytes still to decode that were sent before the 101 (their frames are flagged).
        self._sent_early = 0
        self.client: str | None = None
        self.server: str | None = None
        self.request: Request | None = None
        self.response: Response | None = None
        self.request_head_bytes = 0
        self.response_head_bytes = 0
        self.deflate: DeflateParams | None = None
        self.subprotocol: str | None = None
        self.extensions: str | None = None
        self.state = "handshake"  # handshake -> websocket | other
        self.notes: list[str] = []
        self.frames = 0
        # Bytes missing from each direction (`a`'s: True) that a note has told of.
        self.noted_gap_bytes = {True: 0, False: 0}
        self._messages = 0
        self._request_reader = RequestReader(max_header_bytes=_MAX_HEAD_BYTES)
        self._response_reader: ResponseReader | None = None
        self._early: dict[bool, bytearray] = {True: bytearray(), False: bytearray()}
        self._dirs: dict[bool, _Direction] = {}
        self._client_is_a: bool | None = None
        self.first_time: float | None = None
        self._request_seen = 0
        self._response_seen = 0
        # HTTP exchanges without Upgrade before this one (keep-alive): their count and the first.
        self._plain: Request | None = None  # such a request, waiting for its response
        self._body_reader: RequestBodyReader | None = None  # its body, still arriving
        self._exchanges = 0
        self._first_exchange = ""
        self._refused = False  # an Upgrade was refused, and the connection went on
        # The last refused Upgrade, its answer and its note's index, until another request comes: shown
        # as the connection's handshake if none does.
        self._refusal: tuple[Request, Response, int] | None = None
        # Mid-connection: the side whose first bytes are not a frame header, while the other is tried.
        self._mid_frame: bool | None = None

    @property
    def is_websocket(self) -> bool:
        """True once frames are being decoded."""
        return self.state == "websocket"

    def direction_stats(self) -> tuple[DirectionStats, DirectionStats]:
        """(client-to-server, server-to-client) counts."""
        c2s = self._by_name(CLIENT_TO_SERVER)
        s2c = self._by_name(SERVER_TO_CLIENT)
        return (c2s.stats if c2s else DirectionStats(), s2c.stats if s2c else DirectionStats())

    def _by_name(self, name: str) -> _Direction | None:
        for direction in self._dirs.values():
            if direction.name == name:
                return direction
        return None

    # --- input -----------------------------------------------------------------------------------

    def feed(self, from_a: bool, data: bytes, time: float, packet: int | None) -> list[FrameRecord]:
        """Take the next bytes of one direction; return the frames they complete."""
        if self.first_time is None:
            self.first_time = time
        if not data or self.state == "other":
            return []
        if self.state == "handshake":
            return self._handshake(from_a, data, time, packet)
        return self._frames(from_a, data, time, packet)

    def pending(self, from_a: bool) -> int:
        """How many bytes of one direction wait for the end of their frame."""
        return len(self._dirs[from_a].raw) if self.state == "websocket" else 0

    def release(self, from_a: bool, why: str) -> bytes:
        """Stop decoding one direction; return the bytes it held (the start of an incomplete frame).

        For a relay that cannot hold a frame whole: it passes these bytes and what follows on as they
        come. A note says why.
        """
        direction = self._dirs[from_a]
        held = bytes(direction.raw)
        direction.raw = bytearray()
        direction.parser = FrameParser(expect_masked=False, allowed_rsv=0, strict=False)
        if direction.stopped is None:
            direction.stopped = why
            self.notes.append(f"{direction.name}: {why}; the rest of this direction is not decoded")
        return held

    def gap(self, from_a: bool, size: int, cut_packet: int | None = None) -> None:
        """Bytes of one direction are missing from the capture.

        Args:
            cut_packet: the packet whose tail they are, when the capture cut it (its snap length); None
                when they are segments the capture never saw.
        """
        cause = (
            "a gap"
            if cut_packet is None
            else f"packet {cut_packet} was cut by the capture's snap length"
        )
        if self.state == "websocket":
            self.noted_gap_bytes[from_a] += size
            direction = self._dirs[from_a]
            if direction.stopped is None:
                direction.stopped = f"{size} bytes missing from the capture"
                self.notes.append(
                    f"{direction.name}: {size} bytes are missing from the capture ({cause}); "
                    "frames after them in this direction cannot be found reliably and are not "
                    "decoded"
                )
            else:
                self.notes.append(f"{direction.name}: another {size} bytes missing ({cause})")
        elif self.state == "handshake":
            self.noted_gap_bytes[from_a] += size
            self.state = "other"
            self.notes.append(
                f"from {self.a if from_a else self.b}: {size} bytes are missing from the capture "
                f"before the handshake completed ({cause})"
            )

    def finish(
        self, *, reset: bool = False, closed: bool = False, fins: tuple[int, int] = (0, 0)
    ) -> None:
        """The capture has ended, or the connection (live): report frames and messages left incomplete.

        Args:
            reset: the connection ended with a TCP RST that the capture holds, so an incomplete frame
                was cut by the reset, not by the end of the capture.
            closed: the connection was seen to close (`upwire tap`), not a capture that ends.
            fins: the packet numbers of the FINs of `a` and of `b` that the capture holds (0: none).
        """
        if reset:
            ends = "the connection was reset (RST)"
        elif closed:
            ends = "the connection closed"
        else:
            ends = "the capture ends"
        if self.state == "handshake":
            if self._refusal is not None:
                # A refused Upgrade on a connection left open, and no request after it: it is the
                # connection's handshake, and how the connection ended is said.
                request, response, note = self._refusal
                self.request, self.response = request, response
                self.notes[note] += f"; then {self._ending(reset, fins)}"
            elif self._exchanges and self.request is None:
                # Ordinary requests only, the last one answered or not (a refused Upgrade has its note).
                if not self._refused:
                    self._not_websocket(self._plain_text())
            elif self.request is not None and self.response is None:
                if reset or any(fins):
                    self.notes.append(
                        "the server did not answer the Upgrade request: "
                        f"{self._ending(reset, fins)}"
                    )
                else:
                    self.notes.append(
                        "the capture ends before the server answered the Upgrade request"
                    )
            elif self.request is None:
                seen = sum(len(b) for b in self._early.values())
                if (seen or self._mid_frame is not None) and self.mid_connection:
                    self.notes.append(
                        "the capture starts in the middle of this connection and its first bytes "
                        "are neither an HTTP request nor WebSocket frames"
                    )
                elif seen:
                    self.notes.append("not a WebSocket connection: no HTTP Upgrade request")
            return
        for from_a, direction in self._dirs.items():
            if direction.stopped:
                continue
            fin = fins[0 if from_a else 1]
            # The sender's FIN ends its direction: the frame can never complete, whatever follows.
            cut = (
                f"the {self._role(from_a)} closed the connection (FIN, packet {fin})"
                if fin and not reset
                else ends
            )
            buffered = direction.parser.buffered
            if buffered:
                header = decode_header(direction.raw)
                if header is not None:
                    # The header of a frame that never completed is checked too: its violation is the
                    # more telling part (a length with the top bit set, say).
                    violation = check_header(header, expect_masked=direction.client, allowed_rsv=7)
                    broken = (
                        f"; its header breaks RFC 6455: {violation.message}" if violation else ""
                    )
                    self.notes.append(
                        f"{direction.name}: {cut} inside a {opcode_name(header.opcode)} "
                        f"frame ({buffered} of {header.header_length + header.length} bytes){broken}"
                    )
                else:
                    self.notes.append(
                        f"{direction.name}: {cut} inside a frame header ({buffered} bytes)"
                    )
            if direction.message is not None:
                self.notes.append(
                    f"{direction.name}: message {direction.message.index} never got its final frame"
                )

    # --- the opening handshake ---------------------------------------------------------------------

    def _handshake(
        self, from_a: bool, data: bytes, time: float, packet: int | None
    ) -> list[FrameRecord]:
        if self._client_is_a is None:
            if from_a == self._mid_frame:
                return []  # its frames cannot be found: only the other side may still be decoded
            early = self._early[from_a]
            early += data
            if not self._looks_like_request(bytes(early)):
                if len(early) < 8 and bytes(early).isalpha():
                    return []  # too short to tell yet
                if self._opened_by_a and not from_a:
                    # The SYN says who the client is: the server's answer seen before the request (in a
                    # capture merged from several interfaces, whose clocks interleave) waits for it.
                    return self._hold(from_a, b"")  # all of it is in `early` (bounded there)
                if self.mid_connection:
                    return self._guess_frames(from_a, time, packet)
                self.state = "other"
                self.notes.append(
                    "not a WebSocket connection: it does not start with an HTTP request"
                )
                return []
            self._client_is_a = from_a
            self.client, self.server = (self.a, self.b) if from_a else (self.b, self.a)
            data = bytes(early)
            early.clear()
        if from_a == self._client_is_a:
            return self._request_bytes(from_a, data, time, packet)
        return self._response_bytes(from_a, data, time, packet)

    def _request_bytes(
        self, from_a: bool, data: bytes, time: float, packet: int | None
    ) -> list[FrameRecord]:
        """The client's bytes before the 101: request heads, ordinary requests' bodies, held bytes."""
        if self._body_reader is not None:
            try:
                rest = self._body_reader.feed(data)
            except InvalidHandshake as exc:
                return self._not_websocket(f"bad HTTP request body ({exc})")
            if rest is None:
                return []
            self._body_reader = None
            data = rest
            if not data:
                return []
        if self.request is not None or self._plain is not None:
            return self._hold(from_a, data)  # the next request, or frames: after the response
        self._request_seen += len(data)
        try:
            request = self._request_reader.feed(data)
        except InvalidHandshake as exc:
            return self._not_websocket(f"bad HTTP request ({exc})")
        if request is None:
            return []
        if self._refusal is not None:
            self.notes[self._refusal[2]] += "; the connection stays open"
            self._refusal = None
        self.request = request
        trailing = self._request_reader.trailing_data
        self.request_head_bytes = self._request_seen - len(trailing)
        if "websocket" not in request.headers.tokens("upgrade"):
            return self._plain_request(from_a, request, trailing, time, packet)
        if self._exchanges:
            self.notes.append(self._plain_before())
        self._response_reader = ResponseReader(request, max_header_bytes=_MAX_HEAD_BYTES)
        # Bytes in the request's own segment were sent before any answer (RFC 6455 §4.1); bytes seen
        # later but before the 101 may only look early (a merged capture's clocks).
        self._sent_with_request = len(self._early[from_a]) + len(trailing)
        self._early[from_a] += trailing
        waiting = bytes(self._early[not from_a])
        self._early[not from_a].clear()
        if waiting:
            return self._handshake(not from_a, waiting, time, packet)
        return []

    def _response_bytes(
        self, from_a: bool, data: bytes, time: float, packet: int | None
    ) -> list[FrameRecord]:
        """The server's bytes before the 101: the response to the request, or bytes held before one."""
        if self._response_reader is None:
            return self._hold(from_a, data)
        self._response_seen += len(data)
        try:
            response = self._response_reader.feed(data)
        except InvalidHandshake as exc:
            return self._not_websocket(f"bad HTTP response ({exc})")
        if response is None:
            return []
        if self._plain is not None:
            return self._plain_answered(from_a, response, time, packet)
        self.response = response
        trailing = self._response_reader.trailing_data
        self.response_head_bytes = self._response_seen - len(trailing)
        if response.status != 101:
            refused = f"the server refused the Upgrade: HTTP {response.status} {response.reason}"
            reader = self._response_reader
            if not reader.keeps_alive or self._exchanges >= _MAX_PLAIN_REQUESTS:
                self.state = "other"
                self.notes.append(refused)
                return []
            # The connection stays open: the client may try again on it (after a 401, with
            # credentials: RFC 6455 §4.1). The note says so if it does, or how it ended.
            request = self.request
            assert request is not None
            self._refusal = (request, response, len(self.notes))
            self.notes.append(refused)
            self._exchanges += 1
            if self._exchanges == 1:
                self._first_exchange = (
                    f"{request.method} {request.target} → {response.status} {response.reason}"
                ).rstrip()
            self.request = self.response = None
            self._refused = True
            return self._next_request(from_a, reader, time, packet)
        self._open(response)
        records = self._frames(from_a, trailing, time, packet)
        pending = bytes(self._early[not from_a])
        self._early[not from_a].clear()
        # Bytes in the request's own segment were sent before any answer could come: their frames
        # are flagged (`_frames`).
        self._sent_early = self._sent_with_request
        return records + self._frames(not from_a, pending, time, packet)

    def _plain_request(
        self, from_a: bool, request: Request, trailing: bytes, time: float, packet: int | None
    ) -> list[FrameRecord]:
        """An ordinary request: the connection may carry the Upgrade later (keep-alive)."""
        self._exchanges += 1
        if self._exchanges == 1:
            self._first_exchange = f"{request.method} {request.target}"
        if request.http_version != "1.1" or self._exchanges > _MAX_PLAIN_REQUESTS:
            return self._not_websocket(self._plain_text())
        try:
            self._body_reader = RequestBodyReader(request)
            self._response_reader = ResponseReader(
                request, max_header_bytes=_MAX_HEAD_BYTES, max_body_bytes=0
            )
        except InvalidHandshake as exc:
            return self._not_websocket(f"bad HTTP request ({exc})")
        self._plain = request
        self.request = None
        records = self._handshake(from_a, trailing, time, packet) if trailing else []
        waiting = bytes(self._early[not from_a])  # the response, if it came first
        self._early[not from_a].clear()
        if waiting and self._plain is request and self.state == "handshake":
            records += self._handshake(not from_a, waiting, time, packet)
        return records

    def _plain_answered(
        self, from_a: bool, response: Response, time: float, packet: int | None
    ) -> list[FrameRecord]:
        """An ordinary request got its whole response: the connection ends, or may carry another request."""
        request, reader = self._plain, self._response_reader
        assert request is not None and reader is not None
        if self._exchanges == 1:
            self._first_exchange += f" → {response.status} {response.reason}".rstrip()
        if response.status == 101:
            return self._not_websocket(
                f"HTTP {request.method} {request.target} switched to "
                f"{response.headers.get('Upgrade', 'another protocol')}, not WebSocket"
            )
        if not reader.keeps_alive:
            return self._not_websocket(self._plain_text())
        self._plain = None
        return self._next_request(from_a, reader, time, packet)

    def _next_request(
        self, from_a: bool, reader: ResponseReader, time: float, packet: int | None
    ) -> list[FrameRecord]:
        """Keep-alive: start over with the next request, held meanwhile if it came already."""
        self._response_reader = None
        self._request_reader = RequestReader(max_header_bytes=_MAX_HEAD_BYTES)
        self._request_seen = self._response_seen = 0
        self._early[from_a] += reader.trailing_data  # server bytes before a request: held, as ever
        waiting = bytes(self._early[not from_a])
        self._early[not from_a].clear()
        return self._handshake(not from_a, waiting, time, packet) if waiting else []

    def _hold(self, from_a: bool, data: bytes) -> list[FrameRecord]:
        """Keep bytes that come before their turn (a pipelined request, frames sent before the 101)."""
        early = self._early[from_a]
        early += data
        if len(early) > _MAX_EARLY_BYTES:
            early.clear()
            return self._not_websocket(
                f"more than {_MAX_EARLY_BYTES} bytes came before the answer they wait for"
            )
        return []

    def _ending(self, reset: bool, fins: tuple[int, int]) -> str:
        """How a connection ended, in words: who closed it (FIN) or reset it, or that the capture ends."""
        if reset:
            return "the connection was reset (RST)"
        closers = sorted(
            (packet, self._role(is_a))
            for packet, is_a in zip(fins, (True, False), strict=True)
            if packet
        )
        if not closers:
            return "the capture ends with the connection open"
        (packet, first), *rest = closers
        text = f"the {first} closed the connection (FIN, packet {packet})"
        for packet, other in rest:
            text += f", then the {other} (packet {packet})"
        return text

    def _role(self, is_a: bool) -> str:
        """ "client" or "server" for endpoint `a` or `b` (`a`, which opened the connection, until known)."""
        client_is_a = True if self._client_is_a is None else self._client_is_a
        return "client" if is_a == client_is_a else "server"

    def _plain_text(self) -> str:
        """Why a connection of ordinary HTTP requests is not WebSocket."""
        if self._exchanges > 1:
            return (
                f"{self._exchanges} HTTP requests without Upgrade: websocket "
                f"(the first: {self._first_exchange})"
            )
        return f"HTTP {self._first_exchange} without Upgrade: websocket"

    def _plain_before(self) -> str:
        """The note on an Upgrade that came after ordinary requests on the same connection."""
        count = "1 HTTP request" if self._exchanges == 1 else f"{self._exchanges} HTTP requests"
        return (
            f"the Upgrade request came after {count} on this connection "
            f"(keep-alive; the first: {self._first_exchange})"
        )

    def _not_websocket(self, why: str) -> list[FrameRecord]:
        self.state = "other"
        self.notes.append(f"not a WebSocket connection: {why}")
        return []

    @staticmethod
    def _looks_like_request(data: bytes) -> bool:
        method, sep, _ = data.partition(b" ")
        return bool(sep) and method.isalpha() and method.isupper() and len(method) <= 16

    def open(
        self,
        request: Request,
        response: Response,
        client: str,
        server: str,
        *,
        sent_early: int = 0,
    ) -> None:
        """Start decoding frames after a handshake seen elsewhere (the tap reads it itself).

        `feed(True, ...)` then means client-to-server. The first `sent_early` client bytes are known to
        have been sent before the 101 (the tap got them before it passed the 101 on): their frames
        break RFC 6455 §4.1 and are flagged.
        """
        self.request = request
        self.response = response
        self.client, self.server = client, server
        self._client_is_a = True
        self._open(response)
        self._sent_early = sent_early

    def _open(self, response: Response) -> None:
        self.state = "websocket"
        self.subprotocol = response.headers.get("Sec-WebSocket-Protocol")
        self.extensions = response.headers.get("Sec-WebSocket-Extensions")
        try:
            self.deflate = deflate_params(self.extensions)
        except NegotiationError as exc:
            # A client would fail this connection (RFC 6455 §9.1); the observer goes on without inflating.
            self.notes.append(f"{exc}: compressed payloads are not inflated")
            self.deflate = None
        self._setup_directions(allowed_rsv=4 if self.deflate else 0)

    def _setup_directions(self, allowed_rsv: int) -> None:
        deflate = self.deflate
        client_inflater = server_inflater = None
        if deflate is not None:
            client_inflater = Inflater(
                deflate.client_max_window_bits, not deflate.client_no_context_takeover
            )
            server_inflater = Inflater(
                deflate.server_max_window_bits, not deflate.server_no_context_takeover
            )
        assert self._client_is_a is not None
        self._dirs[self._client_is_a] = _Direction(
            CLIENT_TO_SERVER, True, allowed_rsv, client_inflater
        )
        self._dirs[not self._client_is_a] = _Direction(
            SERVER_TO_CLIENT, False, allowed_rsv, server_inflater
        )

    def _guess_frames(self, from_a: bool, time: float, packet: int | None) -> list[FrameRecord]:
        """A capture that starts mid-connection: try each direction's first bytes as a frame boundary."""
        data = bytes(self._early[from_a])
        header = decode_header(data)
        if header is None:
            return []  # wait for more bytes
        if check_header(header, expect_masked=None, allowed_rsv=4) is not None:
            if self._mid_frame is None:
                # This side starts inside a frame; the other may still start on a frame boundary.
                self._mid_frame = from_a
                self._early[from_a].clear()
                return (
                    self._guess_frames(not from_a, time, packet) if self._early[not from_a] else []
                )
            self.state = "other"
            self.notes.append(
                "the capture starts in the middle of this connection and its first bytes are "
                "neither an HTTP request nor a WebSocket frame"
            )
            return []
        # A masked frame comes from the client (RFC 6455 §5.3).
        self._client_is_a = from_a if header.masked else not from_a
        self.client, self.server = (self.a, self.b) if self._client_is_a else (self.b, self.a)
        self.state = "websocket"
        self.notes.append(
            "the capture starts in the middle of this connection: no opening handshake, so the "
            "negotiated extensions are unknown; frames are decoded from the first captured byte of "
            "each direction (compressed payloads may not inflate without their earlier context)"
        )
        self.deflate = DeflateParams() if header.rsv & 4 else None
        self._setup_directions(allowed_rsv=4)
        if self._mid_frame is None:
            self._dirs[not from_a].unchecked = True  # it may start in a frame's middle
        else:
            self._stop_mid_frame(self._dirs[not from_a])
        records: list[FrameRecord] = []
        for side in (from_a, not from_a):
            pending = bytes(self._early[side])
            self._early[side].clear()
            records += self._frames(side, pending, time, packet)
        return records

    def _stop_mid_frame(self, direction: _Direction) -> None:
        direction.stopped = "its first captured bytes do not start a frame"
        self.notes.append(
            f"{direction.name}: the capture starts in the middle of a frame in this "
            "direction; its frames cannot be found and are not decoded"
        )

    # --- frames ------------------------------------------------------------------------------------

    def _frames(
        self, from_a: bool, data: bytes, time: float, packet: int | None
    ) -> list[FrameRecord]:
        direction = self._dirs[from_a]
        if direction.stopped or not data:
            return []
        if direction.unchecked:
            header = decode_header(bytes(direction.raw) + data)
            if header is not None:
                direction.unchecked = False
                if check_header(header, expect_masked=direction.client, allowed_rsv=4) is not None:
                    self._stop_mid_frame(direction)
                    return []
        direction.parser.feed(data)
        direction.raw += data
        records: list[FrameRecord] = []
        while True:
            before = len(direction.parser.violations)
            frame = direction.parser.next_frame()
            if frame is None:
                return records
            header = frame.header
            head = bytes(direction.raw[: header.header_length])
            del direction.raw[: header.header_length + header.length]
            violations = [v.message for _, v in direction.parser.violations[before:]]
            src, dst = (self.client, self.server)
            if direction.name == SERVER_TO_CLIENT:
                src, dst = dst, src
            record = FrameRecord(
                stream=self.stream,
                index=self.frames,
                time=time,
                packet=packet,
                direction=direction.name,
                src=src or "",
                dst=dst or "",
                fin=header.fin,
                rsv=header.rsv,
                opcode=header.opcode,
                masked=header.masked,
                mask_key=header.mask_key,
                payload_length=header.length,
                length_bits=header.length_bits,
                header_length=header.header_length,
                header=head,
                payload=frame.payload,
                message=None,
                message_opcode=None,
                violations=violations,
            )
            self.frames += 1
            self._meaning(direction, record)
            if direction.client and self._sent_early > 0:
                # RFC 6455 §4.1: once its handshake is sent, a client waits for the server's response
                # before sending any further data.
                record.violations.append("client frame sent before the server's 101 response")
                self._sent_early -= header.header_length + header.length
            records.append(record)

    def _meaning(self, direction: _Direction, record: FrameRecord) -> None:
        """Fill in message, inflated payload, text and close fields of a frame."""
        stats = direction.stats
        stats.frames += 1
        stats.header_bytes += record.header_length
        stats.payload_bytes += record.payload_length
        opcode = record.opcode
        if opcode in CONTROL_OPCODES:
            stats.control_frames += 1
            record.message = self._next_message()
            record.message_opcode = opcode
            record.message_end = True
            record.message_length = len(record.payload)
            if opcode == Opcode.CLOSE:
                direction.close_sent = True
                try:
                    close = parse_close_payload(record.payload)
                except ProtocolError as exc:
                    record.violations.append(str(exc))
                    # What was sent all the same, as it is on the wire: the code that is not allowed,
                    # the reason with its invalid bytes replaced.
                    if len(record.payload) >= 2:
                        record.close_code = int.from_bytes(record.payload[:2], "big")
                        record.close_reason = bytes(record.payload[2:]).decode("utf-8", "replace")
                else:
                    record.close_code = close.code
                    record.close_reason = close.reason
            return
        if opcode not in (Opcode.TEXT, Opcode.BINARY, Opcode.CONTINUATION):
            return  # a reserved opcode: reported by check_header, no meaning to give
        if direction.close_sent:
            # RFC 6455 §5.5.1: after sending a Close frame, an endpoint must not send more data frames.
            record.violations.append("data frame sent after this side's Close frame")
        message = direction.message
        if opcode == Opcode.CONTINUATION:
            if message is None:
                # RFC 6455 §5.4: a continuation frame must continue a fragmented message.
                record.violations.append("continuation frame without a message to continue")
                return
            if record.rsv & 4:
                # RFC 7692 §6.1: RSV1 is set on the first frame of a compressed message only.
                record.violations.append("RSV1 set on a continuation frame")
        else:
            if message is not None:
                # RFC 6455 §5.4: a new data message cannot start before the previous one ends.
                record.violations.append(
                    f"new {opcode_name(opcode)} message before message {message.index} ended"
                )
            compressed = bool(record.rsv & 4) and direction.inflater is not None
            message = _Message(self._next_message(), opcode, compressed)
            if opcode == Opcode.TEXT:
                message.decoder = IncrementalUTF8Decoder()
            direction.message = message
        record.message = message.index
        record.message_opcode = message.opcode
        record.compressed = message.compressed
        data = record.payload
        if message.compressed and direction.inflater is not None:
            if direction.inflater.broken:
                record.violations.append(
                    "cannot inflate: an earlier message of this direction failed"
                )
                data = b""
            else:
                try:
                    data = direction.inflater.inflate(record.payload, record.fin)
                except ProtocolError as exc:
                    record.violations.append(f"cannot inflate: {exc}")
                    data = b""
                record.inflated = data
        message.length += len(data)
        if message.decoder is not None:
            if message.invalid_utf8:
                record.text = data.decode("utf-8", "replace")
            else:
                try:
                    record.text = message.decoder.decode(data, final=record.fin)
                except UnicodeDecodeError as exc:
                    message.invalid_utf8 = True
                    # RFC 6455 §8.1: a text message must be valid UTF-8 (1007 otherwise).
                    record.violations.append(f"text is not valid UTF-8 ({exc.reason})")
                    record.text = data.decode("utf-8", "replace")
        if record.fin:
            record.message_end = True
            record.message_length = message.length
            stats.messages += 1
            stats.message_bytes += message.length
            stats.message_sizes.append(message.length)
            direction.message = None

    def _next_message(self) -> int:
        index = self._messages
        self._messages += 1
        return index
