/* SPDX-License-Identifier: MIT */
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "daemon.h"
#include "fd-util.h"

/*
 * OpenMetrics text (what Prometheus scrapes) from the shared counters
 * (status.c), so that the master (the admin socket) and a worker (the http
 * service's metrics_path) print the same.  Families come one after another,
 * each with its samples together, as the format requires; "# EOF" ends it.
 */

/* Since Linux 3.3; INET_DIAG_NOCOOKIE's value for unix sockets too. */
#define DIAG_NOCOOKIE (~0U)

/*
 * The clients waiting in a listening Unix socket's accept queue, and its
 * length, from the kernel (sock_diag: UNIX_DIAG_RQLEN of the socket with
 * this inode).  Nothing else shows this for Unix sockets: ss(8) reads the
 * same, and it needs no privilege.
 */
int
metrics_backlog(uint64_t inode, uint32_t *ret_queued, uint32_t *ret_max)
{
	struct {
		struct nlmsghdr nlh;
		struct unix_diag_req req;
	} msg = {
		.nlh = { .nlmsg_len = sizeof(msg), .nlmsg_type = SOCK_DIAG_BY_FAMILY,
			 .nlmsg_flags = NLM_F_REQUEST },
		.req = { .sdiag_family = AF_UNIX, .udiag_states = ~0U, .udiag_ino = (uint32_t)inode,
			 .udiag_show = UDIAG_SHOW_RQLEN, .udiag_cookie = { DIAG_NOCOOKIE, DIAG_NOCOOKIE } },
	};
	_cleanup_close_ int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
	union {
		struct nlmsghdr nlh;
		char buf[1024];
	} answer;
	ssize_t n;

	if (fd < 0)
		return negative_errno();
	if (send(fd, &msg, sizeof(msg), MSG_NOSIGNAL) < 0)
		return negative_errno();
	do
		n = recv(fd, &answer, sizeof(answer), 0);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return negative_errno();
	if (!NLMSG_OK(&answer.nlh, (size_t)n))
		return -EBADMSG;
	if (answer.nlh.nlmsg_type == NLMSG_ERROR) {
		const struct nlmsgerr *e = NLMSG_DATA(&answer.nlh);
		return answer.nlh.nlmsg_len >= NLMSG_LENGTH(sizeof(*e)) && e->error < 0 ? e->error :
											   -EBADMSG;
	}
	if (answer.nlh.nlmsg_type != SOCK_DIAG_BY_FAMILY ||
	    answer.nlh.nlmsg_len < NLMSG_LENGTH(sizeof(struct unix_diag_msg)))
		return -EBADMSG;
	const struct unix_diag_msg *um = NLMSG_DATA(&answer.nlh);
	int len = (int)(answer.nlh.nlmsg_len - NLMSG_LENGTH(sizeof(*um)));
	for (struct rtattr *a = (struct rtattr *)(um + 1); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
		if (a->rta_type != UNIX_DIAG_RQLEN ||
		    RTA_PAYLOAD(a) < (int)sizeof(struct unix_diag_rqlen))
			continue;
		const struct unix_diag_rqlen *q = RTA_DATA(a);
		/* A listener's queue is its waiting clients; its "write queue", the backlog limit. */
		*ret_queued = q->udiag_rqueue;
		*ret_max = q->udiag_wqueue;
		return 0;
	}
	return -ENODATA;
}

static uint64_t
get(const _Atomic uint64_t *v)
{
	return atomic_load_explicit((_Atomic uint64_t *)v, memory_order_relaxed);
}

/* A label value: backslash, double quote and newline escaped. */
static void
out_label(struct out *o, const char *name, const char *value, bool first)
{
	out_printf(o, "%s%s=\"", first ? "" : ",", name);
	for (; *value; value++) {
		if (*value == '\\' || *value == '"')
			out_printf(o, "\\%c", *value);
		else if (*value == '\n')
			out_printf(o, "\\n");
		else
			out_printf(o, "%c", *value);
	}
	out_printf(o, "\"");
}

