"""Frames sent in one loop iteration are written together; order, content and limits are kept."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Callable
from typing import ClassVar

import pytest

import upwire
from upwire.connection import Connection, ConnectionOptions
from upwire.protocol import connection as core

from .helpers import TEST_TIMEOUT_S, StartServer, scheduled_during_round_trips
from .wire import BINARY, TEXT, RawPeer, encode_frame


async def test_a_burst_of_sends_in_one_step_arrives_complete_and_in_order(
    start_server: StartServer,
) -> None:
    async def burst(ws: upwire.ServerConnection) -> None:
        await ws.recv()
        for i in range(2000):  # no await yields here: every frame is queued in the same iteration
            await ws.send(f"message {i}" if i % 2 else f"binary {i}".encode())
        await ws.recv()

    server = await start_server(burst, ping_interval=None)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        peer = await RawPeer.upgraded(server.port)
        peer.send_frame(TEXT, "go")
        frames = [await peer.read_frame() for _ in range(2000)]
    for i, frame in enumerate(frames):
        assert frame.fin
        if i % 2:
            assert (frame.opcode, frame.payload) == (TEXT, f"message {i}".encode())
        else:
            assert (frame.opcode, frame.payload) == (BINARY, f"binary {i}".encode())


async def test_a_lone_message_is_written_before_the_sender_yields(
    start_server: StartServer,
) -> None:
    written: list[int] = []

    async def one(ws: upwire.ServerConnection) -> None:
        await ws.recv()
        transport = ws.transport
        assert transport is not None
        before = transport.get_write_buffer_size()
        await ws.send("now")
        # Nothing is left for a later iteration: the frame went to the socket (or its buffer) at once.
        written.append(transport.get_write_buffer_size() - before)
        written.append(len(ws.protocol.data_to_send()) if ws.protocol else -1)
        await ws.recv()

    server = await start_server(one, ping_interval=None)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        peer = await RawPeer.upgraded(server.port)
        peer.send_frame(TEXT, "go")
        frame = await peer.read_frame()
    assert (frame.opcode, frame.payload) == (TEXT, b"now")
    assert written[1] == 0


async def test_frames_held_by_many_connections_in_one_loop_turn_all_go_out_in_order(
    start_server: StartServer,
) -> None:
    count = 20
    ready = asyncio.Event()
    greeted: list[int] = []
    held: list[int] = []

    async def three_at_once(ws: upwire.ServerConnection) -> None:
        await ws.recv()
        greeted.append(1)
        if len(greeted) == count:
            ready.set()
        await ready.wait()  # every task resumes in the same loop iteration
        name = ws.request.path if ws.request else "?"
        # The first goes out at once, the two after it are held for the end of the loop turn.
        for i in range(3):
            await ws.send(f"{name} {i}")
        protocol = ws.protocol
        assert protocol is not None
        held.append(len(protocol._outgoing))
        await ws.recv()

    server = await start_server(three_at_once, ping_interval=None)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        peers = [await RawPeer.upgraded(server.port, f"/{n}") for n in range(count)]
        for peer in peers:
            peer.send_frame(TEXT, "go")
        for n, peer in enumerate(peers):
            payloads = [(await peer.read_frame()).payload for _ in range(3)]
            assert payloads == [f"/{n} {i}".encode() for i in range(3)]
    assert held == [2] * count


async def test_empty_messages_held_after_one_written_at_once_go_out_in_the_same_turn(
    start_server: StartServer,
) -> None:
    async def empties(ws: upwire.ServerConnection) -> None:
        await ws.recv()
        # The first is written at once; the empty ones after it are held for the end of the turn.
        await ws.send("first")
        await ws.send("")
        await ws.send(b"")
        await asyncio.sleep(TEST_TIMEOUT_S)  # nothing else comes to take them along

    server = await start_server(empties, ping_interval=None)
    async with asyncio.timeout(TEST_TIMEOUT_S / 2):
        peer = await RawPeer.upgraded(server.port)
        peer.send_frame(TEXT, "go")
        frames = [await peer.read_frame() for _ in range(3)]
    assert [(frame.opcode, frame.payload) for frame in frames] == [
        (TEXT, b"first"),
        (TEXT, b""),
        (BINARY, b""),
    ]


def test_a_loop_closed_while_a_connection_waits_for_its_flush_is_freed() -> None:
    # The end-of-iteration flush is shared by a loop's connections; it must not keep the loop alive.
    loop = asyncio.new_event_loop()
    connection = Connection(ConnectionOptions(), loop)
    connection._schedule_flush()  # a callback queued on a loop that will never run it
    loop.close()
    loop_ref = weakref.ref(loop)
    del loop, connection
    gc.collect()
    assert loop_ref() is None


async def test_coalesced_frames_never_exceed_write_limit_before_reaching_the_transport(
    start_server: StartServer,
) -> None:
    pending: list[int] = []

    async def big_burst(ws: upwire.ServerConnection) -> None:
        await ws.recv()
        for _ in range(50):
            await ws.send(b"x" * 10_000)
            protocol = ws.protocol
            assert protocol is not None
            pending.append(sum(len(chunk) for chunk in protocol._outgoing))
        await ws.recv()

    server = await start_server(big_burst, ping_interval=None, write_limit=32 * 1024)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        peer = await RawPeer.upgraded(server.port)
        peer.send_frame(TEXT, "go")
        frames = [await peer.read_frame() for _ in range(50)]
    assert all(frame.payload == b"x" * 10_000 for frame in frames)
    assert max(pending) <= 32 * 1024 + 10_000 + 16


class QueueingEcho(upwire.Listener):
    """Echoes, and notes how many frames wait in the core after each answer."""

    waiting: ClassVar[list[int]] = []

    def on_message(self, connection: upwire.Connection, message: str | bytes) -> None:
        connection.send_now(message)
        protocol = connection.protocol
        assert protocol is not None
        QueueingEcho.waiting.append(len(protocol._outgoing))


async def test_a_listeners_answers_to_one_read_are_written_together_when_the_read_is_done(
    start_server: StartServer,
) -> None:
    QueueingEcho.waiting = []
    server = await start_server(QueueingEcho, ping_interval=None)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        # Their answers wait for the read's end instead of the first going out alone.
        await _fifty_in_one_write_then_one_alone(server.port)
    assert QueueingEcho.waiting[0] == 1
    assert (
        max(QueueingEcho.waiting[:50]) > 10
    )  # answers piled up within a read, not sent one by one
    assert QueueingEcho.waiting[-1] == 0  # the answer to a read of one message: written at once


async def test_a_tasks_answers_to_one_reads_messages_are_written_together(
    start_server: StartServer,
) -> None:
    held: list[int] = []

    async def answer_each(ws: upwire.ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)
            protocol = ws.protocol
            assert protocol is not None
            held.append(len(protocol._outgoing))

    server = await start_server(answer_each, ping_interval=None)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        # The task finds the messages after the first already queued, and its answers wait for the
        # answer to the last of them instead of going out one by one.
        await _fifty_in_one_write_then_one_alone(server.port)
    assert max(held[:50]) > 10  # answers piled up while messages were queued
    assert held[49] == 0 and held[-1] == 0  # the last answer of the batch and the lone one: written


async def test_lone_answers_schedule_no_loop_callback(start_server: StartServer) -> None:
    # A lone answer goes out at once; holding frames after it must not cost an extra loop turn per message.
    async def echo(ws: upwire.ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    server = await start_server(echo, ping_interval=None)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        scheduled = await scheduled_during_round_trips(server.port)
    names = [getattr(callback, "__qualname__", "") for callback in scheduled]
    assert names  # the spy saw the loop's callbacks (the raw peer's, among others)
    assert "_IterationFlush._run" not in names


async def test_a_second_send_after_waiting_for_something_else_goes_out_in_that_loop_turn(
    start_server: StartServer,
) -> None:
    # The first send was written at once and nothing was read or written since: the second is held for
    # the end of its loop turn, and must still go out without anything else coming.
    async def two_apart(ws: upwire.ServerConnection) -> None:
        await ws.recv()
        await ws.send("first")
        await asyncio.sleep(0.01)
        await ws.send("second")
        await asyncio.sleep(TEST_TIMEOUT_S)

    server = await start_server(two_apart, ping_interval=None)
    async with asyncio.timeout(TEST_TIMEOUT_S / 2):
        peer = await RawPeer.upgraded(server.port)
        peer.send_frame(TEXT, "go")
        frames = [await peer.read_frame() for _ in range(2)]
    assert [frame.payload for frame in frames] == [b"first", b"second"]


async def test_an_answer_held_for_queued_messages_is_written_in_the_same_loop_turn_if_none_follows(
    start_server: StartServer,
) -> None:
    async def answer_first_then_wait(ws: upwire.ServerConnection) -> None:
        await ws.send(await ws.recv())  # held: the second message is queued
        await asyncio.sleep(TEST_TIMEOUT_S)  # and no further answer comes to take it along

    server = await start_server(answer_first_then_wait, ping_interval=None)
    async with asyncio.timeout(TEST_TIMEOUT_S / 2):
        peer = await RawPeer.upgraded(server.port)
        peer.write(encode_frame(TEXT, "first") + encode_frame(TEXT, "second"))
        frame = await peer.read_frame()
    assert frame.payload == b"first"


async def test_held_answers_never_exceed_write_limit(start_server: StartServer) -> None:
    held: list[int] = []

    async def answer_each(ws: upwire.ServerConnection) -> None:
        async for message in ws:
            await ws.send(message * 8)
            protocol = ws.protocol
            assert protocol is not None
            held.append(sum(len(chunk) for chunk in protocol._outgoing))

    server = await start_server(answer_each, ping_interval=None, write_limit=16 * 1024)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        peer = await RawPeer.upgraded(server.port)
        peer.write(b"".join(encode_frame(BINARY, bytes([i]) * 300) for i in range(100)))
        frames = [await peer.read_frame() for _ in range(100)]
    assert [frame.payload for frame in frames] == [bytes([i]) * 2400 for i in range(100)]
    assert 0 < max(held) <= 16 * 1024 + 2400 + 16


def _count_flushes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Note how many chunks the core hands over each time its queue is taken (by a flush)."""
    taken: list[int] = []
    take: Callable[[core.Connection], list[bytes]] = core.Connection.data_to_send

    def counted(self: core.Connection) -> list[bytes]:
        out = take(self)
        if out:
            taken.append(len(out))
        return out

    monkeypatch.setattr(core.Connection, "data_to_send", counted)
    return taken


