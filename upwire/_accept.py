"""Accepting connections without a task per connection, and all those waiting in one turn of the loop.

Owns: the listening sockets' read callback when `serve` runs on a loop built on asyncio's
`BaseSelectorEventLoop` (the default loop on Unix; TCP or a Unix socket, plain or TLS), and on uvloop the
accepting of the connections waiting behind the one the loop accepted (plain TCP). Knows nothing about
WebSocket or HTTP.

Why: asyncio's own server accepts each connection in a coroutine run as a task, which makes the transport
and then awaits a future the transport resolves once `connection_made` has run. That is a coroutine, a
task, a future and two more loop callbacks per connection, about a tenth of the CPU time of a whole
WebSocket handshake. Here the listening socket's callback accepts and makes the transport itself, with the
same arguments asyncio's server passes (the peer's address as `peername`, the `asyncio.Server` so that its
`wait_closed` and `close` keep working). `asyncio.Server.close()` removes this callback and closes the
sockets as it does its own.

It relies on private parts of asyncio's selector loop, unchanged since Python 3.7 (the loop's
`_make_socket_transport`, the server's `_sockets`; `_make_ssl_transport` for TLS, as it is since Python
3.11), and on the socket's `_accept` (socket.py's own accept since Python 3.3). Other loops (Windows'
proactor, say) and any loop without these parts keep their own accept (`supported` says which).

On uvloop (plain TCP, not TLS) the loop accepts: libuv takes one connection per readiness of the listening
socket, that is per turn of the loop, so with many clients connecting at once the loop turned once per
connection (one `epoll_pwait` and one `io_uring_enter` each, measured). There the server's protocol factory,
which libuv's accept calls, also takes the connections still waiting (`accept_waiting`): through a
duplicate of each listening socket (`dup`, never watched; `stop_accepting` closes it), each into the loop's
`connect_accepted_socket`, run as a plain coroutine (`_run`: all a task would do for it). Those transports
are not attached to uvloop's `Server`, whose `wait_closed` does not wait for them: upwire's shutdown waits
for its connections itself. Running out of file descriptors is libuv's to handle there.

On both loops Linux says how many connections wait (`_waiting`, one `getsockopt`), so a readiness takes
those and no `accept` has to fail to say there are no more; on uvloop a lone connection costs that call
and nothing else. On the selector loops, accepting backs off for a second when the process runs out of
file descriptors: asyncio's accept (Python 3.11 to 3.13) retries at once up to a backlog's worth of times
per readiness, logging each failure.
"""

from __future__ import annotations

import _socket
import asyncio
import errno
import functools
import logging
import os
import socket
import struct
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import ssl as ssl_module

__all__ = [
    "ACCEPT_RETRY_DELAY_S",
    "accept_waiting",
    "drains",
    "start_accepting",
    "start_draining",
    "stop_accepting",
    "supported",
]

logger = logging.getLogger("upwire")

# After running out of file descriptors or memory, wait this long before accepting again (as asyncio does):
# Linux keeps reporting the listening socket readable, so accepting at once would spin.
ACCEPT_RETRY_DELAY_S = 1.0

_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

# Linux's struct tcp_info, as far as needed: for a listening socket its state is TCP_LISTEN and its
# `tcpi_unacked` the number of connections waiting to be accepted (what `ss -l` shows as Recv-Q).
_TCP_INFO: int | None = getattr(socket, "TCP_INFO", None)
_TCP_LISTEN = 10
_TCP_INFO_SIZE = 32
_UNACKED = struct.Struct("=I")
_UNACKED_OFFSET = 24


def _waiting(sock: socket.socket) -> int | None:
    """How many connections wait in listening TCP socket `sock`'s accept queue, where Linux says; else None.

    Accepting until `accept` fails costs a system call and an exception at every readiness (~4.5 µs on the
    machine of docs/benchmarks.md); this one call costs a sixth of that.
    """
    assert _TCP_INFO is not None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _TCP_INFO_SIZE)
    except OSError:
        return None
    if len(info) < _TCP_INFO_SIZE or info[0] != _TCP_LISTEN:
        return None
    count: int = _UNACKED.unpack_from(info, _UNACKED_OFFSET)[0]
    return count


def supported(loop: asyncio.AbstractEventLoop, server: asyncio.Server, ssl: object) -> bool:
    """Whether `start_accepting` can serve `server` (made with `start_serving=False`) on `loop`."""
    return (
        isinstance(loop, asyncio.selector_events.BaseSelectorEventLoop)
        and callable(getattr(loop, "_make_socket_transport", None))
        and (ssl is None or callable(getattr(loop, "_make_ssl_transport", None)))
        and callable(getattr(socket.socket, "_accept", None))
        and isinstance(getattr(server, "_sockets", None), list)
    )


