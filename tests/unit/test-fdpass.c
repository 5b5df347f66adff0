/* SPDX-License-Identifier: MIT */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "fd-util.h"
#include "fdpass.h"

static void
pair(int type, int sv[2])
{
	assert_int_equal(socketpair(AF_UNIX, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv), 0);
}

/* Are a and b the same open file?  A pipe end we passed must come back as itself. */
static void
assert_same_file(int a, int b)
{
	assert_int_equal(fcntl(b, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
	assert_int_equal(write(a, "z", 1), 1);
	char c = 0;
	assert_int_equal(read(b, &c, 1), 1);
	assert_int_equal(c, 'z');
}

static void
test_one_fd_with_data(void **state)
{
	int sv[2], p[2], got[4] = { -1, -1, -1, -1 };
	size_t n_fds = 99;
	char buf[16];

	(void)state;
	pair(SOCK_SEQPACKET, sv);
	assert_int_equal(pipe(p), 0);
	assert_int_equal(udsd_fdpass_send(sv[0], "hello", 5, &p[0], 1), 5);
	assert_int_equal(udsd_fdpass_recv(sv[1], buf, sizeof(buf), got, 4, &n_fds), 5);
	assert_memory_equal(buf, "hello", 5);
	assert_int_equal(n_fds, 1);
	assert_true(got[0] >= 0 && got[0] != p[0]);
	assert_same_file(p[1], got[0]);
	close_many(got, 1);
	close_many(p, 2);
	close_many(sv, 2);
}

static void
test_data_without_fd(void **state)
{
	int sv[2], got[4];
	size_t n_fds = 99;
	char buf[16];

	(void)state;
	pair(SOCK_SEQPACKET, sv);
	assert_int_equal(udsd_fdpass_send(sv[0], "abc", 3, NULL, 0), 3);
	assert_int_equal(udsd_fdpass_recv(sv[1], buf, sizeof(buf), got, 4, &n_fds), 3);
	assert_int_equal(n_fds, 0);
	close_many(sv, 2);
}

static void
test_empty_message(void **state)
{
	int sv[2], got[4], fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	size_t n_fds = 99;
	char buf[16];

	(void)state;
	pair(SOCK_SEQPACKET, sv);
	/* An empty message with an fd still carries the fd. */
	assert_int_equal(udsd_fdpass_send(sv[0], "", 0, &fd, 1), 0);
	assert_int_equal(udsd_fdpass_recv(sv[1], buf, sizeof(buf), got, 4, &n_fds), 0);
	assert_int_equal(n_fds, 1);
	close_many(got, 1);
	safe_close(fd);
	close_many(sv, 2);
}

static void
test_many_fds_batch(void **state)
{
	int sv[2], fds[200], got[FDPASS_MAX_FDS];
	size_t n_fds = 0;
	char buf[8];
	int before;

	(void)state;
	pair(SOCK_SEQPACKET, sv);
	for (int i = 0; i < 200; i++)
		fds[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
	before = fd_count_open();
	assert_int_equal(udsd_fdpass_send(sv[0], "x", 1, fds, 200), 1);
	assert_int_equal(udsd_fdpass_recv(sv[1], buf, sizeof(buf), got, FDPASS_MAX_FDS, &n_fds), 1);
	assert_int_equal(n_fds, 200);
	assert_int_equal(fd_count_open(), before + 200);
	close_many(got, 200);
	assert_int_equal(fd_count_open(), before);
	close_many(fds, 200);
	close_many(sv, 2);
	assert_int_equal(udsd_fdpass_send(sv[0], "x", 1, fds, FDPASS_MAX_FDS + 1), -EINVAL);
}

/* Fewer fd slots than fds sent: the ones that arrived are closed, none leaks, ret_ untouched. */
static void
test_truncated_control(void **state)
{
	int sv[2], fds[8], got[2] = { -999, -999 };
	size_t n_fds = 12345;
	char buf[8];
	int before;

	(void)state;
	pair(SOCK_SEQPACKET, sv);
	for (int i = 0; i < 8; i++)
		fds[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
	before = fd_count_open();
	assert_int_equal(udsd_fdpass_send(sv[0], "x", 1, fds, 8), 1);
	assert_int_equal(udsd_fdpass_recv(sv[1], buf, sizeof(buf), got, 2, &n_fds), -EXFULL);
	assert_int_equal(n_fds, 12345);
	assert_int_equal(fd_count_open(), before);
	/* No room for fds at all: the same. */
	assert_int_equal(udsd_fdpass_send(sv[0], "x", 1, fds, 8), 1);
	assert_int_equal(udsd_fdpass_recv(sv[1], buf, sizeof(buf), got, 0, &n_fds), -EXFULL);
	assert_int_equal(fd_count_open(), before);
	close_many(fds, 8);
	close_many(sv, 2);
}

static void
test_truncated_data(void **state)
{
	int sv[2], fd = open("/dev/null", O_RDONLY | O_CLOEXEC), got[2];
	size_t n_fds = 7;
	char buf[4];
	int before;

	(void)state;
	pair(SOCK_SEQPACKET, sv);
	before = fd_count_open();
	assert_int_equal(udsd_fdpass_send(sv[0], "0123456789", 10, &fd, 1), 10);
	assert_int_equal(udsd_fdpass_recv(sv[1], buf, sizeof(buf), got, 2, &n_fds), -EMSGSIZE);
	assert_int_equal(n_fds, 7);
	assert_int_equal(fd_count_open(), before);
	safe_close(fd);
	close_many(sv, 2);
}

static void
test_eagain(void **state)
{
	int sv[2], got[1];
	size_t n_fds;
	char buf[4096] = { 0 };
	ssize_t r;

	(void)state;
	pair(SOCK_SEQPACKET, sv);
	assert_int_equal(udsd_fdpass_recv(sv[1], buf, sizeof(buf), got, 1, &n_fds), -EAGAIN);
	while ((r = udsd_fdpass_send(sv[0], buf, sizeof(buf), NULL, 0)) > 0)
		;
	assert_int_equal(r, -EAGAIN);
	close_many(sv, 2);
}

static void
test_peer_closed(void **state)
{
	int sv[2], got[1];
	size_t n_fds = 5;
	char buf[8];

	(void)state;
	pair(SOCK_SEQPACKET, sv);
	safe_close(sv[0]);
	assert_int_equal(udsd_fdpass_recv(sv[1], buf, sizeof(buf), got, 1, &n_fds), 0);
	assert_int_equal(n_fds, 0);
	assert_int_equal(udsd_fdpass_send(sv[1], "x", 1, NULL, 0), -EPIPE);
	safe_close(sv[1]);
}

/* Across a real fork: the child sends its own pipe's write end and exits mid-conversation. */
static void
test_fork_and_peer_exit(void **state)
{
	int sv[2], got[1];
	size_t n_fds;
	char buf[8];
	pid_t pid;

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int p[2];
		if (pipe(p) < 0 || write(p[1], "child", 5) != 5)
			_exit(1);
		_exit(udsd_fdpass_send(sv[1], "F", 1, &p[0], 1) == 1 ? 0 : 1);
	}
	safe_close(sv[1]);
	assert_int_equal(udsd_fdpass_recv(sv[0], buf, sizeof(buf), got, 1, &n_fds), 1);
	assert_int_equal(n_fds, 1);
	assert_int_equal(read(got[0], buf, 5), 5);
	assert_memory_equal(buf, "child", 5);
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	assert_int_equal(udsd_fdpass_recv(sv[0], buf, sizeof(buf), got + 0, 1, &n_fds), 0);
	safe_close(got[0]);
	safe_close(sv[0]);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_one_fd_with_data),  cmocka_unit_test(test_data_without_fd),
		cmocka_unit_test(test_empty_message),	  cmocka_unit_test(test_many_fds_batch),
		cmocka_unit_test(test_truncated_control), cmocka_unit_test(test_truncated_data),
		cmocka_unit_test(test_eagain),		  cmocka_unit_test(test_peer_closed),
		cmocka_unit_test(test_fork_and_peer_exit),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
