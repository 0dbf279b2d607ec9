"""What the observer makes of a connection's bytes: a capture that starts mid-frame on one side, data
after a Close frame, and a connection reset in the middle of a frame."""

from __future__ import annotations

from pathlib import Path

import dpkt

from upwire.protocol.frames import Opcode
from upwire.wire import dissect

from .pcapbuild import (
    CLIENT,
    DEFLATE_RESPONSE,
    REQUEST,
    RESPONSE,
    Conversation,
    Packet,
    client_frame,
    deflate_messages,
    server_frame,
    write_capture,
)


def test_mid_connection_the_other_direction_is_tried_when_the_first_starts_mid_frame(
    tmp_path: Path,
) -> None:
    conversation = Conversation()  # no SYN, no handshake
    # The first captured bytes are the client's, inside a masked frame (RSV2 and RSV3 set, if read
    # as a header); the server's start a frame.
    conversation.send(True, client_frame(Opcode.BINARY, b"\x70" * 1000)[40:])
    conversation.send(False, server_frame(Opcode.TEXT, b"server frame 1"))
    conversation.send(True, client_frame(Opcode.TEXT, b"client, still mid-frame"))
    conversation.send(False, server_frame(Opcode.TEXT, b"server frame 2"))
    [connection] = dissect(write_capture(tmp_path / "c.pcap", conversation.packets)).connections
    observer = connection.observer
    assert observer.is_websocket
    assert observer.client == f"{CLIENT[0]}:{CLIENT[1]}"  # the server's frames are not masked
    assert [(f.direction, f.text) for f in connection.frames] == [
        ("server-to-client", "server frame 1"),
        ("server-to-client", "server frame 2"),
    ]
    assert any(
        "client-to-server: the capture starts in the middle of a frame" in n for n in observer.notes
    )


def test_mid_connection_both_directions_mid_frame_is_not_websocket(tmp_path: Path) -> None:
    conversation = Conversation()
    conversation.send(True, client_frame(Opcode.BINARY, b"\x70" * 1000)[40:])
    conversation.send(False, server_frame(Opcode.BINARY, b"\x70" * 1000)[30:])
    [connection] = dissect(write_capture(tmp_path / "c.pcap", conversation.packets)).connections
    assert not connection.observer.is_websocket
    [note] = connection.observer.notes
    assert "middle of this connection" in note


def test_data_frames_after_a_side_sent_its_close_frame_are_violations(tmp_path: Path) -> None:
    conversation = Conversation().handshake()
    conversation.send(True, REQUEST)
    conversation.send(False, RESPONSE)
    conversation.send(True, client_frame(Opcode.CLOSE, b"\x03\xe8"))
    conversation.send(False, server_frame(Opcode.TEXT, b"server has not closed yet"))
    conversation.send(True, client_frame(Opcode.TEXT, b"data after close"))
    conversation.send(True, client_frame(Opcode.PING, b"a ping is not data"))
    conversation.send(False, server_frame(Opcode.CLOSE, b"\x03\xe8"))
    conversation.send(False, server_frame(Opcode.BINARY, b"late", fin=False))
    conversation.send(False, server_frame(Opcode.CONTINUATION, b"r"))
    [connection] = dissect(write_capture(tmp_path / "c.pcap", conversation.packets)).connections
    flagged = [
        (f.direction, f.opcode)
        for f in connection.frames
        if any("after" in v and "Close frame" in v for v in f.violations)
    ]
    assert flagged == [
        ("client-to-server", Opcode.TEXT),
        ("server-to-client", Opcode.BINARY),
        ("server-to-client", Opcode.CONTINUATION),
    ]
    assert all(not f.violations for f in connection.frames[:2])


def test_rsv1_on_a_continuation_and_a_message_inside_a_message_are_violations(
    tmp_path: Path,
) -> None:
    conversation = Conversation().handshake()
    conversation.send(True, REQUEST)
    conversation.send(False, DEFLATE_RESPONSE)
    [compressed] = deflate_messages([b"compressed, then continued"])
    conversation.send(True, client_frame(Opcode.TEXT, compressed[:5], fin=False, rsv=4))
    conversation.send(True, client_frame(Opcode.CONTINUATION, compressed[5:], rsv=4))
    conversation.send(False, server_frame(Opcode.TEXT, b"first part, ", fin=False))
    conversation.send(False, server_frame(Opcode.TEXT, b"a new message"))
    [connection] = dissect(write_capture(tmp_path / "c.pcap", conversation.packets)).connections
    violations = [(f.direction, f.opcode, f.violations) for f in connection.frames]
    assert violations == [
        ("client-to-server", Opcode.TEXT, []),
        ("client-to-server", Opcode.CONTINUATION, ["RSV1 set on a continuation frame"]),
        ("server-to-client", Opcode.TEXT, []),
        ("server-to-client", Opcode.TEXT, ["new text message before message 1 ended"]),
    ]


def rst_mid_frame(tmp_path: Path, reset: bool) -> list[str]:
    conversation = Conversation().handshake()
    conversation.send(True, REQUEST)
    conversation.send(False, RESPONSE)
    conversation.send(True, client_frame(Opcode.BINARY, bytes(1000))[:300])
    if reset:
        conversation.packets.append(
            Packet(
                conversation.client,
                conversation.server,
                conversation.next[conversation.client],
                conversation.next[conversation.server],
                dpkt.tcp.TH_RST | dpkt.tcp.TH_ACK,
            )
        )
    [connection] = dissect(write_capture(tmp_path / "c.pcap", conversation.packets)).connections
    return [n for n in connection.observer.notes if "inside" in n]


def test_a_reset_in_the_middle_of_a_frame_is_named_as_such(tmp_path: Path) -> None:
    assert rst_mid_frame(tmp_path, reset=True) == [
        "client-to-server: the connection was reset (RST) inside a binary frame (300 of 1008 bytes)"
    ]
    assert rst_mid_frame(tmp_path, reset=False) == [
        "client-to-server: the capture ends inside a binary frame (300 of 1008 bytes)"
    ]
