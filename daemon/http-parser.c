/* SPDX-License-Identifier: MIT */
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "http-parser.h"

#define MIN(a, b) ((a) < (b) ? (a) : (b))

/*
 * A strict HTTP/1.x request-head parser (RFC 9112).  Strict on purpose: bare
 * LF, obsolete line folding, whitespace before a colon, conflicting lengths
 * and Transfer-Encoding are refused, which closes the request smuggling
 * doors a reverse proxy in front of us could otherwise open.
 */

static bool
is_tchar(unsigned char c)
{
	/* token = 1*tchar: visible ASCII but separators. */
	return c > 0x20 && c < 0x7f && !strchr("\"(),/:;<=>?@[\\]{}", c);
}

static bool
is_target_char(unsigned char c)
{
	return c > 0x20 && c < 0x7f;
}

/*
 * What each byte may be in a field value: nothing (controls but HTAB, and
 * DEL), FIELD (field-vchar, SP, HTAB: obs-text included), or HOST as well
 * (uri-host [":" port]: ALPHA DIGIT - . _ ~ % ! $ & ' ( ) * + , ; = : [ ]).
 * A table: every request has a Host and several fields, and a test per
 * class of character cost more than the rest of a header's parsing.
 */
enum { FIELD = 1, HOST = 2 };
static const uint8_t field_chars[256] = {
	0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, /* 0x00 */
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x10 */
	1, 2, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 1, /* 0x20 */
	2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 1, 2, 1, 1, /* 0x30 */
	1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, /* 0x40 */
	2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 1, 2, 1, 2, /* 0x50 */
	1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, /* 0x60 */
	2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1, 2, 0, /* 0x70 */
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x80 */
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x90 */
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0xa0 */
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0xb0 */
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0xc0 */
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0xd0 */
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0xe0 */
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0xf0 */
};

/* Every byte of [v, ve) is at least of this class. */
static bool
field_is(const char *v, const char *ve, uint8_t class)
{
	for (; v < ve; v++)
		if (field_chars[(unsigned char)*v] < class)
			return false;
	return true;
}

/* Find CRLF in [p, end); a bare LF (or CR) is malformed. */
static const char *
find_eol(const char *p, const char *end, int *ret_err)
{
	for (const char *q = p; q < end; q++) {
		if (*q == '\r') {
			if (q + 1 == end)
				return NULL;
			if (q[1] != '\n') {
				*ret_err = -400;
				return NULL;
			}
			return q;
		}
		if (*q == '\n') {
			*ret_err = -400;
			return NULL;
		}
	}
	return NULL;
}

static int
parse_method(const char *p, size_t n, struct http_request *r)
{
	if (n == 3 && memcmp(p, "GET", 3) == 0)
		r->method = HTTP_REQUEST_GET;
	else if (n == 4 && memcmp(p, "HEAD", 4) == 0)
		r->method = HTTP_REQUEST_HEAD;
	else if (n == 4 && memcmp(p, "POST", 4) == 0)
		r->method = HTTP_REQUEST_POST;
	else {
		for (size_t i = 0; i < n; i++)
			if (!is_tchar((unsigned char)p[i]))
				return -400;
		return -405;
	}
	return 0;
}

static int
parse_request_line(const char *p, const char *eol, const struct http_limits *lim,
		   struct http_request *r)
{
	const char *sp1 = memchr(p, ' ', (size_t)(eol - p)), *sp2;
	int e;

	if (!sp1 || sp1 == p)
		return -400;
	sp2 = memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1));
	if (!sp2 || sp2 == sp1 + 1)
		return -400;
	if ((e = parse_method(p, (size_t)(sp1 - p), r)) < 0)
		return e;
	r->target = sp1 + 1;
	r->target_len = (size_t)(sp2 - sp1 - 1);
	if (r->target_len > lim->max_uri)
		return -414;
	if (r->target[0] != '/')
		return -400;
	for (size_t i = 0; i < r->target_len; i++)
		if (!is_target_char((unsigned char)r->target[i]))
			return -400;
	const char *v = sp2 + 1;
	if (eol - v != 8 || memcmp(v, "HTTP/", 5) != 0 || v[6] != '.' || v[5] < '0' ||
	    v[5] > '9' || v[7] < '0' || v[7] > '9')
		return -400;
	if (v[5] != '1')
		return -505;
	r->minor = v[7] - '0';
	r->keep_alive = r->minor >= 1;
	return 0;
}

