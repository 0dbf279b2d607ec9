"""Build small synthetic captures for the dissector's unit tests (dpkt writes the file formats)."""

from __future__ import annotations

import socket
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import dpkt

from upwire.protocol.frames import encode_frame

CLIENT = ("10.0.0.1", 50000)
SERVER = ("10.0.0.2", 8080)
CLIENT6 = ("2001:db8::1", 50000)
SERVER6 = ("2001:db8::2", 8080)

REQUEST = (
    b"GET /chat HTTP/1.1\r\nHost: example.test:8080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    b"User-Agent: synthetic\r\n\r\n"
)
RESPONSE = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
)
DEFLATE_RESPONSE = RESPONSE.replace(
    b"\r\n\r\n", b"\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
)
MASK = b"\x01\x02\x03\x04"


def client_frame(opcode: int, payload: bytes, fin: bool = True, rsv: int = 0) -> bytes:
    return encode_frame(opcode, payload, fin=fin, rsv=rsv, mask_key=MASK)


def server_frame(opcode: int, payload: bytes, fin: bool = True, rsv: int = 0) -> bytes:
    return encode_frame(opcode, payload, fin=fin, rsv=rsv)


def deflate_messages(messages: list[bytes]) -> list[bytes]:
    """Compress messages with one context (context takeover), as RFC 7692 §7.2.1 says."""
    compressor = zlib.compressobj(wbits=-15)
    out = []
    for message in messages:
        data = compressor.compress(message) + compressor.flush(zlib.Z_SYNC_FLUSH)
        assert data.endswith(b"\x00\x00\xff\xff")
        out.append(data[:-4])
    return out


@dataclass
class Packet:
    src: tuple[str, int]
    dst: tuple[str, int]
    seq: int
    ack: int
    flags: int
    payload: bytes = b""
    ip6_options: bool = False  # an IPv6 Destination Options header before TCP


@dataclass
class Conversation:
    """A TCP connection written packet by packet; `send` tracks sequence numbers per direction."""

    client: tuple[str, int] = CLIENT
    server: tuple[str, int] = SERVER
    client_isn: int = 1000
    server_isn: int = 5000
    packets: list[Packet] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.next = {self.client: self.client_isn + 1, self.server: self.server_isn + 1}

    def handshake(self) -> Conversation:
        c, s = self.client, self.server
        self.packets.append(Packet(c, s, self.client_isn, 0, dpkt.tcp.TH_SYN))
        self.packets.append(
            Packet(s, c, self.server_isn, self.client_isn + 1, dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK)
        )
        self.packets.append(Packet(c, s, self.client_isn + 1, self.server_isn + 1, dpkt.tcp.TH_ACK))
        return self

    def send(self, from_client: bool, payload: bytes, segment: int | None = None) -> list[Packet]:
        """Send `payload`, cut into segments of `segment` bytes; return the packets added."""
        src, dst = (self.client, self.server) if from_client else (self.server, self.client)
        size = segment or max(len(payload), 1)
        added = []
        for start in range(0, len(payload), size):
            piece = payload[start : start + size]
            packet = Packet(
                src, dst, self.next[src], self.next[dst], dpkt.tcp.TH_ACK | dpkt.tcp.TH_PUSH, piece
            )
            self.next[src] = (self.next[src] + len(piece)) % (1 << 32)
            added.append(packet)
        self.packets += added
        return added

    def close(self, from_client: bool) -> Packet:
        """Send a FIN (it takes one sequence number)."""
        src, dst = (self.client, self.server) if from_client else (self.server, self.client)
        packet = Packet(src, dst, self.next[src], self.next[dst], dpkt.tcp.TH_FIN | dpkt.tcp.TH_ACK)
        self.next[src] = (self.next[src] + 1) % (1 << 32)
        self.packets.append(packet)
        return packet


def _ip(packet: Packet) -> bytes:
    tcp = dpkt.tcp.TCP(
        sport=packet.src[1],
        dport=packet.dst[1],
        seq=packet.seq,
        ack=packet.ack,
        flags=packet.flags,
        win=65535,
        data=packet.payload,
    )
    if ":" in packet.src[0]:
        src, dst = (socket.inet_pton(socket.AF_INET6, a[0]) for a in (packet.src, packet.dst))
        tcp.sum = 0
        if packet.ip6_options:
            # Next header TCP, length 0 (8 bytes), then a 4-byte PadN option.
            options = bytes([dpkt.ip.IP_PROTO_TCP, 0, 1, 4, 0, 0, 0, 0])
            segment = bytes(tcp)
            head = dpkt.ip6.IP6(src=src, dst=dst, nxt=60, hlim=64, plen=len(options) + len(segment))
            return bytes(head)[:40] + options + segment
        ip6 = dpkt.ip6.IP6(src=src, dst=dst, nxt=dpkt.ip.IP_PROTO_TCP, hlim=64, data=tcp)
        ip6.plen = len(bytes(tcp))
        return bytes(ip6)
    src, dst = (socket.inet_aton(a[0]) for a in (packet.src, packet.dst))
    ip = dpkt.ip.IP(src=src, dst=dst, p=dpkt.ip.IP_PROTO_TCP, ttl=64, data=tcp)
    ip.len = 20 + len(bytes(tcp))
    return bytes(ip)


def _link(linktype: str, ip: bytes) -> bytes:
    v6 = ip[0] >> 4 == 6
    ethertype = 0x86DD if v6 else 0x0800
    if linktype == "ethernet":
        return b"\x00" * 12 + struct.pack("!H", ethertype) + ip
    if linktype == "sll":
        return struct.pack("!HHH8sH", 0, 772, 6, b"\x00" * 8, ethertype) + ip
    if linktype == "sll2":
        return struct.pack("!HHIHBB8s", ethertype, 0, 1, 772, 0, 6, b"\x00" * 8) + ip
    if linktype == "null":
        return struct.pack("<I", 30 if v6 else 2) + ip
    raise ValueError(linktype)


LINKTYPES = {"ethernet": 1, "null": 0, "sll": 113, "sll2": 276}


def write_capture(
    path: Path,
    packets: list[Packet],
    *,
    linktype: str = "ethernet",
    pcapng: bool = False,
    snap: int = 0,
) -> Path:
    """Write the packets; `snap` keeps only that many bytes of each (a capture's snap length)."""
    with path.open("wb") as file:
        writer_class = dpkt.pcapng.Writer if pcapng else dpkt.pcap.Writer
        writer = writer_class(file, linktype=LINKTYPES[linktype])
        for number, packet in enumerate(packets):
            data = _link(linktype, _ip(packet))
            writer.writepkt(data[:snap] if snap else data, ts=1_700_000_000 + number / 1000)
    return path
