"""Small helpers shared by the integration tests (the raw-socket peer is in `wire`)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable
from typing import Any, Protocol

import trustme

import upwire

from .wire import TEXT, RawPeer

# Upper bound for a test body that waits on nothing slow; tests that wait on timeouts set their own.
TEST_TIMEOUT_S = 10.0


async def echo(ws: upwire.ServerConnection) -> None:
    """Send every message back."""
    async for message in ws:
        await ws.send(message)


def tls_contexts(host: str = "localhost") -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context) for `host`, from a fresh test CA that only the client trusts."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(host).configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    return server_context, client_context


def uri(server: upwire.Server, path: str = "/") -> str:
    """The ws:// URI of a test server."""
    return f"ws://127.0.0.1:{server.port}{path}"


class StartServer(Protocol):
    """`server = await start_server(handler, **serve_kwargs)`."""

    def __call__(self, handler: Any = ..., /, **kwargs: Any) -> Awaitable[upwire.Server]: ...


async def scheduled_during_round_trips(port: int, count: int = 20) -> list[Any]:
    """The callbacks the loop is given (`call_soon`) while a raw peer makes `count` lone round trips with
    the echo server on `port`, after one to warm up."""
    loop = asyncio.get_running_loop()
    scheduled: list[Any] = []
    call_soon = loop.call_soon

    def spying_call_soon(callback, *args, **kwargs):  # type: ignore[no-untyped-def]
        scheduled.append(callback)
        return call_soon(callback, *args, **kwargs)

    peer = await RawPeer.upgraded(port)
    peer.send_frame(TEXT, "warm up")
    await peer.read_frame()
    loop.call_soon = spying_call_soon  # type: ignore[method-assign]
    try:
        for i in range(count):
            peer.send_frame(TEXT, f"ping {i}")
            assert (await peer.read_frame()).payload == f"ping {i}".encode()
    finally:
        del loop.call_soon
    return scheduled
