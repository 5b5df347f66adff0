/* SPDX-License-Identifier: MIT */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon.h"
#include "fd-util.h"

/*
 * The master's worker pool: forking workers, reaping them, respawning with
 * backoff, killing the hung, the dynamic pool (workers_min..workers_max),
 * and handing a dead worker's unserved clients on.  Everything here runs in
 * the master but worker_child(), the first thing a new worker runs.
 */

/* Respawn delay after a crash: doubles from the first to the last, reset after a stable minute. */
#define BACKOFF_FIRST_USEC (100 * USEC_PER_MSEC)
#define BACKOFF_MAX_USEC (10 * USEC_PER_SEC)
#define STABLE_USEC (60 * USEC_PER_SEC)

/* A generation of config c and its services s, which it owns from now on, even on failure. */
int
generation_new(struct master *m, struct config *c, struct service *s, struct generation **ret)
{
	struct generation *g = calloc(1, sizeof(*g));

	if (!g) {
		service_free(s, c->n_listeners);
		config_free(c);
		return -ENOMEM;
	}
	g->id = ++m->last_gen_id; /* never reused, even by a reload that failed */
	g->refs = 1; /* the master's own reference while it is current */
	g->config = c;
	g->services = s;
	*ret = g;
	return 0;
}

void
generation_unref(struct generation *g)
{
	if (!g || --g->refs > 0)
		return;
	service_free(g->services, g->config->n_listeners);
	config_free(g->config);
	free(g);
}

/*
 * Every thread of g's workers serves, and each of g's pools has as many
 * workers as wanted (sizes[i], or its config's workers when sizes is NULL).
 */
bool
generation_ready(const struct master *m, const struct generation *g, const struct mpool *sizes)
{
	unsigned ready = 0, total = 0, per_pool[CONFIG_MAX_POOLS] = { 0 };

	for (size_t i = 0; i < m->n_slots; i++) {
		const struct mworker *w = &m->workers[i];

		if (w->state != WORKER_RUNNING || w->gen != g || w->retiring)
			continue;
		ready += w->ready;
		total += w->n_threads;
		per_pool[w->pool]++;
	}
	for (size_t i = 0; i < g->config->n_pools; i++)
		if (per_pool[i] < (sizes ? sizes[i].size : g->config->pools[i].workers))
			return false;
	return ready == total;
}

/* The workers that take clients changed: each pool's balancer's targets follow. */
void
pool_targets_update(struct master *m)
{
	for (size_t i = 0; i < m->n_pools; i++)
		load_set_build(&m->pools[i].load, m->workers, m->n_slots, m->gen, (unsigned)i);
}

/* The caps of a pool (load_caps_set()), and a word when the fd limit lowers one. */
static void
pool_caps_update(struct master *m, struct mpool *p)
{
	const struct config_pool *c = &m->gen->config->pools[p->index];

	load_caps_set(&p->caps, m->gen, p->index, m->fd_limit);
	if (p->caps.per_worker < c->max_connections)
		log_notice("pool %s: max_connections %u is above what the open file limit allows; using %u per worker",
			   c->name, c->max_connections, p->caps.per_worker);
}

/*
 * The current generation's pools, fresh: sizes, caps, no backoff.  Clients
 * that waited for a worker of old's pools follow their listeners into the
 * new ones (old is NULL at start).
 */
void
pools_setup(struct master *m, const struct generation *old)
{
	const struct config *c = m->gen->config;
	struct mpool prev[CONFIG_MAX_POOLS];
	size_t n_prev = m->n_pools;

	memcpy(prev, m->pools, sizeof(prev));
	for (size_t i = 0; i < c->n_pools; i++) {
		struct mpool *p = &m->pools[i];

		*p = (struct mpool){ .index = (unsigned)i, .size = c->pools[i].workers };
		p->load.targets = calloc(STATUS_MAX_SLOTS * c->pools[i].threads,
					 sizeof(*p->load.targets));
		if (!p->load.targets)
			fatalx("out of memory");
		pool_caps_update(m, p);
	}
	m->n_pools = c->n_pools;
	pool_targets_update(m);
	if (old)
		accept_orphans_remap(m, prev, n_prev, old);
	for (size_t i = 0; i < n_prev; i++) {
		free(prev[i].load.targets);
		accept_orphans_free(&prev[i]);
	}
}

