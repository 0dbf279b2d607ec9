"""How the tests start Debian's headless Chromium (one place for the binary and its flags)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # Playwright is imported when a browser starts: a missing one is reported then.
    from playwright.async_api import Browser

CHROMIUM = os.environ.get("UPWIRE_CHROMIUM", "/usr/bin/chromium")

# The flags this machine needs: without the background-networking ones Chromium keeps trying to reach
# Google's hosts, which the closed network refuses. Never `playwright install`: Debian's build is used.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Debian's Chromium, started headless with the flags above, closed at the block's end."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=30_000
        )
        try:
            yield browser
        finally:
            await browser.close()
