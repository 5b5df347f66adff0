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
loop_pid=
# A failed check exits at once: the background client loop must not outlive it.
trap '[ -z "$loop_pid" ] || kill $loop_pid 2>/dev/null || true; "$here/ns.sh" stop "$state"; rm -rf "$state"' EXIT
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
# An administrator's edits survive a reinstall, as a Debian conffile would.
run meson install -C "$build" --no-rebuild --quiet
check "a reinstall keeps the edited udsd.conf" run grep -qx 'workers = 2' "$conf"
check "a reinstall puts the new default beside it" run cmp -s "$here/../../etc/udsd.conf" "$conf.dist"
check "systemd-analyze verify accepts the units" run systemd-analyze verify udsd.socket udsd.service
sc daemon-reload
# Hardening (issue 16): systemd's exposure score of the shipped unit, as loaded.
score=$(run systemd-analyze security --no-pager udsd.service | sed -n 's/.*Overall exposure level for udsd.service: \([0-9.]*\).*/\1/p')
echo "systemd-analyze security udsd.service: ${score:-none}"
check "systemd-analyze security: exposure ${score:-none} <= 2.5" awk -v s="$score" 'BEGIN { exit !(s != "" && s + 0 <= 2.5) }'

sc start udsd.socket
check "udsd.socket is active" test "$(sc is-active udsd.socket)" = active
check "udsd.service waits for a client" test "$(sc is-active udsd.service || true)" = inactive
check "socket file is systemd's, mode 0660" test "$(stat -c %a "$sock")" = 660

check "first client starts udsd and is served" test "$(get /healthz)" = ok
check "udsd.service is active/running" test "$(prop ActiveState udsd)/$(prop SubState udsd)" = active/running
pid1=$(prop MainPID udsd)
check "/status: generation 1" grep -q '"generation":1,' <(get /status)
# The shipped config runs workers as the user sysusers created; the master stays root.
check "the workers run as udsd (ps -o user)" test "$(run ps -o user= --ppid "$pid1" | tr -d ' ' | sort -u)" = udsd
check "the master runs as root" test "$(run ps -o user= -p "$pid1" | tr -d ' ')" = root

# An access log (off by default) in the unit's LogsDirectory, written by the udsd workers.
run sed -i '/^\[listener main\]$/a access_log = /var/log/udsd/access.log' "$conf"

sc reload udsd
wait_for "StatusText shows the new generation" bash -c "[[ \"\$($here/ns.sh run $state systemctl show -P StatusText udsd)\" == *'(generation 2)'* ]]"
check "/status: generation 2 serves" grep -q '"generation":2,' <(get /status)
check "same main pid after reload" test "$(prop MainPID udsd)" = "$pid1"
# curl runs on the host, outside the guest's pid namespace: its pid is unknown there ("-").
access_logged() { run grep -q '^[0-9T:.-]*Z 0 - "GET /status HTTP/1.1" 200 [0-9]* [0-9]*$' /var/log/udsd/access.log; }
wait_for "the access log has the request" access_logged
check "the access log is 0600 (UMask=0077)" test "$(run stat -c %a /var/log/udsd/access.log)" = 600

# The operator's commands (issue 16): udsctl on the shipped admin socket, the metrics
# through a real parser, and a reload that fails visibly, with its reason kept.
udsctl=/usr/local/sbin/udsctl
check "the admin socket is root's, mode 0600" test "$(stat -c '%U %a' "$root/run/udsd/admin.sock")" = "root 600"
st=$(run $udsctl status)
echo "$st"
check "udsctl status: the main listener" grep -qE '^main +/run/udsd/udsd.sock ' <<<"$st"
check "udsctl status: 2 workers of generation 2, pids of the unit" test "$(grep -cE '^ +2 default ' <<<"$st")" = 2
for pid in $(grep -E '^ +2 default ' <<<"$st" | awk '{print $4}'); do
	check "udsctl status: worker $pid is in udsd.service's cgroup" bash -c "$here/ns.sh run $state cat /proc/$pid/cgroup | grep -q '/udsd.service$'"
