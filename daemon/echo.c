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

/* Each datagram back to its sender; one that bound no address cannot be answered. */
static int
echo_datagram(struct udsd_dgram *d, const void *data, size_t len)
{
	(void)udsd_dgram_reply(d, data, len); /* a dropped reply is counted by udsd */
	return 0;
}

const struct udsd_service service_echo = {
	.api_version = UDSD_SERVICE_API_VERSION,
	.name = "echo",
	/* No state: any moment between reads is a boundary. */
	.flags = UDSD_SERVICE_DATAGRAMS | UDSD_SERVICE_MIGRATE,
	.on_data = echo_data,
	.on_datagram = echo_datagram,
};
