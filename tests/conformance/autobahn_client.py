#!/usr/bin/env python3
"""Autobahn|Testsuite client runner: upwire's asyncio client against `wstest -m fuzzingserver`.

Usage: python tests/conformance/autobahn_client.py [--url URL] [--agent NAME] [--case-timeout SECONDS]
(defaults: $AUTOBAHN_URL or ws://127.0.0.1:9001, $AUTOBAHN_AGENT or "upwire"; ../shared/autobahn's
grade-client.sh sets both and runs this script for tests/conformance/test_autobahn.py).

The fuzzing server drives the client through the standard Autobahn client protocol, one connection at a
time:
  1. URL/getCaseCount                  -> one text message: the number N of selected cases
  2. URL/runCase?case=I&agent=NAME     -> for I in 1..N: echo every message back until the server closes
  3. URL/updateReports?agent=NAME      -> the server writes its reports, then closes

The runner itself judges nothing: the fuzzing server records how upwire behaved in each case, and the
grader summarises it. Exit status: 0 when all three steps ran (whatever the verdicts), 1 when the
fuzzing server could not be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from urllib.parse import quote

import upwire

# Above the suite's own limit (480 s for 12.x.y/13.x.y), so that the fuzzing server, not this runner, decides
# when a case took too long: 12.2.15 (1000 messages of 128 KiB in 256-byte fragments, half a million frames
# through the pure-Python fuzzer) took over 120 s on a loaded 2-vCPU machine.
DEFAULT_CASE_TIMEOUT_S = 600.0


async def get_case_count(base_url: str) -> int:
    async with upwire.connect(f"{base_url}/getCaseCount") as ws:
        return int(await ws.recv())


async def echo_until_closed(url: str) -> None:
    # No keepalive pings: the connection should carry exactly what the fuzzer sends and our echoes.
    # No size limit: 9.* sends messages of up to 16 MiB.
    async with upwire.connect(url, max_message_size=None, ping_interval=None) as ws:
        async for message in ws:
            await ws.send(message)


async def run_case(base_url: str, case: int, agent: str, timeout_s: float) -> bool:
    """Run one case; return False only when it hit the runner's time limit."""
    url = f"{base_url}/runCase?case={case}&agent={quote(agent)}"
    try:
        await asyncio.wait_for(echo_until_closed(url), timeout_s)
    except TimeoutError:  # before OSError: TimeoutError is one of its subclasses
        return False
    except (upwire.WebSocketError, OSError):
        pass  # the fuzzer breaks protocol and connections on purpose; judging that is its job
    return True


async def update_reports(base_url: str, agent: str) -> None:
    try:
        async with upwire.connect(f"{base_url}/updateReports?agent={quote(agent)}") as ws:
            async for _ in ws:
                pass
    except upwire.WebSocketError as exc:
        print(f"runner: updateReports ended with {exc!r}", flush=True)


async def run_all(base_url: str, agent: str, case_timeout_s: float) -> int:
    try:
        count = await get_case_count(base_url)
    except (upwire.WebSocketError, OSError, ValueError) as exc:
        print(f"runner: cannot get the case count from {base_url}: {exc!r}", file=sys.stderr)
        return 1
    print(f"runner: {count} cases from {base_url} as agent {agent!r}", flush=True)
    timed_out = []
    for case in range(1, count + 1):
        if not await run_case(base_url, case, agent, case_timeout_s):
            print(f"runner: case #{case} timed out after {case_timeout_s:g} s", flush=True)
            timed_out.append(case)
    await update_reports(base_url, agent)
    print(f"runner: done, {count} cases, {len(timed_out)} timed out", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", default=os.environ.get("AUTOBAHN_URL", "ws://127.0.0.1:9001"))
    parser.add_argument("--agent", default=os.environ.get("AUTOBAHN_AGENT", "upwire"))
    parser.add_argument("--case-timeout", type=float, default=DEFAULT_CASE_TIMEOUT_S)
    args = parser.parse_args(argv)
    return asyncio.run(run_all(args.url.rstrip("/"), args.agent, args.case_timeout))


if __name__ == "__main__":
    sys.exit(main())
