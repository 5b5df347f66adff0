/* SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "daemon.h"
#include "fd-util.h"

/*
 * The admin socket ([admin] path, mode 0600, its own allow-list) and its
 * clients, served by the master's loop.  One request line per connection,
 * one answer, then the master closes:
 *
 *   status | status json | metrics | reload | upgrade [BINARY] | upgraded
 *
 * The answer's first line is "ok" or "error", the text follows.  "reload"
 * answers once the new generation serves or the reload failed; "upgrade"
 * once the check failed, or not at all: the master re-executes itself and
 * the connection closes with the old image, so udsctl asks the new one
 * ("upgraded"), which answers once it serves or rolled back.
 *
 * A client can cost the master no more than a bounded buffer and a slot:
 * at most ADMIN_MAX_CLIENTS at once, a request of at most ADMIN_REQUEST_MAX
 * bytes, an answer of at most ADMIN_REPLY_MAX, everything non-blocking, and a
 * deadline to send its request and to take its answer.
 */

#define ADMIN_MAX_CLIENTS 16
#define ADMIN_REQUEST_MAX 256
#define ADMIN_REPLY_MAX (4u << 20)
#define ADMIN_IO_TIMEOUT_USEC (10 * USEC_PER_SEC)
/* A reload or an upgrade waits for workers: WORKER_READY_TIMEOUT_USEC, and a margin. */
#define ADMIN_WAIT_TIMEOUT_USEC (60 * USEC_PER_SEC)

enum admin_state {
	ADMIN_READ,	/* its request line */
	ADMIN_RELOAD,	/* the reload's outcome (admin_reload_done()) */
	ADMIN_UPGRADE,	/* the upgrade check's failure, or our exec */
	ADMIN_UPGRADED, /* the adoption's end, in the new image */
	ADMIN_WRITE,	/* its answer */
	ADMIN_DEAD,	/* closed; freed by admin_tick(), after the loop's events */
};

struct admin_client {
	struct watch watch;
	int fd;
	enum admin_state state;
	uint64_t deadline;
	char in[ADMIN_REQUEST_MAX];
	size_t in_len;
	char *out;
	size_t out_len, out_off;
	struct admin_client *next;
};

struct admin {
	struct watch watch;
	int fd;
	char *path;
	struct listener_file file;
	struct admin_client *clients;
	unsigned n_clients;
};

/*
 * Close, first reading what the client sent and we did not (a bounded
 * amount): an AF_UNIX socket closed with unread input resets its peer, which
 * would then lose our answer to ECONNRESET.
 */
static int
close_drained(int fd)
{
	char buf[4096];

	for (int i = 0; i < 16 && recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0; i++)
		;
	return safe_close(fd);
}

