# SPDX-License-Identifier: MIT
"""Lifecycle: sd_notify, reload, shutdown, worker death, socket activation."""
import json
import os
import re
import signal
import socket
import stat
import subprocess
import threading
import time

import pytest

from conftest import UDSD, Notify, alive, connect, deadline_loop, echo, http_get, ping

CONF = """
[daemon]
workers = 2
threads = {threads}
shutdown_timeout = {timeout}
[listener main]
path = {{sock}}
service = echo
mode = {mode}
[listener web]
path = {{tmp}}/http.sock
service = http
"""


def conf(threads=2, mode="0660", timeout="30s"):
    return CONF.format(threads=threads, mode=mode, timeout=timeout)


def start(udsd_factory, **kw):
    d = udsd_factory(conf(**kw))
    d.http_sock = os.path.join(d.tmp, "http.sock")
    d.start()
    return d


def reload_and_wait(d):
    """SIGHUP, then wait for RELOADING=1 and the READY=1 that follows it."""
    n = len(d.notify.messages)
    d.send(signal.SIGHUP)
    i = d.notify.wait("RELOADING=1", after=n)
    return d.notify.wait("READY=1", after=i + 1)


def test_notify_sequence(udsd_factory):
    d = start(udsd_factory)
    ready = d.notify.wait("READY=1")
    assert "MAINPID=%d" % d.proc.pid in d.notify.messages[ready]
    d.notify.wait("STATUS=2 workers (generation 1), 0 open, 0 served")
    d.send(signal.SIGHUP)
    i = d.notify.wait("RELOADING=1", after=ready + 1)
    assert re.search(r"^MONOTONIC_USEC=\d+$", d.notify.messages[i], re.M)
    j = d.notify.wait("READY=1", after=i + 1)
    d.send(signal.SIGTERM)
    d.notify.wait("STOPPING=1", after=j + 1)
    assert d.proc.wait(30) == 0


def test_watchdog(udsd_factory):
    d = udsd_factory(conf())
    d.start(env={"WATCHDOG_USEC": "200000"})
    first = d.notify.wait("WATCHDOG=1")
    d.notify.wait("WATCHDOG=1", after=first + 1)
    d.notify.wait("WATCHDOG=1", after=len(d.notify.messages))
    assert d.stop() == 0


def test_reload_applies_threads_mode_and_new_workers(udsd_factory):
    d = start(udsd_factory)
    old = set(d.workers())
    d.write_config(conf(threads=3, mode="0600"))
    reload_and_wait(d)
    assert stat.S_IMODE(os.lstat(d.sock).st_mode) == 0o600
    st = d.status(d.http_sock)
    assert st["generation"] == 2
    new = [w for w in st["workers"] if w["generation"] == 2]
    assert len(new) == 2 and all(w["threads"] == 3 for w in new)
    assert not old & {w["pid"] for w in new}
    # The old generation had no clients: it is gone by now or about to be.
    for _ in deadline_loop(10, "old workers to exit"):
        if not old & set(d.workers()):
            break
    assert echo(d.sock, b"after reload") == b"after reload"


def test_reload_with_invalid_config_keeps_serving(udsd_factory):
    d = start(udsd_factory)
    pids = set(d.workers())
    d.write_config(conf() + "\n[listener broken]\npath = relative\n")
    reload_and_wait(d)
    assert "%s:15: path: 'relative' must be absolute" % d.conf_path in d.log
    assert "reload failed; still serving generation 1" in d.log
    assert any("STATUS=reload failed" in m for m in d.notify.messages)
    assert set(d.workers()) == pids
    assert echo(d.sock, b"old config") == b"old config"
    assert d.status(d.http_sock)["generation"] == 1


def test_reload_adds_and_removes_listeners(udsd_factory):
    d = start(udsd_factory)
    extra = os.path.join(d.tmp, "extra.sock")
    d.write_config(conf() + "\n[listener extra]\npath = %s\nservice = echo\n" % extra)
    reload_and_wait(d)
    assert echo(extra, b"new listener") == b"new listener"
    d.write_config(conf())
    reload_and_wait(d)
    assert not os.path.exists(extra)
    assert echo(d.sock, b"main") == b"main"