static void
family(struct out *o, const char *name, const char *type, const char *help)
{
	out_printf(o, "# TYPE %s %s\n# HELP %s %s\n", name, type, name, help);
}

/* The counter's sample carries the "_total" suffix; a gauge's is the family's name. */
static const char *
suffix(const char *type)
{
	return strcmp(type, "counter") == 0 ? "_total" : "";
}

/* ---- the daemon ---- */

static void
out_daemon(struct out *o)
{
	family(o, "udsd_build", "info", "The running udsd.");
	out_printf(o, "udsd_build_info{version=\"%s\",pid=\"%d\"} 1\n", UDSD_VERSION,
		   (int)status->master_pid);
	family(o, "udsd_generation", "gauge", "The configuration generation that serves.");
	out_printf(o, "udsd_generation %u\n", atomic_load(&status->generation));
	family(o, "udsd_uptime_seconds", "gauge", "Seconds since the master started.");
	out_printf(o, "udsd_uptime_seconds %llu\n",
		   (unsigned long long)((now_usec() - status->start_usec) / USEC_PER_SEC));
	family(o, "udsd_reloads", "counter", "Reloads, by result.");
	out_printf(o, "udsd_reloads_total{result=\"ok\"} %llu\n",
		   (unsigned long long)get(&status->reloads_ok));
	out_printf(o, "udsd_reloads_total{result=\"failed\"} %llu\n",
		   (unsigned long long)get(&status->reloads_failed));
	family(o, "udsd_reload_failed", "gauge", "1 while the last reload failed.");
	out_printf(o, "udsd_reload_failed %d\n", status->reload_error[0] != '\0');
	family(o, "udsd_accept_backoffs", "counter",
	       "Accepts paused for lack of descriptors or memory (EMFILE and the like).");
	out_printf(o, "udsd_accept_backoffs_total %llu\n",
		   (unsigned long long)get(&status->accept_backoffs));
	family(o, "udsd_migrated", "counter",
	       "Clients moved from an old generation's workers to the new one's.");
	out_printf(o, "udsd_migrated_total %llu\n", (unsigned long long)get(&status->migrated));
}

/* ---- listeners ---- */

enum lcounter { L_ACCEPTED, L_HANDOFFS };

static void
out_listener_counter(struct out *o, const char *name, const char *help, enum lcounter which)
{
	family(o, name, "counter", help);
	for (unsigned i = 0; i < status->n_listeners; i++) {
		const struct status_listener *l = &status->listeners[i];

		out_printf(o, "%s_total{", name);
		out_label(o, "listener", l->name, true);
		out_printf(o, "} %llu\n",
			   (unsigned long long)get(which == L_ACCEPTED ? &l->accepted : &l->handoffs));
	}
}

/* The kernel's accept queue of each Unix listener with connections; skipped where unknown. */
static void
out_backlogs(struct out *o)
{
	uint32_t queued[CONFIG_MAX_LISTENERS], max[CONFIG_MAX_LISTENERS];
	bool known[CONFIG_MAX_LISTENERS] = { false };

	for (unsigned i = 0; i < status->n_listeners; i++) {
		const struct status_listener *l = &status->listeners[i];

		known[i] = !l->tcp && l->type != SOCK_DGRAM && l->inode &&
			   metrics_backlog(l->inode, &queued[i], &max[i]) >= 0;
	}
	family(o, "udsd_listener_backlog", "gauge",
	       "Clients waiting in the kernel's accept queue (sock_diag).");
	for (unsigned i = 0; i < status->n_listeners; i++)
		if (known[i]) {
			out_printf(o, "udsd_listener_backlog{");
			out_label(o, "listener", status->listeners[i].name, true);
			out_printf(o, "} %u\n", queued[i]);
		}
	family(o, "udsd_listener_backlog_limit", "gauge", "The accept queue's length (backlog).");
	for (unsigned i = 0; i < status->n_listeners; i++)
		if (known[i]) {
			out_printf(o, "udsd_listener_backlog_limit{");
			out_label(o, "listener", status->listeners[i].name, true);
			out_printf(o, "} %u\n", max[i]);
		}
}