done
check "udsctl status --json: generation 2" test "$(run $udsctl status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["generation"])')" = 2
run $udsctl metrics > "$state/metrics.txt"
check "udsctl metrics: valid OpenMetrics, generation 2" /usr/bin/python3 -c '
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
f = {m.name: m for m in text_string_to_metric_families(open(sys.argv[1]).read())}
assert f["udsd_generation"].samples[0].value == 2
assert f["udsd_reloads"].samples[0].labels == {"result": "ok"} and f["udsd_reloads"].samples[0].value == 1
assert any(s.labels["listener"] == "main" for s in f["udsd_listener_backlog"].samples)
' "$state/metrics.txt"
run cp "$conf" "$conf.good"
run sh -c "printf '\n[listener broken]\npath = relative.sock\n' >> $conf"
line=$(wc -l < "$root$conf")
check "systemctl reload fails on a broken config" bash -c "! $here/ns.sh run $state systemctl reload udsd"
reason="reload failed: $conf:$line: path: 'relative.sock' must be absolute, @abstract or tcp:HOST:PORT"
run systemctl status --no-pager udsd > "$state/status.txt" || true
cat "$state/status.txt"
check "systemctl status shows the file:line reason" grep -qF "Status: \"$reason; " "$state/status.txt"
check "udsctl reload: the same reason on stderr, exit 1" bash -c "! $here/ns.sh run $state $udsctl reload 2> $state/reload.err"
check "udsctl reload: the reason" grep -qxF "udsctl: $reason" "$state/reload.err"
check "the old generation serves on" grep -q '"generation":2,' <(get /status)
text=$(prop StatusText udsd)
check "StatusText keeps the reason after more requests" test "${text#"$reason; "}" != "$text"
run mv "$conf.good" "$conf"
check "systemctl reload succeeds once the config is fixed" sc reload udsd
# systemd reads udsd's STATUS= and udsctl's exit apart: the first may come in a moment later.
wait_for "StatusText: the failure is gone, generation 3 serves" bash -c "[[ \"\$($here/ns.sh run $state systemctl show -P StatusText udsd)\" == '2 workers (generation 3)'* ]]"

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
# Structured journal fields (issue 16): journalctl -o json has what each line is about.
cat > "$state/journal-has.py" <<'PY'
import json, sys
# Does an entry e of journalctl -o json satisfy the expression argv[1]?
sys.exit(not any(eval(sys.argv[1], {}, {"e": json.loads(l)}) for l in sys.stdin if l.strip()))
PY
journal_match() { run journalctl --no-pager -o json -u udsd.service | python3 "$state/journal-has.py" "$1"; }
journal_has() { check "journal: $1" journal_match "$2"; }
journal_has "a worker's line carries UDSD_POOL, UDSD_GENERATION, UDSD_WORKER_PID" \
	'"running as uid=" in e["MESSAGE"] and e.get("UDSD_POOL") == "default" and e.get("UDSD_GENERATION") == "2" and e.get("UDSD_WORKER_PID") == e["_PID"]'
journal_has "the refusal carries UDSD_LISTENER and UDSD_PEER_UID, at warning priority" \
	'"refused client" in e["MESSAGE"] and e.get("UDSD_LISTENER") == "units" and e.get("UDSD_PEER_UID") == "0" and e["PRIORITY"] == "4"'
journal_has "the master's line about a worker's exit carries its pid and generation" \
	'e["MESSAGE"].startswith("worker " + e.get("UDSD_WORKER_PID", "x") + " exited with status 0") and e.get("UDSD_GENERATION") == "1" and e["_PID"] == "'"$pid1"'"'
run mv "$conf.orig" "$conf"
sc reload udsd
wait_for "the units listener is gone" test ! -e "$root/run/udsd/units.sock"

sc stop udsd
check "stop: inactive" test "$(prop ActiveState udsd)" = inactive
check "stop: Result=success" test "$(prop Result udsd)" = success
check "socket file survives the service" test -S "$sock"
check "no udsd process left" bash -c "! $here/ns.sh run $state pgrep -x udsd"

