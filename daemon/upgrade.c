/* SPDX-License-Identifier: MIT */
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "daemon.h"
#include "fd-util.h"
#include "sockact.h"

/*
 * Same-PID binary upgrade (SIGUSR2, or master_upgrade_start() for udsctl).
 *
 * 1. Check: the new binary (the file udsd was started from, as it is now)
 *    runs "-t -q -c CONFIG --upgrade-check=BLOB_VERSION" as a child: it
 *    must read the config and this state version.  A binary from before
 *    the upgrade protocol (a package downgrade) knows no such option and
 *    fails here, where it costs nothing, not after the exec, where it
 *    would take the master and every connection down.  It fails (exit status, a signal, not
 *    executable, 30 s): nothing changes; the reason goes to the log and to
 *    STATUS= ("upgrade failed: ...") until the next good upgrade.
 * 2. Hand-off: RELOADING=1; the state goes into a memfd (the "blob"), every
 *    fd it names loses FD_CLOEXEC, and the master execve()s the new binary
 *    with --upgrade-state=FD.  Same PID: systemd's MAINPID, the workers'
 *    parent (their PR_SET_PDEATHSIG holds: it fires on the parent thread's
 *    exit, not on exec), the blocked signal mask and pending signals (a
 *    worker that died meanwhile is reaped by the new image) all carry over.
 * 3. Adoption: the new image reads its config as a new generation, takes
 *    the listeners back (kept, bound or closed as on a reload), adopts the
 *    old workers with a stub of their generation (listener names, types,
 *    services and whether they migrate: what the master needs of them) and
 *    starts its own workers.  Accepting waits until those are READY (clients
 *    wait in the backlog); then the adopted workers drain, handing their
 *    connections over at message boundaries (CHANNEL_MIGRATED), and READY=1.
 * 4. Rollback: a new image that cannot read the blob, or whose generation
 *    does not get ready (a worker dies, 10 s), execs the old binary again
 *    through an fd kept open on it (fexecve), with a blob of its own and the
 *    reason, which the old image shows in STATUS=.  A new image that dies
 *    outright takes the master down: then Restart=on-failure and the fd
 *    store (fdstore.c) keep the sockets, but not the connections.
 *
 * The blob: a fixed header (magic, version, header size, the old binary's
 * fd) that every version keeps, then fields in order (put_state()); version
 * 2 adds each worker's per-uid counts.  An image reads BLOB_VERSION_MIN to
 * BLOB_VERSION, refuses another version and rolls back with the header's
 * fd; the check (--upgrade-check) asks first, so that this is rare.  Old workers may speak another channel version (carried per worker):
 * a version 1 worker gets a plain CHANNEL_DRAIN and drains, nothing moves.
 * Not carried: the status mapping, whose memfds are sealed against new
 * writable mappings; the new image maps its own, and the adopted workers
 * write their old one, which nobody reads any more (they only drain).
 */

#define BLOB_MAGIC "udsdstat"
/* 2: each worker's per-uid counts (max_connections_per_uid) follow its channels. */
#define BLOB_VERSION 2
#define BLOB_VERSION_MIN 1 /* the oldest this binary reads */
#define BLOB_ROLLBACK 1u /* flags: the new image failed; why is in the blob */
#define VERSION_STR_(v) #v
#define VERSION_STR(v) VERSION_STR_(v)
#define CHECK_OPTION "--upgrade-check=" VERSION_STR(BLOB_VERSION)
#define CHECK_TIMEOUT_USEC (30 * USEC_PER_SEC)
#define STR_MAX 4096
/* Why a new image that could not read the state rolled back (it cannot write a blob). */
#define ROLLBACK_ENV "UDSD_UPGRADE_ROLLBACK"

struct blob_header {
	char magic[8];
	uint32_t version;
	uint32_t size; /* of this header: later versions may grow it */
	int32_t exe_fd;
	uint32_t flags;
};

struct blob {
	uint32_t version; /* being read */
	uint8_t *p;
	size_t len, cap, off;
	bool bad;
};

static void
put(struct blob *b, const void *v, size_t n)
{
	if (!b->bad && b->len + n > b->cap) {
		size_t cap = (b->len + n) * 2;
		uint8_t *p = realloc(b->p, cap);

		if (p) {
			b->p = p;
			b->cap = cap;
		}
		b->bad = !p;
	}
	if (b->bad)
		return;
	memcpy(b->p + b->len, v, n);
	b->len += n;
}

static void
put_u64(struct blob *b, uint64_t v)
{
	put(b, &v, sizeof(v));
}

static void
put_str(struct blob *b, const char *s)
{
	uint32_t n = s ? (uint32_t)strlen(s) : UINT32_MAX;

	put(b, &n, sizeof(n));
	if (s)
		put(b, s, n);
}

static void
get(struct blob *b, void *v, size_t n)
{
	if (b->bad || b->len - b->off < n) {
		b->bad = true;
		memset(v, 0, n);
		return;
	}
	memcpy(v, b->p + b->off, n);
	b->off += n;
}

