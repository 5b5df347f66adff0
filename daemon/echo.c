/* SPDX-License-Identifier: MIT */
#include "daemon.h"

/* Every byte back, in order, until the client closes; udsd does the buffering. */
static ssize_t
echo_data(struct udsd_conn *conn, const void *data, size_t len)
{
	if (udsd_conn_write(conn, data, len) < 0)
		return -1;
	return (ssize_t)len;
}

const struct udsd_service service_echo = {
	.api_version = UDSD_SERVICE_API_VERSION,
	.name = "echo",
	.flags = UDSD_SERVICE_MIGRATE, /* no state: any moment between reads is a boundary */
	.on_data = echo_data,
};
