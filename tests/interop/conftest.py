"""Fixtures for the interop tests: upwire, ``websockets`` and Node ``ws`` servers and clients.

Every server listens on 127.0.0.1 with a port the OS picks, and everything a fixture starts is
stopped at teardown (Node processes by their PID), so tests can run in any order.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio
import websockets.asyncio.server

import upwire

from .peers import PAYLOADS, STEP_TIMEOUT_S, NodePeer, StartNodeClient, StartNodeServer, StartServer


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run every test that asks for ``payload`` once per message case of :data:`PAYLOADS`."""
    if "payload" in metafunc.fixturenames:
        metafunc.parametrize("payload", list(PAYLOADS.values()), ids=list(PAYLOADS))


@pytest_asyncio.fixture
async def upwire_server() -> AsyncIterator[StartServer]:
    """Start upwire servers: ``url = await upwire_server(handler, **options)``."""
    servers: list[Any] = []

    async def start(handler: Callable[[Any], Awaitable[None]], **options: Any) -> str:
        server = await upwire.serve(handler, "127.0.0.1", 0, **options)
        servers.append(server)
        return f"ws://127.0.0.1:{server.port}"

    yield start
    for server in servers:
        server.close()
        await wait_closed_briefly(server.wait_closed())


@pytest_asyncio.fixture
async def websockets_server() -> AsyncIterator[StartServer]:
    """Start ``websockets`` servers: ``url = await websockets_server(handler, **options)``."""
    servers: list[websockets.asyncio.server.Server] = []

    async def start(handler: Callable[[Any], Awaitable[None]], **options: Any) -> str:
        # No limit on the peer's side: see the note on max_size in test_websockets_peer.py.
        options.setdefault("max_size", None)
        server = await websockets.asyncio.server.serve(handler, "127.0.0.1", 0, **options)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return f"ws://127.0.0.1:{port}"

    yield start
    for server in servers:
        server.close()
        await wait_closed_briefly(server.wait_closed())


async def wait_closed_briefly(closing: Awaitable[None]) -> None:
    """Wait for a server to finish closing, but never longer than one test step."""
    await asyncio.wait_for(closing, STEP_TIMEOUT_S)


@pytest_asyncio.fixture
async def node_server() -> AsyncIterator[StartNodeServer]:
    """Start Node ``ws`` echo servers: ``peer, url = await node_server(*options)``."""
    peers: list[NodePeer] = []

    async def start(*options: str) -> tuple[NodePeer, str]:
        peer = await NodePeer.start("echo_server.js", *options)
        peers.append(peer)
        listening = await peer.next_event("listening")
        return peer, f"ws://127.0.0.1:{listening['port']}"

    yield start
    for peer in peers:
        await peer.stop()


@pytest_asyncio.fixture
async def node_client() -> AsyncIterator[StartNodeClient]:
    """Start Node ``ws`` clients: ``peer = await node_client(url, *options)`` (open on return)."""
    peers: list[NodePeer] = []

    async def start(url: str, *options: str) -> NodePeer:
        peer = await NodePeer.start("client.js", url, *options)
        peers.append(peer)
        await peer.next_event("open")
        return peer

    yield start
    for peer in peers:
        await peer.stop()
