"""The `upwire tap` command as a user runs it: a subprocess relaying an upwire client to an upwire server.

It is started with `--listen 127.0.0.1:0 --json` (it prints the bound port on stderr), relays one plain and
one compressed connection, and its JSON lines must say what was sent: direction, opcode, FIN, lengths,
payloads (inflated for compressed messages), close code and reason. SIGINT or SIGTERM stops it with exit
status 0 and no traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import upwire
from upwire.server import ServerConnection

REPO = Path(__file__).resolve().parents[2]
BINARY = bytes(range(256)) * 2  # 512 bytes: a 16-bit length uncompressed


async def echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


async def client_session(port: int, compression: str | None) -> None:
    async with upwire.connect(f"ws://127.0.0.1:{port}/tapped", compression=compression) as ws:
        await ws.send("hello through the tap")
        assert await ws.recv() == "hello through the tap"
        await ws.send(BINARY)
        assert await ws.recv() == BINARY
        await ws.send(["frag", "ment"])
        assert await ws.recv() == "fragment"
        await asyncio.wait_for(ws.ping(b"tap-ping"), 10)
        await ws.close(4003, "tap command done")


def tap_command(upstream_port: int, *options: str) -> list[str]:
    """`upwire tap` on a free port in front of the server on `upstream_port`."""
    return [
        sys.executable,
        "-m",
        "upwire",
        "tap",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        f"ws://127.0.0.1:{upstream_port}",
        *options,
    ]


TAP_ENV = {**os.environ, "PYTHONPATH": str(REPO)}


async def start_tap(upstream_port: int, *options: str) -> asyncio.subprocess.Process:
    """`upwire tap` on a free port in front of the server on `upstream_port`; its output piped."""
    return await asyncio.create_subprocess_exec(
        *tap_command(upstream_port, *options),
        cwd=REPO,
        env=TAP_ENV,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


@contextlib.asynccontextmanager
async def killed_on_exit(process: asyncio.subprocess.Process) -> AsyncIterator[None]:
    """Kill the tap if the block leaves it running (a failed assertion)."""
    try:
        yield
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def stop(
    process: asyncio.subprocess.Process, stop_signal: int = signal.SIGINT
) -> tuple[bytes, bytes]:
    """Stop the tap as a user does; return its output."""
    process.send_signal(stop_signal)
    return await asyncio.wait_for(process.communicate(), 15)


async def tap_port_of(process: asyncio.subprocess.Process) -> int:
    """The port of the tap's banner line (`listening on ws://127.0.0.1:PORT/`)."""
    assert process.stderr is not None
    banner = (await asyncio.wait_for(process.stderr.readline(), 20)).decode()
    match = re.search(r"listening on ws://127\.0\.0\.1:(\d+)/", banner)
    assert match, banner
    return int(match.group(1))


async def read_json_lines(stream: asyncio.StreamReader, frames: int) -> list[dict[str, Any]]:
    """Read the tap's stdout until `frames` frame objects have been printed."""
    objects: list[dict[str, Any]] = []
    while sum(o["type"] == "frame" for o in objects) < frames:
        line = await asyncio.wait_for(stream.readline(), 10)
        assert line, f"the tap's output ended early: {objects}"
        objects.append(json.loads(line))
    return objects


