/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* A socket systemd passed us (LISTEN_FDS), with its FileDescriptorName=. */
struct sockact_fd {
	int fd;
	char *name;
	bool used;
};

/*
 * Take the sockets systemd passed, as sd_listen_fds_with_names() does (it
 * checks LISTEN_PID and unsets the variables, so workers never see them).
 * Returns the count (0: not socket-activated) or -errno.
 */
int sockact_take(struct sockact_fd **ret, size_t *ret_n);
void sockact_free(struct sockact_fd *fds, size_t n);
