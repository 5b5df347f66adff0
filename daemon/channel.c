/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "daemon.h"
#include "fd-util.h"

/*
 * The master<->worker channel, both ends: one SOCK_SEQPACKET socketpair per
 * worker thread.  The master keeps both ends of each pair: its own, and the
 * worker's, through which it reads back what a dead worker never took.
 * Functions taking a struct master run in the master; channel_thread_*() run
 * in a worker thread; the wire format below is shared.
 *
 * Wire format: a fixed 8-byte header, then for CHANNEL_FDS, CHANNEL_DGRAM and
 * CHANNEL_MIGRATED one byte per fd naming its listener (an index in the
 * worker's config, both ways), and for CHANNEL_DRAIN one byte per listener of
 * the worker's config, 1 if its clients migrate (none: all drain).
 * SOCK_SEQPACKET keeps each message and its fds together, so a message is
 * received whole or not at all.
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
	r = udsd_fdpass_send(fd, buf, CHANNEL_HEADER + n, fds, fds ? n : 0);
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
	case CHANNEL_DGRAM:
	case CHANNEL_MIGRATED:
		if (m.count == 0 || m.count > CHANNEL_MAX_FDS || m.count != n_fds ||
		    len != CHANNEL_HEADER + (size_t)m.count)
			return -EBADMSG;
		memcpy(m.listener, p + CHANNEL_HEADER, m.count);
		for (size_t i = 0; i < m.count; i++)
			if (m.listener[i] >= n_listeners)
				return -EBADMSG;
		break;
	case CHANNEL_DRAIN:
		if (m.count > n_listeners || m.count > CHANNEL_MAX_FDS || n_fds != 0 ||
		    len != CHANNEL_HEADER + (size_t)m.count)
			return -EBADMSG;
		memcpy(m.listener, p + CHANNEL_HEADER, m.count);
		for (size_t i = 0; i < m.count; i++)
			if (m.listener[i] > 1)
				return -EBADMSG;
		break;
	case CHANNEL_CLOSED:
	case CHANNEL_READY:
		if (m.count != 0 || n_fds != 0 || len != CHANNEL_HEADER)
			return -EBADMSG;
		break;
	case CHANNEL_GONE:
		if (m.count != 1 || n_fds != 0 || len != CHANNEL_HEADER + 1 ||
		    p[CHANNEL_HEADER] >= n_listeners)
			return -EBADMSG;
		m.listener[0] = p[CHANNEL_HEADER];
		break;
	default:
		return -EBADMSG;
	}
	*ret = m;
	return 0;
}

/*
 * Receive and decode one message.  Returns 1 with a message (fds filled for
 * CHANNEL_FDS and CHANNEL_DGRAM), 0 at end of file, or -errno; a malformed message has its fds
 * closed and is -EBADMSG.
 */
int
channel_recv(int fd, size_t n_listeners, struct channel_msg *ret_msg, int *fds)
{
	uint8_t buf[CHANNEL_HEADER + CHANNEL_MAX_FDS];
	size_t n_fds = 0;
	ssize_t n;
	int r;

	n = udsd_fdpass_recv(fd, buf, sizeof(buf), fds, CHANNEL_MAX_FDS, &n_fds);
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

/*
 * A worker forked a moment ago may still hold copies of every master fd until
 * it closes them, and epoll forgets an fd only when the last copy goes: so
 * remove our ends from the epoll set explicitly, or events for this freed
 * channel could still arrive.
 */
void
channel_close(struct master *m, struct mworker *w)
{
	for (unsigned t = 0; w->chan && t < w->n_threads; t++) {
		if (w->chan[t].fd >= 0)
			epoll_ctl(m->epfd, EPOLL_CTL_DEL, w->chan[t].fd, NULL);
		safe_close(w->chan[t].fd);
		safe_close(w->chan[t].peer);
	}
	free(w->chan);
	w->chan = NULL;
}

/* One channel per thread of w, the master's ends polled; on failure none is left open. */
int
channel_open(struct master *m, struct mworker *w)
{
	int r = 0;

	w->chan = calloc(w->n_threads, sizeof(*w->chan));
	if (!w->chan)
		return -ENOMEM;
	for (unsigned t = 0; t < w->n_threads; t++)
		w->chan[t] = (struct mchannel){ .watch.kind = WATCH_CHANNEL, .worker = w,
						.fd = -EBADF, .peer = -EBADF };
	for (unsigned t = 0; t < w->n_threads && r >= 0; t++) {
		struct mchannel *ch = &w->chan[t];
		struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &ch->watch };

		r = channel_pair(&ch->fd, &ch->peer);
		if (r >= 0 && epoll_ctl(m->epfd, EPOLL_CTL_ADD, ch->fd, &ev) < 0)
			r = negative_errno();
	}
	if (r < 0)
		channel_close(m, w);
	return r;
}

