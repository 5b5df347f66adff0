/* SPDX-License-Identifier: MIT */
/*
 * handoff-floor: what the kernel charges for handing a connection over,
 * with nothing else.  "handoff-floor PATH [NWORKERS]" binds PATH; one process
 * accepts every client and passes it to one of NWORKERS worker processes
 * (round robin) with sendmsg(SCM_RIGHTS) over a SOCK_SEQPACKET socketpair,
 * one message per accept batch, then closes its copies.  Each worker
 * receives the fds and echoes until EOF, as floor.c does; like udsd, it reads a
 * new client at once, since its request is usually there already.
 *
 * No admission, no load counting, no deadlines: the cost of accept ->
 * sendmsg -> recvmsg -> close over floor-2p's is the hand-off's own, and
 * udsd's cost over this is udsd's.
 *
 * "handoff-floor PATH N uring" accepts and hands over with io_uring instead
 * (built with -DHAVE_LIBURING -luring): a multishot accept, and per batch
 * each worker's sendmsg linked to the closes of our copies, all submitted
 * with the wait for the next accepts in one io_uring_enter().
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "die-with.h"
#ifdef HAVE_LIBURING
#include <liburing.h>
#endif

#define MAX_FDS 64 /* per message: the accept batch */

/* One message: a byte and n fds.  It lives until the send completes (io_uring). */
struct batch {
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * MAX_FDS)];
	} control;
	char byte;
	struct iovec iov;
	struct msghdr mh;
};

static int *
batch_init(struct batch *b, int n)
{
	b->iov = (struct iovec){ .iov_base = &b->byte, .iov_len = 1 };
	b->mh = (struct msghdr){ .msg_iov = &b->iov, .msg_iovlen = 1, .msg_control = b->control.buf,
				 .msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)n) };
	struct cmsghdr *c = CMSG_FIRSTHDR(&b->mh);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)n);
	return (int *)(void *)CMSG_DATA(c);
}

static void
send_fds(int chan, const int *fds, int n)
{
	struct batch b;

	memcpy(batch_init(&b, n), fds, sizeof(int) * (size_t)n);
	(void)sendmsg(chan, &b.mh, MSG_NOSIGNAL); /* a full channel loses clients: not in the bench */
	for (int i = 0; i < n; i++)
		close(fds[i]);
}

