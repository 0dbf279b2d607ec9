"""Failing a connection while the peer still sends: the close frame must reach it, not a reset.

RFC 6455 §7.1.7 asks for a close frame with the right code before TCP closes. Closing a socket with unread
data makes the kernel send a reset, and a reset makes the peer's kernel drop what it had not read yet —
the close frame among it. So a server half-closes, reads and drops until the peer's FIN, then closes;
over TLS, which has no half-close, it reads and drops until the peer has stopped sending. A client reads
and drops until the server closes (RFC 6455 §7.1.1: the server closes TCP first).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import struct

import pytest
import trustme
import uvloop

import upwire

from .helpers import TEST_TIMEOUT_S, StartServer
from .wire import BINARY, CLOSE, RawPeer, apply_mask

CHUNK = b"\0" * 65536


async def _stream_payload(writer: asyncio.StreamWriter, size: int) -> None:
    """Write `size` bytes of payload (zeros: unmasked by a zero key) in chunks, as a browser would."""
    for _ in range(size // len(CHUNK)):
        writer.write(CHUNK)
        await writer.drain()


async def _close_code(reader: asyncio.StreamReader) -> int:
    """Read a close frame; its code."""
    first, second = await reader.readexactly(2)
    assert first & 0x0F == CLOSE
    key = await reader.readexactly(4) if second & 0x80 else b"\0\0\0\0"
    payload = apply_mask(await reader.readexactly(second & 0x7F), key)
    code: int = struct.unpack("!H", payload[:2])[0]
    return code


async def _close_frame_then_eof(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Read the close frame's code, then everything up to EOF (a reset raises)."""
    code = await _close_code(reader)
    rest = await reader.read()  # raises ConnectionResetError on a reset
    return code, rest


@pytest.mark.parametrize("size", [4 << 20, 16 << 20])
async def test_a_server_failing_a_frame_over_the_limit_closes_cleanly_with_1009(
    start_server: StartServer, size: int
) -> None:
    server = await start_server(max_message_size=1 << 20, ping_interval=None)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        peer = await RawPeer.upgraded(server.port)
        peer.write(struct.pack("!BBQ", 0x80 | BINARY, 0x80 | 127, size) + b"\0\0\0\0")
        sending = asyncio.create_task(_stream_payload(peer.writer, size))
        code, rest = await _close_frame_then_eof(peer.reader)
        assert (code, rest) == (1009, b"")
        await sending  # the server read (and dropped) the rest: no broken pipe, no reset
        peer.close()


