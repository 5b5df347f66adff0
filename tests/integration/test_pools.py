# SPDX-License-Identifier: MIT
"""Pools: each listener served by its own pool's workers, as its pool's user."""
import os
import pwd
import re
import shutil
import signal
import tempfile

import pytest

from conftest import BUILD, connect, public_copy, deadline_loop, echo, http_get, ping


# udsd opens a pool's plugin as that pool's user: the copies are theirs to read.
PLUGINS = public_copy(*(os.path.join(BUILD, "tests", "plugins", n) for n in ("testsvc.so", "interpose.so")))
TESTSVC = PLUGINS + "/testsvc.so"

TWO_POOLS = """
[daemon]
threads = 2
shutdown_timeout = 5s
[pool a]
user = nobody
workers = 2
[pool b]
user = daemon
workers = 1
threads = 1
[listener ta]
path = {tmp}/a.sock
service = %(svc)s
pool = a
[listener tb]
path = {tmp}/b.sock
service = %(svc)s
pool = b
[listener web]
path = {tmp}/http.sock
service = http
pool = a
""" % {"svc": TESTSVC}


def proc_uid(pid):
    with open("/proc/%d/status" % pid) as f:
        return next(int(l.split()[1]) for l in f if l.startswith("Uid:"))


def whoami(path):
    s = connect(path)
    s.sendall(b"whoami")
    line = s.makefile("rb").readline().decode()
    s.close()
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}


def pool_pids(st, name):
    return {w["pid"] for w in st["workers"] if w["pool"] == name}


def start_two_pools(udsd_factory):
    d = udsd_factory(TWO_POOLS)
    d.http_sock = os.path.join(d.tmp, "http.sock")
    d.start()
    return d


def test_each_listener_is_served_by_its_pool_as_its_user(udsd_factory):
    d = start_two_pools(udsd_factory)
    st = d.status()
    assert [(p["name"], p["user"], p["workers"]) for p in st["pools"]] == \
        [("a", "nobody", 2), ("b", "daemon", 1)]
    a, b = pool_pids(st, "a"), pool_pids(st, "b")
    assert len(a) == 2 and len(b) == 1 and set(d.workers()) == a | b
    uids = {"a": pwd.getpwnam("nobody").pw_uid, "b": pwd.getpwnam("daemon").pw_uid}
    for pid in a:
        assert proc_uid(pid) == uids["a"]
    for pid in b:
        assert proc_uid(pid) == uids["b"]
    for name, pids in (("a", a), ("b", b)):
        seen = set()
        for _ in range(20):
            w = whoami(os.path.join(d.tmp, name + ".sock"))
            assert w["pid"] in pids, (name, w, pids)
            assert w["uid"] == uids[name]
            # The client as the service sees it: this test process, as root.
            assert (w["peer_pid"], w["peer_uid"]) == (os.getpid(), 0)
            seen.add(w["pid"])
        assert seen <= pids
    msg = d.notify.wait_for(lambda m: "; pools: a 2, b 1" in m, "STATUS= per pool")
    assert "STATUS=3 workers (generation 1)" in msg


def test_reload_adds_removes_and_resizes_pools(udsd_factory):
    d = start_two_pools(udsd_factory)
    old = set(d.workers())
    # b goes, c comes (its listener with it), a grows to 3.
    d.write_config(TWO_POOLS.replace("[pool b]", "[pool c]").replace("pool = b", "pool = c")
                   .replace("workers = 2", "workers = 3"))
    n = len(d.notify.messages)
    d.send(signal.SIGHUP)
    d.notify.wait("READY=1", after=d.notify.wait("RELOADING=1", after=n) + 1)
    st = d.status(d.http_sock)
    assert st["generation"] == 2
    assert [(p["name"], p["workers"]) for p in st["pools"]] == [("a", 3), ("c", 1)]
    c = pool_pids(st, "c")
    assert whoami(os.path.join(d.tmp, "b.sock"))["pid"] in c
    for _ in deadline_loop(20, "the old generation to drain"):
        if not old & set(d.workers()):
            break


