"""Hand-made bytes for the integration tests: HTTP requests, WebSocket frames, and a raw-socket peer.

Nothing here uses upwire: a test that talks through `RawPeer` sees exactly the bytes on the wire, so a
misbehaving peer (unmasked frames, bad UTF-8, no pongs, never reading) is just a few bytes written by hand.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import struct
from dataclasses import dataclass

# RFC 6455 §1.3: the example key and the Sec-WebSocket-Accept it must produce.
KEY = "dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

MASK_KEY = b"\x37\xfa\x21\x3d"

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def accept_key(key: str) -> str:
    """The Sec-WebSocket-Accept answering `key` (RFC 6455 §4.2.2), computed here independently."""
    digest = hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
    return base64.b64encode(digest).decode()


def upgrade_request(
    path: str = "/",
    *,
    method: str = "GET",
    headers: dict[str, str | None] | None = None,
    extra: list[tuple[str, str]] | None = None,
) -> bytes:
    """Return a WebSocket Upgrade request; `headers` replaces (or with None removes) default fields."""
    fields: dict[str, str | None] = {
        "Host": "127.0.0.1",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": KEY,
        "Sec-WebSocket-Version": "13",
    }
    fields.update(headers or {})
    lines = [f"{method} {path} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in fields.items() if value is not None]
    lines += [f"{name}: {value}" for name, value in extra or []]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def plain_get(path: str = "/") -> bytes:
    """Return a plain HTTP GET, as a browser or a health checker sends it."""
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()


@dataclass
class HttpResponse:
    """An HTTP response as read from the socket; header names are lower-cased."""

    status: int
    headers: dict[str, str]
    body: bytes
    raw: bytes


def parse_response(raw: bytes) -> HttpResponse:
    """Parse a complete HTTP response (head and whatever body follows it)."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    version, status, *_ = status_line.split(" ", 2)
    assert version == "HTTP/1.1", status_line
    headers: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return HttpResponse(int(status), headers, body, raw)


def request_headers(head: bytes) -> dict[str, str]:
    """The header fields of a request head, names lower-cased (the request line is skipped)."""
    _, *lines = head.decode("latin-1").split("\r\n")
    return {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in lines if line)
    }


@dataclass
class Frame:
    """A WebSocket frame as read from the wire (payload already unmasked)."""

    fin: bool
    opcode: int
    payload: bytes
    masked: bool = False
    rsv: int = 0

    @property
    def close_code(self) -> int | None:
        """The status code of a close frame (None when it has none)."""
        assert self.opcode == CLOSE, self
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None

    @property
    def close_reason(self) -> str:
        """The reason of a close frame."""
        return self.payload[2:].decode("utf-8")


def apply_mask(payload: bytes, mask_key: bytes) -> bytes:
    """XOR `payload` with the 4-byte `mask_key` (RFC 6455 §5.3)."""
    return bytes(b ^ mask_key[i % 4] for i, b in enumerate(payload))


def encode_frame(
    opcode: int,
    payload: bytes | str = b"",
    *,
    fin: bool = True,
    mask_key: bytes | None = MASK_KEY,
    rsv: int = 0,
) -> bytes:
    """Build one frame by hand; clients mask (the default), pass `mask_key=None` for an unmasked frame."""
    data = payload.encode("utf-8") if isinstance(payload, str) else payload
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    mask_bit = 0x80 if mask_key is not None else 0
    length = len(data)
    if length < 126:
        head = struct.pack("!BB", first, mask_bit | length)
    elif length < 1 << 16:
        head = struct.pack("!BBH", first, mask_bit | 126, length)
    else:
        head = struct.pack("!BBQ", first, mask_bit | 127, length)
    if mask_key is None:
        return head + data
    return head + mask_key + apply_mask(data, mask_key)


def close_payload(code: int, reason: str = "") -> bytes:
    """The payload of a close frame."""
    return struct.pack("!H", code) + reason.encode("utf-8")


