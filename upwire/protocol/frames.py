"""WebSocket framing (RFC 6455 §5): opcodes, the frame header, masking, and an incremental frame parser.

Owns: the bytes of one frame and the rules that can be checked from one frame header alone (reserved opcodes,
RSV bits, control-frame limits, masking direction, length encodings). Message-level rules (fragmentation,
UTF-8, the closing handshake) belong to `connection`.

Must not know: sockets, asyncio, clocks, or which message a frame belongs to.
"""

from __future__ import annotations

import enum
import mmap
import os
import struct
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, NamedTuple, TypeVar, cast

from upwire.exceptions import PayloadTooBig, ProtocolError

__all__ = [
    "CONTROL_OPCODES",
    "DATA_OPCODES",
    "Frame",
    "FrameHeader",
    "FrameParser",
    "MaskKeys",
    "Opcode",
    "Violation",
    "alloc_buffer",
    "alloc_buffer_py",
    "apply_mask",
    "apply_mask_py",
    "byte_view",
    "check_header",
    "decode_header",
    "encode_frame",
    "encode_frame_py",
    "encode_header",
    "frame_size",
    "keep_payload",
    "keep_payload_py",
    "mask_in_place",
    "mask_in_place_py",
    "payload_buffer",
    "payload_buffer_py",
]


class Opcode(enum.IntEnum):
    """Frame opcodes (RFC 6455 §5.2, §11.8)."""

    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


DATA_OPCODES: Final = frozenset({Opcode.CONTINUATION, Opcode.TEXT, Opcode.BINARY})
CONTROL_OPCODES: Final = frozenset({Opcode.CLOSE, Opcode.PING, Opcode.PONG})
_KNOWN_OPCODES: Final = frozenset(int(op) for op in Opcode)

# RFC 6455 §5.5: all control frames MUST have a payload length of 125 bytes or less.
MAX_CONTROL_PAYLOAD: Final = 125


class FrameHeader(NamedTuple):
    """The fixed part of a frame as it appears on the wire.

    A named tuple rather than a frozen dataclass: one is built per frame, and a tuple is several times
    cheaper to build.

    Attributes:
        fin: the FIN bit: this frame ends its message.
        rsv: the three RSV bits as one number (RSV1 = 4, RSV2 = 2, RSV3 = 1).
        opcode: the opcode as sent (an int: reserved opcodes are kept, not rejected here).
        masked: the MASK bit.
        length: the payload length.
        mask_key: the 4-byte masking key, or None when the frame is not masked.
        header_length: the size of the header in bytes (2 to 14).
        length_bits: how the length was encoded: 7, 16 or 64 bits.
    """

    fin: bool
    rsv: int
    opcode: int
    masked: bool
    length: int
    mask_key: bytes | None
    header_length: int
    length_bits: int


@dataclass(frozen=True, slots=True)
class Frame:
    """One complete frame with its payload unmasked.

    Attributes:
        header: the header as it was on the wire.
        payload: the payload, unmasked.
    """

    header: FrameHeader
    payload: bytes

    @property
    def opcode(self) -> int:
        """The frame's opcode."""
        return self.header.opcode

    @property
    def fin(self) -> bool:
        """The FIN bit."""
        return self.header.fin


@dataclass(frozen=True, slots=True)
class Violation:
    """A rule of RFC 6455 that a frame breaks, with the close code an endpoint answers it with."""

    close_code: int
    message: str


def decode_header(buffer: bytes | bytearray | memoryview, pos: int = 0) -> FrameHeader | None:
    """Decode the frame header that starts at `buffer[pos]`.

    Args:
        buffer: received bytes.
        pos: where the header starts.

    Returns:
        The header, or None when `buffer` does not yet hold all of it.
    """
    available = len(buffer) - pos
    if available < 2:
        return None
    b0 = buffer[pos]
    b1 = buffer[pos + 1]
    length = b1 & 0x7F
    header_length = 2
    length_bits = 7
    if length == 126:
        header_length = 4
        length_bits = 16
        if available < 4:
            return None
        length = (buffer[pos + 2] << 8) | buffer[pos + 3]
    elif length == 127:
        header_length = 10
        length_bits = 64
        if available < 10:
            return None
        length = int.from_bytes(buffer[pos + 2 : pos + 10], "big")
    mask_key = None
    masked = bool(b1 & 0x80)
    if masked:
        if available < header_length + 4:
            return None
        mask_key = bytes(buffer[pos + header_length : pos + header_length + 4])
        header_length += 4
    return FrameHeader(
        fin=bool(b0 & 0x80),
        rsv=(b0 >> 4) & 0x7,
        opcode=b0 & 0x0F,
        masked=masked,
        length=length,
        mask_key=mask_key,
        header_length=header_length,
        length_bits=length_bits,
    )


