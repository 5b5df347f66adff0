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

from conftest import alive, connect, deadline_loop, echo, http_get

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
    conf = CONF if "workers =" not in daemon else CONF.replace("workers = 1\n", "")
    d = udsd_factory(conf.format(dir=shared_dir, daemon=daemon, listener=listener))
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


# --- Socket files: only ever the one udsd bound (issue 12, defect 2) ---

def as_user(user, code, *args):
    """Run Python code as user (a pwd entry) with its own groups; fail the test if it fails."""
    cmd = ["setpriv", "--reuid=%d" % user.pw_uid, "--regid=%d" % user.pw_gid, "--init-groups",
           sys.executable, "-c", code] + list(args)
    out = subprocess.run(cmd, capture_output=True, timeout=20)
    assert out.returncode == 0, out.stderr
    return out.stdout


def reload_and_wait(d):
    n = len(d.notify.messages)
    d.send(signal.SIGHUP)
    d.notify.wait("READY=1", after=d.notify.wait("RELOADING=1", after=n) + 1)


def reload_fails(d, why):
    """SIGHUP with a config udsd must refuse: it says why and keeps serving."""
    n = len(d.log)
    d.send(signal.SIGHUP)
    for _ in deadline_loop(20, "the reload to be refused: " + why):
        if why in d.log[n:]:
            break
        d.notify._read(0.05)


def start_outcome(d):
    """Start udsd and return its exit status, or "ready" if it started serving."""
    d.start(wait=False)
    for _ in deadline_loop(20, "udsd to exit or report READY=1"):
        if d.proc.poll() is not None:
            return d.proc.returncode
        msg = d.notify._read(0.05)
        if msg and "READY=1" in msg.split("\n"):
            return "ready"


def ident(path):
    st = os.lstat(path)
    return (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), stat.S_IFMT(st.st_mode))


@pytest.fixture
def sticky_dir():
    """World-writable with the sticky bit, like /tmp: accepted, and a hostile user lives in it."""
    d = tempfile.mkdtemp(prefix="udsd-sticky-")
    os.chmod(d, 0o1777)
    yield d
    shutil.rmtree(d)


SWAP_IN_ID = ("import os,shutil,sys\n"
              "p=sys.argv[1]; os.rename(p, p+'.moved')\n"
              "shutil.copy('/usr/bin/id', p); os.chmod(p, 0o4755)\n")


def test_reload_leaves_a_file_swapped_in_at_the_socket_path_alone(udsd_factory, sticky_dir):
    # The socket belongs to nobody, so in a sticky directory nobody may rename it away and
    # put its own copy of id in its place: the reload must not make that root's.
    d = start(udsd_factory, sticky_dir, listener="owner = nobody")
    as_user(NOBODY, SWAP_IN_ID, d.sock)
    planted = ident(d.sock)
    assert planted == (NOBODY.pw_uid, NOBODY.pw_gid, 0o4755, stat.S_IFREG)
    d.write_config(CONF.format(dir=sticky_dir, daemon="", listener="owner = root\ngroup = root"))
    reload_and_wait(d)
    assert ident(d.sock) == planted
    assert "listener main: %s is no longer the socket udsd bound; not touching it" % d.sock in d.log
    d.stop()
    assert ident(d.sock) == planted  # nor removed at exit


def test_exit_does_not_unlink_a_socket_swapped_in(udsd_factory, sticky_dir):
    d = start(udsd_factory, sticky_dir, listener="owner = nobody")
    as_user(NOBODY, "import os,socket,sys\np=sys.argv[1]; os.rename(p, p+'.moved')\n"
            "socket.socket(socket.AF_UNIX).bind(p)\n", d.sock)
    planted = os.lstat(d.sock)
    assert stat.S_ISSOCK(planted.st_mode) and planted.st_uid == NOBODY.pw_uid
    assert d.stop() == 0
    assert os.lstat(d.sock).st_ino == planted.st_ino


def test_reload_never_follows_a_parent_directory_swapped_for_a_symlink(udsd_factory, shared_dir):
    sub = os.path.join(shared_dir, "sub")
    os.mkdir(sub, 0o755)
    d = start(udsd_factory, sub)
    # The directory moves away and a symlink to another one takes its name (root does it here,
    # since no other user may in an accepted layout).
    os.rename(sub, sub + ".real")
    evil = os.path.join(shared_dir, "evil")
    os.mkdir(evil, 0o755)
    shutil.copy("/usr/bin/id", os.path.join(evil, "udsd.sock"))
    os.chown(os.path.join(evil, "udsd.sock"), NOBODY.pw_uid, NOBODY.pw_gid)
    os.symlink(evil, sub)
    planted = ident(os.path.join(evil, "udsd.sock"))
    d.write_config(CONF.format(dir=sub, daemon="", listener="mode = 0600\nowner = nobody")
                   .replace("mode = 0666\n", ""))
    reload_and_wait(d)
    assert ident(os.path.join(evil, "udsd.sock")) == planted
    # The socket udsd bound, wherever its directory went, is the one that changed.
    real = os.path.join(sub + ".real", "udsd.sock")
    assert ident(real) == (NOBODY.pw_uid, 0, 0o600, stat.S_IFSOCK)
    assert echo(real, b"still here") == b"still here"