static void
out_listeners(struct out *o)
{
	out_listener_counter(o, "udsd_listener_accepted", "Clients accepted by the master.",
			     L_ACCEPTED);
	family(o, "udsd_listener_refused", "counter", "Clients the master turned away, by reason.");
	for (unsigned i = 0; i < status->n_listeners; i++)
		for (size_t r = 0; r < REFUSE_REASONS; r++) {
			out_printf(o, "udsd_listener_refused_total{");
			out_label(o, "listener", status->listeners[i].name, true);
			out_label(o, "reason", refuse_reason_names[r], false);
			out_printf(o, "} %llu\n",
				   (unsigned long long)get(&status->listeners[i].refused_by[r]));
		}
	out_listener_counter(o, "udsd_listener_handoffs",
			     "Clients handed to a worker thread: new, migrated or reclaimed.",
			     L_HANDOFFS);
	out_backlogs(o);
}

/* ---- pools ---- */

static unsigned
pool_workers(const char *name)
{
	unsigned gen = atomic_load(&status->generation), n = 0;

	for (size_t i = 0; i < STATUS_MAX_SLOTS; i++) {
		const struct status_worker *w = &status->slots[i];

		n += atomic_load_explicit((_Atomic pid_t *)&w->pid, memory_order_relaxed) != 0 &&
		     w->generation == gen && strcmp(w->pool_name, name) == 0;
	}
	return n;
}

static void
out_pool_family(struct out *o, const char *name, const char *type, const char *help, size_t field)
{
	family(o, name, type, help);
	for (unsigned i = 0; i < status->n_pools; i++) {
		const struct status_pool *p = &status->pools[i];
		uint64_t v;

		if (field == SIZE_MAX)
			v = pool_workers(p->name);
		else if (field == offsetof(struct status_pool, waiting))
			v = atomic_load_explicit((_Atomic uint32_t *)&p->waiting, memory_order_relaxed);
		else
			v = get((const _Atomic uint64_t *)((const char *)p + field));
		out_printf(o, "%s%s{", name, suffix(type));
		out_label(o, "pool", p->name, true);
		out_printf(o, "} %llu\n", (unsigned long long)v);
	}
}

static void
out_pools(struct out *o)
{
	out_pool_family(o, "udsd_pool_workers", "gauge", "Workers of the serving generation.",
			SIZE_MAX);
	out_pool_family(o, "udsd_pool_crashes", "counter", "Workers that died unasked.",
			offsetof(struct status_pool, crashes));
	out_pool_family(o, "udsd_pool_accept_pauses", "counter",
			"Times every worker was full, so the kernel's backlog held new clients.",
			offsetof(struct status_pool, accept_pauses));
	out_pool_family(o, "udsd_pool_reclaimed", "counter",
			"Clients taken back from dead workers' channels and handed on.",
			offsetof(struct status_pool, reclaimed));
	out_pool_family(o, "udsd_pool_waiting", "gauge",
			"Clients in the master waiting for a worker of the pool.",
			offsetof(struct status_pool, waiting));
}

/* ---- generations and workers ---- */

struct wsum {
	uint64_t open, accepted, requests, refused;
};

static struct wsum
worker_sum(const struct status_worker *w)
{
	struct wsum s = { 0 };

	for (unsigned t = 0; t < w->n_threads && t < CONFIG_MAX_THREADS; t++) {
		const struct status_thread *th = &w->threads[t];

		s.open += get(&th->open);
		s.accepted += get(&th->accepted);
		s.requests += get(&th->requests);
		s.refused += get(&th->refused);
	}
	return s;
}

