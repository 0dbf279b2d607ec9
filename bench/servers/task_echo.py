"""The floor of any `await recv()` API: the raw TCP echo, with each read handed to a task through a future.

No WebSocket work at all: a BufferedProtocol copies each read into a bytes object and gives it to the
connection's task, which waits for it on a future (one per read, as a `recv` that has to wait makes) and
writes it back. Against raw_echo.py (the same echo without the task) it shows what asyncio's task
machinery alone adds to a round trip on this machine; upwire's high-level API pays that plus its own work.
Not a bench-server (no handshake, no broadcast): run it with `--server-cmd ... --baseline raw-LOOP` and
`--tests lat_16`, as raw_echo.py's figures are read (see docs/benchmarks.md).
"""

import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _common import BACKLOG, info, parse_args, run


class TaskEcho(asyncio.BufferedProtocol):
    def __init__(self):
        self.view = memoryview(bytearray(256 * 1024))
        self.waiter = None
        self.queue = []
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        asyncio.get_running_loop().create_task(self.echo())

    def get_buffer(self, sizehint):
        return self.view

    def buffer_updated(self, nbytes):
        data = bytes(self.view[:nbytes])
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(data)
        else:
            self.queue.append(data)

    def connection_lost(self, exc):
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self.transport = None

    async def recv(self):
        if self.queue:
            return self.queue.pop(0)
        if self.transport is None:
            return None
        self.waiter = asyncio.get_running_loop().create_future()
        try:
            return await self.waiter
        finally:
            self.waiter = None

    async def echo(self):
        while (data := await self.recv()) is not None:
            self.transport.write(data)


async def main(args):
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(TaskEcho, args.host, args.port, backlog=BACKLOG)
    info(f"task echo on {args.host}:{args.port} loop={type(loop).__module__}")
    async with srv:
        await srv.serve_forever()


if __name__ == "__main__":
    a = parse_args()
    run(lambda: main(a), a.loop)
