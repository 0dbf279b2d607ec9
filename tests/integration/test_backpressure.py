"""Backpressure both ways: a slow reader stops the socket being read; a peer that does not read stops `send`."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import socket
import struct
import threading
import time
import weakref
from collections.abc import Callable

import pytest
import uvloop

import upwire
from upwire.connection import ConnectionOptions
from upwire.protocol.handshake import ServerHandshake
from upwire.protocol.http import RequestReader

from .helpers import StartServer, uri
from .wire import BINARY, PING, PONG, TEXT, RawPeer, encode_frame

TEST_TIMEOUT_S = 20.0
MESSAGE_SIZE = 64 * 1024
# A send that has not completed after this long is blocked (a send into a free buffer takes microseconds).
BLOCKED_AFTER_S = 0.3


def numbered(index: int) -> bytes:
    """A 64 KiB message that starts with its index, to check the order of arrival.

    The rest is random so that permessage-deflate (on by default) cannot shrink it: the buffers must fill.
    """
    return index.to_bytes(4, "big") + random.Random(index).randbytes(MESSAGE_SIZE - 4)


def index_of(message: bytes | str) -> int:
    assert isinstance(message, bytes) and len(message) == MESSAGE_SIZE
    return int.from_bytes(message[:4], "big")


async def send_until_blocked(
    ws: upwire.Connection, limit: int = 5000
) -> tuple[int, asyncio.Task[None]]:
    """Send numbered messages until one does not complete in time; return its index and its task."""
    for index in range(limit):
        sending = asyncio.create_task(ws.send(numbered(index)))
        done, _ = await asyncio.wait({sending}, timeout=BLOCKED_AFTER_S)
        if not done:
            return index, sending
        sending.result()
    raise AssertionError(f"{limit} messages of {MESSAGE_SIZE} bytes were sent without blocking")


async def test_slow_consumer_stops_reading_at_max_queue_and_the_sender_blocks(
    start_server: StartServer,
) -> None:
    max_queue = 4
    start_reading = asyncio.Event()
    connections: list[upwire.ServerConnection] = []
    received: list[int] = []
    all_received = asyncio.Event()
    expected_total: list[int] = []

    async def slow_consumer(ws: upwire.ServerConnection) -> None:
        connections.append(ws)
        await start_reading.wait()
        async for message in ws:
            received.append(index_of(message))
            if expected_total and len(received) == expected_total[0]:
                all_received.set()

    server = await start_server(slow_consumer, max_queue=max_queue, ping_interval=None)
    peak_queue = 0

    async def watch_queue() -> None:
        # The queue only grows inside data_received, one callback per loop iteration: sampling once
        # per iteration sees its peak. (`messages_queued` is the queue's length.)
        nonlocal peak_queue
        while True:
            for connection in connections:
                peak_queue = max(peak_queue, connection.messages_queued)
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch_queue())
    try:
        async with asyncio.timeout(TEST_TIMEOUT_S), upwire.connect(uri(server)) as ws:
            blocked_at, blocked_send = await send_until_blocked(ws)
            # The server stopped reading: what it holds is at most max_queue messages, while the
            # rest waits in kernel buffers and in the client's transport.
            assert peak_queue <= max_queue, f"{peak_queue} messages queued, max_queue={max_queue}"
            (connection,) = connections
            assert connection.messages_queued <= max_queue
            assert ws.transport is not None
            assert ws.transport.get_write_buffer_size() > ws.options.write_limit
            # The consumer catches up: the blocked send completes and everything arrives in order.
            total = blocked_at + 1 + 10
            expected_total.append(total)
            start_reading.set()
            await blocked_send
            for index in range(blocked_at + 1, total):
                await ws.send(numbered(index))
            await all_received.wait()
            assert received == list(range(total))
            assert peak_queue <= max_queue
    finally:
        watcher.cancel()


async def test_compressed_messages_stop_inflating_when_the_queue_is_full(
    start_server: StartServer,
) -> None:
    # 100 messages of 512 KiB of zeros compress to ~500 bytes each: one read holds them all, and
    # inflating the whole read at once would queue 50 MiB for a handler that reads nothing.
    max_queue = 4
    start_reading = asyncio.Event()
    connections: list[upwire.ServerConnection] = []
    received: list[bytes] = []

    async def slow_consumer(ws: upwire.ServerConnection) -> None:
        connections.append(ws)
        await start_reading.wait()
        for _ in range(100):
            received.append(await ws.recv())  # type: ignore[arg-type]

    server = await start_server(slow_consumer, max_queue=max_queue, ping_interval=None)
    messages = [index.to_bytes(4, "big") + bytes(512 * 1024 - 4) for index in range(100)]
    async with asyncio.timeout(TEST_TIMEOUT_S), upwire.connect(uri(server)) as ws:
        for message in messages:
            await ws.send(message)
        peak = 0
        for _ in range(50):  # a while: what arrived is read, and would be inflated
            await asyncio.sleep(0.005)
            peak = max([peak, *(connection.messages_queued for connection in connections)])
        # max_queue messages, plus what one read may inflate beyond them (1 MiB, and one message).
        assert peak <= max_queue + 3, f"{peak} messages of 512 KiB queued, max_queue={max_queue}"
        start_reading.set()
        while len(received) < 100:
            await asyncio.sleep(0.01)
    assert received == messages


async def test_send_waits_while_the_write_buffer_is_above_write_limit(
    start_server: StartServer,
) -> None:
    write_limit = 32 * 1024
    blocked: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()

    async def flood(ws: upwire.ServerConnection) -> None:
        blocked_at, blocked_send = await send_until_blocked(ws)
        assert ws.transport is not None
        blocked.set_result((blocked_at, ws.transport.get_write_buffer_size()))
        await blocked_send
        await ws.send("done")
        await ws.recv()

    server = await start_server(flood, write_limit=write_limit, ping_interval=None)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        # A peer that completes the handshake, then does not read.
        peer = await RawPeer.upgraded(server.port)
        blocked_at, buffered = await blocked
        assert buffered > write_limit
        # Now it reads: the blocked send completes and every message arrives, in order.
        indexes = []
        frame = await peer.read_frame()
        while frame.opcode == BINARY:
            indexes.append(index_of(frame.payload))
            frame = await peer.read_frame()
        assert (frame.opcode, frame.payload) == (TEXT, b"done")
        assert indexes == list(range(blocked_at + 1))
        peer.send_close()
        await peer.read_to_eof()


async def test_a_connection_lost_while_send_waits_is_freed_without_the_garbage_collector(
    start_server: StartServer,
) -> None:
    # What a blocked send holds (the write buffer, the recv queue) must go with the connection, not
    # wait for a full collection: a reference cycle through the error would keep megabytes per
    # connection that a peer can pile up by connecting, filling the buffers and resetting.
    refs: list[weakref.ref[upwire.ServerConnection]] = []
    ended: asyncio.Future[type[BaseException]] = asyncio.get_running_loop().create_future()

    async def flood(ws: upwire.ServerConnection) -> None:
        refs.append(weakref.ref(ws))
        try:
            while True:
                await ws.send(b"x" * 65536)
        except upwire.ConnectionClosed as exc:
            ended.set_result(type(exc))  # not the error: its traceback holds the connection

    server = await start_server(flood, ping_interval=None)
    gc.collect()
    gc.disable()
    try:
        async with asyncio.timeout(TEST_TIMEOUT_S):
            peer = await RawPeer.upgraded(server.port)
            while not refs or (ws := refs[0]()) is None or not ws.writing_paused:
                await asyncio.sleep(0.01)
            del ws
            peer.writer.transport.abort()  # a reset: the blocked send fails
            assert await ended is upwire.ConnectionClosedError
            for _ in range(50):
                if refs[0]() is None:
                    break
                await asyncio.sleep(0.01)
            assert refs[0]() is None, gc.get_referrers(refs[0]())
    finally:
        gc.enable()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_task_sending_in_a_loop_learns_of_a_reset(loop: str) -> None:
    """A peer that reads fast, then resets: `while True: await ws.send(...)` raises ConnectionClosed.

    Writing never paused, so the task never yielded; after the reset the transport dropped every frame,
    connection_lost waited for a turn of the loop that never came, and the loop sent into the void at
    full CPU forever (websockets yields there too).
    """
    listener = socket.create_server(("127.0.0.1", 0))

    def read_fast_then_reset() -> None:
        # A thread with blocking reads: it keeps up with any sender, so writing never pauses.
        sock, _ = listener.accept()
        with sock:
            reader, request = RequestReader(), None
            while request is None:
                request = reader.feed(sock.recv(65536))
            sock.sendall(ServerHandshake().accept(request).head)
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline:
                sock.recv(1 << 20)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    async def main() -> int:
        port = listener.getsockname()[1]
        sent = 0
        async with asyncio.timeout(TEST_TIMEOUT_S):
            ws = await upwire.connect(f"ws://127.0.0.1:{port}/", compression=None, proxy=None)
        started = time.monotonic()
        with pytest.raises(upwire.ConnectionClosedError):
            # Bounded by time (the bug never yields, so no asyncio timeout could end it).
            while time.monotonic() - started < TEST_TIMEOUT_S:
                await ws.send(b"x" * 1000)
                sent += 1
        return sent

    peer = threading.Thread(target=read_fast_then_reset)
    peer.start()
    try:
        sent = (uvloop.run if loop == "uvloop" else asyncio.run)(main())
    finally:
        peer.join(TEST_TIMEOUT_S)
        listener.close()
    assert sent > 0


async def test_pong_waits_while_the_write_buffer_is_above_write_limit(
    start_server: StartServer,
) -> None:
    outcome: asyncio.Future[tuple[bool, int]] = asyncio.get_running_loop().create_future()

    async def heartbeat(ws: upwire.ServerConnection) -> None:
        _, blocked_send = await send_until_blocked(ws)
        assert ws.transport is not None
        before = ws.transport.get_write_buffer_size()
        beats = asyncio.gather(*(ws.pong(b"beat") for _ in range(1000)))
        await asyncio.sleep(BLOCKED_AFTER_S)
        outcome.set_result((beats.done(), ws.transport.get_write_buffer_size() - before))
        await asyncio.wait_for(asyncio.gather(beats, blocked_send), TEST_TIMEOUT_S)

    server = await start_server(heartbeat, ping_interval=None)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        peer = await RawPeer.upgraded(server.port)  # does not read
        done, grown = await outcome
        assert not done  # the pongs wait, as a send does
        assert grown <= 1000 * 6  # each was queued (6 bytes), none waits unsent past that
        frame = await peer.read_frame()
        while frame.opcode == BINARY:
            frame = await peer.read_frame()
        assert (frame.opcode, frame.payload) == (PONG, b"beat")


async def test_a_peer_that_pings_without_reading_cannot_grow_the_servers_buffer(
    start_server: StartServer,
) -> None:
    connections: list[upwire.ServerConnection] = []

    async def keep(ws: upwire.ServerConnection) -> None:
        connections.append(ws)
        await ws.wait_closed()

    server = await start_server(keep, ping_interval=None, write_limit=16 * 1024)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        peer = await RawPeer.upgraded(server.port)
        while not connections:
            await asyncio.sleep(0.01)
        transport = connections[0].transport
        assert transport is not None
        # 100,000 pings of 125 bytes: answering each would queue ~12.7 MB of pongs, far beyond the
        # kernel's socket buffers, for a peer that reads none of them.
        ping = encode_frame(PING, b"p" * 125)
        peak = 0
        for _ in range(100):
            peer.write(ping * 1000)
            await peer.writer.drain()
            peak = max(peak, transport.get_write_buffer_size())
        await asyncio.sleep(0.2)
        peak = max(peak, transport.get_write_buffer_size())
        assert peak <= 256 * 1024, f"the server buffered {peak} bytes of pongs"
        # The connection still works once the peer reads: a new ping gets its pong.
        peer.send_frame(PING, b"last")
        frame = await peer.read_frame()
        while frame.payload != b"last":
            frame = await peer.read_frame()
        assert frame.opcode == PONG


@pytest.mark.parametrize(
    "write_limit",
    [None, 64 * 1024, 16 * 1024, 1024 * 1024, (64 * 1024, 60 * 1024), (32 * 1024, None)],
)
@pytest.mark.parametrize(
    "loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"]
)
def test_the_transport_pauses_at_write_limit_and_resumes_at_a_quarter(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
    write_limit: int | tuple[int, int | None] | None,
) -> None:
    # Or where `(high, low)` says, as in websockets.
    # On asyncio's own transport the default (64 KiB) is asyncio's default, so upwire leaves it as is.
    limits: list[tuple[int, int]] = []

    async def record(ws: upwire.ServerConnection) -> None:
        assert ws.transport is not None
        limits.append(ws.transport.get_write_buffer_limits())
        await ws.close()

    async def main() -> None:
        kwargs = {} if write_limit is None else {"write_limit": write_limit}
        async with (
            upwire.serve(record, "127.0.0.1", 0, ping_interval=None, **kwargs) as server,
            upwire.connect(uri(server)) as client,
        ):
            await client.wait_closed()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(asyncio.wait_for(main(), TEST_TIMEOUT_S))
    high, low = write_limit if isinstance(write_limit, tuple) else (write_limit or 64 * 1024, None)
    assert limits == [(high // 4 if low is None else low, high)]


def test_max_queue_none_with_a_low_mark_is_four_times_it_as_in_websockets() -> None:
    options = ConnectionOptions(max_queue=(None, 3))
    assert (options.max_queue, options.queue_low) == (12, 3)
    for low in (-1, 0):
        with pytest.raises(ValueError, match=f"low mark must be positive, not {low!r}"):
            ConnectionOptions(max_queue=(None, low))
    for wrong in ("2", 1.5):
        with pytest.raises(
            TypeError, match=f"low mark must be a whole number or None, not {wrong!r}"
        ):
            ConnectionOptions(max_queue=(None, wrong))  # type: ignore[arg-type]


@pytest.mark.parametrize(("max_queue", "refilled"), [(4, False), ((4, 3), True)])
async def test_reading_resumes_at_the_low_mark_of_max_queue(
    start_server: StartServer, max_queue: int | tuple[int, int], refilled: bool
) -> None:
    # With max_queue=4 reading resumes once the queue is down to 1; with (4, 3), as soon as the
    # application takes one message: the queue fills to 4 again.
    connections: list[upwire.ServerConnection] = []
    took_one = asyncio.Event()
    checked = asyncio.Event()

    async def take_one(ws: upwire.ServerConnection) -> None:
        connections.append(ws)
        while ws.messages_queued < 4:
            await asyncio.sleep(0.01)
        await ws.recv()
        took_one.set()
        await checked.wait()

    server = await start_server(take_one, max_queue=max_queue, ping_interval=None)
    async with asyncio.timeout(TEST_TIMEOUT_S), upwire.connect(uri(server)) as ws:

        async def flood() -> None:
            for index in range(5000):
                await ws.send(numbered(index))

        sending = asyncio.create_task(flood())
        await took_one.wait()
        (connection,) = connections
        for _ in range(50):
            if connection.messages_queued >= 4:
                break
            await asyncio.sleep(0.01)
        # (What one read brought past max_queue before reading paused stays queued: 4 or a few more.)
        assert (connection.messages_queued >= 4) == refilled, connection.messages_queued
        if not refilled:
            assert connection.messages_queued == 3
        checked.set()
        sending.cancel()


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"max_queue": (4, 5)}, ValueError),
        ({"max_queue": (4, -1)}, ValueError),
        ({"write_limit": (1024, 2048)}, ValueError),
        ({"write_limit": (1024, 1, 2)}, TypeError),
        # Sizes that would fail each connection later, with a traceback (a float in a slice bound).
        ({"max_message_size": 1e6}, TypeError),
        ({"max_frame_size": 1.5}, TypeError),
        ({"max_queue": (4.0, 1)}, TypeError),
        ({"max_frame_size": -5}, ValueError),
        ({"max_fragments": 0}, ValueError),
    ],
)
def test_limits_out_of_range_are_refused_by_serve(options: dict[str, object], error: type) -> None:
    with pytest.raises(error):
        upwire.serve(lambda ws: None, "127.0.0.1", 0, **options)  # type: ignore[arg-type,return-value]


@pytest.mark.parametrize("size", [MESSAGE_SIZE, 4])
async def test_closing_with_a_full_queue_reads_on_to_the_close_frame(
    start_server: StartServer, size: int
) -> None:
    """RFC 6455 §7.1.2: after its close frame an endpoint reads until the peer's close frame.

    With `max_queue` messages unread, reading was paused and stayed paused: the close frame behind them
    was never read, and close() took close_timeout and ended with 1006. Now reading resumes, what comes
    past a full queue is dropped, and the queued messages are still there for recv, in order (small
    ones: more than max_queue, as one read brought them).
    """

    async def send_60(ws: upwire.ServerConnection) -> None:
        for index in range(60):
            await ws.send(numbered(index)[:size])
        async for _ in ws:
            pass

    server = await start_server(send_60, close_timeout=5, compression=None)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        # The application takes nothing: after a tenth of close_timeout, reading goes on.
        ws = await upwire.connect(uri(server), close_timeout=2, max_queue=16, compression=None)
        queued = -1
        while ws.messages_queued != queued:  # until reading pauses with the queue full
            queued = ws.messages_queued
            await asyncio.sleep(0.1)
        assert 16 <= queued <= 60
        started = asyncio.get_running_loop().time()
        await ws.close()
        assert asyncio.get_running_loop().time() - started < 1.0
        assert ws.close_code == 1000
        received = [await ws.recv() for _ in range(queued)]
        assert [int.from_bytes(m[:4], "big") for m in received] == list(range(queued))
        if queued == 60:
            with pytest.raises(upwire.ConnectionClosedOK):
                await ws.recv()
        else:
            # The rest was dropped: the end says so (a clean end would pass it off as all there was).
            with pytest.raises(upwire.ConnectionClosedError, match="dropped while closing"):
                await ws.recv()
            with pytest.raises(upwire.ConnectionClosedError):
                async for _ in ws:
                    pass


async def test_a_handler_returning_while_the_client_sends_closes_at_once(
    start_server: StartServer,
) -> None:
    """The server's queue fills with messages its returned handler never reads; its close still completes."""
    closed: list[upwire.ServerConnection] = []

    async def read_one(ws: upwire.ServerConnection) -> None:
        await ws.recv()
        closed.append(ws)

    server = await start_server(read_one, close_timeout=5, max_queue=4, compression=None)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        ws = await upwire.connect(uri(server), close_timeout=5, compression=None)
        for index in range(40):
            await ws.send(numbered(index))
        started = asyncio.get_running_loop().time()
        with pytest.raises(upwire.ConnectionClosedOK):
            await ws.recv()
        await ws.wait_closed()
        assert asyncio.get_running_loop().time() - started < 1.0
        assert ws.close_code == 1000
        await closed[0].wait_closed()
        assert closed[0].close_code == 1000


