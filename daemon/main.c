/* SPDX-License-Identifier: MIT */
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"
#include "fd-util.h"

/*
 * The master: one thread, one epoll loop.  It owns the listeners, accepts,
 * hands clients to worker threads, and runs the lifecycle (reload, shutdown,
 * respawn, sd_notify).  Signals arrive through a signalfd, never a handler.
 */

#define STATUS_INTERVAL_USEC USEC_PER_SEC

static _noreturn_ void
usage(void)
{
	printf("Usage: udsd [OPTIONS]\n\n"
	       "Pre-fork, multithreaded server for Unix domain sockets.\n\n"
	       "  -c, --config FILE    configuration file (default " CONFIG_DEFAULT_FILE ")\n"
	       "  -t, --test           check the configuration and exit\n"
	       "  -T, --dump-config    check it, print the effective configuration and exit\n"
	       "  -q, --quiet          with -t: print errors only\n"
	       "      --verbose        log debug messages\n"
	       "  -v, --version        print the version and exit\n"
	       "  -V                   print the version and build settings and exit\n"
	       "  -h, --help           show this help\n\n"
	       "SIGHUP reloads the configuration; SIGUSR2 upgrades to the binary now at udsd's\n"
	       "path, in place (same PID), after checking it with -t.\n");
	exit(EXIT_SUCCESS);
}

/* A usage error: the reason (getopt gives its own) and a pointer to --help on stderr; exit 2. */
_printf_(1, 2) static _noreturn_ void
usage_error(const char *fmt, ...)
{
	va_list ap;

	if (fmt) {
		va_start(ap, fmt);
		fputs("udsd: ", stderr);
		vfprintf(stderr, fmt, ap);
		fputc('\n', stderr);
		va_end(ap);
	}
	fputs("Try 'udsd --help' for more information.\n", stderr);
	exit(2);
}

static _noreturn_ void
version(bool build)
{
	printf("udsd %s\n", UDSD_VERSION);
	if (build)
		printf("configuration file: %s\nservice API: %d (%s)\n", CONFIG_DEFAULT_FILE,
		       UDSD_SERVICE_API_VERSION, UDSD_SERVICE_SYMBOL);
	exit(EXIT_SUCCESS);
}

/*
 * The config file, parsed and its services resolved, as a new generation; on
 * failure the reason is logged and left in err.
 */
static int
generation_read(struct master *m, struct generation **ret, char *err, size_t errlen)
{
	_cleanup_(config_freep) struct config *c = NULL;
	struct service *s;
	int r;

	r = config_load(m->config_file, &c, err, errlen);
	if (r >= 0)
		r = service_resolve(c, &s, err, errlen);
	if (r >= 0 && (r = generation_new(m, TAKE_PTR(c), s, ret)) < 0)
		snprintf(err, errlen, "%s", strerror(-r));
	if (r < 0)
		log_error("%s", err);
	return r;
}

/*
 * STATUS=, at most once a second and only when it changed, unless forced or
 * sent with `also` (more assignments for the same datagram, like READY=1).
 * A failed reload stays in it until the next good one.
 */
/* " of 2..5" for a dynamic pool; "" for a fixed one. */
static void
pool_range(const struct config_pool *c, char *buf, size_t size)
{
	buf[0] = '\0';
	if (c->workers_min != c->workers_max)
		snprintf(buf, size, " of %u..%u", c->workers_min, c->workers_max);
}

/* With more than one pool: "; pools: web 2, kv 1 of 1..3" (workers running in each). */
static void
pools_text(const struct master *m, char *buf, size_t size)
{
	const struct config *c = m->gen->config;
	size_t len = 0;

	buf[0] = '\0';
	for (size_t i = 0; c->n_pools > 1 && i < c->n_pools && len < size; i++) {
		char range[32];

		pool_range(&c->pools[i], range, sizeof(range));
		len += (size_t)snprintf(buf + len, size - len, "%s%s %u%s", i ? ", " : "; pools: ",
					c->pools[i].name, status_pool_workers((unsigned)i), range);
	}
}

