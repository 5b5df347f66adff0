# SPDX-License-Identifier: MIT
"""The service API: loadable services, fds from clients, seqpacket, crashes."""
import array
import errno
import hashlib
import json
import os
import re
import select
import signal
import socket
import stat
import struct

from conftest import connect, deadline_loop, echo

CONF = """
[daemon]
workers = {workers}
threads = 2
shutdown_timeout = 5s
[listener fdinfo]
path = {{tmp}}/fdinfo.sock
service = {{build}}/lib/examples/fdinfo.so
[listener kv]
path = {{tmp}}/kv.sock
service = {{build}}/lib/examples/kv.so
[listener seq]
path = {{tmp}}/seq.sock
type = seqpacket
service = echo
[listener test]
path = {{sock}}
service = {{build}}/tests/plugins/testsvc.so
"""


def start(udsd_factory, workers=2, extra=""):
    d = udsd_factory(CONF.format(workers=workers) + extra)
    d.start()
    return d


def ask_fdinfo(path, fds, data=b"?"):
    s = connect(path)
    socket.send_fds(s, [data], fds)
    f = s.makefile("rb")
    lines = [json.loads(f.readline()) for _ in range(max(1, len(fds)))]
    s.close()
    return lines


def test_fdinfo_regular_file(udsd_factory, tmp_path):
    d = start(udsd_factory)
    content = os.urandom(300000)
    p = tmp_path / "secret.bin"
    p.write_bytes(content)
    os.chmod(p, 0o600)
    fd = os.open(p, os.O_RDONLY)
    os.unlink(p)  # only the descriptor is left: udsd needs no path and no permission
    (info,) = ask_fdinfo(os.path.join(d.tmp, "fdinfo.sock"), [fd])
    os.close(fd)
    assert info["type"] == "file"
    assert info["size"] == len(content)
    assert info["mode"] == "0600"
    assert info["sha256"] == hashlib.sha256(content).hexdigest()



class HangingFuse:
    """A FUSE file system with one regular file, f, whose reads (and statfs) never answer.

    The kernel's side of FUSE is spoken directly on /dev/fuse: INIT, LOOKUP, GETATTR and
    OPEN are answered, READ and STATFS are left pending, as a hung FUSE or NFS server
    leaves them.  Closing /dev/fuse at the end aborts whatever is still pending.
    """
    LOOKUP, FORGET, GETATTR, OPEN, READ, STATFS, RELEASE, FLUSH, INIT = 1, 2, 3, 14, 15, 17, 18, 25, 26
    INTERRUPT, BATCH_FORGET = 36, 42

    def __init__(self, mnt):
        import ctypes
        import threading
        self.mnt = str(mnt)
        os.mkdir(self.mnt)
        self.dev = os.open("/dev/fuse", os.O_RDWR)
        libc = ctypes.CDLL(None, use_errno=True)
        opts = "fd=%d,rootmode=40000,user_id=0,group_id=0,allow_other" % self.dev
        if libc.mount(b"udsd-test", self.mnt.encode(), b"fuse", 0, opts.encode()) != 0:
            raise OSError(ctypes.get_errno(), "mount fuse")
        self.libc = libc
        self.stop = False
        self.requests = []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    @staticmethod
    def attr(ino, mode, size):
        return struct.pack("<QQQQQQIIIIIIIIII", ino, size, (size + 511) // 512, 0, 0, 0, 0, 0, 0,
                           mode, 1, 0, 0, 0, 4096, 0)

    def reply(self, unique, payload=b"", error=0):
        os.write(self.dev, struct.pack("<IiQ", 16 + len(payload), error, unique) + payload)

    def serve(self):
        import select
        while not self.stop:
            if not select.select([self.dev], [], [], 0.1)[0]:
                continue
            try:
                req = os.read(self.dev, 1 << 20)
            except OSError:
                return
            _, op, unique, node = struct.unpack_from("<IIQQ", req)
            self.requests.append(op)
            body = req[40:]
            forever = 1 << 30
            if op == self.INIT:
                self.reply(unique, struct.pack("<IIIIHHIIHHI28x", 7, 31, 1 << 17, 0, 16, 12,
                                               4096, 1, 32, 0, 0))
            elif op == self.LOOKUP and body.rstrip(b"\0") == b"f":
                self.reply(unique, struct.pack("<QQQQII", 2, 0, forever, forever, 0, 0)
                           + self.attr(2, stat.S_IFREG | 0o644, 1 << 20))
            elif op == self.GETATTR:
                mode = stat.S_IFDIR | 0o755 if node == 1 else stat.S_IFREG | 0o644
                self.reply(unique, struct.pack("<QII", forever, 0, 0)
                           + self.attr(node, mode, 0 if node == 1 else 1 << 20))
            elif op == self.OPEN:
                self.reply(unique, struct.pack("<QII", 0, 0, 0))
            elif op in (self.READ, self.STATFS, self.INTERRUPT, self.FORGET, self.BATCH_FORGET):
                pass  # hung: never answered (forgets take no answer)
            elif op in (self.RELEASE, self.FLUSH):
                self.reply(unique)
            else:
                self.reply(unique, error=-errno.ENOSYS)

    def close(self):
        self.stop = True
        self.thread.join()
        os.close(self.dev)  # aborts the connection: pending requests fail
        self.libc.umount2(self.mnt.encode(), 2)  # MNT_DETACH


