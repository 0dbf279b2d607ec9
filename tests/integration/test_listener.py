"""The low-level API: `serve(ListenerSubclass, ...)` calls back per message; `send_now` answers."""

from __future__ import annotations

import asyncio
from typing import ClassVar

import pytest

import upwire

from .helpers import TEST_TIMEOUT_S, StartServer, uri
from .wire import TEXT, RawPeer


class Echo(upwire.Listener):
    events: ClassVar[list[str]] = []

    def on_open(self, connection: upwire.Connection) -> None:
        Echo.events.append("open")
        connection.send_now("welcome")

    def on_message(self, connection: upwire.Connection, message: str | bytes) -> None:
        connection.send_now(message)

    def on_ping(self, connection: upwire.Connection, data: bytes) -> None:
        Echo.events.append(f"ping {data!r}")

    def on_close(self, connection: upwire.Connection) -> None:
        Echo.events.append(f"close {connection.close_code}")


async def test_a_listener_echoes_messages_and_sees_open_ping_and_close(
    start_server: StartServer,
) -> None:
    Echo.events = []
    server = await start_server(Echo, ping_interval=None)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with upwire.connect(uri(server)) as ws:
            assert await ws.recv() == "welcome"
            for message in ["text", b"\x00binary", "é" * 1000, b"x" * 70000]:
                await ws.send(message)
                assert await ws.recv() == message
            await ws.send(["frag", "mented"])
            assert await ws.recv() == "fragmented"
            await ws.ping(b"hi")
            await ws.close(4000, "bye")
        while len(Echo.events) < 3:
            await asyncio.sleep(0.01)
    assert Echo.events == ["open", "ping b'hi'", "close 4000"]


async def test_a_listener_gets_pipelined_messages_in_order(start_server: StartServer) -> None:
    server = await start_server(Echo, ping_interval=None)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        peer = await RawPeer.upgraded(server.port)
        assert (await peer.read_frame()).payload == b"welcome"
        for i in range(500):
            peer.send_frame(TEXT, f"m{i}")
        for i in range(500):
            assert (await peer.read_frame()).payload == f"m{i}".encode()


class Broken(upwire.Listener):
    def on_message(self, connection: upwire.Connection, message: str | bytes) -> None:
        raise RuntimeError("listener bug")


async def test_a_failing_listener_closes_the_connection_with_1011(
    start_server: StartServer,
) -> None:
    server = await start_server(Broken, ping_interval=None)
    async with asyncio.timeout(TEST_TIMEOUT_S), upwire.connect(uri(server)) as ws:
        await ws.send("boom")
        await ws.wait_closed()
        assert ws.close_code == 1011


class Closer(upwire.Listener):
    def on_message(self, connection: upwire.Connection, message: str | bytes) -> None:
        connection.send_now(f"bye {message}")
        connection.close_now(4001, "done")
        connection.close_now(4002, "ignored")  # idempotent: the first close stands


async def test_a_listener_closes_from_a_callback_with_close_now(start_server: StartServer) -> None:
    server = await start_server(Closer, ping_interval=None)
    async with asyncio.timeout(TEST_TIMEOUT_S), upwire.connect(uri(server)) as ws:
        await ws.send("alice")
        assert await ws.recv() == "bye alice"
        with pytest.raises(upwire.ConnectionClosedError):
            await ws.recv()
        assert (ws.close_code, ws.close_reason) == (4001, "done")


async def test_listeners_and_handlers_can_share_a_server_by_path(start_server: StartServer) -> None:
    async def hello(ws: upwire.ServerConnection) -> None:
        await ws.send("hello from a handler")

    server = await start_server({"/low": Echo, "/high": hello}, ping_interval=None)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with upwire.connect(uri(server, "/low")) as ws:
            assert await ws.recv() == "welcome"
        async with upwire.connect(uri(server, "/high")) as ws:
            assert await ws.recv() == "hello from a handler"


@pytest.mark.parametrize(
    ("max_message_size", "backlog_kib"),
    [
        (256 * 1024, 64 + 256),
        (None, 16 * 64),
    ],  # write_limit + max_message_size, or 16 x write_limit
)
async def test_a_listener_stops_reading_while_its_peer_does_not_read_its_answers(
    start_server: StartServer, max_message_size: int | None, backlog_kib: int
) -> None:
    connections: list[upwire.Connection] = []

    class Collect(Echo):
        def on_open(self, connection: upwire.Connection) -> None:
            connections.append(connection)

    server = await start_server(
        Collect, ping_interval=None, write_limit=64 * 1024, max_message_size=max_message_size
    )
    message = bytes(range(256)) * 256  # 64 KiB
    peak = 0
    async with asyncio.timeout(TEST_TIMEOUT_S):
        peer = await RawPeer.upgraded(server.port)
        while not connections:
            await asyncio.sleep(0.01)
        transport = connections[0].transport
        assert transport is not None
        # 20 MiB of messages whose echoes the peer does not read: without backpressure the server's
        # write buffer would grow to ~20 MiB; with it, the server stops reading and TCP slows the peer.
        sender = asyncio.create_task(_send_many(peer, message, 320))
        for _ in range(200):
            peak = max(peak, transport.get_write_buffer_size())
            await asyncio.sleep(0.005)
        assert not sender.done(), "the peer could send 20 MiB: the server kept reading"
        # Reading stops above the backlog limit; the answers to the read in progress (at most 256 KiB)
        # may come on top. (A read ahead of 512 KiB happens only while nothing waits to be written.)
        assert peak <= (backlog_kib + 256 + 64) * 1024, f"server write buffer reached {peak} bytes"
        assert connections[0].writing_paused
        # Once the peer reads, every echo arrives, in order.
        for _ in range(320):
            frame = await peer.read_frame()
            assert frame.payload == message
        await sender


async def _send_many(peer: RawPeer, message: bytes, count: int) -> None:
    from .wire import BINARY

    for _ in range(count):
        peer.send_frame(BINARY, message)
        await peer.writer.drain()
