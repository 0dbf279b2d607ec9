"""Accepting connections: upwire's own accept on asyncio's selector loop, the loop's own on uvloop.

The server accepts without a task per connection and takes every connection waiting in one turn of the loop
(`upwire._accept`; on uvloop, plain TCP, those waiting behind the one the loop accepted). All must give the
same connections, close the same way, and survive running out of file descriptors without spinning.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import trustme
import uvloop

import upwire

from .helpers import TEST_TIMEOUT_S, echo
from .wire import TEXT, RawPeer, upgrade_request

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def run_on(
    loop_factory: Callable[[], asyncio.AbstractEventLoop], main: Coroutine[Any, Any, None]
) -> None:
    loop = loop_factory()
    try:
        loop.run_until_complete(main)
    finally:
        loop.close()


class Echo(upwire.Listener):
    def on_message(self, connection: upwire.Connection, message: str | bytes) -> None:
        connection.send_now(message)


def task_factory_noting(
    created: list[object],
) -> Callable[..., asyncio.Task[Any]]:
    """A task factory that notes the coroutine of every task made, into `created`."""

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        created.append(coro)
        return asyncio.Task(coro, loop=loop, **kwargs)

    return factory


@pytest.mark.parametrize("loop_factory", LOOPS.values(), ids=LOOPS.keys())
def test_accepting_makes_no_task_per_connection(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    created: list[object] = []
    counting_factory = task_factory_noting(created)

    async def main() -> None:
        async with upwire.serve(Echo, "127.0.0.1", 0, ping_interval=None) as server:
            async with asyncio.timeout(TEST_TIMEOUT_S):
                clients = [
                    await upwire.connect(f"ws://127.0.0.1:{server.port}/", ping_interval=None)
                    for _ in range(20)
                ]
                # Count from here: the clients' own tasks are made; the server's connections are open.
                asyncio.get_running_loop().set_task_factory(counting_factory)
                for ws in clients:
                    await ws.send("hi")
                    assert await ws.recv() == "hi"
                before = len(created)
                more = [
                    await upwire.connect(f"ws://127.0.0.1:{server.port}/", ping_interval=None)
                    for _ in range(10)
                ]
                # 10 connections accepted by a Listener server (and opened by clients) made no task.
                names = [getattr(c, "__qualname__", repr(c)) for c in created[before:]]
                assert names == [], names
                for ws in clients + more:
                    await ws.close()

    run_on(loop_factory, main())


@pytest.mark.parametrize("api", ["listener", "high-level"])
@pytest.mark.parametrize("loop_factory", LOOPS.values(), ids=LOOPS.keys())
def test_the_connections_waiting_are_accepted_in_one_turn_of_the_loop(
    loop_factory: Callable[[], asyncio.AbstractEventLoop], api: str
) -> None:
    # libuv accepts one connection per turn: with many clients connecting at once, a turn per client.
    tasks: list[object] = []
    counting_factory = task_factory_noting(tasks)

    async def main() -> None:
        async with asyncio.timeout(TEST_TIMEOUT_S):
            handler = Echo if api == "listener" else echo
            server = await upwire.serve(handler, "127.0.0.1", 0, ping_interval=None)
            peers = []
            try:
                # Connected and their requests sent while the loop does not run: all wait at once.
                for _ in range(20):
                    peer = socket.create_connection(("127.0.0.1", server.port))
                    peer.sendall(upgrade_request())
                    peers.append(peer)
                asyncio.get_running_loop().set_task_factory(counting_factory)
                for _ in range(5):
                    await asyncio.sleep(0)
                assert len(server.connections) == 20
                # However accepted: no task for a Listener's connection, its handler's for the other.
                names = [getattr(c, "__qualname__", repr(c)) for c in tasks]
                assert names == (
                    [] if api == "listener" else ["ServerConnection._run_handler"] * 20
                )
                for connection in server.connections:
                    assert connection.transport is not None
                    sock = connection.transport.get_extra_info("socket")
                    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                for sock in peers:  # each answered with 101, and echoing
                    raw = RawPeer(*await asyncio.open_connection(sock=sock))
                    assert (await raw.read_response_head()).status == 101
                    raw.send_frame(TEXT, "echoed")
                    assert (await raw.read_frame()).payload == b"echoed"
                    raw.close()
            finally:
                for peer in peers:
                    peer.close()
                server.close()
                await server.wait_closed()

    run_on(loop_factory, main())


@pytest.mark.parametrize("loop_factory", LOOPS.values(), ids=LOOPS.keys())
def test_connections_have_their_addresses_and_close_with_the_server(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    seen: list[tuple[Any, Any]] = []

    async def handler(ws: upwire.ServerConnection) -> None:
        assert ws.transport is not None
        seen.append((ws.remote_address, ws.transport.get_extra_info("sockname")))
        await echo(ws)

    async def main() -> None:
        server = await upwire.serve(handler, "127.0.0.1", 0, ping_interval=None, shutdown_timeout=2)
        async with asyncio.timeout(TEST_TIMEOUT_S):
            address = f"ws://127.0.0.1:{server.port}/"
            clients = await asyncio.gather(*(upwire.connect(address) for _ in range(30)))
            for ws in clients:
                await ws.send("x")
                assert await ws.recv() == "x"
            expected = {ws.transport.get_extra_info("sockname") for ws in clients if ws.transport}
            assert {peer for peer, _ in seen} == expected
            assert {local for _, local in seen} == {("127.0.0.1", server.port)}
            server.close()
            await server.wait_closed()
            for ws in clients:
                with pytest.raises(upwire.ConnectionClosedOK):
                    await ws.recv()
                assert ws.close_code == 1001
            with pytest.raises(OSError):
                await upwire.connect(address)

    run_on(loop_factory, main())


@pytest.mark.parametrize("loop_factory", LOOPS.values(), ids=LOOPS.keys())
def test_a_unix_socket_and_ipv6_are_served_too(
    loop_factory: Callable[[], asyncio.AbstractEventLoop], tmp_path: Path
) -> None:
    peers: list[Any] = []

    async def handler(ws: upwire.ServerConnection) -> None:
        peers.append(ws.remote_address)
        await echo(ws)

    async def main() -> None:
        async with asyncio.timeout(TEST_TIMEOUT_S):
            path = str(tmp_path / "ws.sock")
            unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            unix.bind(path)
            async with upwire.serve(handler, sock=unix, ping_interval=None):
                peer = RawPeer(*await asyncio.open_unix_connection(path))
                assert (await peer.upgrade()).status == 101
                peer.send_frame(TEXT, "over a unix socket")
                assert (await peer.read_frame()).payload == b"over a unix socket"
                peer.close()
            async with (
                upwire.serve(handler, "::1", 0, ping_interval=None) as server,
                upwire.connect(f"ws://[::1]:{server.port}/") as ws,
            ):
                await ws.send("over IPv6")
                assert await ws.recv() == "over IPv6"
                assert ws.transport is not None
                local = ws.transport.get_extra_info("sockname")
        assert peers[0] == ""  # a unix socket's unnamed client
        assert peers[1][:2] == local[:2]

    run_on(loop_factory, main())


@pytest.mark.parametrize("loop_factory", LOOPS.values(), ids=LOOPS.keys())
def test_a_server_on_a_unix_socket_path_starts_again_where_one_stopped(
    loop_factory: Callable[[], asyncio.AbstractEventLoop], tmp_path: Path
) -> None:
    # The socket file a stopped server leaves behind does not stop the next one (websockets' unix_serve).
    path = str(tmp_path / "ws.sock")

    async def main() -> None:
        async with asyncio.timeout(TEST_TIMEOUT_S):
            for round_ in range(2):
                async with (
                    upwire.serve(echo, unix_socket=path, ping_interval=None) as server,
                    upwire.connect("ws://localhost/", unix_socket=path) as ws,
                ):
                    assert server.is_serving()
                    await ws.send(f"round {round_}")
                    assert await ws.recv() == f"round {round_}"
                assert not server.is_serving()
            with pytest.raises(upwire.UsageError):
                await upwire.serve(echo, unix_socket=path, sock=socket.socket())
            with pytest.raises(upwire.UsageError):
                await upwire.serve(echo, unix_socket=path, reuse_port=True)
            with pytest.raises(ValueError):
                await upwire.serve(echo, unix_socket="")
            # Linux's abstract namespace has no file to check.
            abstract = f"\0upwire-test-{os.getpid()}-{id(path)}"
            async with upwire.serve(echo, unix_socket=abstract, ping_interval=None) as named:
                assert named.is_serving()
            # A live socket of another kind is not ours to take: asyncio would unlink it.
            datagram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            other = str(tmp_path / "dgram.sock")
            datagram.bind(other)
            with pytest.raises(OSError, match="cannot take over"):
                await upwire.serve(echo, unix_socket=other)
            assert os.path.exists(other)
            datagram.close()
            # A path a running server listens on is not taken from it (asyncio would unlink its file).
            async with upwire.serve(echo, unix_socket=path, ping_interval=None) as running:
                with pytest.raises(OSError) as refused:
                    await upwire.serve(echo, unix_socket=path)
                assert refused.value.errno == errno.EADDRINUSE
                async with upwire.connect("ws://localhost/", unix_socket=path) as ws:
                    await ws.send("still the first server's")
                    assert await ws.recv() == "still the first server's"
                assert running.is_serving()

    run_on(loop_factory, main())


@pytest.mark.parametrize("loop_factory", LOOPS.values(), ids=LOOPS.keys())
def test_servers_with_reuse_port_share_their_port(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    async def main() -> None:
        async with (
            asyncio.timeout(TEST_TIMEOUT_S),
            upwire.serve(echo, "127.0.0.1", 0, reuse_port=True, ping_interval=None) as first,
            upwire.serve(echo, "127.0.0.1", first.port, reuse_port=True, ping_interval=None),
        ):
            with pytest.raises(OSError):  # without it, the port is taken
                await upwire.serve(echo, "127.0.0.1", first.port)
            async with upwire.connect(f"ws://127.0.0.1:{first.port}/") as ws:
                await ws.send("either")
                assert await ws.recv() == "either"

    run_on(loop_factory, main())


# A Listener echo server that can open only a few more file descriptors than it has once it listens;
# with TLS when given a certificate chain and key (one PEM file).
OUT_OF_FDS_SERVER = """
import asyncio, os, resource, ssl, sys, upwire

