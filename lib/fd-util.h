/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>

#include "macro.h"

int safe_close(int fd);
void close_many(const int *fds, size_t n);
int fd_set_nonblock(int fd, bool nonblock);
int fd_set_cloexec(int fd, bool cloexec);
int fd_count_open(void);

static inline void
closep(int *fd)
{
	safe_close(*fd);
}

#define _cleanup_close_ _cleanup_(closep)
