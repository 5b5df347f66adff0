# SPDX-License-Identifier: MIT
"""Nothing dropped (issue 14): connections move to the new generation on reload.

A draining worker hands every connection at a message boundary back to the master, which
gives it to the new generation like a fresh client; the client never notices. Every test
synchronises on something observable (READY=1, a pid gone, a queue seen with ss).
"""
import http.client
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import threading
import time

from conftest import alive, connect, deadline_loop, ping, read_response

ECHO_CONF = """
[daemon]
workers = {workers}
threads = 2
shutdown_timeout = {timeout}
[listener main]
path = {{sock}}
service = echo
[listener web]
path = {{tmp}}/http.sock
service = http
"""


def conf(workers=2, timeout="2s"):
    return ECHO_CONF.format(workers=workers, timeout=timeout)


def start(udsd_factory, **kw):
    d = udsd_factory(conf(**kw))
    d.http_sock = os.path.join(d.tmp, "http.sock")
    d.start()
    return d


def reload_and_wait(d):
    n = len(d.notify.messages)
    d.send(signal.SIGHUP)
    i = d.notify.wait("RELOADING=1", after=n)
    return d.notify.wait("READY=1", after=i + 1)


def wait_gone(pids, what="the old workers to exit"):
    for _ in deadline_loop(30, what):
        if not any(alive(p) for p in pids):
            return


def unread(pid, without=None):
    """Whether a seqpacket socket held by pid (and not by `without`) has unread messages."""
    out = subprocess.run(["ss", "-xpn"], capture_output=True, text=True, timeout=10).stdout
    return any(l.split()[0] == "u_seq" and int(l.split()[2]) > 0
               and (without is None or "pid=%d," % without not in l)
               for l in out.splitlines()[1:] if "pid=%d," % pid in l)


def test_long_lived_connections_survive_a_reload(udsd_factory):
    """Issue 14, failure 1: after a reload every long-lived connection was cut at shutdown_timeout.

    Before: 0 of 10 echo clients answered once the old workers had gone.
    """
    d = start(udsd_factory)
    clients = [connect(d.sock) for _ in range(10)]
    for s in clients:
        ping(s)
    old = d.workers()
    reload_and_wait(d)
    wait_gone(old)
    for i, s in enumerate(clients):
        ping(s, b"after %d" % i)
    assert "after the shutdown timeout" not in d.log, d.log[-3000:]


def test_http_keep_alive_connection_moves_without_a_new_connect(udsd_factory):
    """http.client on one socket across a reload: every request answered, no reconnect."""
    d = start(udsd_factory)

    class Conn(http.client.HTTPConnection):
        def connect(self):
            assert not hasattr(self, "connected_once"), "http.client reconnected"
            self.connected_once = True
            self.sock = connect(d.http_sock)

    c = Conn("localhost")
    c.request("GET", "/before")
    r = c.getresponse()
    assert r.status == 200 and json.loads(r.read())["url"] == "/before"
    sock = c.sock
    old = d.workers()
    reload_and_wait(d)
    wait_gone(old)
    for i in range(5):
        c.request("GET", "/after%d" % i)
        r = c.getresponse()
        assert r.status == 200 and r.getheader("connection") is None
        assert json.loads(r.read())["url"] == "/after%d" % i
    c.request("GET", "/status")
    st = json.loads(c.getresponse().read())
    assert st["generation"] == 2 and c.sock is sock
    c.close()


def test_a_client_mid_request_moves_once_answered(udsd_factory):
    """Half a request at the reload: the old worker answers it, then the connection moves."""
    d = start(udsd_factory, workers=1, timeout="30s")
    s = connect(d.http_sock)
    f = s.makefile("rb")
    s.sendall(b"GET /one HTTP/1.1\r\nHost: t\r\n\r\nGET /two HTTP/1.1\r\nHo")
    assert read_response(f)[0] == 200
    for _ in deadline_loop(10, "the worker to hold the half request"):
        if any(w["open"] for w in d.status(d.http_sock)["workers"]):
            break
    old = d.workers()
    reload_and_wait(d)
    assert all(alive(p) for p in old)  # holds the half request
    s.sendall(b"st: t\r\n\r\n")
    status, h, body = read_response(f)
    assert status == 200 and "connection" not in h and json.loads(body)["url"] == "/two"
    wait_gone(old, "the old worker to exit once its last client moved")
    s.sendall(b"GET /three HTTP/1.1\r\nHost: t\r\n\r\n")
    status, h, body = read_response(f)
    assert status == 200 and json.loads(body)["url"] == "/three"
    s.close()


