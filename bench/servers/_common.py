"""Shared bits for the reference servers (argument parsing, event-loop choice).

Bench-server contract (what any server plugged into bench.py must do):
  * listen on 127.0.0.1:{port} (the port is substituted into the command);
  * accept WebSocket upgrades on any path;
  * echo every data message back with the same opcode (text->text, binary->binary);
  * answer a client close frame with a close frame;
  * broadcast trigger: on a *text* message exactly equal to "__broadcast__",
    send one 64-byte binary message to every open connection (sender included);
  * no keep-alive pings, no compression unless the deflate test is being run.
"""

import argparse
import asyncio
import sys

BCAST_TRIGGER = "__broadcast__"
BCAST_PAYLOAD = b"B" * 64
BACKLOG = 1024


def parse_args(extra=None):
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    p.add_argument("--deflate", action="store_true", help="enable permessage-deflate")
    if extra:
        extra(p)
    return p.parse_args()


def run(main_coro_factory, loop_kind):
    if loop_kind == "uvloop":
        import uvloop

        runner = uvloop.run
    else:
        runner = asyncio.run
    try:
        runner(main_coro_factory())
    except KeyboardInterrupt:
        pass


def info(*a):
    print("[server]", *a, file=sys.stderr, flush=True)