def frame_size(buffer: bytes | bytearray | memoryview, pos: int = 0) -> int:
    """The whole size (header and payload) of the frame that starts at `buffer[pos]`; -1 without its header.

    What `decode_header` gives as `header_length + length`, without building the header: the connection asks
    this on every read that ends inside a frame, to know how much of that frame is still to come.
    """
    available = len(buffer) - pos
    if available < 2:
        return -1
    b1 = buffer[pos + 1]
    length = b1 & 0x7F
    size = 6 if b1 & 0x80 else 2  # the masking key, when there is one, follows the length
    if length == 126:
        if available < 4:
            return -1
        length = (buffer[pos + 2] << 8) | buffer[pos + 3]
        size += 2
    elif length == 127:
        if available < 10:
            return -1
        length = int.from_bytes(buffer[pos + 2 : pos + 10], "big")
        size += 8
    return -1 if available < size else size + length


def check_header(
    header: FrameHeader,
    *,
    expect_masked: bool | None,
    allowed_rsv: int = 0,
    max_frame_size: int | None = None,
) -> Violation | None:
    """Check the rules of RFC 6455 that one header alone can break.

    Args:
        header: the decoded header.
        expect_masked: True for frames a server receives, False for a client, None for an observer that
            accepts both directions.
        allowed_rsv: the RSV bits that negotiated extensions define (0 without extensions).
        max_frame_size: the largest payload accepted, or None for no limit.

    Returns:
        The first violated rule, or None when the header is acceptable.
    """
    opcode = header.opcode
    length = header.length
    if opcode not in _KNOWN_OPCODES:
        # RFC 6455 §5.2: opcodes 0x3-0x7 and 0xB-0xF are reserved; an unknown one MUST fail the connection.
        return Violation(1002, f"reserved opcode {opcode:#x}")
    if header.rsv & ~allowed_rsv:
        # RFC 6455 §5.2: RSV bits MUST be 0 unless an extension defining them was negotiated.
        return Violation(
            1002, f"RSV bits {header.rsv:03b} set that no negotiated extension defines"
        )
    if opcode >= 0x8:
        # RFC 6455 §5.5: control frames MUST NOT be fragmented and carry at most 125 bytes.
        if not header.fin:
            return Violation(1002, f"fragmented control frame ({Opcode(opcode).name})")
        if length > MAX_CONTROL_PAYLOAD:
            return Violation(
                1002, f"control frame ({Opcode(opcode).name}) of {length} bytes exceeds 125 bytes"
            )
    if header.length_bits == 64 and length >> 63:
        # RFC 6455 §5.2: the most significant bit of a 64-bit length MUST be 0.
        return Violation(1002, "64-bit payload length with the most significant bit set")
    if (header.length_bits == 16 and length < 126) or (header.length_bits == 64 and length < 65536):
        # RFC 6455 §5.2: the minimal number of bytes MUST be used to encode the length.
        return Violation(
            1002, f"length {length} not in its minimal {header.length_bits}-bit encoding"
        )
    if expect_masked is not None and header.masked != expect_masked:
        # RFC 6455 §5.1: a server MUST close on an unmasked frame; a client MUST close on a masked one.
        if expect_masked:
            return Violation(1002, "unmasked frame from a client")
        return Violation(1002, "masked frame from a server")
    if max_frame_size is not None and length > max_frame_size and opcode < 0x8:
        # Data frames only: a control frame is at most 125 bytes anyway, and failing the peer's close
        # frame (or a ping) under a small limit would break the closing handshake (or keepalive).
        return Violation(
            1009, f"frame of {_size(length)} exceeds max_frame_size={_size(max_frame_size)}"
        )
    return None


