"""Capture loopback traffic with Debian's dumpcap while a test runs, and read tshark's view of it."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
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
            time.sleep(0.2)  # let the last packets reach the file
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