static void
notify_status(struct master *m, bool force, const char *also)
{
	uint64_t open, accepted, now = now_usec();
	unsigned workers;
	char text[sizeof(m->status_text)], pool[32] = "", pools[256], dgrams[48] = "";
	char failed[sizeof(m->reload_error) + sizeof(m->up.error) + 48] = "";

	if (!force && !also[0] && now < m->next_status)
		return;
	m->next_status = now + STATUS_INTERVAL_USEC;
	master_status_publish(m);
	status_totals(&open, &accepted, &workers);
	if (m->gen->config->n_pools == 1)
		pool_range(&m->gen->config->pools[0], pool, sizeof(pool));
	pools_text(m, pools, sizeof(pools));
	if (m->reload_error[0] || m->up.error[0])
		snprintf(failed, sizeof(failed), "%s%s%s%s%s%s",
			 m->reload_error[0] ? "reload failed: " : "", m->reload_error,
			 m->reload_error[0] ? "; " : "", m->up.error[0] ? "upgrade failed: " : "",
			 m->up.error, m->up.error[0] ? "; " : "");
	if (m->has_dgram)
		snprintf(dgrams, sizeof(dgrams), ", %llu datagrams",
			 (unsigned long long)status_datagrams());
	snprintf(text, sizeof(text), "%s%s%u workers%s (generation %u), %llu open, %llu served%s%s%s",
		 m->stopping ? "stopping: " : "", failed, workers, pool, m->gen->id,
		 (unsigned long long)open, (unsigned long long)accepted, dgrams,
		 pools_crashes(m) ? ", workers crashed" : "", pools);
	if (!also[0] && strcmp(text, m->status_text) == 0)
		return;
	snprintf(m->status_text, sizeof(m->status_text), "%s", text);
	sd_notifyf(0, "%sSTATUS=%s", also, text);
}

/* READY=1 once every thread of the first generation serves (a reload sends its own). */
static void
notify_ready(struct master *m)
{
	char also[64];

	if (m->ready_sent || m->stopping || m->pending || !generation_ready(m, m->gen, m->pools))
		return;
	m->ready_sent = true;
	for (size_t i = 0; i < m->gen->config->n_pools; i++) {
		const struct config_pool *p = &m->gen->config->pools[i];
		log_info("ready: pool %s: %u workers x %u threads%s%s", p->name, p->workers,
			 p->threads, p->user_name ? " as " : "", p->user_name ? p->user_name : "");
	}
	snprintf(also, sizeof(also), "READY=1\nMAINPID=%d\n", (int)getpid());
	notify_status(m, true, also);
}

static void
notify_reloading(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu",
		   (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000);
}

/* Every current worker's threads ticked recently: only then does the watchdog get fed. */
static bool
workers_healthy(const struct master *m)
{
	uint64_t now = now_usec();

	for (size_t i = 0; i < STATUS_MAX_SLOTS; i++) {
		const struct mworker *w = &m->workers[i];
		const struct status_worker *sw = &status->slots[i];

		/* A worker being replaced is not the master's to worry about any more. */
		if (w->state != WORKER_RUNNING || w->ready < w->n_threads || w->retiring)
			continue;
		for (unsigned t = 0; t < w->n_threads; t++) {
			uint64_t hb = atomic_load_explicit((_Atomic uint64_t *)&sw->threads[t].heartbeat_usec,
							   memory_order_relaxed);
			if (now > hb + 3 * USEC_PER_SEC)
				return false;
		}
	}
	return true;
}

static void
watchdog_feed(struct master *m)
{
	uint64_t now = now_usec();

	if (!m->watchdog_usec || now < m->next_watchdog)
		return;
	m->next_watchdog = now + m->watchdog_usec / 2;
	if (workers_healthy(m))
		sd_notify(0, "WATCHDOG=1");
	else
		log_warning("a worker is not responding; not feeding the watchdog");
}

