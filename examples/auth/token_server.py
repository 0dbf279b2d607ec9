#!/usr/bin/env python3
"""Token authentication: `process_request` checks a bearer token before the WebSocket upgrade.

A client sends `Authorization: Bearer <token>`; a browser, whose WebSocket API cannot set headers, puts it
in the URI instead: `ws://host:8765/?token=<token>` (keep such URIs out of logs: they carry a secret). A
request without a valid token gets `401 Unauthorized` and never reaches the handler.

    python examples/auth/token_server.py [--host localhost] [--port 8765]
    upwire connect ws://localhost:8765/?token=alice-token      # then type lines
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import signal
import sys

import upwire

# A real server looks tokens up in its database or checks a signed token (JWT...); this demo knows two.
TOKENS = {"alice-token": "alice", "bob-token": "bob"}


def token_of(request: upwire.Request) -> str | None:
    """The token of a request: from `Authorization: Bearer ...`, else from `?token=...`."""
    scheme, _, credentials = (request.headers.get("Authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.query.get("token")


def user_of(request: upwire.Request) -> str | None:
    """The user a request's token belongs to, or None."""
    token = token_of(request)
    if token is None:
        return None
    for known, user in TOKENS.items():
        # compare_digest takes the same time whatever the first differing byte: no timing oracle.
        if hmac.compare_digest(token.encode(), known.encode()):
            return user
    return None


def process_request(
    connection: upwire.ServerConnection, request: upwire.Request
) -> upwire.Response | None:
    """Answer 401 unless the request carries a valid token; None lets the upgrade go on."""
    if user_of(request) is None:
        return upwire.Response(
            401,
            {"WWW-Authenticate": 'Bearer realm="upwire example"'},
            "A valid token is required: send 'Authorization: Bearer <token>' or ?token=<token>.\n",
        )
    return None


async def handler(websocket: upwire.ServerConnection) -> None:
    assert websocket.request is not None  # always set once the handler runs
    user = user_of(websocket.request)
    await websocket.send(f"Hello {user}!")
    async for message in websocket:
        await websocket.send(f"{user}: {message}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    async with upwire.serve(
        handler, args.host, args.port, process_request=process_request
    ) as server:
        print(
            f"listening on ws://{args.host}:{server.port}/ (tokens: {', '.join(TOKENS)})",
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
        sys.exit(f"cannot start the token server: {exc}")
