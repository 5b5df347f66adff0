/* SPDX-License-Identifier: MIT */
#include <limits.h>
#include <poll.h>
#include <string.h>
#include <sys/epoll.h>

#include "daemon.h"
#include "fd-util.h"
#include "listener.h"
#include "sockact.h"

/*
 * The master's listeners: bound here or taken from systemd, kept across
 * reloads when the new config still names them, closed (and their files
 * unlinked, if udsd made them) when it does not.
 */

static struct sockact_fd *passed;
static size_t n_passed;

int
listeners_take_passed(void)
{
	return sockact_take(&passed, &n_passed);
}

/*
 * Sockets systemd passed that no listener took: say so, they serve nobody.
 * One of ours from the fd store whose listener is gone (or moved) is closed
 * and dropped from the store, which would otherwise keep it forever.
 */
void
listeners_warn_unused_passed(void)
{
	for (size_t i = 0; i < n_passed; i++) {
		const char *stored = fdstore_listener(passed[i].name);

		if (passed[i].used)
			continue;
		if (!stored) {
			log_warning("socket \"%s\" from systemd matches no listener; ignoring it",
				    passed[i].name);
			continue;
		}
		log_notice("socket of listener %s in systemd's fd store: no such listener at that "
			   "address any more; closing it", stored);
		fdstore_remove(stored);
		passed[i].fd = safe_close(passed[i].fd);
		passed[i].used = true;
	}
}

/* For a binary upgrade: the sockets systemd passed go with the state, used or not. */
void
listeners_passed_get(struct sockact_fd **ret, size_t *ret_n)
{
	*ret = passed;
	*ret_n = n_passed;
}

void
listeners_passed_set(struct sockact_fd *fds, size_t n)
{
	listeners_free_passed();
	passed = fds;
	n_passed = n;
}

void
listeners_free_passed(void)
{
	sockact_free(passed, n_passed);
	passed = NULL;
	n_passed = 0;
}

static int
address_family(const char *address)
{
	return strncmp(address, "tcp:", 4) == 0 ? AF_INET : AF_UNIX;
}

/* Match a configured listener to a socket systemd passed: by name, or the only one to the only one. */
static int
take_passed(const struct config *c, const struct config_listener *cl,
			struct mlistener *l)
{
	struct sockact_fd *a = NULL;

	for (size_t i = 0; i < n_passed; i++)
		if (!passed[i].used && strcmp(passed[i].name, cl->name) == 0)
			a = &passed[i];
	if (!a && n_passed == 1 && c->n_listeners == 1 && !passed[0].used)
		a = &passed[0];
	if (!a)
		return 0;
	int r = listener_check_fd(a->fd, address_family(cl->address), cl->type);
	if (r <= 0) {
		log_error("fd %d \"%s\": not a %s %s %s socket (listener %s)", a->fd, a->name,
			  cl->type == SOCK_DGRAM ? "bound" : "listening",
			  address_family(cl->address) == AF_UNIX ? "Unix" : "TCP",
			  cl->type == SOCK_STREAM ? "stream" :
			  cl->type == SOCK_DGRAM ? "dgram" : "seqpacket", cl->name);
		return -EINVAL;
	}
	/* systemd sets it only with PassCredentials=yes; allow-lists and senders need it. */
	if (cl->type == SOCK_DGRAM && (r = listener_pass_credentials(a->fd)) < 0) {
		log_error("listener %s: SO_PASSCRED: %s", cl->name, strerror(-r));
		return r;
	}
	a->used = true;
	l->fd = a->fd;
	l->passed = true;
	fd_set_nonblock(l->fd, true);
	return 1;
}

/*
 * A socket udsd bound in an earlier run, back from systemd's fd store: taken
 * if it is still bound at the listener's address (and, for a file, that file
 * is still its socket), so that the clients in its backlog are served.
 */
