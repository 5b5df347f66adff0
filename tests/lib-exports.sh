#!/bin/bash
# libudsd exports the udsd_-prefixed API and nothing else (lib/libudsd.map),
# udsd.pc names the plugin directory, and a program and a service build
# against the library as its users would: pkg-config, the installed header.
set -euo pipefail
build=$(cd "${1:?usage: lib-exports.sh BUILDDIR SOURCEDIR}" && pwd)
src=$(cd "$2" && pwd)
lib=$build/lib/libudsd.so
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
passed=0
fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { passed=$((passed + 1)); echo "ok - $*"; }

# Symbol lines "VALUE TYPE NAME[@@VERSION]"; type A is the version node itself.
nm -D --defined-only "$lib" | awk '$2 != "A" { sub(/@.*/, "", $3); print $3 }' > "$tmp/exports"
[ -s "$tmp/exports" ] || fail "libudsd.so exports nothing"
if grep -v '^udsd_' "$tmp/exports"; then fail "libudsd.so exports the names above, not udsd_*"; fi
ok "libudsd.so exports only udsd_* ($(wc -l < "$tmp/exports") symbols)"
for f in udsd_fdpass_send udsd_fdpass_recv udsd_parse_duration udsd_keys_parse; do
	grep -qx "$f" "$tmp/exports" || fail "libudsd.so does not export $f"
done
ok "the public functions are there"

export PKG_CONFIG_PATH=$build/meson-uninstalled
# A sanitized build's library needs its runtime loaded first: the program gets the same flags.
san=
readelf -d "$lib" | grep -q 'libasan' && san="-fsanitize=address,undefined"
readelf -d "$lib" | grep -q 'libtsan' && san="-fsanitize=thread"
pkg-config --exists udsd || fail "udsd-uninstalled.pc not found"
plugindir=$(PKG_CONFIG_PATH=$build/meson-private pkg-config --variable=plugindir udsd)
[ "$plugindir" = "$(PKG_CONFIG_PATH=$build/meson-private pkg-config --variable=libdir udsd)/udsd" ] ||
	fail "udsd.pc plugindir is '$plugindir'"
ok "udsd.pc: plugindir=$plugindir"

# A program that passes a descriptor with the library, linked the pkg-config way.
cat > "$tmp/prog.c" <<'C'
#include <fcntl.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>
#include <fdpass.h>
int main(void)
{
	int sv[2], fd = open("/dev/null", O_RDONLY), got = -1;
	size_t n = 0;
	char c;
	if (fd < 0 || socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) < 0) return 1;
	if (udsd_fdpass_send(sv[0], "x", 1, &fd, 1) != 1) return 2;
	if (udsd_fdpass_recv(sv[1], &c, 1, &got, 1, &n) != 1 || n != 1 || got < 0) return 3;
	puts("passed");
	return 0;
}
C
# shellcheck disable=SC2046
cc -Wall -Werror $san -o "$tmp/prog" "$tmp/prog.c" $(pkg-config --cflags --libs udsd) ||
	fail "a program does not build against libudsd"
[ "$(LD_LIBRARY_PATH=$build/lib "$tmp/prog")" = passed ] || fail "the program's fd passing failed"
ok "a program builds against libudsd and passes an fd with it"
# A generic name no longer resolves from the library: a program of its own may use it.
printf 'int safe_close(int fd);\nint main(void) { return safe_close(-1); }\n' > "$tmp/generic.c"
# shellcheck disable=SC2046
if cc $san -o "$tmp/generic" "$tmp/generic.c" $(pkg-config --libs udsd) 2>/dev/null; then
	fail "safe_close resolves from libudsd"
fi
ok "safe_close is not libudsd's to give"
# A service builds against the header alone (its udsd_* calls resolve in udsd at dlopen).
# shellcheck disable=SC2046
cc -Wall -Werror -shared -fPIC -o "$tmp/kv.so" "$src/lib/examples/kv.c" $(pkg-config --cflags udsd) ||
	fail "the kv example does not build with pkg-config's flags"
ok "a service builds with pkg-config --cflags udsd"
echo "$passed passed, 0 failed"
