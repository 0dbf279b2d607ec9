"""aiohttp web.WebSocketResponse echo server, idiomatic usage."""

import asyncio
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import aiohttp
from _common import BACKLOG, BCAST_PAYLOAD, BCAST_TRIGGER, info, parse_args, run
from aiohttp import WSMsgType, web

logging.getLogger("aiohttp").setLevel(logging.CRITICAL)
clients = set()


def make_handler(compress):
    async def ws_handler(request):
        ws = web.WebSocketResponse(compress=compress, max_msg_size=0)
        await ws.prepare(request)
        clients.add(ws)
        try:
            async for msg in ws:
                t = msg.type
                if t is WSMsgType.BINARY:
                    await ws.send_bytes(msg.data)
                elif t is WSMsgType.TEXT:
                    if msg.data == BCAST_TRIGGER:
                        for c in list(clients):
                            if not c.closed:
                                await c.send_bytes(BCAST_PAYLOAD)
                    else:
                        await ws.send_str(msg.data)
        finally:
            clients.discard(ws)
        return ws

    return ws_handler


async def main(args):
    loop = asyncio.get_running_loop()
    app = web.Application()
    app.router.add_get("/{tail:.*}", make_handler(args.deflate))
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port, backlog=BACKLOG)
    await site.start()
    from aiohttp._websocket import reader

    info(
        f"aiohttp {aiohttp.__version__} reader={reader.WebSocketReader.__module__} "
        f"deflate={args.deflate} loop={type(loop).__module__}"
    )
    await asyncio.Event().wait()


if __name__ == "__main__":
    a = parse_args()
    run(lambda: main(a), a.loop)