def test_a_listener_without_pool_goes_to_the_default_pool(udsd_factory):
    d = udsd_factory(TWO_POOLS.replace("service = http\npool = a", "service = http"))
    d.http_sock = os.path.join(d.tmp, "http.sock")
    d.start()
    st = d.status()
    names = [p["name"] for p in st["pools"]]
    assert names == ["a", "b", "default"]
    default = next(p for p in st["pools"] if p["name"] == "default")
    assert default["listeners"] == ["web"] and default["user"] is None
    pids = pool_pids(st, "default")
    assert len(pids) == 2 and all(proc_uid(p) == 0 for p in pids)


BAD = [
    # (config, line, message)
    ("[listener a]\npath = {sock}\npool = nope\n", 3, "pool: no [pool nope] section"),
    ("[pool idle]\nworkers = 1\n[listener a]\npath = {sock}\n", 1,
     "[pool idle] serves no listener (a listener names it with pool = idle)"),
    ("[pool p]\nuser = no-such-user-udsd\n[listener a]\npath = {sock}\npool = p\n", 2,
     "user: unknown user 'no-such-user-udsd'"),
    ("[pool p]\nrequest_timeout = 500ms\n[listener a]\npath = {sock}\npool = p\n", 2,
     "request_timeout: '500ms' is not a duration in 1s..1h"),
    ("[daemon]\nrequest_timeout = 0\n[listener a]\npath = {sock}\n", 2,
     "request_timeout: '0' is not a duration in 1s..1h"),
]


def test_bad_pool_configs_name_the_file_and_line(udsd_factory):
    for i, (conf, line, msg) in enumerate(BAD):
        d = udsd_factory(conf, name="bad%d" % i)
        for args in (("-t",), ()):
            r = d.run_check(*args)
            assert r.returncode == 1, r
            assert "%s:%d: %s" % (d.conf_path, line, msg) in r.stderr, r.stderr
            assert not os.path.exists(d.sock)


PLUGIN_POOL = """
[pool p]
user = nobody
workers = 1
threads = 2
[listener t]
path = {sock}
service = %s
pool = p
uid_log = %s
%s
"""


def shared_dir():
    """A directory the pool's user may write in (pytest's own are root's, mode 0700)."""
    d = tempfile.mkdtemp(prefix="udsd-pools-")
    os.chmod(d, 0o1777)
    return d


def test_plugin_code_never_runs_as_root(udsd_factory):
    tmp = shared_dir()
    try:
        log = os.path.join(tmp, "uids.log")
        d = udsd_factory(PLUGIN_POOL % (TESTSVC, log, ""))
        r = d.run_check("-t")
        assert r.returncode == 0, r.stderr
        nobody = pwd.getpwnam("nobody").pw_uid
        with open(log) as f:
            assert f.read() == "check %d\n" % nobody  # udsd -t checked as the pool's user
        d.start()
        s = connect(d.sock)
        s.sendall(b"uids")
        # check() and init() in the worker, and on_data: all as nobody.
        assert s.recv(100) == b"check=%d init=%d data=%d\n" % (nobody, nobody, nobody)
        # The master never loaded the plugin at all.
        with open("/proc/%d/maps" % d.proc.pid) as f:
            assert "testsvc.so" not in f.read()
        n = len(d.notify.messages)
        d.send(signal.SIGHUP)
        d.notify.wait("READY=1", after=d.notify.wait("RELOADING=1", after=n) + 1)
        with open(log) as f:
            checks = f.read().split("\n")[:-1]
        assert len(checks) >= 3  # -t, start, reload: each in a child as nobody
        assert set(checks) == {"check %d" % nobody}
    finally:
        shutil.rmtree(tmp)


