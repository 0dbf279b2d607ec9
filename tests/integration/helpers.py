"""Small helpers shared by the integration tests (the raw-socket peer is in `wire`)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Protocol

import upwire

# Upper bound for a test body that waits on nothing slow; tests that wait on timeouts set their own.
TEST_TIMEOUT_S = 10.0


async def echo(ws: upwire.ServerConnection) -> None:
    """Send every message back."""
    async for message in ws:
        await ws.send(message)


def uri(server: upwire.Server, path: str = "/") -> str:
    """The ws:// URI of a test server."""
    return f"ws://127.0.0.1:{server.port}{path}"


class StartServer(Protocol):
    """`server = await start_server(handler, **serve_kwargs)`."""

    def __call__(self, handler: Any = ..., /, **kwargs: Any) -> Awaitable[upwire.Server]: ...
