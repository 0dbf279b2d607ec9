"""Reading packet captures: classic pcap and pcapng files, decoded down to TCP segments with dpkt.

Owns: the capture file format (through dpkt), link types (BSD loopback, Linux cooked v1 and v2, Ethernet,
raw IP), IPv4 and IPv6, and turning each TCP packet into a `Segment`. Damaged files and packets become
`problems`, never exceptions.

Must not know: TCP reassembly (`tcp`) or WebSocket (`websocket`).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

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


def read_segments(file: IO[bytes], problems: list[str]) -> Iterator[Segment]:
    """Yield the TCP segments of a pcap or pcapng capture, in capture order.

    Args:
        file: the capture, opened in binary mode.
        problems: receives one sentence per damaged part of the file (truncated records, undecodable
            packets); reading stops at a damaged record and keeps what came before.

    Raises:
        CaptureError: when the file is neither pcap nor pcapng, or its link type is not supported.
    """
    dpkt = _dpkt()
    head = file.read(4)
    file.seek(0)
    if not head:
        raise CaptureError("empty file, not a pcap or pcapng capture")
    watched = _ShortReadDetector(file)
    try:
        if head == b"\x0a\x0d\x0d\x0a":
            reader = dpkt.pcapng.Reader(watched)
        else:
            reader = dpkt.pcap.Reader(watched)
    except (ValueError, dpkt.UnpackError, struct.error) as exc:
        raise CaptureError(f"not a pcap or pcapng capture ({exc or 'unreadable header'})") from None
    linktype = reader.datalink()
    if linktype not in (
        _DLT_NULL,
        _DLT_EN10MB,
        _DLT_RAW,
        _DLT_LOOP,
        _DLT_LINKTYPE_RAW,
        _DLT_LINUX_SLL,
        _DLT_IPV4,
        _DLT_IPV6,
        _DLT_LINUX_SLL2,
    ):
        raise CaptureError(
            f"link type {linktype} is not supported "
            "(supported: loopback, Linux cooked v1/v2, Ethernet, raw IP)"
        )
    number = 0
    undecodable = 0
    packets = iter(reader)
    while True:
        try:
            item = next(packets)
        except StopIteration:
            break
        except Exception as exc:  # dpkt raises assorted errors on a damaged record
            problems.append(
                f"the capture is damaged or truncated after packet {number} "
                f"({type(exc).__name__}: {exc or 'record cut short'}); decoding what came before"
            )
            break
        number += 1
        timestamp, data = item
        try:
            segment = _decode(dpkt, linktype, number, float(timestamp), bytes(data))
        except (dpkt.UnpackError, struct.error, ValueError, IndexError):
            undecodable += 1
            continue
        if segment is not None:
            yield segment
    if watched.short_read:
        problems.append(
            f"the capture is truncated: it ends in the middle of packet record {number}; "
            "decoding what came before"
        )
    if undecodable:
        problems.append(f"{undecodable} packet(s) could not be decoded and were skipped")


class _ShortReadDetector:
    """A file that remembers whether a read returned fewer bytes than asked (a record cut short)."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file
        self.short_read = False

    def read(self, size: int = -1) -> bytes:
        data = self._file.read(size)
        if 0 < len(data) < size:
            self.short_read = True
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


def _decode(dpkt: Any, linktype: int, number: int, time: float, data: bytes) -> Segment | None:
    ip = _network_layer(dpkt, linktype, data)
    if ip is None:
        return None
    if isinstance(ip, dpkt.ip.IP):
        if ip.p != dpkt.ip.IP_PROTO_TCP or ip.offset:
            return (
                None  # not TCP, or a later IP fragment (reassembling IP fragments is out of scope)
            )
        family = socket.AF_INET
        ip_payload_length = ip.len - ip.hl * 4
    else:
        # `p` is the protocol after any extension headers (dpkt walks them), `nxt` the first one's.
        if ip.p != dpkt.ip.IP_PROTO_TCP or dpkt.ip.IP_PROTO_FRAGMENT in ip.extension_hdrs:
            return None  # not TCP, or an IPv6 fragment (reassembling fragments is out of scope)
        family = socket.AF_INET6
        ip_payload_length = ip.plen - sum(len(bytes(h)) for h in ip.extension_hdrs.values() if h)
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
        src=(socket.inet_ntop(family, ip.src), tcp.sport),
        dst=(socket.inet_ntop(family, ip.dst), tcp.dport),
        seq=tcp.seq,
        ack=tcp.ack,
        flags=tcp.flags,
        payload=payload,
        missing=missing,
    )


def _network_layer(dpkt: Any, linktype: int, data: bytes) -> Any:
    """Return the dpkt IP or IP6 object inside a link-layer frame, or None for other protocols."""
    if linktype in (_DLT_NULL, _DLT_LOOP):
        # The 4-byte address family is in the capturing host's byte order (NULL) or big-endian (LOOP).
        family = int.from_bytes(data[:4], "big" if linktype == _DLT_LOOP else "little")
        if family > 0xFFFF:
            family = int.from_bytes(data[:4], "big")
        inner = data[4:]
        return _ip_by_version(dpkt, inner)
    if linktype == _DLT_EN10MB:
        frame = dpkt.ethernet.Ethernet(data)
        inner = frame.data
    elif linktype == _DLT_LINUX_SLL:
        frame = dpkt.sll.SLL(data)
        inner = frame.data
    elif linktype == _DLT_LINUX_SLL2:
        frame = dpkt.sll2.SLL2(data)
        inner = frame.data
    else:  # raw IP
        return _ip_by_version(dpkt, data)
    if isinstance(inner, dpkt.ip.IP | dpkt.ip6.IP6):
        return inner
    return None


def _ip_by_version(dpkt: Any, data: bytes) -> Any:
    if not data:
        return None
    version = data[0] >> 4
    if version == 4:
        return dpkt.ip.IP(data)
    if version == 6:
        return dpkt.ip6.IP6(data)
    return None
