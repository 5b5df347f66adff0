/* SPDX-License-Identifier: MIT */
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include "daemon.h"
#include "fd-util.h"

/*
 * Stop reading a client once this much output waits for it: a client that
 * sends but never reads cannot grow the worker's memory without bound.
 */
#define OUT_HIGH_WATER (256 * 1024)
/* A service that consumes nothing from this much input is broken or attacked. */
#define IN_MAX (1024 * 1024)
/* Writes this large skip the cork and go straight to the socket. */
#define DIRECT_WRITE_MIN (16 * 1024)
/* Reads per readiness event, so one busy client cannot starve the others. */
#define READS_PER_EVENT 4
/*
 * Closing on a client that is still sending makes the kernel answer with a
 * reset, which can destroy the reply (an HTTP 431, say) before the client
 * reads it.  So, like nginx's lingering close, shut down our side and
 * discard what still arrives, for a while and up to a limit.
 */
#define LINGER_USEC (2 * USEC_PER_SEC)
#define LINGER_MAX (4 * 1024 * 1024)
/*
 * Connection structs a thread keeps for reuse.  A connect-echo-close client
 * cost a calloc() and a free() each, a third of the worker's instructions
 * per connection (callgrind); a short LIFO of spares makes it a pop and a
 * push, and idle memory stays bounded.
 */
#define CONN_SPARE_MAX 64
#ifdef __SANITIZE_ADDRESS__
#define CONN_SPARES false /* AddressSanitizer sees a use after the reap only in freed memory */
#else
#define CONN_SPARES true
#endif

/*
 * Around every service callback: the master reads when the thread's current
 * callback began (request_timeout), and the thread's stuck handler which
 * connection and callback it was in.  Relaxed stores to the thread's own
 * cache line: no fence on the request path.
 */
static void
callback_begin(struct udsd_conn *c, const char *name)
{
	struct wthread *t = c->thread;

	c->in_callback = true;
	c->sent_in_callback = false;
	t->current = c;
	t->current_callback = name;
	atomic_store_explicit(&t->stats->busy_listener, c->listener, memory_order_relaxed);
	atomic_store_explicit(&t->stats->busy_since, t->now, memory_order_relaxed);
}

/*
 * The thread's clock moves on with the callback: the next callback of the
 * round is stamped when it begins, not when the round began (five
 * one-second callbacks in a round made the fifth look five seconds old,
 * stuck past request_timeout), and deadlines set after it count from now.
 * A callback that returned is progress: the heartbeat says so, or a long
 * round of callbacks that each kept within request_timeout looked hung to
 * the master whenever it looked between two of them (check_hung()).
 */
static void
callback_end(struct udsd_conn *c)
{
	struct wthread *t = c->thread;

	t->now = now_usec();
	atomic_store_explicit(&t->stats->heartbeat_usec, t->now, memory_order_relaxed);
	/* Release: a master that sees it cleared sees the heartbeat above too. */
	atomic_store_explicit(&t->stats->busy_since, 0, memory_order_release);
	t->current = NULL;
	c->in_callback = false;
}

static int
grow(uint8_t **buf, size_t *cap, size_t need)
{
	if (need <= *cap)
		return 0;
	size_t ncap = MAX(need, *cap * 2);
	ncap = MAX(ncap, 4096);
	uint8_t *n = realloc(*buf, ncap);
	if (!n)
		return -ENOMEM;
	*buf = n;
	*cap = ncap;
	return 0;
}

static uint64_t
conn_timeout_usec(const struct udsd_conn *c)
{
	if (c->timeout_usec)
		return c->timeout_usec;
	return c->thread->spec->config->listeners[c->listener].idle_timeout_usec;
}

static void
conn_touch(struct udsd_conn *c)
{
	uint64_t t = conn_timeout_usec(c);

	c->deadline = t ? c->thread->now + t : 0;
}

static bool
conn_queued(const struct udsd_conn *c)
{
	return c->out_len > c->out_off;
}

/* Output already queued on the connection is over the mark (the cork aside). */
static bool
conn_over_mark(const struct udsd_conn *c)
{
	return c->out_len - c->out_off >= OUT_HIGH_WATER;
}

