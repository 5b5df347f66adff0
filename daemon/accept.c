/* SPDX-License-Identifier: MIT */
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "daemon.h"
#include "fd-util.h"

/*
 * The master's front door: accept, admission (allow-lists, room, the
 * fd-exhaustion pause) and the hand-off of each client to a worker thread
 * chosen by load.c.  Clients taken back from a dead worker that no worker
 * can take yet wait here too (the orphans): it is the same hand-off, retried
 * each round, and admission holds new clients back while any wait.  With
 * pools, each pool's dispatch will have such a queue of its own.
 */

/* Accepts per readiness event; what is left waits for the next epoll round. */
#define ACCEPT_BATCH 64
/* How long to stop accepting after EMFILE/ENFILE/ENOBUFS/ENOMEM. */
#define ACCEPT_BACKOFF_USEC (100 * USEC_PER_MSEC)
/*
 * Clients of a dead worker wait in the master for a worker that can take them
 * (the respawn, with backoff), at most this long and at most max_orphans at a
 * time: past either bound they are closed, and the log says how many.
 */
#define ORPHAN_WAIT_USEC (10 * USEC_PER_SEC)

/* Queue a client to the least loaded thread with room; false if there is none. */
static bool
dispatch_try(struct master *m, int fd, unsigned listener)
{
	struct mchannel *ch = load_pick(&m->load, &m->caps);

	if (!ch)
		return false;
	channel_queue(m, ch, fd, listener); /* counts in its load at once: the next pick sees it */
	return true;
}

/* No worker can take a client now: it waits here, first in, first out. */
static void
orphan_hold(struct master *m, int fd, unsigned listener)
{
	if (m->n_orphans == m->max_orphans) {
		safe_close(fd);
		m->orphans_dropped++; /* logged once per round, by accept_orphans_flush() */
		return;
	}
	m->orphans[m->n_orphans++] = (struct orphan){ .fd = fd, .listener = (uint8_t)listener,
						      .since = now_usec() };
}

/* Hand a client to a worker thread, or let it wait for one (only clients of a dead worker can). */
void
accept_dispatch(struct master *m, int fd, unsigned listener)
{
	/* accept_listener() checks for room first: only clients of a dead worker find none. */
	if (!dispatch_try(m, fd, listener))
		orphan_hold(m, fd, listener);
}

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

/* Is this client on the listener's allow-lists?  Empty lists admit everyone. */
static bool
peer_allowed(const struct config_listener *cl, int fd)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	gid_t small[64];
	_cleanup_free_ gid_t *big = NULL;
	const gid_t *groups = NULL;
	size_t n = 0;

	if (cl->n_allow_uids == 0 && cl->n_allow_gids == 0)
		return true;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return false;
	if (cl->n_allow_gids > 0)
		n = peer_groups(fd, small, ELEMENTSOF(small), &big, &groups);
	return config_listener_admits(cl, cred.uid, cred.gid, groups, n);
}

static void
refuse(struct master *m, const struct config_listener *cl, int fd)
{
	struct ucred cred = { 0 };
	socklen_t len = sizeof(cred);
	uint64_t now = now_usec();

	atomic_fetch_add_explicit(&status->refused, 1, memory_order_relaxed);
	(void)getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len);
	safe_close(fd);
	/* At most one line a second, so a flood of refused clients cannot flood the log. */
	if (now - m->refused_logged_at < USEC_PER_SEC) {
		m->refused_unlogged++;
		return;
	}
	log_warning("listener %s: refused client uid=%u gid=%u pid=%d (not allowed)%s", cl->name,
		    (unsigned)cred.uid, (unsigned)cred.gid, (int)cred.pid,
		    m->refused_unlogged ? " (and more not logged)" : "");
	m->refused_logged_at = now;
	m->refused_unlogged = 0;
}

/*
 * Out of descriptors or memory: the pending connection stays in the kernel
 * backlog.  Stop polling the listeners for a moment instead of spinning on a
 * level-triggered listener that accept() cannot serve (libuv reserves an fd
 * for this; a pause is simpler and loses nothing).
 */
static void
accept_backoff(struct master *m, int err)
{
	if (m->accept_resume_at == 0)
		log_warning("accept: %s; pausing accepts for %llums", strerror(err),
			    (unsigned long long)(ACCEPT_BACKOFF_USEC / USEC_PER_MSEC));
	m->accept_resume_at = now_usec() + ACCEPT_BACKOFF_USEC;
	accept_update_polling(m);
}

