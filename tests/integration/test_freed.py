"""Connections that end before they open are freed by reference counting, not by a full collection.

A reference cycle through an error's traceback keeps what it holds until the garbage collector's next full
pass, which an application with a large heap makes rare: one per failed attempt adds up in a client that
retries, or a server that drops handshakes. Over TLS, asyncio's and uvloop's TLS transports keep the
protocol's bound methods after the connection is lost: a connection must not keep holding such a transport.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
import uvloop

import upwire
from upwire.client import ClientConnection
from upwire.server import ServerConnection

from .helpers import TEST_TIMEOUT_S, StartServer, echo, tls_contexts, uri


@pytest.fixture
def no_gc() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def alive(kind: type) -> int:
    return sum(1 for o in gc.get_objects() if type(o) is kind)


async def test_a_client_whose_handshake_fails_is_freed(
    start_server: StartServer, no_gc: None
) -> None:
    async def refuse(
        connection: ServerConnection, request: upwire.Request
    ) -> upwire.Response | None:
        return upwire.Response(403, body="no\n")

    server = await start_server(process_request=refuse)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        before = alive(ClientConnection)
        for _ in range(3):
            with pytest.raises(upwire.InvalidStatus):
                await upwire.connect(uri(server))
        await asyncio.sleep(0.05)  # the transports' connection_lost
        assert alive(ClientConnection) == before


async def test_a_server_connection_dropped_by_open_timeout_is_freed(
    start_server: StartServer, no_gc: None
) -> None:
    server = await start_server(open_timeout=0.2)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        before = alive(ServerConnection)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        assert await reader.read() == b""  # dropped after open_timeout, without an answer
        writer.close()
        await asyncio.sleep(0.05)
        assert alive(ServerConnection) == before


async def test_a_malformed_request_answered_400_leaves_its_connection_freed(
    start_server: StartServer, no_gc: None
) -> None:
    # h11's error is in a cycle of its own: it must not keep the frames that saw it, nor the connection.
    server = await start_server()
    async with asyncio.timeout(TEST_TIMEOUT_S):
        before = alive(ServerConnection)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET / HTTP/1.1\r\nHost x\r\n\r\n")
        assert (await reader.read()).startswith(b"HTTP/1.1 400 ")
        writer.close()
        await asyncio.sleep(0.05)
        assert alive(ServerConnection) == before


@pytest.mark.parametrize(
    ("frame", "code"),
    [(b"\x81\x81\x00\x00\x00\x00\xff", 1007), (b"\x81\x00", 1002)],
    ids=["invalid utf-8", "unmasked"],
)
async def test_a_connection_failed_by_the_peers_protocol_error_is_freed(
    start_server: StartServer, no_gc: None, frame: bytes, code: int
) -> None:
    # The core keeps the error (`failure`): with its traceback, it held the frame of the I/O layer's
    # read, and so the connection, until a full collection.
    server = await start_server(ping_interval=None)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        before = alive(ServerConnection)
        for _ in range(3):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(
                b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            await reader.readuntil(b"\r\n\r\n")
            writer.write(frame)
            answer = await reader.read()  # the close frame, then the server's FIN
            assert (answer[0], answer[2:4]) == (0x88, code.to_bytes(2, "big"))
            writer.close()
        await asyncio.sleep(0.05)
        assert alive(ServerConnection) == before


@pytest.mark.parametrize("answer", [b"", b"garbage\r\n\r\n"], ids=["closed", "garbage"])
async def test_a_client_whose_server_answers_nothing_or_garbage_is_freed(
    answer: bytes, no_gc: None
) -> None:
    async def answer_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        writer.close()

    hostile = await asyncio.start_server(answer_then_close, "127.0.0.1", 0)
    port = hostile.sockets[0].getsockname()[1]
    try:
        async with asyncio.timeout(TEST_TIMEOUT_S):
            before = alive(ClientConnection)
            for _ in range(3):
                with pytest.raises(upwire.InvalidHandshake):
                    await upwire.connect(f"ws://127.0.0.1:{port}/")
            await asyncio.sleep(0.05)
            assert alive(ClientConnection) == before
    finally:
        hostile.close()
        await hostile.wait_closed()


@pytest.mark.parametrize("run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])
@pytest.mark.parametrize("ending", ["closing handshake", "abort"])
def test_tls_connections_are_freed_and_keep_their_addresses(
    run: Callable[[Coroutine[Any, Any, None]], None], ending: str, no_gc: None
) -> None:
    server_context, client_context = tls_contexts()
    addresses: list[tuple[Any, Any]] = []

    async def handler(ws: ServerConnection) -> None:
        try:
            await echo(ws)
        finally:
            await ws.wait_closed()
            addresses.append((ws.remote_address, ws.local_address))

    async def main() -> None:
        async with (
            asyncio.timeout(TEST_TIMEOUT_S),
            upwire.serve(handler, "localhost", 0, ssl=server_context) as server,
        ):
            before = alive(ServerConnection), alive(ClientConnection)
            for _ in range(3):
                ws = await upwire.connect(f"wss://localhost:{server.port}/", ssl=client_context)
                opened = ws.remote_address, ws.local_address
                await ws.send("x")
                assert await ws.recv() == "x"
                if ending == "abort":
                    assert ws.transport is not None
                    ws.transport.abort()
                await ws.close()
                await ws.wait_closed()
                assert (ws.remote_address, ws.local_address) == opened
                del ws
            while len(addresses) < 3:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)  # the server side's connection_lost
            assert alive(ServerConnection) == before[0]
            assert alive(ClientConnection) == before[1]
            assert all(remote is not None and local is not None for remote, local in addresses)

    run(main())