static void
conn_update_events(struct udsd_conn *c)
{
	uint32_t want = 0;

	if (c->lingering || (!c->closing && !c->eof && !conn_over_mark(c)))
		want |= EPOLLIN;
	/* Stalled input waits for writability, even with nothing queued: the socket took it all. */
	if (conn_queued(c) || c->stalled)
		want |= EPOLLOUT;
	if (want == c->events)
		return;
	struct epoll_event ev = { .events = want, .data.ptr = c };
	if (epoll_ctl(c->thread->epfd, EPOLL_CTL_MOD, c->fd, &ev) == 0)
		c->events = want;
	else
		c->dead = true;
}

/* A client the master counts for max_connections_per_uid: tell it whose it was. */
static void
conn_gone(struct udsd_conn *c)
{
	struct wthread *t = c->thread;
	struct ucred cred;
	socklen_t len = sizeof(cred);

	if (getsockopt(c->fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return;
	if (t->n_gone == t->cap_gone) {
		size_t cap = MAX(16, 2 * t->cap_gone);
		void *g = realloc(t->gone, cap * sizeof(*t->gone));
		if (!g)
			return;
		t->gone = g;
		t->cap_gone = cap;
	}
	t->gone[t->n_gone].listener = c->listener;
	t->gone[t->n_gone++].uid = cred.uid;
}

/*
 * Take c out of the thread: on_close, out of epoll and the list, counted as
 * closed (for the master's load count too).  Its memory stays until the
 * round ends (conn_reap): later events of the same epoll_wait() batch may
 * point at it, and so may a list walk in progress (drain, tick).  Its next
 * pointer stays as it was, so such a walk goes on; conn_event() ignores it.
 */
static void
conn_detach(struct udsd_conn *c)
{
	struct wthread *t = c->thread;

	c->closed = true;
	c->dead = true; /* on_close may still write: drop it */
	if (c->service->ops->on_close) {
		callback_begin(c, "on_close");
		c->service->ops->on_close(c);
		callback_end(c);
	}
	/*
	 * close() alone leaves the registration alive while another reference
	 * to the socket exists, and the master may not have closed its copy of a
	 * client yet when a fast worker is done with it: events would then
	 * arrive for a closed connection in later rounds too.  Remove it explicitly.
	 */
	epoll_ctl(t->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	/* Closed or moved, it leaves this worker's per-uid count. */
	if (t->spec->config->listeners[c->listener].max_per_uid)
		conn_gone(c);
	if (c->prev)
		c->prev->next = c->next;
	else
		t->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->next_closed = t->closed;
	t->closed = c;
	t->n_conns--;
	atomic_fetch_sub_explicit(&t->stats->open, 1, memory_order_relaxed);
	/* A service that counts no requests (echo) served one per client: max_requests counts it. */
	if (!c->counted)
		atomic_fetch_add_explicit(&t->stats->requests, 1, memory_order_relaxed);
	worker_client_done(t);
}

/* Close a connection at once; it is freed at the end of the round (conn_detach()). */
void
conn_close(struct udsd_conn *c)
{
	if (c->closed)
		return;
	conn_detach(c);
	c->fd = safe_close(c->fd);
}

/*
 * At a message boundary, where another worker can take the client over with
 * nothing lost: every byte udsd read was consumed and answered, every answer
 * left, the client still talks, and the service (can_migrate) agrees.  What
 * the client sent since is still in the kernel and travels with the fd.
 */
static bool
conn_at_boundary(struct udsd_conn *c)
{
	const struct udsd_service *ops = c->service->ops;
	bool ok;

	if (c->closed || c->dead || c->closing || c->eof || c->lingering || c->stalled ||
	    c->in_callback || c->in_len > 0 || conn_queued(c) || c->n_fds > 0 ||
	    !(ops->flags & UDSD_SERVICE_MIGRATE))
		return false;
	if (!ops->can_migrate)
		return true;
	callback_begin(c, "can_migrate");
	ok = ops->can_migrate(c);
	callback_end(c);
	return ok;
}

static bool
conn_migrating(const struct udsd_conn *c)
{
	return c->thread->draining && c->thread->migrate[c->listener];
}

/*
 * Hand c back to the master (reload, a retired worker) if it sits at a
 * message boundary: the fd joins the thread's batch, sent at the end of the
 * round (channel_thread_migrated()); for the master's load it counts as
 * closed here.  False if c stays.
 */
bool
conn_migrate(struct udsd_conn *c)
{
	struct wthread *t = c->thread;

	if (!conn_migrating(c) || !conn_at_boundary(c))
		return false;
	if (t->n_migrated == CHANNEL_MAX_FDS) {
		t->migrate_retry = true;
		return false;
	}
	conn_detach(c);
	t->migrated[t->n_migrated] = TAKE_FD(c->fd);
	t->migrated_listener[t->n_migrated] = c->listener;
	t->n_migrated++;
	return true;
}

/* End of a round: nothing refers to the connections closed during it any more. */
void
conn_reap(struct wthread *t)
{
	while (t->closed) {
		struct udsd_conn *c = t->closed;

		t->closed = c->next_closed;
		t->freed += c->in_cap + c->out_cap;
		free(c->in);
		free(c->out);
		if (CONN_SPARES && t->n_spare < CONN_SPARE_MAX) {
			c->next_closed = t->spare;
			t->spare = c;
			t->n_spare++;
		} else {
			free(c);
		}
	}
}

/* At the thread's end: the spares go back. */
void
conn_free_spares(struct wthread *t)
{
	while (t->spare) {
		struct udsd_conn *c = t->spare;

		t->spare = c->next_closed;
		free(c);
	}
	t->n_spare = 0;
}

/*
 * Send queued output; seqpacket output is queued as [u32 length][message].
 * Progress pushes the idle deadline back: a client that reads is not idle,
 * and one that takes nothing for a whole timeout is timed out even though
 * it keeps sending.
 */
static int
conn_flush(struct udsd_conn *c)
{
	size_t from = c->out_off;

	if (!conn_queued(c))
		return 0;
	while (c->out_off < c->out_len) {
		const uint8_t *p = c->out + c->out_off;
		size_t len = c->out_len - c->out_off, skip = 0;
		uint32_t mlen;

		if (c->seqpacket) {
			memcpy(&mlen, p, 4);
			p += 4;
			len = mlen;
			skip = 4;
		}
		ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				return negative_errno();
			if (c->out_off > from)
				conn_touch(c);
			return 0;
		}
		c->out_off += c->seqpacket ? skip + len : (size_t)n;
	}
	conn_touch(c);
	/*
	 * Empty.  Keep the buffer while the client is busy (a streaming client
	 * would otherwise cost a malloc and free per round); the tick frees it
	 * once the connection is quiet, so 10k idle clients cost no buffers.
	 */
	c->out_off = c->out_len = 0;
	return 0;
}

/* From the tick: a connection with nothing queued gives its buffers back. */
void
conn_trim(struct udsd_conn *c)
{
	if (c->out && c->out_len == 0) {
		c->thread->freed += c->out_cap;
		free(c->out);
		c->out = NULL;
		c->out_cap = 0;
	}
}

static int
queue_output(struct udsd_conn *c, const void *data, size_t len)
{
	size_t frame = c->seqpacket ? 4 : 0;

	/*
	 * Slide what is still queued to the front before growing: a client
	 * that keeps up only partly would otherwise push the buffer's end
	 * forward for as long as it streams.
	 */
	if (c->out_len + frame + len > c->out_cap && c->out_off > 0) {
		memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
		c->out_len -= c->out_off;
		c->out_off = 0;
	}
	if (grow(&c->out, &c->out_cap, c->out_len + frame + len) < 0)
		return -ENOMEM;
	if (frame) {
		uint32_t l = (uint32_t)len;
		memcpy(c->out + c->out_len, &l, 4);
	}
	memcpy(c->out + c->out_len + frame, data, len);
	c->out_len += frame + len;
	return 0;
}

/* Try the socket directly; returns how much it took, or -errno on a real error. */
static ssize_t
send_direct(struct udsd_conn *c, const void *data, size_t len)
{
	ssize_t n;

	do
		n = send(c->fd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == EAGAIN ? 0 : negative_errno();
	return n;
}

static int
cork(struct wthread *t, const void *data, size_t len)
{
	if (grow(&t->cork, &t->cork_cap, t->cork_len + len) < 0)
		return -ENOMEM;
	memcpy(t->cork + t->cork_len, data, len);
	t->cork_len += len;
	return 0;
}

/*
 * Small writes inside a callback are corked and leave in one send() after it;
 * large ones, and writes with nothing queued before them, go straight to the
 * socket; whatever the socket does not take is queued on the connection.
 */
int
udsd_conn_write(struct udsd_conn *c, const void *data, size_t len)
{
	struct wthread *t = c->thread;
	bool idle = c->out_len == c->out_off;

	/* On seqpacket an empty message is a message. */
	if (c->dead || (len == 0 && !c->seqpacket))
		return 0;
	if (!c->seqpacket && c->in_callback && idle && (t->cork_len > 0 || len < DIRECT_WRITE_MIN))
		return cork(t, data, len);
	if (idle) {
		ssize_t n = send_direct(c, data, len);
		c->sent_in_callback |= c->in_callback && n > 0;
		if (n < 0) {
			c->dead = true; /* the client went away; the event loop closes it */
			return 0;
		}
		if ((size_t)n == len)
			return 0;
		if (!c->seqpacket) {
			data = (const uint8_t *)data + n;
			len -= (size_t)n;
		}
	}
	if (queue_output(c, data, len) < 0)
		return -ENOMEM;
	if (!c->in_callback)
		conn_update_events(c);
	return 0;
}

/* After a callback: one send() for everything it wrote. */
static void
uncork(struct udsd_conn *c)
{
	struct wthread *t = c->thread;
	size_t off = 0;

	if (t->cork_len == 0)
		return;
	if (c->out_len == c->out_off && !c->dead) {
		ssize_t n = send_direct(c, t->cork, t->cork_len);
		if (n < 0)
			c->dead = true;
		else
			off = (size_t)n;
	}
	if (!c->dead && off < t->cork_len && queue_output(c, t->cork + off, t->cork_len - off) < 0)
		c->dead = true;
	t->cork_len = 0;
}

static void
close_untaken_fds(struct udsd_conn *c)
{
	close_many(c->fds, c->n_fds);
	c->fds = NULL;
	c->n_fds = 0;
}

/* Free the input buffer once it is empty: 10k idle clients hold none. */
static void
release_input(struct udsd_conn *c)
{
	if (c->in_len > 0 || c->in_cap == 0)
		return;
	c->thread->freed += c->in_cap;
	free(c->in);
	c->in = NULL;
	c->in_cap = 0;
}

/*
 * Hand bytes to the service and keep what it left.  data is either the
 * thread's read buffer or c->in itself.  A service that leaves bytes while
 * congested stopped for the client to read (udsd_conn_congested()), not for
 * more input: those bytes are stalled and handed over again, alone, once the
 * output drains (conn_resume).  Judged before uncork(), as the service saw it.
 */
static void
deliver(struct udsd_conn *c, const uint8_t *data, size_t len)
{
	ssize_t r;
	bool congested;

	callback_begin(c, "on_data");
	r = c->service->ops->on_data(c, data, len);
	congested = r >= 0 && (size_t)r < len && udsd_conn_congested(c);
	callback_end(c);
	/* Before the answer leaves: a client that has it may count on its fds being closed. */
	close_untaken_fds(c);
	uncork(c);
	if (r < 0 || (size_t)r > len) {
		c->closing = true;
		c->in_len = 0;
		release_input(c);
		return;
	}
	size_t left = len - (size_t)r;
	if (c->seqpacket || left == 0) {
		c->in_len = 0;
		release_input(c);
		return;
	}
	if (data == c->in) {
		memmove(c->in, c->in + r, left);
	} else if (grow(&c->in, &c->in_cap, left) == 0) {
		memcpy(c->in, data + r, left);
	} else {
		c->dead = true;
		return;
	}
	c->in_len = left;
	c->stalled = congested && !c->closing;
}

/*
 * recvmsg() on AF_UNIX SOCK_SEQPACKET returns 0 both for an empty message and
 * at the end of the stream, and sets no flag to tell them apart (no MSG_EOR;
 * checked on Linux 6.18).  With SO_PASSCRED, set at conn_open(), the kernel
 * attaches SCM_CREDENTIALS to every message received, even one queued before
 * the option was set, and nothing to the end of the stream.
 */
static ssize_t
conn_recv_message(struct udsd_conn *c, uint8_t *buf, size_t size, int *fds, bool *ret_eof)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(struct ucred)) + CMSG_SPACE(sizeof(int) * FDPASS_MAX_FDS)];
	} control;
	struct iovec iov = { .iov_base = buf, .iov_len = size };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
			     .msg_controllen = sizeof(control.buf) };
	bool message = false;
	size_t n_fds = 0;
	ssize_t n;

	do
		n = recvmsg(c->fd, &mh, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return negative_errno();
	for (struct cmsghdr *m = CMSG_FIRSTHDR(&mh); m; m = CMSG_NXTHDR(&mh, m)) {
		if (m->cmsg_level != SOL_SOCKET)
			continue;
		if (m->cmsg_type == SCM_CREDENTIALS)
			message = true;
		if (m->cmsg_type != SCM_RIGHTS || m->cmsg_len < CMSG_LEN(0))
			continue;
		for (size_t i = 0; i < (m->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(m) + i * sizeof(int), sizeof(int));
			if (n_fds < FDPASS_MAX_FDS)
				fds[n_fds++] = fd;
			else
				safe_close(fd);
		}
	}
	if (mh.msg_flags & (MSG_CTRUNC | MSG_TRUNC)) {
		close_many(fds, n_fds);
		return -EMSGSIZE;
	}
	c->fds = fds;
	c->n_fds = n_fds;
	*ret_eof = n == 0 && !message;
	return n;
}

