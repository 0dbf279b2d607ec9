"""Behind a reverse proxy: the nginx configuration of docs/deployment.md, run in a real nginx.

The test takes the `nginx` block from the doc, points it at an upwire server and a free port, and makes
nginx connect to upwire from 127.0.0.3 (`proxy_bind`), so that the proxy (127.0.0.3) and the client
(127.0.0.1) have different addresses on one machine. `trusted_proxies` then decides whose word counts.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

import upwire
from upwire.forwarded import TrustedProxies
from upwire.protocol.http import Headers

from .daemons import Daemon, private_folder, remove, start_nginx
from .helpers import TEST_TIMEOUT_S, StartServer

pytestmark = pytest.mark.timeout(TEST_TIMEOUT_S * 4)

DEPLOYMENT_DOC = Path(__file__).parents[2] / "docs" / "deployment.md"
PROXY_ADDRESS = "127.0.0.3"


def documented_nginx_block() -> str:
    blocks = re.findall(r"```nginx\n(.*?)```", DEPLOYMENT_DOC.read_text(), re.DOTALL)
    assert len(blocks) == 1, "docs/deployment.md should hold exactly one nginx block"
    return blocks[0]


def nginx_config(upstream_port: int) -> str:
    """The documented block with the test's ports, nginx connecting to upwire from PROXY_ADDRESS."""
    config = documented_nginx_block()
    for old, new in (
        ("listen 80;", "listen 127.0.0.1:{port};"),
        ("server 127.0.0.1:8765;", f"server 127.0.0.1:{upstream_port};"),
        (
            "proxy_pass http://upwire;",
            f"proxy_pass http://upwire;\n        proxy_bind {PROXY_ADDRESS};",
        ),
    ):
        assert old in config, f"the documented nginx block no longer contains {old!r}"
        config = config.replace(old, new)
    return config


StartNginx = Callable[[int], Awaitable[Daemon]]


@pytest_asyncio.fixture
async def nginx() -> AsyncIterator[StartNginx]:
    """`proxy = await nginx(upstream_port)`: nginx with the documented config; stopped by PID."""
    started: list[Daemon] = []

    async def start(upstream_port: int) -> Daemon:
        daemon = await start_nginx(nginx_config(upstream_port))
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        await daemon.stop()
        remove(daemon)


