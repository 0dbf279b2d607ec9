"""One WebSocket session between headless Chromium and an upwire server, for capturing on loopback.

Run it while dumpcap captures the WebSocket port (tests/wire/test_chromium_capture.py does; docs/wire.md shows
it by hand):

    python tests/wire/chromium_session.py --port 8765

An upwire echo server (permessage-deflate on, as by default) listens on 127.0.0.1:PORT; a second, plain HTTP
server on another port serves the page Chromium runs the script on (Chromium blocks WebSocket connections from
about:blank to loopback). The page sends text, an empty text, 1000 and 65536 random bytes, asks the server to
ping it ("ping me": the browser answers with a pong) and closes with code 4001 and a reason, which upwire echoes.
Then, for comparison with `dissect --summary`'s polling estimate, the page makes one real `fetch()` POST to the
page server (not on the captured port), whose request head size is reported.
The last line printed is a JSON object with what the page saw. Exit status 0 when every echo matched.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the upwire of this checkout
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for browser.py

from browser import chromium

import upwire
from upwire.server import ServerConnection

CLOSE_CODE = 4001
CLOSE_REASON = "chromium says bye"
PAGE = b"<!doctype html><meta charset=utf-8><title>upwire capture</title>"

SCRIPT = """
async ({url, closeCode, closeReason}) => {
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
  const next = async () => {
    while (!inbox.length) { await new Promise((resolve) => { wake = resolve; }); }
    return inbox.shift();
  };
  const same = (a, b) => {
    if (typeof a === "string" || typeof b === "string") return a === b;
    const x = new Uint8Array(a), y = new Uint8Array(b);
    return x.length === y.length && x.every((v, i) => v === y[i]);
  };
  const random = (n) => crypto.getRandomValues(new Uint8Array(n)).buffer;
  const messages = ["hello from chromium", "", "x".repeat(126), random(1000), random(65536)];
  const echoes = [];
  for (const message of messages) {
    ws.send(message);
    echoes.push(same(await next(), message));
  }
  ws.send("ping me");
  const afterPing = await next();
  ws.close(closeCode, closeReason);
  return {extensions: ws.extensions, echoes, afterPing, close: await closed};
}
"""


async def handler(ws: ServerConnection) -> None:
    """Echo every message; answer "ping me" with a ping (waiting for the browser's pong), then "pinged"."""
    async for message in ws:
        if message == "ping me":
            await asyncio.wait_for(ws.ping(b"upwire-ping"), 10)
            await ws.send("pinged")
        else:
            await ws.send(message)


async def serve_page(heads: list[bytes]) -> asyncio.Server:
    """Serve the page (GET) and answer a polling-style POST with 204; record each request head."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            heads.append(head)
            if head.startswith(b"POST "):
                length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                await reader.readexactly(int(length.group(1)) if length else 0)
                writer.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
            else:
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"
                    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(PAGE), PAGE)
                )
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", 0)


async def session(port: int) -> dict[str, Any]:
    """Run the session against an upwire server on `port`; return what the page reported."""
    async with upwire.serve(handler, "127.0.0.1", port, max_message_size=None):
        heads: list[bytes] = []
        page_server = await serve_page(heads)
        page_port = page_server.sockets[0].getsockname()[1]
        try:
            async with chromium() as browser:
                page = await browser.new_page()
                page.set_default_timeout(20_000)
                await page.goto(f"http://127.0.0.1:{page_port}/")
                result: dict[str, Any] = await page.evaluate(
                    SCRIPT,
                    {
                        "url": f"ws://127.0.0.1:{port}/chromium",
                        "closeCode": CLOSE_CODE,
                        "closeReason": CLOSE_REASON,
                    },
                )
                result["user_agent"] = await page.evaluate("navigator.userAgent")
                # For comparison, one real polling-style request from the same page.
                result["fetch_status"] = await page.evaluate(
                    "fetch('/poll', {method: 'POST', body: 'hello from chromium'})"
                    ".then((response) => response.status)"
                )
                result["fetch_post_head_bytes"] = len(heads[-1])
        finally:
            page_server.close()
            await page_server.wait_closed()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8765, help="the upwire server's port")
    args = parser.parse_args()
    result = asyncio.run(session(args.port))
    print(json.dumps(result))
    ok = all(result["echoes"]) and result["afterPing"] == "pinged"
    ok = ok and (result["close"]["code"], result["close"]["reason"]) == (CLOSE_CODE, CLOSE_REASON)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