static uint64_t
get_u64(struct blob *b)
{
	uint64_t v;

	get(b, &v, sizeof(v));
	return v;
}

/* A count of things that follow, bounded so that a bad blob cannot make us allocate much. */
static size_t
get_count(struct blob *b, size_t max)
{
	uint64_t n = get_u64(b);

	if (n > max)
		b->bad = true;
	return b->bad ? 0 : (size_t)n;
}

/*
 * An fd the old image handed over, checked to be open.  It stays inheritable
 * until the whole state was taken (carry_fds()), so that a rollback can hand
 * the same blob back.
 */
static int
get_fd(struct blob *b)
{
	int fd = (int)get_u64(b);

	if (fd < 0)
		return -EBADF;
	if (b->bad || fcntl(fd, F_GETFD) < 0) {
		b->bad = true;
		return -EBADF;
	}
	return fd;
}

static char *
get_str_max(struct blob *b, size_t max)
{
	uint32_t n;
	char *s;

	get(b, &n, sizeof(n));
	if (b->bad || n == UINT32_MAX)
		return NULL;
	if (n > max || b->len - b->off < n || !(s = strndup((char *)b->p + b->off, n))) {
		b->bad = true;
		return NULL;
	}
	b->off += n;
	return s;
}

static char *
get_str(struct blob *b)
{
	return get_str_max(b, STR_MAX);
}

/* ---- the running image: start, check, hand off ---- */

static void
upgrade_failed(struct master *m, const char *fmt, ...) _printf_(2, 3);

static void
upgrade_failed(struct master *m, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(m->up.error, sizeof(m->up.error), fmt, ap);
	va_end(ap);
	m->up.check_pid = 0;
	free(m->up.binary);
	m->up.binary = NULL;
	log_error("upgrade failed, still running the old binary: %s", m->up.error);
	/* STATUS= says so with the loop's next status (notify_status()). */
}

/* The file an upgrade is about: by fd, or else by path. */
static void
target_set(struct master *m, int fd, const char *path)
{
	struct stat st;

	if ((path ? stat(path, &st) : fstat(fd, &st)) < 0)
		st = (struct stat){ 0 };
	m->up.target_dev = st.st_dev;
	m->up.target_ino = st.st_ino;
}

/* Another file at path than the one checked (or running): a package replaced it since. */
static bool
target_changed(const struct master *m, const char *path)
{
	struct stat st;

	return !path || stat(path, &st) < 0 || st.st_dev != m->up.target_dev ||
	       st.st_ino != m->up.target_ino;
}

/* At start: the binary we run, kept open for a rollback, and where a new one will be. */
void
upgrade_init(struct master *m, char **argv)
{
	char path[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);

	m->up.argv = m->up.old_argv = argv;
	m->up.check_out = m->up.old_exe_fd = -EBADF;
	m->up.exe_fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
	target_set(m, m->up.exe_fd, NULL);
	if (n > 0) {
		path[n] = '\0';
		/* After an upgrade (or a rollback) our own file may have been replaced. */
		if (n > 10 && strcmp(path + n - 10, " (deleted)") == 0)
			path[n - 10] = '\0';
		m->up.exe_path = strdup(path);
	}
}

/* In the binary being checked ("-t --upgrade-check=VERSION"): can it take that state over? */
int
upgrade_check_version(long version)
{
	if (version >= BLOB_VERSION_MIN && version <= BLOB_VERSION)
		return 0;
	log_error("upgrade state version %ld: this binary reads %u to %u", version,
		  BLOB_VERSION_MIN, BLOB_VERSION);
	return -EPROTONOSUPPORT;
}

static void
check_child(const char *binary, const char *config, int out)
{
	sigset_t all;

	sigfillset(&all);
	sigprocmask(SIG_UNBLOCK, &all, NULL);
	if (dup2(out, STDOUT_FILENO) < 0 || dup2(out, STDERR_FILENO) < 0)
		_exit(127);
	execl(binary, binary, "-t", "-q", "-c", config, CHECK_OPTION, (char *)NULL);
	fprintf(stderr, "cannot execute %s: %s\n", binary, strerror(errno));
	_exit(127);
}

/*
 * Start an upgrade to binary (NULL: the file udsd was started from).  0: the
 * check runs; the outcome comes later: on failure m->up.error, the log and
 * STATUS= say why and udsd serves on; on success the master re-executes
 * itself and the new image says READY=1 (or rolls back, see above).
 * -EBUSY while a reload, an upgrade or a stop is in progress; other -errno
 * (with err) when the check could not even start.
 */
