/* SPDX-License-Identifier: MIT */
#include <execinfo.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"
#include "fd-util.h"

static bool log_journal;
static int log_level = LOG_INFO;
static char log_prefix[32];
/* The journal's native socket, of the process that opened it (journal_pid). */
static int journal_fd = -EBADF;
static pid_t journal_pid;
/* What every line of this process carries (a worker's pool, generation, pid). */
static struct log_fields process_fields;

#define JOURNAL_SOCKET "/run/systemd/journal/socket"

/*
 * A datagram socket of our own to the journal, not sd_journal_send()'s: that
 * one caches its socket's number for the life of the process, and a worker
 * closes every inherited fd (close_inherited()), so a later client socket
 * could take that number and get log lines.  Ours is reopened after a fork
 * (log_forked()), and used only by the process that opened it.
 */
static void
journal_open(void)
{
	safe_close(journal_fd);
	journal_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	journal_pid = getpid();
}

/*
 * systemd connects stderr to the journal and says so in JOURNAL_STREAM
 * ("DEV:INO", what sd_journal_stream_fd() gives a service).  Then lines go to
 * the journal natively, with fields one can query (UDSD_LISTENER=, ...), and
 * "<N>"-prefixed on stderr if that fails.  A terminal or a file gets plain
 * text, as systemd's own tools do.
 */
void
log_open(void)
{
	const char *e = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	if (e && sscanf(e, "%llu:%llu", &dev, &ino) == 2 && fstat(STDERR_FILENO, &st) == 0)
		log_journal = st.st_dev == dev && st.st_ino == ino;
	if (log_journal)
		journal_open();
}

/* In a new process, single-threaded still, once it closed the fds it inherited. */
void
log_forked(void)
{
	journal_fd = -EBADF; /* closed already, or another process's to close */
	if (log_journal)
		journal_open();
}

void
log_set_fields(const struct log_fields *f)
{
	process_fields = *f;
}

void
log_set_level(int level)
{
	log_level = level;
}

void
log_set_prefix(const char *prefix)
{
	snprintf(log_prefix, sizeof(log_prefix), "%s", prefix);
}

/* One journal field, KEY=value, into buf from *len on; false when it does not fit. */
_printf_(5, 6) static bool
field(char *buf, size_t size, size_t *len, const char *key, const char *fmt, ...)
{
	va_list ap;
	int n = snprintf(buf + *len, size - *len, "%s=", key);

	if (n < 0 || (size_t)n >= size - *len)
		return false;
	*len += (size_t)n;
	va_start(ap, fmt);
	n = vsnprintf(buf + *len, size - *len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n + 1 >= size - *len)
		return false;
	*len += (size_t)n;
	buf[(*len)++] = '\n';
	return true;
}

/*
 * The line as one journal entry (the native protocol: KEY=value lines, and
 * MESSAGE in the length-prefixed form, so that a newline in it cannot start
 * a field).  False when the journal did not take it.
 */
static bool
journal_write(int level, const struct log_fields *f, const char *msg)
{
	char fields[512];
	size_t len = 0;
	uint64_t n = strlen(msg);
	uint8_t le[8];
	bool ok;

	if (journal_fd < 0 || journal_pid != getpid())
		return false;
	ok = field(fields, sizeof(fields), &len, "PRIORITY", "%d", level) &&
	     field(fields, sizeof(fields), &len, "SYSLOG_IDENTIFIER", "udsd");
	if (ok && f->listener)
		ok = field(fields, sizeof(fields), &len, "UDSD_LISTENER", "%s", f->listener);
	if (ok && f->pool)
		ok = field(fields, sizeof(fields), &len, "UDSD_POOL", "%s", f->pool);
	if (ok && f->generation)
		ok = field(fields, sizeof(fields), &len, "UDSD_GENERATION", "%u", f->generation);
	if (ok && f->worker_pid > 0)
		ok = field(fields, sizeof(fields), &len, "UDSD_WORKER_PID", "%d", (int)f->worker_pid);
	if (ok && f->peer_uid)
		ok = field(fields, sizeof(fields), &len, "UDSD_PEER_UID", "%u", (unsigned)*f->peer_uid);
	if (!ok)
		return false;
	for (size_t i = 0; i < 8; i++)
		le[i] = (uint8_t)(n >> (8 * i));
	struct iovec iov[] = {
		{ fields, len },       { (void *)"MESSAGE\n", 8 }, { le, sizeof(le) },
		{ (void *)msg, n },    { (void *)"\n", 1 },
	};
	struct sockaddr_un sa = { .sun_family = AF_UNIX, .sun_path = JOURNAL_SOCKET };
	struct msghdr mh = { .msg_name = &sa, .msg_namelen = sizeof(sa), .msg_iov = iov,
			     .msg_iovlen = ELEMENTSOF(iov) };

	return sendmsg(journal_fd, &mh, MSG_NOSIGNAL) >= 0;
}

