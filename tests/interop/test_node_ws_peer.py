"""Interop with Node's ``ws`` (npm, 8.x), an implementation nobody here wrote, both ways.

upwire server ↔ ``ws`` client (``node/client.js``) and ``ws`` server (``node/echo_server.js``) ↔
upwire client, over real sockets on 127.0.0.1. The Node peer runs as a subprocess: the test
drives it over stdin and reads what it observed (sizes and SHA-256 of messages, ping and pong
payloads, close code and reason) from its stdout; the upwire side records what it observed.
Payload exchanges run with ``ws``'s permessage-deflate both off and on.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import upwire

from .peers import (
    STEP_TIMEOUT_S,
    Message,
    StartNodeClient,
    StartNodeServer,
    StartServer,
    UpwireEchoHandler,
    assert_node_saw,
    b64,
    describe,
)

pytestmark = pytest.mark.timeout(60)

CLOSE_CODE = 4000
UPWIRE_REASON = "upwire says goodbye ✓"
NODE_REASON = "ws says goodbye ✓"
# "wörld ✓" with both multi-byte characters split across frames: only the whole message is UTF-8.
SPLIT_UTF8_FRAGMENTS = [b"w\xc3", b"\xb6rld \xe2\x9c", b"\x93"]
TEXT_FRAGMENTS = ["frag", "mented ", "wörld ✓"]
BINARY_FRAGMENTS = [b"\x00\x01\x02", b"\xff" * 200, b"\x80\x81"]
DEFLATE = pytest.mark.parametrize("deflate", ["off", "on"], ids=["plain", "deflate"])


def assert_same_message(received: Any, expected: Message) -> None:
    assert type(received) is type(expected), f"got {type(received)}, expected {describe(expected)}"
    assert received == expected, f"got {describe(received)}, expected {describe(expected)}"


# --- upwire server, Node ws client ------------------------------------------------------------


@DEFLATE
async def test_upwire_server_echoes_each_payload_to_a_node_ws_client(
    upwire_server: StartServer, node_client: StartNodeClient, payload: Message, deflate: str
) -> None:
    handler = UpwireEchoHandler()
    url = await upwire_server(handler)
    peer = await node_client(url, f"--deflate={deflate}")
    await peer.send(payload)
    assert_node_saw(await peer.next_event("message"), payload)
    await peer.close(1000, "done")
    assert (await peer.next_event("close"))["code"] == 1000
    await handler.record.wait_finished()
    assert len(handler.record.messages) == 1
    assert_same_message(handler.record.messages[0], payload)
    assert (handler.record.close_code, handler.record.close_reason) == (1000, "done")


async def test_upwire_server_assembles_fragments_from_a_node_ws_client_even_inside_a_character(
    upwire_server: StartServer, node_client: StartNodeClient
) -> None:
    handler = UpwireEchoHandler()
    url = await upwire_server(handler)
    peer = await node_client(url)
    await peer.send_fragments(SPLIT_UTF8_FRAGMENTS, binary=False)
    assert_node_saw(await peer.next_event("message"), "wörld ✓")
    await peer.send_fragments(BINARY_FRAGMENTS, binary=True)
    assert_node_saw(await peer.next_event("message"), b"".join(BINARY_FRAGMENTS))
    await peer.close(1000, "")
    await handler.record.wait_finished()
    assert handler.record.messages == ["wörld ✓", b"".join(BINARY_FRAGMENTS)]


async def test_upwire_server_answers_pings_sent_between_the_fragments_of_a_node_ws_message(
    upwire_server: StartServer, node_client: StartNodeClient
) -> None:
    handler = UpwireEchoHandler()
    url = await upwire_server(handler)
    peer = await node_client(url)
    await peer.send_fragments(BINARY_FRAGMENTS, binary=True, ping_between=b"mid-message")
    assert_node_saw(await peer.next_event("message"), b"".join(BINARY_FRAGMENTS))
    pongs = [await peer.next_event("pong") for _ in BINARY_FRAGMENTS[1:]]
    assert [pong["data"] for pong in pongs] == [b64(b"mid-message")] * 2
    await peer.close(1000, "")
    await handler.record.wait_finished()
    assert handler.record.messages == [b"".join(BINARY_FRAGMENTS)]


async def test_upwire_server_sends_fragmented_messages_that_a_node_ws_client_reassembles(
    upwire_server: StartServer, node_client: StartNodeClient
) -> None:
    async def async_fragments() -> Any:
        for piece in BINARY_FRAGMENTS:
            yield piece

    async def send_fragments_first(ws: upwire.ServerConnection) -> None:
        await ws.send(TEXT_FRAGMENTS)
        await ws.send(async_fragments())

    url = await upwire_server(UpwireEchoHandler(send_fragments_first))
    peer = await node_client(url)
    assert_node_saw(await peer.next_event("message"), "".join(TEXT_FRAGMENTS))
    assert_node_saw(await peer.next_event("message"), b"".join(BINARY_FRAGMENTS))


async def test_upwire_server_answers_a_ping_from_a_node_ws_client_with_the_same_payload(
    upwire_server: StartServer, node_client: StartNodeClient
) -> None:
    url = await upwire_server(UpwireEchoHandler())
    peer = await node_client(url)
    await peer.ping(b"ws ping \x00\xff")
    assert (await peer.next_event("pong"))["data"] == b64(b"ws ping \x00\xff")


async def test_upwire_server_ping_is_answered_by_a_node_ws_client_and_returns_a_round_trip_time(
    upwire_server: StartServer, node_client: StartNodeClient
) -> None:
    round_trip_times: list[float] = []
    may_ping = asyncio.Event()

    async def ping_when_told(ws: upwire.ServerConnection) -> None:
        await may_ping.wait()
        round_trip_times.append(await ws.ping(b"upwire server ping"))
        await ws.send("pinged")

    handler = UpwireEchoHandler(ping_when_told)
    url = await upwire_server(handler)
    peer = await node_client(url)
    may_ping.set()
    assert (await peer.next_event("ping"))["data"] == b64(b"upwire server ping")
    assert_node_saw(await peer.next_event("message"), "pinged")
    assert len(round_trip_times) == 1
    assert isinstance(round_trip_times[0], float)
    assert 0 <= round_trip_times[0] < STEP_TIMEOUT_S


async def test_upwire_server_closing_with_4000_and_a_reason_is_seen_by_a_node_ws_client(
    upwire_server: StartServer, node_client: StartNodeClient
) -> None:
    may_close = asyncio.Event()

    async def close_when_told(ws: upwire.ServerConnection) -> None:
        await may_close.wait()
        await ws.close(CLOSE_CODE, UPWIRE_REASON)

    handler = UpwireEchoHandler(close_when_told)
    url = await upwire_server(handler)
    peer = await node_client(url)
    may_close.set()
    closed = await peer.next_event("close")
    await handler.record.wait_finished()
    assert (closed["code"], closed["reason"]) == (CLOSE_CODE, UPWIRE_REASON)
    # ws echoes the close code and reason it received.
    assert (handler.record.close_code, handler.record.close_reason) == (CLOSE_CODE, UPWIRE_REASON)


async def test_node_ws_client_closing_with_4000_and_a_reason_is_seen_by_the_upwire_server(
    upwire_server: StartServer, node_client: StartNodeClient
) -> None:
    handler = UpwireEchoHandler()
    url = await upwire_server(handler)
    peer = await node_client(url)
    await peer.send("before closing")
    assert_node_saw(await peer.next_event("message"), "before closing")
    await peer.close(CLOSE_CODE, NODE_REASON)
    closed = await peer.next_event("close")
    await handler.record.wait_finished()
    assert handler.record.messages == ["before closing"]
    assert (handler.record.close_code, handler.record.close_reason) == (CLOSE_CODE, NODE_REASON)
    # RFC 6455 §5.5.1: the answering close frame typically echoes the status code received.
    assert closed["code"] == CLOSE_CODE


async def test_upwire_server_sees_the_path_and_query_a_node_ws_client_asked_for(
    upwire_server: StartServer, node_client: StartNodeClient
) -> None:
    seen: list[tuple[str, dict[str, str], str | None]] = []

    async def note_request(ws: upwire.ServerConnection) -> None:
        seen.append((ws.request.path, ws.request.query, ws.request.headers.get("host")))

    url = await upwire_server(UpwireEchoHandler(note_request))
    peer = await node_client(url + "/chat/room%201?user=ad%C3%A1&x=1")
    await peer.send("hi")
    assert_node_saw(await peer.next_event("message"), "hi")
    host = url.removeprefix("ws://")
    assert seen == [("/chat/room%201", {"user": "adá", "x": "1"}, host)]


async def test_upwire_server_closes_with_1009_when_a_node_ws_client_sends_too_big_a_message(
    upwire_server: StartServer, node_client: StartNodeClient
) -> None:
    handler = UpwireEchoHandler()
    url = await upwire_server(handler, max_message_size=65536)
    peer = await node_client(url)
    await peer.send(b"\x00" * 65537)
    closed = await peer.next_event("close")
    await handler.record.wait_finished()
    assert closed["code"] == 1009  # RFC 6455 §7.4.1: message too big
    assert handler.record.messages == []


# --- Node ws server, upwire client ------------------------------------------------------------


@DEFLATE
async def test_upwire_client_exchanges_each_payload_with_a_node_ws_server(
    node_server: StartNodeServer, payload: Message, deflate: str
) -> None:
    peer, url = await node_server(f"--deflate={deflate}")
    async with asyncio.timeout(STEP_TIMEOUT_S):
        async with upwire.connect(url) as ws:
            await ws.send(payload)
            reply = await ws.recv()
    assert_same_message(reply, payload)
    assert_node_saw(await peer.next_event("message"), payload)
    closed = await peer.next_event("close")
    assert closed["code"] == 1000


async def test_upwire_client_sends_fragmented_messages_that_a_node_ws_server_reassembles(
    node_server: StartNodeServer,
) -> None:
    async def async_fragments() -> Any:
        for piece in BINARY_FRAGMENTS:
            yield piece

    peer, url = await node_server()
    async with asyncio.timeout(STEP_TIMEOUT_S):
        async with upwire.connect(url) as ws:
            await ws.send(iter(TEXT_FRAGMENTS))
            text_reply = await ws.recv()
            await ws.send(async_fragments())
            binary_reply = await ws.recv()
    assert_node_saw(await peer.next_event("message"), "".join(TEXT_FRAGMENTS))
    assert_node_saw(await peer.next_event("message"), b"".join(BINARY_FRAGMENTS))
    assert_same_message(text_reply, "".join(TEXT_FRAGMENTS))
    assert_same_message(binary_reply, b"".join(BINARY_FRAGMENTS))


async def test_upwire_client_assembles_fragments_from_a_node_ws_server_even_inside_a_character(
    node_server: StartNodeServer,
) -> None:
    peer, url = await node_server()
    async with asyncio.timeout(STEP_TIMEOUT_S):
        async with upwire.connect(url) as ws:
            await peer.next_event("connection")
            await peer.send_fragments(SPLIT_UTF8_FRAGMENTS, binary=False)
            await peer.send_fragments(BINARY_FRAGMENTS, binary=True)
            text = await ws.recv()
            binary = await ws.recv()
    assert_same_message(text, "wörld ✓")
    assert_same_message(binary, b"".join(BINARY_FRAGMENTS))


async def test_upwire_client_answers_pings_sent_between_the_fragments_of_a_node_ws_message(
    node_server: StartNodeServer,
) -> None:
    peer, url = await node_server()
    async with asyncio.timeout(STEP_TIMEOUT_S):
        async with upwire.connect(url) as ws:
            await peer.next_event("connection")
            await peer.send_fragments(SPLIT_UTF8_FRAGMENTS, binary=False, ping_between=b"mid")
            text = await ws.recv()
            pongs = [await peer.next_event("pong") for _ in SPLIT_UTF8_FRAGMENTS[1:]]
    assert_same_message(text, "wörld ✓")
    assert [pong["data"] for pong in pongs] == [b64(b"mid")] * 2


async def test_upwire_client_ping_is_answered_by_a_node_ws_server_and_returns_a_round_trip_time(
    node_server: StartNodeServer,
) -> None:
    peer, url = await node_server()
    async with asyncio.timeout(STEP_TIMEOUT_S):
        async with upwire.connect(url) as ws:
            round_trip_time = await ws.ping(b"upwire client ping")
    assert isinstance(round_trip_time, float)
    assert 0 <= round_trip_time < STEP_TIMEOUT_S
    assert (await peer.next_event("ping"))["data"] == b64(b"upwire client ping")


async def test_upwire_client_answers_a_ping_from_a_node_ws_server_with_the_same_payload(
    node_server: StartNodeServer,
) -> None:
    peer, url = await node_server()
    async with asyncio.timeout(STEP_TIMEOUT_S):
        async with upwire.connect(url):
            await peer.next_event("connection")
            # The client is not reading: its connection must answer pings by itself.
            await peer.ping(b"ws server ping \x00\xff")
            pong = await peer.next_event("pong")
    assert pong["data"] == b64(b"ws server ping \x00\xff")


async def test_upwire_client_closing_with_4000_and_a_reason_is_seen_by_a_node_ws_server(
    node_server: StartNodeServer,
) -> None:
    peer, url = await node_server()
    async with asyncio.timeout(STEP_TIMEOUT_S):
        ws = await upwire.connect(url)
        await ws.send("before closing")
        assert await ws.recv() == "before closing"
        await ws.close(CLOSE_CODE, UPWIRE_REASON)
    closed = await peer.next_event("close")
    assert (closed["code"], closed["reason"]) == (CLOSE_CODE, UPWIRE_REASON)
    # ws echoes the close code and reason it received.
    assert (ws.close_code, ws.close_reason) == (CLOSE_CODE, UPWIRE_REASON)


async def test_node_ws_server_closing_with_4000_and_a_reason_is_seen_by_the_upwire_client(
    node_server: StartNodeServer,
) -> None:
    peer, url = await node_server()
    async with asyncio.timeout(STEP_TIMEOUT_S):
        async with upwire.connect(url) as ws:
            await peer.next_event("connection")
            await peer.close(CLOSE_CODE, NODE_REASON)
            with pytest.raises(upwire.ConnectionClosed) as closed:
                await ws.recv()
    assert (closed.value.code, closed.value.reason) == (CLOSE_CODE, NODE_REASON)
    assert (ws.close_code, ws.close_reason) == (CLOSE_CODE, NODE_REASON)
    # RFC 6455 §5.5.1: the answering close frame typically echoes the status code received.
    assert (await peer.next_event("close"))["code"] == CLOSE_CODE


async def test_upwire_client_sends_the_path_query_and_host_of_its_url_to_a_node_ws_server(
    node_server: StartNodeServer,
) -> None:
    peer, url = await node_server()
    async with asyncio.timeout(STEP_TIMEOUT_S):
        async with upwire.connect(url + "/chat/room%201?user=ad%C3%A1&x=1") as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
    connection = await peer.next_event("connection")
    assert connection["path"] == "/chat/room%201?user=ad%C3%A1&x=1"
    assert connection["headers"]["host"] == url.removeprefix("ws://")
    assert connection["headers"]["sec-websocket-version"] == "13"