static int
take_stored(const struct config_listener *cl, struct mlistener *l)
{
	char err[PATH_MAX + 64] = "";
	struct sockact_fd *a = NULL;
	int r;

	for (size_t i = 0; i < n_passed && !a; i++) {
		const char *name = fdstore_listener(passed[i].name);
		if (!passed[i].used && name && strcmp(name, cl->name) == 0)
			a = &passed[i];
	}
	if (!a || listener_check_fd(a->fd, address_family(cl->address), cl->type) <= 0)
		return 0;
	r = cl->kind == LISTENER_TCP ? 0 :
	    cl->kind == LISTENER_PATH ? listener_adopt_unix(a->fd, cl->address, &l->file, err,
							     sizeof(err)) :
					 listener_adopt_unix(a->fd, cl->address, NULL, err, sizeof(err));
	if (r < 0) {
		log_notice("listener %s: the socket in systemd's fd store is not at %s any more (%s); "
			   "binding a new one", cl->name, cl->address, *err ? err : strerror(-r));
		return 0;
	}
	a->used = true;
	l->fd = a->fd;
	l->stored = strdup(cl->name);
	l->ours = cl->kind == LISTENER_PATH;
	fd_set_nonblock(l->fd, true);
	log_info("listener %s: %s taken back from systemd's fd store", cl->name, cl->address);
	return l->stored ? 1 : -ENOMEM;
}

/* Keep a socket udsd bound in systemd's fd store, when there is one (fdstore.c). */
static void
store(const struct config_listener *cl, struct mlistener *l)
{
	int r;

	if (!fdstore_enabled())
		return;
	r = fdstore_put(cl->name, l->fd);
	if (r >= 0)
		l->stored = strdup(cl->name);
	if (r < 0 || !l->stored)
		log_warning("listener %s: not kept in systemd's fd store: %s", cl->name,
			    strerror(r < 0 ? -r : ENOMEM));
}

/* An abstract socket has no file mode: without an allow-list, anyone in the netns may connect. */
static void
warn_open(const struct config_listener *cl)
{
	if (cl->kind == LISTENER_ABSTRACT && cl->n_allow_uids == 0 && cl->n_allow_gids == 0)
		log_warning("listener %s: %s is an abstract socket without allow_uids or allow_gids: "
			    "every process in this network namespace can connect", cl->name, cl->address);
}

static int
listeners_open_one(const struct config *c, const struct config_listener *cl, struct mlistener *l)
{
	char err[PATH_MAX + 64] = "";
	int r;

	r = take_passed(c, cl, l);
	if (r == 0)
		r = take_stored(cl, l);
	if (r > 0)
		warn_open(cl);
	if (r != 0)
		return r;
	if (cl->kind == LISTENER_TCP)
		r = listener_open_tcp(cl->address, cl->backlog, &l->fd);
	else
		r = listener_open_unix(cl->address, cl->type, cl->mode, cl->owner, cl->group,
				       cl->backlog, &l->fd, &l->file, err, sizeof(err));
	if (r < 0) {
		const char *why = *err		    ? err :
				  r == -EADDRINUSE ? "another server is listening there" :
				  r == -EEXIST	    ? "exists and is not a socket; not touching it" :
				  r == -ENAMETOOLONG ? "too long for a socket address" :
				  r == -EAFNOSUPPORT && cl->kind == LISTENER_TCP ?
						       "Internet sockets are not allowed here (the shipped "
						       "unit needs its drop-in udsd-tcp.conf)" :
				  r == -ELOOP	     ? "goes through a symlink; a dgram socket answers from "
							       "its path, so write the path it really has" :
						       strerror(-r);
		log_error("listener %s: %s: %s", cl->name, cl->address, why);
		return r;
	}
	l->ours = cl->kind == LISTENER_PATH;
	warn_open(cl);
	store(cl, l);
	return 0;
}

/* A systemd socket that a listener gave up is free for the next listener that names it. */
static void
passed_release(int fd)
{
	for (size_t i = 0; i < n_passed; i++)
		if (passed[i].fd == fd)
			passed[i].used = false;
}

void
listeners_close_one(struct master *m, struct mlistener *l, bool unlink_file)
{
	/* Explicitly: a worker being forked may hold a copy (see channel_close()). */
	if (m && l->fd >= 0)
		epoll_ctl(m->epfd, EPOLL_CTL_DEL, l->fd, NULL);
	if (l->passed)
		passed_release(l->fd);
	else
		safe_close(l->fd);
	if (l->ours && unlink_file && listener_unlink(&l->file) == -ESTALE)
		log_warning("%s is no longer the socket udsd bound; not removing it", l->address);
	if (l->stored && unlink_file)
		fdstore_remove(l->stored);
	listener_file_done(&l->file);
	free(l->address);
	free(l->stored);
	l->fd = -EBADF;
	l->address = NULL;
	l->stored = NULL;
}

/*
 * A socket directory that became writable by others since the socket was
 * bound fails the reload, as it would have failed the start.
 */
