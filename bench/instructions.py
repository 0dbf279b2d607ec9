"""Instructions a server executes per lone round trip (16 bytes by default), counted by valgrind's callgrind.

On a shared 2-core VM a change worth 2-5 % of a round trip's CPU hides in the timings' noise; the count of
instructions the server runs in user space is the same from run to run (within ~0.1 %). It does not see
cache misses, the kernel or the context switch, so it complements the timed benchmark, never replaces it.

    bench/.venv/bin/python bench/instructions.py                      # upwire (both APIs), picows, raw
    bench/.venv/bin/python bench/instructions.py --upwire-ref HEAD~3  # the same, plus upwire as of a commit
    bench/.venv/bin/python bench/instructions.py --servers upwire --loops uvloop --round-trips 5000
    bench/.venv/bin/python bench/instructions.py --size 65536 --round-trips 1000 --syscalls
    bench/.venv/bin/python bench/instructions.py --handshakes --round-trips 300

Each server runs alone under `valgrind --tool=callgrind --instr-atstart=no`. A blocking client on a raw
socket opens one connection, sends 300 masked binary frames of `--size` bytes one at a time (each waits
for its echo), then switches the counting on (`callgrind_control -i on`), does `--round-trips` more, switches it
off and closes. `--handshakes` counts whole connections instead, one at a time: connect, upgrade, send a close
frame, read until the server closes (100 before counting). Needs valgrind (Debian: `apt-get install valgrind`).

A system call costs hundreds of nanoseconds of kernel time that callgrind does not count (Python 3.11's
`asyncio.Future()` without a loop makes a `getpid`, say). `--syscalls` runs each server once more without
valgrind, under `strace -c -f` for the counted round trips, and prints the system calls per round trip
(needs strace).
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRV = os.path.join(HERE, "servers")
DEFAULT_PY = os.path.join(HERE, ".venv", "bin", "python")
SCRIPTS = {
    "upwire": "upwire_echo.py",
    "upwire-listener": "upwire_listener_echo.py",
    "picows": "picows_echo.py",
    "websockets": "websockets_echo.py",
    "aiohttp": "aiohttp_echo.py",
    "raw": "raw_echo.py",  # no handshake: the frame comes back as sent
}
WARM_UP = 300


def masked_frame(size: int) -> bytes:
    """A masked binary frame of `size` payload bytes, as a client sends it."""
    if size < 126:
        length = bytes([0x80 | size])
    elif size < 1 << 16:
        length = bytes([0x80 | 126]) + size.to_bytes(2, "big")
    else:
        length = bytes([0x80 | 127]) + size.to_bytes(8, "big")
    return b"\x82" + length + b"\x9c\x3a\x5e\x71" + bytes(b & 0xFF ^ 0x5A for b in range(size))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def connect(port: int, deadline: float) -> socket.socket:
    while True:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
            continue
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock


def upgrade(sock: socket.socket) -> None:
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError("the server closed the connection during the handshake")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"no 101: {head[:80]!r}")


CLOSE_FRAME = bytes([0x88, 0x82, 0, 0, 0, 0, 0x03, 0xE8])  # masked, code 1000


def round_trips(sock: socket.socket, frame: bytes, count: int, answer_size: int) -> None:
    for _ in range(count):
        sock.sendall(frame)
        got = 0
        while got < answer_size:
            chunk = sock.recv(answer_size - got)
            if not chunk:
                raise RuntimeError("the server closed the connection")
            got += len(chunk)


class RoundTrips:
    """The load counted by default: lone echoes of one frame on one connection."""

    unit = "round trip"

    def __init__(self, frame: bytes, raw: bool) -> None:
        self.frame, self.raw = frame, raw
        self.answer = len(frame) if raw else len(frame) - 4  # the echo is not masked
        self.sock: socket.socket | None = None

    def open(self, port: int, deadline: float) -> None:
        self.sock = connect(port, deadline)
        if not self.raw:
            upgrade(self.sock)
        round_trips(self.sock, self.frame, WARM_UP, self.answer)

    def run(self, count: int) -> None:
        assert self.sock is not None
        round_trips(self.sock, self.frame, count, self.answer)

    def close(self) -> None:
        if self.sock is not None:
            with self.sock:
                if not self.raw:
                    self.sock.sendall(CLOSE_FRAME)
                    self.sock.recv(64)
            self.sock = None


class Handshakes:
    """`--handshakes`: whole connections, one at a time: connect, upgrade, closing handshake, TCP close."""

    unit = "connection"

    def open(self, port: int, deadline: float) -> None:
        connect(port, deadline).close()  # the server listens
        self.port = port
        self.run(WARM_UP // 3)

    def run(self, count: int) -> None:
        for _ in range(count):
            with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                upgrade(sock)
                sock.sendall(CLOSE_FRAME)
                while sock.recv(4096):  # the close frame, then the server closes TCP
                    pass

    def close(self) -> None:
        pass


def start(cmd: list[str], env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [part.replace("{port}", str(port)) for part in cmd],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop(server: subprocess.Popen[bytes]) -> None:
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(60)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def measure(
    cmd: list[str], env: dict[str, str], load: RoundTrips | Handshakes, count: int
) -> float:
    """Instructions per unit of `load` of the server that `cmd` starts."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        server = start(
            [
                "valgrind",
                "--tool=callgrind",
                "--instr-atstart=no",
                f"--callgrind-out-file={out}",
                *cmd,
            ],
            env,
            port,
        )
        try:
            load.open(port, time.monotonic() + 120)
            try:
                control = ["callgrind_control", "-i"]
                subprocess.run([*control, "on", str(server.pid)], check=True, capture_output=True)
                load.run(count)
                subprocess.run([*control, "off", str(server.pid)], check=True, capture_output=True)
            finally:
                load.close()
        finally:
            stop(server)
        with open(out) as f:
            text = f.read()
        # `summary:` counts only what was dumped last; `totals:` the whole run (here: counting on).
        match = re.search(r"^totals: (\d+)", text, re.M) or re.search(
            r"^summary: (\d+)", text, re.M
        )
        if match is None:
            raise RuntimeError(f"no instruction count in {out}")
        return int(match.group(1)) / count


