"""`upwire tap --web`: a page that shows the frames live, fed over a WebSocket served by upwire itself.

Owns: the page (one self-contained HTML file: a table of frames with a filter box, pause, and rows that
expand to every field) and `FrameFeed`, which sends each frame's JSON to every open page.

Must not know: how the tap relays frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from importlib import resources

from upwire.exceptions import ConnectionClosed
from upwire.protocol.http import Request, Response
from upwire.server import Server, ServerConnection, serve
from upwire.wire.websocket import FrameRecord, WebSocketObserver

__all__ = ["FrameFeed"]

# Bytes of each payload field sent to the page; the page says when a payload was cut.
PAGE_PAYLOAD_LIMIT = 4096
_HISTORY = 2000


class _Page:
    """What one open page has still to be sent: at most the last `_HISTORY` frames."""

    __slots__ = ("items", "skipped", "wakeup")

    def __init__(self, history: deque[str]) -> None:
        self.items: deque[str] = deque(history, maxlen=_HISTORY)
        self.skipped = 0  # frames dropped from the front since the last one sent
        self.wakeup = asyncio.Event()


class FrameFeed:
    """Serve the page and broadcast frames to the pages that are open.

    New pages first get the most recent frames (up to 2000), then live ones. A page that falls more than
    2000 frames behind (a hidden tab, a slow link) skips the oldest and is told how many: the tap never
    holds more than that for it.
    """

    def __init__(self) -> None:
        self._pages: dict[ServerConnection, _Page] = {}
        self._history: deque[str] = deque(maxlen=_HISTORY)
        self._page = resources.files("upwire.wire").joinpath("tap.html").read_bytes()

    async def start(self, host: str, port: int) -> Server:
        """Serve the page on `http://host:port/` and the feed on `ws://host:port/frames`."""
        return await serve(self._handler, host, port, process_request=self._process_request)

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path == "/frames":
            return None
        if request.path in ("/", "/index.html"):
            return Response(
                200,
                [("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-store")],
                self._page,
            )
        return Response(404, body="not found: the frames page is at /\n")

    async def _handler(self, ws: ServerConnection) -> None:
        page = self._pages[ws] = _Page(self._history)
        sender = asyncio.create_task(self._feed(ws, page))
        try:
            async for _ in ws:
                pass  # the page sends nothing; reading keeps the connection's close handshake going
        except ConnectionClosed:
            pass
        finally:
            del self._pages[ws]
            sender.cancel()

    async def _feed(self, ws: ServerConnection, page: _Page) -> None:
        """Send a page its frames as fast as it takes them (`send` waits while its buffer is full)."""
        with contextlib.suppress(ConnectionClosed):
            while True:
                while page.items:
                    # Taken together: frames dropped while these go out are counted before the next.
                    skipped, page.skipped = page.skipped, 0
                    item = page.items.popleft()
                    if skipped:
                        await ws.send(json.dumps({"skipped": skipped}))
                    await ws.send(item)
                page.wakeup.clear()
                await page.wakeup.wait()

    def publish(self, observer: WebSocketObserver, record: FrameRecord) -> None:
        """Queue one frame for every open page (without waiting for slow pages)."""
        fields = record.to_json(payload_limit=PAGE_PAYLOAD_LIMIT)
        text = record.text
        if text is not None and len(text) > PAGE_PAYLOAD_LIMIT:
            # As the payload fields: each item the page is sent stays small (2000 are kept).
            fields["text"] = text[:PAGE_PAYLOAD_LIMIT]
            fields["text_length"] = len(text)
        fields["relative_time"] = round(record.time - (observer.first_time or record.time), 6)
        fields["data_length"] = len(record.data)
        item = json.dumps(fields, ensure_ascii=False)
        self._history.append(item)
        for page in self._pages.values():
            if len(page.items) == _HISTORY:
                page.skipped += 1  # the oldest goes
            page.items.append(item)
            page.wakeup.set()
