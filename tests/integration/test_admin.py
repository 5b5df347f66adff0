# SPDX-License-Identifier: MIT
"""The admin socket and udsctl (issue 16): status, metrics, a synchronous reload and upgrade.

The metrics are read by a real parser (python3-prometheus-client's OpenMetrics parser, which
rejects what the format does not allow); the backlog gauge is the kernel's own count, read
by udsd through sock_diag, of clients that really wait in a listener's accept queue.
"""
import json
import os
import re
import signal
import socket
import stat
import subprocess

from prometheus_client.openmetrics.parser import text_string_to_metric_families

import conftest
from conftest import connect, deadline_loop, http_get, ping
from test_upgrade import exe, install  # noqa: F401  (exe is a fixture)

CONF = """
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
metrics_path = /metrics
"""


def start(udsd_factory, conf=CONF):
    d = udsd_factory(conf)
    d.http_sock = os.path.join(d.tmp, "http.sock")
    d.start()
    return d


def metrics(text):
    """{(name, sorted labels): value} from an OpenMetrics exposition, which must parse."""
    assert text.endswith("# EOF\n")
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def sample(m, name, **labels):
    return m[(name, tuple(sorted(labels.items())))]


def scrape(d):
    rc, out, err = d.udsctl("metrics")
    assert rc == 0, err
    return metrics(out)


def test_status_table_and_json(udsd_factory):
    d = start(udsd_factory)
    clients = [connect(d.sock) for _ in range(3)]
    for c in clients:
        ping(c)
    rc, out, err = d.udsctl("status")
    assert rc == 0, err
    print(out)
    assert re.match(r"udsd \S+, pid %d, up \d+s, generation 1\n" % d.proc.pid, out)
    assert "reloads: 0 ok, 0 failed\n" in out
    # The listener's row: 3 accepted, 3 handed to workers, none refused, an empty backlog.
    assert re.search(r"^main +%s +3 +3 +0 +0/4096$" % re.escape(d.sock), out, re.M), out
    assert re.search(r"^default +2 +0 +0 +0 +0$", out, re.M), out
    rows = re.findall(r"^ +1 default +(\d) +(\d+) +(\d+) +(\d+)", out, re.M)
    assert sorted(int(r[1]) for r in rows) == sorted(d.workers())
    assert sum(int(r[2]) for r in rows) == 3  # open

    rc, out, err = d.udsctl("status", "--json")
    assert rc == 0, err
    st = json.loads(out)
    assert st["master_pid"] == d.proc.pid and st["generation"] == 1
    assert sorted(w["pid"] for w in st["workers"]) == sorted(d.workers())
    assert sum(w["open"] for w in st["workers"]) == 3
    assert all(w["pool"] == "default" and w["in_flight"] == 0 for w in st["workers"])
    main = [l for l in st["listeners"] if l["name"] == "main"][0]
    assert (main["accepted"], main["handoffs"], main["backlog"], main["backlog_limit"]) == (3, 3, 0, 4096)
    assert st["pools"][0]["crashes"] == 0
    assert st["reloads"] == {"ok": 0, "failed": 0} and st["last_reload_error"] is None
    # The same JSON as the http listener's /status.
    assert set(d.status(d.http_sock)) == set(st)
    for c in clients:
        c.close()


