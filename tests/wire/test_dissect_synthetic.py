"""The dissector on captures built byte by byte: link types, TCP reassembly, damaged input, deflate."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import dpkt
import pytest

from upwire.cli import main
from upwire.protocol.frames import Opcode
from upwire.wire import dissect

from .pcapbuild import (
    CLIENT6,
    DEFLATE_RESPONSE,
    LINKTYPES,
    MASK,
    REQUEST,
    RESPONSE,
    SERVER6,
    Conversation,
    Packet,
    _ip,
    _link,
    client_frame,
    deflate_messages,
    server_frame,
    write_capture,
)


def echo_conversation(**kwargs: object) -> Conversation:
    conversation = Conversation(**kwargs).handshake()  # type: ignore[arg-type]
    conversation.send(True, REQUEST)
    conversation.send(False, RESPONSE)
    conversation.send(True, client_frame(Opcode.TEXT, b"hello"))
    conversation.send(False, server_frame(Opcode.TEXT, b"hello"))
    conversation.send(True, client_frame(Opcode.BINARY, bytes(300)))
    conversation.send(False, server_frame(Opcode.CLOSE, b"\x03\xe8bye"))
    return conversation


@pytest.mark.parametrize("linktype", sorted(LINKTYPES))
@pytest.mark.parametrize("pcapng", [False, True], ids=["pcap", "pcapng"])
def test_every_link_type_and_file_format_decodes_the_same_frames(
    tmp_path: Path, linktype: str, pcapng: bool
) -> None:
    path = write_capture(
        tmp_path / "c.cap", echo_conversation().packets, linktype=linktype, pcapng=pcapng
    )
    result = dissect(path)
    [connection] = result.connections
    assert connection.observer.is_websocket
    assert connection.observer.request is not None
    assert connection.observer.request.target == "/chat"
    frames = connection.frames
    assert [f.opcode for f in frames] == [1, 1, 2, 8]
    first = frames[0]
    assert (first.masked, first.mask_key, first.text, first.payload_length) == (
        True,
        MASK,
        "hello",
        5,
    )
    assert first.payload_masked != first.payload
    assert frames[2].length_bits == 16 and frames[2].header_length == 8
    assert (frames[3].close_code, frames[3].close_reason) == (1000, "bye")
    assert result.problems == []


def _block(kind: int, body: bytes) -> bytes:
    body += bytes(-len(body) % 4)
    return struct.pack("<II", kind, len(body) + 12) + body + struct.pack("<I", len(body) + 12)


def _interface(linktype: int, nanoseconds: bool) -> bytes:
    options = struct.pack("<HHB3x", 9, 1, 9) + struct.pack("<HH", 0, 0) if nanoseconds else b""
    return _block(1, struct.pack("<HHI", linktype, 0, 65535) + options)


def _packet(interface: int, ticks: int, data: bytes) -> bytes:
    head = struct.pack("<IIIII", interface, ticks >> 32, ticks & 0xFFFFFFFF, len(data), len(data))
    return _block(6, head + data)


def test_pcapng_interfaces_each_keep_their_link_type_and_time_resolution(tmp_path: Path) -> None:
    # Two interfaces of different kinds, as `tshark -i lo -i any` writes them, in two sections.
    first = echo_conversation()
    second = echo_conversation(client=("10.0.0.7", 40000))
    section = _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    data = section + _interface(1, False) + _interface(113, True)
    for number, packet in enumerate(first.packets):
        data += _packet(0, 1_700_000_000_000_000 + number, _link("ethernet", _ip(packet)))
    for number, packet in enumerate(second.packets):
        ns = 1_700_000_001_000_000_000 + number * 1000
        data += _packet(1, ns, _link("sll", _ip(packet)))
    data += section + _interface(1, False)  # a second section: its interfaces start from 0 again
    third = echo_conversation(client=("10.0.0.9", 40000))
    for number, packet in enumerate(third.packets):
        data += _packet(0, 1_700_000_002_000_000 + number, _link("ethernet", _ip(packet)))
    path = tmp_path / "multi.pcapng"
    path.write_bytes(data)
    result = dissect(path)
    assert [len(c.frames) for c in result.connections] == [4, 4, 4]
    times = [c.frames[0].time for c in result.connections]
    assert [round(t) for t in times] == [1_700_000_000, 1_700_000_001, 1_700_000_002]
    assert not result.problems


def test_ipv6_addresses_are_shown_with_brackets(tmp_path: Path) -> None:
    conversation = echo_conversation(client=CLIENT6, server=SERVER6)
    result = dissect(write_capture(tmp_path / "c.pcap", conversation.packets, linktype="sll2"))
    [connection] = result.connections
    assert connection.observer.client == "[2001:db8::1]:50000"
    assert connection.frames[0].dst == "[2001:db8::2]:8080"


def test_out_of_order_segments_are_put_back_in_order(tmp_path: Path) -> None:
    conversation = Conversation().handshake()
    conversation.send(True, REQUEST)
    conversation.send(False, RESPONSE)
    pieces = conversation.send(True, client_frame(Opcode.TEXT, b"x" * 200), segment=50)
    for piece in pieces:
        conversation.packets.remove(piece)
    conversation.packets += [pieces[2], pieces[0], pieces[3], pieces[1], pieces[4]]
    result = dissect(write_capture(tmp_path / "c.pcap", conversation.packets))
    [connection] = result.connections
    assert [f.text for f in connection.frames] == ["x" * 200]
    assert any("out-of-order" in note for note in connection.tcp_notes())


def test_frames_that_waited_for_a_hole_count_as_the_packet_that_filled_it(tmp_path: Path) -> None:
    conversation = Conversation().handshake()
    conversation.send(True, REQUEST)
    conversation.send(False, RESPONSE)
    segments = [
        conversation.send(True, client_frame(Opcode.TEXT, text))[0] for text in (b"a", b"b", b"c")
    ]
    for segment in segments:
        conversation.packets.remove(segment)
    conversation.packets += segments[::-1]  # captured c, b, a: all three complete with a
    filler = len(conversation.packets)  # a's packet number (numbers count from 1)
    [connection] = dissect(write_capture(tmp_path / "c.pcap", conversation.packets)).connections
    assert [(f.text, f.packet) for f in connection.frames] == [
        ("a", filler),
        ("b", filler),
        ("c", filler),
    ]


def test_retransmitted_segments_do_not_duplicate_frames(tmp_path: Path) -> None:
    conversation = Conversation().handshake()
    conversation.send(True, REQUEST)
    conversation.send(False, RESPONSE)
    [first] = conversation.send(True, client_frame(Opcode.TEXT, b"once"))
    conversation.packets.append(first)  # the same segment again
    pieces = conversation.send(True, client_frame(Opcode.TEXT, b"twice" * 10), segment=20)
    conversation.packets.append(pieces[0])  # an overlapping retransmission after later data
    result = dissect(write_capture(tmp_path / "c.pcap", conversation.packets))
    [connection] = result.connections
    assert [f.text for f in connection.frames] == ["once", "twice" * 10]
    assert any("retransmitted" in note for note in connection.tcp_notes())


def test_a_gap_is_reported_and_the_other_direction_still_decodes(tmp_path: Path) -> None:
    conversation = Conversation().handshake()
    conversation.send(True, REQUEST)
    conversation.send(False, RESPONSE)
    conversation.send(True, client_frame(Opcode.TEXT, b"before"))
    lost = conversation.send(True, client_frame(Opcode.TEXT, b"lost" * 20), segment=30)
    conversation.packets.remove(lost[1])
    conversation.send(True, client_frame(Opcode.TEXT, b"after"))
    conversation.send(False, server_frame(Opcode.TEXT, b"server"))
    result = dissect(write_capture(tmp_path / "c.pcap", conversation.packets))
    [connection] = result.connections
    texts = [(f.direction, f.text) for f in connection.frames]
    assert ("client-to-server", "before") in texts
    assert ("server-to-client", "server") in texts
    # The gap is said once, and the segments after it, which waited for a hole that never filled,
    # were not "put back in order".
    assert connection.tcp_notes() == []
    assert connection.observer.notes == [
        "client-to-server: 30 bytes are missing from the capture (a gap); frames after them in "
        "this direction cannot be found reliably and are not decoded"
    ]


def test_packets_cut_by_the_snap_length_are_named_as_the_cause_of_the_missing_bytes(
    tmp_path: Path,
) -> None:
    conversation = Conversation().handshake()
    conversation.send(True, REQUEST)
    conversation.send(False, RESPONSE)
    conversation.send(True, client_frame(Opcode.TEXT, b"short"))
    conversation.send(True, client_frame(Opcode.BINARY, bytes(300)))  # packet 7, cut to 300 bytes
    conversation.send(True, client_frame(Opcode.TEXT, b"after"))
    result = dissect(write_capture(tmp_path / "c.pcap", conversation.packets, snap=300))
    [connection] = result.connections
    assert [f.text for f in connection.frames] == ["short"]
    # 300 bytes kept: 14 Ethernet, 20 IP, 20 TCP, then 246 of the frame's 308
    assert connection.observer.notes == [
        "client-to-server: 62 bytes are missing from the capture (packet 7 was cut by the "
        "capture's snap length); frames after them in this direction cannot be found reliably "
        "and are not decoded"
    ]
    assert connection.tcp_notes() == []


def test_a_truncated_capture_keeps_what_came_before_and_says_so(tmp_path: Path) -> None:
    path = write_capture(tmp_path / "c.pcap", echo_conversation().packets)
    data = path.read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[: len(data) - 30])  # in the middle of the last record
    result = dissect(cut)
    [connection] = result.connections
    assert [f.opcode for f in connection.frames][:3] == [1, 1, 2]
    message = " ".join(result.problems + connection.observer.notes + connection.tcp_notes())
    assert "truncated" in message or "missing" in message, message


def pcap_record_offsets(data: bytes) -> list[int]:
    """Where each record of a little-endian classic pcap file starts."""
    offsets, at = [], 24
    while at < len(data):
        offsets.append(at)
        at += 16 + struct.unpack_from("<I", data, at + 8)[0]
    return offsets


def test_a_truncated_capture_names_the_record_it_ends_in(tmp_path: Path) -> None:
    # Wireshark counts packet records from 1: the record cut is the one after the last whole one,
    # whether the file ends in its header or in its bytes.
    data = write_capture(tmp_path / "c.pcap", echo_conversation().packets).read_bytes()
    offsets = pcap_record_offsets(data)
    ng = write_capture(tmp_path / "c.pcapng", echo_conversation().packets, pcapng=True)
    cuts = {
        "in the header of record 6": (data[: offsets[5] + 8], 6),
        "in the bytes of record 6": (data[: offsets[5] + 30], 6),
        "in the last pcapng block": (ng.read_bytes()[:-7], len(offsets)),
    }
    for name, (cut, record) in cuts.items():
        path = tmp_path / "cut.cap"
        path.write_bytes(cut)
        assert dissect(path).problems == [
            f"the capture is truncated: it ends in the middle of packet record {record}; "
            "decoding what came before"
        ], name


def test_a_record_longer_than_any_packet_is_damage_not_truncation(tmp_path: Path) -> None:
    # tshark: "File has 2147483647-byte packet, bigger than maximum of 262144".
    data = bytearray(write_capture(tmp_path / "c.pcap", echo_conversation().packets).read_bytes())
    struct.pack_into("<I", data, pcap_record_offsets(bytes(data))[6] + 8, 0x7FFFFFFF)
    damaged = tmp_path / "damaged.pcap"
    damaged.write_bytes(bytes(data))
    result = dissect(damaged)
    assert result.problems == [
        "the capture is damaged after packet 6 (the next packet record claims 2147483647 bytes; "
        "no packet of this file can have more than 262144 (its snap length is 1500)); "
        "decoding what came before"
    ]
    [connection] = result.connections
    assert [f.text for f in connection.frames] == ["hello"]  # packet 6, the last whole one


def test_truncated_and_garbage_files_give_one_line_and_no_traceback(tmp_path: Path) -> None:
    path = write_capture(tmp_path / "c.pcap", echo_conversation().packets)
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(path.read_bytes()[:-7])
    ng = write_capture(tmp_path / "c.pcapng", echo_conversation().packets, pcapng=True)
    cut_ng = tmp_path / "cut.pcapng"
    cut_ng.write_bytes(ng.read_bytes()[:-7])
    garbage = tmp_path / "garbage.pcap"
    garbage.write_bytes(b"this is not a capture at all")
    empty = tmp_path / "empty.pcapng"
    empty.write_bytes(b"")
    runs = {
        name: subprocess.run(
            [sys.executable, "-m", "upwire", "dissect", str(file)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        for name, file in (
            ("cut", cut),
            ("cut-pcapng", cut_ng),
            ("garbage", garbage),
            ("missing", tmp_path / "no.pcap"),
            ("empty", empty),
            ("directory", tmp_path),
        )
    }
    for name, run in runs.items():
        assert "Traceback" not in run.stderr, (name, run.stderr)
        assert len(run.stderr.splitlines()) == 1, (name, run.stderr)
        if not name.startswith("cut"):
            assert run.returncode == 1 and run.stdout == "", (name, run)
    for name in ("cut", "cut-pcapng"):
        assert runs[name].returncode == 0 and "text" in runs[name].stdout, name
        assert "truncated" in runs[name].stderr and "_Damaged" not in runs[name].stderr, name
    assert runs["garbage"].returncode == 1
    assert "not a pcap or pcapng capture" in runs["garbage"].stderr
    assert (
        runs["missing"].stderr
        == f"upwire: {tmp_path / 'no.pcap'}: cannot open the file: No such file or directory\n"
    )
    assert "empty file" in runs["empty"].stderr
    assert "Is a directory" in runs["directory"].stderr


def test_damage_after_a_whole_section_header_is_damage_even_on_the_first_packet(
    tmp_path: Path,
) -> None:
    data = bytearray(
        write_capture(tmp_path / "c.pcapng", echo_conversation().packets, pcapng=True).read_bytes()
    )
    at = 0
    while struct.unpack_from("<I", data, at)[0] != 6:  # the first Enhanced Packet Block
        at += struct.unpack_from("<I", data, at + 4)[0]
    struct.pack_into("<I", data, at + 4, 0x7FFFFFFC)
    damaged = tmp_path / "damaged.pcapng"
    damaged.write_bytes(bytes(data))
    not_one = tmp_path / "not.pcapng"
    not_one.write_bytes(
        b"\x0a\x0d\x0d\x0a" + b"abcd"
    )  # pcapng's first bytes, then no section header
    runs = [
        subprocess.run(
            [sys.executable, "-m", "upwire", "dissect", str(file)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        for file in (damaged, not_one)
    ]
    assert runs[0].returncode == 0, runs[0]
    assert "damaged after packet 0 (block of 2147483644 bytes)" in runs[0].stderr
    assert runs[1].returncode == 1
    assert "not a pcap or pcapng capture" in runs[1].stderr


def test_a_plain_http_stream_is_reported_as_not_websocket(tmp_path: Path) -> None:
    conversation = Conversation().handshake()
    conversation.send(True, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    conversation.send(False, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    other = Conversation(client=("10.0.0.3", 40000)).handshake()
    other.send(True, b"\x16\x03\x01\x00\x05hello")  # TLS-ish bytes, not HTTP
    result = dissect(write_capture(tmp_path / "c.pcap", conversation.packets + other.packets))
    notes = {c.index: c.observer.notes for c in result.connections}
    assert not any(c.observer.is_websocket for c in result.connections)
    assert "without Upgrade: websocket" in notes[0][0]
    assert "does not start with an HTTP request" in notes[1][0]


def test_a_stream_without_data_has_its_endpoints_in_json_as_in_the_tree(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A browser's preconnect: a TCP connection opened and closed without a byte.
    path = write_capture(tmp_path / "c.pcap", Conversation().handshake().packets)
    client, server = "10.0.0.1:50000", "10.0.0.2:8080"
    assert main(["dissect", str(path)]) == 0
    assert f"stream 0  {client} → {server}  (not WebSocket)" in capsys.readouterr().out
    for extra in ([], ["--summary"]):
        assert main(["dissect", str(path), "--json", *extra]) == 0
        [head] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert (head["client"], head["server"]) == (client, server)


def test_every_packet_record_is_counted_not_only_tcp_ones(tmp_path: Path) -> None:
    conversation = Conversation().handshake()
    conversation.send(True, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    udp = dpkt.ip.IP(
        src=b"\x0a\x00\x00\x01",
        dst=b"\x0a\x00\x00\x02",
        p=dpkt.ip.IP_PROTO_UDP,
        data=dpkt.udp.UDP(sport=53, dport=53, data=b"dns?"),
    )
    udp.len = len(bytes(udp))
    path = tmp_path / "c.pcap"
    with path.open("wb") as file:
        writer = dpkt.pcap.Writer(file, linktype=1)
        for packet in conversation.packets:
            writer.writepkt(_link("ethernet", _ip(packet)))
        for _ in range(3):
            writer.writepkt(_link("ethernet", bytes(udp)))
    result = dissect(path)
    assert result.packets == len(conversation.packets) + 3


def test_a_refused_upgrade_is_not_websocket(tmp_path: Path) -> None:
    conversation = Conversation().handshake()
    conversation.send(True, REQUEST)
    conversation.send(False, b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
    [connection] = dissect(write_capture(tmp_path / "c.pcap", conversation.packets)).connections
    assert not connection.observer.is_websocket
    assert "HTTP 403" in connection.observer.notes[0]


def test_an_unfinished_frame_whose_header_breaks_the_rfc_says_so(tmp_path: Path) -> None:
    conversation = Conversation().handshake()
    conversation.send(True, REQUEST)
    conversation.send(False, RESPONSE)
    # A 64-bit length with its top bit set, then a few payload bytes: the capture ends there.
    conversation.send(True, b"\x82\xff" + (1 << 63 | 10).to_bytes(8, "big") + MASK + b"abcd")
    [connection] = dissect(write_capture(tmp_path / "c.pcap", conversation.packets)).connections
    [note] = [n for n in connection.observer.notes if "ends inside" in n]
    assert "64-bit payload length with the most significant bit set" in note


def test_a_capture_that_starts_mid_connection_decodes_frames_with_a_note(tmp_path: Path) -> None:
    conversation = Conversation()  # no SYN, no handshake
    conversation.send(False, server_frame(Opcode.TEXT, b"already open"))
    conversation.send(True, client_frame(Opcode.PING, b"p"))
    conversation.send(False, server_frame(Opcode.PONG, b"p"))
    [connection] = dissect(write_capture(tmp_path / "c.pcap", conversation.packets)).connections
    observer = connection.observer
    assert observer.is_websocket
    assert observer.client == "10.0.0.1:50000"  # the masked side
    assert [f.opcode for f in connection.frames] == [1, 9, 10]
    assert "middle of this connection" in observer.notes[0]


def test_a_capture_that_starts_mid_frame_says_so(tmp_path: Path) -> None:
    conversation = Conversation()
    conversation.send(False, server_frame(Opcode.TEXT, b"x" * 300)[5:])
    [connection] = dissect(write_capture(tmp_path / "c.pcap", conversation.packets)).connections
    assert not connection.observer.is_websocket
    assert "middle of this connection" in connection.observer.notes[0]


def test_a_request_header_with_latin_1_bytes_decodes(tmp_path: Path) -> None:
    # obs-text (RFC 9110 §5.5) in a request value: read as Latin-1, never a traceback.
    conversation = Conversation().handshake()
    conversation.send(True, REQUEST.replace(b"synthetic", b"caf\xe9 \xff\xfe"))
    conversation.send(False, RESPONSE)
    conversation.send(True, client_frame(Opcode.TEXT, b"hi"))
    [connection] = dissect(write_capture(tmp_path / "c.pcap", conversation.packets)).connections
    assert connection.observer.is_websocket
    assert connection.observer.request is not None
    assert connection.observer.request.headers["User-Agent"] == "caf\xe9 \xff\xfe"
    assert [f.text for f in connection.frames] == ["hi"]


def test_a_close_with_a_code_not_allowed_keeps_its_code_and_reason(tmp_path: Path) -> None:
    conversation = Conversation().handshake()
    conversation.send(True, REQUEST)
    conversation.send(False, RESPONSE)
    conversation.send(True, client_frame(Opcode.CLOSE, b"\x03\xedgone"))  # 1005
    conversation.send(False, server_frame(Opcode.CLOSE, b"\x03\xe8bad \xff"))  # 1000, bad UTF-8
    [connection] = dissect(write_capture(tmp_path / "c.pcap", conversation.packets)).connections
    first, second = connection.frames
    assert (first.close_code, first.close_reason) == (1005, "gone")
    assert first.violations
    assert (second.close_code, second.close_reason) == (1000, "bad \ufffd")
    assert second.violations


def test_ipv6_extension_headers_before_tcp_are_walked(tmp_path: Path) -> None:
    conversation = echo_conversation(client=CLIENT6, server=SERVER6)
    for packet in conversation.packets:
        packet.ip6_options = True
    [connection] = dissect(write_capture(tmp_path / "c.pcap", conversation.packets)).connections
    assert connection.observer.is_websocket
    assert [f.opcode for f in connection.frames] == [1, 1, 2, 8]


def test_a_request_carried_in_the_syn_is_read_from_the_byte_after_it(tmp_path: Path) -> None:
    # TCP Fast Open (RFC 7413): the SYN's data starts at its sequence number plus one.
    conversation = Conversation()
    c, s = conversation.client, conversation.server
    conversation.packets.append(Packet(c, s, 1000, 0, dpkt.tcp.TH_SYN, REQUEST))
    conversation.packets.append(Packet(s, c, 5000, 1001 + len(REQUEST), 0x12))
    conversation.next = {c: 1001 + len(REQUEST), s: 5001}
    conversation.send(False, RESPONSE)
    conversation.send(True, client_frame(Opcode.TEXT, b"fast"))
    [connection] = dissect(write_capture(tmp_path / "c.pcap", conversation.packets)).connections
    assert connection.observer.request is not None
    assert connection.observer.request.method == "GET"
    assert [f.text for f in connection.frames] == ["fast"]


def test_ports_reused_before_the_close_was_captured_are_a_new_connection(tmp_path: Path) -> None:
    # The first connection's end is not in the capture; the second one's SYN has another ISN.
    first = Conversation().handshake()
    first.send(True, REQUEST)
    first.send(False, RESPONSE)
    first.send(True, client_frame(Opcode.TEXT, b"conn A"))
    second = Conversation(client_isn=900_000, server_isn=700_000).handshake()
    second.send(True, REQUEST)
    second.send(False, RESPONSE)
    second.send(True, client_frame(Opcode.TEXT, b"conn B"))
    # ...but a SYN sent again with the same ISN is the same connection's.
    again = Conversation(client_isn=900_000).packets
    again.append(first.packets[0].__class__(second.client, second.server, 900_000, 0, 0x02))
    packets = first.packets + second.packets + again
    connections = dissect(write_capture(tmp_path / "c.pcap", packets)).connections
    assert [[f.text for f in c.frames] for c in connections] == [["conn A"], ["conn B"]]
    assert not any(note for c in connections for note in c.observer.notes if "gap" in note)


def test_a_connection_captured_twice_is_one_stream_with_its_frames_once(tmp_path: Path) -> None:
    # `dumpcap -i lo -i any` writes each packet of a short connection twice, one interface's copies
    # after the other's: the second SYN has the same ISN, after both FINs.
    conversation = Conversation().handshake()
    conversation.send(True, REQUEST)
    conversation.send(False, RESPONSE)
    conversation.send(True, client_frame(Opcode.TEXT, b"once"))
    c, s = conversation.client, conversation.server
    fin = dpkt.tcp.TH_FIN | dpkt.tcp.TH_ACK
    conversation.packets.append(Packet(c, s, conversation.next[c], conversation.next[s], fin))
    conversation.packets.append(Packet(s, c, conversation.next[s], conversation.next[c] + 1, fin))
    packets = conversation.packets + conversation.packets
    [connection] = dissect(write_capture(tmp_path / "c.pcap", packets)).connections
    assert [f.text for f in connection.frames] == ["once"]
    # A new connection on the same ports after the close (another ISN) is another stream.
    again = Conversation(client_isn=900_000, server_isn=700_000).handshake()
    again.send(True, REQUEST)
    again.send(False, RESPONSE)
    again.send(True, client_frame(Opcode.TEXT, b"twice"))
    connections = dissect(write_capture(tmp_path / "d.pcap", packets + again.packets)).connections
    assert [[f.text for f in c.frames] for c in connections] == [["once"], ["twice"]]


def test_a_syn_after_a_connection_whose_opening_was_not_captured_starts_a_new_one(
    tmp_path: Path,
) -> None:
    # The capture starts mid-connection (no SYN, no close captured); the next connection on the same
    # ports is another stream, as Wireshark counts. A SYN sent again after a SYN-ACK that opened the
    # capture is the same connection's (the SYN-ACK acknowledges its number).
    first = Conversation().handshake()
    first.send(True, REQUEST)
    first.send(False, RESPONSE)
    mid = first.send(True, client_frame(Opcode.TEXT, b"conn A"))
    second = Conversation(client_isn=900_000, server_isn=700_000).handshake()
    second.send(True, REQUEST)
    second.send(False, RESPONSE)
    second.send(True, client_frame(Opcode.TEXT, b"conn B"))
    third = Conversation(client_isn=300_000, server_isn=400_000).handshake()
    syn, syn_ack = third.packets[0], third.packets[1]
    third.packets[:2] = [syn_ack, syn]  # the capture starts at the SYN-ACK; the SYN comes again
    third.send(True, REQUEST)
    third.send(False, RESPONSE)
    third.send(True, client_frame(Opcode.TEXT, b"conn C"))
    packets = mid + second.packets + third.packets
    connections = dissect(write_capture(tmp_path / "c.pcap", packets)).connections
    assert [[f.text for f in c.frames] for c in connections] == [["conn A"], ["conn B"], ["conn C"]]
    assert [c.index for c in connections] == [0, 1, 2]
    # A SYN with the number the first captured segment implies (its sequence number less one) is the
    # same connection's, as Wireshark takes it (two interfaces' copies interleaved, say).
    [segment] = mid
    late_syn = Packet(segment.src, segment.dst, segment.seq - 1, 0, dpkt.tcp.TH_SYN)
    connections = dissect(write_capture(tmp_path / "d.pcap", [segment, late_syn])).connections
    assert len(connections) == 1


def test_mid_connection_the_other_direction_is_checked_for_a_frame_start_too(
    tmp_path: Path,
) -> None:
    conversation = Conversation()  # no SYN, no handshake
    conversation.send(False, server_frame(Opcode.TEXT, b"server first"))
    # The client's first captured bytes are the middle of a masked frame, then a whole frame.
    conversation.send(
        True, client_frame(Opcode.TEXT, b"x" * 80)[7:] + client_frame(Opcode.TEXT, b"y")
    )
    conversation.send(False, server_frame(Opcode.TEXT, b"server second"))
    [connection] = dissect(write_capture(tmp_path / "c.pcap", conversation.packets)).connections
    assert [(f.direction, f.text) for f in connection.frames] == [
        ("server-to-client", "server first"),
        ("server-to-client", "server second"),
    ]
    assert any("middle of a frame in this direction" in n for n in connection.observer.notes)


def test_deflate_messages_inflate_with_context_takeover_and_fragments(tmp_path: Path) -> None:
    messages = [b"compress me " * 20, b"compress me " * 20, b"again and again " * 4]
    compressed = deflate_messages(messages)
    conversation = Conversation().handshake()
    conversation.send(
        True,
        REQUEST.replace(b"\r\n\r\n", b"\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n"),
    )
    conversation.send(False, DEFLATE_RESPONSE)
    conversation.send(True, client_frame(Opcode.TEXT, compressed[0], rsv=4))
    # the second message relies on the first one's context: much shorter on the wire
    assert len(compressed[1]) < len(compressed[0]) // 2
    conversation.send(True, client_frame(Opcode.TEXT, compressed[1], rsv=4))
    third = compressed[2]
    conversation.send(True, client_frame(Opcode.BINARY, third[:5], fin=False, rsv=4))
    conversation.send(True, client_frame(Opcode.CONTINUATION, third[5:]))
    [connection] = dissect(write_capture(tmp_path / "c.pcap", conversation.packets)).connections
    frames = connection.frames
    assert [f.text for f in frames[:2]] == [m.decode() for m in messages[:2]]
    assert all(f.compressed for f in frames)
    assert b"".join(f.inflated or b"" for f in frames[2:]) == messages[2]
    assert frames[3].message == frames[2].message and frames[3].message_end
    assert frames[3].message_length == len(messages[2])
    assert not any(f.violations for f in frames)


def test_a_message_after_one_ended_by_a_bfinal_block_still_inflates(tmp_path: Path) -> None:
    # RFC 7692 §7.2.3.4: a sender may end a message's DEFLATE stream with a BFINAL block; the next
    # message is a new stream that may still refer to the window (the core's decode_frame handles it).
    first = zlib.compressobj(wbits=-15)
    ended = first.compress(b"final block " * 10) + first.flush(zlib.Z_FINISH)
    second = zlib.compressobj(wbits=-15)
    after = second.compress(b"next message") + second.flush(zlib.Z_SYNC_FLUSH)
    conversation = Conversation().handshake()
    conversation.send(True, REQUEST)
    conversation.send(False, DEFLATE_RESPONSE)
    conversation.send(False, server_frame(Opcode.TEXT, ended, rsv=4))
    conversation.send(False, server_frame(Opcode.TEXT, after[:-4], rsv=4))
    [connection] = dissect(write_capture(tmp_path / "c.pcap", conversation.packets)).connections
    assert [f.text for f in connection.frames] == ["final block " * 10, "next message"]
    assert not any(f.violations for f in connection.frames)


def test_an_unparsable_extensions_answer_is_noted_and_not_inflated(tmp_path: Path) -> None:
    conversation = Conversation().handshake()
    conversation.send(True, REQUEST)
    conversation.send(
        False,
        RESPONSE.replace(
            b"\r\n\r\n", b"\r\nSec-WebSocket-Extensions: permessage-deflate; =\r\n\r\n"
        ),
    )
    conversation.send(False, server_frame(Opcode.TEXT, deflate_messages([b"hi"])[0], rsv=4))
    [connection] = dissect(write_capture(tmp_path / "c.pcap", conversation.packets)).connections
    assert any("invalid Sec-WebSocket-Extensions" in n for n in connection.observer.notes)
    [frame] = connection.frames
    assert any("RSV bits" in v for v in frame.violations) and frame.inflated is None


def test_violations_are_reported_in_place(tmp_path: Path) -> None:
    conversation = Conversation().handshake()
    conversation.send(True, REQUEST)
    conversation.send(False, RESPONSE)
    conversation.send(True, server_frame(Opcode.TEXT, b"unmasked"))
    conversation.send(False, server_frame(Opcode.TEXT, b"\xff\xfe"))
    conversation.send(False, server_frame(Opcode.CONTINUATION, b"orphan"))
    conversation.send(False, server_frame(Opcode.TEXT, b"x", rsv=4))
    conversation.send(False, server_frame(Opcode.CLOSE, b"\x03"))
    [connection] = dissect(write_capture(tmp_path / "c.pcap", conversation.packets)).connections
    violations = [f.violations for f in connection.frames]
    assert "unmasked frame from a client" in violations[0]
    assert any("UTF-8" in v for v in violations[1])
    assert any("continuation frame without" in v for v in violations[2])
    assert any("RSV bits" in v for v in violations[3])
    assert any("1-byte payload" in v for v in violations[4])


def test_cli_json_filters_and_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = echo_conversation()
    second = echo_conversation(client=("10.0.0.9", 41000), server=("10.0.0.2", 9090))
    path = write_capture(tmp_path / "c.pcap", first.packets + second.packets)

    def run(*args: str) -> list[dict[str, object]]:
        assert main(["dissect", str(path), "--json", *args]) == 0
        return [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    everything = run()
    assert [o["type"] for o in everything].count("connection") == 2
    assert [o["stream"] for o in run("--stream", "1") if o["type"] == "frame"] == [1] * 4
    assert {o["stream"] for o in run("--port", "9090")} == {1}
    control = [o for o in run("--opcode", "control") if o["type"] == "frame"]
    assert [o["opcode_name"] for o in control] == ["close", "close"]
    binary = [o for o in run("--opcode", "binary", "--stream", "0") if o["type"] == "frame"]
    assert [o["opcode_name"] for o in binary] == ["binary"]
    frame = binary[0]
    assert frame["length_bits"] == 16 and frame["payload_length"] == 300
    assert frame["mask_key"] == MASK.hex() and frame["payload"] == "00" * 300
    summaries = run("--summary")
    assert summaries[0]["type"] == "summary"
    up = summaries[0]["client_to_server"]
    assert isinstance(up, dict)
    assert up["messages"] == 2 and up["framing_overhead_bytes"] == 6 + 8 + 0
    assert main(["dissect", str(path), "--summary"]) == 0
    text = capsys.readouterr().out
    assert "as HTTP polling with this handshake's headers" in text
    assert main(["dissect", str(path), "--color", "never"]) == 0
    tree = capsys.readouterr().out
    assert "GET /chat HTTP/1.1" in tree and "HTTP/1.1 101 Switching Protocols" in tree
    assert "\x1b[" not in tree
    assert main(["dissect", str(path), "--color", "always"]) == 0
    assert "\x1b[" in capsys.readouterr().out


def test_a_compression_bomb_in_a_capture_is_reported_not_inflated_without_bound() -> None:
    import zlib

    from upwire.exceptions import ProtocolError
    from upwire.wire.deflate import Inflater

    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = compressor.compress(bytes(8 << 20)) + compressor.flush(zlib.Z_SYNC_FLUSH)
    inflater = Inflater(15, True, max_message_size=1 << 20)
    try:
        inflater.inflate(bomb[:-4], True)
    except ProtocolError as exc:
        assert exc.close_code == 1009
    else:
        raise AssertionError("an 8 MiB message inflated past a 1 MiB bound")
    assert inflater.broken


def test_options_out_of_range_or_that_do_not_combine_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_capture(tmp_path / "c.pcap", echo_conversation().packets)
    # The summary is of whole connections: an --opcode filter would be silently ignored.
    assert main(["dissect", str(path), "--summary", "--opcode", "control"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "--summary counts every frame of a connection and cannot be combined with --opcode" in (
        captured.err
    )
    for argv in (
        ["dissect", str(path), "--stream", "-1"],
        ["dissect", str(path), "--port", "70000"],
        ["dissect", str(path), "--port", "-5"],
        ["tap", "--listen", "127.0.0.1:70000", "--upstream", "ws://127.0.0.1:1/"],
    ):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2, argv
        assert "error: argument" in capsys.readouterr().err, argv
