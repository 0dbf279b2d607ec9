"""permessage-deflate (RFC 7692) with ``websockets`` and Node ``ws``, checked on the wire.

Each connection goes through a recording relay (``wiretap.py``), so the tests see the real handshake
(``Sec-WebSocket-Extensions`` offer and answer) and the real frames: RSV1 set by each side, and
payloads that plain zlib inflates to the messages that were sent. Both ends also report what they
negotiated and received. Messages: 0 B, 10 B, 125 B, 64 KiB and 1 MiB of text and of random binary.
"""

from __future__ import annotations

import asyncio
import os
import random
from typing import Any

import pytest
from websockets.asyncio.client import connect as websockets_connect

import upwire
from upwire.protocol.extensions import ClientPerMessageDeflateFactory

from .peers import (
    STEP_TIMEOUT_S,
    Message,
    StartNodeClient,
    StartNodeServer,
    StartServer,
    UpwireEchoHandler,
    WebsocketsEchoHandler,
    as_bytes,
    assert_node_saw,
    binary_payload,
    text_payload,
)
from .wiretap import Direction, tapped

pytestmark = pytest.mark.timeout(60)

SIZES = {"0B": 0, "10B": 10, "125B": 125, "64KiB": 65536, "1MiB": 2**20}
COMPRESSION_PAYLOADS: dict[str, Message] = {
    **{f"text-{name}": text_payload(size) for name, size in SIZES.items()},
    **{f"random-binary-{name}": binary_payload(size) for name, size in SIZES.items()},
}
PAYLOAD = pytest.mark.parametrize(
    "message", list(COMPRESSION_PAYLOADS.values()), ids=list(COMPRESSION_PAYLOADS)
)
# ws's `threshold` (1024 by default): it sends smaller messages uncompressed, but only in a direction
# without context takeover (ws 8 sender.js); with context takeover it compresses every message.
THRESHOLD = pytest.mark.parametrize(
    "threshold", [None, 0], ids=["ws-default-threshold", "threshold-0"]
)

UPWIRE_OFFER = "permessage-deflate; client_max_window_bits"
UPWIRE_ANSWER = "permessage-deflate; server_max_window_bits=12"


def opcode_of(message: Message) -> int:
    return 1 if isinstance(message, str) else 2


def assert_upwire_compressed(direction: Direction, message: Message) -> None:
    """upwire compresses every message once deflate is negotiated, but a large one deflate does not
    shrink (the random binary payloads from 16 KiB), which goes as it is; text shrinks."""
    (sent,) = direction.messages()
    assert sent.opcode == opcode_of(message)
    incompressible = isinstance(message, bytes) and len(message) >= 16384
    assert sent.compressed is not incompressible, f"RSV1 {'set' if incompressible else 'clear'}"
    assert sent.data == as_bytes(message), "the compressed payload does not inflate to the message"
    if isinstance(message, str) and len(as_bytes(message)) >= 125:
        assert sent.wire_size < len(as_bytes(message)) / 2, sent.wire_size


def assert_peer_sent(direction: Direction, message: Message, *, compressed: bool) -> None:
    (sent,) = direction.messages()
    assert sent.opcode == opcode_of(message)
    assert sent.compressed is compressed, f"RSV1 {'clear' if compressed else 'set'}"
    assert sent.data == as_bytes(message)


# --- websockets ------------------------------------------------------------------------------


@PAYLOAD
async def test_websockets_client_and_upwire_server_compress_both_ways(
    upwire_server: StartServer, message: Message
) -> None:
    answers: list[list[str]] = []

    async def note_answer(ws: upwire.ServerConnection) -> None:
        assert ws.response is not None
        answers.append(ws.response.headers.get_all("Sec-WebSocket-Extensions"))

    handler = UpwireEchoHandler(note_answer)
    url = await upwire_server(handler)
    async with tapped(url) as tap, asyncio.timeout(STEP_TIMEOUT_S):
        async with websockets_connect(tap.url, max_size=None) as ws:
            await ws.send(message)
            reply = await ws.recv()
            negotiated = [extension.name for extension in ws.protocol.extensions]
            client_answer = ws.response.headers.get_all("Sec-WebSocket-Extensions")
        await handler.record.wait_finished()
    assert reply == message and handler.record.messages == [message]
    assert tap.client.header("Sec-WebSocket-Extensions") == [
        "permessage-deflate; client_max_window_bits"
    ]
    assert tap.server.header("Sec-WebSocket-Extensions") == [UPWIRE_ANSWER]
    assert answers == [[UPWIRE_ANSWER]] and client_answer == [UPWIRE_ANSWER]
    assert negotiated == ["permessage-deflate"]
    assert_peer_sent(tap.client, message, compressed=True)  # websockets compresses every message
    assert_upwire_compressed(tap.server, message)


