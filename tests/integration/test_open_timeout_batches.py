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