/* One read: >= 0 bytes (*ret_eof at the end of the stream), -EAGAIN, or another -errno. */
static ssize_t
conn_recv(struct udsd_conn *c, uint8_t *buf, size_t size, bool *ret_eof)
{
	static __thread int fds[FDPASS_MAX_FDS];
	size_t n_fds = 0;
	ssize_t n;

	if (c->seqpacket)
		return conn_recv_message(c, buf, size, fds, ret_eof);
	if (c->service->ops->flags & UDSD_SERVICE_RECV_FDS) {
		n = fdpass_recv(c->fd, buf, size, fds, FDPASS_MAX_FDS, &n_fds);
		if (n >= 0) {
			c->fds = fds;
			c->n_fds = n_fds;
			*ret_eof = n == 0 && n_fds == 0;
		}
		return n;
	}
	do
		n = recv(c->fd, buf, size, 0);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return negative_errno();
	*ret_eof = n == 0;
	return n;
}

static void
conn_discard(struct udsd_conn *c)
{
	struct wthread *t = c->thread;

	for (;;) {
		ssize_t n = recv(c->fd, t->ibuf, sizeof(t->ibuf), MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n <= 0 || (c->lingered += (size_t)n) > LINGER_MAX) {
			c->dead = true;
			return;
		}
	}
}