static void
raise_fd_limit(struct master *m)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		rl.rlim_cur = rl.rlim_max = 1024;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			getrlimit(RLIMIT_NOFILE, &rl);
	}
	m->fd_limit = rl.rlim_cur > INT32_MAX ? INT32_MAX : (unsigned)rl.rlim_cur;
	log_info("open file limit: %u", m->fd_limit);
}

/*
 * The pending generation will not serve: stop its workers (they hold no
 * client) and close what its listener set opened, and only that.
 */
static void
pending_abandon(struct master *m, const char *why)
{
	struct generation *g = m->pending;

	if (!g)
		return;
	if (why)
		log_notice("reload of generation %u abandoned: %s", g->id, why);
	for (size_t i = 0; i < m->n_slots; i++)
		if (m->workers[i].gen == g)
			pool_kill(&m->workers[i]);
	listeners_discard(m->pending_listeners, g->config->n_listeners, m->listeners,
			  m->n_listeners);
	m->pending_listeners = NULL;
	m->pending = NULL;
	m->pending_error[0] = '\0';
	generation_unref(g);
}

static void
reload_failed(struct master *m, const char *why)
{
	snprintf(m->reload_error, sizeof(m->reload_error), "%s", why);
	snprintf(status->reload_error, sizeof(status->reload_error), "%s", why);
	atomic_fetch_add_explicit(&status->reloads_failed, 1, memory_order_relaxed);
	pending_abandon(m, NULL);
	log_error("reload failed; still serving generation %u: %s", m->gen->id, m->reload_error);
	notify_status(m, true, "READY=1\n");
	admin_reload_done(m, m->reload_error);
}

/* Every thread of the new generation serves: it takes over, the old one drains. */
static void
reload_switch(struct master *m)
{
	struct generation *old = m->gen, *g = m->pending;

	listeners_install(m, m->pending_listeners, g->config->n_listeners);
	listeners_apply_perms(g->config, m->listeners);
	m->has_dgram = listeners_has_dgram(m);
	listeners_apply_passrights(g, m->listeners, false);
	m->pending_listeners = NULL;
	m->pending = NULL;
	m->gen = g;
	atomic_store(&status->generation, g->id);
	status_config = g->config;
	m->reload_error[0] = '\0';
	status->reload_error[0] = '\0';
	atomic_fetch_add_explicit(&status->reloads_ok, 1, memory_order_relaxed);
	pools_setup(m, old);
	master_status_publish_config(m);
	for (size_t i = 0; i < m->n_slots; i++)
		if (m->workers[i].gen == old)
			pool_drain(m, &m->workers[i], true);
	pool_targets_update(m);
	generation_unref(old);
	m->ready_sent = true;
	log_info("reloaded: generation %u serves", g->id);
	notify_status(m, true, "READY=1\n");
	admin_reload_done(m, NULL);
	admin_reconfigure(m);
}

/* Once per loop while a reload is pending: switch once it is ready, fail if it cannot be. */
static void
reload_check(struct master *m)
{
	char why[128];

	if (!m->pending)
		return;
	if (m->pending_error[0]) {
		reload_failed(m, m->pending_error);
	} else if (generation_ready(m, m->pending, NULL)) {
		reload_switch(m);
	} else if (now_usec() >= m->pending_deadline) {
		snprintf(why, sizeof(why), "generation %u not ready after %llus", m->pending->id,
			 (unsigned long long)(WORKER_READY_TIMEOUT_USEC / USEC_PER_SEC));
		reload_failed(m, why);
	}
}

/*
 * Start a generation from the config file, with its listeners bound (but not
 * yet accepted from) and its workers forked; the current generation serves
 * until the new one is ready (reload_check()).  On failure, what it made
 * goes: before it is pending by cleanup here, after by pending_abandon().
 */
