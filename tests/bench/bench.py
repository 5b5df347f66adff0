#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""udsd against its peers, in one run, on the same socket path with the same load.

    python3 tests/bench/bench.py [--duration 3] [--warmup 0.5] [--only udsd,floor,dgfloor] [--smoke]

Builds the C load generator and the floor server, starts each server fresh,
runs every workload it serves, stops it, and prints one table of each peer's
figure and udsd's ratio to it. Results also go to build-bench/bench.{json,csv,md}, and
bench.svg draws bench.json (plot.py; tests/bench/bench.svg is the README's).
Not a pass/fail test: machines are shared and noisy; compare ratios in one run.
"""
import argparse
import csv
import ctypes
import json
import math
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import plot  # noqa: E402 - beside this file
TOP = os.path.dirname(os.path.dirname(HERE))
PR_SET_PDEATHSIG = 1
OUT = os.environ.get("BENCH_OUT") or os.path.join(TOP, "build-bench")

ECHO_CELLS = [  # (name, loadgen args)
    ("conn", ["conn", "-t", "8", "-s", "64"]),
    # The Go seed's dial loop: one client, connect + 64 B echo + close, one after another.
    ("dial", ["conn", "-t", "1", "-s", "64"]),
    ("rr1", ["rr", "-c", "1", "-s", "64"]),
    ("rr8", ["rr", "-c", "8", "-t", "2", "-s", "64"]),
    ("rr64", ["rr", "-c", "64", "-t", "2", "-s", "64"]),
    ("stream", ["stream", "-c", "1"]),
]
HTTP_CELLS = [
    ("http1", ["http", "-c", "1"]),
    ("http16", ["http", "-c", "16", "-t", "2"]),
    # The same dial loop over HTTP (GET, Connection: close), so nginx has a figure too.
    ("dialhttp", ["dialhttp", "-t", "1"]),
]
DGRAM_CELLS = [  # one op: a 64-byte datagram and its echo, on a dgram listener
    ("dgram1", ["dgram", "-c", "1", "-s", "64"]),
    ("dgram8", ["dgram", "-c", "8", "-t", "2", "-s", "64"]),
]

UDSD_CONF = """
[daemon]
workers = {workers}
threads = {threads}
shutdown_timeout = 2s
busy_poll = {busy_poll}
[listener echo]
path = {echo}
service = echo
[listener http]
path = {http}
service = http
[listener dgram]
path = {dgram}
type = dgram
service = echo
{tcp}
"""


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def build():
    os.makedirs(OUT, exist_ok=True)
    cc = os.environ.get("CC", "cc")
    sh([cc, "-O2", "-Wall", "-o", os.path.join(OUT, "loadgen"), os.path.join(HERE, "loadgen.c"), "-lpthread"])
    sh([cc, "-O2", "-Wall", "-o", os.path.join(OUT, "floor"), os.path.join(HERE, "floor.c")])
    hf = [cc, "-O2", "-Wall", "-o", os.path.join(OUT, "handoff-floor"), os.path.join(HERE, "handoff-floor.c")]
    uring = os.path.exists("/usr/include/liburing.h")  # Debian's liburing-dev
    sh(hf + (["-DHAVE_LIBURING", "-luring"] if uring else []))
    sh([cc, "-O2", "-Wall", "-o", os.path.join(OUT, "dgfloor"), os.path.join(HERE, "dgfloor.c")])
    if not os.environ.get("UDSD_BIN"):  # under meson test the binary is already built
        if not os.path.exists(os.path.join(TOP, "build", "build.ninja")):
            sh(["meson", "setup", os.path.join(TOP, "build")], stdout=subprocess.DEVNULL)
        sh(["ninja", "-C", os.path.join(TOP, "build")], stdout=subprocess.DEVNULL)
    gobin = {}
    if uring:
        gobin["handoff-uring"] = True
    if shutil.which("go"):
        env = dict(os.environ, GOCACHE=os.path.join(OUT, "gocache"), GO111MODULE="off", GOPATH=os.path.join(OUT, "gopath"))
        for name in ("echo", "http"):
            exe = os.path.join(OUT, "go-" + name)
            sh(["go", "build", "-o", exe, os.path.join(HERE, "peers", name + ".go")], env=env)
            gobin[name] = exe
    return gobin


def tree(pid):
    """pid and all its descendants."""
    kids = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open("/proc/%s/stat" % p) as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                kids.setdefault(ppid, []).append(int(p))
            except (OSError, IndexError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def cpu_and_rss(pid):
    """CPU seconds and peak RSS of pid's tree: utime + stime of every process (all its
    threads, dead ones too), plus cutime + cstime (children it has reaped)."""
    cpu, rss = 0.0, 0
    tick = os.sysconf("SC_CLK_TCK")
    for p in tree(pid):
        try:
            with open("/proc/%d/stat" % p) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            cpu += sum(int(x) for x in fields[11:15]) / tick
            with open("/proc/%d/status" % p) as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        rss += int(line.split()[1])
        except OSError:
            pass
    return cpu, rss


def die_with_bench():
    """In a server, before exec: SIGKILL when the bench dies (a timeout's SIGKILL included),
    since its own session is out of reach of the test runner's kill of the bench's group."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def stop_server(proc):
    """Stop a server's whole process tree: it runs in a session and process group of its
    own (start_new_session), so every process it forks (floor's second server, node's
    cluster workers) is signalled with it, whether or not its parent passes the signal on.
    The group is killed while the server is a zombie not yet reaped: its pid, the group's
    id, cannot be reused meanwhile."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        end = time.monotonic() + 10
        while time.monotonic() < end and not os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG):
            time.sleep(0.01)
    except ChildProcessError:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # what ignored or outlived the SIGTERM
    except ProcessLookupError:
        pass
    proc.wait()


def wait_socket(path, proc, timeout=20, kind=socket.SOCK_STREAM):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError("server exited: %s" % proc.args)
        try:
            s = socket.socket(socket.AF_UNIX if not path.startswith("tcp:") else socket.AF_INET, kind)
            s.connect(path if not path.startswith("tcp:") else ("127.0.0.1", int(path.rsplit(":", 1)[1])))
            s.close()
            return
        except OSError:
            time.sleep(0.02)  # polling for a server's socket to appear, not synchronising a test
    raise RuntimeError("no socket at " + path)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dgram_path(tmp):
    return os.path.join(tmp, "dgram.sock")


def servers(tmp, gobin, args):
    """name -> (kind, argv, socket path, extra)"""
    echo, http, dgram = os.path.join(tmp, "echo.sock"), os.path.join(tmp, "http.sock"), dgram_path(tmp)
    udsd = os.environ.get("UDSD_BIN") or os.path.join(TOP, "build", "daemon", "udsd")
    port = free_port()

    def udsd_conf(workers, threads, tcp=False, busy_poll="off", datagrams=True):
        p = os.path.join(tmp, "udsd-%d-%d%s-%s%s.conf" % (workers, threads, "-tcp" if tcp else "", busy_poll,
                                                          "" if datagrams else "-nodgram"))
        text = UDSD_CONF.format(workers=workers, threads=threads, echo=echo, http=http, busy_poll=busy_poll,
                                dgram=dgram,
                                tcp="[listener tcp]\npath = tcp:127.0.0.1:%d\nservice = echo\n" % port if tcp else "")
        if not datagrams:  # for a --baseline binary older than dgram listeners
            text = text.replace("[listener dgram]\npath = %s\ntype = dgram\nservice = echo\n" % dgram, "")
        else:  # the admin socket in the run dir, not the host's /run/udsd (a baseline knows none)
            text += "\n[admin]\npath = %s\n" % (p[:-len(".conf")] + ".admin")
        with open(p, "w") as f:
            f.write(text)
        return p

    nginx = os.path.join(tmp, "nginx.conf")
    with open(os.path.join(HERE, "peers", "nginx.conf.in")) as f:
        text = f.read().replace("@DIR@", tmp).replace("@SOCK@", http)
    with open(nginx, "w") as f:
        f.write(text)
    floor = os.path.join(OUT, "floor")
    node = shutil.which("node")
    s = [
        ("udsd", "both", [udsd, "-c", udsd_conf(args.workers, args.threads, tcp=True)], {"tcp": port}),
        ("floor", "echo", [floor, echo, "1"], {}),
        ("floor-2p", "echo", [floor, echo, "2"], {"cells": ["conn", "dial"]}),
        # The hand-off alone: one process accepts and passes each client to one of two.
        ("floor-handoff", "echo", [os.path.join(OUT, "handoff-floor"), echo, "2"], {"cells": ["conn", "dial"]}),
        ("dgfloor", "dgram", [os.path.join(OUT, "dgfloor"), dgram, "1"], {}),
        ("dgfloor-2p", "dgram", [os.path.join(OUT, "dgfloor"), dgram, "2"], {"cells": ["dgram8"]}),
    ]
    if "handoff-uring" in gobin:  # the same with io_uring in the acceptor
        s.append(("floor-handoff-uring", "echo", [os.path.join(OUT, "handoff-floor"), echo, "2", "uring"],
                  {"cells": ["conn", "dial"]}))
    if args.baseline:  # another udsd binary, same config: before and after in one run
        s.insert(1, ("udsd-base", "streams", [args.baseline, "-c", udsd_conf(args.workers, args.threads, datagrams=False)],
                     {}))
    if node:
        s += [
            ("node", "echo", [node, os.path.join(HERE, "peers", "echo.js"), echo], {}),
            ("node", "http", [node, os.path.join(HERE, "peers", "http.js"), http], {}),
            ("node-cluster", "echo", [node, os.path.join(HERE, "peers", "cluster.js"), "echo", echo, "2"], {}),
            ("node-cluster", "http", [node, os.path.join(HERE, "peers", "cluster.js"), "http", http, "2"], {}),
        ]
    if "echo" in gobin:
        s += [("go", "echo", [gobin["echo"], echo], {}), ("go", "http", [gobin["http"], http], {})]
    if shutil.which("nginx"):
        s += [("nginx", "http", ["nginx", "-c", nginx, "-p", tmp], {})]
    s.append(("udsd-bp", "both", [udsd, "-c", udsd_conf(args.workers, args.threads, busy_poll="30us")],
              {"cells": ["rr1", "rr8", "rr64", "http1", "http16"]}))
    for w in (1, 2, 4):
        s.append(("udsd-w%d" % w, "scale", [udsd, "-c", udsd_conf(w, 1)], {"cells": ["conn"]}))
    return s, echo, http


def loadgen(args, addr, cell_args, pid):
    """Run one cell; the server's CPU seconds are read as loadgen opens and closes its
    measured window (-M), so CPU per operation covers exactly the operations counted."""
    p = subprocess.Popen([os.path.join(OUT, "loadgen"), cell_args[0], addr] + cell_args[1:] +
                         ["-d", str(args.duration), "-w", str(args.warmup), "-M"],
                         stdout=subprocess.PIPE, text=True)
    cpu = {}
    try:
        for line in p.stdout:
            if line.strip() in ("measure", "stop"):
                cpu[line.strip()] = cpu_and_rss(pid)[0]
                continue
            r = json.loads(line)
    finally:
        p.wait(timeout=args.duration + args.warmup + 60)
    r["cpu_s"] = round(cpu["stop"] - cpu["measure"], 3)
    # Per operation; for stream, per MB moved.
    units = r["mb_per_sec"] * r["secs"] if r["mode"] == "stream" else r["ops"]
    r["cpu_us_op"] = round(r["cpu_s"] * 1e6 / units, 2) if units else 0
    if r["mode"] in ("conn", "dialhttp") and r["ops"] and cell_args[cell_args.index("-t") + 1] == "1":
        r["mean_us"] = round(r["secs"] * 1e6 / r["ops"], 1)  # one client: the mean is exact
    return r


def idle_scale(args, http, n):
    """Hold n idle connections to udsd's echo listener; time until all are accepted, and RSS."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 1000), hard))
    echo = http.replace("http.sock", "echo.sock")
    t0 = time.monotonic()
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX)
        s.connect(echo)
        socks.append(s)
    while True:
        st = json.loads(http_get(http, "/status"))
        if sum(w["open"] for w in st["workers"]) >= n:
            break
    return socks, time.monotonic() - t0


