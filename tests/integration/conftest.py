# SPDX-License-Identifier: MIT
"""Start the real udsd binary and talk to it with real clients.

Synchronisation is always on something observable: the READY=1 datagram on a
test-owned NOTIFY_SOCKET, the socket file, the process exiting. Never a sleep.
"""
import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
UDSD = os.environ.get("UDSD_BIN") or os.path.join(HERE, "..", "..", "build", "daemon", "udsd")
UDSCTL = os.path.join(os.path.dirname(UDSD), "udsctl")


def public_copy(*paths):
    """Copies of PATHS in a 0755 directory, where another user may read and run them.

    A clone under /root (0700, as on a fresh Debian) keeps nobody out of build/; tests
    that run udsd's files as another user (a pool's plugin, udsctl as nobody) use these.
    """
    d = tempfile.mkdtemp(prefix="udsd-public-")
    atexit.register(shutil.rmtree, d, True)
    os.chmod(d, 0o755)
    for p in paths:
        shutil.copy(p, d)
        os.chmod(os.path.join(d, os.path.basename(p)), 0o755)
    return d
BUILD = os.environ.get("UDSD_BUILD") or os.path.join(HERE, "..", "..", "build")


def deadline_loop(timeout, what):
    """Yield until timeout; then fail the test naming what never happened."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        yield
    raise AssertionError("timed out waiting for " + what)


class Notify:
    """An AF_UNIX datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.messages = []

    def _read(self, timeout):
        self.sock.settimeout(timeout)
        try:
            msg = self.sock.recv(4096).decode()
        except socket.timeout:
            return None
        self.messages.append(msg)
        return msg

    def wait(self, key, timeout=20, after=0):
        """Wait for a message (from index `after` on) containing key; return its index."""
        for i in range(after, len(self.messages)):
            if key in self.messages[i].split("\n"):
                return i
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            msg = self._read(max(0.01, end - time.monotonic()))
            if msg is not None and key in msg.split("\n"):
                return len(self.messages) - 1
        raise AssertionError("no %r from udsd; got %r" % (key, self.messages))

    def wait_for(self, pred, what, timeout=30):
        """Wait for any message (old or new) for which pred(message) is true."""
        for m in self.messages:
            if pred(m):
                return m
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            msg = self._read(max(0.01, end - time.monotonic()))
            if msg is not None and pred(msg):
                return msg
        raise AssertionError("no %s from udsd; got %r" % (what, self.messages[-10:]))

    def close(self):
        self.sock.close()


class Udsd:
    def __init__(self, tmp, conf, name="udsd"):
        self.tmp = str(tmp)
        self.sock = os.path.join(self.tmp, "udsd.sock")
        self.conf_path = os.path.join(self.tmp, name + ".conf")
        # The admin socket in the test's directory, never the host's /run/udsd.
        self.admin = os.path.join(self.tmp, name + "-admin.sock")
        self.log_path = os.path.join(self.tmp, name + ".log")
        self.write_config(conf)
        self.proc = None
        self.notify = None

    def write_config(self, conf):
        text = conf.format(sock=self.sock, tmp=self.tmp, build=BUILD, admin=self.admin)
        if "[admin]" not in text:
            text += "\n[admin]\npath = %s\n" % self.admin
        # Atomically, as an editor or a config manager does: a reload may read the file at
        # any moment (the soak writes it while earlier SIGHUPs are being handled).
        with open(self.conf_path + ".new", "w") as f:
            f.write(text)
        os.replace(self.conf_path + ".new", self.conf_path)

    def start(self, wait=True, env=None, args=(), cmd_prefix=(), stdin=None):
        self.notify = Notify(os.path.join(self.tmp, "notify-%d.sock" % time.monotonic_ns()))
        e = dict(os.environ)
        e.update({"NOTIFY_SOCKET": self.notify.path})
        for k in ("JOURNAL_STREAM", "WATCHDOG_PID", "WATCHDOG_USEC", "LISTEN_FDS", "LISTEN_PID"):
            e.pop(k, None)
        if env:
            e.update(env)
        self.logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(list(cmd_prefix) + [UDSD, "-c", self.conf_path] + list(args),
                                     stdout=self.logf, stderr=self.logf, env=e, stdin=stdin,
                                     pass_fds=getattr(self, "pass_fds", ()))
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, after=0):
        return self.notify.wait("READY=1", after=after)

    def run_check(self, *args):
        """Run udsd to completion (for -t, or a start that must fail)."""
        return subprocess.run([UDSD, "-c", self.conf_path] + list(args), capture_output=True,
                              text=True, timeout=30)

    @property
    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def workers(self):
        """Pids of the master's children (the workers)."""
        with open("/proc/%d/task/%d/children" % (self.proc.pid, self.proc.pid)) as f:
            return [int(x) for x in f.read().split()]

    def send(self, sig):
        self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self.logf.close()
            self.notify.close()

    def kill(self):
        if self.proc and self.proc.poll() is None:
            for pid in self.workers():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.proc.kill()
            self.proc.wait()

    def udsctl(self, *args, timeout=120):
        """Run udsctl against this udsd's admin socket: (exit status, stdout, stderr)."""
        p = subprocess.run([UDSCTL, "-s", self.admin] + list(args), capture_output=True, text=True,
                           timeout=timeout)
        return p.returncode, p.stdout, p.stderr

    def status(self, path=None):
        return json.loads(http_get(path or self.http_sock, "/status")[2])