static int
reload_start(struct master *m, char *err, size_t errlen)
{
	_cleanup_(generation_unrefp) struct generation *g = NULL;
	struct mlistener *ls;
	int r;

	r = generation_read(m, &g, err, errlen);
	if (r < 0)
		return r;
	r = listeners_build(g->config, m->listeners, m->n_listeners, &ls);
	if (r < 0) {
		snprintf(err, errlen, "listeners: %s", strerror(-r));
		return r;
	}
	listeners_apply_passrights(g, ls, true);
	m->pending_listeners = ls;
	m->pending = TAKE_PTR(g);
	m->pending_deadline = now_usec() + WORKER_READY_TIMEOUT_USEC;
	log_info("generation %u starting; generation %u serves until it is ready", m->pending->id,
		 m->gen->id);
	for (unsigned p = 0; p < m->pending->config->n_pools; p++)
		for (unsigned i = 0; i < m->pending->config->pools[p].workers; i++) {
			r = pool_spawn(m, m->pending, p, i);
			if (r < 0) {
				snprintf(err, errlen, "cannot start a worker: %s", strerror(-r));
				return r;
			}
		}
	return 0;
}

static void
reload(struct master *m)
{
	char err[512] = "";

	log_info("reloading %s", m->config_file);
	notify_reloading();
	/* A reload in progress is for an older file: start again from the newest. */
	pending_abandon(m, "a newer reload");
	if (reload_start(m, err, sizeof(err)) < 0)
		reload_failed(m, err);
}

/*
 * A reload asked on the admin socket: its outcome comes through
 * admin_reload_done(), at once for a configuration error.  -EBUSY (and err)
 * while an upgrade or a stop is in progress.
 */
int
master_reload(struct master *m, char *err, size_t errlen)
{
	if (m->stopping || m->up.adopting || m->up.check_pid) {
		snprintf(err, errlen, "%s", m->stopping ? "stopping" : "an upgrade is in progress");
		return -EBUSY;
	}
	reload(m);
	return 0;
}

static void
stop(struct master *m, const char *why)
{
	if (m->stopping) {
		/* A second SIGINT or SIGTERM: no more waiting. */
		log_notice("%s again: stopping now", why);
		m->stop_deadline = 0;
		return;
	}
	log_info("%s: stopping, waiting up to %llums for clients", why,
		 (unsigned long long)(m->gen->config->shutdown_timeout_usec / USEC_PER_MSEC));
	sd_notify(0, "STOPPING=1");
	m->stopping = true;
	if (m->pending)
		admin_reload_done(m, "stopping");
	pending_abandon(m, "stopping");
	accept_orphans_drop(m, "stopping");
	m->stop_deadline = now_usec() + m->gen->config->shutdown_timeout_usec;
	accept_update_polling(m);
	for (size_t i = 0; i < m->n_slots; i++)
		pool_drain(m, &m->workers[i], false);
	notify_status(m, true, "");
}

/*
 * exit_idle_time: with every listener systemd's, leave once nobody has been
 * connected for that long; systemd keeps the socket and starts us again for
 * the next client.  The decision is final only if no client waits in a
 * backlog at that instant; from then on nothing is accepted, so whoever
 * connects next waits in the kernel for the next start instead of being
 * accepted and dropped.
 */
static void
idle_exit_check(struct master *m)
{
	uint64_t limit = m->gen->config->exit_idle_usec, now = now_usec(), datagrams;
	bool busy = m->pending != NULL;

	if (!limit || !m->activated || m->stopping || !listeners_all_passed(m))
		return;
	/* Not sooner than the unit's start limit allows (startlimit.c): idle or not, stay. */
	if (m->idle_exit_at == UINT64_MAX)
		m->idle_exit_at = m->started_usec + startlimit_min_run();
	/* Datagrams hold no connection open: their count moving is what shows traffic. */
	datagrams = m->has_dgram ? status_datagrams() : 0;
	busy |= datagrams != m->datagrams_seen;
	m->datagrams_seen = datagrams;
	for (size_t i = 0; i < m->n_slots && !busy; i++) {
		const struct mworker *w = &m->workers[i];
		busy = w->state == WORKER_DRAINING ||
		       (w->state == WORKER_RUNNING && load_worker(w) > 0);
	}
	if (busy || !m->idle_since) {
		m->idle_since = now;
		return;
	}
	if (now - m->idle_since < limit || now < m->idle_exit_at)
		return;
	if (listeners_pending(m)) {
		m->idle_since = now;
		return;
	}
	stop(m, "idle");
}