/* Workers wanted now, in all pools. */
unsigned
pools_wanted(const struct master *m)
{
	unsigned n = 0;

	for (size_t i = 0; i < m->n_pools; i++)
		n += m->pools[i].size;
	return n;
}

unsigned
pools_crashes(const struct master *m)
{
	unsigned n = 0;

	for (size_t i = 0; i < m->n_pools; i++)
		n += m->pools[i].crashes;
	return n;
}

unsigned
pool_count(const struct master *m, enum worker_state state)
{
	unsigned n = 0;

	for (size_t i = 0; i < m->n_slots; i++)
		n += m->workers[i].state == state;
	return n;
}

static int
cmp_int(const void *a, const void *b)
{
	return *(const int *)a - *(const int *)b;
}

/* In a new worker: close every fd but stdio and this worker's channel ends. */
static void
close_inherited(const struct mworker *w)
{
	int keep[CONFIG_MAX_THREADS + 1];
	unsigned n = 0, from = 3;

	for (unsigned t = 0; t < w->n_threads; t++)
		keep[n++] = w->chan[t].peer;
	qsort(keep, n, sizeof(int), cmp_int);
	keep[n] = -1;
	for (unsigned i = 0; i <= n; i++) {
		unsigned to = keep[i] < 0 ? ~0U : (unsigned)keep[i] - 1;
		if (keep[i] < 0 || (unsigned)keep[i] > from)
			close_range(from, to, 0);
		if (keep[i] >= 0)
			from = (unsigned)keep[i] + 1;
	}
}

static _noreturn_ void
worker_child(struct mworker *w)
{
	int channels[CONFIG_MAX_THREADS];
	struct worker_spec spec = {
		.config = w->gen->config,
		.pool = &w->gen->config->pools[w->pool],
		.pool_index = w->pool,
		.services = w->gen->services,
		.slot = w->slot,
		.generation = w->gen->id,
		.channels = channels,
	};

	int r = status_restrict(w->slot);
	if (r < 0) {
		log_error("worker %u.%u: protecting the status mapping: %s", w->gen->id, w->index,
			  strerror(-r));
		_exit(EXIT_FAILURE);
	}
	close_inherited(w);
	for (unsigned t = 0; t < w->n_threads; t++)
		channels[t] = w->chan[t].peer;
	worker_main(&spec);
}

/* max_requests plus a random share of max_requests_jitter, so that workers part ways. */
static unsigned
max_requests_jittered(const struct config_pool *c)
{
	unsigned r = 0;

	if (!c->max_requests)
		return 0;
	if (c->max_requests_jitter && getrandom(&r, sizeof(r), GRND_NONBLOCK) != sizeof(r))
		r = (unsigned)now_usec();
	return c->max_requests + (c->max_requests_jitter ? r % (c->max_requests_jitter + 1) : 0);
}