# systemd counts every start, restarts and activations too, against StartLimitBurst=
# (5 in 10 s by default): more than that fail the unit whatever the service does, so
# every start from here on comes at the pace the shipped limit allows -- the first
# one too, which a fast machine reaches well within 2 s of the activation above.
pace() { sleep 2.3; } # pacing: one start per StartLimitIntervalSec/StartLimitBurst, not synchronisation
pace
check "a new client re-activates udsd" test "$(get /hello)" = '{"message":"Hello from your HTTP server on a Unix socket!","url":"/hello"}'
check "a new main pid" test "$(prop MainPID udsd)" != "$pid1"
# Nothing dropped (issue 14): a listener udsd binds itself waits in systemd's fd store
# while udsd restarts or after a crash, so no client of it is refused.
loop=$here/client-loop.py
own=$root/run/udsd/own.sock
run sh -c "printf '\n[listener own]\npath = /run/udsd/own.sock\nservice = http\n' >> $conf"
pace
sc restart udsd
check "the own listener serves" test "$(curl -sf --max-time 10 --unix-socket "$own" http://localhost/healthz)" = ok
# Clients over both sockets while udsd restarts 10 times.
counts() { cat "$state/loop.out"; }
class() { counts | tr ' ' '\n' | grep -A1 -x "$1" | tail -1; }
run rm -f /tmp/loop.stop
run python3 "$loop" /tmp/loop.stop /run/udsd/udsd.sock /run/udsd/own.sock > "$state/loop.out" < /dev/null &
loop_pid=$!
for i in $(seq 10); do
	pace
	sc restart udsd
done
run touch /tmp/loop.stop
wait $loop_pid
echo "10 restarts under load: $(counts)"
check "10 restarts: the unit is active" test "$(prop ActiveState udsd)" = active
check "10 restarts: the clients got answers" test "$(class ok)" -gt 100
for c in refused enoent reset eof wrong timeout other; do
	check "10 restarts under load: 0 $c" test "$(class $c)" = 0
done
check "own's socket came back from the fd store" bash -c "$here/ns.sh run $state journalctl --no-pager -o cat -u udsd.service | grep -q 'listener own: /run/udsd/own.sock taken back from systemd.s fd store'"

# The master killed (SIGKILL, the workers die with it): Restart=on-failure starts it again,
# and meanwhile both sockets keep their backlogs.  Clients in flight are cut; none is refused.
pid_before=$(prop MainPID udsd)
restarts_before=$(prop NRestarts udsd)
run rm -f /tmp/loop.stop
run python3 "$loop" /tmp/loop.stop /run/udsd/udsd.sock /run/udsd/own.sock > "$state/loop.out" < /dev/null &
loop_pid=$!
pace
sc kill -s KILL --kill-who=main udsd
wait_for "a killed master is started again" bash -c "[ \"\$($here/ns.sh run $state systemctl show -P NRestarts udsd)\" -gt $restarts_before ] && [ \"\$($here/ns.sh run $state systemctl show -P ActiveState udsd)\" = active ]"
check "a new main pid after the kill" test "$(prop MainPID udsd)" != "$pid_before"
check "the restarted udsd serves own" test "$(curl -sf --max-time 10 --unix-socket "$own" http://localhost/healthz)" = ok
run touch /tmp/loop.stop
wait $loop_pid
echo "killed master under load: $(counts)"
check "killed master: 0 refused" test "$(class refused)" = 0
check "killed master: 0 enoent" test "$(class enoent)" = 0

# Binary upgrade in place (issue 14): a new file at udsd's path, SIGUSR2 to the main
# process.  Same MainPID; under load, no client error and no long-lived connection cut.
exe=/usr/local/sbin/udsd
pid_before=$(prop MainPID udsd)
upgrades() { run journalctl --no-pager -o cat -u udsd.service | grep -c '^upgraded: udsd' || true; }
n_upgrades=$(upgrades)
run rm -f /tmp/loop.stop
run python3 "$loop" /tmp/loop.stop --long 20 /run/udsd/udsd.sock /run/udsd/own.sock > "$state/loop.out" < /dev/null &
loop_pid=$!
for i in 1 2 3; do
	run sh -c "cp $build/daemon/udsd $exe.new && mv $exe.new $exe"
	sc kill -s USR2 --kill-who=main udsd
	wait_for "upgrade $i done" bash -c "[ \"\$($here/ns.sh run $state journalctl --no-pager -o cat -u udsd.service | grep -c '^upgraded: udsd')\" -ge $((n_upgrades + i)) ] && [ \"\$($here/ns.sh run $state systemctl show -P SubState udsd)\" = running ]"
done
run touch /tmp/loop.stop
wait $loop_pid
echo "3 upgrades under load: $(counts)"
check "upgrades: same MainPID" test "$(prop MainPID udsd)" = "$pid_before"
check "upgrades: the clients got answers" test "$(class ok)" -gt 100
for c in refused enoent reset eof wrong timeout other; do
	check "upgrades under load: 0 $c" test "$(class $c)" = 0
