/* SPDX-License-Identifier: MIT */
/*
 * loadgen: the bench's load generator.
 *
 *   loadgen MODE ADDR [-c CONNS] [-t THREADS] [-d SECONDS] [-w WARMUP] [-s SIZE]
 *
 * MODE  conn    connect, SIZE-byte echo, close (one op), THREADS blocking clients
 *       dialhttp connect, one GET with Connection: close, read to EOF, close (one op)
 *       rr      CONNS persistent connections ping-ponging SIZE bytes
 *       stream  CONNS connections writing 64 KiB chunks and reading them back
 *       http    CONNS keep-alive connections sending GET requests
 *       dgram   CONNS datagram sockets (each bound to an address of its own and
 *               connected to ADDR) ping-ponging SIZE-byte datagrams
 * ADDR  /path, @abstract or tcp:HOST:PORT
 *
 * Prints one JSON line: ops, ops/s, MB/s, p50/p99 latency in microseconds, errors.
 * With -M it first prints "measure" and "stop" lines, flushed, as the measured
 * window opens and closes: bench.py reads the server's CPU time at each, so
 * that its CPU per operation covers exactly the operations counted.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <stddef.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

enum mode { CONN, RR, STREAM, HTTP, DGRAM, DIALHTTP };
enum phase { WARMUP, MEASURE, STOP };

#define BUCKETS (64 * 64)
#define STREAM_CHUNK 65536
#define STREAM_INFLIGHT (1 << 20)

static enum mode mode;
static struct sockaddr_storage addr;
static socklen_t addrlen;
static int family;
static size_t size = 64;
static _Atomic int phase;

struct conn {
	int fd;
	uint64_t sent_at;
	size_t got, need;
	uint64_t out, in; /* stream: bytes written and read back */
	char buf[4096];
};

struct worker {
	pthread_t tid;
	int nconns;
	uint64_t ops, errors, bytes;
	uint64_t hist[BUCKETS];
};

static uint64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/*
 * Log-linear buckets: 64 per power of two, so quantiles are within ~1.6%
 * (1 us at 64 us: the dial loop's latencies differ by a few microseconds).
 */
static unsigned
bucket(uint64_t ns)
{
	if (ns < 64)
		return (unsigned)ns;
	unsigned msb = 63 - (unsigned)__builtin_clzll(ns);
	return (msb - 5) * 64 + (unsigned)((ns >> (msb - 6)) & 63);
}

static uint64_t
bucket_value(unsigned b)
{
	if (b < 64)
		return b;
	unsigned msb = b / 64 + 5;
	return ((uint64_t)(64 + b % 64) << (msb - 6));
}

static void
record(struct worker *w, uint64_t start, uint64_t bytes)
{
	if (atomic_load_explicit(&phase, memory_order_relaxed) != MEASURE)
		return;
	w->ops++;
	w->bytes += bytes;
	if (start)
		w->hist[bucket(now_ns() - start)]++;
}

static int
parse_addr(const char *a)
{
	if (strncmp(a, "tcp:", 4) == 0) {
		struct sockaddr_in *in = (struct sockaddr_in *)&addr;
		char host[64];
		const char *colon = strrchr(a + 4, ':');
		if (!colon || (size_t)(colon - a - 4) >= sizeof(host))
			return -1;
		memcpy(host, a + 4, (size_t)(colon - a - 4));
		host[colon - a - 4] = 0;
		in->sin_family = AF_INET;
		in->sin_port = htons((uint16_t)atoi(colon + 1));
		if (inet_pton(AF_INET, host, &in->sin_addr) != 1)
			return -1;
		addrlen = sizeof(*in);
		family = AF_INET;
		return 0;
	}
	struct sockaddr_un *un = (struct sockaddr_un *)&addr;
	size_t n = strlen(a);
	if (n >= sizeof(un->sun_path))
		return -1;
	un->sun_family = AF_UNIX;
	memcpy(un->sun_path, a, n);
	if (a[0] == '@')
		un->sun_path[0] = 0;
	addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (a[0] != '@'));
	family = AF_UNIX;
	return 0;
}