static int
listeners_recheck(const struct config_listener *cl, const struct mlistener *l)
{
	char err[PATH_MAX + 64];
	int r;

	if (!l->ours || l->passed)
		return 0;
	r = listener_check_dir(l->file.dir_fd, err, sizeof(err));
	if (r < 0)
		log_error("listener %s: %s: %s", cl->name, cl->address,
			  r == -EPERM ? err : strerror(-r));
	return r;
}

/* An open listener of the old set with the same address and type, to keep across a reload. */
static struct mlistener *
listeners_find_kept(struct mlistener *ls, size_t n, const struct config_listener *cl)
{
	for (size_t i = 0; i < n; i++)
		if (ls[i].fd >= 0 && ls[i].type == cl->type && strcmp(ls[i].address, cl->address) == 0)
			return &ls[i];
	return NULL;
}

/*
 * Build the listener set for config c, keeping the sockets of old that it
 * still names (their clients in the backlog stay queued) and applying
 * changed permissions.  On failure nothing of old is touched.
 */
/*
 * A socket systemd passed is what the socket unit made it: the config's path
 * and mode do not apply to it.  Say so when they differ, naming both, and
 * keep the real ones for /status.
 */
static void
note_passed(struct config_listener *cl, const struct mlistener *l)
{
	char real[PATH_MAX + 8];
	mode_t mode;
	int r = listener_describe(l->fd, real, sizeof(real), &mode);

	if (r < 0) {
		log_warning("listener %s: the address of the socket from systemd: %s", cl->name,
			    strerror(-r));
		return;
	}
	if (cl->kind != LISTENER_TCP && strcmp(real, cl->address) != 0)
		log_warning("listener %s: systemd's socket is %s, not the configured path %s: the "
			    "socket unit's address applies", cl->name, real, cl->address);
	if (cl->kind == LISTENER_PATH && cl->perm_line && mode != (mode_t)-1 && mode != cl->mode)
		log_warning("listener %s: systemd's socket %s has mode %04o, not the configured "
			    "mode %04o: the socket unit's SocketMode= applies", cl->name, real,
			    (unsigned)mode, (unsigned)cl->mode);
	free(cl->socket_address);
	cl->socket_address = strdup(real);
	cl->socket_mode = mode;
}

int
listeners_build(struct config *c, struct mlistener *old, size_t n_old,
		struct mlistener **ret)
{
	struct mlistener *ls = calloc(c->n_listeners, sizeof(*ls));
	int r = 0;

	if (!ls)
		return -ENOMEM;
	for (size_t i = 0; i < c->n_listeners; i++)
		ls[i] = (struct mlistener){ .fd = -EBADF, .file = LISTENER_FILE_NULL };
	for (size_t i = 0; i < c->n_listeners && r >= 0; i++) {
		const struct config_listener *cl = &c->listeners[i];
		struct mlistener *keep = listeners_find_kept(old, n_old, cl);

		ls[i].watch.kind = WATCH_LISTENER;
		ls[i].index = (unsigned)i;
		ls[i].type = cl->type;
		ls[i].address = strdup(cl->address);
		if (!ls[i].address) {
			r = -ENOMEM;
			break;
		}
		if (keep) {
			ls[i].fd = keep->fd;
			ls[i].file = keep->file; /* moves: listeners_install() leaves the old one be */
			ls[i].ours = keep->ours;
			ls[i].passed = keep->passed;
			ls[i].stored = keep->stored; /* moves, as the file */
			r = listeners_recheck(cl, keep);
			continue;
		}
		r = listeners_open_one(c, cl, &ls[i]);
	}
	for (size_t i = 0; i < c->n_listeners && r >= 0; i++)
		if (ls[i].passed)
			note_passed(&c->listeners[i], &ls[i]);
	if (r < 0) {
		listeners_discard(ls, c->n_listeners, old, n_old);
		return r;
	}
	*ret = ls;
	return 0;
}

/*
 * Give up a set that listeners_build() made and nobody installed: close what
 * it opened (giving back the systemd sockets it took), and only that, not
 * what it shares with the set in use.
 */
void
listeners_discard(struct mlistener *ls, size_t n, const struct mlistener *in_use, size_t n_in_use)
{
	for (size_t i = 0; ls && i < n; i++) {
		bool shared = false;

		for (size_t k = 0; k < n_in_use && ls[i].fd >= 0; k++)
			shared |= in_use[k].fd == ls[i].fd;
		if (shared)
			free(ls[i].address);
		else
			listeners_close_one(NULL, &ls[i], true);
	}
	free(ls);
}

/* Since Linux 6.16; Debian 12's headers predate it. */
#ifndef SO_PASSRIGHTS
#define SO_PASSRIGHTS 83
#endif

