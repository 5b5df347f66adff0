/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>

/* "/path" or "@abstract" → sockaddr; -ENAMETOOLONG when it does not fit sun_path. */
int listener_sockaddr(const char *address, struct sockaddr_un *ret, socklen_t *ret_len);

/*
 * Create a listening AF_UNIX socket of the given type at address.  For a file
 * path: a stale socket file (nothing accepts on it) is replaced; a live one is
 * -EADDRINUSE and left alone; anything that is not a socket is -EEXIST and left
 * alone.  The file is created with mode 0000 and only then given owner, group
 * and mode, so it is never more open than asked, not even for an instant.
 * owner/group may be -1 to leave them.  Returns a non-blocking, close-on-exec fd.
 */
int listener_open_unix(const char *address, int type, mode_t mode, uid_t owner, gid_t group,
		       int backlog, int *ret_fd);

/* "tcp:HOST:PORT" (numeric host) → a listening, non-blocking TCP socket. */
int listener_open_tcp(const char *address, int backlog, int *ret_fd);

/*
 * Apply owner/group/mode to an existing socket file without following a
 * symlink at path; used at start and on reload.
 */
int listener_set_perms(const char *path, mode_t mode, uid_t owner, gid_t group);

/* Is fd a listening socket of this family and type?  1 yes, 0 no, -errno on error. */
int listener_check_fd(int fd, int family, int type);

/* Unlink path only if it is still a socket file (never a file someone put there since). */
int listener_unlink(const char *path);
