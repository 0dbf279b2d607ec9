"""Reading packet captures: classic pcap and pcapng files, decoded down to TCP segments.

Owns: the capture file formats (classic pcap through dpkt; pcapng block by block here, so that each
interface keeps its own link type and time resolution), link types (BSD loopback, Linux cooked v1 and v2, Ethernet,
raw IP), IPv4 and IPv6, and turning each TCP packet into a `Segment`. Damaged files and packets become
`problems`, never exceptions.

IP fragments are put back together by `ipfrag`.

Must not know: TCP reassembly (`tcp`) or WebSocket (`websocket`).
"""

from __future__ import annotations

import itertools
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any, NamedTuple

from upwire.wire.ipfrag import Reassembler

__all__ = ["CaptureError", "Segment", "read_segments"]

# Link-layer header types (https://www.tcpdump.org/linktypes.html).
_DLT_NULL = 0
_DLT_EN10MB = 1
_DLT_RAW = 12
_DLT_LOOP = 108
_DLT_LINKTYPE_RAW = 101
_DLT_LINUX_SLL = 113
_DLT_IPV4 = 228
_DLT_IPV6 = 229
_DLT_LINUX_SLL2 = 276


class CaptureError(Exception):
    """The file is not a capture this reader understands (not pcap/pcapng, or an unknown link type)."""


@dataclass(frozen=True, slots=True)
class Segment:
    """One captured TCP segment.

    Attributes:
        number: the packet's number in the capture, from 1 (as Wireshark counts).
        time: the capture time, seconds since the epoch.
        src, dst: (address, port) of the sender and the receiver.
        seq, ack: TCP sequence and acknowledgment numbers.
        flags: TCP flags (SYN = 0x02, FIN = 0x01, RST = 0x04, ACK = 0x10).
        payload: the TCP payload bytes that were captured.
        missing: payload bytes the packet carried but the capture did not keep (snap length, truncation).
    """

    number: int
    time: float
    src: tuple[str, int]
    dst: tuple[str, int]
    seq: int
    ack: int
    flags: int
    payload: bytes
    missing: int = 0


def _dpkt() -> Any:
    try:
        import dpkt
    except ImportError:  # pragma: no cover - dpkt is in the `wire` and `test` extras
        raise CaptureError(
            "reading captures needs dpkt: pip install 'upwire[wire]' (or pip install dpkt)"
        ) from None
    return dpkt


@dataclass(slots=True)
class ReadStats:
    """What `read_segments` read: every packet record, TCP or not."""

    packets: int = 0


def read_segments(
    file: IO[bytes], problems: list[str], stats: ReadStats | None = None
) -> Iterator[Segment]:
    """Yield the TCP segments of a pcap or pcapng capture, in capture order.

    Args:
        file: the capture, opened in binary mode.
        problems: receives one sentence per damaged part of the file (truncated records, undecodable
            packets); reading stops at a damaged record and keeps what came before.
        stats: counts the packet records read, when given.

    Raises:
        CaptureError: when the file is neither pcap nor pcapng, or its link type is not supported.
    """
    dpkt = _dpkt()
    head = file.read(4)
    file.seek(0)
    if not head:
        raise CaptureError("empty file, not a pcap or pcapng capture")
    watched = _ShortReadDetector(file)
    packets: Iterator[tuple[int, float, bytes]]
    if head == b"\x0a\x0d\x0d\x0a":
        packets = _pcapng_packets(watched)
        try:
            first = next(packets)
        except StopIteration:
            return
        except CaptureError:
            raise
        except Exception as exc:
            # A whole section header came first (else CaptureError): the file is a pcapng capture,
            # damaged before its first packet, and reported as such below.
            packets = _raising(exc)
        else:
            packets = itertools.chain([first], packets)
    else:
        try:
            reader = dpkt.pcap.Reader(watched)
        except (ValueError, dpkt.UnpackError, struct.error) as exc:
            raise CaptureError(f"not a pcap or pcapng capture ({_why(exc)})") from None
        _check_linktype(reader.datalink())
        # A record's length is read before its bytes: one past any packet is damage, not data to read.
        watched.max_record = max(reader.snaplen, _MAX_PACKET)
        watched.snaplen = reader.snaplen
        packets = ((reader.datalink(), float(ts), bytes(data)) for ts, data in reader)
    number = 0
    cut = 0  # the record the file ends in, when it came whole enough to be read (its bytes cut)
    undecodable = 0
    fragments = Reassembler()
    while True:
        try:
            item = next(packets)
        except StopIteration:
            break
        except CaptureError:
            raise
        except Exception as exc:  # dpkt raises assorted errors on a damaged record
            if watched.short_read:
                pass  # the file just ends: said once, below
            elif isinstance(exc, _Damaged):
                problems.append(
                    f"the capture is damaged after packet {number} ({exc}); decoding what came before"
                )
            else:
                problems.append(
                    f"the capture is damaged or truncated after packet {number} "
                    f"({type(exc).__name__}: {_why(exc)}); decoding what came before"
                )
            break
        number += 1
        if watched.short_read and not cut:
            cut = number  # a classic pcap record whose bytes the file's end cut (dpkt yields it)
        if stats is not None:
            stats.packets = number
        linktype, timestamp, data = item
        if linktype not in _LINKTYPES:
            undecodable += 1
            continue
        try:
            segment = _decode(dpkt, linktype, number, timestamp, data, fragments)
        except (dpkt.UnpackError, struct.error, ValueError, IndexError, AttributeError, KeyError):
            # dpkt's errors on a packet it cannot read (AttributeError for some IPv6 header chains).
            undecodable += 1
            continue
        if segment is not None:
            yield segment
    if watched.short_read:
        # Else the file ends inside the next record's header (or a pcapng block), not yielded.
        problems.append(
            f"the capture is truncated: it ends in the middle of packet record {cut or number + 1}; "
            "decoding what came before"
        )
    if undecodable:
        problems.append(f"{undecodable} packet(s) could not be decoded and were skipped")
    fragments.finish()
    if fragments.incomplete:
        problems.append(
            f"{fragments.incomplete} fragmented IP datagram(s) could not be put back together "
            "(fragments missing, too old or malformed)"
        )


