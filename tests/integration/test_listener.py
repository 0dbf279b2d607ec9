"""The low-level API: `serve(ListenerSubclass, ...)` calls back per message; `send_now` answers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import pytest
import uvloop

import upwire

from .helpers import TEST_TIMEOUT_S, StartServer, uri
from .wire import BINARY, CLOSE, PING, PONG, TEXT, RawPeer, encode_frame


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


class BrokenCounting(upwire.Listener):
    calls: ClassVar[list[str | bytes]] = []
    closes: ClassVar[int] = 0

    def on_message(self, connection: upwire.Connection, message: str | bytes) -> None:
        BrokenCounting.calls.append(message)
        raise RuntimeError("listener bug")

    def on_close(self, connection: upwire.Connection) -> None:
        BrokenCounting.closes += 1


async def test_a_failed_listener_gets_no_more_messages_and_is_logged_once(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    # A peer that goes on sending after the 1011 instead of answering it made a call, and a logged
    # traceback, per read until close_timeout (thousands a second); on_close still comes.
    BrokenCounting.calls.clear()
    BrokenCounting.closes = 0
    server = await start_server(BrokenCounting, ping_interval=None, close_timeout=1.0)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        peer = await RawPeer.upgraded(server.port)
        peer.send_frame(TEXT, "first")
        frame = await peer.read_frame()
        assert (frame.opcode, frame.close_code) == (CLOSE, 1011)
        for index in range(50):
            peer.send_frame(TEXT, f"more {index}")
            await asyncio.sleep(0.002)  # one read each
        peer.send_close(1000)
        assert await peer.read_frames_to_eof() == []
    await asyncio.sleep(0.05)
    assert BrokenCounting.calls == ["first"]
    assert caplog.text.count("listener failed") == 1
    assert BrokenCounting.closes == 1


class Relay(upwire.Listener):
    """/a relays to the connection on /b (if any); answers "relayed" after relaying."""

    targets: ClassVar[list[upwire.Connection]] = []

    def on_open(self, connection: upwire.Connection) -> None:
        if connection.request is not None and connection.request.path == "/b":
            Relay.targets.append(connection)

    def on_message(self, connection: upwire.Connection, message: str | bytes) -> None:
        for target in Relay.targets:
            target.send_now(message)
        connection.send_now("relayed")


async def test_relaying_to_a_connection_that_closed_is_no_failure_of_the_sender(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    # A member leaving a room is still in it until its on_close: a send_now to it raises
    # ConnectionClosed, which ends the callback (at debug level) but is no failure of the sender. Made
    # one, it failed every talker of a room in turn, each still in the room while it closed.
    Relay.targets.clear()
    server = await start_server(Relay, ping_interval=None)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with upwire.connect(uri(server, "/b")) as b:
            await b.send("hello")
            assert await b.recv() == "hello"  # its own message, relayed to itself first
            assert await b.recv() == "relayed"
        async with upwire.connect(uri(server, "/a")) as a:
            await a.send("to a closed one")
            await a.ping()  # answered: the connection goes on
            assert a.close_code is None
    assert "listener failed" not in caplog.text


class Streaming(upwire.Listener):
    """Starts a fragmented message from a task on "stream"; answers other messages with send_now."""

    seen: ClassVar[list[object]] = []

    def on_message(self, connection: upwire.Connection, message: str | bytes) -> None:
        if message == "stream":
            release = asyncio.Event()
            Streaming.release = release

            async def fragments() -> Any:
                yield "part 1, "
                await release.wait()
                yield "part 2"

            asyncio.get_running_loop().create_task(connection.send(fragments()))
            return
        Streaming.seen.append(connection.fragmenting)
        try:
            connection.send_now(message)
        except upwire.UsageError as exc:
            Streaming.seen.append(str(exc))

    release: ClassVar[asyncio.Event]


async def test_send_now_during_a_fragmented_send_is_a_usage_error_that_fragmenting_foretells(
    start_server: StartServer,
) -> None:
    # No message may go between another's fragments (RFC 6455 §5.4); `send` waits its turn, send_now
    # cannot: it raises, and `connection.fragmenting` says so beforehand.
    Streaming.seen = []
    server = await start_server(Streaming, ping_interval=None)
    async with asyncio.timeout(TEST_TIMEOUT_S), upwire.connect(uri(server)) as ws:
        await ws.send("stream")
        await asyncio.sleep(0.05)
        await ws.send("in between")
        while len(Streaming.seen) < 2:
            await asyncio.sleep(0.01)
        Streaming.release.set()
        assert await ws.recv() == "part 1, part 2"
        await ws.send("after")
        assert await ws.recv() == "after"
    assert Streaming.seen[0] is True
    assert "fragmented" in str(Streaming.seen[1])
    assert Streaming.seen[2] is False  # "after": the fragmented message had ended


async def test_recv_on_a_listeners_connection_is_a_usage_error(start_server: StartServer) -> None:
    errors: list[BaseException] = []

    class Receiver(upwire.Listener):
        def on_open(self, connection: upwire.Connection) -> None:
            async def receive() -> None:
                try:
                    await connection.recv()
                except upwire.UsageError as exc:
                    errors.append(exc)
                try:
                    async for _ in connection:
                        pass
                except upwire.UsageError as exc:
                    errors.append(exc)

            asyncio.get_running_loop().create_task(receive())

    server = await start_server(Receiver, ping_interval=None)
    async with asyncio.timeout(TEST_TIMEOUT_S), upwire.connect(uri(server)):
        while len(errors) < 2:
            await asyncio.sleep(0.01)
    assert all("on_message" in str(error) for error in errors)


async def test_a_recv_begun_during_a_listeners_handshake_is_a_usage_error(
    start_server: StartServer,
) -> None:
    # From an async process_request: the connection gets its Listener only with the 101.
    errors: list[BaseException] = []

    async def receive(connection: upwire.ServerConnection) -> None:
        try:
            await connection.recv()
        except upwire.UsageError as exc:
            errors.append(exc)

    async def hook(connection: upwire.ServerConnection, request: upwire.Request) -> None:
        asyncio.get_running_loop().create_task(receive(connection))
        await asyncio.sleep(0.05)

    server = await start_server(Echo, process_request=hook, ping_interval=None)
    async with asyncio.timeout(TEST_TIMEOUT_S), upwire.connect(uri(server)) as ws:
        assert await ws.recv() == "welcome"
        for _ in range(100):
            if errors:
                break
            await asyncio.sleep(0.01)
    assert errors and "on_message" in str(errors[0])


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


class CloseOnFirst(upwire.Listener):
    def __init__(self) -> None:
        self.messages: list[str | bytes] = []
        LISTENERS.append(self)

    def on_message(self, connection: upwire.Connection, message: str | bytes) -> None:
        self.messages.append(message)
        connection.send_now(message)  # raises ConnectionClosed once this side has closed
        connection.close_now(4001, "done")


LISTENERS: list[CloseOnFirst] = []


async def test_a_listener_answering_after_its_close_gets_the_rest_of_the_read_without_an_error(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    LISTENERS.clear()
    server = await start_server(CloseOnFirst, ping_interval=None)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        peer = await RawPeer.upgraded(server.port)
        peer.write(b"".join(encode_frame(TEXT, f"m{index}") for index in range(3)))
        # send_now raising ConnectionClosed for the second and third message is the closing
        # connection's doing: the close stays 4001 (not 1011), and every message was delivered.
        frame = await peer.read_frame()
        assert (frame.opcode, frame.payload) == (TEXT, b"m0")
        frame = await peer.read_frame()
        assert (frame.opcode, frame.close_code) == (CLOSE, 4001)
        peer.send_close(4001)
        assert await peer.read_frames_to_eof() == []
        assert LISTENERS[0].messages == ["m0", "m1", "m2"]
        assert "listener failed" not in caplog.text


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
    for _ in range(count):
        peer.send_frame(BINARY, message)
        await peer.writer.drain()


class Amplify(upwire.Listener):
    """Answers each 8-byte message with 8 KiB: a small read asks for a great deal of writing."""

    def __init__(self) -> None:
        self.delivered = 0
        self.peak = 0
        self.closed_after: int | None = None

    def on_open(self, connection: upwire.Connection) -> None:
        AMPLIFIERS.append((self, connection))

    def on_message(self, connection: upwire.Connection, message: str | bytes) -> None:
        self.delivered += 1
        assert isinstance(message, bytes)
        connection.send_now(message * 1024)
        transport = connection.transport
        assert transport is not None
        self.peak = max(self.peak, transport.get_write_buffer_size())

    def on_close(self, connection: upwire.Connection) -> None:
        self.closed_after = self.delivered


AMPLIFIERS: list[tuple[Amplify, upwire.Connection]] = []
BURST = 20_000  # 8-byte messages: 280 KB of frames, 160 MiB of answers


def _burst() -> bytes:
    return b"".join(
        encode_frame(BINARY, index.to_bytes(8, "big"), mask_key=b"\0\0\0\0")
        for index in range(BURST)
    )


LOOPS = pytest.mark.parametrize(
    "loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"]
)


def _with_amplifier(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
    body: Callable[[Any, upwire.Connection, RawPeer], Awaitable[None]],
    listener_class: type[Amplify] = Amplify,
) -> None:
    """Run `body` on a fresh loop against an Amplify server, with a raw peer that completed the upgrade."""

    async def main() -> None:
        AMPLIFIERS.clear()
        async with upwire.serve(
            listener_class,
            "127.0.0.1",
            0,
            ping_interval=None,
            write_limit=64 * 1024,
            max_message_size=64 * 1024,
            shutdown_timeout=2.0,
        ) as server:
            peer = await RawPeer.upgraded(server.port)
            while not AMPLIFIERS:
                await asyncio.sleep(0.01)
            listener, connection = AMPLIFIERS[0]
            await body(listener, connection, peer)

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(asyncio.wait_for(main(), TEST_TIMEOUT_S))


@LOOPS
def test_a_listener_gets_no_more_of_a_read_than_its_unread_answers_allow(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    _with_amplifier(loop_factory, _one_read_asks_for_150_mib)


async def _one_read_asks_for_150_mib(
    listener: Amplify, connection: upwire.Connection, peer: RawPeer
) -> None:
    peer.write(_burst())
    peer.send_frame(PING, b"after the burst")
    peer.send_close(1000)
    # The peer reads nothing yet: one read of the burst would ask for ~150 MiB of answers. Delivery
    # stops once write_limit + max_message_size wait to be written (plus the answers held for one
    # write, at most write_limit, and one answer).
    for _ in range(50):
        await asyncio.sleep(0.01)
    assert listener.delivered < BURST
    assert listener.peak <= (64 + 64 + 64 + 8) * 1024, f"write buffer reached {listener.peak}"
    # Once the peer reads, every answer comes, in order, and the pong (a control frame may come
    # between them: the core answers a ping as it parses it), then the close.
    answers, pongs = [], []
    while len(answers) < BURST:
        frame = await peer.read_frame()
        (answers if frame.opcode == BINARY else pongs).append(frame)
    assert [frame.payload for frame in answers] == [
        index.to_bytes(8, "big") * 1024 for index in range(BURST)
    ]
    assert listener.peak <= (64 + 64 + 64 + 8) * 1024, f"write buffer reached {listener.peak}"
    if not pongs:
        pongs.append(await peer.read_frame())
    assert [(frame.opcode, frame.payload) for frame in pongs] == [(PONG, b"after the burst")]
    frame = await peer.read_frame()
    assert (frame.opcode, frame.close_code) == (CLOSE, 1000)
    await connection.wait_closed()
    assert listener.closed_after == BURST


@LOOPS
def test_a_listener_gets_the_messages_of_a_read_kept_back_when_the_connection_is_lost(
    loop_factory: Callable[[], asyncio.AbstractEventLoop], caplog: pytest.LogCaptureFixture
) -> None:
    _with_amplifier(loop_factory, _reset_while_a_read_is_kept_back)
    assert "listener failed" not in caplog.text


async def _reset_while_a_read_is_kept_back(
    listener: Amplify, connection: upwire.Connection, peer: RawPeer
) -> None:
    peer.write(_burst())
    while listener.delivered == 0 or not connection.writing_paused:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    delivered = listener.delivered
    kept = len(connection._stashed or ())
    assert kept > 0, "the read that stopped delivery had no messages left"
    peer.writer.transport.abort()  # a reset: the answers can never go out
    await connection.wait_closed()
    # Every message the server read was given to the listener before on_close; the answers to those
    # after the reset could not be sent, which is not the listener's failure.
    assert listener.closed_after == delivered + kept


class FailsOnResume(Amplify):
    failed_at: int | None = None

    def on_writing_resumed(self, connection: upwire.Connection) -> None:
        if self.failed_at is None:
            connection.send_now(
                bytes(8 << 20)
            )  # writing pauses again: the read's rest stays kept back
            self.failed_at = self.delivered
            raise RuntimeError("bug in on_writing_resumed")


@LOOPS
def test_a_failed_listener_gets_none_of_the_messages_kept_back_when_the_connection_is_lost(
    loop_factory: Callable[[], asyncio.AbstractEventLoop], caplog: pytest.LogCaptureFixture
) -> None:
    _with_amplifier(loop_factory, _reset_after_the_listener_failed, FailsOnResume)
    assert caplog.text.count("listener failed") == 1


async def _reset_after_the_listener_failed(
    listener: FailsOnResume, connection: upwire.Connection, peer: RawPeer
) -> None:
    peer.write(_burst())
    while listener.failed_at is None:
        await peer.reader.read(1 << 20)  # the answers drain: writing resumes
    await asyncio.sleep(0.1)
    peer.writer.transport.abort()
    await connection.wait_closed()
    # The messages kept back for resume_writing went to the failed listener at the loss (thousands).
    assert listener.closed_after == listener.failed_at


class FailsOnPingAnswer(Amplify):
    failed = False

    def on_ping(self, connection: upwire.Connection, data: bytes) -> None:
        connection.send_now(bytes(8 << 20))  # more than the socket takes: on_writing_paused at once

    def on_writing_paused(self, connection: upwire.Connection) -> None:
        self.failed = True
        raise RuntimeError("bug in on_writing_paused")


@LOOPS
def test_a_listener_that_fails_answering_a_ping_gets_none_of_the_rest_of_the_read(
    loop_factory: Callable[[], asyncio.AbstractEventLoop], caplog: pytest.LogCaptureFixture
) -> None:
    _with_amplifier(loop_factory, _ping_then_messages, FailsOnPingAnswer)
    assert caplog.text.count("listener failed") == 1


async def _ping_then_messages(
    listener: FailsOnPingAnswer, connection: upwire.Connection, peer: RawPeer
) -> None:
    peer.write(
        encode_frame(PING, b"p", mask_key=b"\0\0\0\0")
        + b"".join(encode_frame(BINARY, bytes(8), mask_key=b"\0\0\0\0") for _ in range(3))
    )
    while not listener.failed:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    peer.writer.transport.abort()
    await connection.wait_closed()
    assert listener.delivered == 0
    assert listener.closed_after == 0


class ClosesWhenPaused(Amplify):
    def on_writing_paused(self, connection: upwire.Connection) -> None:
        connection.close_now(4000, "enough")

    def on_writing_resumed(self, connection: upwire.Connection) -> None:
        connection.send_now(b"resumed")  # ConnectionClosed: this connection is closing


@LOOPS
def test_a_listener_sending_on_its_closing_connection_from_on_writing_resumed_is_no_failure(
    loop_factory: Callable[[], asyncio.AbstractEventLoop], caplog: pytest.LogCaptureFixture
) -> None:
    # As from on_message: expected, not "listener failed" (which then dropped the kept messages).
    _with_amplifier(loop_factory, _read_to_the_close, ClosesWhenPaused)
    assert "listener failed" not in caplog.text


async def _read_to_the_close(
    listener: ClosesWhenPaused, connection: upwire.Connection, peer: RawPeer
) -> None:
    peer.write(_burst())
    while True:
        frame = await peer.read_frame()
        if frame.opcode == CLOSE:
            break
    assert frame.close_code == 4000
    peer.send_close(4000)
    await connection.wait_closed()
    assert listener.closed_after is not None and listener.closed_after > 1


async def test_a_listener_whose_constructor_raises_gets_a_500_not_a_101(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    class NeedsArgument(upwire.Listener):
        def __init__(self, database: object) -> None:
            self.database = database

    server = await start_server(NeedsArgument)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        peer = await RawPeer.connect(server.port)
        response = await peer.upgrade()
        assert response.status == 500
        # Nothing but that answer: no 101 before it, no second head after it.
        assert await peer.reader.read() == b"Internal server error.\n"
        peer.close()
    assert "error while opening a connection" in caplog.text
