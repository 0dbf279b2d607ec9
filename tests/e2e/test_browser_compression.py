"""Chromium's ``WebSocket`` with permessage-deflate (RFC 7692) against an upwire echo server.

The browser connects through a recording relay (``tests/interop/wiretap.py``), so the test sees the
offer, upwire's answer and every frame: RSV1 on what both sides sent and payloads that plain zlib
inflates to the messages. The page reports ``ws.extensions``; messages are 0 B, 10 B, 125 B, 64 KiB
and 1 MiB of text and of random binary, passed as base64 to keep the page script small.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import importlib.util
import random
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import upwire

if TYPE_CHECKING:
    from playwright.async_api import Page

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]


def _load_wiretap() -> Any:
    # tests/interop is a sibling package; load its relay module by path rather than by package name.
    path = Path(__file__).resolve().parents[1] / "interop" / "wiretap.py"
    spec = importlib.util.spec_from_file_location("upwire_tests_wiretap", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


wiretap = _load_wiretap()

UNIT = "aé€🌍"  # 1 + 2 + 3 + 4 bytes in UTF-8
SIZES = [0, 10, 125, 65536, 2**20]
UPWIRE_ANSWER = "permessage-deflate; server_max_window_bits=12"


def text_of(size: int) -> str:
    text = UNIT * (size // 10) + "x" * (size % 10)
    assert len(text.encode()) == size
    return text


MESSAGES: list[str | bytes] = [text_of(size) for size in SIZES] + [
    random.Random(size).randbytes(size) for size in SIZES
]

# Sends each message (["text", base64 of UTF-8] or ["binary", base64]) and waits for its echo; returns
# the echoes as base64, the negotiated extensions and the close event.
SCRIPT = """
async ({url, messages}) => {
  const decode = (b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const encode = (bytes) => {
    let s = "";
    for (let i = 0; i < bytes.length; i += 32768) {
      s += String.fromCharCode.apply(null, bytes.subarray(i, i + 32768));
    }
    return btoa(s);
  };
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  const inbox = [];
  let wake = null;
  ws.onmessage = (event) => { inbox.push(event.data); if (wake) { wake(); wake = null; } };
  const closed = new Promise((resolve) => {
    ws.onclose = (e) => resolve({code: e.code, reason: e.reason, wasClean: e.wasClean});
  });
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = () => reject(new Error("the WebSocket failed before it opened"));
  });
  const replies = [];
  for (const [kind, b64] of messages) {
    const bytes = decode(b64);
    ws.send(kind === "text" ? new TextDecoder().decode(bytes) : bytes.buffer);
    while (inbox.length === 0) await new Promise((resolve) => { wake = resolve; });
    const reply = inbox.shift();
    replies.push(typeof reply === "string"
      ? ["text", encode(new TextEncoder().encode(reply))]
      : ["binary", encode(new Uint8Array(reply))]);
  }
  const extensions = ws.extensions;
  ws.close(1000, "done");
  return {replies, extensions, close: await closed};
}
"""


def as_bytes(message: str | bytes) -> bytes:
    return message.encode() if isinstance(message, str) else message


@pytest.mark.parametrize(
    "window",
    [None, 8],
    ids=["default", "8-bit-windows"],
)
async def test_chromium_negotiates_permessage_deflate_and_both_sides_compress(
    page: Page, blank_page_url: str, window: int | None
) -> None:
    # With 8-bit windows both ways (RFC 7692's smallest): zlib has no 8-bit compressor, and both sides
    # compress with 9 bits, whose matches reach back at most 250 bytes (Chromium's own inflater is held
    # to the 8 bits it was told).
    options: dict[str, Any] = {}
    answer = UPWIRE_ANSWER
    if window is not None:
        factory = upwire.ServerPerMessageDeflateFactory(
            server_max_window_bits=window, client_max_window_bits=window
        )
        options["extensions"] = [factory]
        answer = (
            f"permessage-deflate; server_max_window_bits={window}; client_max_window_bits={window}"
        )
    received: list[str | bytes] = []
    handshakes: list[tuple[list[str], list[str]]] = []

    async def echo(ws: upwire.ServerConnection) -> None:
        assert ws.request is not None and ws.response is not None
        handshakes.append(
            (
                ws.request.headers.get_all("Sec-WebSocket-Extensions"),
                ws.response.headers.get_all("Sec-WebSocket-Extensions"),
            )
        )
        try:
            async for message in ws:
                received.append(message)
                await ws.send(message)
        except upwire.ConnectionClosed:
            pass

    server = await upwire.serve(echo, "127.0.0.1", 0, **options)
    try:
        async with wiretap.tapped(f"ws://127.0.0.1:{server.port}/deflate") as tap:
            await page.goto(blank_page_url)
            encoded = [
                ["text" if isinstance(m, str) else "binary", base64.b64encode(as_bytes(m)).decode()]
                for m in MESSAGES
            ]
            result: dict[str, Any] = await page.evaluate(
                SCRIPT, {"url": tap.url, "messages": encoded}
            )
            await asyncio.sleep(0.2)  # let the relay record the closing handshake
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), 10)

    # The browser's offer, upwire's answer, and what the page sees.
    offer = "permessage-deflate; client_max_window_bits"
    assert handshakes == [([offer], [answer])]
    assert tap.client.header("Sec-WebSocket-Extensions") == [offer]
    assert tap.server.header("Sec-WebSocket-Extensions") == [answer]
    assert result["extensions"] == answer
    assert result["close"]["code"] == 1000 and result["close"]["wasClean"]

    # Every message made the round trip, with its type.
    assert received == MESSAGES
    replies = [base64.b64decode(data) for _, data in result["replies"]]
    assert [kind for kind, _ in result["replies"]] == [kind for kind, _ in encoded]
    assert [hashlib.sha256(r).hexdigest() for r in replies] == [
        hashlib.sha256(as_bytes(m)).hexdigest() for m in MESSAGES
    ]

    # On the wire: both sides compressed every message (upwire not a large one that deflate cannot
    # shrink: the random binary ones from 16 KiB go as they are), and plain zlib inflates them.
    for direction in (tap.client, tap.server):
        sent = direction.messages()
        assert [m.data for m in sent] == [as_bytes(m) for m in MESSAGES]
        assert [m.opcode for m in sent] == [1 if isinstance(m, str) else 2 for m in MESSAGES]
        expected = [
            direction is tap.client or isinstance(m, str) or len(m) < 16384 for m in MESSAGES
        ]
        assert [m.compressed for m in sent] == expected, [(len(m.data), m.compressed) for m in sent]
        big_text = sent[SIZES.index(65536)]
        assert big_text.wire_size < 65536 / 4
