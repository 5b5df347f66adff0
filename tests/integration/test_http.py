# SPDX-License-Identifier: MIT
"""The http service: routes, keep-alive, pipelining, errors, slowloris, nginx upstream."""
import http.client
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import connect, deadline_loop, http_get, http_raw, read_response

CONF = """
[daemon]
workers = 2
threads = 2
[listener web]
path = {sock}
service = http
idle_timeout = {idle}
header_timeout = 1s
"""


RELOAD_CONF = """
[daemon]
workers = 1
threads = 1
shutdown_timeout = 5s
[listener web]
path = {sock}
service = http
"""
RELOAD_SECONDS = 4
SANITIZED = bool(re.search(r"[at]san", os.environ.get("UDSD_BIN", "")))


@pytest.fixture
def web(udsd_factory):
    d = udsd_factory(CONF.replace("{idle}", "60s"))
    d.start()
    return d


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=10)
        self.path = path

    def connect(self):
        self.sock = connect(self.path)


def curl(sock, *args):
    out = subprocess.run(["curl", "-s", "-i", "--max-time", "10", "--unix-socket", sock] + list(args),
                         capture_output=True, timeout=20)
    head, _, body = out.stdout.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(l.split(": ", 1) for l in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def test_routes_with_curl(web):
    status, h, body = curl(web.sock, 'http://localhost/hello?x="y"&z=\\')
    assert status == 200 and h["content-type"] == "application/json"
    assert json.loads(body) == {"message": "Hello from your HTTP server on a Unix socket!",
                                "url": '/hello?x="y"&z=\\'}
    assert h["server"] == "udsd" and h["date"].endswith(" GMT")
    assert curl(web.sock, "http://localhost/healthz")[::2] == (200, b"ok\n")
    status, _, body = curl(web.sock, "http://localhost/status")
    st = json.loads(body)
    assert status == 200 and st["master_pid"] == web.proc.pid
    # The master's counters follow the listener's settings (test_admin.py checks them).
    assert [{k: l[k] for k in ("name", "path", "service", "mode")} for l in st["listeners"]] == [
        {"name": "web", "path": web.sock, "service": "http", "mode": "0660"}]
    assert st["listeners"][0]["accepted"] >= 1 and st["listeners"][0]["backlog_limit"] == 4096
    assert len(st["workers"]) == 2 and all(w["threads"] == 2 for w in st["workers"])
    assert sum(w["requests"] for w in st["workers"]) >= 2
    status, h, body = curl(web.sock, "-I", "http://localhost/healthz")
    assert status == 200 and h["content-length"] == "3" and body == b""
    status, h, _ = curl(web.sock, "-X", "DELETE", "http://localhost/")
    assert status == 405 and h["allow"] == "GET, HEAD, POST" and h["connection"] == "close"
    status, _, body = curl(web.sock, "-d", "a=b" * 1000, "http://localhost/form")
    assert status == 200 and json.loads(body)["url"] == "/form"
    assert curl(web.sock, "--http1.0", "http://localhost/")[1]["connection"] == "close"
    assert curl(web.sock, "-H", "Transfer-Encoding: chunked", "-d", "x", "http://localhost/")[0] == 411
    assert curl(web.sock, "http://localhost/" + "a" * 5000)[0] == 414
    assert curl(web.sock, "-H", "X-Big: " + "b" * 9000, "http://localhost/")[0] == 431


def test_keep_alive_with_http_client(web):
    c = UnixHTTPConnection(web.sock)
    for i in range(50):
        c.request("GET", "/k%d" % i)
        r = c.getresponse()
        assert r.status == 200 and json.loads(r.read())["url"] == "/k%d" % i
    c.request("POST", "/p", body=b"z" * 100000)
    assert c.getresponse().read()
    c.request("HEAD", "/h")
    r = c.getresponse()
    assert r.status == 200 and r.read() == b""
    c.close()


def test_pipelining_100_requests_in_one_write(web):
    req = b"".join(b"GET /p%d HTTP/1.1\r\nHost: t\r\n\r\n" % i for i in range(100))
    s = connect(web.sock)
    s.sendall(req)
    f = s.makefile("rb")
    for i in range(100):
        status, _, body = read_response(f)
        assert status == 200 and json.loads(body)["url"] == "/p%d" % i
    s.close()


def test_http10_keep_alive_and_close(web):
    out = http_raw(web.sock, b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
                   b"GET /b HTTP/1.0\r\n\r\nGET /never HTTP/1.0\r\n\r\n")
    assert [json.loads(b)["url"] for _, _, b in out] == ["/a", "/b"]
    assert out[0][1]["connection"] == "keep-alive" and out[1][1]["connection"] == "close"


MALFORMED = [
    (b"\x00\x01\x02\x03garbage\r\n\r\n", 400),
    (b"GET / HTTP/1.1\nHost: x\n\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400),
    (b"GET /\xff HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET noslash HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n", 400),
    (b"GET / FTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET / HTTP/3.0\r\nHost: x\r\n\r\n", 505),
    (b"BREW / HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    (b"G{T / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n", 413),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n", 413),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 411),
    (b"GET /" + b"u" * 10000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"h" * (1 << 20) + b"\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x7fb\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400),
    (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + os.urandom(64) + b"\r\n\r\n", 400),
]


@pytest.mark.parametrize("raw,status", MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_request_gets_status_and_close(web, raw, status):
    s = connect(web.sock)
    try:
        s.sendall(raw)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered and closed before we finished writing
    f = s.makefile("rb")
    got, h, _ = read_response(f)
    assert got == status and h["connection"] == "close"
    try:
        assert f.read() == b""  # and the connection is closed
    except ConnectionResetError:
        pass  # closed while we were still sending: a reset after the answer is fine
    assert http_get(web.sock, "/next")[0] == 200


def test_request_split_byte_by_byte(web):
    s = connect(web.sock)
    for b in b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n":
        s.send(bytes([b]))
    status, _, body = read_response(s.makefile("rb"))
    assert status == 200 and json.loads(body)["url"] == "/slow"


def test_binary_garbage_flood_then_next_client(web):
    for _ in range(20):
        s = connect(web.sock)
        try:
            s.sendall(os.urandom(200000))
        except (BrokenPipeError, ConnectionResetError):
            pass
        s.close()
    assert http_get(web.sock, "/after")[0] == 200


def test_header_timeout_is_408(web):
    s = connect(web.sock)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
    status, h, _ = read_response(s.makefile("rb"))
    assert status == 408 and h["connection"] == "close"


def test_idle_keep_alive_is_closed(udsd_factory):
    d = udsd_factory(CONF.replace("{idle}", "1s"))
    d.start()
    s = connect(d.sock)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    f = s.makefile("rb")
    assert read_response(f)[0] == 200
    t0 = time.monotonic()
    assert f.read() == b""  # closed by the server, silently
    assert time.monotonic() - t0 < 5


def test_slowloris_does_not_starve_others(web):
    """500 clients trickling header bytes; a normal client is still served promptly."""
    slow = []
    for _ in range(500):
        s = connect(web.sock)
        s.setblocking(False)
        slow.append(s)
    worst = 0.0
    line = b"GET / HTTP/1.1\r\nX-Slow: "
    for i in range(len(line)):
        for s in slow:
            try:
                s.send(line[i:i + 1])
            except OSError:
                pass
        t0 = time.monotonic()
        assert http_get(web.sock, "/normal")[0] == 200
        worst = max(worst, time.monotonic() - t0)
    # Starved would mean waiting for the trickling clients' header_timeout (10 s); the bound
    # only tells that apart from a shared machine's noise (1.07 s seen under load).
    # The figure itself is printed, not judged.
    print("slowloris: worst normal request %.3f s" % worst)
    assert worst < 5.0, worst
    for s in slow:
        s.close()


@pytest.fixture
def nginx(web, tmp_path):
    if not shutil.which("nginx"):
        pytest.skip("nginx not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = tmp_path / "nginx.conf"
    conf.write_text("""
worker_processes 1;
daemon off;
# The test's socket lives under pytest's 0700 temporary directory.
user root;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream udsd {{ server unix:{sock}; keepalive 16; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://udsd;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
""".format(tmp=tmp_path, sock=web.sock, port=port))
    p = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(tmp_path)], stderr=subprocess.PIPE)
    for _ in deadline_loop(10, "nginx to listen"):
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            break
        except OSError:
            assert p.poll() is None, p.stderr.read()
    yield port, tmp_path / "nginx-error.log"
    p.terminate()
    p.wait(10)


def test_behind_nginx(nginx, web):
    port, errlog = nginx
    out = subprocess.run(["curl", "-s", "http://127.0.0.1:%d/via/nginx" % port], capture_output=True,
                         timeout=10)
    assert json.loads(out.stdout)["url"] == "/via/nginx"
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for i in range(10000):
        c.request("GET", "/n%d" % i)
        r = c.getresponse()
        assert r.status == 200
        r.read()
    c.close()
    log = errlog.read_text() if errlog.exists() else ""
    assert "upstream" not in log and "[error]" not in log, log
    st = web.status(web.sock)
    assert sum(w["requests"] for w in st["workers"]) >= 10000


def reload_and_wait(d):
    """SIGHUP, then wait for RELOADING=1 and the READY=1 that follows it."""
    n = len(d.notify.messages)
    d.send(signal.SIGHUP)
    return d.notify.wait("READY=1", after=d.notify.wait("RELOADING=1", after=n) + 1)


def channel_queued(pid):
    """Whether a stopped worker's channel from the master holds unread messages (ss: Recv-Q)."""
    out = subprocess.run(["ss", "-xpn"], capture_output=True, text=True, timeout=10).stdout
    return any(l.split()[0] == "u_seq" and int(l.split()[2]) > 0
               for l in out.splitlines()[1:] if "pid=%d," % pid in l)


def drain_stopped(d, worker):
    """Reload with the worker stopped, and wait until the drain message waits in its channel."""
    os.kill(worker, signal.SIGSTOP)
    reload_and_wait(d)
    for _ in deadline_loop(10, "the drain message to reach the stopped worker"):
        if channel_queued(worker):
            break


def served_keep_alive(path):
    s = connect(path)
    s.sendall(b"GET /first HTTP/1.1\r\nHost: t\r\n\r\n")
    assert read_response(s.makefile("rb"))[0] == 200
    return s


def test_drain_frees_no_client_closed_in_the_same_round(udsd_factory):
    """Defect 1, deterministically: a drain and the clients' EOFs in one epoll_wait() batch.

    The worker is stopped while the master tells it to drain and 20 served keep-alive clients
    close. Resumed, it gets the channel first, then the 20 EOFs: the drain closed (and freed)
    the 20 connections, and their events then read freed memory (ASan report, exit 66).
    """
    d = udsd_factory(RELOAD_CONF)
    d.start()
    (worker,) = d.workers()
    clients = [served_keep_alive(d.sock) for _ in range(20)]
    try:
        drain_stopped(d, worker)
        for s in clients:
            s.close()
    finally:
        os.kill(worker, signal.SIGCONT)
    for _ in deadline_loop(20, "the drained worker to exit"):
        if "worker %d exited" % worker in d.log or "worker %d killed" % worker in d.log:
            break
    assert "worker %d exited with status 0" % worker in d.log, d.log[-3000:]


def pause_reading_notify(d, seconds):
    """Pace a loop of signals; read udsd's notifications meanwhile, or its sd_notify blocks."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        d.notify.sock.settimeout(max(0.001, end - time.monotonic()))
        try:
            d.notify.messages.append(d.notify.sock.recv(4096).decode())
        except socket.timeout:
            pass


def test_reloads_under_http_load_are_memory_safe(udsd_factory):
    """Defect 1: a draining worker closed keep-alive clients and read their freed memory.

    One worker, one thread, so every reload drains the thread that serves all the clients;
    SIGHUP every 50 ms while short-lived and keep-alive clients hammer it. Any sanitizer
    report in the log fails the test (conftest), a worker killed by a signal too.
    """
    d = udsd_factory(RELOAD_CONF)
    d.start()
    stop = threading.Event()
    errors, counts = [], {"short": 0, "keep": 0}

    def short():
        while not stop.is_set():
            try:
                assert http_get(d.sock, "/short")[0] == 200
                counts["short"] += 1
            except Exception as e:  # noqa: BLE001 - any failure is the finding
                errors.append("short: %r" % e)

    def keep_alive():
        while not stop.is_set():
            c = UnixHTTPConnection(d.sock)
            try:
                for i in range(100):
                    c.request("GET", "/keep%d" % i)
                    r = c.getresponse()
                    assert r.status == 200 and r.read()
                    counts["keep"] += 1
                    if r.getheader("connection") == "close":
                        break
            except (http.client.RemoteDisconnected, ConnectionError):
                pass  # a drained worker closed the idle connection between requests: reconnect
            finally:
                c.close()

    threads = [threading.Thread(target=f) for f in (short,) * 3 + (keep_alive,) * 3]
    for t in threads:
        t.start()
    try:
        end = time.monotonic() + RELOAD_SECONDS
        while time.monotonic() < end and d.proc.poll() is None:
            d.send(signal.SIGHUP)
            pause_reading_notify(d, 0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    d.stop()
    # A reload that a newer SIGHUP abandons kills its half-started workers on purpose (logged
    # at notice); a crash is logged at error.
    assert not re.search(r"error: worker \d+ (killed|exited)", d.log), d.log[-4000:]
    assert errors == [], errors[:10]
    assert counts["short"] > 0 and counts["keep"] > 0, counts


def test_clients_connected_before_a_reload_are_answered(udsd_factory):
    """Defect 8: a draining worker hung up on clients that had not sent a request yet.

    Since issue 14 such a client is at a boundary and moves to the new generation, which
    answers it and keeps the connection (before: answered with Connection: close).
    """
    d = udsd_factory(RELOAD_CONF)
    d.start()
    (worker,) = d.workers()
    clients = [connect(d.sock) for _ in range(20)]
    for _ in deadline_loop(10, "the worker to hold the 20 clients"):
        if sum(w["open"] for w in d.status(d.sock)["workers"]) >= 21:  # and the /status client
            break
    try:
        drain_stopped(d, worker)
    finally:
        os.kill(worker, signal.SIGCONT)
    for _ in deadline_loop(10, "the worker to read its drain message"):
        if not channel_queued(worker):
            break
    for s in clients:
        f = s.makefile("rb")
        for target in ("/late", "/again"):
            s.sendall(b"GET " + target.encode() + b" HTTP/1.1\r\nHost: t\r\n\r\n")
            status, h, body = read_response(f)
            assert status == 200 and "connection" not in h and json.loads(body)["url"] == target
        s.close()


TRICKLE_CONF = """
[daemon]
workers = 1
threads = 2
[listener web]
path = {sock}
service = http
header_timeout = 2s
"""


def test_trickled_heads_get_408_at_header_timeout(udsd_factory):
    """Defect 4: every byte re-armed header_timeout, so a byte a second kept a head open for ever.

    The deadline runs from the head's first byte: 30 clients trickling a byte a second all get
    their 408 a tick or two after the 2 s header_timeout.
    """
    d = udsd_factory(TRICKLE_CONF)
    d.start()
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 100
    waiting = {connect(d.sock): 0 for _ in range(30)}
    answers = []
    for _ in deadline_loop(15, "a 408 for each of the 30 trickling clients"):
        for s, i in waiting.items():
            try:
                s.send(head[i:i + 1])
                waiting[s] = i + 1
            except OSError:
                pass  # closed after its 408, which we read below
        ready, _, _ = select.select(list(waiting), [], [], 1.0)  # also the trickle's pace
        for s in ready:
            answers.append(read_response(s.makefile("rb")))
            del waiting[s]
        if not waiting:
            break
    assert [(st, h["connection"]) for st, h, _ in answers] == [(408, "close")] * 30


@pytest.mark.parametrize("raw,status", [
    (b"GET /" + b"u" * (1 << 20) + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"h" * (1 << 20) + b"\r\n\r\n", 431),
], ids=["414", "431"])
def test_huge_head_is_answered_not_reset(web, raw, status):
    """Defect 8: lingering close lasted one event, so a 1 MiB head got EPIPE, never its answer."""
    s = connect(web.sock)
    s.sendall(raw)  # all of it: udsd reads and discards what follows its answer
    got, h, _ = read_response(s.makefile("rb"))
    assert got == status and h["connection"] == "close"


def status_burst(n):
    return b"GET /status HTTP/1.1\r\nHost: t\r\n\r\n" * n


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_pipelined_answers_beyond_the_output_mark_all_arrive(web):
    """Past 256 KiB of answers http stops; udsd keeps the requests and hands them back."""
    s = connect(web.sock)
    s.sendall(status_burst(3000) + b"GET /partial HTTP/1.1\r\n")
    f = s.makefile("rb")
    for i in range(3000):
        status, _, body = read_response(f)
        assert status == 200 and json.loads(body)["master_pid"] == web.proc.pid
    # The unfinished head left waits for bytes: no busy loop re-offering it meanwhile.
    cpu = sum(cpu_seconds(pid) for pid in web.workers())
    assert not select.select([s], [], [], 0.5)[0]
    assert sum(cpu_seconds(pid) for pid in web.workers()) - cpu < 0.3
    assert read_response(f)[0] == 408


def test_pipelined_then_half_closed_all_answered(web):
    """Requests held past the mark are answered even after the client's end of stream."""
    s = connect(web.sock)
    s.sendall(status_burst(6000))
    s.shutdown(socket.SHUT_WR)
    f = s.makefile("rb")
    assert [read_response(f)[0] for _ in range(6000)] == [200] * 6000
    assert f.read() == b""


def vm_rss_mb(pid):
    with open("/proc/%d/status" % pid) as f:
        return next(int(l.split()[1]) // 1024 for l in f if l.startswith("VmRSS:"))


def test_pipelining_clients_that_never_read_hold_bounded_memory(udsd_factory):
    """Defect 3: http answered all requests of a read whatever was queued; memory was kept.

    250 clients each send 1,900 pipelined /status requests (one read) and read nothing. Each
    now holds at most the 256 KiB mark plus one read of input: the worker's RSS stays under
    baseline + 250 x 320 KiB (78 MB; it was 176 MB before), and comes back to near its
    baseline once they leave (free pages go back at the next tick).
    """
    n = 250
    d = udsd_factory(RELOAD_CONF)
    d.start()
    (worker,) = d.workers()
    base = vm_rss_mb(worker)
    burst = status_burst(1900)
    clients = []
    for _ in range(n):
        s = connect(d.sock)
        s.setblocking(False)
        assert s.send(burst) == len(burst)
        clients.append(s)
    # A client gets its first bytes once the worker has handled its read: memory at its most.
    waiting = set(clients)
    for _ in deadline_loop(120, "the worker to answer each client"):
        waiting -= set(select.select(list(waiting), [], [], 1)[0])
        if not waiting:
            break
    loaded = vm_rss_mb(worker)
    for s in clients:
        s.close()
    if SANITIZED:
        return  # ASan's allocator and quarantine, not ours, decide RSS there
    assert loaded < base + n * 320 // 1024, (base, loaded)
    for _ in deadline_loop(20, "the worker's RSS back near its baseline (%d MB)" % base):
        if vm_rss_mb(worker) < base + 12:
            break