/* A worker of generation g's pool; only workers of the current generation take clients. */
int
pool_spawn(struct master *m, struct generation *g, unsigned pool, unsigned index)
{
	struct mworker *w = NULL;
	int r;

	for (size_t i = 0; i < STATUS_MAX_SLOTS && !w; i++)
		if (m->workers[i].state == WORKER_FREE)
			w = &m->workers[i];
	if (!w)
		return -EAGAIN;
	/* Slots are taken lowest first: the master's loops stop at the highest ever used. */
	m->n_slots = MAX(m->n_slots, (unsigned)(w - m->workers) + 1);
	*w = (struct mworker){ .slot = (unsigned)(w - m->workers), .pool = pool, .index = index,
			       .gen = g, .n_threads = g->config->pools[pool].threads,
			       .started_usec = now_usec(), .chan_version = CHANNEL_VERSION };
	r = channel_open(m, w);
	if (r >= 0)
		r = channel_send_dgram(w, g == m->pending ? m->pending_listeners : m->listeners,
				       g->config->n_listeners);
	if (r < 0) {
		channel_close(m, w);
		return r;
	}
	w->max_requests = max_requests_jittered(&g->config->pools[pool]);

	struct status_worker *sw = &status->slots[w->slot];
	memset(sw, 0, sizeof(*sw));
	sw->generation = g->id;
	sw->pool = pool;
	snprintf(sw->pool_name, sizeof(sw->pool_name), "%s", g->config->pools[pool].name);
	sw->index = index;
	sw->n_threads = w->n_threads;
	sw->started_usec = w->started_usec;

	pid_t pid = fork();
	if (pid < 0) {
		r = negative_errno();
		channel_close(m, w);
		return r;
	}
	if (pid == 0)
		worker_child(w);

	w->pid = pid;
	w->state = WORKER_RUNNING;
	g->refs++;
	atomic_store(&sw->pid, pid);
	pool_targets_update(m);
	log_debug("worker %u.%u of pool %s started as pid %d", g->id, index,
		  g->config->pools[pool].name, (int)pid);
	return 0;
}

/*
 * Kill a worker on purpose (a deadline passed, its generation was abandoned,
 * it hangs): once, and its death is then no news.  Whoever calls this logs why.
 */
void
pool_kill(struct mworker *w)
{
	if (w->state == WORKER_FREE || w->killed)
		return;
	w->killed = true;
	kill(w->pid, SIGKILL);
}

/*
 * Where a client of listener index of generation from goes in generation to,
 * if it is to move there at a message boundary: the listener of the same
 * name, of the same type and with the same service, whose old service said
 * it can move (UDSD_SERVICE_MIGRATE).  -ENOENT if there is none.
 */
int
pool_migrate_index(const struct generation *to, const struct generation *from, unsigned index)
{
	const struct config_listener *a = &from->config->listeners[index], *b;
	int l = listeners_remap(to->config, from->config, index);

	if (l < 0)
		return l;
	b = &to->config->listeners[l];
	if (!(from->services[index].flags & UDSD_SERVICE_MIGRATE) || a->type != b->type ||
	    strcmp(a->service, b->service) != 0)
		return -ENOENT;
	return l;
}

/*
 * A client a draining worker handed back goes out as a fresh client would
 * (it passed the allow-list already), to the listener of the same name in
 * the current config; with no worker to take it, it waits as a dead
 * worker's clients do (accept_dispatch()).  A client that closed while its
 * fd was in flight costs the new worker one read of EOF.  False if closed.
 */
bool
pool_migrated(struct master *m, const struct mworker *from, int fd, unsigned listener)
{
	int l;

	if (m->stopping) {
		safe_close(fd);
		return false;
	}
	/*
	 * Only what it was asked for: a worker runs plugin code, and a
	 * compromised one could otherwise hand over any socket of its own
	 * making, as a client of any listener, to a pool of another user that
	 * trusts the master's admission.  migrate[] is set only by a drain
	 * that migrates (a running worker has none), and stays while a dead
	 * worker's last hand-backs are read (reaped()).
	 */
	if (!from->n_migrate || !from->migrate[listener] ||
	    from->gen->config->listeners[listener].pool != from->pool) {
		log_error("worker %d handed back a client it was not asked for (listener %s); "
			  "closing it", (int)from->pid, from->gen->config->listeners[listener].name);
		safe_close(fd);
		return false;
	}
	l = pool_migrate_index(m->gen, from->gen, listener);
	if (l < 0) {
		safe_close(fd);
		return false;
	}
	accept_dispatch(m, fd, (unsigned)l);
	atomic_fetch_add_explicit(&status->migrated, 1, memory_order_relaxed);
	return true;
}

