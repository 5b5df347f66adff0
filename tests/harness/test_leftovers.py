# SPDX-License-Identifier: MIT
"""tests/leftovers.py, which runs every suite of tests/run-all.sh (issue 19): a process a
command leaves behind fails the command, named, and is killed; a clean command passes."""
import os
import signal
import subprocess
import sys

LEFTOVERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "leftovers.py")
PY = sys.executable


def run(code, *extra):
    """leftovers.py around a python program: (exit status, stderr)."""
    p = subprocess.run([PY, LEFTOVERS] + list(extra) + ["--", PY, "-c", code],
                       capture_output=True, text=True, timeout=120)
    return p.returncode, p.stderr


def gone(pid):
    """pid is gone; if the check let it live, kill it so that this test leaves nothing."""
    if not alive(pid):
        return True
    os.kill(pid, signal.SIGKILL)
    return False


def alive(pid):
    """pid exists and is not a zombie (a zombie is dead, its parent not yet told)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# Each leaker prints the pid it leaves behind, then exits 0: only the check can fail it.
LEAK_CHILD = """
import subprocess
p = subprocess.Popen(["sleep", "3600"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(p.pid, flush=True)
"""

# Double fork into a session of its own, as a daemon does: out of the test's process
# group and reparented away from the test; only a subreaper still finds it.
LEAK_DAEMON = """
import os, subprocess, sys
r, w = os.pipe()
if os.fork() == 0:
    os.setsid()
    p = subprocess.Popen(["sleep", "3601"], start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.write(w, b"%d" % p.pid)
    os._exit(0)
os.wait()
sys.stderr.write("leaked %s\\n" % os.read(r, 32).decode())
"""


def leaked_pid(err):
    return int([l for l in err.splitlines() if l.startswith("leaked ")][0].split()[1])


def test_a_clean_command_passes_with_its_own_status():
    assert run("pass") == (0, "")
    rc, err = run("import sys; sys.exit(3)")
    assert rc == 3 and "leftovers" not in err


def test_a_process_that_exits_after_its_parent_is_no_leftover():
    """A child still on its way out when the command ends (its test sent it SIGTERM) is
    waited for, not reported."""
    rc, err = run("import subprocess; subprocess.Popen(['sleep', '0.3'])")
    assert rc == 0 and "leftovers" not in err


def test_a_leaked_child_fails_the_command_named_and_killed():
    p = subprocess.run([PY, LEFTOVERS, "--grace", "1", "--", PY, "-c", LEAK_CHILD], capture_output=True,
                       text=True, timeout=120)
    pid = int(p.stdout.split()[0])
    assert gone(pid)
    assert p.returncode == 1, p.stderr
    assert "pid %d " % pid in p.stderr and "sleep 3600" in p.stderr, p.stderr


def test_a_daemonized_leak_is_found_too():
    rc, err = run(LEAK_DAEMON, "--grace", "1")
    pid = leaked_pid(err)
    assert gone(pid)
    assert rc == 1, err
    assert "pid %d " % pid in err and "sleep 3601" in err, err


def test_a_leak_fails_even_a_failing_command():
    rc, err = run(LEAK_DAEMON + "\nsys.exit(5)", "--grace", "1")
    assert gone(leaked_pid(err))
    assert rc == 1 and "sleep 3601" in err, err