def decode_frames(data: bytes) -> list[Frame]:
    """Split bytes into complete frames (a trailing partial frame is an error)."""
    frames = []
    pos = 0
    while pos < len(data):
        first, second = data[pos], data[pos + 1]
        pos += 2
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", data[pos : pos + 2])
            pos += 2
        elif length == 127:
            (length,) = struct.unpack("!Q", data[pos : pos + 8])
            pos += 8
        masked = bool(second & 0x80)
        mask_key = b""
        if masked:
            mask_key = data[pos : pos + 4]
            pos += 4
        payload = data[pos : pos + length]
        assert len(payload) == length, f"truncated frame: {len(payload)} of {length} bytes"
        pos += length
        if masked:
            payload = apply_mask(payload, mask_key)
        frames.append(Frame(bool(first & 0x80), first & 0x0F, payload, masked, (first >> 4) & 7))
    return frames


class RawPeer:
    """A TCP connection driven by hand: write any bytes, read exactly what comes back."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, host: str = "127.0.0.1") -> RawPeer:
        """Open a TCP connection to `host`:`port` (127.0.0.1 unless told)."""
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    @classmethod
    async def accept(cls, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> RawPeer:
        """Play the server: read an Upgrade request and answer 101 (for client-side tests)."""
        request = request_headers(await reader.readuntil(b"\r\n\r\n"))
        key = request["sec-websocket-key"]
        writer.write(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n"
            ).encode()
        )
        return cls(reader, writer)

    @classmethod
    async def upgraded(cls, port: int, path: str = "/") -> RawPeer:
        """Connect and complete the opening handshake (checking the 101)."""
        peer = await cls.connect(port)
        response = await peer.upgrade(path)
        assert response.status == 101, response
        return peer

    def write(self, data: bytes) -> None:
        """Write raw bytes."""
        self.writer.write(data)

    async def upgrade(self, path: str = "/") -> HttpResponse:
        """Send an Upgrade request and read the response head."""
        self.write(upgrade_request(path))
        return await self.read_response_head()

    async def read_response_head(self) -> HttpResponse:
        """Read an HTTP response head (up to the blank line)."""
        head = await self.reader.readuntil(b"\r\n\r\n")
        return parse_response(head)

    async def read_to_eof(self) -> bytes:
        """Read until the server closes the connection (a reset or broken pipe counts as a close)."""
        chunks = []
        try:
            while chunk := await self.reader.read(65536):
                chunks.append(chunk)
        except ConnectionError:
            pass
        return b"".join(chunks)

    async def read_http_response(self) -> HttpResponse:
        """Read a whole response up to the end of the connection (error responses close it)."""
        return parse_response(await self.read_to_eof())

    def send_frame(
        self,
        opcode: int,
        payload: bytes | str = b"",
        *,
        fin: bool = True,
        mask_key: bytes | None = MASK_KEY,
        rsv: int = 0,
    ) -> None:
        """Write one hand-made frame (masked unless `mask_key=None`)."""
        self.write(encode_frame(opcode, payload, fin=fin, mask_key=mask_key, rsv=rsv))

    def send_close(self, code: int = 1000, reason: str = "") -> None:
        """Write a masked close frame."""
        self.send_frame(CLOSE, close_payload(code, reason))

    async def read_frame(self) -> Frame:
        """Read one frame."""
        first, second = await self.reader.readexactly(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
        masked = bool(second & 0x80)
        mask_key = await self.reader.readexactly(4) if masked else b""
        payload = await self.reader.readexactly(length)
        if masked:
            payload = apply_mask(payload, mask_key)
        return Frame(bool(first & 0x80), first & 0x0F, payload, masked, (first >> 4) & 7)

    async def read_frames_to_eof(self) -> list[Frame]:
        """Read every frame until the server closes the connection."""
        return decode_frames(await self.read_to_eof())

    def close(self) -> None:
        """Close the TCP connection from this side (without waiting)."""
        self.writer.close()
