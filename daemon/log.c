/* SPDX-License-Identifier: MIT */
#include <execinfo.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"

static bool log_journal;
static int log_level = LOG_INFO;
static char log_prefix[32];

/*
 * systemd connects stderr to the journal and says so in JOURNAL_STREAM
 * ("DEV:INO"); only then do "<N>" prefixes mean something.  A terminal or a
 * file gets plain text, as systemd's own tools do.
 */
void
log_open(void)
{
	const char *e = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	if (e && sscanf(e, "%llu:%llu", &dev, &ino) == 2 && fstat(STDERR_FILENO, &st) == 0)
		log_journal = st.st_dev == dev && st.st_ino == ino;
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

static void
log_write(int level, const char *fmt, va_list ap)
{
	static const char *const names[] = { "emerg", "alert", "crit", "error",
					     "warning", "notice", "info", "debug" };
	char line[1024];
	int n, saved = errno;

	if (level > log_level)
		return;
	if (log_journal)
		n = snprintf(line, sizeof(line), "<%d>%s%s", level, log_prefix,
			     log_prefix[0] ? ": " : "");
	else
		n = snprintf(line, sizeof(line), "udsd[%d]: %s: %s%s", (int)getpid(), names[level & 7],
			     log_prefix, log_prefix[0] ? ": " : "");
	if (n < 0)
		n = 0;
	vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	n = (int)strlen(line);
	line[n++] = '\n';
	/* One write per line: lines from several processes and threads never interleave. */
	if (write(STDERR_FILENO, line, (size_t)n) < 0) {
		/* Nowhere left to report it. */
	}
	errno = saved;
}

void
log_msg(int level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_write(level, fmt, ap);
	va_end(ap);
}

void
fatalx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_write(LOG_ERR, fmt, ap);
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
