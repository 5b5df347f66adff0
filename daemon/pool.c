/* SPDX-License-Identifier: MIT */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
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
/* A thread that has not ticked for this long is hung: its worker is killed and replaced. */
#define HUNG_USEC (10 * USEC_PER_SEC)

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

/* The workers that take clients changed: the balancer's targets follow. */
void
pool_targets_update(struct master *m)
{
	load_set_build(&m->load, m->workers, STATUS_MAX_SLOTS, m->gen);
}

unsigned
pool_count(const struct master *m, enum worker_state state)
{
	unsigned n = 0;

	for (size_t i = 0; i < STATUS_MAX_SLOTS; i++)
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

/* A worker of generation g; only workers of the current generation take clients. */
int
pool_spawn(struct master *m, struct generation *g, unsigned index)
{
	struct mworker *w = NULL;
	int r;

	for (size_t i = 0; i < STATUS_MAX_SLOTS && !w; i++)
		if (m->workers[i].state == WORKER_FREE)
			w = &m->workers[i];
	if (!w)
		return -EAGAIN;
	m->slots_used = MAX(m->slots_used, (unsigned)(w - m->workers) + 1);
	*w = (struct mworker){ .slot = (unsigned)(w - m->workers), .index = index, .gen = g,
			       .n_threads = g->config->threads, .started_usec = now_usec() };
	r = channel_open(m, w);
	if (r < 0)
		return r;

	struct status_worker *sw = &status->slots[w->slot];
	memset(sw, 0, sizeof(*sw));
	sw->generation = g->id;
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
	log_debug("worker %u.%u started as pid %d", g->id, index, (int)pid);
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

/* In the master: the worker takes no more clients, finishes what it has and exits. */
void
pool_drain(struct master *m, struct mworker *w)
{
	if (w->state != WORKER_RUNNING)
		return;
	w->state = WORKER_DRAINING;
	w->kill_at = now_usec() + w->gen->config->shutdown_timeout_usec;
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
static void
recover_clients(struct master *m, struct mworker *w)
{
	size_t waiting = m->n_orphans, dropped = m->orphans_dropped, handed;

	handed = channel_reclaim(m, w, redispatch);
	/* What accept_dispatch() could not place waits, or was closed past the bound. */
	waiting = m->n_orphans - waiting;
	handed -= m->orphans_dropped - dropped + waiting;
	if (handed)
		log_notice("handed %zu unserved client(s) of worker %d to other workers", handed,
			   (int)w->pid);
	if (waiting)
		log_notice("%zu unserved client(s) of worker %d wait for a worker", waiting,
			   (int)w->pid);
}

static void
schedule_respawn(struct master *m, struct mworker *w, uint64_t now)
{
	uint64_t *b = &m->backoff_usec[w->index];

	if (now - w->started_usec >= STABLE_USEC)
		*b = 0;
	*b = *b ? MIN(*b * 2, BACKOFF_MAX_USEC) : BACKOFF_FIRST_USEC;
	m->respawn_at[w->index] = now + *b;
	m->crashes++;
	if (*b >= BACKOFF_MAX_USEC)
		log_error("worker %u crash loop: respawning every %llus", w->index,
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
	recover_clients(m, w);
	if (!leaving && w->gen == m->gen && w->index < m->pool_size)
		schedule_respawn(m, w, now);
	channel_close(m, w);
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
		for (size_t i = 0; i < STATUS_MAX_SLOTS; i++)
			if (m->workers[i].state != WORKER_FREE && m->workers[i].pid == pid) {
				reaped(m, &m->workers[i], wstatus);
				break;
			}
	}
}

static bool
index_running(const struct master *m, unsigned index)
{
	for (size_t i = 0; i < m->slots_used; i++)
		if (m->workers[i].state == WORKER_RUNNING && m->workers[i].gen == m->gen &&
		    m->workers[i].index == index)
			return true;
	return false;
}

/*
 * A worker that is hung, never got ready, or is draining past its deadline,
 * is killed.  A reload's new generation has a deadline of its own.
 */
static void
check_alive(const struct master *m, struct mworker *w, uint64_t now)
{
	struct status_worker *sw = &status->slots[w->slot];

	if (w->killed)
		return; /* on its way out */
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
	for (unsigned t = 0; t < w->n_threads; t++) {
		uint64_t hb = atomic_load_explicit(&sw->threads[t].heartbeat_usec, memory_order_relaxed);
		if (hb && now > hb + HUNG_USEC) {
			log_error("worker %d thread %u hung for %llus, killing it", (int)w->pid, t,
				  (unsigned long long)((now - hb) / USEC_PER_SEC));
			pool_kill(w);
			return;
		}
	}
}

/* Once per loop: respawn what is due, kill what hangs or overstays. */
void
pool_check(struct master *m)
{
	uint64_t now = now_usec();

	for (size_t i = 0; i < m->slots_used; i++)
		if (m->workers[i].state != WORKER_FREE)
			check_alive(m, &m->workers[i], now);
	if (m->stopping)
		return;
	for (unsigned i = 0; i < m->pool_size; i++) {
		if (index_running(m, i) || now < m->respawn_at[i])
			continue;
		int r = pool_spawn(m, m->gen, i);
		if (r < 0) {
			log_error("cannot start worker %u: %s", i, strerror(-r));
			m->respawn_at[i] = now + BACKOFF_MAX_USEC;
		}
	}
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
void
pool_adjust(struct master *m)
{
	const struct config *c = m->gen->config;
	uint64_t now = now_usec();
	struct mworker *top = NULL;
	bool all_busy = true, starting = false;
	unsigned running = 0;

	/* Not while a reload is pending: the new generation brings its own pool. */
	if (c->workers_min == c->workers_max || m->stopping || m->pending)
		return;
	for (size_t i = 0; i < STATUS_MAX_SLOTS; i++) {
		struct mworker *w = &m->workers[i];
		unsigned load;

		if (w->state != WORKER_RUNNING || w->gen != m->gen)
			continue;
		load = load_worker(w);
		running++;
		starting |= w->ready < w->n_threads;
		all_busy &= load >= c->worker_load_mark;
		if (load > 0)
			w->idle_since = 0;
		else if (!w->idle_since)
			w->idle_since = now;
		if (w->index == m->pool_size - 1)
			top = w;
	}
	if (all_busy && !starting && running == m->pool_size && m->pool_size < c->workers_max &&
	    now >= m->next_spawn_at) {
		m->pool_size++;
		m->next_spawn_at = now + POOL_COOLDOWN_USEC;
		log_info("all %u workers hold %u+ clients: starting another (pool %u..%u)", running,
			 c->worker_load_mark, c->workers_min, c->workers_max);
		return; /* pool_check() starts it */
	}
	if (top && m->pool_size > c->workers_min && top->idle_since &&
	    now - top->idle_since >= c->worker_idle_usec) {
		m->pool_size--;
		log_info("worker %d idle for %llums: retiring it (pool %u..%u)", (int)top->pid,
			 (unsigned long long)(c->worker_idle_usec / USEC_PER_MSEC), c->workers_min,
			 c->workers_max);
		pool_drain(m, top);
	}
}
