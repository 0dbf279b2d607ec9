"""The WebSocket connection state machine (RFC 6455 §5-§8), for a client or a server, after the handshake.

Owns: every rule about a *sequence* of frames — message reassembly from fragments, control frames between
fragments, incremental UTF-8 validation, message and frame size limits, ping/pong, the closing handshake,
and turning the peer's protocol errors into the right close code. Frame-header rules live in `frames`, close
payload rules in `close`.

Must not know: sockets, asyncio, clocks or threads. Bytes come in through `receive_data`, events come out;
commands (`send_message`, `send_ping`, `send_close`, ...) queue bytes that `data_to_send` hands over.

States (RFC 6455 §4-§7; CONNECTING is the handshake's business, see `handshake`):

    OPEN ──send_close──────────► CLOSING ──receive_eof (TCP closed)──► CLOSED
      │                            ▲
      ├──peer's close (echoed)─────┤        (any state) ──receive_eof──► CLOSED
      └──peer breaks the protocol──┘  (close frame with 1002/1007/1009 sent, input discarded)

Both close frames exchanged, the closing handshake is done and input is discarded, but the state stays
CLOSING until the TCP connection is closed (RFC 6455 §7.1.4: the connection is closed with TCP).

`transport_should_close` tells the I/O layer when to close TCP: a server closes first once the closing
handshake is done (RFC 6455 §7.1.1); both sides close after failing the connection (§7.1.7, with `failure`
set), where a server half-closes first and drains, so that the close frame is not lost to a reset, and a
client drains until the server closes (§7.1.1: the server holds TIME_WAIT), within a timeout of its own.
"""

from __future__ import annotations

import enum
import functools
import mmap
import threading
from collections.abc import Sequence
from typing import AnyStr

from upwire.exceptions import ProtocolError, UsageError
from upwire.protocol.close import build_close_payload, close_values, parse_close_payload
from upwire.protocol.events import CloseReceived, Event, Ping, Pong, ProtocolFailure
from upwire.protocol.extensions.base import Extension
from upwire.protocol.frames import (
    MaskKeys,
    Opcode,
    _size,
    alloc_buffer,
    apply_mask,
    byte_view,
    check_header,
    decode_header,
    encode_frame,
    encode_header,
    frame_size,
    keep_payload,
    mask_in_place,
    payload_buffer,
)
from upwire.protocol.simple_frames import take_simple_frames
from upwire.protocol.utf8 import IncrementalUTF8Decoder

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "SEPARATE_PAYLOAD_SIZE",
    "Connection",
    "Role",
    "State",
    "default_max_fragments",
]

DEFAULT_MAX_MESSAGE_SIZE = 1 << 20

_TEXT = Opcode.TEXT.value
_BINARY = Opcode.BINARY.value
_CONTINUATION = Opcode.CONTINUATION.value
_CLOSE = Opcode.CLOSE.value
_PING = Opcode.PING.value
_PONG = Opcode.PONG.value

# Payloads at least this large are queued as a separate chunk after their header instead of being
# concatenated with it, so a large message is never copied just to prepend 2-10 bytes (`data_to_send`).
SEPARATE_PAYLOAD_SIZE = 16 * 1024

# A data frame at least this long (header and payload; asyncio reads 256 KiB at a time) that is still
# arriving can be received in place (`receive_buffer`); its buffer grows to at most _SINK_GROWTH times what
# arrived of it, by _SINK_STEP at least.
_SINK_MIN_FRAME = 256 * 1024
_SINK_GROWTH = 4
_SINK_STEP = 256 * 1024
# While the peer streams (a batch of _STREAM_BATCH bytes or more ended inside a data frame of at least
# _STREAM_MIN_FRAME), that frame is received in place too, in a buffer with _READ_AHEAD bytes of room past
# its end: one read then takes the frames that follow it as well, and the frame still arriving at the end
# of that read moves to the buffer's start for the next one (one copy of at most a frame per read).
_STREAM_BATCH = 256 * 1024
_STREAM_MIN_FRAME = 16 * 1024
_READ_AHEAD = 512 * 1024
# A whole binary message in a frame of _STREAM_IN_PLACE bytes or more is received in place even while the
# peer streams: reading ahead past it saves a read or two, but then its payload is unmasked out of the
# read-ahead buffer into its bytes (a second pass over it, written into memory long out of the cache) and
# the next frame's start moves; from about this size that costs more than the reads it saves (measured:
# docs/design.md).
_STREAM_IN_PLACE = 512 * 1024
# A binary message in one frame of _SINK_MIN_FRAME bytes or more, with a payload of at most _PAYLOAD_MAX,
# is received straight into the bytes object the application gets (`payload_buffer`) and unmasked where it
# lies: no buffer to grow, no copy after the kernel's (a larger one grows a buffer as above, so that its
# header does not by itself reserve its size).
_PAYLOAD_MAX = 16 * 1024 * 1024
_WHOLE_BINARY = 0x80 | _BINARY  # FIN set, no RSV bit
# One buffer per thread is kept for the next large frame, up to this size.
_SPARE_MAX = 16 * 1024 * 1024
_spare = threading.local()

_mask_keys = MaskKeys()

# Above any frame length (RFC 6455 §5.2: 63 bits): "no limit" for the fast path's length check.
_NO_LIMIT = 1 << 63

# `_parse_frame` results other than an end position: the frame is incomplete / must wait for a resume.
_INCOMPLETE = -1
_PAUSE = -2
# Frames one `receive_data` call parses at most one by one (not counting whole messages in one frame).
_PARSED_PER_CALL = 4096
# What one `receive_data` call inflates at most before a new compressed message waits (input_pending).
_DECODED_PER_READ = 1024 * 1024