def test_a_failing_check_fails_t_start_and_reload_with_its_line(udsd_factory):
    d = udsd_factory(PLUGIN_POOL % (TESTSVC, "/dev/null", "fail_check = yes"))
    nobody = pwd.getpwnam("nobody").pw_uid
    want = "%s:11: fail_check: failing as asked, as uid %d" % (d.conf_path, nobody)
    for args in (("-t",), ()):
        r = d.run_check(*args)
        assert r.returncode == 1 and want in r.stderr, r.stderr
        assert not os.path.exists(d.sock)
    d.write_config(PLUGIN_POOL % (TESTSVC, "/dev/null", ""))
    d.start()
    pids = set(d.workers())
    d.write_config(PLUGIN_POOL % (TESTSVC, "/dev/null", "fail_check = yes"))
    n = len(d.notify.messages)
    d.send(signal.SIGHUP)
    d.notify.wait("READY=1", after=d.notify.wait("RELOADING=1", after=n) + 1)
    assert want in d.log and "reload failed; still serving generation 1" in d.log
    assert set(d.workers()) == pids
    assert echo(d.sock, b"old") == b"old"


def test_a_plugin_global_named_like_udsd_is_its_own(udsd_factory):
    """With export_dynamic, the plugin's "status" was udsd's: it read 0 where it wrote 7."""
    d = udsd_factory("[daemon]\nworkers = 1\nthreads = 1\n[listener i]\npath = {sock}\n"
                     "service = " + PLUGINS + "/interpose.so\n")
    d.start()
    s = connect(d.sock)
    s.sendall(b"show")
    assert s.recv(200) == b"status=7 status_config=plugin now_usec=42 log_msg=43\n"


def test_udsd_exports_the_service_api_only():
    import subprocess
    from conftest import UDSD
    out = subprocess.run(["nm", "-D", "--defined-only", UDSD], capture_output=True, text=True,
                         check=True).stdout
    names = [l.split()[-1] for l in out.splitlines() if l.strip()]
    # libc's copy-relocated variables (stderr@GLIBC_2.2.5) and a sanitizer's own aside.
    ours = [n for n in names if "@" not in n and not n.startswith("__") and n != "_IO_stdin_used"]
    assert ours and all(n.startswith("udsd_") for n in ours), ours
    with open(os.path.join(os.path.dirname(__file__), "..", "..", "lib", "udsd.h")) as f:
        api = set(re.findall(r"^UDSD_API [^(]*?(udsd_\w+)\(", f.read(), re.M))
    assert set(ours) == api


DEADLINE = """
[daemon]
shutdown_timeout = 30s
[pool slow]
workers = 1
threads = 2
request_timeout = 1s
[listener t]
path = {sock}
service = %s
pool = slow
[listener web]
path = {tmp}/http.sock
service = http
pool = slow
debug_sleep = 60s
""" % TESTSVC


def wait_log(d, text, what, timeout=20):
    for _ in deadline_loop(timeout, what):
        if text in d.log:
            return


def test_a_stuck_callback_is_logged_answered_and_its_worker_replaced(udsd_factory):
    d = udsd_factory(DEADLINE)
    d.start()
    (old,) = d.workers()
    bystander = connect(d.sock)
    bystander.sendall(b"hi")
    assert bystander.recv(2) == b"hi"
    stuck = connect(d.sock, timeout=30)
    stuck.sendall(b"sleep 60")  # the other thread: the least loaded one
    # The master names the listener and the service; the thread, its client and its stack.
    wait_log(d, "slowlog: end of backtrace", "the stuck thread's backtrace")
    assert re.search(r"slowlog: worker %d thread \d has run one callback of listener t "
                     r"\(service testsvc\) for \d+ms, past request_timeout 1000ms" % old, d.log)
    assert re.search(r"slowlog: thread \d stuck in on_data of listener t \(service testsvc\) "
                     r"for client pid=%d uid=0; backtrace:" % os.getpid(), d.log)
    trace = d.log.split("backtrace:\n", 1)[1].split("slowlog: end of backtrace")[0]
    assert "testsvc.so(" in trace and "nanosleep" in trace, trace
    # Its client got the service's last word, then the end.
    assert recv_until_eof(stuck) == b"testsvc: too slow\n"
    # A replacement serves new clients; the stuck worker's other client is still served.
    for _ in deadline_loop(20, "the replacement to serve"):
        if len(d.workers()) == 2:
            break
    new = next(p for p in d.workers() if p != old)
    wait_log(d, "worker %d serves in place of worker %d" % (new, old), "the replacement")
    assert whoami(d.sock)["pid"] == new
    bystander.sendall(b"still here")
    assert bystander.recv(10) == b"still here"
    # Once that client is done, the stuck worker goes.
    bystander.close()
    wait_log(d, "worker %d: its other clients are done; killing it" % old, "the stuck worker's end")
    for _ in deadline_loop(20, "the stuck worker to be reaped"):
        if d.workers() == [new]:
            break
    assert echo(d.sock, b"after") == b"after"


