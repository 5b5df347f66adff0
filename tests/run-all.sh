#!/bin/bash
# Every test udsd has: unit and integration tests on a normal build, again under
# ASan+UBSan (leaks included), the threaded tests under TSan, and short fuzz runs.
# Fails loudly: the first failing suite stops the run with its log on screen.
# Every suite runs under tests/leftovers.py: a process a test started that is still
# alive when its suite ends fails the run, named (pid and command line), and is killed.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tests/install-deps.sh

passed=0
failed=0

# Run one meson test invocation and add its counts to the totals.
run_suite() {
	local dir=$1; shift
	local out rc=0
	echo "=== $dir: meson test $*"
	out=$(/usr/bin/python3 tests/leftovers.py -- meson test -C "$dir" --print-errorlogs "$@" 2>&1) || rc=$?
	echo "$out" | grep -E '^ *[0-9]+/[0-9]+ |^(Ok|Fail|Timeout|Skipped):|^leftovers:' || true
	local ok fail to
	ok=$(echo "$out" | awk '/^Ok:/ {print $2}')
	fail=$(echo "$out" | awk '/^Fail:/ {print $2}')
	to=$(echo "$out" | awk '/^Timeout:/ {print $2}')
	passed=$((passed + ${ok:-0}))
	failed=$((failed + ${fail:-0} + ${to:-0}))
	if [ "$rc" -ne 0 ]; then
		echo "$out" | tail -150
		echo "$passed passed, $((failed > 0 ? failed : 1)) failed"
		exit 1
	fi
}

setup() {
	local dir=$1; shift
	[ -f "$dir/build.ninja" ] || meson setup "$dir" "$@" >/dev/null
	ninja -C "$dir" >/dev/null
}

setup build -Dtests=enabled
run_suite build --no-suite soak

# Sanitizers: any report fails the test that caused it (the fixtures read the logs).
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=66
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:exitcode=67
setup build-asan -Db_sanitize=address,undefined -Db_lundef=false
run_suite build-asan --no-suite systemd --no-suite bench --no-suite harness

export TSAN_OPTIONS=halt_on_error=1:exitcode=68
setup build-tsan -Db_sanitize=thread -Db_lundef=false
run_suite build-tsan --suite threads

if [ -x tests/fuzz/run.sh ]; then
	echo "=== fuzz (bounded)"
	if /usr/bin/python3 tests/leftovers.py -- bash tests/fuzz/run.sh 20; then passed=$((passed + 1)); else
		failed=$((failed + 1)); echo "$passed passed, $failed failed"; exit 1; fi
fi

echo "$passed passed, $failed failed"
