"""`upwire tap`: a relay between WebSocket clients and one upstream server that shows every frame as it passes.

Owns: accepting clients, opening one upstream connection per client, passing the opening handshake on (the
Host header is rewritten for the upstream; every other header, the offered and accepted extensions
included, passes unchanged), then forwarding frames both ways exactly as they were received: same bytes,
same fragmentation, same opcodes, same masking keys. Frame boundaries come from the core's `FrameParser`
(through `WebSocketObserver`), and each frame is written on only once it is complete.

Compression is negotiated end to end: the client and the upstream server agree on permessage-deflate
between themselves and keep their compression contexts; the tap inflates a copy of each compressed
message per direction only to show it.

Must not know: how frames are printed (its caller passes callbacks).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import ssl as ssl_module
import time
from collections.abc import Callable
from typing import Any

from upwire.client import parse_uri
from upwire.connection import abort_with_reset
from upwire.exceptions import InvalidHandshake
from upwire.protocol.http import (
    Headers,
    Request,
    RequestReader,
    Response,
    ResponseReader,
    serialize_request,
    serialize_response,
)
from upwire.wire.tcp import format_endpoint
from upwire.wire.websocket import FrameRecord, WebSocketObserver

__all__ = ["Tap"]

_READ_SIZE = 1 << 16
_CLOSE_WAIT_S = 10.0

FrameCallback = Callable[[WebSocketObserver, FrameRecord], None]
NoteCallback = Callable[[WebSocketObserver, str], None]
ConnectionCallback = Callable[[WebSocketObserver], None]


def _address(peer: Any) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return format_endpoint(str(peer[0]), peer[1])
    return str(peer)


def _answer(client_w: asyncio.StreamWriter, response: Response) -> Response:
    """Send a client an answer that ends the relay; return it as sent.

    `serialize_response` adds Content-Length and "Connection: close": what a report shows is what the
    client got, those fields included.
    """
    data = serialize_response(response)
    client_w.write(data)
    lines = data[: data.index(b"\r\n\r\n")].decode("latin-1").split("\r\n")[1:]
    fields = [(name, value) for name, _, value in (line.partition(": ") for line in lines)]
    return Response(response.status, fields, response.body, response.reason)


def _connect_failure(exc: OSError) -> str:
    """Why connecting failed, in words: asyncio's own message only repeats the address."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if exc.errno and exc.errno > 0 and not isinstance(exc, ssl_module.SSLError | socket.gaierror):
        return os.strerror(exc.errno)
    # uvloop raises some without errno or text: the class names the errno.
    code = _CONNECTION_ERRNOS.get(type(exc))
    return exc.strerror or str(exc) or (os.strerror(code) if code else type(exc).__name__)


_CONNECTION_ERRNOS: dict[type, int] = {
    ConnectionResetError: errno.ECONNRESET,
    ConnectionRefusedError: errno.ECONNREFUSED,
    ConnectionAbortedError: errno.ECONNABORTED,
    BrokenPipeError: errno.EPIPE,
}