/* A worker adopted in a binary upgrade: its channels, carried over, are polled again. */
int
channel_adopt(struct master *m, struct mworker *w)
{
	for (unsigned t = 0; t < w->n_threads; t++) {
		struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &w->chan[t].watch };

		if (epoll_ctl(m->epfd, EPOLL_CTL_ADD, w->chan[t].fd, &ev) < 0)
			return negative_errno();
	}
	return 0;
}

static void
channel_want_out(struct master *m, struct mchannel *ch, bool want)
{
	if (ch->want_out == want)
		return;
	struct epoll_event ev = { .events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = &ch->watch };
	if (epoll_ctl(m->epfd, EPOLL_CTL_MOD, ch->fd, &ev) == 0)
		ch->want_out = want;
}

/*
 * Hand the pending fds over in one message, then a wanted DRAIN.  Our copies
 * are closed only after sendmsg succeeded; on EAGAIN they wait for EPOLLOUT.
 */
void
channel_flush(struct master *m, struct mchannel *ch)
{
	int r;

	if (ch->n_pending > 0) {
		r = channel_send(ch->fd, CHANNEL_FDS, 0, ch->pending, ch->pending_listener,
				 ch->n_pending);
		if (r == -EAGAIN) {
			channel_want_out(m, ch, true);
			return;
		}
		if (r < 0) {
			/* Kept pending: the reaper hands them to another worker. */
			log_error("handing clients to worker %d: %s", (int)ch->worker->pid, strerror(-r));
			return;
		}
		close_many(ch->pending, ch->n_pending);
		ch->sent += ch->n_pending; /* the thread's load stays: pending became sent */
		ch->n_pending = 0;
	}
	if (ch->drain_wanted) {
		const struct mworker *w = ch->worker;
		/* A version 1 worker (adopted in an upgrade) knows a DRAIN without a payload only. */
		r = channel_send(ch->fd, CHANNEL_DRAIN, 0, NULL, w->migrate,
				 w->chan_version >= 2 ? w->n_migrate : 0);
		if (r == -EAGAIN) {
			channel_want_out(m, ch, true);
			return;
		}
		ch->drain_wanted = false;
	}
	channel_want_out(m, ch, false);
}

/* Once per master round: what was queued in it leaves in one message per thread. */
void
channel_flush_all(struct master *m)
{
	for (size_t i = 0; i < m->n_slots; i++) {
		struct mworker *w = &m->workers[i];

		for (unsigned t = 0; w->state != WORKER_FREE && t < w->n_threads; t++)
			if (w->chan[t].n_pending || w->chan[t].drain_wanted)
				channel_flush(m, &w->chan[t]);
	}
}

/* Queue a client for the thread; a full queue leaves at once, the rest at the round's end. */
void
channel_queue(struct master *m, struct mchannel *ch, int fd, unsigned listener)
{
	assert(ch->n_pending < CHANNEL_MAX_FDS);
	ch->pending[ch->n_pending] = fd;
	ch->pending_listener[ch->n_pending] = (uint8_t)listener;
	ch->n_pending++;
	if (ch->n_pending == CHANNEL_MAX_FDS)
		channel_flush(m, ch);
}

/*
 * Ask every thread of w to take no more clients, finish and exit, handing
 * back the clients of the listeners in w->migrate as they reach a message
 * boundary.  Sent again, it changes that set (a stop ends migration).
 */
void
channel_drain(struct master *m, struct mworker *w)
{
	for (unsigned t = 0; t < w->n_threads; t++) {
		w->chan[t].drain_wanted = true;
		channel_flush(m, &w->chan[t]);
	}
}