def drains(loop: asyncio.AbstractEventLoop, server: asyncio.Server, ssl: object) -> bool:
    """Whether `start_draining` applies: the loop accepts one connection per turn and can take more."""
    return (
        ssl is None
        and type(loop).__module__.partition(".")[0] == "uvloop"
        and callable(getattr(loop, "connect_accepted_socket", None))
        and callable(getattr(socket.socket, "_accept", None))
        and all(
            callable(getattr(sock, "dup", None))
            and sock.family in (socket.AF_INET, socket.AF_INET6)
            for sock in server.sockets
        )
    )


def start_accepting(
    loop: asyncio.AbstractEventLoop,
    server: asyncio.Server,
    protocol_factory: Callable[[], asyncio.BaseProtocol],
    backlog: int,
    ssl: ssl_module.SSLContext | None = None,
    ssl_handshake_timeout: float | None = None,
    ssl_shutdown_timeout: float | None = None,
    handshaking: set[asyncio.Transport] | None = None,
) -> list[_Acceptor]:
    """Listen on `server`'s sockets and accept their connections (only where `supported` says so).

    With `ssl`, each connection's protocol sees `connection_made` once the TLS handshake is done, as with
    asyncio's own accept (the timeouts: None for asyncio's defaults); meanwhile its transport is in
    `handshaking`, for a shutdown to abort. Returns the acceptors, for `stop_accepting` once `server` is
    closed.
    """
    adopt: _Adopter
    if ssl is None:
        adopt = _SelectorTransport(loop, server)
    else:
        adopt = _Tls(loop, server, ssl, ssl_handshake_timeout, ssl_shutdown_timeout, handshaking)
    # asyncio.Server.close() removes the reader and closes these sockets, as it does its own.
    acceptors = [
        _Acceptor(loop, sock, protocol_factory, backlog, adopt, owned=False, watched=True)
        for sock in server._sockets  # type: ignore[attr-defined]
    ]
    for acceptor in acceptors:
        acceptor.sock.listen(backlog)
        acceptor.resume()
    return acceptors


def start_draining(
    loop: asyncio.AbstractEventLoop,
    server: asyncio.Server,
    protocol_factory: Callable[[], asyncio.BaseProtocol],
    backlog: int,
) -> list[_Acceptor]:
    """Ready to take the connections waiting on `server`'s sockets besides the loop's (`accept_waiting`).

    Only where `drains` says so; `server` then serves as usual, and `stop_accepting` closes the duplicates
    of its sockets once it is closed.
    """
    adopt = _Uvloop(loop)
    return [
        _Acceptor(loop, sock.dup(), protocol_factory, backlog, adopt, owned=True, watched=False)
        for sock in server.sockets
    ]


def accept_waiting(acceptors: list[_Acceptor]) -> None:
    """Accept the connections waiting on these (unwatched) acceptors' sockets: the loop just accepted one."""
    for acceptor in acceptors:
        if acceptor.sock.fileno() != -1:  # not closed by stop_accepting
            acceptor.accept()


def stop_accepting(acceptors: list[_Acceptor]) -> None:
    """Stop watching and close the listening sockets these acceptors own (after the server's close())."""
    for acceptor in acceptors:
        acceptor.close()


class _Adopter(Protocol):
    """Makes the transport of an accepted socket (of class `socket_class`) with its protocol."""

    socket_class: type[socket.socket]

    def __call__(
        self, conn: socket.socket, protocol: asyncio.BaseProtocol, address: Any
    ) -> None: ...


class _SelectorTransport:
    """Makes the transport for an accepted socket on a selector loop, as asyncio's accept does."""

    socket_class: type[socket.socket] = socket.socket

    def __init__(self, loop: asyncio.AbstractEventLoop, server: asyncio.Server) -> None:
        self.make_transport: Callable[..., Any] = loop._make_socket_transport  # type: ignore[attr-defined]
        self.server = server

    def __call__(self, conn: socket.socket, protocol: asyncio.BaseProtocol, address: Any) -> None:
        conn.setblocking(False)
        self.make_transport(conn, protocol, extra={"peername": address}, server=self.server)


class _PlainSocket(socket.socket):
    """A socket whose family and type are the plain numbers, not enum members made on each access.

    uvloop's `connect_accepted_socket` reads both (~2.4 µs a connection as enums); it keeps the socket to
    itself (the transport's `get_extra_info("socket")` is uvloop's own object), so nobody sees the numbers.
    """

    __slots__ = ()
    family = _socket.socket.family  # type: ignore[assignment]
    type = _socket.socket.type  # type: ignore[assignment]


class _Uvloop:
    """Hands an accepted socket to uvloop, which makes its transport (and sets it non-blocking)."""

    socket_class: type[socket.socket] = _PlainSocket

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def __call__(self, conn: socket.socket, protocol: asyncio.BaseProtocol, address: Any) -> None:
        _run(self.loop, self.loop.connect_accepted_socket(lambda: protocol, conn), address)