def default_max_fragments(max_message_size: int | None) -> int | None:
    """The frames a message may have when `max_fragments` is not given: one per 64 bytes of
    `max_message_size` (16,384 for 1 MiB), at least 1024; no limit without a message size limit."""
    if max_message_size is None:
        return None
    return max(1024, max_message_size // 64)


class Role(enum.Enum):
    """Which end of the connection this state machine plays."""

    CLIENT = "client"
    SERVER = "server"


class State(enum.IntEnum):
    """Connection states (RFC 6455 §4.1, §7). The core starts OPEN, after the opening handshake;
    CONNECTING is what the I/O layer reports before that."""

    CONNECTING = 0
    OPEN = 1
    CLOSING = 2
    CLOSED = 3


def not_utf8(error: UnicodeEncodeError) -> UsageError:
    """What sending text that UTF-8 cannot encode (a lone surrogate) raises, as `send_close` does."""
    return UsageError(
        f"cannot send text that is not valid Unicode: {error.reason} at index {error.start}"
    )


def _limits(
    max_message_size: int | None, max_frame_size: int | None, max_fragments: int | None
) -> tuple[int | None, int | None, int | None, int | None, int, int | None]:
    """Check a connection's size limits and derive what its parser compares against.

    Returns:
        max_message_size, max_frame_size and max_fragments with their defaults applied (-1: the default),
        the limit a frame header is checked against on its own (None when max_message_size's check covers
        it), the largest frame the fast path may take, and the largest compressed frame.
    """
    for name, limit in (
        ("max_message_size", max_message_size),
        ("max_frame_size", max_frame_size),
        ("max_fragments", max_fragments),
    ):
        if limit is None:
            continue
        if not isinstance(limit, int) or isinstance(limit, bool):
            raise TypeError(f"{name} must be a whole number or None, not {limit!r}")
        if name == "max_fragments":
            if limit <= 0 and limit != -1:
                raise ValueError(f"max_fragments must be a number of frames or None, not {limit!r}")
        elif limit < 0 and not (name == "max_frame_size" and limit == -1):
            raise ValueError(f"{name} must be a size in bytes or None, not {limit!r}")
    frame_size = max_message_size if max_frame_size == -1 else max_frame_size
    return (
        max_message_size,
        frame_size,
        # Frames in one message: each costs a few µs to parse however small, so a message of many tiny
        # fragments (or endless empty ones) is bounded in CPU as its size bounds memory.
        default_max_fragments(max_message_size) if max_fragments == -1 else max_fragments,
        # A data frame over max_message_size fails the message check, which names that option; the
        # frame check needs to run on its own only when max_frame_size differs.
        None if frame_size == max_message_size else frame_size,
        # The largest frame the fast path of `_consume` may take: within both limits.
        min(
            _NO_LIMIT if max_message_size is None else max_message_size,
            _NO_LIMIT if frame_size is None else frame_size,
        ),
        # A compressed frame may be larger than what it inflates to: zlib's deflateBound for any settings
        # is n + n/8 + n/64 + 5. Its inflated size is bounded by max_message_size when it is decoded.
        None
        if max_message_size is None
        else max_message_size + (max_message_size + 7) // 8 + (max_message_size + 63) // 64 + 64,
    )


# A server's connections share their limits: checked and derived once (typed: True is not the limit 1).
_cached_limits = functools.lru_cache(maxsize=64, typed=True)(_limits)


class Connection:
    """A sans-I/O WebSocket connection: bytes in, events out; commands in, bytes out.

    Args:
        role: CLIENT (masks what it sends, requires unmasked frames) or SERVER (the reverse).
        max_message_size: the largest message accepted, in bytes; None for no limit. Past it, the
            connection is failed with 1009.
        max_frame_size: the largest data frame payload accepted; None for no limit. Defaults to
            `max_message_size`. (Control frames carry at most 125 bytes, whatever the limits.)
    """

    __slots__ = (
        "_allowed_rsv",
        "_buffer",
        "_compressed_frame_limit",
        "_decoded_in_read",
        "_decoder",
        "_discard_input",
        "_expect_masked",
        "_extensions",
        "_fast_limit",
        "_frame_fin",
        "_frame_mask",
        "_frame_offset",
        "_frame_opcode",
        "_frame_remaining",
        "_frames_as_is",
        "_header_frame_limit",
        "_holding_pongs",
        "_max_fragments",
        "_max_frame_size",
        "_max_message_size",
        "_msg_frames",
        "_msg_opcode",
        "_msg_parts",
        "_msg_rsv",
        "_msg_size",
        "_msg_tail",
        "_out_fragment_type",
        "_outgoing",
        "_payload",
        "_payload_fill",
        "_payload_key",
        "_payload_view",
        "_pong_owed",
        "_sink",
        "_sink_ahead",
        "_sink_fill",
        "_sink_total",
        "_sink_view",
        "close_received",
        "close_sent",
        "failure",
        "frame_incomplete",
        "input_pending",
        "local_failure",
        "role",
        "state",
        "transport_should_close",
    )

    def __init__(
        self,
        role: Role,
        *,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        max_frame_size: int | None = -1,
        max_fragments: int | None = -1,
        extensions: Sequence[Extension] = (),
    ) -> None:
        try:
            limits = _cached_limits(max_message_size, max_frame_size, max_fragments)
        except TypeError:
            limits = None
        if limits is None:
            # A limit of the wrong type (or not hashable): the checks, run again, say which (raised here,
            # not while handling the first error, whose context would only repeat it).
            limits = _limits(max_message_size, max_frame_size, max_fragments)
        (
            self._max_message_size,
            self._max_frame_size,
            self._max_fragments,
            self._header_frame_limit,
            self._fast_limit,
            self._compressed_frame_limit,
        ) = limits
        self.role = role
        self.state = State.OPEN
        # True once the I/O layer should close the TCP connection (after flushing `data_to_send`).
        self.transport_should_close = False
        self._expect_masked = role is Role.SERVER
        # Negotiated extensions (permessage-deflate); with none, RSV bits are errors and no frame pays.
        self._extensions = list(extensions)
        self._allowed_rsv = 0
        for extension in self._extensions:
            self._allowed_rsv |= extension.rsv
        # A server with no extension sends a data frame as its header and the payload as is: the same
        # bytes for every connection (`can_share_frames`).
        self._frames_as_is = role is Role.SERVER and not self._extensions
        self._buffer = bytearray()
        # True when the input so far ends inside a frame (its first bytes are kept): only then may
        # `receive_buffer` offer a view, so an I/O layer may skip calling it otherwise. Set as
        # `receive_data` and `receive_written` return (a plain attribute: the I/O layer reads it before
        # every read).
        self.frame_incomplete = False
        # A large frame being received in place (see `receive_buffer`): its buffer, the bytes in it (the
        # frame's first), the frame's whole size, the room past it for reading ahead (0 or _READ_AHEAD),
        # and the view handed out for the next read.
        self._sink: bytearray | None = None
        self._sink_fill = 0
        self._sink_total = 0
        self._sink_ahead = 0
        self._sink_view: memoryview | None = None
        # A whole binary message being received into its own buffer (see `_begin_payload`): that buffer
        # (the bytes object delivered with the C speedups, a memory map copied to bytes without them), a
        # writable view of all of it, the payload bytes in it (unmasked as they arrive) and the frame's
        # masking key.
        self._payload: bytes | mmap.mmap | None = None
        self._payload_view: memoryview | None = None
        self._payload_fill = 0
        self._payload_key: bytes | None = None
        self._outgoing: list[bytes] = []
        self._discard_input = False
        # What the I/O layer reads after every batch: plain attributes (read-only for it), not
        # properties, since a property costs a function call per read on Python 3.11.
        # True when a close frame or a protocol error waits behind messages just returned, because they
        # came before it in the same batch: the application answers them first, then the caller calls
        # `receive_data(b"")`, which goes on.
        self.input_pending = False
        # The (code, reason) of the close frame this side sent, or None.
        self.close_sent: tuple[int | None, str] | None = None
        # The (code, reason) of the close frame the peer sent (1005 for no code), or None.
        self.close_received: tuple[int, str] | None = None
        # The peer's protocol error that failed this connection, or None.
        self.failure: ProtocolError | None = None
        # The (code, reason) this side failed the connection with, or None: for the peer's protocol error
        # (reason: the whole error message), or for a reason of its own (a timeout, an error in the
        # application; see `send_close(failing=True)`). Only a failure that sent the close frame counts.
        self.local_failure: tuple[int, str] | None = None
        # The message being received: opcode (0: none), parts, wire bytes so far, UTF-8 decoder.
        self._msg_opcode = 0
        self._msg_parts: list[bytes] | list[str] = []
        # Small fragments' payloads, joined into one part every _TAIL_PARTS: a message of one-byte
        # fragments would otherwise cost an object (~35-50 bytes) per byte.
        self._msg_tail: list[bytes] | list[str] = []
        # Bytes the extensions decoded (inflated) in this `receive_data` call: past _DECODED_PER_READ, the
        # next message waits for `receive_data(b"")`, so that one read of small compressed messages does
        # not inflate into hundreds of MiB at once (see `input_pending`).
        self._decoded_in_read = 0
        self._msg_size = 0
        self._msg_frames = 0
        self._msg_rsv = 0
        self._decoder: IncrementalUTF8Decoder | None = None
        # A text frame whose payload is consumed as it arrives (to fail fast on invalid UTF-8).
        self._frame_remaining = 0
        self._frame_mask: bytes | None = None
        self._frame_offset = 0
        self._frame_fin = False
        self._frame_opcode = 0
        # While pongs are held (see `hold_pongs`), the payload of the latest unanswered ping.
        self._holding_pongs = False
        self._pong_owed: bytes | None = None
        # The message being sent in fragments: None, str or bytes (the type of its first fragment).
        self._out_fragment_type: type | None = None

    # ------------------------------------------------------------------ what the application sees

    @property
    def close_code(self) -> int | None:
        """The close code of the connection once it is closing or closed, else None.

        The peer's code when it sent a close frame (1005 when that frame had none); the code this side sent
        when it failed the connection (the peer's protocol error, or `send_close(failing=True)`); 1006 when
        the connection ended without a close frame.
        """
        if self.close_received is not None:
            return self.close_received[0]
        if self.local_failure is not None:
            return self.local_failure[0]
        if self.state is State.CLOSED:
            return 1006
        return None

    @property
    def close_reason(self) -> str:
        """The close reason matching `close_code` ("" when there is none)."""
        if self.close_received is not None:
            return self.close_received[1]
        if self.local_failure is not None:
            return self.local_failure[1]
        return ""

    @property
    def closing_handshake_done(self) -> bool:
        """True when both close frames were exchanged."""
        return self.close_sent is not None and self.close_received is not None

    @property
    def receiving_message(self) -> bool:
        """True while a whole binary message is being received into its own bytes (`receive_buffer` offers
        the rest of it): an I/O layer that can read more at once should, so that its pieces arrive together."""
        return self._payload_view is not None

    def data_to_send(self) -> list[bytes]:
        """Return the bytes queued for the peer, in order, and forget them."""
        out = self._outgoing
        if out:
            self._outgoing = []
        return out

    # ------------------------------------------------------------------ receiving

    def receive_data(
        self, data: bytes | bytearray | memoryview, waiting: int | None = None
    ) -> list[Event]:
        """Process bytes received from the peer.

        Args:
            data: the bytes, in order; any split is fine (partial headers, partial payloads).
            waiting: how many more bytes the operating system already holds for this connection, when the
                I/O layer knows (`FIONREAD`); only a hint. When `data` ends inside a whole binary message
                of 256 KiB or more, its rest is received in place (`receive_buffer`) into the bytes object
                delivered, unless the message is under 512 KiB and more than its rest is waiting: then the
                peer streams, and reading ahead past the frame's end (one read for the rest and the next
                frames) costs less.

        The end of input comes in a batch of its own: when complete messages precede a close frame or a
        frame that breaks the protocol, parsing stops before that frame, `input_pending` becomes True
        and the messages are returned, so the application can answer them before the close frame goes
        out (a peer that sends messages and then closes, or errs, expects the answers to what came
        first). Further bytes are buffered until `receive_data(b"")` is called, which goes on. Parsing
        also stops so before a compressed message once 1 MiB was inflated in this call: the I/O layer
        goes on when its application has room for more messages (`max_queue`), so that one read of small
        compressed messages cannot inflate into hundreds of MiB at once.

        Input makes the connection queue bytes to send (a pong, a close frame) or set
        `transport_should_close` only together with a `Ping`, `CloseReceived` or `ProtocolFailure` event in
        the same batch (here and in `receive_written`): after a batch of messages only, there is nothing
        new in `data_to_send`.

        Returns:
            The events they complete, in order: `str`/`bytes` for complete messages, `Ping`, `Pong`,
            `CloseReceived`, and `ProtocolFailure` when the peer broke the protocol.
        """
        events: list[Event] = []
        start = 0
        self._decoded_in_read = 0
        if not (
            self.frame_incomplete
            or self.input_pending
            or self._discard_input
            or self._frame_remaining
            or self._msg_opcode
        ):
            # The common read: it starts at a frame boundary, and its frames are whole messages. This is
            # the fast path `_consume` takes first, taken here without a call; nothing to keep after it.
            start = take_simple_frames(data, 0, self._expect_masked, self._fast_limit, events)
            if start == len(data):
                return events
        try:
            if self._sink is not None:
                self._leave_sink()
            elif self._payload_view is not None:
                self._release_sink_view()
                if not data:
                    return events
                data = self._fill_payload(data, events)
                if not data:
                    return events
            if self._discard_input:
                return events
            if self.input_pending:
                if data:
                    self._buffer += data
                    return events
                self.input_pending = False
            elif not data:
                return events
            streaming = len(data) >= _STREAM_BATCH
            buffer = self._buffer
            if buffer:
                missing = self._missing_bytes()
                if 0 < missing < len(data):
                    # The frame waiting in the buffer ends inside `data`: complete just that frame, then parse
                    # the rest of `data` where it is, instead of copying all of it behind the buffer.
                    whole = memoryview(data)
                    buffer += whole[:missing]
                    rest = whole[missing:]
                    consumed = self._consume(buffer, events)
                    if self._discard_input:
                        self._buffer = bytearray()
                        return events
                    del buffer[:consumed]
                    if buffer or self.input_pending:
                        buffer += rest
                        return events
                    data = rest
                else:
                    buffer += data
                    data = buffer
            consumed = self._consume(data, events, start)
            if self._discard_input:
                self._buffer = bytearray()
            elif data is self._buffer:
                del self._buffer[:consumed]
            elif consumed < len(data):
                self._keep(memoryview(data)[consumed:], streaming, waiting)
            return events
        finally:
            # Inline, not a method: this runs once per read (as in `receive_written`).
            self.frame_incomplete = (
                True if self._buffer else self._sink is not None or self._payload_view is not None
            )

    def _keep(self, rest: memoryview, streaming: bool, waiting: int | None) -> None:
        """Keep the bytes of an incomplete frame; a large data frame's go to a buffer of its own at once."""
        total = 0
        if not self.input_pending:
            total = _large_frame_total(rest, _STREAM_MIN_FRAME if streaming else _SINK_MIN_FRAME)
        if (
            total >= _SINK_MIN_FRAME
            and (
                total >= _STREAM_IN_PLACE
                or not (streaming and waiting is not None and waiting > total - len(rest))
            )
            and self._begin_payload(rest)
        ):
            return
        if total:
            fill = len(rest)
            ahead = _READ_AHEAD if streaming else 0
            sink = _frame_buffer(_sink_target(fill, total, ahead))
            sink[:fill] = rest
            self._sink = sink
            self._sink_fill = fill
            self._sink_total = total
            self._sink_ahead = ahead
        else:
            self._buffer = bytearray(rest)

    def _consume(
        self, data: bytes | bytearray | memoryview, events: list[Event], start: int = 0
    ) -> int:
        """Consume complete frames (and the available part of a streamed text frame) from `data`.

        This is the hot loop: it works on offsets into one buffer and copies each payload once. A
        protocol error fails the connection (all of `data` counts as consumed then).

        Args:
            start: where the first frame starts (`receive_data`'s fast path took the frames before).

        Returns:
            How many bytes of `data` were consumed (`start` included).
        """
        view = memoryview(data)
        try:
            pos = start
            end = len(view)
            if self._frame_remaining:
                pos = self._stream_text(view, pos, events)
                if self._frame_remaining:
                    return pos
            fast_limit = self._fast_limit
            masked = self._expect_masked
            budget = _PARSED_PER_CALL
            while pos < end and not self._discard_input:
                if not self._msg_opcode:
                    # Fast path: the frames that are whole messages by themselves (`simple_frames` has the
                    # rule; such a frame passes every check of `_parse_frame` by construction). It takes
                    # none that is not, and raises for none: those go to `_parse_frame`, the reference.
                    pos = take_simple_frames(view, pos, masked, fast_limit, events)
                    if pos == end:
                        break
                budget -= 1
                if not budget:
                    # A flood of frames that make no message (empty fragments, control frames): let the
                    # event loop run other connections between batches (`input_pending`:
                    # receive_data(b"") goes on).
                    self.input_pending = True
                    break
                if 0x88 <= view[pos] <= 0x8A:  # FIN, no RSV bit, close, ping or pong
                    stop = self._take_control_frame(view, pos, end, events)
                    if stop >= 0:
                        pos = stop
                        continue
                try:
                    stop = self._parse_frame(view, pos, end, events)
                except ProtocolError as exc:
                    if not isinstance(exc, _NotRetryable) and any(
                        isinstance(event, str | bytes) for event in events
                    ):
                        self.input_pending = True
                        return pos
                    raise
                if stop < 0:
                    if stop == _PAUSE:
                        self.input_pending = True
                    break
                pos = stop
                if self._frame_remaining:
                    break
            return pos
        except ProtocolError as exc:
            self._fail(exc, events)
            return len(view)
        finally:
            view.release()

    def _missing_bytes(self) -> int:
        """How many bytes the frame that starts the buffer lacks; 0 while its header is incomplete."""
        size = frame_size(self._buffer)
        return 0 if size < 0 else size - len(self._buffer)

    def receive_buffer(self, frames_ahead: int | None = None) -> memoryview | None:
        """Return a writable view to receive the rest of a large frame into, or None.

        When the input stopped in the middle of a data frame of 256 KiB or more, the I/O layer may read
        the next bytes straight into this view (`socket.recv_into`, asyncio's `BufferedProtocol`) and
        then call `receive_written` with their number, instead of passing them to `receive_data`: the
        frame then reaches its buffer without an intermediate copy. The view stays valid until the next
        call to `receive_written` or `receive_data`.

        The view holds at most the rest of that frame, except while the peer streams: when a batch of
        256 KiB or more ended inside a data frame of 16 KiB or more (other than a whole binary message of
        512 KiB or more, which always goes into its own bytes object), that frame's view reaches 512 KiB
        past its end, so that one read takes the frames after it too. The frame still arriving at the end
        of such a read stays in the same buffer, moved to its start, and the next view follows it.
        `frames_ahead` caps that read-ahead at so many frames of the size of the one arriving (an I/O
        layer whose queue for incoming messages has room for only a few more passes that number); at 0 a
        whole binary message of 256 KiB or more goes into its own bytes object, as when the peer does not
        stream.

        The frame's buffer grows with what arrives (to at most 4 times what came of it, by 256 KiB at
        least), so a header that announces a large frame does not by itself allocate its size.
        """
        if self._sink_view is not None:
            self._release_sink_view()
        if self._payload_view is not None:
            view = self._sink_view = self._payload_view[self._payload_fill :]
            return view
        sink = self._sink
        if sink is None:
            # Whatever waits in the buffer begins with a frame that `_consume` found incomplete, after its
            # header passed every check; when complete, that frame is parsed again from the start.
            buffer = self._buffer
            if not buffer or self.input_pending or self._discard_input:
                return None  # the common case, once per read: nothing is arriving in pieces
            total = _large_frame_total(buffer, _SINK_MIN_FRAME)
            if not total:
                return None
            if self._begin_payload(memoryview(buffer)):
                self._buffer = bytearray()
                return self.receive_buffer()
            self._sink = sink = buffer
            self._sink_fill = len(buffer)
            self._sink_total = total
            self._sink_ahead = 0
            self._buffer = bytearray()
        fill = self._sink_fill
        total = self._sink_total
        ahead = self._sink_ahead
        if ahead and frames_ahead is not None and frames_ahead <= 0 and total >= _SINK_MIN_FRAME:
            # Read ahead for a stream, but no frame may follow this one now (the I/O layer's queue is
            # full, or its answers wait to be written): a whole binary message goes into its bytes after all.
            start = memoryview(sink)[:fill]
            moved = self._begin_payload(start)
            start.release()
            if moved:
                self._sink = None
                _spare_frame_buffer(sink)
                return self.receive_buffer()
        if fill == len(sink):
            grown = _frame_buffer(_sink_target(fill, total, ahead))
            grown[:fill] = sink
            self._sink = sink = grown
        if frames_ahead is not None and ahead:
            ahead = min(ahead, max(frames_ahead, 0) * total)
        # The buffer may be longer (a spare one): the view never reaches further than the read-ahead.
        view = memoryview(sink)[fill : total + ahead]
        self._sink_view = view
        return view

    def receive_written(self, nbytes: int) -> list[Event]:
        """Process `nbytes` bytes written at the start of the view `receive_buffer` returned.

        Returns:
            The events they complete, as `receive_data` does.

        Raises:
            UsageError: without a view from `receive_buffer`, or for more bytes than it held.
        """
        view = self._sink_view
        if view is None or (self._sink is None and self._payload_view is None):
            raise UsageError("receive_written() needs a view from receive_buffer() first")
        room = len(view)
        if not 0 <= nbytes <= room:
            raise UsageError(f"receive_written({nbytes}): the view held {room} bytes")
        try:
            self._release_sink_view()
            if self._payload_view is not None:
                events: list[Event] = []
                self._payload_arrived(nbytes, events)
                return events
            fill = self._sink_fill = self._sink_fill + nbytes
            if fill < self._sink_total:
                return []
            sink = self._sink
            assert sink is not None
            events = []
            # Every payload is copied out of the buffer (unmasking, bytes()): nothing refers to it after.
            whole = memoryview(sink)
            consumed = self._consume(whole[:fill], events)
            rest = fill - consumed
            if rest and not self._discard_input:
                tail = whole[consumed:fill]
                total = 0
                if self._sink_ahead and not self.input_pending:
                    total = _large_frame_total(tail, _STREAM_MIN_FRAME)
                if (
                    total >= _SINK_MIN_FRAME
                    and (nbytes < room or total >= _STREAM_IN_PLACE)
                    and self._begin_payload(tail)
                ):
                    # The next frame, a whole binary message, is received into its own buffer when the read
                    # stopped short of the read-ahead (the stream paused) or when it is large enough. A read
                    # that filled the view suggests more is waiting: reading ahead goes on.
                    pass
                elif total:
                    # The next frame is arriving in the same stream: it moves to the buffer's start
                    # (memoryview assignment copies overlapping bytes correctly) and reading goes on after it.
                    whole[:rest] = tail
                    tail.release()
                    whole.release()
                    self._sink_fill = rest
                    self._sink_total = total
                    return events
                else:
                    self._buffer = bytearray(tail)
                tail.release()
            self._sink = None
            try:
                whole.release()
            except BufferError:
                pass  # still referred to: not reused
            else:
                _spare_frame_buffer(sink)
            return events
        finally:
            self.frame_incomplete = (
                True if self._buffer else self._sink is not None or self._payload_view is not None
            )

    def _release_sink_view(self) -> None:
        view = self._sink_view
        if view is not None:
            self._sink_view = None
            try:
                view.release()
            except BufferError:
                pass  # still held by the reader (uvloop, until buffer_updated returns): freed with it

    def _leave_sink(self) -> None:
        """Put what was received in place back in the buffer, to go on with `receive_data`."""
        self._release_sink_view()
        sink = self._sink
        assert sink is not None
        try:
            del sink[self._sink_fill :]  # a spare buffer may be longer than the frame, too
        except BufferError:
            sink = sink[: self._sink_fill]
        self._sink = None
        self._buffer = sink

    def _begin_payload(self, data: memoryview) -> bool:
        """Receive the rest of the frame `data` starts with into a buffer of its own, if it is a whole binary
        message (nothing to reassemble, decode or validate); return whether it is.

        `data` holds the start of a frame of _SINK_MIN_FRAME bytes or more whose header passed every check.
        The message is delivered as that buffer: the bytes object itself with the C speedups.
        """
        if data[0] != _WHOLE_BINARY:
            return False
        header = decode_header(data)
        if header is None or header.length > _PAYLOAD_MAX:
            return False
        payload, view = payload_buffer(header.length)
        self._payload = payload
        self._payload_view = view
        self._payload_key = header.mask_key
        self._payload_fill = 0
        # The frame is still arriving: this part does not complete it.
        self._fill_payload(data[header.header_length :], [])
        return True

    def _fill_payload(
        self, data: bytes | bytearray | memoryview, events: list[Event]
    ) -> memoryview:
        """Copy the start of `data` into the payload being received; return the rest of `data`."""
        view = self._payload_view
        assert view is not None
        data = memoryview(data)
        fill = self._payload_fill
        take = min(len(view) - fill, len(data))
        view[fill : fill + take] = data[:take]
        self._payload_arrived(take, events)
        return data[take:]

    def _payload_arrived(self, nbytes: int, events: list[Event]) -> None:
        """`nbytes` more of the payload are in its buffer: unmask them; deliver the message once whole."""
        view = self._payload_view
        assert view is not None
        start = self._payload_fill
        fill = self._payload_fill = start + nbytes
        key = self._payload_key
        if key is not None and nbytes:
            mask_in_place(view[start:fill], key, start)
        if fill == len(view):
            payload = self._payload
            assert payload is not None
            self._end_payload()
            message = payload if type(payload) is bytes else bytes(payload)
            keep_payload(message)
            events.append(message)

    def _end_payload(self) -> None:
        view = self._payload_view
        if view is not None:
            self._payload_view = None
            try:
                view.release()  # nothing writes into the payload once it is handed out
            except BufferError:
                pass  # exported (a read in progress): freed with its last user
        self._payload = None
        self._payload_key = None
        self._payload_fill = 0

    def receive_eof(self) -> list[Event]:
        """Process the end of the TCP stream from the peer.

        Returns:
            No events; afterwards `state` is CLOSED and `close_code` is 1006 unless a close frame came.
        """
        if self._sink is not None or self._payload_view is not None:
            self._release_sink_view()
            self._sink = None
            self._end_payload()
        self.state = State.CLOSED
        self._discard_input = True
        self.transport_should_close = True
        self._buffer = bytearray()
        return []

    def _take_control_frame(self, view: memoryview, pos: int, end: int, events: list[Event]) -> int:
        """Process a whole control frame in its usual form at `pos`; return where it ends, or -1.

        The usual form: FIN set and no RSV bit (the caller checked the first byte), a 7-bit length within
        both size limits, masked as this side expects, all of it in `view`, and for a close frame, no
        message before it in `events`. Such a frame passes every check of `_parse_frame` by construction;
        any other (and every error) is left to it, the reference.
        """
        if end - pos < 2:
            return -1
        b1 = view[pos + 1]
        length = b1 & 0x7F
        if length > 125 or length > self._fast_limit or bool(b1 & 0x80) is not self._expect_masked:
            return -1
        opcode = view[pos] & 0x0F
        if opcode == _CLOSE and events:
            return -1  # a close frame may have to wait behind messages: `_parse_frame` decides
        if b1 & 0x80:
            start = pos + 6
            stop = start + length
            if stop > end:
                return -1
            payload = apply_mask(view[start:stop], bytes(view[pos + 2 : start]))
        else:
            start = pos + 2
            stop = start + length
            if stop > end:
                return -1
            payload = bytes(view[start:stop])
        self._control_frame(opcode, payload, events)
        return stop

    def _parse_frame(self, view: memoryview, pos: int, end: int, events: list[Event]) -> int:
        """Process the frame at `pos`; return where it ends, _INCOMPLETE or _PAUSE.

        A frame that raises `ProtocolError` has changed no state (so it can be parsed again), except a
        streamed text frame, which changes state but is never parsed again.
        """
        header = decode_header(view, pos)
        if header is None:
            return _INCOMPLETE
        violation = check_header(
            header,
            expect_masked=self._expect_masked,
            allowed_rsv=self._allowed_rsv,
            max_frame_size=self._header_frame_limit,
        )
        if violation is not None:
            raise ProtocolError(violation.message, violation.close_code)
        opcode = header.opcode
        length = header.length
        rsv = header.rsv
        if rsv:
            self._check_extension_bits(opcode, rsv)
        if opcode < 8:
            self._check_data_frame(opcode, length, rsv)
        start = pos + header.header_length
        stop = start + length
        if stop > end:
            # An incomplete text frame is consumed as it arrives so that invalid UTF-8 fails at once
            # (RFC 6455 §8.1 allows failing as soon as the bytes seen cannot be valid); a compressed one
            # waits for its end, since its bytes are not text until inflated.
            if (
                opcode == _TEXT or (opcode == _CONTINUATION and self._msg_opcode == _TEXT)
            ) and not (rsv or self._msg_rsv):
                if any(isinstance(event, str | bytes) for event in events):
                    # Check without consuming, so that an error can wait behind those messages.
                    self._check_partial_text(opcode, view[start:end], header.mask_key)
                self._start_streamed_text(header.fin, opcode, length, header.mask_key)
                try:
                    return self._stream_text(view, start, events)
                except ProtocolError as exc:
                    raise _NotRetryable(str(exc), exc.close_code) from None
            return _INCOMPLETE
        mask_key = header.mask_key
        if mask_key is not None:
            payload: bytes | memoryview = apply_mask(view[start:stop], mask_key)
        else:
            payload = view[start:stop]
        if opcode >= 8:
            if opcode == _CLOSE and any(isinstance(event, str | bytes) for event in events):
                return _PAUSE  # the close waits until the messages before it were answered
            self._control_frame(opcode, bytes(payload), events)
            return stop
        if self._extensions:
            message_rsv = rsv if opcode != _CONTINUATION else self._msg_rsv
            if message_rsv:
                if opcode != _CONTINUATION and self._decoded_in_read >= _DECODED_PER_READ:
                    return _PAUSE  # a new message: it waits until those before it were taken
                payload = self._decode_extensions(payload, message_rsv, header.fin)
                self._decoded_in_read += len(payload)
                try:
                    self._take_data(opcode, header.fin, rsv, payload, events)
                except _NotRetryable:
                    raise
                except ProtocolError as exc:
                    # The inflater moved on: parsing this frame again would inflate other bytes
                    # (a message the peer never sent). Invalid UTF-8 in it fails the connection now.
                    raise _NotRetryable(str(exc), exc.close_code) from None
                return stop
        self._take_data(opcode, header.fin, rsv, payload, events)
        return stop

    def _take_data(
        self, opcode: int, fin: bool, rsv: int, payload: bytes | memoryview, events: list[Event]
    ) -> None:
        """Add a whole data frame's payload (decoded by the extensions) to its message."""
        if opcode == _CONTINUATION:
            self._message_part(payload, fin, events)
            self._msg_frames += 1
        elif fin:
            # The common case: a whole message in one frame.
            if opcode == _TEXT:
                events.append(_decode_text(payload))
            else:
                events.append(bytes(payload))
        else:
            self._message_part(payload, False, events, first_opcode=opcode, rsv=rsv)

    def _check_extension_bits(self, opcode: int, rsv: int) -> None:
        """Let each negotiated extension check the RSV bits it defines (e.g. RFC 7692 §6)."""
        first = opcode in (_TEXT, _BINARY)
        for extension in self._extensions:
            problem = extension.check_frame(opcode, rsv, first)
            if problem is not None:
                raise ProtocolError(problem)

    def _decode_extensions(self, payload: bytes | memoryview, message_rsv: int, fin: bool) -> bytes:
        """Run a received data frame through the extensions, last negotiated first (RFC 6455 §9)."""
        limit = self._max_message_size
        room = None if limit is None else limit - self._msg_size
        data = bytes(payload)
        try:
            for extension in reversed(self._extensions):
                data = extension.decode_frame(data, message_rsv, fin, room)
        except ProtocolError as exc:
            # The extension's state (an inflater) moved on: this frame cannot be parsed again.
            raise _NotRetryable(str(exc), exc.close_code) from None
        return data

    def _check_data_frame(self, opcode: int, length: int, rsv: int) -> None:
        """Apply the fragmentation and message-size rules to a data frame's header."""
        if opcode == _CONTINUATION:
            if not self._msg_opcode:
                # RFC 6455 §5.4: a continuation frame continues a fragmented message; there is none.
                raise ProtocolError("continuation frame without a fragmented message to continue")
            fragments = self._max_fragments
            if fragments is not None and self._msg_frames >= fragments:
                raise ProtocolError(
                    f"message in more than {fragments} frames exceeds max_fragments", 1009
                )
            size = self._msg_size + length
            rsv = self._msg_rsv
        else:
            if self._msg_opcode:
                # RFC 6455 §5.4: fragments of one message are not interleaved with another message.
                raise ProtocolError(
                    f"{Opcode(opcode).name} frame inside a fragmented message (expected a continuation)"
                )
            size = length
        if rsv:
            # A transformed (compressed) frame: its decoded size is checked as it is decoded.
            frame_limit = self._compressed_frame_limit
            if frame_limit is not None and length > frame_limit:
                raise ProtocolError(
                    f"compressed frame of {_size(length)} exceeds what max_message_size allows",
                    1009,
                )
            return
        limit = self._max_message_size
        if limit is not None and size > limit:
            raise ProtocolError(
                f"message of {_size(size)} or more exceeds max_message_size={_size(limit)}", 1009
            )

    def _begin_message(
        self, opcode: int, decoder: IncrementalUTF8Decoder | None = None, rsv: int = 0
    ) -> None:
        self._msg_opcode = opcode
        self._msg_rsv = rsv
        self._msg_parts = []
        self._msg_tail = []
        self._msg_size = 0
        self._msg_frames = 1
        if decoder is None and opcode == _TEXT:
            decoder = IncrementalUTF8Decoder()
        self._decoder = decoder

    def _message_part(
        self,
        payload: bytes | memoryview,
        fin: bool,
        events: list[Event],
        first_opcode: int = 0,
        rsv: int = 0,
    ) -> None:
        """Add one fragment's payload to the message being received; deliver it on FIN.

        With `first_opcode`, the fragment starts a new message. State changes only after the payload
        passed its checks.
        """
        if first_opcode:
            decoder = IncrementalUTF8Decoder() if first_opcode == _TEXT else None
        else:
            decoder = self._decoder
        text = ""
        if decoder is not None:
            try:
                text = decoder.decode(payload, fin)
            except UnicodeDecodeError as exc:
                raise ProtocolError(f"invalid UTF-8 in text message ({exc.reason})", 1007) from None
        if first_opcode:
            self._begin_message(first_opcode, decoder, rsv)
        self._msg_size += len(payload)
        if decoder is not None:
            parts_text: list[str] = self._msg_parts  # type: ignore[assignment]
            tail_text: list[str] = self._msg_tail  # type: ignore[assignment]
            if text:
                _add_part(parts_text, tail_text, text, "")
            if fin:
                _add_part(parts_text, tail_text, "", "")
                events.append("".join(parts_text))
                self._end_message()
        else:
            parts_bytes: list[bytes] = self._msg_parts  # type: ignore[assignment]
            tail_bytes: list[bytes] = self._msg_tail  # type: ignore[assignment]
            if payload:
                # Empty fragments add nothing: a stream of them must not grow the list without bound.
                _add_part(parts_bytes, tail_bytes, bytes(payload), b"")
            if fin:
                _add_part(parts_bytes, tail_bytes, b"", b"")
                events.append(b"".join(parts_bytes))
                self._end_message()

    def _end_message(self) -> None:
        self._msg_opcode = 0
        self._msg_rsv = 0
        self._msg_parts = []
        self._msg_tail = []
        self._msg_size = 0
        self._decoder = None

    def _check_partial_text(self, opcode: int, chunk: memoryview, mask_key: bytes | None) -> None:
        """Raise ProtocolError if the start of a text frame is already invalid UTF-8; change nothing."""
        if opcode == _TEXT or self._decoder is None:
            decoder = IncrementalUTF8Decoder()
        else:
            decoder = self._decoder.copy()
        data = chunk if mask_key is None else apply_mask(chunk, mask_key)
        try:
            decoder.decode(data, False)
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"invalid UTF-8 in text message ({exc.reason})", 1007) from None

    def _start_streamed_text(
        self, fin: bool, opcode: int, length: int, mask_key: bytes | None
    ) -> None:
        if opcode == _TEXT:
            self._begin_message(_TEXT)
        else:
            self._msg_frames += 1
        self._frame_remaining = length
        self._frame_mask = mask_key
        self._frame_offset = 0
        self._frame_fin = fin
        self._frame_opcode = opcode

    def _stream_text(self, view: memoryview, start: int, events: list[Event]) -> int:
        """Feed the available part of a text frame to the UTF-8 decoder; return the new position."""
        take = min(self._frame_remaining, len(view) - start)
        stop = start + take
        chunk: bytes | memoryview = view[start:stop]
        if self._frame_mask is not None:
            chunk = apply_mask(chunk, self._frame_mask, self._frame_offset)
        self._frame_offset += take
        self._frame_remaining -= take
        last = self._frame_remaining == 0
        self._message_part(chunk, self._frame_fin and last, events)
        return stop

    def _control_frame(self, opcode: int, payload: bytes, events: list[Event]) -> None:
        if opcode == _PING:
            events.append(Ping(payload))
            if self.close_sent is None:
                if self._holding_pongs:
                    # RFC 6455 §5.5.3: an endpoint may answer only the most recent of several pings.
                    self._pong_owed = payload
                else:
                    # RFC 6455 §5.5.2: answer a ping with a pong carrying the same application data.
                    self._queue_frame(_PONG, payload)
        elif opcode == _PONG:
            # RFC 6455 §5.5.3: a pong may be unsolicited; it needs no answer.
            events.append(Pong(payload))
        else:
            close = parse_close_payload(payload)
            code = 1005 if close.code is None else close.code
            self.close_received = (code, close.reason)
            events.append(CloseReceived(code, close.reason))
            # RFC 6455 §5.5.1: nothing is processed after a close frame.
            self._discard_input = True
            self._buffer = bytearray()
            if self.close_sent is None:
                # RFC 6455 §5.5.1: answer with a close frame echoing the status code (and the reason).
                self.close_sent = (close.code, close.reason)
                self._queue_frame(_CLOSE, payload)
            self.state = State.CLOSING
            if self.role is Role.SERVER:
                # RFC 6455 §7.1.1: the server closes the TCP connection first.
                self.transport_should_close = True

    def _fail(self, error: ProtocolError, events: list[Event]) -> None:
        """_Fail the WebSocket Connection_ (RFC 6455 §7.1.7): send a close frame, then drop TCP."""
        # Kept without a traceback: it holds the frames that parsed the input, the I/O layer's among them,
        # and so its connection, which holds this core: a cycle only a full collection frees. So does the
        # exception the core raised it from, always suppressed (`from None`): dropped with it. (What the
        # caller was handling when it called stays as it was.)
        error.__traceback__ = None
        if error.__suppress_context__:
            error.__context__ = None
        self.failure = error
        events.append(ProtocolFailure(error.close_code, str(error)))
        if self.close_sent is None:
            reason = str(error).encode("utf-8")[:123].decode("utf-8", "ignore")
            self.close_sent = (error.close_code, reason)
            # The close code is the one sent for this error (after this side's own close frame, an
            # error of the peer's sends none: the code stays 1006 then, RFC 6455 §7.1.5).
            self.local_failure = (error.close_code, str(error))
            self._queue_frame(_CLOSE, build_close_payload(error.close_code, reason))
        self._discard_input = True
        self._end_message()
        self._frame_remaining = 0
        if self.state is State.OPEN:
            self.state = State.CLOSING
        self.transport_should_close = True

    # ------------------------------------------------------------------ sending

    def send_message(
        self, data: str | bytes | bytearray | memoryview, at_once: bool = False
    ) -> bytes | tuple[bytes, bytes] | None:
        """Queue a whole message: text for `str`, binary for bytes-like data.

        Args:
            at_once: the caller writes to the peer at once. Then, when nothing is queued before this message
                and its frame goes out as built (a server's, no extension in effect), the frame is returned
                instead of queued: the caller writes it, as the only bytes `data_to_send` would have
                returned. Under 16 KiB of payload it is one `bytes`; from 16 KiB on, a pair (header,
                payload), the payload the message's own `bytes` (not copied), as `data_to_send` would have
                returned them.

        Returns:
            The frame not queued, or None.

        Raises:
            UsageError: after the closing handshake started, or in the middle of a fragmented message.
        """
        # One test for every refusal (this runs once per message); `_check_can_send_data` owns the first.
        if (
            self.close_sent is not None
            or self.state is not _OPEN
            or self._out_fragment_type is not None
        ):
            self._check_can_send_data()
            raise UsageError("a fragmented message is being sent; finish it before sending another")
        # `type(data) is bytes` first: a failed isinstance test looks `__class__` up on the object.
        if type(data) is bytes:
            opcode = _BINARY
        elif isinstance(data, str):
            try:
                data = data.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise not_utf8(exc) from None
            opcode = _TEXT
        else:
            data = byte_view(data)
            opcode = _BINARY
        if self._frames_as_is:
            # The frames `_queue_frame` (the reference) builds for a server without extensions, built here
            # with one call less, and handed back when the caller writes them at once.
            size = len(data)
            if size < SEPARATE_PAYLOAD_SIZE:
                frame = encode_frame(opcode, data, True, 0)
                if at_once and not self._outgoing:
                    return frame
                self._outgoing.append(frame)
            else:
                # A copy only of a buffer the caller may change after this returns (not of `bytes`).
                pair = (encode_header(opcode, size), data if type(data) is bytes else bytes(data))
                if at_once and not self._outgoing:
                    return pair
                self._outgoing += pair
        else:
            self._queue_frame(opcode, data)
        return None

    @property
    def can_share_frames(self) -> bool:
        """True when an encoded data frame may be sent as is: a server with no extension in effect.

        Then one frame built by `frames.encode_frame` can go to many connections (`send_encoded`); a
        client masks each frame with its own key, and compression has per-connection state.
        """
        return self._frames_as_is

    def send_encoded(self, frame: bytes) -> bool:
        """Queue a whole data message already encoded as one unmasked, final frame (for broadcasts).

        Returns:
            True when queued; False when this connection cannot take it now: it is closing, it is in the
            middle of sending a fragmented message, or it cannot share frames (see `can_share_frames`).
        """
        if not self._takes_encoded():
            return False
        self._outgoing.append(frame)
        return True

    def takes_encoded_now(self) -> bool:
        """True when `send_encoded` would queue a frame and nothing is queued before it.

        Then the caller may write the shared frame to the peer itself instead of queuing it (what
        `broadcast` does on plain TCP): a data frame changes nothing in this connection's state.
        """
        return not self._outgoing and self._takes_encoded()

    def _takes_encoded(self) -> bool:
        return (
            self.close_sent is None
            and self.state is _OPEN
            and self._out_fragment_type is None
            and self._frames_as_is
        )

    def hold_pongs(self, hold: bool) -> None:
        """Hold the answers to pings (while the peer is not reading what is sent), or release them.

        While held, only the most recent ping is remembered (RFC 6455 §5.5.3 allows answering just that
        one), so a peer that pings without reading cannot make this side buffer pongs without bound. On
        release, one pong answers the latest ping received meanwhile.
        """
        self._holding_pongs = hold
        if not hold and self._pong_owed is not None:
            payload, self._pong_owed = self._pong_owed, None
            if self.close_sent is None and self.state is State.OPEN:
                self._queue_frame(_PONG, payload)

    def send_fragment(self, data: str | bytes | bytearray | memoryview, *, fin: bool) -> None:
        """Queue one fragment of a message sent in pieces; `fin=True` ends the message.

        The first fragment decides the message type (str: text, bytes: binary); the others must match.

        Raises:
            UsageError: after the closing handshake started, or when a fragment's type differs.
        """
        self._check_can_send_data()
        kind = str if isinstance(data, str) else bytes
        try:
            payload = data.encode("utf-8") if isinstance(data, str) else byte_view(data)
        except UnicodeEncodeError as exc:
            raise not_utf8(exc) from None
        current = self._out_fragment_type
        if current is None:
            opcode = _TEXT if kind is str else _BINARY
        elif current is not kind:
            raise UsageError("fragments of one message must all be str or all be bytes")
        else:
            opcode = _CONTINUATION
        self._out_fragment_type = None if fin else kind
        self._queue_frame(opcode, payload, fin=fin)

    def send_ping(self, data: bytes | bytearray | memoryview = b"") -> None:
        """Queue a ping (at most 125 bytes of data).

        Raises:
            UsageError: when the data is too long or a close frame was already sent.
        """
        data = byte_view(data)
        self._check_control(data, "ping")
        self._queue_frame(_PING, data)

    def send_pong(self, data: bytes | bytearray | memoryview = b"") -> None:
        """Queue an unsolicited pong, e.g. as a unidirectional heartbeat (RFC 6455 §5.5.3)."""
        data = byte_view(data)
        self._check_control(data, "pong")
        self._queue_frame(_PONG, data)

    def send_close(
        self, code: int | None = 1000, reason: str = "", *, failing: bool = False
    ) -> None:
        """Start (or answer) the closing handshake; nothing is sent after this frame.

        With `failing`, this side fails the connection for a reason of its own (a keepalive timeout, an
        application error): until a close frame comes back, `close_code` and `close_reason` are this
        frame's, not 1006.

        Raises:
            UsageError: for a code that must not be sent, a reason over 123 bytes, or a second close.
        """
        if self.close_sent is not None:
            raise UsageError("a close frame was already sent")
        if self.state is State.CLOSED:
            raise UsageError("cannot send a close frame: the connection is closed")
        code, reason = close_values(code, reason)  # kept as the frame says them
        payload = build_close_payload(code, reason)
        self.close_sent = (code, reason)
        if failing and code is not None:
            self.local_failure = (code, reason)
        self._queue_frame(_CLOSE, payload)
        if self.state is State.OPEN:
            self.state = State.CLOSING

    def _check_can_send_data(self) -> None:
        if self.close_sent is not None or self.state is not _OPEN:
            raise UsageError("cannot send data: the closing handshake has started")

    def _check_control(self, data: bytes | bytearray | memoryview, what: str) -> None:
        if len(data) > 125:
            raise UsageError(f"{what} data of {len(data)} bytes exceeds 125 bytes (RFC 6455 §5.5)")
        if self.close_sent is not None:
            raise UsageError(f"cannot send a {what}: a close frame was already sent")
        if self.state is State.CLOSED:
            raise UsageError(f"cannot send a {what}: the connection is closed")

    def _queue_frame(
        self, opcode: int, payload: bytes | bytearray | memoryview, *, fin: bool = True
    ) -> None:
        rsv = 0
        if self._extensions and opcode < 8:
            # RFC 6455 §9: data frames pass through the extensions in negotiation order.
            data = bytes(payload)
            first = opcode != _CONTINUATION
            for extension in self._extensions:
                data, bits = extension.encode_frame(data, first, fin)
                rsv |= bits
            payload = data
        if self.role is _CLIENT:
            # RFC 6455 §5.3: a client masks every frame with a fresh, unpredictable key.
            mask_key = _mask_keys.next()
            if len(payload) < SEPARATE_PAYLOAD_SIZE:
                self._outgoing.append(encode_frame(opcode, payload, fin, rsv, mask_key))
            else:
                header = encode_header(opcode, len(payload), fin=fin, rsv=rsv, mask_key=mask_key)
                self._outgoing += (header, apply_mask(payload, mask_key))
            return
        if len(payload) < SEPARATE_PAYLOAD_SIZE:
            self._outgoing.append(encode_frame(opcode, payload, fin, rsv))
        else:
            header = encode_header(opcode, len(payload), fin=fin, rsv=rsv)
            self._outgoing += (header, bytes(payload))


