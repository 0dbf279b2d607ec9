"""picows echo server (Cython), idiomatic WSListener usage. No permessage-deflate support."""

import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import picows
from _common import BACKLOG, BCAST_PAYLOAD, BCAST_TRIGGER, info, parse_args, run
from picows import WSListener, WSMsgType, ws_create_server

TRIGGER = BCAST_TRIGGER.encode()
transports = set()
_DATA = (WSMsgType.BINARY, WSMsgType.TEXT, WSMsgType.CONTINUATION)


class Echo(WSListener):
    def on_ws_connected(self, transport):
        transports.add(transport)

    def on_ws_frame(self, transport, frame):
        mt = frame.msg_type
        if mt in _DATA:
            if mt == WSMsgType.TEXT and frame.fin and frame.get_payload_as_bytes() == TRIGGER:
                for t in transports:
                    t.send(WSMsgType.BINARY, BCAST_PAYLOAD)
                return
            transport.send(mt, frame.get_payload_as_memoryview(), frame.fin)
        elif mt == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def on_ws_disconnected(self, transport):
        transports.discard(transport)


async def main(args):
    if args.deflate:
        raise SystemExit("picows has no permessage-deflate support")
    loop = asyncio.get_running_loop()
    kw = {"use_aiofastnet": False} if args.no_fastnet else {}
    srv = await ws_create_server(
        lambda req: Echo(),
        args.host,
        args.port,
        max_frame_size=64 * 1024 * 1024,
        backlog=BACKLOG,
        **kw,
    )
    from picows import api

    info(
        f"picows {picows.__version__} aiofastnet={api._HAS_AIOFASTNET and not args.no_fastnet} "
        f"loop={type(loop).__module__}"
    )
    async with srv:
        await srv.serve_forever()


if __name__ == "__main__":
    a = parse_args(
        lambda p: p.add_argument(
            "--no-fastnet",
            action="store_true",
            help="plain asyncio transports instead of aiofastnet",
        )
    )
    run(lambda: main(a), a.loop)