int
master_upgrade_start(struct master *m, const char *binary, char *err, size_t errlen)
{
	int pipefd[2];
	pid_t pid;

	if (m->stopping || m->pending || m->up.check_pid || m->up.adopting) {
		snprintf(err, errlen, "%s", m->stopping ? "stopping" : m->pending ?
			 "a reload is in progress" : "an upgrade is in progress");
		return -EBUSY;
	}
	binary = binary ? binary : m->up.exe_path;
	if (!binary || access(binary, X_OK) < 0) {
		snprintf(err, errlen, "%s: %s", binary ? binary : "udsd's own binary",
			 binary ? strerror(errno) : "unknown");
		upgrade_failed(m, "%s", err);
		return -EACCES;
	}
	target_set(m, -EBADF, binary);
	if (pipe2(pipefd, O_CLOEXEC | O_NONBLOCK) < 0 || !(m->up.binary = strdup(binary))) {
		snprintf(err, errlen, "%s", strerror(errno));
		return -ENOMEM;
	}
	pid = fork();
	if (pid == 0)
		check_child(binary, m->config_file, pipefd[1]);
	safe_close(pipefd[1]);
	if (pid < 0) {
		safe_close(pipefd[0]);
		snprintf(err, errlen, "fork: %s", strerror(errno));
		upgrade_failed(m, "%s", err);
		return -EAGAIN;
	}
	m->up.check_pid = pid;
	m->up.check_out = pipefd[0];
	m->up.check_deadline = now_usec() + CHECK_TIMEOUT_USEC;
	log_info("upgrade: checking %s with the configuration %s", binary, m->config_file);
	return 0;
}

/* The check's first line of output, for the log and STATUS=. */
static void
check_output(struct master *m, char *buf, size_t size)
{
	ssize_t n = read(m->up.check_out, buf, size - 1);

	buf[n > 0 ? n : 0] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	m->up.check_out = safe_close(m->up.check_out);
}

static void upgrade_exec(struct master *m, const char *binary, int fd, const char *rollback);

/* From pool_reap(): true if pid was the check, whose outcome decides. */
bool
upgrade_reaped(struct master *m, pid_t pid, int wstatus)
{
	char out[160];

	if (!pid || pid != m->up.check_pid)
		return false;
	check_output(m, out, sizeof(out));
	if (m->pending && !m->stopping) {
		/* The check was of the binary, not of the config the reload brings: again, after it. */
		log_info("upgrade: a reload started meanwhile; checking again once it is over");
		m->up.check_pid = 0;
		m->up.wanted = true; /* m->up.binary: checked again (upgrade_tick()) */
	} else if (m->stopping)
		upgrade_failed(m, "stopping");
	else if (WIFSIGNALED(wstatus))
		upgrade_failed(m, "%s -t: killed by signal %s", m->up.binary,
			       sigabbrev_np(WTERMSIG(wstatus)));
	else if (WEXITSTATUS(wstatus) != 0)
		upgrade_failed(m, "%s -t: exit status %d%s%s", m->up.binary, WEXITSTATUS(wstatus),
			       *out ? ": " : "", out);
	else if (target_changed(m, m->up.binary)) {
		/*
		 * What runs must be what was checked.  A replacement between
		 * this stat() and the execv() still runs unchecked: executing
		 * an fd opened for the check would close that window, but not
		 * for a script, whose interpreter reopens it by path.
		 */
		log_info("upgrade: %s changed during its check; checking it again", m->up.binary);
		m->up.check_pid = 0;
		m->up.wanted = true;
	} else
		upgrade_exec(m, m->up.binary, -EBADF, NULL);
	return true;
}

/*
 * SIGUSR2.  A signal cannot be told "busy": during a reload, the upgrade
 * follows it; during an upgrade, another follows if the file at udsd's path
 * is not the one being checked or run (a newer package), else it is the
 * same request twice.
 */
void
upgrade_request(struct master *m)
{
	char err[256];
	int r = master_upgrade_start(m, NULL, err, sizeof(err));

	if (r != -EBUSY || m->stopping)
		return;
	if (m->pending) {
		m->up.wanted = true;
		log_info("SIGUSR2: upgrading once the reload in progress is over");
	} else if (target_changed(m, m->up.exe_path)) {
		m->up.wanted = true;
		log_info("SIGUSR2: %s changed since this upgrade began: upgrading again after it",
			 m->up.exe_path);
	} else
		log_warning("SIGUSR2: not upgrading: %s", err);
}

static void
put_listeners(struct blob *b, const struct master *m)
{
	struct sockact_fd *passed;
	size_t n_passed;

	listeners_passed_get(&passed, &n_passed);
	put_u64(b, n_passed);
	for (size_t i = 0; i < n_passed; i++) {
		put_str(b, passed[i].name);
		put_u64(b, (uint64_t)passed[i].fd);
		put_u64(b, passed[i].used);
	}
	put_u64(b, m->n_listeners);
	for (size_t i = 0; i < m->n_listeners; i++) {
		const struct mlistener *l = &m->listeners[i];

		put_str(b, l->address);
		put_u64(b, (uint64_t)l->type);
		put_u64(b, (uint64_t)l->fd);
		put_u64(b, l->ours | l->passed << 1);
		put_str(b, l->stored);
		put_u64(b, (uint64_t)l->file.dir_fd);
		put_str(b, l->file.name);
		put_u64(b, l->file.dev);
		put_u64(b, l->file.ino);
	}
}

