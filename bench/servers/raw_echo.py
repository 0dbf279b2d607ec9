"""Physical ceiling: asyncio.Protocol that writes back whatever it receives.

It also answers the bench broadcast trigger (the exact masked text frame the
load generator sends) by writing a pre-built 64-byte binary frame to every
connection, so that the fan-out test has a ceiling too.
"""

import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _common import BACKLOG, BCAST_PAYLOAD, info, parse_args, run

# Must match loadgen.MASK_KEY / loadgen.build_frame(0x1, b"__broadcast__").
MASK_KEY = bytes.fromhex("9c3a5e71")
_trig = b"__broadcast__"
TRIGGER = (
    bytes([0x81, 0x80 | len(_trig)])
    + MASK_KEY
    + bytes(b ^ MASK_KEY[i % 4] for i, b in enumerate(_trig))
)
TRIGGER_LEN = len(TRIGGER)
BCAST_FRAME = bytes([0x82, len(BCAST_PAYLOAD)]) + BCAST_PAYLOAD

transports = set()


class Echo(asyncio.Protocol):
    __slots__ = ("t",)

    def connection_made(self, t):
        self.t = t
        transports.add(t)

    def data_received(self, data):
        if len(data) == TRIGGER_LEN and data == TRIGGER:
            for t in transports:
                t.write(BCAST_FRAME)
            return
        self.t.write(data)

    def connection_lost(self, exc):
        transports.discard(self.t)


async def main(args):
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(Echo, args.host, args.port, backlog=BACKLOG)
    info(f"raw-tcp echo on {args.host}:{args.port} loop={type(loop).__module__}")
    async with srv:
        await srv.serve_forever()


if __name__ == "__main__":
    # asyncio reads into a new 256 KiB bytes object per read. glibc maps and unmaps each one (a dozen
    # microseconds of system time per read, more than the echo itself) until freeing a large mapped block
    # raises its threshold, which a big enough read does sooner or later: the ceiling's figures would
    # depend on what ran before. Freeing one here raises it from the start.
    bytes(600_000)
    a = parse_args()
    run(lambda: main(a), a.loop)