@PAYLOAD
async def test_upwire_client_and_websockets_server_compress_both_ways(
    websockets_server: StartServer, message: Message
) -> None:
    seen: list[tuple[str | None, str | None]] = []

    async def note_handshake(ws: Any) -> None:
        seen.append(
            (
                ws.request.headers.get("Sec-WebSocket-Extensions"),
                ws.response.headers.get("Sec-WebSocket-Extensions"),
            )
        )

    handler = WebsocketsEchoHandler(note_handshake)
    url = await websockets_server(handler)
    async with tapped(url) as tap, asyncio.timeout(STEP_TIMEOUT_S):
        async with upwire.connect(tap.url) as ws:
            await ws.send(message)
            reply = await ws.recv()
            assert ws.response is not None
            upwire_answer = ws.response.headers.get_all("Sec-WebSocket-Extensions")
        await handler.record.wait_finished()
    assert reply == message and handler.record.messages == [message]
    websockets_answer = "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"
    assert seen == [(UPWIRE_OFFER, websockets_answer)]
    assert tap.client.header("Sec-WebSocket-Extensions") == [UPWIRE_OFFER]
    assert tap.server.header("Sec-WebSocket-Extensions") == [websockets_answer]
    assert upwire_answer == [websockets_answer]
    assert_upwire_compressed(tap.client, message)
    assert_peer_sent(tap.server, message, compressed=True)


async def test_upwire_client_keeps_context_across_messages_with_a_websockets_server(
    websockets_server: StartServer,
) -> None:
    # The second identical message is a back-reference to the first, in both directions.
    url = await websockets_server(WebsocketsEchoHandler())
    message = text_payload(2000)
    async with (
        tapped(url) as tap,
        asyncio.timeout(STEP_TIMEOUT_S),
        upwire.connect(tap.url) as ws,
    ):
        for _ in range(3):
            await ws.send(message)
            assert await ws.recv() == message
    for direction in (tap.client, tap.server):
        sizes = [m.wire_size for m in direction.messages()]
        assert [m.data for m in direction.messages()] == [message.encode()] * 3
        assert sizes[1] < 20 < sizes[0], sizes


async def test_no_compression_on_either_side_sends_plain_frames(
    upwire_server: StartServer,
) -> None:
    url = await upwire_server(UpwireEchoHandler(), compression=None)
    message = text_payload(2000)
    async with (
        tapped(url) as tap,
        asyncio.timeout(STEP_TIMEOUT_S),
        websockets_connect(tap.url, max_size=None) as ws,
    ):
        await ws.send(message)
        assert await ws.recv() == message
        assert ws.protocol.extensions == []
    assert tap.server.header("Sec-WebSocket-Extensions") == []
    assert_peer_sent(tap.client, message, compressed=False)
    assert_peer_sent(tap.server, message, compressed=False)


# --- Node ws ---------------------------------------------------------------------------------


def node_options(threshold: int | None) -> list[str]:
    options = ["--deflate=on"]
    if threshold is not None:
        options.append(f"--deflate-threshold={threshold}")
    return options


def node_compresses(message: Message, threshold: int | None, *, no_context_takeover: bool) -> bool:
    if not no_context_takeover:
        return True
    return len(as_bytes(message)) >= (1024 if threshold is None else threshold)


@THRESHOLD
@PAYLOAD
async def test_node_ws_client_and_upwire_server_compress_both_ways(
    upwire_server: StartServer,
    node_client: StartNodeClient,
    message: Message,
    threshold: int | None,
) -> None:
    handler = UpwireEchoHandler()
    url = await upwire_server(handler)
    async with tapped(url) as tap:
        peer = await node_client(tap.url, *node_options(threshold))
        upgrade = await peer.next_event("upgrade")
        await peer.send(message)
        assert_node_saw(await peer.next_event("message"), message)
        await peer.close(1000, "done")
        assert (await peer.next_event("close"))["code"] == 1000
        await handler.record.wait_finished()
    assert handler.record.messages == [message]
    offer = tap.client.header("Sec-WebSocket-Extensions")
    assert offer == ["permessage-deflate; client_max_window_bits"]
    assert tap.server.header("Sec-WebSocket-Extensions") == [UPWIRE_ANSWER]
    assert upgrade["extensions"] == UPWIRE_ANSWER
    assert_peer_sent(
        tap.client,
        message,
        compressed=node_compresses(message, threshold, no_context_takeover=False),
    )
    assert_upwire_compressed(tap.server, message)


@THRESHOLD
@PAYLOAD
async def test_upwire_client_and_node_ws_server_compress_both_ways(
    node_server: StartNodeServer, message: Message, threshold: int | None
) -> None:
    peer, url = await node_server(*node_options(threshold))
    async with tapped(url) as tap:
        async with asyncio.timeout(STEP_TIMEOUT_S):
            async with upwire.connect(tap.url) as ws:
                await ws.send(message)
                reply = await ws.recv()
                assert ws.response is not None
                upwire_answer = ws.response.headers.get_all("Sec-WebSocket-Extensions")
        assert_node_saw(await peer.next_event("message"), message)
        connection = await peer.next_event("connection")
        assert (await peer.next_event("close"))["code"] == 1000
    assert reply == message
    node_answer = "permessage-deflate"
    assert connection["extensions"] == "permessage-deflate"
    assert connection["headers"]["sec-websocket-extensions"] == UPWIRE_OFFER
    assert connection["response_extensions"] == node_answer
    assert tap.server.header("Sec-WebSocket-Extensions") == [node_answer]
    assert upwire_answer == [node_answer]
    assert_upwire_compressed(tap.client, message)
    assert_peer_sent(
        tap.server,
        message,
        compressed=node_compresses(message, threshold, no_context_takeover=False),
    )


