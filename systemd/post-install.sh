#!/bin/sh
# meson install, as a Debian maintainer script would: create the udsd user
# and /run/udsd now (systemd-sysusers and systemd-tmpfiles are idempotent).
# Skipped when staging into DESTDIR or without root: a package does it then.
set -e
[ -z "${DESTDIR:-}" ] && [ "$(id -u)" -eq 0 ] || exit 0
command -v systemd-sysusers >/dev/null && systemd-sysusers "$1/udsd.conf"
command -v systemd-tmpfiles >/dev/null && systemd-tmpfiles --create "$2/udsd.conf" || true
