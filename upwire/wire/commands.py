"""The `upwire dissect` and `upwire tap` subcommands (wired into `upwire.cli`).

Exit codes: 0 success, 1 a capture that could not be read at all (or a tap that could not start), 2 bad usage.
Damaged captures print what could be decoded plus a note on stderr, and exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable
from typing import Any, TextIO

from upwire.exceptions import InvalidURI
from upwire.wire.capture import CaptureError
from upwire.wire.dissect import Connection, FrameFilter, dissect
from upwire.wire.render import (
    Style,
    _frame_details,
    connection_json,
    connection_title,
    frame_json,
    frame_line,
    frame_tree,
    print_connection_head,
    print_connection_tree,
    print_notes,
    print_summary,
    safe_text,
    summary_json,
)
from upwire.wire.spool import Spool
from upwire.wire.tcp import format_endpoint
from upwire.wire.websocket import FrameRecord, WebSocketObserver

__all__ = ["add_subcommands", "run_dissect", "run_tap"]


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT (a port up to 65535), got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _stream_number(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a stream number (0, 1, …), not {text!r}")
    return int(text)


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"expected a TCP port (0 to 65535), not {text!r}")
    return int(text)


def _output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="one JSON object per line (docs/wire.md)"
    )
    parser.add_argument(
        "--summary",
        action="store_true",
        help="per connection: messages, bytes, framing overhead, HTTP polling comparison",
    )
    parser.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="colours (auto: on a TTY)",
    )


def add_subcommands(commands: Any) -> None:
    """Add `dissect` and `tap` to the `upwire` command's subparsers."""
    dissect_cmd = commands.add_parser(
        "dissect", help="decode the WebSocket connections of a pcap/pcapng capture"
    )
    dissect_cmd.add_argument("capture", help="a pcap or pcapng file (tcpdump, dumpcap, Wireshark)")
    _output_options(dissect_cmd)
    dissect_cmd.add_argument(
        "--stream", type=_stream_number, help="only TCP stream N (as Wireshark numbers them)"
    )
    dissect_cmd.add_argument(
        "--port", type=_port, help="only connections with TCP port P at either end"
    )
    dissect_cmd.add_argument(
        "--opcode",
        choices=("text", "binary", "control"),
        help="only frames of text or binary messages, or control frames (not with --summary)",
    )

    tap_cmd = commands.add_parser(
        "tap", help="relay WebSocket clients to a server and show every frame as it passes"
    )
    tap_cmd.add_argument("--listen", type=_host_port, required=True, metavar="HOST:PORT")
    tap_cmd.add_argument("--upstream", required=True, metavar="ws://HOST:PORT/PATH")
    tap_cmd.add_argument(
        "--web", type=_host_port, metavar="HOST:PORT", help="also serve a live frames page here"
    )
    tap_cmd.add_argument(
        "--max-frame-hold",
        type=_positive_int,
        default=16 * 1024 * 1024,
        metavar="BYTES",
        help="the most bytes of one frame held to decode it (default 16 MiB); a larger frame is "
        "passed on as it comes, undecoded",
    )
    tap_cmd.add_argument(
        "--handshake-timeout",
        type=_positive_float,
        default=10.0,
        metavar="SECONDS",
        help="the most time from a client's connection to the upstream's answer to its Upgrade "
        "(default 10); a client still without its request is dropped, one still without an "
        "answer gets a 504",
    )
    _output_options(tap_cmd)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of bytes, not {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, not {text!r}")
    return value


def _style(args: argparse.Namespace, out: TextIO) -> Style:
    return Style(out, None if args.color == "auto" else args.color == "always")


def run_dissect(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run `upwire dissect`."""
    out = out or sys.stdout
    if args.summary and args.opcode:
        # The summary is of whole connections (framing against HTTP polling for all their messages):
        # a summary of some frames only would price something no connection sent.
        print(
            "upwire dissect: error: --summary counts every frame of a connection and cannot be "
            "combined with --opcode (use --opcode to list some frames, --stream or --port to choose "
            "the connections summarized)",
            file=sys.stderr,
        )
        return 2
    chosen = FrameFilter(stream=args.stream, port=args.port, opcode=args.opcode)
    style = _style(args, out)
    spool = Spool()

    # Each frame is printed as it is decoded (to the spool), then dropped: its connection's head and
    # notes, known only at the end, go around it there.
    def on_frame(connection: Connection, frame: FrameRecord) -> None:
        if args.summary:
            return  # the observer's counts are all it needs
        if args.json:
            for piece in frame_json(frame):
                spool.write(connection.index, piece)
        else:
            spool.write(connection.index, frame_tree(frame, style, connection.observer.first_time))

    try:
        try:
            result = dissect(args.capture, chosen, on_frame=on_frame)
        except CaptureError as exc:
            print(f"upwire: {args.capture}: {exc}", file=sys.stderr)
            return 1
        websocket_count = 0
        for connection in result.connections:
            observer = connection.observer
            notes = connection.tcp_notes() + observer.notes
            if observer.is_websocket:
                websocket_count += 1
            if args.json and args.summary:
                print(json.dumps({**summary_json(observer), "notes": notes}), file=out)
            elif args.json:
                print(json.dumps(connection_json(observer, notes), ensure_ascii=False), file=out)
                spool.copy(connection.index, out)
            elif args.summary:
                print_summary(observer, notes, out, style)
            else:
                print_connection_head(observer, out, style)
                spool.copy(connection.index, out)
                print_notes(notes, out, style)
                print(file=out)
    finally:
        spool.close()
    for problem in result.problems:
        print(f"upwire: {args.capture}: {problem}", file=sys.stderr)
    if websocket_count == 0:
        print(
            f"upwire: {args.capture}: no WebSocket connection found in {len(result.connections)} "
            f"TCP stream(s) of {result.packets} packet(s)"
            + (" matching the filters" if args.stream is not None or args.port is not None else ""),
            file=sys.stderr,
        )
    return 0


def _set_once(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def run_tap(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run `upwire tap` until interrupted."""
    return asyncio.run(_tap(args, out or sys.stdout))


async def _tap(args: argparse.Namespace, out: TextIO) -> int:
    from upwire.wire.tap import Tap
    from upwire.wire.web import FrameFeed

    style = _style(args, out)
    feed = FrameFeed() if args.web else None
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[None] = loop.create_future()
    output_closed = False

    def printing(callback: Callable[..., None]) -> Callable[..., None]:
        """Call `callback`; when the reader of the output went away (`upwire tap | head`), stop the tap
        as a pipeline's tools stop (the relays were failing one by one while it listened on)."""

        def call(*arguments: Any) -> None:
            nonlocal output_closed
            if output_closed:
                return
            try:
                callback(*arguments)
            except BrokenPipeError:
                output_closed = True
                _set_once(stop)

        return call

    def on_open(observer: WebSocketObserver) -> None:
        notes = list(observer.notes)
        if args.json:
            print(
                json.dumps(connection_json(observer, notes), ensure_ascii=False),
                file=out,
                flush=True,
            )
        elif not args.summary:
            print_connection_tree(observer, [], notes, out, style)

    def on_refused(observer: WebSocketObserver) -> None:
        # A client whose Upgrade failed: shown as `dissect` shows a refused one, not WebSocket.
        if args.json:
            head = summary_json(observer) if args.summary else connection_json(observer, [])
            print(json.dumps({**head, "notes": observer.notes}, ensure_ascii=False), file=out)
            out.flush()
        elif args.summary:
            print_summary(observer, observer.notes, out, style)
        else:
            print_connection_tree(observer, [], observer.notes, out, style)

    def on_note(observer: WebSocketObserver, note: str) -> None:
        if args.summary:
            return  # printed with the connection's summary
        if args.json:
            line = {"type": "note", "stream": observer.stream, "note": note}
            print(json.dumps(line, ensure_ascii=False), file=out, flush=True)
        else:
            print(style.warn(f"[{observer.stream}] note: {safe_text(note)}"), file=out, flush=True)

    def on_frame(observer: WebSocketObserver, record: FrameRecord) -> None:
        if feed is not None:
            feed.publish(observer, record)
        if args.json:
            out.writelines(frame_json(record))
            out.flush()
        elif not args.summary:
            # Frames of several connections interleave here: each line says its stream.
            label = f"[{observer.stream}] "
            lines = [label + frame_line(record, style, observer.first_time)]
            indent = " " * (len(label) + 6)
            lines += [indent + style.dim(d) for d in _frame_details(record)]
            print("\n".join(lines), file=out, flush=True)

    def on_close(observer: WebSocketObserver) -> None:
        if args.summary:
            if args.json:
                print(json.dumps(summary_json(observer)), file=out, flush=True)
            else:
                print_summary(observer, observer.notes, out, style)
        elif not args.json:
            print(style.bold(f"{connection_title(observer)}  closed"), file=out, flush=True)

    try:
        tap = Tap(
            args.upstream,
            on_open=printing(on_open),
            on_frame=printing(on_frame),
            on_close=printing(on_close),
            on_note=printing(on_note),
            on_refused=printing(on_refused),
            max_frame_hold=args.max_frame_hold,
            handshake_timeout=args.handshake_timeout,
        )
    except InvalidURI as exc:
        print(f"upwire: {exc}", file=sys.stderr)
        return 2
    host, port = args.listen
    try:
        server = await tap.start(host, port)
    except OSError as exc:
        print(
            f"upwire: cannot listen on {format_endpoint(host, port)}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    bound = server.sockets[0].getsockname()[1]
    print(
        f"upwire tap listening on ws://{format_endpoint(host, bound)}/ -> {args.upstream}",
        file=sys.stderr,
        flush=True,
    )
    web_server = None
    if feed is not None:
        web_host, web_port = args.web
        web_server = await feed.start(web_host, web_port)
        print(
            f"upwire tap: frames page on http://{format_endpoint(web_host, web_server.port)}/",
            file=sys.stderr,
            flush=True,
        )
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, _set_once, stop)
    try:
        await stop
    finally:
        await tap.close()
        if web_server is not None:
            web_server.close()
            await web_server.wait_closed()
    if output_closed:
        # Python would complain when flushing the closed pipe at exit.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as `dissect` on a closed pipe
    return 0