async def test_node_ws_fragments_compressed_by_upwire_client_are_reassembled(
    node_server: StartNodeServer,
) -> None:
    # A fragmented compressed message: RSV1 on the first frame only (RFC 7692 §6).
    peer, url = await node_server("--deflate=on", "--deflate-threshold=0")
    pieces = ["frag", "mented ", "wörld ✓ " * 100]
    async with (
        tapped(url) as tap,
        asyncio.timeout(STEP_TIMEOUT_S),
        upwire.connect(tap.url) as ws,
    ):
        await ws.send(iter(pieces))
        assert await ws.recv() == "".join(pieces)
    assert_node_saw(await peer.next_event("message"), "".join(pieces))
    frames = [f for f in tap.client.frames() if f.opcode < 8]
    assert (frames[0].opcode, frames[0].rsv, frames[0].fin) == (1, 0b100, False)
    assert [(f.opcode, f.rsv) for f in frames[1:]] == [(0, 0)] * (len(frames) - 1)
    assert frames[-1].fin and len(frames) >= 3
    (sent,) = tap.client.messages()
    assert sent.compressed and sent.data == "".join(pieces).encode()


@PAYLOAD
async def test_node_ws_server_without_context_takeover_leaves_small_messages_uncompressed(
    node_server: StartNodeServer, message: Message
) -> None:
    # upwire asks for server_no_context_takeover, so ws applies its default 1024-byte threshold:
    # upwire receives plain and compressed messages on one deflate connection, each compressed one
    # with a fresh context.
    peer, url = await node_server("--deflate=on")
    factory = ClientPerMessageDeflateFactory(server_no_context_takeover=True)
    async with tapped(url) as tap:
        async with (
            asyncio.timeout(STEP_TIMEOUT_S),
            upwire.connect(tap.url, extensions=[factory]) as ws,
        ):
            for _ in range(2):
                await ws.send(message)
                assert await ws.recv() == message
        connection = await peer.next_event("connection")
    offer = "permessage-deflate; server_no_context_takeover; client_max_window_bits"
    node_answer = "permessage-deflate; server_no_context_takeover"
    assert connection["headers"]["sec-websocket-extensions"] == offer
    assert connection["response_extensions"] == node_answer
    compressed = node_compresses(message, None, no_context_takeover=True)
    received = tap.server.messages(no_context_takeover=True)
    assert [(m.compressed, m.data) for m in received] == [(compressed, as_bytes(message))] * 2
    if compressed:
        assert received[0].wire_size == received[1].wire_size  # no reference to the first message


async def test_upwire_client_told_to_use_an_8_bit_window_compresses_for_node_ws(
    node_server: StartNodeServer,
) -> None:
    # RFC 7692 §7.1.2.2: a client that offers client_max_window_bits without a value accepts any
    # value, 8 included. zlib has no 8-bit compressor: upwire compresses with 9 bits, whose matches
    # reach back at most 250 bytes, and Node's inflater, held to 8 bits, takes them. (It failed the
    # handshake once, then sent its messages uncompressed.)
    peer, url = await node_server(
        "--deflate=on", "--deflate-threshold=0", "--deflate-client-window=8"
    )
    block = "".join(random.Random(8).choices("abcdefghijklmnop", k=300))
    messages = [block * 4, "eight bits of window " * 50, block[:200] * 6]
    async with tapped(url) as tap:
        async with asyncio.timeout(STEP_TIMEOUT_S), upwire.connect(tap.url) as ws:
            for message in messages:
                await ws.send(message)
                assert await ws.recv() == message
        connection = await peer.next_event("connection")
    assert connection["response_extensions"] == "permessage-deflate; client_max_window_bits=8"
    assert [m.compressed for m in tap.client.messages()] == [True] * 3
    assert [m.compressed for m in tap.server.messages()] == [True] * 3


async def test_a_random_mebibyte_reaches_a_websockets_server_at_its_default_max_size(
    websockets_server: StartServer,
) -> None:
    # websockets limits the compressed frame (max_size, 1 MiB by default): deflated, 1 MiB of random
    # bytes is ~1.05 MB and was refused with 1009. upwire sends it as it is.
    message = os.urandom(1 << 20)
    handler = WebsocketsEchoHandler()
    url = await websockets_server(handler, max_size=1 << 20)
    async with (
        tapped(url) as tap,
        asyncio.timeout(STEP_TIMEOUT_S),
        upwire.connect(tap.url, max_message_size=None) as ws,
    ):
        await ws.send(message)
        assert await ws.recv() == message
        assert ws.close_code is None
    (sent,) = tap.client.messages()
    assert not sent.compressed and sent.data == message
