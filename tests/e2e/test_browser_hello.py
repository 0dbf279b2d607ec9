"""The hello example in a real browser: Debian's headless Chromium, driven by Playwright.

The page that ``examples/hello/server.py`` serves at ``/`` connects back with the browser's own
``WebSocket``; typing a name in ``#name`` and pressing ``#send`` shows ``Hello <name>!`` in ``#log``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from playwright.async_api import Page, WebSocket

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]


def record_websocket_frames(page: Page) -> dict[str, list[Any]]:
    """Record what the page's WebSocket connections send and receive, as Chromium reports it."""
    frames: dict[str, list[Any]] = {"urls": [], "sent": [], "received": []}

    def on_websocket(websocket: WebSocket) -> None:
        frames["urls"].append(websocket.url)
        # Playwright wants Python functions as listeners, not bound builtins like list.append.
        websocket.on("framesent", lambda payload: frames["sent"].append(payload))
        websocket.on("framereceived", lambda payload: frames["received"].append(payload))

    page.on("websocket", on_websocket)
    return frames


async def greet(page: Page, name: str) -> None:
    await page.fill("#name", name)
    await page.click("#send")


async def test_hello_page_greets_the_name_typed_in_chromium(page: Page, hello_server: str) -> None:
    from playwright.async_api import expect

    frames = record_websocket_frames(page)
    response = await page.goto(hello_server + "/")
    assert response is not None and response.status == 200
    assert "text/html" in (await response.header_value("content-type") or "")

    await greet(page, "Ada")
    await expect(page.locator("#log")).to_contain_text("Hello Ada!")

    assert len(frames["urls"]) == 1
    assert frames["urls"][0].startswith(hello_server.replace("http://", "ws://"))
    assert "Ada" in frames["sent"]
    assert "Hello Ada!" in frames["received"]


async def test_hello_page_greets_several_non_ascii_names_over_one_connection(
    page: Page, hello_server: str
) -> None:
    from playwright.async_api import expect

    frames = record_websocket_frames(page)
    await page.goto(hello_server + "/")
    for name in ["Wörld ✓", "你好", "🌍"]:
        await greet(page, name)
        await expect(page.locator("#log")).to_contain_text(f"Hello {name}!")

    assert len(frames["urls"]) == 1, "the page should keep one WebSocket connection open"
    assert frames["received"] == ["Hello Wörld ✓!", "Hello 你好!", "Hello 🌍!"]


async def test_hello_page_loads_without_errors_and_reconnects_after_the_server_restarts(
    page: Page, tmp_path: Path
) -> None:
    from playwright.async_api import expect

    from .conftest import free_port, start_hello, wait_until_listening

    errors: list[str] = []
    page.on(
        "console", lambda message: errors.append(message.text) if message.type == "error" else None
    )
    port, log = free_port(), tmp_path / "hello-server.log"
    servers = [start_hello(port, log)]
    try:
        await wait_until_listening(servers[0], port, log)
        await page.goto(f"http://127.0.0.1:{port}/")
        await expect(page.locator("#status")).to_have_text("connected")
        assert errors == []  # nothing the page asks for is missing (a favicon, say)
        servers[0].terminate()
        servers[0].wait(timeout=5)
        await expect(page.locator("#status")).to_contain_text("reconnecting")
        assert await page.is_disabled("#send")
        servers.append(start_hello(port, log))
        await wait_until_listening(servers[1], port, log)
        await expect(page.locator("#status")).to_have_text("connected", timeout=20_000)
        await greet(page, "again")
        await expect(page.locator("#log")).to_contain_text("Hello again!")
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=5)