def check_frames(objects: list[dict[str, Any]], compressed: bool) -> None:
    [connection] = [o for o in objects if o["type"] == "connection"]
    assert connection["request"]["target"] == "/tapped"
    assert connection["response"]["status"] == 101
    assert bool(connection["extensions"]) == compressed
    frames = [o for o in objects if o["type"] == "frame"]
    up = [f for f in frames if f["direction"] == "client-to-server"]
    down = [f for f in frames if f["direction"] == "server-to-client"]
    assert all(f["masked"] and f["mask_key"] for f in up)
    assert not any(f["masked"] for f in down)
    assert [(f["opcode_name"], f["fin"]) for f in up] == [
        ("text", True),
        ("binary", True),
        ("text", False),
        ("continuation", True),
        ("ping", True),
        ("close", True),
    ]
    assert [f["opcode_name"] for f in down] == ["text", "binary", "text", "pong", "close"]
    for frame in frames:
        assert frame["violations"] == []
        payload = bytes.fromhex(frame["payload"])
        assert frame["payload_length"] == len(payload)
        assert (
            frame["header_length"]
            == 2
            + (4 if frame["masked"] else 0)
            + {
                7: 0,
                16: 2,
                64: 8,
            }[frame["length_bits"]]
        )
        if frame["masked"]:
            key = bytes.fromhex(frame["mask_key"])
            masked = bytes.fromhex(frame["payload_masked"])
            assert bytes(b ^ key[i % 4] for i, b in enumerate(masked)) == payload
        data = bytes.fromhex(frame["inflated"]) if frame["compressed"] else payload
        if frame["opcode"] in (1, 2) and frame["fin"]:
            assert frame["compressed"] == compressed
        expected = {
            "hello through the tap": b"hello through the tap",
            "binary": BINARY,
            "frag": b"frag",
            "ment": b"ment",
            "fragment": b"fragment",
        }
        if frame["opcode_name"] == "binary":
            assert data == expected["binary"]
            if not compressed:
                assert frame["length_bits"] == 16
        elif frame["opcode_name"] in ("text", "continuation"):
            assert data.decode() in expected and frame["text"] == data.decode()
        elif frame["opcode_name"] in ("ping", "pong"):
            assert data == b"tap-ping"
        else:
            assert (frame["close_code"], frame["close_reason"]) == (4003, "tap command done")
    # message bookkeeping: the fragmented message is one message of 8 bytes
    [fragmented_end] = [f for f in up if f["opcode_name"] == "continuation"]
    assert fragmented_end["message_end"] and fragmented_end["message_length"] == 8


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_tap_command_prints_the_frames_it_relays_and_stops_cleanly(
    stop_signal: signal.Signals,
) -> None:
    async with upwire.serve(echo, "127.0.0.1", 0) as server:
        upstream_port = server.sockets[0].getsockname()[1]
        process = await start_tap(upstream_port, "--json")
        assert process.stdout is not None and process.stderr is not None
        async with killed_on_exit(process):
            tap_port = await tap_port_of(process)
            for compression in (None, "deflate"):
                await client_session(tap_port, compression)
                check_frames(await read_json_lines(process.stdout, 11), compression is not None)
            stdout, stderr = await stop(process, stop_signal)
    assert process.returncode == 0, stderr.decode(errors="replace")
    assert b"Traceback" not in stderr and stdout == b""


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_tap_command_stops_cleanly_while_it_relays_an_open_connection(
    stop_signal: signal.Signals,
) -> None:
    async with upwire.serve(echo, "127.0.0.1", 0) as server:
        upstream_port = server.sockets[0].getsockname()[1]
        process = await start_tap(upstream_port)
        async with (
            killed_on_exit(process),
            upwire.connect(f"ws://127.0.0.1:{await tap_port_of(process)}/open") as ws,
        ):
            await ws.send("still here")
            assert await ws.recv() == "still here"
            _, stderr = await stop(process, stop_signal)  # the relay's task gets cancelled
            with pytest.raises(upwire.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)  # the tap closed the client's TCP
    assert process.returncode == 0, stderr.decode(errors="replace")
    assert b"Traceback" not in stderr and b"Exception in callback" not in stderr, stderr.decode()