/*
 * A generation whose workers the new image adopts: its configuration as
 * "udsd -T" prints it (parsed back there: every pool and listener key the
 * master reads of an old worker), and each listener's service name and
 * flags, which the master knows without loading a plugin.
 */
static void
put_generation(struct blob *b, const struct generation *g)
{
	_cleanup_free_ char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	if (!f || config_dump(g->config, f) < 0) {
		b->bad = true;
		if (f)
			fclose(f);
		return;
	}
	fclose(f);
	put_u64(b, g->id);
	put_str(b, text);
	put_u64(b, g->config->n_listeners);
	for (size_t i = 0; i < g->config->n_listeners; i++) {
		put_str(b, g->services[i].name);
		put_u64(b, g->services[i].flags);
	}
}

static void
put_worker(struct blob *b, const struct mworker *w)
{
	put_u64(b, w->slot);
	put_u64(b, w->pool);
	put_u64(b, w->index);
	put_u64(b, w->retiring);
	put_u64(b, w->max_requests);
	put_u64(b, (uint64_t)w->pid);
	put_u64(b, w->gen->id);
	put_u64(b, w->state);
	put_u64(b, w->chan_version);
	put_u64(b, w->n_threads);
	put_u64(b, w->started_usec);
	put_u64(b, w->kill_at);
	put_u64(b, w->killed);
	put_u64(b, w->n_migrate);
	put(b, w->migrate, w->n_migrate);
	for (unsigned t = 0; t < w->n_threads; t++) {
		const struct mchannel *ch = &w->chan[t];

		put_u64(b, (uint64_t)ch->fd);
		put_u64(b, (uint64_t)ch->peer);
		put_u64(b, ch->sent);
		put_u64(b, ch->closed);
		put_u64(b, ch->ready | ch->drain_wanted << 1);
	}
	put_u64(b, w->n_uids);
	for (size_t i = 0; i < w->n_uids; i++) {
		put_u64(b, w->uids[i].listener);
		put_u64(b, w->uids[i].uid);
		put_u64(b, w->uids[i].n);
	}
}

static size_t
orphans_count(const struct master *m)
{
	size_t n = 0;

	for (size_t p = 0; p < m->n_pools; p++)
		n += m->pools[p].n_orphans;
	return n;
}

/* Every generation a living worker (or a waiting client) refers to, once. */
static size_t
generations_in_use(const struct master *m, const struct generation **gens)
{
	size_t n = 0;

	gens[n++] = m->gen;
	for (size_t i = 0; i < m->n_slots; i++) {
		const struct generation *g = m->workers[i].gen;
		bool seen = m->workers[i].state == WORKER_FREE;

		for (size_t k = 0; k < n && !seen; k++)
			seen = gens[k] == g;
		if (!seen)
			gens[n++] = g;
	}
	return n;
}

static void
put_state(struct blob *b, const struct master *m, const char *rollback)
{
	const struct generation *gens[STATUS_MAX_SLOTS + 1];
	size_t n_gens = generations_in_use(m, gens), n_workers, n_argv = 0;

	put_str(b, rollback);
	while (m->up.old_argv[n_argv])
		n_argv++;
	put_u64(b, n_argv);
	for (size_t i = 0; i < n_argv; i++)
		put_str(b, m->up.old_argv[i]);
	put_u64(b, m->last_gen_id);
	put_u64(b, m->started_usec);
	put_u64(b, status->start_usec);
	put_u64(b, m->activated);
	put_listeners(b, m);
	put_u64(b, n_gens);
	for (size_t i = 0; i < n_gens; i++)
		put_generation(b, gens[i]);
	n_workers = pool_count(m, WORKER_RUNNING) + pool_count(m, WORKER_DRAINING);
	put_u64(b, n_workers);
	for (size_t i = 0; i < m->n_slots; i++)
		if (m->workers[i].state != WORKER_FREE)
			put_worker(b, &m->workers[i]);
	/* Waiting clients, their listener an index of the current generation (gens[0]). */
	put_u64(b, orphans_count(m));
	for (size_t p = 0; p < m->n_pools; p++)
		for (size_t i = 0; i < m->pools[p].n_orphans; i++) {
			const struct orphan *o = &m->pools[p].orphans[i];

			put_u64(b, (uint64_t)o->fd);
			put_u64(b, o->listener);
			put_u64(b, o->since);
		}
	put_str(b, m->up.error);
}

