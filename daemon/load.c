/* SPDX-License-Identifier: MIT */
#include <sys/socket.h>

#include "daemon.h"

/*
 * How busy each worker thread is, which one takes the next client, how many
 * more clients there is room for, and the caps that bound it.  One balancer
 * is a set of targets (struct load_set) and its caps (struct load_caps), both
 * passed in: nothing here reads the master's globals, so that each pool can
 * have a balancer of its own.
 *
 * A thread's load is what it was handed over minus what it reported closed,
 * plus what waits for it in the master's queue (load_thread()).  Nothing
 * else caches it: a worker's load is the sum over its threads.  "closed" is
 * a counter the thread keeps in shared memory, so a close costs no message;
 * the master re-reads it once per loop round (load_refresh()).  A stale
 * count only overstates a load, never the room.
 */

unsigned
load_thread(const struct mchannel *ch)
{
	return (unsigned)(ch->sent - ch->closed) + (unsigned)ch->n_pending;
}

unsigned
load_worker(const struct mworker *w)
{
	unsigned load = 0;

	for (unsigned t = 0; w->chan && t < w->n_threads; t++)
		load += load_thread(&w->chan[t]);
	return load;
}

/*
 * The targets: every thread of the running workers of generation g's pool
 * that take clients (not one being replaced), a worker's threads next to
 * each other (load_room() and load_pick() rely on it).  set->targets has
 * room for every thread of n workers.
 */
void
load_set_build(struct load_set *set, struct mworker *workers, size_t n, const struct generation *g,
	       unsigned pool)
{
	size_t k = 0;

	for (size_t i = 0; i < n; i++) {
		struct mworker *w = &workers[i];

		if (w->state == WORKER_RUNNING && w->gen == g && w->pool == pool && !w->retiring)
			for (unsigned t = 0; t < w->n_threads; t++)
				set->targets[k++] = &w->chan[t];
	}
	set->n_targets = k;
}

/*
 * Re-read the threads' closed counters.  The worker writes them, so as far as
 * the master believes, a count never goes back and never passes what the
 * thread was sent: a lying worker can only make itself look busier.
 */
void
load_refresh(struct load_set *set, const struct status_worker *slots)
{
	for (size_t i = 0; i < set->n_targets; i++) {
		struct mchannel *ch = set->targets[i];
		const struct mworker *w = ch->worker;
		const struct status_thread *st = &slots[w->slot].threads[ch - w->chan];
		uint64_t closed = atomic_load((_Atomic uint64_t *)&st->closed);

		ch->closed = MIN(MAX(closed, ch->closed), ch->sent);
	}
}

/* The same for one worker that may be in no set (a draining one). */
void
load_refresh_worker(struct mworker *w, const struct status_worker *slot)
{
	for (unsigned t = 0; w->chan && t < w->n_threads; t++) {
		struct mchannel *ch = &w->chan[t];
		uint64_t closed = atomic_load((_Atomic uint64_t *)&slot->threads[t].closed);

		ch->closed = MIN(MAX(closed, ch->closed), ch->sent);
	}
}

/*
 * How many more clients the set can take: per worker, up to caps->per_worker
 * and what its threads' queues hold; in all, up to caps->total.
 */
unsigned
load_room(const struct load_set *set, const struct load_caps *caps)
{
	unsigned room = 0, used = 0;

	for (size_t i = 0; i < set->n_targets;) {
		const struct mworker *w = set->targets[i]->worker;
		unsigned load = 0, slots = 0;

		for (; i < set->n_targets && set->targets[i]->worker == w; i++) {
			load += load_thread(set->targets[i]);
			slots += CHANNEL_MAX_FDS - (unsigned)set->targets[i]->n_pending;
		}
		used += load;
		if (load < caps->per_worker)
			room += MIN(caps->per_worker - load, slots);
	}
	if (caps->total)
		room = used >= caps->total ? 0 : MIN(room, caps->total - used);
	return room;
}