@pytest.mark.parametrize("mode,owner,why", [
    (0o777, "root", "writable by others and not sticky"),
    (0o775, "root", "writable by others and not sticky"),
    (0o755, "nobody", "owned by uid %d" % NOBODY.pw_uid),
])
def test_unsafe_socket_directory_is_refused_at_start(udsd_factory, shared_dir, mode, owner, why):
    sub = os.path.join(shared_dir, "sub")
    os.mkdir(sub)
    os.chmod(sub, mode)
    os.chown(sub, pwd.getpwnam(owner).pw_uid, -1)
    d = udsd_factory(CONF.format(dir=sub, daemon="", listener=""))
    assert start_outcome(d) == 1
    assert "listener main: %s/udsd.sock: directory %s is %s" % (sub, sub, why) in d.log, d.log
    assert os.listdir(sub) == []  # nothing bound


def test_reload_refuses_a_socket_directory_that_became_writable(udsd_factory, shared_dir):
    sub = os.path.join(shared_dir, "sub")
    os.mkdir(sub, 0o755)
    d = start(udsd_factory, sub)
    os.chmod(shared_dir, 0o777)  # now nobody may swap sub for a symlink to its own directory
    as_user(NOBODY, "import os,shutil,sys\nsub,evil=sys.argv[1:]\nos.mkdir(evil)\n"
            "shutil.copy('/usr/bin/id', evil+'/udsd.sock')\nos.rename(sub, sub+'.old')\n"
            "os.symlink(evil, sub)\n", sub, os.path.join(shared_dir, "evil"))
    planted = ident(d.sock)
    d.write_config(CONF.format(dir=sub, daemon="", listener="owner = root\ngroup = root"))
    reload_fails(d, "directory %s is writable by others and not sticky" % shared_dir)
    assert ident(d.sock) == planted
    assert echo(os.path.join(sub + ".old", "udsd.sock"), b"old config") == b"old config"
    os.chmod(shared_dir, 0o755)


# --- Privilege drop (issue 12, defect 5) ---

def proc_status(pid):
    return dict(l.split(":", 1) for l in open("/proc/%d/status" % pid).read().splitlines())


def test_user_alone_drops_to_its_primary_and_supplementary_groups(udsd_factory, shared_dir):
    d = start(udsd_factory, shared_dir, daemon="user = nobody")
    groups = sorted(os.getgrouplist("nobody", NOBODY.pw_gid))
    for pid in d.workers():
        f = proc_status(pid)
        assert f["Uid"].split() == [str(NOBODY.pw_uid)] * 4
        assert f["Gid"].split() == [str(NOBODY.pw_gid)] * 4
        assert sorted(int(g) for g in f["Groups"].split()) == groups
        for cap in ("CapEff", "CapPrm", "CapAmb"):
            assert f[cap].strip() == "0000000000000000", (cap, f[cap])
        assert f["NoNewPrivs"].strip() == "1"
    line = "running as uid=%d(nobody) gid=%d(%s) groups=%s" % (
        NOBODY.pw_uid, NOBODY.pw_gid, NOGROUP.gr_name, ",".join(str(g) for g in groups))
    assert d.log.count(line) == 1, d.log
    assert echo(d.sock, b"as nobody") == b"as nobody"


def test_dropped_workers_die_with_a_killed_master(udsd_factory, shared_dir):
    d = start(udsd_factory, shared_dir, daemon="workers = 2\nuser = nobody\ngroup = %s"
              % NOGROUP.gr_name)
    workers = d.workers()
    try:
        # Stopped workers cannot see the channel's end of file: only PR_SET_PDEATHSIG ends them.
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        for _ in deadline_loop(10, "the workers to stop"):
            if all(proc_status(p)["State"].split()[0] == "T" for p in workers):
                break
        d.proc.kill()
        d.proc.wait()
        for _ in deadline_loop(10, "the workers to die with their master"):
            if not any(alive(p) for p in workers):
                break
    finally:
        for pid in workers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


# --- Allow-lists and abstract sockets (issue 12, defect 9) ---

def test_allow_gids_sees_every_supplementary_group(udsd_factory, shared_dir):
    # SO_PEERGROUPS for a client in 300 groups: the allowed one sorts last.
    groups = list(range(50000, 50300))
    d = start(udsd_factory, shared_dir, listener="allow_gids = %d" % groups[-1])
    assert as_nobody(d.sock, groups=groups) == b"ping"
    assert as_nobody(d.sock, groups=groups[:-1]) == b""


def test_abstract_listener_without_allow_list_is_warned_about_once(udsd_factory, tmp_path):
    name = "udsd-test-%d" % os.getpid()
    d = udsd_factory("[daemon]\nworkers = 1\n[listener open]\npath = @%s-open\nservice = echo\n"
                     "[listener guarded]\npath = @%s-guarded\nservice = echo\nallow_uids = root\n"
                     % (name, name))
    d.start()
    warning = "listener open: @%s-open is an abstract socket without allow_uids or allow_gids" % name
    assert d.log.count(warning) == 1, d.log
    assert "listener guarded: @%s-guarded is an abstract" % name not in d.log
    reload_and_wait(d)
    assert d.log.count(warning) == 1
    assert echo("@%s-open" % name, b"hi") == b"hi"
