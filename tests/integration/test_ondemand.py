# SPDX-License-Identifier: MIT
"""On demand: exit when idle under socket activation; a worker pool that grows and shrinks."""
import os
import signal
import socket
import stat
import subprocess

import pytest

from conftest import UDSD, Notify, connect, deadline_loop, echo, ping

POOL = """
[daemon]
workers_min = 1
workers_max = 4
worker_load_mark = 4
worker_idle_time = 300ms
threads = 1
[listener main]
path = {sock}
service = echo
[listener web]
path = {tmp}/http.sock
service = http
"""


def test_pool_grows_to_max_and_shrinks_back(udsd_factory):
    d = udsd_factory(POOL)
    d.http_sock = os.path.join(d.tmp, "http.sock")
    d.start()
    assert len(d.workers()) == 1
    st = d.status(d.http_sock)
    assert (st["workers_min"], st["workers_max"]) == (1, 4)
    held = []
    def pool_at_least(k):
        return lambda m: m.startswith("STATUS=") and int(m[7:].split()[0]) >= k

    for k in (2, 3, 4):
        # Persistent clients, a few at a time: each lands on the least loaded worker;
        # once every worker holds worker_load_mark of them, the pool grows by one.
        for _ in range(4 * (k - 1)):
            s = connect(d.sock)
            ping(s)
            held.append(s)
        d.notify.wait_for(pool_at_least(k), "STATUS with %d workers" % k)
    assert len(d.workers()) == 4
    assert d.log.count("starting another (pool 1..4)") == 3
    for s in held:  # every client still served after all the spawning
        ping(s, b"q")
        s.close()
    # No more load: the pool returns to its minimum, as STATUS= tells systemd.
    d.notify.messages = []  # only what comes from now on
    d.notify.wait_for(lambda m: m.startswith("STATUS=1 workers of 1..4 ") and " 0 open" in m,
                      "STATUS with 1 worker of 1..4")
    assert len(d.workers()) == 1
    assert d.log.count("retiring it (pool 1..4)") == 3
    assert echo(d.sock, b"after") == b"after"
    assert d.stop() == 0


def activated(tmp_path, conf_extra, sock):
    cfg = tmp_path / "act.conf"
    cfg.write_text("[daemon]\nworkers = 1\nthreads = 1\n%s\n[listener main]\npath = %s\nservice = echo\n"
                   % (conf_extra, sock))
    notify = Notify(str(tmp_path / "notify.sock"))
    p = subprocess.Popen(["systemd-socket-activate", "-l", sock, "--fdname=main",
                          "-E", "NOTIFY_SOCKET=" + notify.path, UDSD, "-c", str(cfg)],
                         stderr=subprocess.PIPE)
    assert b"Listening on" in p.stderr.readline()
    return p, notify


def test_idle_exit_under_socket_activation(tmp_path):
    sock = str(tmp_path / "act.sock")
    p, notify = activated(tmp_path, "exit_idle_time = 300ms", sock)
    try:
        held = connect(sock)
        ping(held)
        notify.wait("READY=1")
        # While a client is connected udsd stays: the held client is served a second later.
        held.settimeout(1.0)
        with pytest.raises(socket.timeout):
            held.recv(1)
        assert p.poll() is None
        ping(held, b"still")
        held.close()
        # Nobody connected: it leaves by itself, cleanly, and leaves systemd's socket alone.
        assert p.wait(20) == 0
        notify.wait("STOPPING=1")
        assert stat.S_ISSOCK(os.lstat(sock).st_mode)
        err = p.stderr.read().decode()
        assert "idle: stopping" in err
    finally:
        if p.poll() is None:
            p.kill()
        notify.close()


def test_idle_exit_ignored_without_activation(udsd_factory):
    d = udsd_factory("[daemon]\nexit_idle_time = 100ms\nworkers = 1\nthreads = 1\n"
                     "[listener main]\npath = {sock}\n")
    d.start()
    assert "exit_idle_time ignored" in d.log
    s = connect(d.sock)
    s.settimeout(0.5)
    with pytest.raises(socket.timeout):
        s.recv(1)  # half a second of idleness went by
    assert d.proc.poll() is None
    assert echo(d.sock, b"here") == b"here"
    assert d.stop() == 0
