"""Events that the connection state machine returns from `Connection.receive_data`.

A complete data message is returned as itself — `str` for a text message, `bytes` for a binary one — so the
hot path allocates nothing per message beyond the message. Everything else is one of the small frozen
dataclasses below.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CloseReceived", "Event", "Ping", "Pong", "ProtocolFailure"]


@dataclass(frozen=True, slots=True)
class Ping:
    """The peer sent a ping; the matching pong is already queued (RFC 6455 §5.5.2)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Pong:
    """The peer sent a pong, solicited or not (RFC 6455 §5.5.3)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class CloseReceived:
    """The peer sent a close frame; `code` is 1005 when the frame carried no code (RFC 6455 §7.1.5)."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class ProtocolFailure:
    """The peer broke the protocol; a close frame with `code` is queued and the connection is failed."""

    code: int
    message: str


Event = str | bytes | Ping | Pong | CloseReceived | ProtocolFailure
