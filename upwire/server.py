"""The asyncio WebSocket server: `serve(handler, host, port)`.

Owns: accepting connections (through `_accept` on asyncio's selector loops and uvloop), reading the HTTP
request under limits, the `process_request` hook and routing by path, answering with 101 (through
`protocol.handshake`) or a plain HTTP response, running one handler task per connection, and graceful
shutdown (close 1001 to every client, then wait).
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import logging
import os
import re
import socket
import ssl as ssl_module
import stat
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping, Sequence
from typing import Any

from upwire import _accept
from upwire._values import seconds
from upwire.connection import (
    Connection,
    ConnectionOptions,
    abort_freeing_unsent,
    connection_options,
    extension_factories,
)
from upwire.exceptions import ConnectionClosed, InvalidHandshake, UsageError
from upwire.forwarded import TrustedProxies
from upwire.listener import Listener
from upwire.protocol.connection import Connection as ProtocolConnection
from upwire.protocol.connection import Role, State
from upwire.protocol.extensions import ServerExtensionFactory, ServerPerMessageDeflateFactory
from upwire.protocol.handshake import ServerHandshake
from upwire.protocol.http import (
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_MAX_HEADERS,
    DEFAULT_MAX_REQUEST_LINE,
    HeadersLike,
    Request,
    RequestReader,
    Response,
    serialize_response,
)

__all__ = ["Server", "ServerConnection", "serve"]

logger = logging.getLogger("upwire")

CoroutineHandler = Callable[["ServerConnection"], Awaitable[None]]
Handler = CoroutineHandler | type[Listener]
ProcessRequest = Callable[
    ["ServerConnection", Request], "Response | Awaitable[Response | None] | None"
]
ProcessResponse = Callable[["ServerConnection", Request, Response], "Response | None"]


class ServerConnection(Connection):
    """A connection accepted by a `Server`; the handler receives it."""

    __slots__ = ("_answered", "_early_data", "_opening", "_reader", "handler_task", "server")

    def __init__(self, server: Server, loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(server.options, loop)
        self.server = server
        self._reader: RequestReader | None = RequestReader(
            max_request_line=server.max_request_line,
            max_header_bytes=server.max_header_bytes,
            max_headers=server.max_headers,
        )
        self._early_data = b""
        # Answered with plain HTTP: what still arrives is read and dropped until the TCP close.
        self._answered = False
        # The connections of one `Server._opening` batch, while this one is among them.
        self._opening: set[ServerConnection] | None = None
        self.handler_task: asyncio.Task[None] | None = None

    @property
    def remote_address(self) -> Any:
        """The client's address: the socket's peer, or behind a trusted proxy the one it forwarded.

        When the peer is one of `serve`'s `trusted_proxies`, the address comes from the request's
        `X-Forwarded-For` header, as `(host, 0)` (the client's port is unknown); `peer_address` is the proxy's.
        """
        return self.server.trusted_proxies.client_address(
            self.peer_address, None if self.request is None else self.request.headers
        )

    @property
    def peer_address(self) -> Any:
        """The address of the socket's peer (host, port[, ...]): a reverse proxy's when there is one."""
        return None if self.transport is None else self.transport.get_extra_info("peername")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Start reading the opening handshake, within `open_timeout`."""
        super().connection_made(transport)
        if self.server._closing is not None:
            # Accepted before the shutdown, made only now (a TLS handshake that just finished): the
            # server takes no more connections.
            if self.transport is not None:
                self.transport.abort()
            return
        self.server._connections.add(self)
        if self.options.open_timeout is not None:
            self._opening = self.server._watch_opening(self)

    def _open_timed_out(self) -> None:
        # Out of its batch (the set outlives this connection until the batch's timer runs).
        if self._opening is not None:
            self._opening.discard(self)
            self._opening = None
        if self.protocol is None and self.transport is not None:
            logger.info("opening handshake timed out for %s", self.remote_address)
            self.transport.abort()

    def _handshake_data(self, data: bytes) -> None:
        if self._answered:
            # Answered with plain HTTP, closing in stages: what comes is dropped, but it keeps a TLS
            # connection open until the client is quiet (`_close_in_stages`).
            self._last_received = self.loop.time()
            return
        reader = self._reader
        if reader is None:
            # The request is complete and being processed; keep what follows for the WebSocket.
            self._early_data += data
            return
        try:
            request = reader.feed(data)
        except InvalidHandshake as exc:
            self._reject(exc)
            return
        if request is None:
            return
        self._reader = None
        self._early_data = reader.trailing_data
        self.request = request
        process_request = self.server.process_request
        answer: object = None
        if process_request is not None:
            try:
                answer = process_request(self, request)
            except Exception:
                self._internal_error()
                return
            if inspect.isawaitable(answer):
                # An async hook: wait for it in a task, reading nothing meanwhile.
                assert self.transport is not None
                self.transport.pause_reading()
                self.handler_task = self.loop.create_task(self._run_async(request, answer))
                return
        # The common case runs at once: no task, no loop iteration and no pause of reading.
        handler = self._accept(request, answer)
        if handler is not None:
            self.handler_task = self.loop.create_task(self._run_handler(handler))
            self._take_early_data()

    async def _run_async(self, request: Request, pending: Awaitable[object]) -> None:
        try:
            answer = await pending
        except Exception:
            self._internal_error()
            return
        handler = self._accept(request, answer)
        if handler is not None:
            self._take_early_data()
        # Reading was paused for the hook; it resumes unless something else holds it paused since
        # (a full queue, a batch of early data still to parse).
        self._resume_transport()
        if handler is not None:
            await self._run_handler(handler)

    def _take_early_data(self) -> None:
        """Parse the frames that came with the request, once the handler's task is there.

        After it, not before: messages with a close frame behind them are answered before the close
        goes out only if the handler runs before the rest of the batch (`_schedule_input`) is parsed.
        """
        early, self._early_data = self._early_data, b""
        if early:
            self.data_received(early)

    def _reject(self, error: InvalidHandshake) -> None:
        logger.info("rejecting the opening handshake from %s: %s", self.remote_address, error)
        self._answer_http(Response(error.status, error.headers, error.body))

    def _answer_http(self, response: Response) -> None:
        """Write a plain HTTP response and close the TCP connection.

        The close goes in stages (RFC 9112 §9.6): this side's FIN after the response, then the socket is
        closed once the client's FIN comes, or after `close_timeout`. Closing it at once while the client
        still sends (a request head over the limits, a body) would make the kernel answer with a reset,
        which can destroy the response before the client reads it. Meanwhile what arrives is dropped.
        """
        if self._answered:
            return  # one answer per connection: a second one would follow this side's FIN
        request = self.request
        # Serialized first: a response that cannot be (a header value with CR LF) raises before anything
        # is marked answered, and the caller answers 500 instead.
        data = serialize_response(response, body=request is None or request.method != "HEAD")
        self.response = response
        self._answered = True
        self._reader = None
        self._early_data = b""
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)
            self._close_in_stages()

    def _internal_error(self) -> None:
        logger.exception("error while opening a connection from %s", self.remote_address)
        if self.response is not None and self.response.status == 101:
            # The 101 is out: no HTTP answer may follow it (the client would read it as frames).
            if self.protocol is not None:
                self._fail(1011, "internal error")
            elif self.transport is not None:
                self.transport.abort()
            return
        self._answer_http(Response(500, body="Internal server error.\n"))

    def _accept(self, request: Request, answer: object) -> CoroutineHandler | None:
        """Answer the request: plain HTTP, an error, or 101 and the connection open.

        Returns:
            The coroutine handler to run, or None (HTTP answered, or a Listener that needs no task).
        """
        server = self.server
        try:
            if answer is not None:
                if not isinstance(answer, Response):
                    raise TypeError(f"process_request returned {answer!r}, not a Response or None")
                if answer.status == 101:
                    # Not an upgrade: no handshake fields, and no connection would follow it.
                    raise TypeError(
                        "process_request returned a 101: return None to let the upgrade go on"
                    )
                self._answer_http(answer)
                return None
            handler = server.handler_for(request)
            if handler is None:
                self._answer_http(Response(404, body=f"No WebSocket handler for {request.path}.\n"))
                return None
            try:
                accepted = server.handshake.accept(request)
            except InvalidHandshake as exc:
                self._reject(exc)
                return None
            head = accepted.head
            if server.process_response is not None:
                self.subprotocol = accepted.subprotocol
                negotiated = accepted.response.headers._collect(_HANDSHAKE_FIELDS)
                answer = server.process_response(self, request, accepted.response)
                if answer is not None and answer is not accepted.response:
                    if not isinstance(answer, Response) or answer.status == 101:
                        raise TypeError(
                            f"process_response returned {answer!r}: change the 101 in place and "
                            "return None, or return another Response to refuse the upgrade (the "
                            "hook is not async)"
                        )
                    self.subprotocol = None  # no WebSocket after all
                    self._answer_http(answer)
                    return None
                if accepted.response.status != 101:
                    raise TypeError(
                        f"process_response changed the 101 to {accepted.response.status}: return "
                        "another Response to refuse the upgrade"
                    )
                if accepted.response.headers._collect(_HANDSHAKE_FIELDS) != negotiated:
                    # The connection runs on what was negotiated (compression, the subprotocol).
                    raise TypeError(
                        "process_response changed the handshake's own fields of the 101 ("
                        + ", ".join(sorted(_HANDSHAKE_FIELDS))
                        + "): add other fields only"
                    )
                # Written again: the hook may have added fields (checked as they are written).
                head = serialize_response(accepted.response)
            transport = self.transport
            if transport is None or transport.is_closing():
                return None
            # A Listener is made before the 101: if its constructor raises, the answer is a 500.
            listener = handler() if isinstance(handler, type) else None
            self.response = accepted.response
            self.subprotocol = accepted.subprotocol
            transport.write(head)
            if self._opening is not None:
                self._opening.discard(self)
                self._opening = None
            protocol = ProtocolConnection(
                Role.SERVER,
                extensions=accepted.extensions,
                max_message_size=self.options.max_message_size,
                max_frame_size=self.options.max_frame_size,
                max_fragments=self.options.max_fragments,
            )
            self._opened(protocol, b"")
            if listener is not None:
                # The low-level API: a Listener gets callbacks; no task waits on this connection.
                self._attach_listener(listener)
                self._call_listener(listener.on_open)
                self._take_early_data()
                return None
            # The frames that came with the request wait for the handler's task (`_take_early_data`).
            assert not isinstance(handler, type)
            return handler
        except Exception:
            self._internal_error()
            return None

    async def _run_handler(self, handler: CoroutineHandler) -> None:
        protocol = self.protocol
        assert protocol is not None
        try:
            await handler(self)
        except ConnectionClosed:
            if self._closing_itself:
                logger.debug("handler ended by the connection closing", exc_info=True)
            else:
                # Another connection's closure (one the handler relayed to, say), not this one's.
                logger.exception("connection handler failed")
                self._fail(1011, "internal error")
        except Exception:
            logger.exception("connection handler failed")
            self._fail(1011, "internal error")
        else:
            if protocol.state is State.OPEN and protocol.close_sent is None:
                self.close_now(1000)
                self._stop_waiting_for_reader()  # nobody reads any more (see `_closing`)
                await self.wait_closed()
        finally:
            if protocol.close_sent is None and protocol.state is State.OPEN:
                self._fail(1011, "handler was cancelled")
            elif protocol.close_sent is not None:
                # However the handler ended, nobody reads any more: closing goes on to the peer's close
                # frame, dropping what comes past a full queue (see `_closing`).
                self._stop_waiting_for_reader()

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection and wake its waiters."""
        if self._opening is not None:
            self._opening.discard(self)
            self._opening = None
        self.server._connections.discard(self)
        task = self.handler_task
        if task is not None:
            if not task.done():
                # The handler outlives its connection: shutdown still waits for it (and cancels it).
                self.server._track(task)
            # A handler that ended with an exception (cancelled, say) holds it, and its traceback this
            # connection: forgetting the task leaves no cycle for the garbage collector to find.
            self.handler_task = None
        super().connection_lost(exc)


_OPENING_BATCH_S = 0.05


async def _check_unix_path(loop: asyncio.AbstractEventLoop, path: str | os.PathLike[str]) -> None:
    """Refuse a Unix socket path that is empty, or that a running server listens on (asyncio would
    unlink its socket file and take its clients); a file a stopped server left is replaced."""
    name = os.fspath(path)
    if not name:
        raise ValueError("unix_socket must be a path, not an empty string")
    if name[0] in ("\0", 0):
        return  # Linux's abstract namespace: no file; binding says when the name is taken
    try:
        is_socket = stat.S_ISSOCK(os.stat(name).st_mode)
    except OSError:
        return  # nothing there (or nothing to see): binding says what is wrong
    if not is_socket:
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)
    try:
        # A listener whose backlog is full leaves the connect pending: taken as in use after a while.
        async with asyncio.timeout(_UNIX_PROBE_S):
            await loop.sock_connect(probe, name)
    except TimeoutError:
        pass
    except (ConnectionRefusedError, FileNotFoundError):
        return  # left by a server that stopped (or gone meanwhile)
    except OSError as exc:
        # Not ours to take (no permission to connect, another kind of socket): binding there would
        # unlink it.
        raise OSError(
            exc.errno, f"cannot take over the Unix socket {name}: {exc.strerror}"
        ) from None
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, f"a server is listening on the Unix socket {name}")


_UNIX_PROBE_S = 1.0

# The fields of a 101 that `process_response` may not change: the connection runs on them.
_HANDSHAKE_FIELDS = frozenset(
    (
        "upgrade",
        "connection",
        "sec-websocket-accept",
        "sec-websocket-protocol",
        "sec-websocket-extensions",
    )
)


def _open_timed_out(connections: set[ServerConnection]) -> None:
    for connection in list(connections):
        connection._open_timed_out()


class Server:
    """A running WebSocket server; `serve()` creates it.

    Attributes:
        sockets: the listening sockets.
    """

    def __init__(
        self,
        handler: Handler | Mapping[str, Handler],
        *,
        options: ConnectionOptions,
        process_request: ProcessRequest | None,
        handshake: ServerHandshake,
        process_response: ProcessResponse | None = None,
        max_request_line: int,
        max_header_bytes: int,
        max_headers: int,
        shutdown_timeout: float | None,
        trusted_proxies: TrustedProxies | None = None,
    ) -> None:
        # Routing by path, or the one handler of every path.
        self._routes: Mapping[str, Handler] | None = None
        self._only_handler: Handler | None = None
        if isinstance(handler, Mapping):
            self._routes = handler
        else:
            self._only_handler = handler
        self.trusted_proxies = trusted_proxies or TrustedProxies()
        self.options = options
        self.process_request = process_request
        self.process_response = process_response
        self.handshake = handshake
        self.max_request_line = max_request_line
        self.max_header_bytes = max_header_bytes
        self.max_headers = max_headers
        self.shutdown_timeout = shutdown_timeout
        self._connections: set[ServerConnection] = set()
        # Handler tasks still running after their connection closed, until they return: shutdown waits
        # for them (and cancels them after shutdown_timeout) as for those of open connections.
        self._handlers: set[asyncio.Task[None]] = set()
        # TLS transports still in their TLS handshake (upwire's own accept only): no connection yet.
        self._tls_handshakes: set[asyncio.Transport] = set()
        # Opening handshakes are timed in batches: the connections made within `_OPENING_BATCH_S` (at
        # most a twentieth of open_timeout) share timers. At the batch's end one checks whether any of
        # them is still opening; only then does another wait out open_timeout, and abort those still
        # opening. A timer per connection, cancelled a moment later, cost more than the rest of accepting it.
        self._opening: set[ServerConnection] = set()
        self._opening_until = 0.0
        self._server: asyncio.Server | None = None
        # Where upwire accepts itself (`_accept`): the listening sockets' read callbacks, or on uvloop
        # what takes the connections waiting behind the one the loop accepted.
        self._acceptors: list[_accept._Acceptor] = []
        self._port: int | None = None  # kept once the server is closed
        self._closing: asyncio.Task[None] | None = None
        # Set by close() for the wait_closed() calls made before it.
        self._close_called: asyncio.Future[None] | None = None

    def _watch_opening(self, connection: ServerConnection) -> set[ServerConnection]:
        """Time `connection`'s opening handshake: abort it if not open after open_timeout (or a batch more)."""
        loop = connection.loop
        now = loop.time()
        if now >= self._opening_until:
            timeout = self.options.open_timeout
            assert timeout is not None
            self._opening = set()
            self._opening_until = now + min(_OPENING_BATCH_S, timeout / 20)
            loop.call_at(
                self._opening_until,
                self._end_opening_batch,
                loop,
                self._opening,
                self._opening_until + timeout,
            )
        self._opening.add(connection)
        return self._opening

    def _end_opening_batch(
        self, loop: asyncio.AbstractEventLoop, batch: set[ServerConnection], deadline: float
    ) -> None:
        """Close a batch of opening handshakes to newcomers; time those still opening, if any.

        Most handshakes end within the batch: then no timer waits out open_timeout, and a server whose
        connections are all open has no timer left to check in every loop iteration.
        """
        if batch is self._opening:
            self._opening_until = 0.0  # the next connection starts a new batch
        if batch:
            loop.call_at(deadline, _open_timed_out, batch)

    def _track(self, task: asyncio.Task[None]) -> None:
        """Keep a handler task whose connection closed until it is done."""
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    def handler_for(self, request: Request) -> Handler | None:
        """Return the handler for a request (routing by path when `serve` got a mapping of paths)."""
        routes = self._routes
        # The request's path (a URL split) is only needed to route, or to say what was not found.
        return self._only_handler if routes is None else routes.get(request.path)

    def is_serving(self) -> bool:
        """Whether the server accepts connections: started, and `close()` not called."""
        # (asyncio's own `is_serving` says False where upwire accepts the connections itself.)
        return self._server is not None and self._closing is None

    @property
    def sockets(self) -> tuple[Any, ...]:
        """The listening sockets."""
        return () if self._server is None else tuple(self._server.sockets)

    @property
    def port(self) -> int:
        """The port of the first listening socket (useful with `port=0`); still the same once closed.

        Raises:
            UsageError: for a server listening on no TCP socket (a Unix socket, say).
        """
        if self._port is None:
            raise UsageError("the server listens on no TCP port")
        return self._port

    @property
    def connections(self) -> set[ServerConnection]:
        """The connections currently open (a new set): opening handshake done, closing not begun.

        What `broadcast` sends to. Connections still opening, answered with plain HTTP, or closing are
        not in it.
        """
        return {
            connection
            for connection in self._connections
            if (protocol := connection.protocol) is not None
            and protocol.state is State.OPEN
            and protocol.close_sent is None
        }

    def close(self, code: int = 1001, reason: str = "server shutting down") -> None:
        """Stop accepting connections and close every open one with `code` (graceful shutdown).

        Returns at once; `wait_closed()` waits until every connection is closed and every handler returned,
        for at most `shutdown_timeout` seconds, after which connections are aborted and handlers cancelled.
        """
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self._shutdown(code, reason))
            if self._close_called is not None and not self._close_called.done():
                self._close_called.set_result(None)

    async def _shutdown(self, code: int, reason: str) -> None:
        if self._server is not None:
            self._server.close()
        _accept.stop_accepting(self._acceptors)
        for transport in list(self._tls_handshakes):
            transport.abort()
        connections = list(self._connections)
        for connection in connections:
            if connection.protocol is None:
                if connection._answered:
                    continue  # a plain HTTP answer going out: it closes in stages (or is aborted below)
                if connection.transport is not None:
                    connection.transport.abort()
                if connection.handler_task is not None:
                    # An async process_request still running: what it returns has nowhere to go now.
                    connection.handler_task.cancel()
            else:
                # The handlers may still be reading what their clients sent before their close frames.
                connection._fail(code, reason, done_reading=False)
        tasks = [c.handler_task for c in connections if c.handler_task is not None]
        tasks += self._handlers
        waits = [asyncio.ensure_future(c.wait_closed()) for c in connections]
        if waits or tasks:
            await asyncio.wait([*waits, *tasks], timeout=self.shutdown_timeout)
        for connection in connections:
            if connection.transport is not None and not connection._tcp_closed:
                # A peer that stopped reading gets a reset: a plain abort leaves the socket in FIN-WAIT-1
                # with its unsent data for minutes after the server is gone.
                abort_freeing_unsent(connection.transport)
        for task in tasks:
            if not task.done():
                task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
        for wait in waits:
            wait.cancel()
        if self._server is not None:
            await self._server.wait_closed()

    async def wait_closed(self) -> None:
        """Wait until the server is closed: `close()` was called (before or after this call, from
        anywhere: a signal handler, say) and its shutdown is over."""
        if self._closing is None:
            if self._close_called is None:
                self._close_called = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._close_called)
        assert self._closing is not None
        await asyncio.shield(self._closing)

    async def serve_forever(self) -> None:
        """Serve until `close()` is called (from a signal handler, say), then return once the shutdown
        is over; when cancelled, shut down gracefully and raise `CancelledError`."""
        try:
            await self.wait_closed()
        finally:
            self.close()
            await self.wait_closed()

    async def _start(
        self,
        host: str | None,
        port: int,
        ssl: ssl_module.SSLContext | None,
        sock: Any,
        backlog: int,
        unix_socket: str | os.PathLike[str] | None = None,
        reuse_port: bool = False,
    ) -> None:
        loop = asyncio.get_running_loop()

        def make_connection() -> ServerConnection:
            return ServerConnection(self, loop)

        # What the loop's own accept calls (uvloop's, one connection per turn of the loop): the
        # connections waiting behind that one are accepted too (`_accept.accept_waiting`).
        waiting: list[_accept._Acceptor] = []

        def accept_connection() -> ServerConnection:
            connection = ServerConnection(self, loop)
            if waiting:
                _accept.accept_waiting(waiting)
            return connection

        # With TLS, the TLS handshake is part of opening (a client that connects and says nothing is
        # dropped after open_timeout, not asyncio's 60 s) and its shutdown part of closing.
        tls = ssl is not None
        handshake_timeout = self.options.open_timeout if tls else None
        shutdown_timeout = self.options.close_timeout if tls else None
        if reuse_port and (unix_socket is not None or sock is not None):
            raise UsageError(
                "reuse_port applies to a TCP port serve binds itself, not to sock= or unix_socket="
            )
        if unix_socket is not None:
            if sock is not None:
                raise UsageError("serve takes a Unix socket's path or a socket (sock=), not both")
            await _check_unix_path(loop, unix_socket)
            # asyncio replaces a socket file left there (not another kind of file).
            self._server = server = await loop.create_unix_server(
                accept_connection,
                unix_socket,
                ssl=ssl,
                backlog=backlog,
                start_serving=False,
                ssl_handshake_timeout=handshake_timeout,
                ssl_shutdown_timeout=shutdown_timeout,
            )
        else:
            self._server = server = await loop.create_server(
                accept_connection,
                host=None if sock is not None else host,
                port=None if sock is not None else port,
                ssl=ssl,
                sock=sock,
                backlog=backlog,
                reuse_port=reuse_port,
                start_serving=False,
                ssl_handshake_timeout=handshake_timeout,
                ssl_shutdown_timeout=shutdown_timeout,
            )
        addresses = [sock.getsockname() for sock in server.sockets]
        if addresses and isinstance(addresses[0], tuple):
            self._port = int(addresses[0][1])
        if _accept.supported(loop, server, ssl):
            self._acceptors = _accept.start_accepting(
                loop,
                server,
                make_connection,
                backlog,
                ssl,
                handshake_timeout,
                shutdown_timeout,
                self._tls_handshakes,
            )
        else:
            if _accept.drains(loop, server, ssl):
                self._acceptors = _accept.start_draining(loop, server, make_connection, backlog)
                waiting.extend(self._acceptors)
            await server.start_serving()

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
        await self.wait_closed()


