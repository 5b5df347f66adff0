#!/bin/bash
# udsd under a real systemd (PID 1 of private namespaces, see ns.sh): the
# shipped units, installed by "meson install" inside the guest, driven with
# systemctl: socket activation, reload, stop, re-activation.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:?usage: test-systemd.sh BUILDDIR}" && pwd)
[ "$(id -u)" -eq 0 ] || { echo "SKIP: needs root"; exit 77; }
unshare --pid --fork --mount true 2>/dev/null || { echo "SKIP: cannot unshare"; exit 77; }

state=$(mktemp -d /tmp/udsd-systemd.XXXXXX)
trap '"$here/ns.sh" stop "$state"; rm -rf "$state"' EXIT
run() { "$here/ns.sh" run "$state" "$@"; }
sc() { run systemctl "$@"; }
prop() { sc show -P "$1" "$2"; }
fail() {
	echo "FAIL: $*" >&2
	run journalctl --no-pager -n 60 -o short-monotonic >&2 || true
	exit 1
}
passed=0
check() { # check DESCRIPTION COMMAND...: one counted assertion
	local what=$1; shift
	"$@" || fail "$what"
	passed=$((passed + 1))
	echo "ok - $what"
}
# Poll for a state systemd reaches asynchronously (reload is async before systemd 253).
wait_for() {
	local what=$1; shift
	for _ in $(seq 100); do "$@" && { passed=$((passed + 1)); echo "ok - $what"; return 0; }; sleep 0.1; done
	fail "$what"
}

# The guest has its own /tmp and /run: bring the source and build trees in.
BIND_DIRS="$(cd "$here/../.." && pwd) $build" "$here/ns.sh" boot "$state"
root=/proc/$(cat "$state/pid")/root
sock=$root/run/udsd/udsd.sock
get() { curl -sf --max-time 10 --unix-socket "$sock" "http://localhost$1"; }

run meson install -C "$build" --no-rebuild --quiet
run ldconfig
conf=/usr/local/etc/udsd/udsd.conf
run sed -i 's/^workers = auto/workers = 2/; s/^threads = 4/threads = 2/' "$conf"
check "systemd-analyze verify accepts the units" run systemd-analyze verify udsd.socket udsd.service
sc daemon-reload

sc start udsd.socket
check "udsd.socket is active" test "$(sc is-active udsd.socket)" = active
check "udsd.service waits for a client" test "$(sc is-active udsd.service || true)" = inactive
check "socket file is systemd's, mode 0660" test "$(stat -c %a "$sock")" = 660

check "first client starts udsd and is served" test "$(get /healthz)" = ok
check "udsd.service is active/running" test "$(prop ActiveState udsd)/$(prop SubState udsd)" = active/running
pid1=$(prop MainPID udsd)
check "/status: generation 1" grep -q '"generation":1,' <(get /status)

sc reload udsd
wait_for "StatusText shows the new generation" bash -c "[[ \"\$($here/ns.sh run $state systemctl show -P StatusText udsd)\" == *'(generation 2)'* ]]"
check "/status: generation 2 serves" grep -q '"generation":2,' <(get /status)
check "same main pid after reload" test "$(prop MainPID udsd)" = "$pid1"

# allow_units: a client in allowed.service is served, one in another unit refused.  The
# master reads each client's unit from its pidfd (SO_PEERPIDFD) and cgroup.
run cp "$conf" "$conf.orig"
run sh -c "printf '\n[listener units]\npath = /run/udsd/units.sock\nservice = echo\nmode = 0666\nallow_units = allowed.service\n' >> $conf"
sc reload udsd
# The master accepts and closes a refused client at once: its send or its read fails.
units_client='import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect("/run/udsd/units.sock")
try: s.sendall(b"ping"); print("served" if s.recv(4) == b"ping" else "refused")
except (ConnectionResetError, BrokenPipeError): print("refused")'
wait_for "the units listener is bound" test -S "$root/run/udsd/units.sock"
check "a client of allowed.service is served" test "$(run systemd-run -q --wait --pipe --unit=allowed.service python3 -c "$units_client")" = served
check "a client of other.service is refused" test "$(run systemd-run -q --wait --pipe --unit=other.service python3 -c "$units_client")" = refused
check "the refusal names the unit" bash -c "$here/ns.sh run $state journalctl --no-pager -o cat -u udsd.service | grep -q 'unit other.service is not in allow_units'"
check "/status counts it" grep -q '"allow_units":1' <(get /status)
run mv "$conf.orig" "$conf"
sc reload udsd
wait_for "the units listener is gone" test ! -e "$root/run/udsd/units.sock"

sc stop udsd
check "stop: inactive" test "$(prop ActiveState udsd)" = inactive
check "stop: Result=success" test "$(prop Result udsd)" = success
check "socket file survives the service" test -S "$sock"
check "no udsd process left" bash -c "! $here/ns.sh run $state pgrep -x udsd"

check "a new client re-activates udsd" test "$(get /hello)" = '{"message":"Hello from your HTTP server on a Unix socket!","url":"/hello"}'
check "a new main pid" test "$(prop MainPID udsd)" != "$pid1"
# On demand: exit_idle_time makes udsd leave whenever nobody is connected; systemd
# keeps the socket and the next client starts it again.  200 clients at random
# moments around the exit: none may be lost.  The drop-ins lift systemd's start
# rate limits, which are for crash loops, not for a service restarted on purpose
# several times a second.
sc stop udsd.service
run sed -i 's/^exit_idle_time = off$/exit_idle_time = 100ms/' "$conf"
check "exit_idle_time is set for the test" run grep -qx 'exit_idle_time = 100ms' "$conf"
run mkdir -p /etc/systemd/system/udsd.service.d /etc/systemd/system/udsd.socket.d
run sh -c 'printf "[Unit]\nStartLimitIntervalSec=0\n" > /etc/systemd/system/udsd.service.d/test.conf'
run sh -c 'printf "[Socket]\nTriggerLimitIntervalSec=0\n" > /etc/systemd/system/udsd.socket.d/test.conf'
sc daemon-reload
idle_exits() { run journalctl --no-pager -o cat -u udsd.service | grep -c '^idle: stopping' || true; }
before=$(idle_exits)
check "200 clients around idle exits, all served" python3 "$here/idle-clients.py" "$sock" 200
exits=$(( $(idle_exits) - before ))
echo "idle exits during the run: $exits"
check "udsd exited when idle and was re-activated many times" test "$exits" -ge 20
wait_for "idle udsd.service goes inactive with Result=success" bash -c "[ \"\$($here/ns.sh run $state systemctl show -P ActiveState udsd)/\$($here/ns.sh run $state systemctl show -P Result udsd)\" = inactive/success ]"
check "the socket still listens" test "$(sc is-active udsd.socket)" = active

sc stop udsd.socket udsd.service
run journalctl --no-pager -o cat -u udsd.service | tail -20
echo "$passed passed, 0 failed"
