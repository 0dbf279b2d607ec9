"""`broadcast(connections, message)`: one message to many connections, encoded once.

Owns: fanning a message out. The frame is built once by the core's `encode_frame` and goes to every
connection that can take it as is (a server connection without compression); a connection with
permessage-deflate gets its own compressed copy. Where a connection's transport would send at once (plain
TCP, nothing buffered), the frame is sent on its socket by `send_each`, one C loop of send(2) calls for
all of them; the others get it queued through their transport, after what they already buffered.
"""

from __future__ import annotations

import logging
import operator
import os
from collections.abc import Iterable

from upwire.connection import Connection
from upwire.protocol.connection import State
from upwire.protocol.frames import Opcode, encode_frame, select_speedup

__all__ = ["broadcast"]

logger = logging.getLogger("upwire")


def send_each_py(fds: list[int], data: bytes) -> list[tuple[int, int]]:
    """Send `data` on each non-blocking stream socket in `fds`, without waiting (the Python twin).

    `send_each` is the C version from `upwire._speedups`: the same sends in one loop without the GIL.
    A socket that is listed again after it did not take all of `data` gets nothing more, so that the
    caller can write the rest of the first copy before the second.

    Returns:
        (position in `fds`, bytes sent) for each socket that did not take all of `data`, in order: its
        send buffer was full, or sending failed (the caller's transport meets that error itself).
    """
    unsent: list[tuple[int, int]] = []
    failed: set[int] = set()
    size = len(data)
    view = memoryview(data)
    for position, fd in enumerate(fds):
        fd = operator.index(fd)
        if fd < 0:
            raise ValueError(f"not a file descriptor: {fd}")
        sent = 0
        if fd not in failed:
            try:
                while sent < size:
                    written = os.write(fd, view[sent:])
                    if not written:
                        break
                    sent += written
            except OSError:  # BlockingIOError: the buffer is full; other errors are the transport's
                pass
        if sent < size:
            failed.add(fd)
            unsent.append((position, sent))
    return unsent


# The C version is not built on Windows, where the twin's writes fail and the transports take over.
send_each = select_speedup(send_each_py)


def broadcast(connections: Iterable[Connection], message: str | bytes) -> int:
    """Send `message` to every open connection in `connections`, without waiting.

    There is no backpressure: the message is queued even on a connection whose write buffer is above
    `write_limit` (use `send` per connection for that), so a peer that stops reading makes its buffer, and
    the process's memory, grow with every broadcast. Leave such connections out
    (`broadcast([c for c in connections if not c.writing_paused], message)`), or close them. Connections
    that are closing, closed, or in the middle of sending a fragmented message are skipped. If iterating
    `connections` raises, every connection it yielded before still gets the message.

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
    fds: list[int] = []
    direct: list[Connection] = []
    try:
        sent = _queue_or_collect(connections, message, frame, fds, direct)
    finally:
        # Also when `connections` raised: what it yielded is not left out for what it did not.
        if fds:
            for position, count in send_each(fds, frame):
                # The socket's buffer was full (or it failed): its transport writes the rest, or reports.
                transport = direct[position].transport
                if transport is not None:
                    # A view, not a slice: uvloop keeps it, and every such connection shares the one
                    # frame (a slice is a copy each). asyncio's transport copies what it keeps anyway.
                    transport.write(memoryview(frame)[count:])
    return sent + len(fds)


def _queue_or_collect(
    connections: Iterable[Connection],
    message: str | bytes,
    frame: bytes,
    fds: list[int],
    direct: list[Connection],
) -> int:
    """Queue `frame` (or a compressed copy) on each connection, or collect its socket for `send_each`.

    Returns:
        How many connections it was queued on (the collected ones not counted).
    """
    sent = 0
    for connection in connections:
        fd = connection._shared_fd()
        if fd >= 0:  # sent below, with all the others, by send_each
            fds.append(fd)
            direct.append(connection)
            continue
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