def test_reload_whose_listeners_fail_closes_the_sockets_it_bound(udsd_factory):
    """The first new listener binds, the second cannot: the reload fails, and the
    socket it bound is closed and its file gone (on a sanitizer build, the stop
    also proves that the config, services and listener set were freed)."""
    d = start(udsd_factory)
    pids = set(d.workers())
    extra = os.path.join(d.tmp, "extra.sock")
    taken = os.path.join(d.tmp, "taken")
    with open(taken, "w") as f:
        f.write("not a socket\n")
    d.write_config(conf() + "\n[listener extra]\npath = %s\nservice = echo\n"
                   "[listener taken]\npath = %s\nservice = echo\n" % (extra, taken))
    reload_and_wait(d)
    assert "listener taken: %s: exists and is not a socket" % taken in d.log
    assert "reload failed; still serving generation 1: listeners:" in d.log
    assert not os.path.exists(extra)
    with open(taken) as f:
        assert f.read() == "not a socket\n"
    assert set(d.workers()) == pids
    assert echo(d.sock, b"old config") == b"old config"
    d.write_config(conf() + "\n[listener extra]\npath = %s\nservice = echo\n" % extra)
    reload_and_wait(d)
    assert echo(extra, b"bound again") == b"bound again"
    assert d.stop() == 0


def test_50_reloads_under_load_no_client_error(udsd_factory):
    d = start(udsd_factory)
    first = set(d.workers())
    stop = threading.Event()
    errors, counts = [], {"short": 0, "persistent": 0}

    def short():
        while not stop.is_set():
            try:
                assert echo(d.sock, b"short") == b"short"
                counts["short"] += 1
            except Exception as e:  # noqa: BLE001 - any failure is the finding
                errors.append("short: %r" % e)

    def persistent():
        while not stop.is_set():
            try:
                s = connect(d.sock)
                for _ in range(50):
                    s.sendall(b"ping")
                    got = b""
                    while len(got) < 4:
                        b = s.recv(4 - len(got))
                        assert b, "closed mid-exchange"
                        got += b
                    assert got == b"ping"
                    counts["persistent"] += 1
                s.close()
            except Exception as e:  # noqa: BLE001
                errors.append("persistent: %r" % e)

    threads = [threading.Thread(target=f) for f in (short, short, persistent, persistent)]
    for t in threads:
        t.start()
    try:
        for i in range(50):
            if i == 49:
                d.write_config(conf(threads=3, mode="0600"))
            reload_and_wait(d)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert errors == []
    assert counts["short"] > 50 and counts["persistent"] > 50, counts
    st = d.status(d.http_sock)
    assert st["generation"] == 51
    cur = [w for w in st["workers"] if w["generation"] == 51]
    assert len(cur) == 2 and all(w["threads"] == 3 for w in cur)
    assert not first & {w["pid"] for w in cur}
    assert stat.S_IMODE(os.lstat(d.sock).st_mode) == 0o600
    assert d.stop() == 0


def test_sigterm_lets_slow_clients_finish(udsd_factory):
    d = start(udsd_factory, timeout="20s")
    s = connect(d.sock)
    s.sendall(b"before")
    assert s.recv(6) == b"before"
    d.send(signal.SIGTERM)
    d.notify.wait("STOPPING=1")
    # Draining: the open client is still served, new ones are not accepted.
    s.sendall(b"during")
    assert s.recv(6) == b"during"
    t0 = time.monotonic()
    s.close()
    assert d.proc.wait(20) == 0
    assert time.monotonic() - t0 < 10
    assert not os.path.exists(d.sock)


