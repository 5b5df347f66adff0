/* SPDX-License-Identifier: MIT */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"

/*
 * The http service's access log (a listener's access_log): one line per
 * answered request,
 *
 *   2026-12-06T10:45:00.123456Z 1000 4242 "GET /hello HTTP/1.1" 200 87 134
 *
 * time (UTC), the client's uid and pid ("-" where unknown: over tcp:, or a
 * pid outside udsd's pid namespace), the request line, status, bytes sent
 * (head and body), and microseconds from the request's first byte read to its
 * answer queued.  The master opens the file, as root and before any worker
 * drops privileges, each time it reads the config: a reload reopens it once
 * logrotate moved it, and each generation's workers inherit their own
 * descriptor.  Worker threads append with one write() per line on an
 * O_APPEND descriptor, so lines of threads and processes never interleave
 * and need no lock.  A line is at most ACCESSLOG_LINE_MAX bytes (the target
 * is cut and escaped): its cost is bounded.  A failed write drops the line:
 * a full disk never holds up a client.
 */

#define ACCESSLOG_LINE_MAX 1024
#define ACCESSLOG_TARGET_MAX 512

int
accesslog_open(const char *path, int *ret_fd)
{
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);

	if (fd < 0)
		return -errno;
	*ret_fd = fd;
	return 0;
}

/* "2026-12-06T10:45:00.123456Z": strftime once a second per thread. */
static void
accesslog_time(char *buf, size_t size)
{
	static __thread time_t last_sec = -1;
	static __thread char last[24];
	struct timespec ts;
	struct tm tm;

	clock_gettime(CLOCK_REALTIME, &ts);
	if (ts.tv_sec != last_sec && gmtime_r(&ts.tv_sec, &tm)) {
		strftime(last, sizeof(last), "%Y-%m-%dT%H:%M:%S", &tm);
		last_sec = ts.tv_sec;
	}
	snprintf(buf, size, "%s.%06ldZ", last, ts.tv_nsec / 1000);
}

/* The target as a client sent it, but no byte that could forge a field or a line. */
static size_t
accesslog_escape(char *out, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	size_t len = 0;

	for (size_t i = 0; i < n && len + 4 <= ACCESSLOG_TARGET_MAX; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (ch < 0x21 || ch >= 0x7f || ch == '"' || ch == '\\') {
			out[len++] = '\\';
			out[len++] = 'x';
			out[len++] = hex[ch >> 4];
			out[len++] = hex[ch & 15];
		} else {
			out[len++] = (char)ch;
		}
	}
	return len;
}

void
accesslog_write(int fd, const struct accesslog_entry *e)
{
	static __thread bool failed;
	char line[ACCESSLOG_LINE_MAX], when[64], target[ACCESSLOG_TARGET_MAX], uid[16] = "-",
		pid[16] = "-", peer[40];
	size_t tlen = e->target ? accesslog_escape(target, e->target, e->target_len) : 0;
	int n;

	accesslog_time(when, sizeof(when));
	/* SO_PEERCRED over tcp: says pid 0, uid -1; pid 0 also for a client in another pid namespace. */
	if (e->uid != (uid_t)-1)
		snprintf(uid, sizeof(uid), "%u", (unsigned)e->uid);
	if (e->pid > 0)
		snprintf(pid, sizeof(pid), "%d", (int)e->pid);
	snprintf(peer, sizeof(peer), "%s %s", uid, pid);
	if (e->method)
		n = snprintf(line, sizeof(line), "%s %s \"%s %.*s HTTP/1.%d\" %d %llu %llu\n", when, peer,
			     e->method, (int)tlen, target, e->minor, e->status,
			     (unsigned long long)e->bytes, (unsigned long long)e->usec);
	else /* a request refused before it was understood */
		n = snprintf(line, sizeof(line), "%s %s \"-\" %d %llu %llu\n", when, peer, e->status,
			     (unsigned long long)e->bytes, (unsigned long long)e->usec);
	if (n < 0 || (size_t)n >= sizeof(line))
		return;
	if (write(fd, line, (size_t)n) != n && !failed) {
		failed = true; /* once per thread: the log must not flood because its disk is full */
		log_warning("access log: a line was lost: %s", strerror(errno ? errno : EIO));
	}
}
