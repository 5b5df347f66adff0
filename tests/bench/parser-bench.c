/* SPDX-License-Identifier: MIT */
/*
 * parser-bench: udsd's request-head parser against Node's http_parser
 * (libhttp-parser-dev), on the same requests, doing the same work: method,
 * target, version, Content-Length, Connection.  Prints ns per request.
 *   cc -O2 -Idaemon tests/bench/parser-bench.c daemon/http-parser.c -lhttp_parser
 */
#include <http_parser.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "http-parser.h"

static const char *const requests[] = {
	"GET /hello HTTP/1.1\r\nHost: localhost\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n",
	"GET /bench HTTP/1.1\r\nHost: bench\r\n\r\n",
	"POST /form HTTP/1.1\r\nHost: localhost\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n"
	"Content-Length: 0\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\n",
	"GET /api/v1/items?limit=10&offset=20 HTTP/1.1\r\nHost: example\r\nConnection: keep-alive\r\n"
	"Accept-Encoding: gzip, deflate\r\nAccept-Language: en-US,en;q=0.9\r\nCookie: a=b; c=d\r\n\r\n",
};

#define ROUNDS 2000000

struct hp_state {
	int header_is_cl, header_is_conn, done;
	unsigned long long content_length;
	int keep_alive;
	const char *url;
	size_t url_len;
};

static int
on_url(http_parser *p, const char *at, size_t len)
{
	struct hp_state *s = p->data;
	s->url = at;
	s->url_len = len;
	return 0;
}

static int
on_field(http_parser *p, const char *at, size_t len)
{
	struct hp_state *s = p->data;
	s->header_is_cl = len == 14 && strncasecmp(at, "content-length", 14) == 0;
	s->header_is_conn = len == 10 && strncasecmp(at, "connection", 10) == 0;
	return 0;
}

static int
on_value(http_parser *p, const char *at, size_t len)
{
	(void)p;
	(void)at;
	(void)len;
	return 0;
}

static int
on_headers_complete(http_parser *p)
{
	struct hp_state *s = p->data;
	s->keep_alive = http_should_keep_alive(p);
	s->content_length = p->content_length;
	s->done = 1;
	return 1; /* head only, as udsd's parser */
}

static double
now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int
main(void)
{
	static const struct http_limits lim = { 8192, 4096, 1 << 20 };
	http_parser_settings settings = { .on_url = on_url, .on_header_field = on_field,
					  .on_header_value = on_value,
					  .on_headers_complete = on_headers_complete };
	size_t n = sizeof(requests) / sizeof(requests[0]), lens[8];
	volatile unsigned long long sink = 0;

	for (size_t i = 0; i < n; i++)
		lens[i] = strlen(requests[i]);
	double t0 = now();
	for (int r = 0; r < ROUNDS; r++) {
		struct http_request req;
		size_t i = (size_t)r % n;
		int k = http_parse_request(requests[i], lens[i], &lim, &req);
		sink += (unsigned long long)k + req.target_len + req.keep_alive;
	}
	double t1 = now();
	for (int r = 0; r < ROUNDS; r++) {
		http_parser p;
		struct hp_state s = { 0 };
		size_t i = (size_t)r % n;
		http_parser_init(&p, HTTP_REQUEST);
		p.data = &s;
		size_t k = http_parser_execute(&p, &settings, requests[i], lens[i]);
		sink += k + s.url_len + (unsigned)s.keep_alive;
	}
	double t2 = now();
	printf("udsd http-parser: %.1f ns/request\nnode http_parser 2.9: %.1f ns/request\nratio: %.2fx\n",
	       (t1 - t0) / ROUNDS * 1e9, (t2 - t1) / ROUNDS * 1e9, (t2 - t1) / (t1 - t0));
	return sink == 42;
}
