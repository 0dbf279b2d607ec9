"""upwire echo server, idiomatic high-level usage: `async for message in ws: await ws.send(message)`.

Compression is off unless --deflate (then permessage-deflate is accepted, as the deflate test needs). The
broadcast trigger uses `upwire.broadcast`, which encodes the frame once for every connection.
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
            upwire.broadcast(server.connections, BCAST_PAYLOAD)
        else:
            await ws.send(message)


async def main(args):
    global server
    loop = asyncio.get_running_loop()
    server = await upwire.serve(
        handler,
        args.host,
        args.port,
        max_message_size=None,  # no limit in the way of any row (the default, 1 MiB, admits 1 MiB exactly)
        ping_interval=None,  # no keep-alive traffic during measurements
        backlog=BACKLOG,
        compression="deflate" if args.deflate else None,
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
