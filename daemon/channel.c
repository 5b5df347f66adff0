/* SPDX-License-Identifier: MIT */
#include <string.h>
#include <sys/socket.h>

#include "daemon.h"
#include "fd-util.h"

/*
 * Wire format: a fixed 8-byte header, then for CHANNEL_FDS one byte per fd
 * naming its listener.  SOCK_SEQPACKET keeps each message and its fds together,
 * so a message is received whole or not at all.
 */
#define CHANNEL_HEADER 8

int
channel_pair(int *ret_master, int *ret_worker)
{
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) < 0)
		return negative_errno();
	*ret_master = sv[0];
	*ret_worker = sv[1];
	return 0;
}

int
channel_send(int fd, unsigned type, uint32_t arg, const int *fds, const uint8_t *listeners,
	     size_t n)
{
	uint8_t buf[CHANNEL_HEADER + CHANNEL_MAX_FDS];
	uint16_t t = (uint16_t)type, count = (uint16_t)n;
	ssize_t r;

	if (n > CHANNEL_MAX_FDS)
		return -EINVAL;
	memcpy(buf, &t, 2);
	memcpy(buf + 2, &count, 2);
	memcpy(buf + 4, &arg, 4);
	if (n > 0)
		memcpy(buf + CHANNEL_HEADER, listeners, n);
	r = fdpass_send(fd, buf, CHANNEL_HEADER + n, fds, fds ? n : 0);
	return r < 0 ? (int)r : 0;
}

/* Validate one received message; pure, so it is fuzzed on its own. */
int
channel_decode(const void *buf, size_t len, size_t n_fds, size_t n_listeners,
	       struct channel_msg *ret)
{
	struct channel_msg m = { 0 };
	const uint8_t *p = buf;

	if (len < CHANNEL_HEADER)
		return -EBADMSG;
	memcpy(&m.type, p, 2);
	memcpy(&m.count, p + 2, 2);
	memcpy(&m.arg, p + 4, 4);
	switch (m.type) {
	case CHANNEL_FDS:
		if (m.count == 0 || m.count > CHANNEL_MAX_FDS || m.count != n_fds ||
		    len != CHANNEL_HEADER + (size_t)m.count)
			return -EBADMSG;
		memcpy(m.listener, p + CHANNEL_HEADER, m.count);
		for (size_t i = 0; i < m.count; i++)
			if (m.listener[i] >= n_listeners)
				return -EBADMSG;
		break;
	case CHANNEL_DRAIN:
	case CHANNEL_CLOSED:
	case CHANNEL_READY:
		if (m.count != 0 || n_fds != 0 || len != CHANNEL_HEADER)
			return -EBADMSG;
		break;
	default:
		return -EBADMSG;
	}
	*ret = m;
	return 0;
}

/*
 * Receive and decode one message.  Returns 1 with a message (fds filled for
 * CHANNEL_FDS), 0 at end of file, or -errno; a malformed message has its fds
 * closed and is -EBADMSG.
 */
int
channel_recv(int fd, size_t n_listeners, struct channel_msg *ret_msg, int *fds)
{
	uint8_t buf[CHANNEL_HEADER + CHANNEL_MAX_FDS];
	size_t n_fds = 0;
	ssize_t n;
	int r;

	n = fdpass_recv(fd, buf, sizeof(buf), fds, CHANNEL_MAX_FDS, &n_fds);
	if (n < 0)
		return (int)n;
	if (n == 0 && n_fds == 0)
		return 0;
	r = channel_decode(buf, (size_t)n, n_fds, n_listeners, ret_msg);
	if (r < 0) {
		close_many(fds, n_fds);
		return r;
	}
	return 1;
}
