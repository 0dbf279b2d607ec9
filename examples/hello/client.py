#!/usr/bin/env python3
"""The classic hello client: asks for a name, sends it, prints the greeting.

python examples/hello/client.py [ws://localhost:8765/] [--name Alice]
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import upwire


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("uri", nargs="?", default="ws://localhost:8765/")
    parser.add_argument("--name", help="the name to send (asked for when missing)")
    args = parser.parse_args()
    name = args.name if args.name is not None else input("What's your name? ")
    async with upwire.connect(args.uri) as websocket:
        await websocket.send(name)
        print(f">>> {name}")
        greeting = await websocket.recv()
        print(f"<<< {greeting}")


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except (OSError, upwire.WebSocketError) as exc:
        sys.exit(f"hello client: {exc}")  # no server there, say: one line, not a traceback
