#!/bin/bash
# Install what building and testing udsd needs on Debian 12, only what is missing.
set -euo pipefail

pkgs=(meson ninja-build pkg-config gcc libc6-dev libsystemd-dev libinih-dev nettle-dev libcmocka-dev
      python3 python3-pytest python3-prometheus-client socat netcat-openbsd curl nginx-light systemd util-linux procps
      clang libclang-rt-14-dev valgrind mandoc haproxy iproute2 python3-yaml)
[ "${1:-}" = "--build-only" ] && pkgs=(meson ninja-build pkg-config gcc libc6-dev libsystemd-dev
      libinih-dev nettle-dev netcat-openbsd socat curl)

missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing: ${missing[*]}" >&2
SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