/*
 * Clients a draining worker handed back at a message boundary, each to
 * hand() with its listener index in the worker's config (pool_migrated()).
 */
static void
channel_migrated(struct master *m, const struct mworker *w, const int *fds,
		 const struct channel_msg *msg, channel_hand_fn *hand)
{
	size_t kept = 0;

	for (size_t i = 0; i < msg->count; i++)
		kept += hand(m, w, fds[i], msg->listener[i]);
	log_debug("worker %d handed back %u client(s)%s", (int)w->pid, msg->count,
		  kept < msg->count ? "; some closed: stopping, or their listener changed" : "");
}

/* What a worker thread says: READY once, CLOSED as a wakeup, MIGRATED clients (to migrated()). */
void
channel_read(struct master *m, struct mchannel *ch, channel_hand_fn *migrated)
{
	struct mworker *w = ch->worker;
	struct channel_msg msg;
	int fds[CHANNEL_MAX_FDS];

	for (;;) {
		int r = channel_recv(ch->fd, w->gen->config->n_listeners, &msg, fds);
		if (r == -EAGAIN || r == 0)
			return;
		if (r < 0) {
			log_error("worker %d: bad message: %s", (int)w->pid, strerror(-r));
			continue;
		}
		switch (msg.type) {
		case CHANNEL_CLOSED:
			break; /* a wakeup: the loads are in shared memory */
		case CHANNEL_GONE:
			peer_gone(w, msg.listener[0], (uid_t)msg.arg);
			break;
		case CHANNEL_READY:
			/* Once per thread, whatever the worker sends. */
			w->ready += !ch->ready;
			ch->ready = true;
			break;
		case CHANNEL_MIGRATED:
			channel_migrated(m, w, fds, &msg, migrated);
			break;
		default:
			if (msg.type == CHANNEL_FDS || msg.type == CHANNEL_DGRAM)
				close_many(fds, msg.count);
			log_error("worker %d: unexpected message %u", (int)w->pid, msg.type);
		}
	}
}

/*
 * A worker died.  Clients still in its channels were never served: the
 * pending ones never left, and the ones in the socket it never read we can
 * read back through the end we kept.  Each goes to hand() with its listener
 * index in the dead worker's config; returns how many hand() kept.
 */
size_t
channel_reclaim(struct master *m, struct mworker *w, channel_hand_fn *hand)
{
	size_t kept = 0;

	for (unsigned t = 0; t < w->n_threads; t++) {
		struct mchannel *ch = &w->chan[t];
		struct channel_msg msg;
		int fds[CHANNEL_MAX_FDS];

		for (size_t i = 0; i < ch->n_pending; i++)
			kept += hand(m, w, ch->pending[i], ch->pending_listener[i]);
		ch->n_pending = 0;
		while (channel_recv(ch->peer, w->gen->config->n_listeners, &msg, fds) > 0) {
			/* Our own copies of the dgram sockets stay with their listeners. */
			if (msg.type == CHANNEL_DGRAM)
				close_many(fds, msg.count);
			for (size_t i = 0; msg.type == CHANNEL_FDS && i < msg.count; i++)
				kept += hand(m, w, fds[i], msg.listener[i]);
		}
	}
	return kept;
}

/*
 * A new worker's threads each get the socket of every dgram listener of its
 * pool, once, in the first message of their channels: sent before the fork,
 * into a channel nothing else has used yet, so it cannot block.  A thread
 * reads the sockets from then on, and says READY only once it has them all.
 * ls is the set of w's generation (the pending one during a reload).
 */
int
channel_send_dgram(struct mworker *w, const struct mlistener *ls, size_t n)
{
	const struct config *c = w->gen->config;
	int fds[CONFIG_MAX_LISTENERS];
	uint8_t index[CONFIG_MAX_LISTENERS];
	size_t k = 0;
	int r;

	for (size_t i = 0; i < n; i++)
		if (ls[i].type == SOCK_DGRAM && c->listeners[i].pool == w->pool) {
			fds[k] = ls[i].fd;
			index[k++] = (uint8_t)i;
		}
	for (unsigned t = 0; k > 0 && t < w->n_threads; t++) {
		r = channel_send(w->chan[t].fd, CHANNEL_DGRAM, 0, fds, index, k);
		if (r < 0)
			return r;
	}
	return 0;
}

