/* SPDX-License-Identifier: MIT */
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "daemon.h"
#include "fd-util.h"

struct status *status;
const struct config *status_config;
static int status_fd = -EBADF; /* the master's: a worker closes it with the rest */

/*
 * Shared, mapped before the first fork: every worker writes its own slot with
 * relaxed atomics and anyone may read all of them, with no lock on the
 * request path.  A memfd rather than anonymous memory, so that a worker can
 * map the rest again from a read-only descriptor.
 */
int
status_map(void)
{
	void *p;

	if (sysconf(_SC_PAGESIZE) > STATUS_PAGE)
		log_warning("page size above %d: workers can write each other's status slots",
			    STATUS_PAGE);
	status_fd = memfd_create("udsd-status", MFD_CLOEXEC);
	if (status_fd < 0)
		return negative_errno();
	if (ftruncate(status_fd, sizeof(struct status)) < 0)
		return negative_errno();
	p = mmap(NULL, sizeof(struct status), PROT_READ | PROT_WRITE, MAP_SHARED, status_fd, 0);
	if (p == MAP_FAILED)
		return negative_errno();
	status = p;
	status->master_pid = getpid();
	status->start_usec = now_usec();
	return 0;
}

/*
 * In a new worker, before it runs anything else: everything but its own slot
 * becomes read-only, so that neither a bug nor a compromised service in one
 * worker can forge another worker's counters or heartbeat (and get it killed
 * as hung) or the master's fields.  mprotect() alone would not do: the
 * worker could mprotect() back.  A mapping of a read-only descriptor can
 * never become writable, and the worker keeps no writable descriptor.
 */
int
status_restrict(unsigned slot)
{
	const size_t offset = (size_t)((char *)&status->slots[slot] - (char *)status);
	_cleanup_close_ int ro = -EBADF;
	char path[64];

	if (sysconf(_SC_PAGESIZE) > STATUS_PAGE)
		return 0;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", status_fd);
	ro = open(path, O_RDONLY | O_CLOEXEC);
	if (ro < 0) {
		/* No /proc: mprotect() still stops stray writes, if not a determined worker. */
		if (mprotect(status, sizeof(struct status), PROT_READ) < 0 ||
		    mprotect(&status->slots[slot], sizeof(struct status_worker),
			     PROT_READ | PROT_WRITE) < 0)
			return negative_errno();
		return 0;
	}
	if (mmap(status, sizeof(struct status), PROT_READ, MAP_SHARED | MAP_FIXED, ro, 0) ==
		    MAP_FAILED ||
	    mmap(&status->slots[slot], sizeof(struct status_worker), PROT_READ | PROT_WRITE,
		 MAP_SHARED | MAP_FIXED, status_fd, (off_t)offset) == MAP_FAILED)
		return negative_errno();
	return 0;
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

/* snprintf into a moving window that remembers how much it would have needed. */
struct out {
	char *buf;
	size_t size, len;
};

_printf_(2, 3) static void
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

static void
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
	out_printf(o,
		   "%s{\"pid\":%d,\"generation\":%u,\"index\":%u,\"threads\":%u,"
		   "\"open\":%llu,\"accepted\":%llu,\"requests\":%llu,\"refused\":%llu,"
		   "\"per_thread_accepted\":[",
		   first ? "" : ",", (int)w->pid, w->generation, w->index, w->n_threads,
		   (unsigned long long)open, (unsigned long long)accepted,
		   (unsigned long long)requests, (unsigned long long)refused);
	for (unsigned t = 0; t < w->n_threads && t < CONFIG_MAX_THREADS; t++)
		out_printf(o, "%s%llu", t ? "," : "",
			   (unsigned long long)load((_Atomic uint64_t *)&w->threads[t].accepted));
	out_printf(o, "]}");
}

size_t
udsd_status_json(char *buf, size_t size)
{
	struct out o = { buf, size, 0 };
	bool first = true;

	out_printf(&o, "{\"version\":\"%s\",\"uptime_sec\":%llu,\"master_pid\":%d,\"generation\":%u,"
		       "\"refused\":%llu,\"listeners\":[",
		   UDSD_VERSION, (unsigned long long)((now_usec() - status->start_usec) / USEC_PER_SEC),
		   (int)status->master_pid, atomic_load(&status->generation),
		   (unsigned long long)load(&status->refused));
	for (size_t i = 0; status_config && i < status_config->n_listeners; i++) {
		const struct config_listener *l = &status_config->listeners[i];

		out_printf(&o, "%s{\"name\":", i ? "," : "");
		out_json_string(&o, l->name);
		out_printf(&o, ",\"path\":");
		out_json_string(&o, l->address);
		out_printf(&o, ",\"service\":");
		out_json_string(&o, l->service);
		if (l->kind == LISTENER_PATH)
			out_printf(&o, ",\"mode\":\"%04o\"", (unsigned)l->mode);
		out_printf(&o, "}");
	}
	if (status_config)
		out_printf(&o, "],\"workers_min\":%u,\"workers_max\":%u", status_config->workers_min,
			   status_config->workers_max);
	else
		out_printf(&o, "]");
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