static void
signal_readable(struct master *m)
{
	struct signalfd_siginfo si;

	while (read(m->sigfd, &si, sizeof(si)) == sizeof(si)) {
		switch (si.ssi_signo) {
		case SIGTERM:
		case SIGINT:
			stop(m, sigabbrev_np((int)si.ssi_signo));
			break;
		case SIGHUP:
			if (m->up.adopting && !m->stopping) {
				/* The edited config would be lost: read it once the upgrade serves. */
				m->reload_wanted = true;
				log_info("SIGHUP: reloading once the upgrade in progress is over");
			} else if (!m->stopping)
				reload(m);
			break;
		case SIGUSR2:
			upgrade_request(m);
			break;
		case SIGCHLD:
			pool_reap(m);
			break;
		default:
			break;
		}
	}
}

static int
next_timeout_ms(const struct master *m)
{
	uint64_t now = now_usec(), next = now + USEC_PER_SEC;

	for (size_t p = 0; p < m->n_pools; p++)
		for (unsigned i = 0; i < m->pools[p].size; i++)
			if (m->pools[p].respawn_at[i] > now)
				next = MIN(next, m->pools[p].respawn_at[i]);
	if (m->accept_resume_at)
		next = MIN(next, m->accept_resume_at);
	if (m->waiting_for_room) /* a backstop: workers wake us when a client closes */
		next = MIN(next, now + 100 * USEC_PER_MSEC);
	if (m->stopping)
		next = MIN(next, m->stop_deadline);
	if (m->watchdog_usec)
		next = MIN(next, m->next_watchdog);
	next = MIN(next, admin_next_deadline(m));
	if (m->gen->config->exit_idle_usec && m->idle_since && !m->stopping)
		next = MIN(next, MAX(m->idle_since + m->gen->config->exit_idle_usec,
				     m->idle_exit_at == UINT64_MAX ? 0 : m->idle_exit_at));
	return next <= now ? 0 : (int)((next - now + 999) / 1000);
}

static void
dispatch_event(struct master *m, struct epoll_event *ev)
{
	struct watch *w = ev->data.ptr;

	switch (w->kind) {
	case WATCH_SIGNAL:
		signal_readable(m);
		break;
	case WATCH_LISTENER:
		accept_listener(m, (struct mlistener *)w);
		break;
	case WATCH_CHANNEL: {
		struct mchannel *ch = (struct mchannel *)w;
		if (ev->events & EPOLLIN)
			channel_read(m, ch, pool_migrated);
		if (ev->events & EPOLLOUT && ch->worker->state != WORKER_FREE)
			channel_flush(m, ch);
		break;
	}
	case WATCH_ADMIN:
	case WATCH_ADMIN_CLIENT:
		admin_event(m, w, ev->events);
		break;
	}
}

static void
loop(struct master *m)
{
	struct epoll_event events[64];

	while (!(m->stopping && pool_count(m, WORKER_FREE) == m->n_slots)) {
		int n = epoll_wait(m->epfd, events, ELEMENTSOF(events), next_timeout_ms(m));
		if (n < 0 && errno != EINTR)
			fatalx("epoll_wait: %s", strerror(errno));
		for (int i = 0; i < n; i++) {
			dispatch_event(m, &events[i]);
			/* A reaped worker frees its channels: later events may point at them. */
			if (((struct watch *)events[i].data.ptr)->kind == WATCH_SIGNAL)
				break;
		}
		pool_check(m);
		reload_check(m);
		upgrade_tick(m);
		if (m->reload_wanted && !m->up.adopting && !m->stopping) {
			m->reload_wanted = false;
			reload(m);
		}
		admin_tick(m);
		accept_orphans_flush(m);
		channel_flush_all(m);
		accept_update_polling(m);
		pool_adjust(m);
		idle_exit_check(m);
		notify_ready(m);
		notify_status(m, false, "");
		watchdog_feed(m);
		if (m->stopping && now_usec() >= m->stop_deadline)
			for (size_t i = 0; i < m->n_slots; i++)
				pool_kill(&m->workers[i]);
	}
}