def test_clients_that_close_while_they_move(udsd_factory):
    """A migration racing clients that close: the closed ones are gone, the rest are served."""
    d = start(udsd_factory, workers=1, timeout="30s")
    clients = [connect(d.sock) for _ in range(40)]
    for s in clients:
        ping(s)
    (worker,) = d.workers()
    os.kill(worker, signal.SIGSTOP)
    try:
        reload_and_wait(d)
        for _ in deadline_loop(10, "the drain message to reach the stopped worker"):
            if unread(worker):
                break
        for s in clients[::2]:
            s.sendall(b"bye")
            s.close()
    finally:
        os.kill(worker, signal.SIGCONT)
    wait_gone([worker])
    for s in clients[1::2]:
        ping(s, b"still here")
    for _ in deadline_loop(10, "the closed clients to be closed in the new generation"):
        if sum(w["open"] for w in d.status(d.http_sock)["workers"]) == 20 + 1:
            break
    for s in clients[1::2]:
        s.close()
    assert d.stop() == 0


def test_a_worker_killed_while_it_hands_clients_back(udsd_factory):
    """Its clients already in the master's end of the channel are still read and served.

    The master is stopped with a signal pending (so that, resumed, it reaps before it reads
    the channel); the old worker hands 20 clients back and is killed while one busy client
    keeps it alive. Without reading the channel before closing it, the 20 were lost.
    """
    d = start(udsd_factory, workers=1, timeout="30s")
    clients = [connect(d.sock) for _ in range(20)]
    for s in clients:
        ping(s)
    busy = connect(d.http_sock)
    busy.sendall(b"GET /half HTTP/1.1\r\n")
    (worker,) = d.workers()
    master = d.proc.pid
    os.kill(worker, signal.SIGSTOP)
    try:
        reload_and_wait(d)
        for _ in deadline_loop(10, "the drain message to reach the stopped worker"):
            if unread(worker):
                break
        os.kill(master, signal.SIGSTOP)
        os.kill(master, signal.SIGUSR1)  # the signalfd is ready first when the master resumes
        os.kill(worker, signal.SIGCONT)
        for _ in deadline_loop(10, "the handed-back clients to wait in the master's channel"):
            if unread(master, without=worker):
                break
        os.kill(worker, signal.SIGKILL)
    finally:
        os.kill(worker, signal.SIGCONT)
        os.kill(master, signal.SIGCONT)
    wait_gone([worker])
    for i, s in enumerate(clients):
        ping(s, b"moved %d" % i)
    busy.close()
    for _ in deadline_loop(10, "the master to reap the killed worker"):
        if "worker %d killed by signal KILL" % worker in d.log:
            break


ERROR_CLASSES = ("refused", "reset", "eof", "wrong", "timeout", "other")


def classify(e):
    if isinstance(e, (ConnectionRefusedError, FileNotFoundError)):
        return "refused"
    if isinstance(e, (ConnectionResetError, BrokenPipeError)):
        return "reset"
    if isinstance(e, socket.timeout):
        return "timeout"
    return "other"


def exchange(s, msg):
    """Send msg, read it back; None if all came back, else the error class."""
    try:
        s.sendall(msg)
        got = b""
        while len(got) < len(msg):
            b = s.recv(len(msg) - len(got))
            if not b:
                return "eof"
            got += b
        return None if got == msg else "wrong"
    except OSError as e:
        return classify(e)


def short_clients(path, k, stop, out):
    """In a process of its own (no GIL shared with the long-lived loop): connect, echo, close."""
    errors = dict.fromkeys(ERROR_CLASSES, 0)
    n = 0
    while not stop.is_set():
        n += 1
        try:
            s = connect(path, timeout=10)
        except OSError as e:
            errors[classify(e)] += 1
            continue
        bad = exchange(s, b"short %d %d" % (k, n))
        s.close()
        if bad:
            errors[bad] += 1
    out.put((n, errors))


