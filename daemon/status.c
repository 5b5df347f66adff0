/* SPDX-License-Identifier: MIT */
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon.h"
#include "fd-util.h"

struct status *status;
const struct config *status_config;
/* The same memory, mapped read-only for good: what a worker keeps of every slot but its own. */
static char *status_ro;

/* Part k of the mapping: the master's page for k = 0, then slot k - 1. */
static size_t
status_part(size_t k, size_t *ret_size)
{
	*ret_size = k == 0 ? offsetof(struct status, slots) : sizeof(struct status_worker);
	return k == 0 ? 0 : offsetof(struct status, slots) + (k - 1) * sizeof(struct status_worker);
}

/*
 * One part is a memfd of its own, mapped writable at rw, then sealed so that
 * no new mapping of it can ever be writable, and mapped read-only at ro.
 */
static int
status_part_map(char *rw, char *ro, size_t size)
{
	_cleanup_close_ int fd = memfd_create("udsd-status", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	const int seals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE | F_SEAL_SEAL;

	if (fd < 0 || ftruncate(fd, (off_t)size) < 0 ||
	    mmap(rw, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED ||
	    fcntl(fd, F_ADD_SEALS, seals) < 0 ||
	    mmap(ro, size, PROT_READ, MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED)
		return negative_errno();
	return 0;
}

/* Two views of the same files: the master writes through the first, workers keep the second. */
static int
status_map_parts(char *rw, char *ro)
{
	for (size_t k = 0; k <= STATUS_MAX_SLOTS; k++) {
		size_t size, off = status_part(k, &size);
		int r = status_part_map(rw + off, ro + off, size);
		if (r < 0)
			return r;
	}
	return 0;
}

/*
 * Shared, mapped before the first fork: every worker writes its own slot with
 * relaxed atomics and anyone may read all of them, with no lock on the
 * request path.  Each part is a file of its own so that a worker can be left
 * its own slot alone to write (status_restrict()).
 */
int
status_map(void)
{
	const size_t size = sizeof(struct status);
	char *p = mmap(NULL, 2 * size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int r;

	if (p == MAP_FAILED)
		return negative_errno();
	r = sysconf(_SC_PAGESIZE) == STATUS_PAGE ? status_map_parts(p, p + size) : -EOPNOTSUPP;
	if (r >= 0) {
		status_ro = p + size;
	} else {
		log_warning("workers can write each other's status slots: %s", strerror(-r));
		munmap(p, 2 * size);
		p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			return negative_errno();
	}
	status = (struct status *)p;
	status->master_pid = getpid();
	status->start_usec = now_usec();
	return 0;
}

/*
 * In a new worker, before it runs anything else: every part but its own slot
 * is replaced by its read-only view, so that neither a bug nor a compromised
 * service in one worker can forge another worker's counters or heartbeat (and
 * get it killed as hung) or the master's fields.  mprotect() alone would not
 * do: the worker could mprotect() back.  A read-only mapping of a sealed file
 * can never become writable, and a longer mapping of its own slot (mremap())
 * reaches nothing but the end of that slot's file.
 */
int
status_restrict(unsigned slot)
{
	for (size_t k = 0; status_ro && k <= STATUS_MAX_SLOTS; k++) {
		size_t size, off = status_part(k, &size);
		void *to = (char *)status + off;

		if (k == slot + 1 ? munmap(status_ro + off, size) < 0 :
				    mremap(status_ro + off, size, size, MREMAP_MAYMOVE | MREMAP_FIXED,
					   to) == MAP_FAILED)
			return negative_errno();
	}
	status_ro = NULL;
	return 0;
}

/* In a child that runs no part of udsd's protocol (a plugin check): no shared memory at all. */
void
status_forget(void)
{
	if (status_ro)
		munmap(status_ro, sizeof(struct status));
	if (status)
		munmap(status, sizeof(struct status));
	status_ro = NULL;
	status = NULL;
}

static uint64_t
load(_Atomic uint64_t *v)
{
	return atomic_load_explicit(v, memory_order_relaxed);
}

void
status_totals(uint64_t *ret_open, uint64_t *ret_accepted, unsigned *ret_workers)
{
	uint64_t open = 0, accepted = 0;
	unsigned workers = 0;

	for (size_t i = 0; i < STATUS_MAX_SLOTS; i++) {
		struct status_worker *w = &status->slots[i];

		if (atomic_load_explicit(&w->pid, memory_order_relaxed) == 0)
			continue;
		workers++;
		for (unsigned t = 0; t < w->n_threads && t < CONFIG_MAX_THREADS; t++) {
			open += load(&w->threads[t].open);
			accepted += load(&w->threads[t].accepted);
		}
	}
	*ret_open = open;
	*ret_accepted = accepted;
	*ret_workers = workers;
}

/* Datagrams read by the live workers: the master's sign of datagram traffic. */
uint64_t
status_datagrams(void)
{
	uint64_t n = 0;

	for (size_t i = 0; i < STATUS_MAX_SLOTS; i++) {
		struct status_worker *w = &status->slots[i];

		if (atomic_load_explicit(&w->pid, memory_order_relaxed) == 0)
			continue;
		for (unsigned t = 0; t < w->n_threads && t < CONFIG_MAX_THREADS; t++)
			n += load(&w->threads[t].dgram.received);
	}
	return n;
}

/* Workers of the current generation in a pool of its config. */
unsigned
status_pool_workers(unsigned pool)
{
	unsigned gen = atomic_load(&status->generation), n = 0;

	for (size_t i = 0; i < STATUS_MAX_SLOTS; i++) {
		const struct status_worker *w = &status->slots[i];

		n += atomic_load_explicit((_Atomic pid_t *)&w->pid, memory_order_relaxed) != 0 &&
		     w->generation == gen && w->pool == pool;
	}
	return n;
}

uint64_t
status_in_flight(const struct status_worker *w)
{
	uint64_t taken = 0, handed = load((_Atomic uint64_t *)&w->handed);

	for (unsigned t = 0; t < w->n_threads && t < CONFIG_MAX_THREADS; t++)
		taken += load((_Atomic uint64_t *)&w->threads[t].accepted);
	/* Each side's counters are read apart: a client may show as taken before it shows as sent. */
	return (handed > taken ? handed - taken : 0) +
	       atomic_load_explicit((_Atomic uint32_t *)&w->queued, memory_order_relaxed);
}

/*
 * The current generation's listeners and pools, in its order, with the
 * counters of those of the same name before: a reload neither loses nor
 * mixes them.  In the master, at start and at each switch of generations.
 */
void
master_status_publish_config(const struct master *m)
{
	const struct config *c = m->gen->config;
	_cleanup_free_ struct status_listener *ol = malloc(sizeof(status->listeners));
	_cleanup_free_ struct status_pool *op = malloc(sizeof(status->pools));
	unsigned n_ol = status->n_listeners, n_op = status->n_pools;

	if (!ol || !op)
		return; /* the counters stay under their old names: wrong labels, nothing worse */
	memcpy(ol, status->listeners, sizeof(status->listeners));
	memcpy(op, status->pools, sizeof(status->pools));
	memset(status->listeners, 0, sizeof(status->listeners));
	memset(status->pools, 0, sizeof(status->pools));
	for (size_t i = 0; i < c->n_listeners && i < CONFIG_MAX_LISTENERS; i++) {
		struct status_listener *sl = &status->listeners[i];
		const struct config_listener *cl = &c->listeners[i];
		struct stat st;

		for (unsigned k = 0; k < n_ol; k++)
			if (strncmp(ol[k].name, cl->name, sizeof(ol[k].name) - 1) == 0)
				*sl = ol[k];
		snprintf(sl->name, sizeof(sl->name), "%s", cl->name);
		snprintf(sl->address, sizeof(sl->address), "%s", cl->address);
		sl->type = cl->type;
		sl->tcp = cl->kind == LISTENER_TCP;
		sl->inode = i < m->n_listeners && fstat(m->listeners[i].fd, &st) == 0 ? st.st_ino : 0;
	}
	for (size_t i = 0; i < c->n_pools && i < CONFIG_MAX_POOLS; i++) {
		struct status_pool *sp = &status->pools[i];

		for (unsigned k = 0; k < n_op; k++)
			if (strncmp(op[k].name, c->pools[i].name, sizeof(op[k].name) - 1) == 0)
				*sp = op[k];
		snprintf(sp->name, sizeof(sp->name), "%s", c->pools[i].name);
	}
	status->n_listeners = (unsigned)MIN(c->n_listeners, (size_t)CONFIG_MAX_LISTENERS);
	status->n_pools = (unsigned)MIN(c->n_pools, (size_t)CONFIG_MAX_POOLS);
}

/*
 * What only the master knows, for whoever reads the shared counters: the
 * clients it handed to each worker and still queues for it, and those
 * waiting for a worker of each pool.  At most once a second, and before an
 * admin client's answer.
 */
void
master_status_publish(const struct master *m)
{
	for (size_t i = 0; i < m->n_slots; i++) {
		const struct mworker *w = &m->workers[i];
		struct status_worker *sw = &status->slots[i];
		uint64_t handed = 0;
		uint32_t queued = 0;

		if (w->state == WORKER_FREE || !w->chan)
			continue;
		for (unsigned t = 0; t < w->n_threads; t++) {
			handed += w->chan[t].sent;
			queued += (uint32_t)w->chan[t].n_pending;
		}
		atomic_store_explicit(&sw->handed, handed, memory_order_relaxed);
		atomic_store_explicit(&sw->queued, queued, memory_order_relaxed);
	}
	for (size_t i = 0; i < m->n_pools && i < CONFIG_MAX_POOLS; i++)
		atomic_store_explicit(&status->pools[i].waiting, (uint32_t)m->pools[i].n_orphans,
				      memory_order_relaxed);
}

_printf_(2, 3) void
out_printf(struct out *o, const char *fmt, ...)
{
	va_list ap;
	size_t room = o->len < o->size ? o->size - o->len : 0;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(room ? o->buf + o->len : NULL, room, fmt, ap);
	va_end(ap);
	if (n > 0)
		o->len += (size_t)n;
}

void
out_json_string(struct out *o, const char *s)
{
	out_printf(o, "\"");
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			out_printf(o, "\\%c", c);
		else if (c < 0x20)
			out_printf(o, "\\u%04x", c);
		else
			out_printf(o, "%c", c);
	}
	out_printf(o, "\"");
}

/* A worker's datagram counters, summed over its threads (dgram.c). */
static void
out_datagrams(struct out *o, const struct status_worker *w)
{
	uint64_t n[7] = { 0 };

	for (unsigned t = 0; t < w->n_threads && t < CONFIG_MAX_THREADS; t++) {
		struct status_dgram *d = (struct status_dgram *)&w->threads[t].dgram;

		n[0] += load(&d->received);
		n[1] += load(&d->refused);
		n[2] += load(&d->oversize);
		n[3] += load(&d->truncated);
		n[4] += load(&d->failed);
		n[5] += load(&d->replies);
		n[6] += load(&d->replies_dropped);
	}
	out_printf(o,
		   ",\"datagrams\":{\"received\":%llu,\"dropped\":{\"refused\":%llu,"
		   "\"oversize\":%llu,\"truncated\":%llu},\"failed\":%llu,\"replies\":%llu,"
		   "\"replies_dropped\":%llu}",
		   (unsigned long long)n[0], (unsigned long long)n[1], (unsigned long long)n[2],
		   (unsigned long long)n[3], (unsigned long long)n[4], (unsigned long long)n[5],
		   (unsigned long long)n[6]);
}

static void
out_worker(struct out *o, const struct status_worker *w, bool first)
{
	uint64_t open = 0, accepted = 0, requests = 0, refused = 0;

	for (unsigned t = 0; t < w->n_threads && t < CONFIG_MAX_THREADS; t++) {
		struct status_thread *th = (struct status_thread *)&w->threads[t];

		open += load(&th->open);
		accepted += load(&th->accepted);
		requests += load(&th->requests);
		refused += load(&th->refused);
	}
	out_printf(o, "%s{\"pool\":", first ? "" : ",");
	if (w->pool_name[0])
		out_json_string(o, w->pool_name);
	else
		out_printf(o, "null"); /* adopted in an upgrade: the old image named it */
	out_printf(o,
		   ",\"pid\":%d,\"generation\":%u,\"index\":%u,\"threads\":%u,"
		   "\"open\":%llu,\"accepted\":%llu,\"requests\":%llu,\"refused\":%llu,"
		   "\"in_flight\":%llu,\"per_thread_accepted\":[",
		   (int)w->pid, w->generation, w->index, w->n_threads,
		   (unsigned long long)open, (unsigned long long)accepted,
		   (unsigned long long)requests, (unsigned long long)refused,
		   (unsigned long long)status_in_flight(w));
	for (unsigned t = 0; t < w->n_threads && t < CONFIG_MAX_THREADS; t++)
		out_printf(o, "%s%llu", t ? "," : "",
			   (unsigned long long)load((_Atomic uint64_t *)&w->threads[t].accepted));
	out_printf(o, "]");
	out_datagrams(o, w);
	out_printf(o, "}");
}

/* The clients the master refused, by reason: "refused_by":{"allow_uids":2,...}. */
static void
out_refused_by(struct out *o)
{
	out_printf(o, ",\"refused_by\":{");
	for (size_t i = 0; i < REFUSE_REASONS; i++)
		out_printf(o, "%s\"%s\":%llu", i ? "," : "", refuse_reason_names[i],
			   (unsigned long long)load(&status->refused_by[i]));
	out_printf(o, "}");
}

/* Each pool of the current config: who its workers run as, how many, which listeners. */
static void
out_pool(struct out *o, size_t i)
{
	const struct config_pool *p = &status_config->pools[i];
	bool first = true;

	out_printf(o, "%s{\"name\":", i ? "," : "");
	out_json_string(o, p->name);
	out_printf(o, ",\"user\":");
	if (p->user_name)
		out_json_string(o, p->user_name);
	else
		out_printf(o, "null");
	out_printf(o, ",\"workers\":%u,\"workers_min\":%u,\"workers_max\":%u,\"threads\":%u,"
		      "\"crashes\":%llu,\"listeners\":[",
		   status_pool_workers((unsigned)i), p->workers_min, p->workers_max, p->threads,
		   i < status->n_pools ? (unsigned long long)load(&status->pools[i].crashes) : 0ULL);
	for (size_t k = 0; k < status_config->n_listeners; k++) {
		if (status_config->listeners[k].pool != i)
			continue;
		out_printf(o, "%s", first ? "" : ",");
		out_json_string(o, status_config->listeners[k].name);
		first = false;
	}
	out_printf(o, "]}");
}

/*
 * The pools; workers_min and workers_max at the top level are the first
 * pool's, as they were before there were pools.
 */
static void
out_pools(struct out *o)
{
	if (!status_config)
		return;
	out_printf(o, ",\"workers_min\":%u,\"workers_max\":%u,\"pools\":[",
		   status_config->pools[0].workers_min, status_config->pools[0].workers_max);
	for (size_t i = 0; i < status_config->n_pools; i++)
		out_pool(o, i);
	out_printf(o, "]");
}

/* The master's counters of the listener of this name (a worker's config may be an old one). */
static void
out_listener_counters(struct out *o, const char *name)
{
	for (unsigned i = 0; i < status->n_listeners; i++) {
		const struct status_listener *sl = &status->listeners[i];
		uint32_t queued, max;

		if (strncmp(sl->name, name, sizeof(sl->name)) != 0)
			continue;
		out_printf(o, ",\"accepted\":%llu,\"handoffs\":%llu,\"refused_by\":{",
			   (unsigned long long)load((_Atomic uint64_t *)&sl->accepted),
			   (unsigned long long)load((_Atomic uint64_t *)&sl->handoffs));
		for (size_t r = 0; r < REFUSE_REASONS; r++)
			out_printf(o, "%s\"%s\":%llu", r ? "," : "", refuse_reason_names[r],
				   (unsigned long long)load((_Atomic uint64_t *)&sl->refused_by[r]));
		out_printf(o, "}");
		if (!sl->tcp && sl->type != SOCK_DGRAM && sl->inode &&
		    metrics_backlog(sl->inode, &queued, &max) >= 0)
			out_printf(o, ",\"backlog\":%u,\"backlog_limit\":%u", queued, max);
		return;
	}
}

size_t
udsd_status_json(char *buf, size_t size)
{
	struct out o = { buf, size, 0 };
	bool first = true;

	out_printf(&o, "{\"version\":\"%s\",\"uptime_sec\":%llu,\"master_pid\":%d,\"generation\":%u,"
		       "\"refused\":%llu",
		   UDSD_VERSION, (unsigned long long)((now_usec() - status->start_usec) / USEC_PER_SEC),
		   (int)status->master_pid, atomic_load(&status->generation),
		   (unsigned long long)load(&status->refused));
	out_refused_by(&o);
	out_printf(&o, ",\"reloads\":{\"ok\":%llu,\"failed\":%llu},\"last_reload_error\":",
		   (unsigned long long)load(&status->reloads_ok),
		   (unsigned long long)load(&status->reloads_failed));
	if (status->reload_error[0])
		out_json_string(&o, status->reload_error);
	else
		out_printf(&o, "null");
	out_printf(&o, ",\"listeners\":[");
	for (size_t i = 0; status_config && i < status_config->n_listeners; i++) {
		const struct config_listener *l = &status_config->listeners[i];

		out_printf(&o, "%s{\"name\":", i ? "," : "");
		out_json_string(&o, l->name);
		out_printf(&o, ",\"path\":");
		out_json_string(&o, l->address);
		out_printf(&o, ",\"service\":");
		out_json_string(&o, l->service);
		/* Stream, the default, goes without saying. */
		if (l->type != SOCK_STREAM)
			out_printf(&o, ",\"type\":\"%s\"",
				   l->type == SOCK_DGRAM ? "dgram" : "seqpacket");
		if (l->type == SOCK_DGRAM)
			out_printf(&o, ",\"max_datagram\":%llu", (unsigned long long)l->max_datagram);
		if (l->kind == LISTENER_PATH)
			out_printf(&o, ",\"mode\":\"%04o\"", (unsigned)l->mode);
		out_listener_counters(&o, l->name);
		out_printf(&o, "}");
	}
	out_printf(&o, "]");
	out_pools(&o);
	out_printf(&o, ",\"workers\":[");
	for (size_t i = 0; i < STATUS_MAX_SLOTS; i++) {
		const struct status_worker *w = &status->slots[i];

		if (atomic_load_explicit((_Atomic pid_t *)&w->pid, memory_order_relaxed) == 0)
			continue;
		out_worker(&o, w, first);
		first = false;
	}
	out_printf(&o, "]}");
	return o.len;
}