def _large_frame_total(data: bytes | bytearray | memoryview, least: int) -> int:
    """The whole size of the data frame `data` starts with if it is still arriving and `least` bytes or
    more long, else 0."""
    total = frame_size(data)
    return total if total >= least and total > len(data) and data[0] & 0x0F < 8 else 0


def _frame_buffer(size: int) -> bytearray:
    """A buffer of at least `size` bytes for a large frame: the thread's spare one when it is that large.

    Fresh memory for each large frame costs page faults (and the allocator returns it to the system between
    frames); reusing one buffer per thread avoids both. Its contents are not initialized.
    """
    spare: bytearray | None = getattr(_spare, "buffer", None)
    if spare is not None and len(spare) >= size:
        _spare.buffer = None
        return spare
    return alloc_buffer(size)


def _spare_frame_buffer(buffer: bytearray) -> None:
    """Keep a large frame's buffer for the thread's next one (the largest, up to _SPARE_MAX bytes)."""
    if len(buffer) <= _SPARE_MAX:
        spare: bytearray | None = getattr(_spare, "buffer", None)
        if spare is None or len(spare) < len(buffer):
            _spare.buffer = buffer


def _sink_target(fill: int, total: int, ahead: int) -> int:
    """The size of the buffer for a large frame of `total` bytes of which `fill` arrived, with `ahead`
    bytes of room past its end once it is taken whole."""
    target = max(fill * _SINK_GROWTH, fill + _SINK_STEP)
    # Take the whole frame rather than leave a last step of a few bytes (and copy everything for it).
    return total + ahead if target + _SINK_STEP >= total else target