/*
 * Unread input at close time: linger instead of resetting the client.  The
 * lingering lasts until the client closes, LINGER_MAX bytes or LINGER_USEC,
 * whichever comes first (conn_discard, conn_timeout).
 */
static bool
conn_linger(struct udsd_conn *c)
{
	int unread = 0;

	if (c->eof || c->dead)
		return false;
	/* A full last read means the client was mid-stream even if nothing is queued right now. */
	if (!c->read_full && (ioctl(c->fd, FIONREAD, &unread) < 0 || unread == 0))
		return false;
	if (shutdown(c->fd, SHUT_WR) < 0)
		return false;
	c->lingering = true;
	c->deadline = c->thread->now + LINGER_USEC;
	c->fixed_deadline = 0;
	return true;
}

/*
 * Output fell below the mark: hand the stalled input over again before
 * reading more.  False while the client still has not taken enough.
 */
static bool
conn_resume(struct udsd_conn *c)
{
	if (conn_queued(c) && conn_flush(c) < 0) {
		c->dead = true;
		return false;
	}
	if (conn_over_mark(c))
		return false;
	c->stalled = false;
	deliver(c, c->in, c->in_len);
	return !c->stalled;
}

/* Read into the thread's buffer, or after the input the service left. */
static void
conn_read_once(struct udsd_conn *c, bool *ret_more)
{
	struct wthread *t = c->thread;
	uint8_t *buf = t->ibuf;
	size_t size = sizeof(t->ibuf);
	bool eof = false;

	*ret_more = false;
	if (c->in_len > 0) {
		if (c->in_len >= IN_MAX ||
		    grow(&c->in, &c->in_cap, MIN(c->in_len + sizeof(t->ibuf), IN_MAX)) < 0) {
			c->dead = true;
			return;
		}
		buf = c->in + c->in_len;
		size = c->in_cap - c->in_len;
	}
	ssize_t n = conn_recv(c, buf, size, &eof);
	if (n == -EAGAIN)
		return;
	if (n < 0) {
		close_untaken_fds(c);
		c->dead = true;
		return;
	}
	if (eof) {
		c->eof = true;
		return;
	}
	/* While output waits, only the client taking it counts as activity (conn_flush). */
	if (!conn_queued(c))
		conn_touch(c);
	c->read_full = (size_t)n == size;
	if (buf == t->ibuf)
		deliver(c, buf, (size_t)n);
	else {
		c->in_len += (size_t)n;
		deliver(c, c->in, c->in_len);
	}
	/* A short stream read very likely emptied the socket: save the EAGAIN read. */
	*ret_more = c->seqpacket || (size_t)n == size;
}

