/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <netdb.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

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

void
listener_file_done(struct listener_file *f)
{
	f->dir_fd = safe_close(f->dir_fd);
	free(f->name);
	f->name = NULL;
}

/* Name a directory by its fd, for an error message: where it is now, wherever it was. */
static void
dir_describe(int fd, char *buf, size_t len)
{
	char link[64];
	ssize_t n;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, buf, len - 1);
	if (n <= 0)
		snprintf(buf, len, "(a directory above it)");
	else
		buf[n] = 0;
}

static const char *
dir_unsafe(const struct stat *st, uid_t me, char *buf, size_t len)
{
	if (st->st_uid != 0 && st->st_uid != me) {
		snprintf(buf, len, "owned by uid %u", (unsigned)st->st_uid);
		return buf;
	}
	/* Group-writable counts: every member of the group is someone else. */
	if ((st->st_mode & (S_IWGRP | S_IWOTH)) && !(st->st_mode & S_ISVTX))
		return "writable by others and not sticky";
	return NULL;
}

int
listener_check_dir(int dir_fd, char *err, size_t errlen)
{
	_cleanup_close_ int fd = openat(dir_fd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
	struct stat st, up_st;
	uid_t me = geteuid();
	char owner[32], where[PATH_MAX];

	if (fd < 0 || fstat(fd, &st) < 0)
		return negative_errno();
	for (;;) {
		const char *why = dir_unsafe(&st, me, owner, sizeof(owner));
		if (why) {
			dir_describe(fd, where, sizeof(where));
			if (err)
				snprintf(err, errlen, "directory %s is %s", where, why);
			return -EPERM;
		}
		/* Walk up through "..": the directories that really hold the socket, symlinks resolved. */
		_cleanup_close_ int up = openat(fd, "..", O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (up < 0 || fstat(up, &up_st) < 0)
			return negative_errno();
		if (up_st.st_dev == st.st_dev && up_st.st_ino == st.st_ino)
			return 0; /* "/" is its own parent */
		safe_close(fd);
		fd = TAKE_FD(up);
		st = up_st;
	}
}

/* Open the directory of path for good: from now on the socket is reached through it alone. */
static int
open_parent(const char *path, struct listener_file *ret)
{
	const char *slash = strrchr(path, '/');
	_cleanup_free_ char *dir = NULL, *name = NULL;

	if (!slash)
		dir = strdup(".");
	else
		dir = slash == path ? strdup("/") : strndup(path, (size_t)(slash - path));
	name = strdup(slash ? slash + 1 : path);
	if (!dir || !name)
		return -ENOMEM;
	if (!*name || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return -EISDIR;
	int fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return negative_errno();
	*ret = (struct listener_file){ .dir_fd = fd, .name = TAKE_PTR(name) };
	return 0;
}

/*
 * bind() and connect() take no directory fd: step into dir_fd for the call,
 * so that the name is looked up there and nowhere else.  The master is
 * single-threaded (as for the umask around bind), so nobody sees the cwd move.
 */
static int
sock_at(int dir_fd, int fd, const char *name, bool do_bind)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t n = strlen(name);
	int r;

	if (n >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	memcpy(sa.sun_path, name, n + 1);
	_cleanup_close_ int cwd = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (cwd < 0 || fchdir(dir_fd) < 0)
		return negative_errno();
	socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
	r = do_bind ? bind(fd, (const struct sockaddr *)&sa, len) :
		      connect(fd, (const struct sockaddr *)&sa, len);
	r = r < 0 ? negative_errno() : 0;
	/* The config file and plugin paths may be relative: a wrong cwd would be a silent bug. */
	if (fchdir(cwd) < 0)
		abort();
	return r;
}

/*
 * Is something accepting at this socket file?  0: no (stale), -EADDRINUSE:
 * yes, -EEXIST: not a socket, -errno: could not tell (and so must not remove).
 */
static int
probe_existing(const struct listener_file *f, int type)
{
	struct stat st;
	int r;

	if (fstatat(f->dir_fd, f->name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : negative_errno();
	if (!S_ISSOCK(st.st_mode))
		return -EEXIST;

	_cleanup_close_ int fd = socket(AF_UNIX, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return negative_errno();
	r = sock_at(f->dir_fd, fd, f->name, false);
	/* EPROTOTYPE: a live socket of another type; EAGAIN: live with a full backlog. */
	if (r == 0 || r == -EPROTOTYPE || r == -EAGAIN)
		return -EADDRINUSE;
	return r == -ECONNREFUSED ? 0 : r;
}

/* An O_PATH fd of f's file, only if its name still leads to the socket udsd bound. */
static int
open_ours(const struct listener_file *f, int *ret_fd)
{
	struct stat st;

	_cleanup_close_ int fd = openat(f->dir_fd, f->name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? -ESTALE : negative_errno();
	if (fstat(fd, &st) < 0)
		return negative_errno();
	if (!S_ISSOCK(st.st_mode) || st.st_dev != f->dev || st.st_ino != f->ino)
		return -ESTALE;
	*ret_fd = TAKE_FD(fd);
	return 0;
}

#ifndef __NR_fchmodat2
#define __NR_fchmodat2 452
#endif

/*
 * fchmod() refuses O_PATH fds (EBADF).  fchmodat2(AT_EMPTY_PATH) takes them
 * (Linux 6.6); before it, or under a seccomp filter that does not know it,
 * chmod the fd's /proc magic link, which leads to the same inode.
 */
static int
chmod_fd(int fd, mode_t mode)
{
	char link[64];

	if (syscall(__NR_fchmodat2, fd, "", mode, AT_EMPTY_PATH) == 0)
		return 0;
	if (errno != ENOSYS && errno != EPERM)
		return negative_errno();
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	return chmod(link, mode) < 0 ? negative_errno() : 0;
}

int
listener_set_perms(const struct listener_file *f, mode_t mode, uid_t owner, gid_t group)
{
	_cleanup_close_ int fd = -EBADF;
	int r;

	r = open_ours(f, &fd);
	if (r < 0)
		return r;
	if ((owner != (uid_t)-1 || group != (gid_t)-1) &&
	    fchownat(fd, "", owner, group, AT_EMPTY_PATH) < 0)
		return negative_errno();
	return chmod_fd(fd, mode);
}

int
listener_unlink(const struct listener_file *f)
{
	_cleanup_close_ int fd = -EBADF;
	int r;

	if (f->dir_fd < 0)
		return -EBADF;
	/* Between this check and the unlink only the directory's owners (root, us) can act. */
	r = open_ours(f, &fd);
	if (r < 0)
		return r;
	return unlinkat(f->dir_fd, f->name, 0) < 0 ? negative_errno() : 0;
}

/*
 * Right after bind(), in a directory only root or we can write to: the name
 * must lead to a socket of ours, mode 0000 (the umask), and that inode is the
 * one udsd bound.
 */
static int
identify_bound(struct listener_file *f)
{
	struct stat st;

	if (fstatat(f->dir_fd, f->name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return negative_errno();
	if (!S_ISSOCK(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 07777) != 0)
		return -ESTALE;
	f->dev = st.st_dev;
	f->ino = st.st_ino;
	return 0;
}

/*
 * A datagram socket's address is where its replies come from, and clients
 * (socat's UNIX-SENDTO, for one) drop replies from any address but the one
 * they sent to: bound by its name in dir_fd, the socket would answer from
 * "name", not from its path.  So bind it by the path as written, which is as
 * safe only while that path leads to dir_fd with no symlink on the way:
 * listener_check_dir() then guarantees that nobody but root and us can change
 * where it leads.  -ELOOP if it goes through a symlink.
 */
static int
bind_path(const struct listener_file *f, int fd, const char *address)
{
	struct open_how how = { .flags = O_PATH | O_DIRECTORY | O_CLOEXEC,
				.resolve = RESOLVE_NO_SYMLINKS };
	const char *slash = strrchr(address, '/');
	_cleanup_free_ char *dir = strndup(address, slash == address ? 1 : (size_t)(slash - address));
	struct sockaddr_un sa;
	struct stat a, b;
	socklen_t len;
	int r;

	if (!dir)
		return -ENOMEM;
	_cleanup_close_ int dfd = (int)syscall(SYS_openat2, AT_FDCWD, dir, &how, sizeof(how));
	if (dfd < 0)
		return errno == ELOOP || errno == EXDEV ? -ELOOP : negative_errno();
	if (fstat(dfd, &a) < 0 || fstat(f->dir_fd, &b) < 0)
		return negative_errno();
	if (a.st_dev != b.st_dev || a.st_ino != b.st_ino)
		return -ELOOP;
	r = listener_sockaddr(address, &sa, &len);
	if (r < 0)
		return r;
	return bind(fd, (const struct sockaddr *)&sa, len) < 0 ? negative_errno() : 0;
}

static int
bind_file(struct listener_file *f, int fd, const char *address, int type, char *err,
	  size_t errlen)
{
	int r;

	r = listener_check_dir(f->dir_fd, err, errlen);
	if (r < 0)
		return r;
	r = probe_existing(f, type);
	if (r < 0)
		return r;
	if (unlinkat(f->dir_fd, f->name, 0) < 0 && errno != ENOENT)
		return negative_errno();
	/* The master is single-threaded, so changing the umask around bind() races nobody. */
	mode_t old = umask(0777);
	r = type == SOCK_DGRAM ? bind_path(f, fd, address) : sock_at(f->dir_fd, fd, f->name, true);
	umask(old);
	if (r < 0)
		return r;
	return identify_bound(f);
}

static int
bind_abstract(int fd, const char *address)
{
	struct sockaddr_un sa;
	socklen_t len;
	int r;

	r = listener_sockaddr(address, &sa, &len);
	if (r < 0)
		return r;
	return bind(fd, (const struct sockaddr *)&sa, len) < 0 ? negative_errno() : 0;
}

int
listener_open_unix(const char *address, int type, mode_t mode, uid_t owner, gid_t group,
		   int backlog, int *ret_fd, struct listener_file *ret_file, char *err,
		   size_t errlen)
{
	_cleanup_(listener_file_done) struct listener_file f = LISTENER_FILE_NULL;
	bool is_file = address[0] != '@';
	struct sockaddr_un sa;
	socklen_t len;
	int r;

	r = listener_sockaddr(address, &sa, &len);
	if (r < 0)
		return r;
	if (is_file && (r = open_parent(address, &f)) < 0)
		return r;
	_cleanup_close_ int fd = socket(AF_UNIX, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return negative_errno();
	/* Before bind(): a datagram queued without credentials could not be checked. */
	if (type == SOCK_DGRAM && (r = listener_pass_credentials(fd)) < 0)
		return r;
	r = is_file ? bind_file(&f, fd, address, type, err, errlen) : bind_abstract(fd, address);
	if (r < 0)
		return r;
	if (is_file)
		r = listener_set_perms(&f, mode, owner, group);
	/* A datagram socket is bound and that is all: nothing listens or accepts. */
	if (r == 0 && type != SOCK_DGRAM && listen(fd, backlog) < 0)
		r = negative_errno();
	if (r < 0) {
		if (is_file)
			(void)listener_unlink(&f);
		return r;
	}
	*ret_fd = TAKE_FD(fd);
	if (ret_file) {
		*ret_file = f;
		f = LISTENER_FILE_NULL;
	}
	return 0;
}

/* The name fd is bound to, as getsockname() says: for a file, what bind() was given. */
static int
bound_name(int fd, struct sockaddr_un *ret, socklen_t *ret_len)
{
	socklen_t len = sizeof(*ret);

	if (getsockname(fd, (struct sockaddr *)ret, &len) < 0)
		return negative_errno();
	if (ret->sun_family != AF_UNIX || len <= offsetof(struct sockaddr_un, sun_path))
		return -ESTALE;
	*ret_len = len;
	return 0;
}

static bool
bound_as(const struct sockaddr_un *sa, size_t n, const char *name)
{
	return strnlen(sa->sun_path, n) == strlen(name) && strncmp(sa->sun_path, name, n) == 0;
}

int
listener_adopt_unix(int fd, const char *address, struct listener_file *ret_file, char *err,
		    size_t errlen)
{
	_cleanup_(listener_file_done) struct listener_file f = LISTENER_FILE_NULL;
	struct sockaddr_un sa, want;
	socklen_t len, want_len;
	struct stat st;
	size_t n;
	int r;

	r = listener_sockaddr(address, &want, &want_len);
	if (r >= 0)
		r = bound_name(fd, &sa, &len);
	if (r < 0)
		return r;
	n = len - offsetof(struct sockaddr_un, sun_path);
	if (address[0] == '@')
		return len == want_len && memcmp(sa.sun_path, want.sun_path, n) == 0 ? 0 : -ESTALE;
	r = open_parent(address, &f);
	if (r < 0)
		return r;
	/*
	 * Bound through its directory (sock_at()), the kernel kept the name
	 * alone; a datagram socket is bound by its path (bind_path()).
	 */
	if (!bound_as(&sa, n, f.name) && !bound_as(&sa, n, address))
		return -ESTALE;
	r = listener_check_dir(f.dir_fd, err, errlen);
	if (r < 0)
		return r;
	if (fstatat(f.dir_fd, f.name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? -ESTALE : negative_errno();
	if (!S_ISSOCK(st.st_mode) || st.st_uid != geteuid())
		return -ESTALE;
	f.dev = st.st_dev;
	f.ino = st.st_ino;
	*ret_file = f;
	f = LISTENER_FILE_NULL;
	return 0;
}

int
listener_pass_credentials(int fd)
{
	static const int one = 1;

	return setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) < 0 ? negative_errno() : 0;
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

static int
describe_inet(const struct sockaddr_storage *ss, char *buf, size_t size)
{
	const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
	const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
	char host[INET6_ADDRSTRLEN];
	bool v6 = ss->ss_family == AF_INET6;

	if (!inet_ntop(ss->ss_family, v6 ? (const void *)&in6->sin6_addr : (const void *)&in->sin_addr,
		       host, sizeof(host)))
		return negative_errno();
	if ((size_t)snprintf(buf, size, v6 ? "tcp:[%s]:%u" : "tcp:%s:%u", host,
			     ntohs(v6 ? in6->sin6_port : in->sin_port)) >= size)
		return -ENAMETOOLONG;
	return 0;
}

int
listener_describe(int fd, char *buf, size_t size, mode_t *ret_mode)
{
	struct sockaddr_storage ss;
	const struct sockaddr_un *un = (const struct sockaddr_un *)&ss;
	socklen_t len = sizeof(ss);
	mode_t mode = (mode_t)-1;
	struct stat st;
	size_t n;
	int r;

	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
		return negative_errno();
	if (ss.ss_family == AF_INET || ss.ss_family == AF_INET6) {
		r = describe_inet(&ss, buf, size);
		if (r < 0)
			return r;
		*ret_mode = mode;
		return 0;
	}
	if (ss.ss_family != AF_UNIX || len <= offsetof(struct sockaddr_un, sun_path))
		return -EAFNOSUPPORT;
	n = len - offsetof(struct sockaddr_un, sun_path);
	if (un->sun_path[0] == '\0') { /* abstract: the name is every byte after the NUL */
		if (n > size - 1)
			return -ENAMETOOLONG;
		buf[0] = '@';
		memcpy(buf + 1, un->sun_path + 1, n - 1);
		buf[n] = '\0';
	} else {
		n = strnlen(un->sun_path, n);
		if (n >= size)
			return -ENAMETOOLONG;
		memcpy(buf, un->sun_path, n);
		buf[n] = '\0';
		if (stat(buf, &st) == 0 && S_ISSOCK(st.st_mode))
			mode = st.st_mode & 07777;
	}
	*ret_mode = mode;
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
	/* A datagram socket never listens: being bound is all it takes. */
	if (type != SOCK_DGRAM && getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &vl) < 0)
		return negative_errno();
	if (type != SOCK_DGRAM && !v)
		return 0;
	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
		return negative_errno();
	if (family == AF_INET)
		return ss.ss_family == AF_INET || ss.ss_family == AF_INET6;
	return ss.ss_family == family;
}
