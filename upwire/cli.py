"""The `upwire` command: `upwire serve` (echo or hello server), `upwire connect` (a client for the terminal),
`upwire dissect` (WebSocket frames of a capture file) and `upwire tap` (a relay that shows frames live).

Exit codes: 0 success or a normal close, 1 a failed or abnormally closed connection, 2 bad usage (including
a bad URI). Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from upwire.client import connect, parse_uri, redact_uri
from upwire.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
    WebSocketError,
)
from upwire.server import ServerConnection, serve
from upwire.wire import commands as wire_commands

__all__ = ["main"]


async def echo_handler(ws: ServerConnection) -> None:
    """Send every message back as it came (text as text, binary as binary)."""
    async for message in ws:
        await ws.send(message)


async def hello_handler(ws: ServerConnection) -> None:
    """Answer each name with a greeting: "Alice" -> "Hello Alice!"."""
    async for name in ws:
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        print(f"<<< {name}", flush=True)
        greeting = f"Hello {name}!"
        await ws.send(greeting)
        print(f">>> {greeting}", flush=True)


def _port(text: str) -> int:
    """A TCP port number, for argparse (out of range is a usage error, not a wrapped-around port)."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port (0-65535): {text!r}")
    return port


def _parse_size(text: str) -> int | None:
    if text.lower() in ("none", "unlimited", "0"):
        return None
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    scale = units.get(text[-1].lower(), 1)
    number = text[:-1] if scale != 1 else text
    try:
        return int(number) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a size: {text!r} (e.g. 1048576, 64k, 16m, none)"
        ) from None


def _why(exc: OSError) -> str:
    """What an OSError from connecting or listening says, in words ("Connection refused"): asyncio's own
    messages for a refused connection only repeat the address."""
    if isinstance(exc, ConnectionError) and exc.errno:
        return os.strerror(exc.errno)
    return exc.strerror or str(exc)


async def _serve(args: argparse.Namespace) -> int:
    handler = echo_handler if args.mode == "echo" else hello_handler
    ping_interval = None if args.no_ping else 20.0
    try:
        server = await serve(
            handler,
            args.host,
            args.port,
            max_message_size=args.max_message_size,
            ping_interval=ping_interval,
        )
    except OSError as exc:
        print(f"upwire: cannot listen on {args.host}:{args.port}: {_why(exc)}", file=sys.stderr)
        return 1
    async with server:
        print(f"upwire {args.mode} server listening on ws://{args.host}:{server.port}/", flush=True)
        loop = asyncio.get_running_loop()
        stop: asyncio.Future[None] = loop.create_future()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, _set_once, stop)
        await stop
        print("shutting down", flush=True)
    return 0


