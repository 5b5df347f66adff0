#!/bin/bash
# Build the libFuzzer targets with clang and run each for SECONDS (default 60),
# starting from the committed corpus (which holds every crash ever found, as a
# regression test).  Longer: bash tests/fuzz/run.sh 3600
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-60}
out=${FUZZ_OUT:-build-fuzz}
mkdir -p "$out"
cc="clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -D_GNU_SOURCE -Ilib -Idaemon"
$cc tests/fuzz/fuzz-http.c daemon/http-parser.c -o "$out/fuzz-http"
$cc tests/fuzz/fuzz-config.c lib/config.c $(pkg-config --cflags --libs inih) -o "$out/fuzz-config"
# channel.c holds both ends of the channel: the worker side brings the worker thread with it.
$cc tests/fuzz/fuzz-channel.c daemon/channel.c daemon/conn.c daemon/dgram.c daemon/worker.c daemon/log.c \
	daemon/status.c daemon/load.c daemon/credentials.c daemon/service.c daemon/plugin.c \
	daemon/peer.c daemon/echo.c daemon/http.c daemon/http-parser.c daemon/http-settings.c daemon/metrics.c \
	lib/config.c lib/fdpass.c lib/fd-util.c $(pkg-config --cflags --libs inih libsystemd) \
	-lpthread -ldl \
	-o "$out/fuzz-channel"
for t in http config channel; do
	mkdir -p "$out/corpus-$t"
	echo "fuzz-$t: ${secs}s"
	"$out/fuzz-$t" -max_total_time="$secs" -max_len=4096 -timeout=10 -print_final_stats=0 \
		"$out/corpus-$t" "tests/fuzz/corpus/$t" 2>&1 | grep -E "^Done [0-9]+ runs|ERROR|SUMMARY|Test unit written" || true
	# libFuzzer exits non-zero on a crash; PIPESTATUS keeps that from being hidden by grep.
	[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "fuzz-$t found a crash (see above); add it to tests/fuzz/corpus/$t"; exit 1; }
done