static void
conn_readable(struct udsd_conn *c)
{
	bool more = true;

	if (c->lingering) {
		conn_discard(c);
		return;
	}
	if (c->stalled && !conn_resume(c))
		return;
	for (int i = 0; i < READS_PER_EVENT && more; i++) {
		if (c->dead || c->closing || c->eof || c->stalled || conn_over_mark(c))
			return;
		conn_read_once(c, &more);
	}
}

static void
conn_settle(struct udsd_conn *c)
{
	if (c->closed)
		return;
	if (!c->dead && conn_queued(c) && conn_flush(c) < 0)
		c->dead = true;
	if (c->dead) {
		conn_close(c);
		return;
	}
	/* At the end of the stream, stalled requests are still to be answered. */
	if (!c->lingering && (c->closing || (c->eof && !c->stalled)) && !conn_queued(c) &&
	    !conn_linger(c)) {
		conn_close(c);
		return;
	}
	if (conn_migrate(c))
		return;
	conn_update_events(c);
}

void
conn_event(struct udsd_conn *c, uint32_t events)
{
	/* Closed by an earlier event of this round (a drain, say): only its memory is left. */
	if (c->closed)
		return;
	if (events & EPOLLIN || c->stalled)
		conn_readable(c);
	else if (events & (EPOLLERR | EPOLLHUP) && !(events & EPOLLOUT))
		c->dead = true;
	conn_settle(c);
}

