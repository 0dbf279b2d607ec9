"""The low-level API: a `Listener` whose methods are called as events arrive, for hot paths.

With `serve(MyListener, host, port)`, each connection gets a `MyListener()` instance; `on_message` runs in the
event loop as soon as a message is parsed — no task per connection, no future and no queue per message — and
answers with `connection.send_now(...)`, which queues the frame synchronously. The answers to one read's
messages go out in one write once they were all delivered (the answer to a read of one message, at once;
frames queued in one loop iteration, in one write too). What the high-level API adds in convenience, this
one saves in CPU and memory.

Backpressure: once the answers waiting to be written (the transport's write buffer and the frames held for
it) pass `write_limit` + `max_message_size` (16 × `write_limit` without a message limit), upwire stops
reading from the socket and stops calling `on_message` (the rest of the read in progress is kept, in order,
and the peer is slowed down by TCP), and resumes when the buffer drains below the low-water mark;
`connection.writing_paused` (above `write_limit`), `on_writing_paused` and `on_writing_resumed` tell the
listener, for messages it sends on its own initiative.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from upwire.connection import Connection

__all__ = ["Listener"]


class Listener:
    """Callbacks for one connection. Subclass it and override what you need; all run in the event loop.

    An exception raised by a callback closes the connection with 1011 (and is logged on `upwire`, once):
    the listener gets no more callbacks on that connection but `on_close`. `ConnectionClosed` from a
    `send_now` on a connection that is closing (this one, or another it relays to) is not a failure: it
    ends the callback, at debug level, and the next messages still come.
    """

    def on_open(self, connection: Connection) -> None:
        """The opening handshake is done; the connection can send."""

    def on_message(self, connection: Connection, message: str | bytes) -> None:
        """A complete message arrived: `str` for text, `bytes` for binary."""

    def on_ping(self, connection: Connection, data: bytes) -> None:
        """A ping arrived; its pong is queued (or, while writing is paused, only the latest ping's is
        kept, and sent once the buffer drains: RFC 6455 §5.5.3)."""

    def on_close(self, connection: Connection) -> None:
        """The connection is closed; `connection.close_code` and `close_reason` say how."""

    def on_writing_paused(self, connection: Connection) -> None:
        """The write buffer went above `write_limit`: stop sending until `on_writing_resumed`."""

    def on_writing_resumed(self, connection: Connection) -> None:
        """The write buffer drained below its low-water mark."""