def _set_once(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _show(message: str | bytes, interactive: bool) -> None:
    if isinstance(message, bytes):
        text = f"<binary, {len(message)} bytes> {message[:64].hex()}"
    else:
        text = message
    print(f"< {text}" if interactive else text, flush=True)


def _lines_of(fd: int) -> Iterator[bytes]:
    """The lines read from `fd` (the last one without its newline, if it has none)."""
    pending = b""
    while chunk := os.read(fd, 65536):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        yield from lines
    if pending:
        yield pending


class _NotText(Exception):
    """A line of input that is not UTF-8 (text messages must be)."""


def _read_lines(
    loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[str | _NotText | None]
) -> None:
    """Read stdin in a thread (portable for TTYs and pipes) and hand each line to the loop.

    Lines are decoded one by one as UTF-8, whatever the locale: one that is not ends the input, after the
    lines before it. The file descriptor is read directly: a thread blocked in `sys.stdin` holds its
    buffer's lock, which would abort the interpreter's shutdown after Ctrl-C.
    """
    try:
        for number, line in enumerate(_lines_of(sys.stdin.fileno()), 1):
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                loop.call_soon_threadsafe(
                    queue.put_nowait, _NotText(f"line {number} of the input is not UTF-8")
                )
                return
            loop.call_soon_threadsafe(queue.put_nowait, text.rstrip("\r\n"))
    finally:
        loop.call_soon_threadsafe(queue.put_nowait, None)


async def _connect(args: argparse.Namespace) -> int:
    interactive = sys.stdin.isatty()
    shown = redact_uri(args.uri)  # credentials in the URI are never printed
    try:
        ws = await connect(args.uri, max_message_size=args.max_message_size)
    except InvalidStatus as exc:
        print(f"upwire: {exc}", file=sys.stderr)
        return 1
    except InvalidHandshake as exc:
        print(f"upwire: handshake with {shown} failed: {exc}", file=sys.stderr)
        return 1
    except InvalidURI as exc:
        print(f"upwire: {exc}", file=sys.stderr)
        return 1
    except TimeoutError as exc:
        print(f"upwire: {exc or f'timed out connecting to {shown}'}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"upwire: cannot connect to {shown}: {_why(exc)}", file=sys.stderr)
        return 1
    if interactive:
        print(f"connected to {shown}; type a message and press Enter (Ctrl-D to quit)", flush=True)

    loop = asyncio.get_running_loop()
    last_message = [loop.time()]  # when the latest message came (`--wait`)

    async def receive() -> int:
        try:
            async for message in ws:
                last_message[0] = loop.time()
                _show(message, interactive)
        except ConnectionClosed as exc:
            print(f"upwire: {exc}", file=sys.stderr)
            return 1
        return 0

    receiver = asyncio.create_task(receive())
    # SIGTERM ends the session as Ctrl-D does, with the closing handshake (RFC 6455 §7.1.2).
    stop = loop.create_future()
    with contextlib.suppress(NotImplementedError):
        loop.add_signal_handler(signal.SIGTERM, _set_once, stop)
    lines: asyncio.Queue[str | _NotText | None] = asyncio.Queue()
    threading.Thread(target=_read_lines, args=(loop, lines), daemon=True).start()
    failure = None
    ended = False  # the input ended (not Ctrl-C, SIGTERM or the connection)
    try:
        while not receiver.done():
            getter = asyncio.ensure_future(lines.get())
            await asyncio.wait({getter, receiver, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                break
            line = getter.result()
            if line is None:
                ended = True
                break
            if isinstance(line, _NotText):
                failure = line
                break
            try:
                await ws.send(line)
            except ConnectionClosed:
                break
        if ended and args.wait:
            # A server may still be answering what it got (a slow handler, a long input): closing now
            # would cut those replies off. Wait until it has been quiet for `--wait` seconds.
            await _until_quiet(receiver, stop, last_message, args.wait)
    except asyncio.CancelledError:
        # Ctrl-C (asyncio.run cancels this task): leave with the closing handshake all the same.
        await ws.close()
        receiver.cancel()
        raise
    # Closing is in order with the messages: every reply sent before the server saw our close arrives.
    await ws.close()
    status = await receiver
    if failure is not None:
        print(f"upwire: {failure}", file=sys.stderr)
        status = 1
    if interactive:
        print(
            f"closed: code {ws.close_code}" + (f" ({ws.close_reason})" if ws.close_reason else "")
        )
    return status


async def _until_quiet(
    receiver: asyncio.Task[int], stop: asyncio.Future[Any], last_message: list[float], quiet: float
) -> None:
    """Return once no message has come for `quiet` seconds, the connection ended or SIGTERM came; at the
    latest after ten times `quiet` (a server that never falls quiet, a ticker, does not hold it open)."""
    loop = asyncio.get_running_loop()
    # Counted from the end of the input at the earliest.
    start = loop.time()
    last_message[0] = max(last_message[0], start)
    deadline = start + _WAIT_AT_MOST * quiet
    while not receiver.done() and not stop.done():
        now = loop.time()
        left = min(last_message[0] + quiet, deadline) - now
        if left <= 0:
            return
        waits: set[asyncio.Future[Any]] = {receiver, stop}
        await asyncio.wait(waits, timeout=left, return_when=asyncio.FIRST_COMPLETED)


# `upwire connect --wait`: the longest wait at the end of the input, in times the quiet it waits for.
_WAIT_AT_MOST = 10


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"not a number of seconds (0 or more): {text!r}")
    return value


def _check_uri(text: str) -> str:
    try:
        parse_uri(text)
    except InvalidURI as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of the `upwire` command."""
    parser = argparse.ArgumentParser(prog="upwire", description="WebSockets from the wire up.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve_cmd = commands.add_parser("serve", help="run an echo or hello WebSocket server")
    mode = serve_cmd.add_mutually_exclusive_group()
    mode.add_argument(
        "--echo",
        dest="mode",
        action="store_const",
        const="echo",
        help="send every message back (the default)",
    )
    mode.add_argument(
        "--hello",
        dest="mode",
        action="store_const",
        const="hello",
        help='answer each name with "Hello <name>!"',
    )
    serve_cmd.set_defaults(mode="echo")
    serve_cmd.add_argument("--host", default="localhost", help="interface (default: localhost)")
    serve_cmd.add_argument(
        "--port",
        type=_port,
        default=8765,
        help="TCP port, 0-65535 (default: 8765; 0: any free one)",
    )
    serve_cmd.add_argument(
        "--max-message-size",
        type=_parse_size,
        default=1 << 20,
        help="largest message accepted, e.g. 1m, 16m, none (default: 1m)",
    )
    serve_cmd.add_argument("--no-ping", action="store_true", help="disable keepalive pings")

    connect_cmd = commands.add_parser("connect", help="connect to a server; lines typed are sent")
    connect_cmd.add_argument("uri", type=_check_uri, help="ws:// or wss:// URI")
    connect_cmd.add_argument(
        "--max-message-size",
        type=_parse_size,
        default=1 << 20,
        help="largest message accepted (default: 1m)",
    )
    connect_cmd.add_argument(
        "--wait",
        type=_seconds,
        default=0.5,
        metavar="SECONDS",
        help="when the input ends, print what comes until the server has been quiet this long "
        "(at most ten times this long in all), then close (default: 0.5; 0: close at once)",
    )
    wire_commands.add_subcommands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `upwire` command; return its exit code."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            return asyncio.run(_serve(args))
        if args.command == "dissect":
            return wire_commands.run_dissect(args)
        if args.command == "tap":
            return wire_commands.run_tap(args)
        return asyncio.run(_connect(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of the output went away (`upwire dissect capture | head`): stop quietly, as the
        # shell's tools do, and keep Python from complaining when it flushes stdout at exit.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE
    except OSError as exc:
        print(f"upwire: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except WebSocketError as exc:
        print(f"upwire: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