def test_fdinfo_answers_at_once_for_a_file_on_a_hung_fuse(udsd_factory, tmp_path):
    d = start(udsd_factory, workers=1)
    fuse = HangingFuse(tmp_path / "mnt")
    try:
        fd = os.open(os.path.join(fuse.mnt, "f"), os.O_RDONLY)
        s = connect(os.path.join(d.tmp, "fdinfo.sock"))
        socket.send_fds(s, [b"?"], [fd])
        os.close(fd)
        info = json.loads(s.makefile("rb").readline())
        assert info["type"] == "file" and info["size"] == 1 << 20
        assert "sha256" not in info
        assert info["sha256_skipped"] == "not a local file system (fuse)"
        assert fuse.READ not in fuse.requests and fuse.STATFS not in fuse.requests
        # The thread that answered is free: the next client is served at once.
        (info,) = ask_fdinfo(os.path.join(d.tmp, "fdinfo.sock"), [os.open("/dev/null", os.O_RDONLY)])
        assert info["type"] == "character-device"
    finally:
        fuse.close()


def test_fdinfo_skips_proc_files_and_files_over_the_cap(udsd_factory, tmp_path):
    d = udsd_factory(CONF.format(workers=1).replace(
        "lib/examples/fdinfo.so\n", "lib/examples/fdinfo.so\nmax_hash_size = 1000\n"))
    d.start()
    small, big = tmp_path / "small", tmp_path / "big"
    small.write_bytes(b"s" * 1000)
    big.write_bytes(b"b" * 1001)
    fds = [os.open(p, os.O_RDONLY) for p in (small, big, "/proc/self/status")]
    infos = ask_fdinfo(os.path.join(d.tmp, "fdinfo.sock"), fds)
    assert infos[0]["sha256"] == hashlib.sha256(b"s" * 1000).hexdigest()
    assert infos[1]["sha256_skipped"] == "larger than max_hash_size (1000 bytes)"
    assert infos[2]["sha256_skipped"] == "not a local file system (proc)"
    assert all("sha256" not in i for i in infos[1:])
    for fd in fds:
        os.close(fd)


def test_fdinfo_pipe_devnull_directory(udsd_factory, tmp_path):
    d = start(udsd_factory)
    r, w = os.pipe()
    null = os.open("/dev/null", os.O_RDONLY)
    dirfd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    infos = ask_fdinfo(os.path.join(d.tmp, "fdinfo.sock"), [r, null, dirfd])
    assert [i["type"] for i in infos] == ["fifo", "character-device", "directory"]
    assert "sha256" not in infos[0]
    for fd in (r, w, null, dirfd):
        os.close(fd)


def test_fdinfo_without_fd_is_a_clear_error(udsd_factory):
    d = start(udsd_factory)
    s = connect(os.path.join(d.tmp, "fdinfo.sock"))
    s.sendall(b"no fd here")
    assert json.loads(s.makefile("rb").readline()) == {
        "error": "no file descriptor: send one with SCM_RIGHTS"}


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def test_16_fds_in_one_message_are_all_closed(udsd_factory):
    d = start(udsd_factory, workers=1)
    (worker,) = d.workers()
    path = os.path.join(d.tmp, "fdinfo.sock")
    s = connect(path)
    s.sendall(b"x")  # this connection is now open in the worker
    s.makefile("rb").readline()
    before = fd_count(worker)
    fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(16)]
    socket.send_fds(s, [b"?"], fds)
    f = s.makefile("rb")
    assert len([json.loads(f.readline()) for _ in range(16)]) == 16
    assert fd_count(worker) == before  # none of the 16 stayed open in the worker
    s.close()
    for fd in fds:
        os.close(fd)


SO_PASSRIGHTS = 83  # Linux 6.16


