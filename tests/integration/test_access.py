# SPDX-License-Identifier: MIT
"""Access control and hardening: modes, owners, SO_PEERCRED allow-lists, privilege drop, limits."""
import grp
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile

import pytest

from conftest import connect, deadline_loop, echo, http_get

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch users")

NOBODY = pwd.getpwnam("nobody")
NOGROUP = grp.getgrgid(NOBODY.pw_gid)


@pytest.fixture
def shared_dir():
    """A directory every user can reach (pytest's own is 0700)."""
    d = tempfile.mkdtemp(prefix="udsd-acl-")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d)


def as_nobody(sock, payload=b"ping", groups=()):
    """Connect as nobody (optionally with supplementary groups); return what came back."""
    code = ("import socket,sys\n"
            "s=socket.socket(socket.AF_UNIX); s.settimeout(10)\n"
            "try: s.connect(sys.argv[1])\n"
            "except PermissionError: sys.stdout.write('EACCES'); sys.exit(0)\n"
            "try: s.sendall(sys.argv[2].encode()); s.shutdown(1)\n"
            "except (BrokenPipeError, ConnectionResetError): pass\n"
            "d=b''\n"
            "while True:\n"
            "    try: b=s.recv(4096)\n"
            "    except ConnectionResetError: break\n"
            "    if not b: break\n"
            "    d+=b\n"
            "sys.stdout.write(d.decode())\n")
    cmd = ["setpriv", "--reuid=%d" % NOBODY.pw_uid, "--regid=%d" % NOBODY.pw_gid]
    cmd += ["--groups=" + ",".join(str(g) for g in groups)] if groups else ["--clear-groups"]
    out = subprocess.run(cmd + [sys.executable, "-c", code, sock, payload.decode()],
                         capture_output=True, timeout=20)
    assert out.returncode == 0, out.stderr
    return out.stdout


CONF = """
[daemon]
workers = 1
threads = 2
{daemon}
[listener main]
path = {dir}/udsd.sock
service = echo
mode = 0666
{listener}
[listener web]
path = {{tmp}}/http.sock
service = http
"""


def start(udsd_factory, shared_dir, daemon="", listener=""):
    d = udsd_factory(CONF.format(dir=shared_dir, daemon=daemon, listener=listener))
    d.sock = os.path.join(shared_dir, "udsd.sock")
    d.http_sock = os.path.join(d.tmp, "http.sock")
    d.start()
    return d


def test_allow_uids_refuses_others(udsd_factory, shared_dir):
    d = start(udsd_factory, shared_dir, listener="allow_uids = root")
    assert echo(d.sock, b"root") == b"root"
    assert as_nobody(d.sock) == b""
    assert "refused client uid=%d gid=%d" % (NOBODY.pw_uid, NOBODY.pw_gid) in d.log
    assert d.status(d.http_sock)["refused"] == 1
    # Nothing of the refused client reached a worker.
    assert sum(w["accepted"] for w in d.status(d.http_sock)["workers"]) == 1 + 2


def test_allow_uids_admits_listed_user(udsd_factory, shared_dir):
    d = start(udsd_factory, shared_dir, listener="allow_uids = root, nobody")
    assert as_nobody(d.sock) == b"ping"


def test_allow_gids_supplementary_group(udsd_factory, shared_dir):
    g = grp.getgrnam("adm").gr_gid if "adm" in [x.gr_name for x in grp.getgrall()] else 4
    d = start(udsd_factory, shared_dir, listener="allow_gids = %d" % g)
    assert as_nobody(d.sock) == b""
    assert as_nobody(d.sock, groups=(g,)) == b"ping"


def test_exact_owner_group_mode_after_start_and_reload(udsd_factory, shared_dir):
    d = start(udsd_factory, shared_dir,
              listener="owner = nobody\ngroup = %s" % NOGROUP.gr_name)
    st = os.lstat(d.sock)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (NOBODY.pw_uid, NOBODY.pw_gid, 0o666)
    d.write_config(CONF.format(dir=shared_dir, daemon="", listener="mode = 0600\nowner = root\ngroup = root")
                   .replace("mode = 0666\n", ""))
    n = len(d.notify.messages)
    d.send(signal.SIGHUP)
    d.notify.wait("READY=1", after=d.notify.wait("RELOADING=1", after=n) + 1)
    st = os.lstat(d.sock)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o600)
    assert as_nobody(d.sock) == b"EACCES"  # the file mode itself keeps nobody out now


