#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Soak: mixed clients on every service while udsd is reloaded, killed and resized.

    SOAK_SECONDS=60 SOAK_SEED=1234 python3 tests/soak/soak.py

Runs the real udsd (UDSD_BIN, UDSD_BUILD as the integration tests) with one listener
per built-in service and kind (http, echo, seqpacket, dgram), the test plugin and the
fdinfo example, for SOAK_SECONDS (default 60) of:

  clients, well-behaved (every answer checked): short HTTP, keep-alive HTTP, pipelined
    HTTP, stream echo, seqpacket echo, datagrams, the plugin, descriptors sent to fdinfo;
  clients, hostile (only their end is checked): HTTP and echo clients that never read,
    a slowloris trickling a head, clients resetting mid-write (SO_LINGER 0), clients
    closing at random moments;
  chaos: SIGHUP at random intervals and in bursts 20 ms apart, SIGKILL of a random
    worker, the pool resized (workers = 1..3 in the config, then SIGHUP);

then the first config again, every client stopped, and SIGTERM.  It fails on:
  - a sanitizer report, or any error-level line in udsd's log but a worker it killed;
  - a worker death other than one it killed (or the master's own kill of a worker that
    overran shutdown_timeout, which udsd logs at notice);
  - a well-behaved client refused, reset, cut, hung or answered wrongly on a connection
    during whose life no worker was SIGKILLed (a kill only excuses its own victims);
  - a client that never reads, or that trickles, not closed by udsd (idle_timeout,
    header_timeout), within a generous deadline;
  - the sum of the workers' RSS above RSS_BUDGET_MIB (a worker) times the number of workers
    (sampled every 0.25 s; generations overlap during reloads);
  - the master's descriptors, or any worker's, not back to their count at start;
  - udsd not exiting 0 on SIGTERM, or any udsd process outliving it.

