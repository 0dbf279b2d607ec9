"""TCP reassembly under reordering: the bytes waiting behind a hole are counted exactly and released fast."""

from __future__ import annotations

import time
from pathlib import Path

import dpkt
import pytest

from upwire.protocol.frames import Opcode
from upwire.wire import dissect, tcp
from upwire.wire.capture import Segment

from .pcapbuild import REQUEST, RESPONSE, Conversation, Packet, server_frame, write_capture


def server_segment(conversation: Conversation, base: int, offset: int, data: bytes) -> Packet:
    """A segment of the server's direction carrying `data` at `offset` bytes past `base`."""
    return Packet(
        conversation.server,
        conversation.client,
        (base + offset) % (1 << 32),
        conversation.next[conversation.client],
        dpkt.tcp.TH_ACK | dpkt.tcp.TH_PUSH,
        data,
    )


def test_a_longer_retransmission_of_a_waiting_segment_is_not_counted_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A small bound, so that bytes counted but no longer held would reach it within a few rounds.
    monkeypatch.setattr(tcp, "_MAX_PENDING_BYTES", 4096)
    rounds = 60
    conversation = Conversation().handshake()
    conversation.send(True, REQUEST)
    conversation.send(False, RESPONSE)
    sent = [bytes([i % 251]) * 95 for i in range(rounds * 12)]  # 97-byte frames
    stream = b"".join(server_frame(Opcode.BINARY, payload) for payload in sent)
    base = conversation.next[conversation.server]

    def segment(offset: int, data: bytes) -> Packet:
        return server_segment(conversation, base, offset, data)

    position = 0
    for _ in range(rounds):
        # Out of order: B waits for the hole A; B again, longer, replaces it; then A fills the hole.
        hole, after = position, position + 50
        conversation.packets += [
            segment(after, stream[after : after + 1000]),
            segment(after, stream[after : after + 1100]),
            segment(hole, stream[hole:after]),
        ]
        position = after + 1100
    conversation.packets.append(segment(position, stream[position:]))
    [connection] = dissect(write_capture(tmp_path / "c.pcap", conversation.packets)).connections
    notes = connection.tcp_notes() + connection.observer.notes
    assert not any("missing" in note or "gap" in note for note in notes), notes
    assert [f.payload for f in connection.frames if f.direction == "server-to-client"] == sent


def test_many_segments_behind_one_hole_are_released_in_linear_time(tmp_path: Path) -> None:
    count = 20_000
    conversation = Conversation().handshake()
    conversation.send(True, REQUEST)
    conversation.send(False, RESPONSE)
    sent = [b"msg %06d" % i for i in range(count + 1)]
    stream = b"".join(server_frame(Opcode.TEXT, text) for text in sent)
    segments = conversation.send(False, stream, segment=12)
    conversation.packets.remove(segments[0])
    conversation.packets.append(segments[0])  # the hole is filled last: everything waited for it
    path = write_capture(tmp_path / "c.pcap", conversation.packets)
    start = time.perf_counter()
    [connection] = dissect(path).connections
    elapsed = time.perf_counter() - start
    assert [f.text for f in connection.frames] == [text.decode() for text in sent]
    assert elapsed < 3.0, f"{len(segments)} segments behind a hole took {elapsed:.1f} s"


def test_a_hole_that_never_fills_releases_what_waits_behind_it_in_order() -> None:
    half = tcp.HalfStream()
    data = bytes(range(256)) * 40
    pieces = [data[i : i + 10] for i in range(0, len(data), 10)]

    def segment(number: int, offset: int, payload: bytes) -> Segment:
        return Segment(number, 0.0, ("a", 1), ("b", 2), 1000 + offset, 0, 0x18, payload)

    out = half.add(segment(1, 0, pieces[0]))
    # Every other piece from the far end backwards, then the rest forwards: holes everywhere.
    order = list(range(len(pieces) - 1, 1, -2)) + list(range(2, len(pieces), 2))
    for number, index in enumerate(order, start=2):
        out += half.add(segment(number, index * 10, pieces[index]))
    out += half.flush()
    gaps = [item for item in out if isinstance(item, tcp.Gap)]
    assert [gap.size for gap in gaps] == [10]  # piece 1 alone never came
    delivered = b"".join(item.data for item in out if isinstance(item, tcp.Data))
    assert delivered == data[:10] + data[20:]