async def test_tap_tree_labels_each_frame_with_its_stream_and_shows_refused_upgrades() -> None:
    async def refuse_other_paths(
        connection: ServerConnection, request: upwire.Request
    ) -> upwire.Response | None:
        return None if request.path == "/ok" else upwire.Response(404, body="no such path\n")

    async with upwire.serve(echo, "127.0.0.1", 0, process_request=refuse_other_paths) as server:
        upstream_port = server.sockets[0].getsockname()[1]
        process = await start_tap(upstream_port, "--color", "never")
        assert process.stdout is not None
        async with killed_on_exit(process):
            tap = f"ws://127.0.0.1:{await tap_port_of(process)}"
            async with upwire.connect(f"{tap}/ok") as alice, upwire.connect(f"{tap}/ok") as bob:
                for name, ws in (("alice", alice), ("bob", bob), ("alice", alice)):
                    await ws.send(f"{name} says hi")
                    assert await ws.recv() == f"{name} says hi"
            with pytest.raises(upwire.InvalidStatus) as refused:
                await upwire.connect(f"{tap}/nowhere")
            assert refused.value.status == 404
            stdout, stderr = await stop(process)
    assert process.returncode == 0, stderr.decode(errors="replace")
    lines = stdout.decode().splitlines()
    # Both connections' frames interleave; each frame's line says whose it is (its details follow,
    # indented).
    says = [line for line in lines if "says hi" in line and not line.startswith(" ")]
    assert len(says) == 6, says
    assert all(line.startswith("[0] #") for line in says if "alice" in line), says
    assert all(line.startswith("[1] #") for line in says if "bob" in line), says
    # The refused Upgrade is shown as dissect shows one: not WebSocket, the answer and why.
    [head] = [line for line in lines if line.startswith("stream 2 ")]
    assert head.endswith("(not WebSocket)")
    assert any("the upstream refused the Upgrade: HTTP 404" in line for line in lines), lines


async def test_tap_reports_an_upstream_it_cannot_reach_and_brackets_an_ipv6_listen_address() -> (
    None
):
    closed = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = closed.sockets[0].getsockname()[1]
    closed.close()
    await closed.wait_closed()  # nothing listens on `port` any more
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "upwire",
        "tap",
        "--listen",
        "[::1]:0",
        "--upstream",
        f"ws://127.0.0.1:{port}/",
        "--json",
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    async with killed_on_exit(process):
        banner = (await asyncio.wait_for(process.stderr.readline(), 20)).decode()
        match = re.search(r"listening on ws://\[::1\]:(\d+)/ ", banner)
        assert match, banner
        with pytest.raises(upwire.InvalidStatus) as refused:
            await upwire.connect(f"ws://[::1]:{match.group(1)}/")
        assert refused.value.status == 502
        line = json.loads(await asyncio.wait_for(process.stdout.readline(), 10))
        await stop(process)
    assert (line["type"], line["stream"], line["websocket"]) == ("connection", 0, False)
    assert line["response"]["status"] == 502
    # the header fields the client got, those serialize_response adds included
    assert [name for name, _ in line["response"]["headers"]] == [
        "Content-Type",
        "Content-Length",
        "Connection",
    ]
    assert line["response"]["headers"][2] == ["Connection", "close"]
    assert line["request"]["target"] == "/"
    assert f"cannot connect to the upstream 127.0.0.1:{port}: Connection refused" in line["notes"]


async def test_a_tap_whose_reader_goes_away_stops_quietly() -> None:
    # `upwire tap ... | head`: once its output is closed the tap stops, as a pipeline's tools do, with
    # 128 + SIGPIPE and no traceback (it went on listening while every relay it printed for failed).
    async with upwire.serve(echo, "127.0.0.1", 0, ping_interval=None) as server:
        process = subprocess.Popen(
            tap_command(server.port, "--json"),
            cwd=REPO,
            env=TAP_ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert process.stdout is not None and process.stderr is not None
            banner = (await asyncio.to_thread(process.stderr.readline)).decode()
            match = re.search(r"listening on ws://127\.0\.0\.1:(\d+)/", banner)
            assert match, banner
            process.stdout.close()
            with contextlib.suppress(upwire.WebSocketError, OSError):
                async with upwire.connect(f"ws://127.0.0.1:{match.group(1)}/") as ws:
                    await ws.send("printed to nobody")
                    await ws.recv()
            assert await asyncio.to_thread(process.wait, 15) == 141
            assert process.stderr.read() == b""
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
