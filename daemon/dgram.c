/* SPDX-License-Identifier: MIT */
#include <stddef.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "daemon.h"
#include "fd-util.h"

/*
 * A dgram listener in a worker thread.  Nothing is accepted, so there is no
 * client to hand over: the master binds the socket and passes it once to
 * every thread of the listener's pool (channel_send_dgram()), and whichever
 * thread reads a datagram serves it.  Each thread polls the socket with EPOLLEXCLUSIVE, so that one
 * datagram wakes one sleeping thread, not all of them.  The master never
 * reads a datagram, so the admission it makes at accept() for connections
 * (the allow-lists) is made here, per datagram, before the service sees it.
 */

/* Datagrams per readiness event, so that a busy socket cannot starve connections. */
#define DGRAM_BATCH 64
/*
 * At drain, what waits in the socket is served first, up to this many per
 * thread: at a reload the new generation already reads too, and at a stop
 * senders that keep sending must not hold the worker forever.  A Unix
 * datagram queue holds net.unix.max_dgram_qlen datagrams (10 by default,
 * 512 under systemd).
 */
#define DGRAM_DRAIN_MAX 1024

/* The epoll tags of the listeners' sockets: &dgram_tags[i] is listener i. */
char dgram_tags[CONFIG_MAX_LISTENERS];

struct udsd_dgram {
	struct wthread *thread;
	int sock;
	void *state;
	bool has_cred;
	struct ucred cred;
	struct sockaddr_un addr;
	socklen_t addr_len;
	int *fds;
	size_t n_fds;
};

/* What one recvmsg() brought: the sender's credentials and descriptors. */
union dgram_control {
	struct cmsghdr align;
	char buf[CMSG_SPACE(sizeof(struct ucred)) + CMSG_SPACE(sizeof(int) * FDPASS_MAX_FDS)];
};

/* Before anything else in a new thread: no socket yet, and a buffer for the largest datagram. */
int
dgram_thread_setup(struct wthread *t)
{
	const struct config *c = t->spec->config;
	uint64_t max = 0;

	for (size_t i = 0; i < ELEMENTSOF(t->dgram); i++)
		t->dgram[i] = -EBADF;
	for (size_t i = 0; i < c->n_listeners; i++)
		if (c->listeners[i].type == SOCK_DGRAM && c->listeners[i].pool == t->spec->pool_index) {
			t->dgram_wanted++;
			max = MAX(max, c->listeners[i].max_datagram);
		}
	if (max > sizeof(t->ibuf) && !(t->dgram_buf = malloc(max)))
		return -ENOMEM;
	return 0;
}

/* The master's copy of listener's socket arrived (CHANNEL_DGRAM): ours now, fd is taken. */
int
dgram_thread_add(struct wthread *t, int fd, unsigned listener)
{
	const struct config *c = t->spec->config;
	struct epoll_event ev = { .events = EPOLLIN | EPOLLEXCLUSIVE,
				  .data.ptr = &dgram_tags[listener] };

	if (listener >= c->n_listeners || c->listeners[listener].type != SOCK_DGRAM ||
	    c->listeners[listener].pool != t->spec->pool_index || t->dgram[listener] >= 0) {
		safe_close(fd);
		return -EBADMSG;
	}
	if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		int r = negative_errno();
		safe_close(fd);
		return r;
	}
	t->dgram[listener] = fd;
	return 0;
}

/* Every dgram listener's socket is here: the thread may say READY. */
bool
dgram_thread_has_all(const struct wthread *t)
{
	unsigned n = 0;

	for (size_t i = 0; i < t->spec->config->n_listeners; i++)
		n += t->dgram[i] >= 0;
	return n == t->dgram_wanted;
}

/* The sender must be on the allow-lists; without credentials to check, it is not. */
static bool
dgram_admitted(const struct config_listener *cl, const struct udsd_dgram *d)
{
	if (cl->n_allow_uids == 0 && cl->n_allow_gids == 0)
		return true;
	/* pid 0: none attached (queued before SO_PASSCRED), or from a pid namespace we cannot see. */
	if (!d->has_cred || d->cred.pid == 0)
		return false;
	return config_listener_admits(cl, d->cred.uid, d->cred.gid, NULL, 0);
}

