"""`upwire tap --web`: a page that shows the frames live, fed over a WebSocket served by upwire itself.

Owns: the page (one self-contained HTML file: a table of frames with a filter box, pause, and rows that
expand to every field) and `FrameFeed`, which sends each frame's JSON to every open page, and only to the
page it served itself: the Host and Origin checks below keep other sites' pages out.

Must not know: how the tap relays frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
from collections import deque
from importlib import resources
from urllib.parse import urlsplit

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
        self._names: set[str] = set()  # the Host names (lower case, IPv6 unbracketed) answered to
        # Listening on every address (0.0.0.0, ::): any IP literal is a Host answered to.
        self._any_address = False
        self._port = 0
        self._shown = ""  # the page's address, for the refusals' wording

    async def start(self, host: str, port: int) -> Server:
        """Serve the page on `http://host:port/` and the feed on `ws://host:port/frames`.

        Only requests whose Host names this server are answered (the listen host as given, the
        addresses bound, `localhost` and the loopback addresses, any IP address when it listens on all),
        whatever the port (a forwarded port, a proxy), and `/frames` only to the page this server served
        (an Origin of `http://` and that Host) or to a client that sends no Origin (a script).
        """
        server = await serve(self._handler, host, port, process_request=self._process_request)
        self._port = server.port
        self._shown = f"http://{_format_authority(host, server.port)}/"
        names = {host.strip("[]").lower()}
        names.update(str(sock.getsockname()[0]).lower() for sock in server.sockets)
        # The loopback names are never another site's: a rebinding attack needs a name of its own.
        names.update(("localhost", "127.0.0.1", "::1"))
        for name in names:
            address = _ip(name)
            if address is not None and address.is_unspecified:
                self._any_address = True
        self._names = names
        return server

    def _refusal(self, request: Request) -> str | None:
        """Why a request may not be answered, or None.

        A page of another site can open a WebSocket to any address, and the browser lets it read what
        comes back: the server must check the Origin (RFC 6455 §10.2; §4.1 has browsers send it). A
        site whose name it makes resolve to this address (DNS rebinding) is same-origin with what it
        loads from here, so its Host, its own name, is refused first.
        """
        host = request.headers.get("host")
        authority = _authority(f"http://{host or ''}")
        if authority is None or not self._answers_to(*authority):
            return (
                f"forbidden: this is the upwire tap's frames page, at {self._shown}; "
                f"it does not answer to Host {host or '(none)'}\n"
            )
        if request.path != "/frames":
            return None
        origin = request.headers.get("origin")
        if origin is None:
            return None  # not a browser: a script that reads the frames is no other site's page
        if _authority(origin) != authority:
            return (
                f"forbidden: only the frames page served here (origin http://{host}) may read the "
                f"frames, not a page from origin {origin}\n"
            )
        return None

    def _answers_to(self, name: str, port: int) -> bool:
        # The name only: a DNS-rebinding site is told apart by its name; the port is the one the browser
        # used, which a forwarded port (ssh -L, docker -p) or a proxy changes.
        del port
        return name in self._names or (self._any_address and _ip(name) is not None)

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        refusal = self._refusal(request)
        if refusal is not None:
            return Response(403, body=refusal)
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


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def _authority(url: str) -> tuple[str, int] | None:
    """(host in lower case, port) of an `http://host[:port]` URL (an Origin, or a Host field so written).

    None for anything else. The port defaults to 80, as an `http://` URL's (RFC 9110 §4.2.1): a
    browser leaves it out of both the Origin and the Host then.
    """
    if any(c.isspace() or c in "/?#@\\" for c in url.partition("://")[2]):
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme != "http" or not parts.hostname:
        return None  # the page is served over http:// only: an https:// or "null" origin is another
    return parts.hostname, 80 if port is None else port


def _format_authority(name: str, port: int) -> str:
    name = name.strip("[]")
    return f"[{name}]:{port}" if ":" in name else f"{name}:{port}"
