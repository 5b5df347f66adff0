# SPDX-License-Identifier: MIT
"""Datagram listeners (issue 18): real udsd, real SOCK_DGRAM clients."""
import array
import os
import pwd
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading

import pytest

from conftest import UDSD, Notify, deadline_loop, echo

NOBODY = pwd.getpwnam("nobody")

CONF = """
[daemon]
workers = 2
threads = 2
shutdown_timeout = {timeout}
[listener dg]
path = {path}
type = dgram
service = {service}
{extra}
[listener web]
path = {{tmp}}/http.sock
service = http
"""

TESTSVC = "{build}/tests/plugins/testsvc.so"


def start(udsd_factory, service="echo", extra="", path="{tmp}/dg.sock", timeout="5s"):
    d = udsd_factory(CONF.format(service=service, extra=extra, path=path, timeout=timeout))
    d.dg = path.format(tmp=d.tmp)
    d.http_sock = os.path.join(d.tmp, "http.sock")
    d.start()
    return d


def addr(path):
    return "\0" + path[1:] if path.startswith("@") else path


def client(d, name="client.sock", timeout=10):
    """A datagram socket bound to an address of its own, so that replies can reach it."""
    c = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    c.bind(os.path.join(d.tmp, name))
    c.settimeout(timeout)
    return c


def ask(c, d, payload):
    c.sendto(payload, addr(d.dg))
    return c.recv(1 << 20)


def send_fds(c, payload, fds, to):
    """sendmsg() with SCM_RIGHTS to an address (socket.send_fds() drops the address before 3.12)."""
    c.sendmsg([payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))], 0, to)


def fd_links(pid):
    """What each of pid's descriptors is; one closed meanwhile (a client served) is left out."""
    links = []
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            links.append(os.readlink("/proc/%d/fd/%s" % (pid, fd)))
        except FileNotFoundError:
            pass
    return links


def drain_notify(d):
    """Keep udsd's STATUS= datagrams from filling the test's notify socket (sd_notify would block)."""
    while d.notify._read(0.001) is not None:
        pass


def datagrams(d):
    """The workers' datagram counters, summed, dropped reasons flattened."""
    total = {}
    for w in d.status()["workers"]:
        for k, v in w["datagrams"].items():
            for kk, vv in (v.items() if isinstance(v, dict) else [(k, v)]):
                total[kk] = total.get(kk, 0) + vv
    return total


def wait_counts(d, what, **want):
    """Poll /status until every counter named in want has at least its value; return them all."""
    for _ in deadline_loop(30, what):
        drain_notify(d)
        got = datagrams(d)
        if all(got.get(k, 0) >= v for k, v in want.items()):
            return got


def test_echo_round_trip(udsd_factory):
    d = start(udsd_factory)
    c = client(d)
    assert ask(c, d, b"hello") == b"hello"
    assert ask(c, d, b"") == b""  # an empty datagram is a datagram
    assert ask(c, d, b"x" * 65536) == b"x" * 65536  # the default max_datagram, exactly
    # The reply comes from the listener's path, so that clients that check the source
    # (socat's UNIX-SENDTO does) accept it.
    c.sendto(b"from", d.dg)
    assert c.recvfrom(16) == (b"from", d.dg)
    got = wait_counts(d, "the counters", received=4, replies=4)
    assert got["refused"] == got["oversize"] == got["replies_dropped"] == 0
    listener = [l for l in d.status()["listeners"] if l["name"] == "dg"][0]
    assert listener["type"] == "dgram" and listener["max_datagram"] == 65536
    assert stat.S_IMODE(os.stat(d.dg).st_mode) == 0o660


def test_abstract_listener(udsd_factory):
    d = start(udsd_factory, path="@udsd-test-dgram-%d" % os.getpid())
    c = client(d)
    assert ask(c, d, b"abstract") == b"abstract"


