/* SPDX-License-Identifier: MIT */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "daemon.h"
#include "http-parser.h"

/*
 * HTTP/1.1 over the listener's socket: keep-alive, pipelining (the answers
 * to one read leave in one send, up to the congestion mark), HEAD, request
 * bodies read and discarded.
 * Chunked request bodies are refused with 411: nothing here takes a body.
 *   /healthz  200 ok
 *   /status   the live counters of every worker, as JSON
 *   anything  the seeds' JSON greeting with the request target
 */

#define STATUS_JSON_MAX (64 * 1024)

/* Per connection: only what spans reads. */
struct http_conn {
	uint64_t discard; /* body bytes still to skip */
	bool partial;     /* a request head has started arriving */
	bool held;        /* requests left to udsd while the client catches up (congested) */
	bool answered;    /* at least one request answered */
	bool closing;
};

static const char *
reason(int code)
{
	switch (code) {
	case 200: return "OK";
	case 400: return "Bad Request";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 411: return "Length Required";
	case 413: return "Content Too Large";
	case 414: return "URI Too Long";
	case 431: return "Request Header Fields Too Large";
	case 505: return "HTTP Version Not Supported";
	default: return "Error";
	}
}

/* The Date header changes once a second; format it once a second per thread. */
static const char *
http_date(void)
{
	static __thread char buf[40];
	static __thread time_t cached;
	time_t now = time(NULL);
	struct tm tm;

	if (now != cached) {
		gmtime_r(&now, &tm);
		strftime(buf, sizeof(buf), "%a, %d %b %Y %H:%M:%S GMT", &tm);
		cached = now;
	}
	return buf;
}

/* A response head is assembled with plain copies: snprintf was the top user-space cost. */
struct head {
	char buf[512];
	size_t len;
};

static void
put(struct head *h, const char *s, size_t n)
{
	memcpy(h->buf + h->len, s, n);
	h->len += n;
}

static void
put_str(struct head *h, const char *s)
{
	put(h, s, strlen(s));
}

static void
put_uint(struct head *h, uint64_t v)
{
	char t[24];
	size_t i = sizeof(t);

	do
		t[--i] = (char)('0' + v % 10);
	while (v /= 10);
	put(h, t + i, sizeof(t) - i);
}

static int
respond(struct udsd_conn *c, int code, const char *type, const char *body, size_t body_len,
	bool head, bool keep_alive, int minor)
{
	struct head h = { .len = 0 };

	put(&h, minor ? "HTTP/1.1 " : "HTTP/1.0 ", 9);
	put_uint(&h, (uint64_t)code);
	put(&h, " ", 1);
	put_str(&h, reason(code));
	put_str(&h, "\r\nServer: udsd\r\nDate: ");
	put_str(&h, http_date());
	put_str(&h, "\r\nContent-Type: ");
	put_str(&h, type);
	put_str(&h, "\r\nContent-Length: ");
	put_uint(&h, body_len);
	put_str(&h, "\r\n");
	if (code == 405)
		put_str(&h, "Allow: GET, HEAD, POST\r\n");
	if (!keep_alive)
		put_str(&h, "Connection: close\r\n");
	else if (minor == 0)
		put_str(&h, "Connection: keep-alive\r\n");
	put_str(&h, "\r\n");
	if (udsd_conn_write(c, h.buf, h.len) < 0)
		return -ENOMEM;
	if (!head && body_len && udsd_conn_write(c, body, body_len) < 0)
		return -ENOMEM;
	udsd_conn_count_request(c);
	return 0;
}

static int
respond_error(struct udsd_conn *c, int code)
{
	char body[64];
	int n = snprintf(body, sizeof(body), "%d %s\n", code, reason(code));

	return respond(c, code, "text/plain", body, (size_t)n, false, false, 1);
}

static size_t
json_escape(char *out, const char *s, size_t n)
{
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch == '"' || ch == '\\') {
			out[o++] = '\\';
			out[o++] = (char)ch;
		} else if (ch < 0x20 || ch == 0x7f) {
			o += (size_t)sprintf(out + o, "\\u%04x", ch);
		} else {
			out[o++] = (char)ch;
		}
	}
	return o;
}

