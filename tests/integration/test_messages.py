"""Messages between a real upwire client and server: echo, limits, fragments, concurrency, ping, close."""

from __future__ import annotations

import array
import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from views import odd_views

import upwire

from .helpers import TEST_TIMEOUT_S, StartServer, scheduled_during_round_trips, uri
from .wire import BINARY, CLOSE, CONTINUATION, PONG, TEXT, RawPeer

MESSAGES = {
    "text": "hello",
    "text-non-ascii": "héllo ✓ 😀",
    "binary": b"\x00\x01\xfe\xff",
    "empty-text": "",
    "empty-binary": b"",
    "binary-1MiB": bytes(range(256)) * 4096,
    "text-1MiB": "é" * (1 << 19),
}


@pytest.mark.parametrize("message", list(MESSAGES.values()), ids=list(MESSAGES))
async def test_message_is_echoed_with_its_type_and_content(
    start_server: StartServer, message: str | bytes
) -> None:
    server = await start_server()
    async with asyncio.timeout(TEST_TIMEOUT_S), upwire.connect(uri(server)) as ws:
        await ws.send(message)
        reply = await ws.recv()
        assert type(reply) is type(message)
        assert reply == message


async def test_message_of_exactly_max_message_size_is_accepted(start_server: StartServer) -> None:
    server = await start_server(max_message_size=1000)
    async with asyncio.timeout(TEST_TIMEOUT_S), upwire.connect(uri(server)) as ws:
        await ws.send(b"x" * 1000)
        assert await ws.recv() == b"x" * 1000


async def test_message_just_over_max_message_size_closes_with_1009(
    start_server: StartServer,
) -> None:
    server = await start_server(max_message_size=1000)
    async with asyncio.timeout(TEST_TIMEOUT_S), upwire.connect(uri(server)) as ws:
        await ws.send(b"x" * 1001)
        with pytest.raises(upwire.ConnectionClosedError) as caught:
            await ws.recv()
        assert caught.value.code == 1009
        assert ws.close_code == 1009


async def test_fragmented_message_just_over_max_message_size_closes_with_1009(
    start_server: StartServer,
) -> None:
    server = await start_server(max_message_size=1000)
    async with asyncio.timeout(TEST_TIMEOUT_S), upwire.connect(uri(server)) as ws:
        await ws.send([b"x" * 500, b"x" * 500, b"x"])
        with pytest.raises(upwire.ConnectionClosedError) as caught:
            await ws.recv()
        assert caught.value.code == 1009


async def test_client_receiving_a_message_over_its_limit_closes_with_1009(
    start_server: StartServer,
) -> None:
    server = await start_server()
    async with (
        asyncio.timeout(TEST_TIMEOUT_S),
        upwire.connect(uri(server), max_message_size=100) as ws,
    ):
        await ws.send("y" * 99)
        assert await ws.recv() == "y" * 99
        # The server accepts 101 bytes (its limit is 1 MiB) and echoes them: too big for the client.
        await ws.send("y" * 101)
        with pytest.raises(upwire.ConnectionClosedError) as caught:
            await ws.recv()
        assert caught.value.code == 1009


# ---------------------------------------------------------------------------- fragmented sends


def sync_fragments() -> Iterator[bytes]:
    yield b"ab"
    yield b"cd"
    yield b"ef"


async def async_fragments() -> AsyncIterator[str]:
    for part in ["ab", "cd", "ef"]:
        await asyncio.sleep(0)
        yield part


async def test_list_generator_and_async_generator_each_arrive_as_one_message(
    start_server: StartServer,
) -> None:
    server = await start_server()
    async with asyncio.timeout(TEST_TIMEOUT_S), upwire.connect(uri(server)) as ws:
        await ws.send(["ab", "cd", "ef"])
        assert await ws.recv() == "abcdef"
        await ws.send(sync_fragments())
        assert await ws.recv() == b"abcdef"
        await ws.send(async_fragments())
        assert await ws.recv() == "abcdef"
        await ws.send([])  # no fragments: no message
        await ws.send("after")
        assert await ws.recv() == "after"


