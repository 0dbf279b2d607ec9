"""upwire echo server on the low-level API: a `Listener` whose `on_message` answers with `send_now`.

No task per connection, no future per message; compression and keep-alive off, as for the other servers.
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


class Echo(upwire.Listener):
    def on_message(self, connection, message):
        if message.__class__ is str and message == BCAST_TRIGGER:
            upwire.broadcast(server.connections, BCAST_PAYLOAD)
        else:
            connection.send_now(message)


async def main(args):
    global server
    loop = asyncio.get_running_loop()
    server = await upwire.serve(
        Echo,
        args.host,
        args.port,
        max_message_size=None,
        ping_interval=None,
        backlog=BACKLOG,
        compression="deflate" if args.deflate else None,
    )
    info(f"upwire {upwire.__version__} (Listener API) loop={type(loop).__module__}")
    await server.serve_forever()


if __name__ == "__main__":
    a = parse_args()
    run(lambda: main(a), a.loop)
