"""`upwire tap`: frames relayed unchanged between an upwire client and a Node ws server, and the live page."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from browser import CHROMIUM, CHROMIUM_ARGS, chromium
from integration.wire import RawPeer, upgrade_request
from interop.peers import NodePeer  # tests/ is on sys.path (rootdir-relative packages)

import upwire
from upwire.protocol.http import Response
from upwire.wire.tap import Tap
from upwire.wire.web import FrameFeed
from upwire.wire.websocket import FrameRecord, WebSocketObserver

REPO = Path(__file__).resolve().parents[2]


async def start_node_echo(*options: str) -> tuple[NodePeer, int]:
    peer = await NodePeer.start("echo_server.js", *options)
    listening = await peer.next_event("listening")
    return peer, int(listening["port"])


async def relay_session(tap_port: int) -> None:
    async with upwire.connect(f"ws://127.0.0.1:{tap_port}/echo") as ws:
        await ws.send("through the tap")
        assert await ws.recv() == "through the tap"
        await ws.send(bytes(range(200)))
        assert await ws.recv() == bytes(range(200))
        await ws.send(["frag", "ment", "ed"])
        assert await ws.recv() == "fragmented"
        await asyncio.wait_for(ws.ping(b"tap-ping"), 10)
        await ws.close(4002, "tap test done")


# A client's Upgrade request and a raw upstream's answer, for the tests that play both ends by hand.
UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
SWITCHING = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
)


async def start_tap(
    raw_upstream: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    **options: Any,
) -> tuple[asyncio.Server, Tap, int]:
    """A raw upstream server and a tap in front of it; returns both and the tap's port."""
    upstream = await asyncio.start_server(raw_upstream, "127.0.0.1", 0)
    tap = Tap(f"ws://127.0.0.1:{upstream.sockets[0].getsockname()[1]}/", **options)
    server = await tap.start("127.0.0.1", 0)
    return upstream, tap, server.sockets[0].getsockname()[1]


async def test_tap_forwards_frames_unchanged_both_ways() -> None:
    peer, port = await start_node_echo()
    records: list[FrameRecord] = []
    closed = asyncio.Event()
    tap = Tap(
        f"ws://127.0.0.1:{port}/",
        on_frame=lambda observer, record: records.append(record),
        on_close=lambda observer: closed.set(),
    )
    server = await tap.start("127.0.0.1", 0)
    try:
        await relay_session(server.sockets[0].getsockname()[1])
        await asyncio.wait_for(closed.wait(), 10)
    finally:
        await tap.close()
        await peer.stop()
    connection = await_node_connection(peer)
    assert connection["path"] == "/echo"
    upstream = [r for r in records if r.direction == "client-to-server"]
    downstream = [r for r in records if r.direction == "server-to-client"]
    # the fragmented message kept its three frames and opcodes on the way to Node
    assert [(r.opcode, r.fin) for r in upstream if r.message_opcode == 1][2:] == [
        (1, False),
        (0, False),
        (0, False),
        (0, True),
    ] or [(r.opcode, r.fin) for r in upstream if r.message_opcode == 1][1:] == [
        (1, False),
        (0, False),
        (0, True),
    ]
    assert all(r.masked for r in upstream) and not any(r.masked for r in downstream)
    assert [r.opcode for r in upstream if r.is_control] == [9, 8]
    assert [r.opcode for r in downstream if r.is_control] == [10, 8]
    assert [(r.close_code, r.close_reason) for r in records if r.opcode == 8] == [
        (4002, "tap test done"),
        (4002, "tap test done"),  # Node ws echoes the code and reason
    ]
    assert not any(r.violations for r in records)
    # what the Node server received is what upwire sent: it saw one message per send
    messages = [e for e in peer.seen if e["event"] == "message"]
    assert [m.get("text") for m in messages] == ["through the tap", None, "fragmented"]


def await_node_connection(peer: NodePeer) -> dict[str, object]:
    [connection] = [e for e in peer.seen if e["event"] == "connection"]
    return connection


