"""`send_each`, broadcast's send loop: the C version and its Python twin agree, on real sockets.

Each example builds the same situation twice on fresh Unix socket pairs (small send buffers, some already
full, some whose peer is gone, sockets listed more than once), runs one implementation on each, and
compares what they report and what every peer received.
"""

from __future__ import annotations

import importlib
import os
import socket
import subprocess
import sys
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from upwire.broadcast import send_each_py

SendEach = Callable[[list[int], bytes], list[tuple[int, int]]]

send_each_c: SendEach = pytest.importorskip("upwire._speedups").send_each

# What a socket is like before the send: "open", "full" (its buffer filled), "gone" (its peer closed).
STATES = st.sampled_from(["open", "open", "full", "gone"])


def drain(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            chunk = sock.recv(1 << 16)
        except BlockingIOError:
            return b"".join(chunks)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def fill(sock: socket.socket) -> int:
    filled = 0
    while True:
        try:
            filled += sock.send(b"\xff" * 4096)
        except BlockingIOError:
            return filled


def run(
    send_each: SendEach, states: list[str], layout: list[int], data: bytes
) -> tuple[list[tuple[int, int]], list[bytes]]:
    """Send with `send_each` on sockets in `states`, listed as `layout`; (its result, what each peer got)."""
    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM) for _ in states]
    try:
        for (ours, theirs), state in zip(pairs, states, strict=True):
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
            ours.setblocking(False)
            theirs.setblocking(False)
            if state == "full":
                fill(ours)
            elif state == "gone":
                theirs.close()
        unsent = send_each([pairs[i][0].fileno() for i in layout], data)
        received = [
            b"" if state == "gone" else drain(theirs)
            for (_, theirs), state in zip(pairs, states, strict=True)
        ]
        return unsent, received
    finally:
        for ours, theirs in pairs:
            ours.close()
            theirs.close()


@settings(max_examples=150, deadline=None)
@given(
    states=st.lists(STATES, min_size=1, max_size=5),
    picks=st.lists(st.integers(min_value=0, max_value=4), min_size=0, max_size=8),
    size=st.integers(min_value=0, max_value=40_000),
)
def test_c_and_python_send_each_agree_on_random_sockets(
    states: list[str], picks: list[int], size: int
) -> None:
    layout = [p % len(states) for p in picks]
    data = os.urandom(size)
    expected = run(send_each_py, states, layout, data)
    assert run(send_each_c, states, layout, data) == expected
    unsent, received = expected
    # Whatever a socket did not take is reported, and a socket never gets a byte after a gap.
    for _, count in unsent:
        assert 0 <= count < size
    reported = {position for position, _ in unsent}
    for position, pair in enumerate(layout):
        if states[pair] == "open" and position not in reported and layout.index(pair) == position:
            assert received[pair].startswith(data)


def test_a_socket_listed_again_after_a_partial_send_gets_nothing_more() -> None:
    data = os.urandom(200_000)  # more than the send buffer takes
    for send_each in (send_each_c, send_each_py):
        unsent, received = run(send_each, ["open"], [0, 0, 0], data)
        assert [position for position, _ in unsent] == [0, 1, 2]
        first_sent = unsent[0][1]
        assert 0 < first_sent < len(data)
        assert unsent[1:] == [(1, 0), (2, 0)]
        assert received == [data[:first_sent]]


def test_send_each_rejects_what_is_not_a_file_descriptor() -> None:
    for send_each in (send_each_c, send_each_py):
        with pytest.raises(ValueError, match="not a file descriptor"):
            send_each([-1], b"x")
        assert send_each([], b"x") == []
    with pytest.raises(TypeError):
        send_each_c((1, 2), b"x")  # type: ignore[arg-type]


def test_broadcast_uses_the_c_send_loop_unless_told_not_to() -> None:
    # The module, not the function `upwire.broadcast` that shadows it as an attribute of the package.
    assert importlib.import_module("upwire.broadcast").send_each is send_each_c
    code = "import importlib; b = importlib.import_module('upwire.broadcast'); print(b.send_each is b.send_each_py)"
    env = {**os.environ, "UPWIRE_NO_SPEEDUPS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "True"
