"""Neutral WebSocket load generator (uvloop + asyncio.Protocol on raw sockets).

It performs the RFC 6455 opening handshake itself, then writes pre-built masked
frames (built once per run) and parses only the frame headers of what comes
back, to count messages.  Every server is driven by exactly the same bytes.

The handshake-rate test (connrate) drives its connections from a plain epoll loop instead: with an event
loop, a transport and futures per connection, this process needed a whole core for ~9,000 handshakes/s
and capped every server's figure; the epoll loop stays near half a core at the servers' rates.

One invocation = one measurement; the result is printed as one JSON line.

    python loadgen.py throughput --port P --conns 1 --size 16 --window 256
    python loadgen.py latency    --port P
    python loadgen.py connrate   --port P --concurrency 50
    python loadgen.py fanout     --port P --server-pid PID --counts 1000,10000

Only 127.0.0.0/8 is ever contacted.  Every loop is bounded in count and time.
"""

import argparse
import asyncio
import errno
import ipaddress
import json
import os
import select
import socket
import time
import zlib

MASK_KEY = bytes.fromhex("9c3a5e71")  # fixed, non-zero: servers really unmask
WS_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
BCAST_TRIGGER = b"__broadcast__"
IP_BIND_ADDRESS_NO_PORT = 24
HS_TIMEOUT = 10.0

perf = time.perf_counter


# --------------------------------------------------------------------------- frames


def mask_bytes(payload, key=MASK_KEY):
    n = len(payload)
    if not n:
        return b""
    m = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(m, "little")).to_bytes(n, "little")


