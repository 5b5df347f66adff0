/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum http_request_method { HTTP_REQUEST_GET, HTTP_REQUEST_HEAD, HTTP_REQUEST_POST };

struct http_limits {
	size_t max_header_size; /* request line and headers, CRLFs included */
	size_t max_uri;
	uint64_t max_body;
};

struct http_request {
	enum http_request_method method;
	int minor; /* HTTP/1.minor */
	const char *target;
	size_t target_len;
	uint64_t content_length;
	bool keep_alive;
};

/*
 * Parse one request head at the start of buf.  Returns its length (>0) with
 * *ret filled, 0 if more bytes are needed, or -STATUS (400, 405, 408, 411,
 * 413, 414, 431, 505) for a request to refuse.  Pure: no allocation, no state.
 */
int http_parse_request(const char *buf, size_t len, const struct http_limits *limits,
		       struct http_request *ret);

/* http-settings.c: the http service's keys, a udsd_key table (udsd.h), and what they give. */
struct udsd_key;
struct udsd_service_config;

struct http_settings {
	struct http_limits limits;
	uint64_t header_timeout_usec;
	uint64_t debug_sleep_usec; /* 0: no /debug/sleep */
	char status_path[64];	   /* "": off */
	char metrics_path[64];	   /* "": off */
};

const struct udsd_key *http_settings_keys(size_t *ret_n);
int http_settings_parse(const struct udsd_service_config *cfg, struct http_settings *ret, char *err,
			size_t errlen);