/*
 * In a worker thread: the dgram listeners' sockets.  A thread that cannot
 * read one of them cannot serve its listener: the worker exits and is
 * replaced, as when setup fails.
 */
static void
channel_thread_dgram(struct wthread *t, const struct channel_msg *m, int *fds)
{
	int r = 0;

	for (size_t i = 0; i < m->count; i++)
		if (r >= 0)
			r = dgram_thread_add(t, fds[i], m->listener[i]);
		else
			safe_close(fds[i]);
	if (r >= 0 && dgram_thread_has_all(t))
		r = channel_thread_ready(t);
	if (r < 0) {
		log_error("thread %u: taking the datagram sockets: %s", t->index, strerror(-r));
		_exit(EXIT_FAILURE);
	}
}

/* In a worker thread: the master's messages, one per readiness event. */
void
channel_thread_read(struct wthread *t)
{
	const size_t n_listeners = t->spec->config->n_listeners;
	struct channel_msg m;
	int fds[CHANNEL_MAX_FDS];

	/*
	 * One message per readiness event: the channel is level-triggered, so
	 * epoll_wait() reports it again if more wait, and we save the recvmsg()
	 * that would only say EAGAIN.
	 */
	int r = channel_recv(t->chan, n_listeners, &m, fds);
	if (r == -EAGAIN)
		return;
	if (r == 0) {
		/* The master is gone: nobody will hand us clients or reap us. */
		t->done = true;
		return;
	}
	if (r < 0) {
		log_error("thread %u: bad message from master: %s%s", t->index, strerror(-r),
			  r == -EXFULL ? " (out of descriptors: its clients are lost)" : "");
		return;
	}
	switch (m.type) {
	case CHANNEL_FDS:
		for (size_t i = 0; i < m.count; i++)
			conn_open(t, fds[i], m.listener[i]);
		break;
	case CHANNEL_DRAIN:
		worker_thread_drain(t, &m);
		break;
	case CHANNEL_DGRAM:
		channel_thread_dgram(t, &m, fds);
		break;
	default:
		log_error("thread %u: unexpected message %u from master", t->index, m.type);
	}
}

/* In a worker thread: every thread says READY once it can serve. */
int
channel_thread_ready(struct wthread *t)
{
	return channel_send(t->chan, CHANNEL_READY, 0, NULL, NULL, 0);
}

/*
 * In a worker thread, once per round: the closed clients the master counts
 * per uid.  What the channel does not take now (EAGAIN) waits for the next
 * round: a lost one would hold a slot of its uid for good.
 */
void
channel_thread_gone(struct wthread *t)
{
	size_t sent = 0;

	while (sent < t->n_gone && channel_send(t->chan, CHANNEL_GONE, (uint32_t)t->gone[sent].uid,
						NULL, &t->gone[sent].listener, 1) == 0)
		sent++;
	t->n_gone -= sent;
	memmove(t->gone, t->gone + sent, t->n_gone * sizeof(*t->gone));
}

/* In a worker thread, once per round: a close the master asked to hear of (load.c). */
void
channel_thread_wake(struct wthread *t)
{
	if (!t->wake_master)
		return;
	/* EAGAIN: the channel is full of earlier wakeups, which will do. */
	(void)channel_send(t->chan, CHANNEL_CLOSED, 0, NULL, NULL, 0);
	t->wake_master = false;
}

/*
 * In a worker thread, at the end of a round: the clients it handed back
 * leave in one message, and its copies close once the master has them.  On
 * EAGAIN they wait for the next round (the thread then polls briefly).
 * Assumption: the fds got sent if sendmsg sent anything.
 */
void
channel_thread_migrated(struct wthread *t)
{
	int r;

	if (t->n_migrated == 0)
		return;
	r = channel_send(t->chan, CHANNEL_MIGRATED, 0, t->migrated, t->migrated_listener,
			 t->n_migrated);
	if (r == -EAGAIN)
		return;
	if (r < 0)
		log_error("thread %u: handing %zu client(s) back: %s; closing them", t->index,
			  t->n_migrated, strerror(-r));
	close_many(t->migrated, t->n_migrated);
	t->n_migrated = 0;
}
