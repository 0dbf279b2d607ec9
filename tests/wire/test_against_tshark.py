"""`upwire dissect --json` against tshark on real loopback captures of upwire, websockets and Node ws.

A websockets server (which accepts permessage-deflate) echoes what three clients send: upwire, websockets
without compression, and Node ws compressing everything (threshold 0). dumpcap captures the traffic; every
frame upwire reports must agree with tshark's field by field, in the same order. tshark does not inflate
fragmented compressed messages and loses its inflate context after one (see PEERS.md): there, zlib applied
to the captured bytes with each direction's context is the judge.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.asyncio.server import ServerConnection as WebsocketsConnection
from websockets.asyncio.server import serve as websockets_serve

import upwire

from .capture import assert_agrees_with_tshark, capture, tshark_frames, upwire_frames

HERE = Path(__file__).parent
TEXT_126 = "x" * 126
BINARY_65536 = bytes(range(256)) * 256


async def echo(ws: WebsocketsConnection) -> None:
    try:
        async for message in ws:
            await ws.send(message)
    except websockets.ConnectionClosed:
        pass  # a close code other than 1000/1001 ends the iteration with an exception


async def upwire_client(url: str) -> None:
    async with upwire.connect(url + "/upwire") as ws:
        for message in ("hello from upwire", b"\x00\x01\x02", TEXT_126, BINARY_65536):
            await ws.send(message)
            assert await ws.recv() == message
        await ws.send(["frag", "mented"])
        assert await ws.recv() == "fragmented"
        await ws.ping(b"upwire-ping")
        await ws.close(4000, "upwire done")


async def websockets_client(url: str) -> None:
    async with websockets.connect(url + "/websockets", compression=None) as ws:
        for message in ("hello from websockets", TEXT_126, BINARY_65536, b""):
            await ws.send(message)
            assert await ws.recv() == message
        await ws.send([b"ab", b"cd", b"ef"])
        assert await ws.recv() == b"abcdef"
        pong = await ws.ping(b"ws-ping")
        await pong
        await ws.close(1001, "websockets going away")


async def node_client(url: str) -> None:
    node = shutil.which("node")
    assert node, "Node.js is needed (apt-get install nodejs npm)"
    process = await asyncio.create_subprocess_exec(
        node, str(HERE / "ws_client.js"), url + "/node", stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode(errors="replace")


@pytest.fixture(scope="module")
def captured(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    path = tmp_path_factory.mktemp("capture") / "peers.pcapng"

    async def run() -> int:
        async with websockets_serve(echo, "127.0.0.1", 0, max_size=None) as server:
            port = server.sockets[0].getsockname()[1] if hasattr(server, "sockets") else 0
            url = f"ws://127.0.0.1:{port}"
            with capture(path, port):
                await upwire_client(url)
                await websockets_client(url)
                await node_client(url)
                await asyncio.sleep(0.2)
            return int(port)

    port = asyncio.run(run())
    return path, port


def test_dissect_agrees_with_tshark_frame_by_frame(captured: tuple[Path, int]) -> None:
    path, port = captured
    ours = upwire_frames(path)
    theirs = tshark_frames(path, port)
    assert len(ours) == len(theirs), (len(ours), len(theirs))
    assert len({f["stream"] for f in ours}) == 3
    checked_payloads, out_of_step = assert_agrees_with_tshark(ours, theirs)
    assert checked_payloads > 20
    assert out_of_step, "the capture should hold a fragmented compressed message"


def test_zlib_judges_the_compressed_messages(captured: tuple[Path, int]) -> None:
    path, _ = captured
    ours = upwire_frames(path)
    inflaters: dict[tuple[int, str], Any] = {}
    pending: dict[tuple[int, str], list[dict[str, Any]]] = {}
    judged = 0
    for frame in ours:
        if not frame["compressed"]:
            continue
        key = (frame["stream"], frame["direction"])
        pending.setdefault(key, []).append(frame)
        if not frame["message_end"]:
            continue
        frames = pending.pop(key)
        # RFC 7692 §7.2.2 with context takeover (neither side asked for no_context_takeover here)
        inflater = inflaters.setdefault(key, zlib.decompressobj(-15))
        compressed = b"".join(bytes.fromhex(f["payload"]) for f in frames)
        expected = inflater.decompress(compressed + b"\x00\x00\xff\xff")
        assert b"".join(bytes.fromhex(f["inflated"]) for f in frames) == expected
        assert frames[-1]["message_length"] == len(expected)
        judged += 1
    texts = {f["text"] for f in ours if f["text"]}
    assert "first part, " in texts and "second part" in texts
    assert judged >= 10


def test_the_capture_covers_every_case(captured: tuple[Path, int]) -> None:
    path, _ = captured
    ours = upwire_frames(path)
    assert {f["opcode_name"] for f in ours} >= {
        "text",
        "binary",
        "continuation",
        "ping",
        "pong",
        "close",
    }
    assert {f["length_bits"] for f in ours} == {7, 16, 64}
    assert {(f["close_code"], f["close_reason"]) for f in ours if f["opcode"] == 8} >= {
        (4000, "upwire done"),
        (1001, "websockets going away"),
        (4001, "node says bye"),
    }
    assert any(f["compressed"] for f in ours) and any(
        not f["compressed"] for f in ours if f["opcode"] < 8
    )


def test_summary_on_the_real_capture(captured: tuple[Path, int]) -> None:
    path, _ = captured
    output = subprocess.run(
        [sys.executable, "-m", "upwire", "dissect", "--summary", "--json", str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    summaries = [json.loads(line) for line in output.splitlines()]
    assert len(summaries) == 3
    for summary in summaries:
        total = summary["total"]
        assert total["messages"] > 0
        assert 2 <= total["framing_bytes_per_message"] <= 14
        assert total["polling_bytes_per_message"] > 100
