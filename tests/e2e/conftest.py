"""Fixtures for the browser tests: Debian's headless Chromium driven by Playwright.

Playwright only drives the browser here; it never downloads one (`playwright install` fails on
this machine's closed network). The browser is /usr/bin/chromium from Debian's `chromium`
package, which `scripts/install.sh all` installs. When it or Playwright is missing the tests fail
with a message that says so; they are never skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio
from browser import CHROMIUM, chromium

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

REPO = Path(__file__).resolve().parents[2]
HELLO_SERVER = REPO / "examples" / "hello" / "server.py"
STARTUP_TIMEOUT_S = 15.0


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "browser: drives Debian's headless Chromium (needs chromium)"
    )


@pytest_asyncio.fixture
async def browser() -> AsyncIterator[Browser]:
    """A headless Chromium with a fresh profile, closed after the test."""
    try:
        import playwright  # noqa: F401
    except ImportError:
        pytest.fail("the browser tests need Playwright: pip install -e '.[test]' (./run test does)")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"the browser tests need Chromium at {CHROMIUM}: apt-get install chromium "
            "(scripts/install.sh all does it); never `playwright install`"
        )
    async with chromium() as started:
        yield started


@pytest_asyncio.fixture
async def page(browser: Browser) -> Page:
    """A new page with short timeouts, so that a broken page fails fast."""
    new_page = await browser.new_page()
    new_page.set_default_timeout(10_000)
    # Chromium's console explains failed connections (e.g. net::ERR_...): show it on failure.
    new_page.on("console", lambda message: print(f"chromium console: {message.text}"))
    return new_page


def start_hello(port: int, log: Path) -> subprocess.Popen[bytes]:
    """Start ``examples/hello/server.py`` on 127.0.0.1:`port`, its output appended to `log`."""
    with log.open("ab") as output:
        return subprocess.Popen(
            [sys.executable, str(HELLO_SERVER), "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO,
            # The upwire of this checkout, installed or not.
            env={
                **os.environ,
                "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
            },
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def wait_until_listening(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    """Wait until something accepts TCP connections on ``port``, or fail if ``process`` dies."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STARTUP_TIMEOUT_S
    while True:
        if process.poll() is not None:
            output = log.read_text(errors="replace")
            pytest.fail(f"the hello server exited with {process.returncode}:\n{output}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if loop.time() > deadline:
                pytest.fail(
                    f"the hello server did not listen on port {port} within {STARTUP_TIMEOUT_S} s"
                )
            await asyncio.sleep(0.05)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return


@pytest_asyncio.fixture
async def hello_server(tmp_path: Path) -> AsyncIterator[str]:
    """Run ``examples/hello/server.py`` on a free port; yield its ``http://`` base URL."""
    if not HELLO_SERVER.is_file():
        pytest.fail(f"{HELLO_SERVER.relative_to(REPO)} does not exist")
    port = free_port()
    log = tmp_path / "hello-server.log"
    process = start_hello(port, log)
    try:
        await wait_until_listening(process, port, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest_asyncio.fixture
async def blank_page_url() -> AsyncIterator[str]:
    """Serve an empty HTML page on 127.0.0.1 and yield its URL.

    Scripts run on this page rather than on ``about:blank``: Chromium blocks WebSocket connections
    from an opaque origin to loopback (``ERR_BLOCKED_BY_LOCAL_NETWORK_ACCESS_CHECKS``), while a
    page served from 127.0.0.1 may open them.
    """
    body = b"<!doctype html><meta charset=utf-8><title>upwire e2e</title>"

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
            )
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    finally:
        server.close()
        await server.wait_closed()
