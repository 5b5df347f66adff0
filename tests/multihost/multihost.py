# SPDX-License-Identifier: MIT
"""udsd beyond one host: two "hosts" as network namespaces behind HAProxy and nginx.

Three network namespaces made here: "front" (HAProxy, the front nginx and the
load generator) and two hosts, a and b, each with its own loopback and a veth
pair to the front (10.18.1.0/24 and 10.18.2.0/24, the front ends being .1).
Each host runs udsd on its Unix socket plus a tcp: listener on the host's
address, and nginx proxying TCP to that Unix socket.  Over both hosts, the
front offers two paths: "direct" (to udsd's tcp: listeners) and "via-nginx"
(to each host's nginx).  For each front (HAProxy, nginx) and path, under load
from keep-alive and one-shot clients: steady load; SIGKILL of host a's udsd
master, then its restart; SIGHUP (a reload) of host a's udsd.  Every error a
client sees is counted by class; the figures are printed as a table.

Exit 0 when every scenario had no client-visible error, 77 (skip) without
root, ip netns, haproxy or nginx.  Everything made here is removed at the end.

    multihost.py UDSD_BIN
"""
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from load import Load  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_ROOT = os.path.dirname(os.path.dirname(HERE))
NS_SH = os.path.join(SOURCE_ROOT, "tests", "systemd", "ns.sh")
ADDR = {"a": "10.18.1.2", "b": "10.18.2.2"}
UDSD_PORT, NGINX_PORT = 8080, 8081
FRONT_PORTS = {("haproxy", "direct"): 8000, ("haproxy", "via-nginx"): 8001,
               ("nginx", "direct"): 8010, ("nginx", "via-nginx"): 8011}
BACKEND_PORT = {"direct": UDSD_PORT, "via-nginx": NGINX_PORT}
# Requests per phase of a scenario: enough for every client thread to meet the
# event many times over, little enough for a shared 2-core machine.
PHASE = int(os.environ.get("MULTIHOST_PHASE", 600))
NS_PREFIX = "udsd-mh-"
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
libc = ctypes.CDLL(None, use_errno=True)


def skip(why):
    print("SKIP: " + why)
    sys.exit(77)


def sh(*cmd, check=True):
    return subprocess.run(cmd, check=check, capture_output=True, text=True).stdout


