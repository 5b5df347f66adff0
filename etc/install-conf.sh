#!/bin/sh
# Install the default configuration without overwriting an administrator's:
# an existing udsd.conf stays, the new default goes beside it as udsd.conf.dist
# (what dpkg would call udsd.conf.dpkg-dist).
set -e
src=$1 dir=${DESTDIR:-}$2
mkdir -p "$dir"
if [ -e "$dir/udsd.conf" ] && ! cmp -s "$src" "$dir/udsd.conf"; then
	install -m 0644 "$src" "$dir/udsd.conf.dist"
	echo "udsd: kept your $2/udsd.conf; the new default is $2/udsd.conf.dist"
else
	install -m 0644 "$src" "$dir/udsd.conf"
fi