@pytest.mark.parametrize("scheme", ["ws", "wss"])
async def test_a_client_failing_a_frame_over_its_limit_closes_cleanly_with_1009(
    scheme: str, tls: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    # The client reads and drops the rest of the frame, and closes TCP after the server (RFC 6455 §7.1.1).
    server_context, client_context = tls if scheme == "wss" else (None, None)
    done: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()

    async def serve_a_large_frame(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await RawPeer.accept(reader, writer)
        size = 8 << 20
        writer.write(struct.pack("!BBQ", 0x80 | BINARY, 127, size))
        sending = asyncio.create_task(_stream_payload(writer, size))
        await asyncio.sleep(0.3)  # the server reads only later
        try:
            code = await _close_code(reader)
            await sending  # no broken pipe, no reset
            writer.write(struct.pack("!BBH", 0x80 | CLOSE, 2, code))
            if writer.can_write_eof():
                writer.write_eof()
                done.set_result((code, await reader.read()))  # the client's FIN after this one
            else:  # TLS cannot half-close: close_notify, then TCP
                done.set_result((code, b""))
        except Exception as exc:  # handed to the test
            done.set_exception(exc)
        writer.close()

    tcp = await asyncio.start_server(serve_a_large_frame, "127.0.0.1", 0, ssl=server_context)
    port = tcp.sockets[0].getsockname()[1]
    async with tcp, asyncio.timeout(TEST_TIMEOUT_S):
        async with upwire.connect(
            f"{scheme}://127.0.0.1:{port}/", ssl=client_context, max_message_size=1 << 20
        ) as ws:
            with pytest.raises(upwire.ConnectionClosedError):
                await ws.recv()
            assert ws.close_code == 1009
        assert await done == (1009, b"")


async def test_an_async_hook_answering_a_client_that_left_logs_no_error(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    answered = asyncio.Event()

    async def slow_hook(
        connection: upwire.ServerConnection, request: upwire.Request
    ) -> upwire.Response:
        await asyncio.sleep(0.2)
        answered.set()
        return upwire.Response(403, body="no\n")

    server = await start_server(process_request=slow_hook)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        for leave in ("reset", "fin"):
            caplog.clear()
            answered.clear()
            peer = await RawPeer.connect(server.port)
            peer.write(
                b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            await asyncio.sleep(0.05)
            if leave == "reset":
                peer.writer.transport.abort()
            else:
                peer.close()
            await answered.wait()
            for _ in range(100):
                if not server.connections:
                    break
                await asyncio.sleep(0.01)
            assert not server.connections, leave
            errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
            assert errors == [], leave


@pytest.fixture(scope="module")
def tls() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) contexts with a certificate for 127.0.0.1 from a CA made now."""
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_over_tls_the_close_frame_and_a_clean_end_reach_a_peer_still_sending(
    tls: tuple[ssl.SSLContext, ssl.SSLContext], loop: str
) -> None:
    """TLS cannot half-close: the server reads and drops until the peer is quiet, then closes.

    Closing at once reset the connection while the peer still sent, and the peer never read the
    1009 (3 of 3 tries before the fix).
    """
    server_context, client_context = tls
    size = 16 << 20

    async def run() -> tuple[int, bytes]:
        async def handler(ws: upwire.ServerConnection) -> None:
            async for _ in ws:
                pass

        async with (
            asyncio.timeout(TEST_TIMEOUT_S),
            await upwire.serve(
                handler,
                "127.0.0.1",
                0,
                ssl=server_context,
                max_message_size=1 << 20,
                ping_interval=None,
            ) as server,
        ):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", server.port, ssl=client_context, server_hostname="127.0.0.1"
            )
            peer = RawPeer(reader, writer)
            assert (await peer.upgrade()).status == 101
            peer.write(struct.pack("!BBQ", 0x80 | BINARY, 0x80 | 127, size) + b"\0\0\0\0")
            sending = asyncio.create_task(_stream_payload(writer, size))
            await asyncio.sleep(0.3)  # the peer reads only later, as a busy browser would
            result = await _close_frame_then_eof(reader)
            await sending  # no broken pipe, no reset
            writer.close()
            return result

    runner = uvloop.run if loop == "uvloop" else asyncio.run
    assert runner(run()) == (1009, b"")


async def test_over_tls_a_refusal_reaches_a_client_still_sending_its_body(
    start_server: StartServer, tls: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    """A plain HTTP answer (here 400 for a request with a body) closes the same way.

    The client trickles its body for longer than the quiet time: the server waits for its end (it
    closed 0.25 s after the answer, resetting the client mid-upload, while it waited only after a 101).
    """
    server_context, client_context = tls
    server = await start_server(ssl=server_context)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.port, ssl=client_context, server_hostname="127.0.0.1"
        )
        chunk, count = b"\0" * 16384, 60
        writer.write(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            + f"Content-Length: {len(chunk) * count}\r\n\r\n".encode()
        )

        async def trickle() -> None:
            for _ in range(count):  # 0.6 s or more: past the 0.25 s of quiet the server waits for
                writer.write(chunk)
                await writer.drain()
                await asyncio.sleep(0.01)

        sending = asyncio.create_task(trickle())
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400 ")
        await reader.read()  # the body, then a clean end (a reset raises)
        await sending  # every byte went out: no reset mid-upload
        writer.close()
