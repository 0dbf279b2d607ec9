"""Reference helpers for byte-level protocol tests, written independently of `upwire.protocol.frames`.

Tests build frames from literal header bytes; these helpers only mask payloads and read back what a
`Connection` sent, with a deliberately naive parser so that a bug in the library's framing cannot hide
itself in the tests.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import AnyStr

# The masking key of the RFC 6455 §5.7 examples.
KEY = b"\x37\xfa\x21\x3d"


def xor(payload: bytes, key: bytes = KEY, offset: int = 0) -> bytes:
    """Mask (or unmask) `payload` one byte at a time, as RFC 6455 §5.3 describes."""
    return bytes(b ^ key[(i + offset) % 4] for i, b in enumerate(payload))


def masked(header: bytes, payload: bytes, key: bytes = KEY) -> bytes:
    """A client frame: the literal `header` (MASK bit set), the key, then the masked payload."""
    assert header[1] & 0x80, "a masked frame needs the MASK bit in its second byte"
    return header + key + xor(payload, key)


@dataclass(frozen=True)
class WireFrame:
    """One frame read back from the bytes a connection sent."""

    fin: bool
    rsv: int
    opcode: int
    mask_key: bytes | None
    payload: bytes
    header_length: int


def read_frames(data: bytes) -> list[WireFrame]:
    """Split `data` into frames (the payloads unmasked); `data` must end on a frame boundary."""
    frames = []
    pos = 0
    while pos < len(data):
        start = pos
        b0, b1 = data[pos], data[pos + 1]
        length = b1 & 0x7F
        pos += 2
        if length == 126:
            length = int.from_bytes(data[pos : pos + 2], "big")
            pos += 2
        elif length == 127:
            length = int.from_bytes(data[pos : pos + 8], "big")
            pos += 8
        key = None
        if b1 & 0x80:
            key = data[pos : pos + 4]
            pos += 4
        header_length = pos - start
        payload = data[pos : pos + length]
        assert len(payload) == length, "data ends in the middle of a frame"
        pos += length
        frames.append(
            WireFrame(
                fin=bool(b0 & 0x80),
                rsv=(b0 >> 4) & 7,
                opcode=b0 & 0x0F,
                mask_key=key,
                payload=xor(payload, key) if key else payload,
                header_length=header_length,
            )
        )
    return frames


def sent_frames(connection: object) -> list[WireFrame]:
    """Read the frames queued by `connection` (anything with `data_to_send()`)."""
    return read_frames(b"".join(connection.data_to_send()))  # type: ignore[attr-defined]


def sent_close(connection: object) -> tuple[int | None, bytes]:
    """The (code, reason bytes) of the one close frame `connection` queued; code None when empty."""
    frames = sent_frames(connection)
    assert [f.opcode for f in frames] == [0x8], f"expected one close frame, got {frames}"
    payload = frames[0].payload
    if not payload:
        return None, b""
    return int.from_bytes(payload[:2], "big"), payload[2:]


def split_at(data: AnyStr, cuts: list[int]) -> list[AnyStr]:
    """Cut `data` at the (unsorted, possibly repeated) offsets `cuts`; empty pieces are kept."""
    bounds = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]
