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
 * each round, and admission holds new clients back while any wait.  Each
 * pool has its own balancer and its own queue: a listener's clients go to
 * its pool's workers only.
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

/* The pool that serves a listener of the current config. */
static struct mpool *
listener_pool(struct master *m, unsigned listener)
{
	return &m->pools[m->gen->config->listeners[listener].pool];
}

/*
 * Queue a client to its pool's least loaded thread with room; NULL if there
 * is none.  max_connections_per_uid counts the client here, whichever way it
 * came: accepted now, waiting for a worker, or handed back by a draining or
 * dead worker (which stopped counting it).  uid is the client's when the
 * caller knows it, else (uid_t)-1 and it is asked for, before the queue may
 * send the fd away.
 */
static struct mchannel *
dispatch_try(struct master *m, struct mpool *p, int fd, unsigned listener, uid_t uid)
{
	struct mchannel *ch = load_pick(&p->load, &p->caps);
	struct ucred cred;
	socklen_t len = sizeof(cred);

	if (!ch)
		return NULL;
	if (m->gen->config->listeners[listener].max_per_uid) {
		if (uid == (uid_t)-1 && getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0)
			uid = cred.uid;
		if (uid != (uid_t)-1)
			peer_count(ch->worker, listener, uid);
	}
	channel_queue(m, ch, fd, listener); /* counts in its load at once: the next pick sees it */
	atomic_fetch_add_explicit(&status->listeners[listener].handoffs, 1, memory_order_relaxed);
	return ch;
}

/* No worker of the pool can take a client now: it waits here, first in, first out. */
static void
orphan_hold(struct master *m, struct mpool *p, struct orphan o)
{
	if (p->n_orphans == p->cap_orphans) {
		size_t cap = MIN(MAX(p->cap_orphans * 2, 16), m->max_orphans);
		struct orphan *t = cap > p->cap_orphans ? realloc(p->orphans, cap * sizeof(*t)) : NULL;

		if (!t) {
			safe_close(o.fd);
			m->orphans_dropped++; /* logged once per round, by accept_orphans_flush() */
			return;
		}
		p->orphans = t;
		p->cap_orphans = cap;
	}
	p->orphans[p->n_orphans++] = o;
}

/* Hand a client to a worker thread, or let it wait for one (only clients of a dead worker can). */
void
accept_dispatch(struct master *m, int fd, unsigned listener)
{
	struct mpool *p = listener_pool(m, listener);

	/* accept_listener() checks for room first: only clients of a dead worker find none. */
	if (!dispatch_try(m, p, fd, listener, (uid_t)-1))
		orphan_hold(m, p, (struct orphan){ .fd = fd, .listener = (uint8_t)listener,
						   .since = now_usec() });
}

/* A client's systemd unit is one of allow_units; the unit it is in, for the log. */
static bool
unit_allowed(const struct config_listener *cl, int fd, pid_t pid, char *unit, size_t size)
{
	_cleanup_free_ char *u = NULL;
	int r = peer_unit(fd, pid, &u);

	snprintf(unit, size, "%s", r < 0 ? strerror(-r) : u);
	for (size_t i = 0; r >= 0 && i < cl->n_allow_units; i++)
		if (strcmp(cl->allow_units[i], u) == 0)
			return true;
	return false;
}

/*
 * Admission: the listener's peer policy, in the master before a client
 * reaches any worker.  Returns -1 to admit, else why not (enum
 * refuse_reason), with the client's credentials (and unit) in *cred and
 * unit.  A listener without any policy costs no system call here.
 */
static int
admit(const struct master *m, const struct config_listener *cl, int fd, struct ucred *cred,
      char *unit, size_t size)
{
	socklen_t len = sizeof(*cred);

	if (cl->n_allow_uids == 0 && cl->n_allow_gids == 0 && cl->n_allow_units == 0 &&
	    cl->max_per_uid == 0)
		return -1;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, cred, &len) < 0)
		return REFUSE_UID;
	if (!peer_ids_allowed(cl, fd, cred))
		return REFUSE_UID;
	if (cl->n_allow_units && !unit_allowed(cl, fd, cred->pid, unit, size))
		return REFUSE_UNIT;
	if (cl->max_per_uid && peer_open(m, cl, cred->uid) >= cl->max_per_uid)
		return REFUSE_PER_UID;
	return -1;
}

