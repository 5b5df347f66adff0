/* SPDX-License-Identifier: MIT */
#include <dirent.h>
#include <fcntl.h>

#include "fd-util.h"

/*
 * Close fd and return -EBADF, so "fd = safe_close(fd);" both closes and resets.
 * EINTR is ignored on purpose: on Linux the descriptor is released before close()
 * can be interrupted, so retrying could close an fd another thread just opened.
 * errno is preserved so that callers can close on an error path and still report.
 */
int
safe_close(int fd)
{
	if (fd >= 0) {
		int saved = errno;

		(void)close(fd);
		errno = saved;
	}
	return -EBADF;
}

void
close_many(const int *fds, size_t n)
{
	for (size_t i = 0; i < n; i++)
		safe_close(fds[i]);
}

static int
fd_update_flag(int fd, int get, int set, int flag, bool on)
{
	int flags = fcntl(fd, get);

	if (flags < 0)
		return negative_errno();
	int nflags = on ? flags | flag : flags & ~flag;
	if (nflags != flags && fcntl(fd, set, nflags) < 0)
		return negative_errno();
	return 0;
}

int
fd_set_nonblock(int fd, bool nonblock)
{
	return fd_update_flag(fd, F_GETFL, F_SETFL, O_NONBLOCK, nonblock);
}

int
fd_set_cloexec(int fd, bool cloexec)
{
	return fd_update_flag(fd, F_GETFD, F_SETFD, FD_CLOEXEC, cloexec);
}

/* Number of open descriptors of this process, for leak checks in tests and /status. */
int
fd_count_open(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	if (!d)
		return negative_errno();
	for (struct dirent *de; (de = readdir(d));)
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1; /* the directory's own fd */
}