/* Every fd the blob names survives the exec, or (undo) none does. */
static void
carry_fds(const struct master *m, bool carry)
{
	struct sockact_fd *passed;
	size_t n_passed;

	listeners_passed_get(&passed, &n_passed);
	for (size_t i = 0; i < n_passed; i++)
		(void)fd_set_cloexec(passed[i].fd, !carry);
	for (size_t i = 0; i < m->n_listeners; i++) {
		(void)fd_set_cloexec(m->listeners[i].fd, !carry);
		(void)fd_set_cloexec(m->listeners[i].file.dir_fd, !carry);
	}
	for (size_t i = 0; i < m->n_slots; i++)
		for (unsigned t = 0; m->workers[i].state != WORKER_FREE && t < m->workers[i].n_threads;
		     t++) {
			(void)fd_set_cloexec(m->workers[i].chan[t].fd, !carry);
			(void)fd_set_cloexec(m->workers[i].chan[t].peer, !carry);
		}
	for (size_t p = 0; p < m->n_pools; p++)
		for (size_t i = 0; i < m->pools[p].n_orphans; i++)
			(void)fd_set_cloexec(m->pools[p].orphans[i].fd, !carry);
	(void)fd_set_cloexec(m->up.exe_fd, !carry);
	if (!carry) /* the next image's way back, then ours: for now, it stays */
		(void)fd_set_cloexec(m->up.old_exe_fd, true);
}

/* The blob in a memfd that survives the exec; -errno. */
static int
blob_write(const struct master *m, const char *rollback)
{
	struct blob_header h = { .magic = BLOB_MAGIC, .version = BLOB_VERSION,
				 .size = sizeof(h), .exe_fd = m->up.exe_fd,
				 .flags = rollback ? BLOB_ROLLBACK : 0 };
	_cleanup_free_ uint8_t *p = NULL;
	struct blob b = { 0 };
	int fd;

	memcpy(h.magic, BLOB_MAGIC, sizeof(h.magic));
	put(&b, &h, sizeof(h));
	put_state(&b, m, rollback);
	p = b.p;
	if (b.bad)
		return -ENOMEM;
	/* Not close-on-exec: the next image reads it. */
	fd = memfd_create("udsd-upgrade-state", 0);
	if (fd < 0)
		return negative_errno();
	if (write(fd, b.p, b.len) != (ssize_t)b.len) {
		safe_close(fd);
		return -EIO;
	}
	return fd;
}

/* The argv for the next image: ours without an earlier --upgrade-state, then the new one. */
static char **
exec_argv(char **argv, const char *binary, char *opt)
{
	size_t n = 0, k = 0;
	char **v;

	while (argv[n])
		n++;
	v = calloc(n + 2, sizeof(*v));
	if (!v)
		return NULL;
	v[k++] = (char *)binary;
	for (size_t i = 1; i < n; i++)
		if (strncmp(argv[i], "--upgrade-state=", 16) != 0)
			v[k++] = argv[i];
	v[k++] = opt;
	return v;
}

/*
 * Hand over to binary (or, for a rollback, to the binary behind fd).  Returns
 * only if the exec failed, with everything as it was.
 */
static void
upgrade_exec(struct master *m, const char *binary, int fd, const char *rollback)
{
	char opt[48];
	_cleanup_free_ char **argv = NULL;
	int blob, r;

	sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=upgrading to %s",
		   (unsigned long long)now_usec(), rollback ? "the old binary" : binary);
	log_info("%s: executing %s", rollback ? "rolling back" : "upgrade",
		 rollback ? "the old binary again" : binary);
	/* Queued clients leave now; what the channel does not take waits with the others. */
	channel_flush_all(m);
	accept_orphans_take_pending(m);
	blob = blob_write(m, rollback);
	snprintf(opt, sizeof(opt), "--upgrade-state=%d", blob);
	argv = blob >= 0 ? exec_argv(rollback ? m->up.old_argv : m->up.argv, binary, opt) : NULL;
	if (!argv) {
		r = blob < 0 ? blob : -ENOMEM;
	} else {
		carry_fds(m, true);
		if (fd >= 0)
			fexecve(fd, argv, environ);
		else
			execv(binary, argv);
		r = negative_errno();
		carry_fds(m, false);
	}
	safe_close(blob);
	upgrade_failed(m, "executing %s: %s", binary, strerror(-r));
	sd_notify(0, "READY=1");
}

/* ---- the new image: adopt, then serve or roll back ---- */

/* A generation of adopted workers: its configuration parsed back, its services by name and flags. */
static struct generation *
get_generation(struct blob *b)
{
	_cleanup_free_ char *text = NULL;
	struct generation *g = calloc(1, sizeof(*g));
	char err[256];
	size_t n;

	if (!g) {
		b->bad = true;
		return NULL;
	}
	g->id = (unsigned)get_u64(b);
	text = get_str_max(b, 1 << 20);
	if (!text || config_load_string("(the old binary's configuration)", text, &g->config, err,
					sizeof(err)) < 0) {
		log_error("upgrade: the old binary's configuration of generation %u: %s", g->id,
			  text ? err : "missing");
		b->bad = true;
		free(g);
		return NULL;
	}
	n = get_count(b, CONFIG_MAX_LISTENERS);
	g->services = calloc(MAX(n, 1), sizeof(*g->services));
	if (!g->services || n != g->config->n_listeners)
		b->bad = true;
	for (size_t i = 0; i < n && !b->bad; i++) {
		_cleanup_free_ char *name = get_str(b);

		snprintf(g->services[i].name, sizeof(g->services[i].name), "%s", name ? name : "?");
		g->services[i].flags = (unsigned)get_u64(b);
	}
	return g;
}

