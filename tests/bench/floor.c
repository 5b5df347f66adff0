/* SPDX-License-Identifier: MIT */
/*
 * floor: the smallest honest epoll echo server, the kernel's floor with no
 * hand-off.  "floor PATH [NPROC]" binds PATH, forks NPROC processes that all
 * accept on the same listener (EPOLLEXCLUSIVE), and echoes until EOF.
 * Partial writes are simply retried in a loop: fine for a benchmark peer.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "die-with.h"

static void
serve(int lfd)
{
	int ep = epoll_create1(0);
	struct epoll_event ev = { .events = EPOLLIN | EPOLLEXCLUSIVE, .data.fd = lfd }, evs[256];
	static char buf[65536];

	epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
	for (;;) {
		int n = epoll_wait(ep, evs, 256, -1);
		for (int i = 0; i < n; i++) {
			int fd = evs[i].data.fd;
			if (fd == lfd) {
				int c;
				while ((c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
					struct epoll_event cev = { .events = EPOLLIN, .data.fd = c };
					epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
				}
				continue;
			}
			ssize_t r = read(fd, buf, sizeof(buf));
			if (r < 0 && errno == EAGAIN)
				continue;
			if (r <= 0) {
				close(fd);
				continue;
			}
			for (ssize_t off = 0; off < r;) {
				ssize_t w = send(fd, buf + off, (size_t)(r - off), MSG_NOSIGNAL);
				if (w < 0 && errno == EAGAIN)
					continue; /* spin: a peer that does not read is not in the bench */
				if (w < 0)
					break;
				off += w;
			}
		}
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
	int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 4096) < 0)
		return 1;
	for (int i = 1; i < n; i++)
		if (fork() == 0) {
			die_with(parent);
			serve(lfd);
		}
	serve(lfd);
}