def test_unbound_sender_is_served_but_cannot_be_answered(udsd_factory):
    d = start(udsd_factory, service=TESTSVC)
    u = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    u.sendto(b"nowhere to answer", d.dg)
    got = wait_counts(d, "the reply to be dropped", received=1, replies_dropped=1)
    assert got["replies"] == 0
    # An autobound sender has an abstract address, and is answered there.
    a = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.bind("")
    a.settimeout(10)
    a.sendto(b"addr", d.dg)
    assert a.recv(128) == b"@" + a.getsockname()[1:]
    c = client(d)
    assert ask(c, d, b"addr") == c.getsockname().encode()


def test_socat_example_from_the_readme(udsd_factory):
    if not shutil.which("socat"):
        pytest.skip("socat is not installed")
    d = start(udsd_factory)
    me = os.path.join(d.tmp, "me.sock")
    r = subprocess.run(["socat", "-", "UNIX-SENDTO:%s,bind=%s" % (d.dg, me)], input=b"hello\n",
                       capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"hello\n"


def test_credentials_seen_by_the_service(udsd_factory):
    d = start(udsd_factory, service=TESTSVC)
    c = client(d)
    assert ask(c, d, b"creds") == b"%d %d %d" % (os.getpid(), os.getuid(), os.getgid())


def test_fds_passed_with_a_datagram(udsd_factory, tmp_path):
    d = start(udsd_factory, service="{build}/tests/plugins/testsvc-fds.so")
    c = client(d)
    f = tmp_path / "data"
    f.write_bytes(b"payload")
    with open(f, "rb") as a, open(f, "rb") as b:
        send_fds(c, b"fds", [a.fileno(), b.fileno()], d.dg)
        assert c.recv(256) == b"fds 2: payload payload"
    # The fds the service did not take are closed after the call: the pipe's last
    # writer is udsd's copy, so the reader sees the end of file.
    r, w = os.pipe()
    send_fds(c, b"fds", [w], d.dg)
    os.close(w)
    assert c.recv(256) == b"fds 1: "
    assert select.select([r], [], [], 10)[0] == [r]
    assert os.read(r, 1) == b""
    os.close(r)
    # One the service took is its own to close, and can be taken only once.
    r, w = os.pipe()
    send_fds(c, b"take", [w], d.dg)
    os.close(w)
    assert c.recv(256) == b"took"
    assert select.select([r], [], [], 10)[0] == [r]
    assert os.read(r, 1) == b""
    os.close(r)


def test_fds_to_a_service_that_takes_none_are_refused_or_closed(udsd_factory):
    """As on streams: the kernel refuses them where it has SO_PASSRIGHTS, else udsd closes them."""
    d = start(udsd_factory, service=TESTSVC)
    c = client(d)
    r, w = os.pipe()
    try:
        send_fds(c, b"fds", [w], d.dg)
        os.close(w)
        assert c.recv(256) == b"fds 0:"
        assert select.select([r], [], [], 10)[0] == [r]  # udsd's copy is closed: end of file
        assert os.read(r, 1) == b""
    except PermissionError:  # SO_PASSRIGHTS off on the listener (Linux 6.16)
        os.close(w)
    os.close(r)
    assert ask(c, d, b"still served") == b"still served"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch users")
def test_refused_uid_is_dropped_and_counted(udsd_factory):
    shared = tempfile.mkdtemp(prefix="udsd-dgram-")  # pytest's own directory is 0700
    os.chmod(shared, 0o755)
    try:
        d = start(udsd_factory, service=TESTSVC, path=shared + "/dg.sock",
                  extra="mode = 0666\nallow_uids = root")
        code = ("import socket,sys\n"
                "s=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\n"
                "s.sendto(b'creds',sys.argv[1])\n")
        out = subprocess.run(["setpriv", "--reuid=%d" % NOBODY.pw_uid, "--regid=%d" % NOBODY.pw_gid,
                              "--clear-groups", sys.executable, "-c", code, d.dg],
                             capture_output=True, timeout=20)
        assert out.returncode == 0, out.stderr
        got = wait_counts(d, "the refusal", refused=1)
        assert got["received"] == 1 and got["replies"] == got["replies_dropped"] == 0
        line = [l for l in d.log.splitlines() if "not allowed" in l]
        assert len(line) == 1 and "uid=%d gid=%d" % (NOBODY.pw_uid, NOBODY.pw_gid) in line[0]
        c = client(d)
        assert ask(c, d, b"creds").split()[1] == b"0"  # root is allowed
    finally:
        shutil.rmtree(shared)


def test_100k_datagrams_from_8_senders_none_lost(udsd_factory):
    d = start(udsd_factory, service=TESTSVC)
    n_senders, each = 8, 12500
    errors = []

    def send():
        # A full queue blocks a Unix datagram sender: nothing is dropped, it waits.
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            for i in range(each):
                s.sendto(b"quiet %d" % i, d.dg)
        except OSError as e:
            errors.append(e)
        s.close()

    senders = [threading.Thread(target=send) for _ in range(n_senders)]
    for t in senders:
        t.start()
    while any(t.is_alive() for t in senders):
        drain_notify(d)
        for t in senders:
            t.join(0.05)
    assert errors == []
    got = wait_counts(d, "every datagram", received=n_senders * each)
    assert got["received"] == n_senders * each
    assert got["refused"] == got["oversize"] == got["truncated"] == got["failed"] == 0


def test_oversize_datagram_dropped_and_counted_never_truncated(udsd_factory):
    d = start(udsd_factory, extra="max_datagram = 1k")
    c = client(d)
    c.sendto(b"a" * 1025, d.dg)
    c.sendto(b"b" * 1024, d.dg)
    # The first answer is the second datagram, whole: the first was not cut to 1024 bytes.
    assert c.recv(4096) == b"b" * 1024
    got = wait_counts(d, "the oversize drop", oversize=1)
    assert got["received"] == 2 and got["replies"] == 1
    assert "dropped a datagram of 1025 bytes" in d.log and "larger than max_datagram" in d.log


def test_reload_while_datagrams_flow_loses_none(udsd_factory):
    d = start(udsd_factory)
    stop = threading.Event()
    counts, failures = [0] * 8, []

    def ping(k):
        c = client(d, "ping-%d.sock" % k)
        i = 0
        try:
            while not stop.is_set() or i < 50:
                payload = b"%d:%d" % (k, i)
                c.sendto(payload, d.dg)
                got = c.recv(64)  # a lost datagram would time out here
                if got != payload:
                    failures.append((payload, got))
                    return
                i += 1
                counts[k] = i
        except OSError as e:
            failures.append((k, i, e))
        c.close()

    threads = [threading.Thread(target=ping, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    n = 0
    for gen in (2, 3, 4):
        before = list(counts)
        d.send(signal.SIGHUP)
        n = d.notify.wait("READY=1", after=d.notify.wait("RELOADING=1", after=n) + 1) + 1
        # Traffic flowed across this reload: every client got answers since it began.
        for _ in deadline_loop(30, "answers after reload %d" % gen):
            drain_notify(d)
            if failures or all(c > b + 20 for b, c in zip(before, counts)):
                break
    stop.set()
    for t in threads:
        t.join(60)
    assert failures == []
    st = d.status()
    assert st["generation"] == 4
    # The last generation took over the socket: it answered what followed its READY.
    assert sum(w["datagrams"]["received"] for w in st["workers"] if w["generation"] == 4) > 0
    assert "killing" not in d.log


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch users")
def test_a_dgram_listener_is_read_by_its_pool_alone(udsd_factory):
    d = udsd_factory("[daemon]\nthreads = 2\nshutdown_timeout = 5s\n"
                     "[pool web]\nworkers = 2\n[pool dg]\nuser = nobody\nworkers = 1\nthreads = 3\n"
                     "[listener dg]\npath = {tmp}/dg.sock\ntype = dgram\npool = dg\n"
                     "[listener web]\npath = {tmp}/http.sock\nservice = http\npool = web\n")
    d.dg, d.http_sock = os.path.join(d.tmp, "dg.sock"), os.path.join(d.tmp, "http.sock")
    d.start()
    # An abstract address: the dg pool's workers run as nobody, and may write to it.
    a = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.bind("")
    a.settimeout(10)
    for i in range(200):
        a.sendto(b"%d" % i, d.dg)
        assert a.recv(16) == b"%d" % i
    received, holding = {}, {}
    with open("/proc/net/unix") as f:  # the socket's inode, which every copy of it shares
        inode = next(l.split()[6] for l in f if l.split()[-1] == d.dg)
    for w in d.status()["workers"]:
        received[w["pool"]] = received.get(w["pool"], 0) + w["datagrams"]["received"]
        holding[w["pool"]] = holding.get(w["pool"], 0) + fd_links(w["pid"]).count("socket:[%s]" % inode)
    assert received == {"web": 0, "dg": 200}
    assert holding == {"web": 0, "dg": 3}  # one copy per thread of the dg pool, none elsewhere


def test_respawned_worker_gets_the_socket(udsd_factory):
    d = start(udsd_factory)
    c = client(d)
    assert ask(c, d, b"before") == b"before"
    for pid in d.workers():
        os.kill(pid, signal.SIGKILL)
    # Sent while no worker may be alive: it waits in the socket for the replacements.
    assert ask(c, d, b"after") == b"after"
    assert "killed by signal KILL" in d.log


def test_sigterm_drains_a_dgram_worker_at_once(udsd_factory):
    d = udsd_factory("[daemon]\nworkers = 2\nthreads = 2\nshutdown_timeout = 120s\n"
                     "[listener dg]\npath = {tmp}/dg.sock\ntype = dgram\n")
    d.dg = os.path.join(d.tmp, "dg.sock")
    d.start()
    c = client(d)
    assert ask(c, d, b"last") == b"last"
    d.send(signal.SIGTERM)
    # Nothing holds a dgram-only worker: it is done long before shutdown_timeout.
    assert d.proc.wait(60) == 0
    assert "after the shutdown timeout" not in d.log
    assert d.log.count("exited with status 0") == 2
    assert not os.path.exists(d.dg)


def test_a_dgram_listener_needs_on_datagram(udsd_factory):
    d = udsd_factory("[listener dg]\npath = {sock}\ntype = dgram\nservice = http\n")
    r = d.run_check("-t")
    assert r.returncode == 1
    assert "%s:4: service: http has no on_datagram, so it cannot serve a dgram listener" % (
        d.conf_path) in r.stderr
    # A service that does not say UDSD_SERVICE_DATAGRAMS has none, whatever its table holds.
    d.write_config("[listener dg]\npath = {sock}\ntype = dgram\n"
                   "service = {build}/tests/plugins/testsvc-noflag.so\n")
    r = d.run_check("-t")
    assert r.returncode == 1 and "testsvc has no on_datagram" in r.stderr
    d.write_config("[listener dg]\npath = {sock}\ntype = dgram\nidle_timeout = 5s\n")
    r = d.run_check("-t")
    assert r.returncode == 1 and ":4: idle_timeout applies to connections" in r.stderr


def test_a_service_without_datagrams_still_serves_streams(udsd_factory):
    d = udsd_factory("[daemon]\nworkers = 1\n[listener a]\npath = {sock}\n"
                     "service = {build}/tests/plugins/testsvc-noflag.so\n")
    d.start()
    assert echo(d.sock, b"streams") == b"streams"


def test_a_symlinked_dgram_path_is_refused(udsd_factory, tmp_path):
    os.mkdir(tmp_path / "real")
    os.symlink(tmp_path / "real", tmp_path / "link")
    d = udsd_factory("[listener dg]\npath = {tmp}/link/dg.sock\ntype = dgram\n")
    r = d.run_check()
    assert r.returncode == 1
    assert "goes through a symlink; a dgram socket answers from its path" in r.stderr
    assert os.listdir(tmp_path / "real") == []


def test_socket_activation_with_listen_datagram(tmp_path):
    sock = str(tmp_path / "act.sock")
    cfg = tmp_path / "act.conf"
    cfg.write_text("[daemon]\nworkers = 1\nthreads = 2\n"
                   "[listener dg]\npath = %s\ntype = dgram\n" % sock)
    notify = Notify(str(tmp_path / "notify.sock"))
    p = subprocess.Popen(["systemd-socket-activate", "--datagram", "-l", sock, "--fdname=dg",
                          "-E", "NOTIFY_SOCKET=" + notify.path, UDSD, "-c", str(cfg)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert b"Listening on" in p.stderr.readline()
        # The first datagram starts udsd, waits in systemd's socket, and is answered.
        c = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        c.bind(str(tmp_path / "c.sock"))
        c.settimeout(30)
        c.sendto(b"first", sock)
        assert c.recv(64) == b"first"
        notify.wait("READY=1")
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0
        assert stat.S_ISSOCK(os.lstat(sock).st_mode)  # systemd's: left in place
    finally:
        if p.poll() is None:
            p.kill()
        notify.close()
    assert "listener dg: %s (echo), from systemd" % sock in p.stderr.read().decode()


def test_datagram_traffic_holds_off_the_idle_exit(tmp_path):
    """exit_idle_time counts datagrams as traffic: no connection is open while they flow."""
    sock = str(tmp_path / "act.sock")
    cfg = tmp_path / "act.conf"
    cfg.write_text("[daemon]\nworkers = 1\nthreads = 1\nexit_idle_time = 300ms\n"
                   "[listener dg]\npath = %s\ntype = dgram\n" % sock)
    notify = Notify(str(tmp_path / "notify.sock"))
    p = subprocess.Popen(["systemd-socket-activate", "--datagram", "-l", sock, "--fdname=dg",
                          "-E", "NOTIFY_SOCKET=" + notify.path, UDSD, "-c", str(cfg)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stop, failures = threading.Event(), []

    def ping():
        c = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        c.bind(str(tmp_path / "c.sock"))
        c.settimeout(10)
        try:
            while not stop.is_set():
                c.sendto(b"ping", sock)
                assert c.recv(16) == b"ping"
        except (OSError, AssertionError) as e:
            failures.append(e)

    try:
        assert b"Listening on" in p.stderr.readline()
        t = threading.Thread(target=ping)
        t.start()
        # Four STATUS= updates, a second apart at least, each with more datagrams: over ten
        # times exit_idle_time of datagram traffic, and udsd is still there.
        counts = []
        for _ in deadline_loop(60, "four STATUS= updates under datagram traffic"):
            m = notify._read(1)
            assert m is None or "STOPPING=1" not in m.split("\n"), m
            if m and " datagrams" in m:
                counts.append(int(m.rsplit(" datagrams", 1)[0].rsplit(" ", 1)[1]))
            if len(counts) >= 4:
                break
        assert counts == sorted(set(counts)) and p.poll() is None
        stop.set()
        t.join(30)
        assert failures == []
        # Traffic over: it leaves by itself.
        assert p.wait(30) == 0
        assert "idle: stopping" in p.stderr.read().decode()
    finally:
        stop.set()
        if p.poll() is None:
            p.kill()
        notify.close()


def test_socket_activation_type_mismatch_is_clear(tmp_path):
    sock = str(tmp_path / "act.sock")
    cfg = tmp_path / "act.conf"
    cfg.write_text("[listener dg]\npath = %s\ntype = dgram\n" % sock)
    p = subprocess.Popen(["systemd-socket-activate", "-l", sock, "--fdname=dg", UDSD, "-c", str(cfg)],
                         stderr=subprocess.PIPE)
    try:
        assert b"Listening on" in p.stderr.readline()
        c = socket.socket(socket.AF_UNIX)
        c.connect(sock)
        assert p.wait(30) == 1
        assert 'fd 3 "dg": not a bound Unix dgram socket (listener dg)' in p.stderr.read().decode()
        c.close()
    finally:
        if p.poll() is None:
            p.kill()