class Recorder:
    """A handler that greets, echoes, and keeps what the server saw of each connection."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    async def __call__(self, ws: upwire.ServerConnection) -> None:
        assert ws.request is not None
        self.seen.append(
            {
                "remote": ws.remote_address,
                "peer": ws.peer_address,
                "forwarded_for": ws.request.headers.get("X-Forwarded-For"),
                "proto": ws.request.headers.get("X-Forwarded-Proto"),
                "host": ws.request.headers.get("Host"),
            }
        )
        await ws.send("welcome")
        async for message in ws:
            await ws.send(message)
        # (the closing handshake through nginx is checked by the client's close code)


async def test_websocket_through_nginx_both_ways(
    start_server: StartServer, nginx: StartNginx
) -> None:
    recorder = Recorder()
    server = await start_server(recorder)
    proxy = await nginx(server.port)
    async with upwire.connect(f"ws://127.0.0.1:{proxy.port}/chat?room=1") as ws:
        assert await ws.recv() == "welcome"
        for message in ["small", "é" * 50_000, bytes(range(256)) * 1000]:
            await ws.send(message)
            assert await ws.recv() == message
        await ws.send([b"frag", b"mented"])
        assert await ws.recv() == b"fragmented"
        assert await ws.ping() >= 0
    assert ws.close_code == 1000
    assert recorder.seen[0]["proto"] == "http"
    assert recorder.seen[0]["peer"][0] == PROXY_ADDRESS
    # The Host as the client sent it, port included: an Origin check compares a page's origin with it.
    assert recorder.seen[0]["host"] == f"127.0.0.1:{proxy.port}"


async def test_server_closing_through_nginx_reaches_the_client(
    start_server: StartServer, nginx: StartNginx
) -> None:
    async def closer(ws: upwire.ServerConnection) -> None:
        await ws.close(4001, "bye from upwire")

    server = await start_server(closer)
    proxy = await nginx(server.port)
    async with upwire.connect(f"ws://127.0.0.1:{proxy.port}/") as ws:
        with pytest.raises(upwire.ConnectionClosedError):
            await ws.recv()
    assert (ws.close_code, ws.close_reason) == (4001, "bye from upwire")


async def test_trusted_proxy_gives_the_forwarded_client_address(
    start_server: StartServer, nginx: StartNginx
) -> None:
    recorder = Recorder()
    server = await start_server(recorder, trusted_proxies=[PROXY_ADDRESS])
    proxy = await nginx(server.port)
    async with upwire.connect(f"ws://127.0.0.1:{proxy.port}/") as ws:
        assert await ws.recv() == "welcome"
    seen = recorder.seen[0]
    assert seen["forwarded_for"] == "127.0.0.1"
    assert seen["remote"] == ("127.0.0.1", 0)
    assert seen["peer"][0] == PROXY_ADDRESS


async def test_client_cannot_spoof_its_address_through_a_trusted_proxy(
    start_server: StartServer, nginx: StartNginx
) -> None:
    recorder = Recorder()
    server = await start_server(recorder, trusted_proxies=[PROXY_ADDRESS])
    proxy = await nginx(server.port)
    spoof = {"X-Forwarded-For": "203.0.113.7, 127.0.0.3"}
    async with upwire.connect(f"ws://127.0.0.1:{proxy.port}/", additional_headers=spoof) as ws:
        assert await ws.recv() == "welcome"
    seen = recorder.seen[0]
    # nginx appended the real client address to the client's claims; that is what counts.
    assert seen["forwarded_for"] == "203.0.113.7, 127.0.0.3, 127.0.0.1"
    assert seen["remote"] == ("127.0.0.1", 0)


async def test_untrusted_peer_cannot_spoof_its_address(start_server: StartServer) -> None:
    recorder = Recorder()
    server = await start_server(recorder, trusted_proxies=[PROXY_ADDRESS, "10.0.0.0/8"])
    spoof = {"X-Forwarded-For": "203.0.113.7"}
    async with upwire.connect(f"ws://127.0.0.1:{server.port}/", additional_headers=spoof) as ws:
        assert await ws.recv() == "welcome"
    seen = recorder.seen[0]
    assert seen["remote"] == seen["peer"]
    assert seen["remote"][0] == "127.0.0.1" and seen["remote"][1] != 0


async def test_without_trusted_proxies_the_address_is_the_proxy(
    start_server: StartServer, nginx: StartNginx
) -> None:
    recorder = Recorder()
    server = await start_server(recorder)
    proxy = await nginx(server.port)
    async with upwire.connect(f"ws://127.0.0.1:{proxy.port}/") as ws:
        assert await ws.recv() == "welcome"
    seen = recorder.seen[0]
    assert seen["forwarded_for"] == "127.0.0.1"
    assert seen["remote"] == seen["peer"]
    assert seen["remote"][0] == PROXY_ADDRESS


# ------------------------------------------------------------------ the rule itself (no network)


def client(trusted: list[str], peer: tuple[str, int] | str, *forwarded: str) -> Any:
    headers = Headers([("X-Forwarded-For", value) for value in forwarded])
    return TrustedProxies(trusted).client_address(peer, headers)


async def test_behind_nginx_on_a_unix_socket_unix_in_trusted_proxies_trusts_it(
    nginx: StartNginx,
) -> None:
    # nginx -> upwire over a Unix socket (`server unix:/path;`): the peer has no address; "unix" in
    # trusted_proxies makes its X-Forwarded-For count, and without it the peer stays "" as before.
    folder = private_folder("upwire-unix-")
    path = str(folder / "ws.sock")
    for trusted, remote in ((["unix"], ("127.0.0.1", 0)), ([], "")):
        recorder = Recorder()
        async with upwire.serve(recorder, unix_socket=path, trusted_proxies=trusted):
            os.chmod(path, 0o666)  # nginx's workers run as nobody
            config = (
                nginx_config(1)
                .replace("server 127.0.0.1:1;", f"server unix:{path};")
                .replace(f"proxy_bind {PROXY_ADDRESS};", "")  # no address to bind to
            )
            proxy = await start_nginx(config)
            try:
                async with upwire.connect(f"ws://127.0.0.1:{proxy.port}/") as ws:
                    assert await ws.recv() == "welcome"
            finally:
                await proxy.stop()
                remove(proxy)
        assert recorder.seen[0]["forwarded_for"] == "127.0.0.1"
        assert recorder.seen[0]["remote"] == remote
    shutil.rmtree(folder, ignore_errors=True)


def test_forwarded_for_rules() -> None:
    peer = ("10.0.0.2", 5555)
    # Trusting nobody, or an untrusted peer: the socket's peer.
    assert client([], peer, "1.2.3.4") == peer
    assert client(["10.0.0.9"], peer, "1.2.3.4") == peer
    # A trusted peer speaks for the client; a network may be trusted.
    assert client(["10.0.0.2"], peer, "1.2.3.4") == ("1.2.3.4", 0)
    assert client(["10.0.0.0/8"], peer, "1.2.3.4") == ("1.2.3.4", 0)
    # Right to left, skipping trusted hops; repeated headers are one list.
    assert client(["10.0.0.0/8"], peer, "6.6.6.6, 1.2.3.4, 10.0.0.7") == ("1.2.3.4", 0)
    assert client(["10.0.0.0/8"], peer, "6.6.6.6", "1.2.3.4") == ("1.2.3.4", 0)
    # Every hop trusted: the leftmost; no header: the peer.
    assert client(["10.0.0.0/8"], peer, "10.1.1.1, 10.2.2.2") == ("10.1.1.1", 0)
    assert client(["10.0.0.0/8"], peer) == peer
    # A garbled hop stops the walk at the last trusted address (or the peer).
    assert client(["10.0.0.0/8"], peer, "1.2.3.4, unknown, 10.0.0.7") == ("10.0.0.7", 0)
    assert client(["10.0.0.0/8"], peer, "not-an-ip") == peer
    # Ports and brackets are dropped; IPv6 works; an IPv4-mapped peer matches the IPv4 entry.
    assert client(["10.0.0.2"], peer, "1.2.3.4:999") == ("1.2.3.4", 0)
    assert client(["::1"], ("::1", 1, 0, 0), "[2001:db8::1]:443") == ("2001:db8::1", 0)
    assert client(["127.0.0.1"], ("::ffff:127.0.0.1", 1, 0, 0), "1.2.3.4") == ("1.2.3.4", 0)
    # A Unix socket's peer ("") only with "unix"; "unix" trusts no IP address.
    assert client(["unix"], "", "1.2.3.4") == ("1.2.3.4", 0)
    assert client(["127.0.0.1"], "", "1.2.3.4") == ""
    assert client(["unix"], peer, "1.2.3.4") == peer


def test_trusted_proxies_are_checked() -> None:
    with pytest.raises(ValueError, match=r"'proxy\.local' is not an IP address or network"):
        TrustedProxies(["proxy.local"])
    with pytest.raises(TypeError, match="list of addresses"):
        TrustedProxies("127.0.0.1")
    with pytest.raises(ValueError, match="not an IP address"):
        upwire.serve(lambda ws: None, trusted_proxies=["nginx"])  # type: ignore[arg-type, return-value]