def http_get(path, target):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.sendall(b"GET %s HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n" % target.encode())
    data = b""
    while True:
        b = s.recv(65536)
        if not b:
            break
        data += b
    s.close()
    return data.split(b"\r\n\r\n", 1)[1]


def run(args):
    gobin = build()
    results = []
    # Repetitions run every server in turn, so slow drift on a shared machine hits all alike.
    for rep in range(args.repeat):
        if args.repeat > 1:
            print("repetition %d of %d" % (rep + 1, args.repeat), flush=True)
        for r in run_once(args, gobin, idle=(rep == 0)):
            r["rep"] = rep
            results.append(r)
    return median_results(results)


def median_results(results):
    """One result per (server, cell, transport): the repetition with the median rate, with
    the median of each repetition's CPU per operation and latencies beside it."""
    groups = {}
    for r in results:
        groups.setdefault((r["server"], r["cell"], r["transport"]), []).append(r)
    out = []
    for rs in groups.values():
        key = "mb_per_sec" if rs[0]["cell"] == "stream" else "ops_per_sec"
        rs.sort(key=lambda r: r[key])
        m = dict(rs[len(rs) // 2])
        for k in ("cpu_us_op", "p50_us", "p99_us", "mean_us"):
            v = sorted(r[k] for r in rs if k in r)
            if v:
                m[k] = v[len(v) // 2]
        m["repetitions"] = len(rs)
        # Every repetition's figures, in the order they ran, for the spread between runs.
        rs.sort(key=lambda r: r.get("rep", 0))
        m["runs"] = [r[key] for r in rs]
        m["p99_runs"] = [r["p99_us"] for r in rs]
        m["errors"] = sum(r.get("errors", 0) for r in rs)
        out.append(m)
    order = {(r["server"], r["cell"], r["transport"]): i for i, r in enumerate(results)}
    return sorted(out, key=lambda r: order[(r["server"], r["cell"], r["transport"])])


def run_once(args, gobin, idle):
    tmp = tempfile.mkdtemp(prefix="udsd-bench-")
    os.chmod(tmp, 0o755)
    results = []  # dicts: server, cell, transport, ops_per_sec, ...
    todo, echo, http = servers(tmp, gobin, args)
    for name, kind, argv, extra in todo:
        if args.only and name.split("-")[0] not in args.only and name not in args.only:
            continue
        cells = []
        if kind in ("echo", "both", "streams"):  # streams: echo and http, no dgram listener
            cells += [(c, a, echo, "unix") for c, a in ECHO_CELLS]
        if kind in ("http", "both", "streams"):
            cells += [(c, a, http, "unix") for c, a in HTTP_CELLS]
        if kind in ("dgram", "both"):
            cells += [(c, a, dgram_path(tmp), "unix") for c, a in DGRAM_CELLS]
        if kind == "scale":
            cells = [(c, a, echo, "unix") for c, a in ECHO_CELLS]
        if "cells" in extra:
            cells = [c for c in cells if c[0] in extra["cells"]]
        if "tcp" in extra:
            cells += [(c, a, "tcp:127.0.0.1:%d" % extra["tcp"], "tcp") for c, a in ECHO_CELLS if c in ("conn", "rr1", "rr8", "stream")]
        if args.cells:
            cells = [c for c in cells if c[0] in args.cells]
        for p in (echo, http, dgram_path(tmp)):
            if os.path.exists(p):
                os.unlink(p)
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, name + ".log"), "ab"),
                                start_new_session=True, preexec_fn=die_with_bench)
        try:
            if kind == "dgram":
                wait_socket(dgram_path(tmp), proc, kind=socket.SOCK_DGRAM)
            else:
                wait_socket(echo if kind != "http" else http, proc)
            if kind in ("both", "streams"):
                wait_socket(http, proc)
            if kind == "both":
                wait_socket(dgram_path(tmp), proc, kind=socket.SOCK_DGRAM)
            for cell, cargs, addr, transport in cells:
                r = loadgen(args, addr, cargs, proc.pid)
                _, rss = cpu_and_rss(proc.pid)
                r.update(server=name, cell=cell, transport=transport, rss_kib=rss, warmup_s=args.warmup)
                results.append(r)
                print("  %-13s %-8s %-5s %11.0f ops/s  p50 %7.1f us  p99 %8.1f us  %8.1f MB/s  err %d  cpu %.2fs "
                      "%6.2f us/%s  rss %d KiB"
                      % (name, cell, transport, r["ops_per_sec"], r["p50_us"], r["p99_us"], r["mb_per_sec"],
                         r["errors"], r["cpu_s"], r["cpu_us_op"], "MB" if cell == "stream" else "op", rss),
                      flush=True)
            if name == "udsd" and idle and not args.smoke and (not args.cells or "idle10k" in args.cells):
                socks, secs = idle_scale(args, http, 10000)
                _, rss = cpu_and_rss(proc.pid)
                cur = 0
                for p in tree(proc.pid):
                    with open("/proc/%d/status" % p) as f:
                        cur += int([l for l in f if l.startswith("VmRSS:")][0].split()[1])
                results.append(dict(server=name, cell="idle10k", transport="unix", ops_per_sec=10000 / secs,
                                    accept_secs=round(secs, 3), rss_kib=cur, p50_us=0, p99_us=0, errors=0,
                                    mb_per_sec=0, cpu_s=0, cpu_us_op=0))
                print("  udsd          idle10k       all accepted in %.2fs, total RSS %d KiB" % (secs, cur), flush=True)
                for s in socks:
                    s.close()
        finally:
            stop_server(proc)
    shutil.rmtree(tmp, ignore_errors=True)
    return results


