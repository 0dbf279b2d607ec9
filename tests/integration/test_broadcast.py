"""`upwire.broadcast`: one message to many connections, encoded once, compressed where negotiated."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import uvloop

import upwire

from .helpers import TEST_TIMEOUT_S, StartServer, tls_contexts, uri
from .wire import BINARY, CLOSE, TEXT, RawPeer


async def idle(ws: upwire.ServerConnection) -> None:
    await ws.wait_closed()


async def test_broadcast_reaches_every_open_client_once_plain_or_compressed(
    start_server: StartServer,
) -> None:
    server = await start_server(idle, ping_interval=None)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        plain = [await upwire.connect(uri(server), compression=None) for _ in range(20)]
        compressed = [await upwire.connect(uri(server)) for _ in range(5)]
        assert all(
            "permessage-deflate" in (c.response.headers.get("Sec-WebSocket-Extensions") or "")
            for c in compressed
            if c.response is not None
        )
        while len(server.connections) < 25:
            await asyncio.sleep(0.01)
        assert upwire.broadcast(server.connections, "hello everyone " * 20) == 25
        assert upwire.broadcast(server.connections, b"\x00\x01" * 100) == 25
        for client in plain + compressed:
            assert await client.recv() == "hello everyone " * 20
            assert await client.recv() == b"\x00\x01" * 100
        for client in plain + compressed:
            await client.close()


async def test_broadcast_writes_the_same_unmasked_frame_to_raw_peers(
    start_server: StartServer,
) -> None:
    server = await start_server(idle, ping_interval=None)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        peers = [await RawPeer.upgraded(server.port) for _ in range(3)]
        while len(server.connections) < 3:
            await asyncio.sleep(0.01)
        upwire.broadcast(server.connections, "x" * 200)
        upwire.broadcast(server.connections, b"y")
        for peer in peers:
            first, second = await peer.read_frame(), await peer.read_frame()
            assert (first.fin, first.opcode, first.masked, first.payload) == (
                True,
                TEXT,
                False,
                b"x" * 200,
            )
            assert (second.opcode, second.payload) == (BINARY, b"y")


async def test_broadcast_skips_closed_connections_and_one_sending_a_fragmented_message(
    start_server: StartServer,
) -> None:
    release = asyncio.Event()
    fragmenting: list[upwire.ServerConnection] = []

    async def slow_fragments(ws: upwire.ServerConnection) -> None:
        if ws.request is not None and ws.request.path == "/fragments":
            fragmenting.append(ws)

            async def pieces():  # type: ignore[no-untyped-def]
                # upwire sends a fragment once it knows whether another follows: after the second
                # item, the first fragment is on the wire and the message is in progress.
                yield "part one, "
                yield "part two, "
                await release.wait()
                yield "part three"

            await ws.send(pieces())
        await ws.wait_closed()

    server = await start_server(slow_fragments, ping_interval=None)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        busy = await upwire.connect(uri(server, "/fragments"), compression=None)
        steady = await upwire.connect(uri(server), compression=None)
        leaving = await upwire.connect(uri(server), compression=None)
        await leaving.close()
        while not (fragmenting and fragmenting[0]._fragmenting()) or len(server.connections) != 2:
            await asyncio.sleep(0.01)
        assert upwire.broadcast(server.connections, "news") == 1
        assert await steady.recv() == "news"
        release.set()
        # The fragmented message arrives whole: nothing was slipped between its frames.
        assert await busy.recv() == "part one, part two, part three"
        assert upwire.broadcast(server.connections, "more news") == 2
        assert await busy.recv() == "more news"
        assert await steady.recv() == "more news"
        await busy.close()
        await steady.close()


@pytest.mark.parametrize("compression", [None, "deflate"])
async def test_broadcast_skips_a_connection_whose_close_frame_is_sent(
    start_server: StartServer, compression: str | None
) -> None:
    # RFC 6455 §5.5.1: no data frame after a close frame. The peer has not answered the close yet, so
    # the connection is closing, not closed, and it is still in the list given.
    connections: list[upwire.ServerConnection] = []

    async def close_first(ws: upwire.ServerConnection) -> None:
        connections.append(ws)
        await ws.close(4000, "bye")

    server = await start_server(close_first, ping_interval=None, compression=compression)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        peer = await RawPeer.upgraded(server.port)  # never answers the close frame
        first = await peer.read_frame()
        assert (first.opcode, first.close_code) == (CLOSE, 4000)
        assert connections[0].state is upwire.State.CLOSING
        assert upwire.broadcast(connections, "too late") == 0
        assert upwire.broadcast(connections, b"too late") == 0
        peer.send_close(4000)  # then the server closes TCP: nothing came after its close frame
        assert await peer.read_to_eof() == b""


async def test_broadcast_reaches_what_an_iterable_yielded_before_it_raised(
    start_server: StartServer,
) -> None:
    server = await start_server(idle, ping_interval=None)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        plain = [await upwire.connect(uri(server), compression=None) for _ in range(3)]
        compressed = await upwire.connect(uri(server))
        while len(server.connections) < 4:
            await asyncio.sleep(0.01)

        def members() -> Any:
            yield from server.connections
            raise LookupError("the room's member list failed")

        with pytest.raises(LookupError):
            upwire.broadcast(members(), "to everyone so far")
        # Plain TCP connections are written together after the loop; they are not left out.
        for client in [*plain, compressed]:
            assert await client.recv() == "to everyone so far"
            await client.close()


def test_broadcast_refuses_other_types() -> None:
    import pytest

    with pytest.raises(TypeError, match="cannot broadcast"):
        upwire.broadcast([], 42)  # type: ignore[arg-type]


async def test_broadcast_keeps_order_with_messages_sent_before_it_in_the_same_loop_turn(
    start_server: StartServer,
) -> None:
    # The handler's second send waits to be written with the rest of the loop turn (coalescing); the
    # broadcast that follows in the same turn must go out after it, not before.
    async def handler(ws: upwire.ServerConnection) -> None:
        await ws.recv()
        await ws.send("first")
        await ws.send("second")
        upwire.broadcast([ws], "third")
        await ws.send("fourth")
        await ws.wait_closed()

    server = await start_server(handler, ping_interval=None)
    async with asyncio.timeout(TEST_TIMEOUT_S), upwire.connect(uri(server), compression=None) as ws:
        await ws.send("go")
        assert [await ws.recv() for _ in range(4)] == ["first", "second", "third", "fourth"]


LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def run_on(loop_name: str, main: Callable[[], Awaitable[None]]) -> None:
    with asyncio.Runner(loop_factory=LOOPS[loop_name]) as runner:
        runner.run(asyncio.wait_for(main(), TEST_TIMEOUT_S))


async def open_server_and_clients(
    count: int, **kwargs: Any
) -> tuple[upwire.Server, list[upwire.ClientConnection]]:
    server = await upwire.serve(
        idle, "127.0.0.1", 0, ping_interval=None, compression=None, **kwargs
    )
    clients = [
        await upwire.connect(uri(server), compression=None, max_message_size=None)
        for _ in range(count)
    ]
    while len(server.connections) < count:
        await asyncio.sleep(0.01)
    return server, clients


@pytest.mark.parametrize("loop_name", LOOPS)
def test_broadcast_sends_on_plain_tcp_sockets_directly_and_the_rest_follows_whole(
    loop_name: str,
) -> None:
    # 4 MiB does not fit in a socket's buffer: the C loop sends what fits, the transport the rest. A
    # connection listed three times gets three whole messages, in order, and a `send` after them.
    big = os.urandom(4 << 20)

    async def main() -> None:
        server, clients = await open_server_and_clients(3)
        async with server:
            connections = sorted(server.connections, key=id)
            assert all(c._shared_fd() >= 0 for c in connections)  # the direct path applies
            listed = [*connections, connections[0], connections[0]]
            assert upwire.broadcast(listed, big) == 5
            assert upwire.broadcast(connections, "small") == 3  # behind the buffered rest
            await connections[0].send("after")
            for conn, client in zip(
                connections, clients_in_order(connections, clients), strict=True
            ):
                copies = 3 if conn is connections[0] else 1
                for _ in range(copies):
                    assert await client.recv() == big
                assert await client.recv() == "small"
            assert await clients_in_order(connections, clients)[0].recv() == "after"
            for client in clients:
                await client.close()

    run_on(loop_name, main)


def clients_in_order(
    connections: list[upwire.ServerConnection], clients: list[upwire.ClientConnection]
) -> list[upwire.ClientConnection]:
    """The clients in the order of their server-side connections (matched by port)."""
    by_port = {client.local_address[1]: client for client in clients}
    return [by_port[conn.remote_address[1]] for conn in connections]


@pytest.mark.parametrize("loop_name", LOOPS)
def test_broadcast_to_a_peer_that_vanished_reports_nothing_and_reaches_the_others(
    loop_name: str,
) -> None:
    async def main() -> None:
        server, clients = await open_server_and_clients(3)
        async with server:
            gone = clients[1]
            assert gone.transport is not None
            gone.transport.abort()  # RST, no closing handshake: the server learns it from a send
            await asyncio.sleep(0.05)
            for _ in range(3):
                upwire.broadcast(server.connections, b"ping" * 1000)
                await asyncio.sleep(0.01)
            for client in (clients[0], clients[2]):
                for _ in range(3):
                    assert await client.recv() == b"ping" * 1000
            while len(server.connections) > 2:
                await asyncio.sleep(0.01)
            for client in (clients[0], clients[2]):
                await client.close()

    run_on(loop_name, main)


def test_broadcast_over_tls_goes_through_the_transport() -> None:
    server_context, client_context = tls_contexts()

    async def main() -> None:
        server = await upwire.serve(idle, "127.0.0.1", 0, ssl=server_context, ping_interval=None)
        async with server:
            client = await upwire.connect(f"wss://localhost:{server.port}/", ssl=client_context)
            while not server.connections:
                await asyncio.sleep(0.01)
            assert all(c._shared_fd() == -1 for c in server.connections)
            assert upwire.broadcast(server.connections, "secret") == 1
            assert await client.recv() == "secret"
            await client.close()

    run_on("asyncio", main)


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_on_uvloop_what_full_sockets_did_not_take_shares_the_one_frame() -> None:
    # 8 MiB to 10 peers that do not read: each socket takes a few hundred KiB, and the rest of the frame
    # waits in each transport. uvloop keeps a view of it (shared); a slice was a copy per connection.
    size, count = 8 << 20, 10

    async def main() -> None:
        server = await upwire.serve(idle, "127.0.0.1", 0, ping_interval=None, max_message_size=None)
        async with server, asyncio.timeout(TEST_TIMEOUT_S):
            peers = []
            for _ in range(count):
                peer = await RawPeer.upgraded(server.port)
                peers.append(peer)
            while len(server.connections) < count:
                await asyncio.sleep(0.01)
            message = os.urandom(size)
            before = rss_bytes()
            assert upwire.broadcast(server.connections, message) == count
            grown = rss_bytes() - before
            # The frame itself (8 MiB) once; ten copies would be 80 MiB.
            assert grown < 3 * size, f"RSS grew by {grown >> 20} MiB"
            for peer in peers:
                peer.close()

    run_on("uvloop", main)