static struct generation *
find_generation(struct generation **gens, size_t n, unsigned id)
{
	for (size_t i = 0; i < n; i++)
		if (gens[i] && gens[i]->id == id)
			return gens[i];
	return NULL;
}

/* Its clients per uid (max_connections_per_uid): those that stay with it go on counting. */
static void
get_uids(struct blob *b, struct mworker *w)
{
	size_t n = get_count(b, 1 << 20);

	if (n == 0 || b->bad)
		return;
	w->uids = calloc(n, sizeof(*w->uids));
	if (!w->uids) {
		b->bad = true;
		return;
	}
	w->n_uids = w->cap_uids = n;
	for (size_t i = 0; i < n; i++) {
		uint64_t listener = get_u64(b);

		w->uids[i].listener = (uint8_t)listener;
		w->uids[i].uid = (uid_t)get_u64(b);
		w->uids[i].n = (unsigned)get_u64(b);
		if (listener >= w->gen->config->n_listeners)
			b->bad = true;
	}
}

static void
get_worker(struct blob *b, struct master *m, struct generation **gens, size_t n_gens)
{
	unsigned slot = (unsigned)get_u64(b);
	struct mworker tmp = { 0 }, *w = slot < STATUS_MAX_SLOTS ? &m->workers[slot] : &tmp;

	if (slot >= STATUS_MAX_SLOTS || w->state != WORKER_FREE)
		b->bad = true;
	*w = (struct mworker){ .slot = slot, .pool = (unsigned)get_u64(b) };
	w->index = (unsigned)get_u64(b);
	w->retiring = get_u64(b);
	w->max_requests = (unsigned)get_u64(b);
	w->pid = (pid_t)get_u64(b);
	w->gen = find_generation(gens, n_gens, (unsigned)get_u64(b));
	w->state = (enum worker_state)get_u64(b);
	w->chan_version = (unsigned)get_u64(b);
	w->n_threads = (unsigned)get_u64(b);
	w->started_usec = get_u64(b);
	w->kill_at = get_u64(b);
	w->killed = get_u64(b);
	w->n_migrate = (unsigned)get_count(b, CONFIG_MAX_LISTENERS);
	get(b, w->migrate, w->n_migrate);
	if (!w->gen || w->pool >= w->gen->config->n_pools || w->n_threads == 0 ||
	    w->n_threads > CONFIG_MAX_THREADS ||
	    (w->state != WORKER_RUNNING && w->state != WORKER_DRAINING) ||
	    !(w->chan = calloc(w->n_threads, sizeof(*w->chan))))
		b->bad = true;
	for (unsigned t = 0; t < w->n_threads && !b->bad; t++) {
		struct mchannel *ch = &w->chan[t];
		uint64_t flags;

		*ch = (struct mchannel){ .watch.kind = WATCH_CHANNEL, .worker = w };
		ch->fd = get_fd(b);
		ch->peer = get_fd(b);
		ch->sent = get_u64(b);
		ch->closed = get_u64(b);
		flags = get_u64(b);
		ch->ready = flags & 1;
		ch->drain_wanted = flags & 2;
		w->ready += ch->ready;
	}
	if (b->version >= 2)
		get_uids(b, w);
	if (b->bad || channel_adopt(m, w) < 0) {
		b->bad = true;
		free(w->uids);
		free(w->chan);
		*w = (struct mworker){ 0 };
		return;
	}
	w->gen->refs++;
	m->n_slots = MAX(m->n_slots, slot + 1);
	log_info("adopted worker %d of generation %u (%s)", (int)w->pid, w->gen->id,
		 w->state == WORKER_RUNNING ? "serving until the new generation is ready" :
					      "draining");
}

static void
get_listeners(struct blob *b, struct master *m)
{
	size_t n = get_count(b, 4096);
	struct sockact_fd *passed = calloc(MAX(n, 1), sizeof(*passed));

	if (!passed)
		b->bad = true;
	for (size_t i = 0; i < n && !b->bad; i++) {
		passed[i].name = get_str(b);
		passed[i].fd = get_fd(b);
		passed[i].used = get_u64(b);
		if (!passed[i].name)
			b->bad = true;
	}
	listeners_passed_set(passed, b->bad ? 0 : n);
	m->n_listeners = get_count(b, CONFIG_MAX_LISTENERS);
	m->listeners = calloc(MAX(m->n_listeners, 1), sizeof(*m->listeners));
	if (!m->listeners)
		b->bad = true;
	for (size_t i = 0; i < m->n_listeners && !b->bad; i++) {
		struct mlistener *l = &m->listeners[i];
		uint64_t flags;

		*l = (struct mlistener){ .watch.kind = WATCH_LISTENER, .index = (unsigned)i };
		l->address = get_str(b);
		l->type = (int)get_u64(b);
		l->fd = get_fd(b);
		flags = get_u64(b);
		l->ours = flags & 1;
		l->passed = flags & 2;
		l->stored = get_str(b);
		l->file.dir_fd = get_fd(b);
		l->file.name = get_str(b);
		l->file.dev = (dev_t)get_u64(b);
		l->file.ino = (ino_t)get_u64(b);
		if (!l->address || l->fd < 0)
			b->bad = true;
	}
}

