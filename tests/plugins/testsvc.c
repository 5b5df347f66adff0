/* SPDX-License-Identifier: MIT */
/*
 * A service for tests: echoes, crashes on "crash", answers each byte 0xfe
 * with 64 KiB (and stops consuming while congested, as udsd.h asks), and
 * fails init when the listener sets fail_init = yes.  Built with
 * -DBAD_VERSION it claims an API version udsd does not have; with
 * -DNO_SYMBOL it exports nothing.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <udsd.h>

#define AMPLIFY 0xfe

/* Answers far larger than the requests: what udsd_conn_congested() is for. */
static ssize_t
amplify(struct udsd_conn *conn, const unsigned char *p, size_t len)
{
	static const char block[64 * 1024];
	size_t i;

	for (i = 0; i < len && p[i] == AMPLIFY && !udsd_conn_congested(conn); i++)
		if (udsd_conn_write(conn, block, sizeof(block)) < 0)
			return -1;
	return (ssize_t)i;
}

static ssize_t
test_data(struct udsd_conn *conn, const void *data, size_t len)
{
	if (len >= 5 && memcmp(data, "crash", 5) == 0)
		abort();
	if (len > 0 && *(const unsigned char *)data == AMPLIFY)
		return amplify(conn, data, len);
	udsd_conn_write(conn, data, len);
	return (ssize_t)len;
}

static int
test_check(const struct udsd_service_config *config, char *err, size_t errlen)
{
	for (size_t i = 0; i < config->n_keys; i++)
		if (strcmp(config->keys[i].key, "fail_init") != 0) {
			snprintf(err, errlen, "%s: unknown key for testsvc", config->keys[i].key);
			return -EINVAL;
		}
	return 0;
}

static int
test_init(const struct udsd_service_config *config, void **ret_state)
{
	for (size_t i = 0; i < config->n_keys; i++)
		if (strcmp(config->keys[i].key, "fail_init") == 0 &&
		    strcmp(config->keys[i].value, "yes") == 0)
			return -EIO;
	*ret_state = NULL;
	return 0;
}

#ifdef NO_SYMBOL
#define udsd_service_v1 udsd_service_misnamed
#endif
const struct udsd_service udsd_service_v1 = {
#ifdef BAD_VERSION
	.api_version = 999,
#else
	.api_version = UDSD_SERVICE_API_VERSION,
#endif
	.name = "testsvc",
	.check = test_check,
	.init = test_init,
	.on_data = test_data,
};
