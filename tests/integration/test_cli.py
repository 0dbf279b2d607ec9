"""The `upwire` command and the hello example, run as subprocesses (`sys.executable -m upwire ...`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import upwire

from .helpers import StartServer, echo, uri
from .wire import RawPeer, plain_get

REPO = Path(__file__).resolve().parents[2]
HELLO = REPO / "examples" / "hello"
# Run this checkout's upwire, installed or not.
ENV = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
TEST_TIMEOUT_S = 15.0


async def run(*args: str, stdin: bytes = b"") -> tuple[int, str, str]:
    """Run `python args...` to completion; return its exit code, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
        env=ENV,
    )
    try:
        out, err = await process.communicate(stdin)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@contextlib.asynccontextmanager
async def background_server(*args: str) -> AsyncIterator[int]:
    """Start a server subprocess on port 0; yield the port it prints; stop it (by its PID) at the end."""
    async with server_process(*args) as (_, port):
        yield port


@contextlib.asynccontextmanager
async def server_process(*args: str) -> AsyncIterator[tuple[asyncio.subprocess.Process, int]]:
    """`background_server`, yielding the process too."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
        env=ENV,
    )
    try:
        assert process.stdout is not None
        banner = (await process.stdout.readline()).decode()
        found = re.search(r"ws://127\.0\.0\.1:(\d+)/", banner)
        assert found, f"no address in the server's first line: {banner!r}"
        yield process, int(found.group(1))
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                async with asyncio.timeout(5):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()


async def connect_process(*args: str, stdin: int) -> asyncio.subprocess.Process:
    """`upwire connect ARGS` running, its output piped (stop it by its PID)."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "upwire",
        "connect",
        *args,
        stdin=stdin,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
        env=ENV,
    )


def assert_one_line_error(stderr: str) -> None:
    assert "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr


async def test_serve_echo_and_connect_from_a_pipe_print_the_echoes() -> None:
    async with (
        asyncio.timeout(TEST_TIMEOUT_S),
        background_server(
            "-m", "upwire", "serve", "--echo", "--host", "127.0.0.1", "--port", "0"
        ) as port,
    ):
        lines = "".join(f"line {i}\n" for i in range(20))
        code, out, err = await run(
            "-m", "upwire", "connect", f"ws://127.0.0.1:{port}/", stdin=lines.encode()
        )
        assert (code, out, err) == (0, lines, "")


async def test_connect_stops_at_a_line_that_is_not_utf8_after_the_lines_before_it(
    start_server: StartServer,
) -> None:
    server = await start_server(echo)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        code, out, err = await run(
            "-m", "upwire", "connect", uri(server), stdin=b"first\n\xff\xfe\nlast\n"
        )
    assert (code, out) == (1, "first\n")
    assert_one_line_error(err)
    assert "line 2 of the input is not UTF-8" in err


@pytest.mark.parametrize(
    ("stop_signal", "expected_code"), [(signal.SIGINT, 130), (signal.SIGTERM, 0)]
)
async def test_connect_stopped_by_a_signal_closes_with_1000(
    start_server: StartServer, stop_signal: signal.Signals, expected_code: int
) -> None:
    closes: asyncio.Queue[int | None] = asyncio.Queue()

    async def watch(ws: upwire.ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)
        closes.put_nowait(ws.close_code)

    server = await start_server(watch)
    process = await connect_process(uri(server), stdin=asyncio.subprocess.PIPE)
    assert process.stdin is not None and process.stdout is not None
    try:
        async with asyncio.timeout(TEST_TIMEOUT_S):
            process.stdin.write(b"hello\n")  # stdin stays open: the session goes on
            assert await process.stdout.readline() == b"hello\n"
            process.send_signal(stop_signal)
            _, err = await process.communicate()
            assert await closes.get() == 1000
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == expected_code, err
    assert b"Traceback" not in err and b"Fatal" not in err, err