static int
signals_setup(struct master *m)
{
	sigset_t mask;

	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGHUP);
	sigaddset(&mask, SIGCHLD);
	sigaddset(&mask, SIGPIPE);
	sigaddset(&mask, SIGUSR1);
	sigaddset(&mask, SIGUSR2);
	/* Blocked before any fork: workers inherit the mask, so no thread takes a signal. */
	if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
		return negative_errno();
	m->sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (m->sigfd < 0)
		return negative_errno();
	m->signal_watch.kind = WATCH_SIGNAL;
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &m->signal_watch };
	if (epoll_ctl(m->epfd, EPOLL_CTL_ADD, m->sigfd, &ev) < 0)
		return negative_errno();
	return 0;
}

static void
cleanup(struct master *m)
{
	admin_close(m);
	for (size_t i = 0; i < m->n_listeners; i++) {
		struct mlistener *l = &m->listeners[i];

		/* Its stored copy serves the path until systemd closes it: keep the file for it. */
		if (l->stored && l->ours)
			log_info("%s stays: systemd's fd store keeps its socket (across a restart; a stop closes it)",
				 l->address);
		listeners_close_one(m, l, !l->stored);
	}
	free(m->listeners);
	for (size_t i = 0; i < m->n_pools; i++) {
		free(m->pools[i].load.targets);
		accept_orphans_free(&m->pools[i]);
	}
	generation_unref(m->gen);
	listeners_free_passed();
	safe_close(m->sigfd);
	safe_close(m->epfd);
}

/* Before anything is bound or forked: the event loop, signals, limits, shared memory. */
static void
master_setup(struct master *m)
{
	int r;

	m->started_usec = now_usec();
	m->idle_exit_at = UINT64_MAX; /* not known yet: asked of systemd once it matters */
	m->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (m->epfd < 0 || signals_setup(m) < 0)
		fatalx("setting up the event loop: %s", strerror(errno));
	raise_fd_limit(m);
	r = status_map();
	/* Clients of dead workers held at once per pool: a share of the master's own descriptors. */
	m->max_orphans = MAX(64, MIN(4096, m->fd_limit / 4));
	if (r < 0)
		fatalx("out of memory");
}

enum { OPT_VERBOSE = 0x100, OPT_UPGRADE_STATE, OPT_UPGRADE_CHECK };

struct options {
	const char *config_file;
	bool test, dump, quiet;
	int upgrade_fd; /* internal: the state an upgrading image left (upgrade.c) */
	long upgrade_check; /* internal, with -t: the state version the old image writes; 0: none */
};

/* nginx's and php-fpm's habits: -v and -V are the version, -t tests, -T dumps, -q quiets -t. */
static void
options_parse(int argc, char **argv, struct options *o)
{
	static const struct option options[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "test", no_argument, NULL, 't' },
		{ "dump-config", no_argument, NULL, 'T' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "verbose", no_argument, NULL, OPT_VERBOSE },
		{ "version", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ "upgrade-state", required_argument, NULL, OPT_UPGRADE_STATE },
		{ "upgrade-check", required_argument, NULL, OPT_UPGRADE_CHECK },
		{ 0 },
	};
	int opt;

	*o = (struct options){ .config_file = CONFIG_DEFAULT_FILE, .upgrade_fd = -EBADF };
	while ((opt = getopt_long(argc, argv, "c:tTqvVh", options, NULL)) >= 0)
		switch (opt) {
		case 'c':
			o->config_file = optarg;
			break;
		case 't':
			o->test = true;
			break;
		case 'T':
			o->test = o->dump = true;
			break;
		case 'q':
			o->quiet = true;
			break;
		case OPT_VERBOSE:
			log_set_level(LOG_DEBUG);
			break;
		case OPT_UPGRADE_STATE:
			o->upgrade_fd = atoi(optarg);
			break;
		case OPT_UPGRADE_CHECK:
			o->upgrade_check = strtol(optarg, NULL, 10);
			break;
		case 'v':
		case 'V':
			version(opt == 'V');
		case 'h':
			usage();
		default:
			usage_error(NULL);
		}
	if (optind < argc)
		usage_error("unexpected argument '%s'", argv[optind]);
}

