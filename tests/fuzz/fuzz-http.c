/* SPDX-License-Identifier: MIT */
/* libFuzzer target: the HTTP request-head parser must never read out of bounds or lie. */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>

#include "http-parser.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct http_limits lim = { .max_header_size = 512, .max_uri = 128, .max_body = 1000 };
	struct http_request r;
	int n = http_parse_request((const char *)data, size, &lim, &r);

	if (n > 0) {
		assert((size_t)n <= size);
		assert(r.target >= (const char *)data && r.target + r.target_len <= (const char *)data + n);
		assert(r.target_len <= lim.max_uri && r.content_length <= lim.max_body);
		assert(r.minor == 0 || r.minor == 1 || (r.minor >= 0 && r.minor <= 9));
	} else if (n < 0) {
		assert(n <= -400 && n >= -505);
	}
	return 0;
}
