"""Printing what `dissect` and `tap` saw: a readable tree, JSON lines, or a per-connection summary.

Owns: the three output formats and colours on a terminal. The JSON field names are a documented
interface (docs/wire.md): add fields, never rename them.

Must not know: where the records came from.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from typing import TextIO

from upwire.protocol.frames import apply_mask
from upwire.protocol.http import Request, Response
from upwire.wire.overhead import Overhead, summarize
from upwire.wire.websocket import CLIENT_TO_SERVER, FrameRecord, WebSocketObserver, opcode_name

__all__ = [
    "Style",
    "connection_json",
    "frame_json",
    "frame_line",
    "frame_tree",
    "print_connection_head",
    "print_connection_tree",
    "print_notes",
    "print_summary",
    "safe_text",
    "summary_json",
]

_PREVIEW_BYTES = 64
# A multiple of 4: a masked payload's pieces each start with the key's first byte.
_JSON_PIECE = 1 << 16


class Style:
    """ANSI colours when writing to a terminal (and NO_COLOR is not set), plain text otherwise."""

    def __init__(self, stream: TextIO, color: bool | None = None) -> None:
        if color is None:
            color = stream.isatty() and "NO_COLOR" not in os.environ
        self.color = color

    def _wrap(self, code: str, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color else text

    def bold(self, text: str) -> str:
        """Bold text."""
        return self._wrap("1", text)

    def dim(self, text: str) -> str:
        """Faint text."""
        return self._wrap("2", text)

    def client(self, text: str) -> str:
        """What the client sends (green)."""
        return self._wrap("32", text)

    def server(self, text: str) -> str:
        """What the server sends (blue)."""
        return self._wrap("34", text)

    def warn(self, text: str) -> str:
        """Violations and notes (red)."""
        return self._wrap("31", text)


def _preview(data: bytes, limit: int = _PREVIEW_BYTES) -> str:
    shown = data[:limit].hex(" ")
    return shown + (f" … ({len(data)} bytes)" if len(data) > limit else "")


def safe_text(text: str) -> str:
    """`text` with what a terminal would act on escaped as `\\uXXXX`: C0 controls but the tab, DEL, C1
    controls (U+009B is the 8-bit CSI), line separators and bidi controls (U+202E reverses what follows),
    as Wireshark shows them. Other text, non-ASCII spaces and joiners included, stays as it is."""
    return _UNSAFE.sub(_escape, text)


# C0 but HTAB, DEL and C1, U+2028/2029, and the bidi marks, embeddings, overrides and isolates.
_UNSAFE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def _text_preview(text: str, limit: int = 200) -> str:
    shown = safe_text(json.dumps(text[:limit], ensure_ascii=False))
    return shown + (f" … ({len(text)} characters)" if len(text) > limit else "")


def _head_lines(start: str, headers: Iterable[tuple[str, str]]) -> list[str]:
    return [safe_text(start)] + [safe_text(f"{name}: {value}") for name, value in headers]


def frame_line(frame: FrameRecord, style: Style, first_time: float | None = None) -> str:
    """One frame as one line (the summary line of the tree, and the tap's live output)."""
    arrow = "→" if frame.direction == CLIENT_TO_SERVER else "←"
    paint = style.client if frame.direction == CLIENT_TO_SERVER else style.server
    when = frame.time - first_time if first_time is not None else frame.time
    bits = ["FIN" if frame.fin else "fin=0"]
    bits += [name for bit, name in ((4, "RSV1"), (2, "RSV2"), (1, "RSV3")) if frame.rsv & bit]
    if frame.masked and frame.mask_key is not None:
        bits.append(f"MASK {frame.mask_key.hex()}")
    if frame.message is not None:
        bits.append(f"msg {frame.message}" + ("" if frame.message_end else " …"))
    name = opcode_name(frame.opcode)
    line = (
        f"#{frame.index:<4} {when:>10.6f}s {paint(arrow + ' ' + f'{name:<12}')} "
        f"len {frame.payload_length} ({frame.length_bits}-bit)  {' '.join(bits)}"
    )
    if frame.close_code is not None or frame.opcode == 8:
        line += f"  close {frame.close_code}" + (
            f" {frame.close_reason!r}" if frame.close_reason else ""
        )
    elif frame.text is not None:
        line += "  " + _text_preview(frame.text, 60)
    elif frame.payload_length:
        line += "  " + _preview(frame.data, 16)
    if frame.violations:
        line += "  " + style.warn("! " + safe_text("; ".join(frame.violations)))
    return line


def _frame_details(frame: FrameRecord) -> list[str]:
    lines = [
        f"FIN {int(frame.fin)}  RSV1 {frame.rsv >> 2 & 1}  RSV2 {frame.rsv >> 1 & 1}  "
        f"RSV3 {frame.rsv & 1}  opcode {frame.opcode:#x} ({opcode_name(frame.opcode)})  "
        f"MASK {int(frame.masked)}",
        f"payload length {frame.payload_length} ({frame.length_bits}-bit encoding), "
        f"header {frame.header_length} bytes: {frame.header.hex(' ')}",
    ]
    if frame.mask_key is not None:
        lines.append(f"masking key {frame.mask_key.hex(' ')}")
        lines.append(f"payload as sent (masked): {_preview(frame.payload_masked)}")
    lines.append(f"payload (unmasked): {_preview(frame.payload)}")
    if frame.inflated is not None:
        lines.append(f"inflated: {_preview(frame.inflated)}")
    if frame.text is not None:
        lines.append(f"text: {_text_preview(frame.text)}")
    if frame.opcode == 8:
        lines.append(f"close code {frame.close_code}, reason {frame.close_reason!r}")
    if frame.message is not None:
        kind = opcode_name(frame.message_opcode) if frame.message_opcode is not None else "?"
        end = f", ends it ({frame.message_length} bytes)" if frame.message_end else ""
        lines.append(
            f"message {frame.message} ({kind}{', compressed' if frame.compressed else ''}){end}"
        )
    return lines


def endpoints(observer: WebSocketObserver) -> tuple[str, str]:
    """(client, server): as the handshake showed them, else as TCP did (the SYN's sender first)."""
    return observer.client or observer.a, observer.server or observer.b


def connection_title(observer: WebSocketObserver) -> str:
    """ "stream 0  127.0.0.1:5000 → 127.0.0.1:8765" (client first when known)."""
    client, server = endpoints(observer)
    return f"stream {observer.stream}  {client} → {server}"


def print_connection_tree(
    observer: WebSocketObserver,
    frames: list[FrameRecord],
    notes: list[str],
    out: TextIO,
    style: Style,
) -> None:
    """Print one connection: endpoints, handshake, negotiated extensions, each frame, then notes."""
    print_connection_head(observer, out, style)
    for frame in frames:
        out.write(frame_tree(frame, style, observer.first_time))
    print_notes(notes, out, style)
    print(file=out)


def print_connection_head(observer: WebSocketObserver, out: TextIO, style: Style) -> None:
    """The start of a connection's tree: endpoints, request, response, subprotocol and extensions."""
    kind = "WebSocket" if observer.is_websocket else "not WebSocket"
    print(style.bold(f"{connection_title(observer)}  ({kind})"), file=out)
    if observer.request is not None:
        request = observer.request
        start = f"{request.method} {request.target} HTTP/{request.http_version}"
        for line in _head_lines(start, request.headers.items()):
            print("  " + style.client("> " + line), file=out)
    if observer.response is not None:
        response = observer.response
        start = f"HTTP/1.1 {response.status} {response.reason}"
        for line in _head_lines(start, response.headers.items()):
            print("  " + style.server("< " + line), file=out)
    if observer.is_websocket:
        print(
            safe_text(
                f"  subprotocol: {observer.subprotocol or '(none)'}   "
                f"extensions: {observer.extensions or '(none)'}"
            ),
            file=out,
        )


def frame_tree(frame: FrameRecord, style: Style, first_time: float | None) -> str:
    """One frame of the tree: its line and its fields, each line ending with a newline."""
    lines = ["  " + frame_line(frame, style, first_time)]
    lines += ["        " + style.dim(detail) for detail in _frame_details(frame)]
    return "\n".join(lines) + "\n"


def print_notes(notes: list[str], out: TextIO, style: Style) -> None:
    """A connection's notes, one line each."""
    for note in notes:
        print("  " + style.warn("note: " + safe_text(note)), file=out)


def frame_json(frame: FrameRecord) -> Iterator[str]:
    """`json.dumps(frame.to_json(), ensure_ascii=False)` and a newline, in pieces.

    A payload's hex is twice its size, and its JSON string one more copy: written whole, one large
    frame took many times its size at once. In pieces, no copy of a payload is made.
    """
    if len(frame.payload) + len(frame.inflated or b"") + len(frame.text or "") <= _JSON_PIECE:
        yield json.dumps(frame.to_json(), ensure_ascii=False) + "\n"
        return
    fields = frame.to_json(payload_limit=0)  # the payloads' hex comes below, piece by piece
    data = {"payload_masked": frame.payload, "payload": frame.payload, "inflated": frame.inflated}
    yield "{"
    for number, (name, value) in enumerate(fields.items()):
        yield (", " if number else "") + json.dumps(name) + ": "
        if name in data and value is not None:
            yield '"'
            payload = data[name] or b""
            for start in range(0, len(payload), _JSON_PIECE):
                piece = payload[start : start + _JSON_PIECE]
                if name == "payload_masked" and frame.mask_key is not None:
                    piece = apply_mask(piece, frame.mask_key)  # pieces start at multiples of 4
                yield piece.hex()
            yield '"'
        elif isinstance(value, str) and len(value) > _JSON_PIECE:
            yield '"'
            for start in range(0, len(value), _JSON_PIECE):
                yield json.dumps(value[start : start + _JSON_PIECE], ensure_ascii=False)[1:-1]
            yield '"'
        else:
            yield json.dumps(value, ensure_ascii=False)
    yield "}\n"


def connection_json(observer: WebSocketObserver, notes: list[str]) -> dict[str, object]:
    """The `{"type": "connection", ...}` object that precedes a connection's frames in `--json`."""

    def head(message: Request | Response | None) -> dict[str, object] | None:
        if message is None:
            return None
        if isinstance(message, Request):
            first: dict[str, object] = {"method": message.method, "target": message.target}
        else:
            first = {"status": message.status, "reason": message.reason}
        return {**first, "headers": [[k, v] for k, v in message.headers.items()]}

    client, server = endpoints(observer)
    return {
        "type": "connection",
        "stream": observer.stream,
        "client": client,
        "server": server,
        "websocket": observer.is_websocket,
        "request": head(observer.request),
        "response": head(observer.response),
        "subprotocol": observer.subprotocol,
        "extensions": observer.extensions,
        "notes": notes,
    }


def summary_json(observer: WebSocketObserver) -> dict[str, object]:
    """The `--summary --json` object of one connection."""
    up, down, both = summarize(observer)
    client, server = endpoints(observer)
    return {
        "type": "summary",
        "stream": observer.stream,
        "client": client,
        "server": server,
        "client_to_server": up.to_json(),
        "server_to_client": down.to_json(),
        "total": both.to_json(),
    }


def print_summary(observer: WebSocketObserver, notes: list[str], out: TextIO, style: Style) -> None:
    """Per connection: messages and bytes each way, framing overhead, and the polling comparison."""
    print(style.bold(connection_title(observer)), file=out)
    if not observer.is_websocket:
        print_notes(notes, out, style)
        print(file=out)
        return
    up, down, both = summarize(observer)
    header = f"  {'':<17}{'messages':>9}{'msg bytes':>12}{'frames':>8}{'wire bytes':>12}{'framing':>9}{'ratio':>9}"
    print(header, file=out)

    def row(name: str, o: Overhead) -> str:
        return (
            f"  {name:<17}{o.messages:>9}{o.message_bytes:>12}{o.frames:>8}{o.wire_bytes:>12}"
            f"{o.header_bytes:>9}{o.overhead_ratio:>9.2%}"
        )

    print(row("client → server", up), file=out)
    print(row("server → client", down), file=out)
    print(row("total", both), file=out)
    if both.messages:
        print(
            f"  framing: {both.header_bytes_per_message:.1f} bytes per message on average "
            f"(a frame header is 2 to 14 bytes)",
            file=out,
        )
        if both.polling_bytes:
            times = both.polling_bytes / both.header_bytes if both.header_bytes else 0.0
            print(
                f"  as HTTP polling with this handshake's headers: {both.polling_bytes} bytes of HTTP "
                f"heads, {both.polling_bytes_per_message:.0f} bytes per message ({times:.0f}x the framing)",
                file=out,
            )
    print_notes(notes, out, style)
    print(file=out)
