"""wss:// interop: upwire against ``websockets`` and Node ``ws`` over TLS, both roles.

A CA and certificates for 127.0.0.1 and localhost are made at test time with trustme; every client trusts
only that CA and verifies the server's certificate and host name.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import trustme
import websockets.asyncio.client
import websockets.asyncio.server

import upwire

from .peers import STEP_TIMEOUT_S, NodePeer, UpwireEchoHandler, assert_node_saw

pytestmark = pytest.mark.timeout(60)

MESSAGES: list[str | bytes] = ["hello over TLS", bytes(range(256)) * 300, "é" * 70_000]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_cert(ca: trustme.CA) -> trustme.LeafCert:
    return ca.issue_cert("localhost", "127.0.0.1")


@pytest.fixture
def server_context(server_cert: trustme.LeafCert) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(context)
    return context


@pytest.fixture
def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture(scope="module")
def pem_files(
    ca: trustme.CA, server_cert: trustme.LeafCert, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Path]]:
    folder = tmp_path_factory.mktemp("tls")
    files = {"ca": folder / "ca.pem", "cert": folder / "cert.pem", "key": folder / "key.pem"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    server_cert.cert_chain_pems[0].write_to_path(str(files["cert"]))
    for extra in server_cert.cert_chain_pems[1:]:
        extra.write_to_path(str(files["cert"]), append=True)
    server_cert.private_key_pem.write_to_path(str(files["key"]))
    yield files


@pytest_asyncio.fixture
async def node_peers() -> AsyncIterator[list[NodePeer]]:
    peers: list[NodePeer] = []
    yield peers
    for peer in peers:
        await peer.stop()


async def test_upwire_client_and_websockets_tls_server(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    async def echo(ws: Any) -> None:
        async for message in ws:
            await ws.send(message)

    async with websockets.asyncio.server.serve(
        echo, "127.0.0.1", 0, ssl=server_context, max_size=None
    ) as server:
        port = server.sockets[0].getsockname()[1]
        async with upwire.connect(f"wss://localhost:{port}/", ssl=client_context) as ws:
            for message in MESSAGES:
                await ws.send(message)
                assert await asyncio.wait_for(ws.recv(), STEP_TIMEOUT_S) == message


async def test_websockets_client_and_upwire_tls_server(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    handler = UpwireEchoHandler()
    async with upwire.serve(handler, "127.0.0.1", 0, ssl=server_context) as server:
        async with websockets.asyncio.client.connect(
            f"wss://localhost:{server.port}/", ssl=client_context, max_size=None
        ) as ws:
            for message in MESSAGES:
                await ws.send(message)
                assert await asyncio.wait_for(ws.recv(), STEP_TIMEOUT_S) == message
        await handler.record.wait_finished()
    assert handler.record.messages == MESSAGES
    assert handler.record.close_code == 1000


async def test_websockets_client_refuses_upwire_server_certificate_for_another_name(
    ca: trustme.CA, client_context: ssl.SSLContext
) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("other.example").configure_cert(context)
    async with upwire.serve(UpwireEchoHandler(), "127.0.0.1", 0, ssl=context) as server:
        with pytest.raises(ssl.SSLCertVerificationError):
            await websockets.asyncio.client.connect(
                f"wss://localhost:{server.port}/", ssl=client_context
            )


async def test_upwire_client_and_node_ws_tls_server(
    pem_files: dict[str, Path], client_context: ssl.SSLContext, node_peers: list[NodePeer]
) -> None:
    peer = await NodePeer.start(
        "tls_echo_server.js", f"--cert={pem_files['cert']}", f"--key={pem_files['key']}"
    )
    node_peers.append(peer)
    port = (await peer.next_event("listening"))["port"]
    async with upwire.connect(f"wss://localhost:{port}/tls", ssl=client_context) as ws:
        assert (await peer.next_event("connection"))["path"] == "/tls"
        for message in MESSAGES:
            await ws.send(message)
            assert_node_saw(await peer.next_event("message"), message)
            assert await asyncio.wait_for(ws.recv(), STEP_TIMEOUT_S) == message
    close = await peer.next_event("close")
    assert close["code"] == 1000


async def test_upwire_client_refuses_node_ws_certificate_without_the_ca(
    pem_files: dict[str, Path], node_peers: list[NodePeer]
) -> None:
    peer = await NodePeer.start(
        "tls_echo_server.js", f"--cert={pem_files['cert']}", f"--key={pem_files['key']}"
    )
    node_peers.append(peer)
    port = (await peer.next_event("listening"))["port"]
    with pytest.raises(upwire.InvalidCertificate):
        await upwire.connect(f"wss://localhost:{port}/")


async def test_node_ws_client_and_upwire_tls_server(
    pem_files: dict[str, Path], server_context: ssl.SSLContext, node_peers: list[NodePeer]
) -> None:
    handler = UpwireEchoHandler()
    async with upwire.serve(handler, "127.0.0.1", 0, ssl=server_context) as server:
        peer = await NodePeer.start(
            "tls_client.js", f"wss://localhost:{server.port}/", f"--ca={pem_files['ca']}"
        )
        node_peers.append(peer)
        await peer.next_event("open")
        for message in MESSAGES:
            await peer.send(message)
            assert_node_saw(await peer.next_event("message"), message)
        await peer.close(1000, "done")
        close = await peer.next_event("close")
        assert close["code"] == 1000
        await handler.record.wait_finished()
    assert handler.record.messages == MESSAGES
    assert handler.record.close_reason == "done"
