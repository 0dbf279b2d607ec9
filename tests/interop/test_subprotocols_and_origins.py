"""Subprotocol negotiation and the Origin check, with `websockets` as the peer on the other side."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from websockets.asyncio.client import connect as websockets_connect
from websockets.asyncio.server import ServerConnection as WebsocketsServerConnection
from websockets.asyncio.server import serve as websockets_serve
from websockets.exceptions import InvalidStatus as WebsocketsInvalidStatus

import upwire

TIMEOUT_S = 10.0


async def report_subprotocol(ws: upwire.ServerConnection) -> None:
    await ws.send(f"subprotocol={ws.subprotocol}")
    await ws.wait_closed()


async def test_upwire_server_picks_its_preferred_subprotocol_among_a_websockets_clients_offer() -> (
    None
):
    async with asyncio.timeout(TIMEOUT_S):
        async with upwire.serve(
            report_subprotocol, "127.0.0.1", 0, subprotocols=["chat.v2", "chat.v1"]
        ) as server:
            async with websockets_connect(
                f"ws://127.0.0.1:{server.port}/", subprotocols=["chat.v1", "chat.v2"]
            ) as client:
                assert client.subprotocol == "chat.v2"
                assert await client.recv() == "subprotocol=chat.v2"
            # Nothing in common: 400, saying what each side has (as a websockets server answers).
            with pytest.raises(WebsocketsInvalidStatus) as refused:
                async with websockets_connect(
                    f"ws://127.0.0.1:{server.port}/", subprotocols=["other"]
                ):
                    pass
            assert refused.value.response.status_code == 400
            assert b"the client offered other; this server speaks chat.v2, chat.v1" in (
                refused.value.response.body or b""
            )
            async with websockets_connect(f"ws://127.0.0.1:{server.port}/") as client:
                assert client.subprotocol is None  # offering none is fine
                assert await client.recv() == "subprotocol=None"


async def test_select_subprotocol_hook_decides_from_the_clients_offer() -> None:
    seen: list[list[str]] = []

    def choose(offered: Sequence[str]) -> str | None:
        seen.append(list(offered))
        return offered[-1]

    async with asyncio.timeout(TIMEOUT_S):
        async with (
            upwire.serve(report_subprotocol, "127.0.0.1", 0, select_subprotocol=choose) as server,
            upwire.connect(
                f"ws://127.0.0.1:{server.port}/", subprotocols=["a", "b", "c"]
            ) as client,
        ):
            assert client.subprotocol == "c"
            assert await client.recv() == "subprotocol=c"
    assert seen == [["a", "b", "c"]]


async def test_upwire_client_gets_the_subprotocol_a_websockets_server_chose() -> None:
    async def handler(ws: WebsocketsServerConnection) -> None:
        await ws.send(f"server chose {ws.subprotocol}")

    async with asyncio.timeout(TIMEOUT_S):
        async with websockets_serve(handler, "127.0.0.1", 0, subprotocols=["b", "a"]) as server:
            port = server.sockets[0].getsockname()[1]
            async with upwire.connect(f"ws://127.0.0.1:{port}/", subprotocols=["a", "b"]) as client:
                assert client.subprotocol in ("a", "b")
                assert await client.recv() == f"server chose {client.subprotocol}"


async def test_upwire_client_fails_when_a_server_picks_a_subprotocol_it_did_not_offer() -> None:
    # A websockets server whose hook answers with a protocol the client never offered.
    def select(connection: WebsocketsServerConnection, offered: Sequence[str]) -> str:
        return "never-offered"

    async with asyncio.timeout(TIMEOUT_S):
        async with websockets_serve(
            lambda ws: ws.wait_closed(), "127.0.0.1", 0, select_subprotocol=select
        ) as server:
            port = server.sockets[0].getsockname()[1]
            with pytest.raises(upwire.InvalidHandshake, match="never-offered"):
                await upwire.connect(f"ws://127.0.0.1:{port}/", subprotocols=["mine"])


async def test_origins_admit_listed_origins_and_refuse_others_with_403() -> None:
    async def hello(ws: upwire.ServerConnection) -> None:
        await ws.send("welcome")

    async with asyncio.timeout(TIMEOUT_S):
        async with upwire.serve(
            hello, "127.0.0.1", 0, origins=["https://good.example", None]
        ) as server:
            url = f"ws://127.0.0.1:{server.port}/"
            async with websockets_connect(url, origin="https://good.example") as client:  # type: ignore[arg-type]
                assert await client.recv() == "welcome"
            async with websockets_connect(url) as client:  # no Origin header: None is listed
                assert await client.recv() == "welcome"
            with pytest.raises(WebsocketsInvalidStatus) as refused:
                async with websockets_connect(url, origin="https://evil.example"):  # type: ignore[arg-type]
                    pass
            assert refused.value.response.status_code == 403
            assert b"origin https://evil.example is not allowed" in refused.value.response.body
            with pytest.raises(upwire.InvalidStatus) as refused_upwire:
                await upwire.connect(url, origin="https://evil.example")
            assert refused_upwire.value.status == 403


async def test_origins_without_none_refuse_a_request_without_origin_with_403() -> None:
    # A non-browser client sends no Origin: admitted only when None is listed.
    async def hello(ws: upwire.ServerConnection) -> None:
        await ws.send("welcome")

    async with asyncio.timeout(TIMEOUT_S):
        async with upwire.serve(hello, "127.0.0.1", 0, origins=["https://good.example"]) as server:
            url = f"ws://127.0.0.1:{server.port}/"
            with pytest.raises(WebsocketsInvalidStatus) as refused:
                async with websockets_connect(url):
                    pass
            assert refused.value.response.status_code == 403
            async with upwire.connect(url, origin="https://good.example") as client:
                assert await client.recv() == "welcome"