void
accept_listener(struct master *m, struct mlistener *l)
{
	const struct config_listener *cl = &m->gen->config->listeners[l->index];
	unsigned avail = load_room(&m->load, &m->caps);

	for (unsigned i = 0; i < ACCEPT_BATCH && avail > 0; i++) {
		int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			switch (errno) {
			case EINTR:
			case ECONNABORTED:
			case EPROTO:
			case EPERM:
				continue;
			case EAGAIN:
				return;
			case EMFILE:
			case ENFILE:
			case ENOBUFS:
			case ENOMEM:
				accept_backoff(m, errno);
				return;
			default:
				log_error("listener %s: accept: %s", cl->name, strerror(errno));
				accept_backoff(m, errno);
				return;
			}
		}
		if (!peer_allowed(cl, fd)) {
			refuse(m, cl, fd);
			continue;
		}
		accept_dispatch(m, fd, l->index);
		avail--;
	}
}

/* Poll the listeners only when a client accepted now can be handed to someone. */
void
accept_update_polling(struct master *m)
{
	struct load_set *set = &m->load;
	const struct load_caps *caps = &m->caps;
	bool serving = !m->stopping && set->n_targets > 0, room, want;

	load_refresh(set, status->slots);
	/* With no room, the workers are asked to wake us (for the orphans too). */
	room = serving && (load_room(set, caps) > 0 || !load_wait_for_room(set, caps, status));
	/* Clients that wait for a worker go first: accept nothing before them. */
	want = room && m->n_orphans == 0;
	m->waiting_for_room = serving && !want;
	if (!m->waiting_for_room)
		load_wait_end(status);

	if (m->accept_resume_at) {
		if (now_usec() < m->accept_resume_at)
			want = false;
		else
			m->accept_resume_at = 0;
	}
	for (size_t i = 0; i < m->n_listeners; i++) {
		struct mlistener *l = &m->listeners[i];

		if (l->polling == want || l->type == SOCK_DGRAM)
			continue;
		struct epoll_event ev = { .events = want ? EPOLLIN : 0, .data.ptr = &l->watch };
		if (epoll_ctl(m->epfd, EPOLL_CTL_MOD, l->fd, &ev) == 0)
			l->polling = want;
	}
}

/* Once per loop: hand waiting clients to workers with room; close those that waited too long. */
void
accept_orphans_flush(struct master *m)
{
	uint64_t now = now_usec();
	size_t done = 0, expired = 0;

	for (; done < m->n_orphans; done++) {
		struct orphan *o = &m->orphans[done];

		if (now - o->since >= ORPHAN_WAIT_USEC) {
			safe_close(o->fd);
			expired++;
		} else if (!dispatch_try(m, o->fd, o->listener)) {
			break;
		}
	}
	m->n_orphans -= done;
	memmove(m->orphans, m->orphans + done, m->n_orphans * sizeof(*m->orphans));
	if (expired)
		log_warning("closed %zu client(s) that waited %llus for a worker", expired,
			    (unsigned long long)(ORPHAN_WAIT_USEC / USEC_PER_SEC));
	if (m->orphans_dropped)
		log_warning("closed %zu client(s) of dead workers: %zu already wait for a worker",
			    m->orphans_dropped, m->max_orphans);
	m->orphans_dropped = 0;
}

/* At a reload's switch: waiting clients follow their listener into the new config, if there. */
void
accept_orphans_remap(struct master *m, const struct generation *from)
{
	size_t n = 0;

	for (size_t i = 0; i < m->n_orphans; i++) {
		struct orphan o = m->orphans[i];
		int l = listeners_remap(m->gen->config, from->config, o.listener);

		if (l < 0) {
			safe_close(o.fd);
			continue;
		}
		o.listener = (uint8_t)l;
		m->orphans[n++] = o;
	}
	m->n_orphans = n;
}

void
accept_orphans_drop(struct master *m, const char *why)
{
	if (m->n_orphans)
		log_warning("%s: closing %zu client(s) that wait for a worker", why, m->n_orphans);
	for (size_t i = 0; i < m->n_orphans; i++)
		safe_close(m->orphans[i].fd);
	m->n_orphans = 0;
}
