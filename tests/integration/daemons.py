"""Real proxies for the tests: Debian's tinyproxy (forward) and nginx (reverse), each run by the test.

Each daemon gets a config of the test's own, in a fresh folder, listens on 127.0.0.1 on a free high port,
runs in the foreground as a child of the test, and is stopped by its PID at teardown. Its log is kept so a
test can see what it did (tinyproxy logs every CONNECT) and so a failure to start says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest

START_TIMEOUT_S = 10.0


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def private_folder(prefix: str) -> Path:
    """A fresh folder readable by everyone: nginx started as root runs its workers as `nobody`."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    folder.chmod(0o755)
    return folder


def need(program: str) -> str:
    path = shutil.which(program) or next(
        (p for p in (f"/usr/sbin/{program}", f"/usr/bin/{program}") if os.path.exists(p)), None
    )
    if path is None:
        pytest.fail(
            f"{program} is needed for this test: apt-get install {program} (scripts/install.sh)"
        )
    return path


class Daemon:
    """A proxy process run in the foreground; `stop()` ends it by PID."""

    def __init__(self, name: str, folder: Path, port: int) -> None:
        self.name = name
        self.folder = folder
        self.port = port
        self.log_path = folder / "output.log"
        self.process: asyncio.subprocess.Process | None = None

    @property
    def log(self) -> str:
        """Everything the daemon wrote so far (stdout, stderr and its log files)."""
        text = ""
        for path in sorted(self.folder.glob("*.log")):
            text += path.read_text(errors="replace")
        return text

    async def start(self, *command: str) -> None:
        with self.log_path.open("wb") as output:
            self.process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=asyncio.subprocess.STDOUT,
                cwd=self.folder,
            )
        deadline = asyncio.get_running_loop().time() + START_TIMEOUT_S
        while True:
            if self.process.returncode is not None:
                raise AssertionError(
                    f"{self.name} exited with {self.process.returncode} at start:\n{self.log}"
                )
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                if asyncio.get_running_loop().time() > deadline:
                    await self.stop()
                    raise AssertionError(
                        f"{self.name} did not listen on port {self.port} within {START_TIMEOUT_S} s:\n"
                        f"{self.log}"
                    ) from None
                await asyncio.sleep(0.05)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return

    async def stop(self) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 5)
        except TimeoutError:
            process.kill()
            await process.wait()


async def start_tinyproxy(
    connect_ports: Sequence[int], basic_auth: tuple[str, str] | None = None
) -> Daemon:
    """Start tinyproxy on a free port, allowing CONNECT to `connect_ports` only.

    With `basic_auth=(user, password)` it requires those credentials (407 without them; tinyproxy 1.11
    answers wrong ones with 401).
    """
    program = need("tinyproxy")
    folder = private_folder("upwire-tinyproxy-")
    port = free_port()
    lines = [
        f"Port {port}",
        "Listen 127.0.0.1",
        "Timeout 60",
        "MaxClients 50",
        "LogLevel Connect",
        "Allow 127.0.0.1",
        "DisableViaHeader Yes",
        *(f"ConnectPort {p}" for p in connect_ports),
    ]
    if basic_auth is not None:
        lines.append(f"BasicAuth {basic_auth[0]} {basic_auth[1]}")
    config = folder / "tinyproxy.conf"
    config.write_text("\n".join(lines) + "\n")
    daemon = Daemon("tinyproxy", folder, port)
    await daemon.start(program, "-d", "-c", str(config))
    return daemon


NGINX_FRAME = """\
worker_processes 1;
pid {folder}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    access_log {folder}/access.log;
    client_body_temp_path {folder}/client_body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
{body}
}}
"""


async def start_nginx(http_body: str) -> Daemon:
    """Start nginx with `http_body` inside its `http {}` block; `{port}` in it is replaced by its port."""
    program = need("nginx")
    folder = private_folder("upwire-nginx-")
    port = free_port()
    body = http_body.replace("{port}", str(port))
    config = folder / "nginx.conf"
    config.write_text(NGINX_FRAME.format(folder=folder, body=body))
    daemon = Daemon("nginx", folder, port)
    await daemon.start(
        program,
        "-c",
        str(config),
        "-p",
        str(folder),
        "-e",
        str(folder / "error.log"),
        "-g",
        "daemon off;",
    )
    return daemon


def remove(daemon: Daemon) -> None:
    shutil.rmtree(daemon.folder, ignore_errors=True)