static struct udsd_conn *
conn_new(struct wthread *t, int fd, unsigned listener)
{
	struct udsd_conn *c = t->spare;

	if (c) {
		t->spare = c->next_closed;
		t->n_spare--;
	} else if (!(c = malloc(sizeof(*c)))) {
		return NULL;
	}
	/* Every field: the rest zero, as calloc() gave it. */
	*c = (struct udsd_conn){
		.fd = fd,
		.listener = (uint8_t)listener,
		.seqpacket = t->spec->config->listeners[listener].type == SOCK_SEQPACKET,
		.events = EPOLLIN,
		.thread = t,
		.service = &t->spec->services[listener],
		.state = t->state[listener],
		.next = t->conns,
	};
	if (t->conns)
		t->conns->prev = c;
	t->conns = c;
	t->n_conns++;
	atomic_fetch_add_explicit(&t->stats->open, 1, memory_order_relaxed);
	conn_touch(c);
	return c;
}

void
conn_open(struct wthread *t, int fd, unsigned listener)
{
	const struct service *s = &t->spec->services[listener];
	/* Another pool's client: the master never sends one; a worker never serves one. */
	bool ours = t->spec->config->listeners[listener].pool == t->spec->pool_index;
	struct udsd_conn *c = ours ? conn_new(t, fd, listener) : NULL;
	static const int one = 1;

	atomic_fetch_add_explicit(&t->stats->accepted, 1, memory_order_relaxed);
	if (!c) {
		if (!ours)
			log_error("thread %u: a client of another pool's listener; closing it", t->index);
		safe_close(fd);
		atomic_fetch_add_explicit(&t->stats->refused, 1, memory_order_relaxed);
		worker_client_done(t);
		return;
	}
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
	if ((c->seqpacket && setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) < 0) ||
	    epoll_ctl(t->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		conn_close(c);
		return;
	}
	if (s->ops->on_open) {
		callback_begin(c, "on_open");
		int r = s->ops->on_open(c);
		callback_end(c);
		uncork(c);
		if (r < 0) {
			atomic_fetch_add_explicit(&t->stats->refused, 1, memory_order_relaxed);
			c->closing = true;
		}
	}
	if (t->draining) {
		conn_drain(c);
		return;
	}
	/*
	 * Most clients speak first, and by the time the master has handed
	 * this one over its bytes are usually there: read now rather than
	 * after another trip through epoll_wait().
	 */
	conn_readable(c);
	conn_settle(c);
}

