"""Keepalive pings and the idle, close and open timeouts, against raw-socket peers that misbehave in time."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

import upwire

from .helpers import StartServer
from .wire import CLOSE, PING, PONG, TEXT, RawPeer, close_payload

# Timeouts under test are a few tenths of a second; this bounds each test with room to spare.
TEST_TIMEOUT_S = 5.0


def now() -> float:
    return asyncio.get_running_loop().time()


@contextlib.asynccontextmanager
async def raw_server() -> AsyncIterator[tuple[int, asyncio.Queue[RawPeer]]]:
    """A TCP server that completes the opening handshake by hand and hands each peer to the test."""
    peers: asyncio.Queue[RawPeer] = asyncio.Queue()
    writers: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await peers.put(await RawPeer.accept(reader, writer))

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], peers
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


# ---------------------------------------------------------------------------- keepalive


async def test_keepalive_closes_with_1011_when_the_peer_never_answers_pings(
    start_server: StartServer,
) -> None:
    server = await start_server(ping_interval=0.2, ping_timeout=0.2)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        peer = await RawPeer.upgraded(server.port)
        opened = now()
        ping = await peer.read_frame()
        assert ping.opcode == PING
        assert 0.15 <= now() - opened < 1.0
        close = await peer.read_frame()  # the pong never goes out
        assert (close.opcode, close.close_code) == (CLOSE, 1011)
        assert 0.35 <= now() - opened < 1.5
        peer.send_close(1011)
        assert await peer.read_to_eof() == b""


async def test_keepalive_without_ping_timeout_pings_on_when_no_pong_comes(
    start_server: StartServer,
) -> None:
    # ping_timeout=None: never closed for a missing pong, and the pings go on at every interval (what
    # keeps a proxy's idle timer from expiring; one ping was sent, then none). Only the latest
    # unanswered ping is kept waiting.
    connections: list[upwire.ServerConnection] = []

    async def hold(ws: upwire.ServerConnection) -> None:
        connections.append(ws)
        await ws.wait_closed()

    server = await start_server(hold, ping_interval=0.1, ping_timeout=None)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        peer = await RawPeer.upgraded(server.port)
        opened = now()
        pings = [await peer.read_frame() for _ in range(5)]
        assert [p.opcode for p in pings] == [PING] * 5
        assert len({p.payload for p in pings}) == 5
        assert now() - opened < 2.0
        (ws,) = connections
        assert len(ws._pings) == 1  # type: ignore[attr-defined]
        assert ws.state is upwire.State.OPEN
        peer.send_close(1000)
        frames = await peer.read_frames_to_eof()
        assert [(f.opcode, f.close_code) for f in frames if f.opcode == CLOSE] == [(CLOSE, 1000)]


async def test_keepalive_keeps_open_a_connection_whose_peer_answers_pings(
    start_server: StartServer,
) -> None:
    server = await start_server(ping_interval=0.2, ping_timeout=0.2)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        peer = await RawPeer.upgraded(server.port)
        for _ in range(4):  # 0.8 s: twice ping_interval + ping_timeout
            ping = await peer.read_frame()
            assert ping.opcode == PING, ping
            peer.send_frame(PONG, ping.payload)
        peer.send_frame(TEXT, "still here")
        frame = await peer.read_frame()
        while frame.opcode == PING:
            peer.send_frame(PONG, frame.payload)
            frame = await peer.read_frame()
        assert (frame.opcode, frame.payload) == (TEXT, b"still here")
        peer.close()


async def test_unsolicited_pongs_answer_no_ping_and_do_not_keep_a_silent_peer_alive(
    start_server: StartServer,
) -> None:
    # RFC 6455 §5.5.3: a pong not answering a ping (a heartbeat) is ignored: it resolves no `ping()`
    # and does not stand in for the answer keepalive waits for.
    answered: list[asyncio.Future[float]] = []

    async def ping_then_wait(ws: upwire.ServerConnection) -> None:
        answered.append(ws.ping(b"mine"))
        await ws.wait_closed()

    server = await start_server(ping_then_wait, ping_interval=0.2, ping_timeout=0.3)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        peer = await RawPeer.upgraded(server.port)
        ping = await peer.read_frame()
        assert (ping.opcode, ping.payload) == (PING, b"mine")
        peer.send_frame(PONG, b"heartbeat")
        await asyncio.sleep(0.1)
        assert not answered[0].done()
        peer.send_frame(PONG, b"mine")
        await asyncio.wait_for(answered[0], 1.0)
        opened = now()
        frame = await peer.read_frame()
        while frame.opcode == PING:  # keepalive's: heartbeats only, never its answer
            peer.send_frame(PONG, b"heartbeat")
            frame = await peer.read_frame()
        assert (frame.opcode, frame.close_code) == (CLOSE, 1011)
        assert now() - opened < 1.5
        peer.close()


async def test_client_keepalive_closes_with_1011_when_the_server_never_answers_pings() -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S), raw_server() as (port, peers):
        ws = await upwire.connect(f"ws://127.0.0.1:{port}/", ping_interval=0.2, ping_timeout=0.2)
        peer = await peers.get()
        ping = await peer.read_frame()
        assert (ping.opcode, ping.masked) == (PING, True)
        close = await peer.read_frame()
        assert (close.opcode, close.close_code) == (CLOSE, 1011)
        peer.send_frame(CLOSE, close_payload(1011), mask_key=None)
        peer.close()
        with pytest.raises(upwire.ConnectionClosedError) as caught:
            await ws.recv()
        assert caught.value.code == 1011


async def test_upwire_peers_keep_each_other_alive(start_server: StartServer) -> None:
    server = await start_server(ping_interval=0.1, ping_timeout=0.1)
    async with (
        asyncio.timeout(TEST_TIMEOUT_S),
        upwire.connect(f"ws://127.0.0.1:{server.port}/", ping_interval=0.1, ping_timeout=0.1) as ws,
    ):
        await asyncio.sleep(0.6)
        await ws.send("alive")
        assert await ws.recv() == "alive"


@pytest.mark.parametrize(
    ("options", "code", "reason"),
    [
        ({"ping_interval": 0.2, "ping_timeout": 0.2}, 1011, "keepalive ping timeout"),
        ({"ping_interval": None, "idle_timeout": 0.3}, 1001, "idle timeout"),
    ],
)
async def test_the_handler_learns_why_this_side_closed_when_the_peer_never_answers(
    start_server: StartServer, options: dict[str, float | None], code: int, reason: str
) -> None:
    # The peer answers neither the pings nor the close frame: the connection ends by close_timeout, and
    # the handler sees the code this side closed with, not 1006 as if the network had failed.
    seen: asyncio.Future[upwire.ConnectionClosed] = asyncio.get_running_loop().create_future()

    async def handler(ws: upwire.ServerConnection) -> None:
        try:
            await ws.recv()
        except upwire.ConnectionClosed as exc:
            seen.set_result(exc)
            raise
        finally:
            assert (ws.close_code, ws.close_reason) == (code, reason)

    server = await start_server(handler, close_timeout=0.2, **options)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        peer = await RawPeer.upgraded(server.port)
        frame = await peer.read_frame()
        while frame.opcode == PING:
            frame = await peer.read_frame()
        assert (frame.opcode, frame.close_code) == (CLOSE, code)
        error = await seen
        assert isinstance(error, upwire.ConnectionClosedError)
        assert (error.code, error.reason, error.sent) == (code, reason, (code, reason))
        assert "no close frame received" in str(error)
        assert await peer.read_to_eof() == b""


# ---------------------------------------------------------------------------- idle timeout


async def closed_as_idle_from_now(peer: RawPeer) -> None:
    """The peer goes quiet now: the server closes with 1001 about idle_timeout (0.3 s) later."""
    quiet_since = now()
    close = await peer.read_frame()
    assert (close.opcode, close.close_code) == (CLOSE, 1001)
    assert 0.15 <= now() - quiet_since < 1.0
    peer.send_close(1001)
    await peer.read_to_eof()


async def test_idle_timeout_closes_with_1001_only_after_the_peer_goes_quiet(
    start_server: StartServer,
) -> None:
    server = await start_server(idle_timeout=0.3, ping_interval=None)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        peer = await RawPeer.upgraded(server.port)
        # Talking every 0.1 s for 0.6 s (twice idle_timeout) keeps the connection open.
        for i in range(6):
            peer.send_frame(TEXT, str(i))
            frame = await peer.read_frame()
            assert (frame.opcode, frame.payload) == (TEXT, str(i).encode())
            await asyncio.sleep(0.1)
        await closed_as_idle_from_now(peer)


async def test_idle_timeout_does_not_count_while_this_side_stops_reading(
    start_server: StartServer,
) -> None:
    # The handler does not read for 0.6 s (twice idle_timeout) while the peer keeps sending: the full
    # recv queue pauses reading, and the peer, which never went quiet, is not closed as idle.
    async def slow(ws: upwire.ServerConnection) -> None:
        await asyncio.sleep(0.6)
        async for message in ws:
            await ws.send(message)

    server = await start_server(slow, idle_timeout=0.3, ping_interval=None, max_queue=2)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        peer = await RawPeer.upgraded(server.port)
        for i in range(40):
            peer.send_frame(TEXT, str(i))
            await asyncio.sleep(0.02)
        for i in range(40):
            frame = await peer.read_frame()
            assert (frame.opcode, frame.payload) == (TEXT, str(i).encode())
        await closed_as_idle_from_now(peer)


async def test_idle_timeout_closes_a_peer_that_stalls_the_connection_by_not_reading(
    start_server: StartServer,
) -> None:
    # The handler is blocked in send (the peer does not read), so its recv queue is full and reading
    # is paused too: the peer, which sends nothing more, is idle all the same.
    ended: asyncio.Future[tuple[int, str] | None] = asyncio.get_running_loop().create_future()

    async def flood(ws: upwire.ServerConnection) -> None:
        try:
            while True:
                await ws.send(bytes(65536))
        except upwire.ConnectionClosed as exc:
            ended.set_result(exc.sent)

    server = await start_server(
        flood, idle_timeout=0.3, ping_interval=None, max_queue=2, close_timeout=0.3
    )
    async with asyncio.timeout(TEST_TIMEOUT_S):
        peer = await RawPeer.upgraded(server.port)
        for i in range(4):  # the recv queue fills
            peer.send_frame(TEXT, str(i))
        started = now()
        assert await ended == (1001, "idle timeout")
        assert now() - started < 3.0


# ---------------------------------------------------------------------------- close timeout


async def test_close_timeout_aborts_tcp_when_the_client_never_answers_the_close_frame(
    start_server: StartServer,
) -> None:
    handler_close_took: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    async def close_at_once(ws: upwire.ServerConnection) -> None:
        started = now()
        await ws.close(1000)
        handler_close_took.set_result(now() - started)

    server = await start_server(close_at_once, close_timeout=0.3, ping_interval=None)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        peer = await RawPeer.upgraded(server.port)
        close = await peer.read_frame()
        assert (close.opcode, close.close_code) == (CLOSE, 1000)
        received = now()
        assert await peer.read_to_eof() == b""  # no answer from us: the server gives up
        assert 0.2 <= now() - received < 1.5
        assert 0.2 <= await handler_close_took < 1.5


async def test_close_timeout_aborts_tcp_when_the_server_never_answers_the_close_frame() -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S), raw_server() as (port, peers):
        ws = await upwire.connect(f"ws://127.0.0.1:{port}/", close_timeout=0.3)
        peer = await peers.get()
        started = now()
        await ws.close()
        assert 0.2 <= now() - started < 1.5
        assert ws.state is upwire.State.CLOSED
        frame = await peer.read_frame()
        assert (frame.opcode, frame.close_code) == (CLOSE, 1000)
        assert await peer.read_to_eof() == b""


async def test_a_client_that_fails_the_connection_waits_for_the_server_to_close_tcp() -> None:
    # RFC 6455 §7.1.1: the server closes TCP first, so that it holds TIME_WAIT, after a failure too
    # (§7.1.7); the client reads on, dropping what comes, until the server's FIN.
    async with asyncio.timeout(TEST_TIMEOUT_S), raw_server() as (port, peers):
        ws = await upwire.connect(f"ws://127.0.0.1:{port}/", close_timeout=5, ping_interval=None)
        peer = await peers.get()
        peer.send_frame(TEXT, b"masked by a server")  # RFC 6455 §5.1: the client must fail
        frame = await peer.read_frame()
        assert (frame.opcode, frame.close_code) == (CLOSE, 1002)
        with pytest.raises(upwire.ConnectionClosedError, match="connection failed; closing"):
            await ws.recv()  # not "closing handshake in progress": no answer is awaited
        peer.send_frame(TEXT, b"dropped", mask_key=None)  # still read, not answered with a reset
        with pytest.raises(TimeoutError):  # no FIN from the client meanwhile
            async with asyncio.timeout(0.3):
                await peer.reader.read(1)
        peer.send_frame(CLOSE, close_payload(1002), mask_key=None)
        peer.writer.write_eof()
        started = now()
        assert await peer.read_to_eof() == b""  # the client closes at the server's FIN
        assert now() - started < 2.0
        await ws.wait_closed()
        assert ws.close_code == 1002


# ---------------------------------------------------------------------------- open timeout


async def test_client_open_timeout_when_the_server_never_answers_the_upgrade() -> None:
    async def say_nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up

    server = await asyncio.start_server(say_nothing, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with asyncio.timeout(TEST_TIMEOUT_S):
            started = now()
            with pytest.raises(TimeoutError):
                await upwire.connect(f"ws://127.0.0.1:{port}/", open_timeout=0.3)
            assert 0.25 <= now() - started < 1.5
    finally:
        server.close()


async def test_close_timeout_resets_a_peer_that_stopped_reading_so_the_kernel_frees_its_buffer(
    start_server: StartServer,
) -> None:
    # The server's last 4 MiB and its close frame wait in its send buffer; when close_timeout aborts,
    # a plain close() would leave the socket sending them for minutes (FIN-WAIT-1); a reset frees them.
    async def send_then_close(ws: upwire.ServerConnection) -> None:
        ws.send_now(bytes(4 * 1024 * 1024))
        await ws.close()

    server = await start_server(send_then_close, close_timeout=0.3, ping_interval=None)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        peer = await RawPeer.upgraded(server.port)
        await asyncio.sleep(1.0)  # not reading: the server gives up after close_timeout
        with pytest.raises(ConnectionResetError):
            while await peer.reader.read(65536):
                pass


async def test_close_timeout_closes_without_a_reset_when_the_peer_took_everything(
    start_server: StartServer,
) -> None:
    # A peer that stopped answering (a stopped process, say) while its kernel still took every byte: after
    # close_timeout the server closes with a FIN, so the close frame is still there to read when the peer
    # comes back (a reset makes the peer's kernel drop what it has not read).
    async def close(ws: upwire.ServerConnection) -> None:
        await ws.close(4000, "going")

    server = await start_server(close, close_timeout=0.3, ping_interval=None)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        peer = await RawPeer.upgraded(server.port)
        await asyncio.sleep(
            1.0
        )  # neither reading nor answering: the server gives up after close_timeout
        frame = await peer.read_frame()
        assert (frame.opcode, frame.close_code, frame.close_reason) == (CLOSE, 4000, "going")
        assert await peer.read_to_eof() == b""
