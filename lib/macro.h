/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * The half-dozen ownership helpers the rest of the tree relies on.  A variable
 * declared _cleanup_(closep) is closed when it goes out of scope; TAKE_FD()
 * moves ownership out so that the cleanup does nothing.
 */

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _unused_ __attribute__((unused))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _noreturn_ __attribute__((noreturn))
#define _likely_(x) __builtin_expect(!!(x), 1)
#define _unlikely_(x) __builtin_expect(!!(x), 0)

#define ELEMENTSOF(a) (sizeof(a) / sizeof((a)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

#define TAKE_FD(fd)                     \
	__extension__({                              \
		int _fd_ = (fd);        \
		(fd) = -EBADF;          \
		_fd_;                   \
	})

#define TAKE_PTR(p)                             \
	__extension__({                                      \
		__typeof__(p) _p_ = (p);        \
		(p) = NULL;                     \
		_p_;                            \
	})

/* Returns -errno of the last libc call, never 0, so callers can "return negative_errno();". */
static inline int
negative_errno(void)
{
	return errno > 0 ? -errno : -EIO;
}

static inline void
freep(void *p)
{
	free(*(void **)p);
}

#define _cleanup_free_ _cleanup_(freep)