static bool
token_list_has(const char *v, size_t n, const char *token)
{
	size_t tl = strlen(token);

	for (size_t i = 0; i < n;) {
		while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
			i++;
		size_t s = i;
		while (i < n && v[i] != ',' && v[i] != ' ' && v[i] != '\t')
			i++;
		if (i - s == tl && strncasecmp(v + s, token, tl) == 0)
			return true;
	}
	return false;
}

static int
parse_content_length(const char *v, size_t n, const struct http_limits *lim, bool *seen,
		     struct http_request *r)
{
	uint64_t x = 0;

	if (n == 0)
		return -400;
	for (size_t i = 0; i < n; i++) {
		if (v[i] < '0' || v[i] > '9')
			return -400; /* also "-1" and "1, 2" */
		if (x > (UINT64_MAX - 9) / 10)
			return -413;
		x = x * 10 + (uint64_t)(v[i] - '0');
	}
	if (*seen && x != r->content_length)
		return -400;
	if (x > lim->max_body)
		return -413;
	*seen = true;
	r->content_length = x;
	return 0;
}

static int
parse_header(const char *p, const char *eol, const struct http_limits *lim, bool *seen_length,
	     bool *seen_host, struct http_request *r)
{
	const char *colon = memchr(p, ':', (size_t)(eol - p));

	if (!colon || colon == p)
		return -400;
	for (const char *q = p; q < colon; q++)
		if (!is_tchar((unsigned char)*q))
			return -400; /* whitespace before the colon, obs-fold, junk */
	const char *v = colon + 1, *ve = eol;
	while (v < ve && (*v == ' ' || *v == '\t'))
		v++;
	while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
		ve--;
	size_t name = (size_t)(colon - p), n = (size_t)(ve - v);
	/* RFC 9112, 3.2: a second Host, or one with an invalid value, is a 400. */
	if (name == 4 && strncasecmp(p, "host", 4) == 0) {
		if (*seen_host || !field_is(v, ve, HOST))
			return -400;
		*seen_host = true;
		return 0;
	}
	if (!field_is(v, ve, FIELD))
		return -400;
	if (name == 14 && strncasecmp(p, "content-length", 14) == 0)
		return parse_content_length(v, n, lim, seen_length, r);
	if (name == 17 && strncasecmp(p, "transfer-encoding", 17) == 0)
		return -411;
	if (name == 10 && strncasecmp(p, "connection", 10) == 0) {
		if (token_list_has(v, n, "close"))
			r->keep_alive = false;
		else if (token_list_has(v, n, "keep-alive"))
			r->keep_alive = true;
	}
	return 0;
}

/* The request line did not fit: a huge target is 414, anything else 431. */
static int
too_long(const char *buf, size_t len, const struct http_limits *lim)
{
	const char *sp = memchr(buf, ' ', MIN(len, 32));

	return sp ? -414 : -400;
}

int
http_parse_request(const char *buf, size_t len, const struct http_limits *lim,
		   struct http_request *ret)
{
	struct http_request r = { .method = HTTP_REQUEST_GET };
	size_t skip = 0, scan = len < lim->max_header_size ? len : lim->max_header_size;
	const char *p, *end, *eol;
	bool seen_length = false, seen_host = false;
	int err = 0;

	/* A client may send stray CRLFs between requests (RFC 9112, 2.2). */
	while (skip + 1 < scan && buf[skip] == '\r' && buf[skip + 1] == '\n')
		skip += 2;
	p = buf + skip;
	end = buf + scan;
	eol = find_eol(p, end, &err);
	if (err)
		return err;
	if (!eol)
		return len >= lim->max_header_size ? too_long(p, (size_t)(end - p), lim) : 0;
	if ((err = parse_request_line(p, eol, lim, &r)) < 0)
		return err;
	for (;;) {
		p = eol + 2;
		eol = find_eol(p, end, &err);
		if (err)
			return err;
		if (!eol)
			return len >= lim->max_header_size ? -431 : 0;
		if (eol == p)
			break;
		if ((err = parse_header(p, eol, lim, &seen_length, &seen_host, &r)) < 0)
			return err;
	}
	if (r.minor >= 1 && !seen_host)
		return -400;
	*ret = r;
	return (int)(eol + 2 - buf);
}
