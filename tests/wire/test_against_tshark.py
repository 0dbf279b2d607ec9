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

from .capture import capture, tshark_frames

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


def upwire_frames(path: Path) -> list[dict[str, Any]]:
    output = subprocess.run(
        [sys.executable, "-m", "upwire", "dissect", "--json", str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    return [o for o in map(json.loads, output.splitlines()) if o["type"] == "frame"]


def colon_hex(data: str) -> str:
    return ":".join(data[i : i + 2] for i in range(0, len(data), 2))


def test_dissect_agrees_with_tshark_frame_by_frame(captured: tuple[Path, int]) -> None:
    path, port = captured
    ours = upwire_frames(path)
    theirs = tshark_frames(path, port)
    assert len(ours) == len(theirs), (len(ours), len(theirs))
    assert len({f["stream"] for f in ours}) == 3
    out_of_step: set[tuple[int, str]] = set()  # directions where tshark's inflater went wrong
    checked_payloads = 0
    for mine, ref in zip(ours, theirs, strict=True):
        where = f"stream {mine['stream']} frame {mine['index']} (packet {ref['packet']})"
        assert mine["stream"] == ref["stream"], where
        assert mine["packet"] == ref["packet"], where
        assert mine["fin"] == (ref["websocket.fin"] == "1"), where
        rsv = int(ref["websocket.rsv"], 16)
        assert (mine["rsv1"], mine["rsv2"], mine["rsv3"]) == (
            bool(rsv & 4),
            bool(rsv & 2),
            bool(rsv & 1),
        ), where
        assert mine["opcode"] == int(ref["websocket.opcode"]), where
        assert mine["masked"] == (ref["websocket.mask"] == "1"), where
        # tshark's payload_length is the 7-bit field; 126 and 127 announce its 16- and 64-bit fields
        length = int(ref["websocket.payload_length"])
        bits = {126: 16, 127: 64}.get(length, 7)
        if bits != 7:
            length = int(ref[f"websocket.payload_length_ext_{bits}"])
        assert (mine["payload_length"], mine["length_bits"]) == (length, bits), where
        if mine["masked"]:
            assert colon_hex(mine["mask_key"]) == ref["websocket.masking_key"], where
        assert mine["violations"] == [], where
        key = (mine["stream"], mine["direction"])
        fragmented_compressed = mine["compressed"] and not (mine["fin"] and mine["opcode"] != 0)
        if fragmented_compressed:
            out_of_step.add(key)
            continue  # judged by zlib below
        if mine["compressed"] and key in out_of_step:
            continue
        data = mine["inflated"] if mine["compressed"] else mine["payload"]
        if mine["opcode"] == 8:
            assert mine["close_code"] == int(ref["websocket.payload.close.status_code"]), where
            assert mine["close_reason"] == ref.get("websocket.payload.close.reason", ""), where
        elif mine["opcode"] in (9, 10):
            name = "ping" if mine["opcode"] == 9 else "pong"
            assert colon_hex(data) == ref.get(f"websocket.payload.{name}", ""), where
        elif mine["opcode"] == 1 and mine["fin"]:
            assert mine["text"] == ref.get("websocket.payload.text", ""), where
        elif mine["payload_length"] and "data" in ref:
            assert colon_hex(data) == ref["data"], where
        checked_payloads += 1
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
