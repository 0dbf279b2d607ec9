"""Failing a connection while the peer still sends: the close frame must reach it, not a reset.

RFC 6455 §7.1.7 asks for a close frame with the right code before TCP closes. Closing a socket with unread
data makes the kernel send a reset, and a reset makes the peer's kernel drop what it had not read yet —
the close frame among it. So this side half-closes, reads and drops until the peer's FIN, then closes.
"""

from __future__ import annotations

import asyncio
import logging
import struct

import pytest

import upwire

from .helpers import TEST_TIMEOUT_S, StartServer
from .wire import BINARY, CLOSE, RawPeer, accept_key, apply_mask, request_headers

CHUNK = b"\0" * 65536


async def _stream_payload(writer: asyncio.StreamWriter, size: int) -> None:
    """Write `size` bytes of payload (zeros: unmasked by a zero key) in chunks, as a browser would."""
    for _ in range(size // len(CHUNK)):
        writer.write(CHUNK)
        await writer.drain()


async def _close_frame_then_eof(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Read the close frame's code, then everything up to EOF (a reset raises)."""
    first, second = await reader.readexactly(2)
    assert first & 0x0F == CLOSE
    key = await reader.readexactly(4) if second & 0x80 else b"\0\0\0\0"
    payload = apply_mask(await reader.readexactly(second & 0x7F), key)
    rest = await reader.read()  # raises ConnectionResetError on a reset
    return struct.unpack("!H", payload[:2])[0], rest


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


async def test_a_client_failing_a_frame_over_its_limit_closes_cleanly_with_1009() -> None:
    done: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()

    async def serve_a_large_frame(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        key = request_headers(await reader.readuntil(b"\r\n\r\n"))["sec-websocket-key"]
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n".encode()
        )
        size = 8 << 20
        writer.write(struct.pack("!BBQ", 0x80 | BINARY, 127, size))
        sending = asyncio.create_task(_stream_payload(writer, size))
        try:
            done.set_result(await _close_frame_then_eof(reader))
        except Exception as exc:  # handed to the test
            done.set_exception(exc)
        await sending
        writer.close()

    tcp = await asyncio.start_server(serve_a_large_frame, "127.0.0.1", 0)
    port = tcp.sockets[0].getsockname()[1]
    async with tcp, asyncio.timeout(TEST_TIMEOUT_S):
        async with upwire.connect(f"ws://127.0.0.1:{port}/", max_message_size=1 << 20) as ws:
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