/* The line's fields: this process's, and the caller's where it knows more. */
static struct log_fields
merged(const struct log_fields *f)
{
	struct log_fields m = process_fields;

	if (!f)
		return m;
	if (f->listener)
		m.listener = f->listener;
	if (f->pool)
		m.pool = f->pool;
	if (f->generation)
		m.generation = f->generation;
	if (f->worker_pid)
		m.worker_pid = f->worker_pid;
	if (f->peer_uid)
		m.peer_uid = f->peer_uid;
	return m;
}

static void
log_write(int level, const struct log_fields *f, const char *fmt, va_list ap)
{
	static const char *const names[] = { "emerg", "alert", "crit", "error",
					     "warning", "notice", "info", "debug" };
	char line[1024];
	int n, text, saved = errno;

	if (level > log_level)
		return;
	if (log_journal)
		n = snprintf(line, sizeof(line), "<%d>", level);
	else
		n = snprintf(line, sizeof(line), "udsd[%d]: %s: ", (int)getpid(), names[level & 7]);
	text = n < 0 ? 0 : n;
	n = snprintf(line + text, sizeof(line) - (size_t)text, "%s%s", log_prefix,
		     log_prefix[0] ? ": " : "");
	n = text + (n < 0 ? 0 : n);
	vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	if (log_journal) {
		struct log_fields m = merged(f);

		if (journal_write(level, &m, line + text))
			goto done;
	}
	n = (int)strlen(line);
	line[n++] = '\n';
	/* One write per line: lines from several processes and threads never interleave. */
	if (write(STDERR_FILENO, line, (size_t)n) < 0) {
		/* Nowhere left to report it. */
	}
done:
	errno = saved;
}

void
log_with(int level, const struct log_fields *f, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_write(level, f, fmt, ap);
	va_end(ap);
}

void
log_msg(int level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_write(level, NULL, fmt, ap);
	va_end(ap);
}

void
fatalx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_write(LOG_ERR, NULL, fmt, ap);
	va_end(ap);
	exit(EXIT_FAILURE);
}

uint64_t
now_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * USEC_PER_SEC + (uint64_t)ts.tv_nsec / 1000;
}

/* v in decimal into buf (24 bytes): snprintf is not async-signal-safe. */
void
fmt_long(char *buf, long v)
{
	char t[24];
	size_t i = sizeof(t), n = 0;
	unsigned long u = v < 0 ? 0UL - (unsigned long)v : (unsigned long)v;

	do
		t[--i] = (char)('0' + u % 10);
	while (u /= 10);
	if (v < 0)
		buf[n++] = '-';
	memcpy(buf + n, t + i, sizeof(t) - i);
	buf[n + sizeof(t) - i] = '\0';
}

static void
append(char *line, size_t size, size_t *len, const char *s)
{
	size_t n = strlen(s);

	n = MIN(n, size - 1 - *len);
	memcpy(line + *len, s, n);
	*len += n;
}

/*
 * A log line from a signal handler: the parts (NULL-terminated) after the
 * usual prefix, in one write(), with nothing that is not async-signal-safe.
 */
void
log_signal_safe(int level, const char *const *parts)
{
	static const char *const names[] = { "emerg", "alert", "crit", "error",
					     "warning", "notice", "info", "debug" };
	char line[1024], num[24];
	size_t len = 0;
	int saved = errno;

	if (level > log_level)
		return;
	if (log_journal) {
		fmt_long(num, level);
		append(line, sizeof(line), &len, "<");
		append(line, sizeof(line), &len, num);
		append(line, sizeof(line), &len, ">");
	} else {
		fmt_long(num, (long)getpid());
		append(line, sizeof(line), &len, "udsd[");
		append(line, sizeof(line), &len, num);
		append(line, sizeof(line), &len, "]: ");
		append(line, sizeof(line), &len, names[level & 7]);
		append(line, sizeof(line), &len, ": ");
	}
	if (log_prefix[0]) {
		append(line, sizeof(line), &len, log_prefix);
		append(line, sizeof(line), &len, ": ");
	}
	for (; *parts; parts++)
		append(line, sizeof(line), &len, *parts);
	line[len++] = '\n';
	if (write(STDERR_FILENO, line, len) < 0) {
		/* Nowhere left to report it. */
	}
	errno = saved;
}

/*
 * The calling thread's stack, one line per frame, to the log.  glibc's
 * backtrace() loads libgcc's unwinder at its first call, which must not
 * happen in a signal handler (it allocates): log_backtrace_prepare() makes
 * that first call at start.
 */
void
log_backtrace_prepare(void)
{
	void *frame;

	(void)backtrace(&frame, 1);
}

void
log_backtrace(void)
{
	void *frames[64];
	int n = backtrace(frames, (int)ELEMENTSOF(frames));

	backtrace_symbols_fd(frames, n, STDERR_FILENO);
}
