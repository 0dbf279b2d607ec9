"""upwire echo server, idiomatic high-level usage: `async for message in ws: await ws.send(message)`.

upwire has no permessage-deflate yet, so compression is off by construction (and --deflate is refused).
"""

import asyncio
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _common import BACKLOG, BCAST_PAYLOAD, BCAST_TRIGGER, info, parse_args, run

import upwire

logging.getLogger("upwire").setLevel(logging.CRITICAL)

server = None


async def handler(ws):
    async for message in ws:
        if message.__class__ is str and message == BCAST_TRIGGER:
            for connection in server.connections:
                try:
                    await connection.send(BCAST_PAYLOAD)
                except upwire.ConnectionClosed:
                    pass
        else:
            await ws.send(message)


async def main(args):
    global server
    if args.deflate:
        raise SystemExit("upwire has no permessage-deflate support yet")
    loop = asyncio.get_running_loop()
    server = await upwire.serve(
        handler,
        args.host,
        args.port,
        max_message_size=None,  # 1 MiB messages must pass (the default limit is 1 MiB)
        ping_interval=None,  # no keep-alive traffic during measurements
        backlog=BACKLOG,
    )
    from upwire.protocol import frames

    info(
        f"upwire {upwire.__version__} from {upwire.__file__} apply_mask={frames.apply_mask!r} "
        f"loop={type(loop).__module__}"
    )
    await server.serve_forever()


if __name__ == "__main__":
    a = parse_args()
    run(lambda: main(a), a.loop)
