"""Helpers that run the third-party peers and record what each side of a connection observed.

The peers are implementations nobody here wrote: Node's ``ws`` (run as a subprocess, driven over
its stdin and reporting on its stdout, see ``node/peer.js``) and Python's ``websockets`` (run in
the test's own event loop). The recorders below keep what upwire and ``websockets`` handlers saw,
so a test can assert on both ends of the same connection.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import random
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import websockets
import websockets.asyncio.server
from websockets.frames import Frame

import upwire

NODE_DIR = Path(__file__).parent / "node"
# Generous: a loaded CI machine may be slow, and a hung peer must still end the test.
STEP_TIMEOUT_S = 15.0

Message = str | bytes
# What the server and client fixtures of conftest.py return.
StartServer = Callable[..., Awaitable[str]]


def binary_payload(size: int) -> bytes:
    """Return ``size`` reproducible pseudo-random bytes (all 256 byte values occur)."""
    return random.Random(size).randbytes(size)


def text_payload(size_bytes: int) -> str:
    """Return a text of exactly ``size_bytes`` UTF-8 bytes mixing 1-, 2-, 3- and 4-byte characters."""
    unit = "aé€🌍"  # 1 + 2 + 3 + 4 = 10 bytes in UTF-8
    text = unit * (size_bytes // 10) + "x" * (size_bytes % 10)
    assert len(text.encode()) == size_bytes
    return text


# The message cases every peer must exchange with upwire, in both directions.
PAYLOADS: dict[str, Message] = {
    "text": "hello, upwire",
    "non-ascii-text": "héllo wörld — Grüße, 你好, 🌍",
    "binary": bytes(range(256)),
    "empty-text": "",
    "empty-binary": b"",
    "binary-125-bytes": binary_payload(125),
    "binary-126-bytes": binary_payload(126),
    "binary-65535-bytes": binary_payload(65535),
    "binary-65536-bytes": binary_payload(65536),
    "binary-1MiB": binary_payload(2**20),
    "text-126-bytes": text_payload(126),
    "text-65536-bytes": text_payload(65536),
    "text-1MiB": text_payload(2**20),
}


def as_bytes(message: Message) -> bytes:
    """Return the bytes a message carries on the wire (before any compression)."""
    return message.encode() if isinstance(message, str) else message


def sha256(message: Message) -> str:
    """Return the hex SHA-256 of the bytes a message carries."""
    return hashlib.sha256(as_bytes(message)).hexdigest()


def b64(data: bytes) -> str:
    """Return ``data`` as base64 text, the way the Node peer exchanges payloads."""
    return base64.b64encode(data).decode("ascii")


def assert_node_saw(event: dict[str, Any], expected: Message) -> None:
    """Assert that a Node ``message`` event describes exactly ``expected`` (type, size, bytes)."""
    assert event["event"] == "message", event
    assert event["binary"] is isinstance(expected, bytes), event
    assert event["size"] == len(as_bytes(expected)), event
    assert event["sha256"] == sha256(expected), "the Node peer got different bytes"
    if "text" in event:
        assert event["text"] == expected


def describe(message: Message) -> str:
    """Return a short description of a message for assertion messages."""
    kind = "text" if isinstance(message, str) else "binary"
    return f"{kind} message of {len(as_bytes(message))} bytes, sha256 {sha256(message)[:16]}"


class NodePeerError(AssertionError):
    """The Node peer reported an error, exited early, or did not report what was expected."""


class NodePeer:
    """A Node ``ws`` script running as a subprocess, driven by JSON lines (see ``node/peer.js``)."""

    def __init__(self, process: asyncio.subprocess.Process, name: str) -> None:
        self.process = process
        self.name = name
        self.seen: list[dict[str, Any]] = []
        self._pending: list[dict[str, Any]] = []
        self._arrived = asyncio.Event()
        self._stderr = bytearray()
        self._exited = False
        self._tasks = [
            asyncio.create_task(self._read_events()),
            asyncio.create_task(self._read_stderr()),
        ]

    @classmethod
    async def start(cls, script: str, *arguments: str) -> NodePeer:
        """Start ``node node/SCRIPT ARGUMENTS...`` with piped stdin, stdout and stderr."""
        node = shutil.which("node")
        if node is None:
            pytest.fail("Node.js is needed for the ws interop tests: apt-get install nodejs npm")
        if not (NODE_DIR / "node_modules" / "ws").is_dir():
            pytest.fail(
                f"the npm package ws is missing: run `npm install` in {NODE_DIR} "
                "(scripts/install.sh does it)"
            )
        process = await asyncio.create_subprocess_exec(
            node,
            str(NODE_DIR / script),
            *arguments,
            cwd=NODE_DIR,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=2**20,
        )
        return cls(process, script)

    async def _read_events(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            if not line.strip():
                continue
            event = json.loads(line)
            self.seen.append(event)
            self._pending.append(event)
            self._arrived.set()
        self._exited = True
        self._arrived.set()

    async def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        async for line in self.process.stderr:
            self._stderr += line

    def _failure(self, what: str) -> NodePeerError:
        stderr = self._stderr.decode(errors="replace").strip()
        return NodePeerError(
            f"{self.name} (pid {self.process.pid}): {what}; it reported {self.seen}"
            + (f"; stderr: {stderr}" if stderr else "")
        )

    async def next_event(self, kind: str, timeout_s: float = STEP_TIMEOUT_S) -> dict[str, Any]:
        """Return the first not yet consumed event of ``kind``, waiting for it if needed.

        Raises:
            NodePeerError: if the peer reports an error first, exits, or is silent too long.
        """
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    for index, event in enumerate(self._pending):
                        if event["event"] == kind:
                            del self._pending[index]
                            return event
                        if event["event"] == "error":
                            raise self._failure(f"reported an error while a {kind!r} was awaited")
                        if event["event"] == "close" and kind not in ("done", "error"):
                            # Nothing but command results can follow a close.
                            raise self._failure(f"closed while a {kind!r} was awaited")
                    if self._exited:
                        raise self._failure(f"exited before reporting a {kind!r} event")
                    self._arrived.clear()
                    await self._arrived.wait()
        except TimeoutError:
            raise self._failure(f"reported no {kind!r} event within {timeout_s} s") from None

    def pending(self, kind: str) -> list[dict[str, Any]]:
        """Return the not yet consumed events of ``kind`` (without consuming them)."""
        return [event for event in self._pending if event["event"] == kind]

    async def command(self, op: str, **fields: Any) -> None:
        """Send one command to the peer and wait until it reports that the command ran."""
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"op": op, **fields}).encode() + b"\n")
        await self.process.stdin.drain()
        done = await self.next_event("done")
        assert done["command"] == op, done

    async def send(self, message: Message) -> None:
        """Make the peer send ``message`` as one unfragmented text or binary message."""
        await self.command("send", data=b64(as_bytes(message)), binary=isinstance(message, bytes))

    async def send_fragments(
        self, fragments: list[bytes], *, binary: bool, ping_between: bytes | None = None
    ) -> None:
        """Make the peer send one message as one frame per fragment (``fin`` on the last).

        With ``ping_between``, the peer also sends a ping with that payload after each fragment
        but the last, in the middle of the message.
        """
        fields: dict[str, Any] = {
            "fragments": [b64(piece) for piece in fragments],
            "binary": binary,
        }
        if ping_between is not None:
            fields["ping_between"] = b64(ping_between)
        await self.command("send_fragments", **fields)

    async def ping(self, data: bytes) -> None:
        """Make the peer send a ping with ``data``."""
        await self.command("ping", data=b64(data))

    async def close(self, code: int, reason: str) -> None:
        """Make the peer start the closing handshake with ``code`` and ``reason``."""
        await self.command("close", code=code, reason=reason)

    async def stop(self) -> None:
        """End the peer: close its stdin, then kill it by PID if it has not exited in time."""
        if self.process.returncode is None:
            if self.process.stdin is not None:
                self.process.stdin.close()
            try:
                await asyncio.wait_for(self.process.wait(), timeout=5)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


StartNodeServer = Callable[..., Awaitable[tuple[NodePeer, str]]]
StartNodeClient = Callable[..., Awaitable[NodePeer]]


@dataclass
class ConnectionRecord:
    """What one server handler observed on its connection, filled in as the handler runs."""

    messages: list[Message] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str | None = None
    finished: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    async def wait_finished(self, timeout_s: float = STEP_TIMEOUT_S) -> None:
        """Wait until the handler has returned; re-raise what it raised if it failed."""
        try:
            await asyncio.wait_for(asyncio.shield(self.finished), timeout_s)
        except TimeoutError:
            raise AssertionError(
                f"the server handler did not finish within {timeout_s} s"
            ) from None

    def _finish(self, error: BaseException | None) -> None:
        if self.finished.done():
            return
        if error is None:
            self.finished.set_result(None)
        else:
            self.finished.set_exception(error)


Script = Callable[[Any], Awaitable[None]]


class UpwireEchoHandler:
    """An upwire server handler: runs an optional script, then echoes every message it receives.

    Each connection gets a :class:`ConnectionRecord`; ``record`` is the most recent one.
    """

    def __init__(self, script: Script | None = None) -> None:
        self.script = script
        self.records: list[ConnectionRecord] = []
        self._first = asyncio.get_running_loop().create_future()

    @property
    def record(self) -> ConnectionRecord:
        assert self.records, "no connection reached the upwire server"
        return self.records[-1]

    async def __call__(self, ws: upwire.ServerConnection) -> None:
        record = ConnectionRecord()
        self.records.append(record)
        error: BaseException | None = None
        try:
            if self.script is not None:
                await self.script(ws)
            async for message in ws:
                record.messages.append(message)
                await ws.send(message)
        except upwire.ConnectionClosed:
            pass
        except Exception as exc:
            error = exc
            raise
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.wait_closed(), STEP_TIMEOUT_S)
            record.close_code = ws.close_code
            record.close_reason = ws.close_reason
            record._finish(error)


class WebsocketsEchoHandler:
    """The same as :class:`UpwireEchoHandler`, for a ``websockets`` server."""

    def __init__(self, script: Script | None = None) -> None:
        self.script = script
        self.records: list[ConnectionRecord] = []

    @property
    def record(self) -> ConnectionRecord:
        assert self.records, "no connection reached the websockets server"
        return self.records[-1]

    async def __call__(self, ws: websockets.asyncio.server.ServerConnection) -> None:
        record = ConnectionRecord()
        self.records.append(record)
        error: BaseException | None = None
        try:
            if self.script is not None:
                await self.script(ws)
            async for message in ws:
                record.messages.append(message)
                await ws.send(message)
        except websockets.ConnectionClosed:
            pass
        except Exception as exc:
            error = exc
            raise
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.wait_closed(), STEP_TIMEOUT_S)
            record.close_code = ws.close_code
            record.close_reason = ws.close_reason
            record._finish(error)


def frames_received_by_websockets(caplog: pytest.LogCaptureFixture, role: str) -> list[Frame]:
    """Return the frames a ``websockets`` ``role`` ("server" or "client") logged as received.

    Needs DEBUG logging on ``websockets`` (:func:`enable_websockets_frame_log`).

    ``websockets`` logs each frame it parses as ``"< %s"`` with the :class:`Frame` as argument,
    which shows what upwire put on the wire: opcodes, ``fin`` bits and payloads.
    """
    frames = []
    for record in caplog.records:
        if record.name != f"websockets.{role}":
            continue
        if record.msg == "< %s" and record.args and isinstance(record.args, tuple):
            frame = record.args[0]
            if isinstance(frame, Frame):
                frames.append(frame)
    return frames


def enable_websockets_frame_log(caplog: pytest.LogCaptureFixture) -> None:
    """Make ``websockets`` log every frame (it checks the level once per connection)."""
    caplog.set_level(logging.DEBUG, logger="websockets")
