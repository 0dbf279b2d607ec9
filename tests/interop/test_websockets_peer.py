"""Interop with Python's ``websockets`` (17.4), an implementation nobody here wrote, both ways.

upwire server ↔ ``websockets`` client, and ``websockets`` server ↔ upwire client, over real sockets
on 127.0.0.1. ``websockets`` runs in the test's event loop. Every test checks what *both* ends
observed: the exact messages, the pong, the close code and reason.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import websockets
from views import odd_views
from websockets.asyncio.client import connect as websockets_connect
from websockets.frames import Opcode

import upwire

from .peers import (
    STEP_TIMEOUT_S,
    Message,
    StartServer,
    UpwireEchoHandler,
    WebsocketsEchoHandler,
    describe,
    enable_websockets_frame_log,
    frames_received_by_websockets,
)

pytestmark = pytest.mark.timeout(60)

# The websockets peer negotiates permessage-deflate and checks its max_size against the size of
# each compressed frame, which for 1 MiB of random bytes is a little over 1 MiB: its limit is
# lifted (max_size=None) so that these tests are about upwire, not about that peer's limit.
CLOSE_CODE = 4000
UPWIRE_REASON = "upwire says goodbye ✓"
PEER_REASON = "websockets says goodbye ✓"
TEXT_FRAGMENTS = ["frag", "mented ", "wörld ✓"]
BINARY_FRAGMENTS = [b"\x00\x01\x02", b"\xff" * 200, b"\x80\x81"]


def assert_same_message(received: Any, expected: Message) -> None:
    assert type(received) is type(expected), f"got {type(received)}, expected {describe(expected)}"
    assert received == expected, f"got {describe(received)}, expected {describe(expected)}"


# --- upwire server, websockets client ---------------------------------------------------------


async def test_upwire_broadcast_reaches_websockets_clients_whole_and_in_order(
    upwire_server: StartServer,
) -> None:
    # Plain clients get the shared frame from broadcast's send loop (12 MiB does not fit in a socket
    # buffer: the transports write the rest); a compressing client gets its own compressed copy.
    connections: list[upwire.ServerConnection] = []

    async def keep(ws: upwire.ServerConnection) -> None:
        connections.append(ws)
        await ws.wait_closed()

    url = await upwire_server(keep, ping_interval=None, max_message_size=None)
    big = bytes(range(256)) * (12 * 4096 + 1)
    burst: list[Message] = ["news ✓", big, "more news"]
    async with asyncio.timeout(STEP_TIMEOUT_S):
        plain = [await websockets_connect(url, compression=None, max_size=None) for _ in range(3)]
        compressed = await websockets_connect(url, max_size=None)
        while len(connections) < 4:
            await asyncio.sleep(0.01)
        for message in burst:
            assert upwire.broadcast(connections, message) == 4
        for client in (*plain, compressed):
            for message in burst:
                assert_same_message(await client.recv(), message)
            await client.close()


async def test_upwire_server_echoes_each_payload_to_a_websockets_client(
    upwire_server: StartServer, payload: Message
) -> None:
    handler = UpwireEchoHandler()
    url = await upwire_server(handler)
    async with asyncio.timeout(STEP_TIMEOUT_S):
        async with websockets_connect(url, max_size=None) as ws:
            await ws.send(payload)
            reply = await ws.recv()
        await handler.record.wait_finished()
    assert_same_message(reply, payload)
    assert len(handler.record.messages) == 1
    assert_same_message(handler.record.messages[0], payload)
    assert handler.record.close_code == 1000


async def echo_pipelined(url: str, handler: UpwireEchoHandler, messages: list[Message]) -> None:
    """A websockets client sends `messages` to the upwire echo server at `url` from a task while
    receiving their echoes: each must come back equal and in order, and the server must have had them
    all when the connection closed."""
    async with asyncio.timeout(STEP_TIMEOUT_S):
        async with websockets_connect(url, compression=None, max_size=None) as ws:

            async def send_all() -> None:
                for message in messages:
                    await ws.send(message)

            sender = asyncio.create_task(send_all())
            for message in messages:
                assert_same_message(await ws.recv(), message)
            await sender
        await handler.record.wait_finished()
    assert len(handler.record.messages) == len(messages)


async def test_upwire_server_reads_ahead_a_websockets_clients_pipelined_large_messages(
    upwire_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Back-to-back frames of 16-300 KiB fill whole reads, so the server reads past the frame in progress
    # into that frame's buffer (or a 300 KiB binary message into its own bytes); every echo must still
    # come back whole and in order.
    sizes = [16 * 1024, 20 * 1024 + 3, 64 * 1024 + 14, 100 * 1024, 300 * 1024, 17 * 1024] * 10
    messages: list[Message] = [
        bytes([i % 251]) * size if i % 4 else "ü" * (size // 2) for i, size in enumerate(sizes)
    ]
    per_read: list[int] = []  # the messages each read completed, in place or not
    receive_written = upwire.protocol.Connection.receive_written
    receive_data = upwire.protocol.Connection.receive_data

    def spy_written(self: upwire.protocol.Connection, nbytes: int) -> list[object]:
        events: list[object] = receive_written(self, nbytes)
        per_read.append(sum(isinstance(event, str | bytes) for event in events))
        return events

    def spy_data(
        self: upwire.protocol.Connection, data: bytes | memoryview, waiting: int | None = None
    ) -> list[object]:
        events: list[object] = receive_data(self, data, waiting)
        per_read.append(sum(isinstance(event, str | bytes) for event in events))
        return events

    monkeypatch.setattr(upwire.protocol.Connection, "receive_written", spy_written)
    monkeypatch.setattr(upwire.protocol.Connection, "receive_data", spy_data)
    handler = UpwireEchoHandler()
    url = await upwire_server(handler, max_message_size=None)
    await echo_pipelined(url, handler, messages)
    assert max(per_read) > 1, "no read took more than one frame"
    # One read per frame would be 60 reads (and the handshake's); whole reads take far fewer.
    assert len(per_read) < len(messages) * 2 // 3, f"{len(per_read)} reads"


async def test_upwire_server_reads_a_websockets_clients_streamed_1_mib_messages_at_once(
    upwire_server: StartServer, direct_reads: list[int]
) -> None:
    # Streamed 1 MiB binary messages go into their own bytes (no read-ahead past them), and on asyncio's
    # loop the rest of each is read at once from the socket (os.readv); every echo must come back whole
    # and in order.
    messages = [bytes([i]) * (1 << 20) + bytes([255 - i]) * i for i in range(12)]
    handler = UpwireEchoHandler()
    url = await upwire_server(handler, max_message_size=None)
    await echo_pipelined(url, handler, messages)
    assert handler.record.close_code == 1000
    assert direct_reads and all(nbytes > 0 for nbytes in direct_reads), direct_reads


async def test_upwire_server_assembles_fragmented_messages_from_a_websockets_client(
    upwire_server: StartServer,
) -> None:
    handler = UpwireEchoHandler()
    url = await upwire_server(handler)
    async with asyncio.timeout(STEP_TIMEOUT_S):
        async with websockets_connect(url, max_size=None) as ws:
            # websockets sends each item as a frame, then an empty final continuation frame.
            await ws.send(TEXT_FRAGMENTS)
            text_reply = await ws.recv()
            await ws.send(BINARY_FRAGMENTS)
            binary_reply = await ws.recv()
        await handler.record.wait_finished()
    assert handler.record.messages == ["".join(TEXT_FRAGMENTS), b"".join(BINARY_FRAGMENTS)]
    assert_same_message(text_reply, "".join(TEXT_FRAGMENTS))
    assert_same_message(binary_reply, b"".join(BINARY_FRAGMENTS))


async def test_upwire_server_sends_fragmented_messages_that_a_websockets_client_reassembles(
    upwire_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    async def async_fragments() -> Any:
        for piece in BINARY_FRAGMENTS:
            yield piece

    async def send_fragments_first(ws: upwire.ServerConnection) -> None:
        await ws.send(iter(TEXT_FRAGMENTS))
        await ws.send(async_fragments())

    enable_websockets_frame_log(caplog)
    url = await upwire_server(UpwireEchoHandler(send_fragments_first))
    async with asyncio.timeout(STEP_TIMEOUT_S):
        async with websockets_connect(url, max_size=None) as ws:
            text_pieces = [piece async for piece in ws.recv_streaming()]
            binary_pieces = [piece async for piece in ws.recv_streaming()]
    assert "".join(text_pieces) == "".join(TEXT_FRAGMENTS)
    assert [piece for piece in text_pieces if piece] == TEXT_FRAGMENTS
    assert b"".join(binary_pieces) == b"".join(BINARY_FRAGMENTS)
    assert [piece for piece in binary_pieces if piece] == BINARY_FRAGMENTS
    data_frames = [
        frame
        for frame in frames_received_by_websockets(caplog, "client")
        if frame.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT)
    ]
    opcodes = [frame.opcode for frame in data_frames]
    assert opcodes[0] == Opcode.TEXT and opcodes[len(text_pieces)] == Opcode.BINARY, opcodes
    assert [frame.fin for frame in data_frames] == (
        [False] * (len(text_pieces) - 1) + [True] + [False] * (len(binary_pieces) - 1) + [True]
    )


async def test_upwire_server_answers_a_ping_from_a_websockets_client_with_the_same_payload(
    upwire_server: StartServer,
) -> None:
    url = await upwire_server(UpwireEchoHandler())
    async with asyncio.timeout(STEP_TIMEOUT_S):
        async with websockets_connect(url, max_size=None) as ws:
            # websockets completes this waiter only for a pong carrying the ping's payload.
            pong_received = await ws.ping(b"websockets ping \x00\xff")
            latency = await pong_received
    assert 0 <= latency < STEP_TIMEOUT_S


async def test_upwire_server_ping_is_answered_by_a_websockets_client_and_returns_a_round_trip_time(
    upwire_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    round_trip_times: list[float] = []

    async def ping_first(ws: upwire.ServerConnection) -> None:
        round_trip_times.append(await ws.ping(b"upwire server ping"))
        await ws.send("pinged")

    enable_websockets_frame_log(caplog)
    handler = UpwireEchoHandler(ping_first)
    url = await upwire_server(handler)
    async with asyncio.timeout(STEP_TIMEOUT_S):
        async with websockets_connect(url, max_size=None) as ws:
            assert await ws.recv() == "pinged"
        await handler.record.wait_finished()
    assert len(round_trip_times) == 1
    assert isinstance(round_trip_times[0], float)
    assert 0 <= round_trip_times[0] < STEP_TIMEOUT_S
    pings = [f for f in frames_received_by_websockets(caplog, "client") if f.opcode == Opcode.PING]
    assert [ping.data for ping in pings] == [b"upwire server ping"]


async def test_upwire_server_closing_with_4000_and_a_reason_is_seen_by_a_websockets_client(
    upwire_server: StartServer,
) -> None:
    async def close_first(ws: upwire.ServerConnection) -> None:
        await ws.close(CLOSE_CODE, UPWIRE_REASON)

    handler = UpwireEchoHandler(close_first)
    url = await upwire_server(handler)
    async with asyncio.timeout(STEP_TIMEOUT_S):
        async with websockets_connect(url, max_size=None) as ws:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
        await handler.record.wait_finished()
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (CLOSE_CODE, UPWIRE_REASON)
    assert (ws.close_code, ws.close_reason) == (CLOSE_CODE, UPWIRE_REASON)
    # websockets echoes the close frame it received, so upwire hears 4000 and its reason back.
    assert (handler.record.close_code, handler.record.close_reason) == (CLOSE_CODE, UPWIRE_REASON)


async def test_websockets_client_closing_with_4000_and_a_reason_is_seen_by_the_upwire_server(
    upwire_server: StartServer,
) -> None:
    handler = UpwireEchoHandler()
    url = await upwire_server(handler)
    async with asyncio.timeout(STEP_TIMEOUT_S):
        ws = await websockets_connect(url, max_size=None)
        await ws.send("before closing")
        assert await ws.recv() == "before closing"
        await ws.close(CLOSE_CODE, PEER_REASON)
        await handler.record.wait_finished()
    assert handler.record.messages == ["before closing"]
    assert (handler.record.close_code, handler.record.close_reason) == (CLOSE_CODE, PEER_REASON)
    # RFC 6455 §5.5.1: the answering close frame typically echoes the status code received.
    assert ws.close_code == CLOSE_CODE


# --- websockets server, upwire client ---------------------------------------------------------


async def test_upwire_client_exchanges_each_payload_with_a_websockets_server(
    websockets_server: StartServer, payload: Message
) -> None:
    handler = WebsocketsEchoHandler()
    url = await websockets_server(handler)
    async with asyncio.timeout(STEP_TIMEOUT_S):
        async with upwire.connect(url) as ws:
            await ws.send(payload)
            reply = await ws.recv()
        await handler.record.wait_finished()
    assert_same_message(reply, payload)
    assert len(handler.record.messages) == 1
    assert_same_message(handler.record.messages[0], payload)
    assert handler.record.close_code == 1000


async def test_upwire_client_sends_fragmented_messages_that_a_websockets_server_reassembles(
    websockets_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    async def async_fragments() -> Any:
        for piece in BINARY_FRAGMENTS:
            yield piece

    enable_websockets_frame_log(caplog)
    handler = WebsocketsEchoHandler()
    url = await websockets_server(handler)
    async with asyncio.timeout(STEP_TIMEOUT_S):
        async with upwire.connect(url) as ws:
            await ws.send(TEXT_FRAGMENTS)
            text_reply = await ws.recv()
            await ws.send(async_fragments())
            binary_reply = await ws.recv()
        await handler.record.wait_finished()
    assert handler.record.messages == ["".join(TEXT_FRAGMENTS), b"".join(BINARY_FRAGMENTS)]
    assert_same_message(text_reply, "".join(TEXT_FRAGMENTS))
    assert_same_message(binary_reply, b"".join(BINARY_FRAGMENTS))
    data_frames = [
        frame
        for frame in frames_received_by_websockets(caplog, "server")
        if frame.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT)
    ]
    non_empty = [frame.data for frame in data_frames if frame.data]
    assert non_empty == [piece.encode() for piece in TEXT_FRAGMENTS] + BINARY_FRAGMENTS
    assert data_frames[0].opcode == Opcode.TEXT and not data_frames[0].fin


async def test_upwire_client_receives_fragmented_messages_from_a_websockets_server(
    websockets_server: StartServer,
) -> None:
    async def send_fragments_first(ws: Any) -> None:
        await ws.send(TEXT_FRAGMENTS)
        await ws.send(BINARY_FRAGMENTS)

    url = await websockets_server(WebsocketsEchoHandler(send_fragments_first))
    async with asyncio.timeout(STEP_TIMEOUT_S):
        async with upwire.connect(url) as ws:
            text = await ws.recv()
            binary = await ws.recv()
    assert_same_message(text, "".join(TEXT_FRAGMENTS))
    assert_same_message(binary, b"".join(BINARY_FRAGMENTS))


async def test_upwire_client_ping_is_answered_by_a_websockets_server_and_returns_a_round_trip_time(
    websockets_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    enable_websockets_frame_log(caplog)
    url = await websockets_server(WebsocketsEchoHandler())
    async with asyncio.timeout(STEP_TIMEOUT_S):
        async with upwire.connect(url) as ws:
            round_trip_time = await ws.ping(b"upwire client ping")
    assert isinstance(round_trip_time, float)
    assert 0 <= round_trip_time < STEP_TIMEOUT_S
    pings = [f for f in frames_received_by_websockets(caplog, "server") if f.opcode == Opcode.PING]
    assert [ping.data for ping in pings] == [b"upwire client ping"]


async def test_upwire_client_answers_a_ping_from_a_websockets_server_with_the_same_payload(
    websockets_server: StartServer,
) -> None:
    latencies: list[float] = []

    async def ping_first(ws: Any) -> None:
        pong_received = await ws.ping(b"websockets server ping \x00\xff")
        latencies.append(await asyncio.wait_for(pong_received, STEP_TIMEOUT_S))
        await ws.send("pinged")

    handler = WebsocketsEchoHandler(ping_first)
    url = await websockets_server(handler)
    async with asyncio.timeout(STEP_TIMEOUT_S):
        async with upwire.connect(url) as ws:
            assert await ws.recv() == "pinged"
        await handler.record.wait_finished()
    assert len(latencies) == 1 and 0 <= latencies[0] < STEP_TIMEOUT_S


async def test_upwire_client_closing_with_4000_and_a_reason_is_seen_by_a_websockets_server(
    websockets_server: StartServer,
) -> None:
    handler = WebsocketsEchoHandler()
    url = await websockets_server(handler)
    async with asyncio.timeout(STEP_TIMEOUT_S):
        ws = await upwire.connect(url)
        await ws.send("before closing")
        assert await ws.recv() == "before closing"
        await ws.close(CLOSE_CODE, UPWIRE_REASON)
        await handler.record.wait_finished()
    assert handler.record.messages == ["before closing"]
    assert (handler.record.close_code, handler.record.close_reason) == (CLOSE_CODE, UPWIRE_REASON)
    # websockets echoes the close frame it received.
    assert (ws.close_code, ws.close_reason) == (CLOSE_CODE, UPWIRE_REASON)


async def test_websockets_server_closing_with_4000_and_a_reason_is_seen_by_the_upwire_client(
    websockets_server: StartServer,
) -> None:
    async def close_first(ws: Any) -> None:
        await ws.close(CLOSE_CODE, PEER_REASON)

    handler = WebsocketsEchoHandler(close_first)
    url = await websockets_server(handler)
    async with asyncio.timeout(STEP_TIMEOUT_S):
        async with upwire.connect(url) as ws:
            with pytest.raises(upwire.ConnectionClosed) as closed:
                await ws.recv()
        await handler.record.wait_finished()
    assert (closed.value.code, closed.value.reason) == (CLOSE_CODE, PEER_REASON)
    assert (ws.close_code, ws.close_reason) == (CLOSE_CODE, PEER_REASON)
    # RFC 6455 §5.5.1: the answering close frame typically echoes the status code received.
    assert handler.record.close_code == CLOSE_CODE


async def test_upwire_client_closes_with_1009_when_a_websockets_server_sends_too_big_a_message(
    websockets_server: StartServer,
) -> None:
    async def send_too_much(ws: Any) -> None:
        await ws.send(b"\x00" * 65537)

    handler = WebsocketsEchoHandler(send_too_much)
    url = await websockets_server(handler)
    async with asyncio.timeout(STEP_TIMEOUT_S):
        async with upwire.connect(url, max_message_size=65536, close_timeout=30) as ws:
            with pytest.raises(upwire.ConnectionClosed) as closed:
                await ws.recv()
            # The client waits for the server to close TCP (RFC 6455 §7.1.1), which websockets does as
            # soon as it reads the close frame: not close_timeout.
            started = asyncio.get_running_loop().time()
            await ws.wait_closed()
            assert asyncio.get_running_loop().time() - started < 2.0
        await handler.record.wait_finished()
    assert (closed.value.code, ws.close_code) == (1009, 1009)  # RFC 6455 §7.4.1: message too big
    # websockets reports the close frame it received from upwire: 1009, message too big.
    assert handler.record.close_code == 1009


# --- a memoryview of wider items or with strides, both ways ----------------------------------


VIEW_DATA = bytes(range(256)) * 312 + bytes(128)  # 80000 bytes: 20000 ints, past the 16 KiB split


async def test_upwire_server_sends_memoryviews_that_a_websockets_client_reads_as_their_bytes(
    upwire_server: StartServer,
) -> None:
    async def send_views(ws: upwire.ServerConnection) -> None:
        for view in odd_views(VIEW_DATA):
            await ws.send(view)

    url = await upwire_server(UpwireEchoHandler(send_views), compression=None)
    async with asyncio.timeout(STEP_TIMEOUT_S):
        async with websockets_connect(url, max_size=None, compression=None) as ws:
            for _ in odd_views(VIEW_DATA):
                assert_same_message(await ws.recv(), VIEW_DATA)


async def test_upwire_client_sends_memoryviews_that_a_websockets_server_reads_as_their_bytes(
    websockets_server: StartServer,
) -> None:
    handler = WebsocketsEchoHandler()
    url = await websockets_server(handler, compression=None)
    async with asyncio.timeout(STEP_TIMEOUT_S):
        async with upwire.connect(url, compression=None) as ws:
            for view in odd_views(VIEW_DATA):
                await ws.send(view)
                assert_same_message(await ws.recv(), VIEW_DATA)
        await handler.record.wait_finished()
    assert [bytes(message) for message in handler.record.messages] == [VIEW_DATA] * 3
    assert handler.record.close_code == 1000
