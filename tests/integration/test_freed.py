"""Connections that end before they open are freed by reference counting, not by a full collection.

A reference cycle through an error's traceback keeps what it holds until the garbage collector's next full
pass, which an application with a large heap makes rare: one per failed attempt adds up in a client that
retries, or a server that drops handshakes. (Plain TCP: over TLS, asyncio's and uvloop's TLS transports keep
the protocol's bound methods after the connection is lost, a cycle of theirs; docs/security.md says so.)
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest

import upwire
from upwire.client import ClientConnection
from upwire.server import ServerConnection

from .helpers import TEST_TIMEOUT_S, StartServer, uri


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
