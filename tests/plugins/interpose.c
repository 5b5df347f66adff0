/* SPDX-License-Identifier: MIT */
/*
 * A service whose globals and functions are named like udsd's own: "status"
 * (udsd's shared counters), "status_config", "now_usec" and "log_msg".  Each
 * must be this plugin's, never udsd's: "show" answers what they hold here,
 * "status=7 status_config=plugin now_usec=42 log_msg=43" when nothing of
 * udsd's leaked in.
 */
#include <stdint.h>
#include <stdio.h>
#include <udsd.h>

int status;
const char *status_config = "plugin";

uint64_t now_usec(void);
int log_msg(int level, const char *fmt, ...);

uint64_t
now_usec(void)
{
	return 42;
}

int
log_msg(int level, const char *fmt, ...)
{
	return 43;
}

static int
interpose_init(const struct udsd_service_config *config, void **ret_state)
{
	status = 7;
	*ret_state = NULL;
	return 0;
}

static ssize_t
interpose_data(struct udsd_conn *conn, const void *data, size_t len)
{
	char out[128];
	int n = snprintf(out, sizeof(out), "status=%d status_config=%s now_usec=%llu log_msg=%d\n",
			 status, status_config, (unsigned long long)now_usec(), log_msg(0, "x"));

	udsd_conn_write(conn, out, (size_t)n);
	return (ssize_t)len;
}

const struct udsd_service udsd_service_v1 = {
	.api_version = UDSD_SERVICE_API_VERSION,
	.name = "interpose",
	.init = interpose_init,
	.on_data = interpose_data,
};