def test_workers_drop_privileges(udsd_factory, shared_dir):
    d = start(udsd_factory, shared_dir, daemon="user = nobody\ngroup = %s" % NOGROUP.gr_name)
    for pid in d.workers():
        fields = dict(l.split(":", 1) for l in open("/proc/%d/status" % pid).read().splitlines())
        assert fields["Uid"].split() == [str(NOBODY.pw_uid)] * 4
        assert fields["Gid"].split() == [str(NOBODY.pw_gid)] * 4
        assert fields["CapEff"].strip() == "0000000000000000"
    assert open("/proc/%d/status" % d.proc.pid).read().count("Uid:\t0\t0\t0\t0") == 1
    assert echo(d.sock, b"as nobody") == b"as nobody"


def test_symlink_at_socket_path_is_not_followed(udsd_factory, shared_dir):
    target = os.path.join(shared_dir, "target")
    with open(target, "w") as f:
        f.write("keep")
    os.symlink(target, os.path.join(shared_dir, "udsd.sock"))
    d = udsd_factory(CONF.format(dir=shared_dir, daemon="", listener=""))
    r = d.run_check()
    assert r.returncode == 1 and "exists and is not a socket" in r.stderr
    assert open(target).read() == "keep"
    assert os.path.islink(os.path.join(shared_dir, "udsd.sock"))


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_fd_exhaustion_backs_off_and_recovers(udsd_factory, shared_dir):
    d = udsd_factory(CONF.format(dir=shared_dir, daemon="", listener="").replace("workers = 1", "workers = 2"))
    d.sock = os.path.join(shared_dir, "udsd.sock")
    # Soft and hard 64: udsd cannot raise it.
    d.start(cmd_prefix=["prlimit", "--nofile=64:64", "--"])
    assert "open file limit: 64" in d.log
    # Stop the master so all 200 wait in the backlog at once: its first accept
    # burst then runs out of fds (EMFILE) before it can hand any over.
    d.send(signal.SIGSTOP)
    clients = []
    for i in range(200):
        s = connect(d.sock, timeout=30)
        s.sendall(b"%03d" % i)
        clients.append(s)
    d.send(signal.SIGCONT)
    for _ in deadline_loop(10, "the master to hit its fd limit"):
        if "accept: Too many open files; pausing accepts" in d.log:
            break
    # Some are served, the rest wait in the backlog; the master must not spin meanwhile.
    served = {i for i, s in enumerate(clients[:20]) if s.recv(3)}
    assert len(served) == 20
    # Every worker is full now and the last client waits in the backlog: watch the
    # master for a second while it cannot accept; a busy loop would burn that second.
    cpu0 = cpu_seconds(d.proc.pid)
    clients[-1].settimeout(1.0)
    with pytest.raises(socket.timeout):
        clients[-1].recv(3)
    clients[-1].settimeout(30)
    assert cpu_seconds(d.proc.pid) - cpu0 < 0.3
    # As clients leave, every waiting one is served, in any order.
    for i, s in enumerate(clients):
        if i not in served:
            assert s.recv(3) == b"%03d" % i
        s.close()
    assert echo(d.sock, b"after") == b"after"
    assert "no worker can take a client" not in d.log


def test_max_connections_total(udsd_factory, shared_dir):
    d = start(udsd_factory, shared_dir, daemon="max_connections_total = 3")
    held = [connect(d.sock) for _ in range(3)]
    for s in held:
        s.sendall(b"h")
        assert s.recv(1) == b"h"
    waiting = connect(d.sock)
    waiting.sendall(b"w")
    waiting.settimeout(0.5)
    with pytest.raises(socket.timeout):
        waiting.recv(1)  # held in the backlog: three are connected
    held.pop().close()
    waiting.settimeout(10)
    assert waiting.recv(1) == b"w"  # served as soon as one left


def rss_kib(pid):
    for line in open("/proc/%d/status" % pid):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_non_reading_client_cannot_grow_worker_memory(udsd_factory, shared_dir):
    d = start(udsd_factory, shared_dir)
    (worker,) = d.workers()
    base = rss_kib(worker)
    hog = connect(d.sock)
    hog.setblocking(False)
    sent, chunk = 0, b"g" * 65536
    for _ in deadline_loop(30, "the hog to be stopped by back-pressure"):
        try:
            sent += hog.send(chunk)
            if sent >= 100 << 20:
                break
        except BlockingIOError:
            break  # udsd stopped reading it: that is the point
    assert sent < 100 << 20
    # Others are still served meanwhile, and the worker grew by at most a few buffers.
    assert echo(d.sock, b"bystander") == b"bystander"
    assert rss_kib(worker) - base < 16 * 1024, (base, rss_kib(worker))
    # Garbage, resets and half-closes from other clients change nothing.
    for _ in range(10):
        s = connect(d.sock)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.sendall(os.urandom(100000))
        s.close()
    assert echo(d.sock, b"still") == b"still"
    hog.close()
    assert http_get(d.http_sock, "/healthz")[0] == 200