def kernel_has_passrights():
    a, b = socket.socketpair()
    try:
        a.getsockopt(socket.SOL_SOCKET, SO_PASSRIGHTS)
        return True
    except OSError:
        return False
    finally:
        a.close()
        b.close()


def test_fds_sent_to_a_service_that_takes_none_are_refused_or_dropped(udsd_factory):
    """Where the kernel has SO_PASSRIGHTS the client cannot send them at all; else they are closed."""
    d = start(udsd_factory, workers=1)
    (worker,) = d.workers()
    s = connect(os.path.join(d.tmp, "kv.sock"))
    s.sendall(b"STATS\n")
    assert s.recv(100).startswith(b"STATS")
    before = fd_count(worker)
    fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(8)]
    if kernel_has_passrights():
        try:
            socket.send_fds(s, [b"STATS\n"], fds)
            raise AssertionError("the kernel took descriptors for a service that takes none")
        except PermissionError:
            pass
        s.sendall(b"STATS\n")
    else:
        socket.send_fds(s, [b"STATS\n"], fds)
    assert s.recv(100).startswith(b"STATS")
    assert fd_count(worker) == before
    # A service that takes them still gets them.
    (info,) = ask_fdinfo(os.path.join(d.tmp, "fdinfo.sock"), fds[:1])
    assert info["type"] == "character-device"
    for fd in fds:
        os.close(fd)


def test_kv_per_connection_state_and_partial_lines(udsd_factory):
    d = start(udsd_factory, workers=1)
    s = connect(os.path.join(d.tmp, "kv.sock"))
    f = s.makefile("rb")
    for chunk in (b"SET gre", b"eting hello world\nGET greeting\n", b"GET nothing\nDEL greeting\nGET greeting\n"):
        s.sendall(chunk)
    assert [f.readline() for _ in range(5)] == [
        b"OK\n", b"VALUE hello world\n", b"NOT_FOUND\n", b"DELETED\n", b"NOT_FOUND\n"]
    s.sendall(b"STATS\r\n")
    assert f.readline() == b"STATS commands=6 keys=0\n"
    other = connect(os.path.join(d.tmp, "kv.sock"))
    other.sendall(b"STATS\n")
    assert other.recv(100) == b"STATS commands=1 keys=0\n"


def test_seqpacket_keeps_message_boundaries(udsd_factory):
    d = start(udsd_factory)
    s = connect(os.path.join(d.tmp, "seq.sock"), kind=socket.SOCK_SEQPACKET)
    msgs = [b"one", b"two two", b"x" * 60000, b"3"]
    for m in msgs:
        s.send(m)
    assert [s.recv(65536) for _ in msgs] == msgs


def test_crash_in_on_data_takes_down_only_its_worker(udsd_factory):
    d = start(udsd_factory)
    before = set(d.workers())
    bystander = connect(d.sock)
    bystander.sendall(b"hi")
    assert bystander.recv(2) == b"hi"
    s = connect(d.sock)
    s.sendall(b"crash")
    assert s.recv(10) == b""
    for _ in deadline_loop(10, "the crashed worker to be replaced"):
        now = set(d.workers())
        if len(now) == 2 and now != before:
            break
    assert "killed by signal ABRT" in d.log
    assert echo(d.sock, b"still served") == b"still served"