async def test_serve_hello_answers_hello_alice() -> None:
    async with (
        asyncio.timeout(TEST_TIMEOUT_S),
        background_server(
            "-m", "upwire", "serve", "--hello", "--host", "127.0.0.1", "--port", "0"
        ) as port,
    ):
        code, out, err = await run(
            "-m", "upwire", "connect", f"ws://127.0.0.1:{port}/", stdin=b"Alice\nBob\nCarol\n"
        )
        assert (code, out, err) == (0, "Hello Alice!\nHello Bob!\nHello Carol!\n", "")


async def test_connect_to_a_closed_port_exits_1_with_a_one_line_error() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago and has no listener
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with asyncio.timeout(TEST_TIMEOUT_S):
        code, out, err = await run("-m", "upwire", "connect", f"ws://127.0.0.1:{port}/")
    assert code == 1
    assert out == ""
    assert_one_line_error(err)
    assert err.startswith("upwire: ")
    assert str(port) in err
    assert "Connection refused" in err  # asyncio's own message only repeats the address
    # Credentials in the URI are never printed.
    code, out, err = await run("-m", "upwire", "connect", f"ws://alice:s3cret@127.0.0.1:{port}/")
    assert code == 1
    assert "s3cret" not in err and "ws://***@127.0.0.1" in err, err


async def test_connect_from_a_pipe_waits_for_replies_still_coming_when_the_input_ends(
    start_server: StartServer,
) -> None:
    # A server that answers late: closing as soon as the input ends cut the replies off (exit 0, no
    # output). The client waits until the server has been quiet for --wait seconds.
    async def late_echo(ws: upwire.ServerConnection) -> None:
        async for message in ws:
            await asyncio.sleep(0.2)
            await ws.send(message)

    server = await start_server(late_echo)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        code, out, err = await run("-m", "upwire", "connect", uri(server), stdin=b"a\nb\n")
        assert (code, out, err) == (0, "a\nb\n", "")
        code, out, err = await run(
            "-m", "upwire", "connect", "--wait", "0", uri(server), stdin=b"a\nb\n"
        )
        assert (code, out) == (0, "")  # closes at once: what comes after is not waited for


@pytest.mark.parametrize("stop_signal", [None, signal.SIGTERM, signal.SIGINT])
async def test_the_wait_at_the_end_of_the_input_is_bounded_and_a_signal_ends_it_with_1000(
    start_server: StartServer, stop_signal: signal.Signals | None
) -> None:
    # A server that never falls quiet (a ticker): the wait for quiet ends at ten times --wait, and
    # SIGTERM or Ctrl-C during it closes with 1000 at once (it waited for ever, ignoring SIGTERM).
    closes: asyncio.Queue[int | None] = asyncio.Queue()

    async def ticker(ws: upwire.ServerConnection) -> None:
        with contextlib.suppress(upwire.ConnectionClosed):
            while True:
                await ws.send("tick")
                await asyncio.sleep(0.05)
        await ws.wait_closed()
        closes.put_nowait(ws.close_code)

    server = await start_server(ticker)
    wait = "0.3" if stop_signal is None else "5"
    process = await connect_process("--wait", wait, uri(server), stdin=asyncio.subprocess.DEVNULL)
    assert process.stdout is not None
    try:
        async with asyncio.timeout(TEST_TIMEOUT_S):
            assert await process.stdout.readline() == b"tick\n"  # the input has ended: waiting
            started = asyncio.get_running_loop().time()
            if stop_signal is not None:
                await asyncio.sleep(0.3)
                process.send_signal(stop_signal)
            _, err = await process.communicate()
            took = asyncio.get_running_loop().time() - started
            assert await closes.get() == 1000
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == {None: 0, signal.SIGTERM: 0, signal.SIGINT: 130}[stop_signal], err
    assert took < (4.0 if stop_signal is None else 2.0), took
    assert b"Traceback" not in err, err


async def test_serve_on_an_address_it_cannot_listen_on_says_which_in_one_line() -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        code, out, err = await run(
            "-m", "upwire", "serve", "--echo", "--host", "256.1.1.1", "--port", "0"
        )
    assert (code, out) == (1, "")
    assert_one_line_error(err)
    assert "cannot listen on 256.1.1.1:0" in err


async def test_connect_with_a_uri_that_is_not_websocket_exits_2() -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        code, out, err = await run("-m", "upwire", "connect", "http://x")
    assert (code, out) == (2, "")
    assert "Traceback" not in err
    assert "ws://" in err


