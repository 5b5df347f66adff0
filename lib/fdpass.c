/* SPDX-License-Identifier: MIT */
#include <string.h>
#include <sys/socket.h>

#include "fd-util.h"
#include "fdpass.h"

/* A control buffer big enough and aligned for the largest batch. */
union fdpass_control {
	struct cmsghdr align;
	char buf[CMSG_SPACE(sizeof(int) * FDPASS_MAX_FDS)];
};

ssize_t
udsd_fdpass_send(int sock, const void *buf, size_t len, const int *fds, size_t n_fds)
{
	union fdpass_control control;
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	ssize_t n;

	if (n_fds > FDPASS_MAX_FDS)
		return -EINVAL;
	if (n_fds > 0) {
		memset(&control, 0, sizeof(control));
		mh.msg_control = control.buf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * n_fds);
		struct cmsghdr *cmsg = CMSG_FIRSTHDR(&mh);
		cmsg->cmsg_level = SOL_SOCKET;
		cmsg->cmsg_type = SCM_RIGHTS;
		cmsg->cmsg_len = CMSG_LEN(sizeof(int) * n_fds);
		memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * n_fds);
	}
	do
		n = sendmsg(sock, &mh, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	return n < 0 ? negative_errno() : n;
}

/*
 * Collect the descriptors of every SCM_RIGHTS message into fds.  Anything
 * unexpected (another control type, more than fit) makes the whole message
 * invalid; the caller then closes what was collected.
 */
static int
fdpass_collect(struct msghdr *mh, int *fds, size_t max_fds, size_t *ret_n_fds)
{
	size_t n = 0;
	int r = 0;

	for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS ||
		    c->cmsg_len < CMSG_LEN(0)) {
			r = -EBADMSG;
			continue;
		}
		size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < k; i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			if (n < max_fds)
				fds[n++] = fd;
			else {
				safe_close(fd);
				r = -EXFULL;
			}
		}
	}
	*ret_n_fds = n;
	return r;
}

ssize_t
udsd_fdpass_recv(int sock, void *buf, size_t len, int *fds, size_t max_fds, size_t *ret_n_fds)
{
	union fdpass_control control;
	struct iovec iov = { .iov_base = buf, .iov_len = len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	size_t n_fds = 0;
	ssize_t n;
	int r;

	if (max_fds > FDPASS_MAX_FDS)
		max_fds = FDPASS_MAX_FDS;
	if (max_fds > 0) {
		mh.msg_control = control.buf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * max_fds);
	}
	do
		n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return negative_errno();

	r = fdpass_collect(&mh, fds, max_fds, &n_fds);
	if (r == 0 && (mh.msg_flags & MSG_CTRUNC))
		r = -EXFULL;
	if (r == 0 && (mh.msg_flags & MSG_TRUNC))
		r = -EMSGSIZE;
	if (r < 0) {
		close_many(fds, n_fds);
		return r;
	}
	*ret_n_fds = n_fds;
	return n;
}