/* Which of w's listeners may hand their clients over to the current generation. */
static void
migrate_set(const struct master *m, struct mworker *w, bool migrate)
{
	const struct config *c = w->gen->config;
	bool any = false;

	for (size_t i = 0; i < c->n_listeners; i++) {
		w->migrate[i] = migrate && !m->stopping && pool_migrate_index(m->gen, w->gen, (unsigned)i) >= 0;
		any |= w->migrate[i];
	}
	w->n_migrate = any ? (unsigned)c->n_listeners : 0;
}

/*
 * In the master: the worker takes no more clients, finishes what it has and
 * exits; with migrate, its clients at a message boundary come back to be
 * handed to the current generation.  A draining worker told again without
 * migrate (a stop) stops handing clients back and drains the rest.
 */
void
pool_drain(struct master *m, struct mworker *w, bool migrate)
{
	if (w->state == WORKER_DRAINING && !migrate && w->n_migrate) {
		migrate_set(m, w, false);
		channel_drain(m, w);
		return;
	}
	if (w->state != WORKER_RUNNING)
		return;
	w->state = WORKER_DRAINING;
	w->kill_at = now_usec() + w->gen->config->shutdown_timeout_usec;
	migrate_set(m, w, migrate);
	pool_targets_update(m);
	channel_drain(m, w);
}

/* Hand an unserved client of a dead worker to a living one, or keep it waiting; false if closed. */
static bool
redispatch(struct master *m, const struct mworker *dead, int fd, unsigned listener)
{
	int l = listeners_remap(m->gen->config, dead->gen->config, listener);

	if (l < 0 || m->stopping) {
		safe_close(fd);
		return false;
	}
	accept_dispatch(m, fd, (unsigned)l);
	return true;
}

/*
 * A dead worker's unserved clients (channel_reclaim()) go to the living, or
 * wait for the respawn when nobody else can take them.
 */
static size_t
orphans_waiting(const struct master *m)
{
	size_t n = 0;

	for (size_t i = 0; i < m->n_pools; i++)
		n += m->pools[i].n_orphans;
	return n;
}

static void
recover_clients(struct master *m, struct mworker *w)
{
	size_t waiting = orphans_waiting(m), dropped = m->orphans_dropped, handed;

	handed = channel_reclaim(m, w, redispatch);
	if (w->gen == m->gen)
		atomic_fetch_add_explicit(&status->pools[w->pool].reclaimed, handed,
					  memory_order_relaxed);
	/* What accept_dispatch() could not place waits, or was closed past the bound. */
	waiting = orphans_waiting(m) - waiting;
	handed -= m->orphans_dropped - dropped + waiting;
	if (handed)
		log_notice("handed %zu unserved client(s) of worker %d to other workers", handed,
			   (int)w->pid);
	if (waiting)
		log_notice("%zu unserved client(s) of worker %d wait for a worker", waiting,
			   (int)w->pid);
}

static void
schedule_respawn(struct mpool *p, struct mworker *w, uint64_t now)
{
	uint64_t *b = &p->backoff_usec[w->index];

	if (now - w->started_usec >= STABLE_USEC)
		*b = 0;
	*b = *b ? MIN(*b * 2, BACKOFF_MAX_USEC) : BACKOFF_FIRST_USEC;
	p->respawn_at[w->index] = now + *b;
	p->crashes++;
	atomic_fetch_add_explicit(&status->pools[p->index].crashes, 1, memory_order_relaxed);
	if (*b >= BACKOFF_MAX_USEC)
		log_error("pool %s: worker %u crash loop: respawning every %llus",
			  w->gen->config->pools[w->pool].name, w->index,
			  (unsigned long long)(*b / USEC_PER_SEC));
}

/* A worker of a reload's new generation died before the switch: the reload fails. */
static void
pending_worker_exited(struct master *m, const struct mworker *w, int wstatus)
{
	if (w->gen != m->pending || w->killed || m->pending_error[0])
		return;
	if (WIFSIGNALED(wstatus))
		snprintf(m->pending_error, sizeof(m->pending_error),
			 "worker %d killed by signal %s before generation %u was ready",
			 (int)w->pid, sigabbrev_np(WTERMSIG(wstatus)), w->gen->id);
	else
		snprintf(m->pending_error, sizeof(m->pending_error),
			 "worker %d exited with status %d before generation %u was ready",
			 (int)w->pid, WEXITSTATUS(wstatus), w->gen->id);
}

