"""websockets (new asyncio implementation) echo server, idiomatic usage."""

import asyncio
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import websockets
import websockets.frames
from _common import BACKLOG, BCAST_PAYLOAD, BCAST_TRIGGER, info, parse_args, run
from websockets.asyncio.server import broadcast, serve

logging.getLogger("websockets").setLevel(logging.CRITICAL)

try:
    import websockets.speedups as _sp

    SPEEDUPS = websockets.frames.apply_mask is _sp.apply_mask
except ImportError:  # pragma: no cover
    SPEEDUPS = False

server = None


async def handler(ws):
    async for msg in ws:
        if msg.__class__ is str and msg == BCAST_TRIGGER:
            broadcast(server.connections, BCAST_PAYLOAD)
        else:
            await ws.send(msg)


async def main(args):
    global server
    loop = asyncio.get_running_loop()
    server = await serve(
        handler,
        args.host,
        args.port,
        compression="deflate" if args.deflate else None,
        max_size=None,  # 1 MiB messages must pass (default max_size is 1 MiB)
        ping_interval=None,  # no keep-alive traffic during measurements
        backlog=BACKLOG,
    )
    info(
        f"websockets {websockets.__version__} speedups={SPEEDUPS} deflate={args.deflate} "
        f"loop={type(loop).__module__}"
    )
    if not SPEEDUPS:
        info("WARNING: websockets C speedups NOT loaded")
    await server.serve_forever()


if __name__ == "__main__":
    a = parse_args()
    run(lambda: main(a), a.loop)