class Tap:
    """Relay clients to `upstream` and report each connection and frame.

    Args:
        upstream: the ws:// or wss:// URI of the server; a client's request target is kept when the
            URI's path is "/", replaced by the URI's target otherwise.
        on_open: called once a connection's handshake succeeded (the observer has request and response).
        on_frame: called for each frame, before it is forwarded.
        on_close: called when a connection has ended.
        on_note: called with each note the observer makes once the connection is open (a frame
            passed on undecoded, say), when it makes it; notes made before are in `on_open`'s observer.
        on_refused: called when a client's Upgrade request did not become a WebSocket connection (the
            upstream refused it or could not be reached, or the request was invalid): the observer
            (not WebSocket) has the request when there was one, the answer the client got (the
            upstream's, or the tap's own 400/414/431/502/504) and a note saying why.
        ssl: the TLS context for a wss:// upstream (the default context when None).
        max_frame_hold: the most bytes of one incomplete frame held for decoding (default 16 MiB). A
            larger frame is passed on as its bytes come, and that direction of the connection is no
            longer decoded (a note says so): the relay's memory stays bounded whatever a peer announces.
        handshake_timeout: seconds from a client's connection until the upstream's answer to its
            Upgrade (default 10). A client that has not sent its request by then is dropped; one whose
            upstream has not answered gets a 504. A client that leaves meanwhile is dropped at once.
    """

    def __init__(
        self,
        upstream: str,
        *,
        on_open: ConnectionCallback | None = None,
        on_frame: FrameCallback | None = None,
        on_close: ConnectionCallback | None = None,
        on_note: NoteCallback | None = None,
        on_refused: ConnectionCallback | None = None,
        ssl: ssl_module.SSLContext | None = None,
        max_frame_hold: int = 16 * 1024 * 1024,
        handshake_timeout: float = 10.0,
    ) -> None:
        if max_frame_hold <= 0:
            raise ValueError(f"max_frame_hold must be positive, not {max_frame_hold!r}")
        if not handshake_timeout > 0:
            raise ValueError(f"handshake_timeout must be positive, not {handshake_timeout!r}")
        self._handshake_timeout = handshake_timeout
        self._on_note = on_note
        self._notes_shown: dict[WebSocketObserver, int] = {}
        self.upstream = parse_uri(upstream)
        self._max_frame_hold = max_frame_hold
        self._on_open = on_open
        self._on_frame = on_frame
        self._on_close = on_close
        self._on_refused = on_refused
        self._ssl = ssl
        self._streams = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self.server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> asyncio.Server:
        """Listen on `host:port` (0 picks a free port); return the asyncio server."""
        self.server = await asyncio.start_server(self._accept, host, port)
        return self.server

    async def close(self) -> None:
        """Stop listening and end the relayed connections."""
        self._closing = True
        if self.server is not None:
            self.server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.server is not None:
            await self.server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._relay(reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # Cancelled by `close`: the relay ends as when a peer leaves. A cancelled client callback
            # would make asyncio's stream server log a traceback (Python 3.11 asks it for its exception).
            if not self._closing:
                raise
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        # One deadline for the whole opening handshake, as a server's open timeout: a client that never
        # sends its request, or an upstream that never answers, would hold the relay forever.
        deadline = asyncio.get_running_loop().time() + self._handshake_timeout
        request_reader = RequestReader()
        request: Request | None = None
        try:
            async with asyncio.timeout_at(deadline):
                while request is None:
                    data = await client_r.read(_READ_SIZE)
                    if not data:
                        return
                    request = request_reader.feed(data)
        except InvalidHandshake as exc:
            answer = _answer(client_w, Response(exc.status or 400, exc.headers, exc.body))
            self._refused(client_w, None, answer, f"the client's request is not valid: {exc}")
            return
        except TimeoutError:
            return
        uri = self.upstream
        headers = Headers(
            (name, uri.host_header if name.lower() == "host" else value)
            for name, value in request.headers.items()
        )
        target = request.target if uri.target == "/" else uri.target
        forwarded = Request(request.method, target, headers)
        context = None
        if uri.secure:
            context = self._ssl or ssl_module.create_default_context()
        try:
            async with asyncio.timeout_at(deadline):
                upstream_r, upstream_w = await asyncio.open_connection(
                    uri.host, uri.port, ssl=context, server_hostname=uri.host if context else None
                )
        except (OSError, TimeoutError) as exc:
            body = (
                f"upwire tap: cannot connect to the upstream {format_endpoint(uri.host, uri.port)}: "
                f"{_connect_failure(exc)}\n"
            )
            status = 504 if isinstance(exc, TimeoutError) else 502
            answer = _answer(client_w, Response(status, body=body))
            self._refused(client_w, forwarded, answer, body.removeprefix("upwire tap: ").strip())
            return
        try:
            upstream_w.write(serialize_request(forwarded))
            response_reader = ResponseReader(forwarded)
            early = bytearray(request_reader.trailing_data)
            response = await self._answer(
                upstream_r, response_reader, client_r, client_w, early, deadline
            )
            if isinstance(response, tuple):
                self._refused(client_w, forwarded, *response)
                return
            if response.status != 101:
                # Passed on with "Connection: close" (the relay ends): shown as the client got it.
                why = f"the upstream refused the Upgrade: HTTP {response.status} {response.reason}"
                self._refused(client_w, forwarded, _answer(client_w, response), why)
                return
            client_w.write(serialize_response(response, close=False))
            observer = WebSocketObserver(
                self._streams,
                _address(client_w.get_extra_info("peername")),
                format_endpoint(uri.host, uri.port),
            )
            self._streams += 1
            # What the client sent before the 101 reached it: sent before any answer (RFC 6455 §4.1).
            observer.open(forwarded, response, observer.a, observer.b, sent_early=len(early))
            observer.first_time = time.time()
            if self._on_open:
                self._on_open(observer)
            self._notes_shown[observer] = len(observer.notes)
            reset = False
            try:
                ends = await asyncio.gather(
                    self._pump(observer, True, client_r, upstream_w, bytes(early)),
                    self._pump(
                        observer, False, upstream_r, client_w, response_reader.trailing_data
                    ),
                )
                reset = any(ends)
            finally:
                # A frame or message the connection's end cut short gets its note, as in a capture.
                observer.finish(reset=reset, closed=not reset)
                self._report_notes(observer)
                self._notes_shown.pop(observer, None)
                if self._on_close:
                    self._on_close(observer)
        finally:
            upstream_w.close()

    def _refused(
        self,
        client_w: asyncio.StreamWriter,
        request: Request | None,
        response: Response | None,
        why: str,
    ) -> None:
        """Report a client whose Upgrade did not become a WebSocket connection (`on_refused`)."""
        observer = WebSocketObserver(
            self._streams,
            _address(client_w.get_extra_info("peername")),
            format_endpoint(self.upstream.host, self.upstream.port),
        )
        self._streams += 1
        observer.request, observer.response = request, response
        observer.client, observer.server = observer.a, observer.b
        observer.first_time = time.time()
        observer.notes.append(why)
        if self._on_refused:
            self._on_refused(observer)

    async def _answer(
        self,
        upstream_r: asyncio.StreamReader,
        reader: ResponseReader,
        client_r: asyncio.StreamReader,
        client_w: asyncio.StreamWriter,
        early: bytearray,
        deadline: float,
    ) -> Response | tuple[Response | None, str]:
        """The upstream's answer to the Upgrade; or, when the relay ends (the client left first, or an
        error answer was sent to it), that answer (None when none) and why. What the client sends
        meanwhile is added to `early`."""
        answer = asyncio.ensure_future(self._read_response(upstream_r, reader))
        # Watched meanwhile: a client that leaves must not leave its relay waiting on the upstream.
        left = asyncio.ensure_future(self._until_client_leaves(client_r, early))
        try:
            async with asyncio.timeout_at(deadline):
                await asyncio.wait({answer, left}, return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            body = (
                f"upwire tap: the upstream did not answer the Upgrade within "
                f"{self._handshake_timeout:g} s\n"
            )
            answer_504 = _answer(client_w, Response(504, body=body))
            return answer_504, body.removeprefix("upwire tap: ").strip()
        finally:
            for task in (answer, left):
                task.cancel()
            await asyncio.gather(answer, left, return_exceptions=True)
        if not answer.done() or answer.cancelled():
            return None, "the client left before the upstream answered"
        try:
            response = answer.result()
        except (InvalidHandshake, OSError) as exc:
            body = f"upwire tap: the upstream's answer is not valid HTTP: {exc}\n"
        else:
            if response is not None:
                return response
            body = "upwire tap: the upstream closed without answering the Upgrade\n"
        answer_502 = _answer(client_w, Response(502, body=body))
        return answer_502, body.removeprefix("upwire tap: ").strip()

    @staticmethod
    async def _read_response(
        upstream_r: asyncio.StreamReader, reader: ResponseReader
    ) -> Response | None:
        """The upstream's answer, or None when it closed without a byte of one."""
        answered = False
        while True:
            data = await upstream_r.read(_READ_SIZE)
            if not data and not answered:
                return None
            answered = True
            response = reader.feed(data) if data else reader.feed_eof()
            if response is not None or not data:
                return response

    async def _until_client_leaves(self, client_r: asyncio.StreamReader, early: bytearray) -> None:
        while len(early) <= self._max_frame_hold:
            data = await client_r.read(_READ_SIZE)
            if not data:
                return
            early += data
        # Past the bound the client is not read (it waits, as TCP makes it); the deadline still holds.
        await asyncio.Event().wait()

    def _report_notes(self, observer: WebSocketObserver) -> None:
        """Pass on the notes the observer added since the last call, when they arise."""
        shown = self._notes_shown.get(observer, len(observer.notes))
        self._notes_shown[observer] = len(observer.notes)
        if self._on_note:
            for note in observer.notes[shown:]:
                self._on_note(observer, note)

    async def _pump(
        self,
        observer: WebSocketObserver,
        from_client: bool,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        early: bytes,
    ) -> bool:
        """Relay one direction until its sender ends; return True when it reset the connection."""
        data = early
        passing = False  # past max_frame_hold: bytes go on as they come, undecoded
        while True:
            if data and passing:
                sink.write(data)
                await sink.drain()
            elif data:
                for record in observer.feed(from_client, data, time.time(), None):
                    if self._on_frame:
                        self._on_frame(observer, record)
                    sink.write(record.wire)
                if observer.pending(from_client) > self._max_frame_hold:
                    passing = True
                    sink.write(
                        observer.release(
                            from_client,
                            f"a frame larger than --max-frame-hold {self._max_frame_hold} "
                            "bytes was passed on undecoded",
                        )
                    )
                self._report_notes(observer)
                await sink.drain()
            try:
                data = await source.read(_READ_SIZE)
            except OSError:
                # A reset (RST): the other side gets one too, as it would without the tap.
                abort_with_reset(sink.transport)
                return True
            if not data:
                break
        # The sender finished: pass the end of its stream on, so the other side sees it too.
        with contextlib.suppress(OSError, RuntimeError):
            if sink.can_write_eof():
                sink.write_eof()
        return False
