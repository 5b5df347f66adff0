# SPDX-License-Identifier: MIT
"""Same-PID binary upgrade (issue 14): SIGUSR2 checks the binary at udsd's path and re-execs it.

udsd runs from a copy of the binary in the test's directory (with ../lib beside it, for its
rpath), so that a test can put another file there, as a package upgrade does.
"""
import os
import shutil
import signal
import stat
import struct
import subprocess

import pytest

import conftest
from conftest import connect, deadline_loop, ping
from test_migration import alive, run_load, wait_gone

CONF = """
[daemon]
workers = 2
threads = 2
shutdown_timeout = 10s
[listener main]
path = {sock}
service = echo
[listener web]
path = {tmp}/http.sock
service = http
"""

REAL = conftest.UDSD


@pytest.fixture
def exe(tmp_path, monkeypatch):
    """Where udsd is started from: a copy of the real binary, replaceable by the test."""
    os.mkdir(tmp_path / "daemon")
    os.symlink(os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(REAL))), "lib"),
               tmp_path / "lib")
    path = str(tmp_path / "daemon" / "udsd")
    shutil.copy(REAL, path)
    monkeypatch.setattr(conftest, "UDSD", path)
    return path


def install(path, source=None, text=None, mode=0o755):
    """Replace the file as a package manager does: a new inode renamed over the old name."""
    tmp = path + ".new"
    if text is not None:
        with open(tmp, "w") as f:
            f.write(text)
    else:
        shutil.copy(source, tmp)
    os.chmod(tmp, mode)
    os.rename(tmp, path)


def start(udsd_factory, conf=CONF):
    d = udsd_factory(conf)
    d.http_sock = os.path.join(d.tmp, "http.sock")
    d.start()
    return d


def upgrade_and_wait(d, exe):
    """A new binary at udsd's path, SIGUSR2, then RELOADING=1 and the READY=1 after it."""
    install(exe, REAL)
    n = len(d.notify.messages)
    d.send(signal.SIGUSR2)
    i = d.notify.wait("RELOADING=1", after=n)
    return d.notify.wait("READY=1", after=i + 1)


def status_says(d, text):
    return d.notify.wait_for(lambda m: m.startswith("STATUS=") and text in m,
                             "STATUS= with %r" % text)


def test_upgrade_keeps_the_pid_and_every_connection(udsd_factory, exe):
    d = start(udsd_factory)
    clients = [connect(d.sock) for _ in range(10)]
    for s in clients:
        ping(s)
    old = d.workers()
    i = upgrade_and_wait(d, exe)
    assert "MAINPID=%d" % d.proc.pid in d.notify.messages[i]
    wait_gone(old)
    for k, s in enumerate(clients):
        ping(s, b"after %d" % k)
    assert d.status(d.http_sock)["generation"] == 2
    assert d.proc.poll() is None and "upgraded: udsd" in d.log
    assert "still has" not in d.log  # nobody was cut at shutdown_timeout
    for s in clients:
        s.close()
    assert d.stop() == 0


def test_100_reloads_and_20_upgrades_under_load_drop_nothing(udsd_factory, exe):
    """Issue 14: 4 processes of short connections, 50 long-lived ones every 50 ms; 0 errors."""
    d = start(udsd_factory)
    pid = d.proc.pid
    done, errors, counts, kept = run_load(d, reloads=100, workers=2, upgrades=20,
                                          upgrade=lambda d: upgrade_and_wait(d, exe))
    print("\nlifecycle: %d reloads, %d upgrades; short %d, long-lived exchanges %d; errors %s; "
          "long-lived connections kept %d of 50" % (done["reloads"], done["upgrades"],
                                                    counts["short"], counts["long"], errors, kept))
    assert d.proc.pid == pid and d.proc.poll() is None
    assert d.stop() == 0
    assert done == {"reloads": 100, "upgrades": 20}
    assert errors == dict.fromkeys(errors, 0), errors
    assert kept == 50
    assert "after the shutdown timeout" not in d.log


def assert_unchanged(d, clients, workers):
    for k, s in enumerate(clients):
        ping(s, b"still %d" % k)
    assert sorted(d.workers()) == sorted(workers)
    assert not any("RELOADING=1" in m for m in d.notify.messages)


