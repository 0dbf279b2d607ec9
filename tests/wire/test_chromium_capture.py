"""`upwire dissect --json` against tshark on a loopback capture of headless Chromium and an upwire server.

tests/wire/chromium_session.py runs the session (also by hand, for docs/wire.md): Chromium offers
`permessage-deflate; client_max_window_bits`, upwire accepts it, and both compress every message — text, an
empty text, 126 characters, 1000 and 65536 random bytes — then the server pings the browser, and the page
closes with 4001 and a reason that upwire echoes. dumpcap captures the upwire port; every frame must agree
with tshark's, and zlib applied to the captured bytes must give what upwire inflated.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest

from .capture import assert_agrees_with_tshark, capture, tshark_frames, upwire_frames

pytestmark = [pytest.mark.timeout(180)]

SESSION = Path(__file__).with_name("chromium_session.py")
CHROMIUM = os.environ.get("UPWIRE_CHROMIUM", "/usr/bin/chromium")


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def chromium_capture(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, dict[str, Any]]:
    assert os.access(CHROMIUM, os.X_OK), (
        f"Chromium is needed at {CHROMIUM} (apt-get install chromium; never `playwright install`)"
    )
    path = tmp_path_factory.mktemp("chromium") / "chromium.pcapng"
    port = free_port()
    with capture(path, port):
        session = subprocess.run(
            [sys.executable, str(SESSION), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert session.returncode == 0, session.stdout + session.stderr
    return path, port, json.loads(session.stdout.splitlines()[-1])


def test_the_browser_session_went_as_planned(
    chromium_capture: tuple[Path, int, dict[str, Any]],
) -> None:
    _, _, page = chromium_capture
    assert page["extensions"].startswith("permessage-deflate")
    assert page["echoes"] == [True] * 5
    assert page["afterPing"] == "pinged"
    assert page["close"] == {"code": 4001, "reason": "chromium says bye", "wasClean": True}


def test_dissect_agrees_with_tshark_on_chromium(
    chromium_capture: tuple[Path, int, dict[str, Any]],
) -> None:
    path, port, _ = chromium_capture
    ours = upwire_frames(path)
    checked, _ = assert_agrees_with_tshark(ours, tshark_frames(path, port))
    assert checked >= 14
    # what the session did is what the dissector saw, in this order
    kinds = [(f["direction"][0], f["opcode_name"], f["message_length"]) for f in ours]
    assert kinds == [
        ("c", "text", 19),
        ("s", "text", 19),
        ("c", "text", 0),
        ("s", "text", 0),
        ("c", "text", 126),
        ("s", "text", 126),
        ("c", "binary", 1000),
        ("s", "binary", 1000),
        ("c", "binary", 65536),
        ("s", "binary", 65536),
        ("c", "text", 7),
        ("s", "ping", 11),
        ("c", "pong", 11),
        ("s", "text", 6),
        ("c", "close", 19),
        ("s", "close", 19),
    ]
    assert {f["length_bits"] for f in ours} == {7, 16, 64}
    # Every data message compressed, but upwire's echo of the 65536 random bytes, which deflate does not
    # shrink: sent as it is.
    plain = [
        (f["direction"], f["payload_length"])
        for f in ours
        if f["opcode"] in (1, 2) and not f["rsv1"]
    ]
    assert plain == [("server-to-client", 65536)]
    assert all(f["compressed"] == f["rsv1"] for f in ours if f["opcode"] in (1, 2))
    assert all(f["masked"] == (f["direction"] == "client-to-server") for f in ours)
    assert [(f["close_code"], f["close_reason"]) for f in ours if f["opcode"] == 8] == [
        (4001, "chromium says bye")
    ] * 2
    assert [f["text"] for f in ours if f["opcode"] == 1][:2] == ["hello from chromium"] * 2


def test_zlib_judges_chromium_and_upwire_compression(
    chromium_capture: tuple[Path, int, dict[str, Any]],
) -> None:
    path, _, _ = chromium_capture
    ours = upwire_frames(path)
    # RFC 7692 §7.2.2, context takeover on both sides (the answer has no *_no_context_takeover)
    inflaters = {d: zlib.decompressobj(-15) for d in ("client-to-server", "server-to-client")}
    judged = 0
    for frame in ours:
        if frame["compressed"]:
            assert frame["fin"], "Chromium and upwire sent every message in one frame here"
            inflater = inflaters[frame["direction"]]
            data = inflater.decompress(bytes.fromhex(frame["payload"]) + b"\x00\x00\xff\xff")
            assert bytes.fromhex(frame["inflated"]) == data
            judged += 1
    # Chromium's six messages and upwire's five compressed echoes (the random 64 KiB went plain, and
    # the next message came from a fresh compressor: the inflater with context takeover reads it).
    assert judged == 11


def test_summary_shows_framing_against_polling_with_the_browser_headers(
    chromium_capture: tuple[Path, int, dict[str, Any]],
) -> None:
    path, _, page = chromium_capture
    output = subprocess.run(
        [sys.executable, "-m", "upwire", "dissect", "--summary", "--json", str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    [summary] = [json.loads(line) for line in output.splitlines()]
    total = summary["total"]
    assert total["messages"] == 12
    assert 2 <= total["framing_bytes_per_message"] <= 14
    # each polled message would repeat the browser's User-Agent, Origin, Accept-* ... headers
    assert total["polling_bytes_per_message"] > 2 * len(page["user_agent"])
    # the estimate stays below what a real fetch() POST from the same page sends in its head alone
    assert page["fetch_status"] == 204
    assert page["fetch_post_head_bytes"] > len(page["user_agent"])