/*
 * The worker drains: the service finishes; without on_drain we wait for the
 * client.  What the client already sent is read first, so that a request
 * in flight is answered (the service sees udsd_conn_draining()) rather than
 * cut off.
 */
void
conn_drain(struct udsd_conn *c)
{
	if (c->closed)
		return;
	/* Moving: nothing is read here, the bytes travel with the fd; busy, it moves later. */
	if (conn_migrating(c)) {
		conn_settle(c);
		return;
	}
	conn_readable(c);
	if (c->service->ops->on_drain && !c->dead && !c->closing) {
		callback_begin(c, "on_drain");
		c->service->ops->on_drain(c);
		callback_end(c);
		uncork(c);
	}
	conn_settle(c);
}

bool
conn_expired(const struct udsd_conn *c, uint64_t now)
{
	return (c->deadline && c->deadline <= now) || (c->fixed_deadline && c->fixed_deadline <= now);
}

/*
 * A deadline passed.  If it was the idle one while output waits, the client
 * took nothing for a whole timeout: a last word would not reach it either.
 * Otherwise the service may say one (an HTTP 408), which gets one more
 * timeout to leave.
 */
void
conn_timeout(struct udsd_conn *c)
{
	bool idle = c->deadline && c->deadline <= c->thread->now;

	c->deadline = c->fixed_deadline = 0;
	if (c->lingering || c->closing || (idle && conn_queued(c))) {
		conn_close(c);
		return;
	}
	if (c->service->ops->on_timeout) {
		callback_begin(c, "on_timeout");
		c->service->ops->on_timeout(c);
		callback_end(c);
		uncork(c);
	}
	c->closing = true;
	c->stalled = false;
	conn_touch(c);
	conn_settle(c);
}

void
udsd_conn_close(struct udsd_conn *c)
{
	c->closing = true;
	if (!c->in_callback)
		conn_settle(c);
}

size_t
udsd_conn_pending(const struct udsd_conn *c)
{
	return c->out_len - c->out_off + (c->in_callback ? c->thread->cork_len : 0);
}

bool
udsd_conn_congested(const struct udsd_conn *c)
{
	return udsd_conn_pending(c) >= OUT_HIGH_WATER;
}

