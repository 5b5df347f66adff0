/* SPDX-License-Identifier: MIT */
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <systemd/sd-login.h>
#include <unistd.h>

#include "daemon.h"
#include "fd-util.h"

/*
 * Who a client is, for admission in the master: its credentials and groups
 * (SO_PEERCRED, SO_PEERGROUPS), the systemd unit it runs in, and how many
 * clients of its uid the workers hold (max_connections_per_uid).  Nothing
 * here decides; accept.c does.
 */

/* Since Linux 6.5; Debian 12's headers predate it. */
#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif

const char *const refuse_reason_names[REFUSE_REASONS] = {
	[REFUSE_UID] = "allow_uids",
	[REFUSE_UNIT] = "allow_units",
	[REFUSE_PER_UID] = "max_connections_per_uid",
};

/*
 * The client's supplementary groups into small, or a heap buffer in *big: a
 * client may be in up to NGROUPS_MAX (65536) groups, and SO_PEERGROUPS answers
 * a short buffer with ERANGE and the length it needs.  On failure, none (the
 * caller then admits by uid and primary group only).
 */
static size_t
peer_groups(int fd, gid_t *small, size_t n_small, gid_t **big, const gid_t **ret)
{
	socklen_t len = (socklen_t)(n_small * sizeof(gid_t));

	*ret = small;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, small, &len) == 0)
		return len / sizeof(gid_t);
	if (errno != ERANGE || !(*big = malloc(len)) ||
	    getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, *big, &len) < 0)
		return 0;
	*ret = *big;
	return len / sizeof(gid_t);
}

/* Is this client, with credentials cred, on the listener's allow-lists?  Empty lists admit everyone. */
bool
peer_ids_allowed(const struct config_listener *cl, int fd, const struct ucred *cred)
{
	gid_t small[64];
	_cleanup_free_ gid_t *big = NULL;
	const gid_t *groups = NULL;
	size_t n = 0;

	/* The uid and primary gid first: the groups cost a system call (or two). */
	if (config_listener_admits(cl, cred->uid, cred->gid, NULL, 0))
		return true;
	if (cl->n_allow_gids > 0)
		n = peer_groups(fd, small, ELEMENTSOF(small), &big, &groups);
	return n > 0 && config_listener_admits(cl, cred->uid, cred->gid, groups, n);
}

/* The pid a pidfd names, in our pid namespace, from /proc/self/fdinfo; -ESRCH once it exited. */
static int
pidfd_pid(int pidfd, pid_t *ret)
{
	char path[64], line[128];
	FILE *f;
	int pid = 0;
	bool found = false;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", pidfd);
	f = fopen(path, "re");
	if (!f)
		return negative_errno();
	while (!found && fgets(line, sizeof(line), f))
		found = sscanf(line, "Pid:\t%d", &pid) == 1;
	fclose(f);
	if (!found)
		return -EOPNOTSUPP;
	/* -1: it exited; 0: it lives in a pid namespace we cannot see into. */
	if (pid <= 0)
		return -ESRCH;
	*ret = pid;
	return 0;
}

/* A pidfd is readable once its process exited: the pid it had may be anyone's now. */
static bool
pidfd_alive(int pidfd)
{
	struct pollfd p = { .fd = pidfd, .events = POLLIN };

	return poll(&p, 1, 0) == 0;
}

/*
 * The systemd unit the client's process runs in.  Race-free where the
 * kernel has SO_PEERPIDFD: the pidfd pins the process the client was when it
 * connected; its pid is read from the pidfd, its unit from that pid's cgroup,
 * and only if the pidfd's process is still alive afterwards was that pid
 * still it.  Without SO_PEERPIDFD, SO_PEERCRED's pid (which a process that
 * exited meanwhile may have passed on).
 */
int
peer_unit(int fd, pid_t pid, char **ret_unit)
{
	_cleanup_close_ int pidfd = -EBADF;
	socklen_t len = sizeof(pidfd);
	_cleanup_free_ char *unit = NULL;
	int r;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) < 0) {
		pidfd = -EBADF;
		if (errno != ENOPROTOOPT)
			return negative_errno();
	} else if ((r = pidfd_pid(pidfd, &pid)) < 0) {
		return r;
	}
	r = sd_pid_get_unit(pid, &unit);
	if (r < 0)
		return r;
	if (pidfd >= 0 && !pidfd_alive(pidfd))
		return -ESRCH;
	*ret_unit = TAKE_PTR(unit);
	return 0;
}

/* Clients of listener l's name and uid, held by workers now (their per-uid counts). */
unsigned
peer_open(const struct master *m, const struct config_listener *l, uid_t uid)
{
	unsigned n = 0;

	for (size_t i = 0; i < m->n_slots; i++) {
		const struct mworker *w = &m->workers[i];

		for (size_t k = 0; w->state != WORKER_FREE && k < w->n_uids; k++)
			if (w->uids[k].uid == uid &&
			    strcmp(w->gen->config->listeners[w->uids[k].listener].name, l->name) == 0)
				n += w->uids[k].n;
	}
	return n;
}

/* max_connections_per_uid: the worker that got the client holds one more of uid's. */
void
peer_count(struct mworker *w, unsigned listener, uid_t uid)
{
	for (size_t k = 0; k < w->n_uids; k++)
		if (w->uids[k].uid == uid && w->uids[k].listener == listener) {
			w->uids[k].n++;
			return;
		}
	if (w->n_uids == w->cap_uids) {
		size_t cap = MAX(8, 2 * w->cap_uids);
		struct uid_count *t = realloc(w->uids, cap * sizeof(*t));
		if (!t)
			return; /* uncounted: the limit errs on the client's side */
		w->uids = t;
		w->cap_uids = cap;
	}
	w->uids[w->n_uids++] = (struct uid_count){ .listener = (uint8_t)listener, .uid = uid, .n = 1 };
}

/* A worker says one of uid's clients of listener (in its config) closed. */
void
peer_gone(struct mworker *w, unsigned listener, uid_t uid)
{
	for (size_t k = 0; k < w->n_uids; k++)
		if (w->uids[k].uid == uid && w->uids[k].listener == listener) {
			if (--w->uids[k].n == 0)
				w->uids[k] = w->uids[--w->n_uids];
			return;
		}
}