static bool
slot_live(const struct status_worker *w)
{
	return atomic_load_explicit((_Atomic pid_t *)&w->pid, memory_order_relaxed) != 0;
}

/* The generations that have workers, each once, in slot order. */
static size_t
generations(unsigned *ret, size_t max)
{
	size_t n = 0;

	for (size_t i = 0; i < STATUS_MAX_SLOTS; i++) {
		const struct status_worker *w = &status->slots[i];
		size_t k = 0;

		if (!slot_live(w))
			continue;
		while (k < n && ret[k] != w->generation)
			k++;
		if (k == n && n < max)
			ret[n++] = w->generation;
	}
	return n;
}

static void
out_generations(struct out *o)
{
	unsigned gens[16];
	size_t n = generations(gens, ELEMENTSOF(gens));

	family(o, "udsd_generation_workers", "gauge",
	       "Workers of each generation: an old one's drain after a reload.");
	for (size_t k = 0; k < n; k++) {
		unsigned c = 0;
		for (size_t i = 0; i < STATUS_MAX_SLOTS; i++)
			c += slot_live(&status->slots[i]) && status->slots[i].generation == gens[k];
		out_printf(o, "udsd_generation_workers{generation=\"%u\"} %u\n", gens[k], c);
	}
	family(o, "udsd_generation_open", "gauge", "Clients open on each generation's workers.");
	for (size_t k = 0; k < n; k++) {
		uint64_t open = 0;
		for (size_t i = 0; i < STATUS_MAX_SLOTS; i++)
			if (slot_live(&status->slots[i]) && status->slots[i].generation == gens[k])
				open += worker_sum(&status->slots[i]).open;
		out_printf(o, "udsd_generation_open{generation=\"%u\"} %llu\n", gens[k],
			   (unsigned long long)open);
	}
}

enum wfield { W_OPEN, W_ACCEPTED, W_REQUESTS, W_REFUSED, W_IN_FLIGHT };

static void
out_worker_family(struct out *o, const char *name, const char *type, const char *help,
		  enum wfield which)
{
	family(o, name, type, help);
	for (size_t i = 0; i < STATUS_MAX_SLOTS; i++) {
		const struct status_worker *w = &status->slots[i];
		struct wsum s;
		uint64_t v;

		if (!slot_live(w))
			continue;
		s = worker_sum(w);
		v = which == W_OPEN ? s.open : which == W_ACCEPTED ? s.accepted :
		    which == W_REQUESTS ? s.requests : which == W_REFUSED ? s.refused :
		    status_in_flight(w);
		out_printf(o, "%s%s{", name, suffix(type));
		out_label(o, "pool", w->pool_name, true);
		out_printf(o, ",generation=\"%u\",worker=\"%u\",pid=\"%d\"} %llu\n", w->generation,
			   w->index, (int)w->pid, (unsigned long long)v);
	}
}

static void
out_workers(struct out *o)
{
	out_worker_family(o, "udsd_worker_open", "gauge", "Clients the worker holds open.", W_OPEN);
	out_worker_family(o, "udsd_worker_accepted", "counter", "Clients the worker took in.",
			  W_ACCEPTED);
	out_worker_family(o, "udsd_worker_served", "counter",
			  "Requests the worker's services served.", W_REQUESTS);
	out_worker_family(o, "udsd_worker_refused", "counter", "Clients the worker's services refused.",
			  W_REFUSED);
	out_worker_family(o, "udsd_worker_in_flight", "gauge",
			  "Clients handed to the worker (or queued for it) and not yet taken in.",
			  W_IN_FLIGHT);
}

/* The whole exposition into buf; returns the length it needed (as snprintf does). */
size_t
metrics_text(char *buf, size_t size)
{
	struct out o = { buf, size, 0 };

	out_daemon(&o);
	out_listeners(&o);
	out_pools(&o);
	out_generations(&o);
	out_workers(&o);
	out_printf(&o, "# EOF\n");
	return o.len;
}