/* -t and -T: the configuration is read and its services resolved; nothing is bound. */
static int
config_test(const struct options *o, const struct config *c)
{
	int r = o->dump ? config_dump(c, stdout) : 0;

	if (r < 0) {
		log_error("printing the configuration: %s", strerror(-r));
		return EXIT_FAILURE;
	}
	if (!o->dump && !o->quiet)
		printf("%s: configuration OK\n", o->config_file);
	return EXIT_SUCCESS;
}

/*
 * What there is to serve with: systemd's sockets, or, in an upgrade, what
 * the old image left (listeners, workers, waiting clients: upgrade.c).
 */
static void
master_take_over(struct master *m, const struct options *o, struct generation *g)
{
	int r;

	if (o->upgrade_fd >= 0) {
		r = upgrade_adopt(m, o->upgrade_fd, g);
		if (r < 0)
			upgrade_adopt_failed(m, o->upgrade_fd, strerror(-r));
		log_info("upgrade: took over from the old binary; generation %u starting", g->id);
		return;
	}
	r = listeners_take_passed();
	if (r < 0)
		fatalx("reading sockets passed by systemd: %s", strerror(-r));
	m->activated = r > 0;
	m->gen = g;
	pools_setup(m, NULL);
}

int
main(int argc, char **argv)
{
	static struct master master;
	struct master *m = &master;
	struct options o;
	struct generation *g;
	const struct config *c;
	struct mlistener *ls;
	char err[512] = "";
	int r;

	options_parse(argc, argv, &o);
	m->config_file = o.config_file;
	log_open();
	upgrade_init(m, argv);
	if (generation_read(m, &g, err, sizeof(err)) < 0) {
		if (o.upgrade_fd >= 0)
			upgrade_adopt_failed(m, o.upgrade_fd, err);
		return EXIT_FAILURE;
	}
	c = g->config;
	if (o.test && o.upgrade_check && upgrade_check_version(o.upgrade_check) < 0) {
		generation_unref(g);
		return EXIT_FAILURE;
	}
	if (o.test) {
		r = config_test(&o, c);
		generation_unref(g);
		return r;
	}

	master_setup(m);
	master_take_over(m, &o, g);
	atomic_store(&status->generation, m->gen->id);
	status_config = c;
	if (listeners_build(c, m->listeners, m->n_listeners, &ls) < 0) {
		if (m->up.adopting)
			upgrade_rollback(m, "the new configuration's listeners failed");
		cleanup(m);
		return EXIT_FAILURE;
	}
	listeners_install(m, ls, c->n_listeners);
	if (m->up.adopting)
		listeners_apply_perms(c, m->listeners);
	listeners_apply_passrights(g, m->listeners, false);
	listeners_warn_unused_passed();
	m->has_dgram = listeners_has_dgram(m);
	master_status_publish_config(m);
	admin_open(m);
	if (sd_watchdog_enabled(0, &m->watchdog_usec) <= 0)
		m->watchdog_usec = 0;
	if (c->exit_idle_usec && !listeners_all_passed(m))
		log_notice("exit_idle_time ignored: udsd would take away sockets that are not systemd's");

	for (size_t i = 0; i < c->n_listeners; i++)
		log_info("listener %s: %s (%s%s%s)%s", c->listeners[i].name,
			 c->listeners[i].address, g->services[i].name,
			 c->n_pools > 1 ? ", pool " : "",
			 c->n_pools > 1 ? c->pools[c->listeners[i].pool].name : "",
			 m->listeners[i].passed ? ", from systemd" : "");
	pool_check(m);
	loop(m);
	cleanup(m);
	log_info("stopped");
	return EXIT_SUCCESS;
}
