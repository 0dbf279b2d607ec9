"""A real keep-alive connection: two ordinary requests to Node's http server, then the Upgrade to `ws`.

A raw client (h11 for the HTTP part) talks to Node on one TCP connection; dumpcap captures it; `upwire
dissect` must find the WebSocket after the exchanges and agree with tshark on every frame.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import h11

from upwire.protocol.frames import Opcode

from .capture import (
    assert_agrees_with_tshark,
    capture,
    dissect_json,
    tshark_frames,
    upwire_frames,
)
from .pcapbuild import REQUEST, client_frame

HERE = Path(__file__).parent


def exchange(sock: socket.socket, http: h11.Connection, request: h11.Request, body: bytes) -> bytes:
    """Send one request, return its response's body (h11 reads the framing)."""
    sock.sendall(http.send(request) or b"")
    if body:
        sock.sendall(http.send(h11.Data(data=body)) or b"")
    sock.sendall(http.send(h11.EndOfMessage()) or b"")
    received = b""
    while True:
        event = http.next_event()
        if event is h11.NEED_DATA:
            http.receive_data(sock.recv(65536))
        elif isinstance(event, h11.Data):
            received += event.data
        elif isinstance(event, h11.EndOfMessage):
            http.start_next_cycle()
            return received


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "the server closed early"
        data += chunk
    return data


def test_an_upgrade_after_keep_alive_requests_is_dissected_like_tshark(tmp_path: Path) -> None:
    node = shutil.which("node")
    assert node, "Node.js is needed (scripts/install.sh all installs it)"
    server = subprocess.Popen(
        [node, str(HERE / "keepalive_server.js")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        path = tmp_path / "keepalive.pcapng"
        with capture(path, port), socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            http = h11.Connection(h11.CLIENT)
            host = ("Host", f"127.0.0.1:{port}")
            get = h11.Request(method="GET", target="/page", headers=[host])
            assert exchange(sock, http, get, b"") == b"hello"
            post = h11.Request(
                method="POST",
                target="/form",
                headers=[host, ("Transfer-Encoding", "chunked")],
            )
            assert exchange(sock, http, post, b"a=1") == b"chunked answer"
            # The Upgrade on the same connection, then one echoed frame and the closing handshake.
            sock.sendall(REQUEST)
            head = b""
            while b"\r\n\r\n" not in head:
                head += sock.recv(1)
            assert head.startswith(b"HTTP/1.1 101 ")
            sock.sendall(client_frame(Opcode.TEXT, b"after keep-alive"))
            assert recv_exactly(sock, 18) == b"\x81\x10after keep-alive"
            sock.sendall(client_frame(Opcode.CLOSE, b"\x03\xe8"))
            assert recv_exactly(sock, 4) == b"\x88\x02\x03\xe8"
    finally:
        server.terminate()
        server.wait(timeout=10)

    ours = upwire_frames(path)
    assert [(f["direction"], f["opcode_name"], f.get("text")) for f in ours] == [
        ("client-to-server", "text", "after keep-alive"),
        ("server-to-client", "text", "after keep-alive"),
        ("client-to-server", "close", None),
        ("server-to-client", "close", None),
    ]
    assert_agrees_with_tshark(ours, tshark_frames(path, port))
    [connection] = [o for o in dissect_json(path) if o["type"] == "connection"]
    assert connection["websocket"] and connection["request"]["target"] == "/chat"
    assert connection["notes"] == [
        "the Upgrade request came after 2 HTTP requests on this connection "
        "(keep-alive; the first: GET /page → 200 OK)"
    ]
