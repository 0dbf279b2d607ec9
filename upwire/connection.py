"""The asyncio connection: `send`, `recv`, `async for`, `ping`, `close` over the sans-I/O core.

Owns: moving bytes between an asyncio transport and `upwire.protocol.Connection`, waking the tasks that wait
on it, backpressure both ways, keepalive pings and timeouts. It decides nothing about the protocol: every rule
of RFC 6455 is applied by the core, which tells this layer what to write and when to close TCP.

One object per connection is both the asyncio `Protocol` (transport callbacks) and the user-facing API, so an
idle connection costs one object, a deque and a few timers.
"""

from __future__ import annotations

import asyncio
import difflib
import logging
import os
import socket
import struct
import sys
import threading
import time
import weakref
from asyncio import selector_events
from collections import deque
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
    Set,
)
from typing import Any, Literal, Self, TypeVar, cast, overload

from upwire._values import seconds, whole_number
from upwire.exceptions import (
    ConcurrencyError,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    UsageError,
    WebSocketError,
)
from upwire.listener import Listener
from upwire.protocol.connection import (
    SEPARATE_PAYLOAD_SIZE,
    Role,
    State,
    default_max_fragments,
    not_utf8,
)
from upwire.protocol.connection import Connection as ProtocolConnection
from upwire.protocol.events import CloseReceived, Ping, Pong, ProtocolFailure
from upwire.protocol.frames import byte_view
from upwire.protocol.http import Request, Response
from upwire.protocol.utf8 import IncrementalUTF8Decoder

__all__ = ["Connection", "ConnectionOptions", "Data"]

logger = logging.getLogger("upwire")

Data = str | bytes
# A closure is "OK" with a normal code, or with an empty close frame (1005), which browsers send for close().
_CLEAN_CODES = frozenset({1000, 1001, 1005})
# What a waiting `recv` is woken with when no message will come (see `_wake_recv_on_end`).
_INPUT_ENDED = object()
# A chunk the core queued apart from its header (a payload of SEPARATE_PAYLOAD_SIZE or more) is written as a
# view of itself instead of being copied into one joined buffer.
_LARGE_CHUNK = SEPARATE_PAYLOAD_SIZE
# Its first bytes go out with the header (and any frames before it), so the header is not a packet alone.
_LARGE_CHUNK_HEAD = 8 * 1024
# os.writev's limit on buffers per call (IOV_MAX; 1024 on Linux), where writev exists (not on Windows).
_HAS_WRITEV = hasattr(os, "writev")
_IOV_MAX = max(os.sysconf("SC_IOV_MAX"), 16) if _HAS_WRITEV else 0  # POSIX guarantees 16
# What one read takes at most (asyncio's own read size), into a buffer shared by the thread's connections.
_READ_SIZE = 256 * 1024
# After one wake-up of asyncio's loop, at most this many reads more of a large message, of at most this
# many bytes in all (`_read_message_on`): what one connection does before the others get their turn stays
# bounded however large its messages are.
_READS_AT_ONCE = 16
_READ_AT_ONCE_BYTES = 4 * _READ_SIZE
_read_buffers = threading.local()
# FIONREAD: how many bytes a socket holds, not yet read (`_bytes_waiting`; not on Windows).
_HAS_FIONREAD = sys.platform != "win32"
if sys.platform != "win32":
    from fcntl import ioctl as _ioctl
    from termios import FIONREAD as _FIONREAD
# SIOCOUTQ (TIOCOUTQ's number on Linux): a TCP socket's bytes not yet acknowledged (`_unsent_bytes`).
_SIOCOUTQ: int | None = None
if sys.platform == "linux":
    from termios import TIOCOUTQ

    _SIOCOUTQ = TIOCOUTQ


# Transport classes whose write() sends on their socket at once when nothing is buffered (asyncio's
# selector transport, uvloop's TCP and Unix transports), by class; filled as classes are met.
_WRITES_TO_SOCKET: dict[type, bool] = {}
# asyncio's transport for plain sockets on its default event loop (a private name: looked up softly).
_SELECTOR_SOCKET_TRANSPORT: type | None = getattr(selector_events, "_SelectorSocketTransport", None)
# Python 3.12 gave that transport its own `writelines` (no join: one sendmsg), which until 3.12.9 and
# 3.13.2 forgot to pause the protocol past the high-water mark (CPython gh-127655): without the check
# after it, a peer that stops reading could make the write buffer grow without bound.
_WRITELINES_NEEDS_PAUSE_CHECK = sys.version_info >= (3, 12) and callable(
    getattr(_SELECTOR_SOCKET_TRANSPORT, "_maybe_pause_protocol", None)
)
# The high-water mark asyncio's transports start with (`FlowControlMixin`; the low one is a quarter of it).
_ASYNCIO_HIGH_WATER = 64 * 1024
_ASYNCIO_LOW_WATER = _ASYNCIO_HIGH_WATER // 4

# `Connection._fd` before its first use: not looked up yet (-1 means no direct writes).
_FD_UNKNOWN = -2
# A TLS connection closing in stages closes once the peer has sent nothing for this long: closing with
# its data unread would make the kernel answer with a reset, which can destroy what was sent last.
_QUIET_BEFORE_CLOSE_S = 0.25
# Closing with a full recv queue and no close_timeout: how long the application may take no message
# before what comes past the queue is dropped (with a close_timeout, a tenth of it).
_READER_GRACE_S = 1.0


# What a TLS connection's transport tells, kept past the connection's end (`_LostTLSTransport`).
_TLS_INFO = (
    "peername",
    "sockname",
    "sslcontext",
    "ssl_object",
    "peercert",
    "cipher",
    "compression",
)