async def test_serve_with_a_port_out_of_range_exits_2_without_listening() -> None:
    # Not wrapped around to another port (99999 % 65536), not a traceback.
    async with asyncio.timeout(TEST_TIMEOUT_S):
        for port in ("99999", "-1", "http"):
            code, out, err = await run("-m", "upwire", "serve", "--echo", "--port", port)
            assert (code, out) == (2, ""), (port, out, err)
            assert "Traceback" not in err
            assert "not a TCP port (0-65535)" in err


async def test_connect_to_a_server_answering_404_exits_1_naming_the_status(
    start_server: StartServer,
) -> None:
    server = await start_server({"/chat": echo})
    async with asyncio.timeout(TEST_TIMEOUT_S):
        code, out, err = await run("-m", "upwire", "connect", uri(server, "/nowhere"))
    assert (code, out) == (1, "")
    assert_one_line_error(err)
    assert "404" in err


async def test_hello_example_client_gets_a_greeting_from_the_hello_example_server() -> None:
    async with (
        asyncio.timeout(TEST_TIMEOUT_S),
        background_server(str(HELLO / "server.py"), "--host", "127.0.0.1", "--port", "0") as port,
    ):
        code, out, err = await run(
            str(HELLO / "client.py"), f"ws://127.0.0.1:{port}/", "--name", "Bob"
        )
        assert code == 0, err
        assert "<<< Hello Bob!" in out.splitlines()


@pytest.mark.parametrize(
    "example",
    [HELLO / "server.py", HELLO.parent / "auth" / "token_server.py"],
    ids=lambda p: p.stem,
)
async def test_example_servers_stopped_by_sigterm_close_their_clients_with_1001(
    example: Path,
) -> None:
    # What systemd, `docker stop` and `kill` send: the same graceful stop as Ctrl-C, not a dead process
    # whose clients never learn why.
    async with (
        asyncio.timeout(TEST_TIMEOUT_S),
        server_process(str(example), "--host", "127.0.0.1", "--port", "0") as (process, port),
    ):
        headers = {"Authorization": "Bearer alice-token"} if "token" in example.stem else {}
        async with upwire.connect(f"ws://127.0.0.1:{port}/", additional_headers=headers) as ws:
            if headers:
                assert await ws.recv() == "Hello alice!"  # the handler runs
            process.send_signal(signal.SIGTERM)
            with pytest.raises(upwire.ConnectionClosedOK):
                await ws.recv()
            assert (ws.close_code, ws.close_reason) == (1001, "server shutting down")
        assert await process.wait() == 0
        assert process.stderr is not None
        assert b"Traceback" not in await process.stderr.read()


async def test_hello_example_on_a_taken_port_or_without_a_server_says_so_in_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with asyncio.timeout(TEST_TIMEOUT_S):
            code, _, err = await run(
                str(HELLO / "server.py"), "--host", "127.0.0.1", "--port", str(port)
            )
    assert code == 1
    assert_one_line_error(err)
    assert "cannot start the hello server" in err and "address already in use" in err
    async with asyncio.timeout(TEST_TIMEOUT_S):
        code, _, err = await run(
            str(HELLO / "client.py"), f"ws://127.0.0.1:{port}/", "--name", "Bob"
        )  # nothing listens there any more
    assert code == 1
    assert_one_line_error(err)
    assert err.startswith("hello client: ")


async def test_hello_example_server_answers_get_slash_with_its_html_page() -> None:
    async with (
        asyncio.timeout(TEST_TIMEOUT_S),
        background_server(str(HELLO / "server.py"), "--host", "127.0.0.1", "--port", "0") as port,
    ):
        peer = await RawPeer.connect(port)
        peer.write(plain_get("/"))
        response = await peer.read_http_response()
        assert response.status == 200
        assert response.headers["content-type"].startswith("text/html")
        assert response.body == (HELLO / "index.html").read_bytes()
        # And the same port still speaks WebSocket.
        async with upwire.connect(f"ws://127.0.0.1:{port}/") as ws:
            await ws.send("Carol")
            assert await ws.recv() == "Hello Carol!"
