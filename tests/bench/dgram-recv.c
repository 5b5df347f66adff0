/* SPDX-License-Identifier: MIT */
/*
 * dgram-recv: what it costs to see a datagram larger than max_datagram
 * without cutting it, three ways, in CPU time per datagram (rusage, so
 * other load on the machine does not count):
 *
 *   trunc  recvmsg(MSG_TRUNC) into max bytes: the real length comes back
 *          (what udsd does: daemon/dgram.c)
 *   plus1  recvmsg() into max + 1 bytes: more than max came means too large
 *   peek   recv(MSG_PEEK | MSG_TRUNC) of 0 bytes for the length, then recvmsg()
 *
 * Each with SO_PASSCRED on and a control buffer for credentials, as in udsd;
 * the figure is one send() and one receive, so the differences are the cost.
 *   cc -O2 -o dgram-recv tests/bench/dgram-recv.c && ./dgram-recv [SIZE] [COUNT]
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX 65536
/* Under net.unix.max_dgram_qlen (10 by default), and within the send buffer (208 KiB). */
#define BATCH(size) ((size) > 16384 ? 1 : 8)

static char buf[MAX + 1];

static double
cpu_us(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

static ssize_t
receive(int fd, const char *how)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(struct ucred))];
	} control;
	struct iovec iov = { buf, MAX };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
			     .msg_controllen = sizeof(control.buf) };
	int flags = 0;

	if (strcmp(how, "trunc") == 0)
		flags = MSG_TRUNC;
	else if (strcmp(how, "plus1") == 0)
		iov.iov_len = MAX + 1;
	else if (recv(fd, NULL, 0, MSG_PEEK | MSG_TRUNC) < 0)
		return -1;
	return recvmsg(fd, &mh, flags);
}

int
main(int argc, char **argv)
{
	size_t size = argc > 1 ? (size_t)atol(argv[1]) : 64;
	long count = argc > 2 ? atol(argv[2]) : 200000;
	static const char *const hows[] = { "trunc", "plus1", "peek" };
	static char out[MAX];
	int sv[2], one = 1;

	if (size > MAX || socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) < 0 ||
	    setsockopt(sv[1], SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) < 0)
		return 1;
	for (size_t h = 0; h < 3; h++) {
		double t0 = cpu_us();
		for (long i = 0; i < count; i += BATCH(size)) {
			for (int k = 0; k < BATCH(size); k++)
				if (send(sv[0], out, size, 0) != (ssize_t)size)
					return 1;
			for (int k = 0; k < BATCH(size); k++)
				if (receive(sv[1], hows[h]) != (ssize_t)size)
					return 1;
		}
		printf("%-6s %5zu-byte datagrams: %.3f us CPU per send + receive\n", hows[h], size,
		       (cpu_us() - t0) / (double)count);
	}
	return 0;
}
