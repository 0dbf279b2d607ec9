"""A TCP relay that records both directions of a WebSocket connection, and a reader for what it recorded.

Put between a peer and upwire, it shows what really went over the wire: the handshake heads, every frame
with its RSV bits, and (for permessage-deflate) the compressed payloads, inflated here with plain zlib per
direction, so a test does not take either implementation's word for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

# RFC 7692 §7.2.2: the receiver appends these 4 octets to a compressed message before inflating it.
TAIL = b"\x00\x00\xff\xff"


@dataclass(frozen=True)
class TappedFrame:
    fin: bool
    rsv: int
    opcode: int
    payload: bytes  # unmasked


@dataclass(frozen=True)
class TappedMessage:
    opcode: int
    compressed: bool  # RSV1 on the first frame
    wire_size: int  # payload bytes on the wire, all fragments together
    data: bytes  # the message's bytes, inflated if it was compressed
    frames: int


@dataclass
class Direction:
    """The bytes one side sent, after its HTTP head."""

    raw: bytearray = field(default_factory=bytearray)

    def head(self) -> bytes:
        end = self.raw.find(b"\r\n\r\n")
        return bytes(self.raw[: end + 4]) if end >= 0 else b""

    def header(self, name: str) -> list[str]:
        """The values of one header field of this side's handshake head."""
        values = []
        for line in self.head().decode("latin-1").split("\r\n")[1:]:
            key, sep, value = line.partition(":")
            if sep and key.strip().lower() == name.lower():
                values.append(value.strip())
        return values

    def frames(self) -> list[TappedFrame]:
        """The complete frames after the head (a partial last frame is left out)."""
        data = bytes(self.raw[len(self.head()) :])
        frames = []
        pos = 0
        while pos + 2 <= len(data):
            b0, b1 = data[pos], data[pos + 1]
            length = b1 & 0x7F
            p = pos + 2
            if length == 126:
                length = int.from_bytes(data[p : p + 2], "big")
                p += 2
            elif length == 127:
                length = int.from_bytes(data[p : p + 8], "big")
                p += 8
            key = b""
            if b1 & 0x80:
                key = data[p : p + 4]
                p += 4
            if p + length > len(data):
                break
            payload = data[p : p + length]
            if key:
                mask = (key * (length // 4 + 1))[:length]
                payload = (int.from_bytes(payload, "big") ^ int.from_bytes(mask, "big")).to_bytes(
                    length, "big"
                )
            frames.append(TappedFrame(bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0x0F, payload))
            pos = p + length
        return frames

    def messages(self, *, no_context_takeover: bool = False) -> list[TappedMessage]:
        """The data messages, compressed ones inflated with one zlib context for the direction."""
        inflater = zlib.decompressobj(wbits=-15)
        messages = []
        parts: list[bytes] = []
        first: TappedFrame | None = None
        count = 0
        for frame in self.frames():
            if frame.opcode >= 8:
                continue
            if frame.opcode:
                first, parts, count = frame, [], 0
            assert first is not None, "continuation frame without a first frame"
            parts.append(frame.payload)
            count += 1
            if not frame.fin:
                continue
            payload = b"".join(parts)
            compressed = bool(first.rsv & 0b100)
            data = payload
            if compressed:
                if no_context_takeover:
                    inflater = zlib.decompressobj(wbits=-15)
                data = inflater.decompress(payload + TAIL)
            messages.append(TappedMessage(first.opcode, compressed, len(payload), data, count))
        return messages


@dataclass
class Tap:
    """What went through the relay: `client` is what the client sent, `server` what the server sent."""

    url: str
    client: Direction = field(default_factory=Direction)
    server: Direction = field(default_factory=Direction)


async def _pump(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, record: Direction
) -> None:
    try:
        while data := await reader.read(65536):
            record.raw += data
            writer.write(data)
            await writer.drain()
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        with contextlib.suppress(OSError):
            if writer.can_write_eof():
                writer.write_eof()


@contextlib.asynccontextmanager
async def tapped(target_url: str) -> AsyncIterator[Tap]:
    """Relay a loopback port to the ws://host:port of `target_url`; yield a Tap whose url goes through it."""
    rest = target_url.removeprefix("ws://")
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.rpartition(":")
    tasks: set[asyncio.Task[None]] = set()
    writers: list[asyncio.StreamWriter] = []
    tap = Tap("")

    async def relay(
        client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        server_reader, server_writer = await asyncio.open_connection(host, int(port))
        writers.extend([client_writer, server_writer])
        await asyncio.gather(
            _pump(client_reader, server_writer, tap.client),
            _pump(server_reader, client_writer, tap.server),
        )
        for writer in (client_writer, server_writer):
            writer.close()

    def start(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(relay(reader, writer))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    server = await asyncio.start_server(start, "127.0.0.1", 0)
    relay_port = server.sockets[0].getsockname()[1]
    tap.url = f"ws://127.0.0.1:{relay_port}/{path}"
    try:
        yield tap
    finally:
        server.close()
        for writer in writers:
            writer.close()
        for task in list(tasks):
            task.cancel()
        for task in list(tasks):
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await task
        await server.wait_closed()