@pytest.mark.parametrize(
    ("make_fragments", "first_opcode", "payloads"),
    [
        (lambda: ["ab", "cd", "ef"], TEXT, [b"ab", b"cd", b"ef"]),
        (sync_fragments, BINARY, [b"ab", b"cd", b"ef"]),
        # An async producer's fragments go out as they come; an empty final frame ends the message.
        (async_fragments, TEXT, [b"ab", b"cd", b"ef", b""]),
        (lambda: ["only"], TEXT, [b"only"]),
    ],
    ids=["list", "generator", "async-generator", "single-item"],
)
async def test_fragmented_send_goes_on_the_wire_as_one_frame_per_fragment(
    start_server: StartServer, make_fragments: object, first_opcode: int, payloads: list[bytes]
) -> None:
    async def send_fragments(ws: upwire.ServerConnection) -> None:
        await ws.send(make_fragments())  # type: ignore[operator]
        await ws.recv()  # keep the connection open until the peer has looked

    server = await start_server(send_fragments)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        peer = await RawPeer.upgraded(server.port)
        frames = [await peer.read_frame() for _ in payloads]
        assert [f.payload for f in frames] == payloads
        assert [f.opcode for f in frames] == [first_opcode] + [CONTINUATION] * (len(payloads) - 1)
        assert [f.fin for f in frames] == [False] * (len(payloads) - 1) + [True]
        assert not any(f.masked for f in frames)
        peer.close()


async def test_async_producer_fragment_goes_out_before_the_next_one_is_produced(
    start_server: StartServer,
) -> None:
    # Streaming (tokens of an answer, say): a fragment must not wait for its successor to exist.
    more = asyncio.Event()

    async def producer() -> AsyncIterator[str]:
        yield "first"
        await more.wait()
        yield "second"

    async def send_stream(ws: upwire.ServerConnection) -> None:
        await ws.send(producer())
        await ws.recv()

    server = await start_server(send_stream)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        peer = await RawPeer.upgraded(server.port)
        first = await peer.read_frame()
        assert (first.opcode, first.fin, first.payload) == (TEXT, False, b"first")
        more.set()
        second, last = await peer.read_frame(), await peer.read_frame()
        assert (second.opcode, second.fin, second.payload) == (CONTINUATION, False, b"second")
        assert (last.opcode, last.fin, last.payload) == (CONTINUATION, True, b"")
        peer.close()


async def test_sending_a_dict_raises_type_error_and_sends_nothing(
    start_server: StartServer,
) -> None:
    server = await start_server()
    async with asyncio.timeout(TEST_TIMEOUT_S), upwire.connect(uri(server)) as ws:
        with pytest.raises(TypeError):
            await ws.send({"text": "hello"})  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            await ws.send(42)  # type: ignore[arg-type]
        # The connection is still usable and nothing was sent by the failed calls.
        await ws.send("next")
        assert await ws.recv() == "next"


async def test_fifty_concurrent_senders_never_interleave_frames(
    start_server: StartServer,
) -> None:
    server = await start_server()

    async def slow_fragments(sender: int) -> AsyncIterator[str]:
        for part in range(4):
            await asyncio.sleep(0)
            yield f"[{sender}:{part}]" + "." * 8000

    def expected(sender: int) -> str:
        if sender % 2:
            return "".join(f"[{sender}:{part}]" + "." * 8000 for part in range(4))
        return f"[{sender}:whole]" + "-" * 20000

    async with asyncio.timeout(TEST_TIMEOUT_S), upwire.connect(uri(server)) as ws:

        async def send(sender: int) -> None:
            # Odd senders send fragmented messages, even ones whole messages, all at once.
            if sender % 2:
                await ws.send(slow_fragments(sender))
            else:
                await ws.send(expected(sender))

        await asyncio.gather(*(send(i) for i in range(50)))
        received = [await ws.recv() for _ in range(50)]
        assert sorted(received) == sorted(expected(i) for i in range(50))
        assert ws.state is upwire.State.OPEN


# ---------------------------------------------------------------------------- recv, ping


