"""Close codes and the close frame's payload (RFC 6455 §5.5.1, §7.4).

Owns: which close codes may appear on the wire, and how a close payload is parsed and built.
Must not know: connection state; `connection` decides when a close frame is sent.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from upwire._values import whole_number
from upwire.exceptions import ProtocolError, UsageError

__all__ = [
    "CloseCode",
    "ClosePayload",
    "build_close_payload",
    "close_values",
    "is_valid_close_code",
    "parse_close_payload",
]


class CloseCode(enum.IntEnum):
    """Close codes defined by RFC 6455 §7.4.1 and registered with IANA."""

    NORMAL_CLOSURE = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    # 1004 is reserved.
    NO_STATUS_RECEIVED = 1005  # never on the wire: "the close frame had no code"
    ABNORMAL_CLOSURE = 1006  # never on the wire: "the connection was lost without a close frame"
    INVALID_PAYLOAD_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014
    TLS_HANDSHAKE = 1015  # never on the wire


# RFC 6455 §7.4.1 and the IANA registry: the codes below 3000 that an endpoint may send.
_SENDABLE_BELOW_3000 = frozenset(
    {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}
)


def is_valid_close_code(code: int) -> bool:
    """Tell whether `code` may appear in a close frame.

    RFC 6455 §7.4: codes below 1000 are unused, 1004-1006 and 1015 must never be sent, 1016-2999 are reserved
    for future RFCs (only registered ones are valid), 3000-4999 are for libraries and applications, and
    5000 and above are not defined.
    """
    return code in _SENDABLE_BELOW_3000 or 3000 <= code <= 4999


@dataclass(frozen=True, slots=True)
class ClosePayload:
    """The content of a close frame: a code (None when the payload was empty) and a reason."""

    code: int | None
    reason: str


def parse_close_payload(payload: bytes) -> ClosePayload:
    """Parse the payload of a received close frame.

    Raises:
        ProtocolError: with 1002 for a 1-byte payload or an invalid code, with 1007 for a reason that is not
            valid UTF-8 (RFC 6455 §5.5.1, §8.1).
    """
    if not payload:
        return ClosePayload(None, "")
    if len(payload) == 1:
        raise ProtocolError("close frame with a 1-byte payload (a close code takes 2 bytes)", 1002)
    code = int.from_bytes(payload[:2], "big")
    if not is_valid_close_code(code):
        raise ProtocolError(f"invalid close code {code}", 1002)
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"close reason is not valid UTF-8 ({exc.reason})", 1007) from None
    return ClosePayload(code, reason)


def close_values(code: int | None, reason: str | None) -> tuple[int | None, str]:
    """The close code and reason as a close frame carries them: an int (numpy's and other integers with
    `__index__` taken, not bool) or None, and a str ("" for None, as websockets takes it).

    Raises:
        TypeError: for a code that is not an int or a reason that is not a str.
    """
    if reason is None:
        reason = ""
    elif not isinstance(reason, str):
        raise TypeError(f"the close reason must be a str, not {type(reason).__name__}")
    if code is not None:
        code = whole_number("the close code", code, "an int or None")
    return code, reason


def build_close_payload(code: int | None, reason: str = "") -> bytes:
    """Build the payload of a close frame to send.

    Args:
        code: the close code, or None for an empty payload (then `reason` must be empty).
        reason: the reason; at most 123 bytes once encoded as UTF-8 (RFC 6455 §5.5: control frames carry at
            most 125 bytes, two of which are the code).

    Raises:
        TypeError: for a code that is not an int or a reason that is not a str.
        UsageError: for a code that must not be sent or a reason that is too long.
    """
    code, reason = close_values(code, reason)
    if code is None:
        if reason:
            raise UsageError("a close reason needs a close code")
        return b""
    if not is_valid_close_code(code):
        raise UsageError(
            f"close code {code} may not be sent (use 1000-1003, 1007-1014 or 3000-4999)"
        )
    try:
        encoded = reason.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate: not text that UTF-8 can carry (RFC 6455 §5.5.1: the reason is UTF-8).
        raise UsageError(f"close reason {reason!r} cannot be encoded as UTF-8") from None
    if len(encoded) > 123:
        raise UsageError(f"close reason of {len(encoded)} bytes exceeds 123 bytes")
    return code.to_bytes(2, "big") + encoded