static void
client_close(struct master *m, struct admin_client *c)
{
	if (c->state == ADMIN_DEAD)
		return;
	epoll_ctl(m->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	c->fd = close_drained(c->fd);
	free(c->out);
	c->out = NULL;
	c->state = ADMIN_DEAD;
}

static void
client_watch(struct master *m, struct admin_client *c, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = &c->watch };

	if (epoll_ctl(m->epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
		client_close(m, c);
}

/* As much of the answer as the socket takes now; the rest when it is writable. */
static void
client_write(struct master *m, struct admin_client *c)
{
	while (c->out_off < c->out_len) {
		ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n <= 0) {
			client_close(m, c);
			return;
		}
		c->out_off += (size_t)n;
	}
	client_close(m, c);
}

/* The answer: "ok" or "error", then text (which ends with a newline). */
static void
client_answer(struct master *m, struct admin_client *c, bool ok, char *text)
{
	size_t len = text ? strlen(text) : 0;
	char *out = malloc(len + 8);

	if (!out) {
		free(text);
		client_close(m, c);
		return;
	}
	c->out_len = (size_t)sprintf(out, "%s\n", ok ? "ok" : "error");
	memcpy(out + c->out_len, text, len);
	c->out_len += len;
	if (len && text[len - 1] != '\n')
		out[c->out_len++] = '\n';
	free(text);
	c->out = out;
	c->out_off = 0;
	c->state = ADMIN_WRITE;
	c->deadline = now_usec() + ADMIN_IO_TIMEOUT_USEC;
	client_watch(m, c, EPOLLOUT);
	if (c->state == ADMIN_WRITE)
		client_write(m, c);
}

_printf_(4, 5) static void
client_answerf(struct master *m, struct admin_client *c, bool ok, const char *fmt, ...)
{
	char *text = NULL;
	va_list ap;

	va_start(ap, fmt);
	if (vasprintf(&text, fmt, ap) < 0)
		text = NULL;
	va_end(ap);
	if (!text)
		client_close(m, c);
	else
		client_answer(m, c, ok, text);
}

typedef size_t render_fn(char *buf, size_t size);

/* A text whose length is known only once printed: printed again into a buffer that fits. */
static char *
render(render_fn *fn)
{
	size_t size = 64 * 1024;

	for (;;) {
		char *buf = malloc(size);
		size_t n;

		if (!buf)
			return NULL;
		n = fn(buf, size);
		if (n < size)
			return buf;
		free(buf);
		if (n >= ADMIN_REPLY_MAX)
			return NULL;
		size = n + 1;
	}
}

static size_t
render_json(char *buf, size_t size)
{
	size_t n = udsd_status_json(buf, size);

	/* One more byte for the newline udsctl prints after it. */
	if (n + 1 < size) {
		buf[n++] = '\n';
		buf[n] = '\0';
	} else {
		n++;
	}
	return n;
}

static void
out_age(struct out *o, uint64_t usec)
{
	uint64_t s = usec / USEC_PER_SEC;

	if (s >= 86400)
		out_printf(o, "%llud%lluh", (unsigned long long)(s / 86400),
			   (unsigned long long)(s % 86400 / 3600));
	else if (s >= 3600)
		out_printf(o, "%lluh%llumin", (unsigned long long)(s / 3600),
			   (unsigned long long)(s % 3600 / 60));
	else if (s >= 60)
		out_printf(o, "%llumin%llus", (unsigned long long)(s / 60),
			   (unsigned long long)(s % 60));
	else
		out_printf(o, "%llus", (unsigned long long)s);
}

static uint64_t
get(const _Atomic uint64_t *v)
{
	return atomic_load_explicit((_Atomic uint64_t *)v, memory_order_relaxed);
}

static void
table_head(struct out *o)
{
	uint64_t refused = get(&status->refused);

	out_printf(o, "udsd %s, pid %d, up ", UDSD_VERSION, (int)status->master_pid);
	out_age(o, now_usec() - status->start_usec);
	out_printf(o, ", generation %u\n", atomic_load(&status->generation));
	out_printf(o, "reloads: %llu ok, %llu failed", (unsigned long long)get(&status->reloads_ok),
		   (unsigned long long)get(&status->reloads_failed));
	if (status->reload_error[0])
		out_printf(o, "; last reload failed: %s", status->reload_error);
	out_printf(o, "\nrefused: %llu", (unsigned long long)refused);
	for (size_t r = 0; refused && r < REFUSE_REASONS; r++)
		out_printf(o, "%s%s %llu", r ? ", " : " (", refuse_reason_names[r],
			   (unsigned long long)get(&status->refused_by[r]));
	out_printf(o, "%s\n", refused ? ")" : "");
}

static void
table_listeners(struct out *o)
{
	out_printf(o, "\n%-12s %-32s %9s %9s %8s %12s\n", "LISTENER", "ADDRESS", "ACCEPTED",
		   "HANDOFFS", "REFUSED", "BACKLOG");
	for (unsigned i = 0; i < status->n_listeners; i++) {
		const struct status_listener *l = &status->listeners[i];
		uint64_t refused = 0;
		uint32_t queued, max;
		char backlog[32] = "-";

		for (size_t r = 0; r < REFUSE_REASONS; r++)
			refused += get(&l->refused_by[r]);
		if (!l->tcp && l->type != SOCK_DGRAM && l->inode &&
		    metrics_backlog(l->inode, &queued, &max) >= 0)
			snprintf(backlog, sizeof(backlog), "%u/%u", queued, max);
		out_printf(o, "%-12s %-32s %9llu %9llu %8llu %12s\n", l->name, l->address,
			   (unsigned long long)get(&l->accepted), (unsigned long long)get(&l->handoffs),
			   (unsigned long long)refused, backlog);
	}
}

static void
table_pools(struct out *o)
{
	unsigned gen = atomic_load(&status->generation);

	out_printf(o, "\n%-12s %7s %7s %7s %9s %7s\n", "POOL", "WORKERS", "CRASHES", "PAUSES",
		   "RECLAIMED", "WAITING");
	for (unsigned i = 0; i < status->n_pools; i++) {
		const struct status_pool *p = &status->pools[i];
		unsigned n = 0;

		for (size_t k = 0; k < STATUS_MAX_SLOTS; k++) {
			const struct status_worker *w = &status->slots[k];
			n += atomic_load_explicit((_Atomic pid_t *)&w->pid, memory_order_relaxed) &&
			     w->generation == gen && strcmp(w->pool_name, p->name) == 0;
		}
		out_printf(o, "%-12s %7u %7llu %7llu %9llu %7u\n", p->name, n,
			   (unsigned long long)get(&p->crashes),
			   (unsigned long long)get(&p->accept_pauses),
			   (unsigned long long)get(&p->reclaimed),
			   atomic_load_explicit((_Atomic uint32_t *)&p->waiting, memory_order_relaxed));
	}
}

static void
table_workers(struct out *o)
{
	out_printf(o, "\n%4s %-12s %6s %8s %6s %9s %9s %8s %9s %8s\n", "GEN", "POOL", "WORKER",
		   "PID", "OPEN", "ACCEPTED", "SERVED", "REFUSED", "IN-FLIGHT", "UP");
	for (size_t k = 0; k < STATUS_MAX_SLOTS; k++) {
		const struct status_worker *w = &status->slots[k];
		uint64_t open = 0, accepted = 0, requests = 0, refused = 0;
		pid_t pid = atomic_load_explicit((_Atomic pid_t *)&w->pid, memory_order_relaxed);

		if (!pid)
			continue;
		for (unsigned t = 0; t < w->n_threads && t < CONFIG_MAX_THREADS; t++) {
			open += get(&w->threads[t].open);
			accepted += get(&w->threads[t].accepted);
			requests += get(&w->threads[t].requests);
			refused += get(&w->threads[t].refused);
		}
		char age[16];
		struct out a = { age, sizeof(age), 0 };

		out_age(&a, now_usec() - w->started_usec);
		out_printf(o, "%4u %-12s %6u %8d %6llu %9llu %9llu %8llu %9llu %8s\n", w->generation,
			   w->pool_name[0] ? w->pool_name : "-", w->index, (int)pid,
			   (unsigned long long)open, (unsigned long long)accepted,
			   (unsigned long long)requests, (unsigned long long)refused,
			   (unsigned long long)status_in_flight(w), age);
	}
}

/* The human table of `udsctl status`: the daemon, then listeners, pools and workers. */
static size_t
render_table(char *buf, size_t size)
{
	struct out o = { buf, size, 0 };

	table_head(&o);
	table_listeners(&o);
	table_pools(&o);
	table_workers(&o);
	return o.len;
}

static void
client_render(struct master *m, struct admin_client *c, render_fn *fn)
{
	char *text;

	master_status_publish(m);
	text = render(fn);
	if (!text)
		client_answerf(m, c, false, "out of memory");
	else
		client_answer(m, c, true, text);
}

static void
client_reload(struct master *m, struct admin_client *c)
{
	char err[512] = "";
	int r;

	c->state = ADMIN_RELOAD;
	c->deadline = now_usec() + ADMIN_WAIT_TIMEOUT_USEC;
	client_watch(m, c, 0);
	log_info("admin: reload asked");
	/* A config error answers at once, through admin_reload_done(). */
	r = master_reload(m, err, sizeof(err));
	if (r < 0 && c->state == ADMIN_RELOAD)
		client_answerf(m, c, false, "%s", err);
}

/* Answered in admin_tick(): udsd serves, or the rollback's reason. */
static void
client_upgraded(struct master *m, struct admin_client *c)
{
	if (m->up.adopting) {
		c->state = ADMIN_UPGRADED;
		c->deadline = now_usec() + ADMIN_WAIT_TIMEOUT_USEC;
		client_watch(m, c, 0);
	} else if (m->up.error[0]) {
		client_answerf(m, c, false, "%s", m->up.error);
	} else {
		client_answerf(m, c, true, "udsd %s serves, generation %u, pid %d", UDSD_VERSION,
			       m->gen->id, (int)getpid());
	}
}

static void
client_upgrade(struct master *m, struct admin_client *c, const char *binary)
{
	char err[256] = "";
	int r;

	log_info("admin: upgrade asked");
	r = master_upgrade_start(m, *binary ? binary : NULL, err, sizeof(err));
	if (r == -EBUSY) {
		client_answerf(m, c, false, "%s", err);
	} else if (r < 0) {
		client_answerf(m, c, false, "%s", err);
	} else {
		c->state = ADMIN_UPGRADE;
		c->deadline = now_usec() + ADMIN_WAIT_TIMEOUT_USEC;
		client_watch(m, c, 0);
	}
}

static void
client_request(struct master *m, struct admin_client *c)
{
	char *line = c->in, *arg;

	line[strcspn(line, "\r\n")] = '\0';
	arg = line + strcspn(line, " ");
	if (*arg)
		*arg++ = '\0';
	if (strcmp(line, "status") == 0 && strcmp(arg, "json") == 0)
		client_render(m, c, render_json);
	else if (strcmp(line, "status") == 0 && !*arg)
		client_render(m, c, render_table);
	else if (strcmp(line, "metrics") == 0 && !*arg)
		client_render(m, c, metrics_text);
	else if (strcmp(line, "reload") == 0 && !*arg)
		client_reload(m, c);
	else if (strcmp(line, "upgrade") == 0)
		client_upgrade(m, c, arg);
	else if (strcmp(line, "upgraded") == 0 && !*arg)
		client_upgraded(m, c);
	else
		client_answerf(m, c, false,
			       "unknown request (status, status json, metrics, reload, upgrade)");
}

static void
client_read(struct master *m, struct admin_client *c)
{
	for (;;) {
		ssize_t n = recv(c->fd, c->in + c->in_len, sizeof(c->in) - 1 - c->in_len,
				 MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n <= 0) {
			/* A request without its newline still counts; nothing at all does not. */
			if (n == 0 && c->in_len > 0)
				client_request(m, c);
			else
				client_close(m, c);
			return;
		}
		c->in_len += (size_t)n;
		c->in[c->in_len] = '\0';
		if (memchr(c->in, '\n', c->in_len)) {
			client_request(m, c);
			return;
		}
		if (c->in_len == sizeof(c->in) - 1) {
			client_answerf(m, c, false, "request too long");
			return;
		}
	}
}

/* Who may ask: the socket's mode lets in its owner only, [admin] allow_uids/allow_gids narrow it further. */
static bool
client_allowed(struct master *m, int fd)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return false;
	if (peer_ids_allowed(&m->gen->config->admin, fd, &cred))
		return true;
	log_warning("admin: refused client uid=%u gid=%u pid=%d (allow_uids, allow_gids)",
		    (unsigned)cred.uid, (unsigned)cred.gid, (int)cred.pid);
	return false;
}