BATCH = """
[daemon]
shutdown_timeout = 30s
[pool slow]
workers = 1
threads = 1
request_timeout = 3s
[listener t]
path = {sock}
service = %s
pool = slow
""" % TESTSVC


def test_callbacks_that_each_keep_within_request_timeout_are_not_stuck(udsd_factory):
    """request_timeout is per callback, not per event-loop round.

    A thread stamped each callback's start with the time its epoll round
    began: five clients whose one-second requests queued up behind each other
    made the last look four seconds old, past a 3s request_timeout, and the
    worker was replaced and that client cut with the deadline reply.
    """
    d = udsd_factory(BATCH)
    d.start()
    (pid,) = d.workers()
    clients = [connect(d.sock, timeout=60) for _ in range(5)]
    for s in clients:
        s.sendall(b"hi")
        assert s.recv(2) == b"hi"
    for s in clients:  # the first holds the thread; the others arrive meanwhile, one round
        s.sendall(b"sleep 1")
    for s in clients:
        assert s.makefile("rb").readline() == b"slept\n"
    assert "slowlog" not in d.log
    assert d.workers() == [pid]


def recv_until_eof(s):
    data = b""
    while True:
        b = s.recv(4096)
        if not b:
            return data
        data += b


def test_http_answers_503_when_a_request_overruns_request_timeout(udsd_factory):
    d = udsd_factory(DEADLINE)
    d.start()
    (old,) = d.workers()
    status, headers, body = http_get(os.path.join(d.tmp, "http.sock"), "/debug/sleep", timeout=30)
    assert (status, headers["connection"]) == (503, "close")
    assert body == b"503 Service Unavailable: the request took too long\n"
    wait_log(d, "slowlog: end of backtrace; the client got the service's deadline reply",
             "the stuck thread to say its client got the 503")
    for _ in deadline_loop(20, "the stuck worker to be replaced and killed"):
        if len(d.workers()) == 1 and d.workers() != [old]:
            break
    assert http_get(os.path.join(d.tmp, "http.sock"), "/healthz")[2] == b"ok\n"


RECYCLE = """
[daemon]
shutdown_timeout = 10s
[pool web]
workers = 2
threads = 2
max_requests = 100
max_requests_jitter = 20
[listener web]
path = {tmp}/http.sock
service = http
pool = web
"""