static void
refuse(struct master *m, const struct config_listener *cl, unsigned l, int fd, int why,
       const struct ucred *cred, const char *unit)
{
	uint64_t now = now_usec();
	char detail[160];

	atomic_fetch_add_explicit(&status->refused, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&status->refused_by[why], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&status->listeners[l].refused_by[why], 1, memory_order_relaxed);
	safe_close(fd);
	/* At most one line a second, so a flood of refused clients cannot flood the log. */
	if (now - m->refused_logged_at < USEC_PER_SEC) {
		m->refused_unlogged++;
		return;
	}
	if (why == REFUSE_UNIT)
		snprintf(detail, sizeof(detail), "unit %s is not in allow_units", unit);
	else if (why == REFUSE_PER_UID)
		snprintf(detail, sizeof(detail), "max_connections_per_uid %u reached", cl->max_per_uid);
	else
		snprintf(detail, sizeof(detail), "not allowed");
	log_warning("listener %s: refused client uid=%u gid=%u pid=%d (%s)%s", cl->name,
		    (unsigned)cred->uid, (unsigned)cred->gid, (int)cred->pid, detail,
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
		atomic_fetch_add_explicit(&status->accept_backoffs, 1, memory_order_relaxed);
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
	struct mpool *p = listener_pool(m, l->index);
	unsigned avail = load_room(&p->load, &p->caps);
	struct ucred cred = { .pid = 0, .uid = (uid_t)-1, .gid = (gid_t)-1 };
	struct mchannel *ch;
	char unit[128] = "";
	int why;

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
		atomic_fetch_add_explicit(&status->listeners[l->index].accepted, 1,
					  memory_order_relaxed);
		why = admit(m, cl, fd, &cred, unit, sizeof(unit));
		if (why >= 0) {
			refuse(m, cl, l->index, fd, why, &cred, unit);
			continue;
		}
		ch = dispatch_try(m, p, fd, l->index, cred.uid);
		if (!ch)
			orphan_hold(m, p, (struct orphan){ .fd = fd, .listener = (uint8_t)l->index,
							   .since = now_usec() });
		avail--;
	}
}

/*
 * Whether pool p takes clients now: some worker has room (if none has, the
 * workers are asked to wake us when a client closes) and nobody waits ahead.
 */
static bool
pool_wants_clients(struct master *m, struct mpool *p, bool *waiting)
{
	bool serving = !m->stopping && p->load.n_targets > 0, room;

	load_refresh(&p->load, status->slots);
	room = serving && (load_room(&p->load, &p->caps) > 0 ||
			   !load_wait_for_room(&p->load, &p->caps, status));
	/* Clients that wait for a worker go first: accept nothing before them. */
	p->waiting_for_room = serving && !(room && p->n_orphans == 0);
	*waiting |= p->waiting_for_room;
	return room && p->n_orphans == 0;
}

/* Poll each listener only when a client accepted now can be handed to one of its pool's workers. */
void
accept_update_polling(struct master *m)
{
	bool waiting = false, paused = false;

	for (size_t i = 0; i < m->n_pools; i++) {
		struct mpool *p = &m->pools[i];
		bool was = p->polling;

		p->polling = pool_wants_clients(m, p, &waiting);
		/* Every worker full: the kernel's backlog holds the pool's new clients for now. */
		if (was && !p->polling && p->waiting_for_room && i < CONFIG_MAX_POOLS)
			atomic_fetch_add_explicit(&status->pools[i].accept_pauses, 1,
						  memory_order_relaxed);
	}
	/* room_wanted is one flag for every pool: cleared only once none waits. */
	m->waiting_for_room = waiting;
	if (!waiting)
		load_wait_end(status);
	if (m->accept_resume_at) {
		if (now_usec() < m->accept_resume_at)
			paused = true;
		else
			m->accept_resume_at = 0;
	}
	for (size_t i = 0; i < m->n_listeners; i++) {
		struct mlistener *l = &m->listeners[i];
		bool want = !paused && listener_pool(m, l->index)->polling;

		if (l->polling == want || l->type == SOCK_DGRAM)
			continue;
		struct epoll_event ev = { .events = want ? EPOLLIN : 0, .data.ptr = &l->watch };
		if (epoll_ctl(m->epfd, EPOLL_CTL_MOD, l->fd, &ev) == 0)
			l->polling = want;
	}
}