/*
 * Only a clean exit of a worker asked to leave, and the master's own SIGKILL,
 * are expected; any other death is an error, draining or not.
 */
static void
reaped(struct master *m, struct mworker *w, int wstatus)
{
	bool leaving = w->state == WORKER_DRAINING || m->stopping;
	bool clean = WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0;
	uint64_t now = now_usec();

	if (WIFSIGNALED(wstatus))
		log_msg(w->killed ? LOG_NOTICE : LOG_ERR, "worker %d killed by signal %s",
			(int)w->pid, sigabbrev_np(WTERMSIG(wstatus)));
	else
		log_msg(clean && leaving ? LOG_INFO : LOG_ERR, "worker %d exited with status %d",
			(int)w->pid, WEXITSTATUS(wstatus));
	pending_worker_exited(m, w, wstatus);
	atomic_store(&status->slots[w->slot].pid, 0);
	w->state = WORKER_FREE;
	pool_targets_update(m);
	/* What it handed back before it died is in our ends: read it before they close. */
	for (unsigned t = 0; t < w->n_threads; t++)
		channel_read(m, &w->chan[t], pool_migrated);
	recover_clients(m, w);
	if (!leaving && w->gen == m->gen && w->index < m->pools[w->pool].size)
		schedule_respawn(&m->pools[w->pool], w, now);
	channel_close(m, w);
	free(w->uids); /* its clients died with it */
	w->uids = NULL;
	w->n_uids = w->cap_uids = 0;
	generation_unref(w->gen);
	w->gen = NULL;
	w->pid = 0;
}

void
pool_reap(struct master *m)
{
	for (;;) {
		int wstatus;
		pid_t pid = waitpid(-1, &wstatus, WNOHANG);

		if (pid <= 0)
			return;
		if (upgrade_reaped(m, pid, wstatus))
			continue;
		for (size_t i = 0; i < m->n_slots; i++)
			if (m->workers[i].state != WORKER_FREE && m->workers[i].pid == pid) {
				reaped(m, &m->workers[i], wstatus);
				break;
			}
	}
}

/* A worker of the current generation serves (or is starting to) at pool's index. */
static bool
index_running(const struct master *m, unsigned pool, unsigned index)
{
	for (size_t i = 0; i < m->n_slots; i++) {
		const struct mworker *w = &m->workers[i];

		if (w->state == WORKER_RUNNING && w->gen == m->gen && w->pool == pool &&
		    w->index == index && !w->retiring)
			return true;
	}
	return false;
}

/*
 * Replace a worker: it takes no new client from now on, pool_fill() starts
 * a worker at its index, and once that one is ready the old one drains
 * (pool_retire_check()).  Only a worker of the current generation's pool
 * as it is now has a successor; any other drains at once.
 */
static void
pool_replace(struct master *m, struct mworker *w, const char *why)
{
	if (w->state != WORKER_RUNNING || w->retiring)
		return;
	if (w->gen != m->gen || w->index >= m->pools[w->pool].size || m->stopping) {
		pool_drain(m, w, true);
		return;
	}
	w->retiring = true;
	pool_targets_update(m);
	log_notice("worker %d %s: starting its replacement, then it drains", (int)w->pid, why);
}

/* A worker of w's generation, pool and index, not itself being replaced, that serves. */
static const struct mworker *
successor(const struct master *m, const struct mworker *w)
{
	for (size_t i = 0; i < m->n_slots; i++) {
		const struct mworker *o = &m->workers[i];

		if (o != w && o->state == WORKER_RUNNING && !o->retiring && o->gen == w->gen &&
		    o->pool == w->pool && o->index == w->index && o->ready == o->n_threads)
			return o;
	}
	return NULL;
}

