#!/usr/bin/env python3
"""Neutral WebSocket server benchmark harness.

Starts each server (a command line with {port}), drives it with loadgen.py in a
separate process, interleaves every server with its raw-TCP ceiling on the same
event loop, repeats, and reports medians of absolute figures and of ratios to
the ceiling measured in the same repeat.

    bench/setup.sh                                 # once: bench/.venv with the peers and this checkout of upwire
    bench/.venv/bin/python bench/bench.py          # upwire and all built-in peers, 3 repeats
    bench/.venv/bin/python bench/bench.py --quick  # smoke run
    .venv/bin/python bench.py --peers none \\
        --server-cmd 'python myserver.py --port {port}' --name mine --baseline raw-uvloop

See README.md for the meaning of each figure.
"""

import argparse
import datetime as dt
import gzip
import json
import os
import platform
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time

from loadgen import proc_tree  # the load generator's reading of /proc: one copy for both

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PY = os.path.join(HERE, ".venv", "bin", "python")
LOADGEN = os.path.join(HERE, "loadgen.py")
SRV = os.path.join(HERE, "servers")

# name -> (command template, baseline, deflate variant?)
PEERS = {}
for loop in ("asyncio", "uvloop"):
    PEERS[f"raw-{loop}"] = (f"{{py}} {SRV}/raw_echo.py --port {{port}} --loop {loop}", None)
    for lib in ("upwire", "websockets", "aiohttp", "picows"):
        PEERS[f"{lib}-{loop}"] = (
            f"{{py}} {SRV}/{lib}_echo.py --port {{port}} --loop {loop}",
            f"raw-{loop}",
        )
    PEERS[f"upwire-listener-{loop}"] = (
        f"{{py}} {SRV}/upwire_listener_echo.py --port {{port}} --loop {loop}",
        f"raw-{loop}",
    )
    # picows 2.x uses aiofastnet transports when that package is installed (it is, as a dependency);
    # this variant forces plain asyncio/uvloop transports, i.e. "built on the same event loop" as raw-*
    PEERS[f"picows-nofastnet-{loop}"] = (
        f"{{py}} {SRV}/picows_echo.py --port {{port}} --loop {loop} --no-fastnet",
        f"raw-{loop}",
    )
DEFLATE_PEERS = {}
for loop in ("asyncio", "uvloop"):
    for lib in ("upwire", "websockets", "aiohttp"):
        DEFLATE_PEERS[f"{lib}-{loop}+deflate"] = (
            f"{{py}} {SRV}/{lib}_echo.py --port {{port}} --loop {loop} --deflate",
            f"raw-{loop}",
        )

SIZES = [("16", 16), ("1k", 1024), ("64k", 65536), ("1m", 1 << 20)]
WINDOW_1C = {16: 256, 1024: 256, 65536: 64, 1 << 20: 8}
WINDOW_100C = {16: 16, 1024: 16, 65536: 1, 1 << 20: 1}


def echo_tests():
    t = {}
    for tag, size in SIZES:
        t[f"tp_{tag}_1c"] = [
            "throughput",
            "--conns",
            "1",
            "--size",
            str(size),
            "--window",
            str(WINDOW_1C[size]),
        ]
    for tag, size in SIZES:
        t[f"tp_{tag}_100c"] = [
            "throughput",
            "--conns",
            "100",
            "--size",
            str(size),
            "--window",
            str(WINDOW_100C[size]),
        ]
    t["lat_16"] = ["latency", "--size", "16"]
    t["conn_seq"] = ["connrate", "--concurrency", "1"]
    t["conn_50c"] = ["connrate", "--concurrency", "50"]
    return t


DEFLATE_TESTS = {
    "deflate_json_1k": [
        "throughput",
        "--conns",
        "1",
        "--size",
        "1024",
        "--window",
        "64",
        "--json-text",
        "--deflate",
    ],
    "deflate_json_64k": [
        "throughput",
        "--conns",
        "1",
        "--size",
        "65536",
        "--window",
        "16",
        "--json-text",
        "--deflate",
    ],
}