static void
acceptor(int lfd, const int *chans, int nchans)
{
	int ep = epoll_create1(0), next = 0;
	struct epoll_event ev = { .events = EPOLLIN, .data.fd = lfd }, evs[8];

	epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
	for (;;) {
		if (epoll_wait(ep, evs, 8, -1) <= 0)
			continue;
		int fds[MAX_FDS], n = 0, c;
		while (n < MAX_FDS && (c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0)
			fds[n++] = c;
		/* One message per batch and worker, as udsd sends one per round and thread. */
		for (int w = 0; w < nchans && n > 0; w++) {
			int mine[MAX_FDS], k = 0;
			for (int i = (next + w) % nchans; i < n; i += nchans)
				mine[k++] = fds[i];
			if (k)
				send_fds(chans[(next + w) % nchans], mine, k);
		}
		next = (next + n) % nchans;
	}
}

#ifdef HAVE_LIBURING
static void
accept_prep(struct io_uring *ring, int lfd)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(ring);

	io_uring_prep_multishot_accept(sqe, lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	io_uring_sqe_set_data64(sqe, 1);
}

/* The acceptor on io_uring: what it took this round leaves with the next wait. */
static void
acceptor_uring(int lfd, const int *chans, int nchans)
{
	struct io_uring ring;
	struct io_uring_params p = { .flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN };
	static struct batch batches[2][16]; /* two rounds: last round's may still be in use */
	int round = 0, next = 0;

	if (io_uring_queue_init_params(4 * MAX_FDS, &ring, &p) < 0)
		_exit(1);
	accept_prep(&ring, lfd);
	for (;;) {
		struct io_uring_cqe *cqe;
		unsigned head, seen = 0;
		int fds[MAX_FDS], n = 0;

		io_uring_submit_and_wait(&ring, 1);
		io_uring_for_each_cqe(&ring, head, cqe) {
			seen++;
			if (cqe->user_data != 1)
				continue; /* a failed send or close: not in the bench */
			if (cqe->res >= 0 && n < MAX_FDS)
				fds[n++] = cqe->res;
			if (!(cqe->flags & IORING_CQE_F_MORE))
				accept_prep(&ring, lfd);
		}
		io_uring_cq_advance(&ring, seen);
		round ^= 1;
		for (int w = 0; w < nchans && n > 0; w++) {
			int ch = (next + w) % nchans, k = 0, mine[MAX_FDS];
			for (int i = w; i < n; i += nchans)
				mine[k++] = fds[i];
			if (!k)
				continue;
			struct batch *b = &batches[round][ch];
			memcpy(batch_init(b, k), mine, sizeof(int) * (size_t)k);
			struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
			io_uring_prep_sendmsg(sqe, chans[ch], &b->mh, MSG_NOSIGNAL);
			sqe->flags |= IOSQE_IO_LINK | IOSQE_CQE_SKIP_SUCCESS;
			for (int i = 0; i < k; i++) {
				sqe = io_uring_get_sqe(&ring);
				io_uring_prep_close(sqe, mine[i]);
				sqe->flags |= IOSQE_CQE_SKIP_SUCCESS | (i + 1 < k ? IOSQE_IO_LINK : 0);
			}
		}
		next = (next + n) % nchans;
	}
}
#endif

static char buf[65536];
static int worker_ep;

/* Echo what there is; close at EOF. */
static void
serve(int fd)
{
	ssize_t r = read(fd, buf, sizeof(buf));

	if (r < 0 && errno == EAGAIN)
		return;
	if (r <= 0) {
		/* As udsd does; measured a little cheaper than letting close() drop it. */
		epoll_ctl(worker_ep, EPOLL_CTL_DEL, fd, NULL);
		close(fd);
		return;
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

static void
receive(int ep, int chan)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * MAX_FDS)];
	} control;
	char byte;
	struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
			     .msg_controllen = sizeof(control.buf) };

	if (recvmsg(chan, &mh, MSG_CMSG_CLOEXEC) <= 0) {
		if (errno != EAGAIN)
			_exit(0); /* the acceptor is gone */
		return;
	}
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < n; i++) {
			struct epoll_event cev = { .events = EPOLLIN };
			memcpy(&cev.data.fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			epoll_ctl(ep, EPOLL_CTL_ADD, cev.data.fd, &cev);
			serve(cev.data.fd);
		}
	}
}

static void
worker(int chan)
{
	int ep = epoll_create1(0);
	struct epoll_event ev = { .events = EPOLLIN, .data.fd = chan }, evs[256];

	worker_ep = ep;
	epoll_ctl(ep, EPOLL_CTL_ADD, chan, &ev);
	for (;;) {
		int n = epoll_wait(ep, evs, 256, -1);
		for (int i = 0; i < n; i++) {
			if (evs[i].data.fd == chan)
				receive(ep, chan);
			else
				serve(evs[i].data.fd);
		}
	}
}

int
main(int argc, char **argv)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int n = argc > 2 ? atoi(argv[2]) : 2, chans[16];
	pid_t parent = getpid();

	if (argc < 2 || strlen(argv[1]) >= sizeof(sa.sun_path) || n < 1 || n > 16)
		return 2;
	strcpy(sa.sun_path, argv[1]);
	unlink(argv[1]);
	int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 4096) < 0)
		return 1;
	for (int i = 0; i < n; i++) {
		int sv[2];
		if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
			return 1;
		if (fork() == 0) {
			die_with(parent);
			close(lfd);
			close(sv[0]);
			worker(sv[1]);
		}
		close(sv[1]);
		chans[i] = sv[0];
	}
	if (argc > 3 && strcmp(argv[3], "uring") == 0) {
#ifdef HAVE_LIBURING
		acceptor_uring(lfd, chans, n);
#else
		return 2; /* built without liburing */
#endif
	}
	acceptor(lfd, chans, n);
}