async def test_tap_is_byte_exact_for_frames_it_relays() -> None:
    """A raw upstream receives exactly the bytes a raw client wrote (odd fragmentation included)."""
    received = bytearray()
    answered = asyncio.Event()

    async def raw_upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(SWITCHING)
        writer.write(b"\x89\x00")  # an empty ping from the server
        while len(received) < len(frames):
            chunk = await reader.read(1024)
            if not chunk:
                break
            received.extend(chunk)
        answered.set()
        writer.close()

    from upwire.protocol.frames import encode_frame

    key = b"\x0a\x0b\x0c\x0d"
    frames = (
        encode_frame(1, b"one", fin=False, mask_key=key)
        + encode_frame(0, b"two", fin=False, mask_key=key)
        + encode_frame(10, b"", mask_key=key)
        + encode_frame(0, b"three", mask_key=key)
        + encode_frame(2, bytes(70000), mask_key=key)
    )
    upstream, tap, port = await start_tap(raw_upstream)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(UPGRADE)
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101")
        assert await reader.readexactly(2) == b"\x89\x00"
        for start in range(0, len(frames), 777):  # write in pieces that cut frames anywhere
            writer.write(frames[start : start + 777])
            await writer.drain()
        await asyncio.wait_for(answered.wait(), 10)
        writer.close()
    finally:
        await tap.close()
        upstream.close()
    assert bytes(received) == frames


async def test_tap_relays_a_request_with_latin_1_bytes_in_a_header() -> None:
    """obs-text in a request value (RFC 9110 §5.5) is relayed as it came, not a crash of the relay."""
    heads: list[bytes] = []

    async def raw_upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(SWITCHING)
        await writer.drain()
        await reader.read()
        writer.close()

    upstream, tap, port = await start_tap(raw_upstream)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(UPGRADE[:-2] + b"X-Name: caf\xe9 \xff\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 101")
        assert b"X-Name: caf\xe9 \xff\r\n" in heads[0]
        writer.close()
    finally:
        await tap.close()
        upstream.close()


async def test_a_client_frame_sent_before_the_101_is_flagged_as_dissect_flags_it() -> None:
    # RFC 6455 §4.1: the client waits for the 101 before sending further data. The tap holds the
    # frame until the upstream answers, passes it on, and reports it as early.
    from upwire.protocol.frames import encode_frame

    key = b"\x0a\x0b\x0c\x0d"
    received = bytearray()
    early, late = (
        encode_frame(1, b"too soon", mask_key=key),
        encode_frame(1, b"in time", mask_key=key),
    )

    async def raw_upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(0.1)  # the early frame waits in the tap meanwhile
        writer.write(SWITCHING)
        while len(received) < len(early) + len(late):
            if not (chunk := await reader.read(1024)):
                break
            received.extend(chunk)
        writer.close()

    records: list[FrameRecord] = []
    upstream, tap, port = await start_tap(
        raw_upstream, on_frame=lambda observer, record: records.append(record)
    )
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(UPGRADE + early)  # in the request's own segment
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
        writer.write(late)
        await asyncio.wait_for(reader.read(), 10)
        writer.close()
    finally:
        await tap.close()
        upstream.close()
    assert bytes(received) == early + late
    assert [(r.text, r.violations) for r in records] == [
        ("too soon", ["client frame sent before the server's 101 response"]),
        ("in time", []),
    ]