def sig2(x):
    """x to two significant digits: what the latency histogram can tell (loadgen.c's
    buckets are 1.6-3.1 % wide, so a third digit would be noise)."""
    if not x:
        return "0"
    e = int(math.floor(math.log10(abs(x))))
    return "%.*f" % (max(0, 1 - e), round(x, 1 - e))


def p99_text(r):
    """" p99 NNus" where the cell measures latency; stream moves bytes and has none."""
    return " p99 %sus" % sig2(r["p99_us"]) if r.get("p99_us") else ""


def peers_of(results):
    peers = []
    for r in results:
        if r["server"] not in peers and r["server"] != "udsd" and not r["server"].startswith(("udsd-w", "dgfloor")):
            peers.append(r["server"])
    return peers


def getter(results):
    def get(server, cell, transport="unix"):
        for r in results:
            if r["server"] == server and r["cell"] == cell and r["transport"] == transport:
                return r
        return None
    return get


def table(results):
    get = getter(results)
    peers = peers_of(results)

    def cost(r):
        return r.get("cpu_us_op", 0)

    lines = ["Each peer's cell: its figure, then (udsd/peer Nx; cpu Nx): udsd's over the peer's, "
             "the same way in every column (throughput: above 1 udsd is faster; cpu: above 1 udsd "
             "spends more).", "",
             "| workload | udsd | " + " | ".join(peers) + " |", "|---" * (len(peers) + 2) + "|"]
    for cell, _ in ECHO_CELLS + HTTP_CELLS:
        u = get("udsd", cell)
        if not u:
            continue
        key = "mb_per_sec" if cell == "stream" else "ops_per_sec"
        unit = "MB/s" if cell == "stream" else "/s"
        per = "MB" if cell == "stream" else "op"
        row = ["%s (%s; cpu us/%s)" % (cell, unit, per), "%.0f%s cpu %.1f" % (u[key], p99_text(u), cost(u))]
        for p in peers:
            r = get(p, cell)
            row.append("%.0f%s cpu %.1f (udsd/peer %.2fx; cpu %.2fx)"
                       % (r[key], p99_text(r), cost(r), u[key] / r[key], cost(u) / cost(r) if cost(r) else 0)
                       if r and r[key] else "-")
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append("cpu: the server's own CPU time (utime + stime over all its processes) per operation, "
                 "over the measured window. p99: two significant digits, what the latency buckets "
                 "(1.6-3.1 % wide) tell; stream cells measure bytes, not latency, and show none.")
    for cell, what in (("dial", "echo 64 B"), ("dialhttp", "GET, Connection: close")):
        have = [n for n in ["udsd"] + peers if get(n, cell)]
        if not have:
            continue
        lines.append("")
        lines.append("| dial loop, one client (connect, %s, close) | " % what + " | ".join(have) + " |")
        lines.append("|---" * (len(have) + 1) + "|")
        for label, k, fmt in (("p50 us", "p50_us", sig2), ("p99 us", "p99_us", sig2),
                              ("mean us", "mean_us", lambda v: "%.1f" % v),
                              ("server cpu us/conn", "cpu_us_op", lambda v: "%.1f" % v)):
            lines.append("| %s | " % label + " | ".join(fmt(get(n, cell).get(k, 0)) for n in have) + " |")
    lines.append("")
    lines.append("| udsd: unix vs tcp | unix | tcp | unix/tcp (above 1: unix faster) |")
    lines.append("|---|---|---|---|")
    for cell in ("conn", "rr1", "rr8", "stream"):
        u, t = get("udsd", cell), get("udsd", cell, "tcp")
        if u and t:
            key = "mb_per_sec" if cell == "stream" else "ops_per_sec"
            lines.append("| %s | %.0f | %.0f | %.2fx |" % (cell, u[key], t[key], u[key] / t[key]))
    scale = [get("udsd-w%d" % w, "conn") for w in (1, 2, 4)]
    if all(scale):
        lines.append("")
        lines.append("| udsd conn/s by workers (threads=1) | 1 | 2 | 4 |")
        lines.append("|---|---|---|---|")
        lines.append("| conn/s | " + " | ".join("%.0f" % s["ops_per_sec"] for s in scale) + " |")
    lines += dgram_table(results, get)
    idle = get("udsd", "idle10k")
    if idle:
        lines.append("")
        lines.append("10,000 idle connections: all accepted in %.2f s; udsd total RSS %.1f MiB"
                     % (idle["accept_secs"], idle["rss_kib"] / 1024))
    names = ["udsd"] + peers
    rows = [r for r in results if r["cell"] != "idle10k"]
    lines.append("")
    lines.append("| summed over the server's processes | " + " | ".join(names) + " |")
    lines.append("|---" * (len(names) + 1) + "|")
    lines.append("| CPU us per op, the cells both ran: peer (udsd/peer) | - | " + " | ".join(
        cpu_same_cells(rows, p) for p in peers) + " |")
    lines.append("| peak RSS MiB | " + " | ".join(
        "%.1f" % (max([r["rss_kib"] for r in rows if r["server"] == n] or [0]) / 1024) for n in names) + " |")
    return "\n".join(lines)