def test_max_requests_recycles_one_worker_at_a_time_without_client_errors(udsd_factory):
    import threading
    d = udsd_factory(RECYCLE)
    d.start()
    path = os.path.join(d.tmp, "http.sock")
    errors, requests, stop = [], [], threading.Event()

    def client():
        while not stop.is_set():
            try:
                status, _, body = http_get(path, "/hello")
                if status != 200 or b'"url":"/hello"' not in body:
                    errors.append((status, body))
            except OSError as e:
                errors.append(repr(e))
            requests.append(1)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        # Load until five workers have been replaced and are gone.
        for _ in deadline_loop(120, "five recycled workers"):
            if len(re.findall(r"worker \d+ has served", d.log)) >= 6:
                break
            d.notify._read(0.2)  # keep the notify socket drained meanwhile
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert errors == [] and len(requests) > 500
    lines = d.log.splitlines()
    started = [(i, int(m.group(1))) for i, l in enumerate(lines)
               for m in [re.search(r"worker (\d+) has served \d+ requests", l)] if m]
    for k, (i, pid) in enumerate(started[:5]):
        # Its replacement serves before it drains, and it is gone before the next one starts.
        served = next(j for j, l in enumerate(lines) if "serves in place of worker %d," % pid in l)
        gone = next(j for j, l in enumerate(lines) if "worker %d exited with status 0" % pid in l)
        assert i < served < gone < started[k + 1][0], "two workers of the pool recycled at once"
    for m in re.finditer(r"has served (\d+) requests \(max_requests (\d+)\)", d.log):
        assert 100 <= int(m.group(2)) <= 120 and int(m.group(1)) >= int(m.group(2))


def test_max_rss_recycles_a_worker_that_grew(udsd_factory):
    d = udsd_factory(RECYCLE.replace("max_requests = 100\nmax_requests_jitter = 20",
                                     "workers = 1\nmax_rss = 4k").replace("workers = 2\n", ""))
    d.start()
    wait_log(d, "KiB (max_rss 4 KiB): starting its replacement", "max_rss to replace a worker")
    old = int(re.search(r"worker (\d+) uses \d+ KiB \(max_rss 4 KiB\)", d.log).group(1))
    wait_log(d, "serves in place of worker %d" % old, "its replacement")
    assert http_get(os.path.join(d.tmp, "http.sock"), "/healthz")[2] == b"ok\n"


POLICY = """
[daemon]
workers = 1
threads = 2
[listener t]
path = {sock}
service = %s
max_connections_per_uid = 2
[listener units]
path = {tmp}/units.sock
service = echo
allow_units = allowed.service
[listener web]
path = {tmp}/http.sock
service = http
""" % TESTSVC


def served(path):
    """Whether a new client is served (echoed) or refused (closed at once)."""
    s = connect(path)
    try:
        s.sendall(b"ping")
        return s.recv(4) == b"ping"
    except OSError:
        return False
    finally:
        s.close()


def test_max_connections_per_uid(udsd_factory):
    import subprocess
    tmp = shared_dir()  # where nobody may connect too
    try:
        d = udsd_factory(POLICY.replace("path = {sock}", "path = %s/t.sock\nmode = 0666" % tmp))
        d.sock = os.path.join(tmp, "t.sock")
        d.start()
        per_uid_limit(d)
    finally:
        shutil.rmtree(tmp)


def per_uid_limit(d):
    import subprocess
    held = [connect(d.sock) for _ in range(2)]
    for s in held:
        s.sendall(b"x")
        assert s.recv(1) == b"x"
    assert not served(d.sock)  # a third of root's: refused
    # Another user's client counts on its own.
    nobody = pwd.getpwnam("nobody")
    code = ("import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]);"
            "s.sendall(b'hi'); assert s.recv(2) == b'hi'")
    subprocess.run(["setpriv", "--reuid=%d" % nobody.pw_uid, "--regid=%d" % nobody.pw_gid,
                    "--clear-groups", "/usr/bin/python3", "-c", code, d.sock], check=True, timeout=30)
    st = d.status(os.path.join(d.tmp, "http.sock"))
    assert st["refused"] == 1 and st["refused_by"]["max_connections_per_uid"] == 1
    assert "refused client uid=0 gid=0 pid=%d (max_connections_per_uid 2 reached)" % os.getpid() \
        in d.log
    # One of root's closes: the worker tells the master, and root may connect again.
    held.pop().close()
    for _ in deadline_loop(10, "the closed client to be counted out"):
        if served(d.sock):
            break