# Looked up once per message sent (and per broadcast frame per connection): module constants, since
# an enum member's attribute lookup costs ~70 ns on CPython 3.11.
_OPEN = State.OPEN
_SERVER = Role.SERVER
_CLIENT = Role.CLIENT


class _NotRetryable(ProtocolError):
    """A protocol error found after the state changed: it fails the connection at once."""


def _decode_text(payload: bytes | memoryview) -> str:
    try:
        return str(payload, "utf-8")
    except UnicodeDecodeError as exc:
        # RFC 6455 §8.1: a text message that is not valid UTF-8 fails the connection with 1007.
        raise ProtocolError(f"invalid UTF-8 in text message ({exc.reason})", 1007) from None


# A fragment's payload under this size waits in the message's tail, with up to _TAIL_PARTS others.
_SMALL_PART = 4096
_TAIL_PARTS = 256


def _add_part(parts: list[AnyStr], tail: list[AnyStr], piece: AnyStr, empty: AnyStr) -> None:
    """Add `piece` to a message's parts, small pieces gathered in `tail` and joined by the hundred.

    An empty `piece` flushes the tail (at the message's end). Memory then stays within a few percent of
    the message's size however it is fragmented, and no piece is copied more than twice.
    """
    if piece and len(piece) < _SMALL_PART:
        tail.append(piece)
        if len(tail) < _TAIL_PARTS:
            return
    if tail:
        parts.append(empty.join(tail))
        tail.clear()
    if len(piece) >= _SMALL_PART:
        parts.append(piece)