# table rows: (metric id, label, test id, path in result, higher is better)
ROWS = [
    ("tp_16_1c", "echo 16B  1 conn   msg/s", "tp_16_1c", ("msgs_per_s",), True),
    ("tp_1k_1c", "echo 1KiB 1 conn   msg/s", "tp_1k_1c", ("msgs_per_s",), True),
    ("tp_64k_1c", "echo 64KiB 1 conn  MB/s", "tp_64k_1c", ("MB_per_s",), True),
    ("tp_1m_1c", "echo 1MiB 1 conn   MB/s", "tp_1m_1c", ("MB_per_s",), True),
    ("tp_16_100c", "echo 16B  100 conn msg/s", "tp_16_100c", ("msgs_per_s",), True),
    ("tp_1k_100c", "echo 1KiB 100 conn msg/s", "tp_1k_100c", ("msgs_per_s",), True),
    ("tp_64k_100c", "echo 64KiB 100 conn MB/s", "tp_64k_100c", ("MB_per_s",), True),
    ("tp_1m_100c", "echo 1MiB 100 conn MB/s", "tp_1m_100c", ("MB_per_s",), True),
    ("cpu_16_1c", "srv CPU us/msg 16B 1c", "tp_16_1c", ("server_cpu_us_per_msg",), False),
    ("lat_p50", "RTT 16B p50 us", "lat_16", ("p50_us",), False),
    ("lat_p99", "RTT 16B p99 us", "lat_16", ("p99_us",), False),
    ("conn_seq", "handshakes/s sequential", "conn_seq", ("per_s",), True),
    ("conn_50c", "handshakes/s 50 concurrent", "conn_50c", ("per_s",), True),
    (
        "rss_conn",
        "RSS KiB per idle conn @10k",
        "fanout",
        ("levels", "10000", "rss_per_conn_kb"),
        False,
    ),
    ("bcast_1k", "broadcast 1k conns ms", "fanout", ("levels", "1000", "bcast_ms_median"), False),
    (
        "bcast_10k",
        "broadcast 10k conns ms",
        "fanout",
        ("levels", "10000", "bcast_ms_median"),
        False,
    ),
]
DEFLATE_ROWS = [
    ("deflate_json_1k", "deflate JSON 1KiB 1c msg/s", "deflate_json_1k", ("msgs_per_s",), True),
    ("deflate_json_64k", "deflate JSON 64KiB 1c msg/s", "deflate_json_64k", ("msgs_per_s",), True),
]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Server:
    def __init__(self, name, tmpl, baseline, a, logdir):
        self.name, self.tmpl, self.baseline, self.a = name, tmpl, baseline, a
        self.logdir = logdir
        self.proc = None
        self.port = None

    def start(self):
        self.port = free_port()
        cmd = self.tmpl.format(port=self.port, py=self.a.python, here=HERE)
        argv = ["bash", "-c", cmd]
        if self.a.server_cpu is not None:
            argv = ["taskset", "-c", str(self.a.server_cpu), *argv]
        logf = open(os.path.join(self.logdir, f"server-{self.name}.log"), "a")  # noqa: SIM115 (handed to Popen)
        logf.write(f"\n### {dt.datetime.now().isoformat()} {cmd}\n")
        logf.flush()
        self.proc = subprocess.Popen(
            argv,
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        logf.close()
        t_end = time.monotonic() + self.a.start_timeout
        while time.monotonic() < t_end:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server {self.name} exited with {self.proc.returncode}; see logs"
                )
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                time.sleep(0.2)
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server {self.name} did not listen on {self.port}")

    def main_pid(self):
        """PID of the innermost process (bash -c usually execs the command)."""
        tree = proc_tree(self.proc.pid)
        return tree[-1] if tree else self.proc.pid

    def stop(self):
        if self.proc is None:
            return
        pids = proc_tree(self.proc.pid)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for p in reversed(pids):
                try:
                    os.kill(p, sig)
                except ProcessLookupError:
                    pass
            try:
                self.proc.wait(timeout=3)
                time.sleep(0.05)
                if all(not os.path.exists(f"/proc/{p}") for p in pids[1:]):
                    break
            except subprocess.TimeoutExpired:
                pass
        self.proc = None


