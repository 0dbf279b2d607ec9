"""A closed connection is freed by reference counting, without waiting for the cyclic garbage collector.

A server with many short connections would otherwise leave each one (its frames, futures, buffers) for the GC,
whose pauses grow with what it has to scan.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Callable

import pytest
import uvloop

import upwire

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


@pytest.mark.parametrize("loop_name", LOOPS)
@pytest.mark.parametrize("ending", ["client closes", "server closes", "recv raises"])
def test_a_closed_server_connection_is_freed_without_the_gc(loop_name: str, ending: str) -> None:
    refs: list[weakref.ref[upwire.ServerConnection]] = []
    done = asyncio.Event()

    async def handler(ws: upwire.ServerConnection) -> None:
        refs.append(weakref.ref(ws))
        if ending == "server closes":
            await ws.send("bye")
            await ws.close()
            return
        if ending == "recv raises":
            await ws.send(await ws.recv())
            # Woken by the close while waiting, then called again once closed: both raise.
            for _ in range(2):
                with pytest.raises(upwire.ConnectionClosedOK):
                    await ws.recv()
            return
        async for message in ws:  # ends with the client's close
            await ws.send(message)

    async def main() -> None:
        async with await upwire.serve(handler, "127.0.0.1", 0) as server:
            async with upwire.connect(f"ws://127.0.0.1:{server.port}/") as ws:
                if ending in ("client closes", "recv raises"):
                    await ws.send("hi")
                    assert await ws.recv() == "hi"
                else:
                    assert await ws.recv() == "bye"
                    await ws.wait_closed()
            async with asyncio.timeout(5):
                while server.connections:
                    await asyncio.sleep(0.01)
            for _ in range(3):
                await asyncio.sleep(0)  # let the transport's last callbacks run
            done.set()

    gc.collect()
    gc.disable()
    try:
        with asyncio.Runner(loop_factory=LOOPS[loop_name]) as runner:
            runner.run(main())
        assert refs and done.is_set()
        assert refs[0]() is None, (
            "the closed connection is only reachable through a reference cycle"
        )
    finally:
        gc.enable()