def test_shutdown_timeout_kills_stuck_clients(udsd_factory):
    d = start(udsd_factory, timeout="1s")
    workers = d.workers()
    held = [connect(d.sock) for _ in range(4)]
    for s in held:
        ping(s, b"x")
    assert d.stop() == 0
    assert "after the shutdown timeout" in d.log
    for pid in workers:
        assert not os.path.exists("/proc/%d/cmdline" % pid) or not open("/proc/%d/cmdline" % pid).read()


def test_second_sigint_stops_at_once(udsd_factory):
    d = start(udsd_factory, timeout="60s")
    s = connect(d.sock)
    ping(s, b"x")
    d.send(signal.SIGINT)
    d.notify.wait("STOPPING=1")
    d.send(signal.SIGINT)
    assert d.proc.wait(10) == 0
    s.close()


def test_fds_in_flight_survive_worker_death(udsd_factory):
    d = udsd_factory(conf(threads=1).replace("workers = 2", "workers = 2"))
    d.start()
    a = d.workers()[0]
    os.kill(a, signal.SIGSTOP)
    clients = []
    for i in range(10):
        s = connect(d.sock, timeout=20)
        s.sendall(b"%02d" % i)
        clients.append(s)
    # Wait until the master has handed some to the stopped worker (they sit in its channel).
    for _ in deadline_loop(10, "clients queued to the stopped worker"):
        st = d.status(os.path.join(d.tmp, "http.sock"))
        served = sum(w["accepted"] for w in st["workers"] if w["pid"] != a)
        if served + 1 <= 10 and served >= 1 and served < 10:
            break
    os.kill(a, signal.SIGKILL)
    for i, s in enumerate(clients):
        assert s.recv(2) == b"%02d" % i
        s.close()
    assert re.search(r"handed \d+ unserved client\(s\) of worker %d" % a, d.log)
    for _ in deadline_loop(10, "a replacement worker"):
        if len(d.workers()) == 2 and a not in d.workers():
            break
    assert echo(d.sock, b"new") == b"new"


def test_killed_worker_is_replaced_and_others_unaffected(udsd_factory):
    d = start(udsd_factory)
    w = d.workers()
    held = connect(d.sock)
    ping(held, b"a")
    victim = w[0]
    os.kill(victim, signal.SIGKILL)
    for _ in deadline_loop(10, "worker respawn"):
        now = d.workers()
        if len(now) == 2 and victim not in now:
            break
    assert "killed by signal KILL" in d.log
    for _ in range(20):
        assert echo(d.sock, b"ok") == b"ok"
    # The held client was either on the survivor (still served) or on the victim (closed).
    try:
        held.sendall(b"b")
        assert held.recv(1) in (b"b", b"")
    except (ConnectionResetError, BrokenPipeError):
        pass


def test_socket_activation(tmp_path):
    sock = str(tmp_path / "act.sock")
    cfg = tmp_path / "act.conf"
    cfg.write_text("[daemon]\nworkers = 1\nthreads = 2\n[listener main]\npath = %s\nservice = echo\n" % sock)
    notify = Notify(str(tmp_path / "notify.sock"))
    log = open(tmp_path / "act.log", "wb")
    p = subprocess.Popen(["systemd-socket-activate", "-l", sock, "--fdname=main",
                          "-E", "NOTIFY_SOCKET=" + notify.path, UDSD, "-c", str(cfg)],
                         stdout=log, stderr=subprocess.PIPE)
    try:
        assert b"Listening on" in p.stderr.readline()
        # Nothing runs yet; the first client starts udsd and is served.
        assert echo(sock, b"first client") == b"first client"
        notify.wait("READY=1")
        p.send_signal(signal.SIGTERM)  # systemd-socket-activate exec'd udsd: same pid
        assert p.wait(30) == 0
        # The socket is systemd's: udsd must leave it in place.
        assert stat.S_ISSOCK(os.lstat(sock).st_mode)
    finally:
        if p.poll() is None:
            p.kill()
        notify.close()
    out = p.stderr.read().decode()
    assert "listener main: %s (echo), from systemd" % sock in out