def alive(pid):
    """pid runs: it exists and is not a zombie.  An orphan may be reaped at any moment
    (by a subreaper such as tests/leftovers.py): /proc/PID vanishing is an answer too."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def connect(path, timeout=10, kind=socket.SOCK_STREAM):
    s = socket.socket(socket.AF_UNIX, kind)
    s.settimeout(timeout)
    s.connect(path if not path.startswith("@") else "\0" + path[1:])
    return s


def ping(s, data=b"p"):
    """One exchange with an echo server on a connected socket."""
    s.sendall(data)
    assert s.recv(len(data)) == data


def recv_all(s):
    data = b""
    while True:
        b = s.recv(65536)
        if not b:
            return data
        data += b


def echo(path, payload):
    s = connect(path)
    s.sendall(payload)
    s.shutdown(socket.SHUT_WR)
    data = recv_all(s)
    s.close()
    return data


def read_response(f):
    """Read one HTTP response from a file object: (status, headers, body)."""
    line = f.readline()
    if not line:
        raise ConnectionError("closed before a response")
    status = int(line.split()[1])
    headers = {}
    while True:
        h = f.readline()
        if h in (b"\r\n", b""):
            break
        k, v = h.decode().split(":", 1)
        headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", 0))
    body = f.read(n) if n else b""
    return status, headers, body


def http_raw(path, request, timeout=10):
    """Send raw bytes, return every response until the server closes."""
    s = connect(path, timeout)
    s.sendall(request)
    f = s.makefile("rb")
    out = []
    try:
        while True:
            out.append(read_response(f))
            if out[-1][1].get("connection") == "close":
                break
    except ConnectionError:
        pass
    s.close()
    return out


def http_get(path, target, timeout=10):
    return http_raw(path, b"GET " + target.encode() + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                    timeout)[0]


@pytest.fixture
def udsd_factory(tmp_path):
    started = []

    def make(conf, name="udsd"):
        d = Udsd(tmp_path, conf, name)
        started.append(d)
        return d

    yield make
    for d in started:
        d.kill()
    # A sanitizer report in any udsd process fails the test that caused it.
    for d in started:
        if os.path.exists(d.log_path):
            log = d.log
            for bad in ("Sanitizer", "runtime error:", "double free", "corrupted"):
                assert bad not in log, log[-4000:]


ECHO_CONF = """
[daemon]
workers = 2
threads = 2
shutdown_timeout = 5s
[listener main]
path = {sock}
service = echo
[listener web]
path = {tmp}/http.sock
service = http
"""


@pytest.fixture
def udsd(udsd_factory):
    d = udsd_factory(ECHO_CONF)
    d.http_sock = os.path.join(d.tmp, "http.sock")
    d.start()
    return d
