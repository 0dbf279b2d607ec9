"""Capture loopback traffic with Debian's dumpcap while a test runs, and read tshark's view of it."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

START_TIMEOUT_S = 20.0


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is needed: apt-get install tshark (scripts/install.sh all does it)")
    return path


@contextlib.contextmanager
def capture(path: Path, port: int) -> Iterator[Path]:
    """Capture TCP port `port` on loopback into `path` while the block runs.

    dumpcap says "Capturing" before its filter is live, so a UDP probe is sent until the file grows.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        probe_port = probe.getsockname()[1]
        process = subprocess.Popen(
            [
                _need("dumpcap"),
                "-q",
                "-i",
                "lo",
                "-f",
                f"tcp port {port} or udp port {probe_port}",
                "-w",
                str(path),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            size = -1
            while True:
                if process.poll() is not None:
                    assert process.stderr is not None
                    pytest.fail(f"dumpcap exited: {process.stderr.read().decode(errors='replace')}")
                probe.sendto(b"probe", ("127.0.0.1", probe_port))
                time.sleep(0.05)
                current = path.stat().st_size if path.exists() else -1
                if size >= 0 and current > size:
                    break
                if size < 0 and current > 0:
                    size = current
                if time.monotonic() > deadline:
                    pytest.fail("dumpcap did not start capturing in time")
            yield path
            # The last packets are in the file once a probe sent after them is: the file grows past
            # what it held (a fixed wait missed the connection's frames on a loaded machine).
            size = path.stat().st_size
            deadline = time.monotonic() + START_TIMEOUT_S
            while path.stat().st_size <= size and time.monotonic() < deadline:
                probe.sendto(b"probe", ("127.0.0.1", probe_port))
                time.sleep(0.05)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def tshark_frames(path: Path, port: int) -> list[dict[str, Any]]:
    """Return tshark's WebSocket frames, in order, each as a dict of the fields the tests compare.

    tshark repeats the `websocket` (and `data`) keys in one packet's layers when one segment holds
    several frames, so the JSON is read with an order-keeping parser.
    """
    output = subprocess.run(
        [
            _need("tshark"),
            "-r",
            str(path),
            "-T",
            "json",
            "-d",
            f"tcp.port=={port},http",
            "-o",
            "websocket.decompress:TRUE",
            "-o",
            "tcp.reassemble_out_of_order:TRUE",
            "-Y",
            "websocket",
        ],
        capture_output=True,
        check=True,
        timeout=120,
    ).stdout
    packets = json.loads(output, object_pairs_hook=lambda pairs: pairs)
    frames: list[dict[str, Any]] = []
    for packet in packets:
        source = dict(packet)["_source"]
        layers = dict(source)["layers"]
        stream = int(dict(dict(layers)["tcp"])["tcp.stream"])
        number = int(dict(dict(layers)["frame"])["frame.number"])
        for key, value in layers:
            if key == "websocket":
                frame = _flatten(value)
                frame["stream"] = stream
                frame["packet"] = number
                frames.append(frame)
            elif key == "data" and frames and frames[-1]["packet"] == number:
                frames[-1]["data"] = dict(value).get("data.data", "")
    return frames


def _flatten(pairs: Any, into: dict[str, Any] | None = None) -> dict[str, Any]:
    into = {} if into is None else into
    for key, value in pairs:
        if isinstance(value, list):
            _flatten(value, into)
        else:
            into.setdefault(key, value)
    return into


def dissect_json(path: Path) -> list[dict[str, Any]]:
    """Return every object of `upwire dissect --json` on `path` (connections, frames), run as a user would."""
    output = subprocess.run(
        [sys.executable, "-m", "upwire", "dissect", "--json", str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    return list(map(json.loads, output.splitlines()))


def upwire_frames(path: Path) -> list[dict[str, Any]]:
    """Return the frame objects of `upwire dissect --json` on `path`."""
    return [o for o in dissect_json(path) if o["type"] == "frame"]


def colon_hex(data: str) -> str:
    """ "0a0b" -> "0a:0b", as tshark writes bytes."""
    return ":".join(data[i : i + 2] for i in range(0, len(data), 2))


def assert_agrees_with_tshark(
    ours: list[dict[str, Any]], theirs: list[dict[str, Any]]
) -> tuple[int, set[tuple[int, str]]]:
    """Check upwire's frames against tshark's, field by field and in order.

    Returns how many payloads were compared, and the (stream, direction) pairs where a fragmented
    compressed message put tshark's inflater out of step (PEERS.md): there the compressed payloads are
    left for zlib to judge.
    """
    assert len(ours) == len(theirs), (len(ours), len(theirs))
    out_of_step: set[tuple[int, str]] = set()
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
            continue  # judged by zlib
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
    return checked_payloads, out_of_step