def test_crash_loop_backs_off(udsd_factory):
    d = udsd_factory(CONF.format(workers=1) + "fail_init = yes\n")
    d.start(wait=False)
    for _ in deadline_loop(20, "four failed worker starts"):
        if d.log.count("exited with status 1") >= 4:
            break
    # Back-off doubles: four failures take 100+200+400 ms at least, and the master barely ran.
    with open("/proc/%d/stat" % d.proc.pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    assert cpu < 1.0
    assert d.log.count("exited with status 1") < 12
    assert "setup failed" in d.log
    assert d.stop() == 0


def test_bad_plugins_are_refused_clearly(udsd_factory):
    cases = [
        ("badversion.so", "is built for service API 999, udsd has 1"),
        ("nosymbol.so", "exports no udsd_service_v1"),
        ("missing.so", "missing.so: cannot open shared object file"),
    ]
    for so, msg in cases:
        d = udsd_factory("[listener a]\npath = {sock}\nservice = {build}/tests/plugins/%s\n" % so, name=so)
        for args in (("-t",), ()):
            r = d.run_check(*args)
            assert r.returncode == 1, r
            assert "%s:3: service: " % d.conf_path in r.stderr and msg in r.stderr, r.stderr
            assert not os.path.exists(d.sock)


def test_service_keys_are_checked_with_their_line(udsd_factory):
    d = udsd_factory("[listener a]\npath = {sock}\nservice = {build}/lib/examples/fdinfo.so\n"
                     "max_hash_size = lots\n")
    r = d.run_check("-t")
    assert r.returncode == 1
    assert "%s:4: max_hash_size: 'lots' is not a byte count" % d.conf_path in r.stderr
    d.write_config("[listener a]\npath = {sock}\nservice = echo\ncolour = blue\n")
    r = d.run_check("-t")
    assert "%s:4: unknown key 'colour' in [listener a]" % d.conf_path in r.stderr


def test_reload_to_a_broken_plugin_keeps_the_old_generation(udsd_factory):
    d = start(udsd_factory)
    pids = set(d.workers())
    d.write_config(CONF.format(workers=2).replace("tests/plugins/testsvc.so", "tests/plugins/badversion.so"))
    n = len(d.notify.messages)
    d.send(signal.SIGHUP)
    d.notify.wait("READY=1", after=d.notify.wait("RELOADING=1", after=n) + 1)
    assert "is built for service API 999, udsd has 1" in d.log
    assert "reload failed; still serving generation 1" in d.log
    assert set(d.workers()) == pids
    assert echo(d.sock, b"old plugin") == b"old plugin"


def test_seqpacket_empty_message_is_a_message(udsd_factory):
    """Defect 8: a 0-byte seqpacket message was taken for the end of the stream."""
    d = start(udsd_factory)
    s = connect(os.path.join(d.tmp, "seq.sock"), kind=socket.SOCK_SEQPACKET)
    # recv() gives b"" for both an empty message and EOF: credentials come with messages only.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    msgs = [b"", b"after", b""]
    for m in msgs:
        s.send(m)
    for m in msgs:
        data, ancillary, _, _ = s.recvmsg(65536, 256)
        assert (data, bool(ancillary)) == (m, True)
    s.send(b"still open")
    assert s.recv(100) == b"still open"


def vm_rss_mb(pid):
    with open("/proc/%d/status" % pid) as f:
        return next(int(l.split()[1]) // 1024 for l in f if l.startswith("VmRSS:"))


def test_plugin_stops_consuming_while_congested(udsd_factory):
    """udsd_conn_congested() from a plugin: 200 bytes asking for 12.5 MiB, held till read."""
    d = start(udsd_factory, workers=1)
    (worker,) = d.workers()
    s = connect(d.sock)
    s.sendall(b"\xfe")
    got = 0
    while got < 65536:  # the worker serves this client now
        got += len(s.recv(65536 - got))
    base = vm_rss_mb(worker)
    s.sendall(b"\xfe" * 199)
    select.select([s], [], [], 10)
    # The kernel's buffer and the 256 KiB mark, not 12.5 MiB; ASan's allocator decides there.
    if not re.search(r"[at]san", os.environ.get("UDSD_BIN", "")):
        assert vm_rss_mb(worker) < base + 4
    while got < 200 * 65536:
        n = len(s.recv(1 << 20))
        assert n, "closed after %d bytes" % got
        got += n
    assert got == 200 * 65536
    s.sendall(b"echo")
    assert s.recv(4) == b"echo"  # nothing was left over or duplicated


def readme_fdinfo_snippet():
    """The README's Python example for fdinfo, as a reader would copy it."""
    readme = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")
    with open(readme) as f:
        blocks = re.findall(r"^```python\n(.*?)^```", f.read(), re.S | re.M)
    (code,) = [b for b in blocks if "fdinfo.sock" in b]
    return code


def test_readme_fdinfo_snippet_runs(udsd_factory, tmp_path):
    import ast
    import subprocess
    import sys

    d = start(udsd_factory)
    content = b"snippet-host\n"
    p = tmp_path / "hostname"
    p.write_bytes(content)
    code = readme_fdinfo_snippet()
    assert '"/run/udsd/fdinfo.sock"' in code and '"/etc/hostname"' in code
    code = code.replace("/run/udsd/fdinfo.sock", os.path.join(d.tmp, "fdinfo.sock"))
    code = code.replace("/etc/hostname", str(p))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr.decode()
    # It prints the bytes object the service answered: the JSON the comment shows.
    answer = json.loads(ast.literal_eval(r.stdout.decode()))
    assert answer["type"] == "file" and answer["size"] == len(content)
    assert answer["sha256"] == hashlib.sha256(content).hexdigest()
    shown = re.search(r"# (\{.*\})", code).group(1)
    assert set(json.loads(shown.replace('"..."', '""'))) == set(answer)