def test_activation_with_another_path_and_mode_warns_and_status_tells_the_truth(tmp_path):
    # The socket systemd passes is where its unit put it, with its mode: udsd cannot honour
    # the config's path and mode for it.  It says so, and /status shows the real socket.
    sock = str(tmp_path / "real.sock")
    cfg = tmp_path / "act.conf"
    cfg.write_text("[daemon]\nworkers = 1\nthreads = 1\n[listener main]\npath = %s\n"
                   "service = http\nmode = 0600\n" % (tmp_path / "configured.sock"))
    notify = Notify(str(tmp_path / "notify.sock"))
    p = subprocess.Popen(["systemd-socket-activate", "-l", sock, "--fdname=main",
                          "-E", "NOTIFY_SOCKET=" + notify.path, UDSD, "-c", str(cfg)],
                         stderr=subprocess.PIPE)
    try:
        assert b"Listening on" in p.stderr.readline()
        os.chmod(sock, 0o640)  # before the first client starts udsd
        status = json.loads(http_get(sock, "/status")[2])
        notify.wait("READY=1")
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0
    finally:
        if p.poll() is None:
            p.kill()
        notify.close()
    (main,) = status["listeners"]
    assert (main["path"], main["mode"]) == (sock, "0640")
    assert not os.path.exists(tmp_path / "configured.sock")
    err = p.stderr.read().decode()
    assert ("listener main: systemd's socket is %s, not the configured path %s: the socket "
            "unit's address applies" % (sock, tmp_path / "configured.sock")) in err
    assert ("listener main: systemd's socket %s has mode 0640, not the configured mode 0600: "
            "the socket unit's SocketMode= applies" % sock) in err


def test_activation_type_mismatch_is_clear(tmp_path):
    sock = str(tmp_path / "act.sock")
    cfg = tmp_path / "act.conf"
    cfg.write_text("[listener main]\npath = %s\ntype = seqpacket\n" % sock)
    p = subprocess.Popen(["systemd-socket-activate", "-l", sock, "--fdname=main", UDSD, "-c", str(cfg)],
                         stderr=subprocess.PIPE)
    try:
        assert b"Listening on" in p.stderr.readline()
        c = socket.socket(socket.AF_UNIX)
        c.connect(sock)
        assert p.wait(30) == 1
        err = p.stderr.read().decode()
        assert 'fd 3 "main": not a listening Unix seqpacket socket (listener main)' in err
        c.close()
    finally:
        if p.poll() is None:
            p.kill()


def test_hung_worker_starves_the_watchdog_then_is_replaced(udsd_factory):
    d = udsd_factory(conf())
    d.start(env={"WATCHDOG_USEC": "1000000"})
    d.notify.wait("WATCHDOG=1")
    victim = d.workers()[0]
    os.kill(victim, signal.SIGSTOP)  # alive, but its threads stop ticking
    for _ in deadline_loop(20, "the master to stop feeding the watchdog"):
        if "not feeding the watchdog" in d.log:
            break
        d.notify._read(0.5)
    for _ in deadline_loop(30, "the hung worker to be killed and replaced"):
        if "worker %d thread 0 hung" % victim in d.log and len(d.workers()) == 2 \
                and victim not in d.workers():
            break
        d.notify._read(0.5)
    n = len(d.notify.messages)
    d.notify.wait("WATCHDOG=1", after=n)  # healthy again: fed again
    assert echo(d.sock, b"ok") == b"ok"


def test_workers_exit_when_the_master_dies(udsd_factory):
    d = start(udsd_factory)
    workers = d.workers()
    s = connect(d.sock)
    ping(s, b"x")
    d.proc.kill()  # SIGKILL: no drain, no cleanup
    d.proc.wait()
    # PR_SET_PDEATHSIG and the channel's end of file take the workers down with it.
    for _ in deadline_loop(10, "the workers to exit with their master"):
        if not any(alive(p) for p in workers):
            break
    assert s.recv(1) == b""


PLUGIN_CONF = """
[daemon]
workers = {workers}
threads = 2
shutdown_timeout = 30s
[listener main]
path = {{sock}}
service = {{build}}/tests/plugins/testsvc.so
{keys}
[listener web]
path = {{tmp}}/http.sock
service = http
{more}
"""


