/* SPDX-License-Identifier: MIT */
#pragma once

#include <stddef.h>
#include <sys/types.h>

/* The kernel refuses more than SCM_MAX_FD (253) descriptors in one message. */
#define FDPASS_MAX_FDS 253

/*
 * Send len bytes and n_fds descriptors (0..FDPASS_MAX_FDS) in one sendmsg().
 * Returns the number of bytes sent or -errno (-EAGAIN on a full non-blocking
 * socket).  The caller keeps its descriptors either way; on success the
 * receiver owns duplicates of them.
 */
__attribute__((visibility("default"))) ssize_t
udsd_fdpass_send(int sock, const void *buf, size_t len, const int *fds, size_t n_fds);

/*
 * Receive one message into buf and up to max_fds descriptors into fds, with
 * MSG_CMSG_CLOEXEC.  Returns the byte count (0 means end of file, or an empty
 * message on a SOCK_SEQPACKET socket) and writes the descriptor count to
 * *ret_n_fds.  A truncated message (data or descriptors) is an error:
 * -EMSGSIZE or -EXFULL, and every descriptor that did arrive is closed.  No
 * error path leaves a received descriptor open.
 */
__attribute__((visibility("default"))) ssize_t
udsd_fdpass_recv(int sock, void *buf, size_t len, int *fds, size_t max_fds, size_t *ret_n_fds);