/* A worker being replaced drains once its successor serves. */
static void
pool_retire_check(struct master *m, struct mworker *w)
{
	const struct mworker *next;

	if (w->state != WORKER_RUNNING || !w->retiring)
		return;
	if (w->gen != m->gen || w->index >= m->pools[w->pool].size) {
		pool_drain(m, w, true);
		return;
	}
	next = successor(m, w);
	if (!next)
		return;
	log_info("worker %d serves in place of worker %d, which drains", (int)next->pid, (int)w->pid);
	pool_drain(m, w, true);
}

/* The threads of w that are not stuck hold no client: only the stuck ones are left. */
static bool
only_stuck_left(struct mworker *w)
{
	load_refresh_worker(w, &status->slots[w->slot]);
	for (unsigned t = 0; t < w->n_threads; t++)
		if (!(w->stuck & (UINT64_C(1) << t)) && load_thread(&w->chan[t]) > 0)
			return false;
	return true;
}

static const char *
listener_name(const struct config *c, uint32_t listener)
{
	return listener < c->n_listeners ? c->listeners[listener].name : "?";
}

/*
 * request_timeout: a thread in one service callback for longer than that is
 * stuck.  The master names the listener and service; SIGNAL_STUCK makes the
 * thread itself log its client and its backtrace and give the client the
 * service's last word (worker.c).  The worker is replaced.
 */
static void
check_stuck(struct master *m, struct mworker *w, uint64_t now)
{
	const struct config *c = w->gen->config;
	uint64_t limit = c->pools[w->pool].request_timeout_usec;
	struct status_worker *sw = &status->slots[w->slot];
	bool stuck = false;

	for (unsigned t = 0; t < w->n_threads; t++) {
		struct status_thread *th = &sw->threads[t];
		uint64_t since = atomic_load_explicit(&th->busy_since, memory_order_relaxed);
		uint32_t l = atomic_load_explicit(&th->busy_listener, memory_order_relaxed);
		pid_t tid = atomic_load_explicit(&th->tid, memory_order_relaxed);

		if (!since || now < since + limit || w->stuck & (UINT64_C(1) << t))
			continue;
		log_error("slowlog: worker %d thread %u has run one callback of listener %s (service %s) for %llums, past request_timeout %llums",
			  (int)w->pid, t, listener_name(c, l),
			  l < c->n_listeners ? w->gen->services[l].name : "?",
			  (unsigned long long)((now - since) / USEC_PER_MSEC),
			  (unsigned long long)(limit / USEC_PER_MSEC));
		w->stuck |= UINT64_C(1) << t;
		if (tid > 0 && tgkill(w->pid, tid, SIGNAL_STUCK) < 0)
			log_warning("worker %d thread %u: cannot signal it: %s", (int)w->pid, t,
				    strerror(errno));
		stuck = true;
	}
	if (stuck)
		pool_replace(m, w, "is stuck");
}

/*
 * A thread that stopped ticking outside any callback (a stopped process, a
 * loop in udsd itself) is hung: its worker is killed at once, there is
 * nothing to drain.  It is given two ticks more than a callback.
 */
static bool
check_hung(struct mworker *w, uint64_t now)
{
	/* A draining thread that is done stops ticking: the drain has its own deadline. */
	if (w->state == WORKER_DRAINING)
		return false;
	uint64_t limit = w->gen->config->pools[w->pool].request_timeout_usec + 2 * CONFIG_TICK_USEC;
	struct status_worker *sw = &status->slots[w->slot];

	for (unsigned t = 0; t < w->n_threads; t++) {
		/* busy_since first: a thread writes the heartbeat before it clears busy_since. */
		if (atomic_load(&sw->threads[t].busy_since))
			continue;
		uint64_t hb = atomic_load(&sw->threads[t].heartbeat_usec);

		if (!hb || now <= hb + limit)
			continue;
		log_error("worker %d thread %u hung for %llus outside any callback, killing it",
			  (int)w->pid, t, (unsigned long long)((now - hb) / USEC_PER_SEC));
		pool_kill(w);
		return true;
	}
	return false;
}

