/* SPDX-License-Identifier: MIT */
#include <grp.h>
#include <linux/capability.h>
#include <malloc.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "daemon.h"
#include "fd-util.h"

/*
 * A worker process runs config->threads threads.  Each owns an epoll set and
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

/* The channel's epoll tag: any pointer that is not a connection. */
static char channel_tag;

/* A client is gone: the master's load count, and its wakeup if it waits for room (load.c). */
void
worker_client_done(struct wthread *t)
{
	if (load_closed(t->stats, status))
		t->wake_master = true;
}

/* CHANNEL_DRAIN: take no more clients, let the services finish what they have. */
void
worker_thread_drain(struct wthread *t)
{
	if (t->draining)
		return;
	t->draining = true;
	/* conn_drain() may close c: a closed connection keeps its memory and next pointer till the round ends. */
	for (struct udsd_conn *c = t->conns, *next; c; c = next) {
		next = c->next;
		conn_drain(c);
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
		if (s->ops->init && (r = s->ops->init(&s->config, &t->state[i])) < 0) {
			log_error("listener %s: service %s: init failed: %s",
				  config->listeners[i].name, s->ops->name, strerror(-r));
			return r;
		}
	}
	t->now = now_usec();
	atomic_store_explicit(&t->stats->heartbeat_usec, t->now, memory_order_relaxed);
	return channel_thread_ready(t);
}

static void
thread_teardown(struct wthread *t)
{
	const struct worker_spec *spec = t->spec;

	while (t->conns)
		conn_close(t->conns);
	conn_reap(t);
	conn_free_spares(t);
	for (size_t i = 0; t->state && i < spec->config->n_listeners; i++)
		if (spec->services[i].ops->fini)
			spec->services[i].ops->fini(t->state[i]);
	free(t->state);
	free(t->cork);
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
	uint64_t spin = t->spec->config->busy_poll_usec, until;
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

	r = thread_setup(t);
	if (r < 0) {
		/* A worker that cannot serve on every thread is no worker: the master respawns it. */
		log_error("thread %u: setup failed: %s", t->index, strerror(-r));
		_exit(EXIT_FAILURE);
	}
	while (!t->done) {
		int n = busy_poll(t, events);
		if (n == 0)
			n = epoll_wait(t->epfd, events, MAX_EVENTS, (int)(TICK_USEC / USEC_PER_MSEC));
		t->last_events = n;
		if (n < 0 && errno != EINTR) {
			log_error("thread %u: epoll_wait: %s", t->index, strerror(errno));
			break;
		}
		t->now = now_usec();
		for (int i = 0; i < n; i++) {
			if (events[i].data.ptr == &channel_tag)
				channel_thread_read(t);
			else
				conn_event(events[i].data.ptr, events[i].events);
		}
		if (t->wake_master) /* rarely: only while the master waits for room */
			channel_thread_wake(t);
		if (t->now - t->last_tick >= TICK_USEC)
			thread_tick(t);
		if (t->closed)
			conn_reap(t);
		if (t->draining && t->n_conns == 0)
			t->done = true;
	}
	thread_teardown(t);
	return NULL;
}

/* Sorted numbers, for a log line that reads the same every time. */
static int
cmp_gid(const void *a, const void *b)
{
	gid_t x = *(const gid_t *)a, y = *(const gid_t *)b;

	return x < y ? -1 : x > y;
}

/* Once per worker: who it runs as, as the kernel sees it now. */
static void
log_credentials(void)
{
	int n = getgroups(0, NULL);
	_cleanup_free_ gid_t *groups = malloc(sizeof(gid_t) * (size_t)MAX(n, 1));
	char list[1024] = "";
	size_t len = 0;
	uid_t uid = getuid();
	gid_t gid = getgid();
	const struct passwd *pw = getpwuid(uid);
	const struct group *gr = getgrgid(gid);
	char uname[64] = "", gname[64] = "";

	n = groups ? getgroups(n, groups) : -1;
	if (n < 0)
		n = 0;
	qsort(groups, (size_t)n, sizeof(gid_t), cmp_gid);
	for (int i = 0; i < n && len < sizeof(list); i++)
		len += (size_t)snprintf(list + len, sizeof(list) - len, "%s%u", i ? "," : "",
					(unsigned)groups[i]);
	if (pw)
		snprintf(uname, sizeof(uname), "(%s)", pw->pw_name);
	if (gr)
		snprintf(gname, sizeof(gname), "(%s)", gr->gr_name);
	log_info("running as uid=%u%s gid=%u%s groups=%s", (unsigned)uid, uname, (unsigned)gid,
		 gname, list);
}