def cpu_same_cells(rows, peer):
    """The peer's CPU per operation over exactly the cells it and udsd both ran (operation
    counts differ between servers, so seconds are not compared), and udsd/peer on them."""
    mine = {(r["cell"], r["transport"]): r for r in rows if r["server"] == "udsd" and r["cell"] != "stream"}
    both = [(mine[(r["cell"], r["transport"])], r) for r in rows
            if r["server"] == peer and (r["cell"], r["transport"]) in mine and r.get("cpu_us_op")]
    if not both:
        return "-"
    u = sum(a["cpu_us_op"] for a, _ in both) / len(both)
    p = sum(b["cpu_us_op"] for _, b in both) / len(both)
    return "%.1f (%.2fx; %d cells)" % (p, u / p, len(both))


def dgram_table(results, get):
    """udsd's dgram listener against dgfloor: throughput, p99 and the server's CPU per datagram."""
    def cpu_us(r):  # the server's CPU per exchange: one datagram in, its echo out
        if "cpu_us_op" in r:
            return r["cpu_us_op"]
        return r["cpu_s"] * 1e6 / (r["ops_per_sec"] * (r["secs"] + r["warmup_s"])) if r["ops_per_sec"] else 0

    names = [n for n in ("udsd", "dgfloor", "dgfloor-2p") if any(get(n, c) for c, _ in DGRAM_CELLS)]
    if "udsd" not in names or len(names) < 2:
        return []
    lines = ["", "| datagrams: 64 B, each echoed | " + " | ".join(names) + " | udsd/dgfloor |",
             "|---" * (len(names) + 2) + "|"]
    for cell, _ in DGRAM_CELLS:
        u, f = get("udsd", cell), get("dgfloor", cell)
        for label, fn, fmt in (("/s", lambda r: r["ops_per_sec"], lambda v: "%.0f" % v),
                               ("p99 us", lambda r: r["p99_us"], sig2),
                               ("server cpu us/datagram", cpu_us, lambda v: "%.2f" % v)):
            row = [fmt(fn(get(n, cell))) if get(n, cell) else "-" for n in names]
            ratio = "%.2fx" % (fn(u) / fn(f)) if u and f and fn(f) else "-"
            lines.append("| %s %s | %s | %s |" % (cell, label, " | ".join(row), ratio))
    lines.append("(server cpu: utime + stime of all the server's processes per datagram answered; "
                 "dgram1: one client ping-ponging, dgram8: eight)")
    return lines


