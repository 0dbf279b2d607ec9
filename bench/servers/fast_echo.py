"""A minimal, batching WebSocket echo server: the fixed peer of the client benchmark (clients.py).

Not a WebSocket library: it accepts any upgrade, unmasks each client frame, and answers everything one
read brought in with one write (no per-message system call), so that the clients under test, not the
server, are the limit. Pings are answered, a close frame is echoed and TCP closed; nothing is validated.
"""

import asyncio
import base64
import hashlib
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _common import BACKLOG, info, parse_args, run

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def unmask(payload, key):
    n = len(payload)
    if not n:
        return b""
    mask = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(mask, "little")).to_bytes(
        n, "little"
    )


def header(b0, n):
    if n < 126:
        return bytes((b0, n))
    if n < 65536:
        return bytes((b0, 126)) + n.to_bytes(2, "big")
    return bytes((b0, 127)) + n.to_bytes(8, "big")


class FastEcho(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buffer = b""
        self.open = False

    def data_received(self, data):
        buffer = self.buffer + data if self.buffer else data
        if not self.open:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buffer
                return
            key = next(
                line.split(b":", 1)[1].strip()
                for line in buffer[:end].split(b"\r\n")
                if line.lower().startswith(b"sec-websocket-key:")
            )
            accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
            self.transport.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            )
            self.open = True
            buffer = buffer[end + 4 :]
        out = []
        pos, size = 0, len(buffer)
        close = False
        while size - pos >= 6:
            b0, b1 = buffer[pos], buffer[pos + 1]
            length, start = b1 & 0x7F, pos + 2
            if size - start < {126: 6, 127: 12}.get(length, 4):
                break  # the extended length and the mask key are not all in yet
            if length == 126:
                length, start = int.from_bytes(buffer[start : start + 2], "big"), start + 2
            elif length == 127:
                length, start = int.from_bytes(buffer[start : start + 8], "big"), start + 8
            end = start + 4 + length
            if end > size:
                break
            payload = unmask(buffer[start + 4 : end], buffer[start : start + 4])
            opcode = b0 & 0x0F
            if opcode == 0x9:  # ping -> pong
                b0 = 0x8A
            if opcode != 0xA:
                out.append(header(b0, length))
                out.append(payload)
            pos = end
            if opcode == 0x8:
                close = True
                break
        self.buffer = buffer[pos:]
        if out:
            self.transport.write(b"".join(out))
        if close:
            self.transport.close()


async def main(args):
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(FastEcho, args.host, args.port, backlog=BACKLOG)
    info(f"fast batching echo on {args.host}:{args.port} loop={type(loop).__module__}")
    async with srv:
        await srv.serve_forever()


if __name__ == "__main__":
    a = parse_args()
    run(lambda: main(a), a.loop)