_LINKTYPES = frozenset(
    {
        _DLT_NULL,
        _DLT_EN10MB,
        _DLT_RAW,
        _DLT_LOOP,
        _DLT_LINKTYPE_RAW,
        _DLT_LINUX_SLL,
        _DLT_IPV4,
        _DLT_IPV6,
        _DLT_LINUX_SLL2,
    }
)


def _check_linktype(linktype: int) -> None:
    if linktype not in _LINKTYPES:
        raise CaptureError(
            f"link type {linktype} is not supported "
            "(supported: loopback, Linux cooked v1/v2, Ethernet, raw IP)"
        )


def _why(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


class _Damaged(ValueError):
    """A pcapng block that cannot be read."""


def _pcapng_packets(file: Any) -> Iterator[tuple[int, float, bytes]]:
    """Yield (link type, time, data) for each packet of a pcapng file (the pcapng draft, IETF opsawg).

    Every section and every interface counts: each interface's link type and time resolution apply to
    its own packets (Enhanced, Simple and obsolete Packet Blocks); other blocks are skipped.

    Raises:
        CaptureError: the file does not start with a section header, or no interface has a link type
            this reader supports.
        _Damaged: a block is cut short or inconsistent (what came before stands).
    """
    order = "<"

    def damaged(what: str) -> Exception:
        # Before a whole section header, the file is not a pcapng capture at all.
        return CaptureError(f"not a pcap or pcapng capture ({what})") if first else _Damaged(what)

    interfaces: list[tuple[int, int, float]] = []  # (link type, snap length, seconds per tick)
    usable = described = False
    first = True
    while True:
        head = file.read(8)
        if not head:
            if not described:
                raise CaptureError("not a usable pcapng capture (no interface is described)")
            return
        if len(head) < 8:
            raise damaged("block header cut short")
        kind = struct.unpack(order + "I", head[:4])[0]
        if head[:4] == b"\x0a\x0d\x0d\x0a":  # a section header: the byte order may change
            magic = file.read(4)
            if magic == b"\x4d\x3c\x2b\x1a":
                order = "<"
            elif magic == b"\x1a\x2b\x3c\x4d":
                order = ">"
            else:
                raise damaged("section header without its byte-order magic")
            length = struct.unpack(order + "I", head[4:8])[0]
            if length < 28 or length % 4 or length > _MAX_BLOCK:
                raise damaged(f"section header of {length} bytes")
            body = magic + file.read(length - 16)
            interfaces = []
        else:
            if first:
                raise CaptureError("not a pcap or pcapng capture (no section header)")
            length = struct.unpack(order + "I", head[4:8])[0]
            if length < 12 or length % 4 or length > _MAX_BLOCK:
                raise damaged(f"block of {length} bytes")
            body = file.read(length - 12)
        trailer = file.read(4)
        if len(body) < length - 12 or len(trailer) < 4:
            raise damaged("block cut short")
        if struct.unpack(order + "I", trailer)[0] != length:
            raise damaged("block lengths disagree")
        if head[:4] == b"\x0a\x0d\x0d\x0a":
            first = False
            continue
        if kind == 1:  # Interface Description Block
            linktype, _, snaplen = struct.unpack(order + "HHI", body[:8])
            interfaces.append((linktype, snaplen, _tick(body[8:], order)))
            usable = usable or linktype in _LINKTYPES
            described = True
        elif kind in (6, 2):  # Enhanced Packet Block; the obsolete Packet Block
            if kind == 6:
                iface, high, low, caplen = struct.unpack(order + "IIII", body[:16])
            else:
                iface, _, high, low, caplen = struct.unpack(order + "HHIII", body[:16])
            if iface >= len(interfaces):
                raise damaged(f"a packet of interface {iface}, which is not described")
            linktype, _, tick = interfaces[iface]
            if not usable:
                _check_linktype(linktype)
            yield linktype, ((high << 32) | low) * tick, bytes(body[20 : 20 + caplen])
        elif kind == 3:  # Simple Packet Block: interface 0, no time
            if not interfaces:
                raise damaged("a packet before any interface is described")
            linktype, snaplen, _ = interfaces[0]
            if not usable:
                _check_linktype(linktype)
            size = struct.unpack(order + "I", body[:4])[0]
            if snaplen:
                size = min(size, snaplen)
            yield linktype, 0.0, bytes(body[4 : 4 + size])


def _raising(error: Exception) -> Iterator[tuple[int, float, bytes]]:
    """A packet iterator that raises `error` at once."""
    raise error
    yield  # a generator


_MAX_BLOCK = 1 << 28  # no real block is near this; a larger length is damage, not data
# The largest packet a capture holds (Wireshark's WTAP_MAX_PACKET_SIZE_STANDARD, tcpdump's default snap
# length): a classic pcap record claiming more than this and than the file's snap length is damage.
_MAX_PACKET = 262144


def _tick(options: bytes, order: str) -> float:
    """Seconds per timestamp unit, from an interface's `if_tsresol` option (default: microseconds)."""
    at = 0
    while at + 4 <= len(options):
        code, size = struct.unpack(order + "HH", options[at : at + 4])
        if code == 0:
            break
        if code == 9 and size >= 1:
            value = options[at + 4]
            return 2.0 ** -(value & 0x7F) if value & 0x80 else 10.0**-value
        at += 4 + (size + 3) // 4 * 4
    return 1e-6


class _ShortReadDetector:
    """A file that remembers whether a read returned fewer bytes than asked (a record cut short)."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file
        self.short_read = False
        self.max_record = 0  # the most bytes one read may ask for (0: any): a pcap record's limit
        self.snaplen = 0

    def read(self, size: int = -1) -> bytes:
        if self.max_record and size > self.max_record:
            # A classic pcap record's length, read before its bytes (dpkt reads headers of 16 bytes).
            raise _Damaged(
                f"the next packet record claims {size} bytes; no packet of this file can have more "
                f"than {self.max_record} (its snap length is {self.snaplen})"
            )
        data = self._file.read(size)
        if 0 < len(data) < size:
            self.short_read = True
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


def _decode(
    dpkt: Any, linktype: int, number: int, time: float, data: bytes, fragments: Reassembler
) -> Segment | None:
    raw = _ip_bytes(linktype, data)
    if raw is None:
        return None  # not IP
    fragment = _fragment(raw)
    if fragment is not None:
        # Read from the bytes here: dpkt reads a fragment's payload as if it began with TCP.
        done = fragments.add(
            fragment.key, fragment.offset, fragment.more, fragment.payload, time, fragment.protocol
        )
        if done is None:
            return None
        family, src, dst = fragment.family, fragment.src, fragment.dst
        tcp_bytes = _tcp_after(done[0], done[1], family)
        if tcp_bytes is None:
            return None
        tcp = dpkt.tcp.TCP(tcp_bytes)
        ip_payload_length = len(tcp_bytes)
    else:
        ip = _ip_by_version(dpkt, raw)
        if ip is None or ip.p != dpkt.ip.IP_PROTO_TCP:
            return None  # not IP, or not TCP
        if isinstance(ip, dpkt.ip.IP):
            family = socket.AF_INET
            ip_payload_length = ip.len - ip.hl * 4
        else:
            # `p` is the protocol after any extension headers (dpkt walks them), `nxt` the first one's.
            family = socket.AF_INET6
            ip_payload_length = ip.plen - sum(
                len(bytes(h)) for h in ip.extension_hdrs.values() if h
            )
        src, dst = ip.src, ip.dst
        tcp = ip.data
        if not isinstance(tcp, dpkt.tcp.TCP):
            return None
    payload = bytes(tcp.data)
    expected = ip_payload_length - tcp.off * 4
    missing = max(expected - len(payload), 0)
    if len(payload) > expected >= 0:
        payload = payload[:expected]  # Ethernet padding after a short IP packet
    return Segment(
        number=number,
        time=time,
        src=(socket.inet_ntop(family, src), tcp.sport),
        dst=(socket.inet_ntop(family, dst), tcp.dport),
        seq=tcp.seq,
        ack=tcp.ack,
        flags=tcp.flags,
        payload=payload,
        missing=missing,
    )


_TCP = 6
# IPv6 extension headers that may come before a Fragment header or TCP (RFC 8200 §4.1): Hop-by-Hop
# Options, Routing, Destination Options; each is (its length field + 1) × 8 bytes.
_IPV6_EXTENSIONS = frozenset({0, 43, 60})
_IPV6_FRAGMENT = 44
_VLAN_TAGS = frozenset({0x8100, 0x88A8, 0x9100})


def _ip_bytes(linktype: int, data: bytes) -> bytes | None:
    """The IP packet inside a link-layer frame, as captured, or None for other protocols."""
    if linktype in (_DLT_NULL, _DLT_LOOP):
        return data[4:]
    if linktype in (_DLT_RAW, _DLT_LINKTYPE_RAW, _DLT_IPV4, _DLT_IPV6):
        return data
    if linktype == _DLT_EN10MB:
        at = 12
        while int.from_bytes(data[at : at + 2], "big") in _VLAN_TAGS:
            at += 4
        ethertype, at = int.from_bytes(data[at : at + 2], "big"), at + 2
    elif linktype == _DLT_LINUX_SLL:
        ethertype, at = int.from_bytes(data[14:16], "big"), 16
    elif linktype == _DLT_LINUX_SLL2:
        ethertype, at = int.from_bytes(data[0:2], "big"), 20
    else:
        return None
    return data[at:] if ethertype in (0x0800, 0x86DD) else None


class _Fragment(NamedTuple):
    family: int
    src: bytes
    dst: bytes
    # The datagram's: version, addresses, identification (and IPv4's protocol).
    key: tuple[object, ...]
    offset: int
    more: bool  # the More Fragments flag
    protocol: int  # what the payload is: IPv4's protocol, IPv6's Fragment header's Next Header
    payload: bytes


def _fragment(raw: bytes) -> _Fragment | None:
    """The fragment in an IP packet, or None when it is a whole datagram.

    A fragment cut short by the capture is None too: its datagram stays incomplete.
    """
    if len(raw) < 20:
        return None
    version = raw[0] >> 4
    if version == 4:
        flags_offset = int.from_bytes(raw[6:8], "big")
        more, offset = bool(flags_offset & 0x2000), (flags_offset & 0x1FFF) * 8
        if not more and not offset:
            return None
        header, total = (raw[0] & 0x0F) * 4, int.from_bytes(raw[2:4], "big")
        if header < 20 or total < header or len(raw) < total:
            return None
        src, dst = raw[12:16], raw[16:20]
        key = (4, src, dst, raw[4:6], raw[9])
        return _Fragment(socket.AF_INET, src, dst, key, offset, more, raw[9], raw[header:total])
    if version != 6 or len(raw) < 40:
        return None
    end = 40 + int.from_bytes(raw[4:6], "big")
    next_header, at = raw[6], 40
    while next_header in _IPV6_EXTENSIONS and at + 2 <= end:
        next_header, at = raw[at], at + (raw[at + 1] + 1) * 8
    if next_header != _IPV6_FRAGMENT or at + 8 > end or len(raw) < end:
        return None
    flags_offset = int.from_bytes(raw[at + 2 : at + 4], "big")
    src, dst = raw[8:24], raw[24:40]
    return _Fragment(
        socket.AF_INET6,
        src,
        dst,
        (6, src, dst, raw[at + 4 : at + 8]),
        flags_offset & 0xFFF8,
        bool(flags_offset & 1),
        raw[at],
        raw[at + 8 : end],
    )


def _tcp_after(protocol: int, payload: bytes, family: int) -> bytes | None:
    """The TCP segment in a reassembled payload: after IPv6 extension headers, if any; None if not TCP."""
    at = 0
    if family == socket.AF_INET6:
        while protocol in _IPV6_EXTENSIONS and at + 2 <= len(payload):
            protocol, at = payload[at], at + (payload[at + 1] + 1) * 8
    return payload[at:] if protocol == _TCP else None


def _ip_by_version(dpkt: Any, data: bytes) -> Any:
    if not data:
        return None
    version = data[0] >> 4
    if version == 4:
        return dpkt.ip.IP(data)
    if version == 6:
        return dpkt.ip6.IP6(data)
    return None
