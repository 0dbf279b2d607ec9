#!/usr/bin/env python3
"""Cookie authentication: a login page sets a signed session cookie; the WebSocket upgrade requires it.

Browsers send their cookies with the WebSocket handshake of a page from the same site, so a page that
logged in over HTTP can open `new WebSocket("ws://host:8765/ws")` with no token in its code. Because a page
from *another* site would get the cookies sent too (cross-site WebSocket hijacking), the handshake is also
refused unless its `Origin` is this server's own (the scheme and the `Host` the browser connects to), which
holds on any `--host` and `--port`.

    python examples/auth/cookie_server.py [--host localhost] [--port 8765]
    GET /login?user=alice      sets the cookie `session=alice.<signature>` (a demo login: no password)
    GET /ws (Upgrade)          the WebSocket endpoint: 403 without a valid cookie and this server's Origin
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import os
import signal
import sys
from http.cookies import CookieError, SimpleCookie

import upwire

# Signs session cookies; a real server keeps it in its configuration and shares it between its processes.
SECRET = os.environ.get("UPWIRE_EXAMPLE_SECRET", "").encode() or os.urandom(32)
COOKIE = "session"


def sign(user: str) -> str:
    """A cookie value that only this server can make: `user.signature`."""
    signature = hmac.new(SECRET, user.encode(), hashlib.sha256).hexdigest()
    return f"{user}.{signature}"


def user_of(request: upwire.Request) -> str | None:
    """The user whose valid session cookie the request carries, or None."""
    cookies: SimpleCookie = SimpleCookie()
    try:
        cookies.load(request.headers.get("Cookie") or "")
    except CookieError:
        return None
    morsel = cookies.get(COOKIE)
    if morsel is None:
        return None
    user, _, _ = morsel.value.rpartition(".")
    if not user or not hmac.compare_digest(morsel.value, sign(user)):
        return None
    return user


def same_origin(request: upwire.Request) -> bool:
    """The page opening the WebSocket came from this server: its Origin names the host it connects to.

    (Behind a reverse proxy, compare with the public address the proxy serves instead.)
    """
    host = request.headers.get("Host")
    return host is not None and request.headers.get("Origin") in {
        f"http://{host}",
        f"https://{host}",
    }


def process_request(
    connection: upwire.ServerConnection, request: upwire.Request
) -> upwire.Response | None:
    """Serve /login over plain HTTP; let /ws upgrade only with a session cookie and an allowed Origin."""
    if request.path == "/login":
        user = request.query.get("user", "")
        if not (user.isascii() and user.isalnum()):  # a header value is Latin-1; keep it to ASCII
            return upwire.Response(400, body="Use /login?user=NAME (letters and digits).\n")
        cookie = f"{COOKIE}={sign(user)}; Path=/; HttpOnly; SameSite=Strict"
        return upwire.Response(200, {"Set-Cookie": cookie}, f"Logged in as {user}.\n")
    if request.path != "/ws":
        return upwire.Response(404, body="Not found.\n")
    if not same_origin(request):
        return upwire.Response(403, body="This origin may not open WebSocket connections here.\n")
    if user_of(request) is None:
        return upwire.Response(403, body="Log in first: GET /login?user=NAME.\n")
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
            f"login at http://{args.host}:{server.port}/login?user=NAME, then ws://.../ws",
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
        sys.exit(f"cannot start the cookie server: {exc}")