def _size(n: int) -> str:
    """Format a byte count for error messages: 1048576 -> '1 MiB', 1000 -> '1000 bytes'."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} bytes"


_Twin = TypeVar("_Twin", bound=Callable[..., Any])


def select_speedup(twin: _Twin) -> _Twin:
    """The C version of the Python `twin` (its name without `_py`) from `upwire._speedups`, or `twin`.

    `twin` itself when the extension is not built (it is optional), does not have that function, or
    `UPWIRE_NO_SPEEDUPS` is set in the environment.
    """
    if os.environ.get("UPWIRE_NO_SPEEDUPS"):
        return twin
    try:
        from upwire import _speedups
    except ImportError:
        return twin
    return cast(_Twin, getattr(_speedups, twin.__name__.removesuffix("_py"), twin))


def byte_view(data: bytes | bytearray | memoryview) -> bytes | bytearray | memoryview:
    """`data` as a flat run of bytes, which is what frames are sized by (`len`) and built from.

    `bytes` and `bytearray` are returned as they are. Another buffer (`array.array`, say) is seen through a
    memoryview (`TypeError` for an object that is not a buffer). A contiguous memoryview of wider items
    (`len` counts items: 20000 ints are 80000 bytes) or of several dimensions is cast to bytes, without a
    copy; one with gaps between its items is copied.
    """
    kind = type(data)
    if kind is bytes or kind is bytearray:
        return data
    view = data if isinstance(data, memoryview) else memoryview(data)
    if view.itemsize != 1 or view.ndim != 1 or not view.c_contiguous:
        return view.cast("B") if view.c_contiguous else view.tobytes()
    return view


def apply_mask_py(data: bytes | bytearray | memoryview, mask_key: bytes, offset: int = 0) -> bytes:
    """XOR `data` with the repeated 4-byte `mask_key` (RFC 6455 §5.3); masking and unmasking are the same.

    The pure-Python reference; `apply_mask` is the C version from `upwire._speedups` when it is built.

    Args:
        data: the payload (or a piece of it).
        mask_key: the 4-byte masking key.
        offset: the position of `data[0]` within the whole payload, for payloads handled in pieces.

    Returns:
        The masked (or unmasked) bytes.
    """
    data = byte_view(data)
    n = len(data)
    if n == 0:
        return b""
    mask_key = bytes(mask_key)
    shift = offset & 3
    if shift:
        mask_key = mask_key[shift:] + mask_key[:shift]
    # One big-int XOR runs at memory speed in C; a Python loop per byte would be ~100x slower.
    repeated = mask_key * ((n + 3) >> 2)
    value = int.from_bytes(data, "little") ^ int.from_bytes(repeated[:n], "little")
    return value.to_bytes(n, "little")


apply_mask = select_speedup(apply_mask_py)


def alloc_buffer_py(size: int) -> bytearray:
    """Return a bytearray of `size` bytes to receive into (the Python twin: zero-filled).

    `alloc_buffer` is the C version from `upwire._speedups`, which leaves the contents uninitialized, so
    that memory is written once, by what is received; callers read only what they wrote.
    """
    if size < 0:
        raise ValueError("size must not be negative")
    return bytearray(size)


alloc_buffer = select_speedup(alloc_buffer_py)


def mask_in_place_py(buffer: bytearray | memoryview, mask_key: bytes, offset: int = 0) -> None:
    """`apply_mask` on a writable buffer, in place (`offset` as for `apply_mask`).

    The pure-Python reference; `mask_in_place` is the C version from `upwire._speedups`.
    """
    buffer[:] = apply_mask_py(buffer, mask_key, offset)


mask_in_place = select_speedup(mask_in_place_py)


def payload_buffer_py(size: int) -> tuple[bytes | mmap.mmap, memoryview]:
    """Return a buffer of `size` bytes to receive a message's payload into, and a writable view of it.

    The Python twin's buffer is an anonymous memory map (its pages are backed only as they are written, as
    the C version's are), which the caller copies to bytes once it is full. `payload_buffer` is the C version
    from `upwire._speedups`: its buffer is the bytes object itself, not initialized, filled through the view
    and then handed out as it is (no copy). Either way the caller writes through the view only until it
    hands the payload out.
    """
    if size <= 0:
        raise ValueError("size must be positive")
    buffer = mmap.mmap(-1, size)
    return buffer, memoryview(buffer)


payload_buffer = select_speedup(payload_buffer_py)


def keep_payload_py(payload: bytes) -> None:
    """Remember a payload from `payload_buffer` just handed out (the Python twin: nothing to remember).

    The C version keeps the last one, and receives the next payload of that size into it once nothing
    else refers to it: the application is done with it, and its memory is still paged in.
    """


keep_payload = select_speedup(keep_payload_py)


# The first two bytes and the 16- or 64-bit length, in network order.
_HEADER_16: Final = struct.Struct("!BBH")
_HEADER_64: Final = struct.Struct("!BBQ")


def encode_header(
    opcode: int, length: int, *, fin: bool = True, rsv: int = 0, mask_key: bytes | None = None
) -> bytes:
    """Encode a frame header with the shortest length encoding (RFC 6455 §5.2).

    Args:
        opcode: the opcode.
        length: the payload length.
        fin: the FIN bit.
        rsv: the RSV bits as one number (RSV1 = 4).
        mask_key: the masking key, or None for an unmasked frame.

    Returns:
        The header bytes.
    """
    if not (0 <= opcode <= 15 and 0 <= rsv <= 7):
        raise ValueError("opcode must be 0-15 and rsv 0-7")
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    mask_bit = 0x80 if mask_key is not None else 0
    if length < 126:
        header = bytes((b0, mask_bit | length))
    elif length < 65536:
        header = _HEADER_16.pack(b0, mask_bit | 126, length)
    else:
        header = _HEADER_64.pack(b0, mask_bit | 127, length)
    if mask_key is not None:
        header += mask_key
    return header


def encode_frame_py(
    opcode: int,
    payload: bytes | bytearray | memoryview,
    fin: bool = True,
    rsv: int = 0,
    mask_key: bytes | None = None,
) -> bytes:
    """Encode a whole frame, masking the payload when `mask_key` is given (the pure-Python twin).

    `encode_frame` is the C version from `upwire._speedups` when it is built: the same bytes, built in one
    allocation and one pass over the payload.

    Args:
        opcode: the opcode.
        payload: the payload, unmasked.
        fin: the FIN bit.
        rsv: the RSV bits as one number.
        mask_key: the masking key (clients MUST mask, RFC 6455 §5.3), or None.

    Returns:
        The frame's bytes.
    """
    payload = byte_view(payload)
    header = encode_header(opcode, len(payload), fin=fin, rsv=rsv, mask_key=mask_key)
    if mask_key is not None:
        if len(mask_key) != 4:
            raise ValueError("mask_key must be 4 bytes")
        return header + apply_mask_py(payload, mask_key)
    return header + payload


encode_frame = select_speedup(encode_frame_py)


# Every MaskKeys, emptied in a forked child (`os.register_at_fork` below the class).
_key_sources: weakref.WeakSet[MaskKeys] = weakref.WeakSet()


class MaskKeys:
    """A source of unpredictable masking keys (RFC 6455 §5.3), drawn from `os.urandom` in batches.

    A forked child starts with an empty batch: the parent's rest would give both the same keys, so that a
    peer who saw one's frames would know the other's next keys.
    """

    __slots__ = ("__weakref__", "_pool", "_pos")

    _BATCH = 4096

    def __init__(self) -> None:
        self._pool = b""
        self._pos = 0
        _key_sources.add(self)

    def _forget(self) -> None:
        self._pool = b""
        self._pos = 0

    def next(self) -> bytes:
        """Return a fresh 4-byte masking key."""
        pos = self._pos
        if pos + 4 > len(self._pool):
            self._pool = os.urandom(self._BATCH)
            pos = 0
        self._pos = pos + 4
        return self._pool[pos : pos + 4]


def _forget_mask_keys() -> None:
    for source in list(_key_sources):
        source._forget()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_mask_keys)


class FrameParser:
    """Incremental parser of complete frames over one receive buffer.

    Feed bytes with `feed`, then call `next_frame` until it returns None. Used by observers (the dissector,
    the tap) and tests; the connection state machine decodes headers with the same `decode_header` and
    `check_header` but streams text payloads so invalid UTF-8 fails before a frame is complete.

    In a strict role (`expect_masked` True or False) a violation raises `ProtocolError`; in the observer
    role (`expect_masked=None`, `strict=False`) the frame is returned and the violation is recorded in
    `violations` with the frame's index.
    """

    def __init__(
        self,
        *,
        expect_masked: bool | None,
        allowed_rsv: int = 0,
        max_frame_size: int | None = None,
        strict: bool = True,
    ) -> None:
        self._buffer = bytearray()
        self._expect_masked = expect_masked
        self._allowed_rsv = allowed_rsv
        self._max_frame_size = max_frame_size
        self._strict = strict
        self.frames_parsed = 0
        self.violations: list[tuple[int, Violation]] = []

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes to the buffer."""
        self._buffer += data

    @property
    def buffered(self) -> int:
        """How many received bytes are not yet part of a returned frame."""
        return len(self._buffer)

    def next_frame(self) -> Frame | None:
        """Return the next complete frame, or None when more bytes are needed.

        Raises:
            ProtocolError: in a strict role, when a frame breaks a rule of RFC 6455.
        """
        buffer = self._buffer
        header = decode_header(buffer)
        if header is None:
            return None
        violation = check_header(
            header,
            expect_masked=self._expect_masked,
            allowed_rsv=self._allowed_rsv,
            max_frame_size=self._max_frame_size,
        )
        if violation is not None and self._strict:
            if violation.close_code == 1009:
                raise PayloadTooBig(violation.message)
            raise ProtocolError(violation.message, violation.close_code)
        end = header.header_length + header.length
        if len(buffer) < end:
            return None
        if violation is not None:
            self.violations.append((self.frames_parsed, violation))
        payload = bytes(buffer[header.header_length : end])
        del buffer[:end]
        if header.mask_key is not None:
            payload = apply_mask(payload, header.mask_key)
        self.frames_parsed += 1
        return Frame(header, payload)
