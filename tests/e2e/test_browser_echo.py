"""The browser's own ``WebSocket`` against an upwire echo server, in Debian's headless Chromium.

The page's JavaScript (run through ``page.evaluate``) opens ``new WebSocket(url)`` to an upwire
server in the test's event loop; both ends report what they saw: the messages, and the close code
and reason (upwire's ``close_code``/``close_reason``, the browser's ``CloseEvent``).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio

import upwire

if TYPE_CHECKING:
    from playwright.async_api import Page

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]

CLOSE_CODE = 4000
BROWSER_REASON = "chromium says goodbye ✓"
UPWIRE_REASON = "upwire says goodbye ✓"
TEXT = "héllo from Chromium — 你好 🌍"
BINARY = random.Random(65536).randbytes(65536)

# Opens a WebSocket, then runs `steps`: ["send-text", text] and ["send-binary", [byte values]]
# send and wait for the reply (null if the connection closes first); ["close", code, reason]
# closes. Returns the replies (binary ones as arrays of byte values) and the CloseEvent.
SCRIPT = """
async ({url, steps}) => {
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  const inbox = [];
  let wake = null;
  let closeEvent = null;
  const wakeUp = () => { if (wake) { wake(); wake = null; } };
  ws.onmessage = (event) => { inbox.push(event.data); wakeUp(); };
  const closed = new Promise((resolve) => {
    ws.onclose = (e) => {
      closeEvent = {code: e.code, reason: e.reason, wasClean: e.wasClean};
      resolve(closeEvent);
      wakeUp();
    };
  });
  // The next message, or null when the connection closes first.
  const nextMessage = async () => {
    while (inbox.length === 0 && closeEvent === null) {
      await new Promise((resolve) => { wake = resolve; });
    }
    return inbox.length > 0 ? inbox.shift() : null;
  };
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = () => reject(new Error("the WebSocket failed before it opened"));
  });
  const replies = [];
  for (const step of steps) {
    if (step[0] === "send-text") ws.send(step[1]);
    if (step[0] === "send-binary") ws.send(new Uint8Array(step[1]).buffer);
    if (step[0] === "send-text" || step[0] === "send-binary") {
      const reply = await nextMessage();
      if (reply === null) replies.push(null);
      else if (typeof reply === "string") replies.push({type: "text", data: reply});
      else replies.push({type: "binary", data: Array.from(new Uint8Array(reply))});
    }
    if (step[0] === "close") ws.close(step[1], step[2]);
  }
  return {replies, close: await closed, extensions: ws.extensions, protocol: ws.protocol};
}
"""


@dataclass
class EchoRecord:
    messages: list[str | bytes] = field(default_factory=list)
    close: asyncio.Future[tuple[int | None, str | None]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@pytest_asyncio.fixture
async def echo_server() -> AsyncIterator[tuple[str, EchoRecord]]:
    """An upwire server that echoes messages and closes with 4000 when told "close, please"."""
    record = EchoRecord()

    async def handler(ws: upwire.ServerConnection) -> None:
        try:
            async for message in ws:
                record.messages.append(message)
                if message == "close, please":
                    await ws.close(CLOSE_CODE, UPWIRE_REASON)
                    break
                await ws.send(message)
        except upwire.ConnectionClosed:
            pass
        finally:
            await asyncio.wait_for(ws.wait_closed(), 10)
            if not record.close.done():
                record.close.set_result((ws.close_code, ws.close_reason))

    server = await upwire.serve(handler, "127.0.0.1", 0)
    try:
        yield f"ws://127.0.0.1:{server.port}/echo", record
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), 10)


async def run_in_browser(
    page: Page, page_url: str, url: str, steps: list[list[Any]]
) -> dict[str, Any]:
    await page.goto(page_url)
    result: dict[str, Any] = await page.evaluate(SCRIPT, {"url": url, "steps": steps})
    return result


async def test_chromium_exchanges_text_and_64_kib_binary_with_upwire_and_closes_with_4000(
    page: Page, blank_page_url: str, echo_server: tuple[str, EchoRecord]
) -> None:
    url, record = echo_server
    steps = [
        ["send-text", TEXT],
        ["send-binary", list(BINARY)],
        ["close", CLOSE_CODE, BROWSER_REASON],
    ]
    result = await run_in_browser(page, blank_page_url, url, steps)

    assert result["replies"][0] == {"type": "text", "data": TEXT}
    assert result["replies"][1]["type"] == "binary"
    assert bytes(result["replies"][1]["data"]) == BINARY
    assert record.messages == [TEXT, BINARY]
    assert await asyncio.wait_for(record.close, 10) == (CLOSE_CODE, BROWSER_REASON)
    # The browser reports the close frame it got back: upwire echoes the code (RFC 6455 §5.5.1).
    assert result["close"]["code"] == CLOSE_CODE
    assert result["close"]["wasClean"] is True


async def test_upwire_server_closing_with_4000_and_a_reason_is_seen_by_chromium(
    page: Page, blank_page_url: str, echo_server: tuple[str, EchoRecord]
) -> None:
    url, record = echo_server
    result = await run_in_browser(
        page, blank_page_url, url, [["send-text", "hi"], ["send-text", "close, please"]]
    )
    assert result["replies"] == [{"type": "text", "data": "hi"}, None]
    assert result["close"] == {"code": CLOSE_CODE, "reason": UPWIRE_REASON, "wasClean": True}
    assert record.messages == ["hi", "close, please"]
    # Chromium echoes the close code it received.
    code, _ = await asyncio.wait_for(record.close, 10)
    assert code == CLOSE_CODE