async def test_a_handler_that_started_closing_and_returned_does_not_wait_for_itself(
    start_server: StartServer,
) -> None:
    """A handler that calls close_now() and returns reads no more: the close goes on at once, without
    waiting a tenth of close_timeout for it to take from its full queue."""
    closing_at: list[float] = []

    async def close_and_return(ws: upwire.ServerConnection) -> None:
        while ws.messages_queued < 4:
            await asyncio.sleep(0.01)
        closing_at.append(asyncio.get_running_loop().time())
        ws.close_now()

    server = await start_server(close_and_return, close_timeout=10, max_queue=4, compression=None)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        ws = await upwire.connect(uri(server), close_timeout=10, compression=None)
        with contextlib.suppress(upwire.ConnectionClosed):
            for index in range(100_000):
                await ws.send(numbered(index))
        await ws.wait_closed()
        assert ws.close_code == 1000
        assert asyncio.get_running_loop().time() - closing_at[0] < 0.5


@pytest.mark.parametrize(
    ("size", "count", "pause", "every", "close_timeout"),
    [(200, 3000, 0.001, 1, 5), (30_000, 200, 0.001, 1, 5), (30_000, 40, 0.05, 1, 5)],
    ids=["small", "large", "slow-reader"],
)
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_closing_while_another_task_reads_loses_no_message(
    loop: str, size: int, count: int, pause: float, every: int, close_timeout: float
) -> None:
    """A task still reading gets every message the peer sent before its close frame, in order.

    It lost them: closing dropped what came past a full queue at once, so a reader that took its time
    (1 ms a message) got a prefix, 46 of 200 30 KB messages on uvloop, and the loop ended as if that
    were all. (Before that the dropped ones left a hole: 0..472, then 2437.) A reader that takes 50 ms a
    message takes one well within the grace (a tenth of close_timeout, from the queue's last refill).
    """
    sent: list[int] = []

    async def flood(ws: upwire.ServerConnection) -> None:
        with contextlib.suppress(upwire.ConnectionClosed):
            for index in range(count):
                await ws.send(f"{index:06d}" + "x" * size)
                sent.append(index)
            await ws.wait_closed()

    async def run() -> list[int]:
        async with (
            asyncio.timeout(TEST_TIMEOUT_S),
            upwire.serve(flood, "127.0.0.1", 0, ping_interval=None, compression=None) as server,
        ):
            ws = await upwire.connect(
                uri(server), max_queue=8, close_timeout=close_timeout, compression=None, proxy=None
            )
            got: list[int] = []

            async def read() -> None:
                async for message in ws:
                    got.append(int(message[:6]))
                    if len(got) % every == 0:
                        await asyncio.sleep(pause)

            reader = asyncio.create_task(read())
            await asyncio.sleep(0.05)
            await ws.close()
            assert ws.close_code == 1000
            await reader
            return got

    got = (uvloop.run if loop == "uvloop" else asyncio.run)(run())
    # Every send that returned put its frame before the server's close frame.
    assert len(got) >= 20
    assert got == list(range(len(got)))
    assert len(got) >= len(sent)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_reader_taking_messages_in_bursts_is_not_given_up_on(loop: str) -> None:
    """The grace counts from the queue's last refill, not from an earlier one.

    A reader that takes 13 messages at once, then waits 50 ms (half the grace), refilled the queue just
    before a timer armed at an earlier refill fired; the timer took the refilled queue for one the
    application had not touched, and dropping started ~50 ms after the reader's last take (100 of 298
    20 KB messages, and a close with 1000).
    """

    async def flood(ws: upwire.ServerConnection) -> None:
        with contextlib.suppress(upwire.ConnectionClosed):
            for index in range(1000):
                await ws.send(f"{index:06d}" + "x" * 20_000)
            await ws.wait_closed()

    async def main() -> tuple[list[int], BaseException | None]:
        async with (
            asyncio.timeout(TEST_TIMEOUT_S),
            upwire.serve(flood, "127.0.0.1", 0, ping_interval=None, compression=None) as server,
        ):
            ws = await upwire.connect(
                uri(server), max_queue=16, close_timeout=1, compression=None, proxy=None
            )
            got: list[int] = []

            async def read() -> BaseException | None:
                while True:
                    for _ in range(13):
                        try:
                            got.append(int((await ws.recv())[:6]))
                        except upwire.ConnectionClosedOK:
                            return None
                        except upwire.ConnectionClosed as exc:
                            return exc
                    await asyncio.sleep(0.05)

            reader = asyncio.create_task(read())
            await asyncio.sleep(0.2)
            await ws.close()
            return got, await reader

    got, ended = (uvloop.run if loop == "uvloop" else asyncio.run)(main())
    assert got == list(range(len(got)))
    # All the server sent before its close frame, or a close that timed out (1006): nothing dropped.
    assert ended is None or "dropped" not in str(ended), ended
    assert ended is not None or len(got) > 100


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_server_shutdown_lets_reading_handlers_read_what_their_clients_sent(loop: str) -> None:
    """`server.close()` closes with 1001, and a handler still reading gets all its client sent first.

    Shutdown closed as a failure, which gave up on the handlers at once: one that read 1 ms a message
    got 537 of 3000, and its `async for` ended quietly.
    """
    received: list[int] = []

    async def read_slowly(ws: upwire.ServerConnection) -> None:
        async for message in ws:
            received.append(int(message[:6]))
            await asyncio.sleep(0.001)

    async def main() -> int:
        async with asyncio.timeout(TEST_TIMEOUT_S):
            server = await upwire.serve(
                read_slowly, "127.0.0.1", 0, max_queue=8, compression=None, ping_interval=None
            )
            ws = await upwire.connect(uri(server), compression=None, proxy=None)
            sent = 0
            for index in range(1000):
                await ws.send(f"{index:06d}" + "x" * 200)
                sent += 1
            await asyncio.sleep(0.05)
            server.close()
            await server.wait_closed()
            assert ws.close_code == 1001
            return sent

    sent = (uvloop.run if loop == "uvloop" else asyncio.run)(main())
    assert received == list(range(sent))


async def test_closing_drops_what_comes_past_a_full_queue_once_nobody_reads(
    start_server: StartServer,
) -> None:
    """The application took nothing for a tenth of close_timeout: reading goes on to the close frame."""

    async def flood(ws: upwire.ServerConnection) -> None:
        with contextlib.suppress(upwire.ConnectionClosed):
            for index in range(100_000):
                await ws.send(numbered(index))

    server = await start_server(flood, close_timeout=5, compression=None)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        ws = await upwire.connect(uri(server), close_timeout=2, max_queue=16, compression=None)
        while ws.messages_queued < 16:
            await asyncio.sleep(0.01)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await ws.close()
        # A tenth of close_timeout (0.2 s) of waiting for the application, then the close frame.
        assert 0.15 < loop.time() - started < 1.5
        assert ws.close_code == 1000
        received = []
        with pytest.raises(upwire.ConnectionClosedError, match="dropped while closing") as ended:
            while True:
                received.append(int.from_bytes((await ws.recv())[:4], "big"))
        assert ended.value.code == 1000
        assert received == list(range(len(received)))
        assert 16 <= len(received) < 1000
