"""`upwire dissect`: a capture file in, its WebSocket connections and frames out.

Owns: driving capture reading, TCP reassembly and one `WebSocketObserver` per TCP stream, in capture order,
and the filters (`--stream`, `--port`, `--opcode`).

Must not know: how the result is printed (`render`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from upwire.protocol.frames import CONTROL_OPCODES, Opcode
from upwire.wire.capture import CaptureError, ReadStats, read_segments
from upwire.wire.tcp import Data, Gap, StreamTable, TcpStream, format_endpoint
from upwire.wire.websocket import FrameRecord, WebSocketObserver

__all__ = ["Connection", "Dissection", "FrameFilter", "FrameSink", "dissect"]


@dataclass(slots=True)
class Connection:
    """One TCP stream of the capture, with what its observer found."""

    tcp: TcpStream
    observer: WebSocketObserver
    frames: list[FrameRecord] = field(default_factory=list)

    @property
    def index(self) -> int:
        """The stream number (Wireshark's `tcp.stream`)."""
        return self.tcp.index

    def tcp_notes(self) -> list[str]:
        """Retransmissions, reordering and gaps, in words."""
        notes = []
        for from_a, name, half in (
            (True, "from " + format_endpoint(*self.tcp.a), self.tcp.from_a),
            (False, "from " + format_endpoint(*self.tcp.b), self.tcp.from_b),
        ):
            if half.retransmitted_bytes:
                notes.append(f"{name}: {half.retransmitted_bytes} retransmitted bytes ignored")
            if half.overlap_conflicts:
                notes.append(
                    f"{name}: {half.overlap_conflicts} overlapping segment(s) carry other bytes than "
                    f"the copy kept (an overlap conflict; the first in packet {half.conflict_packet})"
                )
            if half.out_of_order_segments:
                notes.append(
                    f"{name}: {half.out_of_order_segments} out-of-order segment(s) put back in order"
                )
            # Said once: here only when the observer's notes did not say all of it.
            if half.gap_bytes and half.gap_bytes != self.observer.noted_gap_bytes[from_a]:
                snapped = (
                    f" ({half.snapped_packets} packet(s) cut by the capture's snap length)"
                    if half.snapped_packets
                    else ""
                )
                notes.append(f"{name}: {half.gap_bytes} bytes missing from the capture{snapped}")
        return notes


@dataclass(frozen=True, slots=True)
class FrameFilter:
    """Which streams and frames to show: None means any.

    Attributes:
        stream: the stream number.
        port: a TCP port of either endpoint.
        opcode: "text", "binary" (with their continuation frames) or "control" (close, ping, pong).
    """

    stream: int | None = None
    port: int | None = None
    opcode: str | None = None

    def wants_stream(self, connection: Connection) -> bool:
        """True when the stream passes `--stream` and `--port`."""
        if self.stream is not None and connection.index != self.stream:
            return False
        return self.port is None or self.port in (connection.tcp.a[1], connection.tcp.b[1])

    def wants_frame(self, frame: FrameRecord) -> bool:
        """True when the frame passes `--opcode`."""
        if self.opcode is None:
            return True
        if self.opcode == "control":
            return frame.opcode in CONTROL_OPCODES
        wanted = Opcode.TEXT if self.opcode == "text" else Opcode.BINARY
        return frame.message_opcode == wanted and frame.opcode not in CONTROL_OPCODES


FrameSink = Callable[[Connection, FrameRecord], None]


def _keep(connection: Connection, frame: FrameRecord) -> None:
    connection.frames.append(frame)


@dataclass(slots=True)
class Dissection:
    """The result of reading one capture."""

    path: str
    connections: list[Connection]
    problems: list[str]
    packets: int = 0


def dissect(
    path: str | Path,
    frame_filter: FrameFilter | None = None,
    *,
    on_frame: FrameSink | None = None,
) -> Dissection:
    """Read a pcap or pcapng file and decode the WebSocket connections in it.

    Args:
        path: the capture file.
        frame_filter: which streams and frames to keep (all by default).
        on_frame: called with each frame that passes the filter as soon as it is decoded, which is
            then not kept (`Connection.frames` stays empty): memory does not grow with the payloads.
            By default every frame is kept in its connection's `frames`.

    Returns:
        Every TCP stream that passes the filter, with its frames; damaged input is described in
        `problems` and in each connection's notes.

    Raises:
        CaptureError: when the file cannot be opened or is not a capture.
    """
    chosen = frame_filter or FrameFilter()
    sink = on_frame or _keep
    problems: list[str] = []
    table = StreamTable()
    connections: dict[int, Connection] = {}
    stats = ReadStats()
    try:
        file = open(path, "rb")  # noqa: SIM115 - closed in the finally below
    except OSError as exc:
        raise CaptureError(f"cannot open the file: {exc.strerror or exc}") from None
    try:
        for segment in read_segments(file, problems, stats):
            stream, new = table.lookup(segment)
            if new:
                observer = WebSocketObserver(
                    stream.index,
                    format_endpoint(*stream.a),
                    format_endpoint(*stream.b),
                    mid_connection=not segment.flags & 0x02,
                    opened_by_a=segment.flags & 0x12 == 0x02,  # SYN, not SYN-ACK
                )
                connections[stream.index] = Connection(stream, observer)
            connection = connections[stream.index]
            from_a = segment.src == stream.a
            half = stream.half(segment.src)
            _deliver(connection, from_a, half.add(segment), chosen, sink)
    finally:
        file.close()
    for connection in connections.values():
        _deliver(connection, True, connection.tcp.from_a.flush(), chosen, sink)
        _deliver(connection, False, connection.tcp.from_b.flush(), chosen, sink)
        tcp = connection.tcp
        connection.observer.finish(
            reset=tcp.reset, fins=(tcp.from_a.fin_packet, tcp.from_b.fin_packet)
        )
        connection.observer.mid_connection = connection.tcp.started_mid_connection
    kept = [c for c in connections.values() if chosen.wants_stream(c)]
    return Dissection(str(path), kept, problems, stats.packets)


def _deliver(
    connection: Connection,
    from_a: bool,
    deliveries: list[Data | Gap],
    chosen: FrameFilter,
    sink: FrameSink,
) -> None:
    observer = connection.observer
    wanted = chosen.wants_stream(connection)
    for item in deliveries:
        if isinstance(item, Gap):
            observer.gap(from_a, item.size, item.packet if item.snapped else None)
            continue
        for frame in observer.feed(from_a, item.data, item.time, item.packet):
            if wanted and chosen.wants_frame(frame):
                sink(connection, frame)