def build_frame(opcode, payload, rsv1=False, key=MASK_KEY):
    b0 = 0x80 | opcode | (0x40 if rsv1 else 0)
    n = len(payload)
    if n < 126:
        hdr = bytes([b0, 0x80 | n])
    elif n < 65536:
        hdr = bytes([b0, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        hdr = bytes([b0, 0x80 | 127]) + n.to_bytes(8, "big")
    return hdr + key + mask_bytes(payload, key)


CLOSE_FRAME = build_frame(0x8, (1000).to_bytes(2, "big"))
TRIGGER_FRAME = build_frame(0x1, BCAST_TRIGGER)


def json_payload(size):
    """Compressible JSON text of exactly `size` bytes (ASCII)."""
    items, i = [], 0
    while True:
        items.append(
            f'{{"id":{i},"user":"user{i:05d}","active":true,"score":{i % 97}.5,'
            '"tags":["alpha","beta","gamma"],"text":"the quick brown fox"}'
        )
        s = '{"type":"update","items":[' + ",".join(items) + "]}"
        if len(s) >= size:
            break
        i += 1
    s = s[: size - 1] + "}"
    return s.encode()


def deflate_message(data):
    c = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def handshake_request(host, port, deflate=False):
    lines = [
        "GET / HTTP/1.1",
        f"Host: {host}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: " + WS_KEY.decode(),
        "Sec-WebSocket-Version: 13",
    ]
    if deflate:
        lines.append("Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# --------------------------------------------------------------------------- connection


class Conn(asyncio.Protocol):
    """Client connection: handshake, then minimal header-only frame counting.

    Fast path: once the shape of the first echoed data frame is known, runs of
    identical frames are validated with strided slices (header bytes of every
    frame compared at C speed) instead of a per-frame Python loop.
    """

    def __init__(self, lg, need_deflate=False):
        self.lg = lg
        self.t = None
        self.hs = bytearray()
        self.open = False
        self.raw = False  # peer echoed our request (raw TCP ceiling)
        self.need_deflate = need_deflate
        self.hs_waiter = lg.loop.create_future()
        self.closed_waiter = lg.loop.create_future()
        self.got_close = False
        self.pending = b""  # incomplete frame header carried over
        self.skip = 0  # payload bytes of current frame still to come
        self.cur_counts = 0
        self.flen = 0  # learned frame length for the fast path
        self.fhdr = b""
        self.reps = ()
        self.on_msgs = None  # callback(conn, k)
        self.count = 0
        self.owed = 0
        self.t_sent = 0

    # -- asyncio callbacks
    def connection_made(self, t):
        self.t = t

    def connection_lost(self, exc):
        self.open = False
        if not self.hs_waiter.done():
            self.hs_waiter.set_exception(ConnectionError("closed during handshake"))
        if not self.closed_waiter.done():
            self.closed_waiter.set_result(None)

    def data_received(self, data):
        if not self.open:
            self.hs += data
            i = self.hs.find(b"\r\n\r\n")
            if i < 0:
                if len(self.hs) > 65536:
                    self.t.abort()
                return
            head = bytes(self.hs[:i])
            data = bytes(self.hs[i + 4 :])
            self.hs = None
            if head.startswith(b"GET "):
                self.raw = True
            elif not head.startswith(b"HTTP/1.1 101"):
                if not self.hs_waiter.done():
                    self.hs_waiter.set_exception(
                        ConnectionError(head.split(b"\r\n")[0].decode("latin1"))
                    )
                self.t.abort()
                return
            elif self.need_deflate and b"permessage-deflate" not in head.lower():
                if not self.hs_waiter.done():
                    self.hs_waiter.set_exception(
                        ConnectionError("server did not accept permessage-deflate")
                    )
                self.t.abort()
                return
            self.open = True
            if not self.hs_waiter.done():
                self.hs_waiter.set_result(None)
            if not data:
                return
        k = self._parse(data)
        if k:
            self.count += k
            cb = self.on_msgs
            if cb is not None:
                cb(self, k)

    # -- frame counting
    def _learn(self, hdr, flen):
        self.flen = flen
        self.fhdr = hdr
        self.reps = tuple(bytes([b]) * 4096 for b in hdr)

    def _parse(self, data):
        k = 0
        if self.pending:
            data = self.pending + data
            self.pending = b""
        n = len(data)
        pos = 0
        if self.skip:
            if self.skip > n:
                self.skip -= n
                return 0
            pos = self.skip
            self.skip = 0
            k += self.cur_counts
        fast_ok = True
        while pos < n:
            L = self.flen
            if fast_ok and L and n - pos >= L:
                cnt = (n - pos) // L
                if cnt > 4096:
                    cnt = 4096
                end = pos + cnt * L
                reps = self.reps
                for i in range(len(reps)):
                    if data[pos + i : end : L] != reps[i][:cnt]:
                        fast_ok = False
                        break
                if fast_ok:
                    k += cnt
                    pos = end
                    continue
            # slow path: one frame
            if n - pos < 2:
                break
            b0 = data[pos]
            b1 = data[pos + 1]
            ln = b1 & 0x7F
            h = 2
            if ln == 126:
                if n - pos < 4:
                    break
                ln = int.from_bytes(data[pos + 2 : pos + 4], "big")
                h = 4
            elif ln == 127:
                if n - pos < 10:
                    break
                ln = int.from_bytes(data[pos + 2 : pos + 10], "big")
                h = 10
            if b1 & 0x80:
                h += 4
                if n - pos < h:
                    break
            op = b0 & 0x0F
            counts = 1 if (b0 & 0x80 and op < 8) else 0
            if op == 0x8:
                self._on_close_frame()
            elif counts and not self.flen:
                self._learn(data[pos : pos + h], h + ln)
            flen = h + ln
            if pos + flen <= n:
                pos += flen
                k += counts
            else:
                self.skip = pos + flen - n
                self.cur_counts = counts
                pos = n
        if pos < n:
            self.pending = data[pos:]
        return k

    def _on_close_frame(self):
        self.got_close = True
        # the client closes TCP as soon as the server's close frame is in
        # (identical for every server, including the raw echo of our own frame)
        if self.t is not None:
            self.t.close()

    # -- helpers
    def close_ws(self):
        if self.t is not None and not self.t.is_closing():
            self.t.write(CLOSE_FRAME)


class LoadGen:
    def __init__(self, args):
        self.args = args
        self.loop = asyncio.get_running_loop()
        self.host = args.host
        self.port = args.port
        self.req = handshake_request(args.host, args.port, getattr(args, "deflate", False))
        self.srcs = parse_srcs(args.src_ips)
        self.src_i = 0

    async def connect(self, src=None, need_deflate=False):
        loop = self.loop
        if src is None:
            tr, pr = await loop.create_connection(
                lambda: Conn(self, need_deflate), self.host, self.port
            )
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.setblocking(False)
                s.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                s.bind((src, 0))
                await loop.sock_connect(s, (self.host, self.port))
            except BaseException:
                s.close()
                raise
            tr, pr = await loop.create_connection(lambda: Conn(self, need_deflate), sock=s)
        tr.write(self.req)
        try:
            await asyncio.wait_for(pr.hs_waiter, HS_TIMEOUT)
        except BaseException:
            tr.abort()
            raise
        return pr

    def next_src(self):
        if not self.srcs:
            return None
        s = self.srcs[self.src_i % len(self.srcs)]
        self.src_i += 1
        return s

    async def open_many(self, n, conns, concurrency=64, need_deflate=False, deadline=None):
        """Open connections until len(conns) == n (bounded by deadline)."""
        errors = 0
        sem = asyncio.Semaphore(concurrency)

        async def one():
            nonlocal errors
            async with sem:
                try:
                    c = await self.connect(self.next_src(), need_deflate)
                    conns.append(c)
                except Exception:
                    errors += 1

        while len(conns) < n and errors < 100 and (deadline is None or perf() < deadline):
            todo = min(n - len(conns), 2000)
            await asyncio.gather(*(one() for _ in range(todo)))
        return errors

    async def close_all(self, conns, timeout=3.0):
        for c in conns:
            c.on_msgs = None
            c.close_ws()
        waiters = [c.closed_waiter for c in conns if not c.closed_waiter.done()]
        if waiters:
            await asyncio.wait(waiters, timeout=timeout)
        for c in conns:
            if c.t is not None and not c.t.is_closing():
                c.t.abort()


def parse_srcs(spec):
    if not spec:
        return []
    out = []
    for part in spec.split(","):
        if "-" in part:
            a, b = part.split("-")
            a, b = int(ipaddress.IPv4Address(a)), int(ipaddress.IPv4Address(b))
            out += [str(ipaddress.IPv4Address(x)) for x in range(a, b + 1)]
        else:
            out.append(part)
    for s in out:
        if not ipaddress.IPv4Address(s).is_loopback:
            raise SystemExit(f"source address {s} is not in 127.0.0.0/8")
    return out


def proc_cpu(pid):
    """utime+stime (seconds) of pid and its descendants; None if unknown."""
    if not pid:
        return None
    tot = 0.0
    tck = os.sysconf("SC_CLK_TCK")
    for p in proc_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                parts = f.read().rsplit(")", 1)[1].split()
            tot += (int(parts[11]) + int(parts[12])) / tck
        except OSError:
            pass
    return tot


def proc_tree(pid):
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return out


def proc_rss_kb(pid):
    tot = 0
    for p in proc_tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        tot += int(line.split()[1])
        except OSError:
            pass
    return tot


class CpuMeter:
    def __init__(self, server_pid):
        self.pid = server_pid

    def start(self):
        self.t0 = perf()
        self.c0 = time.process_time()
        self.s0 = proc_cpu(self.pid)

    def stop(self):
        wall = perf() - self.t0
        out = {"wall_s": wall, "lg_cpu_util": (time.process_time() - self.c0) / wall}
        if self.s0 is not None:
            out["server_cpu_s"] = proc_cpu(self.pid) - self.s0
            out["server_cpu_util"] = out["server_cpu_s"] / wall
        return out


# --------------------------------------------------------------------------- tests


async def t_throughput(lg, a):
    if a.json_text:
        payload = json_payload(a.size)
        body = deflate_message(payload) if a.deflate else payload
        frame = build_frame(0x1, body, rsv1=a.deflate)
    else:
        payload = os.urandom(a.size)
        frame = build_frame(0x2, payload)
    fl = len(frame)
    cache = {}

    def batch(k):
        b = cache.get(k)
        if b is None:
            b = frame * k
            if len(cache) < 512:
                cache[k] = b
        return b

    conns = []
    deadline = perf() + 30
    err = await lg.open_many(
        a.conns, conns, concurrency=50, need_deflate=a.deflate, deadline=deadline
    )
    if len(conns) < a.conns:
        raise SystemExit(f"could only open {len(conns)}/{a.conns} connections ({err} errors)")
    state = {"run": True, "total": 0}
    # refill policy: by default one write of k frames per read that completed k echoes;
    # with --refill F, wait until at least F*window echoes are owed, then top up in one write
    thresh = max(1, int(a.refill * a.window))

    def on_msgs(c, k):
        state["total"] += k
        if state["run"]:
            k += c.owed
            if k < thresh:
                c.owed = k
                return
            c.owed = 0
            if fl * k <= (1 << 20):
                c.t.write(batch(k))
            else:
                for _ in range(k):
                    c.t.write(frame)

    for c in conns:
        c.on_msgs = on_msgs
    for c in conns:
        if fl * a.window <= (1 << 20):
            c.t.write(batch(a.window))
        else:
            for _ in range(a.window):
                c.t.write(frame)
    await asyncio.sleep(a.warmup)
    cpu = CpuMeter(a.server_pid)
    n0 = state["total"]
    cpu.start()
    await asyncio.sleep(a.duration)
    n1 = state["total"]
    m = cpu.stop()
    state["run"] = False
    msgs = n1 - n0
    res = {
        "msgs": msgs,
        "msgs_per_s": msgs / m["wall_s"],
        "MB_per_s": msgs * a.size / m["wall_s"] / 1e6,
        "wire_frame_bytes": fl,
        **m,
    }
    if "server_cpu_s" in m and msgs:
        res["server_cpu_us_per_msg"] = m["server_cpu_s"] / msgs * 1e6
    if msgs == 0:
        res["error"] = "no messages echoed"
    await lg.close_all(conns)
    return res


async def t_latency(lg, a):
    frame = build_frame(0x2, os.urandom(a.size))
    c = await lg.connect()
    st = {"n": 0, "lat": [], "rec": False, "done": lg.loop.create_future()}
    pc = time.perf_counter_ns
    lat = st["lat"]
    limit = a.max_count

    def on_msgs(conn, k):
        now = pc()
        if st["rec"]:
            lat.append(now - conn.t_sent)
            if len(lat) >= limit and not st["done"].done():
                st["done"].set_result(None)
                return
        if st["done"].done():
            return
        conn.t_sent = pc()
        conn.t.write(frame)

    c.on_msgs = on_msgs
    c.t_sent = pc()
    c.t.write(frame)
    await asyncio.sleep(a.warmup)
    st["rec"] = True
    cpu = CpuMeter(a.server_pid)
    cpu.start()
    try:
        await asyncio.wait_for(asyncio.shield(st["done"]), a.duration)
    except TimeoutError:
        pass
    m = cpu.stop()
    if not st["done"].done():
        st["done"].set_result(None)
    await lg.close_all([c])
    lat.sort()
    if not lat:
        return {"error": "no round trips", **m}
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] / 1e3  # noqa: E731
    return {
        "n": len(lat),
        "p50_us": q(0.50),
        "p90_us": q(0.90),
        "p99_us": q(0.99),
        "p999_us": q(0.999),
        "mean_us": sum(lat) / len(lat) / 1e3,
        "max_us": lat[-1] / 1e3,
        **m,
    }


class _Cycle:
    """One connection of the handshake-rate test, from connect to the server's close frame."""

    __slots__ = ("buf", "deadline", "sock", "state")


def _connrate_start(lg, c, ep, byfd, now):
    """Open the next connection of slot `c`: non-blocking connect, the request sent once connected."""
    sock = c.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    src = lg.next_src()
    if src is not None:
        sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((src, 0))
    c.buf, c.deadline = b"", now + HS_TIMEOUT
    err = sock.connect_ex((lg.host, lg.port))
    fd = sock.fileno()
    byfd[fd] = c
    if err == 0:
        sock.send(lg.req)  # a fresh socket's buffer takes the whole request
        c.state = 1
        ep.register(fd, select.EPOLLIN)
    elif err == errno.EINPROGRESS:
        c.state = 0
        ep.register(fd, select.EPOLLOUT)
    else:
        raise OSError(err, os.strerror(err))


def _connrate_step(lg, c, ep):
    """Advance slot `c` on an epoll event; True when its cycle is complete (close frame received)."""
    sock = c.sock
    if c.state == 0:  # connected, or failed to
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, os.strerror(err))
        sock.send(lg.req)
        ep.modify(sock.fileno(), select.EPOLLIN)
        c.state = 1
        return False
    data = sock.recv(65536)
    if not data:
        raise ConnectionError(
            "closed before the close frame" if c.state == 2 else "closed during handshake"
        )
    buf = c.buf + data
    if c.state == 1:  # the response head
        i = buf.find(b"\r\n\r\n")
        if i < 0:
            if len(buf) > 65536:
                raise ConnectionError("response head too long")
            c.buf = buf
            return False
        # A 101, or the raw TCP ceiling's echo of the request itself.
        if not (buf.startswith(b"HTTP/1.1 101") or buf.startswith(b"GET ")):
            raise ConnectionError(buf.split(b"\r\n")[0].decode("latin1"))
        sock.send(CLOSE_FRAME)
        c.state = 2
        buf = buf[i + 4 :]
    # Frames until a close frame (the server's answer, or the raw echo of ours).
    while len(buf) >= 2:
        if buf[0] & 0x0F == 0x8:
            return True
        ln = buf[1] & 0x7F
        h = 2 + (2 if ln == 126 else 8 if ln == 127 else 0) + (4 if buf[1] & 0x80 else 0)
        if len(buf) < h:
            break
        if ln >= 126:
            ln = int.from_bytes(buf[2 : 4 if ln == 126 else 10], "big")
        if len(buf) < h + ln:
            break
        buf = buf[h + ln :]
    c.buf = buf
    return False


async def t_connrate(lg, a):
    """Handshakes per second: `concurrency` slots, each connecting, upgrading, closing, over and over.

    A plain epoll loop over non-blocking sockets (no event loop, transport or future per connection), so
    that the load generator stays well below one core while the servers are measured; for each handshake
    it makes the connect, the request, the close frame and the close, and reads the 101 and the server's
    close frame.
    """
    ep = select.epoll()
    byfd = {}
    slots = [_Cycle() for _ in range(a.concurrency)]
    n = err = 0
    errs = {}
    rec = False
    t_rec = perf() + a.warmup
    t_end = t_rec + a.duration
    cpu = CpuMeter(a.server_pid)
    now = perf()
    retry = []  # (time, slot): slots waiting a moment after an error
    next_check = now + 0.1

    def fail(c, e, now):
        nonlocal err
        err += 1
        errs[type(e).__name__] = errs.get(type(e).__name__, 0) + 1
        retry.append((now + 0.01, c))

    def start(c, now):
        try:
            _connrate_start(lg, c, ep, byfd, now)
        except OSError as e:
            if c.sock is not None:
                byfd.pop(c.sock.fileno(), None)
                c.sock.close()
            fail(c, e, now)

    for c in slots:
        c.sock = None
        start(c, now)
    while True:
        now = perf()
        if not rec and now >= t_rec:
            rec = True
            n = 0
            cpu.start()
        if now >= t_end or err > 200:
            break
        for fd, _ev in ep.poll(0.05):
            c = byfd.get(fd)
            if c is None:
                continue
            try:
                done = _connrate_step(lg, c, ep)
            except OSError as e:  # ConnectionError included
                del byfd[fd]
                c.sock.close()  # also takes it out of the epoll set
                fail(c, e, now)
                continue
            if done:
                del byfd[fd]
                c.sock.close()
                n += 1
                start(c, now)
        if now >= next_check:
            next_check = now + 0.1
            for c in [c for c in byfd.values() if now > c.deadline]:
                del byfd[c.sock.fileno()]
                c.sock.close()
                fail(c, TimeoutError(), now)
            if retry:
                ready = [c for t, c in retry if t <= now]
                retry[:] = [(t, c) for t, c in retry if t > now]
                for c in ready:
                    start(c, now)
    m = cpu.stop() if rec else {"wall_s": 0.0}
    for c in byfd.values():
        c.sock.close()
    ep.close()
    res = {
        "handshakes": n,
        "per_s": n / m["wall_s"] if m["wall_s"] else 0.0,
        "errors": err,
        "error_kinds": errs,
        **m,
    }
    if "server_cpu_s" in m and n:
        res["server_cpu_us_per_conn"] = m["server_cpu_s"] / n * 1e6
    return res


async def t_fanout(lg, a):
    pid = a.server_pid
    counts = sorted(int(x) for x in a.counts.split(","))
    conns = []
    ctrl = await lg.connect()
    conns.append(ctrl)
    # warm the server's code paths with one echo and one broadcast
    await _broadcast(lg, conns, ctrl, timeout=5)
    await asyncio.sleep(0.3)
    rss0 = proc_rss_kb(pid) if pid else None
    res = {"rss0_kb": rss0, "levels": {}}
    for n in counts:
        t0 = perf()
        err = await lg.open_many(
            n, conns, concurrency=a.concurrency, deadline=perf() + a.open_timeout
        )
        open_s = perf() - t0
        lvl = {"conns": len(conns), "open_errors": err, "open_s": open_s}
        res["levels"][str(n)] = lvl
        if len(conns) < n:
            lvl["error"] = f"opened only {len(conns)}/{n}"
            break
        await asyncio.sleep(a.settle)
        if pid:
            rss = proc_rss_kb(pid)
            lvl["rss_kb"] = rss
            lvl["rss_per_conn_kb"] = (rss - rss0) / (len(conns) - 1)
        times = []
        c0, s0 = time.process_time(), proc_cpu(pid)
        for _ in range(a.rounds):
            dt = await _broadcast(lg, conns, ctrl, timeout=a.bcast_timeout)
            if dt is None:
                lvl["error"] = "broadcast timed out"
                break
            times.append(dt)
            await asyncio.sleep(0.05)
        if times:
            lvl["bcast_lg_cpu_util"] = (time.process_time() - c0) / sum(times)
            if s0 is not None:
                lvl["bcast_server_cpu_us_per_msg"] = (
                    (proc_cpu(pid) - s0) / (len(times) * len(conns)) * 1e6
                )
            times.sort()
            med = times[len(times) // 2]
            lvl.update(
                {
                    "bcast_ms_median": med * 1e3,
                    "bcast_ms_min": times[0] * 1e3,
                    "bcast_msgs_per_s": len(conns) / med,
                    "bcast_rounds": len(times),
                }
            )
    await lg.close_all(conns, timeout=5)
    return res


async def _broadcast(lg, conns, ctrl, timeout):
    n = len(conns)
    st = {"got": 0}
    done = lg.loop.create_future()

    def on_msgs(c, k):
        st["got"] += 1
        c.on_msgs = None
        if st["got"] >= n and not done.done():
            done.set_result(perf())

    for c in conns:
        c.on_msgs = on_msgs
    t0 = perf()
    ctrl.t.write(TRIGGER_FRAME)
    try:
        t1 = await asyncio.wait_for(done, timeout)
    except TimeoutError:
        t1 = None
    for c in conns:
        c.on_msgs = None
    return None if t1 is None else t1 - t0


# --------------------------------------------------------------------------- main


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("test", choices=["throughput", "latency", "connrate", "fanout"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument(
        "--server-pid", type=int, default=0, help="server PID (for CPU and RSS readings)"
    )
    p.add_argument(
        "--src-ips",
        default="127.0.0.2-127.0.0.9",
        help="loopback source addresses to spread connections over (connrate, fanout)",
    )
    p.add_argument("--duration", type=float, default=1.0)
    p.add_argument("--warmup", type=float, default=0.3)
    p.add_argument("--conns", type=int, default=1)
    p.add_argument("--size", type=int, default=16)
    p.add_argument("--window", type=int, default=64, help="in-flight messages per connection")
    p.add_argument(
        "--refill",
        type=float,
        default=0.25,
        help="throughput: top the window up only once this fraction of it has been echoed (0 = after every read)",
    )
    p.add_argument("--json-text", action="store_true", help="send compressible JSON text frames")
    p.add_argument(
        "--deflate",
        action="store_true",
        help="negotiate permessage-deflate, send compressed frames",
    )
    p.add_argument("--max-count", type=int, default=200_000)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--counts", default="1000,10000")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--settle", type=float, default=0.5)
    p.add_argument("--open-timeout", type=float, default=60.0)
    p.add_argument("--bcast-timeout", type=float, default=10.0)
    p.add_argument("--no-uvloop", action="store_true")
    a = p.parse_args()
    if not ipaddress.IPv4Address(socket.gethostbyname(a.host)).is_loopback:
        raise SystemExit("refusing: target must be in 127.0.0.0/8")
    try:
        import resource

        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except Exception:
        pass

    async def run():
        lg = LoadGen(a)
        fn = {
            "throughput": t_throughput,
            "latency": t_latency,
            "connrate": t_connrate,
            "fanout": t_fanout,
        }[a.test]
        return await fn(lg, a)

    if a.no_uvloop:
        res = asyncio.run(run())
    else:
        import uvloop

        res = uvloop.run(run())
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
