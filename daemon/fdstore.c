/* SPDX-License-Identifier: MIT */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>

#include "daemon.h"

/*
 * The listening sockets udsd binds itself (not the ones udsd.socket passes)
 * go into systemd's fd store, so that they outlive the process: across
 * `systemctl restart` and a crash with Restart=on-failure systemd keeps them
 * and passes them back in LISTEN_FDS, and meanwhile the socket file and its
 * backlog stay in place, so clients wait instead of being refused.
 *
 * What systemd keeps (checked on systemd 252 with the shipped unit,
 * FileDescriptorStoreMax=): the store survives `systemctl restart` and an
 * automatic restart after a crash; `systemctl stop` (or an idle exit, or a
 * failure that is not restarted) empties it, closing the sockets.  From
 * systemd 254 on, FileDescriptorStorePreserve=yes keeps it across a stop too,
 * and $FDSTORE tells the service the store's size.
 *
 * Stored sockets are named FDSTORE_PREFIX + the listener's name, so that they
 * are never taken for udsd.socket's (FileDescriptorName=): those may serve an
 * idle exit, stored ones may not (nothing would start udsd for their clients).
 */
#define FDSTORE_PREFIX "fdstore."

/*
 * Only under systemd, as a service (INVOCATION_ID): the store of a unit
 * whose FileDescriptorStoreMax= is 0 throws the fd away, and outside systemd
 * a socket we believed stored would keep its file after udsd exits.  systemd
 * 254+ says the store's size in $FDSTORE.
 */
bool
fdstore_enabled(void)
{
	const char *max = getenv("FDSTORE");

	if (!getenv("NOTIFY_SOCKET"))
		return false;
	if (max)
		return strtoul(max, NULL, 10) > 0;
	return getenv("INVOCATION_ID") != NULL;
}

/* The listener a stored socket's name stands for, or NULL if the name is not a stored one's. */
const char *
fdstore_listener(const char *fdname)
{
	size_t n = strlen(FDSTORE_PREFIX);

	return strncmp(fdname, FDSTORE_PREFIX, n) == 0 ? fdname + n : NULL;
}

/* systemd's rule for a descriptor name: up to 255 printable ASCII characters, no colon. */
static bool
fdname_ok(const char *listener)
{
	if (strlen(FDSTORE_PREFIX) + strlen(listener) > 255)
		return false;
	for (const char *p = listener; *p; p++)
		if (*p < ' ' || *p > '~' || *p == ':')
			return false;
	return true;
}

/* Put a socket of listener into the store; systemd takes a copy, ours stays open. */
int
fdstore_put(const char *listener, int fd)
{
	char msg[300];
	int r;

	if (!fdname_ok(listener))
		return -EINVAL;
	snprintf(msg, sizeof(msg), "FDSTORE=1\nFDNAME=" FDSTORE_PREFIX "%s", listener);
	r = sd_pid_notify_with_fds(0, 0, msg, &fd, 1);
	return r > 0 ? 0 : r < 0 ? r : -ENOTCONN;
}

/* The listener is gone from the config: systemd closes its stored socket. */
void
fdstore_remove(const char *listener)
{
	if (fdname_ok(listener))
		sd_notifyf(0, "FDSTOREREMOVE=1\nFDNAME=" FDSTORE_PREFIX "%s", listener);
}