def syscalls(
    cmd: list[str], env: dict[str, str], load: RoundTrips | Handshakes, count: int
) -> dict[str, float]:
    """System calls per unit of `load` of the server that `cmd` starts, by name (strace -c)."""
    port = free_port()
    server = start(cmd, env, port)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "strace.txt")
        try:
            load.open(port, time.monotonic() + 60)
            try:
                tracer = subprocess.Popen(
                    ["strace", "-c", "-f", "-U", "name,calls", "-o", out, "-p", str(server.pid)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
                assert tracer.stderr is not None
                tracer.stderr.readline()  # "strace: Process N attached": counting from here
                load.run(count)
                tracer.send_signal(signal.SIGINT)
                tracer.wait(30)
            finally:
                load.close()
        finally:
            stop(server)
        counts = {}
        with open(out) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2 and parts[1].isdigit() and parts[0] != "total":
                    counts[parts[0]] = int(parts[1]) / count
        return counts


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--servers", default="upwire,upwire-listener,picows,raw", help=", ".join(SCRIPTS)
    )
    p.add_argument("--loops", default="asyncio,uvloop")
    p.add_argument(
        "--round-trips", type=int, default=2000, help="how many are counted (connections too)"
    )
    p.add_argument("--size", type=int, default=16, help="payload bytes per message")
    p.add_argument(
        "--upwire-ref", action="append", default=[], help="also upwire as of this commit"
    )
    p.add_argument("--python", default=DEFAULT_PY if os.path.exists(DEFAULT_PY) else sys.executable)
    p.add_argument(
        "--syscalls", action="store_true", help="also system calls per round trip (strace -c)"
    )
    p.add_argument(
        "--handshakes",
        action="store_true",
        help="count per whole connection (upgrade and closing handshake) instead (not raw)",
    )
    a = p.parse_args()
    for tool in ("valgrind", "callgrind_control") + (("strace",) if a.syscalls else ()):
        if shutil.which(tool) is None:
            sys.exit(f"instructions.py: {tool} not found (Debian: apt-get install valgrind)")
    runs: list[tuple[str, str, dict[str, str]]] = []
    for name in a.servers.split(","):
        if name not in SCRIPTS:
            sys.exit(f"instructions.py: unknown server {name!r} (known: {', '.join(SCRIPTS)})")
        runs.append((name, SCRIPTS[name], dict(os.environ)))
    if a.upwire_ref:
        sys.path.insert(0, HERE)
        from bench import upwire_snapshot

        for ref in a.upwire_ref:
            sha, src = upwire_snapshot(ref)
            env = dict(os.environ, PYTHONPATH=src)
            for name in ("upwire", "upwire-listener"):
                if name in a.servers.split(","):
                    runs.append((f"{name}@{sha}", SCRIPTS[name], env))
    frame = masked_frame(a.size)
    if a.handshakes:
        runs = [run for run in runs if run[0] != "raw"]  # it echoes the request: no handshake
        what = "connection (upgrade, closing handshake)"
    else:
        what = f"lone {a.size} B round trip"
    print(f"instructions per {what}, server user space ({a.round_trips} of them)")
    for loop in a.loops.split(","):
        for name, script, env in runs:
            cmd = [a.python, os.path.join(SRV, script), "--port", "{port}", "--loop", loop]
            load = Handshakes() if a.handshakes else RoundTrips(frame, name == "raw")
            per_rt = measure(cmd, env, load, a.round_trips)
            line = f"{name + '-' + loop:32s} {per_rt:10,.0f}"
            if a.syscalls:
                load = Handshakes() if a.handshakes else RoundTrips(frame, name == "raw")
                calls = syscalls(cmd, env, load, a.round_trips)
                line += "   " + " ".join(
                    f"{k} {v:.2f}" for k, v in sorted(calls.items()) if v >= 0.01
                )
            print(line, flush=True)


if __name__ == "__main__":
    main()