/*
 * debug_sleep: hold the worker thread, as a slow request handler would, to
 * see request_timeout, the slowlog and the 503 at work.  Off by default.
 */
static void
debug_sleep(uint64_t usec)
{
	struct timespec ts = { (time_t)(usec / 1000000), (long)(usec % 1000000) * 1000 };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* Is the request's target this configured path ("" is off: nothing is)? */
static bool
target_is(const char *t, size_t n, const char *path)
{
	return path[0] && strlen(path) == n && memcmp(t, path, n) == 0;
}

/*
 * The status path and the metrics path: the shared counters as text, printed
 * again into a larger buffer if the first was short (a cut exposition would
 * not parse).
 */
static int
respond_text(struct udsd_conn *c, const struct http_request *r, const char *type,
	     size_t (*fn)(char *buf, size_t size))
{
	size_t size = STATUS_JSON_MAX, len;
	char *text = malloc(size);
	int e;

	if (!text)
		return -ENOMEM;
	len = fn(text, size);
	if (len >= size) {
		free(text);
		size = len + 4096; /* a worker may have started meanwhile */
		if (!(text = malloc(size)))
			return -ENOMEM;
		len = MIN(fn(text, size), size - 1);
	}
	e = respond(c, 200, type, text, len, r->method == HTTP_REQUEST_HEAD, r->keep_alive,
		    r->minor);
	free(text);
	return e;
}

static int
route(struct udsd_conn *c, const struct http_request *r)
{
	const struct http_settings *set = udsd_conn_state(c);
	bool head = r->method == HTTP_REQUEST_HEAD;
	const char *t = r->target;
	size_t n = r->target_len;

	if (set->debug_sleep_usec && n == 12 && memcmp(t, "/debug/sleep", 12) == 0)
		debug_sleep(set->debug_sleep_usec);

	if (n == 8 && memcmp(t, "/healthz", 8) == 0)
		return respond(c, 200, "text/plain", "ok\n", 3, head, r->keep_alive, r->minor);
	if (target_is(t, n, set->status_path))
		return respond_text(c, r, "application/json", udsd_status_json);
	if (target_is(t, n, set->metrics_path))
		return respond_text(c, r, METRICS_CONTENT_TYPE, metrics_text);
	static const char pre[] = "{\"message\":\"Hello from your HTTP server on a Unix socket!\",\"url\":\"";
	/* Worst case every target byte becomes \u00XX: six bytes each. */
	size_t need = sizeof(pre) + 6 * n + 2;
	char small[sizeof(pre) + 6 * 256 + 2];
	char *body = need <= sizeof(small) ? small : malloc(need);
	size_t len = sizeof(pre) - 1;
	int e;

	if (!body)
		return -ENOMEM;
	memcpy(body, pre, len);
	len += json_escape(body + len, t, n);
	memcpy(body + len, "\"}", 2);
	len += 2;
	e = respond(c, 200, "application/json", body, len, head, r->keep_alive, r->minor);
	if (body != small)
		free(body);
	return e;
}

/* Answer one parsed request; false once the connection is to close. */
static bool
http_answer(struct udsd_conn *c, struct http_conn *h, struct http_request *r)
{
	h->discard = r->method == HTTP_REQUEST_POST || r->content_length ? r->content_length : 0;
	r->keep_alive = r->keep_alive && !udsd_conn_draining(c);
	h->answered = true;
	if (route(c, r) < 0 || !r->keep_alive) {
		h->closing = true;
		udsd_conn_close(c);
		return false;
	}
	return true;
}

/*
 * header_timeout runs from the first byte of a head, as nginx's
 * client_header_timeout: reads do not push it back, or one byte every few
 * seconds would hold a connection for hours (slowloris).
 */
static void
http_head_deadline(struct udsd_conn *c, const struct http_conn *h, bool was_partial,
		   bool answered)
{
	const struct http_settings *set = udsd_conn_state(c);

	if (h->partial && (!was_partial || answered))
		udsd_conn_set_deadline(c, set->header_timeout_usec);
	else if (!h->partial && was_partial)
		udsd_conn_set_deadline(c, 0);
}

static ssize_t
http_data(struct udsd_conn *c, const void *data, size_t len)
{
	const struct http_settings *set = udsd_conn_state(c);
	struct http_conn *h = udsd_conn_get_data(c);
	const char *p = data;
	size_t used = 0;
	bool was_partial = h->partial, answered = false;

	h->partial = h->held = false;
	while (used < len && !h->closing) {
		if (h->discard) {
			size_t k = (size_t)MIN(h->discard, (uint64_t)(len - used));
			h->discard -= k;
			used += k;
			continue;
		}
		/* A client pipelining without reading: udsd keeps the rest until it reads. */
		if (udsd_conn_congested(c)) {
			h->held = true;
			break;
		}
		struct http_request r;
		int n = http_parse_request(p + used, len - used, &set->limits, &r);
		if (n == 0) {
			h->partial = true;
			break;
		}
		if (n < 0) {
			h->closing = true;
			respond_error(c, -n);
			udsd_conn_close(c);
			return (ssize_t)len;
		}
		used += (size_t)n;
		answered = true;
		if (!http_answer(c, h, &r))
			return (ssize_t)len;
	}
	http_head_deadline(c, h, was_partial, answered);
	return (ssize_t)used;
}

static int
http_open(struct udsd_conn *c)
{
	struct http_conn *h = calloc(1, sizeof(*h));

	if (!h)
		return -ENOMEM;
	udsd_conn_set_data(c, h);
	return 0;
}

static void
http_close(struct udsd_conn *c)
{
	free(udsd_conn_get_data(c));
}

/*
 * Between requests: close now.  Mid-request, or with pipelined requests held:
 * the next answer says Connection: close.  No request yet: the client may
 * have connected just before the reload, so let it send one within
 * header_timeout and answer it (with Connection: close) rather than hang up.
 */
static void
http_drain(struct udsd_conn *c)
{
	const struct http_settings *set = udsd_conn_state(c);
	struct http_conn *h = udsd_conn_get_data(c);

	if (h->partial || h->discard || h->held)
		return;
	if (h->answered)
		udsd_conn_close(c);
	else
		udsd_conn_set_deadline(c, set->header_timeout_usec);
}

/*
 * Between requests, with nothing held: the connection can move to the new
 * generation, keep-alive and all (one that sent nothing yet too).
 */
static bool
http_can_migrate(struct udsd_conn *c)
{
	const struct http_conn *h = udsd_conn_get_data(c);

	return !h->partial && !h->discard && !h->held && !h->closing;
}

static void
http_timeout(struct udsd_conn *c)
{
	struct http_conn *h = udsd_conn_get_data(c);

	if (h->partial)
		respond_error(c, 408);
	udsd_conn_close(c);
}

static int
http_check(const struct udsd_service_config *cfg, char *err, size_t errlen)
{
	struct http_settings s;

	return http_settings_parse(cfg, &s, err, errlen);
}

static int
http_init(const struct udsd_service_config *cfg, void **ret_state)
{
	struct http_settings *s = malloc(sizeof(*s));
	char err[128];

	if (!s)
		return -ENOMEM;
	if (http_settings_parse(cfg, s, err, sizeof(err)) < 0) {
		free(s);
		return -EINVAL;
	}
	*ret_state = s;
	return 0;
}

static void
http_fini(void *state)
{
	free(state);
}

/* request_timeout: the client of a stuck request learns why its connection ends. */
#define DEADLINE_BODY "503 Service Unavailable: the request took too long\n"
static const char deadline_reply[] = "HTTP/1.1 503 Service Unavailable\r\n"
				     "Server: udsd\r\n"
				     "Content-Type: text/plain\r\n"
				     "Content-Length: 51\r\n"
				     "Connection: close\r\n\r\n" DEADLINE_BODY;
_Static_assert(sizeof(DEADLINE_BODY) - 1 == 51, "Content-Length of the deadline reply");

const struct udsd_service service_http = {
	.api_version = UDSD_SERVICE_API_VERSION,
	.name = "http",
	.flags = UDSD_SERVICE_DEADLINE_REPLY | UDSD_SERVICE_MIGRATE,
	.deadline_reply = deadline_reply,
	.check = http_check,
	.init = http_init,
	.fini = http_fini,
	.on_open = http_open,
	.on_data = http_data,
	.on_close = http_close,
	.on_drain = http_drain,
	.on_timeout = http_timeout,
	.can_migrate = http_can_migrate,
};
