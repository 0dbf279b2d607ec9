"""What framing costs, and what the same messages would have cost as HTTP polling requests.

Owns: the `--summary` arithmetic. The polling model uses the captured handshake's own headers: each
client-to-server message becomes a POST carrying it (answered 204), each server-to-client message a long-poll
GET answered 200 with it; the HTTP heads are the overhead (bodies are the messages either way).

Must not know: capture files or printing.
"""

from __future__ import annotations

from dataclasses import dataclass

from upwire.protocol.http import Headers, Request, Response, serialize_request, serialize_response
from upwire.wire.websocket import WebSocketObserver

__all__ = ["Overhead", "polling_heads", "summarize"]

# Header fields that only make sense for the Upgrade itself.
_UPGRADE_ONLY = {"upgrade", "connection", "content-length", "content-type"}


@dataclass(frozen=True, slots=True)
class Overhead:
    """One direction's (or both directions') numbers."""

    messages: int
    message_bytes: int
    frames: int
    control_frames: int
    wire_bytes: int
    header_bytes: int
    polling_bytes: int

    @property
    def overhead_ratio(self) -> float:
        """Framing bytes per message byte (0 when there are no message bytes)."""
        return self.header_bytes / self.message_bytes if self.message_bytes else 0.0

    @property
    def header_bytes_per_message(self) -> float:
        """Average framing bytes per message."""
        return self.header_bytes / self.messages if self.messages else 0.0

    @property
    def polling_bytes_per_message(self) -> float:
        """Average HTTP head bytes per message when polling."""
        return self.polling_bytes / self.messages if self.messages else 0.0

    def to_json(self) -> dict[str, object]:
        """The fields of `--summary --json`."""
        return {
            "messages": self.messages,
            "message_bytes": self.message_bytes,
            "frames": self.frames,
            "control_frames": self.control_frames,
            "wire_bytes": self.wire_bytes,
            "framing_overhead_bytes": self.header_bytes,
            "framing_overhead_ratio": round(self.overhead_ratio, 6),
            "framing_bytes_per_message": round(self.header_bytes_per_message, 3),
            "polling_overhead_bytes": self.polling_bytes,
            "polling_bytes_per_message": round(self.polling_bytes_per_message, 3),
        }


def _kept(headers: Headers) -> list[tuple[str, str]]:
    return [
        (name, value)
        for name, value in headers.items()
        if name.lower() not in _UPGRADE_ONLY and not name.lower().startswith("sec-websocket-")
    ]


def polling_heads(request: Request, response: Response, size: int, upstream: bool) -> int:
    """Bytes of the HTTP heads one polling exchange carrying a `size`-byte message would take.

    Args:
        request: the captured Upgrade request (its target and headers are reused).
        response: the captured 101 response (its headers are reused).
        size: the message's size.
        upstream: True for a client-to-server message (a POST), False for one the server sends (a GET
            answered with it).
    """
    content_type = ("Content-Type", "application/octet-stream")
    request_headers = _kept(request.headers)
    response_headers = _kept(response.headers)
    if upstream:
        body_headers = [content_type, ("Content-Length", str(size))]
        poll = Request("POST", request.target, Headers(request_headers + body_headers))
        answer = Response(204, response_headers)
        answer_bytes = len(serialize_response(answer, close=False))  # no Content-Length in a 204
    else:
        poll = Request("GET", request.target, Headers(request_headers))
        # The head of an answer with the message as its body: written with an empty body, whose
        # "Content-Length: 0" becomes the message's length.
        answer = Response(200, [*response_headers, content_type])
        answer_bytes = len(serialize_response(answer, close=False)) - 1 + len(str(size))
    return len(serialize_request(poll)) + answer_bytes


def summarize(observer: WebSocketObserver) -> tuple[Overhead, Overhead, Overhead]:
    """(client-to-server, server-to-client, both) numbers of one connection."""
    result = []
    for upstream, stats in zip((True, False), observer.direction_stats(), strict=True):
        polling = 0
        if observer.request is not None and observer.response is not None:
            polling = sum(
                polling_heads(observer.request, observer.response, size, upstream)
                for size in stats.message_sizes
            )
        result.append(
            Overhead(
                messages=stats.messages,
                message_bytes=stats.message_bytes,
                frames=stats.frames,
                control_frames=stats.control_frames,
                wire_bytes=stats.wire_bytes,
                header_bytes=stats.header_bytes,
                polling_bytes=polling,
            )
        )
    up, down = result
    both = Overhead(*(getattr(up, f) + getattr(down, f) for f in Overhead.__dataclass_fields__))
    return up, down, both
