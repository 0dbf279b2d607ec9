"""The sans-I/O WebSocket core: bytes in, events out; commands in, bytes out.

Everything that speaks WebSocket in upwire (the asyncio client and server, the dissector, the tap) drives
these modules, so each rule of RFC 6455 is written once, here. No sockets, asyncio, clocks or threads.
"""

from upwire.protocol.close import CloseCode
from upwire.protocol.connection import Connection, Role, State
from upwire.protocol.events import CloseReceived, Event, Ping, Pong, ProtocolFailure
from upwire.protocol.frames import Frame, FrameHeader, FrameParser, Opcode

__all__ = [
    "CloseCode",
    "CloseReceived",
    "Connection",
    "Event",
    "Frame",
    "FrameHeader",
    "FrameParser",
    "Opcode",
    "Ping",
    "Pong",
    "ProtocolFailure",
    "Role",
    "State",
]
