#!/usr/bin/env python3
"""Client-side benchmark: upwire's client vs the websockets and picows clients against one fast server.

The server is `servers/fast_echo.py` (a minimal batching echo: one write per read, so the clients are the
limit; its CPU use is reported beside every figure). Each client runs in its own process, pinned to the
other core, and echoes binary messages pipelined in batches: send `window` messages, receive `window`
echoes, repeat. The figure is echoed messages per second; runs are interleaved (upwire, websockets,
picows, upwire, ...) and medians of the repeats are reported with ratios measured in the same repeat.

    .venv/bin/python clients.py                       # both loops, 16 B and 1 KiB, 3 repeats
    .venv/bin/python clients.py one --client upwire --port P --size 16   # one measurement (JSON line)
"""

import argparse
import asyncio
import datetime as dt
import json
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENTS = ("upwire", "websockets", "picows")
SIZES = (16, 1024)
WINDOW = 100
perf = time.perf_counter


def proc_cpu_s(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def own_cpu_s():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Counter:
    count = 0
    running = True


async def pump_async(ws, message, counter):
    """The high-level clients: send a window, receive the window, repeat."""
    while counter.running:
        for _ in range(WINDOW):
            await ws.send(message)
        for _ in range(WINDOW):
            echo = await ws.recv()
            if len(echo) != len(message):
                raise AssertionError(f"echo of {len(echo)} bytes for a {len(message)}-byte message")
        counter.count += WINDOW


async def measure(counter, a, server_pid):
    await asyncio.sleep(a.warmup)
    c0, t0, cpu0, scpu0 = counter.count, perf(), own_cpu_s(), proc_cpu_s(server_pid)
    await asyncio.sleep(a.duration)
    c1, t1, cpu1, scpu1 = counter.count, perf(), own_cpu_s(), proc_cpu_s(server_pid)
    counter.running = False
    wall = t1 - t0
    return {
        "msgs": c1 - c0,
        "msgs_per_s": (c1 - c0) / wall,
        "wall_s": wall,
        "client_cpu_util": (cpu1 - cpu0) / wall,
        "server_cpu_util": None if scpu0 is None or scpu1 is None else (scpu1 - scpu0) / wall,
    }


async def run_upwire(a, uri, message):
    import upwire

    counter = Counter()
    async with upwire.connect(uri, ping_interval=None, max_message_size=None) as ws:
        task = asyncio.create_task(pump_async(ws, message, counter))
        result = await measure(counter, a, a.server_pid)
        await task
    return result


async def run_websockets(a, uri, message):
    from websockets.asyncio.client import connect

    counter = Counter()
    async with connect(uri, compression=None, ping_interval=None, max_size=None) as ws:
        task = asyncio.create_task(pump_async(ws, message, counter))
        result = await measure(counter, a, a.server_pid)
        await task
    return result


async def run_picows(a, uri, message):
    from picows import WSListener, WSMsgType, ws_connect

    counter = Counter()
    done = asyncio.get_running_loop().create_future()

    class Listener(WSListener):
        """The idiomatic picows client: a callback per frame, a batch sent when the last echo is in."""

        got = 0

        def send_window(self, transport):
            for _ in range(WINDOW):
                transport.send(WSMsgType.BINARY, message)

        def on_ws_frame(self, transport, frame):
            if frame.msg_type != WSMsgType.BINARY:
                return
            if len(frame.get_payload_as_memoryview()) != len(message):
                raise AssertionError("echo of the wrong size")
            self.got += 1
            if self.got == WINDOW:
                self.got = 0
                counter.count += WINDOW
                if counter.running:
                    self.send_window(transport)
                elif not done.done():
                    done.set_result(None)

    transport, listener = await ws_connect(Listener, uri, max_frame_size=64 * 1024 * 1024)
    listener.send_window(transport)
    result = await measure(counter, a, a.server_pid)
    await asyncio.wait_for(done, 10)
    transport.send_close()
    transport.disconnect()
    await transport.wait_disconnected()
    return result


def one(a):
    message = bytes(range(256)) * (a.size // 256) + bytes(a.size % 256)
    uri = f"ws://127.0.0.1:{a.port}/"
    runner = {"upwire": run_upwire, "websockets": run_websockets, "picows": run_picows}[a.client]
    if a.loop == "uvloop":
        import uvloop

        result = uvloop.run(runner(a, uri, message))
    else:
        result = asyncio.run(runner(a, uri, message))
    result.update(client=a.client, loop=a.loop, size=a.size, window=WINDOW)
    if a.client == "upwire":
        import upwire

        result["upwire_file"] = upwire.__file__
    print(json.dumps(result), flush=True)


# --------------------------------------------------------------------------- orchestration


def run_all(a, log=print):
    """Start one fast_echo server per loop, run every client against it, interleaved; return a dict."""
    sys.path.insert(0, os.path.join(HERE))
    from bench import Server  # the harness's process handling (pinning, logs, stop by PID)

    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    logdir = os.path.join(HERE, "results", f"logs-clients-{stamp}")
    os.makedirs(logdir, exist_ok=True)
    runs = []
    for loop in a.loops.split(","):
        tmpl = f"{{py}} {HERE}/servers/fast_echo.py --port {{port}} --loop {loop}"
        server = Server(f"fast_echo-{loop}", tmpl, None, a, logdir)
        server.start()
        try:
            for rep in range(a.repeats):
                for size in SIZES:
                    for client in CLIENTS:
                        argv = [a.python, os.path.abspath(__file__), "one", "--client", client]
                        argv += ["--loop", loop, "--size", str(size), "--port", str(server.port)]
                        argv += ["--server-pid", str(server.main_pid())]
                        argv += ["--duration", str(a.duration), "--warmup", str(a.warmup)]
                        if a.client_cpu is not None:
                            argv = ["taskset", "-c", str(a.client_cpu), *argv]
                        env = None
                        if client == "upwire" and getattr(a, "upwire_src", None):
                            env = {**os.environ, "PYTHONPATH": a.upwire_src}
                        try:
                            p = subprocess.run(
                                argv, capture_output=True, text=True, timeout=60, env=env
                            )
                            lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
                            res = json.loads(lines[-1]) if lines else {"error": p.stderr[-400:]}
                        except subprocess.TimeoutExpired:
                            res = {"error": "client timeout"}
                        if "error" in res:
                            log(f"  ! client {client} {loop} {size} B rep{rep}: {res['error']}")
                        runs.append(
                            {
                                "client": client,
                                "loop": loop,
                                "size": size,
                                "rep": rep,
                                "result": res,
                            }
                        )
                log(f"clients rep {rep} on {loop} done")
        finally:
            server.stop()
    upwire_src = (
        getattr(a, "upwire_src", None) or "the installed upwire (bench/.venv: pip install -e ..)"
    )
    return {"window": WINDOW, "upwire": upwire_src, "runs": runs, "summary": summarize(runs)}


def summarize(runs):
    def value(client, loop, size, rep):
        return next(
            (
                r["result"].get("msgs_per_s")
                for r in runs
                if (r["client"], r["loop"], r["size"], r["rep"]) == (client, loop, size, rep)
            ),
            None,
        )

    summary = {}
    for r in runs:
        key = f"{r['client']}-{r['loop']}-{r['size']}"
        if key in summary:
            continue
        client, loop, size = r["client"], r["loop"], r["size"]
        reps = sorted({x["rep"] for x in runs})
        values = [value(client, loop, size, rep) for rep in reps]
        entry = {"client": client, "loop": loop, "size": size, "values": values}
        entry["median"] = median(values)
        for peer in CLIENTS:
            ratios = [
                v / p if v and p else None
                for v, p in zip(values, (value(peer, loop, size, rep) for rep in reps), strict=True)
            ]
            entry[f"ratio_to_{peer}"] = median(ratios)
        same = [
            x["result"] for x in runs if (x["client"], x["loop"], x["size"]) == (client, loop, size)
        ]
        entry["server_cpu_util_median"] = median([x.get("server_cpu_util") for x in same])
        entry["client_cpu_util_median"] = median([x.get("client_cpu_util") for x in same])
        summary[key] = entry
    return summary


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def print_table(result):
    print(
        f"\nclients: msg/s echoed, window {result['window']} (median; x = ratio in the same repeat)"
    )
    print(
        f"{'client':<22}{'size':>6}{'msg/s':>10}{'x websockets':>14}{'x picows':>10}{'srv CPU':>9}"
    )
    for e in result["summary"].values():
        m = e["median"]
        cells = [
            f"{m / 1e3:.0f}k" if m else "-",
            f"{e['ratio_to_websockets']:.2f}" if e["ratio_to_websockets"] else "-",
            f"{e['ratio_to_picows']:.2f}" if e["ratio_to_picows"] else "-",
            f"{e['server_cpu_util_median']:.0%}"
            if e["server_cpu_util_median"] is not None
            else "-",
        ]
        name = f"{e['client']}-{e['loop']}"
        print(f"{name:<22}{e['size']:>6}{cells[0]:>10}{cells[1]:>14}{cells[2]:>10}{cells[3]:>9}")


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="cmd")
    o = sub.add_parser("one", help="one measurement of one client (prints one JSON line)")
    o.add_argument("--client", choices=CLIENTS, required=True)
    o.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    o.add_argument("--port", type=int, required=True)
    o.add_argument("--size", type=int, default=16)
    o.add_argument("--server-pid", type=int, default=0)
    o.add_argument("--duration", type=float, default=1.0)
    o.add_argument("--warmup", type=float, default=0.3)
    default_py = os.path.join(HERE, ".venv", "bin", "python")
    p.add_argument("--python", default=default_py if os.path.exists(default_py) else sys.executable)
    p.add_argument("--loops", default="asyncio,uvloop")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--duration", type=float, default=1.0)
    p.add_argument("--warmup", type=float, default=0.3)
    p.add_argument("--server-cpu", default="0")
    p.add_argument("--client-cpu", default="1")
    p.add_argument("--start-timeout", type=float, default=20.0)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    if a.cmd == "one":
        one(a)
        return
    a.server_cpu = a.server_cpu or None
    a.client_cpu = a.client_cpu or None
    result = run_all(a, log=lambda *x: print(*x, file=sys.stderr, flush=True))
    out = a.out or os.path.join(HERE, "results", f"clients-{dt.datetime.now():%Y%m%d-%H%M%S}.json")
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print_table(result)
    print(f"JSON: {out}")


if __name__ == "__main__":
    main()