def die_with_us():
    """In a child before exec: die if the test does (even by SIGKILL)."""
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def deadline(timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        yield
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


class Notify:
    """A test-owned NOTIFY_SOCKET: udsd says READY=1 and RELOADING=1 here.

    A thread reads it all the time: udsd sends STATUS= every second under load,
    and once a datagram socket holds net.unix.max_dgram_qlen (10) unread
    messages, the sender's sd_notify() blocks, and with it udsd's master.
    """

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.messages = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        while True:
            try:
                msg = self.sock.recv(4096).decode()
            except OSError:
                return
            with self.cond:
                self.messages.append(msg)
                self.cond.notify_all()

    def wait(self, key, after=0, timeout=30):
        """Index of the first message from `after` on that holds key."""
        def found():
            return next((i for i in range(after, len(self.messages))
                         if key in self.messages[i].split("\n")), None)
        with self.cond:
            if not self.cond.wait_for(lambda: found() is not None, timeout):
                raise AssertionError("no %s from udsd; got %r" % (key, self.messages[-5:]))
            return found()

    def close(self):
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


class Lab:
    """The namespaces, the temporary directory and every process; all undone by close()."""

    def __init__(self):
        self.tag = NS_PREFIX + str(os.getpid())
        self.ns = {n: "%s-%s" % (self.tag, n) for n in ("front", "a", "b")}
        self.dir = tempfile.mkdtemp(prefix="udsd-multihost.")
        self.procs = []
        self.made = []
        self.on_stop = []

    def spawn(self, ns, cmd, log, env=None):
        logf = open(os.path.join(self.dir, log), "ab")
        p = subprocess.Popen(["ip", "netns", "exec", self.ns[ns]] + cmd, stdout=logf, stderr=logf,
                             stdin=subprocess.DEVNULL, env=env, preexec_fn=die_with_us)
        logf.close()
        self.procs.append(p)
        return p

    def build(self):
        for name in self.ns.values():
            sh("ip", "netns", "add", name)
            self.made.append(name)
            sh("ip", "-n", name, "link", "set", "lo", "up")
        for h, n in (("a", 1), ("b", 2)):
            front_if = "to-" + h
            sh("ip", "link", "add", "name", front_if, "netns", self.ns["front"], "type", "veth",
               "peer", "name", "eth0", "netns", self.ns[h])
            sh("ip", "-n", self.ns["front"], "addr", "add", "10.18.%d.1/24" % n, "dev", front_if)
            sh("ip", "-n", self.ns[h], "addr", "add", "%s/24" % ADDR[h], "dev", "eth0")
            sh("ip", "-n", self.ns["front"], "link", "set", front_if, "up")
            sh("ip", "-n", self.ns[h], "link", "set", "eth0", "up")
        # This process joins the front: the load generator's sockets are made there.
        fd = os.open("/run/netns/" + self.ns["front"], os.O_RDONLY)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")
        os.close(fd)

    def stop(self):
        """SIGTERM every process started here (udsd unlinks its sockets, ASan reports)."""
        while self.on_stop:
            self.on_stop.pop()()
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for p in reversed(self.procs):
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def close(self):
        self.stop()
        for name in self.made:
            remove_netns(name)
        self.made = []
        shutil.rmtree(self.dir, onerror=lambda *a: print("cleanup:", a[1], a[2][1], file=sys.stderr))


def remove_netns(name):
    """Kill what still runs in one of our namespaces (by pid), then delete it."""
    for pid in sh("ip", "netns", "pids", name, check=False).split():
        if int(pid) == os.getpid():
            continue  # this test itself, in the front
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    sh("ip", "netns", "del", name, check=False)


def remove_stale():
    """Namespaces a killed earlier run left behind (its pid no longer runs)."""
    for line in sh("ip", "netns", "list", check=False).splitlines():
        m = re.match(re.escape(NS_PREFIX) + r"(\d+)-\w+", line)
        if m and not os.path.exists("/proc/" + m.group(1)):
            remove_netns(m.group(0))


def fill(template, out, **kv):
    with open(os.path.join(HERE, template)) as f:
        text = f.read()
    for k, v in kv.items():
        text = text.replace("@%s@" % k, str(v))
    assert "@" not in re.sub(r"#.*", "", text), "unfilled in " + template
    with open(out, "w") as f:
        f.write(text)
    return out


class Host:
    """One "host": udsd on its Unix socket and tcp: listener, nginx in front of the socket."""

    def __init__(self, lab, name, udsd):
        self.lab, self.name, self.udsd = lab, name, udsd
        self.dir = os.path.join(lab.dir, name)
        os.mkdir(self.dir, 0o700)
        self.sock = os.path.join(self.dir, "udsd.sock")
        self.conf = os.path.join(self.dir, "udsd.conf")
        self.proc = self.notify = None
        self.starts = 0
        with open(self.conf, "w") as f:
            f.write("[daemon]\nworkers = 2\nthreads = 1\nshutdown_timeout = 5s\n\n"
                    "[listener main]\npath = %s\nservice = http\nmode = 0660\n\n"
                    "[listener tcp]\npath = tcp:%s:%d\nservice = http\n\n"
                    "[admin]\npath = %s\n"
                    % (self.sock, ADDR[name], UDSD_PORT, os.path.join(self.dir, "admin.sock")))

    def start(self):
        self.starts += 1
        self.notify = Notify(os.path.join(self.dir, "notify-%d.sock" % self.starts))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LISTEN_", "WATCHDOG_"))}
        env.update(NOTIFY_SOCKET=self.notify.path)
        env.pop("JOURNAL_STREAM", None)
        self.proc = self.lab.spawn(self.name, [self.udsd, "-c", self.conf], "udsd-%s.log" % self.name,
                                   env)
        self.notify.wait("READY=1")

    def kill(self):
        """SIGKILL the master (its workers follow: PR_SET_PDEATHSIG)."""
        self.proc.kill()
        self.proc.wait()
        self.notify.close()

    def back(self):
        """Serving again by itself after kill()?  Not without a supervisor."""
        return False

    def restart(self):
        self.start()

    def reload(self):
        """SIGHUP, as systemctl reload sends; back once READY=1 follows RELOADING=1."""
        n = len(self.notify.messages)
        self.proc.send_signal(signal.SIGHUP)
        self.notify.wait("READY=1", after=self.notify.wait("RELOADING=1", after=n))

    def start_nginx(self):
        conf = fill("nginx-host.conf.in", os.path.join(self.dir, "nginx.conf"), DIR=self.dir,
                    SOCK=self.sock, ADDR=ADDR[self.name], PORT=NGINX_PORT)
        self.nginx = self.lab.spawn(self.name, ["nginx", "-c", conf, "-p", self.dir],
                                    "nginx-%s.log" % self.name)


class SystemdHost(Host):
    """A host whose udsd runs under a real systemd, booted by tests/systemd/ns.sh as PID 1 of
    private namespaces inside the host's network namespace: the shipped units as "meson
    install" places them, socket activation for the Unix socket, "systemctl reload", and
    systemd restarting a killed udsd (Restart=on-failure)."""

    def __init__(self, lab, name, udsd):
        super().__init__(lab, name, udsd)
        self.state = os.path.join(self.dir, "systemd")
        self.build = os.path.dirname(os.path.dirname(os.path.abspath(udsd)))
        self.killed = None

    def guest(self, *cmd, check=True):
        return sh(NS_SH, "run", self.state, *cmd, check=check).strip()

    def prop(self, name):
        return self.guest("systemctl", "show", "-P", name, "udsd.service")

    def start(self):
        env = dict(os.environ, BIND_DIRS="%s %s" % (SOURCE_ROOT, self.build))
        subprocess.run(["nsenter", "--net=/run/netns/" + self.lab.ns[self.name], NS_SH, "boot",
                        self.state], env=env, check=True, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.lab.on_stop.append(self.shutdown)
        root = "/proc/%s/root" % open(os.path.join(self.state, "pid")).read().strip()
        self.sock = root + "/run/udsd/udsd.sock"
        self.guest("meson", "install", "-C", self.build, "--no-rebuild", "--quiet")
        self.guest("ldconfig")
        with open(root + "/usr/local/etc/udsd/udsd.conf", "w") as f:
            f.write("[daemon]\nworkers = 2\nthreads = 1\nuser = udsd\n\n"
                    "[listener main]\npath = /run/udsd/udsd.sock\nservice = http\nmode = 0660\n\n"
                    "[listener tcp]\npath = tcp:%s:%d\nservice = http\n" % (ADDR[self.name], UDSD_PORT))
        # Test only: the shipped RestartSec (100ms) would bring a killed udsd back before the
        # front's health checks (2 x 500ms) could see it gone; 2s lets the test see both.
        os.makedirs(root + "/etc/systemd/system/udsd.service.d", exist_ok=True)
        with open(root + "/etc/systemd/system/udsd.service.d/test.conf", "w") as f:
            f.write("[Service]\nRestartSec=2s\n")
        self.guest("systemctl", "daemon-reload")
        self.guest("systemctl", "start", "udsd.socket", "udsd.service")
        assert self.prop("ActiveState") == "active", self.guest("systemctl", "status", "udsd", check=False)

    def kill(self):
        """SIGKILL the master, as an OOM kill would; systemd restarts it."""
        self.killed = self.prop("MainPID")
        self.guest("kill", "-KILL", self.killed)

    def back(self):
        return self.prop("ActiveState") == "active" and self.prop("MainPID") not in ("0", self.killed)

    def restart(self):
        for _ in deadline(30, "systemd to restart udsd"):
            if self.back():
                return

    def generation(self):
        return int(re.search(r"\(generation (\d+)\)", self.prop("StatusText")).group(1))

    def reload(self):
        """systemctl reload (SIGHUP); back once StatusText names the next generation."""
        gen = self.generation()
        self.guest("systemctl", "reload", "udsd.service")
        for _ in deadline(30, "udsd under systemd to reload"):
            if self.generation() > gen:
                return

    def shutdown(self):
        """The journal into the lab (sanitizer check, failure report), then systemd down."""
        with open(os.path.join(self.lab.dir, "udsd-%s.log" % self.name), "w") as f:
            f.write(self.guest("journalctl", "--no-pager", "-o", "cat", "-u", "udsd.service",
                               check=False))
        subprocess.run([NS_SH, "stop", self.state], capture_output=True)


def systemd_usable():
    """Why a host cannot run udsd under systemd here, or None."""
    if os.environ.get("MULTIHOST_SYSTEMD", "1") == "0":
        return "MULTIHOST_SYSTEMD=0"
    if not os.path.exists("/lib/systemd/systemd") or not shutil.which("nsenter"):
        return "no systemd or nsenter"
    if subprocess.run(["unshare", "--pid", "--fork", "--mount", "true"],
                      capture_output=True).returncode != 0:
        return "cannot unshare"
    return None


def wait_listening(port, proc, what):
    for _ in deadline(20, what + " to listen"):
        assert proc.poll() is None, what + " exited"
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            pass


class HAProxy:
    name = "haproxy"

    def __init__(self, lab):
        self.dir = os.path.join(lab.dir, "haproxy")
        os.mkdir(self.dir)
        self.stat_sock = os.path.join(self.dir, "haproxy.stat")
        conf = fill("haproxy.cfg.in", os.path.join(self.dir, "haproxy.cfg"), DIR=self.dir,
                    PORT_DIRECT=FRONT_PORTS["haproxy", "direct"],
                    PORT_VIA_NGINX=FRONT_PORTS["haproxy", "via-nginx"], ADDR_A=ADDR["a"],
                    ADDR_B=ADDR["b"], UDSD_PORT=UDSD_PORT, NGINX_PORT=NGINX_PORT)
        self.proc = lab.spawn("front", ["haproxy", "-db", "-f", conf], "haproxy.log")
        for port in (FRONT_PORTS["haproxy", p] for p in BACKEND_PORT):
            wait_listening(port, self.proc, "haproxy")
        for path in BACKEND_PORT:
            for h in ADDR:
                self.wait_state(path, h, "UP")

    def stats(self):
        """{(backend, server): {field: value}} from the stats socket's "show stat"."""
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(self.stat_sock)
            s.sendall(b"show stat\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        lines = data.decode().splitlines()
        fields = lines[0].lstrip("# ").split(",")
        out = {}
        for line in lines[1:]:
            if line:
                row = dict(zip(fields, line.split(",")))
                out[row["pxname"], row["svname"]] = row
        return out

    def wait_state(self, path, host, state, unless=lambda: False):
        for _ in deadline(30, "haproxy to see %s/%s %s" % (path, host, state)):
            try:
                if self.stats()[path, host]["status"].startswith(state) or unless():
                    return
            except (FileNotFoundError, ConnectionRefusedError):
                pass  # the stats socket comes after the frontends

    def snapshot(self, path):
        st = self.stats()
        # HAProxy's words: wretr, "times a connection to a server was retried"; wredis,
        # "times a request was redispatched to another server".
        return {"retries": int(st[path, "BACKEND"]["wretr"]),
                "redispatches": int(st[path, "BACKEND"]["wredis"]),
                "served": {h: int(st[path, h]["stot"]) for h in ADDR}}

    def routed_around(self, path, host):
        self.wait_state(path, host.name, "DOWN", unless=host.back)

    def back_in(self, path, host, since):
        self.wait_state(path, host.name, "UP")


class NginxFront:
    name = "nginx"

    def __init__(self, lab):
        self.dir = os.path.join(lab.dir, "nginx-front")
        os.mkdir(self.dir)
        self.log = os.path.join(self.dir, "access.log")
        conf = fill("nginx-front.conf.in", os.path.join(self.dir, "nginx.conf"), DIR=self.dir,
                    PORT_DIRECT=FRONT_PORTS["nginx", "direct"],
                    PORT_VIA_NGINX=FRONT_PORTS["nginx", "via-nginx"], ADDR_A=ADDR["a"],
                    ADDR_B=ADDR["b"], UDSD_PORT=UDSD_PORT, NGINX_PORT=NGINX_PORT)
        self.proc = lab.spawn("front", ["nginx", "-c", conf, "-p", self.dir], "nginx-front.log")
        for port in (FRONT_PORTS["nginx", p] for p in BACKEND_PORT):
            wait_listening(port, self.proc, "front nginx")

    def _lines(self, path):
        """Access log lines of this path: (status, [upstream addr...], [upstream status...])."""
        port = ":%d" % BACKEND_PORT[path]
        with open(self.log) as f:
            for line in f:
                status, addrs, codes = line.rstrip("\n").split("|")
                if port in addrs:
                    yield status, re.split(r", | : ", addrs), re.split(r", | : ", codes)

    def snapshot(self, path):
        served = {h: 0 for h in ADDR}
        tries = 0
        for _, addrs, codes in self._lines(path):
            tries += len(addrs) - 1
            for h in ADDR:
                if codes[-1] == "200" and addrs[-1].startswith(ADDR[h] + ":"):
                    served[h] += 1
        return {"retries": tries, "redispatches": tries, "served": served}

    def routed_around(self, path, host):
        """No active health checks here: nginx learns from the next failure."""

    def back_in(self, path, host, since):
        """Back once nginx has given host a request again (after fail_timeout) and it answered."""
        for _ in deadline(30, "nginx to use %s again" % host.name):
            if self.snapshot(path)["served"][host.name] > since["served"][host.name]:
                return


def scenario(front, path, name, hosts, expected):
    """Run one scenario under load; return its figures."""
    before = front.snapshot(path)
    load = Load("127.0.0.1", FRONT_PORTS[front.name, path], expected=expected).start()
    a = hosts["a"]
    try:
        load.wait_done(PHASE)
        if name == "kill":
            a.kill()
            front.routed_around(path, a)
            load.wait_done(load.done + PHASE)
            mark = front.snapshot(path)
            a.restart()
            front.back_in(path, a, mark)
        elif name == "reload":
            a.reload()
        load.wait_done(load.done + PHASE)
    finally:
        load.stop()
    after = front.snapshot(path)
    return {"front": front.name, "path": path, "scenario": name, "load": load.summary(),
            "retries": after["retries"] - before["retries"],
            "redispatches": after["redispatches"] - before["redispatches"],
            "served": {h: after["served"][h] - before["served"][h] for h in ADDR}}


def errors_of(r):
    return sum(sum(k["errors"].values()) for k in r["load"].values())


def print_table(results):
    """One row per scenario and kind of client; retries are the front's, for both kinds."""
    print("\n%-8s %-10s %-8s %-10s %8s %7s %7s  %s" % (
        "front", "path", "scenario", "clients", "requests", "retried", "redisp", "errors by class"))
    for r in results:
        for i, (kind, k) in enumerate(r["load"].items()):
            errs = ", ".join("%s: %d" % e for e in k["errors"].items()) or "0"
            print("%-8s %-10s %-8s %-10s %8d %7s %7s  %s" % (
                r["front"], r["path"], r["scenario"], kind, k["requests"],
                r["retries"] if i == 0 else "", r["redispatches"] if i == 0 else "", errs))
    print()


def sanitizer_reports(lab):
    bad = []
    for name in os.listdir(lab.dir):
        if name.startswith("udsd-") and name.endswith(".log"):
            with open(os.path.join(lab.dir, name), errors="replace") as f:
                text = f.read()
            if re.search(r"ERROR: (Address|Leak|Thread)Sanitizer|runtime error:", text):
                bad.append(name)
    return bad


def run(lab, udsd):
    lab.build()
    why_not = systemd_usable()
    hosts = {"a": SystemdHost(lab, "a", udsd) if not why_not else Host(lab, "a", udsd),
             "b": Host(lab, "b", udsd)}
    print("host a: udsd %s; host b: udsd run by the test, reloaded with SIGHUP" % (
        "under systemd (ns.sh), reloaded with systemctl reload" if not why_not else
        "run by the test, reloaded with SIGHUP (no systemd: %s)" % why_not), flush=True)
    for h in hosts.values():
        h.start()
        h.start_nginx()
    expected = sh("curl", "-sf", "--unix-socket", hosts["a"].sock, "http://localhost/hello").encode()
    fronts = [HAProxy(lab), NginxFront(lab)]
    for h in ADDR:
        wait_listening_remote(ADDR[h], NGINX_PORT, hosts[h].nginx)
    results = []
    only = os.environ.get("MULTIHOST_ONLY", "")  # e.g. "nginx via-nginx kill"
    for front in fronts:
        for path in BACKEND_PORT:
            for name in ("steady", "kill", "reload"):
                if not all(w in (front.name, path, name) for w in only.split()):
                    continue
                r = scenario(front, path, name, hosts, expected)
                results.append(r)
                print("%s %s %s: %d requests, %d errors, retried %d, redispatched %d, served %s" % (
                    front.name, path, name, sum(k["requests"] for k in r["load"].values()),
                    errors_of(r), r["retries"], r["redispatches"], r["served"]), flush=True)
    print_table(results)
    with open(os.environ.get("MULTIHOST_JSON", os.devnull), "w") as f:
        json.dump(results, f, indent=1)
    return results


def wait_listening_remote(addr, port, proc):
    for _ in deadline(20, "nginx on %s to listen" % addr):
        assert proc.poll() is None, "nginx on %s exited" % addr
        try:
            socket.create_connection((addr, port), 1).close()
            return
        except OSError:
            pass


def verdict(results, lab):
    failures = []
    for r in results:
        what = "%s %s %s" % (r["front"], r["path"], r["scenario"])
        if errors_of(r):
            failures.append("%s: client-visible errors %s" % (what, {
                kind: k["errors"] for kind, k in r["load"].items() if k["errors"]}))
        if r["scenario"] == "steady" and not all(r["served"].values()):
            failures.append("%s: not balanced over both hosts: %s" % (what, r["served"]))
    failures += ["sanitizer report in " + n for n in sanitizer_reports(lab)]
    return failures


def print_logs(lab):
    """The end of every log the lab's processes wrote, for a failure report."""
    for top, _, files in sorted(os.walk(lab.dir)):
        for name in sorted(files):
            if name.endswith(".log"):
                with open(os.path.join(top, name), errors="replace") as f:
                    text = f.read()
                if text:
                    print("--- %s (last 3000 bytes)\n%s" % (os.path.relpath(os.path.join(top, name), lab.dir), text[-3000:]))


def netns_unusable():
    """Why a throwaway namespace cannot be entered ('ip -n' mounts /sys), or None."""
    name = "udsd-mh-probe-%d" % os.getpid()
    r = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if r.returncode == 0:
        r = subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"],
                           capture_output=True, text=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None if r.returncode == 0 else (r.stderr.strip() or "exit %d" % r.returncode)


def main():
    udsd = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else
                           os.path.join(HERE, "..", "..", "build", "daemon", "udsd"))
    if os.geteuid() != 0:
        skip("needs root (network namespaces, veth pairs)")
    if subprocess.run(["ip", "netns", "list"], capture_output=True).returncode != 0:
        skip("'ip netns' is not available")
    why = netns_unusable()
    if why:
        skip("a network namespace cannot be used here (a chroot without /sys?): " + why)
    for tool in ("haproxy", "nginx", "curl"):
        if not shutil.which(tool):
            skip("%s is not installed (tests/install-deps.sh installs it)" % tool)
    # meson's timeout and Ctrl-C: unwind through the finally below.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda s, f: sys.exit(128 + s))
    remove_stale()
    lab = Lab()
    failures = ["did not finish"]
    try:
        results = run(lab, udsd)
        lab.stop()
        failures = verdict(results, lab)
    finally:
        if failures:
            print_logs(lab)
        lab.close()
    for f in failures:
        print("FAIL: " + f)
    print("%d scenarios, %d failed" % (len(results), len(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
