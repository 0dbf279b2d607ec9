"""open_timeout with connections timed in batches: never early, at most a batch late, and none left over."""

from __future__ import annotations

import asyncio

from .helpers import TEST_TIMEOUT_S, StartServer
from .wire import TEXT, RawPeer

OPEN_TIMEOUT_S = 0.4
# A batch lasts at most open_timeout / 20; the rest is scheduling slack on a busy machine.
LATE_S = OPEN_TIMEOUT_S / 20 + 0.25


async def dropped_after(port: int, delay: float, request: bytes = b"") -> float:
    """Connect after `delay`, send `request`, and return how long the server took to drop us."""
    await asyncio.sleep(delay)
    peer = await RawPeer.connect(port)
    loop = asyncio.get_running_loop()
    started = loop.time()
    if request:
        peer.write(request)
    await peer.read_to_eof()
    return loop.time() - started


async def test_each_silent_client_is_dropped_open_timeout_after_its_own_connect(
    start_server: StartServer,
) -> None:
    server = await start_server(open_timeout=OPEN_TIMEOUT_S)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        delays = [0.0, 0.0, 0.01, 0.03, 0.07, 0.15, 0.3]
        elapsed = await asyncio.gather(
            *(
                dropped_after(server.port, d, b"GET / HT" if i % 2 else b"")
                for i, d in enumerate(delays)
            )
        )
    for seconds in elapsed:
        assert OPEN_TIMEOUT_S - 0.01 <= seconds < OPEN_TIMEOUT_S + LATE_S, elapsed
    assert not server.connections


async def test_a_client_that_opened_in_the_same_batch_as_a_silent_one_stays_open(
    start_server: StartServer,
) -> None:
    server = await start_server(open_timeout=OPEN_TIMEOUT_S)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        silent = await RawPeer.connect(server.port)
        talking = await RawPeer.connect(server.port)
        assert (await talking.upgrade()).status == 101
        assert await silent.read_to_eof() == b""
        await asyncio.sleep(OPEN_TIMEOUT_S / 2)
        talking.send_frame(TEXT, "still here")
        frame = await talking.read_frame()
        assert frame.payload == b"still here"
        talking.close()


def opening_timers(loop: asyncio.AbstractEventLoop) -> list[asyncio.TimerHandle]:
    """The live timers of opening-handshake batches (white-box: asyncio's own timer heap)."""
    names = ("_end_opening_batch", "_open_timed_out")
    return [
        handle
        for handle in loop._scheduled  # type: ignore[attr-defined]
        if not handle.cancelled() and getattr(handle._callback, "__name__", "") in names
    ]


async def test_no_timer_is_left_once_a_batch_has_opened(start_server: StartServer) -> None:
    # With open_timeout at 10 s, a batch lasts 50 ms: a timer waiting out the 10 s for a connection that
    # opened long ago would be checked in every loop iteration for nothing.
    server = await start_server(open_timeout=10.0)
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(TEST_TIMEOUT_S):
        peer = await RawPeer.connect(server.port)
        assert (await peer.upgrade()).status == 101
        assert len(opening_timers(loop)) == 1  # the check at the batch's end
        await asyncio.sleep(0.2)
        assert opening_timers(loop) == []
        # A silent connection's batch ends with it still opening: its timer stays, for the 10 s.
        silent = await RawPeer.connect(server.port)
        await asyncio.sleep(0.2)
        assert [handle._callback.__name__ for handle in opening_timers(loop)] == ["_open_timed_out"]
        peer.send_frame(TEXT, "still here")
        assert (await peer.read_frame()).payload == b"still here"
        peer.close()
        silent.close()
