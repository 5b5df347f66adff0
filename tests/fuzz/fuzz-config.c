/* SPDX-License-Identifier: MIT */
/* libFuzzer target: any config text either parses to a valid config or gives FILE:LINE: error. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1), err[512] = "";
	struct config *c = NULL;

	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	if (config_load_string("fuzz.conf", text, &c, err, sizeof(err)) == 0) {
		assert(c->n_listeners > 0 && c->threads > 0 && c->workers > 0);
		for (size_t i = 0; i < c->n_listeners; i++)
			assert(c->listeners[i].address && c->listeners[i].service);
		config_free(c);
	} else {
		assert(strncmp(err, "fuzz.conf", 9) == 0);
		assert(c == NULL);
	}
	free(text);
	return 0;
}