async def test_second_concurrent_recv_raises_concurrency_error(start_server: StartServer) -> None:
    server = await start_server()
    async with asyncio.timeout(TEST_TIMEOUT_S), upwire.connect(uri(server)) as ws:
        first = asyncio.create_task(ws.recv())
        await asyncio.sleep(0.01)
        with pytest.raises(upwire.ConcurrencyError):
            await ws.recv()
        await ws.send("for the first")
        assert await first == "for the first"


async def test_ping_resolves_with_the_round_trip_time_as_a_float(
    start_server: StartServer,
) -> None:
    server = await start_server()
    async with asyncio.timeout(TEST_TIMEOUT_S), upwire.connect(uri(server)) as ws:
        rtt = await ws.ping()
        assert isinstance(rtt, float)
        assert 0.0 <= rtt < 1.0
        rtt = await ws.ping(b"payload")
        assert isinstance(rtt, float)
        assert ws.latency == rtt  # the last ping answered


def test_round_trips_are_measured_finer_than_uvloops_clock() -> None:
    # uvloop's loop.time() counts whole milliseconds: a round trip on loopback measured with it was 0.0
    # (which also reads as "no ping answered yet" in `latency`).
    import uvloop

    async def main() -> list[float]:
        async with (
            asyncio.timeout(TEST_TIMEOUT_S),
            upwire.serve(lambda ws: ws.wait_closed(), "127.0.0.1", 0) as server,
            upwire.connect(uri(server)) as ws,
        ):
            return [await ws.ping() for _ in range(5)]

    rtts = uvloop.run(main())
    assert all(rtt > 0.0 for rtt in rtts)
    assert any(rtt < 0.001 for rtt in rtts)


async def test_latency_follows_keepalive_pings(start_server: StartServer) -> None:
    server = await start_server()
    async with (
        asyncio.timeout(TEST_TIMEOUT_S),
        upwire.connect(uri(server), ping_interval=0.05) as ws,
    ):
        assert ws.latency == 0.0  # no ping answered yet
        while ws.latency == 0.0:
            await asyncio.sleep(0.02)
        assert 0.0 < ws.latency < 1.0


async def test_pong_sends_an_unsolicited_pong(start_server: StartServer) -> None:
    async def beat(ws: upwire.ServerConnection) -> None:
        await ws.pong(b"beat")
        await ws.pong("caf\u00e9")  # a str goes as its UTF-8
        with pytest.raises(ValueError):
            await ws.pong(b"x" * 126)
        await ws.send("done")
        await ws.wait_closed()
        with pytest.raises(upwire.ConnectionClosed):
            await ws.pong(b"late")

    server = await start_server(beat)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        peer = await RawPeer.upgraded(server.port)
        frames = [await peer.read_frame() for _ in range(3)]
        assert [(f.opcode, f.payload) for f in frames] == [
            (PONG, b"beat"),
            (PONG, "caf\u00e9".encode()),
            (TEXT, b"done"),
        ]
        peer.send_close(1000)
        await peer.read_to_eof()


async def test_ping_and_pong_take_any_buffer_by_its_bytes(start_server: StartServer) -> None:
    ints = array.array("i", range(10))  # 10 items, 40 bytes

    async def beat(ws: upwire.ServerConnection) -> None:
        await ws.pong(ints)
        with pytest.raises(ValueError):
            await ws.pong(array.array("i", range(40)))  # 40 items but 160 bytes: too long
        with pytest.raises(TypeError):
            await ws.pong(12)  # type: ignore[arg-type]
        for call in (ws.pong, ws.ping):
            with pytest.raises(upwire.UsageError, match="not valid Unicode"):
                await call("\ud800")  # a lone surrogate, as send says
        await ws.send("done")
        await ws.wait_closed()

    server = await start_server(beat)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        peer = await RawPeer.upgraded(server.port)
        pong = await peer.read_frame()
        assert (pong.opcode, pong.payload) == (PONG, ints.tobytes())
        assert (await peer.read_frame()).payload == b"done"
        peer.send_close(1000)
        await peer.read_to_eof()
    server = await start_server()
    async with asyncio.timeout(TEST_TIMEOUT_S), upwire.connect(uri(server)) as ws:
        assert await ws.ping(ints) >= 0.0


