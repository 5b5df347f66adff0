/* SPDX-License-Identifier: MIT */
#include <fcntl.h>
#include <sys/socket.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "daemon.h"
#include "fd-util.h"

static void
test_roundtrip(void **state)
{
	int m = -1, w = -1, fds[3], got[CHANNEL_MAX_FDS];
	uint8_t lis[3] = { 0, 2, 1 };
	struct channel_msg msg;

	(void)state;
	assert_int_equal(channel_pair(&m, &w), 0);
	for (int i = 0; i < 3; i++)
		fds[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
	assert_int_equal(channel_send(m, CHANNEL_FDS, 0, fds, lis, 3), 0);
	assert_int_equal(channel_send(m, CHANNEL_DRAIN, 0, NULL, NULL, 0), 0);
	assert_int_equal(channel_send(w, CHANNEL_CLOSED, 77, NULL, NULL, 0), 0);
	assert_int_equal(channel_recv(w, 3, &msg, got), 1);
	assert_int_equal(msg.type, CHANNEL_FDS);
	assert_int_equal(msg.count, 3);
	assert_memory_equal(msg.listener, lis, 3);
	close_many(got, 3);
	assert_int_equal(channel_recv(w, 3, &msg, got), 1);
	assert_int_equal(msg.type, CHANNEL_DRAIN);
	assert_int_equal(channel_recv(w, 3, &msg, got), -EAGAIN);
	assert_int_equal(channel_recv(m, 3, &msg, got), 1);
	assert_int_equal(msg.type, CHANNEL_CLOSED);
	assert_int_equal(msg.arg, 77);
	close_many(fds, 3);
	safe_close(m);
	assert_int_equal(channel_recv(w, 3, &msg, got), 0);
	safe_close(w);
}

/* A listener index the worker does not have: refused, and the fds closed. */
static void
test_bad_listener_closes_fds(void **state)
{
	int m = -1, w = -1, fd = open("/dev/null", O_RDONLY | O_CLOEXEC), got[CHANNEL_MAX_FDS];
	uint8_t lis = 5;
	struct channel_msg msg;
	int before;

	(void)state;
	assert_int_equal(channel_pair(&m, &w), 0);
	before = fd_count_open();
	assert_int_equal(channel_send(m, CHANNEL_FDS, 0, &fd, &lis, 1), 0);
	assert_int_equal(channel_recv(w, 2, &msg, got), -EBADMSG);
	assert_int_equal(fd_count_open(), before);
	safe_close(fd);
	safe_close(m);
	safe_close(w);
}

/* Issue 18: the dgram sockets travel like clients, in a message type of their own. */
static void
test_dgram(void **state)
{
	int m = -1, w = -1, fds[2], got[CHANNEL_MAX_FDS];
	uint8_t lis[2] = { 3, 1 };
	struct channel_msg msg;

	(void)state;
	assert_int_equal(channel_pair(&m, &w), 0);
	for (int i = 0; i < 2; i++)
		fds[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
	assert_int_equal(channel_send(m, CHANNEL_DGRAM, 0, fds, lis, 2), 0);
	assert_int_equal(channel_recv(w, 4, &msg, got), 1);
	assert_int_equal(msg.type, CHANNEL_DGRAM);
	assert_int_equal(msg.count, 2);
	assert_memory_equal(msg.listener, lis, 2);
	close_many(got, 2);
	/* One listener index too many for the worker's config: refused, nothing left open. */
	int before = fd_count_open();
	assert_int_equal(channel_send(m, CHANNEL_DGRAM, 0, fds, lis, 2), 0);
	assert_int_equal(channel_recv(w, 3, &msg, got), -EBADMSG);
	assert_int_equal(fd_count_open(), before);
	/* And none without a descriptor. */
	assert_int_equal(channel_send(m, CHANNEL_DGRAM, 0, NULL, lis, 1), 0);
	assert_int_equal(channel_recv(w, 4, &msg, got), -EBADMSG);
	close_many(fds, 2);
	safe_close(m);
	safe_close(w);
}

static void
test_decode_rejects(void **state)
{
	struct channel_msg msg = { .type = 999 };
	uint8_t b[16] = { 0 };
	uint16_t t, n;

	(void)state;
	assert_int_equal(channel_decode(b, 4, 0, 1, &msg), -EBADMSG); /* short */
	t = 42;
	memcpy(b, &t, 2);
	assert_int_equal(channel_decode(b, 8, 0, 1, &msg), -EBADMSG); /* unknown type */
	t = CHANNEL_FDS;
	n = 2;
	memcpy(b, &t, 2);
	memcpy(b + 2, &n, 2);
	assert_int_equal(channel_decode(b, 10, 1, 1, &msg), -EBADMSG); /* count != fds */
	assert_int_equal(channel_decode(b, 9, 2, 1, &msg), -EBADMSG);  /* short payload */
	assert_int_equal(channel_decode(b, 10, 2, 1, &msg), 0);
	t = CHANNEL_DRAIN;
	memcpy(b, &t, 2);
	assert_int_equal(channel_decode(b, 10, 2, 1, &msg), -EBADMSG); /* drain carries no fds */
	assert_int_equal(channel_decode(b, 10, 0, 1, &msg), -EBADMSG); /* more bytes than listeners */
	b[8] = 2;
	b[9] = 0;
	assert_int_equal(channel_decode(b, 10, 0, 2, &msg), -EBADMSG); /* a byte is 0 or 1 */
	assert_int_equal(msg.type, CHANNEL_FDS); /* untouched by failures */
}

/*
 * Migration: DRAIN names the listeners whose clients come back; the worker
 * hands them back with CHANNEL_MIGRATED, one listener byte per fd, and the
 * bytes the client sent meanwhile wait in the socket, unread.
 */
static void
test_drain_and_migrated(void **state)
{
	int m = -1, w = -1, sv[2], got[CHANNEL_MAX_FDS];
	uint8_t migrate[3] = { 1, 0, 1 }, lis = 2;
	struct channel_msg msg;
	char buf[8];

	(void)state;
	assert_int_equal(channel_pair(&m, &w), 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	assert_int_equal(channel_send(m, CHANNEL_DRAIN, 0, NULL, migrate, 3), 0);
	assert_int_equal(channel_recv(w, 3, &msg, got), 1);
	assert_int_equal(msg.type, CHANNEL_DRAIN);
	assert_int_equal(msg.count, 3);
	assert_memory_equal(msg.listener, migrate, 3);
	/* A worker of the first version gets a DRAIN without bytes: it drains, nothing moves. */
	assert_int_equal(channel_send(m, CHANNEL_DRAIN, 0, NULL, migrate, 0), 0);
	assert_int_equal(channel_recv(w, 3, &msg, got), 1);
	assert_int_equal(msg.count, 0);

	assert_int_equal(write(sv[1], "hi", 2), 2);
	assert_int_equal(channel_send(w, CHANNEL_MIGRATED, 0, &sv[0], &lis, 1), 0);
	safe_close(sv[0]);
	assert_int_equal(channel_recv(m, 3, &msg, got), 1);
	assert_int_equal(msg.type, CHANNEL_MIGRATED);
	assert_int_equal(msg.count, 1);
	assert_int_equal(msg.listener[0], 2);
	assert_int_equal(read(got[0], buf, sizeof(buf)), 2);
	assert_memory_equal(buf, "hi", 2);
	safe_close(got[0]);
	safe_close(sv[1]);
	safe_close(m);
	safe_close(w);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_bad_listener_closes_fds),
		cmocka_unit_test(test_dgram),
		cmocka_unit_test(test_decode_rejects),
		cmocka_unit_test(test_drain_and_migrated),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
