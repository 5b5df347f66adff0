/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "http-parser.h"

static const struct http_limits lim = { .max_header_size = 8192, .max_uri = 4096, .max_body = 1 << 20 };

static int
parse(const char *s, struct http_request *r)
{
	return http_parse_request(s, strlen(s), &lim, r);
}

static void
test_good(void **state)
{
	struct http_request r;
	const char *req = "GET /a?b=c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nNEXT";

	(void)state;
	assert_int_equal(parse(req, &r), (int)strlen(req) - 4);
	assert_int_equal(r.method, HTTP_REQUEST_GET);
	assert_int_equal(r.minor, 1);
	assert_int_equal(r.target_len, 6);
	assert_memory_equal(r.target, "/a?b=c", 6);
	assert_false(r.keep_alive);
	assert_true(parse("HEAD / HTTP/1.0\r\n\r\n", &r) > 0);
	assert_false(r.keep_alive);
	assert_true(parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &r) > 0);
	assert_true(r.keep_alive);
	assert_true(parse("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n", &r) > 0);
	assert_int_equal(r.content_length, 12);
	assert_true(parse("\r\n\r\nGET / HTTP/1.1\r\nhost:x\r\n\r\n", &r) > 0);
}

static void
test_incomplete(void **state)
{
	const char *req = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
	struct http_request r;

	(void)state;
	for (size_t i = 0; i < strlen(req); i++)
		assert_int_equal(http_parse_request(req, i, &lim, &r), 0);
	assert_int_equal(http_parse_request(req, strlen(req), &lim, &r), (int)strlen(req));
}

static void
test_errors(void **state)
{
	static const struct {
		const char *req;
		int status;
	} cases[] = {
		{ "GET / HTTP/1.1\nHost: x\n\n", -400 },		  /* bare LF */
		{ "GET / HTTP/1.1\r\r\n", -400 },			  /* bare CR */
		{ "GET  / HTTP/1.1\r\nHost: x\r\n\r\n", -400 },		  /* empty target */
		{ "GET x HTTP/1.1\r\nHost: x\r\n\r\n", -400 },		  /* not origin-form */
		{ "GET / HTTP/1.1\r\n\r\n", -400 },			  /* no Host */
		{ "GET / HTTP/2.0\r\nHost: x\r\n\r\n", -505 },
		{ "GET / HTTP/1.1 \r\nHost: x\r\n\r\n", -400 },
		{ "GET / HTTQ/1.1\r\nHost: x\r\n\r\n", -400 },
		{ "DELETE / HTTP/1.1\r\nHost: x\r\n\r\n", -405 },
		{ "G(T / HTTP/1.1\r\nHost: x\r\n\r\n", -400 },
		{ "GET / HTTP/1.1\r\nHost : x\r\n\r\n", -400 },		  /* space before colon */
		{ "GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", -400 }, /* obs-fold */
		{ "GET / HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n", -400 },
		{ "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", -400 },
		{ "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", -400 },
		{ "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n", -413 },
		{ "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n", -413 },
		{ "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", -411 },
		{ "GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n", -400 },
		{ "GET /\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n", -400 },
		{ "GET / HTTP/1.1\r\nHost: a\x7f\x01\r\n\r\n", -400 },
		{ "\x16\x03\x01\x02\x05\x01\x01\xfc\x03\x03\r\n\r\n", -400 }, /* TLS hello */
	};
	struct http_request r;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		print_message("case %zu\n", i);
		assert_int_equal(parse(cases[i].req, &r), cases[i].status);
	}
	/* NUL inside a header value. */
	const char nul[] = "GET / HTTP/1.1\r\nHost: a\0b\r\n\r\n";
	assert_int_equal(http_parse_request(nul, sizeof(nul) - 1, &lim, &r), -400);
}

/* RFC 9112: control bytes and DEL in any field value, a second or an invalid Host: 400. */
static void
test_fields(void **state)
{
	static const struct {
		const char *req;
		int status;
	} cases[] = {
		{ "GET / HTTP/1.1\r\nHost: x\r\nX: a\x7f" "b\r\n\r\n", -400 },
		{ "GET / HTTP/1.1\r\nHost: x\r\nX: \x7f\r\n\r\n", -400 },
		{ "GET / HTTP/1.1\r\nHost: x\r\nX: a\x1b[2Jb\r\n\r\n", -400 },
		{ "GET / HTTP/1.1\r\nHost: x\r\nHost: x\r\n\r\n", -400 },
		{ "GET / HTTP/1.1\r\nHost: a\r\nhOST: b\r\n\r\n", -400 },
		{ "GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n", -400 },
		{ "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", -400 },
		{ "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", -400 },
		{ "GET / HTTP/1.1\r\nHost: user@a\r\n\r\n", -400 },
		{ "GET / HTTP/1.1\r\nHost: x\r\nX: caf\xc3\xa9\tok\r\n\r\n", 0 },
		{ "GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", 0 },
		{ "GET / HTTP/1.1\r\nHost: 127.0.0.1:80\r\n\r\n", 0 },
		{ "GET / HTTP/1.1\r\nHost: my-host.example_1\r\n\r\n", 0 },
		{ "GET / HTTP/1.1\r\nHost:\r\n\r\n", 0 }, /* no authority: empty, RFC 9112 3.2 */
	};
	static const char host_ok[] = "-._~%!$&'()*+,;=:[]0123456789"
				      "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
	struct http_request r;
	char req[64];

	(void)state;
	/* Every byte in a Host value: accepted exactly when uri-host or port allows it. */
	for (int ch = 1; ch < 256; ch++) {
		int n = snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: a%cb\r\n\r\n", ch);
		bool ok = strchr(host_ok, ch) != NULL;

		print_message("byte %d\n", ch);
		assert_int_equal(http_parse_request(req, (size_t)n, &lim, &r),
				 ok ? n : -400);
	}
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int n = parse(cases[i].req, &r);

		print_message("case %zu\n", i);
		if (cases[i].status)
			assert_int_equal(n, cases[i].status);
		else
			assert_int_equal(n, (int)strlen(cases[i].req));
	}
}

static void
test_limits(void **state)
{
	struct http_request r;
	size_t n = 20000;
	char *big = malloc(n + 1);

	(void)state;
	memset(big, 'a', n);
	big[n] = 0;
	memcpy(big, "GET /", 5); /* a URI that never ends */
	assert_int_equal(http_parse_request(big, n, &lim, &r), -414);
	memcpy(big, "GET /aaaa HTTP/1.1\r\nHost: x\r\nX: ", 32);
	assert_int_equal(http_parse_request(big, n, &lim, &r), -431);
	assert_int_equal(http_parse_request(big, 100, &lim, &r), 0);
	char *uri = malloc(5000 + 32);
	memset(uri, 'b', 5000 + 32);
	memcpy(uri, "GET /", 5);
	memcpy(uri + 5000, " HTTP/1.1\r\nHost: x\r\n\r\n", 22);
	assert_int_equal(http_parse_request(uri, 5022, &lim, &r), -414);
	free(uri);
	free(big);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good),
		cmocka_unit_test(test_incomplete),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_fields),
		cmocka_unit_test(test_limits),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