class _LostTLSTransport(asyncio.Transport):
    """What a TLS connection's `transport` is once the connection is lost: closed, with its addresses.

    asyncio's and uvloop's TLS transports keep the protocol's `get_buffer` and `buffer_updated` after the
    connection is lost, so a connection that still held its transport would be in a reference cycle and
    wait for the garbage collector's next full pass, with its buffers and queue. And asyncio's forgets the
    addresses then: `remote_address` stays what it was, as over plain TCP.
    """

    def is_closing(self) -> bool:
        return True

    def get_protocol(self) -> asyncio.BaseProtocol:
        return None  # type: ignore[return-value]  # as asyncio's and uvloop's, once closed

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def write(self, data: bytes | bytearray | memoryview) -> None:
        pass  # as a closed TLS transport does: nothing more goes out

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        pass

    def can_write_eof(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (0, 0)

    def is_reading(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _socket_fd(transport: asyncio.BaseTransport) -> int:
    """The file descriptor of `transport`'s stream socket if its writes go straight to it, else -1.

    For such a transport, with an empty write buffer, sending on the socket directly is what `write`
    does, so `broadcast` may do it for many connections in one C loop. Any other transport (TLS, a
    subclass, a test double, the long-polling fallback) keeps -1 and is written through.
    """
    cls = type(transport)
    direct = _WRITES_TO_SOCKET.get(cls)
    if direct is None:
        direct = _WRITES_TO_SOCKET[cls] = cls is _SELECTOR_SOCKET_TRANSPORT or (
            cls.__module__ == "uvloop.loop" and cls.__name__ in ("TCPTransport", "UnixTransport")
        )
    if not direct:
        return -1
    # These transports carry only stream sockets (asyncio's loop methods refuse any other kind), so the
    # socket's type is not read here: that costs an enum conversion per connection.
    sock = transport.get_extra_info("socket")
    if sock is None:
        return -1
    fd: int = sock.fileno()
    return fd


def _bytes_waiting(fd: int) -> int | None:
    """How many bytes the socket `fd` holds, not yet read; None if the system does not tell."""
    try:
        return int.from_bytes(_ioctl(fd, _FIONREAD, b"\0\0\0\0"), sys.byteorder)
    except OSError:
        return None


class _IterationFlush:
    """The connections whose held frames go out at the end of this loop iteration, with one loop callback.

    A connection that wrote a frame at once holds the frames it sends after it in the same iteration
    (`Connection._schedule_flush`). With many connections active at once, a loop callback for each
    of them cost about 1 µs per message; one callback writes for all of them, in the order they held.
    """

    __slots__ = ("__weakref__", "_pending")

    def __init__(self) -> None:
        self._pending: list[Connection] = []

    def add(self, connection: Connection) -> None:
        """Write `connection`'s held frames at the end of this iteration (it adds itself once per iteration)."""
        pending = self._pending
        if not pending:
            # Scheduled before the connection is listed: if `call_soon` raises (a closed loop), the
            # list stays empty and the next connection schedules the callback again.
            connection.loop.call_soon(self._run)
        pending.append(connection)

    def _run(self) -> None:
        pending = self._pending
        self._pending = []
        for connection in pending:
            try:
                connection._scheduled_flush()
            except Exception:
                # One connection's failure must not leave the others' frames unwritten.
                logger.exception("writing held frames failed")


# One per event loop, held by the loop's connections (and its pending callback), weakly here: a flush
# holds connections, which hold their loop, so a strong entry would keep a closed loop alive forever.
_iteration_flushes: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, weakref.ref[_IterationFlush]
] = weakref.WeakKeyDictionary()


def _iteration_flush(loop: asyncio.AbstractEventLoop) -> _IterationFlush:
    ref = _iteration_flushes.get(loop)
    flush = None if ref is None else ref()
    if flush is None:
        flush = _IterationFlush()
        _iteration_flushes[loop] = weakref.ref(flush)
    return flush


def _read_buffer() -> memoryview:
    """The calling thread's read buffer: reads go there, and the core copies out what it keeps."""
    try:
        view: memoryview = _read_buffers.view
    except AttributeError:
        view = _read_buffers.view = memoryview(bytearray(_READ_SIZE))
    return view


Sendable = (
    str
    | bytes
    | bytearray
    | memoryview
    | Iterable[str | bytes | bytearray | memoryview]
    | AsyncIterable[str | bytes | bytearray | memoryview]
)


F = TypeVar("F")


def extension_factories(
    compression: str | None, extensions: Sequence[F] | None, deflate: Callable[[], F]
) -> list[F]:
    """Turn the `compression` and `extensions` options of `serve`/`connect` into the factories to use.

    Args:
        compression: "deflate" for permessage-deflate with its defaults, None for no compression.
        extensions: explicit factories, which take precedence over `compression`.
        deflate: builds the permessage-deflate factory of the caller's role.
    """
    if extensions is not None:
        return list(extensions)
    if compression is None:
        return []
    if compression != "deflate":
        raise ValueError(f"unsupported compression {compression!r}; use 'deflate' or None")
    return [deflate()]


class ConnectionOptions:
    """The options shared by clients and servers, with their defaults.

    Args:
        max_message_size: largest incoming message in bytes (None: no limit); past it, close 1009.
        max_frame_size: largest incoming frame payload (default: max_message_size).
        max_fragments: most frames in one incoming message (default: one per 64 bytes of
            max_message_size, at least 1024; None: no limit); past it, close 1009.
        max_queue: incoming messages buffered before reading from the socket pauses (None: no limit);
            reading resumes at a quarter of it, or `(high, low)` sets both (as in websockets).
        write_limit: bytes buffered for writing above which `send` waits (the high-water mark);
            writing resumes at a quarter of it, or `(high, low)` sets both (as in websockets).
        ping_interval: seconds between keepalive pings (None: no keepalive).
        ping_timeout: seconds to wait for the pong before failing the connection with 1011 (None: wait).
        open_timeout: seconds allowed for the opening handshake.
        close_timeout: seconds allowed for the closing handshake and the TCP close.
        idle_timeout: seconds without any received byte after which the connection is closed with 1001
            (None: no limit); the time the application leaves its recv queue full while the peer's
            bytes wait to be read (in the socket, or a TLS transport's buffer) does not count.
    """

    __slots__ = (
        "close_timeout",
        "idle_timeout",
        "max_fragments",
        "max_frame_size",
        "max_message_size",
        "max_queue",
        "open_timeout",
        "ping_interval",
        "ping_timeout",
        "queue_low",
        "write_limit",
        "write_low",
    )

    def __init__(
        self,
        *,
        max_message_size: int | None = 1 << 20,
        max_frame_size: int | None = -1,
        max_fragments: int | None = -1,
        max_queue: int | tuple[int | None, int | None] | None = 16,
        write_limit: int | tuple[int, int | None] = 64 * 1024,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        open_timeout: float | None = 10.0,
        close_timeout: float | None = 10.0,
        idle_timeout: float | None = None,
    ) -> None:
        # Counts of bytes or messages: whole numbers (a float reached the parser as a slice bound), kept
        # as int (numpy's integers are whole numbers too).
        max_message_size = _whole("max_message_size", max_message_size)
        max_frame_size = _whole("max_frame_size", max_frame_size)
        max_fragments = _whole("max_fragments", max_fragments)
        queue_high, queue_low = _marks("max_queue", max_queue)
        queue_high = _whole("max_queue", queue_high)
        queue_low = _whole("max_queue's low mark", queue_low)
        if queue_high is None and queue_low is not None:
            # websockets' reading of (None, low): a high mark 4 times it.
            if queue_low <= 0:
                raise ValueError(f"max_queue's low mark must be positive, not {queue_low!r}")
            queue_high = queue_low * 4
        write_high, write_low = _marks("write_limit", write_limit)
        write_high = _whole("write_limit", write_high)
        write_low = _whole("write_limit's low mark", write_low)
        if max_frame_size is not None and max_frame_size <= 0 and max_frame_size != -1:
            raise ValueError(f"max_frame_size must be positive or None, not {max_frame_size!r}")
        if max_fragments is not None and max_fragments <= 0 and max_fragments != -1:
            raise ValueError(f"max_fragments must be positive or None, not {max_fragments!r}")
        for name, value in (("max_message_size", max_message_size), ("max_queue", queue_high)):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive or None, not {value!r}")
        ping_interval = seconds("ping_interval", ping_interval)
        ping_timeout = seconds("ping_timeout", ping_timeout)
        open_timeout = seconds("open_timeout", open_timeout)
        close_timeout = seconds("close_timeout", close_timeout)
        idle_timeout = seconds("idle_timeout", idle_timeout)
        if write_high is None or write_high <= 0:
            raise ValueError(f"write_limit must be positive, not {write_high!r}")
        for name, size in (
            ("max_message_size", max_message_size),
            ("max_frame_size", max_frame_size),
            ("max_fragments", max_fragments),
            ("max_queue", queue_high),
            ("write_limit", write_high),
        ):
            # Past these, zlib's output bound (a C ssize_t) and uvloop's write-buffer marks (C int)
            # overflow, failing connections later; None is the way to say no limit.
            if name == "write_limit":
                most, unlimited = _WRITE_LIMIT_MOST, ""
            else:
                most, unlimited = _SIZE_MOST, " (None: no limit)"
            if size is not None and size > most:
                raise ValueError(f"{name} must be at most {most}{unlimited}, not {size!r}")
        self.max_message_size = max_message_size
        self.max_frame_size = max_message_size if max_frame_size == -1 else max_frame_size
        self.max_fragments = (
            default_max_fragments(max_message_size) if max_fragments == -1 else max_fragments
        )
        self.max_queue: int | None = queue_high
        # The low-water marks: where reading (a queue of that many messages) and sending resume.
        self.queue_low = 0 if queue_high is None else _low_mark("max_queue", queue_high, queue_low)
        self.write_limit: int = write_high
        self.write_low = _low_mark("write_limit", write_high, write_low)
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.open_timeout = open_timeout
        self.close_timeout = close_timeout
        self.idle_timeout = idle_timeout


_SIZE_MOST = 1 << 62
_WRITE_LIMIT_MOST = (1 << 31) - 1


def _whole(name: str, value: object) -> Any:
    """A count option as an int, or None (or a sentinel such as -1, checked by the caller)."""
    if value is None:
        return None
    return whole_number(name, value, "a whole number or None")


def _marks(name: str, value: object) -> tuple[Any, Any]:
    """A limit given as `high` or as websockets' `(high, low)`: (high, low or None)."""
    if isinstance(value, tuple):
        if len(value) != 2:
            raise TypeError(f"{name} takes a number or (high, low), not {value!r}")
        return value[0], value[1]
    return value, None


def _low_mark(name: str, high: int, low: int | None) -> int:
    """The low-water mark under `high`: a quarter of it by default (asyncio's and websockets')."""
    if low is None:
        return high // 4
    if not 0 <= low <= high:
        raise ValueError(f"{name}'s low mark must be between 0 and {high}, not {low!r}")
    return low


# The options a caller may give (the low marks are derived, or given as `(high, low)`).
_OPTION_NAMES = tuple(
    name for name in ConnectionOptions.__slots__ if name not in ("queue_low", "write_low")
)

# Names that `websockets` users bring along (or that belong to the other side), and upwire's for each.
_OTHER_NAMES = {
    "max_size": "max_message_size",
    "user_agent_header": "user_agent",
    "extra_headers": "additional_headers",  # reaches here from connect only: serve takes it
    "additional_headers": "extra_headers",  # reaches here from serve only
    # websockets passes its other keyword arguments on to create_connection / create_server: a socket
    # connected or bound by the caller does what they would.
    "host": "sock",  # reaches here from connect only: serve takes it
    "port": "sock",
    "family": "sock",
    "local_addr": "sock",
}


def connection_options(
    caller: str, options: dict[str, Any], own: Iterable[str] = ()
) -> ConnectionOptions:
    """`ConnectionOptions(**options)` for `serve` and `connect`: an unknown name is reported as the
    caller's argument (the user never called ConnectionOptions), with the closest name among the
    options and the caller's `own` parameters."""
    known = _OPTION_NAMES
    for name in options:
        if name not in known:
            guess = _OTHER_NAMES.get(name) or next(
                iter(difflib.get_close_matches(name, [*known, *own], 1)), None
            )
            hint = f"; did you mean {guess}?" if guess else ""
            raise TypeError(f"{caller}() got an unexpected keyword argument {name!r}{hint}")
    return ConnectionOptions(**options)


class Connection(asyncio.BufferedProtocol):
    """A WebSocket connection driven by asyncio; see `ServerConnection` and `ClientConnection`.

    Attributes:
        request: the opening handshake request (path, query, headers).
        response: the opening handshake response.
        subprotocol: the negotiated subprotocol, or None.
        latency: the round-trip time in seconds of the last ping answered (keepalive's or the
            application's); 0.0 until one is.
    """

    # Slots, not an instance dict: every connection has the same layout, so attribute reads in the hot
    # paths stay on the interpreter's fast path (an instance dict that grows past 30 names, or a class
    # default read through it, falls off it), and an idle connection pays 8 bytes per field. `__dict__`
    # keeps attributes set by applications working.
    __slots__ = (
        "__dict__",
        "__weakref__",
        "_close_timer",
        "_closed_waiter",
        "_closing_in_stages",
        "_delivering",
        "_drain_waiters",
        "_dropping",
        "_fd",
        "_flush_scheduled",
        "_fragment_lock",
        "_holding_for_input",
        "_idle_timer",
        "_iteration_flush",
        "_keepalive_ping",
        "_keepalive_timer",
        "_kept_at_close",
        "_large_queued",
        "_last_received",
        "_messages",
        "_paused_for_writes",
        "_pending_input",
        "_pings",
        "_read_view",
        "_reader_mark",
        "_reader_timer",
        "_reading_in_place",
        "_reading_paused",
        "_reads_once",
        "_recv_waiter",
        "_stashed",
        "_tcp_closed",
        "_tls_info",
        "_unflushed",
        "_writing_paused",
        "_wrote_at_once",
        "latency",
        "listener",
        "loop",
        "options",
        "protocol",
        "request",
        "response",
        "subprotocol",
        "transport",
    )

    def __init__(
        self, options: ConnectionOptions, loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        self.options = options
        # A server passes its loop: `get_running_loop` makes a getpid system call per connection.
        self.loop = asyncio.get_running_loop() if loop is None else loop
        self.transport: asyncio.Transport | None = None
        self.protocol: ProtocolConnection | None = None
        self.request: Request | None = None
        self.response: Response | None = None
        self.subprotocol: str | None = None
        # Created with the first message that must wait for recv: an empty deque costs ~600 bytes.
        self._messages: deque[Data] | None = None
        self._recv_waiter: asyncio.Future[Data | object] | None = None
        self._reading_paused = False
        # Closing with a full queue (`_closing`): None while the application may still be reading, then
        # how many messages stay queued, past which what comes is dropped; and the timer that decides,
        # with the queue's length when it was armed.
        self._kept_at_close: int | None = None
        self._reader_timer: asyncio.TimerHandle | None = None
        self._reader_mark = 0
        # Set once closing dropped messages past a full queue: later ones are dropped too (`_deliver`).
        self._dropping = False
        self._writing_paused = False
        # Tasks waiting in send for the write buffer to drain; the list is made by the first of them.
        self._drain_waiters: list[asyncio.Future[None]] | None = None
        self._fragment_lock: asyncio.Lock | None = None
        # The low-level API: a Listener receives messages by callback instead of the recv queue.
        self.listener: Listener | None = None
        self._flush_scheduled = False
        # The loop's `_IterationFlush`, looked up when this connection first holds frames.
        self._iteration_flush: _IterationFlush | None = None
        self._unflushed = 0
        # True from a frame written at once until this connection's next read or write (or the
        # end-of-iteration callback): a frame sent meanwhile is held for the end of the loop iteration
        # (see send_now).
        self._wrote_at_once = False
        # True when a message of _LARGE_CHUNK bytes or more may be among the queued chunks.
        self._large_queued = False
        # True when the current read goes straight into the core's buffer of a large frame.
        self._reading_in_place = False
        # True on asyncio's plain socket transport, which reads once per wake-up (`_read_message_on`).
        self._reads_once = False
        # True while a Listener's callbacks run on a read's messages: what they send goes out in one write
        # when the read is done (see _received), not the first frame at once and the rest a loop turn later.
        self._delivering = False
        # True while answers wait for the answer to the last received message still queued (send_now).
        self._holding_for_input = False
        # True while a Listener connection does not read because its answers are not being read.
        self._paused_for_writes = False
        # A read's events not yet given to the Listener, kept while its answers wait to be written.
        self._stashed: list[Any] | None = None
        # The round trip of the last ping answered, keepalive's or the application's (seconds).
        self.latency = 0.0
        # A `_resume_input` is scheduled, and reading paused until it ran (`_schedule_input`).
        self._pending_input = False
        # Over TLS, what the transport tells about the connection, kept for when it is lost (connection_made
        # sets it, connection_lost puts a `_LostTLSTransport` with it in the transport's place); else None.
        self._tls_info: dict[str, Any] | None = None
        # The socket's file descriptor when the transport writes straight to it (see _socket_fd), else -1;
        # looked up on first use (`_direct_fd`): uvloop makes a socket object and a system call for it, and
        # most connections never need it.
        self._fd = _FD_UNKNOWN
        # True once the TCP connection is closed (connection_lost).
        self._tcp_closed = False
        # True once TCP closes in stages (`_close_in_stages`): input is read and dropped until it closes.
        self._closing_in_stages = False
        # What `wait_closed` awaits, made by its first call: most connections are never waited for, and a
        # future per connection costs time and memory on every handshake.
        self._closed_waiter: asyncio.Future[None] | None = None
        # Pings waiting for their pong, by payload, in the order sent; and (by keys no pong can match)
        # those made while closing, which wait for the close.
        self._pings: dict[object, tuple[asyncio.Future[float], float]] = {}
        self._close_timer: asyncio.TimerHandle | None = None
        self._keepalive_timer: asyncio.TimerHandle | None = None
        # The last keepalive ping without ping_timeout, while it waits for its pong (see `_keepalive`).
        self._keepalive_ping: asyncio.Future[float] | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._last_received = 0.0

    # ------------------------------------------------------------------ properties

    @property
    def remote_address(self) -> Any:
        """The peer's address, as the socket reports it (host, port[, ...])."""
        return None if self.transport is None else self.transport.get_extra_info("peername")

    @property
    def local_address(self) -> Any:
        """This side's address (host, port[, ...])."""
        return None if self.transport is None else self.transport.get_extra_info("sockname")

    @property
    def state(self) -> State:
        """CONNECTING until the opening handshake is done, then OPEN, CLOSING and CLOSED."""
        if self.protocol is None:
            return State.CLOSED if self._tcp_closed else State.CONNECTING
        return self.protocol.state

    @property
    def close_code(self) -> int | None:
        """The close code once the connection is closing or closed (see the core's `close_code`)."""
        return None if self.protocol is None else self.protocol.close_code

    @property
    def close_reason(self) -> str:
        """The close reason matching `close_code`."""
        return "" if self.protocol is None else self.protocol.close_reason

    # ------------------------------------------------------------------ receiving

    @overload
    def recv(self, decode: None = None) -> Coroutine[Any, Any, Data]: ...
    @overload
    def recv(self, decode: Literal[True]) -> Coroutine[Any, Any, str]: ...
    @overload
    def recv(self, decode: Literal[False]) -> Coroutine[Any, Any, bytes]: ...

    def recv(self, decode: bool | None = None) -> Coroutine[Any, Any, Data]:
        """Wait for the next message: `str` for text, `bytes` for binary (`await ws.recv()`).

        Args:
            decode: False returns a text message as its UTF-8 `bytes` (checked as it arrived, as
                always); True returns a binary message decoded from UTF-8 (`UnicodeDecodeError` if it
                is not, the message consumed). As websockets' `recv(decode=...)`.

        Raises:
            ConnectionClosedOK: after a normal closure (1000, 1001 or no code), once every message was received.
            ConnectionClosedError: after an error or an abnormal closure.
            ConcurrencyError: when another task is already waiting in `recv`.
        """
        if self.listener is not None:
            raise _listener_receives()
        if decode is None:
            return self._receive(False)
        return self._receive_as(decode)

    async def _receive_as(self, decode: bool) -> Data:
        message = await self._receive(False)
        if decode:
            return message if type(message) is str else cast(bytes, message).decode()
        return message.encode() if type(message) is str else message

    def __aiter__(self) -> AsyncIterator[Data]:
        # Checked here, once per loop, and in `recv`: not in the receiving coroutine, once per message.
        if self.listener is not None:
            raise _listener_receives()
        return self

    async def _receive(self, iterating: bool = True) -> Data:
        """The next message for `async for` (`__anext__`: a normal closure ends the loop quietly), and
        for `recv` with `iterating` False (ConnectionClosedOK instead of StopAsyncIteration).

        One coroutine serves both, called directly: a message costs one coroutine frame, not two, and an
        idle connection waiting in `async for` holds one frame. `__anext__` is this coroutine function
        itself, so `async for` makes no call before it.
        """
        messages = self._messages
        if messages:
            message = messages.popleft()
            if self._reading_paused and len(messages) <= self._resume_threshold():
                self._resume_reading()
            return message
        if self._recv_waiter is not None:
            raise ConcurrencyError(
                "another task is already waiting in recv(); only one task may receive at a time"
            )
        protocol = self.protocol
        if self._tcp_closed or (
            # No message will come: the peer's close frame, or a protocol error, was received.
            protocol is not None
            and (protocol.close_received is not None or protocol.failure is not None)
        ):
            # Raised from the expression, not from a local: a local would hold the exception that holds
            # this frame (a cycle, and every closed connection would wait for the GC).
            raise self._end_of_input(iterating)
        # Typed Any, not Data | object: a `cast` of the result would cost a call per message. Made by the
        # loop: a bare `asyncio.Future()` looks the loop up, and on Python 3.11 that is a getpid system call.
        waiter: asyncio.Future[Any] = self.loop.create_future()
        self._recv_waiter = waiter
        try:
            result: Data = await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.result() is not _INPUT_ENDED:
                # The message arrived as this recv was cancelled (a timeout, say): keep it for the next.
                if self._messages is None:
                    self._messages = deque()
                self._messages.appendleft(cast(Data, waiter.result()))
            raise
        finally:
            self._recv_waiter = None
        if result is _INPUT_ENDED:
            raise self._end_of_input(iterating)
        return result

    __anext__ = _receive

    def _end_of_input(self, iterating: bool) -> BaseException:
        """What `recv` raises once no message will come: StopAsyncIteration ends `async for` quietly.

        Not after closing dropped messages the peer sent (`_drop_past_queue`): whoever reads on must not
        take what it got for all the peer sent.
        """
        if self._dropping:
            error = self._closed_error()
            return ConnectionClosedError(
                error.code,
                error.reason,
                "messages past a full queue were dropped while closing",
                sent=error.sent,
            )
        if iterating and self._closed_cleanly():
            return StopAsyncIteration()
        return self._closed_error()

    def _resume_threshold(self) -> int:
        return self.options.queue_low

    def _resume_reading(self) -> None:
        self._reading_paused = False
        if self._idle_timer is not None:
            # The time reading was paused by a full queue did not count (`_idle_check`), up to now:
            # what waits in the socket is read in a later turn of the loop, and a check in between
            # must not count the pause either.
            self._last_received = self.loop.time()
        protocol = self.protocol
        if protocol is not None and protocol.input_pending:
            # Messages the core kept back while the queue was full go first; reading resumes after them.
            self._schedule_input()
        else:
            self._resume_transport()

    def _resume_transport(self) -> None:
        """Resume reading from the socket unless something still holds it paused: a full recv queue
        (`_reading_paused`), a Listener's write backlog (`_paused_for_writes`) or input the core still
        has to parse (`_pending_input`)."""
        transport = self.transport
        if (
            transport is not None
            and not transport.is_closing()
            and not (self._reading_paused or self._paused_for_writes or self._pending_input)
        ):
            transport.resume_reading()

    def _deliver(self, events: list[Any]) -> bool:
        """Hand the core's events to waiting tasks; the hot path for incoming messages.

        A task waiting in `recv` goes on here, once the read's messages are queued, not in a later loop
        iteration: its wakeup (the waiter's one callback) runs now, in its own context, as the loop would
        run it. It takes the read's other messages from the queue, so its answers to them go out together.

        Returns:
            True when a control event came (the core may have queued a pong or a close frame).
        """
        control = False
        if self._dropping:
            # Closing, and messages past a full queue were dropped: none after them is delivered
            # either, so that what recv gets is all the peer sent up to a point, without holes.
            events = [e for e in events if type(e) is not str and type(e) is not bytes]
        messages = self._messages
        wakeup = None
        for event in events:
            # The core's messages are exactly str or bytes: two identity tests cost less than isinstance.
            if (kind := type(event)) is str or kind is bytes:
                waiter = self._recv_waiter
                if waiter is not None and not waiter.done() and not messages:
                    callbacks = waiter._callbacks
                    if len(callbacks) == 1:
                        wakeup, context = callbacks[0]
                        woken = waiter
                        waiter.remove_done_callback(wakeup)
                    waiter.set_result(event)
                elif messages is None:
                    messages = self._messages = deque((event,))
                else:
                    messages.append(event)
                continue
            control = True
            if isinstance(event, Pong):
                self._pong_received(event.data)
            elif isinstance(event, CloseReceived | ProtocolFailure):
                if isinstance(event, ProtocolFailure):
                    logger.info("failing the connection with %d: %s", event.code, event.message)
                self._wake_recv_on_end()
        if wakeup is not None:
            try:
                context.run(wakeup, woken)
            except RuntimeError:
                # Refused before it ran: a task is running (asyncio steps no other inside it), or the
                # task's context is the current one. The loop runs it, as it would have.
                self.loop.call_soon(wakeup, woken, context=context)
            messages = self._messages
        max_queue = self.options.max_queue
        if (
            max_queue is not None
            and messages is not None
            and len(messages) >= max_queue
            and not self._reading_paused
        ):
            protocol = self.protocol
            kept = self._kept_at_close
            if kept is not None:
                # Closing, and the application stopped reading: reading goes on to the peer's close
                # frame (see `_closing`), and what comes past a full queue is dropped (never what was
                # queued before).
                self._drop_past_queue(messages, max(max_queue, kept))
            else:
                # Backpressure: the application is not keeping up; stop reading until it catches up.
                self._reading_paused = True
                if self.transport is not None:
                    self.transport.pause_reading()
                if protocol is not None and protocol.close_sent is not None:
                    self._watch_reader()
        return control

    def _drop_past_queue(self, messages: deque[Data], keep: int) -> None:
        dropped = len(messages) - keep
        if dropped > 0:
            for _ in range(dropped):
                messages.pop()
            self._dropping = True
            logger.debug("closing: messages past a full queue dropped, from the %dth", keep + 1)

    @property
    def messages_queued(self) -> int:
        """How many received messages wait for `recv` (at most `max_queue` before reading pauses)."""
        return 0 if self._messages is None else len(self._messages)

    def _deliver_to_listener(self, listener: Listener, events: list[Any]) -> bool:
        """`_deliver` for a Listener: its callbacks run on the events; the same result.

        Their answers to a read of several events are held for one write once it is handled; a lone
        message's answer goes out at once. Once the answers waiting to be written pass the backlog
        limit (see `_limit_answer_backlog`), the read's other events are kept for `resume_writing`.
        """
        control = False
        self._delivering = len(events) > 1
        remaining = iter(events)
        try:
            for event in remaining:
                if (kind := type(event)) is str or kind is bytes:
                    try:
                        listener.on_message(self, event)
                    except ConnectionClosed:
                        # A send on a connection already closing: this one (by this side, or the peer's
                        # close frame answered), or another it relays to, which a client leaving makes
                        # ordinary (failing this one for it would take down a whole room in turn). Not a
                        # failure of this listener; the rest still comes.
                        logger.debug("listener sent on a closing connection", exc_info=True)
                    if self._writing_paused:
                        if self.listener is not listener:
                            break  # it failed in on_writing_paused: it gets nothing more
                        if self._limit_answer_backlog():
                            self._stashed = list(remaining) or None
                            break
                    continue
                control = True
                if isinstance(event, Pong):
                    self._pong_received(event.data)
                elif isinstance(event, Ping):
                    try:
                        listener.on_ping(self, event.data)
                    except ConnectionClosed:
                        logger.debug("listener sent on a closing connection", exc_info=True)
                    if self.listener is not listener:
                        break  # it failed in on_writing_paused (its pong's send paused writing)
                elif isinstance(event, ProtocolFailure):
                    logger.info("failing the connection with %d: %s", event.code, event.message)
        except Exception:
            self._listener_failed()
        finally:
            self._delivering = False
        return control

    def _listener_failed(self) -> None:
        """A Listener's callback raised: log it, fail the connection with 1011, and call the listener no
        more but for `on_close` (a peer that goes on sending would make a traceback per read)."""
        logger.exception("listener failed")
        listener = self.listener
        if listener is not None and type(listener) is not _FailedListener:
            self.listener = _FailedListener(listener)
        self._fail(1011, "internal error")

    @property
    def _closing_itself(self) -> bool:
        """Whether a `ConnectionClosed` just raised can be this connection's: it is closing or closed.

        Otherwise it came from another connection (one a handler relayed to).
        """
        protocol = self.protocol
        return (
            self._tcp_closed
            or protocol is None
            or protocol.state is not State.OPEN
            or protocol.close_sent is not None
        )

    def _attach_listener(self, listener: Listener) -> None:
        """Give this connection's messages to `listener` (the low-level API) from now on."""
        self.listener = listener
        waiter = self._recv_waiter
        if waiter is not None and not waiter.done():
            # A recv begun during the handshake (from an async process_request) would wait forever.
            waiter.set_exception(_listener_receives())

    @property
    def fragmenting(self) -> bool:
        """True while `send` is sending a fragmented message (an iterable): `send_now` raises meanwhile,
        since no other message may go out between its fragments (RFC 6455 §5.4)."""
        protocol = self.protocol
        return self._fragmenting() and protocol is not None and protocol.close_sent is None

    @property
    def writing_paused(self) -> bool:
        """True while the transport's write buffer is above `write_limit` (and once frames met a
        transport that closed itself, until the connection's end is known)."""
        return self._writing_paused

    def _wake_recv_on_end(self) -> None:
        waiter = self._recv_waiter
        if waiter is not None and not waiter.done() and not self._messages:
            # A marker, not the exception: the waiting recv makes the error itself (or, in `async for`,
            # just ends the loop), so a normal end builds no ConnectionClosedOK and no traceback.
            waiter.set_result(_INPUT_ENDED)

    def _closed_error(self) -> ConnectionClosed:
        protocol = self.protocol
        if protocol is None:
            return ConnectionClosedError(1006, "")
        code, reason, sent = protocol.close_code, protocol.close_reason, protocol.close_sent
        clean = self._closed_cleanly()
        detail = ""
        if sent is not None and protocol.close_received is None:
            if self._tcp_closed:
                detail = "no close frame received"
            else:
                # Still closing (a Listener's send_now after close_now, say): what this side sent, so far.
                # After a failure no answer is awaited: TCP closes at the peer's FIN or close_timeout.
                detail = (
                    "connection failed; closing"
                    if protocol.local_failure is not None
                    else "closing handshake in progress"
                )
                if code is None:
                    code, reason = sent[0] or 1005, sent[1]
                clean = code in _CLEAN_CODES
            failure = protocol.failure
            if failure is not None and protocol.local_failure is None:
                # The peer broke the protocol after this side's close frame: no close frame can say so
                # any more, and the connection ends without the peer's (1006), as no clean close does.
                detail = f"the peer broke the protocol while closing: {failure}"
                if self._tcp_closed:
                    detail = f"no close frame received; {detail}"
                code, reason, clean = 1006, "", False
        error = ConnectionClosedOK if clean else ConnectionClosedError
        return error(code or 1006, reason, detail, sent=sent)

    def _closed_cleanly(self) -> bool:
        """Both close frames went and came with normal codes (1000, 1001 or none)."""
        protocol = self.protocol
        if protocol is None or protocol.close_received is None:
            return False
        sent = protocol.close_sent
        return (
            sent is not None
            and (protocol.close_code or 1006) in _CLEAN_CODES
            and (sent[0] is None or sent[0] in _CLEAN_CODES)
        )

    # ------------------------------------------------------------------ sending

    async def send(self, message: Sendable, text: bool | None = None) -> None:
        """Send a message: `str` as text, bytes-like as binary, an (async) iterable as one fragmented message.

        Frames of different messages never interleave, whatever the number of tasks sending at once. Waits
        while the transport's write buffer is above `write_limit`. An async iterable's fragments go out as
        they are produced, and an empty final frame ends the message; a sync iterable's last fragment
        carries FIN itself.

        Args:
            text: True sends bytes-like data (or fragments) as a text message, which must be UTF-8
                (`ValueError` if not: checked before anything is sent, or, for fragments, as they come);
                False sends a `str` as a binary message of its UTF-8. As websockets' `send(text=...)`.

        Raises:
            ConnectionClosed: when the connection is closing or closed (once the closing handshake in
                progress is over: `ConnectionClosedOK` after a normal one).
            TypeError: for other types.
        """
        if text is not None:
            message = _as_typed(message, text)
        try:
            # The exact types first: a failed isinstance test looks `__class__` up on the object.
            if (
                type(message) is str
                or type(message) is bytes
                or isinstance(message, (str, bytes, bytearray, memoryview))
            ):
                lock = self._fragment_lock
                if lock is not None and lock.locked():
                    async with lock:
                        self.send_now(message)
                else:
                    self.send_now(message)
            elif isinstance(message, Mapping | Set):
                # Iterable, but over keys (or in no order): never what was meant as fragments.
                raise TypeError(
                    f"cannot send {type(message).__name__}; use str, bytes or a sequence"
                )
            elif isinstance(message, Iterable | AsyncIterable):
                await self._send_fragments(message)
            else:
                raise TypeError(
                    f"cannot send {type(message).__name__}; use str, bytes or an iterable"
                )
            if self._writing_paused:
                await self._drain()
        except ConnectionClosed:
            if self._tcp_closed:
                raise
            raise await self._closing_outcome() from None

    async def _closing_outcome(self) -> ConnectionClosed:
        """What a call refused while the closing handshake is under way raises: its outcome, once it is
        over (within close_timeout), so that a clean close does not look like an error."""
        await self.wait_closed()
        return self._closed_error()

    def send_now(self, message: str | bytes | bytearray | memoryview) -> None:
        """Queue a whole message without waiting (the low-level API; see `upwire.Listener`).

        The frame is written at once, or with the other frames queued in the same loop iteration; from a
        Listener callback of this connection on a read of several events, with the other answers to that
        read, once it is handled. A frame larger than `write_limit` is written at once when nothing is
        queued before it.
        There is no backpressure: check `writing_paused`. (`send` sends a whole message with this, then
        waits while writing is paused.)

        Raises:
            ConnectionClosed: when the connection is closing or closed.
            UsageError: while a task's `send` is sending a fragmented message on this connection
                (`fragmenting`): `send` waits its turn, `send_now` cannot.
        """
        protocol = self.protocol
        if protocol is None:
            raise self._not_open_error()
        # Bytes (a memoryview's `len` counts its items), or a str's characters, up to 4 bytes each once
        # encoded: it may be large then.
        size = message.nbytes if type(message) is memoryview else len(message)
        large = size >= _LARGE_CHUNK // 4
        # An answer written at once (the third case below, with nothing held): the core hands its frame
        # back when nothing is queued before it, and it is written here, without a flush. A small one is
        # held instead while more received messages wait for recv (the second case); a large one is not.
        # A frame that `_hold` would flush at once by itself (past write_limit) goes out at once whenever
        # nothing is queued before it, as the same write without the pass through the queue.
        at_once = (large and size + 2 > self.options.write_limit) or not (
            self._delivering
            or self._holding_for_input
            or self._flush_scheduled
            or self._wrote_at_once
            or self._large_queued
            or (self._messages and not large)
        )
        try:
            # The core checks that sending is still allowed; this layer only translates its refusal.
            frame = protocol.send_message(message, at_once)
        except UsageError:
            if protocol.close_sent is not None or protocol.state is not State.OPEN:
                raise self._closed_error() from None
            raise
        if frame is not None:
            transport = self.transport
            if transport is not None and not transport.is_closing():
                if isinstance(frame, bytes):
                    transport.write(frame)
                else:
                    self._write_large(transport, frame)
            else:
                self._wrote_to_closed_transport()
            self._wrote_at_once = True
            if large:
                # Nothing is held any more (a frame past write_limit may go out while the mark is set).
                self._holding_for_input = False
            return
        if large:
            self._large_queued = True
        if self._delivering:
            # A Listener's callbacks run on a read's messages: the read's end writes what they send.
            self._hold(size)
        elif self._messages and not self._large_queued:
            # More received messages wait for recv: this answer goes out with the answer to the last of
            # them (one write for a batch of small frames), or at the end of this loop iteration if none
            # comes. A large frame's write costs its copy, not its system call: it is not held.
            self._holding_for_input = True
            self._schedule_flush()
            self._hold(size)
        elif self._holding_for_input or not (self._flush_scheduled or self._wrote_at_once):
            # A message that no other received one follows goes out at once (no added latency), with the
            # answers held for it. No loop callback is scheduled for it: a lone answer costs no extra
            # loop iteration.
            self._holding_for_input = False
            self._flush()
            self._wrote_at_once = True
        else:
            # It follows a frame written at once (or held ones): the frames sent until the end of this
            # loop iteration are written together, one system call instead of one per message. A read or
            # a write in between clears `_wrote_at_once`; a task that sent once and then waited for
            # something else may see it still set, and its frame waits for the end of this iteration.
            self._schedule_flush()
            self._hold(size)

    def _schedule_flush(self) -> None:
        """Write what is held at the end of this loop iteration (once per iteration)."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            flush = self._iteration_flush
            if flush is None:
                flush = self._iteration_flush = _iteration_flush(self.loop)
            flush.add(self)

    def _hold(self, size: int) -> None:
        """Leave a frame for a later write, unless the held frames pile up past write_limit."""
        # The header's 2 bytes at least are counted: an empty frame held makes `_unflushed` nonzero too.
        self._unflushed += size + 2
        if self._unflushed > self.options.write_limit:
            self._flush()

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        self._holding_for_input = False
        self._wrote_at_once = False
        # Nothing held: every frame went out already (most often the one written at once).
        if self._unflushed:
            self._flush()

    def _open_protocol(self) -> ProtocolConnection:
        protocol = self.protocol
        if protocol is None:
            raise self._not_open_error()
        if protocol.state is not State.OPEN or protocol.close_sent is not None:
            raise self._closed_error()
        return protocol

    def _not_open_error(self) -> WebSocketError:
        """What sending raises before the opening handshake is done (in `process_request`, say)."""
        if self._tcp_closed:
            return self._closed_error()
        return UsageError("the opening handshake is not complete: nothing can be sent yet")

    async def _send_fragments(self, fragments: Any) -> None:
        if self._fragment_lock is None:
            self._fragment_lock = asyncio.Lock()
        async with self._fragment_lock:
            iterator = aiter(fragments) if isinstance(fragments, AsyncIterable) else None
            sync_iterator: Iterator[Any] = iter(()) if iterator is not None else iter(fragments)
            sentinel = object()
            previous: Any = sentinel
            try:
                while True:
                    if iterator is not None:
                        item = await anext(iterator, sentinel)
                    else:
                        item = next(sync_iterator, sentinel)
                    if item is sentinel:
                        break
                    if not isinstance(item, str | bytes | bytearray | memoryview):
                        raise TypeError(f"cannot send a fragment of type {type(item).__name__}")
                    if iterator is not None:
                        # An async producer's fragment goes out as soon as it is yielded (the next one may
                        # be long in coming); an empty final frame ends the message.
                        previous = "" if isinstance(item, str) else b""
                        self._open_protocol().send_fragment(item, fin=False)
                    elif previous is not sentinel:
                        # A sync iterable's next fragment is there already: one frame behind, the last
                        # fragment carries FIN itself.
                        self._open_protocol().send_fragment(previous, fin=False)
                        previous = item
                    else:
                        previous = item
                        continue
                    self._large_queued = True
                    self._flush()
                    if self._writing_paused:
                        await self._drain()
                if previous is not sentinel:
                    # The final fragment: it may fail too (a type that differs from the first
                    # fragment's, a str that cannot be encoded) once the others are out.
                    self._open_protocol().send_fragment(previous, fin=True)
                    self._large_queued = True
                    self._flush()
            except BaseException:
                if self._fragmenting():
                    # Fragments are on the wire and the message cannot be finished: the peer must not
                    # wait for it forever. (Before the first fragment left, nothing needs undoing.)
                    self._abort_message()
                raise

    def _fragmenting(self) -> bool:
        return self.protocol is not None and self.protocol._out_fragment_type is not None

    def _abort_message(self) -> None:
        protocol = self.protocol
        if protocol is not None and protocol.close_sent is None and protocol.state is State.OPEN:
            protocol.send_close(1011, "message could not be completed", failing=True)
            self._flush()
            self._closing(done_reading=True)

    def _flush(self) -> None:
        """Write what the core queued and close TCP when the core says so."""
        protocol = self.protocol
        transport = self.transport
        if protocol is None or transport is None:
            return
        self._unflushed = 0
        self._wrote_at_once = False
        out = protocol.data_to_send()
        if out:
            if transport.is_closing():
                self._wrote_to_closed_transport()
            elif len(out) == 1:
                transport.write(out[0])
            else:
                self._flush_chunks(transport, out)
        self._large_queued = False
        if (
            protocol.transport_should_close
            and not transport.is_closing()
            and not self._closing_in_stages
        ):
            if protocol.failure is not None and protocol.state is not State.CLOSED:
                # Failed while the peer may still be sending (a frame over max_message_size, say):
                # closing now, with its data unread, would make the kernel answer with a reset, which
                # can destroy the close frame before the peer reads it.
                self._close_in_stages()
                return
            transport.close()
            if self._tls_info is not None or transport.get_write_buffer_size():
                # Unsent bytes (or a TLS shutdown) may never go out to a peer that stopped reading;
                # otherwise connection_lost follows at once and a timer would only be cancelled.
                self._start_close_timer()

    def _close_in_stages(self) -> None:
        """Close TCP once the peer has seen what was written, not while it may still be sending.

        A client waits for the server's FIN (`eof_received`). On a server, over TCP, this side's FIN goes
        first, and the socket closes when the peer's FIN comes; TLS has no half-close: the connection
        closes (TLS's close_notify, then TCP) once the peer has sent nothing for `_QUIET_BEFORE_CLOSE_S`,
        or at its FIN. Either way within `close_timeout` (then aborted, see `abort_freeing_unsent`);
        meanwhile reading goes on, and what arrives is dropped (the core discards it). Without a timeout
        the transport is closed at once.
        """
        transport = self.transport
        if transport is None or transport.is_closing() or self._closing_in_stages:
            return
        if self.options.close_timeout is None:
            transport.close()
            return
        self._closing_in_stages = True
        protocol = self.protocol
        if protocol is not None and protocol.role is Role.CLIENT:
            # RFC 6455 §7.1.1: a client waits for the server to close TCP, so that the server holds the
            # TIME_WAIT state; the server closes once it has read the close frame.
            pass
        elif transport.can_write_eof():
            try:
                transport.write_eof()
            except OSError:
                # The peer is gone already (ENOTCONN): nothing more can reach it.
                transport.abort()
                return
        else:
            self._last_received = self.loop.time()
            self.loop.call_later(_QUIET_BEFORE_CLOSE_S, self._close_when_quiet)
        self._start_close_timer()
        transport.resume_reading()  # paused by backpressure, or for an async process_request

    def _close_when_quiet(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        quiet = self.loop.time() - self._last_received
        if quiet >= _QUIET_BEFORE_CLOSE_S:
            transport.close()
        else:
            self.loop.call_later(_QUIET_BEFORE_CLOSE_S - quiet, self._close_when_quiet)

    def _flush_chunks(self, transport: asyncio.Transport, out: list[bytes]) -> None:
        if not self._large_queued:
            transport.writelines(out)
            if _WRITELINES_NEEDS_PAUSE_CHECK and type(transport) is _SELECTOR_SOCKET_TRANSPORT:
                transport._maybe_pause_protocol()  # type: ignore[attr-defined]
        else:
            self._write_large(transport, out)

    def _write_large(self, transport: asyncio.Transport, out: Sequence[bytes]) -> None:
        """Write chunks with a large payload among them, without joining it to the others."""
        if _HAS_WRITEV and not transport.get_write_buffer_size() and (fd := self._direct_fd()) >= 0:
            _writev_chunks(fd, transport, out)
        else:
            _write_chunks(transport, out)

    def _send_shared(self, frame: bytes) -> bool:
        """Write an encoded frame that many connections share (`broadcast`), if the core lets this one.

        `_flush` with its general cases left out: a broadcast's whole cost is this, once per connection.
        """
        protocol = self.protocol
        if protocol is None or not protocol.send_encoded(frame):
            return False
        transport = self.transport
        if transport is None or transport.is_closing():
            protocol.data_to_send()  # nothing can be written any more
            return True
        out = protocol.data_to_send()
        if len(out) == 1:
            transport.write(frame)
        else:  # frames queued earlier in this loop iteration go first
            self._flush_chunks(transport, out)
            self._unflushed = 0
            self._large_queued = False
        return True

    def _shared_fd(self) -> int:
        """The socket to send a shared frame on directly (`broadcast`), or -1 to use `_send_shared`.

        Only when the transport writes straight to its socket and nothing waits to go before the frame,
        neither in the core nor in the transport: then sending on the socket is what `transport.write`
        would do, without its cost per connection.
        """
        fd = self._fd
        if fd == -1:
            return -1
        protocol = self.protocol
        transport = self.transport
        if (
            protocol is not None
            and transport is not None
            and protocol.takes_encoded_now()
            and not transport.is_closing()
            and not transport.get_write_buffer_size()
        ):
            return fd if fd >= 0 else self._direct_fd()
        return -1

    def _direct_fd(self) -> int:
        """`_fd`, looked up now if it was not yet."""
        fd = self._fd
        if fd == _FD_UNKNOWN:
            transport = self.transport
            fd = self._fd = (
                -1 if transport is None or self._tls_info is not None else _socket_fd(transport)
            )
        return fd

    def _wrote_to_closed_transport(self) -> None:
        """Frames met a transport that is closing: nothing goes out any more.

        When the transport closed itself (a reset, a write error), connection_lost is scheduled and
        runs only once the task sending yields; a task that sends in a loop to a peer that read fast
        never had to wait, so it never did, and sent into the void forever. It waits now, as for a
        full write buffer, until connection_lost fails its wait with the connection's end.
        """
        if not self._tcp_closed:
            self._writing_paused = True

    async def _drain(self) -> None:
        if not self._writing_paused:
            return
        if self._tcp_closed:
            raise self._closed_error()
        waiter: asyncio.Future[None] = self.loop.create_future()
        if self._drain_waiters is None:
            self._drain_waiters = []
        self._drain_waiters.append(waiter)
        try:
            await waiter
        finally:
            # A lost connection's error, set on the waiter, gets this frame in its traceback as it is
            # raised: the frame must not hold the waiter, or the cycle would keep the connection (and
            # its buffers) until a full garbage collection.
            del waiter

    def pause_writing(self) -> None:
        """Called by the transport when its write buffer goes above `write_limit`."""
        self._writing_paused = True
        if self.protocol is not None:
            self.protocol.hold_pongs(True)
        if self.listener is not None:
            self._limit_answer_backlog()
            self._call_listener(self.listener.on_writing_paused)

    def _limit_answer_backlog(self) -> bool:
        """Stop reading for a Listener whose answers pile up (backpressure without a task).

        A Listener answers from data_received, so reading on would grow the write buffer without bound.
        Reading stops once the answers waiting to be written (the transport's buffer and the frames
        held for it) pass `write_limit` plus one message of `max_message_size` (16 x `write_limit`
        without a message limit), and resumes when the buffer drains below the low-water mark: reading
        and writing still overlap when messages are larger than `write_limit`, as with the high-level
        API. The same limit stops delivering a read's messages (see `_deliver_to_listener`).

        Returns:
            True when reading is stopped.
        """
        transport = self.transport
        if transport is None or self._paused_for_writes:
            return self._paused_for_writes
        options = self.options
        limit = options.write_limit + (options.max_message_size or 15 * options.write_limit)
        if transport.get_write_buffer_size() + self._unflushed > limit:
            self._paused_for_writes = True
            transport.pause_reading()
        return self._paused_for_writes

    def resume_writing(self) -> None:
        """Called by the transport when its write buffer drains below the low-water mark."""
        self._writing_paused = False
        if self.protocol is not None:
            self.protocol.hold_pongs(False)
            self._flush()
        waiters, self._drain_waiters = self._drain_waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)
        listener = self.listener
        if listener is not None:
            self._call_listener(listener.on_writing_resumed)
            if self._paused_for_writes and not self._writing_paused:
                self._paused_for_writes = False
                stashed, self._stashed = self._stashed, None
                if stashed is not None and (protocol := self.protocol) is not None:
                    # The rest of the read that stopped reading, before anything read after it.
                    self._received(protocol, stashed)
                self._resume_transport()

    def _call_listener(self, callback: Callable[[Connection], None]) -> None:
        try:
            callback(self)
        except ConnectionClosed:
            # A send on a closing connection: expected, as in `_deliver_to_listener`.
            logger.debug("listener sent on a closing connection", exc_info=True)
        except Exception:
            self._listener_failed()

    # ------------------------------------------------------------------ ping

    def ping(
        self, data: bytes | bytearray | memoryview | str | None = None
    ) -> asyncio.Future[float]:
        """Send a ping; return a future that resolves with the round-trip time in seconds.

        `rtt = await ws.ping()` waits for the pong; `waiter = ws.ping()` sends now and lets you wait later.

        Args:
            data: the ping payload (at most 125 bytes); 4 random bytes by default.

        Raises:
            ConnectionClosed: when the connection is closed. While it is closing, nothing is sent and
                the future fails with what the closing handshake ends with, as `send` raises it.
            ValueError: when `data` is already used by a ping still waiting for its pong, or is over
                125 bytes.
            UsageError: for a `str` that UTF-8 cannot encode (a lone surrogate), as `send` says.
        """
        if isinstance(data, str):
            payload: bytes | None = _encoded(data)
        else:
            # The bytes of any buffer (the key of the pong to come); TypeError for anything else.
            payload = None if data is None else bytes(memoryview(data))
        if payload is None:
            payload = os.urandom(4)
            while payload in self._pings:
                payload = os.urandom(4)
        elif payload in self._pings:
            raise ValueError("a ping with this data is already waiting for its pong")
        try:
            protocol = self._open_protocol()
        except ConnectionClosed:
            if self._tcp_closed:
                raise
            # Closing: nothing is sent, and the future fails with what the closing handshake under way
            # ends with (as `send` raises it), when the connection is closed.
            waiting: asyncio.Future[float] = self.loop.create_future()
            # Keyed by a new object, not the payload: it was not sent, so no pong may answer it.
            self._pings[object()] = (waiting, time.perf_counter())
            return waiting
        try:
            protocol.send_ping(payload)
        except UsageError as exc:
            raise ValueError(str(exc)) from None
        future: asyncio.Future[float] = self.loop.create_future()
        self._pings[payload] = (future, time.perf_counter())
        self._flush()
        return future

    async def pong(self, data: bytes | bytearray | memoryview | str = b"") -> None:
        """Send an unsolicited pong: a one-way heartbeat that needs no answer (RFC 6455 §5.5.3).

        Args:
            data: the pong payload (at most 125 bytes); a `str` is sent as its UTF-8.

        Raises:
            ConnectionClosed: when the connection is closed (while it is closing, once the closing
                handshake is over, with its outcome, as `send`).
            ValueError: when `data` is over 125 bytes.
            UsageError: for a `str` that UTF-8 cannot encode (a lone surrogate), as `send` says.
        """
        payload = _encoded(data) if isinstance(data, str) else data
        try:
            protocol = self._open_protocol()
            try:
                protocol.send_pong(payload)
            except UsageError as exc:
                raise ValueError(str(exc)) from None
            self._flush()
            if self._writing_paused:
                await self._drain()
        except ConnectionClosed:
            if self._tcp_closed:
                raise
            raise await self._closing_outcome() from None

    def _pong_received(self, data: bytes) -> None:
        if data not in self._pings:
            return  # RFC 6455 §5.5.3: an unsolicited pong is ignored.
        # The clock of the round trips is time.perf_counter's, not the loop's: uvloop's counts whole
        # milliseconds, and a round trip on a LAN is less.
        now = time.perf_counter()
        # A pong acknowledges its ping and every earlier one (pings are answered in order).
        for payload in list(self._pings):
            future, sent_at = self._pings.pop(payload)
            if not future.done():
                future.set_result(now - sent_at)
            if payload == data:
                self.latency = now - sent_at
                break

    # ------------------------------------------------------------------ closing

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        """`async with websocket:` closes the connection at the block's end: with 1000, or with 1011
        when the block raised, so that the peer can tell a failure from a normal end. (A connection
        already closing, whose `ConnectionClosed` ended the block, keeps its code.)"""
        if exc_type is None:
            await self.close()
        else:
            await self.close(1011, "internal error")

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake and wait until the TCP connection is closed.

        Idempotent: after the first call, later calls only wait.

        Args:
            code: the close code (1000 normal, 1001 going away, 3000-4999 for applications, ...).
            reason: a short reason, at most 123 bytes of UTF-8.

        Raises:
            UsageError: for a code that may not be sent or a reason that is too long.
        """
        self.close_now(code, reason)
        await self.wait_closed()

    def close_now(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake without waiting (from a `Listener` callback, say).

        What `close` does before it waits: the close frame is queued and written, and the TCP connection
        is closed once the peer answers, or after `close_timeout`. Idempotent.

        Raises:
            UsageError: for a code that may not be sent or a reason that is too long.
        """
        protocol = self.protocol
        if protocol is not None and protocol.close_sent is None and protocol.state is State.OPEN:
            if self._fragmenting():
                code, reason = 1011, "closed while a fragmented message was being sent"
            protocol.send_close(code, reason)
            self._flush()
            self._closing()
        elif protocol is None and self.transport is not None:
            self.transport.close()

    async def wait_closed(self) -> None:
        """Wait until the TCP connection is closed."""
        if self._tcp_closed:
            return
        if self._closed_waiter is None:
            self._closed_waiter = self.loop.create_future()
        await asyncio.shield(self._closed_waiter)

    def _closing(self, done_reading: bool = False) -> None:
        """This side sent its close frame: wait for the peer's, within close_timeout.

        The peer's close frame may be behind messages nobody reads (the application is done with
        the connection): once the queue is full and the application has taken no message from it for
        a tenth of close_timeout (`_watch_reader`), or at once when it is known to be `done_reading`
        (a handler that returned or failed), reading resumes and messages past `max_queue` are dropped
        from then on, all of them once one was (RFC 6455 §7.1.2: the endpoint reads on until the peer's
        close frame). Otherwise the closing handshake would end only at close_timeout, with 1006. An
        application still reading (another task than the one closing) gets every message the peer
        sent before its close frame, with backpressure as before.
        """
        self._start_close_timer()
        if done_reading:
            self._stop_waiting_for_reader()
        elif self._reading_paused:
            self._watch_reader()

    def _watch_reader(self) -> None:
        """Closing with reading paused by a full queue: give up on the application if it takes nothing
        from the queue within the grace, counted from now (while reading is paused the queue only
        shrinks, so a shorter queue when the timer fires means the application took some)."""
        messages = self._messages
        self._reader_mark = 0 if messages is None else len(messages)
        if self._reader_timer is not None:
            self._reader_timer.cancel()
            self._reader_timer = None
        if not self._tcp_closed:
            timeout = self.options.close_timeout
            grace = _READER_GRACE_S if timeout is None else timeout / 10
            self._reader_timer = self.loop.call_later(grace, self._reader_timed_out)

    def _reader_timed_out(self) -> None:
        self._reader_timer = None
        if not self._reading_paused or self._tcp_closed or self._kept_at_close is not None:
            return  # the application made room (a full queue arms the timer again), or it is over
        messages = self._messages
        if messages is not None and len(messages) < self._reader_mark:
            self._watch_reader()  # it took some, and reading resumes once it took enough
        else:
            self._stop_waiting_for_reader()

    def _stop_waiting_for_reader(self) -> None:
        """Read on to the peer's close frame whether the application reads or not (see `_closing`)."""
        if self._kept_at_close is None:
            # What a read brought past max_queue before reading paused stays queued.
            self._kept_at_close = 0 if self._messages is None else len(self._messages)
        if self._reading_paused:
            self._resume_reading()

    def _start_close_timer(self) -> None:
        timeout = self.options.close_timeout
        if self._close_timer is None and timeout is not None and not self._tcp_closed:
            self._close_timer = self.loop.call_later(timeout, self._close_timed_out)

    def _close_timed_out(self) -> None:
        self._close_timer = None
        if self.transport is not None and not self._tcp_closed:
            logger.info("closing handshake timed out; aborting the TCP connection")
            abort_freeing_unsent(self.transport)

    def _fail(self, code: int, reason: str, done_reading: bool = True) -> None:
        """Close with `code` without waiting (keepalive timeout, idle timeout, handler errors; a server's
        shutdown, whose handlers may still be reading: not `done_reading`)."""
        protocol = self.protocol
        if protocol is not None and protocol.close_sent is None and protocol.state is State.OPEN:
            protocol.send_close(code, reason, failing=True)
            self._flush()
        self._closing(done_reading)

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Record the transport and set its write buffer limit."""
        # uvloop's transports are not subclasses of asyncio.Transport, but they have its methods.
        self.transport = cast(asyncio.Transport, transport)
        # This thread's read buffer, kept here: `get_buffer` and `buffer_updated` take it without a call
        # or a thread-local lookup (a connection stays on its loop's thread).
        self._read_view: memoryview = _read_buffer()
        cls = type(transport)
        if cls is _SELECTOR_SOCKET_TRANSPORT:
            # asyncio's plain socket transport: no TLS, and its limits are 64 KiB and a quarter of it
            # (asyncio's defaults), which is what the default write_limit sets anyway.
            self._reads_once = _HAS_FIONREAD
            options = self.options
            if (
                options.write_limit != _ASYNCIO_HIGH_WATER
                or options.write_low != _ASYNCIO_LOW_WATER
            ):
                self.transport.set_write_buffer_limits(options.write_limit, options.write_low)
        else:
            self.transport.set_write_buffer_limits(self.options.write_limit, self.options.write_low)
            if transport.get_extra_info("sslcontext") is not None:
                self._tls_info = {name: transport.get_extra_info(name) for name in _TLS_INFO}

    def _opened(self, protocol: ProtocolConnection, early_data: bytes) -> None:
        """Switch to WebSocket frames once the opening handshake succeeded."""
        self.protocol = protocol
        self._last_received = self.loop.time()
        self._schedule_keepalive()
        self._schedule_idle_check()
        if early_data:
            self.data_received(early_data)

    def get_buffer(self, sizehint: int) -> memoryview:
        """Where the transport reads next: the rest of a large frame in place, else the shared buffer."""
        protocol = self.protocol
        if protocol is not None and protocol.frame_incomplete:
            # Reading ahead past a large frame takes no more frames than the recv queue has room for;
            # a Listener reads ahead only while nothing waits to be written (its answers are read).
            max_queue = self.options.max_queue
            if self.listener is not None:
                transport = self.transport
                pending = transport is not None and transport.get_write_buffer_size()
                view = protocol.receive_buffer(0 if pending else None)
            elif max_queue is None:
                view = protocol.receive_buffer()
            else:
                queued = self._messages
                view = protocol.receive_buffer(max_queue - 1 - (len(queued) if queued else 0))
            if view is not None:
                self._reading_in_place = True
                return view
        return self._read_view

    def buffer_updated(self, nbytes: int) -> None:
        """`nbytes` were read into the buffer `get_buffer` returned."""
        protocol = self.protocol
        if self._reading_in_place:
            self._reading_in_place = False
            if protocol is not None:
                self._received(protocol, protocol.receive_written(nbytes))
                if self._reads_once and protocol.receiving_message:
                    self._read_message_on(protocol)
                return
        buffer = self._read_view  # what `get_buffer` returned
        if (
            nbytes == _READ_SIZE
            and protocol is not None
            and _HAS_FIONREAD
            and (fd := self._direct_fd()) >= 0
        ):
            # A full read: more may be waiting. The core reads a large frame's rest in place unless the
            # next frames are waiting behind it too (a stream, which reading ahead serves better).
            waiting = _bytes_waiting(fd)
            self._received(protocol, protocol.receive_data(buffer, waiting))
            if self._reads_once and protocol.receiving_message:
                self._read_message_on(protocol, waiting)
        elif protocol is not None:
            self._received(protocol, protocol.receive_data(buffer[:nbytes]))
        else:
            self._handshake_data(bytes(buffer[:nbytes]))

    def _read_message_on(self, protocol: ProtocolConnection, waiting: int | None = None) -> None:
        """Read more of the large binary message arriving into its bytes now, while the socket holds it.

        asyncio's socket transport reads once per wake-up of the loop, so on many connections a 1 MiB
        message came in pieces a loop turn apart, each written into its bytes while the other connections'
        reads pushed the last one out of the cache, and was sent from memory (measured: 1 MiB on 100
        connections, server CPU per message ~25 % lower). uvloop (libuv) already reads on while reads fill
        the buffer. Only what FIONREAD counts is read, so an error or the end of the stream behind it stays
        for the transport's next read; the reading stops when the message is whole, when the application
        paused reading (a full `recv` queue), or after _READS_AT_ONCE reads or _READ_AT_ONCE_BYTES bytes
        (1 MiB: the rest of a larger message comes a wake-up later, as before, so that one connection's
        16 MiB message does not hold up the others' turns for its whole length). `waiting`: what FIONREAD
        said just before, if the caller asked (the socket holds at least that much still).
        """
        transport = self.transport
        fd = self._direct_fd()
        if transport is None or fd < 0:
            return
        budget = _READ_AT_ONCE_BYTES
        for _ in range(_READS_AT_ONCE):
            if transport.is_closing() or not transport.is_reading():
                return
            if waiting is None:
                waiting = _bytes_waiting(fd)
            if not waiting:
                return
            view = protocol.receive_buffer()
            if view is None:
                return
            with view[: min(waiting, budget)] as part:
                try:
                    nbytes = os.readv(fd, [part])
                except (BlockingIOError, InterruptedError):
                    return
            self._received(protocol, protocol.receive_written(nbytes))
            budget -= nbytes
            if budget <= 0 or not protocol.receiving_message:
                return
            waiting = None

    def data_received(self, data: bytes | memoryview) -> None:
        """Feed received bytes to the core, deliver its events and write its answers."""
        protocol = self.protocol
        if protocol is None:
            self._handshake_data(bytes(data))
            return
        self._received(protocol, protocol.receive_data(data))

    def _received(self, protocol: ProtocolConnection, events: list[Any]) -> None:
        control = False
        if events:
            listener = self.listener
            if listener is None:
                control = self._deliver(events)
            else:
                control = self._deliver_to_listener(listener, events)
        if self._idle_timer is not None or self._closing_in_stages:
            self._last_received = self.loop.time()
        if control or self._unflushed:
            self._flush()
        else:
            # Nothing to write: the core queues frames on input only with a control event saying why (a
            # pong, a close frame; see `receive_data`), and frames held here count in `_unflushed`. The
            # read still ends what `_wrote_at_once` marks, as a flush would.
            self._wrote_at_once = False
        if self._writing_paused and self.listener is not None:
            self._limit_answer_backlog()
        if protocol.input_pending and self._stashed is None:
            # Let the application answer the messages that came before the close or error, then go on
            # (once the messages kept for resume_writing were delivered too).
            self._schedule_input()
        if protocol.close_received is not None and protocol.close_sent is not None:
            transport = self.transport
            if transport is not None and not transport.is_closing():
                # RFC 6455 §7.1.1: the client waits for the server to close TCP, within close_timeout.
                self._start_close_timer()

    def _schedule_input(self) -> None:
        """Parse the core's pending input in a later loop turn, once, with reading paused meanwhile.

        The core parses a bounded batch per call (`input_pending`): one resume at a time, so other
        connections get their turn between batches, and what the peer sends meanwhile waits in the
        socket (TCP flow control), not in the core's buffer.
        """
        if not self._pending_input:
            self._pending_input = True
            self.loop.call_soon(self._resume_input)
            transport = self.transport
            if transport is not None and not transport.is_closing():
                transport.pause_reading()

    def _resume_input(self) -> None:
        self._pending_input = False
        # Not while the recv queue is full: the input kept back waits, as unread bytes do, until recv
        # makes room (`_resume_reading` calls this again).
        if (
            self.protocol is not None
            and not self._tcp_closed
            and self._stashed is None
            and not self._reading_paused
        ):
            self.data_received(b"")  # may schedule the next batch
        self._resume_transport()

    def _handshake_data(self, data: bytes) -> None:
        raise NotImplementedError

    def eof_received(self) -> bool | None:
        """The peer closed its side; let asyncio close the transport."""
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        """Mark the connection closed and wake every waiting task."""
        self._fd = -1  # the number may soon name another socket
        if self.protocol is not None:
            self.protocol.receive_eof()
        for timer in (
            self._close_timer,
            self._keepalive_timer,
            self._idle_timer,
            self._reader_timer,
        ):
            if timer is not None:
                timer.cancel()
        self._close_timer = self._keepalive_timer = self._idle_timer = self._reader_timer = None
        self._tcp_closed = True
        if self._tls_info is not None:
            self.transport = _LostTLSTransport(self._tls_info)
        waiter = self._closed_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self._wake_recv_on_end()
        if self.listener is not None:
            listener, self.listener = self.listener, None
            stashed, self._stashed = self._stashed, None
            if stashed is not None:
                _deliver_after_loss(self, listener, stashed)
            try:
                listener.on_close(self)
            except Exception:
                logger.exception("listener failed in on_close")
        if not self._pings and not self._drain_waiters:
            self._writing_paused = False
            return
        error = self._closed_error()
        for future, _ in self._pings.values():
            if not future.done():
                future.set_exception(error)
                future.exception()  # mark retrieved: nobody may be waiting for this ping
        self._pings.clear()
        self._writing_paused = False
        waiters, self._drain_waiters = self._drain_waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_exception(error)

    # ------------------------------------------------------------------ keepalive and idle timeout

    def _schedule_keepalive(self) -> None:
        interval = self.options.ping_interval
        if interval is not None and not self._tcp_closed:
            self._keepalive_timer = self.loop.call_later(interval, self._keepalive)

    def _keepalive(self) -> None:
        self._keepalive_timer = None
        protocol = self.protocol
        if protocol is None or protocol.state is not State.OPEN or protocol.close_sent is not None:
            return
        waiter = self.ping()
        timeout = self.options.ping_timeout
        if timeout is not None:
            timer = self.loop.call_later(timeout, self._keepalive_timed_out, waiter)
            waiter.add_done_callback(lambda _: timer.cancel())
            waiter.add_done_callback(self._keepalive_answered)
            return
        # No timeout: a ping at every interval, pong or not (what keeps a proxy's or a NAT's idle
        # timer from expiring, as websockets does). The previous one, if still unanswered, is
        # forgotten: a peer that never answers costs one waiting ping, not one per interval.
        self._forget_ping(self._keepalive_ping)
        self._keepalive_ping = waiter
        waiter.add_done_callback(_retrieved)
        self._schedule_keepalive()

    def _forget_ping(self, waiter: asyncio.Future[float] | None) -> None:
        if waiter is None or waiter.done():
            return
        for payload, (future, _) in self._pings.items():
            if future is waiter:
                del self._pings[payload]
                break
        waiter.cancel()

    def _keepalive_answered(self, waiter: asyncio.Future[float]) -> None:
        if not waiter.cancelled() and waiter.exception() is None:
            self._schedule_keepalive()

    def _keepalive_timed_out(self, waiter: asyncio.Future[float]) -> None:
        if not waiter.done():
            waiter.cancel()
            logger.info("no pong within ping_timeout; closing the connection with 1011")
            self._fail(1011, "keepalive ping timeout")

    def _schedule_idle_check(self, delay: float | None = None) -> None:
        timeout = self.options.idle_timeout
        if timeout is not None and not self._tcp_closed:
            self._idle_timer = self.loop.call_later(
                timeout if delay is None else delay, self._idle_check
            )

    def _idle_check(self) -> None:
        self._idle_timer = None
        timeout = self.options.idle_timeout
        assert timeout is not None
        now = self.loop.time()
        if self._reading_paused and not self._writing_paused and self._input_waiting():
            # The application has not caught up with its recv queue, and the peer's bytes wait in the
            # socket: the peer is not quiet, this side stopped reading. (A peer that is quiet, or that
            # stalls the connection by not reading what this side sends, is idle.)
            self._last_received = now
        idle_for = now - self._last_received
        if idle_for >= timeout:
            logger.info("nothing received for %.1f s; closing the connection with 1001", idle_for)
            self._fail(1001, "idle timeout")
        else:
            self._schedule_idle_check(timeout - idle_for)

    def _input_waiting(self) -> bool:
        """True when bytes from the peer wait to be read (in the socket, or in a TLS transport's buffer,
        which reads on while the application's reading is paused), or when that cannot be known here."""
        transport = self.transport
        sock = None if transport is None else transport.get_extra_info("socket")
        if sock is None or not _HAS_FIONREAD:
            return True
        buffered = getattr(transport, "get_read_buffer_size", None)
        if buffered is not None and buffered():
            return True
        waiting = _bytes_waiting(sock.fileno())
        return waiting is None or waiting > 0


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Mark a future's exception retrieved (a keepalive ping failed by the connection's end)."""
    if not future.cancelled():
        future.exception()


def _encoded(text: str) -> bytes:
    """`text` as UTF-8; UsageError for a str that cannot be (a lone surrogate), as sending it raises."""
    try:
        return text.encode()
    except UnicodeEncodeError as exc:
        raise not_utf8(exc) from None


def _as_typed(message: Sendable, text: bool) -> Sendable:
    """`message` with its (fragments') type made str for `text`, bytes for binary (`send(text=...)`)."""
    if isinstance(message, str | bytes | bytearray | memoryview):
        return _typed(message, text, None)
    if isinstance(message, Mapping | Set) or not isinstance(message, Iterable | AsyncIterable):
        return message  # `send` raises its TypeError
    # Fragments: a character may be split between two of them, so text is checked across them.
    decoder = IncrementalUTF8Decoder() if text else None
    if isinstance(message, AsyncIterable):
        return _typed_async(message, text, decoder)
    return _typed_sync(message, text, decoder)


def _typed(
    item: Any, text: bool, decoder: IncrementalUTF8Decoder | None, final: bool = True
) -> str | bytes | bytearray | memoryview:
    data: bytes | bytearray | memoryview
    if not isinstance(item, str | bytes | bytearray | memoryview):
        raise TypeError(f"cannot send a fragment of type {type(item).__name__}")
    if isinstance(item, str):
        if decoder is None and text:
            return item
        data = _encoded(item)
    else:
        data = byte_view(item)
    if not text:
        return data
    try:
        if decoder is None:
            return str(data, "utf-8")
        # A fragment's text follows the bytes before it: a str after a character cut short is invalid.
        return decoder.decode(data, final)
    except UnicodeDecodeError as exc:
        raise ValueError(f"cannot send as text: not UTF-8 ({exc.reason})") from None


def _typed_sync(
    fragments: Iterable[Any], text: bool, decoder: IncrementalUTF8Decoder | None
) -> Iterator[str | bytes | bytearray | memoryview]:
    for item in fragments:
        yield _typed(item, text, decoder, False)
    if decoder is not None:
        _typed(b"", text, decoder, True)  # the last fragment must end on a character's end


async def _typed_async(
    fragments: AsyncIterable[Any], text: bool, decoder: IncrementalUTF8Decoder | None
) -> AsyncIterator[str | bytes | bytearray | memoryview]:
    async for item in fragments:
        yield _typed(item, text, decoder, False)
    if decoder is not None:
        _typed(b"", text, decoder, True)


_LINGER_RESET = struct.pack("ii", 1, 0)


def _listener_receives() -> UsageError:
    return UsageError(
        "this connection's messages go to its Listener's on_message: recv() would wait forever"
    )


def abort_freeing_unsent(transport: asyncio.Transport) -> None:
    """Abort the connection; with a reset when data is still unsent, which frees it at once.

    A socket closed with unsent data (a peer that stopped reading) otherwise stays in FIN-WAIT-1 with its
    send buffer (megabytes) for minutes, retrying; SO_LINGER with a zero timeout makes close() reset it.
    With everything sent and acknowledged, a plain close costs nothing, and the reset would make the
    peer's kernel drop what it has not read yet: a peer that was only paused (a stopped process, a laptop
    waking up) would lose the close frame that says why.
    """
    sock = transport.get_extra_info("socket")
    if sock is not None and (transport.get_write_buffer_size() or _unsent_bytes(sock)):
        abort_with_reset(transport)
    else:
        transport.abort()


def abort_with_reset(transport: asyncio.BaseTransport) -> None:
    """Abort the connection with a TCP reset (RST), not a FIN: SO_LINGER with a zero timeout."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        except (OSError, AttributeError):
            pass  # not a TCP socket (or already closed): abort as it is
    cast(asyncio.Transport, transport).abort()


def _unsent_bytes(sock: Any) -> int:
    """What the kernel still holds to send on `sock` (sent or not, unacknowledged), or 1 when that
    cannot be known here."""
    if _SIOCOUTQ is None:
        return 1
    try:
        return int.from_bytes(_ioctl(sock.fileno(), _SIOCOUTQ, b"\0\0\0\0"), sys.byteorder)
    except (OSError, ValueError, AttributeError):
        return 1


class _FailedListener(Listener):
    """What a connection calls once its listener failed: nothing but the listener's `on_close`.

    Until the connection is closed it is `connection.listener`: the failed listener's own attributes
    are read through it (`connection.listener.user`), its callbacks are not.
    """

    __slots__ = ("failed",)

    def __init__(self, failed: Listener) -> None:
        self.failed = failed

    def __getattr__(self, name: str) -> Any:
        if name == "failed":  # not set yet (a copy being made): no recursion
            raise AttributeError(name)
        return getattr(self.failed, name)

    def on_close(self, connection: Connection) -> None:
        self.failed.on_close(connection)


def _deliver_after_loss(connection: Connection, listener: Listener, events: list[Any]) -> None:
    """Give a Listener the messages kept for `resume_writing` when the connection is lost meanwhile.

    They were received whole, so they are not dropped; their answers cannot go out any more, and
    `send_now` raising ConnectionClosed for them is expected here, not a failure of the listener.
    """
    for event in events:
        try:
            if (kind := type(event)) is str or kind is bytes:
                listener.on_message(connection, event)
            elif isinstance(event, Ping):
                listener.on_ping(connection, event.data)
        except ConnectionClosed:
            pass
        except Exception:
            logger.exception("listener failed")
            return


def _writev_chunks(fd: int, transport: asyncio.Transport, out: Sequence[bytes]) -> None:
    """Send the chunks on the socket with one writev(2), and give the transport what it did not take.

    For a transport that writes straight to its socket (see `_socket_fd`) with nothing buffered: what its
    `write` would do with the chunks joined, without joining them (a large payload is not copied) and in
    one system call instead of one per large payload. An error is left for the transport's own write to
    meet and report.
    """
    try:
        sent = os.writev(fd, out if len(out) <= _IOV_MAX else out[:_IOV_MAX])
    except OSError:
        # BlockingIOError (the buffer is full) and errors alike: the transport takes over.
        sent = 0
    for index, chunk in enumerate(out):
        size = len(chunk)
        if sent >= size:
            sent -= size
            continue
        transport.write(memoryview(chunk)[sent:] if sent else chunk)
        for rest in out[index + 1 :]:
            transport.write(rest)
        return


def _write_chunks(transport: asyncio.Transport, out: Sequence[bytes]) -> None:
    """Write the core's chunks in order: small frames joined, each large payload as a view of itself.

    Joining would copy a large payload once more (asyncio's `writelines` joins), and asyncio copies the
    part a partial send leaves anyway; a view costs nothing until then.
    """
    start = 0
    for index, chunk in enumerate(out):
        if len(chunk) >= _LARGE_CHUNK:
            view = memoryview(chunk)
            transport.write(b"".join([*out[start:index], view[:_LARGE_CHUNK_HEAD]]))
            transport.write(view[_LARGE_CHUNK_HEAD:])
            start = index + 1
    if start < len(out):
        transport.write(b"".join(out[start:]))
