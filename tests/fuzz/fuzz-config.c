/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: any config text either parses to a valid config or gives
 * FILE:LINE: error; and what parses prints (udsd -T) as a file that parses
 * back and prints the same.
 */
#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *
dump(const struct config *c)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	assert(f);
	assert(config_dump(c, f) == 0);
	fclose(f);
	return text;
}

static void
round_trip(const struct config *c)
{
	struct config *again = NULL;
	char err[512] = "";
	char *first = dump(c);

	int r = config_load_string("fuzz.conf", first, &again, err, sizeof(err));

	/* inih reads lines of up to 199 bytes; a name printed for a number can make one longer. */
	if (r != 0 && strstr(err, ": line too long (at most")) {
		free(first);
		return;
	}
	if (r != 0) {
		fprintf(stderr, "the dump does not parse: %s\n%s", err, first);
		abort();
	}
	char *second = dump(again);
	assert(strcmp(first, second) == 0);
	free(first);
	free(second);
	config_free(again);
}

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
		assert(c->n_listeners > 0 && c->n_pools > 0);
		for (size_t i = 0; i < c->n_pools; i++)
			assert(c->pools[i].threads > 0 && c->pools[i].workers > 0);
		for (size_t i = 0; i < c->n_listeners; i++)
			assert(c->listeners[i].address && c->listeners[i].service &&
			       c->listeners[i].pool < c->n_pools);
		round_trip(c);
		config_free(c);
	} else {
		assert(strncmp(err, "fuzz.conf", 9) == 0);
		assert(c == NULL);
	}
	free(text);
	return 0;
}