done
check "upgrades: every long-lived connection kept" grep -q 'long_kept 20 of 20' "$state/loop.out"
# A binary that fails its check: nothing changes, and StatusText says why.
run sh -c "printf '#!/bin/sh\\necho broken >&2\\nexit 1\\n' > $exe.new && chmod 755 $exe.new && mv $exe.new $exe"
sc kill -s USR2 --kill-who=main udsd
wait_for "StatusText says the upgrade failed" bash -c "[[ \"\$($here/ns.sh run $state systemctl show -P StatusText udsd)\" == *'upgrade failed: /usr/local/sbin/udsd -t: exit status 1: broken'* ]]"
check "a failed upgrade: same MainPID" test "$(prop MainPID udsd)" = "$pid_before"
check "a failed upgrade: still serving" test "$(get /healthz)" = ok
run sh -c "cp $build/daemon/udsd $exe.new && mv $exe.new $exe"

# The listener leaves the config: its stored socket is closed and dropped from the store.
run sed -i '/^\[listener own\]$/,$d' "$conf"
pace
sc restart udsd
check "a stored socket whose listener is gone is dropped" bash -c "$here/ns.sh run $state journalctl --no-pager -o cat -u udsd.service | grep -q 'socket of listener own in systemd.s fd store: no such listener'"
check "its file no longer answers" bash -c "! curl -sf --max-time 5 --unix-socket $own http://localhost/healthz"

# On demand: exit_idle_time makes udsd leave whenever nobody is connected; systemd
# keeps the socket and the next client starts it again.  The shipped units as they
# are: udsd spaces its idle exits so that starts stay within the unit's start limit
# (StartLimitBurst=5 in StartLimitIntervalSec=10s), which it reads over D-Bus.
sc stop udsd.service
run sed -i 's/^exit_idle_time = off$/exit_idle_time = 1s/' "$conf"
check "exit_idle_time is set for the test" run grep -qx 'exit_idle_time = 1s' "$conf"
pace
idle_exits() { run journalctl --no-pager -o cat -u udsd.service | grep -c '^idle: stopping' || true; }
before=$(idle_exits)
# Issue 14, failure 2: one client every 1.5 s for 20 s with exit_idle_time = 1s.  Before,
# udsd left after each client: 11 of 16 refused, udsd.socket failed (start-limit-hit).
run python3 "$loop" /tmp/none --every 1.5 --count 14 /run/udsd/udsd.sock > "$state/loop.out" < /dev/null
echo "a client every 1.5 s, exit_idle_time = 1s: $(counts); idle exits: $(( $(idle_exits) - before ))"
check "a client every 1.5 s: all 14 answered" test "$(class ok)" = 14
check "a client every 1.5 s: 0 refused" test "$(class refused)" = 0
check "udsd read its unit's start limit" bash -c "$here/ns.sh run $state journalctl --no-pager -o cat -u udsd.service | grep -q 'start limit: 5 starts in 10000ms; an idle exit comes 2200ms after the start at the earliest'"
check "udsd left when idle between clients" test "$(( $(idle_exits) - before ))" -ge 3
check "udsd.socket still listens" test "$(sc is-active udsd.socket)" = active
check "no start limit hit" test "$(prop Result udsd.socket)/$(prop Result udsd)" = success/success

# 200 clients at random moments around the exits: none may be lost.
run sed -i 's/^exit_idle_time = 1s$/exit_idle_time = 100ms/' "$conf"
before=$(idle_exits)
check "200 clients around idle exits, all served" python3 "$here/idle-clients.py" "$sock" 200
exits=$(( $(idle_exits) - before ))
echo "idle exits during the run: $exits"
check "udsd exited when idle and was re-activated again and again" test "$exits" -ge 5
wait_for "idle udsd.service goes inactive with Result=success" bash -c "[ \"\$($here/ns.sh run $state systemctl show -P ActiveState udsd)/\$($here/ns.sh run $state systemctl show -P Result udsd)\" = inactive/success ]"
check "the socket still listens" test "$(sc is-active udsd.socket)" = active
check "udsd.socket never hit the start limit" test "$(prop Result udsd.socket)" = success

sc stop udsd.socket udsd.service
run journalctl --no-pager -o cat -u udsd.service | tail -20
echo "$passed passed, 0 failed"