@pytest.mark.parametrize("call", ["pong", "ping"])
async def test_ping_or_pong_while_closing_waits_for_the_closing_handshake_as_send_does(
    start_server: StartServer, call: str
) -> None:
    # The peer never answers the close: the handshake ends with 1006, and pong and ping say so (not
    # "OK"); nothing is sent after the close frame.
    raised: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

    async def handler(ws: upwire.ServerConnection) -> None:
        ws.close_now()
        try:
            await (ws.pong(b"late") if call == "pong" else ws.ping(b"late"))
        except upwire.ConnectionClosed as exc:
            raised.set_result(exc)

    server = await start_server(handler, close_timeout=0.3)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        peer = await RawPeer.upgraded(server.port)
        assert (await peer.read_frame()).opcode == CLOSE
        # An unsolicited pong with the payload of the ping that was not sent answers nothing.
        peer.send_frame(PONG, b"late")
        error = await raised
        assert isinstance(error, upwire.ConnectionClosedError), error
        assert error.code == 1006
        assert await peer.read_frames_to_eof() == []


async def test_async_with_a_connection_closes_it_with_1000_or_with_1011_on_an_error(
    start_server: StartServer,
) -> None:
    async def handler(ws: upwire.ServerConnection) -> None:
        async with ws:
            if await ws.recv() == "fail":
                raise KeyError("bug in the handler")

    server = await start_server(handler)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        for message, code in (("fine", 1000), ("fail", 1011)):
            ws = await upwire.connect(uri(server))
            async with ws as same:
                assert same is ws
                await ws.send(message)
                await ws.wait_closed()
            assert ws.close_code == code


async def test_recv_decode_returns_text_as_bytes_or_binary_as_text(
    start_server: StartServer,
) -> None:
    async def handler(ws: upwire.ServerConnection) -> None:
        assert await ws.recv(decode=False) == "café".encode()  # text, as its UTF-8
        assert await ws.recv(decode=True) == "ünïcode"  # binary, decoded
        with pytest.raises(UnicodeDecodeError):
            await ws.recv(decode=True)  # binary that is not UTF-8: consumed
        assert await ws.recv(decode=None) == b"binary stays"
        assert await ws.recv(decode=True) == "text stays"
        await ws.send("checked")

    server = await start_server(handler)
    async with asyncio.timeout(TEST_TIMEOUT_S), upwire.connect(uri(server)) as ws:
        for message in ("café", "ünïcode".encode(), b"\xff\xfe", b"binary stays", "text stays"):
            await ws.send(message)
        assert await ws.recv() == "checked"


async def test_send_text_sends_bytes_as_text_and_str_as_binary(start_server: StartServer) -> None:
    async def handler(ws: upwire.ServerConnection) -> None:
        await ws.send("café".encode(), text=True)
        await ws.send(memoryview(b"p-l-a-i-n")[::2], text=True)  # a view with gaps
        await ws.send("as binary", text=False)
        with pytest.raises(ValueError, match="not UTF-8"):
            await ws.send(b"\xff", text=True)  # nothing is sent
        await ws.send([b"caf\xc3", b"\xa9 split", b""], text=True)  # a character across fragments

        async def produce() -> AsyncIterator[bytes]:
            yield b"\xe2\x9c"
            yield b"\x93"

        await ws.send(produce(), text=True)
        await ws.send(["one", "two"], text=False)
        with pytest.raises(ValueError, match="not UTF-8"):
            # A str after a character cut short: the text is checked across fragments of both types.
            await ws.send([b"caf\xc3", "X", b"\xa9"], text=True)
        with pytest.raises(ValueError, match="not UTF-8"):
            await ws.send([b"ends inside \xc3"], text=True)  # checked before the only fragment goes
        await ws.send("last")
        with pytest.raises(ValueError, match="not UTF-8"):
            # A fragment is out when the next turns out not to be UTF-8: the message cannot be finished.
            await ws.send([b"out", b"more", b"\xff"], text=True)

    server = await start_server(handler)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        peer = await RawPeer.upgraded(server.port)
        messages = []
        while len(messages) < 7:
            frame = await peer.read_frame()
            opcode, payload = frame.opcode, frame.payload
            while not frame.fin:
                frame = await peer.read_frame()
                assert frame.opcode == CONTINUATION
                payload += frame.payload
            messages.append((opcode, payload))
        assert messages == [
            (TEXT, "café".encode()),
            (TEXT, b"plain"),
            (BINARY, b"as binary"),
            (TEXT, "café split".encode()),
            (TEXT, "✓".encode()),
            (BINARY, b"onetwo"),
            (TEXT, b"last"),
        ]
        first = await peer.read_frame()
        assert (first.opcode, first.payload, first.fin) == (TEXT, b"out", False)
        close = await peer.read_frame()
        assert close.close_code == 1011


