#!/bin/bash
# Boot this machine's own systemd as PID 1 of private pid/mount/cgroup/uts/ipc
# namespaces, over an overlay of the host root (host / read-only below, tmpfs
# above), so a test can drive real systemctl and nothing it does reaches the
# host.  After ../../shared/tools/systemd-ns.
#   ns.sh boot STATEDIR   boot; STATEDIR/pid holds systemd's host pid; directories
#                         in $BIND_DIRS are bind-mounted in at the same paths
#   ns.sh run STATEDIR CMD...
#   ns.sh stop STATEDIR
set -eu
cmd=$1 state=$2; shift 2

boot() {
	local cg2 cg log=$state/console.log
	cg2=$(findmnt -n -t cgroup2 -o TARGET | head -1)
	[ -n "$cg2" ] || { echo "no cgroup2 mount" >&2; exit 1; }
	cg=$cg2/udsd-test.$$
	mkdir -p "$state" "$cg"
	echo "$cg" > "$state/cgroup"
	: > "$log"
	cat > "$state/udsd-test.target" <<-UNIT
	[Unit]
	Description=udsd test target
	Requires=basic.target
	After=basic.target
	AllowIsolate=yes
	UNIT
	(
		echo $BASHPID > "$cg/cgroup.procs"
		exec unshare --pid --fork --mount --cgroup --uts --ipc --propagation private \
			env STATE="$state" LOG="$log" BIND_DIRS="${BIND_DIRS:-}" bash -c '
		set -e
		B=/run/udsd-test-root; mkdir -p $B
		mount -t tmpfs -o mode=755 udsdtest $B
		mkdir $B/upper $B/work $B/root
		mount -t overlay overlay -o lowerdir=/,upperdir=$B/upper,workdir=$B/work $B/root
		R=$B/root
		mount --rbind /dev $R/dev
		mount --bind "$LOG" $R/dev/console
		mount -t proc proc $R/proc
		mount --bind $R/proc/sys $R/proc/sys && mount -o remount,bind,ro $R/proc/sys
		mount -t sysfs -o ro sysfs $R/sys
		mount -t cgroup2 cgroup2 $R/sys/fs/cgroup
		mount -t tmpfs -o mode=755 tmpfs $R/run
		mount -t tmpfs -o mode=1777 tmpfs $R/tmp
		mkdir -p $R/etc/tmpfiles.d && ln -sf /dev/null $R/etc/tmpfiles.d/tmp.conf
		# The tree under test, at the same path, even where the guest has its own /tmp.
		for d in $BIND_DIRS; do mkdir -p $R$d && mount --rbind $d $R$d; done
		cp "$STATE/udsd-test.target" $R/etc/systemd/system/
		cd $R && mkdir -p .oldroot && pivot_root . .oldroot && umount -l /.oldroot && rmdir /.oldroot
		hostname udsd-test
		exec env -i container=other PATH=/usr/sbin:/usr/bin:/sbin:/bin TERM=dumb \
			/lib/systemd/systemd --unit=udsd-test.target --show-status=no
		'
	) >> "$log" 2>&1 < /dev/null &
	local unshare=$! pid= st=
	echo $unshare > "$state/unshare.pid"
	for _ in $(seq 200); do
		pid=$(awk '{print $1}' /proc/$unshare/task/$unshare/children 2>/dev/null || true)
		[ -n "$pid" ] && break
		sleep 0.05
	done
	[ -n "$pid" ] || { cat "$log" >&2; exit 1; }
	echo "$pid" > "$state/pid"
	for _ in $(seq 300); do
		st=$(nsenter -t "$pid" -a systemctl is-system-running 2>/dev/null || true)
		case "$st" in running|degraded) return 0;; esac
		kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
		sleep 0.1
	done
	echo "systemd did not finish booting ($st)" >&2
	exit 1
}

stop() {
	local pid unshare cg
	pid=$(cat "$state/pid" 2>/dev/null || true)
	unshare=$(cat "$state/unshare.pid" 2>/dev/null || true)
	[ -n "$pid" ] && kill -s SIGRTMIN+4 "$pid" 2>/dev/null || true
	for _ in $(seq 100); do
		[ -n "$unshare" ] && kill -0 "$unshare" 2>/dev/null || break
		sleep 0.1
	done
	[ -n "$unshare" ] && kill -0 "$unshare" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
	cg=$(cat "$state/cgroup" 2>/dev/null || true)
	[ -n "$cg" ] && [ -d "$cg" ] && find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null || true
	rmdir /run/udsd-test-root 2>/dev/null || true
	rm -f "$state/pid" "$state/unshare.pid" "$state/cgroup"
}

case $cmd in
boot) boot ;;
run) exec nsenter -t "$(cat "$state/pid")" -a "$@" ;;
stop) stop ;;
*) echo "usage: ns.sh boot|run|stop STATEDIR [CMD...]" >&2; exit 2 ;;
esac
