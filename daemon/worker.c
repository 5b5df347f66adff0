/* SPDX-License-Identifier: MIT */
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "daemon.h"
#include "fd-util.h"

/*
 * A worker process runs its pool's threads.  Each owns an epoll set and
 * its own channel to the master, so an fd reaches its thread with no lock and
 * no shared queue.  Threads share nothing but the read-only config, the
 * service code and their counters in shared memory.
 */

#define TICK_USEC USEC_PER_SEC
#define MAX_EVENTS 256
#define BUSY_POLL_MAX_EVENTS 4
/* Blocks this large get their own mapping; glibc's default, but fixed (malloc_setup). */
#define MMAP_THRESHOLD (128 * 1024)
/* Buffer bytes freed before the tick hands free pages back to the kernel. */
#define TRIM_MIN (1024 * 1024)
#ifdef __SANITIZE_ADDRESS__
/* AddressSanitizer's allocator owns the heap: glibc's malloc_trim() walks arenas it never set up. */
#define WORKER_TRIM false
#else
#define WORKER_TRIM true
#endif

/* The channel's epoll tag: any pointer that is not a connection. */
static char channel_tag;

/* This thread, for the stuck handler; and who may say a thread is stuck. */
static __thread struct wthread *self;
static pid_t master_pid;

/*
 * The master found this thread in one service callback for longer than
 * request_timeout (pool.c) and tgkill()ed it with SIGNAL_STUCK: say where it
 * is stuck, with a backtrace, and give its client the service's last word.
 * The master replaces the worker meanwhile.  Nobody else may ask for this.
 */
static void
stuck_handler(int sig, siginfo_t *si, void *ucontext)
{
	if (self && si->si_code == SI_TKILL && si->si_pid == master_pid)
		conn_stuck(self);
}

static void
stuck_handler_install(void)
{
	struct sigaction sa = { .sa_sigaction = stuck_handler, .sa_flags = SA_SIGINFO | SA_RESTART };

	log_backtrace_prepare();
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGNAL_STUCK, &sa, NULL) < 0)
		fatalx("sigaction: %s", strerror(errno));
}

/* A client is gone: the master's load count, and its wakeup if it waits for room (load.c). */
void
worker_client_done(struct wthread *t)
{
	if (load_closed(t->stats, status))
		t->wake_master = true;
}

/*
 * CHANNEL_DRAIN: take no more clients, let the services finish what they
 * have; the clients of the listeners msg names migrate instead, now if they
 * sit at a message boundary, else as soon as they reach one (conn_settle()).
 * A later DRAIN may only narrow that set (a stop during a reload).
 */
void
worker_thread_drain(struct wthread *t, const struct channel_msg *msg)
{
	bool was = t->draining;

	for (size_t i = 0; i < ELEMENTSOF(t->migrate); i++)
		t->migrate[i] = (!was || t->migrate[i]) && i < msg->count && msg->listener[i];
	t->draining = true;
	dgram_thread_drain(t);
	/* conn_drain() may close c: a closed connection keeps its memory and next pointer till the round ends. */
	for (struct udsd_conn *c = t->conns, *next; c; c = next) {
		next = c->next;
		conn_drain(c);
	}
}

/*
 * Once the handed-back batch has left: clients that found it full and sat at
 * a boundary since, with no event to bring them back, are looked at again.
 */
static void
thread_migrate_more(struct wthread *t)
{
	channel_thread_migrated(t);
	if (!t->migrate_retry || t->n_migrated > 0)
		return;
	t->migrate_retry = false;
	for (struct udsd_conn *c = t->conns, *next; c; c = next) {
		next = c->next;
		conn_migrate(c);
	}
}

/*
 * Once a second: deadlines, idle buffers given back, and the heartbeat the
 * master watches.  A connection closed here is freed with the round's others.
 */
static void
thread_tick(struct wthread *t)
{
	t->last_tick = t->now;
	atomic_store_explicit(&t->stats->heartbeat_usec, t->now, memory_order_relaxed);
	for (struct udsd_conn *c = t->conns, *next; c; c = next) {
		next = c->next;
		if (conn_expired(c, t->now))
			conn_timeout(c);
		else
			conn_trim(c);
	}
	/*
	 * free() returns a block in the middle of an arena to the free lists
	 * only: after a thousand clients with full buffers left, the worker kept
	 * their memory.  malloc_trim() gives those pages back; it locks every
	 * arena in turn, so only after frees worth it.
	 */
	if (t->freed >= TRIM_MIN) {
		if (WORKER_TRIM)
			malloc_trim(0);
		t->freed = 0;
	}
}