/* No capability may survive the switch away from root (the kernel clears them: check). */
static bool
capabilities_left(void)
{
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3] = { 0 };

	if (syscall(SYS_capget, &h, d) < 0)
		return true;
	for (size_t i = 0; i < ELEMENTSOF(d); i++)
		if (d[i].effective || d[i].permitted)
			return true;
	return false;
}

/*
 * The group set that goes with user: its primary group (or group, if given)
 * and its supplementary groups, as initgroups() reads them; exactly gid when
 * passwd does not know the user.
 */
static void
set_groups(uid_t user, gid_t group)
{
	const struct passwd *pw = getpwuid(user);
	gid_t gid = group != (gid_t)-1 ? group : pw ? pw->pw_gid : (gid_t)-1;

	if (gid == (gid_t)-1)
		fatalx("user %u has no passwd entry to take its group from; set group too",
		       (unsigned)user);
	if ((pw ? initgroups(pw->pw_name, gid) : setgroups(1, &gid)) < 0)
		fatalx("setting the groups of uid %u: %s", (unsigned)user, strerror(errno));
	if (setresgid(gid, gid, gid) < 0)
		fatalx("setgid %u: %s", (unsigned)gid, strerror(errno));
}

/*
 * Workers need no privilege after the master bound the sockets: drop to the
 * configured user for good, and prove that it cannot be regained.  user
 * brings its own groups unless group is given; group alone (which the config
 * should refuse) changes only the groups and says so.
 */
static void
drop_privileges(const struct config *c)
{
	if (geteuid() != 0 || (c->user == (uid_t)-1 && c->group == (gid_t)-1))
		return;
	if (c->user == (uid_t)-1) {
		if (setgroups(1, &c->group) < 0 || setresgid(c->group, c->group, c->group) < 0)
			fatalx("setgid %u: %s", (unsigned)c->group, strerror(errno));
		log_warning("group without user: only the group changed, still uid 0");
		return;
	}
	set_groups(c->user, c->group);
	if (setresuid(c->user, c->user, c->user) < 0)
		fatalx("setuid %u: %s", (unsigned)c->user, strerror(errno));
	if (c->user == 0)
		return;
	/* Nor through an exec: no set-user-ID binary or file capability lifts us again. */
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		fatalx("PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
	if (setuid(0) == 0 || seteuid(0) == 0 || capabilities_left())
		fatalx("could regain root after dropping privileges");
}

void
worker_main(const struct worker_spec *spec)
{
	const struct config *config = spec->config;
	struct status_worker *sw = &status->slots[spec->slot];
	struct wthread *threads;
	char prefix[32];
	pid_t master = status->master_pid;
	int failed = 0;

	snprintf(prefix, sizeof(prefix), "worker %u.%u", spec->generation, sw->index);
	log_set_prefix(prefix);
	(void)prctl(PR_SET_NAME, "udsd-worker");
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	unsetenv("NOTIFY_SOCKET");
	unsetenv("WATCHDOG_PID");
	unsetenv("WATCHDOG_USEC");
	drop_privileges(config);
	/*
	 * Die with the master.  Only now: a change of credentials clears the
	 * parent-death signal.  The getppid() check closes the race with a
	 * master that died before it was set.
	 */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != master)
		_exit(EXIT_FAILURE);
	log_credentials();
	status_config = config;

	threads = calloc(config->threads, sizeof(*threads));
	if (!threads)
		fatalx("out of memory");
	for (unsigned i = 0; i < config->threads; i++)
		threads[i] = (struct wthread){ .spec = spec, .index = i, .epfd = -EBADF,
					       .chan = spec->channels[i], .stats = &sw->threads[i] };
	for (unsigned i = 1; i < config->threads; i++)
		if ((errno = pthread_create(&threads[i].self, NULL, thread_run, &threads[i])) != 0)
			fatalx("pthread_create: %s", strerror(errno));
	if (thread_run(&threads[0]) != NULL)
		failed = 1;
	for (unsigned i = 1; i < config->threads; i++) {
		void *ret;
		pthread_join(threads[i].self, &ret);
		if (ret != NULL)
			failed = 1;
	}
	free(threads);
	log_debug("exiting");
	exit(failed ? EXIT_FAILURE : EXIT_SUCCESS);
}