class serve:  # a class used like a function: `async with serve(...)` or `await serve(...)`
    """Start a WebSocket server on `host:port` that runs `handler(connection)` for each client.

    Use as `async with serve(handler, host, port) as server:` or `server = await serve(...)`.

    Args:
        handler: a coroutine function taking the connection; or a `Listener` subclass, instantiated
            for each connection (the low-level API: callbacks, no task per connection); or a mapping from
            request path to either (other paths get 404).
        host: the interface to listen on ("localhost", "127.0.0.1", "0.0.0.0", None for all).
        port: the TCP port; 0 picks a free one (see `Server.port`).
        process_request: optional hook `(connection, request) -> Response | None` (may be async) called
            before the upgrade; return a Response to answer with plain HTTP (health checks, auth failures,
            static pages) instead of upgrading.
        process_response: optional hook `(connection, request, response) -> Response | None` called with
            the 101 once the handshake was negotiated (`connection.subprotocol` is set): add fields to
            `response.headers` (a cookie, a request id) and return None, or return another Response to
            answer with plain HTTP instead. Not async.
        subprotocols: subprotocols the server supports, in order of preference.
        select_subprotocol: optional hook choosing a subprotocol from the client's offer.
        compression: "deflate" (the default) accepts permessage-deflate offers (RFC 7692) with
            `ServerPerMessageDeflateFactory`'s defaults; None disables compression.
        extensions: the extension factories to negotiate, instead of what `compression` selects (for
            example a `ServerPerMessageDeflateFactory` with other parameters).
        origins: allowed Origin header values (None in the list admits requests without Origin; a
            compiled pattern admits the origins it matches whole); other origins get 403. None (the
            default) admits every origin.
        extra_headers: header fields added to every 101 response.
        max_request_line: longest request line accepted (414 past it).
        max_header_bytes: largest request head accepted (431 past it).
        max_headers: most header fields accepted (431 past it).
        shutdown_timeout: seconds `close()` waits for connections and handlers before aborting them
            (0: at once; None: no limit).
        ssl: an `ssl.SSLContext` to serve `wss://`.
        trusted_proxies: IP addresses or networks of reverse proxies whose `X-Forwarded-For` header
            is believed (e.g. `["127.0.0.1"]`; "unix" for every peer on a Unix socket); for connections
            from them, `remote_address` is the forwarded client address. Default: none, so clients
            cannot spoof their address.
        sock: an already bound socket to serve on, instead of host and port.
        unix_socket: the path of a Unix socket to serve on, instead of host and port (a socket file
            left there by a server that stopped is replaced; one a running server listens on is an
            OSError).
        reuse_port: let several processes listen on the same port (`SO_REUSEPORT`: the kernel spreads
            connections over them).
        backlog: the listen backlog.
        **options: the connection options of `ConnectionOptions` (max_message_size, max_queue, ...).
    """

    def __init__(
        self,
        handler: Handler | Mapping[str, Handler],
        host: str | None = "localhost",
        port: int = 8765,
        *,
        process_request: ProcessRequest | None = None,
        process_response: ProcessResponse | None = None,
        subprotocols: Sequence[str] | None = (),
        select_subprotocol: Callable[[Sequence[str]], str | None] | None = None,
        compression: str | None = "deflate",
        extensions: Sequence[ServerExtensionFactory] | None = None,
        origins: Sequence[str | re.Pattern[str] | None] | None = None,
        extra_headers: HeadersLike = (),
        max_request_line: int = DEFAULT_MAX_REQUEST_LINE,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        max_headers: int = DEFAULT_MAX_HEADERS,
        shutdown_timeout: float | None = 10.0,
        ssl: ssl_module.SSLContext | None = None,
        sock: Any = None,
        unix_socket: str | os.PathLike[str] | None = None,
        reuse_port: bool = False,
        backlog: int = 1024,
        trusted_proxies: Iterable[str] = (),
        **options: Any,
    ) -> None:
        shutdown_timeout = seconds("shutdown_timeout", shutdown_timeout, zero=True)
        self._server = Server(
            handler,
            options=connection_options("serve", options, _SERVE_PARAMETERS),
            process_request=process_request,
            process_response=process_response,
            handshake=ServerHandshake(
                subprotocols=subprotocols,
                select_subprotocol=select_subprotocol,
                extensions=extension_factories(
                    compression, extensions, ServerPerMessageDeflateFactory
                ),
                origins=origins,
                extra_headers=extra_headers,
            ),
            max_request_line=max_request_line,
            max_header_bytes=max_header_bytes,
            max_headers=max_headers,
            shutdown_timeout=shutdown_timeout,
            trusted_proxies=TrustedProxies(trusted_proxies),
        )
        self._start_args = (host, port, ssl, sock, backlog, unix_socket, reuse_port)

    async def _create(self) -> Server:
        await self._server._start(*self._start_args)
        return self._server

    def __await__(self) -> Generator[Any, None, Server]:
        return self._create().__await__()

    async def __aenter__(self) -> Server:
        return await self._create()

    async def __aexit__(self, *exc_info: object) -> None:
        self._server.close()
        await self._server.wait_closed()


# The parameters of `serve` itself, for the hint of an unknown keyword (see `connection_options`).
_SERVE_PARAMETERS = tuple(inspect.signature(serve.__init__).parameters)[1:-1]