def plugin_conf(workers=2, keys="", more=""):
    return PLUGIN_CONF.format(workers=workers, keys=keys, more=more)


class Load:
    """Clients that keep connecting, exchanging and closing until stopped; every failure is kept."""

    def __init__(self, path, n=4):
        self.path, self.errors, self.served = path, [], 0
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(i,)) for i in range(n)]
        for t in self.threads:
            t.start()

    def run(self, i):
        while not self.stopping.is_set():
            payload = b"client %d" % i
            try:
                got = echo(self.path, payload)
                assert got == payload, got
                self.served += 1
            except Exception as e:  # noqa: BLE001 - any failure is the finding
                self.errors.append(repr(e))

    def wait_served(self, more, timeout=30):
        """Wait until `more` further clients were served."""
        goal = self.served + more
        for _ in deadline_loop(timeout, "%d more clients served (errors: %r)" % (more, self.errors[:3])):
            if self.served >= goal:
                return
            time.sleep(0.01)  # polling a counter, not synchronising on time

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(30)
        return self.errors


def statuses_after(d, index, count):
    """The first `count` STATUS= lines udsd sent after message `index`."""
    for _ in deadline_loop(30, "%d STATUS lines" % count):
        lines = [line for m in d.notify.messages[index + 1:] for line in m.split("\n")
                 if line.startswith("STATUS=")]
        if len(lines) >= count:
            return lines[:count]
        d.notify._read(1)


def start_plugin(udsd_factory, **kw):
    d = udsd_factory(plugin_conf(**kw))
    d.http_sock = os.path.join(d.tmp, "http.sock")
    d.start()
    return d


def test_reload_to_a_failing_init_keeps_the_old_generation_serving(udsd_factory):
    d = start_plugin(udsd_factory)
    old = set(d.workers())
    extra = os.path.join(d.tmp, "extra.sock")
    extra_conf = "[listener extra]\npath = %s\nservice = echo\n" % extra
    load = Load(d.sock)
    try:
        load.wait_served(20)
        d.write_config(plugin_conf(keys="fail_init = yes", more=extra_conf))
        j = reload_and_wait(d)
        assert re.search(r"^STATUS=reload failed: worker \d+ exited with status 1 before generation 2 "
                         r"was ready; \d+ workers \(generation 1\)", d.notify.messages[j], re.M), \
            d.notify.messages[j]
        assert "reload failed; still serving generation 1: worker" in d.log
        assert old <= set(d.workers())
        # The failed reload closes what it opened, and only that.
        assert not os.path.exists(extra)
        load.wait_served(50)
        # The periodic status line keeps saying so until the next good reload.
        assert all(s.startswith("STATUS=reload failed: ") for s in statuses_after(d, j, 2))
        d.write_config(plugin_conf(more=extra_conf))
        k = reload_and_wait(d)
        assert re.search(r"^STATUS=\d+ workers \(generation 3\)", d.notify.messages[k], re.M)
        load.wait_served(20)
        assert echo(extra, b"extra") == b"extra"
        assert d.status(d.http_sock)["generation"] == 3
    finally:
        errors = load.stop()
    assert errors == []
    assert d.stop() == 0  # and, on a sanitizer build, no leak of the failed generation


def test_reload_to_a_hanging_init_fails_after_the_ready_timeout(udsd_factory):
    d = start_plugin(udsd_factory, workers=1)
    old = set(d.workers())
    d.write_config(plugin_conf(workers=1, keys="init_sleep = 60"))
    j = reload_and_wait(d)
    assert re.search(r"^STATUS=reload failed: generation 2 not ready after 10s", d.notify.messages[j], re.M)
    for _ in deadline_loop(10, "the new generation's workers to be stopped"):
        if set(d.workers()) == old:
            break
    assert echo(d.sock, b"old") == b"old"
    assert d.stop() == 0


