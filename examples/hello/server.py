#!/usr/bin/env python3
"""The classic hello server: a client sends a name, the server answers "Hello <name>!".

It also serves a small web page at http://localhost:8765/ whose JavaScript talks to the same server with the
browser's own WebSocket (the page is answered through `process_request`, before any upgrade).

    python examples/hello/server.py [--host localhost] [--port 8765]
"""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import signal
import sys

import upwire

PAGE = (pathlib.Path(__file__).parent / "index.html").read_bytes()


async def hello(websocket: upwire.ServerConnection) -> None:
    async for name in websocket:
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        print(f"<<< {name}", flush=True)
        greeting = f"Hello {name}!"
        await websocket.send(greeting)
        print(f">>> {greeting}", flush=True)


def serve_page(
    connection: upwire.ServerConnection, request: upwire.Request
) -> upwire.Response | None:
    # A browser asking for the page sends no "Upgrade: websocket": answer it with plain HTTP.
    if "websocket" not in request.headers.tokens("Upgrade"):
        if request.path in ("/", "/index.html"):
            return upwire.Response(200, {"Content-Type": "text/html; charset=utf-8"}, PAGE)
        return upwire.Response(404, body="Not found.\n")
    return None


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    async with upwire.serve(hello, args.host, args.port, process_request=serve_page) as server:
        print(
            f"hello server on ws://{args.host}:{server.port}/ (page: http://{args.host}:{server.port}/)",
            flush=True,
        )
        # SIGTERM (systemd, `docker stop`, `kill`) stops it as Ctrl-C does: every client gets close 1001.
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, server.close)
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    except OSError as exc:  # the port is taken, say: one line, not a traceback
        sys.exit(f"cannot start the hello server: {exc}")