def test_allow_units_refuses_a_client_of_another_unit(udsd_factory):
    d = udsd_factory(POLICY)
    d.start()
    for _ in range(3):
        assert not served(os.path.join(d.tmp, "units.sock"))
    st = d.status(os.path.join(d.tmp, "http.sock"))
    assert st["refused_by"] == {"allow_uids": 0, "allow_units": 3, "max_connections_per_uid": 0}
    # Logged once a second at most: the first of the burst, not three lines.
    assert d.log.count("is not in allow_units") == 1
    assert echo(d.sock, b"others") == b"others"


PER_UID_ECHO = """
[daemon]
workers = 1
threads = 2
shutdown_timeout = 5s
[listener main]
path = {sock}
service = echo
max_connections_per_uid = 2
[listener web]
path = {tmp}/http.sock
service = http
"""


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGUSR2], ids=["reload", "upgrade"])
def test_max_connections_per_uid_holds_across_a_reload(udsd_factory, sig):
    """A reload (or a binary upgrade) hands each client to the new generation: it stays counted.

    The old worker told the master each handed-back client was gone, and the
    master handed it on uncounted: after one SIGHUP a uid held twice its limit.
    An upgrade's new image carried no counts at all.
    """
    d = udsd_factory(PER_UID_ECHO)
    d.start()
    held = [connect(d.sock) for _ in range(2)]
    for s in held:
        ping(s)
    assert not served(d.sock)
    old = d.workers()
    n = len(d.notify.messages)
    d.send(sig)
    d.notify.wait("READY=1", after=d.notify.wait("RELOADING=1", after=n) + 1)
    for _ in deadline_loop(30, "the old worker to hand its clients over and exit"):
        if not set(old) & set(d.workers()):
            break
    for s in held:
        ping(s)  # moved, not cut
    assert not served(d.sock), "a third client of the same uid was admitted after a reload"
    held.pop().close()
    for _ in deadline_loop(10, "the closed client to be counted out"):
        if served(d.sock):
            break


FORGE = """
[daemon]
threads = 2
shutdown_timeout = 5s
[pool a]
user = nobody
workers = 1
[pool b]
user = daemon
workers = 1
[listener ta]
path = {tmp}/a.sock
service = %s
pool = a
[listener eb]
path = {tmp}/b.sock
service = echo
pool = b
allow_uids = root
""" % TESTSVC


def test_a_worker_cannot_hand_a_socket_of_its_own_to_another_pool(udsd_factory):
    """A compromised plugin must stay in its pool.

    A worker hands clients back to the master only when it drains; the master
    took such a hand-back from any worker, for any listener, and gave it to
    that listener's pool: pool a's plugin (as nobody) had pool b serve a
    socket of its own making, past eb's allow_uids = root.
    """
    d = udsd_factory(FORGE)
    d.start()
    s = connect(os.path.join(d.tmp, "a.sock"), timeout=30)
    s.sendall(b"forge 1")  # listener eb, pool b
    answer = s.makefile("rb").readline().decode()
    s.close()
    assert answer == "forged: closed\n", answer
    assert "handed back a client it was not asked for" in d.log
    assert echo(os.path.join(d.tmp, "b.sock"), b"still") == b"still"


def test_plugin_code_as_root_is_said(udsd_factory):
    """A pool without user runs its plugins as root: the operator is told, with where.

    Plugin code never runs in the master, but it runs with its pool's
    credentials, and a pool without user keeps root's: that went unsaid.
    """
    d = udsd_factory(BATCH)
    r = d.run_check("-t")
    assert r.returncode == 0, r.stderr
    line = "pool slow runs plugin code as root (%s:10: %s)" % (d.conf_path, TESTSVC)
    assert line in r.stderr, r.stderr
    d.start()
    assert line in d.log
    # A pool with a user says nothing of the kind.
    t = udsd_factory(TWO_POOLS, name="pools")
    t.http_sock = os.path.join(t.tmp, "http.sock")
    assert "as root" not in t.run_check("-t").stderr