def test_sighup_while_a_reload_is_pending_starts_from_the_newest_file(udsd_factory):
    d = start_plugin(udsd_factory, workers=1)
    d.write_config(plugin_conf(workers=1, keys="init_sleep = 60"))
    n = len(d.notify.messages)
    d.send(signal.SIGHUP)
    d.notify.wait("RELOADING=1", after=n)
    # The old generation serves while the new one starts.
    assert echo(d.sock, b"during") == b"during"
    assert "generation 2 starting" in d.log
    d.write_config(plugin_conf(workers=1))
    reload_and_wait(d)
    assert "reload of generation 2 abandoned: a newer reload" in d.log
    assert d.status(d.http_sock)["generation"] == 3
    for _ in deadline_loop(10, "only generation 3 to be left"):
        if {w["generation"] for w in d.status(d.http_sock)["workers"]} == {3}:
            break
    assert echo(d.sock, b"after") == b"after"
    assert d.stop() == 0


def test_sigterm_while_a_reload_is_pending_abandons_it(udsd_factory):
    d = start_plugin(udsd_factory, workers=1)
    extra = os.path.join(d.tmp, "extra.sock")
    d.write_config(plugin_conf(workers=1, keys="init_sleep = 60",
                               more="[listener extra]\npath = %s\nservice = echo\n" % extra))
    n = len(d.notify.messages)
    d.send(signal.SIGHUP)
    d.notify.wait("RELOADING=1", after=n)
    for _ in deadline_loop(10, "the new listener to be bound"):
        if os.path.exists(extra):
            break
    assert d.stop() == 0
    assert "reload of generation 2 abandoned: stopping" in d.log
    # Its worker, still in init, was killed at once, not waited for until the shutdown timeout.
    assert "after the shutdown timeout" not in d.log
    assert not os.path.exists(extra)


def test_a_crash_while_draining_is_logged_as_an_error(udsd_factory):
    d = start_plugin(udsd_factory, workers=1)
    (old,) = d.workers()
    s = connect(d.sock)
    ping(s, b"held")
    reload_and_wait(d)  # the old worker drains, kept alive by the held client
    s.sendall(b"crash")
    assert s.recv(10) == b""
    for _ in deadline_loop(10, "the crash to be reaped"):
        if "worker %d killed by signal ABRT" % old in d.log:
            break
    assert "error: worker %d killed by signal ABRT" % old in d.log