/*
 * glibc raises its mmap threshold to the size of any mapped block freed (up
 * to 32 MiB), so after one burst of large output buffers the next ones come
 * from the arenas and stay there when freed.  A fixed threshold keeps every
 * block that large in its own mapping, unmapped at free().
 */
static void
malloc_setup(void)
{
	(void)mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD);
}

static int
thread_setup(struct wthread *t)
{
	const struct worker_spec *spec = t->spec;
	const struct config *config = spec->config;
	int r;

	static pthread_once_t once = PTHREAD_ONCE_INIT;

	pthread_once(&once, malloc_setup);
	r = dgram_thread_setup(t);
	if (r < 0)
		return r;
	t->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (t->epfd < 0)
		return negative_errno();
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &channel_tag };
	if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, t->chan, &ev) < 0)
		return negative_errno();
	t->state = calloc(config->n_listeners, sizeof(void *));
	if (!t->state)
		return -ENOMEM;
	for (size_t i = 0; i < config->n_listeners; i++) {
		const struct service *s = &spec->services[i];

		if (config->listeners[i].pool != spec->pool_index)
			continue; /* another pool's: this worker never sees its clients */
		if (s->ops->init && (r = s->ops->init(&s->config, &t->state[i])) < 0) {
			log_with(LOG_ERR, &(struct log_fields){ .listener = config->listeners[i].name },
				 "listener %s: service %s: init failed: %s",
				 config->listeners[i].name, s->ops->name, strerror(-r));
			return r;
		}
	}
	t->now = now_usec();
	atomic_store_explicit(&t->stats->heartbeat_usec, t->now, memory_order_relaxed);
	/* With dgram listeners, READY waits for their sockets (channel_thread_read()). */
	return dgram_thread_has_all(t) ? channel_thread_ready(t) : 0;
}

static void
thread_teardown(struct wthread *t)
{
	const struct worker_spec *spec = t->spec;

	while (t->conns)
		conn_close(t->conns);
	conn_reap(t);
	close_many(t->migrated, t->n_migrated); /* the master is gone: nobody takes them */
	conn_free_spares(t);
	dgram_thread_teardown(t);
	for (size_t i = 0; t->state && i < spec->config->n_listeners; i++)
		if (spec->config->listeners[i].pool == spec->pool_index && spec->services[i].ops->fini)
			spec->services[i].ops->fini(t->state[i]);
	free(t->state);
	free(t->cork);
	free(t->gone);
	safe_close(t->epfd);
	safe_close(t->chan);
}

/*
 * busy_poll: after a round with few events (a latency-bound exchange, like one
 * client's ping-pong), poll without sleeping for a few microseconds before
 * blocking; the next request then costs no wakeup.  Go's scheduler does the
 * same.  Never after a busy round: under load the CPU is better left to others.
 */
static int
busy_poll(struct wthread *t, struct epoll_event *events)
{
	uint64_t spin = t->spec->pool->busy_poll_usec, until;
	int n;

	if (!spin || t->last_events <= 0 || t->last_events > BUSY_POLL_MAX_EVENTS)
		return 0;
	until = now_usec() + spin;
	do
		n = epoll_wait(t->epfd, events, MAX_EVENTS, 0);
	while (n == 0 && now_usec() < until);
	return n < 0 ? 0 : n;
}