/*
 * A worker that is hung, stuck, never got ready, or is draining past its
 * deadline (or only its stuck threads are left), is killed or replaced.  A
 * reload's new generation has a deadline of its own.
 */
static void
check_alive(struct master *m, struct mworker *w, uint64_t now)
{
	if (w->killed)
		return; /* on its way out */
	if (w->state == WORKER_DRAINING && w->stuck && only_stuck_left(w)) {
		log_notice("worker %d: its other clients are done; killing it", (int)w->pid);
		pool_kill(w);
		return;
	}
	if (w->state == WORKER_DRAINING && now >= w->kill_at) {
		log_warning("worker %d still has %u client(s) after the shutdown timeout, killing it",
			    (int)w->pid, load_worker(w));
		pool_kill(w);
		return;
	}
	if (w->gen == m->pending)
		return;
	if (w->ready < w->n_threads) {
		if (now >= w->started_usec + WORKER_READY_TIMEOUT_USEC) {
			log_error("worker %d not ready after %llus, killing it", (int)w->pid,
				  (unsigned long long)(WORKER_READY_TIMEOUT_USEC / USEC_PER_SEC));
			pool_kill(w);
		}
		return;
	}
	if (check_hung(w, now))
		return;
	check_stuck(m, w, now);
	pool_retire_check(m, w);
}

/* Requests w served: what its services counted, or one per client (conn.c). */
static uint64_t
served(const struct mworker *w)
{
	const struct status_worker *sw = &status->slots[w->slot];
	uint64_t n = 0;

	for (unsigned t = 0; t < w->n_threads; t++)
		n += atomic_load_explicit((_Atomic uint64_t *)&sw->threads[t].requests,
					  memory_order_relaxed);
	return n;
}

