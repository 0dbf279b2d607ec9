"""IP fragments in a capture are put back together before TCP, for IPv4 and IPv6, in any order.

A TCP segment carrying a WebSocket frame is sent as several IP fragments (out of order, overlapping,
duplicated); the dissector must show the same frames as without fragmentation, and as tshark, which
reassembles IP by default, numbering the datagram as its last fragment.
"""

from __future__ import annotations

import struct
import time
from pathlib import Path

import dpkt
import pytest

from upwire.protocol.frames import Opcode
from upwire.wire import dissect
from upwire.wire.ipfrag import Reassembler

from .capture import assert_agrees_with_tshark, tshark_frames, upwire_frames
from .pcapbuild import (
    CLIENT6,
    REQUEST,
    RESPONSE,
    SERVER,
    SERVER6,
    Conversation,
    _ip,
    _link,
    client_frame,
    server_frame,
)

TEXT = "fragmented at the IP layer " * 120  # 3240 bytes: three fragments of at most 1480


def fragments_v4(packet: bytes, size: int, ident: int) -> list[bytes]:
    """Cut an IPv4 packet (20-byte header) into fragments of `size` payload bytes (a multiple of 8)."""
    header, payload = packet[:20], packet[20:]
    out = []
    for offset in range(0, len(payload), size):
        piece = payload[offset : offset + size]
        more = offset + size < len(payload)
        head = bytearray(header)
        head[2:4] = struct.pack("!H", 20 + len(piece))
        head[4:6] = struct.pack("!H", ident)
        head[6:8] = struct.pack("!H", (0x2000 if more else 0) | offset // 8)
        head[10:12] = b"\0\0"
        words = sum(struct.unpack("!10H", head))
        words = (words & 0xFFFF) + (words >> 16)
        head[10:12] = struct.pack("!H", ~((words & 0xFFFF) + (words >> 16)) & 0xFFFF)
        out.append(bytes(head) + piece)
    return out


def fragments_v6(packet: bytes, size: int, ident: int, extensions: bool = False) -> list[bytes]:
    """Cut an IPv6 packet (40-byte header, TCP next) into fragments with a Fragment header each.

    With `extensions`, a Hop-by-Hop header comes before the Fragment header (in every fragment) and a
    Destination Options header after it (in the fragmentable part, RFC 8200 §4.5).
    """
    header, payload = packet[:40], packet[40:]
    first_next = dpkt.ip.IP_PROTO_TCP
    if extensions:
        # Destination Options (60): next TCP, length 0 (8 bytes), a PadN option of 4 bytes.
        payload = bytes([dpkt.ip.IP_PROTO_TCP, 0, 1, 4, 0, 0, 0, 0]) + payload
        first_next = 60
    out = []
    for offset in range(0, len(payload), size):
        piece = payload[offset : offset + size]
        more = offset + size < len(payload)
        fragment = struct.pack("!BBHI", first_next, 0, offset | int(more), ident)
        before = bytes([dpkt.ip.IP_PROTO_FRAGMENT, 0, 1, 4, 0, 0, 0, 0]) if extensions else b""
        head = bytearray(header)
        head[4:6] = struct.pack("!H", len(before) + len(fragment) + len(piece))
        head[6] = 0 if extensions else dpkt.ip.IP_PROTO_FRAGMENT
        out.append(bytes(head) + before + fragment + piece)
    return out


def write(path: Path, ip_packets: list[bytes]) -> Path:
    with path.open("wb") as file:
        writer = dpkt.pcap.Writer(file, linktype=1)
        for number, ip in enumerate(ip_packets):
            writer.writepkt(_link("ethernet", ip), ts=1_700_000_000 + number / 1000)
    return path


def conversation_packets(
    v6: bool, shuffle: bool, extensions: bool = False, size: int = 1480
) -> tuple[list[bytes], int]:
    """The IP packets of a handshake and two frames, the large one fragmented; and the server port."""
    conversation = (
        Conversation(client=CLIENT6, server=SERVER6) if v6 else Conversation()
    ).handshake()
    conversation.send(True, REQUEST)
    conversation.send(False, RESPONSE)
    [large] = conversation.send(True, client_frame(Opcode.TEXT, TEXT.encode()))
    conversation.send(False, server_frame(Opcode.TEXT, b"ok"))
    packets: list[bytes] = []
    for packet in conversation.packets:
        ip = _ip(packet)
        if packet is not large:
            packets.append(ip)
            continue
        if v6:
            pieces = fragments_v6(ip, size, 0x1234, extensions)
        else:
            pieces = fragments_v4(ip, size, 0x1234)
        if shuffle:
            # Last first, then the rest, then a duplicate of the first: order and repeats must not matter.
            pieces = [pieces[-1], *pieces[:-1], pieces[0]]
        packets += pieces
    return packets, (SERVER6 if v6 else SERVER)[1]


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("shuffle", [False, True], ids=["in-order", "shuffled"])
def test_fragmented_segments_decode_as_tshark_decodes_them(
    tmp_path: Path, v6: bool, shuffle: bool
) -> None:
    packets, port = conversation_packets(v6, shuffle)
    path = write(tmp_path / "fragments.pcap", packets)
    result = dissect(path)
    [connection] = result.connections
    assert [f.text for f in connection.frames] == [TEXT, "ok"]
    assert not result.problems
    ours = upwire_frames(path)
    assert_agrees_with_tshark(ours, tshark_frames(path, port))


@pytest.mark.parametrize("size", [1480, 8], ids=["1480-byte", "8-byte"])
def test_ipv6_extension_headers_around_the_fragment_header_decode_as_tshark(
    tmp_path: Path, size: int
) -> None:
    # Hop-by-Hop before the Fragment header, Destination Options after it (in the reassembled part);
    # in 1480-byte pieces and in 8-byte ones (409 fragments).
    packets, port = conversation_packets(v6=True, shuffle=True, extensions=True, size=size)
    path = write(tmp_path / "fragments.pcap", packets)
    result = dissect(path)
    [connection] = result.connections
    assert [f.text for f in connection.frames] == [TEXT, "ok"]
    assert not result.problems
    assert_agrees_with_tshark(upwire_frames(path), tshark_frames(path, port))


def test_a_datagram_missing_a_fragment_is_a_problem_not_a_frame(tmp_path: Path) -> None:
    packets, _ = conversation_packets(v6=False, shuffle=False)
    del packets[-3]  # the middle fragment of the large segment
    result = dissect(write(tmp_path / "missing.pcap", packets))
    [connection] = result.connections
    # The client's frame is lost with its bytes; the server's comes through.
    assert [f.text for f in connection.frames] == ["ok"]
    assert any(
        "1 fragmented IP datagram(s) could not be put back together" in p for p in result.problems
    )


def test_the_reassembler_is_bounded_and_gives_up_on_what_no_stack_sends() -> None:
    fragments = Reassembler()
    tcp = 6
    # A fragment that is not the last must hold a multiple of 8 bytes.
    assert fragments.add(("a",), 0, True, b"x" * 7, 0.0, tcp) is None
    # Past 65535 bytes.
    assert fragments.add(("b",), 65528, False, b"x" * 16, 0.0, tcp) is None
    # More datagrams pending than the bound: the oldest are given up.
    for ident in range(300):
        assert fragments.add(("c", ident), 0, True, b"x" * 8, 1.0, tcp) is None
    # Too old: a datagram started 31 s earlier (capture time) is given up when the next fragment comes.
    assert fragments.add(("d",), 0, True, b"y" * 8, 100.0, tcp) is None
    assert fragments.add(("d",), 8, False, b"z", 131.5, tcp) is None
    assert fragments.add(("e",), 8, False, b"2", 131.5, tcp) is None
    assert fragments.add(("e",), 0, True, b"1" * 8, 131.6, tcp) == (tcp, b"1" * 8 + b"2")
    # A fragment past the end the last fragment set: given up.
    assert fragments.add(("f",), 8, False, b"2", 131.6, tcp) is None
    assert fragments.add(("f",), 16, True, b"3" * 8, 131.6, tcp) is None
    fragments.finish()
    # a, b; 44 c evicted, then the other 256 c expired; d twice (expired, then left at the end); f.
    assert fragments.incomplete == 2 + 300 + 2 + 1


def test_overlapping_fragments_keep_the_bytes_that_came_first() -> None:
    fragments = Reassembler()
    assert fragments.add(("k",), 8, False, b"BBBBBBBB", 0.0, 6) is None
    assert fragments.add(("k",), 0, True, b"A" * 16, 0.0, 6) == (6, b"A" * 8 + b"B" * 8)


def test_many_tiny_fragments_in_any_order_cost_little() -> None:
    # 8-byte fragments of a 16 KiB datagram, the last first and every other one before the rest: each
    # fragment fills holes found by bisection, and the payload is joined once.
    payload = bytes(range(256)) * 64
    offsets = list(range(0, len(payload), 8))
    order = [offsets[-1], *offsets[:-1:2], *offsets[1:-1:2]]
    fragments = Reassembler()
    started = time.process_time()
    results = [
        fragments.add(("t",), at, at != offsets[-1], payload[at : at + 8], 0.0, 6) for at in order
    ]
    assert results[-1] == (6, payload) and results.count(None) == len(order) - 1
    assert time.process_time() - started < 1.0
    # One fragment more than the bound: given up.
    fragments = Reassembler()
    for index in range(2049):
        fragments.add(("u",), index * 8, True, b"x" * 8, 0.0, 6)
    fragments.finish()
    assert fragments.incomplete == 1