/* Hand pool p's waiting clients to its workers with room; close those that waited too long. */
static size_t
orphans_flush_pool(struct master *m, struct mpool *p, uint64_t now)
{
	size_t done = 0, expired = 0;

	for (; done < p->n_orphans; done++) {
		struct orphan *o = &p->orphans[done];

		if (now - o->since >= ORPHAN_WAIT_USEC) {
			safe_close(o->fd);
			expired++;
		} else if (!dispatch_try(m, p, o->fd, o->listener, (uid_t)-1)) {
			break;
		}
	}
	if (done == 0)
		return 0;
	p->n_orphans -= done;
	memmove(p->orphans, p->orphans + done, p->n_orphans * sizeof(*p->orphans));
	return expired;
}

/* Once per loop: every pool's waiting clients. */
void
accept_orphans_flush(struct master *m)
{
	uint64_t now = now_usec();
	size_t expired = 0;

	for (size_t i = 0; i < m->n_pools; i++)
		expired += orphans_flush_pool(m, &m->pools[i], now);
	if (expired)
		log_warning("closed %zu client(s) that waited %llus for a worker", expired,
			    (unsigned long long)(ORPHAN_WAIT_USEC / USEC_PER_SEC));
	if (m->orphans_dropped)
		log_warning("closed %zu client(s) of dead workers: %zu already wait for a worker",
			    m->orphans_dropped, m->max_orphans);
	m->orphans_dropped = 0;
}

/*
 * At a reload's switch: clients that waited in the old pools follow their
 * listener (and so its pool) into the new config, if it is still there.
 */
void
accept_orphans_remap(struct master *m, struct mpool *old, size_t n_old,
		     const struct generation *from)
{
	for (size_t k = 0; k < n_old; k++)
		for (size_t i = 0; i < old[k].n_orphans; i++) {
			struct orphan o = old[k].orphans[i];
			int l = listeners_remap(m->gen->config, from->config, o.listener);

			if (l < 0) {
				safe_close(o.fd);
				continue;
			}
			o.listener = (uint8_t)l;
			orphan_hold(m, listener_pool(m, (unsigned)l), o);
		}
}

void
accept_orphans_free(struct mpool *p)
{
	free(p->orphans);
	p->orphans = NULL;
	p->n_orphans = p->cap_orphans = 0;
}

void
accept_orphans_drop(struct master *m, const char *why)
{
	size_t n = 0;

	for (size_t k = 0; k < m->n_pools; k++) {
		struct mpool *p = &m->pools[k];

		for (size_t i = 0; i < p->n_orphans; i++)
			safe_close(p->orphans[i].fd);
		n += p->n_orphans;
		p->n_orphans = 0;
	}
	if (n)
		log_warning("%s: closing %zu client(s) that wait for a worker", why, n);
}

/*
 * Before a binary upgrade's exec: clients queued to a thread whose channel
 * would not take them (EAGAIN) wait here instead, and go with the state.
 */
void
accept_orphans_take_pending(struct master *m)
{
	uint64_t now = now_usec();

	for (size_t i = 0; i < m->n_slots; i++) {
		struct mworker *w = &m->workers[i];

		for (unsigned t = 0; w->state != WORKER_FREE && t < w->n_threads; t++) {
			struct mchannel *ch = &w->chan[t];

			for (size_t k = 0; k < ch->n_pending; k++) {
				int l = listeners_remap(m->gen->config, w->gen->config,
							ch->pending_listener[k]);
				if (l < 0)
					safe_close(ch->pending[k]);
				else
					orphan_hold(m, listener_pool(m, (unsigned)l),
						    (struct orphan){ .fd = ch->pending[k],
								     .listener = (uint8_t)l,
								     .since = now });
			}
			ch->n_pending = 0;
		}
	}
}
