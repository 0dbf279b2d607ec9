"""Wire inspection: `dissect` decodes the WebSocket connections of a capture file, `tap` shows live traffic.

Both drive the sans-I/O core (`upwire.protocol`) in an observer role: frames are split with its
`FrameParser`, headers checked with `check_header`, payloads unmasked with `apply_mask`, close frames read
with `parse_close_payload`, handshakes with `upwire.protocol.http`. Violations are reported where they
happen, never raised. Reading captures needs dpkt (`pip install 'upwire[wire]'`).
"""

from upwire.wire.dissect import Connection, Dissection, FrameFilter, dissect
from upwire.wire.websocket import CLIENT_TO_SERVER, SERVER_TO_CLIENT, FrameRecord, WebSocketObserver

__all__ = [
    "CLIENT_TO_SERVER",
    "SERVER_TO_CLIENT",
    "Connection",
    "Dissection",
    "FrameFilter",
    "FrameRecord",
    "WebSocketObserver",
    "dissect",
]
