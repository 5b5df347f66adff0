#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Run a command; fail loudly if any process it started outlives it.

    python3 tests/leftovers.py [--grace SECONDS] -- COMMAND [ARG...]

This process makes itself a child subreaper (PR_SET_CHILD_SUBREAPER), so a
process the command starts stays below it even when it double-forks, calls
setsid() or changes its process group, and its parent dies: the kernel
reparents such an orphan here, not to init.  Once the command has exited,
whatever is still alive below this process was started by the command and
left behind.  After a grace period for processes already on their way out
(a server sent SIGTERM just before its test ended), each one still alive is
named on stderr (pid, parent, process group, command line), killed with
SIGKILL and reaped, and the exit status is 1, whatever the command's own
status was; else it is the command's status.
"""
import ctypes
import os
import signal
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36


def set_subreaper():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def stat_of(pid):
    """(state, ppid, pgrp) of pid, or None once it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return fields[0], int(fields[1]), int(fields[2])
    except (OSError, IndexError, ValueError):
        return None


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            argv = f.read().rstrip(b"\0").split(b"\0")
        text = " ".join(a.decode(errors="replace") for a in argv)
        if text:
            return text
        with open("/proc/%d/comm" % pid) as f:
            return "[%s]" % f.read().strip()
    except OSError:
        return "?"


def descendants(root):
    """Pids of every live process below root (zombies are not alive)."""
    children = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        st = stat_of(int(name))
        if st and st[0] != "Z":
            children.setdefault(st[1], []).append(int(name))
    out, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return sorted(out)


def reap():
    """Reap every exited child (orphans handed to us included), without blocking."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def run(argv):
    """Run argv to its end, reaping orphans meanwhile; its exit status, shell-style."""
    proc = subprocess.Popen(argv)
    forward = lambda sig, _frame: proc.send_signal(sig)  # noqa: E731
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 1
        except InterruptedError:
            continue
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode if proc.returncode >= 0 else 128 - proc.returncode


def main():
    args = sys.argv[1:]
    grace = 5.0
    if args[:1] == ["--grace"]:
        grace, args = float(args[1]), args[2:]
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    set_subreaper()
    rc = run(args)
    me = os.getpid()
    end = time.monotonic() + grace
    left = descendants(me)
    while left and time.monotonic() < end:
        reap()
        time.sleep(0.05)  # polling the condition "nothing left", up to the deadline
        left = descendants(me)
    if not left:
        return rc
    print("\nleftovers: %d process(es) outlived `%s`:" % (len(left), " ".join(args)),
          file=sys.stderr)
    for pid in left:
        st = stat_of(pid)
        if st:
            print("leftovers:   pid %d (parent %d, process group %d): %s"
                  % (pid, st[1], st[2], cmdline(pid)), file=sys.stderr)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    end = time.monotonic() + 30
    while descendants(me) and time.monotonic() < end:
        reap()
        time.sleep(0.05)
    reap()
    print("leftovers: killed them; failing", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