void
udsd_conn_set_data(struct udsd_conn *c, void *data)
{
	c->data = data;
}

void *
udsd_conn_get_data(const struct udsd_conn *c)
{
	return c->data;
}

void *
udsd_conn_state(const struct udsd_conn *c)
{
	return c->state;
}

int
udsd_conn_peer(const struct udsd_conn *c, pid_t *ret_pid, uid_t *ret_uid, gid_t *ret_gid)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);

	if (getsockopt(c->fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return negative_errno();
	if (ret_pid)
		*ret_pid = cred.pid;
	if (ret_uid)
		*ret_uid = cred.uid;
	if (ret_gid)
		*ret_gid = cred.gid;
	return 0;
}

size_t
udsd_conn_n_fds(const struct udsd_conn *c)
{
	return c->n_fds;
}

int
udsd_conn_take_fd(struct udsd_conn *c, size_t i)
{
	if (i >= c->n_fds || c->fds[i] < 0)
		return -EBADF;
	return TAKE_FD(c->fds[i]);
}

int
udsd_conn_fd(const struct udsd_conn *c, size_t i)
{
	if (i >= c->n_fds || c->fds[i] < 0)
		return -EBADF;
	return c->fds[i];
}

void
udsd_conn_set_timeout(struct udsd_conn *c, unsigned long long usec)
{
	c->timeout_usec = usec;
	conn_touch(c);
}

void
udsd_conn_set_deadline(struct udsd_conn *c, unsigned long long usec)
{
	c->fixed_deadline = usec ? c->thread->now + usec : 0;
}

/* A connection that will move to the new generation goes on as if nothing happened. */
bool
udsd_conn_draining(const struct udsd_conn *c)
{
	return c->thread->draining && !conn_migrating(c);
}

void
udsd_conn_count_request(struct udsd_conn *c)
{
	c->counted = true;
	atomic_fetch_add_explicit(&c->thread->stats->requests, 1, memory_order_relaxed);
}

/*
 * In the stuck thread's signal handler (worker.c), so async-signal-safe
 * only: what the thread is stuck in and its backtrace, for the slowlog; the
 * service's last word to the client if nothing of an answer went out or
 * waits for it (the corked output of the stuck callback never leaves); then
 * the connection is shut down, so that the client sees the end at once.
 */
void
conn_stuck(struct wthread *t)
{
	struct udsd_conn *c = t->current;
	struct ucred cred = { .pid = 0, .uid = (uid_t)-1 };
	socklen_t len = sizeof(cred);
	char thread[24], pid[24], uid[24];
	const char *reply = "the client's connection is shut down";

	fmt_long(thread, t->index);
	if (!c) {
		log_signal_safe(LOG_ERR, (const char *[]){ "slowlog: thread ", thread,
							   " is stuck outside any callback; backtrace:",
							   NULL });
		log_backtrace();
		return;
	}
	(void)getsockopt(c->fd, SOL_SOCKET, SO_PEERCRED, &cred, &len);
	fmt_long(pid, (long)cred.pid);
	fmt_long(uid, cred.uid == (uid_t)-1 ? -1 : (long)cred.uid);
	log_signal_safe(LOG_ERR, (const char *[]){ "slowlog: thread ", thread, " stuck in ",
						   t->current_callback, " of listener ",
						   t->spec->config->listeners[c->listener].name,
						   " (service ", c->service->ops->name, ") for client pid=",
						   pid, " uid=", uid, "; backtrace:", NULL });
	log_backtrace();
	if (c->service->ops->flags & UDSD_SERVICE_DEADLINE_REPLY && c->service->ops->deadline_reply &&
	    !c->dead && !c->sent_in_callback && c->out_len == c->out_off &&
	    send(c->fd, c->service->ops->deadline_reply, strlen(c->service->ops->deadline_reply),
		 MSG_NOSIGNAL | MSG_DONTWAIT) > 0)
		reply = "the client got the service's deadline reply";
	(void)shutdown(c->fd, SHUT_RDWR);
	log_signal_safe(LOG_ERR, (const char *[]){ "slowlog: end of backtrace; ", reply, NULL });
}