Randomness comes from SOAK_SEED (printed; random if unset): the same seed gives the same
schedule of signals, kills and resizes and the same client choices, so a failure can be
replayed (thread interleavings differ from run to run).
"""
import json
import os
import random
import re
import select
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from conftest import Udsd, connect, read_response  # noqa: E402

SECONDS = float(os.environ.get("SOAK_SECONDS", "60"))
SEED = int(os.environ.get("SOAK_SEED") or random.SystemRandom().randrange(1 << 32))
# A worker holds a few dozen clients, some that never read, each one's output bounded
# by the high-water mark: a few MiB (about 25 under ASan, whose shadow memory and
# quarantine of freed blocks make every process far larger).  The ceiling is this per
# worker alive at the sample (reloads overlap generations): sum <= budget x workers.
RSS_BUDGET_MIB = {"plain": 32, "asan": 128}
ANSWER_TIMEOUT = 30  # a well-behaved client waits this long for any answer: a hang, not a slow box
START_WORKERS = 2

CONF = """
[daemon]
workers = {workers}
threads = 2
shutdown_timeout = 5s
[listener web]
path = {{tmp}}/http.sock
service = http
idle_timeout = 3s
header_timeout = 2s
[listener echo]
path = {{tmp}}/echo.sock
service = echo
idle_timeout = 3s
[listener seq]
path = {{tmp}}/seq.sock
type = seqpacket
service = echo
idle_timeout = 3s
[listener dg]
path = {{tmp}}/dg.sock
type = dgram
service = echo
[listener plugin]
path = {{tmp}}/plugin.sock
service = {{build}}/tests/plugins/testsvc.so
idle_timeout = 3s
[listener fds]
path = {{tmp}}/fds.sock
service = {{build}}/lib/examples/fdinfo.so
idle_timeout = 3s
"""


def sendall_and_read_back(s, data, what):
    """Send data on a stream and read exactly as much back; it must be the same bytes."""
    s.sendall(data)
    got = b""
    while len(got) < len(data):
        b = s.recv(65536)
        if not b:
            raise ConnectionError("EOF after %d of %d bytes" % (len(got), len(data)))
        got += b
    if got != data:
        raise AssertionError("%s differs" % what)


class Soak:
    def __init__(self, tmp):
        self.tmp = tmp
        self.d = Udsd(tmp, CONF.format(workers=START_WORKERS))
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.epoch = 0  # SIGKILLs so far: a connection opened before one may die of it
        self.killed = set()
        self.failures = []
        self.served = {}
        self.excused = {}
        self.hostile_closed = {}
        self.actions = {}
        self.rss_max = (0, [])
        self.budget = RSS_BUDGET_MIB["asan"]  # until the master is seen (run())

    # --- bookkeeping -------------------------------------------------------------

    def count(self, table, kind, n=1):
        with self.lock:
            table[kind] = table.get(kind, 0) + n

    def fail(self, kind, what):
        with self.lock:
            self.failures.append("%s: %s" % (kind, what))

    def path(self, name):
        return os.path.join(self.tmp, name + ".sock")

    def guard(self, kind, epoch, fn):
        """Run one client session; a failure counts unless a kill happened since epoch."""
        try:
            fn()
            self.count(self.served, kind)
        except Exception as e:  # noqa: BLE001: every failure is judged the same way
            if self.epoch != epoch:
                self.count(self.excused, kind)
            else:
                self.fail(kind, "%s: %s" % (type(e).__name__, e))

    # --- well-behaved clients ----------------------------------------------------

    def http_session(self, rng, kind):
        s = connect(self.path("http"), ANSWER_TIMEOUT)
        f = s.makefile("rb")
        try:
            n = {"http-short": 1, "http-keepalive": rng.randint(1, 20), "http-pipelined": 1}[kind]
            for i in range(n):
                if self.stop.is_set() and i:
                    break
                depth = rng.randint(2, 8) if kind == "http-pipelined" else 1
                last = kind == "http-short" or i == n - 1
                targets = ["/%s-%d" % (kind, rng.randrange(1 << 30)) for _ in range(depth)]
                req = b"".join(b"GET " + t.encode() + b" HTTP/1.1\r\nHost: soak\r\n" +
                               (b"Connection: close\r\n" if last and j == depth - 1 else b"") + b"\r\n"
                               for j, t in enumerate(targets))
                s.sendall(req)
                for t in targets:
                    status, headers, body = read_response(f)
                    if status != 200 or t.encode() not in body:
                        raise AssertionError("%s: %d %r" % (t, status, body[:200]))
                    if headers.get("connection") == "close":
                        return  # the server may end a keep-alive connection after an answer
                if not last and rng.random() < 0.3:
                    time.sleep(rng.random() * 0.05)
        finally:
            f.close()
            s.close()

    def echo_session(self, rng):
        s = connect(self.path("echo"), ANSWER_TIMEOUT)
        try:
            for _ in range(rng.randint(1, 10)):
                data = rng.randbytes(rng.choice([1, 100, 4096, 32768]))
                sendall_and_read_back(s, data, "echo")
        finally:
            s.close()

    def seq_session(self, rng):
        s = connect(self.path("seq"), ANSWER_TIMEOUT, kind=socket.SOCK_SEQPACKET)
        try:
            for _ in range(rng.randint(1, 10)):
                data = rng.randbytes(rng.randint(1, 4096))
                s.send(data)
                got = s.recv(65536)
                if got != data:
                    raise AssertionError("seqpacket echo: sent %d bytes, got %d" % (len(data), len(got)))
        finally:
            s.close()

    def dgram_session(self, rng, c):
        data = rng.randbytes(rng.randint(1, 2048))
        c.sendto(data, self.path("dg"))
        try:
            got = c.recv(65536)
        except socket.timeout:
            raise AssertionError("no answer to a datagram in %ds" % ANSWER_TIMEOUT)
        if got != data:
            raise AssertionError("datagram echo differs")

    def plugin_session(self, rng):
        # Hex text never starts one of testsvc's commands (crash, sleep, whoami, ...).
        s = connect(self.path("plugin"), ANSWER_TIMEOUT)
        try:
            for _ in range(rng.randint(1, 5)):
                data = rng.randbytes(rng.randint(1, 2000)).hex().encode()
                sendall_and_read_back(s, data, "plugin echo")
        finally:
            s.close()

    def fds_session(self, rng):
        n = rng.randint(1, 4)
        fds = [os.open("/dev/null" if rng.random() < 0.5 else self.fdfile, os.O_RDONLY) for _ in range(n)]
        try:
            s = connect(self.path("fds"), ANSWER_TIMEOUT)
            f = s.makefile("rb")
            try:
                socket.send_fds(s, [b"?"], fds)
                for _ in range(n):
                    line = f.readline()
                    if not line:
                        raise ConnectionError("EOF before an answer per descriptor")
                    json.loads(line)
            finally:
                f.close()
                s.close()
        finally:
            for fd in fds:
                os.close(fd)

    def well_behaved(self, kind, rng):
        c = None
        if kind == "dgram":
            c = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            c.bind(os.path.join(self.tmp, "dgc-%d.sock" % threading.get_ident()))
            c.settimeout(ANSWER_TIMEOUT)
        while not self.stop.is_set():
            epoch = self.epoch
            if kind.startswith("http"):
                fn = lambda: self.http_session(rng, kind)  # noqa: E731
            elif kind == "dgram":
                fn = lambda: self.dgram_session(rng, c)  # noqa: E731
            else:
                fn = {"echo": self.echo_session, "seqpacket": self.seq_session,
                      "plugin": self.plugin_session, "fds": self.fds_session}[kind]
                fn = (lambda f: lambda: f(rng))(fn)
            self.guard(kind, epoch, fn)
        if c:
            c.close()

    # --- hostile clients ---------------------------------------------------------

    def wait_closed(self, s, kind, deadline=60):
        """The server must close a client that stalls it: POLLHUP on our end."""
        p = select.poll()
        p.register(s, select.POLLRDHUP if hasattr(select, "POLLRDHUP") else 0)
        end = time.monotonic() + deadline
        while time.monotonic() < end and not self.stop.is_set():
            for _, ev in p.poll(200):
                if ev & (select.POLLHUP | select.POLLERR | getattr(select, "POLLRDHUP", 0)):
                    self.count(self.hostile_closed, kind)
                    return
        if not self.stop.is_set():
            self.fail(kind, "still open %ds after it stalled the server" % deadline)

    def never_reads(self, kind, rng):
        """Floods requests (pipelined /status, or echo bytes) and never reads an answer."""
        while not self.stop.is_set():
            try:
                s = connect(self.path("http" if kind == "never-read-http" else "echo"), 10)
            except OSError as e:
                self.fail(kind, "connect: %s" % e)
                self.stop.wait(1)
                continue
            s.setblocking(False)
            chunk = (b"GET /status HTTP/1.1\r\nHost: soak\r\n\r\n" * 100 if kind == "never-read-http"
                     else rng.randbytes(65536))
            sent, end = 0, time.monotonic() + 10
            while sent < (64 << 20) and time.monotonic() < end and not self.stop.is_set():
                try:
                    sent += s.send(chunk)
                except BlockingIOError:
                    select.select([], [s], [], 0.2)
                except OSError:
                    break
            self.wait_closed(s, kind)
            s.close()

    def trickle(self, rng):
        """A slowloris: one byte of a head at a time; header_timeout must end it."""
        head = b"GET /trickle HTTP/1.1\r\nHost: soak\r\nX-Slow: " + b"a" * 200
        while not self.stop.is_set():
            try:
                s = connect(self.path("http"), 10)
            except OSError as e:
                self.fail("trickle", "connect: %s" % e)
                self.stop.wait(1)
                continue
            try:
                for b in head:
                    if self.stop.wait(0.25):
                        break
                    s.send(bytes([b]))
                else:
                    self.fail("trickle", "the whole head trickled in without a timeout")
            except OSError:
                self.count(self.hostile_closed, "trickle")  # cut: what header_timeout is for
            s.close()

    def resetter(self, rng):
        """Sends part of something and resets the connection (SO_LINGER 0): an RST."""
        while not self.stop.is_set():
            name = rng.choice(["http", "echo", "seq", "plugin", "fds"])
            s = None
            try:
                s = connect(self.path(name), 10,
                            kind=socket.SOCK_SEQPACKET if name == "seq" else socket.SOCK_STREAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.setblocking(False)
                if name == "http":
                    s.send(b"POST /r HTTP/1.1\r\nHost: soak\r\nContent-Length: 1000000\r\n\r\n" +
                           b"x" * rng.randint(0, 60000))
                else:
                    s.send(rng.randbytes(rng.randint(1, 60000)))
                if rng.random() < 0.5:
                    time.sleep(rng.random() * 0.02)
            except OSError:
                pass
            if s:
                s.close()
            self.count(self.actions, "client resets")

    def random_closer(self, rng):
        """Opens any listener, sends a random prefix of a valid exchange, closes at any moment."""
        while not self.stop.is_set():
            name = rng.choice(["http", "echo", "seq", "plugin", "fds"])
            try:
                s = connect(self.path(name), 10,
                            kind=socket.SOCK_SEQPACKET if name == "seq" else socket.SOCK_STREAM)
                msg = (b"GET /c HTTP/1.1\r\nHost: soak\r\n\r\n" * 3 if name == "http"
                       else rng.randbytes(rng.randint(1, 3000)).hex().encode())
                cut = rng.randint(0, len(msg))
                if name == "fds" and cut:
                    fd = os.open("/dev/null", os.O_RDONLY)
                    socket.send_fds(s, [msg[:cut]], [fd])
                    os.close(fd)
                elif cut:
                    s.send(msg[:cut])
                if rng.random() < 0.5:
                    s.settimeout(rng.random() * 0.05)
                    try:
                        s.recv(rng.randint(1, 100))
                    except (socket.timeout, OSError):
                        pass
                if rng.random() < 0.3:
                    s.shutdown(socket.SHUT_WR)
                s.close()
            except OSError:
                pass
            self.count(self.actions, "random closes")

    # --- chaos -------------------------------------------------------------------

    def worker_pids(self):
        """The master's children that are workers (not a plugin checker it forked)."""
        pids = []
        for pid in self.d.workers():
            try:
                with open("/proc/%d/comm" % pid) as f:
                    if f.read().strip() == "udsd-worker":
                        pids.append(pid)
            except OSError:
                pass
        return pids

    def reload(self, workers=None):
        if workers is not None:
            self.d.write_config(CONF.format(workers=workers))  # atomically: see there
        self.d.send(signal.SIGHUP)

    def chaos(self, rng, end):
        while time.monotonic() < end and not self.stop.is_set():
            action = rng.choices(["hup", "burst", "kill", "resize"], [6, 1, 2, 2])[0]
            if action == "hup":
                self.reload()
            elif action == "burst":
                for _ in range(rng.randint(5, 20)):
                    self.reload()
                    time.sleep(0.02)
            elif action == "kill":
                pids = self.worker_pids()
                if pids:
                    victim = rng.choice(pids)
                    with self.lock:
                        self.epoch += 1  # before the kill: every client it cuts sees it
                        self.killed.add(victim)
                    try:
                        os.kill(victim, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            else:
                self.reload(rng.randint(1, 3))
            self.count(self.actions, action)
            time.sleep(rng.choice([0.02, 0.05, 0.1, 0.3, 0.6, 1.0]))

    def read_notify(self):
        """Read udsd's sd_notify datagrams as systemd does, continuously: a full queue
        (net.unix.max_dgram_qlen, 10 by default) would block the master in sd_notify()."""
        while self.d.proc.poll() is None:
            try:
                self.d.notify._read(0.2)
            except OSError:
                return

    def sample_rss(self):
        while not self.stop.is_set():
            rss = []
            for pid in self.worker_pids():
                try:
                    with open("/proc/%d/status" % pid) as f:
                        rss += [int(l.split()[1]) for l in f if l.startswith("VmRSS:")]
                except OSError:
                    pass
            if sum(rss) > self.rss_max[0]:
                self.rss_max = (sum(rss), rss)
            if sum(rss) > self.budget * 1024 * len(rss):
                self.fail("memory", "workers' RSS %d KiB %s, above %d MiB x %d workers"
                          % (sum(rss), rss, self.budget, len(rss)))
                self.stop.wait(5)  # one report, not one per sample
            self.stop.wait(0.25)

    # --- checks ------------------------------------------------------------------

    def fd_count(self, pid):
        return len(os.listdir("/proc/%d/fd" % pid))

    def quiet_fd_count(self, pid, samples=10):
        """The least of a few counts 10 ms apart: a descriptor open for a moment (the
        master's sd_notify() socket) is not part of the baseline."""
        counts = []
        for _ in range(samples):
            counts.append(self.fd_count(pid))
            time.sleep(0.01)  # samples over 0.1 s, not a synchronisation
        return min(counts)

    def fd_list(self, pid):
        out = []
        for fd in sorted(os.listdir("/proc/%d/fd" % pid), key=int):
            try:
                out.append("%s -> %s" % (fd, os.readlink("/proc/%d/fd/%s" % (pid, fd))))
            except OSError:
                pass
        return out

    def settled(self):
        """Only the start config's workers, all of the current generation, no client open."""
        st = self.d.status(self.path("http"))
        gen = st["generation"]
        ws = st["workers"]
        pids = self.worker_pids()
        # The /status request itself is one open client.
        return (len(ws) == START_WORKERS and all(w["generation"] == gen for w in ws) and
                sorted(pids) == sorted(w["pid"] for w in ws) and sum(w["open"] for w in ws) <= 1)

    def wait_for(self, cond, what, timeout=60):
        end, last = time.monotonic() + timeout, None
        while time.monotonic() < end:
            try:
                if cond():
                    return True
            except (OSError, ValueError, KeyError) as e:
                last = e
            time.sleep(0.1)  # polling the condition, up to the deadline
        self.fail("end", "timed out waiting for %s (%s)" % (what, last))
        return False

    def log_checks(self, log):
        for bad in ("Sanitizer", "runtime error:", "double free", "corrupted", "LeakSanitizer"):
            if bad in log:
                i = log.index(bad)
                self.fail("sanitizer", log[max(0, i - 500):i + 3000])
        for line in log.splitlines():
            level = line.split(": ", 2)[1] if line.startswith("udsd[") and line.count(": ") >= 2 else ""
            if level not in ("emerg", "alert", "crit", "error") and "killed by signal" not in line:
                continue
            if set(re.findall(r"\d+", line)) & {str(pid) for pid in self.killed}:
                continue  # one of ours, or what its death did (a reload it failed)
            if level == "notice" and "killed by signal KILL" in line:
                continue  # the master's own kill of a worker past shutdown_timeout
            self.fail("log", line)

    # --- the run -----------------------------------------------------------------

    def run(self):
        rng = random.Random(SEED)
        self.fdfile = os.path.join(self.tmp, "fdfile")
        with open(self.fdfile, "wb") as f:
            f.write(os.urandom(100000))
        self.d.start()
        threading.Thread(target=self.read_notify, daemon=True).start()
        # Counted at READY, before any client.  The master may still hold the socket
        # sd_notify() opens for each message, briefly: the least of a few counts.
        master = self.d.proc.pid
        with open("/proc/%d/maps" % master) as f:
            self.budget = RSS_BUDGET_MIB["asan" if "libasan" in f.read() else "plain"]
        base_master = self.quiet_fd_count(master)
        base_workers = sorted(self.quiet_fd_count(p) for p in self.worker_pids())
        print("soak: seed %d, %gs, udsd %d, master fds %d, worker fds %s, RSS ceiling %d MiB a worker"
              % (SEED, SECONDS, master, base_master, base_workers, self.budget), flush=True)

        kinds = (["http-short"] * 2 + ["http-keepalive"] * 2 + ["http-pipelined", "echo", "echo",
                 "seqpacket", "dgram", "plugin", "fds"])
        threads = [threading.Thread(target=self.well_behaved, args=(k, random.Random(rng.random())))
                   for k in kinds]
        threads += [threading.Thread(target=self.never_reads, args=(k, random.Random(rng.random())))
                    for k in ("never-read-http", "never-read-echo")]
        threads += [threading.Thread(target=f, args=(random.Random(rng.random()),))
                    for f in (self.trickle, self.resetter, self.random_closer)]
        sampler = threading.Thread(target=self.sample_rss)
        for t in threads + [sampler]:
            t.start()
        try:
            self.chaos(rng, time.monotonic() + SECONDS)
            # The first config again, the clients stopped, then every count back to its start.
            self.reload(START_WORKERS)
        finally:
            self.stop.set()
            for t in threads + [sampler]:
                t.join(120)
                if t.is_alive():
                    self.fail("end", "a client thread did not stop: %s" % t.name)
        self.wait_for(self.settled, "udsd to settle on the first config with no client")
        if not self.wait_for(lambda: self.fd_count(master) == base_master, "the master's fds back to %d"
                             % base_master, 30):
            self.fail("fds", "master now: %s" % self.fd_list(master))
        if not self.wait_for(lambda: sorted(self.fd_count(p) for p in self.worker_pids()) == base_workers,
                             "the workers' fds back to %s" % base_workers, 30):
            for p in self.worker_pids():
                self.fail("fds", "worker %d now: %s" % (p, self.fd_list(p)))
        rc = self.d.stop(signal.SIGTERM, timeout=60)
        if rc != 0:
            self.fail("exit", "udsd exited %s on SIGTERM" % rc)
        self.leftover_check()
        self.log_checks(self.d.log)
        return self.report()

    def leftover_check(self):
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    with open("/proc/%s/cmdline" % name, "rb") as f:
                        if self.d.conf_path.encode() in f.read():
                            self.fail("leftovers", "udsd process %s outlived its master" % name)
                except OSError:
                    pass

    def report(self):
        kinds = ["http-short", "http-keepalive", "http-pipelined", "echo", "seqpacket", "dgram",
                 "plugin", "fds"]
        for k in kinds:
            if not self.served.get(k):
                self.fail(k, "never served once")
        for k in ("never-read-http", "never-read-echo", "trickle"):
            if not self.hostile_closed.get(k):
                self.fail(k, "never closed by udsd once")
        print("soak: served %s" % json.dumps(self.served, sort_keys=True))
        print("soak: cut by a kill (excused) %s" % json.dumps(self.excused, sort_keys=True))
        print("soak: hostile clients closed by udsd %s" % json.dumps(self.hostile_closed, sort_keys=True))
        print("soak: actions %s, workers killed %d" % (json.dumps(self.actions, sort_keys=True),
                                                      len(self.killed)))
        print("soak: peak workers' RSS %d KiB %s (ceiling %d MiB a worker)"
              % (self.rss_max[0], self.rss_max[1], self.budget))
        if self.failures:
            print("soak: FAILED (seed %d; replay with SOAK_SEED=%d), log %s:" % (SEED, SEED, self.d.log_path))
            for f in self.failures[:50]:
                print("  " + f)
            if len(self.failures) > 50:
                print("  ... %d more" % (len(self.failures) - 50))
            return 1
        print("soak: passed (seed %d)" % SEED)
        return 0


def main():
    tmp = tempfile.mkdtemp(prefix="udsd-soak-")
    soak = Soak(tmp)
    try:
        return soak.run()
    except BaseException:
        traceback.print_exc()
        soak.fail("soak", "stopped by the exception above")
        soak.report()
        return 1
    finally:
        soak.stop.set()
        soak.d.kill()


if __name__ == "__main__":
    sys.exit(main())