/*
 * Clients that waited for a worker in the old image wait here, in the new
 * config's terms (the pools exist by now).  Read whole before any is closed
 * or placed: a bad blob goes back as it came.
 */
static void
get_orphans(struct blob *b, struct master *m, const struct generation *from)
{
	size_t n = get_count(b, (size_t)m->max_orphans * CONFIG_MAX_POOLS);
	_cleanup_free_ struct orphan *o = calloc(MAX(n, 1), sizeof(*o));

	if (!o)
		b->bad = true;
	for (size_t i = 0; i < n && !b->bad; i++) {
		o[i].fd = get_fd(b);
		o[i].listener = (uint8_t)get_u64(b);
		o[i].since = get_u64(b);
	}
	for (size_t i = 0; i < n && !b->bad; i++) {
		int l = from && o[i].listener < from->config->n_listeners ?
				listeners_remap(m->gen->config, from->config, o[i].listener) : -ENOENT;

		if (l < 0)
			safe_close(o[i].fd);
		else
			accept_dispatch(m, o[i].fd, (unsigned)l);
	}
}

/* The first image's argv: a rollback runs the old binary as it was started. */
static void
get_argv(struct blob *b, struct master *m)
{
	size_t n = get_count(b, 1024);
	char **v = calloc(n + 1, sizeof(*v));

	if (!v || n == 0)
		b->bad = true;
	for (size_t i = 0; i < n && !b->bad; i++)
		if (!(v[i] = get_str(b)))
			b->bad = true;
	if (b->bad) {
		for (size_t i = 0; v && i < n; i++)
			free(v[i]);
		free(v);
		return;
	}
	m->up.old_argv = v; /* for the life of the process */
}

static int
blob_read(int fd, struct blob *b)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return negative_errno();
	if (st.st_size < (off_t)sizeof(struct blob_header) || st.st_size > 64 << 20)
		return -EBADMSG;
	b->len = (size_t)st.st_size;
	b->p = malloc(b->len);
	if (!b->p)
		return -ENOMEM;
	if (pread(fd, b->p, b->len, 0) != (ssize_t)b->len)
		return -EIO;
	return 0;
}

/*
 * The state the old image left; -errno if it cannot be used (the caller
 * rolls back).  The listeners come back as m's current set, for
 * listeners_build() to keep, bind or close as on a reload.
 */
static int
restore(struct master *m, struct blob *b, struct generation **gens, size_t *ret_n_gens,
	char **ret_rollback)
{
	struct blob_header h;
	size_t n_gens, n_workers;

	get(b, &h, sizeof(h));
	if (memcmp(h.magic, BLOB_MAGIC, sizeof(h.magic)) != 0)
		return -EBADMSG;
	if (h.version < BLOB_VERSION_MIN || h.version > BLOB_VERSION) {
		log_error("upgrade: state version %u, this binary reads %u to %u", h.version,
			  BLOB_VERSION_MIN, BLOB_VERSION);
		return -EPROTONOSUPPORT;
	}
	b->off = h.size;
	b->version = h.version;
	if (h.exe_fd >= 0 && fcntl(h.exe_fd, F_GETFD) >= 0)
		m->up.old_exe_fd = h.exe_fd;
	*ret_rollback = get_str(b);
	get_argv(b, m);
	m->last_gen_id = (unsigned)get_u64(b);
	m->started_usec = get_u64(b);
	status->start_usec = get_u64(b);
	m->activated = get_u64(b);
	get_listeners(b, m);
	n_gens = get_count(b, STATUS_MAX_SLOTS + 1);
	for (size_t i = 0; i < n_gens && !b->bad; i++)
		gens[i] = get_generation(b);
	*ret_n_gens = n_gens;
	n_workers = get_count(b, STATUS_MAX_SLOTS);
	for (size_t i = 0; i < n_workers && !b->bad; i++)
		get_worker(b, m, gens, n_gens);
	return b->bad ? -EBADMSG : 0;
}

void
upgrade_rollback(struct master *m, const char *why)
{
	if (m->up.old_exe_fd < 0 || m->up.rolled_back) {
		log_error("upgrade: %s; no way back (%s)", why,
			  m->up.rolled_back ? "this is the rollback" : "no old binary");
		return;
	}
	log_error("upgrade: %s; rolling back to the old binary", why);
	for (size_t i = 0; i < m->n_slots; i++)
		if (m->workers[i].state != WORKER_FREE && m->workers[i].gen == m->gen)
			pool_kill(&m->workers[i]);
	upgrade_exec(m, m->up.old_argv[0], m->up.old_exe_fd, why);
}