/* The credentials and descriptors of one datagram; descriptors beyond room are closed. */
static void
dgram_collect(struct msghdr *mh, struct udsd_dgram *d, int *fds)
{
	for (struct cmsghdr *m = CMSG_FIRSTHDR(mh); m; m = CMSG_NXTHDR(mh, m)) {
		if (m->cmsg_level != SOL_SOCKET)
			continue;
		if (m->cmsg_type == SCM_CREDENTIALS && m->cmsg_len == CMSG_LEN(sizeof(d->cred))) {
			memcpy(&d->cred, CMSG_DATA(m), sizeof(d->cred));
			d->has_cred = true;
		}
		if (m->cmsg_type != SCM_RIGHTS || m->cmsg_len < CMSG_LEN(0))
			continue;
		for (size_t i = 0; i < (m->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(m) + i * sizeof(int), sizeof(int));
			if (d->n_fds < FDPASS_MAX_FDS)
				fds[d->n_fds++] = fd;
			else
				safe_close(fd);
		}
	}
}

/* A dropped datagram: counted always, logged at most once a second per thread. */
static void
dgram_drop(struct wthread *t, unsigned listener, _Atomic uint64_t *counter, const char *why,
	   const struct udsd_dgram *d, size_t len)
{
	static __thread uint64_t logged_at;

	atomic_fetch_add_explicit(counter, 1, memory_order_relaxed);
	if (logged_at && t->now - logged_at < USEC_PER_SEC)
		return;
	logged_at = t->now;
	log_with(LOG_WARNING,
		 &(struct log_fields){ .listener = t->spec->config->listeners[listener].name,
				       .peer_uid = d->has_cred ? &d->cred.uid : NULL },
		 "listener %s: dropped a datagram of %zu bytes from pid=%d uid=%u gid=%u: %s",
		 t->spec->config->listeners[listener].name, len, d->has_cred ? (int)d->cred.pid : 0,
		 d->has_cred ? (unsigned)d->cred.uid : 0, d->has_cred ? (unsigned)d->cred.gid : 0,
		 why);
}