def test_overlapping_copies_keep_the_in_sequence_bytes_and_differing_ones_are_noted(
    tmp_path: Path,
) -> None:
    # Wireshark (tshark: "overlap conflict") keeps the bytes passed on in sequence: the first copy
    # captured, or, when a later-starting segment waited out of order, the earlier one that filled the
    # hole before it. Copies that agree are plain retransmissions.
    conversation = Conversation().handshake()
    conversation.send(True, REQUEST)
    conversation.send(False, RESPONSE)
    base = conversation.next[conversation.server]

    def segment(offset: int, data: bytes) -> Packet:
        return server_segment(conversation, base, offset, data)

    first, second, third = (server_frame(Opcode.BINARY, bytes([n]) * 200) for n in b"ABC")
    altered = [bytearray(frame) for frame in (first, second)]
    for frame in altered:
        frame[50:100] = b"Z" * 50
    at = len(first)
    conversation.packets += [
        # in order, then a copy overlapping it with other bytes: the first copy stays
        segment(0, first[:100]),
        segment(50, bytes(altered[0][50:150])),
        segment(150, first[150:]),
        # out of order: the altered copy waits, the earlier segment fills the hole and stays
        segment(at + 50, bytes(altered[1][50:150])),
        segment(at, second[:100]),
        segment(at + 150, second[150:]),
        # a retransmission with the same bytes is no conflict
        segment(2 * at, third),
        segment(2 * at, third),
    ]
    [connection] = dissect(write_capture(tmp_path / "c.pcap", conversation.packets)).connections
    assert [f.payload for f in connection.frames] == [b"A" * 200, b"B" * 200, b"C" * 200]
    first_conflict = 7  # the 3 of the TCP handshake, request, response, then the first frame's
    assert (
        f"from 10.0.0.2:8080: 2 overlapping segment(s) carry other bytes than the copy kept (an "
        f"overlap conflict; the first in packet {first_conflict})"
    ) in connection.tcp_notes()


def test_a_direction_keeps_at_most_1_kib_of_what_it_passed_on() -> None:
    # What an overlapping copy is compared with: the latest bytes, not the last segment (a capture of
    # thousands of connections that never send FIN held a whole segment for each), and nothing after
    # a reset.
    half = tcp.HalfStream()
    ends = (("10.0.0.1", 1), ("10.0.0.2", 2))
    half.add(Segment(1, 0.0, *ends, 1000, 0, 0x02, b""))  # SYN
    big = bytes(range(256)) * 160  # 40 KiB
    [data] = half.add(Segment(2, 0.1, *ends, 1001, 0, 0x18, big))
    assert isinstance(data, tcp.Data) and data.data == big
    assert half._last == big[-1024:]
    # A retransmission of the tail with other bytes is still told apart.
    half.add(Segment(3, 0.2, *ends, 1001 + len(big) - 100, 0, 0x18, b"\0" * 100))
    assert (half.overlap_conflicts, half.conflict_packet) == (1, 3)
    # Small segments add to what is kept: the latest 1 KiB, across segments.
    half.add(Segment(4, 0.3, *ends, 1001 + len(big), 0, 0x18, b"abcd"))
    assert half._last == big[-1020:] + b"abcd"
    # The same last segment again, but with other bytes before it: compared too.
    half.add(Segment(5, 0.4, *ends, 1001 + len(big) - 10, 0, 0x18, b"\0" * 10 + b"abcd"))
    assert half.overlap_conflicts == 2  # a difference before the last segment is seen too
    half.add(Segment(6, 0.5, *ends, 1001 + len(big) + 4, 0, 0x04, b""))  # RST
    assert half._last == b""