def run_load(d, reloads, workers, upgrades=0, upgrade=None, long_lived=50, short_procs=4):
    """Reloads (and upgrades) under load; every client error counted by its class.

    short_procs processes open short connections in a loop; long_lived connections, opened
    once, each send a message every 50 ms and must stay the same socket to the end.
    """
    errors = dict.fromkeys(ERROR_CLASSES, 0)
    counts = {"short": 0, "long": 0}
    ctx = multiprocessing.get_context("fork")
    stop, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=short_clients, args=(d.sock, k, stop, out))
             for k in range(short_procs)]
    for p in procs:
        p.start()
    socks = [connect(d.sock, timeout=10) for _ in range(long_lived)]
    inodes = [os.fstat(s.fileno()).st_ino for s in socks]
    broken = set()
    done_long = threading.Event()
    rounds = threading.Semaphore(0)

    def long_loop():
        n = 0
        while not done_long.is_set():
            n += 1
            rounds.release()
            for k, s in enumerate(socks):
                bad = k not in broken and exchange(s, b"long %d %d;" % (k, n))
                if bad:
                    errors[bad] += 1
                    broken.add(k)
                elif k not in broken:
                    counts["long"] += 1
            done_long.wait(0.05)

    t = threading.Thread(target=long_loop)
    t.start()
    done = {"reloads": 0, "upgrades": 0}
    every = (reloads + upgrades) // upgrades if upgrades else 0
    try:
        for i in range(reloads + upgrades):
            # Each reload meets a round of the long-lived exchanges in progress.
            assert rounds.acquire(timeout=30), "the long-lived clients are stuck"
            if d.proc.poll() is not None:
                break
            if upgrades and i % every == every - 1 and done["upgrades"] < upgrades:
                upgrade(d)
                done["upgrades"] += 1
            else:
                reload_and_wait(d)
                done["reloads"] += 1
        # Every old worker gone (not killed at shutdown_timeout: it handed its clients over).
        for _ in deadline_loop(60, "only the current generation's workers to be left"):
            if len(d.workers()) == workers:
                break
        rounds.acquire(timeout=30)
    finally:
        done_long.set()
        t.join(60)
        stop.set()
        for _ in procs:
            n, e = out.get(timeout=60)
            counts["short"] += n
            for k in e:
                errors[k] += e[k]
        for p in procs:
            p.join(30)
    kept = 0
    for k, s in enumerate(socks):
        if k not in broken and os.fstat(s.fileno()).st_ino == inodes[k]:
            bad = exchange(s, b"last %d" % k)
            if bad:
                errors[bad] += 1
            else:
                kept += 1
        s.close()
    return done, errors, counts, kept


def test_100_reloads_under_load_drop_nothing(udsd_factory):
    """Issue 14: 100 reloads, 4 threads of short connections, 50 long-lived ones every 50 ms."""
    d = start(udsd_factory, timeout="10s")
    done, errors, counts, kept = run_load(d, reloads=100, workers=2)
    print("\nlifecycle: %d reloads; short %d, long-lived exchanges %d; errors %s; "
          "long-lived connections kept %d of 50" % (done["reloads"], counts["short"],
                                                    counts["long"], errors, kept))
    assert d.stop() == 0
    assert "after the shutdown timeout" not in d.log
    assert done["reloads"] == 100
    assert errors == {k: 0 for k in errors}, errors
    assert kept == 50
    assert counts["short"] > 0 and counts["long"] > 0


def test_moved_clients_still_count_against_max_connections_per_uid(udsd_factory):
    """A hostile user at its max_connections_per_uid cannot open more after a reload.

    Before: a moved client left the old worker's per-uid count and joined none, so after
    each reload the same uid could open max_connections_per_uid more connections.
    """
    d = udsd_factory(conf(workers=1).replace("service = echo",
                                             "service = echo\nmax_connections_per_uid = 2", 1))
    d.http_sock = os.path.join(d.tmp, "http.sock")
    d.start()
    held = [connect(d.sock) for _ in range(2)]
    for s in held:
        ping(s)

    def served():
        s = connect(d.sock)
        try:
            s.sendall(b"third")
            return s.recv(5) == b"third"
        except OSError:
            return False
        finally:
            s.close()

    assert not served()
    old = d.workers()
    reload_and_wait(d)
    wait_gone(old)
    for s in held:
        ping(s, b"moved")  # both moved to the new worker
    assert not served()
    # A moved client that closes is counted out of its new worker: room for one again.
    held.pop().close()
    for _ in deadline_loop(10, "the closed client to be counted out"):
        if served():
            break
