"""TCP stream reassembly for captures: segments in, each direction's bytes out in order.

Owns: telling TCP connections apart (the 4-tuple, and a new SYN on a reused one), putting each direction's
segments back in sequence order (out-of-order segments wait, retransmitted bytes are dropped, sequence
numbers wrap), and reporting gaps: bytes the capture never saw. The copy of a byte passed on in sequence
wins: the first one captured, unless an out-of-order segment waited and an earlier one overlapping it filled
the hole (then the earlier one's, as Wireshark keeps). Overlapping copies that differ are counted (tshark's
"overlap conflict").

Must not know: what the bytes mean (`websocket` does).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from upwire.wire.capture import Segment

__all__ = ["Data", "Gap", "HalfStream", "StreamTable", "TcpStream"]

_SYN = 0x02
_FIN = 0x01
_RST = 0x04
_ACK = 0x10
_WRAP = 1 << 32
# Out-of-order bytes kept while waiting for a hole to be filled; past this the hole is a gap.
_MAX_PENDING_BYTES = 16 << 20

Endpoint = tuple[str, int]


def format_endpoint(host: str, port: int) -> str:
    """ "host:port", an IPv6 address in brackets (as in a URI)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class Data:
    """Bytes that continue a direction in order; `time` and `packet` are those of the segment that brought them."""

    data: bytes
    time: float
    packet: int


# The most bytes of a direction kept to compare an overlapping copy with (its latest ones).
_COMPARED = 1024


@dataclass(frozen=True, slots=True)
class Gap:
    """Bytes of a direction that are missing from the capture.

    `snapped`: they are the tail of packet `packet`, which the capture cut (its snap length); else
    segments the capture never saw.
    """

    size: int
    time: float
    packet: int
    snapped: bool = False


Delivery = Data | Gap


