"""`upwire tap` under peers that stall or leave during the opening handshake, and the notes it prints."""

from __future__ import annotations

import asyncio
import json
import socket
import struct

import pytest

import upwire
from upwire.protocol.handshake import accept_key
from upwire.wire.tap import Tap

from .test_tap import UPGRADE, start_tap
from .test_tap_command import echo, tap_port_of
from .test_tap_command import start_tap as start_tap_command


async def silent_upstream() -> tuple[asyncio.Server, int, asyncio.Event]:
    """An upstream that accepts TCP, never answers, and sets the event when the tap leaves it."""
    left = asyncio.Event()

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the tap closes its side
        left.set()
        writer.close()

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], left


async def test_a_client_that_never_sends_its_request_is_dropped_after_the_handshake_timeout() -> (
    None
):
    upstream, tap, port = await start_tap(lambda r, w: asyncio.sleep(0), handshake_timeout=0.3)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # the tap closed the connection
        writer.close()
    finally:
        await tap.close()
        upstream.close()


async def test_an_upstream_that_never_answers_gets_a_504_after_the_handshake_timeout() -> None:
    upstream, upstream_port, left = await silent_upstream()
    tap = Tap(f"ws://127.0.0.1:{upstream_port}/", handshake_timeout=0.3)
    server = await tap.start("127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.sockets[0].getsockname()[1]
        )
        writer.write(UPGRADE)
        answer = await asyncio.wait_for(reader.read(), 5)
        assert answer.startswith(b"HTTP/1.1 504 "), answer
        await asyncio.wait_for(left.wait(), 5)  # and the upstream connection is closed
        writer.close()
    finally:
        await tap.close()
        upstream.close()


async def test_a_client_that_leaves_while_the_upstream_is_silent_is_dropped_at_once() -> None:
    upstream, upstream_port, left = await silent_upstream()
    tap = Tap(f"ws://127.0.0.1:{upstream_port}/")  # the default timeout is far longer than 5 s
    server = await tap.start("127.0.0.1", 0)
    try:
        clients = []
        for _ in range(5):
            _, writer = await asyncio.open_connection(
                "127.0.0.1", server.sockets[0].getsockname()[1]
            )
            writer.write(UPGRADE)
            clients.append(writer)
        await asyncio.sleep(0.2)
        for writer in clients:
            writer.close()
        await asyncio.wait_for(left.wait(), 5)
        for _ in range(50):
            if not tap._tasks:
                break
            await asyncio.sleep(0.1)
        assert not tap._tasks, "relays still wait for an upstream answer nobody will read"
    finally:
        await tap.close()
        upstream.close()


@pytest.mark.parametrize("json_output", [False, True], ids=["text", "json"])
async def test_the_tap_prints_the_note_on_a_frame_past_max_frame_hold(json_output: bool) -> None:
    async with upwire.serve(echo, "127.0.0.1", 0) as server:
        upstream_port = server.sockets[0].getsockname()[1]
        options = ["--max-frame-hold", "100000", "--color", "never"]
        process = await start_tap_command(
            upstream_port, *options, *(["--json"] if json_output else [])
        )
        assert process.stdout is not None
        try:
            port = await tap_port_of(process)
            async with upwire.connect(f"ws://127.0.0.1:{port}/", compression=None) as ws:
                await ws.send("small before")
                assert await ws.recv() == "small before"
                await ws.send(bytes(200_000))
                assert await ws.recv() == bytes(200_000)
            lines = []
            while not any("--max-frame-hold 100000" in line for line in lines):
                line = await asyncio.wait_for(process.stdout.readline(), 10)
                assert line, f"the tap's output ended without the note: {lines}"
                lines.append(line.decode())
        finally:
            process.kill()
            await process.wait()
    [note] = [line for line in lines if "max-frame-hold" in line]
    if json_output:
        assert json.loads(note) == {
            "type": "note",
            "stream": 0,
            # the option as the command's user knows it
            "note": "client-to-server: a frame larger than --max-frame-hold 100000 bytes was "
            "passed on undecoded; the rest of this direction is not decoded",
        }
    else:
        assert note.strip().startswith("[0] note: client-to-server: a frame larger than")


@pytest.mark.parametrize("reset", [False, True], ids=["close", "reset"])
async def test_a_frame_cut_short_by_the_connections_end_gets_a_note(reset: bool) -> None:
    # As `upwire dissect` notes a frame the capture's end cut short, the tap notes one the close cut;
    # a client's reset reaches the upstream as a reset, as it would without the tap.
    upstream_saw: list[str] = []

    async def upstream_101(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip()
            for line in request.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key")
        )
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept_key(key.decode()).encode() + b"\r\n\r\n"
        )
        try:
            await reader.read()  # until the tap closes its side
            upstream_saw.append("close")
        except ConnectionResetError:
            upstream_saw.append("reset")
        writer.close()

    notes: list[str] = []
    closed = asyncio.Event()
    upstream, tap, port = await start_tap(
        upstream_101,
        on_note=lambda observer, note: notes.append(note),
        on_close=lambda observer: closed.set(),
    )
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(UPGRADE)
        await reader.readuntil(b"\r\n\r\n")
        # A masked binary frame of 1000 bytes announced, 300 sent, then the client leaves.
        writer.write(b"\x82\xfe\x03\xe8" + b"\x00\x00\x00\x00" + b"x" * 300)
        await writer.drain()
        await asyncio.sleep(0.1)  # the tap relays the 308 bytes
        if reset:
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()
        await asyncio.wait_for(closed.wait(), 5)
        for _ in range(50):
            if upstream_saw:
                break
            await asyncio.sleep(0.02)
    finally:
        await tap.close()
        upstream.close()
    ends = "was reset (RST)" if reset else "closed"
    assert any(
        f"the connection {ends} inside a binary frame (308 of 1008 bytes)" in note for note in notes
    ), notes
    assert upstream_saw == ["reset" if reset else "close"]