/*
 * In a new image started with --upgrade-state=FD: take over what the old one
 * left, with g (the config as read now) as the generation to start.  0, or
 * -errno: then the caller rolls back with upgrade_adopt_failed().
 */
int
upgrade_adopt(struct master *m, int fd, struct generation *g)
{
	struct generation *gens[STATUS_MAX_SLOTS + 1] = { 0 };
	struct blob b = { 0 };
	char *rollback = NULL;
	size_t n_gens = 0;
	int r;

	m->gen = g;
	if (getenv(ROLLBACK_ENV))
		m->up.env_rollback = strdup(getenv(ROLLBACK_ENV));
	unsetenv(ROLLBACK_ENV);
	r = blob_read(fd, &b);
	if (r >= 0)
		r = restore(m, &b, gens, &n_gens, &rollback);
	if (r >= 0 && !b.bad) {
		g->id = ++m->last_gen_id;
		pools_setup(m, NULL);
		get_orphans(&b, m, gens[0]);
	}
	free(get_str(&b)); /* the old image's last upgrade error: superseded */
	free(b.p);
	if (r >= 0 && b.bad)
		r = -EBADMSG;
	if (r < 0)
		return r;
	safe_close(fd);
	carry_fds(m, false);
	for (size_t i = 0; i < n_gens; i++)
		if (gens[i] && gens[i]->refs == 0) {
			gens[i]->refs = 1;
			generation_unref(gens[i]);
		}
	m->up.error[0] = '\0';
	if (!rollback)
		rollback = TAKE_PTR(m->up.env_rollback);
	if (rollback) {
		snprintf(m->up.error, sizeof(m->up.error), "the new binary failed (%s); rolled back",
			 rollback);
		m->up.rolled_back = true;
		free(rollback);
	}
	m->up.adopting = true;
	m->up.adopt_deadline = now_usec() + WORKER_READY_TIMEOUT_USEC;
	return 0;
}

/*
 * The new image could not take the state over: the old binary again, with
 * the blob as it was (every fd in it is still inheritable).  Only returns
 * by exiting.
 */
void
upgrade_adopt_failed(struct master *m, int fd, const char *why)
{
	struct blob_header h;

	/* A rollback that cannot read its own state either: never exec in a loop. */
	if (m->up.env_rollback || getenv(ROLLBACK_ENV))
		fatalx("upgrade: %s, and this is already the rollback", why);
	if (pread(fd, &h, sizeof(h), 0) != sizeof(h) || memcmp(h.magic, BLOB_MAGIC, 8) != 0 ||
	    h.exe_fd < 0)
		fatalx("upgrade: %s, and no way back", why);
	log_error("upgrade: %s; rolling back to the old binary", why);
	sd_notifyf(0, "STATUS=upgrade failed (%s); rolling back", why);
	/* The blob is the old image's own, as it wrote it: the reason goes beside it. */
	setenv(ROLLBACK_ENV, why, 1);
	fexecve(h.exe_fd, m->up.argv, environ);
	fatalx("upgrade: %s; rolling back failed: %s", why, strerror(errno));
}

/*
 * Once per loop.  The running image: a check that takes too long fails.  The
 * new image: once its generation is ready, the adopted workers hand their
 * connections over and drain; if it does not get ready, roll back.
 */
void
upgrade_tick(struct master *m)
{
	uint64_t now = now_usec();
	char err[256];

	/* A SIGUSR2 that came during a reload: a signal has nobody to say "busy" to. */
	if (m->up.wanted && !m->pending && !m->stopping && !m->up.check_pid && !m->up.adopting) {
		/* The binary asked for (udsctl upgrade BINARY), or NULL: the one at our path. */
		_cleanup_free_ char *binary = TAKE_PTR(m->up.binary);

		m->up.wanted = false;
		(void)master_upgrade_start(m, binary, err, sizeof(err)); /* failures: in m->up.error */
	}
	if (m->up.check_pid && now >= m->up.check_deadline) {
		kill(m->up.check_pid, SIGKILL); /* reaped as a failure */
		m->up.check_deadline = UINT64_MAX;
	}
	if (!m->up.adopting || m->stopping)
		return;
	if (generation_ready(m, m->gen, m->pools)) {
		for (size_t i = 0; i < m->n_slots; i++)
			if (m->workers[i].state == WORKER_RUNNING && m->workers[i].gen != m->gen)
				pool_drain(m, &m->workers[i], true);
		m->up.adopting = false;
		m->up.old_exe_fd = safe_close(m->up.old_exe_fd); /* no way back from here on */
		log_info("upgraded: udsd %s serves (generation %u)%s", UDSD_VERSION, m->gen->id,
			 m->up.rolled_back ? ", after a rollback" : "");
		return;
	}
	if (pools_crashes(m) && !m->up.rolled_back)
		upgrade_rollback(m, "a worker of the new binary died before it was ready");
	else if (now >= m->up.adopt_deadline && !m->up.rolled_back)
		upgrade_rollback(m, "the new binary's workers were not ready in time");
}