/* Resident memory of a process, in bytes; 0 if it cannot be read. */
static uint64_t
rss_bytes(pid_t pid)
{
	char path[64];
	unsigned long long size = 0, resident = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/statm", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return 0;
	if (fscanf(f, "%llu %llu", &size, &resident) != 2)
		resident = 0;
	fclose(f);
	return resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

/* A worker of the pool is being recycled, from its marking until it has exited. */
static bool
pool_recycling(const struct master *m, unsigned pool)
{
	for (size_t i = 0; i < m->n_slots; i++)
		if (m->workers[i].state != WORKER_FREE && m->workers[i].recycling &&
		    m->workers[i].gen == m->gen && m->workers[i].pool == pool)
			return true;
	return false;
}

/*
 * max_requests and max_rss: replace a worker past either, one per pool at a
 * time (gunicorn#3427: workers that all restart together leave nobody to
 * serve), its replacement ready before it drains.
 */
static void
check_recycle(struct master *m, struct mworker *w, uint64_t now)
{
	const struct config_pool *c = &w->gen->config->pools[w->pool];
	char why[128] = "";
	uint64_t n, rss;

	if ((!w->max_requests && !c->max_rss) || w->state != WORKER_RUNNING || w->retiring ||
	    w->gen != m->gen || w->ready < w->n_threads)
		return;
	if (w->max_requests && (n = served(w)) >= w->max_requests) {
		snprintf(why, sizeof(why), "has served %llu requests (max_requests %u)",
			 (unsigned long long)n, w->max_requests);
	} else if (c->max_rss && now >= w->next_rss_check) {
		w->next_rss_check = now + CONFIG_TICK_USEC;
		rss = rss_bytes(w->pid);
		if (rss > c->max_rss)
			snprintf(why, sizeof(why), "uses %llu KiB (max_rss %llu KiB)",
				 (unsigned long long)(rss / 1024),
				 (unsigned long long)(c->max_rss / 1024));
	}
	if (!why[0] || pool_recycling(m, w->pool))
		return;
	w->recycling = true;
	pool_replace(m, w, why);
}

/* Start what pool p lacks, as its backoff allows. */
static void
pool_fill(struct master *m, struct mpool *p, uint64_t now)
{
	for (unsigned i = 0; i < p->size; i++) {
		if (index_running(m, p->index, i) || now < p->respawn_at[i])
			continue;
		int r = pool_spawn(m, m->gen, p->index, i);
		if (r < 0) {
			log_error("pool %s: cannot start worker %u: %s",
				  m->gen->config->pools[p->index].name, i, strerror(-r));
			p->respawn_at[i] = now + BACKOFF_MAX_USEC;
		}
	}
}

/* Once per loop: respawn what is due, kill what hangs or overstays. */
void
pool_check(struct master *m)
{
	uint64_t now = now_usec();

	unsigned running[CONFIG_MAX_POOLS] = { 0 };

	for (size_t i = 0; i < m->n_slots; i++) {
		struct mworker *w = &m->workers[i];

		if (w->state == WORKER_FREE)
			continue;
		check_alive(m, w, now);
		if (!m->stopping && !m->pending)
			check_recycle(m, w, now);
		running[w->pool] += w->state == WORKER_RUNNING && w->gen == m->gen && !w->retiring;
	}
	if (m->stopping)
		return;
	/* Only a pool that lacks a worker is looked at index by index. */
	for (size_t i = 0; i < m->n_pools; i++)
		if (running[i] < m->pools[i].size)
			pool_fill(m, &m->pools[i], now);
}

/* A new worker in a dynamic pool: at most one starting at a time, and a pause between. */
#define POOL_COOLDOWN_USEC USEC_PER_SEC

/*
 * workers_min..workers_max, as php-fpm's dynamic pool: grow by one when every
 * worker holds worker_load_mark clients, shrink by retiring the newest worker
 * once it has been idle for worker_idle_time.  A retired worker drains like
 * an old generation: it takes no new client, and what was queued to it is
 * served before it exits (or recovered, if it dies).
 */
static void
pool_adjust_one(struct master *m, struct mpool *p, uint64_t now)
{
	const struct config_pool *c = &m->gen->config->pools[p->index];
	struct mworker *top = NULL;
	bool all_busy = true, starting = false;
	unsigned running = 0;

	if (c->workers_min == c->workers_max)
		return;
	for (size_t i = 0; i < m->n_slots; i++) {
		struct mworker *w = &m->workers[i];
		unsigned load;

		if (w->state != WORKER_RUNNING || w->gen != m->gen || w->pool != p->index ||
		    w->retiring)
			continue;
		load = load_worker(w);
		running++;
		starting |= w->ready < w->n_threads;
		all_busy &= load >= c->worker_load_mark;
		if (load > 0)
			w->idle_since = 0;
		else if (!w->idle_since)
			w->idle_since = now;
		if (w->index == p->size - 1)
			top = w;
	}
	if (all_busy && !starting && running == p->size && p->size < c->workers_max &&
	    now >= p->next_spawn_at) {
		p->size++;
		p->next_spawn_at = now + POOL_COOLDOWN_USEC;
		log_info("all %u workers of pool %s hold %u+ clients: starting another (pool %u..%u)",
			 running, c->name, c->worker_load_mark, c->workers_min, c->workers_max);
		return; /* pool_check() starts it */
	}
	if (top && p->size > c->workers_min && top->idle_since &&
	    now - top->idle_since >= c->worker_idle_usec) {
		p->size--;
		log_info("worker %d of pool %s idle for %llums: retiring it (pool %u..%u)",
			 (int)top->pid, c->name,
			 (unsigned long long)(c->worker_idle_usec / USEC_PER_MSEC), c->workers_min,
			 c->workers_max);
		pool_drain(m, top, true);
	}
}

void
pool_adjust(struct master *m)
{
	uint64_t now = now_usec();

	/* Not while a reload is pending: the new generation brings its own pools. */
	if (m->stopping || m->pending)
		return;
	for (size_t i = 0; i < m->n_pools; i++)
		pool_adjust_one(m, &m->pools[i], now);
}