@dataclass(slots=True)
class HalfStream:
    """One direction of a TCP connection being put back in order."""

    syn_seen: bool = False
    fin_seen: bool = False
    fin_packet: int = 0  # the packet number of this direction's first FIN (0: none seen)
    rst_seen: bool = False
    started: bool = False
    retransmitted_bytes: int = 0
    out_of_order_segments: int = 0  # segments that waited for a hole, and got it filled
    gap_bytes: int = 0
    snapped_packets: int = 0  # packets whose tail the capture cut (its snap length)
    overlap_conflicts: int = 0  # segments whose overlapping bytes differ from the copy kept
    conflict_packet: int = 0  # the first such segment's packet
    _next_seq: int = 0  # the 32-bit sequence number of the next byte expected
    _next_offset: int = 0  # the same byte's offset from the direction's first byte
    _pending: dict[int, tuple[bytes, float, int]] = field(default_factory=dict)
    # The offsets of `_pending` as a heap: a hole's release takes the lowest each time, and a rescan of
    # every waiting segment per release made a long wait quadratic.
    _waiting: list[int] = field(default_factory=list)
    _pending_bytes: int = 0  # exactly the bytes `_pending` holds
    # The last bytes passed on (ending at `_next_offset`), at most `_COMPARED` of them, to compare an
    # overlapping copy with: a capture of many connections holds that much per direction, not a segment.
    _last: bytes = b""

    def add(self, segment: Segment) -> list[Delivery]:
        """Take one segment of this direction; return what it makes deliverable, in order."""
        if segment.flags & _SYN and not self.started:
            self.syn_seen = True
            self.started = True
            self._next_seq = (segment.seq + 1) % _WRAP
            # A SYN repeated (retransmitted) changes nothing.
        if segment.flags & _FIN:
            if not self.fin_seen:
                self.fin_packet = segment.number
            self.fin_seen = True
        if segment.flags & _RST:
            self.rst_seen = True
            self._last = b""
        length = len(segment.payload) + segment.missing
        if length == 0:
            return []
        # Data in a SYN (TCP Fast Open, RFC 7413) starts after the SYN's own sequence number.
        seq = (segment.seq + 1) % _WRAP if segment.flags & _SYN else segment.seq
        if not self.started:
            # The capture started after this direction's SYN: its first captured byte is offset 0.
            self.started = True
            self._next_seq = seq
        offset = self._offset(seq)
        out: list[Delivery] = []
        if offset > self._next_offset:
            self._keep(offset, segment)
            if self._pending_bytes > _MAX_PENDING_BYTES:
                out += self._skip_hole()
            return out
        self._deliver(offset, segment.payload, segment.missing, segment.time, segment.number, out)
        # Segments that waited for this one complete now: they count as this packet's, as in Wireshark.
        self._drain(out, (segment.time, segment.number))
        if segment.flags & _FIN:
            self._last = b""  # the direction has ended: nothing more to compare with
        return out

    def flush(self) -> list[Delivery]:
        """The capture has ended: deliver what waits behind holes, reporting each hole as a gap."""
        out: list[Delivery] = []
        while self._pending:
            out += self._skip_hole()
        return out

    def _offset(self, seq: int) -> int:
        delta = (seq - self._next_seq) % _WRAP
        if delta >= _WRAP // 2:
            delta -= _WRAP
        return self._next_offset + delta

    def _keep(self, offset: int, segment: Segment) -> None:
        known = self._pending.get(offset)
        if known is not None:
            common = min(len(known[0]), len(segment.payload))
            if known[0][:common] != segment.payload[:common]:
                self._conflict(segment.number)
        if known is not None and len(known[0]) >= len(segment.payload):
            self.retransmitted_bytes += len(segment.payload)
            return
        if known is None:
            heapq.heappush(self._waiting, offset)
        else:
            # The longer copy replaces the one that waited: only its bytes are held from now on.
            self.retransmitted_bytes += len(known[0])
            self._pending_bytes -= len(known[0])
        self._pending[offset] = (segment.payload, segment.time, segment.number)
        self._pending_bytes += len(segment.payload)
        # A truncated out-of-order segment's missing tail becomes a gap when the next bytes are reached.

    def _deliver(
        self,
        offset: int,
        payload: bytes,
        missing: int,
        time: float,
        packet: int,
        out: list[Delivery],
    ) -> None:
        skip = self._next_offset - offset  # bytes already delivered: a retransmission or an overlap
        if skip > 0:
            # The bytes this copy shares with the last ones passed on, compared where both are known.
            last_start = self._next_offset - len(self._last)
            start, end = max(offset, last_start), min(offset + len(payload), self._next_offset)
            if start < end and (
                payload[start - offset : end - offset]
                != self._last[start - last_start : end - last_start]
            ):
                self._conflict(packet)
        if skip >= len(payload) + missing:
            self.retransmitted_bytes += len(payload)
            return
        if skip > 0:
            self.retransmitted_bytes += min(skip, len(payload))
        fresh = payload[skip:] if skip < len(payload) else b""
        if fresh:
            out.append(Data(fresh, time, packet))
            # The latest bytes passed on, at most _COMPARED: a copy of a tail, not the segment.
            last = fresh if len(fresh) >= _COMPARED else self._last + fresh
            self._last = last[-_COMPARED:]
        lost = missing - max(skip - len(payload), 0)
        if lost > 0:
            self._last = b""
            out.append(Gap(lost, time, packet, snapped=True))
            self.gap_bytes += lost
            self.snapped_packets += 1
        advance = len(fresh) + max(lost, 0)
        self._next_offset += advance
        self._next_seq = (self._next_seq + advance) % _WRAP

    def _drain(self, out: list[Delivery], now: tuple[float, int] | None = None) -> None:
        """Deliver the waiting segments the stream has reached, as of packet `now` when one filled a hole."""
        waiting = self._waiting
        while waiting and waiting[0] <= self._next_offset:
            offset = heapq.heappop(waiting)
            payload, time, packet = self._pending.pop(offset)
            self._pending_bytes -= len(payload)
            if now is not None:
                # A hole filled: this segment came out of order and is put back in order. (Without
                # `now`, the hole before it never filled: it follows a gap.)
                time, packet = now
                self.out_of_order_segments += 1
            self._deliver(offset, payload, 0, time, packet, out)

    def _conflict(self, packet: int) -> None:
        self.overlap_conflicts += 1
        if not self.conflict_packet:
            self.conflict_packet = packet

    def _skip_hole(self) -> list[Delivery]:
        first = self._waiting[0]
        _, time, packet = self._pending[first]
        size = first - self._next_offset
        out: list[Delivery] = []
        if size > 0:
            self._last = b""
            out.append(Gap(size, time, packet))
            self.gap_bytes += size
            self._next_offset = first
            self._next_seq = (self._next_seq + size) % _WRAP
        self._drain(out)
        return out