class Echo(upwire.Listener):
    def on_message(self, connection, message):
        connection.send_now(message)

async def main():
    context = None
    if len(sys.argv) > 1:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(sys.argv[1])
    server = await upwire.serve(Echo, "127.0.0.1", 0, ping_interval=None, ssl=context)
    highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 3, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    print(server.port, flush=True)
    await server.serve_forever()

asyncio.run(main())
"""


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
async def test_out_of_file_descriptors_pauses_accepting_then_serves_the_waiting_clients(
    tls: bool, tmp_path: Path
) -> None:
    options: dict[str, Any] = {"ping_interval": None}
    argv = [sys.executable, "-c", OUT_OF_FDS_SERVER]
    if tls:
        ca = trustme.CA()
        pem = tmp_path / "server.pem"
        ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
        options["ssl"] = ssl.create_default_context()
        ca.configure_trust(options["ssl"])
        argv.append(str(pem))
    process = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        port = int(
            await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), TEST_TIMEOUT_S)
        )
        address = f"{'wss' if tls else 'ws'}://127.0.0.1:{port}/"
        accepted: list[upwire.ClientConnection] = []
        async with asyncio.timeout(30):
            for _ in range(20):
                try:
                    accepted.append(await upwire.connect(address, open_timeout=1.0, **options))
                except TimeoutError:
                    break  # this one waits in the listen queue: the server cannot accept it
            else:
                pytest.fail(
                    "the server accepted 20 connections: its file descriptor limit did not apply"
                )
            assert accepted, "not even one connection was accepted"
            # Paused, not spinning on the listening socket Linux keeps reporting readable.
            start = cpu_seconds(process.pid)
            await asyncio.sleep(1.0)
            assert cpu_seconds(process.pid) - start < 0.3
            # Those accepted still work; once two close, waiting clients are served again.
            for ws in accepted:
                await ws.send("still here")
                assert await ws.recv() == "still here"
            waiting = asyncio.ensure_future(upwire.connect(address, open_timeout=8.0, **options))
            for ws in accepted[:2]:
                await ws.close()
            ws = await waiting
            await ws.send("served")
            assert await ws.recv() == "served"
            await ws.close()
            for ws in accepted[2:]:
                await ws.close()
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    assert "cannot accept connections" in stderr and "Too many open files" in stderr, stderr
    # Once a second while it lasts (a few seconds here), not once per failed accept.
    assert stderr.count("cannot accept connections") <= 10, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-2000:]


def test_the_retry_after_running_out_does_nothing_once_the_server_is_closed() -> None:
    # The paused acceptor's timer fires after close(): it must not watch the closed socket again.
    from upwire import _accept

    async def main() -> None:
        server = await upwire.serve(Echo, "127.0.0.1", 0, ping_interval=None)
        loop = asyncio.get_running_loop()
        sock = server._server._sockets[0]  # type: ignore[union-attr]
        acceptor = loop._selector.get_key(sock.fileno()).data[0]._callback.__self__  # type: ignore[attr-defined]
        assert isinstance(acceptor, _accept._Acceptor)
        acceptor._accept_failed(OSError(24, "Too many open files"))
        assert sock.fileno() not in loop._selector.get_map()  # type: ignore[attr-defined]
        server.close()
        await server.wait_closed()
        acceptor.resume()
        assert sock.fileno() == -1

    started = time.monotonic()
    run_on(asyncio.new_event_loop, main())
    assert time.monotonic() - started < TEST_TIMEOUT_S


def test_on_uvloop_the_sockets_taking_the_waiting_connections_close_with_the_server() -> None:
    # Duplicates of the listening sockets (uvloop keeps its own): closed too, nothing listens after close().
    async def main() -> None:
        server = await upwire.serve(echo, "localhost", 0, ping_interval=None)
        duplicates = [acceptor.sock for acceptor in server._acceptors]
        assert len(duplicates) == len(server.sockets) >= 1
        assert {sock.fileno() for sock in duplicates}.isdisjoint(
            sock.fileno() for sock in server.sockets
        )
        async with upwire.connect(f"ws://localhost:{server.port}/") as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
        server.close()
        await server.wait_closed()
        assert all(sock.fileno() == -1 for sock in duplicates)
        with pytest.raises(OSError):  # nothing listens on the port any more
            await asyncio.open_connection("127.0.0.1", server.port)

    started = time.monotonic()
    run_on(uvloop.new_event_loop, main())
    assert time.monotonic() - started < TEST_TIMEOUT_S


def test_linux_says_how_many_connections_wait_on_a_listening_socket() -> None:
    # What each readiness accepts, so that no accept has to fail with EAGAIN to say there are no more.
    from upwire import _accept

    with socket.socket() as listening, socket.socket() as unbound:
        listening.bind(("127.0.0.1", 0))
        listening.listen(16)
        assert _accept._waiting(listening) == 0
        clients = [socket.create_connection(listening.getsockname()) for _ in range(3)]
        try:
            assert _accept._waiting(listening) == 3
            conn, _ = listening.accept()
            conn.close()
            assert _accept._waiting(listening) == 2
        finally:
            for client in clients:
                client.close()
        assert _accept._waiting(unbound) is None  # not listening: no count to read
