"""The server's own CPU time per connection, without sockets: upwire's code for a whole WebSocket connection.

    bench/.venv/bin/python bench/handshake_cost.py                  # both APIs, asyncio and uvloop
    bench/.venv/bin/python bench/handshake_cost.py --loop uvloop --batch 50

The handshake rate of a server (bench.py's conn_* rows) mixes upwire's code with the transport's, the
kernel's and the cache misses of many connections at once. This isolates the first: batches of `--batch`
connections of a real `upwire.serve` server, each made by the server's own protocol factory on a stand-in
transport that only counts what is written, get a browser-like upgrade request, then the client's close frame,
then the end of TCP, with a turn of the event loop after each step (the high-level handler's task runs there).
Prints microseconds per connection (the best and the median of `--repeats` timings), for the Listener (an
echo) and the high-level API (`async for message in ws: await ws.send(message)`).

A measuring tool, not a test: the stand-in transport does none of a socket's work.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import upwire
from upwire.server import ServerConnection

REQUEST = (
    b"GET /chat HTTP/1.1\r\nHost: 127.0.0.1:8765\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
_KEY = bytes.fromhex("9c3a5e71")
# A masked close frame with code 1000, as a client sends it.
CLOSE = (
    bytes([0x88, 0x82]) + _KEY + bytes(a ^ b for a, b in zip(b"\x03\xe8", _KEY[:2], strict=True))
)


class StandInTransport:
    """What the connection calls on its transport, doing nothing but counting the bytes written."""

    def __init__(self, protocol: asyncio.BaseProtocol, loop: asyncio.AbstractEventLoop) -> None:
        self.protocol = protocol
        self.loop = loop
        self.closing = False
        self.written = 0

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8765)}.get(
            name, default
        )

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self.closing

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def writelines(self, chunks: list[bytes]) -> None:
        self.written += sum(map(len, chunks))

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            self.loop.call_soon(self.protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()


class Echo(upwire.Listener):
    def on_message(self, connection: upwire.Connection, message: str | bytes) -> None:
        connection.send_now(message)


async def echo(connection: upwire.Connection) -> None:
    async for message in connection:
        await connection.send(message)


def receive(connection: ServerConnection, data: bytes) -> None:
    """What a BufferedProtocol transport does with a read of `data`."""
    buffer = connection.get_buffer(-1)
    buffer[: len(data)] = data
    connection.buffer_updated(len(data))


async def turn() -> None:
    await asyncio.sleep(0)


async def batch(server: upwire.Server, count: int) -> None:
    loop = asyncio.get_running_loop()
    connections = []
    for _ in range(count):
        connection = ServerConnection(server, loop)
        connection.connection_made(StandInTransport(connection, loop))
        connections.append(connection)
    for connection in connections:
        receive(connection, REQUEST)
    await turn()
    for connection in connections:
        receive(connection, CLOSE)
    await turn()
    await turn()
    for connection in connections:
        transport = connection.transport
        if not transport.is_closing():  # the server closes TCP after the closing handshake
            raise RuntimeError("the server did not close the connection")
        if connection.response is None or connection.response.status != 101:
            raise RuntimeError("the server did not accept the upgrade")
    await turn()
    if not all(c._tcp_closed for c in connections):
        raise RuntimeError("a connection did not end")


async def measure(api: str, count: int, total: int, repeats: int) -> list[float]:
    handler = Echo if api == "listener" else echo
    server = await upwire.serve(handler, "127.0.0.1", 0, ping_interval=None)
    try:
        await batch(server, count)  # warm up
        timings = []
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(max(1, total // count)):
                await batch(server, count)
            timings.append((time.perf_counter() - start) / (max(1, total // count) * count))
        return timings
    finally:
        server.close()
        await server.wait_closed()


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--loop", default="asyncio,uvloop", help="comma list: asyncio, uvloop")
    p.add_argument("--api", default="listener,high-level", help="comma list: listener, high-level")
    p.add_argument("--batch", type=int, default=50, help="connections handled together")
    p.add_argument("--connections", type=int, default=5000, help="connections per timing")
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    for loop_name in a.loop.split(","):
        for api in a.api.split(","):
            coroutine = measure(api, a.batch, a.connections, a.repeats)
            if loop_name == "uvloop":
                import uvloop

                timings = uvloop.run(coroutine)
            else:
                timings = asyncio.run(coroutine)
            print(
                f"{loop_name:8} {api:11} best {min(timings) * 1e6:6.1f} µs/connection, "
                f"median {statistics.median(timings) * 1e6:6.1f}"
            )


if __name__ == "__main__":
    main()