def parser_bench():
    """udsd's HTTP parser against Node's http_parser, if libhttp-parser-dev is there."""
    if not os.path.exists("/usr/include/http_parser.h"):
        return "\n(parser comparison skipped: apt-get install libhttp-parser-dev)\n"
    exe = os.path.join(OUT, "parser-bench")
    sh([os.environ.get("CC", "cc"), "-O2", "-I" + os.path.join(TOP, "daemon"), os.path.join(HERE, "parser-bench.c"),
        os.path.join(TOP, "daemon", "http-parser.c"), "-lhttp_parser", "-o", exe])
    out = subprocess.run([exe], capture_output=True, text=True).stdout
    return "\n\nHTTP request-head parsing, same requests and work:\n" + out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", type=lambda s: s.split(","), default=None)
    ap.add_argument("--cells", type=lambda s: s.split(","), default=None, help="only these cells, e.g. conn,dial")
    ap.add_argument("--baseline", help="another udsd binary to run as peer udsd-base, for before/after")
    ap.add_argument("--repeat", type=int, default=1, help="run everything N times, report medians")
    ap.add_argument("--smoke", action="store_true", help="0.3 s per cell, udsd and floor only")
    ap.add_argument("--from", dest="from_json", help="run nothing: print the tables and draw bench.svg "
                    "from an earlier bench.json")
    args = ap.parse_args()
    if args.from_json:
        with open(args.from_json) as f:
            results = json.load(f)
        print(table(results))
        os.makedirs(OUT, exist_ok=True)
        with open(os.path.join(OUT, "bench.svg"), "w") as f:
            f.write(plot.render(results, "udsd against its peers (tests/bench/bench.py)"))
        return 0
    if args.smoke:
        args.duration, args.warmup, args.only = 0.3, 0.1, args.only or ["udsd", "floor", "dgfloor"]
    results = run(args)
    t = table(results)
    t += parser_bench()
    print()
    print(t)
    with open(os.path.join(OUT, "bench.json"), "w") as f:
        json.dump(results, f, indent=1)
    with open(os.path.join(OUT, "bench.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=sorted({k for r in results for k in r}))
        w.writeheader()
        w.writerows(results)
    with open(os.path.join(OUT, "bench.md"), "w") as f:
        f.write(t + "\n")
    with open(os.path.join(OUT, "bench.svg"), "w") as f:
        f.write(plot.render(results, "udsd against its peers (tests/bench/bench.py)"))
    bad = [r for r in results if r.get("errors")]
    for r in bad:
        print("ERRORS: %s %s %s: %d" % (r["server"], r["cell"], r["transport"], r["errors"]), file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
