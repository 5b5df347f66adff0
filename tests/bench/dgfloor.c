/* SPDX-License-Identifier: MIT */
/*
 * dgfloor: the smallest honest datagram echo server, the kernel's floor for
 * udsd's dgram listeners.  "dgfloor PATH [NPROC]" binds a SOCK_DGRAM socket
 * at PATH, forks NPROC processes that all read it, and sends each datagram
 * back to its sender with one blocking recvfrom() and one sendto(): no
 * epoll, no credentials, no size check, nothing udsd does on the way.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "die-with.h"

static void
serve(int fd)
{
	static char buf[65536];
	struct sockaddr_un from;

	for (;;) {
		socklen_t len = sizeof(from);
		ssize_t n = recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &len);
		if (n >= 0 && len > sizeof(sa_family_t))
			(void)sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&from, len);
	}
}

int
main(int argc, char **argv)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int n = argc > 2 ? atoi(argv[2]) : 1;
	pid_t parent = getpid();

	if (argc < 2 || strlen(argv[1]) >= sizeof(sa.sun_path))
		return 2;
	strcpy(sa.sun_path, argv[1]);
	unlink(argv[1]);
	int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return 1;
	for (int i = 1; i < n; i++)
		if (fork() == 0) {
			die_with(parent);
			serve(fd);
		}
	serve(fd);
}