/* One datagram, read and served or dropped.  -EAGAIN once the socket is empty. */
static int
dgram_serve_one(struct wthread *t, unsigned listener)
{
	const struct config_listener *cl = &t->spec->config->listeners[listener];
	const struct service *s = &t->spec->services[listener];
	struct status_dgram *st = &t->stats->dgram;
	uint8_t *buf = t->dgram_buf ? t->dgram_buf : t->ibuf;
	union dgram_control control;
	int fds[FDPASS_MAX_FDS];
	struct udsd_dgram d = { .thread = t, .sock = t->dgram[listener], .state = t->state[listener],
				.fds = fds };
	struct iovec iov = { .iov_base = buf, .iov_len = cl->max_datagram };
	struct msghdr mh = { .msg_name = &d.addr, .msg_namelen = sizeof(d.addr), .msg_iov = &iov,
			     .msg_iovlen = 1, .msg_control = control.buf,
			     .msg_controllen = sizeof(control.buf) };
	ssize_t n;

	/* MSG_TRUNC: the datagram's real length, so that a larger one is seen, not cut. */
	do
		n = recvmsg(d.sock, &mh, MSG_TRUNC | MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return negative_errno();
	d.addr_len = mh.msg_namelen;
	dgram_collect(&mh, &d, fds);
	/* Not asked for (the kernel refuses them already where it has SO_PASSRIGHTS). */
	if (!(s->flags & UDSD_SERVICE_RECV_FDS)) {
		close_many(fds, d.n_fds);
		d.n_fds = 0;
	}
	atomic_fetch_add_explicit(&st->received, 1, memory_order_relaxed);
	if (mh.msg_flags & MSG_CTRUNC)
		dgram_drop(t, listener, &st->truncated, "its descriptors did not all arrive", &d,
			   (size_t)n);
	else if ((size_t)n > cl->max_datagram)
		dgram_drop(t, listener, &st->oversize, "larger than max_datagram", &d, (size_t)n);
	else if (!dgram_admitted(cl, &d))
		dgram_drop(t, listener, &st->refused, "not allowed", &d, (size_t)n);
	else if (s->ops->on_datagram(&d, buf, (size_t)n) < 0)
		atomic_fetch_add_explicit(&st->failed, 1, memory_order_relaxed);
	close_many(fds, d.n_fds);
	return 0;
}

/* The socket of a dgram listener is readable: serve a batch; epoll says if more wait. */
void
dgram_event(struct wthread *t, const void *tag)
{
	unsigned listener = (unsigned)((const char *)tag - dgram_tags);

	for (unsigned i = 0; i < DGRAM_BATCH && t->dgram[listener] >= 0; i++) {
		int r = dgram_serve_one(t, listener);
		if (r == -EAGAIN)
			return;
		if (r < 0) {
			log_error("listener %s: reading a datagram: %s",
				  t->spec->config->listeners[listener].name, strerror(-r));
			return;
		}
	}
}

/*
 * Let go of the sockets.  Explicitly out of the epoll set first: the master
 * and other threads hold the same socket, and epoll forgets it only when the
 * last copy closes.
 */
static void
dgram_close_all(struct wthread *t)
{
	for (size_t i = 0; i < ELEMENTSOF(t->dgram); i++) {
		if (t->dgram[i] < 0)
			continue;
		epoll_ctl(t->epfd, EPOLL_CTL_DEL, t->dgram[i], NULL);
		t->dgram[i] = safe_close(t->dgram[i]);
	}
}

/*
 * CHANNEL_DRAIN: serve what already waits, then stop reading.  At a reload the
 * master sends it only once the new generation holds the sockets and is
 * READY, so a datagram always has a reader; a worker with nothing else to do
 * is done at once.
 */
void
dgram_thread_drain(struct wthread *t)
{
	for (size_t i = 0; i < t->spec->config->n_listeners; i++)
		for (unsigned k = 0; k < DGRAM_DRAIN_MAX && t->dgram[i] >= 0; k++)
			if (dgram_serve_one(t, (unsigned)i) < 0)
				break;
	dgram_close_all(t);
}

void
dgram_thread_teardown(struct wthread *t)
{
	dgram_close_all(t);
	free(t->dgram_buf);
	t->dgram_buf = NULL;
}

int
udsd_dgram_sender(const struct udsd_dgram *d, pid_t *ret_pid, uid_t *ret_uid, gid_t *ret_gid)
{
	if (!d->has_cred)
		return -ENODATA;
	if (ret_pid)
		*ret_pid = d->cred.pid;
	if (ret_uid)
		*ret_uid = d->cred.uid;
	if (ret_gid)
		*ret_gid = d->cred.gid;
	return 0;
}

int
udsd_dgram_address(const struct udsd_dgram *d, const struct sockaddr_un **ret_addr,
		   socklen_t *ret_len)
{
	if (d->addr_len <= offsetof(struct sockaddr_un, sun_path))
		return -EDESTADDRREQ;
	if (ret_addr)
		*ret_addr = &d->addr;
	if (ret_len)
		*ret_len = d->addr_len;
	return 0;
}

/* From the listener's own socket, so the sender sees the reply come from where it sent. */
int
udsd_dgram_reply(struct udsd_dgram *d, const void *data, size_t len)
{
	struct status_dgram *st = &d->thread->stats->dgram;
	ssize_t n = 0;
	int r = 0;

	if (d->addr_len <= offsetof(struct sockaddr_un, sun_path))
		r = -EDESTADDRREQ;
	else {
		do
			n = sendto(d->sock, data, len, MSG_DONTWAIT | MSG_NOSIGNAL,
				   (const struct sockaddr *)&d->addr, d->addr_len);
		while (n < 0 && errno == EINTR);
		if (n < 0)
			r = negative_errno();
	}
	atomic_fetch_add_explicit(r < 0 ? &st->replies_dropped : &st->replies, 1,
				  memory_order_relaxed);
	return r;
}

size_t
udsd_dgram_n_fds(const struct udsd_dgram *d)
{
	return d->n_fds;
}

int
udsd_dgram_take_fd(struct udsd_dgram *d, size_t i)
{
	if (i >= d->n_fds || d->fds[i] < 0)
		return -EBADF;
	return TAKE_FD(d->fds[i]);
}

int
udsd_dgram_fd(const struct udsd_dgram *d, size_t i)
{
	if (i >= d->n_fds || d->fds[i] < 0)
		return -EBADF;
	return d->fds[i];
}

void *
udsd_dgram_state(const struct udsd_dgram *d)
{
	return d->state;
}
