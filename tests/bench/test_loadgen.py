"""The benchmark's load generator against real servers: its handshake test counts what it should.

Smoke tests with a short budget: the figures are not checked, only that the load generator completes real
handshakes (an upwire server on each API), counts refusals as errors, and reports the server's CPU.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import upwire

LOADGEN = Path(__file__).resolve().parents[2] / "bench" / "loadgen.py"


def connrate(port: int, *extra: str) -> dict[str, object]:
    """Run the load generator's handshake test for half a second; return its JSON result."""
    out = subprocess.run(
        [
            sys.executable,
            str(LOADGEN),
            "connrate",
            "--port",
            str(port),
            "--concurrency",
            "4",
            "--duration",
            "0.5",
            "--warmup",
            "0.1",
            "--no-uvloop",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


async def run_in_thread(port: int) -> dict[str, object]:
    # The server runs in this process, on this loop: the load generator reads this process's CPU time.
    return await asyncio.to_thread(connrate, port, "--server-pid", str(os.getpid()))


class Silent(upwire.Listener):
    pass


async def echo(ws: upwire.ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


@pytest.mark.parametrize("handler", [echo, Silent], ids=["high-level", "listener"])
async def test_the_handshake_test_completes_real_handshakes(handler: object) -> None:
    async with upwire.serve(handler, "127.0.0.1", 0, ping_interval=None) as server:
        result = await run_in_thread(server.port)
        async with asyncio.timeout(5):  # every connection it opened gets closed
            while server.connections:
                await asyncio.sleep(0.01)
    assert result["errors"] == 0, result
    assert isinstance(result["handshakes"], int) and result["handshakes"] > 20
    assert result["per_s"] == pytest.approx(result["handshakes"] / result["wall_s"])
    assert (
        isinstance(result["server_cpu_us_per_conn"], float) and result["server_cpu_us_per_conn"] > 0
    )


async def test_refused_handshakes_are_errors_not_handshakes() -> None:
    async with upwire.serve({"/only-here": echo}, "127.0.0.1", 0) as server:  # "/" gets a 404
        result = await run_in_thread(server.port)
    assert result["handshakes"] == 0
    assert isinstance(result["errors"], int) and result["errors"] > 0
    assert result["error_kinds"] == {"ConnectionError": result["errors"]}
