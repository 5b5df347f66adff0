/* SPDX-License-Identifier: MIT */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>

/* "/path" or "@abstract" → sockaddr; -ENAMETOOLONG when it does not fit sun_path. */
int listener_sockaddr(const char *address, struct sockaddr_un *ret, socklen_t *ret_len);

/*
 * A socket file udsd bound: the directory it was bound in (held open, so that
 * no later rename or symlink anywhere on the path can redirect us), its name
 * there, and the inode it got.  Every later change to the file (owner, mode,
 * unlink) goes through dir_fd and first checks that the name still leads to
 * that inode.
 */
struct listener_file {
	int dir_fd; /* O_PATH; -EBADF: none */
	char *name;
	dev_t dev;
	ino_t ino;
};

#define LISTENER_FILE_NULL ((struct listener_file){ .dir_fd = -EBADF })

void listener_file_done(struct listener_file *f);

/*
 * Is a socket directory safe to keep udsd's socket in?  Every directory from
 * dir_fd up to / must belong to root or to us (geteuid()), and be writable by
 * no one else unless it is sticky: otherwise another user could rename the
 * socket, or a directory above it, and put something else in its place.
 * 0: safe; -EPERM: not, and err says which directory and why.
 */
int listener_check_dir(int dir_fd, char *err, size_t errlen);

/*
 * Create a listening AF_UNIX socket of the given type at address (for
 * SOCK_DGRAM: bound, with SO_PASSCRED set before bind(), so that every
 * datagram it ever receives carries its sender's credentials; backlog is
 * unused).  For a file
 * path: the directory must pass listener_check_dir() (-EPERM and err if not);
 * a stale socket file (nothing accepts on it) is replaced; a live one is
 * -EADDRINUSE and left alone; anything that is not a socket is -EEXIST and
 * left alone.  The file is created with mode 0000 and only then given owner,
 * group and mode, so it is never more open than asked, not even for an
 * instant.  owner/group may be -1 to leave them.  Returns a non-blocking,
 * close-on-exec fd and, for a path, the file in ret_file (may be NULL).
 * A datagram socket file is bound by its path as written, which its replies
 * come from; -ELOOP if that path goes through a symlink.
 * err/errlen may be NULL/0.
 */
int listener_open_unix(const char *address, int type, mode_t mode, uid_t owner, gid_t group,
		       int backlog, int *ret_fd, struct listener_file *ret_file, char *err,
		       size_t errlen);

/*
 * Take back a listening socket udsd bound at address in an earlier run (from
 * systemd's fd store): it must be bound to that name, and for a file the name
 * must still lead to a socket of ours in a safe directory (err says why not);
 * that file is returned in ret_file.  -ESTALE when fd is not (or no longer)
 * reachable at address: the caller then binds afresh.
 */
int listener_adopt_unix(int fd, const char *address, struct listener_file *ret_file, char *err,
			size_t errlen);

/* "tcp:HOST:PORT" (numeric host) → a listening, non-blocking TCP socket. */
int listener_open_tcp(const char *address, int backlog, int *ret_fd);

/*
 * Apply owner/group/mode to the socket file f, used at start and on reload.
 * -ESTALE when the name no longer leads to the socket udsd bound: then nothing
 * is changed.
 */
int listener_set_perms(const struct listener_file *f, mode_t mode, uid_t owner, gid_t group);

/* SO_PASSCRED on fd: each datagram received from now on carries SCM_CREDENTIALS. */
int listener_pass_credentials(int fd);

/*
 * Is fd a listening socket of this family and type (SOCK_DGRAM: a bound one)?
 * 1 yes, 0 no, -errno on error.
 */
int listener_check_fd(int fd, int family, int type);

/*
 * What fd is bound to, written as a config address ("/path", "@name" or
 * "tcp:ADDR:PORT", brackets around an IPv6 ADDR) into buf, and the
 * permission bits of the socket file into *ret_mode ((mode_t)-1 when there is
 * no file: abstract, TCP, or the file is gone).  For a socket systemd passed,
 * whose config says something else.
 */
int listener_describe(int fd, char *buf, size_t size, mode_t *ret_mode);

/* Unlink f only if its name still leads to the socket udsd bound (-ESTALE if not). */
int listener_unlink(const struct listener_file *f);
