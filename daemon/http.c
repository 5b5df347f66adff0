/* SPDX-License-Identifier: MIT */
#include "daemon.h"

static ssize_t
http_data(struct udsd_conn *conn, const void *data, size_t len)
{
	(void)conn;
	(void)data;
	return (ssize_t)len;
}

const struct udsd_service service_http = {
	.api_version = UDSD_SERVICE_API_VERSION,
	.name = "http",
	.on_data = http_data,
};
