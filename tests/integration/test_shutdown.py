"""Graceful shutdown of `serve`, and how a handler's end (return, exception) closes its connection."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

import upwire

from .helpers import TEST_TIMEOUT_S, StartServer, echo, uri
from .wire import RawPeer


def now() -> float:
    return asyncio.get_running_loop().time()


async def test_server_close_closes_every_client_with_1001_and_wait_closed_returns(
    start_server: StartServer,
) -> None:
    finished: list[int] = []

    async def handler(ws: upwire.ServerConnection) -> None:
        try:
            async for message in ws:
                await ws.send(message)
        finally:
            finished.append(1)

    server = await start_server(handler)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        address = uri(server)
        clients = [await upwire.connect(address) for _ in range(3)]
        for ws in clients:  # every handler is running
            await ws.send("hi")
            assert await ws.recv() == "hi"
        server.close()
        for ws in clients:
            with pytest.raises(upwire.ConnectionClosedOK) as caught:
                await ws.recv()
            assert caught.value.code == 1001
            assert ws.close_code == 1001
        await server.wait_closed()
        assert finished == [1, 1, 1]
        assert server.connections == set()
        # The listening socket is closed: new clients are refused.
        with pytest.raises(OSError):
            await upwire.connect(address)


async def test_server_port_is_still_known_once_the_server_is_closed() -> None:
    server = await upwire.serve(echo, "127.0.0.1", 0)
    port = server.port
    assert port > 0
    server.close()
    await server.wait_closed()
    assert server.sockets == ()
    assert server.port == port


async def test_deflate_factories_are_importable_from_upwire_and_negotiate(
    start_server: StartServer,
) -> None:
    server = await start_server(
        extensions=[upwire.ServerPerMessageDeflateFactory(compress_level=1)]
    )
    async with (
        asyncio.timeout(TEST_TIMEOUT_S),
        upwire.connect(uri(server), extensions=[upwire.ClientPerMessageDeflateFactory()]) as ws,
    ):
        assert "permessage-deflate" in (ws.response.headers.get("Sec-WebSocket-Extensions") or "")
        await ws.send("x" * 1000)
        assert await ws.recv() == "x" * 1000


async def test_handler_that_ignores_the_close_is_cancelled_after_shutdown_timeout(
    start_server: StartServer,
) -> None:
    cancelled = asyncio.Event()

    async def stubborn(ws: upwire.ServerConnection) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    server = await start_server(stubborn, shutdown_timeout=0.3)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        ws = await upwire.connect(uri(server))
        started = now()
        server.close()
        with pytest.raises(upwire.ConnectionClosedOK):
            await ws.recv()
        assert ws.close_code == 1001
        await server.wait_closed()
        assert 0.25 <= now() - started < 2.0
        assert cancelled.is_set()


async def test_shutdown_timeout_resets_a_peer_that_stopped_reading_so_the_kernel_frees_its_buffer(
    start_server: StartServer,
) -> None:
    # shutdown_timeout before close_timeout: the shutdown aborts a connection whose last 4 MiB wait in the
    # server's send buffer. A plain close() would leave the socket sending them for minutes after the
    # server is gone (FIN-WAIT-1), and the peer's connection open; a reset frees both.
    async def send_then_wait(ws: upwire.ServerConnection) -> None:
        ws.send_now(bytes(4 * 1024 * 1024))
        await ws.wait_closed()

    server = await start_server(
        send_then_wait, close_timeout=None, shutdown_timeout=0.3, ping_interval=None
    )
    async with asyncio.timeout(TEST_TIMEOUT_S):
        peer = await RawPeer.upgraded(server.port)
        await asyncio.sleep(0.2)  # the handler's send is in the buffers
        server.close()
        await server.wait_closed()
        with pytest.raises(ConnectionResetError):
            while await peer.reader.read(65536):
                pass


async def test_leaving_async_with_serve_closes_clients_with_1001() -> None:
    finished = asyncio.Event()

    async def handler(ws: upwire.ServerConnection) -> None:
        try:
            await echo(ws)
        finally:
            finished.set()

    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with upwire.serve(handler, "127.0.0.1", 0) as server:
            ws = await upwire.connect(uri(server))
            await ws.send("hi")
            assert await ws.recv() == "hi"
        # Leaving the block waited for the shutdown: the handler is done and the client was closed.
        assert finished.is_set()
        await ws.wait_closed()
        assert ws.close_code == 1001
        with pytest.raises(upwire.ConnectionClosedOK):
            await ws.recv()


async def test_serve_forever_shuts_down_gracefully_when_cancelled() -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        server = await upwire.serve(echo, "127.0.0.1", 0)
        serving = asyncio.create_task(server.serve_forever())
        ws = await upwire.connect(uri(server))
        serving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await serving
        await ws.wait_closed()
        assert ws.close_code == 1001


async def test_serve_forever_returns_once_close_is_called() -> None:
    # The pattern `loop.add_signal_handler(SIGTERM, server.close); await server.serve_forever()`.
    async with asyncio.timeout(TEST_TIMEOUT_S):
        server = await upwire.serve(echo, "127.0.0.1", 0)
        serving = asyncio.create_task(server.serve_forever())
        ws = await upwire.connect(uri(server))
        asyncio.get_running_loop().call_soon(server.close)
        await serving  # returns, without CancelledError
        assert ws.close_code == 1001  # the shutdown was over when it returned
        # Called after the close, it returns at once.
        await asyncio.wait_for(server.serve_forever(), 1.0)


async def test_a_handler_cancelled_at_shutdown_leaves_no_cycle_holding_its_connection() -> None:
    # The cancelled task holds its CancelledError, whose traceback holds the connection: the connection
    # must not hold the task once closed, or it waits for a full garbage collection.
    refs: list[weakref.ref[upwire.ServerConnection]] = []

    async def stubborn(ws: upwire.ServerConnection) -> None:
        refs.append(weakref.ref(ws))
        await asyncio.sleep(TEST_TIMEOUT_S)

    server = await upwire.serve(stubborn, "127.0.0.1", 0, shutdown_timeout=0.1)
    gc.collect()
    gc.disable()
    try:
        async with asyncio.timeout(TEST_TIMEOUT_S):
            ws = await upwire.connect(uri(server))
            while not refs:
                await asyncio.sleep(0.01)
            server.close()
            await server.wait_closed()
            await ws.wait_closed()
            await asyncio.sleep(0.05)
            assert refs[0]() is None
    finally:
        gc.enable()


async def test_client_block_that_raises_closes_with_1011(start_server: StartServer) -> None:
    seen: asyncio.Future[tuple[int | None, str | None]] = asyncio.get_running_loop().create_future()

    async def watch(ws: upwire.ServerConnection) -> None:
        try:
            async for _ in ws:
                pass
        except upwire.ConnectionClosedError:
            pass
        seen.set_result((ws.close_code, ws.close_reason))

    server = await start_server(watch)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        with pytest.raises(KeyError):
            async with upwire.connect(uri(server)) as ws:
                await ws.send("hi")
                raise KeyError("bug in the client")
        assert await seen == (1011, "internal error")
        assert ws.close_code == 1011
        # A block that ends normally closes with 1000.
        async with upwire.connect(uri(server)):
            pass


async def test_another_connections_closure_ending_a_handler_or_block_closes_with_1011(
    start_server: StartServer,
) -> None:
    # A handler relays to a second connection, which its server closes with 1011: the
    # ConnectionClosed that ends the handler (or an `async with ws:` block) is not this connection's.
    async def closing(ws: upwire.ServerConnection) -> None:
        await ws.close(1011, "upstream broke")

    upstream = await start_server(closing)
    seen: list[tuple[int | None, str]] = []

    async def relay(ws: upwire.ServerConnection) -> None:
        async with upwire.connect(uri(upstream)) as other:
            if ws.request.path == "/with":
                async with ws:
                    await other.recv()
            else:
                await other.recv()

    server = await start_server(relay)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        for path in ("/with", "/plain"):
            ws = await upwire.connect(uri(server, path))
            await ws.wait_closed()
            seen.append((ws.close_code, ws.close_reason))
    assert seen == [(1011, "internal error"), (1011, "internal error")]


async def test_handler_raising_an_exception_closes_with_1011(start_server: StartServer) -> None:
    async def broken(ws: upwire.ServerConnection) -> None:
        await ws.recv()
        raise RuntimeError("secret internal detail")

    server = await start_server(broken)
    async with asyncio.timeout(TEST_TIMEOUT_S), upwire.connect(uri(server)) as ws:
        await ws.send("boom")
        with pytest.raises(upwire.ConnectionClosedError) as caught:
            await ws.recv()
        assert caught.value.code == 1011
        assert "secret internal detail" not in caught.value.reason
        assert "Traceback" not in caught.value.reason


async def test_handler_returning_closes_with_1000(start_server: StartServer) -> None:
    async def say_bye(ws: upwire.ServerConnection) -> None:
        await ws.send("bye")

    server = await start_server(say_bye)
    async with asyncio.timeout(TEST_TIMEOUT_S), upwire.connect(uri(server)) as ws:
        assert await ws.recv() == "bye"
        with pytest.raises(upwire.ConnectionClosedOK) as caught:
            await ws.recv()
        assert caught.value.code == 1000
        await ws.wait_closed()
        assert ws.close_code == 1000


async def test_shutdown_waits_for_handlers_whose_connection_closed_already() -> None:
    """A handler still at work after its connection closed is waited for, then cancelled, as any other."""
    cleaning = asyncio.Event()
    cancelled = asyncio.Event()

    async def slow_cleanup(ws: upwire.ServerConnection) -> None:
        try:
            async for _ in ws:
                pass
        finally:
            cleaning.set()
            try:
                await asyncio.sleep(3600)  # cleanup that outlives the connection
            except asyncio.CancelledError:
                cancelled.set()
                raise

    async with asyncio.timeout(TEST_TIMEOUT_S):
        server = await upwire.serve(slow_cleanup, "127.0.0.1", 0, shutdown_timeout=0.3)
        async with upwire.connect(uri(server)):
            pass
        await cleaning.wait()
        assert not server.connections
        started = now()
        server.close()
        await server.wait_closed()
        assert 0.25 <= now() - started < 2.0
        assert cancelled.is_set()


async def test_wait_closed_started_before_close_waits_for_the_whole_shutdown() -> None:
    # The deployment pattern: `await server.wait_closed()` in main, `server.close` from a signal
    # handler. wait_closed must not return before the handlers' cleanup is done.
    cleaned: list[str] = []

    async def handler(ws: upwire.ServerConnection) -> None:
        try:
            async for message in ws:
                await ws.send(message)
        finally:
            await asyncio.sleep(0.2)  # cleanup that takes a while
            cleaned.append("done")

    server = await upwire.serve(handler, "127.0.0.1", 0)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with upwire.connect(uri(server)) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
            waiting = asyncio.create_task(server.wait_closed())
            await asyncio.sleep(0.05)
            assert not waiting.done()  # nobody called close() yet
            loop = asyncio.get_running_loop()
            loop.call_soon(server.close)
            await waiting
            assert cleaned == ["done"]
            assert ws.close_code == 1001


async def test_connections_are_only_those_open(start_server: StartServer) -> None:
    # Not those still opening, answered with plain HTTP, or closing: what broadcast sends to.
    release = asyncio.Event()

    async def handler(ws: upwire.ServerConnection) -> None:
        async for message in ws:
            if message == "close":
                await ws.close()

    async def process_request(
        connection: upwire.ServerConnection, request: upwire.Request
    ) -> upwire.Response | None:
        assert connection.state is upwire.State.CONNECTING
        with pytest.raises(upwire.UsageError, match="opening handshake is not complete"):
            await connection.send("too early")
        if request.path == "/held":
            await release.wait()
            return upwire.Response(200, body="late\n")
        return None

    server = await start_server(handler, process_request=process_request)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        silent = await asyncio.open_connection("127.0.0.1", server.port)  # says nothing
        held = asyncio.ensure_future(upwire.connect(uri(server, "/held")))
        async with upwire.connect(uri(server)) as ws:
            await asyncio.sleep(0.05)
            assert len(server._connections) == 3
            (open_one,) = server.connections
            assert open_one.state is upwire.State.OPEN
            assert open_one.remote_address[1] == ws.local_address[1]
            await ws.send("close")
            await ws.wait_closed()
            assert server.connections == set()
        release.set()
        with pytest.raises(upwire.InvalidStatus):
            await held
        silent[1].close()


def test_shutdown_timeout_and_the_timeouts_must_be_seconds() -> None:
    # Refused when serve is called, naming the option: a string failed at the first shutdown, NaN made a
    # wait that never ends.
    for value, error in (("10", TypeError), (float("nan"), ValueError), (-1, ValueError)):
        with pytest.raises(error, match="shutdown_timeout"):
            upwire.serve(echo, "127.0.0.1", 0, shutdown_timeout=value)
    with pytest.raises(ValueError, match="ping_interval"):
        upwire.serve(echo, "127.0.0.1", 0, ping_interval=float("nan"))
    upwire.serve(echo, "127.0.0.1", 0, shutdown_timeout=0)  # abort at once: allowed
    upwire.serve(echo, "127.0.0.1", 0, shutdown_timeout=None)  # no limit


async def test_shutdown_cancels_an_async_process_request_at_once() -> None:
    # Its connection is aborted by the shutdown: waiting shutdown_timeout for the hook's answer, which
    # has nowhere to go, only delayed the server's end.
    cancelled = asyncio.Event()
    entered = asyncio.Event()

    async def slow_hook(
        connection: upwire.ServerConnection, request: upwire.Request
    ) -> upwire.Response | None:
        entered.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return None

    server = await upwire.serve(
        echo, "127.0.0.1", 0, process_request=slow_hook, shutdown_timeout=5.0
    )
    async with asyncio.timeout(TEST_TIMEOUT_S):
        connecting = asyncio.ensure_future(upwire.connect(uri(server)))
        await entered.wait()
        started = now()
        server.close()
        await server.wait_closed()
        assert now() - started < 1.0
        assert cancelled.is_set()
        with pytest.raises(upwire.InvalidHandshake):
            await connecting


@pytest.mark.parametrize("reading", [True, False], ids=["reading", "stopped reading"])
async def test_a_plain_http_answer_going_out_at_shutdown_is_finished_or_reset(
    start_server: StartServer, reading: bool
) -> None:
    # An 8 MiB page from process_request, most of it still in the server's buffers when the shutdown
    # begins: a client that reads gets all of it (an abort at once cut it short), one that stopped
    # reading is reset at shutdown_timeout (a plain abort left the socket holding megabytes).
    page = bytes(8 * 1024 * 1024)

    def serve_page(
        connection: upwire.ServerConnection, request: upwire.Request
    ) -> upwire.Response | None:
        return upwire.Response(200, body=page)

    server = await start_server(
        process_request=serve_page, shutdown_timeout=2.0 if reading else 0.3
    )
    async with asyncio.timeout(TEST_TIMEOUT_S):
        peer = await RawPeer.connect(server.port)
        peer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.sleep(0.2)  # the answer fills the buffers
        server.close()
        if reading:
            received = await peer.read_to_eof()
            assert received.startswith(b"HTTP/1.1 200 ") and received.endswith(page[-100:])
            assert len(received) - received.index(b"\r\n\r\n") - 4 == len(page)
            await server.wait_closed()
        else:
            await server.wait_closed()
            with pytest.raises(ConnectionResetError):
                while await peer.reader.read(65536):
                    pass
