"""`broadcast(connections, message)`: one message to many connections, encoded once.

Owns: fanning a message out. The frame is built once by the core's `encode_frame` and queued on every
connection that can take it as is (a server connection without compression); a connection with
permessage-deflate gets its own compressed copy. Each connection writes with its usual coalescing, so a
broadcast costs one list append and, at most, one write per connection.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from upwire.connection import Connection
from upwire.protocol.connection import State
from upwire.protocol.frames import Opcode, encode_frame

__all__ = ["broadcast"]

logger = logging.getLogger("upwire")


def broadcast(connections: Iterable[Connection], message: str | bytes) -> int:
    """Send `message` to every open connection in `connections`, without waiting.

    There is no backpressure: the message is queued even on a connection whose write buffer is above
    `write_limit` (use `send` per connection for that). Connections that are closing, closed, or in the
    middle of sending a fragmented message are skipped.

    Args:
        connections: the connections, e.g. `server.connections` or a room's members.
        message: `str` for a text message, `bytes` for a binary one.

    Returns:
        How many connections the message was queued on.
    """
    if isinstance(message, str):
        payload = message.encode("utf-8")
        opcode = Opcode.TEXT
    elif isinstance(message, bytes | bytearray | memoryview):
        payload = bytes(message)
        opcode = Opcode.BINARY
    else:
        raise TypeError(f"cannot broadcast {type(message).__name__}; use str or bytes")
    frame = encode_frame(opcode, payload)
    sent = 0
    for connection in connections:
        # The loop is the broadcast's whole cost: one shared frame queued, one write per connection.
        if connection._send_shared(frame):
            sent += 1
            continue
        protocol = connection.protocol
        if protocol is None:
            continue
        if (
            protocol.state is State.OPEN
            and protocol.close_sent is None
            and not connection._fragmenting()
            and not protocol.can_share_frames
        ):
            protocol.send_message(message)  # compression: this connection's own copy
            connection._flush()
        else:
            continue
        sent += 1
    return sent