def test_upgrade_to_a_file_that_cannot_be_executed(udsd_factory, exe):
    d = start(udsd_factory)
    clients = [connect(d.sock) for _ in range(3)]
    workers = d.workers()
    install(exe, REAL, mode=0o644)
    d.send(signal.SIGUSR2)
    status_says(d, "upgrade failed: %s: Permission denied" % exe)
    assert_unchanged(d, clients, workers)
    # Fixed: the next upgrade works and clears the failure from STATUS=.
    upgrade_and_wait(d, exe)
    status_says(d, "(generation 2)")
    assert "upgrade failed" not in d.notify.messages[-1]


def test_upgrade_to_a_binary_that_exits_1(udsd_factory, exe):
    d = start(udsd_factory)
    clients = [connect(d.sock) for _ in range(3)]
    workers = d.workers()
    install(exe, text="#!/bin/sh\necho 'this binary is broken' >&2\nexit 1\n")
    d.send(signal.SIGUSR2)
    status_says(d, "upgrade failed: %s -t: exit status 1: this binary is broken" % exe)
    assert_unchanged(d, clients, workers)
    assert "upgrade failed, still running the old binary" in d.log


def test_upgrade_to_a_binary_without_the_upgrade_protocol(udsd_factory, exe, tmp_path):
    """A binary that passes "-t" but cannot take the state over is never executed.

    Before: the release from before the upgrade protocol (a package downgrade) passed the
    check; executed with --upgrade-state it exited 2 ("unrecognized option"), and the master
    was gone with every connection, the socket left refusing.
    """
    d = start(udsd_factory)
    clients = [connect(d.sock) for _ in range(3)]
    workers = d.workers()
    real = str(tmp_path / "daemon" / "udsd.real")
    shutil.copy(REAL, real)
    install(exe, text='#!/bin/sh\nfor a; do case "$a" in --upgrade-*)\n'
                      '  echo "udsd: unrecognized option \'$a\'" >&2; exit 2;; esac; done\n'
                      'exec %s "$@"\n' % real)
    d.send(signal.SIGUSR2)
    status_says(d, "upgrade failed: %s -t: exit status 2: udsd: unrecognized option "
                   "'--upgrade-check=" % exe)
    assert d.proc.poll() is None
    assert_unchanged(d, clients, workers)
    assert "upgrade: executing" not in d.log