def _run(
    loop: asyncio.AbstractEventLoop,
    coroutine: Coroutine[Any, Any, object],
    address: Any,
    _: object = None,
) -> None:
    """Run `coroutine` on until it waits, and again when what it waits for is done (what a task does)."""
    try:
        awaited = coroutine.send(None)
    except StopIteration:
        return
    except asyncio.CancelledError:
        return  # its loop is closing
    except Exception:
        logger.exception("could not set up the connection from %s", address)
        return
    step = functools.partial(_run, loop, coroutine, address)
    if awaited is None:
        loop.call_soon(step)  # a bare yield: run it again in the next turn, as a task would
    else:
        awaited.add_done_callback(step)


class _Tls:
    """Makes the TLS transport for an accepted socket, as asyncio's accept does."""

    socket_class: type[socket.socket] = socket.socket

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        server: asyncio.Server,
        context: ssl_module.SSLContext,
        handshake_timeout: float | None,
        shutdown_timeout: float | None,
        handshaking: set[asyncio.Transport] | None,
    ) -> None:
        self.loop = loop
        self.server = server
        self.handshaking: set[asyncio.Transport] = set() if handshaking is None else handshaking
        self.make_transport: Callable[..., Any] = loop._make_ssl_transport  # type: ignore[attr-defined]
        self.context = context
        self.timeouts: dict[str, float] = {}
        if handshake_timeout is not None:
            self.timeouts["ssl_handshake_timeout"] = handshake_timeout
        if shutdown_timeout is not None:
            self.timeouts["ssl_shutdown_timeout"] = shutdown_timeout

    def __call__(self, conn: socket.socket, protocol: asyncio.BaseProtocol, address: Any) -> None:
        conn.setblocking(False)
        waiter = self.loop.create_future()
        transport = self.make_transport(
            conn,
            protocol,
            self.context,
            waiter=waiter,
            server_side=True,
            extra={"peername": address},
            server=self.server,
            **self.timeouts,
        )

        handshaking = self.handshaking
        handshaking.add(transport)

        def handshake_done(waiter: asyncio.Future[None]) -> None:
            handshaking.discard(transport)
            # A failed or timed-out TLS handshake: the transport goes (asyncio's accept does the same,
            # and reports it only in debug mode).
            if waiter.cancelled() or waiter.exception() is not None:
                transport.close()

        waiter.add_done_callback(handshake_done)


class _Acceptor:
    """The read callback of one listening socket."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        backlog: int,
        adopt: _Adopter,
        owned: bool,
        watched: bool,
    ) -> None:
        self.loop = loop
        self.sock = sock
        self.protocol_factory = protocol_factory
        # Accept at most a backlog's worth per readiness, as asyncio does, so a flood cannot starve the loop.
        self.batch = max(1, backlog)
        self.adopt = adopt
        # Whether the socket is this acceptor's to close (`close`), or its server's.
        self.owned = owned
        # Whether its readiness calls `accept` (else someone else does: `accept_waiting`).
        self.watched = watched
        # socket.accept() reads the listening socket's family and type as enums for every connection;
        # the private _accept() and these numbers, read once, make the same socket for less.
        self.socket_args = (int(sock.family), int(sock.type), sock.proto)
        self.counts = _TCP_INFO is not None and sock.family in (socket.AF_INET, socket.AF_INET6)

    def resume(self) -> None:
        """Watch the listening socket, unless the server closed it meanwhile."""
        if self.watched and self.sock.fileno() != -1:
            self.loop.add_reader(self.sock.fileno(), self.accept)

    def close(self) -> None:
        """Close the listening socket if it is this acceptor's own (its server closes the others)."""
        if self.owned and self.sock.fileno() != -1:
            if self.watched:
                self.loop.remove_reader(self.sock.fileno())
            self.sock.close()

    def accept(self) -> None:
        """Accept the connections waiting on the listening socket, each into a transport and protocol."""
        accept = self.sock._accept  # type: ignore[attr-defined]
        family, kind, proto = self.socket_args
        make_socket = self.adopt.socket_class
        count = self.batch
        if self.counts:
            waiting = _waiting(self.sock)
            if waiting is not None:
                count = min(count, waiting)  # those that come meanwhile make it ready again
        for _ in range(count):
            try:
                fd, address = accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return  # none left, or one reset while it waited
            except OSError as exc:
                self._accept_failed(exc)
                return
            conn = None
            try:
                conn = make_socket(family, kind, proto, fileno=fd)
                self.adopt(conn, self.protocol_factory(), address)
            except Exception:
                if conn is None:
                    os.close(fd)
                else:
                    conn.close()
                logger.exception("could not set up the connection from %s", address)

    def _accept_failed(self, exc: OSError) -> None:
        if not self.watched:
            return  # the loop's own accept meets the same error and handles it its way
        if exc.errno in _OUT_OF_RESOURCES:
            logger.error(
                "cannot accept connections (%s); trying again in %s s", exc, ACCEPT_RETRY_DELAY_S
            )
            self.loop.remove_reader(self.sock.fileno())
            self.loop.call_later(ACCEPT_RETRY_DELAY_S, self.resume)
        else:
            logger.error("accepting a connection failed: %s", exc)