static void *
thread_run(void *userdata)
{
	struct wthread *t = userdata;
	struct epoll_event events[MAX_EVENTS];
	int r;

	self = t;
	atomic_store_explicit(&t->stats->tid, (int32_t)gettid(), memory_order_relaxed);
	r = thread_setup(t);
	if (r < 0) {
		/* A worker that cannot serve on every thread is no worker: the master respawns it. */
		log_error("thread %u: setup failed: %s", t->index, strerror(-r));
		_exit(EXIT_FAILURE);
	}
	while (!t->done) {
		int n = busy_poll(t, events);
		/* Clients handed back but not yet sent (a full channel): try again soon. */
		if (n == 0)
			n = epoll_wait(t->epfd, events, MAX_EVENTS,
				       t->n_migrated ? 10 : (int)(TICK_USEC / USEC_PER_MSEC));
		t->last_events = n;
		if (n < 0 && errno != EINTR) {
			log_error("thread %u: epoll_wait: %s", t->index, strerror(errno));
			break;
		}
		t->now = now_usec();
		for (int i = 0; i < n; i++) {
			if (events[i].data.ptr == &channel_tag)
				channel_thread_read(t);
			else if (dgram_is_tag(events[i].data.ptr))
				dgram_event(t, events[i].data.ptr);
			else
				conn_event(events[i].data.ptr, events[i].events);
		}
		if (t->wake_master) /* rarely: only while the master waits for room */
			channel_thread_wake(t);
		if (t->n_gone)
			channel_thread_gone(t);
		if (t->now - t->last_tick >= TICK_USEC)
			thread_tick(t);
		if (t->n_migrated || t->migrate_retry)
			thread_migrate_more(t);
		if (t->closed)
			conn_reap(t);
		if (t->draining && t->n_conns == 0 && t->n_migrated == 0)
			t->done = true;
	}
	thread_teardown(t);
	return NULL;
}

/*
 * The pool's services as this worker runs them: the master's list, with the
 * plugins loaded here, now that the worker has the pool's credentials.
 */
static struct service *
worker_services(const struct worker_spec *spec)
{
	size_t n = spec->config->n_listeners;
	struct service *s = malloc(n * sizeof(*s));
	char err[512];

	if (!s)
		fatalx("out of memory");
	memcpy(s, spec->services, n * sizeof(*s));
	if (service_open(s, spec->config, spec->pool_index, err, sizeof(err)) < 0)
		fatalx("%s", err);
	return s;
}

void
worker_main(const struct worker_spec *master_spec)
{
	struct worker_spec own = *master_spec, *spec = &own;
	const struct config *config = spec->config;
	const struct config_pool *pool = spec->pool;
	struct status_worker *sw = &status->slots[spec->slot];
	struct wthread *threads;
	char prefix[64];
	pid_t master = status->master_pid;
	int failed = 0;

	if (config->n_pools > 1)
		snprintf(prefix, sizeof(prefix), "worker %u.%s.%u", spec->generation, pool->name,
			 sw->index);
	else
		snprintf(prefix, sizeof(prefix), "worker %u.%u", spec->generation, sw->index);
	log_set_prefix(prefix);
	log_forked();
	log_set_fields(&(struct log_fields){ .pool = pool->name, .generation = spec->generation,
					     .worker_pid = getpid() });
	(void)prctl(PR_SET_NAME, "udsd-worker");
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	unsetenv("NOTIFY_SOCKET");
	unsetenv("WATCHDOG_PID");
	unsetenv("WATCHDOG_USEC");
	credentials_drop(pool);
	/*
	 * Die with the master.  Only now: a change of credentials clears the
	 * parent-death signal.  The getppid() check closes the race with a
	 * master that died before it was set.
	 */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != master)
		_exit(EXIT_FAILURE);
	credentials_log();
	status_config = config;
	master_pid = master;
	stuck_handler_install();
	own.services = worker_services(master_spec);

	threads = calloc(pool->threads, sizeof(*threads));
	if (!threads)
		fatalx("out of memory");
	for (unsigned i = 0; i < pool->threads; i++)
		threads[i] = (struct wthread){ .spec = spec, .index = i, .epfd = -EBADF,
					       .chan = spec->channels[i], .stats = &sw->threads[i] };
	for (unsigned i = 1; i < pool->threads; i++)
		if ((errno = pthread_create(&threads[i].self, NULL, thread_run, &threads[i])) != 0)
			fatalx("pthread_create: %s", strerror(errno));
	if (thread_run(&threads[0]) != NULL)
		failed = 1;
	for (unsigned i = 1; i < pool->threads; i++) {
		void *ret;
		pthread_join(threads[i].self, &ret);
		if (ret != NULL)
			failed = 1;
	}
	free(threads);
	free((void *)own.services); /* the plugins stay loaded until the exit */
	log_debug("exiting");
	exit(failed ? EXIT_FAILURE : EXIT_SUCCESS);
}
