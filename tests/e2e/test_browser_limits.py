"""A browser sending a message over the server's limit sees 1009, over ws:// and over wss://.

The server fails the connection at the frame's header while Chromium still streams the rest. The close
frame reaches the browser only if TCP is not reset under it: over TCP the server half-closes and drains,
over TLS (no half-close) it drains until the browser is quiet. Closing at once gave Chromium 1006 over TCP
in 7 of 9 tries (it reads its socket promptly, so the race is narrower than for a peer that reads late:
tests/integration/test_failing_close.py has those, for both).
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

import pytest
import trustme

import upwire

if TYPE_CHECKING:
    from playwright.async_api import Browser

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]

SEND_TOO_MUCH = """
async ({url, size}) => {
  const ws = new WebSocket(url);
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = () => reject(new Error("the WebSocket failed before it opened"));
  });
  const closed = new Promise((resolve) => {
    ws.onclose = (e) => resolve({code: e.code, reason: e.reason, wasClean: e.wasClean});
  });
  ws.send(new Uint8Array(size));
  return await closed;
}
"""


async def handler(ws: upwire.ServerConnection) -> None:
    async for _ in ws:
        pass


@pytest.mark.parametrize("scheme", ["ws", "wss"])
async def test_a_message_over_the_limit_closes_with_1009_in_the_browser(
    browser: Browser, scheme: str
) -> None:
    context = None
    if scheme == "wss":
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        trustme.CA().issue_cert("127.0.0.1").configure_cert(context)
    async with await upwire.serve(
        handler, "127.0.0.1", 0, ssl=context, max_message_size=1 << 20, ping_interval=None
    ) as server:
        # The certificate comes from a CA made now: the page's context accepts it.
        page = await (await browser.new_context(ignore_https_errors=True)).new_page()
        url = f"{scheme}://127.0.0.1:{server.port}/"
        for _ in range(3):
            close = await page.evaluate(SEND_TOO_MUCH, {"url": url, "size": 16 << 20})
            assert close["code"] == 1009, close
            assert close["wasClean"], close
            assert "1048576" in close["reason"] or "max_message_size" in close["reason"], close