@dataclass(slots=True)
class TcpStream:
    """One TCP connection: its index (as Wireshark's `tcp.stream` counts, from 0) and both directions.

    `a` is the endpoint that sent the SYN, or the first one seen sending when the capture has no SYN.
    """

    index: int
    a: Endpoint
    b: Endpoint
    first_time: float
    from_a: HalfStream = field(default_factory=HalfStream)
    from_b: HalfStream = field(default_factory=HalfStream)
    closed: bool = False
    isn: int | None = None  # the sequence number of the SYN that opened it, when the capture has it
    # Without it (the capture missed the opening): each direction's first sequence number less one, the
    # number its SYN had, as Wireshark takes it.
    bases: dict[Endpoint, int] = field(default_factory=dict)

    @property
    def reset(self) -> bool:
        """True when the capture holds a RST of this connection."""
        return self.from_a.rst_seen or self.from_b.rst_seen

    @property
    def started_mid_connection(self) -> bool:
        """True when the capture did not see this connection's opening SYN."""
        return not self.from_a.syn_seen

    def half(self, sender: Endpoint) -> HalfStream:
        """The direction that `sender` sends."""
        return self.from_a if sender == self.a else self.from_b


class StreamTable:
    """Assign segments to TCP streams, numbered in order of first appearance."""

    def __init__(self) -> None:
        self._by_key: dict[frozenset[Endpoint], TcpStream] = {}
        self.streams: list[TcpStream] = []

    def lookup(self, segment: Segment) -> tuple[TcpStream, bool]:
        """Return the stream of `segment` and whether the segment opened a new one."""
        key = frozenset((segment.src, segment.dst))
        stream = self._by_key.get(key)
        is_syn = segment.flags & (_SYN | _ACK) == _SYN
        if stream is not None:
            if stream.from_a.fin_seen and stream.from_b.fin_seen:
                stream.closed = True  # both FINs seen: a SYN now opens another connection
            # A SYN with another initial sequence number than the connection's opens a new one (the
            # ports reused), closed or not, as Wireshark's tcp.stream counts; one with the same number
            # is the same connection's, sent again or captured twice (`-i lo -i any`).
            if stream.isn is not None:
                reused = is_syn and segment.seq != stream.isn
            else:
                base = stream.bases.get(segment.src)
                reused = is_syn and segment.seq != base
                if base is None and not is_syn:
                    stream.bases[segment.src] = (segment.seq - 1) % (1 << 32)
            if not reused:
                if segment.flags & _RST:
                    stream.closed = True
                return stream, False
        a, b = segment.src, segment.dst
        if not is_syn and segment.flags & _SYN:
            a, b = segment.dst, segment.src  # a SYN-ACK: the other side opened the connection
        stream = TcpStream(index=len(self.streams), a=a, b=b, first_time=segment.time)
        if is_syn:
            stream.isn = segment.seq
        elif segment.flags & _SYN:
            stream.isn = (segment.ack - 1) % (1 << 32)  # the SYN's, which the SYN-ACK acknowledges
        else:
            stream.bases[segment.src] = (segment.seq - 1) % (1 << 32)
        self._by_key[key] = stream
        self.streams.append(stream)
        return stream, True