def listen_backlog(d, path):
    """Clients waiting in the accept queue of udsd's listener at path (ss's Recv-Q)."""
    out = subprocess.run(["ss", "-xlnpH"], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        f = line.split()
        # The address as bound: the full path, or the name alone if bound from its directory.
        if len(f) >= 5 and f[4] in (path, os.path.basename(path)) and "pid=%d," % d.proc.pid in line:
            return int(f[2])
    raise AssertionError("%s is not listening" % path)


def master_sockets(d):
    fds = "/proc/%d/fd" % d.proc.pid
    return sum(os.readlink(os.path.join(fds, f)).startswith("socket:") for f in os.listdir(fds))


@pytest.mark.parametrize("workers", [1, 2])
def test_clients_of_dead_workers_wait_for_a_replacement(udsd_factory, workers):
    """workers = 1, or every worker stopped and killed at once: nobody else can take the clients."""
    d = udsd_factory(conf(threads=1).replace("workers = 2", "workers = %d" % workers))
    d.start()
    victims = d.workers()
    for pid in victims:
        os.kill(pid, signal.SIGSTOP)
    clients = []
    for i in range(20):
        s = connect(d.sock, timeout=20)
        s.sendall(b"%02d" % i)
        clients.append(s)
    # Every client accepted and handed over: none in the backlog, none held by the master,
    # whose sockets are then its two listeners, its admin socket and both ends of each
    # worker's one channel.
    for _ in deadline_loop(10, "the master to hand every client to the stopped workers"):
        if listen_backlog(d, d.sock) == 0 and master_sockets(d) == 3 + 2 * workers:
            break
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    for i, s in enumerate(clients):
        assert s.recv(2) == b"%02d" % i
        s.close()
    assert re.search(r"\d+ unserved client\(s\) of worker \d+ wait for a worker", d.log)
    assert d.stop() == 0


SEQ_CONF = """
[daemon]
workers = 1
threads = 1
[listener seq]
path = {sock}
type = seqpacket
service = echo
"""


def test_a_worker_at_its_cap_can_still_receive_a_full_batch_of_client_fds(udsd_factory):
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    d = udsd_factory(SEQ_CONF)
    d.start(cmd_prefix=["prlimit", "--nofile=600:600", "--"])
    cap = int(re.search(r"using (\d+) per worker", d.log).group(1))
    clients = []
    try:
        for _ in range(cap):
            s = connect(d.sock, kind=socket.SOCK_SEQPACKET)
            ping(s, b"p")
            clients.append(s)
        r, w = os.pipe()
        # As many descriptors as one message can carry (SCM_MAX_FD), on the last client.
        socket.send_fds(clients[-1], [b"fds"], [r] * 253)
        os.close(r)
        os.close(w)
        assert clients[-1].recv(16) == b"fds"
    finally:
        for s in clients:
            s.close()


def test_a_worker_can_write_only_its_own_status_slot(udsd_factory):
    d = start_plugin(udsd_factory)
    s = connect(d.sock)
    s.sendall(b"probe")
    pages = s.makefile("rb").readline().strip().decode()
    s.close()
    # The master's page and every other worker's slot stay read-only, whatever the worker tries:
    # no mprotect() makes them writable, and no longer mapping of its own slot reaches them.
    # (The slot is one run of pages, however many its counters take: three since datagrams.)
    assert re.fullmatch(r"-+w+-*\|-", pages), pages


def test_a_failed_reload_gives_back_the_systemd_socket_it_took(tmp_path):
    main, extra = str(tmp_path / "main.sock"), str(tmp_path / "extra.sock")
    blocker = tmp_path / "not-a-socket"
    blocker.write_text("")
    base = "[daemon]\nworkers = 1\nthreads = 1\n[listener main]\npath = %s\nservice = echo\n" % main
    with_extra = base + "[listener extra]\npath = %s\nservice = echo\n" % extra
    cfg = tmp_path / "act.conf"
    cfg.write_text(base)
    notify = Notify(str(tmp_path / "notify.sock"))
    log_path = tmp_path / "act.log"
    log = open(log_path, "wb")
    p = subprocess.Popen(["systemd-socket-activate", "-l", main, "-l", extra, "--fdname=main:extra",
                          "-E", "NOTIFY_SOCKET=" + notify.path, UDSD, "-c", str(cfg)],
                         stdout=log, stderr=log)
    try:
        for _ in deadline_loop(10, "systemd-socket-activate to listen"):
            if log_path.read_text().count("Listening on") == 2:
                break
            time.sleep(0.01)
        assert echo(main, b"first") == b"first"
        notify.wait("READY=1")
        # Takes systemd's "extra", then fails on a path that is not a socket.
        cfg.write_text(with_extra + "[listener bad]\npath = %s\nservice = echo\n" % blocker)
        n = len(notify.messages)
        p.send_signal(signal.SIGHUP)
        notify.wait("READY=1", after=notify.wait("RELOADING=1", after=n) + 1)
        assert "exists and is not a socket" in log_path.read_text()
        cfg.write_text(with_extra)
        n = len(notify.messages)
        p.send_signal(signal.SIGHUP)
        i = notify.wait("READY=1", after=notify.wait("RELOADING=1", after=n) + 1)
        assert "reload failed" not in notify.messages[i]
        assert echo(extra, b"extra") == b"extra"
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0
    finally:
        if p.poll() is None:
            p.kill()
        notify.close()
        log.close()
    out = log_path.read_text()
    assert "listener extra: %s (echo)" % extra not in out  # extra came from systemd both times
    assert "Sanitizer" not in out and "runtime error:" not in out, out[-3000:]
