# SPDX-License-Identifier: MIT
"""Pools: each listener served by its own pool's workers, as its pool's user."""
import os
import pwd
import re
import signal

from conftest import connect, deadline_loop, echo, http_get

TESTSVC = "{build}/tests/plugins/testsvc.so"

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
