"""Large messages over real sockets: the in-place read path and the uncopied write path, on asyncio and uvloop.

Frames of 256 KiB and more are read straight into the core's buffer (asyncio's BufferedProtocol), and large
payloads are written as views of themselves; sizes around those thresholds, pipelined both ways, must come
back byte for byte, with pings and the closing handshake still working after them, over TCP and TLS.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable

import pytest
import uvloop

import upwire
from upwire.protocol.frames import encode_frame

from .helpers import tls_contexts
from .wire import MASK_KEY, RawPeer

KiB = 1024
MiB = 1 << 20
SIZES = [
    64 * KiB - 1,
    64 * KiB + 14,
    256 * KiB - 15,
    256 * KiB - 14,
    256 * KiB + 1,
    MiB,
    3 * MiB + 7,
]
LIMIT = 4 * MiB

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def payload(size: int, seed: int) -> bytes:
    block = hashlib.sha256(seed.to_bytes(4, "big")).digest()
    return (block * (size // len(block) + 1))[:size]


def run(loop_name: str, main: Callable[[], Awaitable[None]]) -> None:
    with asyncio.Runner(loop_factory=LOOPS[loop_name]) as runner:
        runner.run(asyncio.wait_for(main(), 60))


async def echo(ws: upwire.ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


async def echo_pipelined(ws: upwire.ClientConnection, messages: list[str | bytes]) -> None:
    """Send `messages` from a task while receiving their echoes: each must come back equal, in order."""

    async def send_all() -> None:
        for message in messages:
            await ws.send(message)

    sender = asyncio.create_task(send_all())
    for index, message in enumerate(messages):
        answer = await ws.recv()
        assert type(answer) is type(message)
        assert answer == message, f"message {index} ({len(message)} bytes) came back different"
    await sender


async def exchange(port: int, scheme: str = "ws", client_ssl: ssl.SSLContext | None = None) -> None:
    messages: list[str | bytes] = [payload(size, i) for i, size in enumerate(SIZES)]
    messages.append("ü" * (MiB // 2 + 3))  # 1 MiB + 6 bytes of text: UTF-8 checked as it streams
    kwargs = {"ssl": client_ssl} if client_ssl is not None else {}
    async with upwire.connect(
        f"{scheme}://localhost:{port}/", max_message_size=LIMIT, compression=None, **kwargs
    ) as ws:
        await echo_pipelined(ws, messages)  # sending while the echoes come back
        rtt = await ws.ping(b"after")
        assert rtt >= 0
        await ws.close(4000, "done")
    assert ws.close_code == 4000


@pytest.mark.parametrize("loop_name", LOOPS)
def test_large_messages_echo_byte_for_byte(loop_name: str) -> None:
    async def main() -> None:
        server = await upwire.serve(echo, "127.0.0.1", 0, max_message_size=LIMIT, compression=None)
        async with server:
            await exchange(server.port)

    run(loop_name, main)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_large_messages_echo_over_tls(loop_name: str) -> None:
    server_context, client_context = tls_contexts()

    async def main() -> None:
        server = await upwire.serve(
            echo, "127.0.0.1", 0, max_message_size=LIMIT, compression=None, ssl=server_context
        )
        async with server:
            await exchange(server.port, "wss", client_context)

    run(loop_name, main)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_large_message_over_the_limit_closes_with_1009_before_it_is_buffered(
    loop_name: str,
) -> None:
    async def main() -> None:
        server = await upwire.serve(echo, "127.0.0.1", 0, max_message_size=MiB, compression=None)
        async with server:
            async with upwire.connect(
                f"ws://localhost:{server.port}/", max_message_size=LIMIT, compression=None
            ) as ws:
                await ws.send(bytes(MiB + 1))
                with pytest.raises(upwire.ConnectionClosedError):
                    await ws.recv()
            assert ws.close_code == 1009

    run(loop_name, main)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_a_peer_gone_in_the_middle_of_a_large_binary_message_is_closed_1006_and_no_harm_done(
    loop_name: str,
) -> None:
    # A 1 MiB binary message is received into the bytes it is delivered as; a peer that vanishes after
    # 300 KB of it must leave a 1006 for the handler, and the next large messages (on another connection,
    # possibly into memory kept from earlier ones) must still arrive byte for byte.
    async def main() -> None:
        outcome: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()

        async def handler(ws: upwire.ServerConnection) -> None:
            try:
                async for message in ws:
                    await ws.send(message)
            except upwire.ConnectionClosedError:
                pass
            if not outcome.done():
                outcome.set_result(ws.close_code)

        server = await upwire.serve(
            handler, "127.0.0.1", 0, max_message_size=LIMIT, compression=None
        )
        async with server:
            peer = await RawPeer.upgraded(server.port)
            header = bytes([0x82, 0x80 | 127]) + MiB.to_bytes(8, "big") + MASK_KEY
            peer.write(header + MASK_KEY * (300_000 // 4))  # a payload of zeros, masked
            await peer.writer.drain()
            await asyncio.sleep(0.1)
            peer.close()
            assert await asyncio.wait_for(outcome, 10) == 1006
            messages = [payload(MiB, 1), payload(MiB, 2), payload(MiB - 1, 3)]
            async with upwire.connect(
                f"ws://localhost:{server.port}/", max_message_size=LIMIT, compression=None
            ) as ws:
                for message in messages:
                    await ws.send(message)
                for message in messages:
                    assert await ws.recv() == message

    run(loop_name, main)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_large_messages_sent_in_one_loop_turn_arrive_whole_and_in_order(loop_name: str) -> None:
    # The first message goes out at once; the next ones are written together at the end of the turn,
    # more than the socket takes at once: what one vectored write leaves must follow in order, the rest
    # of a payload first, then every frame after it.
    burst: list[str | bytes] = ["start", payload(MiB, 1), payload(3 * MiB + 5, 2), "end"]

    async def sender(ws: upwire.ServerConnection) -> None:
        await ws.recv()
        for message in burst:
            await ws.send(message)
        await ws.wait_closed()

    async def main() -> None:
        server = await upwire.serve(
            sender, "127.0.0.1", 0, compression=None, write_limit=64 * MiB, max_message_size=LIMIT
        )
        async with (
            server,
            upwire.connect(
                f"ws://localhost:{server.port}/", max_message_size=LIMIT, compression=None
            ) as ws,
        ):
            await ws.send("go")
            await asyncio.sleep(0.2)  # the server's burst fills the socket buffers first
            for message in burst:
                assert await ws.recv() == message

    run(loop_name, main)


class ListenerEcho(upwire.Listener):
    def on_message(self, connection: upwire.Connection, message: str | bytes) -> None:
        connection.send_now(message)


def masked_binary_frame(data: bytes) -> bytes:
    return encode_frame(0x2, data, mask_key=MASK_KEY)


@pytest.mark.parametrize("api", ["handler", "listener"])
def test_on_asyncios_loop_the_rest_of_a_large_message_is_read_in_the_same_wake_up(
    api: str, direct_reads: list[int]
) -> None:
    # asyncio's socket transport reads 256 KiB per wake-up of the loop. When a 1 MiB binary message is
    # arriving into its bytes and the socket holds more of it, the connection reads that at once (libuv
    # does the same under uvloop): the message's pieces arrive together instead of a loop turn apart.
    direct = direct_reads
    messages = [payload(MiB, 40 + i) for i in range(3)]

    async def main() -> None:
        handler = ListenerEcho if api == "listener" else echo
        async with upwire.serve(
            handler, "127.0.0.1", 0, max_message_size=LIMIT, compression=None
        ) as server:
            peer = await RawPeer.upgraded(server.port)
            peer.write(b"".join(masked_binary_frame(m) for m in messages))
            for message in messages:
                frame = await peer.read_frame()
                assert (frame.fin, frame.opcode, frame.masked) == (True, 0x2, False)
                assert frame.payload == message
            peer.close()

    run("asyncio", main)
    assert direct and all(size > 0 for size in direct), direct


def test_reading_at_once_takes_at_most_1_mib_per_wake_up(monkeypatch: pytest.MonkeyPatch) -> None:
    # A 4 MiB message written at once: the reads made at once after one wake-up stop at 1 MiB in all,
    # so one connection's large message does not hold up the loop's other connections for its length.
    per_wake_up: list[int] = []
    readv = os.readv
    buffer_updated = upwire.ServerConnection.buffer_updated

    def spy_readv(fd: int, buffers: list[memoryview]) -> int:
        nbytes = readv(fd, buffers)
        per_wake_up[-1] += nbytes
        return nbytes

    def spy_updated(self: upwire.ServerConnection, nbytes: int) -> None:
        per_wake_up.append(0)
        buffer_updated(self, nbytes)

    monkeypatch.setattr(os, "readv", spy_readv)
    monkeypatch.setattr(upwire.ServerConnection, "buffer_updated", spy_updated)
    message = payload(4 * MiB, 9)

    async def main() -> None:
        async with upwire.serve(
            ListenerEcho, "127.0.0.1", 0, max_message_size=8 * MiB, compression=None
        ) as server:
            peer = await RawPeer.upgraded(server.port)
            peer.write(masked_binary_frame(message))
            assert (await peer.read_frame()).payload == message
            peer.close()

    run("asyncio", main)
    assert max(per_wake_up) > 0
    assert max(per_wake_up) <= MiB, per_wake_up


def test_a_reset_in_the_middle_of_a_large_message_read_at_once_is_a_1006(
    direct_reads: list[int],
) -> None:
    # The reads made at once take only what the socket holds (FIONREAD), so a reset behind the data is
    # met by the transport's next read: the handler sees the connection end with 1006, and the server
    # goes on.
    direct = direct_reads

    async def main() -> None:
        outcome: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()

        async def handler(ws: upwire.ServerConnection) -> None:
            try:
                await ws.recv()
            except upwire.ConnectionClosedError:
                outcome.set_result(ws.close_code)

        async with upwire.serve(
            handler, "127.0.0.1", 0, max_message_size=LIMIT, compression=None
        ) as server:
            peer = await RawPeer.upgraded(server.port)
            peer.write(masked_binary_frame(payload(MiB, 7))[:700_000])
            await peer.writer.drain()
            await asyncio.sleep(0.2)
            sock = peer.writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            peer.writer.transport.abort()  # a reset, not a FIN
            assert await asyncio.wait_for(outcome, 10) == 1006
            async with upwire.connect(
                f"ws://127.0.0.1:{server.port}/", max_message_size=LIMIT, compression=None
            ) as ws:
                await ws.send(payload(MiB, 8))

    run("asyncio", main)
    assert direct, "the message's rest was not read at once"


def test_reading_at_once_stops_while_the_recv_queue_is_full(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # With max_queue=1 and a handler that does not read yet, the server stops reading once a message
    # is queued (TCP pushes back on the peer). A read that queued a short message and began a 1 MiB one
    # must not go on reading that one's rest at once while reading is paused.
    reads_while: list[bool] = []  # for each read made at once: was the transport reading?
    readv = os.readv
    connections: list[upwire.ServerConnection] = []

    def spy(fd: int, buffers: list[memoryview]) -> int:
        transport = connections[0].transport
        reads_while.append(transport is not None and transport.is_reading())
        return readv(fd, buffers)

    monkeypatch.setattr(os, "readv", spy)
    messages = [m for i in range(8) for m in (payload(100, i), payload(MiB, 70 + i))]

    async def main() -> None:
        go = asyncio.Event()

        async def handler(ws: upwire.ServerConnection) -> None:
            connections.append(ws)
            await go.wait()
            async for message in ws:
                await ws.send(message)

        async with upwire.serve(
            handler, "127.0.0.1", 0, max_message_size=LIMIT, compression=None, max_queue=1
        ) as server:
            peer = await RawPeer.upgraded(server.port)
            peer.write(b"".join(masked_binary_frame(m) for m in messages))
            await asyncio.sleep(0.3)
            # 8 MiB and more do not fit in the two sockets' buffers: the rest waits in the peer.
            assert peer.writer.transport.get_write_buffer_size() > 0
            go.set()
            for message in messages:
                assert (await peer.read_frame()).payload == message
            peer.close()

    run("asyncio", main)
    assert reads_while and all(reads_while), reads_while


@pytest.mark.parametrize("loop_name", LOOPS)
@pytest.mark.parametrize(
    ("api", "max_queue", "tls"),
    [
        ("handler", 4, False),
        ("handler", None, False),
        ("listener", 16, False),
        ("handler", 16, True),
    ],
)
def test_a_pipelined_stream_of_large_frames_is_read_ahead_and_echoed_byte_for_byte(
    loop_name: str, api: str, max_queue: int | None, tls: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Frames of 16 KiB to 300 KiB sent back to back fill whole reads: the server then reads past the
    # frame in progress into its buffer (see the core's `receive_buffer`), with the recv queue's room
    # (max_queue) limiting how far, or reads a 300 KiB binary message into its own bytes. Every echo
    # must come back whole and in order.
    sizes = [16 * KiB, 20 * KiB + 3, 64 * KiB + 14, 100 * KiB, 300 * KiB, 17 * KiB] * 12
    messages: list[str | bytes] = [
        payload(size, i) if i % 5 else "é" * (size // 2) for i, size in enumerate(sizes)
    ]
    per_read: list[int] = []  # the messages each read completed on the server, in place or not
    receive_written = upwire.protocol.Connection.receive_written
    receive_data = upwire.protocol.Connection.receive_data

    def count(self: upwire.protocol.Connection, events: list[object]) -> list[object]:
        if self.role is upwire.protocol.Role.SERVER:
            per_read.append(sum(isinstance(event, str | bytes) for event in events))
        return events

    def spy_written(self: upwire.protocol.Connection, nbytes: int) -> list[object]:
        return count(self, receive_written(self, nbytes))

    def spy_data(
        self: upwire.protocol.Connection, data: bytes | memoryview, waiting: int | None = None
    ) -> list[object]:
        return count(self, receive_data(self, data, waiting))

    monkeypatch.setattr(upwire.protocol.Connection, "receive_written", spy_written)
    monkeypatch.setattr(upwire.protocol.Connection, "receive_data", spy_data)

    server_context, client_context = tls_contexts() if tls else (None, None)
    client_kwargs = {"ssl": client_context} if tls else {}

    async def main() -> None:
        handler = ListenerEcho if api == "listener" else echo
        server = await upwire.serve(
            handler,
            "127.0.0.1",
            0,
            max_message_size=LIMIT,
            compression=None,
            max_queue=max_queue,
            ssl=server_context,
        )
        async with (
            server,
            upwire.connect(
                f"{'wss' if tls else 'ws'}://localhost:{server.port}/",
                max_message_size=LIMIT,
                compression=None,
                **client_kwargs,
            ) as ws,
        ):
            await echo_pipelined(ws, messages)

    run(loop_name, main)
    assert max(per_read) > 1, "no read took more than one frame"
    # One read per frame would be 72 reads; reading ahead (and whole reads) takes about 20 to 40.
    assert len(per_read) < len(messages) * 2 // 3, f"{len(per_read)} reads"


@pytest.mark.parametrize("loop_name", LOOPS)
@pytest.mark.parametrize("api", ["handler", "listener"])
@pytest.mark.parametrize("size", [320 * KiB, MiB])
def test_a_stream_of_large_binary_messages_is_read_ahead_on_the_sockets_word_under_512_kib(
    loop_name: str, api: str, size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A client streams large binary messages. After a full read the server asks the socket how much it
    # still holds (FIONREAD) and tells the core; with the next frames already there, the core reads past
    # the end of a 320 KiB frame instead of into the message's own bytes, so some read completes a message
    # and keeps the next one's start. A 1 MiB message goes into its own bytes all the same (reading ahead
    # would cost it a second pass). Every echo must come back byte for byte.
    messages = [payload(size, 100 + i) for i in range(16)]
    hints: list[int | None] = []
    read_ahead: list[bool] = []
    receive_data = upwire.protocol.Connection.receive_data
    receive_written = upwire.protocol.Connection.receive_written

    def spy_data(
        self: upwire.protocol.Connection, data: bytes | memoryview, waiting: int | None = None
    ) -> list[object]:
        if self.role is upwire.protocol.Role.SERVER:
            hints.append(waiting)
        return receive_data(self, data, waiting)

    def spy_written(self: upwire.protocol.Connection, nbytes: int) -> list[object]:
        events: list[object] = receive_written(self, nbytes)
        if self.role is upwire.protocol.Role.SERVER and events:
            read_ahead.append(self._sink is not None)  # the next frame waits in the read-ahead
        return events

    monkeypatch.setattr(upwire.protocol.Connection, "receive_data", spy_data)
    monkeypatch.setattr(upwire.protocol.Connection, "receive_written", spy_written)

    async def main() -> None:
        handler = ListenerEcho if api == "listener" else echo
        async with (
            upwire.serve(
                handler, "127.0.0.1", 0, max_message_size=LIMIT, compression=None
            ) as server,
            upwire.connect(
                f"ws://127.0.0.1:{server.port}/", max_message_size=LIMIT, compression=None
            ) as ws,
        ):
            await echo_pipelined(ws, messages)

    run(loop_name, main)
    assert any(hint is not None for hint in hints), "no full read asked the socket"
    if size < 512 * KiB:
        assert any(read_ahead), "no read went past a message's end"
    else:
        assert read_ahead and not any(read_ahead), "a read went past a 1 MiB message's end"