# ---------------------------------------------------------------------------- closing


async def test_async_for_ends_quietly_on_a_1000_close(start_server: StartServer) -> None:
    async def send_two_and_return(ws: upwire.ServerConnection) -> None:
        await ws.send("one")
        await ws.send("two")

    server = await start_server(send_two_and_return)
    async with asyncio.timeout(TEST_TIMEOUT_S), upwire.connect(uri(server)) as ws:
        received = [message async for message in ws]
        assert received == ["one", "two"]
        assert ws.close_code == 1000


async def test_async_for_raises_connection_closed_error_on_an_error_close(
    start_server: StartServer,
) -> None:
    async def send_one_and_fail(ws: upwire.ServerConnection) -> None:
        await ws.send("one")
        await ws.close(4000, "application error")

    server = await start_server(send_one_and_fail)
    async with asyncio.timeout(TEST_TIMEOUT_S), upwire.connect(uri(server)) as ws:
        received = []
        with pytest.raises(upwire.ConnectionClosedError) as caught:
            async for message in ws:
                received.append(message)
        assert received == ["one"]
        assert (caught.value.code, caught.value.reason) == (4000, "application error")


async def test_close_code_and_reason_are_seen_by_both_sides(start_server: StartServer) -> None:
    server_side: asyncio.Future[tuple[int, str, int | None, str]] = (
        asyncio.get_running_loop().create_future()
    )

    async def record_close(ws: upwire.ServerConnection) -> None:
        try:
            await ws.recv()
        except upwire.ConnectionClosed as exc:
            await ws.wait_closed()
            server_side.set_result((exc.code, exc.reason, ws.close_code, ws.close_reason))

    server = await start_server(record_close)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        ws = await upwire.connect(uri(server))
        await ws.close(4000, "reason")
        assert (ws.close_code, ws.close_reason) == (4000, "reason")
        assert await server_side == (4000, "reason", 4000, "reason")


async def test_after_close_send_and_recv_raise_connection_closed(
    start_server: StartServer,
) -> None:
    server = await start_server()
    async with asyncio.timeout(TEST_TIMEOUT_S):
        ws = await upwire.connect(uri(server))
        await ws.close()
        assert ws.state is upwire.State.CLOSED
        with pytest.raises(upwire.ConnectionClosedOK):
            await ws.send("too late")
        with pytest.raises(upwire.ConnectionClosed):
            await ws.send(["too", "late"])
        with pytest.raises(upwire.ConnectionClosedOK):
            await ws.recv()
        with pytest.raises(upwire.ConnectionClosed):
            await ws.ping()
        await ws.close()  # idempotent


