"""The receive fast path: runs of frames that are each a whole, valid message, decoded in one loop.

Owns: the rule that says which frames may skip the general parser. A *simple* frame has FIN set, no RSV
bit, the TEXT or BINARY opcode, the MASK bit the role expects, the minimal length encoding, a length within
the limit, all of its payload received, and (for TEXT) a payload that is valid UTF-8. Outside a fragmented
message such a frame passes every rule of `frames.check_header` and of the connection's data-frame checks
by construction, so it can become a message at once.

Must not know: connection state. The caller decides when the fast path applies (no fragmented message in
progress) and gives the limit; anything that is not simple, and every error, is left to the general path,
which parses that frame again and reports what is wrong with it. `take_simple_frames` never raises for
input it declines.

`take_simple_frames` is the C version from `upwire._speedups` when it is built; `take_simple_frames_py` is
its pure-Python twin, and tests/protocol/test_speedups.py checks that both agree on random input.
"""

from __future__ import annotations

from upwire.protocol.events import Event
from upwire.protocol.frames import apply_mask, select_speedup

__all__ = ["take_simple_frames", "take_simple_frames_py"]

_TEXT_FIN = 0x81
_BINARY_FIN = 0x82
_LENGTH_MSB = 1 << 63


def take_simple_frames_py(
    buffer: bytes | bytearray | memoryview,
    pos: int,
    masked: bool,
    limit: int,
    events: list[Event],
) -> int:
    """Decode the simple frames that start at `pos`, one after another; append each one's message.

    Args:
        buffer: received bytes.
        pos: where the first frame starts (0 <= pos <= len(buffer)).
        masked: the MASK bit the frames must have (True on a server).
        limit: the largest payload length taken (>= 0); a longer frame is left to the general path.
        events: the list the messages are appended to: `str` for TEXT, `bytes` for BINARY.

    Returns:
        Where the run stops: the end of `buffer`, or the start of the first frame that is not simple or
        not complete.
    """
    end = len(buffer)
    if not 0 <= pos <= end:
        raise ValueError(f"pos {pos} is outside the buffer (0-{end})")
    if limit < 0:
        raise ValueError("limit must not be negative")
    mask_bit = 0x80 if masked else 0
    key = b""
    while end - pos >= 2:
        b0 = buffer[pos]
        b1 = buffer[pos + 1]
        if (b0 != _TEXT_FIN and b0 != _BINARY_FIN) or b1 & 0x80 != mask_bit:
            break
        length = b1 & 0x7F
        start = pos + 2
        if length == 126:
            if end - start < 2:
                break
            length = (buffer[start] << 8) | buffer[start + 1]
            start += 2
            if length < 126:
                break  # not the minimal encoding
        elif length == 127:
            if end - start < 8:
                break
            length = int.from_bytes(buffer[start : start + 8], "big")
            start += 8
            if length < 65536 or length >= _LENGTH_MSB:
                break  # not minimal, or the most significant bit set (RFC 6455 §5.2)
        if length > limit:
            break
        if masked:
            if end - start < 4:
                break
            key = bytes(buffer[start : start + 4])
            start += 4
        stop = start + length
        if stop > end:
            break
        payload = apply_mask(buffer[start:stop], key) if masked else bytes(buffer[start:stop])
        if b0 == _TEXT_FIN:
            try:
                events.append(payload.decode("utf-8"))
            except UnicodeDecodeError:
                break
        else:
            events.append(payload)
        pos = stop
    return pos


take_simple_frames = select_speedup(take_simple_frames_py)
