"""Accepting TCP connections on asyncio's selector loops without a task per connection.

Owns: the listening sockets' read callback when `serve` runs on TCP (plain or TLS) on a loop built on
asyncio's `BaseSelectorEventLoop` (the default loop on Unix). Knows nothing about WebSocket or HTTP.

Why: asyncio's own server accepts each connection in a coroutine run as a task, which makes the transport
and then awaits a future the transport resolves once `connection_made` has run. That is a coroutine, a
task, a future and two more loop callbacks per connection, about a tenth of the CPU time of a whole
WebSocket handshake. Here the listening socket's callback accepts and makes the transport itself, with the
same arguments asyncio's server passes (the peer's address as `peername`, the `asyncio.Server` so that its
`wait_closed` and `close` keep working). `asyncio.Server.close()` removes this callback and closes the
sockets as it does its own.

It relies on private parts of asyncio's selector loop, unchanged since Python 3.7 (the loop's
`_make_socket_transport`, the server's `_sockets`; `_make_ssl_transport` for TLS, as it is since Python
3.11), and on the socket's `_accept` (socket.py's own accept since Python 3.3). Other loops (uvloop,
Windows' proactor) and any loop without these parts keep asyncio's own accept (`supported` says which).

It also backs off for a second when the process runs out of file descriptors: asyncio's accept (Python
3.11 to 3.13) retries at once up to a backlog's worth of times per readiness, logging each failure.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import ssl as ssl_module

__all__ = ["ACCEPT_RETRY_DELAY_S", "start_accepting", "supported"]

logger = logging.getLogger("upwire")

# After running out of file descriptors or memory, wait this long before accepting again (as asyncio does):
# Linux keeps reporting the listening socket readable, so accepting at once would spin.
ACCEPT_RETRY_DELAY_S = 1.0

_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def supported(loop: asyncio.AbstractEventLoop, server: asyncio.Server, ssl: object) -> bool:
    """Whether `start_accepting` can serve `server` (made with `start_serving=False`) on `loop`."""
    return (
        isinstance(loop, asyncio.selector_events.BaseSelectorEventLoop)
        and callable(getattr(loop, "_make_socket_transport", None))
        and (ssl is None or callable(getattr(loop, "_make_ssl_transport", None)))
        and callable(getattr(socket.socket, "_accept", None))
        and isinstance(getattr(server, "_sockets", None), list)
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
) -> None:
    """Listen on `server`'s sockets and accept their connections (only where `supported` says so).

    With `ssl`, each connection's protocol sees `connection_made` once the TLS handshake is done, as with
    asyncio's own accept (the timeouts: None for asyncio's defaults); meanwhile its transport is in
    `handshaking`, for a shutdown to abort.
    """
    tls = None
    if ssl is not None:
        tls = _Tls(loop, ssl, ssl_handshake_timeout, ssl_shutdown_timeout, handshaking)
    for sock in server._sockets:  # type: ignore[attr-defined]
        sock.listen(backlog)
        _Acceptor(loop, server, sock, protocol_factory, backlog, tls).resume()


class _Tls:
    """Makes the TLS transport for an accepted socket, as asyncio's accept does."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        context: ssl_module.SSLContext,
        handshake_timeout: float | None,
        shutdown_timeout: float | None,
        handshaking: set[asyncio.Transport] | None,
    ) -> None:
        self.loop = loop
        self.handshaking: set[asyncio.Transport] = set() if handshaking is None else handshaking
        self.make_transport: Callable[..., Any] = loop._make_ssl_transport  # type: ignore[attr-defined]
        self.context = context
        self.timeouts: dict[str, float] = {}
        if handshake_timeout is not None:
            self.timeouts["ssl_handshake_timeout"] = handshake_timeout
        if shutdown_timeout is not None:
            self.timeouts["ssl_shutdown_timeout"] = shutdown_timeout

    def __call__(
        self,
        conn: socket.socket,
        protocol: asyncio.BaseProtocol,
        extra: dict[str, Any],
        server: asyncio.Server,
    ) -> None:
        waiter = self.loop.create_future()
        transport = self.make_transport(
            conn,
            protocol,
            self.context,
            waiter=waiter,
            server_side=True,
            extra=extra,
            server=server,
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
        server: asyncio.Server,
        sock: socket.socket,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        backlog: int,
        tls: _Tls | None,
    ) -> None:
        self.loop = loop
        self.server = server
        self.sock = sock
        self.protocol_factory = protocol_factory
        # Accept at most a backlog's worth per readiness, as asyncio does, so a flood cannot starve the loop.
        self.batch = max(1, backlog)
        self.make_transport: Callable[..., Any] = loop._make_socket_transport  # type: ignore[attr-defined]
        self.tls = tls
        # socket.accept() reads the listening socket's family and type as enums for every connection;
        # the private _accept() and these numbers, read once, make the same socket for less.
        self.socket_args = (int(sock.family), int(sock.type), sock.proto)

    def resume(self) -> None:
        """Watch the listening socket, unless the server closed it meanwhile."""
        if self.sock.fileno() != -1:
            self.loop.add_reader(self.sock.fileno(), self.accept)

    def accept(self) -> None:
        """Accept the connections waiting on the listening socket, each into a transport and protocol."""
        accept = self.sock._accept  # type: ignore[attr-defined]
        family, kind, proto = self.socket_args
        for _ in range(self.batch):
            try:
                fd, address = accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return  # none left, or one reset while it waited
            except OSError as exc:
                self._accept_failed(exc)
                return
            conn = None
            try:
                conn = socket.socket(family, kind, proto, fileno=fd)
                conn.setblocking(False)
                if self.tls is None:
                    self.make_transport(
                        conn,
                        self.protocol_factory(),
                        extra={"peername": address},
                        server=self.server,
                    )
                else:
                    self.tls(conn, self.protocol_factory(), {"peername": address}, self.server)
            except Exception:
                if conn is None:
                    os.close(fd)
                else:
                    conn.close()
                logger.exception("could not set up the connection from %s", address)

    def _accept_failed(self, exc: OSError) -> None:
        if exc.errno in _OUT_OF_RESOURCES:
            logger.error(
                "cannot accept connections (%s); trying again in %s s", exc, ACCEPT_RETRY_DELAY_S
            )
            self.loop.remove_reader(self.sock.fileno())
            self.loop.call_later(ACCEPT_RETRY_DELAY_S, self.resume)
        else:
            logger.error("accepting a connection failed: %s", exc)
