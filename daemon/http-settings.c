/* SPDX-License-Identifier: MIT */
#include <stddef.h>
#include <string.h>

#include "http-parser.h"
#include "macro.h"
#include "udsd.h"

/*
 * The http service's keys, a table like udsd's own schema: the defaults live
 * here alone (etc/udsd.conf is checked against them by tests/unit/test-config.c).
 */

/* What the table fills; copied into the parser's limits once all is read. */
struct http_raw {
	uint64_t max_header_size;
	uint64_t max_uri;
	uint64_t max_body;
	uint64_t header_timeout_usec;
	uint64_t debug_sleep_usec;
	char status_path[64];
	char metrics_path[64];
};

#define KEY(key, type, field, min, max, def, doc) \
	{ key, type, offsetof(struct http_raw, field), min, max, 0, def, doc }
#define KEY_OFF(key, type, field, min, max, def, doc) \
	{ key, type, offsetof(struct http_raw, field), min, max, UDSD_KEY_OFF, def, doc }

static const struct udsd_key keys[] = {
	KEY("max_header_size", UDSD_KEY_SIZE, max_header_size, 64, 1 << 20, "8k",
	    "request line and headers, at most (431 beyond)"),
	KEY("max_uri", UDSD_KEY_SIZE, max_uri, 64, 1 << 20, "4k",
	    "request target, at most (414 beyond)"),
	KEY("max_body", UDSD_KEY_SIZE, max_body, 64, UINT64_C(1) << 40, "1M",
	    "Content-Length of a request body, at most (413 beyond)"),
	KEY("header_timeout", UDSD_KEY_DURATION, header_timeout_usec, 0, 0, "10s",
	    "a request head must arrive within this (408 otherwise)"),
	KEY_OFF("debug_sleep", UDSD_KEY_DURATION, debug_sleep_usec, 0, 3600 * UINT64_C(1000000),
		"off", "for trying request_timeout: GET /debug/sleep sleeps this long in the worker"),
	KEY_OFF("status_path", UDSD_KEY_PATH, status_path, 0, 64, "/status",
		"where the live counters are served as JSON; off = nowhere"),
	KEY_OFF("metrics_path", UDSD_KEY_PATH, metrics_path, 0, 64, "off",
		"where the counters are served as OpenMetrics text (Prometheus); off = nowhere"),
};

const struct udsd_key *
http_settings_keys(size_t *ret_n)
{
	*ret_n = ELEMENTSOF(keys);
	return keys;
}

int
http_settings_parse(const struct udsd_service_config *cfg, struct http_settings *ret, char *err,
		    size_t errlen)
{
	struct http_raw raw;
	int r;

	r = udsd_keys_parse(keys, ELEMENTSOF(keys), cfg, &raw, err, errlen);
	if (r < 0)
		return r;
	*ret = (struct http_settings){
		.limits = { .max_header_size = (size_t)raw.max_header_size,
			    .max_uri = (size_t)MIN(raw.max_uri, raw.max_header_size),
			    .max_body = raw.max_body },
		.header_timeout_usec = raw.header_timeout_usec,
		.debug_sleep_usec = raw.debug_sleep_usec,
	};
	memcpy(ret->status_path, raw.status_path, sizeof(ret->status_path));
	memcpy(ret->metrics_path, raw.metrics_path, sizeof(ret->metrics_path));
	return 0;
}