def test_metrics_parse_and_count(udsd_factory):
    d = start(udsd_factory)
    for _ in range(4):
        c = connect(d.sock)
        ping(c)
        c.close()
    # echo counts a client served once the worker saw it close.
    for _ in deadline_loop(30, "four clients served"):
        m = scrape(d)
        if sum(v for (n, _), v in m.items() if n == "udsd_worker_served_total") == 4:
            break
    assert sample(m, "udsd_listener_accepted_total", listener="main") == 4
    assert sample(m, "udsd_listener_handoffs_total", listener="main") == 4
    assert sample(m, "udsd_listener_refused_total", listener="main", reason="allow_uids") == 0
    assert sample(m, "udsd_listener_backlog", listener="main") == 0
    assert sample(m, "udsd_listener_backlog_limit", listener="main") == 4096
    assert sample(m, "udsd_pool_workers", pool="default") == 2
    assert sample(m, "udsd_generation") == 1
    assert sample(m, "udsd_generation_workers", generation="1") == 2
    pids = sorted(int(dict(l)["pid"]) for (n, l) in m if n == "udsd_worker_open")
    assert pids == sorted(d.workers())

    # The http listener's metrics_path: the same families, with OpenMetrics' content type.
    status, headers, body = http_get(d.http_sock, "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    web = metrics(body.decode())
    assert {n for n, _ in web} == {n for n, _ in m}
    assert sample(web, "udsd_listener_accepted_total", listener="main") == 4


def test_names_the_status_area_cannot_hold_are_refused(udsd_factory):
    """Names longer than the status area's slots would be cut there, and two collide in metrics."""
    d = start(udsd_factory)
    with open(d.conf_path) as f:
        good = f.read()
    long = "x" * 70
    with open(d.conf_path, "a") as f:
        f.write("[listener %s1]\npath = {0}/l1.sock\nservice = echo\n"
                "[listener %s2]\npath = {0}/l2.sock\nservice = echo\n".format(d.tmp)
                % (long, long))
    line = good.count("\n") + 1
    rc, out, err = d.udsctl("reload")
    assert (rc, err) == (1, "udsctl: reload failed: %s:%d: [listener NAME]: a name longer than 63 "
                            "characters\n" % (d.conf_path, line)), err
    with open(d.conf_path, "w") as f:
        f.write(good + "[pool %s]\nworkers = 1\n" % long)
    rc, out, err = d.udsctl("reload")
    assert rc == 1 and "%s:%d: [pool NAME]: not a name (at most 63 " % (d.conf_path, line) in err, err
    # The longest name that fits, and metrics that parse.
    fits = "y" * 63
    with open(d.conf_path, "w") as f:
        f.write(good + "[listener %s]\npath = %s/l.sock\nservice = echo\npool = %s\n"
                "[pool %s]\nworkers = 1\n" % (fits, d.tmp, fits, fits))
    rc, out, err = d.udsctl("reload")
    assert rc == 0, err
    m = scrape(d)
    assert sample(m, "udsd_listener_accepted_total", listener=fits) == 0
    assert sample(m, "udsd_pool_workers", pool=fits) == 1


def test_status_and_metrics_paths_are_configurable(udsd_factory):
    d = start(udsd_factory, CONF.replace("metrics_path = /metrics", "status_path = off\n"
                                         "[listener web2]\npath = {tmp}/http2.sock\nservice = http\n"
                                         "status_path = /_/status\nmetrics_path = /_/metrics"))
    web2 = os.path.join(d.tmp, "http2.sock")
    # A path that is off is just another URL: the greeting, not the counters.
    for path, where in (("/status", d.http_sock), ("/metrics", d.http_sock), ("/status", web2)):
        assert json.loads(http_get(where, path)[2])["url"] == path
    status, _, body = http_get(web2, "/_/status")
    assert status == 200 and json.loads(body)["master_pid"] == d.proc.pid
    status, _, body = http_get(web2, "/_/metrics")
    assert status == 200 and ("udsd_generation", ()) in metrics(body.decode())
    bad = udsd_factory(CONF.replace("/metrics", "metrics"), name="bad")
    p = bad.run_check("-t")
    assert p.returncode == 1 and "metrics_path: 'metrics' must start with '/', or be off" in p.stderr


def test_backlog_gauge_counts_clients_the_kernel_holds(udsd_factory):
    """One worker that holds one client: the master stops accepting, the rest wait in the kernel."""
    d = start(udsd_factory, CONF.replace("workers = 2\nthreads = 2", "workers = 1\nthreads = 1\n"
                                         "max_connections = 1"))
    first = connect(d.sock)
    ping(first)
    waiting = [connect(d.sock) for _ in range(5)]
    for _ in deadline_loop(30, "five clients in the backlog"):
        m = scrape(d)
        if sample(m, "udsd_listener_backlog", listener="main") == 5:
            break
    assert sample(m, "udsd_listener_accepted_total", listener="main") == 1
    assert sample(m, "udsd_pool_accept_pauses_total", pool="default") >= 1
    rc, out, _ = d.udsctl("status")
    assert re.search(r"^main .* 5/4096$", out, re.M), out
    # The worker's client leaves: the waiting ones are accepted, one at a time, and served.
    first.close()
    for c in waiting:
        ping(c)
        c.close()
    for _ in deadline_loop(30, "an empty backlog"):
        if sample(scrape(d), "udsd_listener_backlog", listener="main") == 0:
            break


def test_reload_returns_its_outcome(udsd_factory):
    d = start(udsd_factory)
    c = connect(d.sock)
    ping(c)
    with open(d.conf_path) as f:
        good = f.read()
    with open(d.conf_path, "a") as f:
        f.write("[pool p]\nsurely_not_a_key = 1\n")
    line = good.count("\n") + 2
    rc, out, err = d.udsctl("reload")
    assert rc == 1
    assert err == "udsctl: reload failed: %s:%d: unknown key 'surely_not_a_key' in [p]\n" % (
        d.conf_path, line), err
    # systemd's status line keeps the reason until the next good reload, and so do we.
    d.notify.wait_for(lambda m: "STATUS=reload failed: %s:%d:" % (d.conf_path, line) in m,
                      "STATUS= with the reason")
    rc, out, _ = d.udsctl("status")
    assert "reloads: 0 ok, 1 failed; last reload failed: %s:%d:" % (d.conf_path, line) in out
    m = scrape(d)
    assert sample(m, "udsd_reloads_total", result="failed") == 1
    assert sample(m, "udsd_reload_failed") == 1
    ping(c)  # the old generation serves on

    with open(d.conf_path, "w") as f:
        f.write(good.replace("workers = 2", "workers = 1"))
    n = len(d.notify.messages)
    rc, out, err = d.udsctl("reload")
    assert (rc, out) == (0, "generation 2 serves\n"), err
    # When udsctl returns, the new generation already serves: READY=1 came before the answer.
    d.notify.wait("READY=1", after=n, timeout=5)
    st = json.loads(d.udsctl("status", "--json")[1])
    assert st["generation"] == 2 and st["last_reload_error"] is None
    assert [w["generation"] for w in st["workers"]].count(2) == 1
    ping(c)  # migrated, not cut
    m = scrape(d)
    assert sample(m, "udsd_reloads_total", result="ok") == 1
    assert sample(m, "udsd_reload_failed") == 0
    d.notify.wait_for(lambda m: "STATUS=" in m and "failed" not in m and "generation 2" in m,
                      "STATUS= without the failure")
    c.close()


def test_reload_whose_workers_fail_to_start(udsd_factory):
    """A configuration that parses, whose new workers die: the reload fails with their reason."""
    d = start(udsd_factory)
    c = connect(d.sock)
    ping(c)
    with open(d.conf_path, "a") as f:
        f.write("[listener t]\npath = {}/t.sock\nservice = {}/tests/plugins/testsvc.so\n"
                "fail_init = yes\n".format(d.tmp, conftest.BUILD))
    rc, out, err = d.udsctl("reload")
    assert rc == 1 and re.match(r"udsctl: reload failed: worker \d+ exited with status 1 before "
                                r"generation 2 was ready\n", err), (rc, out, err)
    ping(c)
    st = json.loads(d.udsctl("status", "--json")[1])
    assert st["generation"] == 1 and "before generation 2 was ready" in st["last_reload_error"]
    c.close()


def test_upgrade_returns_once_the_new_binary_serves(udsd_factory, exe):  # noqa: F811
    d = start(udsd_factory)
    c = connect(d.sock)
    ping(c)
    install(exe, conftest.UDSD)
    rc, out, err = d.udsctl("upgrade")
    assert rc == 0, err
    assert re.match(r"udsd \S+ serves, generation 2, pid %d\n" % d.proc.pid, out), out
    assert d.proc.poll() is None
    ping(c)
    # A binary that fails its check: the reason, and udsd serves on.
    install(exe, text="#!/bin/sh\necho 'no good' >&2\nexit 1\n")
    rc, out, err = d.udsctl("upgrade")
    assert rc == 1 and err.startswith("udsctl: upgrade failed: ") and "no good" in err, err
    ping(c)
    # A binary that is not there.
    rc, out, err = d.udsctl("upgrade", os.path.join(d.tmp, "nowhere"))
    assert rc == 1 and "nowhere: No such file or directory" in err, err
    c.close()


def test_upgrade_to_a_relative_binary_is_the_operators(udsd_factory, exe):  # noqa: F811
    """udsctl upgrade BINARY names a file from udsctl's directory, not from the master's."""
    d = start(udsd_factory)
    c = connect(d.sock)
    ping(c)
    here = os.path.dirname(exe)
    install(os.path.join(here, "udsd-next"), conftest.UDSD)
    assert not os.path.exists(os.path.join(os.getcwd(), "udsd-next"))
    p = subprocess.run([conftest.UDSCTL, "-s", d.admin, "upgrade", "udsd-next"], cwd=here,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert re.match(r"udsd \S+ serves, generation 2, pid %d\n" % d.proc.pid, p.stdout), p.stdout
    assert "upgrade: checking %s/udsd-next" % here in d.log
    ping(c)
    c.close()


def test_upgrade_whose_master_dies_is_not_answered_by_a_fresh_udsd(udsd_factory, exe):  # noqa: F811
    """The master dies during the check and a new udsd starts: udsctl must not report an upgrade."""
    d = start(udsd_factory)
    pidfile = os.path.join(d.tmp, "check.pid")
    slow = os.path.join(os.path.dirname(exe), "udsd-slow")
    install(slow, text="#!/bin/sh\necho $$ > %s\nexec sleep 120\n" % pidfile)
    up = subprocess.Popen([conftest.UDSCTL, "-s", d.admin, "upgrade", slow],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in deadline_loop(30, "the check running"):
            if os.path.exists(pidfile) and os.path.getsize(pidfile):
                break
        d.kill()  # the master and its workers die; udsctl now waits for a udsd to come back
        d.start()  # a fresh start (as systemd's Restart= would), not an upgrade
        out, err = up.communicate(timeout=120)
        assert up.returncode == 1, (out, err)
        assert err == "udsctl: upgrade failed: this udsd (pid %d) was started anew, not " \
                      "upgraded\n" % d.proc.pid, err
    finally:
        up.kill()
        up.wait()
        with open(pidfile) as f:
            try:
                os.kill(int(f.read()), 9)
            except ProcessLookupError:
                pass


def test_upgrade_during_a_reload_is_refused_with_the_reason(udsd_factory, exe):  # noqa: F811
    """A reload whose workers take long to start is pending: an upgrade now is -EBUSY."""
    d = start(udsd_factory)
    with open(d.conf_path, "a") as f:
        f.write("[listener t]\npath = {}/t.sock\nservice = {}/tests/plugins/testsvc.so\n"
                "init_sleep = 60\n".format(d.tmp, conftest.BUILD))
    reload = subprocess.Popen([conftest.UDSCTL, "-s", d.admin, "reload"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        for _ in deadline_loop(30, "generation 2 pending"):
            if "generation 2 starting; generation 1 serves until it is ready" in d.log:
                break
        install(exe, conftest.UDSD)
        rc, out, err = d.udsctl("upgrade")
        assert (rc, err) == (1, "udsctl: upgrade failed: a reload is in progress\n")
        # The reload's own answer: its workers were not ready in time.
        out, err = reload.communicate(timeout=120)
        assert reload.returncode == 1 and "generation 2 not ready after 10s" in err, err
    finally:
        reload.kill()
        reload.wait()


def test_upgrade_whose_check_meets_a_reload_answers_once_it_ran(udsd_factory, exe, tmp_path):  # noqa: F811
    """A SIGHUP lands while "udsctl upgrade" checks: the check runs again after the reload.

    Before: the upgrade failed ("a reload started meanwhile"), though nothing was wrong with
    the binary; udsctl must answer with the upgrade's real outcome.
    """
    d = start(udsd_factory)
    real = str(tmp_path / "daemon" / "udsd.real")
    import shutil
    shutil.copy(conftest.UDSD, real)
    go, waiting = tmp_path / "go", tmp_path / "waiting"
    install(exe, text='#!/bin/sh\n[ "$1" = -t ] && [ ! -e %s ] && touch %s && '
                      'while [ ! -e %s ]; do sleep 0.05; done\nexec %s "$@"\n'
                      % (go, waiting, go, real))
    up = subprocess.Popen([conftest.UDSCTL, "-s", d.admin, "upgrade"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    try:
        for _ in deadline_loop(30, "the check to run"):
            if waiting.exists():
                break
        with open(d.conf_path, "a") as f:  # a reload that takes 2 s: the check ends meanwhile
            f.write("[listener t]\npath = {}/t.sock\nservice = {}/tests/plugins/testsvc.so\n"
                    "init_sleep = 2\n".format(d.tmp, conftest.BUILD))
        d.send(signal.SIGHUP)
        for _ in deadline_loop(30, "generation 2 pending"):
            if "generation 2 starting" in d.log:
                break
        go.touch()
        out, err = up.communicate(timeout=120)
        assert up.returncode == 0, err
        assert re.match(r"udsd \S+ serves, generation 3, pid %d\n" % d.proc.pid, out), out
    finally:
        up.kill()
        up.wait()


def test_hostile_admin_clients_cannot_stall_the_master(udsd_factory):
    d = start(udsd_factory)
    mode = os.stat(d.admin).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    # Silent clients, and one that asks for a large answer and never reads it.
    silent = [connect(d.admin) for _ in range(4)]
    greedy = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    greedy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    greedy.connect(d.admin)
    greedy.sendall(b"metrics\n")
    greedy2 = connect(d.admin)
    greedy2.sendall(b"status json\n")
    c = connect(d.sock)
    for _ in range(20):
        ping(c)
    assert d.udsctl("status")[0] == 0
    # Garbage, an overlong line, an empty connection: an answer or a close, nothing more.
    for junk, want in ((b"\x00\xffxyz\n", b"error\nunknown request"),
                       (b"A" * 1000, b"error\nrequest too long"),
                       (b"status please\n", b"error\nunknown request")):
        s = connect(d.admin)
        try:
            s.sendall(junk)
        except BrokenPipeError:
            pass
        data = conftest.recv_all(s)
        assert data.startswith(want), data
        s.close()
    s = connect(d.admin)
    s.close()
    ping(c)
    assert d.udsctl("metrics")[0] == 0
    for s in silent + [greedy, greedy2, c]:
        s.close()
    assert d.proc.poll() is None


def test_admin_allow_list_and_mode(udsd_factory):
    d = udsd_factory(CONF)
    # In a directory the user nobody can enter (0755): only the socket's own mode keeps it out.
    d.admin = os.path.join(conftest.public_copy(), "admin.sock")
    d.write_config(CONF + "[admin]\npath = {admin}\nallow_uids = nobody\n")
    d.http_sock = os.path.join(d.tmp, "http.sock")
    d.start()
    assert stat.S_IMODE(os.stat(d.admin).st_mode) == 0o600
    rc, out, err = d.udsctl("status")
    assert rc == 1 and err == "udsctl: status failed: not allowed\n", err
    for _ in deadline_loop(10, "the refusal in the log"):
        if "admin: refused client uid=0" in d.log:
            break
    # The file's mode keeps other users out before any allow-list.
    udsctl = os.path.join(conftest.public_copy(conftest.UDSCTL), "udsctl")  # nobody may run it
    p = subprocess.run([udsctl, "-s", d.admin, "status"], capture_output=True, text=True,
                       preexec_fn=lambda: (os.setgid(65534), os.setuid(65534)), timeout=30)
    assert p.returncode == 1 and "Permission denied" in p.stderr, p.stderr


def test_admin_off(udsd_factory):
    d = start(udsd_factory, CONF + "[admin]\npath = off\n")
    assert not os.path.exists(d.admin)
    rc, out, err = d.udsctl("status")
    assert rc == 1 and "cannot reach udsd at %s: No such file or directory" % d.admin in err


def test_admin_socket_stays_when_a_reload_cannot_bind_its_new_path(udsd_factory):
    """A reload moving [admin] path where it cannot be bound keeps the old socket, not none."""
    d = start(udsd_factory)
    with open(d.conf_path) as f:
        good = f.read()
    moved = os.path.join(d.tmp, "not-yet", "admin.sock")
    with open(d.conf_path, "w") as f:
        f.write(good.replace("path = " + d.admin, "path = " + moved))
    rc, out, err = d.udsctl("reload")
    assert (rc, out) == (0, "generation 2 serves\n"), err
    for _ in deadline_loop(30, "the new path's failure in the log"):
        if "admin socket %s: No such file or directory" % moved in d.log:
            break
    rc, out, err = d.udsctl("status")
    assert rc == 0 and "generation 2" in out, err
    assert stat.S_IMODE(os.stat(d.admin).st_mode) == 0o600
    # Once the path can be bound, the next reload moves the socket there.
    os.mkdir(os.path.dirname(moved), 0o700)
    rc, out, err = d.udsctl("reload")
    assert (rc, out) == (0, "generation 3 serves\n"), err
    for _ in deadline_loop(30, "the socket at its new path"):
        if os.path.exists(moved) and not os.path.exists(d.admin):
            break
    p = subprocess.run([conftest.UDSCTL, "-s", moved, "status"], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0 and "generation 3" in p.stdout, p.stderr
    assert stat.S_IMODE(os.stat(moved).st_mode) == 0o600


def test_udsctl_usage():
    p = subprocess.run([conftest.UDSCTL, "frobnicate"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "unknown command" in p.stderr
    p = subprocess.run([conftest.UDSCTL], capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "no command" in p.stderr
    p = subprocess.run([conftest.UDSCTL, "--help"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and "reload" in p.stdout