async def test_a_message_arriving_as_recv_is_cancelled_is_kept_for_the_next_recv(
    start_server: StartServer,
) -> None:
    async def send_two(ws: upwire.ServerConnection) -> None:
        await ws.recv()
        await ws.send("first")
        await ws.send("second")
        await ws.wait_closed()

    server = await start_server(send_two, ping_interval=None)
    async with asyncio.timeout(TEST_TIMEOUT_S), upwire.connect(uri(server)) as ws:
        receiving = asyncio.create_task(ws.recv())
        await asyncio.sleep(0)  # recv is now waiting
        await ws.send("go")
        # Cancel the waiting recv in the very loop turn the message is handed to it, as a timeout
        # firing at that moment would: the message must not be lost. (A second callback on the waiter
        # makes the loop, not the read, run the task's wakeup, so that the cancellation comes first.)
        original = ws._deliver

        def deliver_then_cancel(events: list[object]) -> None:
            waiter = ws._recv_waiter
            assert waiter is not None
            waiter.add_done_callback(lambda _: None)
            original(events)
            receiving.cancel()

        ws._deliver = deliver_then_cancel  # type: ignore[method-assign]
        with contextlib.suppress(asyncio.CancelledError):
            await receiving
        ws._deliver = original  # type: ignore[method-assign]
        assert await ws.recv() == "first"
        assert await ws.recv() == "second"


async def test_a_waiting_recv_goes_on_in_the_read_that_brings_its_message(
    start_server: StartServer,
) -> None:
    # Its task's wakeup runs in the read, not in a later loop turn: the loop never schedules it.
    handler_tasks: list[asyncio.Task[object] | None] = []

    async def echo_in_own_task(ws: upwire.ServerConnection) -> None:
        handler_tasks.append(asyncio.current_task())
        async for message in ws:
            assert asyncio.current_task() is handler_tasks[0]
            await ws.send(message)

    server = await start_server(echo_in_own_task, ping_interval=None)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        scheduled = await scheduled_during_round_trips(server.port)
    assert handler_tasks[0] is not None
    assert scheduled  # the spy saw the loop's callbacks (the raw peer's, among others)
    assert handler_tasks[0] not in [getattr(callback, "__self__", None) for callback in scheduled]


async def test_a_task_woken_in_a_read_runs_in_its_own_context(start_server: StartServer) -> None:
    owner: contextvars.ContextVar[str] = contextvars.ContextVar("owner")

    async def answer_with_owner(ws: upwire.ServerConnection) -> None:
        owner.set(ws.request.path if ws.request is not None else "?")
        async for message in ws:
            await ws.send(f"{owner.get()} {message}")

    server = await start_server(answer_with_owner, ping_interval=None)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        first = await RawPeer.upgraded(server.port, "/a")
        second = await RawPeer.upgraded(server.port, "/b")
        for i in range(10):
            first.send_frame(TEXT, f"{i}")
            second.send_frame(TEXT, f"{i}")
            assert (await first.read_frame()).payload == f"/a {i}".encode()
            assert (await second.read_frame()).payload == f"/b {i}".encode()
    assert owner.get(None) is None  # nothing leaked into this test's context


async def _a_waiting_recv(ws: upwire.ClientConnection) -> tuple[asyncio.Task[object], Any]:
    """A task waiting in `ws.recv()`, and the context its wakeup runs in."""
    receiving: asyncio.Task[object] = asyncio.create_task(ws.recv())
    await asyncio.sleep(0)  # recv is now waiting
    waiter = ws._recv_waiter
    assert waiter is not None
    ((_, task_context),) = waiter._callbacks
    return receiving, task_context


async def test_a_message_read_in_the_waiting_tasks_own_context_still_reaches_it(
    start_server: StartServer,
) -> None:
    # The read cannot enter the task's context while it is the current one: the loop wakes the task.
    server = await start_server(lambda ws: ws.wait_closed(), ping_interval=None)
    async with asyncio.timeout(TEST_TIMEOUT_S), upwire.connect(uri(server)) as ws:
        receiving, task_context = await _a_waiting_recv(ws)
        asyncio.get_running_loop().call_soon(ws.data_received, b"\x81\x02hi", context=task_context)
        assert await receiving == "hi"


async def test_a_message_read_while_a_task_runs_still_reaches_the_waiting_task(
    start_server: StartServer,
) -> None:
    # asyncio steps no task inside another: the loop wakes the waiting one.
    server = await start_server(lambda ws: ws.wait_closed(), ping_interval=None)
    async with asyncio.timeout(TEST_TIMEOUT_S), upwire.connect(uri(server)) as ws:
        receiving, _ = await _a_waiting_recv(ws)
        ws.data_received(b"\x81\x02hi")  # from this test's task
        assert await receiving == "hi"