/*
 * A listener whose service takes no descriptors tells the kernel to refuse
 * them (SO_PASSRIGHTS off; accepted sockets inherit it): a client's sendmsg()
 * with SCM_RIGHTS then fails, so no client can park descriptors in udsd's
 * queues.  Kernels without it say ENOPROTOOPT, and the worker closes what
 * arrives.  On a reload, only_enable turns it on where the new generation's
 * service takes descriptors, before that generation serves; the switch then
 * applies all of it, so a client never meets a socket that refuses what its
 * service would take.
 */
void
listeners_apply_passrights(const struct generation *g, struct mlistener *ls, bool only_enable)
{
	for (size_t i = 0; i < g->config->n_listeners; i++) {
		/* A seqpacket service is handed what arrives with each message (conn.c, load.c). */
		int on = g->services[i].flags & UDSD_SERVICE_RECV_FDS ||
			 g->config->listeners[i].type == SOCK_SEQPACKET;

		if (g->config->listeners[i].kind == LISTENER_TCP || (only_enable && !on))
			continue;
		if (setsockopt(ls[i].fd, SOL_SOCKET, SO_PASSRIGHTS, &on, sizeof(on)) < 0 &&
		    errno != ENOPROTOOPT)
			log_warning("listener %s: SO_PASSRIGHTS: %s", g->config->listeners[i].name,
				    strerror(errno));
	}
}

/* Permissions of kept socket files follow the new config (ours only: systemd's are systemd's). */
void
listeners_apply_perms(const struct config *c, struct mlistener *ls)
{
	for (size_t i = 0; i < c->n_listeners; i++) {
		const struct config_listener *cl = &c->listeners[i];
		int r;

		if (!ls[i].ours || ls[i].passed)
			continue;
		r = listener_set_perms(&ls[i].file, cl->mode, cl->owner, cl->group);
		if (r == -ESTALE)
			log_error("listener %s: %s is no longer the socket udsd bound; not touching it",
				  cl->name, cl->address);
		else if (r < 0)
			log_error("listener %s: setting owner and mode of %s: %s", cl->name,
				  cl->address, strerror(-r));
	}
}

/* Swap in a new listener set: register the new, close what the new set does not keep. */
void
listeners_install(struct master *m, struct mlistener *ls, size_t n)
{
	for (size_t i = 0; i < m->n_listeners; i++) {
		struct mlistener *old = &m->listeners[i];
		bool kept = false;

		for (size_t k = 0; k < n; k++)
			kept |= ls[k].fd == old->fd;
		if (kept) {
			epoll_ctl(m->epfd, EPOLL_CTL_DEL, old->fd, NULL);
			free(old->address);
		} else {
			listeners_close_one(m, old, true);
		}
	}
	free(m->listeners);
	m->listeners = ls;
	m->n_listeners = n;
	for (size_t i = 0; i < n; i++) {
		struct epoll_event ev = { .events = 0, .data.ptr = &ls[i].watch };
		ls[i].polling = false;
		/* The master never reads a datagram: worker threads do (dgram.c). */
		if (ls[i].type == SOCK_DGRAM)
			continue;
		if (epoll_ctl(m->epfd, EPOLL_CTL_ADD, ls[i].fd, &ev) < 0)
			log_error("epoll_ctl: %s", strerror(errno));
	}
}

/* Would accept() find a client right now?  Asked before an idle exit. */
bool
listeners_pending(const struct master *m)
{
	struct pollfd pfd[CONFIG_MAX_LISTENERS];

	for (size_t i = 0; i < m->n_listeners; i++)
		pfd[i] = (struct pollfd){ .fd = m->listeners[i].fd, .events = POLLIN };
	return poll(pfd, m->n_listeners, 0) != 0;
}

bool
listeners_all_passed(const struct master *m)
{
	for (size_t i = 0; i < m->n_listeners; i++)
		if (!m->listeners[i].passed)
			return false;
	return true;
}

bool
listeners_has_dgram(const struct master *m)
{
	for (size_t i = 0; i < m->n_listeners; i++)
		if (m->listeners[i].type == SOCK_DGRAM)
			return true;
	return false;
}

/* Listener index of config from, as an index of config to (matched by name), or -ENOENT. */
int
listeners_remap(const struct config *to, const struct config *from, unsigned index)
{
	const struct config_listener *l;

	if (from == to)
		return (int)index;
	l = config_find_listener(to, from->listeners[index].name);
	return l ? (int)(l - to->listeners) : -ENOENT;
}