def run_loadgen(a, srv, targs, timeout=120):
    argv = [
        a.python,
        LOADGEN,
        *targs,
        "--port",
        str(srv.port),
        "--server-pid",
        str(srv.proc.pid),
        "--duration",
        str(a.duration),
        "--warmup",
        str(a.warmup),
    ]
    cpu = a.client_cpu
    if targs[0] == "latency" and a.latency_cpu != "client":
        cpu = a.server_cpu if a.latency_cpu == "same" else a.latency_cpu
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    try:
        p = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        return {"error": "loadgen timeout"}
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        return {"error": (p.stderr or p.stdout).strip()[-400:] or f"rc={p.returncode}"}
    return json.loads(lines[-1])


def dig(d, path):
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d if isinstance(d, (int, float)) else None


def fmt(v):
    if v is None:
        return "-"
    av = abs(v)
    if av >= 1e6:
        return f"{v / 1e6:.2f}M"
    if av >= 1e4:
        return f"{v / 1e3:.0f}k"
    if av >= 1e3:
        return f"{v / 1e3:.1f}k"
    if av >= 100:
        return f"{v:.0f}"
    if av >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def machine_info(a):
    info = {
        "time": dt.datetime.now().isoformat(timespec="seconds"),
        "host_python": platform.python_version(),
        "nproc": os.cpu_count(),
        "platform": platform.platform(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), ""
            )
        with open("/proc/loadavg") as f:
            info["loadavg_start"] = f.read().split()[:3]
        with open("/proc/meminfo") as f:
            info["mem_total_kb"] = int(f.readline().split()[1])
    except OSError:
        pass
    check = (
        "import json,sys,platform\n"
        "r={'python':platform.python_version()}\n"
        "from importlib import metadata as m\n"
        "for p in ('upwire','websockets','aiohttp','picows','uvloop','aiofastnet'):\n"
        "  try: r[p]=m.version(p)\n"
        "  except Exception: r[p]=None\n"
        "try:\n"
        "  import websockets.frames, websockets.speedups as s; r['websockets_speedups']=websockets.frames.apply_mask is s.apply_mask\n"
        "except Exception as e: r['websockets_speedups']=False\n"
        "try:\n"
        "  from aiohttp._websocket import reader; r['aiohttp_ws_reader']=reader.WebSocketReader.__module__\n"
        "  import aiohttp.http_parser as hp; r['aiohttp_http_parser']=hp.HttpRequestParser.__module__\n"
        "except Exception as e: r['aiohttp_ws_reader']=repr(e)\n"
        "try:\n"
        "  import upwire.protocol.frames as f; r['upwire_apply_mask']=repr(f.apply_mask)\n"
        "except Exception as e: r['upwire_apply_mask']=repr(e)\n"
        "print(json.dumps(r))\n"
    )
    try:
        out = subprocess.run(
            [a.python, "-c", check], capture_output=True, text=True, timeout=60
        ).stdout
        info["packages"] = json.loads(out.strip().splitlines()[-1])
    except Exception as e:
        info["packages"] = {"error": repr(e)}
    try:
        info["upwire_commit"] = subprocess.run(
            ["git", "-C", HERE, "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def upwire_snapshot_servers(ref):
    """Servers running upwire as of git commit `ref` (see upwire_snapshot)."""
    sha, src = upwire_snapshot(ref)
    return {
        f"upwire@{sha}-{loop}": (
            f"PYTHONPATH={src} {{py}} {SRV}/upwire_echo.py --port {{port}} --loop {loop}",
            f"raw-{loop}",
        )
        for loop in ("asyncio", "uvloop")
    }


def upwire_snapshot(ref):
    """Export upwire/ as of git commit `ref` (once) to results/upwire-src-<sha>/; return (sha, path)."""
    repo = os.path.dirname(HERE)
    sha = subprocess.run(
        ["git", "-C", repo, "rev-parse", "--short", ref], capture_output=True, text=True, check=True
    ).stdout.strip()
    src = os.path.join(HERE, "results", f"upwire-src-{sha}")
    if not os.path.isdir(os.path.join(src, "upwire")):
        os.makedirs(src, exist_ok=True)
        files = ["upwire"] + [
            f
            for f in ("setup.py", "pyproject.toml", "README.md")
            if subprocess.run(["git", "-C", repo, "cat-file", "-e", f"{sha}:{f}"]).returncode == 0
        ]
        archive = subprocess.run(
            ["git", "-C", repo, "archive", sha, *files], capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", src], input=archive, check=True)
        if os.path.exists(os.path.join(src, "setup.py")):
            # C speedups, if that commit has them: built in place, as `pip install` would build them
            python = DEFAULT_PY if os.path.exists(DEFAULT_PY) else sys.executable
            built = subprocess.run(
                [python, "setup.py", "-q", "build_ext", "--inplace"], cwd=src, capture_output=True
            )
            log(
                f"upwire@{sha}: build_ext {'ok' if built.returncode == 0 else 'FAILED (pure Python)'}"
            )
    return sha, src


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--python",
        default=DEFAULT_PY if os.path.exists(DEFAULT_PY) else sys.executable,
        help="interpreter for loadgen and built-in servers ({py} in templates)",
    )
    p.add_argument(
        "--peers",
        default="all",
        help="comma list of built-in servers, 'all' or 'none' (baselines are added as needed): "
        + ",".join(PEERS),
    )
    p.add_argument(
        "--server-cmd",
        action="append",
        default=[],
        help="extra server command with {port} (and optionally {py}); repeatable",
    )
    p.add_argument(
        "--name", action="append", default=[], help="name for each --server-cmd (same order)"
    )
    p.add_argument(
        "--baseline",
        action="append",
        default=[],
        help="raw ceiling for each --server-cmd: raw-asyncio or raw-uvloop (default raw-uvloop)",
    )
    p.add_argument(
        "--deflate-server-cmd",
        action="append",
        default=[],
        help="extra server command that negotiates permessage-deflate (deflate tests only)",
    )
    p.add_argument("--deflate-name", action="append", default=[])
    p.add_argument("--no-deflate-peers", action="store_true", help="skip built-in deflate peers")
    p.add_argument(
        "--tests",
        default="echo,fanout,deflate,clients",
        help="comma list of groups (echo, fanout, deflate, clients) and/or single test ids "
        "(e.g. tp_16_1c,lat_16); clients = the client-side benchmark of clients.py",
    )
    p.add_argument(
        "--client-loops", default="asyncio,uvloop", help="event loops for the clients group"
    )
    p.add_argument(
        "--upwire-ref",
        action="append",
        default=[],
        help="also run upwire as of this git commit (servers upwire@<sha>-asyncio/-uvloop, from a snapshot "
        "in results/; repeatable, e.g. to compare before/after a change; the shared working tree may "
        "change under a long run, a snapshot does not)",
    )
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--duration",
        type=float,
        default=1.0,
        help="measured seconds per throughput/latency/connrate",
    )
    p.add_argument("--warmup", type=float, default=0.3)
    p.add_argument("--fanout-counts", default="1000,10000")
    p.add_argument(
        "--server-cpu", default="0", help="taskset CPU list for servers ('' = no pinning)"
    )
    p.add_argument(
        "--client-cpu",
        default="1",
        help="taskset CPU list for the load generator ('' = no pinning)",
    )
    p.add_argument(
        "--latency-cpu",
        default="same",
        help="where the load generator runs for the latency test: 'same' (server's core: no "
        "cross-core wake-ups, server cost fully visible), 'client' (like the others) or a CPU list",
    )
    p.add_argument("--start-timeout", type=float, default=20.0)
    p.add_argument(
        "--out", default=None, help="JSON output path (default results/bench-<time>.json)"
    )
    p.add_argument(
        "--report", metavar="JSON", help="only print the tables of an earlier run's JSON file"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="1 repeat, short durations, fanout to 200 and 1000 only",
    )
    a = p.parse_args()
    if a.report:
        # A finished run's JSON, or one kept gzipped in bench/recorded/.
        with (gzip.open if a.report.endswith(".gz") else open)(a.report, "rt") as f:
            print_report(json.load(f), a.report)
        return
    if a.quick:
        a.repeats, a.duration, a.warmup, a.fanout_counts = 1, 0.4, 0.15, "200,1000"
    a.server_cpu = a.server_cpu or None
    a.client_cpu = a.client_cpu or None
    if (a.server_cpu or a.client_cpu) and subprocess.run(
        ["which", "taskset"], capture_output=True
    ).returncode:
        log("taskset not found: not pinning")
        a.server_cpu = a.client_cpu = None

    # raise the fd limit for us and every child (10k connections on each side)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for want in (65536, hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, soft), max(want, hard)))
            break
        except (ValueError, OSError):
            continue

    # ---- server set
    servers = {}
    if a.peers == "all":
        sel = list(PEERS)
    elif a.peers == "none":
        sel = []
    else:
        sel = [s.strip() for s in a.peers.split(",") if s.strip()]
    for i, cmd in enumerate(a.server_cmd):
        name = a.name[i] if i < len(a.name) else f"custom{i + 1}"
        base = (
            a.baseline[i]
            if i < len(a.baseline)
            else (a.baseline[-1] if a.baseline else "raw-uvloop")
        )
        servers[name] = (cmd, base)
    for ref in a.upwire_ref:
        servers.update(upwire_snapshot_servers(ref))
    for s in sel:
        if s not in PEERS:
            raise SystemExit(f"unknown peer {s}")
        servers[s] = PEERS[s]
    for _, base in list(servers.values()):
        if base and base not in servers:
            servers[base] = PEERS[base]
    dservers = {}
    if not a.no_deflate_peers:
        for s, v in DEFLATE_PEERS.items():
            lib_loop = s.split("+")[0]
            if a.peers == "all" or lib_loop in sel:
                dservers[s] = v
    for i, cmd in enumerate(a.deflate_server_cmd):
        name = a.deflate_name[i] if i < len(a.deflate_name) else f"custom-deflate{i + 1}"
        base = a.baseline[i] if i < len(a.baseline) else "raw-uvloop"
        dservers[name] = (cmd, base)

    # order: each baseline followed by its servers -> A B C D, A' B' C' ...
    def ordered(d):
        bases = [n for n, (_, b) in d.items() if not b]
        out = []
        for b in sorted(bases):
            out.append(b)
            out += sorted(n for n, (_, bb) in d.items() if bb == b)
        return out

    groups = set(t.strip() for t in a.tests.split(","))
    etests = echo_tests()
    sel_echo = {k: v for k, v in etests.items() if "echo" in groups or k in groups}
    do_fanout = "fanout" in groups
    sel_defl = {k: v for k, v in DEFLATE_TESTS.items() if "deflate" in groups or k in groups}

    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_path = a.out or os.path.join(HERE, "results", f"bench-{stamp}.json")
    logdir = os.path.join(HERE, "results", f"logs-{stamp}")
    os.makedirs(logdir, exist_ok=True)

    meta = machine_info(a)
    meta.update(
        {
            "repeats": a.repeats,
            "duration_s": a.duration,
            "warmup_s": a.warmup,
            "server_cpu": a.server_cpu,
            "client_cpu": a.client_cpu,
            "argv": sys.argv,
            "windows_1conn": WINDOW_1C,
            "windows_100conn_per_conn": WINDOW_100C,
        }
    )
    log(
        f"machine: {meta.get('cpu')} x{meta['nproc']}, load {meta.get('loadavg_start')}, "
        f"packages {meta.get('packages')}"
    )
    runs = []  # {"server","baseline","test","rep","result"}
    all_srv = {**servers}
    t_start = time.monotonic()

    def record(name, base, test, rep, res):
        runs.append(
            {
                "server": name,
                "baseline": base,
                "test": test,
                "rep": rep,
                "result": res,
                "t": round(time.monotonic() - t_start, 2),
            }
        )
        if "error" in res:
            log(f"  ! {name} {test} rep{rep}: {res['error'][:300]}")

    # ---- echo phase: all servers up at once (idle ones cost nothing), interleaved per test
    order = ordered(servers)
    if sel_echo and order:
        live = {}
        try:
            for n in order:
                live[n] = Server(n, servers[n][0], servers[n][1], a, logdir)
                live[n].start()
            for rep in range(a.repeats):
                for test, targs in sel_echo.items():
                    for n in order:
                        res = run_loadgen(a, live[n], targs)
                        record(n, servers[n][1], test, rep, res)
                        if live[n].proc.poll() is not None:
                            log(f"  ! server {n} died; restarting")
                            live[n].start()
                    log(f"rep {rep} {test} done ({time.monotonic() - t_start:.0f}s)")
        finally:
            for s in live.values():
                s.stop()

    # ---- fanout phase (memory + broadcast): fresh server per run
    if do_fanout and order:
        for rep in range(a.repeats):
            for n in order:
                s = Server(n, servers[n][0], servers[n][1], a, logdir)
                try:
                    s.start()
                    targs = [
                        "fanout",
                        "--counts",
                        a.fanout_counts,
                        "--rounds",
                        "5",
                        "--concurrency",
                        "50",
                    ]
                    argv = [
                        a.python,
                        LOADGEN,
                        *targs,
                        "--port",
                        str(s.port),
                        "--server-pid",
                        str(s.proc.pid),
                    ]
                    if a.client_cpu is not None:
                        argv = ["taskset", "-c", str(a.client_cpu), *argv]
                    try:
                        pr = subprocess.run(argv, capture_output=True, text=True, timeout=240)
                        lines = [ln for ln in pr.stdout.splitlines() if ln.startswith("{")]
                        res = json.loads(lines[-1]) if lines else {"error": pr.stderr[-400:]}
                    except subprocess.TimeoutExpired:
                        res = {"error": "fanout timeout"}
                except RuntimeError as e:
                    res = {"error": str(e)}
                finally:
                    s.stop()
                record(n, servers[n][1], "fanout", rep, res)
            log(f"rep {rep} fanout done ({time.monotonic() - t_start:.0f}s)")

    # ---- deflate phase
    dorder = []
    if sel_defl and dservers:
        dall = dict(dservers)
        for _, (_, b) in list(dservers.items()):
            if b and b not in dall:
                dall[b] = PEERS[b]
        dorder = ordered(dall)
        all_srv.update(dall)
        live = {}
        try:
            for n in dorder:
                live[n] = Server(n, dall[n][0], dall[n][1], a, logdir)
                live[n].start()
            for rep in range(a.repeats):
                for test, targs in sel_defl.items():
                    for n in dorder:
                        record(n, dall[n][1], test, rep, run_loadgen(a, live[n], targs))
                log(f"rep {rep} deflate done ({time.monotonic() - t_start:.0f}s)")
        finally:
            for s in live.values():
                s.stop()

    # ---- client side (clients.py): upwire's client vs the websockets and picows clients
    clients_result = None
    if "clients" in groups:
        import clients

        a.loops = a.client_loops
        a.upwire_src = upwire_snapshot(a.upwire_ref[0])[1] if a.upwire_ref else None
        clients_result = clients.run_all(a, log=log)

    # ---- summary
    try:
        with open("/proc/loadavg") as f:
            meta["loadavg_end"] = f.read().split()[:3]
    except OSError:
        pass
    meta["elapsed_s"] = round(time.monotonic() - t_start, 1)

    def summarize(rows, names):
        summ = {}
        for mid, label, test, path, hib in rows:
            for n in names:
                base = all_srv[n][1] or n
                vals, ratios, lgu = [], [], []
                for r in runs:
                    if r["server"] != n or r["test"] != test:
                        continue
                    v = dig(r["result"], path)
                    vals.append(v)
                    lgu.append(
                        dig(r["result"], ("lg_cpu_util",))
                        if test != "fanout"
                        else (
                            dig(r["result"], (*path[:2], "bcast_lg_cpu_util"))
                            if mid.startswith("bcast")
                            else None
                        )
                    )
                    bv = next(
                        (
                            dig(b["result"], path)
                            for b in runs
                            if b["server"] == base and b["test"] == test and b["rep"] == r["rep"]
                        ),
                        None,
                    )
                    ratios.append(v / bv if v is not None and bv else None)
                if not vals:
                    continue
                summ.setdefault(mid, {})[n] = {
                    "label": label,
                    "median": med(vals),
                    "ratio_median": med(ratios),
                    "values": vals,
                    "ratios": ratios,
                    "baseline": base,
                    "higher_is_better": hib,
                    "lg_cpu_util_median": med(lgu),
                    "server_cpu_util_median": med(
                        [
                            dig(r["result"], ("server_cpu_util",))
                            for r in runs
                            if r["server"] == n and r["test"] == test
                        ]
                    ),
                }
        return summ

    summary = summarize(ROWS, order)
    dsummary = summarize(DEFLATE_ROWS, dorder)
    result = {
        "meta": meta,
        "servers": {n: {"cmd": c, "baseline": b} for n, (c, b) in all_srv.items()},
        "summary": summary,
        "deflate_summary": dsummary,
        "runs": runs,
    }
    if clients_result is not None:
        result["clients"] = clients_result

    result["meta"]["order"] = order
    result["meta"]["deflate_order"] = dorder
    with open(out_path, "w") as f:
        json.dump(result, f, indent=1)
    print_report(result, out_path)


def print_report(result, out_path):
    """Compact tables (one per baseline group) from a result dict; also used by --report."""
    meta, srv = result["meta"], result["servers"]
    base_of = {n: v["baseline"] for n, v in srv.items()}

    def table(rows, summ, order_):
        bases = [n for n in order_ if not base_of.get(n)]
        for b in bases:
            cols = [b] + [n for n in order_ if base_of.get(n) == b]
            w = max(17, max(len(c) for c in cols) + 2)
            title = f"metric (median of {meta['repeats']}; x = ratio to {b})"
            print(f"\n{title:<36}" + "".join(f"{c:>{w}}" for c in cols))
            for mid, label, *_ in rows:
                if mid not in summ:
                    continue
                cells = []
                for c in cols:
                    e = summ[mid].get(c)
                    if not e:
                        cells.append("-")
                    else:
                        flag = "!" if (e.get("lg_cpu_util_median") or 0) > 0.85 else ""
                        r = e["ratio_median"]
                        if c == b or r is None:
                            cells.append(fmt(e["median"]) + flag)
                        else:
                            cells.append(f"{fmt(e['median'])}{flag} x{r:.2f}")
                print(f"{label:<36}" + "".join(f"{x:>{w}}" for x in cells))

    def order_of(summ):
        names = list(dict.fromkeys(n for m in summ.values() for n in m))
        out = []
        for b in sorted(n for n in names if not base_of.get(n)):
            out += [b, *sorted(n for n in names if base_of.get(n) == b)]
        return out

    print(
        f"\n# {meta.get('cpu')} x{meta['nproc']}  load {meta.get('loadavg_start')}->{meta.get('loadavg_end')}"
        f"  pin server={meta.get('server_cpu')} client={meta.get('client_cpu')}  {meta.get('elapsed_s')}s"
    )
    print(
        "# packages:",
        json.dumps(meta.get("packages")),
        " upwire commit:",
        meta.get("upwire_commit"),
    )
    table(ROWS, result["summary"], meta.get("order") or order_of(result["summary"]))
    if result.get("deflate_summary"):
        table(
            DEFLATE_ROWS,
            result["deflate_summary"],
            meta.get("deflate_order") or order_of(result["deflate_summary"]),
        )
    print("\n'!' = load generator CPU > 85% during that measurement (it may be the limit there)")
    if result.get("clients"):
        import clients

        clients.print_table(result["clients"])
    print(f"JSON: {out_path}")
    errs = [r for r in result["runs"] if "error" in r["result"]]
    if errs:
        print(f"{len(errs)} runs reported errors (see JSON)")


if __name__ == "__main__":
    main()
