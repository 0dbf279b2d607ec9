"""What the observer makes of a connection's bytes: a capture that starts mid-frame on one side, data
after a Close frame, and a connection reset in the middle of a frame."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dpkt
import pytest

from upwire.protocol.frames import Opcode
from upwire.wire import dissect

from .pcapbuild import (
    CLIENT,
    DEFLATE_RESPONSE,
    REQUEST,
    RESPONSE,
    SERVER,
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


def test_a_fin_in_the_middle_of_a_frame_is_named_as_such(tmp_path: Path) -> None:
    # The sender's FIN ends its direction (RFC 9293 §3.6): the frame was cut by the close, not by
    # the capture. The other side's FIN alone does not end it (a half-close).
    def cut(closers: list[bool]) -> list[str]:
        conversation = Conversation().handshake()
        conversation.send(True, REQUEST)
        conversation.send(False, RESPONSE)
        conversation.send(True, client_frame(Opcode.BINARY, bytes(1000))[:300])
        for from_client in closers:
            conversation.close(from_client)
        [connection] = dissect(write_capture(tmp_path / "c.pcap", conversation.packets)).connections
        return [n for n in connection.observer.notes if "inside" in n]

    assert cut([True, False]) == [
        "client-to-server: the client closed the connection (FIN, packet 7) inside a binary frame "
        "(300 of 1008 bytes)"
    ]
    assert cut([False]) == [
        "client-to-server: the capture ends inside a binary frame (300 of 1008 bytes)"
    ]


def test_a_connection_closed_before_the_101_says_so(tmp_path: Path) -> None:
    def notes(closers: list[bool]) -> list[str]:
        conversation = Conversation().handshake()
        conversation.send(True, REQUEST)
        for from_client in closers:
            conversation.close(from_client)
        [connection] = dissect(write_capture(tmp_path / "c.pcap", conversation.packets)).connections
        return connection.observer.notes

    assert notes([True, False]) == [
        "the server did not answer the Upgrade request: the client closed the connection "
        "(FIN, packet 5), then the server (packet 6)"
    ]
    assert notes([False]) == [
        "the server did not answer the Upgrade request: the server closed the connection "
        "(FIN, packet 5)"
    ]
    assert notes([]) == ["the capture ends before the server answered the Upgrade request"]


def test_a_client_frame_sent_before_the_101_is_a_violation(tmp_path: Path) -> None:
    # RFC 6455 §4.1: the client waits for the server's response before sending further data. A frame in
    # the request's own segment was sent before the client could have read the 101.
    conversation = Conversation().handshake()
    conversation.send(True, REQUEST + client_frame(Opcode.TEXT, b"too early"))
    conversation.send(False, RESPONSE)
    conversation.send(True, client_frame(Opcode.TEXT, b"in time"))
    [connection] = dissect(write_capture(tmp_path / "c.pcap", conversation.packets)).connections
    assert [(f.text, f.violations) for f in connection.frames] == [
        ("too early", ["client frame sent before the server's 101 response"]),
        ("in time", []),
    ]


def test_a_response_captured_before_its_request_is_matched_by_the_syn(tmp_path: Path) -> None:
    # A capture merged from two interfaces can order the 101 before the request that it answers: the
    # SYN says which side is the client.
    conversation = Conversation().handshake()
    request = conversation.send(True, REQUEST)
    response = conversation.send(False, RESPONSE + server_frame(Opcode.TEXT, b"hello"))
    handshake = conversation.packets[:3]
    conversation.packets[3:5] = response + request
    assert conversation.packets[:3] == handshake
    [connection] = dissect(write_capture(tmp_path / "c.pcap", conversation.packets)).connections
    assert connection.observer.is_websocket
    assert connection.observer.client == f"{CLIENT[0]}:{CLIENT[1]}"
    assert [f.text for f in connection.frames] == ["hello"]


def test_the_tree_escapes_what_a_terminal_would_act_on(tmp_path: Path) -> None:
    # An 8-bit CSI (U+009B) in a header, a bidi override and an ESC in a message: shown escaped.
    request = REQUEST.replace(b"\r\n\r\n", b"\r\nX-Note: a\x9bb\r\nX-Tab: a\tb\r\n\r\n")
    conversation = Conversation().handshake()
    conversation.send(True, request)
    conversation.send(False, RESPONSE)
    conversation.send(False, server_frame(Opcode.TEXT, "x\u202ey\x1bz".encode()))
    # Text that cannot drive a terminal stays as it is: non-ASCII spaces, joiners, a tab in a field.
    conversation.send(False, server_frame(Opcode.TEXT, "a\u00a0b\u3000c 👨\u200d👩".encode()))
    capture = write_capture(tmp_path / "c.pcap", conversation.packets)
    shown = subprocess.run(
        [sys.executable, "-m", "upwire", "dissect", "--color", "never", str(capture)],
        capture_output=True,
        check=True,
        encoding="utf-8",
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
    ).stdout
    assert "X-Note: a\\u009bb" in shown
    assert '"x\\u202ey\\u001bz"' in shown
    assert not any(char in shown for char in "\x9b\u202e\x1b")
    assert '"a\u00a0b\u3000c 👨\u200d👩"' in shown
    assert "X-Tab: a\tb" in shown


def test_a_reader_that_stops_early_ends_the_output_quietly(tmp_path: Path) -> None:
    # `upwire dissect capture | head`: no "Broken pipe" message, no traceback.
    conversation = Conversation().handshake()
    conversation.send(True, REQUEST)
    conversation.send(False, RESPONSE)
    for index in range(3000):
        conversation.send(False, server_frame(Opcode.TEXT, f"message {index}".encode() * 20))
    capture = write_capture(tmp_path / "c.pcap", conversation.packets)
    process = subprocess.Popen(
        [sys.executable, "-m", "upwire", "dissect", "--color", "never", str(capture)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.readline().startswith(b"stream 0")
    process.stdout.close()
    assert process.stderr.read() == b""
    assert process.wait(timeout=60) == 141


def test_a_client_frame_seen_before_the_101_in_its_own_segment_is_not_called_early(
    tmp_path: Path,
) -> None:
    # In a capture merged from two interfaces a frame sent after the 101 arrived can be stamped before
    # it: only bytes in the request's own segment were surely sent before the answer.
    conversation = Conversation().handshake()
    conversation.send(True, REQUEST)
    response = conversation.send(False, RESPONSE)
    frame = conversation.send(True, client_frame(Opcode.TEXT, b"after the 101"))
    conversation.packets[-2:] = frame + response
    [connection] = dissect(write_capture(tmp_path / "c.pcap", conversation.packets)).connections
    assert [(f.text, f.violations) for f in connection.frames] == [("after the 101", [])]


@pytest.mark.parametrize(
    ("pieces", "texts"),
    [
        ([RESPONSE, server_frame(Opcode.TEXT, b"hello")], ["hello"]),
        ([RESPONSE[:4], RESPONSE[4:]], []),
    ],
    ids=["101-then-a-frame", "101-split-after-HTTP"],
)
def test_an_answer_in_several_segments_captured_before_its_request_is_kept_whole(
    tmp_path: Path, pieces: list[bytes], texts: list[str]
) -> None:
    conversation = Conversation().handshake()
    request = conversation.send(True, REQUEST)
    answer = [packet for piece in pieces for packet in conversation.send(False, piece)]
    conversation.packets[3:] = answer + request
    [connection] = dissect(write_capture(tmp_path / "c.pcap", conversation.packets)).connections
    assert connection.observer.is_websocket, connection.observer.notes
    assert [f.text for f in connection.frames] == texts


def test_a_connection_the_websocket_server_opened_is_still_decoded(tmp_path: Path) -> None:
    # A reverse tunnel: the side that sends the SYN answers the Upgrade the other side sends.
    conversation = Conversation().handshake()
    conversation.send(False, REQUEST)
    conversation.send(True, RESPONSE + server_frame(Opcode.TEXT, b"from the SYN's side"))
    [connection] = dissect(write_capture(tmp_path / "c.pcap", conversation.packets)).connections
    assert connection.observer.is_websocket
    assert connection.observer.client == f"{SERVER[0]}:{SERVER[1]}"
    assert [f.text for f in connection.frames] == ["from the SYN's side"]
