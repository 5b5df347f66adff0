/* SPDX-License-Identifier: MIT */
#include <fcntl.h>
#include <netdb.h>
#include <stddef.h>
#include <string.h>
#include <sys/stat.h>

#include "fd-util.h"
#include "listener.h"

int
listener_sockaddr(const char *address, struct sockaddr_un *ret, socklen_t *ret_len)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t n = strlen(address);

	if (n == 0)
		return -EINVAL;
	if (address[0] == '@') {
		/* Abstract: a leading NUL, then the name, not NUL-terminated. */
		if (n > sizeof(sa.sun_path))
			return -ENAMETOOLONG;
		memcpy(sa.sun_path + 1, address + 1, n - 1);
		*ret = sa;
		*ret_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
		return 0;
	}
	if (n >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	memcpy(sa.sun_path, address, n + 1);
	*ret = sa;
	*ret_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
	return 0;
}

/*
 * Is something accepting at this socket file?  0: no (stale), -EADDRINUSE:
 * yes, -EEXIST: not a socket, -errno: could not tell (and so must not remove).
 */
static int
probe_existing(const struct sockaddr_un *sa, socklen_t len, int type)
{
	struct stat st;
	int r;

	if (lstat(sa->sun_path, &st) < 0)
		return errno == ENOENT ? 0 : negative_errno();
	if (!S_ISSOCK(st.st_mode))
		return -EEXIST;

	_cleanup_close_ int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return negative_errno();
	if (connect(fd, (const struct sockaddr *)sa, len) == 0)
		return -EADDRINUSE;
	r = errno;
	if (r == ECONNREFUSED)
		return 0;
	/* EPROTOTYPE: a live socket of another type; EAGAIN: live with a full backlog. */
	if (r == EPROTOTYPE || r == EAGAIN)
		return -EADDRINUSE;
	return -r;
}

int
listener_set_perms(const char *path, mode_t mode, uid_t owner, gid_t group)
{
	if ((owner != (uid_t)-1 || group != (gid_t)-1) &&
	    fchownat(AT_FDCWD, path, owner, group, AT_SYMLINK_NOFOLLOW) < 0)
		return negative_errno();
	if (fchmodat(AT_FDCWD, path, mode, AT_SYMLINK_NOFOLLOW) < 0)
		return negative_errno();
	return 0;
}

int
listener_open_unix(const char *address, int type, mode_t mode, uid_t owner, gid_t group,
		   int backlog, int *ret_fd)
{
	struct sockaddr_un sa;
	socklen_t len;
	bool is_file = address[0] != '@';
	int r;

	r = listener_sockaddr(address, &sa, &len);
	if (r < 0)
		return r;
	if (is_file) {
		r = probe_existing(&sa, len, type);
		if (r < 0)
			return r;
		if (unlink(sa.sun_path) < 0 && errno != ENOENT)
			return negative_errno();
	}

	_cleanup_close_ int fd = socket(AF_UNIX, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return negative_errno();

	/* The master is single-threaded, so changing the umask around bind() races nobody. */
	mode_t old = umask(0777);
	r = bind(fd, (const struct sockaddr *)&sa, len);
	if (r < 0)
		r = negative_errno();
	umask(old);
	if (r < 0)
		return r;

	if (is_file) {
		r = listener_set_perms(sa.sun_path, mode, owner, group);
		if (r < 0) {
			(void)unlink(sa.sun_path);
			return r;
		}
	}
	if (listen(fd, backlog) < 0) {
		r = negative_errno();
		if (is_file)
			(void)unlink(sa.sun_path);
		return r;
	}
	*ret_fd = TAKE_FD(fd);
	return 0;
}

int
listener_open_tcp(const char *address, int backlog, int *ret_fd)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV };
	struct addrinfo *ai = NULL;
	const char *colon;
	int one = 1, r;

	if (strncmp(address, "tcp:", 4) != 0 || !(colon = strrchr(address + 4, ':')))
		return -EINVAL;
	_cleanup_free_ char *host = strndup(address + 4, (size_t)(colon - address - 4));
	if (!host)
		return -ENOMEM;
	if (getaddrinfo(host, colon + 1, &hints, &ai) != 0 || !ai)
		return -EINVAL;

	_cleanup_close_ int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	r = fd < 0 ? negative_errno() : 0;
	if (r == 0 && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
		r = negative_errno();
	if (r == 0 && bind(fd, ai->ai_addr, ai->ai_addrlen) < 0)
		r = negative_errno();
	if (r == 0 && listen(fd, backlog) < 0)
		r = negative_errno();
	freeaddrinfo(ai);
	if (r < 0)
		return r;
	*ret_fd = TAKE_FD(fd);
	return 0;
}

int
listener_check_fd(int fd, int family, int type)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	int v;
	socklen_t vl = sizeof(v);

	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &vl) < 0)
		return errno == ENOTSOCK ? 0 : negative_errno();
	if (v != type)
		return 0;
	vl = sizeof(v);
	if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &vl) < 0)
		return negative_errno();
	if (!v)
		return 0;
	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
		return negative_errno();
	if (family == AF_INET)
		return ss.ss_family == AF_INET || ss.ss_family == AF_INET6;
	return ss.ss_family == family;
}

int
listener_unlink(const char *path)
{
	struct stat st;

	if (lstat(path, &st) < 0)
		return negative_errno();
	if (!S_ISSOCK(st.st_mode))
		return -EEXIST;
	if (unlink(path) < 0)
		return negative_errno();
	return 0;
}