def test_upgrade_check_names_the_state_version(exe, tmp_path):
    """The new binary says whether it reads the running one's state version."""
    conf = tmp_path / "c.conf"
    conf.write_text(CONF.format(sock=str(tmp_path / "s.sock"), tmp=str(tmp_path)))
    ok = subprocess.run([exe, "-t", "-q", "-c", str(conf), "--upgrade-check=1"],
                        capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([exe, "-t", "-q", "-c", str(conf), "--upgrade-check=99"],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1 and "upgrade state version 99: this binary reads 1 to 2" in bad.stderr


def test_upgrade_requested_twice_in_a_row(udsd_factory, exe, tmp_path):
    """The second SIGUSR2 arrives while the first upgrade's check runs: one upgrade, no harm."""
    d = start(udsd_factory)
    clients = [connect(d.sock) for _ in range(3)]
    real = str(tmp_path / "daemon" / "udsd.real")
    shutil.copy(REAL, real)
    go = tmp_path / "go"
    install(exe, text='#!/bin/sh\n[ "$1" = -t ] && while [ ! -e %s ]; do sleep 0.05; done\n'
                      'exec %s "$@"\n' % (go, real))
    n = len(d.notify.messages)
    d.send(signal.SIGUSR2)
    for _ in deadline_loop(10, "the check to run"):
        if "upgrade: checking" in d.log:
            break
    d.send(signal.SIGUSR2)
    for _ in deadline_loop(10, "the second request to be turned down"):
        if "SIGUSR2: not upgrading: an upgrade is in progress" in d.log:
            break
    go.touch()
    i = d.notify.wait("RELOADING=1", after=n)
    d.notify.wait("READY=1", after=i + 1)
    for k, s in enumerate(clients):
        ping(s, b"once %d" % k)
    assert d.log.count("upgrade: executing") == 1
    assert d.status(d.http_sock)["generation"] == 2


SLOW = CONF + """
[listener slow]
path = {tmp}/slow.sock
service = {build}/tests/plugins/testsvc.so
init_sleep = 2
"""


def wait_log(d, text, what, timeout=60):
    for _ in deadline_loop(timeout, what):
        if text in d.log:
            return


def test_an_upgrade_asked_for_during_a_reload_follows_it(udsd_factory, exe):
    """SIGUSR2 while a reload's generation starts: the upgrade runs once the reload is over.

    Before: "not upgrading: a reload is in progress", and the old binary ran on for good
    (a signal has nobody to return an error to: the package's script saw success).
    """
    d = start(udsd_factory)
    clients = [connect(d.sock) for _ in range(3)]
    d.write_config(SLOW)
    d.send(signal.SIGHUP)
    wait_log(d, "generation 2 starting", "the reload to start")
    install(exe, REAL)
    d.send(signal.SIGUSR2)
    wait_log(d, "upgraded: udsd", "the upgrade after the reload")
    status_says(d, "(generation 3)")
    for k, s in enumerate(clients):
        ping(s, b"kept %d" % k)
    assert conftest.echo(os.path.join(d.tmp, "slow.sock"), b"slow") == b"slow"


def test_a_reload_asked_for_during_an_upgrade_follows_it(udsd_factory, exe):
    """SIGHUP while the new image waits for its generation: the reload runs once it serves.

    Before: "SIGHUP: not reloading: an upgrade is in progress", and the edited config was
    never read (systemctl reload had already returned success).
    """
    d = start(udsd_factory, SLOW)
    install(exe, REAL)
    d.send(signal.SIGUSR2)
    wait_log(d, "upgrade: took over from the old binary", "the new image to adopt")
    d.write_config(SLOW + "[listener late]\npath = {tmp}/late.sock\nservice = echo\n")
    d.send(signal.SIGHUP)
    late = os.path.join(d.tmp, "late.sock")
    for _ in deadline_loop(60, "the reload after the upgrade to bind late.sock"):
        if os.path.exists(late) and "reloaded: generation 3 serves" in d.log:
            break
    assert conftest.echo(late, b"late") == b"late"


def test_a_reload_during_the_upgrade_check_delays_the_upgrade(udsd_factory, exe, tmp_path):
    """A reload starts while the new binary's check runs: the upgrade is checked again after it.

    Before: "upgrade failed: a reload started meanwhile"; the upgrade was lost.
    """
    d = start(udsd_factory)
    clients = [connect(d.sock) for _ in range(3)]
    real = str(tmp_path / "daemon" / "udsd.real")
    shutil.copy(REAL, real)
    go = tmp_path / "go"
    install(exe, text='#!/bin/sh\n[ "$1" = -t ] && while [ ! -e %s ]; do sleep 0.05; done\n'
                      'exec %s "$@"\n' % (go, real))
    d.send(signal.SIGUSR2)
    wait_log(d, "upgrade: checking", "the check to run")
    d.write_config(SLOW)  # its generation takes 2 s to start: the check ends meanwhile
    d.send(signal.SIGHUP)
    wait_log(d, "generation 2 starting", "the reload to start")
    go.touch()
    wait_log(d, "upgraded: udsd", "the upgrade after the reload")
    status_says(d, "(generation 3)")
    for k, s in enumerate(clients):
        ping(s, b"kept %d" % k)
    assert "upgrade failed" not in d.log


NO_PROTOCOL = ('#!/bin/sh\nfor a; do case "$a" in --upgrade-*)\n'
               '  echo "udsd: unrecognized option \'$a\'" >&2; exit 2;; esac; done\nexec %s "$@"\n')


def test_a_binary_replaced_during_its_check_is_checked_again(udsd_factory, exe, tmp_path):
    """What runs is what was checked: a file replaced while the check ran is checked anew.

    Before: the check passed on the first file and the master executed the path, by then a
    binary that cannot adopt (here one without the upgrade protocol): the master was gone.
    """
    d = start(udsd_factory)
    clients = [connect(d.sock) for _ in range(3)]
    workers = d.workers()
    real = str(tmp_path / "daemon" / "udsd.real")
    shutil.copy(REAL, real)
    go, waiting = tmp_path / "go", tmp_path / "waiting"
    install(exe, text='#!/bin/sh\n[ "$1" = -t ] && touch %s && while [ ! -e %s ]; do sleep 0.05; done\n'
                      'exec %s "$@"\n' % (waiting, go, real))
    d.send(signal.SIGUSR2)
    for _ in deadline_loop(30, "the check to run"):
        if waiting.exists():
            break
    install(exe, text=NO_PROTOCOL % real)
    go.touch()
    status_says(d, "upgrade failed: %s -t: exit status 2: udsd: unrecognized option" % exe)
    assert "changed during its check; checking it again" in d.log
    assert d.proc.poll() is None
    assert_unchanged(d, clients, workers)


def test_a_newer_binary_during_an_upgrade_is_upgraded_to_next(udsd_factory, exe):
    """SIGUSR2 for a file installed while the last upgrade's generation starts: a second one.

    Before: "not upgrading: an upgrade is in progress"; the newer file never ran.
    """
    d = start(udsd_factory, SLOW)
    install(exe, REAL)
    d.send(signal.SIGUSR2)
    wait_log(d, "upgrade: took over from the old binary", "the new image to adopt")
    install(exe, REAL)
    d.send(signal.SIGUSR2)
    for _ in deadline_loop(60, "the second upgrade"):
        if d.log.count("upgraded: udsd") == 2:
            break
    status_says(d, "(generation 3)")
    assert d.log.count("upgrade: executing") == 2


def test_a_new_binary_whose_workers_fail_rolls_back(udsd_factory, exe, tmp_path):
    """It passes the check, but its generation never gets ready: the old binary comes back."""
    d = start(udsd_factory)
    pid = d.proc.pid
    clients = [connect(d.sock) for _ in range(5)]
    for s in clients:
        ping(s)
    bad = tmp_path / "bad.conf"
    bad.write_text(CONF.format(sock=d.sock, tmp=d.tmp) +
                   "[listener t]\npath = %s/t.sock\nservice = %s/tests/plugins/testsvc.so\n"
                   "fail_init = yes\n" % (d.tmp, conftest.BUILD))
    real = str(tmp_path / "daemon" / "udsd.real")
    shutil.copy(REAL, real)
    install(exe, text='#!/bin/sh\n[ "$1" = -t ] && exec %s "$@"\nexec %s "$@" -c %s\n'
                      % (real, real, bad))
    n = len(d.notify.messages)
    d.send(signal.SIGUSR2)
    status_says(d, "rolled back")
    i = d.notify.wait("READY=1", after=n)
    assert "MAINPID=%d" % pid in d.notify.messages[i] and d.proc.pid == pid
    for k, s in enumerate(clients):
        ping(s, b"back %d" % k)
    assert "rolling back to the old binary" in d.log
    assert not os.path.exists(os.path.join(d.tmp, "t.sock"))
    assert alive(pid)


def test_a_state_version_it_does_not_know_is_handed_back(tmp_path):
    """A new image that cannot read the old one's state execs the old binary (here /bin/true)."""
    conf = tmp_path / "c.conf"
    conf.write_text(CONF.format(sock=str(tmp_path / "s.sock"), tmp=str(tmp_path)))
    exe = os.open("/bin/true", os.O_RDONLY)
    state = tmp_path / "state"
    state.write_bytes(b"udsdstat" + struct.pack("<IIiI", 99, 24, exe, 0))
    fd = os.open(state, os.O_RDONLY)
    try:
        p = subprocess.run([REAL, "-c", str(conf), "--upgrade-state=%d" % fd], pass_fds=(fd, exe),
                           capture_output=True, text=True, timeout=30)
    finally:
        os.close(fd)
        os.close(exe)
    assert "state version 99, this binary reads 1 to 2" in p.stderr, p.stderr
    assert "rolling back to the old binary" in p.stderr
    assert p.returncode == 0  # /bin/true ran in its place, with the same PID


def test_max_connections_per_uid_holds_across_an_upgrade(udsd_factory, exe):
    """The old workers' per-uid counts carry over: clients that stay with them still count.

    Before: the state left them out; testsvc's clients (which do not move) stopped counting,
    and the same uid could open max_connections_per_uid more after every upgrade.
    """
    d = start(udsd_factory, CONF + """
[listener t]
path = {tmp}/t.sock
service = {build}/tests/plugins/testsvc.so
max_connections_per_uid = 2
""")
    t = os.path.join(d.tmp, "t.sock")
    held = [connect(t) for _ in range(2)]
    for s in held:
        ping(s)

    def served():
        s = connect(t)
        try:
            s.sendall(b"third")
            return s.recv(5) == b"third"
        except OSError:
            return False
        finally:
            s.close()

    assert not served()
    upgrade_and_wait(d, exe)
    for s in held:
        ping(s, b"kept")  # still served by the old worker, draining
    assert not served()
    held.pop().close()
    for _ in deadline_loop(10, "the closed client to be counted out"):
        if served():
            break
