"""Tests of the public exceptions the protocol core raises: each carries what the caller needs to act."""

from __future__ import annotations

import pytest

import upwire
from upwire.exceptions import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
    PayloadTooBig,
    ProtocolError,
    UsageError,
    WebSocketError,
)
from upwire.protocol import Connection, ProtocolFailure, Role
from upwire.protocol.close import parse_close_payload
from upwire.protocol.frames import FrameParser
from upwire.protocol.handshake import ClientHandshake, ServerHandshake
from upwire.protocol.http import Headers, Request, Response


def test_every_public_exception_is_a_websocket_error() -> None:
    for cls in (
        ProtocolError,
        PayloadTooBig,
        InvalidHandshake,
        InvalidStatus,
        InvalidURI,
        ConnectionClosed,
        ConnectionClosedOK,
        ConnectionClosedError,
        UsageError,
    ):
        assert issubclass(cls, WebSocketError)
        assert getattr(upwire, cls.__name__) is cls


def test_protocol_error_carries_its_close_code() -> None:
    assert ProtocolError("bad").close_code == 1002
    assert ProtocolError("bad text", 1007).close_code == 1007
    assert PayloadTooBig("too big").close_code == 1009


def test_protocol_errors_raised_by_the_core_carry_the_code_sent() -> None:
    with pytest.raises(ProtocolError) as info:
        parse_close_payload(b"\x03\xe8\xff")
    assert info.value.close_code == 1007
    parser = FrameParser(expect_masked=True, max_frame_size=10)
    parser.feed(b"\x82\x8b" + b"\x00" * 4)  # 11 bytes announced; no payload yet
    with pytest.raises(PayloadTooBig) as too_big:
        parser.next_frame()
    assert too_big.value.close_code == 1009


def test_connection_failure_carries_the_code_and_a_readable_message() -> None:
    conn = Connection(Role.SERVER, max_message_size=1 << 20)
    [event] = conn.receive_data(b"\x82\xff" + (2 << 20).to_bytes(8, "big") + b"\x00" * 4)
    assert isinstance(event, ProtocolFailure)
    assert event.code == 1009
    # The frame limit defaults to the message limit, so either may be named; both sizes are readable.
    assert "2 MiB" in event.message
    assert "=1 MiB" in event.message
    assert conn.failure is not None
    assert conn.failure.close_code == 1009
    assert str(conn.failure) == event.message


def test_invalid_handshake_carries_status_headers_and_body() -> None:
    request = Request("GET", "/", Headers([("Host", "a"), ("Upgrade", "websocket")]))
    with pytest.raises(InvalidHandshake) as info:
        ServerHandshake().accept(request)
    error = info.value
    assert error.status == 400
    assert error.headers["content-type"] == "text/plain; charset=utf-8"
    assert error.body.decode().startswith("Failed to open a WebSocket connection:")


def test_invalid_status_carries_the_servers_answer() -> None:
    response = Response(403, [("X-Why", "banned")], b"go away")
    with pytest.raises(InvalidStatus) as info:
        ClientHandshake("a", "/").check_response(response)
    error = info.value
    assert isinstance(error, InvalidHandshake)
    assert (error.status, error.body) == (403, b"go away")
    # Case-insensitive Headers, as a retry loop reads Retry-After or Location.
    assert isinstance(error.headers, Headers)
    assert error.headers.get("x-why") == "banned"
    assert error.headers.items() == [("X-Why", "banned")]
    assert "403" in str(error)


def test_invalid_uri_carries_the_uri_and_is_no_handshake_error() -> None:
    error = InvalidURI("http://x", "scheme must be ws or wss")
    assert isinstance(error, ValueError)
    # A retry loop that catches InvalidHandshake must not retry a URI that can never work.
    assert not isinstance(error, InvalidHandshake)
    assert error.uri == "http://x"
    assert "http://x" in str(error)


def test_connection_closed_carries_code_and_reason() -> None:
    error = ConnectionClosedError(1002, "bad frame", "protocol error")
    assert (error.code, error.reason) == (1002, "bad frame")
    assert "1002" in str(error)
    assert "bad frame" in str(error)
    assert ConnectionClosedOK(1000, "").code == 1000


def test_a_handshake_errors_message_is_bounded_escaped_and_may_be_any_object() -> None:
    # Bounded and escaped for logs (it quotes what the peer sent); any object, as for Exception.
    assert str(InvalidHandshake(ValueError("boom"))) == "boom"
    assert str(InvalidHandshake(42)) == "42"
    assert str(InvalidHandshake("a\x1b[2Jb\x85")) == "a\\x1b[2Jb\\x85"
    long = InvalidHandshake("start " + "x" * 5000 + " end")
    assert len(str(long)) <= 512
    assert str(long).startswith("start ") and str(long).endswith(" end")
    assert long.args == (str(long),)
