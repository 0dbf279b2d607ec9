"""upwire: WebSockets for Python, built from the wire up.

    import upwire

    async def echo(ws):
        async for message in ws:
            await ws.send(message)

    async with upwire.serve(echo, "localhost", 8765) as server:
        await server.serve_forever()

The protocol lives in the sans-I/O core `upwire.protocol`; this package adds the asyncio client and server.
"""

from upwire.broadcast import broadcast
from upwire.client import ClientConnection, connect
from upwire.connection import Connection
from upwire.exceptions import (
    ConcurrencyError,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidCertificate,
    InvalidHandshake,
    InvalidRedirect,
    InvalidStatus,
    InvalidURI,
    PayloadTooBig,
    ProtocolError,
    ProxyAuthenticationError,
    ProxyError,
    UsageError,
    WebSocketError,
)
from upwire.listener import Listener
from upwire.protocol.close import CloseCode
from upwire.protocol.connection import State
from upwire.protocol.extensions import (
    ClientPerMessageDeflateFactory,
    ServerPerMessageDeflateFactory,
)
from upwire.protocol.frames import Opcode
from upwire.protocol.http import Headers, Request, Response
from upwire.server import Server, ServerConnection, serve

__version__ = "0.1.0.dev0"  # as in pyproject.toml

__all__ = [
    "ClientConnection",
    "ClientPerMessageDeflateFactory",
    "CloseCode",
    "ConcurrencyError",
    "Connection",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "Headers",
    "InvalidCertificate",
    "InvalidHandshake",
    "InvalidRedirect",
    "InvalidStatus",
    "InvalidURI",
    "Listener",
    "Opcode",
    "PayloadTooBig",
    "ProtocolError",
    "ProxyAuthenticationError",
    "ProxyError",
    "Request",
    "Response",
    "Server",
    "ServerConnection",
    "ServerPerMessageDeflateFactory",
    "State",
    "UsageError",
    "WebSocketError",
    "broadcast",
    "connect",
    "serve",
]