async def test_tap_passes_a_frame_past_max_frame_hold_on_as_it_comes() -> None:
    """A peer announcing a huge frame cannot make the relay hold it: past the limit, bytes flow on."""
    received = bytearray()
    got_enough = asyncio.Event()
    sent = 1 << 20

    async def raw_upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(SWITCHING)
        while chunk := await reader.read(65536):
            received.extend(chunk)
            if len(received) >= 14 + sent:
                got_enough.set()
        writer.close()

    from upwire.protocol.frames import encode_header

    # A binary frame announcing 1 TiB; 1 MiB of it is sent, and the frame never completes.
    header = encode_header(2, 1 << 40, mask_key=b"\x01\x02\x03\x04")
    notes: list[str] = []
    upstream, tap, port = await start_tap(
        raw_upstream,
        on_close=lambda observer: notes.extend(observer.notes),
        max_frame_hold=64 * 1024,
    )
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(UPGRADE)
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
        writer.write(header)
        for _ in range(16):
            writer.write(bytes(sent // 16))
            await writer.drain()
        await asyncio.wait_for(got_enough.wait(), 10)
        writer.close()
        await asyncio.sleep(0.1)
    finally:
        await tap.close()
        upstream.close()
    assert bytes(received) == header + bytes(sent)
    assert any("--max-frame-hold 65536 bytes" in note for note in notes)


RFC_REQUEST = (
    b"GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
RFC_RESPONSE = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
)


async def frames_reader(port: int) -> RawPeer:
    """A script reading the frames feed (no Origin, the Host a client sends)."""
    peer = await RawPeer.connect(port)
    peer.write(upgrade_request("/frames", headers={"Host": f"127.0.0.1:{port}"}))
    response = await peer.read_response_head()
    assert response.status == 101, response
    return peer


async def http_request(
    port: int, path: str, address: str = "127.0.0.1", **headers: str
) -> tuple[int, bytes]:
    """An Upgrade request (a GET of the page answers it too) with these fields: the status and body."""
    peer = await RawPeer.connect(port, address)
    peer.write(upgrade_request(path, headers=dict(headers)))
    head = await peer.read_response_head()
    body = b"" if head.status == 101 else await peer.read_to_eof()
    peer.close()
    return head.status, body


async def test_the_frames_feed_answers_only_its_own_page_by_host_and_origin() -> None:
    # RFC 6455 §10.2: any page in the user's browser can open a WebSocket to the feed and read it,
    # unless the server checks the Origin; and a site whose name resolves to 127.0.0.1 (DNS
    # rebinding) is same-origin with what it loads from there unless the Host is checked.
    feed = FrameFeed()
    web = await feed.start("127.0.0.1", 0)
    here = f"127.0.0.1:{web.port}"
    local = f"localhost:{web.port}"

    async def status(path: str, **headers: str) -> int:
        return (await http_request(web.port, path, **headers))[0]

    try:
        async with asyncio.timeout(20):
            # the page's own origin, as the browser loaded it by IP or by "localhost"
            assert await status("/frames", Host=here, Origin=f"http://{here}") == 101
            assert await status("/frames", Host=local, Origin=f"http://{local}") == 101
            assert await status("/frames", Host=here) == 101  # a script: no Origin
            # another site's page: another port, name or scheme, or an opaque origin
            for origin in ("http://localhost:1", "http://evil.example", f"https://{here}", "null"):
                assert await status("/frames", Host=here, Origin=origin) == 403, origin
            # the right server under another name than the one the page was loaded by
            assert await status("/frames", Host=here, Origin=f"http://{local}") == 403
            code, body = await http_request(
                web.port, "/frames", Host=here, Origin="http://localhost:1"
            )
            assert b"not a page from origin http://localhost:1" in body
            # DNS rebinding: a Host that is not this address, for the page and the feed alike
            rebound = f"evil.example:{web.port}"
            for path in ("/", "/frames"):
                assert await status(path, Host=rebound, Origin=f"http://{rebound}") == 403, path
            code, body = await http_request(web.port, "/", Host=rebound)
            assert code == 403 and b"does not answer to Host evil.example:" in body
            assert await status("/", Host=here) == 200
            assert await status("/", Host=local) == 200
            # The name decides, not the port: a forwarded port (ssh -L, docker -p) or a proxy on 80.
            assert await status("/", Host="127.0.0.1") == 200
            assert await status("/", Host="localhost:8080") == 200
            forwarded = "localhost:8080"
            assert await status("/frames", Host=forwarded, Origin=f"http://{forwarded}") == 101
    finally:
        web.close()
        await web.wait_closed()


@pytest.mark.parametrize("listen", ["0.0.0.0", "::"])
async def test_the_frames_page_listening_on_every_address_answers_localhost_and_ip_addresses(
    listen: str,
) -> None:
    # Opened by localhost most of all (it was refused with 403 there), or by any of the addresses.
    feed = FrameFeed()
    web = await feed.start(listen, 0)
    try:
        async with asyncio.timeout(20):
            # asyncio binds :: for IPv6 only.
            address = "::1" if listen == "::" else "127.0.0.1"
            for host in ("localhost", "127.0.0.1", "[::1]", "192.0.2.7"):
                code, _ = await http_request(web.port, "/", address, Host=f"{host}:{web.port}")
                assert code == 200, host
            code, _ = await http_request(web.port, "/", address, Host=f"evil.example:{web.port}")
            assert code == 403
    finally:
        web.close()
        await web.wait_closed()


async def test_a_page_of_another_origin_in_chromium_cannot_read_the_frames() -> None:
    """The hijacking itself, in a real browser: a page from another origin opens the feed."""
    feed = FrameFeed()
    web = await feed.start("127.0.0.1", 0)
    other = await upwire.serve(
        lambda ws: ws.wait_closed(),
        "127.0.0.1",
        0,
        process_request=lambda connection, request: Response(
            200, [("Content-Type", "text/html")], "<!doctype html><title>another site</title>"
        ),
    )
    observer = WebSocketObserver(0, "10.0.0.1:1", "10.0.0.2:2")
    observer.feed(True, RFC_REQUEST, 0.0, None)
    observer.feed(False, RFC_RESPONSE, 0.0, None)
    for record in observer.feed(False, b"\x81\x06secret", 0.0, None):
        feed.publish(observer, record)
    open_feed = """(url) => new Promise(resolve => {
        const got = [];
        const ws = new WebSocket(url);
        ws.onmessage = e => got.push(e.data);
        ws.onclose = () => resolve(got);
        setTimeout(() => { ws.close(); resolve(got); }, 3000);
    })"""
    try:
        from playwright.async_api import async_playwright

        async with async_playwright() as playwright:
            # "rebind.example" resolves to 127.0.0.1 for this browser, as a rebinding DNS would make it
            browser = await playwright.chromium.launch(
                executable_path=CHROMIUM,
                args=[*CHROMIUM_ARGS, "--host-resolver-rules=MAP rebind.example 127.0.0.1"],
                timeout=30_000,
            )
            try:
                page = await browser.new_page()
                page.set_default_timeout(10_000)
                feed_url = f"ws://127.0.0.1:{web.port}/frames"
                await page.goto(f"http://localhost:{other.port}/")
                assert await page.evaluate(open_feed, feed_url) == []
                # the page's own origin reads it
                await page.goto(f"http://127.0.0.1:{web.port}/")
                got = await page.evaluate(open_feed, feed_url)
                assert got and "secret" in got[0]
                # a rebinding site gets neither the page nor the feed
                response = await page.goto(f"http://rebind.example:{web.port}/")
                assert response is not None and response.status == 403
                assert (
                    await page.evaluate(open_feed, f"ws://rebind.example:{web.port}/frames") == []
                )
            finally:
                await browser.close()
    finally:
        web.close()
        await web.wait_closed()
        other.close()
        await other.wait_closed()


async def test_a_frames_page_that_stops_reading_is_held_to_the_last_2000_frames() -> None:
    # A hidden tab, say: the tap keeps at most 2000 frames for it (each up to ~25 KB of JSON), drops
    # the oldest past that, and tells the page how many it dropped when it reads again.
    feed = FrameFeed()
    web = await feed.start("127.0.0.1", 0)
    try:
        async with asyncio.timeout(60):
            slow = await frames_reader(web.port)
            observer = WebSocketObserver(0, "10.0.0.1:1", "10.0.0.2:2")
            observer.feed(True, RFC_REQUEST, 0.0, None)
            observer.feed(False, RFC_RESPONSE, 0.0, None)
            total = 6000
            for index in range(total):
                payload = f"{index:06d}".encode() + b"x" * 1000
                frame = bytes([0x81, 126]) + len(payload).to_bytes(2, "big") + payload
                for record in observer.feed(False, frame, float(index), None):
                    feed.publish(observer, record)
                if index % 100 == 0:
                    await asyncio.sleep(0)  # the page's sender runs, until its buffers are full
            (page,) = feed._pages.values()
            assert len(page.items) <= 2000
            assert page.skipped > 0
            # It reads again: what it gets is in order, ends with the last frame, and with the
            # frames it was told were skipped makes up every frame published.
            seen: list[int] = []
            skipped = 0
            while not seen or seen[-1] != total - 1:
                item = json.loads((await slow.read_frame()).payload)
                if "skipped" in item:
                    skipped += item["skipped"]
                else:
                    seen.append(int(item["text"][:6]))
            assert seen == sorted(seen)
            assert len(seen) + skipped == total
            slow.close()
            # A long text frame goes to a page cut, as payloads are, with its length.
            reader = await frames_reader(web.port)
            for _ in range(2000):  # the history first
                await reader.read_frame()
            text = "t" * 20_000
            frame = bytes([0x81, 126]) + len(text).to_bytes(2, "big") + text.encode()
            for record in observer.feed(False, frame, 0.0, None):
                feed.publish(observer, record)
            item = json.loads((await reader.read_frame()).payload)
            assert (len(item["text"]), item["text_length"]) == (4096, 20_000)
            reader.close()
    finally:
        web.close()
        await web.wait_closed()


async def test_tap_web_page_shows_frames_live_in_chromium() -> None:
    assert os.access(CHROMIUM, os.X_OK), (
        f"Chromium is needed at {CHROMIUM} (apt-get install chromium)"
    )
    peer, port = await start_node_echo()
    feed = FrameFeed()
    observers: list[WebSocketObserver] = []
    tap = Tap(
        f"ws://127.0.0.1:{port}/",
        on_open=observers.append,
        on_frame=feed.publish,
    )
    server = await tap.start("127.0.0.1", 0)
    web = await feed.start("127.0.0.1", 0)
    try:
        async with chromium() as browser:
            page = await browser.new_page(viewport={"width": 1100, "height": 420})
            page.set_default_timeout(10_000)
            await page.goto(f"http://127.0.0.1:{web.port}/")
            await page.wait_for_function(
                "document.getElementById('status').textContent.includes('frames')"
            )
            await relay_session(server.sockets[0].getsockname()[1])
            await page.wait_for_function("document.querySelectorAll('tr.frame').length >= 12")
            rows = await page.locator("tr.frame").all_inner_texts()
            assert any("through the tap" in row and "text" in row for row in rows)
            assert any("close" in row and "4002" in row for row in rows)
            assert any("ping" in row for row in rows) and any("pong" in row for row in rows)
            # click to expand: the full fields appear
            await page.locator("tr.frame", has_text="through the tap").first.click()
            details = page.locator("tr.details:not([hidden])").first
            fields = json.loads(await details.inner_text())
            assert fields["opcode_name"] == "text" and fields["masked"] is True
            # the filter box hides what does not match
            await page.fill("#filter", "pong")
            visible = await page.locator("tr.frame:visible").all_inner_texts()
            assert visible and all("pong" in row for row in visible)
            # it matches what the rows show: the direction as written, its arrow, and a ping's
            # payload as the text it is (shown quoted), not only its hex
            upstream = await page.locator("tr.frame.client-to-server").count()
            for needle in ("client to server", "→"):
                await page.fill("#filter", needle)
                visible = await page.locator("tr.frame:visible").all_inner_texts()
                assert len(visible) == upstream, needle
                assert all("→ client to server" in row for row in visible), needle
            await page.fill("#filter", "tap-ping")
            visible = await page.locator("tr.frame:visible").all_inner_texts()
            assert len(visible) == 2 and all('"tap-ping"' in row for row in visible), visible
            await page.fill("#filter", "")
            # pause holds new frames back
            await page.click("#pause")
            assert await page.locator("#pause").inner_text() == "Resume"
            await page.evaluate(
                "document.querySelectorAll('tr.details').forEach(r => { r.hidden = true; })"
            )
            await page.set_viewport_size({"width": 1100, "height": 460})
            # docs/tap.png is rewritten only on request, so a test run leaves the tree clean
            shot = REPO / "docs" / "tap.png"
            if os.environ.get("UPWIRE_UPDATE_DOCS") or not shot.exists():
                await page.screenshot(path=str(shot))
            else:
                assert await page.screenshot()
    finally:
        await tap.close()
        web.close()
        await web.wait_closed()
        await peer.stop()
    assert observers and observers[0].is_websocket


async def test_a_paused_page_holds_at_most_2000_frames_and_says_how_many_it_let_go() -> None:
    feed = FrameFeed()
    web = await feed.start("127.0.0.1", 0)
    observer = WebSocketObserver(0, "10.0.0.1:1", "10.0.0.2:2")
    observer.feed(True, RFC_REQUEST, 0.0, None)
    observer.feed(False, RFC_RESPONSE, 0.0, None)

    def publish(first: int, count: int) -> None:
        for index in range(first, first + count):
            payload = f"frame {index}".encode()
            frame = bytes([0x81, len(payload)]) + payload
            for record in observer.feed(False, frame, 0.0, None):
                feed.publish(observer, record)

    try:
        async with chromium() as browser:
            page = await browser.new_page()
            page.set_default_timeout(20_000)
            await page.goto(f"http://127.0.0.1:{web.port}/")
            await page.wait_for_function(
                "document.getElementById('status').textContent.includes('frames')"
            )
            await page.click("#pause")
            publish(0, 2500)
            await page.wait_for_function(
                "document.getElementById('status').textContent === 'paused (2000 waiting)'"
            )
            await page.click("#pause")
            await page.wait_for_function("document.querySelectorAll('tr.frame').length === 2000")
            skipped = await page.locator("tr.skipped").all_inner_texts()
            assert skipped == ["500 frames not shown: this page fell behind"]
            first = await page.locator("tr.frame").first.inner_text()
            assert "frame 500" in first
            # Live, the page keeps its newest 5000 frames (published at a pace it keeps up with: each
            # batch once the page shows the one before, so that a loaded machine does not make it fall
            # behind).
            for first in range(2500, 6000, 100):
                publish(first, 100)
                await page.wait_for_function(
                    "document.querySelector('#frames tr:last-child').previousElementSibling"
                    f".textContent.includes('frame {first + 99}')"
                )
            assert await page.locator("tr.frame").count() == 5000
            assert "frame 1000" in await page.locator("tr.frame").first.inner_text()
            assert await page.locator("tr.skipped").count() == 0
    finally:
        web.close()
        await web.wait_closed()