async def test_an_answer_past_write_limit_is_written_at_once_without_the_queue(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Holding a frame larger than write_limit would flush it at once: it is written as the core hands it
    # back whenever nothing is queued before it, even after a frame written at once in the same turn.
    # Behind a held frame it goes through the queue, in order. Small ones after it are held as before.
    large = 20_000
    held: list[int] = []

    async def mixed(ws: upwire.ServerConnection) -> None:
        await ws.recv()
        protocol = ws.protocol
        assert protocol is not None
        flushes.clear()  # the handshake's answer is not a flush of frames
        for message in ("first", b"a" * large, "b" * large, "small", b"c" * large, "last"):
            await ws.send(message)
            held.append(len(protocol._outgoing))
        await asyncio.sleep(TEST_TIMEOUT_S)

    server = await start_server(mixed, ping_interval=None, write_limit=16 * 1024)
    flushes = _count_flushes(monkeypatch)
    async with asyncio.timeout(TEST_TIMEOUT_S / 2):
        peer = await RawPeer.upgraded(server.port)
        peer.send_frame(TEXT, "go")
        frames = [await peer.read_frame() for _ in range(6)]
    assert [(frame.opcode, frame.payload) for frame in frames] == [
        (TEXT, b"first"),
        (BINARY, b"a" * large),
        (TEXT, b"b" * large),
        (TEXT, b"small"),
        (BINARY, b"c" * large),  # queued behind "small", and both flushed past write_limit
        (TEXT, b"last"),
    ]
    assert held == [0, 0, 0, 1, 0, 1]
    # Two flushes: "small" with "c" (header and payload), then "last" at the end of the turn.
    assert flushes == [3, 1]


async def test_an_answer_after_one_past_write_limit_is_held_to_the_end_of_the_turn(
    start_server: StartServer,
) -> None:
    # Small answers held for queued messages pass write_limit and are flushed; the answer to the next
    # message is past write_limit and goes out at once; the answer to the last one follows a frame written
    # at once in the same turn, so it is held for the end of the turn, as after any such frame.
    held: list[int] = []

    async def answer(ws: upwire.ServerConnection) -> None:
        protocol = ws.protocol
        assert protocol is not None
        async for message in ws:
            if message == b"big":
                await ws.send(b"x" * 20_000)
            else:
                await ws.send(message)
            held.append(len(protocol._outgoing))

    server = await start_server(answer, ping_interval=None, write_limit=16 * 1024)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        peer = await RawPeer.upgraded(server.port)
        sent = [bytes([i]) * 3000 for i in range(6)] + [b"big", b"tail"]
        peer.write(b"".join(encode_frame(BINARY, payload) for payload in sent))
        frames = [await peer.read_frame() for _ in range(8)]
    assert [frame.payload for frame in frames] == [*sent[:6], b"x" * 20_000, b"tail"]
    assert held[5:] == [0, 0, 1]  # flushed past write_limit, written at once, held


class LargeEcho(upwire.Listener):
    """Echoes each message 32 times larger."""

    def on_message(self, connection: upwire.Connection, message: str | bytes) -> None:
        connection.send_now(message * 32)


async def test_a_listeners_answers_past_write_limit_go_out_at_once_within_a_read(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await start_server(LargeEcho, ping_interval=None, write_limit=16 * 1024)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        peer = await RawPeer.upgraded(server.port)
        flushes = _count_flushes(monkeypatch)
        peer.write(b"".join(encode_frame(BINARY, bytes([i]) * 1000) for i in range(20)))
        frames = [await peer.read_frame() for _ in range(20)]
    assert [frame.payload for frame in frames] == [bytes([i]) * 32_000 for i in range(20)]
    assert flushes == []


async def _fifty_in_one_write_then_one_alone(port: int) -> None:
    """Send 50 frames in one write (one read on the server, a few at most), then a lone one; check the echoes."""
    peer = await RawPeer.upgraded(port)
    peer.write(b"".join(encode_frame(TEXT, f"m{i}") for i in range(50)))
    frames = [await peer.read_frame() for _ in range(50)]
    assert [frame.payload for frame in frames] == [f"m{i}".encode() for i in range(50)]
    # A lone message later is answered at once, not left waiting for a read or an answer that does not come.
    peer.send_frame(TEXT, "alone")
    assert (await peer.read_frame()).payload == b"alone"
