#!/usr/bin/env python3
"""Profile one server under the 16 B pipelined echo load with py-spy and print where the time goes.

    bench/.venv/bin/python bench/profile.py --server upwire --loop asyncio        # top 15 by own time

The server runs pinned to CPU 0, the load generator (loadgen.py throughput, window 256) to CPU 1, as in
bench.py; py-spy samples the server (--nonblocking, so it does not stop it) and writes collapsed stacks
to results/profile-<server>-<loop>-<size>.txt; the summary counts each sample once for the function it
was in (own time) and once for every distinct function on its stack (inclusive time).
"""

import argparse
import collections
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench import LOADGEN, PEERS, Server, upwire_snapshot_servers  # noqa: E402


def summarize(path, top):
    own, inclusive, total = collections.Counter(), collections.Counter(), 0
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            n = int(count)
            frames = [fr.replace(os.path.dirname(HERE) + "/", "") for fr in stack.split(";")]
            frames = [
                fr.split(" (", 1)[0] + " (" + os.path.basename(fr.split(" (", 1)[1])
                if " (" in fr
                else fr
                for fr in frames
            ]
            total += n
            own[frames[-1]] += n
            for fr in set(frames):
                inclusive[fr] += n
    print(f"{total} samples; top {top} by own time")
    print(f"{'own %':>6} {'incl %':>7}  function (file)")
    for fr, n in own.most_common(top):
        print(f"{100 * n / total:6.1f} {100 * inclusive[fr] / total:7.1f}  {fr}")
    return own, inclusive, total


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--server", default="upwire", help="upwire, websockets, aiohttp, picows, raw")
    p.add_argument("--loop", default="asyncio", choices=["asyncio", "uvloop"])
    p.add_argument("--size", type=int, default=16)
    p.add_argument("--window", type=int, default=256)
    p.add_argument("--conns", type=int, default=1)
    p.add_argument("--duration", type=float, default=5.0, help="seconds sampled")
    p.add_argument("--rate", type=int, default=500, help="py-spy samples per second")
    p.add_argument("--top", type=int, default=15)
    p.add_argument(
        "--upwire-ref", help="profile upwire as of this git commit (a snapshot, as in bench.py)"
    )
    p.add_argument("--summarize", metavar="FILE", help="only summarize an earlier recording")
    a = p.parse_args()
    if a.summarize:
        summarize(a.summarize, a.top)
        return
    venv_bin = os.path.join(HERE, ".venv", "bin")
    a.python = os.path.join(venv_bin, "python")
    a.server_cpu, a.client_cpu, a.start_timeout = "0", "1", 20.0
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    servers = dict(PEERS)
    if a.upwire_ref:
        servers.update(upwire_snapshot_servers(a.upwire_ref))
        a.server = next(n for n in servers if n.startswith("upwire@")).rsplit("-", 1)[0]
    name = f"{a.server}-{a.loop}"
    out = os.path.join(HERE, "results", f"profile-{name}-{a.size}.txt")
    server = Server(name, servers[name][0], None, a, os.path.join(HERE, "results"))
    server.start()
    try:
        load = subprocess.Popen(
            [
                "taskset",
                "-c",
                "1",
                a.python,
                LOADGEN,
                "throughput",
                "--port",
                str(server.port),
                "--size",
                str(a.size),
                "--window",
                str(a.window),
                "--conns",
                str(a.conns),
                "--duration",
                str(a.duration + 2),
                "--warmup",
                "0.5",
                "--max-count",
                "100000000",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.0)
        subprocess.run(
            [
                os.path.join(venv_bin, "py-spy"),
                "record",
                "--pid",
                str(server.main_pid()),
                "--duration",
                str(int(a.duration)),
                "--rate",
                str(a.rate),
                "--nonblocking",
                "--function",
                "--format",
                "raw",
                "-o",
                out,
            ],
            check=True,
            capture_output=True,
        )
        print("load:", load.communicate(timeout=60)[0].strip())
    finally:
        server.stop()
    print(f"profile: {out}")
    summarize(out, a.top)


if __name__ == "__main__":
    main()