static int
dial(void)
{
	int fd = socket(family, (mode == DGRAM ? SOCK_DGRAM : SOCK_STREAM) | SOCK_CLOEXEC, 0), one = 1;
	sa_family_t autobind = AF_UNIX;

	if (fd < 0)
		return -1;
	/* A datagram client needs an address to be answered at: the kernel picks an abstract one. */
	if (mode == DGRAM && bind(fd, (struct sockaddr *)&autobind, sizeof(autobind)) < 0) {
		close(fd);
		return -1;
	}
	if (connect(fd, (struct sockaddr *)&addr, addrlen) < 0) {
		close(fd);
		return -1;
	}
	if (family == AF_INET)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

static int
read_exact(int fd, char *buf, size_t n)
{
	for (size_t got = 0; got < n;) {
		ssize_t r = read(fd, buf + got, n - got);
		if (r <= 0)
			return -1;
		got += (size_t)r;
	}
	return 0;
}

static const char http_req[] = "GET /bench HTTP/1.1\r\nHost: bench\r\n\r\n";
static const char http_close_req[] = "GET /bench HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n";

/* One HTTP exchange on a fresh connection: the request, then the response up to EOF. */
static int
dial_http_once(int fd, char *in, size_t cap, size_t *ret_len)
{
	size_t got = 0;
	ssize_t r;

	if (write(fd, http_close_req, sizeof(http_close_req) - 1) != (ssize_t)sizeof(http_close_req) - 1)
		return -1;
	while ((r = read(fd, in + got, cap - got)) > 0)
		if ((got += (size_t)r) == cap)
			return -1;
	if (r < 0 || got < 12 || memcmp(in + 9, "200", 3) != 0)
		return -1;
	*ret_len = got;
	return 0;
}

static void
run_conn(struct worker *w)
{
	char out[4096], in[4096];

	memset(out, 'c', sizeof(out));
	while (atomic_load(&phase) != STOP) {
		uint64_t t0 = now_ns();
		int fd = dial();
		size_t len = size;
		int bad = fd < 0;
		if (!bad && mode == DIALHTTP)
			bad = dial_http_once(fd, in, sizeof(in), &len) < 0;
		else if (!bad)
			bad = write(fd, out, size) != (ssize_t)size || read_exact(fd, in, size) < 0;
		if (bad) {
			if (atomic_load(&phase) == MEASURE)
				w->errors++;
		} else {
			record(w, t0, len);
		}
		if (fd >= 0)
			close(fd);
	}
}


static int
conn_send(struct conn *c)
{
	static const char payload[4096] = { 'p' };

	c->sent_at = now_ns();
	c->got = 0;
	if (mode == HTTP)
		return send(c->fd, http_req, sizeof(http_req) - 1, MSG_NOSIGNAL) ==
			       (ssize_t)sizeof(http_req) - 1 ? 0 : -1;
	c->need = size;
	return send(c->fd, payload, size, MSG_NOSIGNAL) == (ssize_t)size ? 0 : -1;
}

/* A whole HTTP response in c->buf? Returns its length, 0 if incomplete, -1 if bad. */
static ssize_t
http_complete(struct conn *c)
{
	char *end = memmem(c->buf, c->got, "\r\n\r\n", 4);
	if (!end)
		return c->got == sizeof(c->buf) ? -1 : 0;
	if (c->got < 12 || memcmp(c->buf + 9, "200", 3) != 0)
		return -1;
	size_t head = (size_t)(end - c->buf) + 4, body = 0;
	int chunked = 0;
	for (char *p = c->buf; p < end; p++) {
		if (*p != '\n')
			continue;
		if (strncasecmp(p + 1, "content-length:", 15) == 0)
			body = strtoul(p + 16, NULL, 10);
		if (strncasecmp(p + 1, "transfer-encoding: chunked", 26) == 0)
			chunked = 1;
	}
	/* Node sends small bodies chunked: done at the last-chunk marker. */
	if (chunked)
		return c->got >= head + 5 && memcmp(c->buf + c->got - 5, "0\r\n\r\n", 5) == 0 ?
			       (ssize_t)c->got : 0;
	return c->got >= head + body ? (ssize_t)(head + body) : 0;
}

static int
on_readable(struct worker *w, struct conn *c)
{
	for (;;) {
		ssize_t n = recv(c->fd, c->buf + c->got, sizeof(c->buf) - c->got, MSG_DONTWAIT);
		if (n < 0 && errno == EAGAIN)
			return 0;
		if (n <= 0)
			return -1;
		if (mode == STREAM) {
			c->in += (uint64_t)n;
			record(w, 0, (uint64_t)n);
			continue;
		}
		c->got += (size_t)n;
		if (mode == HTTP) {
			ssize_t r = http_complete(c);
			if (r < 0)
				return -1;
			if (r == 0)
				continue;
			if ((size_t)r != c->got)
				return -1; /* we never pipeline: nothing may follow */
			record(w, c->sent_at, (uint64_t)r);
		} else {
			if (c->got < c->need)
				continue;
			record(w, c->sent_at, size);
		}
		return conn_send(c);
	}
}

static int
stream_fill(struct conn *c)
{
	static char chunk[STREAM_CHUNK];

	while (c->out - c->in < STREAM_INFLIGHT) {
		ssize_t n = send(c->fd, chunk, sizeof(chunk), MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n < 0)
			return errno == EAGAIN ? 0 : -1;
		c->out += (uint64_t)n;
	}
	return 0;
}

static void
run_evented(struct worker *w)
{
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct conn *conns = calloc((size_t)w->nconns, sizeof(*conns));
	struct epoll_event evs[256];

	for (int i = 0; i < w->nconns; i++) {
		struct conn *c = &conns[i];
		c->fd = dial();
		uint32_t events = EPOLLIN | (mode == STREAM ? EPOLLOUT : 0);
		struct epoll_event ev = { .events = events, .data.ptr = c };
		if (c->fd < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0 ||
		    (mode != STREAM && conn_send(c) < 0)) {
			w->errors++;
			continue;
		}
	}
	while (atomic_load_explicit(&phase, memory_order_relaxed) != STOP) {
		int n = epoll_wait(ep, evs, 256, 100);
		for (int i = 0; i < n; i++) {
			struct conn *c = evs[i].data.ptr;
			int r = 0;
			if (evs[i].events & EPOLLIN)
				r = on_readable(w, c);
			if (r == 0 && mode == STREAM && evs[i].events & EPOLLOUT)
				r = stream_fill(c);
			if (r < 0) {
				if (atomic_load(&phase) != STOP)
					w->errors++;
				epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
				close(c->fd);
				c->fd = -1;
			}
		}
	}
	for (int i = 0; i < w->nconns; i++)
		if (conns[i].fd >= 0)
			close(conns[i].fd);
	free(conns);
	close(ep);
}

static void *
worker_run(void *arg)
{
	struct worker *w = arg;

	if (mode == CONN || mode == DIALHTTP)
		run_conn(w);
	else
		run_evented(w);
	return NULL;
}

static double
quantile(const uint64_t *hist, uint64_t total, double q)
{
	uint64_t want = (uint64_t)(q * (double)total), seen = 0;

	for (unsigned b = 0; b < BUCKETS; b++) {
		seen += hist[b];
		if (seen > want)
			return (double)bucket_value(b) / 1000.0;
	}
	return 0;
}

static void
sleep_s(double s)
{
	struct timespec ts = { (time_t)s, (long)((s - (double)(time_t)s) * 1e9) };
	nanosleep(&ts, NULL);
}

int
main(int argc, char **argv)
{
	int conns = 1, threads = 1, opt, markers = 0;
	double secs = 5, warmup = 1;

	if (argc < 3) {
		fprintf(stderr, "usage: loadgen conn|dialhttp|rr|stream|http|dgram ADDR [-c N] [-t N] [-d S] [-w S] [-s B] [-M]\n");
		return 2;
	}
	mode = strcmp(argv[1], "conn") == 0 ? CONN : strcmp(argv[1], "rr") == 0 ? RR :
	       strcmp(argv[1], "stream") == 0 ? STREAM : strcmp(argv[1], "dgram") == 0 ? DGRAM :
	       strcmp(argv[1], "dialhttp") == 0 ? DIALHTTP : HTTP;
	if (parse_addr(argv[2]) < 0) {
		fprintf(stderr, "bad address %s\n", argv[2]);
		return 2;
	}
	optind = 3;
	while ((opt = getopt(argc, argv, "c:t:d:w:s:M")) >= 0)
		switch (opt) {
		case 'c': conns = atoi(optarg); break;
		case 't': threads = atoi(optarg); break;
		case 'd': secs = atof(optarg); break;
		case 'w': warmup = atof(optarg); break;
		case 's': size = (size_t)atoi(optarg); break;
		case 'M': markers = 1; break;
		default: return 2;
		}
	if (size > 4096 || threads < 1 || conns < 1)
		return 2;
	if (mode != CONN && mode != DIALHTTP && threads > conns)
		threads = conns;

	struct worker *ws = calloc((size_t)threads, sizeof(*ws));
	for (int i = 0; i < threads; i++) {
		ws[i].nconns = conns / threads + (i < conns % threads);
		pthread_create(&ws[i].tid, NULL, worker_run, &ws[i]);
	}
	sleep_s(warmup);
	if (markers)
		printf("measure\n"), fflush(stdout);
	uint64_t t0 = now_ns();
	atomic_store(&phase, MEASURE);
	sleep_s(secs);
	atomic_store(&phase, STOP);
	uint64_t t1 = now_ns();
	if (markers)
		printf("stop\n"), fflush(stdout);
	for (int i = 0; i < threads; i++)
		pthread_join(ws[i].tid, NULL);

	uint64_t ops = 0, errors = 0, bytes = 0, hist[BUCKETS] = { 0 }, samples = 0;
	for (int i = 0; i < threads; i++) {
		ops += ws[i].ops;
		errors += ws[i].errors;
		bytes += ws[i].bytes;
		for (unsigned b = 0; b < BUCKETS; b++) {
			hist[b] += ws[i].hist[b];
			samples += ws[i].hist[b];
		}
	}
	double el = (double)(t1 - t0) / 1e9;
	printf("{\"mode\":\"%s\",\"ops\":%llu,\"secs\":%.3f,\"ops_per_sec\":%.1f,\"mb_per_sec\":%.2f,"
	       "\"p50_us\":%.1f,\"p99_us\":%.1f,\"errors\":%llu}\n",
	       argv[1], (unsigned long long)ops, el, (double)ops / el, (double)bytes / el / 1e6,
	       quantile(hist, samples, 0.50), quantile(hist, samples, 0.99), (unsigned long long)errors);
	free(ws);
	return 0;
}
