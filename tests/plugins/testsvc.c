/* SPDX-License-Identifier: MIT */
/*
 * A service for tests: echoes, crashes on "crash", answers "probe" with what
 * it may write of udsd's shared status mapping, fails init when the listener
 * sets fail_init = yes and takes init_sleep = SECONDS to start.  Built with
 * -DBAD_VERSION it claims an API version udsd does not have; with
 * -DNO_SYMBOL it exports nothing.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <udsd.h>

/*
 * The status mapping starts with the master's pid.  For each page of the
 * shared mappings from there on, say whether this worker may make it
 * writable: "w" if it is or can become writable, "-" if mprotect() refuses.
 * A compromised worker could do no more than this.
 */
static void
test_probe(struct udsd_conn *conn)
{
	const long page = sysconf(_SC_PAGESIZE);
	char line[256], out[4096] = "";
	unsigned long lo, hi, base = 0, end = 0;
	char perms[8];
	size_t len = 0;
	FILE *f = fopen("/proc/self/maps", "r");

	while (f && fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) != 3 || perms[3] != 's')
			continue;
		if (!base && perms[0] == 'r' && *(const pid_t *)lo == getppid())
			base = lo;
		if (base && (lo == base || lo == end))
			end = hi;
	}
	if (f)
		fclose(f);
	for (unsigned long p = base; p < end && len + 2 < sizeof(out); p += (unsigned long)page)
		out[len++] = mprotect((void *)p, (size_t)page, PROT_READ | PROT_WRITE) == 0 ? 'w' : '-';
	out[len++] = '\n';
	udsd_conn_write(conn, out, len);
}

static ssize_t
test_data(struct udsd_conn *conn, const void *data, size_t len)
{
	if (len >= 5 && memcmp(data, "crash", 5) == 0)
		abort();
	if (len >= 5 && memcmp(data, "probe", 5) == 0) {
		test_probe(conn);
		return (ssize_t)len;
	}
	udsd_conn_write(conn, data, len);
	return (ssize_t)len;
}

static int
test_check(const struct udsd_service_config *config, char *err, size_t errlen)
{
	for (size_t i = 0; i < config->n_keys; i++)
		if (strcmp(config->keys[i].key, "fail_init") != 0 &&
		    strcmp(config->keys[i].key, "init_sleep") != 0) {
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
		else if (strcmp(config->keys[i].key, "init_sleep") == 0)
			sleep((unsigned)atoi(config->keys[i].value));
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