static void
admin_accept(struct master *m, struct admin *a)
{
	for (;;) {
		int fd = accept4(a->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		const char *no = NULL;
		struct admin_client *c;

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			return; /* EAGAIN, or out of descriptors: the backlog keeps them */
		}
		if (!client_allowed(m, fd))
			no = "error\nnot allowed\n";
		else if (a->n_clients >= ADMIN_MAX_CLIENTS)
			no = "error\ntoo many admin clients\n";
		if (no) {
			(void)!send(fd, no, strlen(no), MSG_NOSIGNAL | MSG_DONTWAIT);
			close_drained(fd);
			continue;
		}
		c = calloc(1, sizeof(*c));
		if (!c) {
			safe_close(fd);
			return;
		}
		*c = (struct admin_client){ .watch.kind = WATCH_ADMIN_CLIENT, .fd = fd,
					    .state = ADMIN_READ,
					    .deadline = now_usec() + ADMIN_IO_TIMEOUT_USEC };
		struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &c->watch };
		if (epoll_ctl(m->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
			safe_close(fd);
			free(c);
			continue;
		}
		c->next = a->clients;
		a->clients = c;
		a->n_clients++;
	}
}

void
admin_event(struct master *m, struct watch *w, uint32_t events)
{
	struct admin_client *c;

	if (w->kind == WATCH_ADMIN) {
		admin_accept(m, (struct admin *)w);
		return;
	}
	c = (struct admin_client *)w;
	if (c->state == ADMIN_DEAD)
		return;
	if (c->state == ADMIN_READ && events & (EPOLLIN | EPOLLHUP | EPOLLERR))
		client_read(m, c);
	else if (c->state == ADMIN_WRITE && events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
		client_write(m, c);
	else if (events & (EPOLLHUP | EPOLLERR))
		client_close(m, c); /* gone while it waited: what it asked for goes on */
}

/* A reload's outcome for whoever asked for it: error NULL means the new generation serves. */
void
admin_reload_done(struct master *m, const char *error)
{
	struct admin *a = m->admin;

	for (struct admin_client *c = a ? a->clients : NULL; c; c = c->next) {
		if (c->state != ADMIN_RELOAD)
			continue;
		if (error)
			client_answerf(m, c, false, "%s", error);
		else
			client_answerf(m, c, true, "generation %u serves", m->gen->id);
	}
}

/* Once per loop: waits that ended, deadlines, and the memory of closed clients. */
void
admin_tick(struct master *m)
{
	struct admin *a = m->admin;
	uint64_t now = now_usec();

	if (!a)
		return;
	for (struct admin_client **p = &a->clients, *c; (c = *p);) {
		/* A check that met a reload, or a file replaced meanwhile, runs again (wanted). */
		if (c->state == ADMIN_UPGRADE && !m->up.check_pid && !m->up.wanted)
			client_answerf(m, c, false, "%s", m->up.error);
		else if (c->state == ADMIN_UPGRADED && !m->up.adopting)
			client_upgraded(m, c);
		else if (c->state != ADMIN_DEAD && now >= c->deadline)
			client_close(m, c);
		if (c->state == ADMIN_DEAD) {
			*p = c->next;
			a->n_clients--;
			free(c);
		} else {
			p = &c->next;
		}
	}
}

uint64_t
admin_next_deadline(const struct master *m)
{
	uint64_t next = UINT64_MAX;

	for (const struct admin_client *c = m->admin ? m->admin->clients : NULL; c; c = c->next)
		next = MIN(next, c->deadline);
	return next;
}

/*
 * Bind [admin] path, mode 0600, owned by the master's user.  A failure is
 * logged and udsd serves on without it: the admin socket is how it is
 * managed, not what it serves.
 */
int
admin_open(struct master *m)
{
	const struct config_listener *cfg = &m->gen->config->admin;
	_cleanup_free_ struct admin *a = NULL;
	char err[256] = "";
	int r;

	if (!cfg->address)
		return 0;
	a = calloc(1, sizeof(*a));
	if (!a || !(a->path = strdup(cfg->address))) {
		r = -ENOMEM;
		goto fail;
	}
	a->watch.kind = WATCH_ADMIN;
	r = listener_open_unix(a->path, SOCK_STREAM, 0600, (uid_t)-1, (gid_t)-1, 64, &a->fd,
			       &a->file, err, sizeof(err));
	if (r < 0)
		goto fail;
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &a->watch };
	if (epoll_ctl(m->epfd, EPOLL_CTL_ADD, a->fd, &ev) < 0) {
		r = negative_errno();
		listener_unlink(&a->file);
		listener_file_done(&a->file);
		safe_close(a->fd);
		goto fail;
	}
	log_info("admin socket: %s", a->path);
	m->admin = TAKE_PTR(a);
	return 0;
fail:
	log_error("admin socket %s: %s; udsctl cannot reach this udsd", cfg->address,
		  err[0] ? err : strerror(-r));
	if (a)
		free(a->path);
	return r;
}

static void
admin_free(struct master *m, struct admin *a)
{
	for (struct admin_client *c = a->clients, *next; c; c = next) {
		next = c->next;
		client_close(m, c);
		free(c);
	}
	epoll_ctl(m->epfd, EPOLL_CTL_DEL, a->fd, NULL);
	safe_close(a->fd);
	listener_unlink(&a->file);
	listener_file_done(&a->file);
	free(a->path);
	free(a);
}

void
admin_close(struct master *m)
{
	if (m->admin)
		admin_free(m, m->admin);
	m->admin = NULL;
}

/*
 * A reload changed [admin] path: the socket moves; clients of the old one
 * keep their connections (a reload's asker gets its answer there).
 */
void
admin_reconfigure(struct master *m)
{
	const char *want = m->gen->config->admin.address;
	struct admin *old = m->admin;

	if (old && want && strcmp(old->path, want) == 0)
		return;
	if (!old && !want)
		return;
	m->admin = NULL;
	if (want && admin_open(m) >= 0 && old) {
		m->admin->clients = TAKE_PTR(old->clients);
		m->admin->n_clients = old->n_clients;
	}
	if (old)
		admin_free(m, old);
}