async def test_a_fragment_iterator_failing_before_anything_was_sent_leaves_the_connection_open(
    start_server: StartServer,
) -> None:
    from .helpers import echo

    def broken() -> Iterator[str]:
        yield "first piece"
        raise ValueError("the source of the fragments failed")

    server = await start_server(echo, ping_interval=None)
    async with asyncio.timeout(TEST_TIMEOUT_S), upwire.connect(uri(server)) as ws:
        with pytest.raises(ValueError, match="source of the fragments"):
            await ws.send(broken())
        await ws.send("still open")
        assert await ws.recv() == "still open"
        assert ws.close_code is None


@pytest.mark.parametrize("compression", ["deflate", None])
async def test_a_memoryview_of_ints_or_with_strides_goes_out_as_its_bytes_both_ways(
    start_server: StartServer, compression: str | None
) -> None:
    """A memoryview's `len` counts items: 20000 ints are 80000 bytes, and the frame must say 80000."""
    sizes = [64, 80000]

    async def send_views(ws: upwire.ServerConnection) -> None:
        for size in sizes:
            for view in odd_views(bytes(range(256)) * (size // 256) + bytes(size % 256)):
                await ws.send(view)
        await ws.wait_closed()

    server = await start_server(send_views, compression=compression)
    echo = await start_server(compression=compression)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with upwire.connect(uri(server), compression=compression) as ws:
            for size in sizes:
                data = bytes(range(256)) * (size // 256) + bytes(size % 256)
                for _ in range(3):
                    assert await ws.recv() == data
        async with upwire.connect(uri(echo), compression=compression) as ws:
            for size in sizes:
                data = bytes(range(256)) * (size // 256) + bytes(size % 256)
                for view in odd_views(data):
                    await ws.send(view)
                    assert await ws.recv() == data
                await ws.send(odd_views(data))  # one message in three fragments
                assert await ws.recv() == data * 3


@pytest.mark.parametrize(
    ("fragments", "error"),
    [
        (["abc", b"def"], upwire.UsageError),  # the last fragment's type differs from the first's
        (["ok", "\ud800"], upwire.UsageError),  # the last fragment cannot be encoded
        (["a", b"b", "c"], upwire.UsageError),  # the same in the middle
    ],
)
async def test_a_fragmented_message_failing_once_a_fragment_is_out_closes_with_1011(
    start_server: StartServer, fragments: list[str | bytes], error: type[Exception]
) -> None:
    server = await start_server(ping_interval=None)
    async with asyncio.timeout(TEST_TIMEOUT_S), upwire.connect(uri(server)) as ws:
        with pytest.raises(error):
            await ws.send(fragments)
        # The peer got a first fragment and must not wait for the rest forever.
        await ws.wait_closed()
        assert ws.close_code == 1011


async def test_a_send_racing_this_sides_close_raises_connection_closed_ok(
    start_server: StartServer,
) -> None:
    server = await start_server(ping_interval=None)
    async with asyncio.timeout(TEST_TIMEOUT_S), upwire.connect(uri(server)) as ws:
        closing = asyncio.create_task(ws.close())
        await asyncio.sleep(0)  # the close frame is out; the server's answer is not in yet
        with pytest.raises(upwire.ConnectionClosedOK) as caught:
            await ws.send("too late")
        await closing
        assert (caught.value.code, caught.value.sent) == (1000, (1000, ""))
        assert ws.close_code == 1000


async def test_a_send_after_a_fragmented_message_failed_says_why_the_connection_closed(
    start_server: StartServer,
) -> None:
    server = await start_server(ping_interval=None)
    async with asyncio.timeout(TEST_TIMEOUT_S), upwire.connect(uri(server)) as ws:
        with pytest.raises(upwire.UsageError):
            await ws.send(["abc", b"def"])
        with pytest.raises(upwire.ConnectionClosedError) as caught:
            await ws.send("after")
        assert caught.value.code == 1011
        assert caught.value.sent == (1011, "message could not be completed")
