"""Instructions a server executes per lone 16-byte round trip, counted by valgrind's callgrind.

On a shared 2-core VM a change worth 2-5 % of a round trip's CPU hides in the timings' noise; the count of
instructions the server runs in user space is the same from run to run (within ~0.1 %). It does not see
cache misses, the kernel or the context switch, so it complements the timed benchmark, never replaces it.

    bench/.venv/bin/python bench/instructions.py                      # upwire (both APIs), picows, raw
    bench/.venv/bin/python bench/instructions.py --upwire-ref HEAD~3  # the same, plus upwire as of a commit
    bench/.venv/bin/python bench/instructions.py --servers upwire --loops uvloop --round-trips 5000

Each server runs alone under `valgrind --tool=callgrind --instr-atstart=no`. A blocking client on a raw
socket opens one connection, sends 300 masked 16-byte binary frames one at a time (each waits for its
echo), then switches the counting on (`callgrind_control -i on`), does `--round-trips` more, switches it
off and closes. Needs valgrind (Debian: `apt-get install valgrind`).

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
FRAME = bytes([0x82, 0x80 | 16]) + b"\x9c\x3a\x5e\x71" + bytes(b ^ 0x5A for b in range(16))


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


def round_trips(sock: socket.socket, count: int, answer_size: int) -> None:
    for _ in range(count):
        sock.sendall(FRAME)
        got = 0
        while got < answer_size:
            chunk = sock.recv(answer_size - got)
            if not chunk:
                raise RuntimeError("the server closed the connection")
            got += len(chunk)


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


def measure(cmd: list[str], env: dict[str, str], raw: bool, count: int) -> float:
    """Instructions per round trip of the server that `cmd` starts."""
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
            sock = connect(port, time.monotonic() + 120)
            with sock:
                if not raw:
                    upgrade(sock)
                answer = len(FRAME) if raw else len(FRAME) - 4  # the echo is not masked
                round_trips(sock, WARM_UP, answer)
                control = ["callgrind_control", "-i"]
                subprocess.run([*control, "on", str(server.pid)], check=True, capture_output=True)
                round_trips(sock, count, answer)
                subprocess.run([*control, "off", str(server.pid)], check=True, capture_output=True)
                if not raw:
                    sock.sendall(bytes([0x88, 0x82, 0, 0, 0, 0, 0x03, 0xE8]))
                    sock.recv(64)
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


def syscalls(cmd: list[str], env: dict[str, str], raw: bool, count: int) -> dict[str, float]:
    """System calls per round trip of the server that `cmd` starts, by name (strace -c)."""
    port = free_port()
    server = start(cmd, env, port)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "strace.txt")
        try:
            sock = connect(port, time.monotonic() + 60)
            with sock:
                if not raw:
                    upgrade(sock)
                answer = len(FRAME) if raw else len(FRAME) - 4
                round_trips(sock, WARM_UP, answer)
                tracer = subprocess.Popen(
                    ["strace", "-c", "-f", "-U", "name,calls", "-o", out, "-p", str(server.pid)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
                assert tracer.stderr is not None
                tracer.stderr.readline()  # "strace: Process N attached": counting from here
                round_trips(sock, count, answer)
                tracer.send_signal(signal.SIGINT)
                tracer.wait(30)
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
    p.add_argument("--round-trips", type=int, default=2000)
    p.add_argument(
        "--upwire-ref", action="append", default=[], help="also upwire as of this commit"
    )
    p.add_argument("--python", default=DEFAULT_PY if os.path.exists(DEFAULT_PY) else sys.executable)
    p.add_argument(
        "--syscalls", action="store_true", help="also system calls per round trip (strace -c)"
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
    print(f"instructions per lone 16 B round trip, server user space ({a.round_trips} round trips)")
    for loop in a.loops.split(","):
        for name, script, env in runs:
            cmd = [a.python, os.path.join(SRV, script), "--port", "{port}", "--loop", loop]
            per_rt = measure(cmd, env, name == "raw", a.round_trips)
            line = f"{name + '-' + loop:32s} {per_rt:10,.0f}"
            if a.syscalls:
                calls = syscalls(cmd, env, name == "raw", a.round_trips)
                line += "   " + " ".join(
                    f"{k} {v:.2f}" for k, v in sorted(calls.items()) if v >= 0.01
                )
            print(line, flush=True)


if __name__ == "__main__":
    main()