/*
 * The least loaded thread of a worker under its cap, with room in its queue;
 * NULL if none.  A stuck worker fills up and stops being chosen.  The caller
 * checked the total cap with load_room().
 */
struct mchannel *
load_pick(struct load_set *set, const struct load_caps *caps)
{
	struct mchannel *best = NULL;
	const struct mworker *w = NULL;
	unsigned best_load = 0, worker_load = 0;

	/* Start where the last pick left off, so ties rotate over all threads. */
	set->next++;
	for (size_t k = 0; k < set->n_targets; k++) {
		struct mchannel *ch = set->targets[(set->next + k) % set->n_targets];
		unsigned load;

		if (ch->worker != w) {
			w = ch->worker;
			worker_load = load_worker(w);
		}
		if (worker_load >= caps->per_worker || ch->n_pending == CHANNEL_MAX_FDS)
			continue;
		load = load_thread(ch);
		if (!best || load < best_load) {
			best = ch;
			best_load = load;
		}
	}
	return best;
}

/*
 * The room_wanted handshake.  No message per close: only when the master has
 * stopped accepting for want of room does a close also wake it.  The master
 * stores room_wanted, then re-reads the closed counters and looks once more
 * (load_wait_for_room()); a thread adds to its counter, then loads
 * room_wanted (load_closed()) and, if set, sends CHANNEL_CLOSED at the end of
 * its round.  All four accesses are sequentially consistent, so at least one
 * side sees the other: either the master finds the room, or the thread wakes
 * it.
 */

/* In the master, with no room: true if it must wait for a wakeup, false if room turned up. */
bool
load_wait_for_room(struct load_set *set, const struct load_caps *caps, struct status *st)
{
	atomic_store(&st->room_wanted, 1);
	load_refresh(set, st->slots); /* after the store: see any close that raced with it */
	if (load_room(set, caps) > 0) {
		atomic_store(&st->room_wanted, 0);
		return false;
	}
	return true;
}

/* In the master, once it accepts again (or stops): no more wakeups. */
void
load_wait_end(struct status *st)
{
	if (atomic_load_explicit(&st->room_wanted, memory_order_relaxed))
		atomic_store(&st->room_wanted, 0);
}

/* In a worker thread, for each client it is done with: true if the master waits for this. */
bool
load_closed(struct status_thread *th, struct status *st)
{
	atomic_fetch_add(&th->closed, 1);
	return atomic_load(&st->room_wanted) != 0;
}

/*
 * Workers inherit the limit; each spends a few fds on itself (stdio, epoll,
 * channels), and each thread may hold, for the time of one read, as many
 * descriptors as a client can send in one message, on a listener that takes
 * them (seqpacket, or a service that asks for them).  Without room for
 * those, a worker at its cap gets MSG_CTRUNC on its own channel and the
 * clients in that message are lost.
 */
static unsigned
load_fd_reserve(const struct generation *g, unsigned pool)
{
	const struct config *c = g->config;
	unsigned threads = c->pools[pool].threads;
	bool fds = false;

	for (size_t i = 0; i < c->n_listeners; i++)
		fds |= c->listeners[i].pool == pool &&
		       (c->listeners[i].type == SOCK_SEQPACKET ||
			g->services[i].flags & UDSD_SERVICE_RECV_FDS);
	return 16 + 2 * threads + (fds ? threads * FDPASS_MAX_FDS : 0);
}

/*
 * The caps of the workers of generation g's pool.  A worker past its fd
 * limit cannot even receive a client: the kernel drops descriptors that do
 * not fit (MSG_CTRUNC).  So never hand a worker more clients than it can
 * hold open.
 */
void
load_caps_set(struct load_caps *ret, const struct generation *g, unsigned pool, unsigned fd_limit)
{
	const struct config_pool *p = &g->config->pools[pool];
	unsigned reserve = load_fd_reserve(g, pool);
	unsigned room = fd_limit > reserve ? fd_limit - reserve : 1;

	*ret = (struct load_caps){ .per_worker = MIN(p->max_connections, room),
				   .total = p->max_connections_total };
}
