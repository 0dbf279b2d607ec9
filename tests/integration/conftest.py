"""Fixtures for the integration tests: real upwire servers on 127.0.0.1 with a port the OS picks.

Every server a test starts is closed at teardown (bounded in time), so tests can run in any order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio

import upwire

from .helpers import StartServer, echo


@pytest_asyncio.fixture
async def start_server() -> AsyncIterator[StartServer]:
    """Start upwire servers on 127.0.0.1:0; they are shut down at teardown."""
    servers: list[upwire.Server] = []

    async def start(
        handler: Callable[[upwire.ServerConnection], Awaitable[None]] | Any = echo, /, **kwargs: Any
    ) -> upwire.Server:
        kwargs.setdefault("shutdown_timeout", 2.0)
        server = await upwire.serve(handler, "127.0.0.1", 0, **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await server.wait_closed()


@pytest.fixture
def no_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No proxy variables in the environment (the machine's own would send test traffic elsewhere)."""
    for name in ("http_proxy", "https_proxy", "no_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    return monkeypatch
