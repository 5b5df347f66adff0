#!/bin/sh
# The dynamic symbol list of the udsd executable, from the service API header:
# every function udsd.h declares with UDSD_API, and nothing else.
# Usage: dynamic-list.sh udsd.h OUTPUT
set -eu
{
	echo '{'
	sed -n 's/^UDSD_API [^(]*[ *]\(udsd_[a-z0-9_]*\)(.*/\t\1;/p' "$1" | sort -u
	echo '};'
} > "$2"
