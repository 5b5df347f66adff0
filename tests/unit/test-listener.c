/* SPDX-License-Identifier: MIT */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "fd-util.h"
#include "listener.h"

static char dir[64];

static int
setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/udsd-test-XXXXXX");
	return mkdtemp(dir) ? 0 : -1;
}

static int
teardown(void **state)
{
	char cmd[128];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd);
}

static const char *
path(const char *name)
{
	static char buf[128];
	snprintf(buf, sizeof(buf), "%s/%s", dir, name);
	return buf;
}

static void
test_mode_exact(void **state)
{
	static const mode_t modes[] = { 0600, 0660, 0666, 0640, 0700, 0 };
	struct stat st;
	int fd = -999;

	(void)state;
	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
		assert_int_equal(listener_open_unix(path("m.sock"), SOCK_STREAM, modes[i], (uid_t)-1,
						    (gid_t)-1, 16, &fd, NULL, NULL, 0), 0);
		assert_int_equal(lstat(path("m.sock"), &st), 0);
		assert_true(S_ISSOCK(st.st_mode));
		assert_int_equal(st.st_mode & 07777, modes[i]);
		assert_int_equal(listener_check_fd(fd, AF_UNIX, SOCK_STREAM), 1);
		assert_int_equal(listener_check_fd(fd, AF_UNIX, SOCK_SEQPACKET), 0);
		safe_close(fd);
		assert_int_equal(unlink(path("m.sock")), 0);
	}
}

/* A socket file nobody listens on is replaced; one somebody listens on is left alone. */
static void
test_stale_and_live(void **state)
{
	int a = -999, b = -999;

	(void)state;
	assert_int_equal(listener_open_unix(path("s.sock"), SOCK_STREAM, 0600, -1, -1, 16, &a, NULL, NULL, 0), 0);
	assert_int_equal(listener_open_unix(path("s.sock"), SOCK_STREAM, 0600, -1, -1, 16, &b, NULL, NULL, 0),
			 -EADDRINUSE);
	assert_int_equal(b, -999);
	/* A live socket of another type is live too. */
	assert_int_equal(listener_open_unix(path("s.sock"), SOCK_SEQPACKET, 0600, -1, -1, 16, &b, NULL, NULL, 0),
			 -EADDRINUSE);
	safe_close(a); /* the file stays behind: now stale */
	assert_int_equal(access(path("s.sock"), F_OK), 0);
	assert_int_equal(listener_open_unix(path("s.sock"), SOCK_STREAM, 0600, -1, -1, 16, &b, NULL, NULL, 0), 0);
	assert_int_equal(listener_check_fd(b, AF_UNIX, SOCK_STREAM), 1);
	safe_close(b);
	unlink(path("s.sock"));
}

static void
test_not_a_socket_is_never_touched(void **state)
{
	struct stat st;
	char buf[8] = { 0 };
	int fd = -999;

	(void)state;
	int f = open(path("file"), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
	assert_int_equal(write(f, "keep", 4), 4);
	safe_close(f);
	assert_int_equal(listener_open_unix(path("file"), SOCK_STREAM, 0600, -1, -1, 16, &fd, NULL, NULL, 0), -EEXIST);
	f = open(path("file"), O_RDONLY | O_CLOEXEC);
	assert_int_equal(read(f, buf, sizeof(buf)), 4);
	assert_string_equal(buf, "keep");
	safe_close(f);

	assert_int_equal(mkdir(path("dir"), 0755), 0);
	assert_int_equal(listener_open_unix(path("dir"), SOCK_STREAM, 0600, -1, -1, 16, &fd, NULL, NULL, 0), -EEXIST);
	assert_int_equal(stat(path("dir"), &st), 0);
	assert_true(S_ISDIR(st.st_mode));

	/* A symlink at the path is not followed, even to a stale socket. */
	char target[128];
	snprintf(target, sizeof(target), "%s", path("file"));
	assert_int_equal(symlink(target, path("link")), 0);
	assert_int_equal(listener_open_unix(path("link"), SOCK_STREAM, 0600, -1, -1, 16, &fd, NULL, NULL, 0), -EEXIST);
	assert_int_equal(lstat(path("link"), &st), 0);
	assert_true(S_ISLNK(st.st_mode));
	assert_int_equal(fd, -999);
}

static mode_t
mode_of(const char *p)
{
	struct stat st;

	assert_int_equal(lstat(p, &st), 0);
	return st.st_mode;
}

/* Only the socket udsd bound gets owner and mode, or is removed: not what took its name since. */
static void
test_perms_and_unlink_only_for_our_socket(void **state)
{
	struct listener_file f = LISTENER_FILE_NULL;
	char moved[128];
	int fd = -999;

	(void)state;
	assert_int_equal(listener_open_unix(path("o.sock"), SOCK_STREAM, 0600, -1, -1, 16, &fd, &f,
					    NULL, 0), 0);
	assert_true(f.dir_fd >= 0);
	assert_string_equal(f.name, "o.sock");
	assert_int_equal(listener_set_perms(&f, 0640, -1, -1), 0);
	assert_int_equal(mode_of(path("o.sock")) & 07777, 0640);

	/* A regular file takes the name: left exactly as it is. */
	snprintf(moved, sizeof(moved), "%s", path("o.sock.moved"));
	assert_int_equal(rename(path("o.sock"), moved), 0);
	int g = open(path("o.sock"), O_CREAT | O_WRONLY | O_CLOEXEC, 0755);
	assert_true(g >= 0);
	safe_close(g);
	assert_int_equal(listener_set_perms(&f, 0666, -1, -1), -ESTALE);
	assert_int_equal(mode_of(path("o.sock")) & 07777, 0755);
	assert_int_equal(listener_unlink(&f), -ESTALE);
	assert_true(S_ISREG(mode_of(path("o.sock"))));

	/* Another socket takes the name: not ours either. */
	assert_int_equal(unlink(path("o.sock")), 0);
	int other = -999;
	assert_int_equal(listener_open_unix(path("o.sock"), SOCK_STREAM, 0600, -1, -1, 16, &other,
					    NULL, NULL, 0), 0);
	assert_int_equal(listener_set_perms(&f, 0666, -1, -1), -ESTALE);
	assert_int_equal(mode_of(path("o.sock")) & 07777, 0600);
	assert_int_equal(listener_unlink(&f), -ESTALE);
	assert_int_equal(access(path("o.sock"), F_OK), 0);
	safe_close(other);
	assert_int_equal(unlink(path("o.sock")), 0);

	/* Our socket back under its name: ours again. */
	assert_int_equal(rename(moved, path("o.sock")), 0);
	assert_int_equal(listener_set_perms(&f, 0660, -1, -1), 0);
	assert_int_equal(mode_of(path("o.sock")) & 07777, 0660);
	assert_int_equal(listener_unlink(&f), 0);
	assert_int_equal(access(path("o.sock"), F_OK), -1);
	listener_file_done(&f);
	assert_int_equal(f.dir_fd, -EBADF);
	safe_close(fd);
}

/* The socket is reached through the directory it was bound in, wherever that moves. */
static void
test_moved_directory_and_symlink_in_its_place(void **state)
{
	struct listener_file f = LISTENER_FILE_NULL;
	char sub[128], moved[128], evil[128], p[160];
	int fd = -999;

	(void)state;
	snprintf(sub, sizeof(sub), "%s", path("sub"));
	snprintf(moved, sizeof(moved), "%s", path("sub.moved"));
	snprintf(evil, sizeof(evil), "%s", path("evil"));
	assert_int_equal(mkdir(sub, 0755), 0);
	snprintf(p, sizeof(p), "%s/s.sock", sub);
	assert_int_equal(listener_open_unix(p, SOCK_STREAM, 0600, -1, -1, 16, &fd, &f, NULL, 0), 0);
	assert_int_equal(rename(sub, moved), 0);
	assert_int_equal(mkdir(evil, 0755), 0);
	snprintf(p, sizeof(p), "%s/s.sock", evil);
	int g = open(p, O_CREAT | O_WRONLY | O_CLOEXEC, 0700);
	assert_true(g >= 0);
	safe_close(g);
	assert_int_equal(symlink(evil, sub), 0);

	assert_int_equal(listener_set_perms(&f, 0666, -1, -1), 0);
	assert_int_equal(mode_of(p) & 07777, 0700);
	snprintf(p, sizeof(p), "%s/s.sock", moved);
	assert_int_equal(mode_of(p) & 07777, 0666);
	assert_int_equal(listener_unlink(&f), 0);
	assert_int_equal(access(p, F_OK), -1);
	listener_file_done(&f);
	safe_close(fd);
}

static void
test_unsafe_directory_is_refused(void **state)
{
	struct listener_file f = LISTENER_FILE_NULL;
	char d[128], p[160], err[512] = "", want[512];
	int fd = -999;

	(void)state;
	snprintf(d, sizeof(d), "%s", path("open"));
	snprintf(p, sizeof(p), "%s/s.sock", d);
	assert_int_equal(mkdir(d, 0700), 0);
	snprintf(want, sizeof(want), "directory %s is writable by others and not sticky", d);
	for (mode_t m = 0; m < 2; m++) {
		assert_int_equal(chmod(d, m ? 0770 : 0777), 0);
		assert_int_equal(listener_open_unix(p, SOCK_STREAM, 0600, -1, -1, 16, &fd, &f, err,
						    sizeof(err)), -EPERM);
		assert_string_equal(err, want);
		assert_int_equal(fd, -999);
		assert_int_equal(f.dir_fd, -EBADF);
		assert_int_equal(access(p, F_OK), -1);
	}
	/* Sticky, like /tmp: others may not rename what is not theirs. */
	assert_int_equal(chmod(d, 01777), 0);
	assert_int_equal(listener_open_unix(p, SOCK_STREAM, 0600, -1, -1, 16, &fd, &f, err,
					    sizeof(err)), 0);
	assert_int_equal(listener_check_dir(f.dir_fd, err, sizeof(err)), 0);
	if (geteuid() == 0) {
		/* Owned by another user: that user may do anything in it. */
		assert_int_equal(chmod(d, 0755), 0);
		assert_int_equal(chown(d, 65534, -1), 0);
		assert_int_equal(listener_check_dir(f.dir_fd, err, sizeof(err)), -EPERM);
		snprintf(want, sizeof(want), "directory %s is owned by uid 65534", d);
		assert_string_equal(err, want);
	}
	/* Above it counts too. */
	assert_int_equal(chown(d, geteuid(), -1), 0);
	assert_int_equal(chmod(d, 0755), 0);
	assert_int_equal(chmod(dir, 0777), 0);
	assert_int_equal(listener_check_dir(f.dir_fd, err, sizeof(err)), -EPERM);
	snprintf(want, sizeof(want), "directory %s is writable by others and not sticky", dir);
	assert_string_equal(err, want);
	assert_int_equal(chmod(dir, 0700), 0);
	assert_int_equal(listener_unlink(&f), 0);
	listener_file_done(&f);
	safe_close(fd);
}

static void
test_abstract(void **state)
{
	char name[64];
	int a = -999, b = -999;

	(void)state;
	snprintf(name, sizeof(name), "@udsd-test-%d", (int)getpid());
	assert_int_equal(listener_open_unix(name, SOCK_STREAM, 0600, -1, -1, 16, &a, NULL, NULL, 0), 0);
	assert_int_equal(listener_open_unix(name, SOCK_STREAM, 0600, -1, -1, 16, &b, NULL, NULL, 0), -EADDRINUSE);
	assert_int_equal(listener_check_fd(a, AF_UNIX, SOCK_STREAM), 1);
	safe_close(a);
}

/*
 * A socket back from systemd's fd store is taken only where it is still
 * bound and reachable; the file it returns is the one listener_unlink() may remove.
 */
static void
test_adopt(void **state)
{
	struct listener_file f = LISTENER_FILE_NULL, g = { .dir_fd = -999 };
	struct stat st;
	char name[64];
	int fd = -999, a = -999;

	(void)state;
	assert_int_equal(listener_open_unix(path("a.sock"), SOCK_STREAM, 0600, -1, -1, 16, &fd,
					    NULL, NULL, 0), 0);
	assert_int_equal(listener_adopt_unix(fd, path("b.sock"), &g, NULL, 0), -ESTALE);
	assert_int_equal(g.dir_fd, -999); /* written only on success */
	assert_int_equal(listener_adopt_unix(fd, path("a.sock"), &f, NULL, 0), 0);
	assert_int_equal(lstat(path("a.sock"), &st), 0);
	assert_true(f.ino == st.st_ino && f.dev == st.st_dev);
	assert_int_equal(listener_unlink(&f), 0);
	listener_file_done(&f);
	/* The file is gone: the socket serves nobody there, so it is not taken. */
	assert_int_equal(listener_adopt_unix(fd, path("a.sock"), &g, NULL, 0), -ESTALE);
	safe_close(fd);

	snprintf(name, sizeof(name), "@udsd-adopt-%d", (int)getpid());
	assert_int_equal(listener_open_unix(name, SOCK_STREAM, 0600, -1, -1, 16, &a, NULL, NULL, 0), 0);
	assert_int_equal(listener_adopt_unix(a, name, NULL, NULL, 0), 0);
	name[4] = 'X';
	assert_int_equal(listener_adopt_unix(a, name, NULL, NULL, 0), -ESTALE);
	safe_close(a);
}

/*
 * Issue 18: a datagram socket is bound with its mode, not listening, and a
 * datagram sent to it carries its sender's credentials (SO_PASSCRED set
 * before bind()); a stale one is replaced and a live one left alone.
 */
static void
test_dgram(void **state)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(struct ucred))];
	} control;
	char byte = 0;
	struct iovec iov = { &byte, 1 };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
			     .msg_controllen = sizeof(control.buf) };
	struct sockaddr_un sa;
	socklen_t len;
	struct ucred cred;
	struct stat st;
	int fd = -999, b = -999, c;

	(void)state;
	assert_int_equal(listener_open_unix(path("d.sock"), SOCK_DGRAM, 0620, -1, -1, 16, &fd, NULL,
					    NULL, 0), 0);
	assert_int_equal(lstat(path("d.sock"), &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0620);
	assert_int_equal(listener_check_fd(fd, AF_UNIX, SOCK_DGRAM), 1);
	assert_int_equal(listener_check_fd(fd, AF_UNIX, SOCK_STREAM), 0);
	/* Its address is its path, which replies come from, not its name in the directory. */
	len = sizeof(sa);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
	assert_string_equal(sa.sun_path, path("d.sock"));
	assert_int_equal(listener_open_unix(path("d.sock"), SOCK_DGRAM, 0600, -1, -1, 16, &b, NULL,
					    NULL, 0), -EADDRINUSE);
	assert_int_equal(b, -999);
	c = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_int_equal(listener_sockaddr(path("d.sock"), &sa, &len), 0);
	assert_int_equal(sendto(c, "x", 1, 0, (struct sockaddr *)&sa, len), 1);
	assert_int_equal(recvmsg(fd, &mh, 0), 1);
	assert_non_null(CMSG_FIRSTHDR(&mh));
	assert_int_equal(CMSG_FIRSTHDR(&mh)->cmsg_type, SCM_CREDENTIALS);
	memcpy(&cred, CMSG_DATA(CMSG_FIRSTHDR(&mh)), sizeof(cred));
	assert_int_equal(cred.pid, getpid());
	assert_int_equal(cred.uid, getuid());
	safe_close(c);
	safe_close(fd); /* now stale: replaced */
	assert_int_equal(listener_open_unix(path("d.sock"), SOCK_DGRAM, 0600, -1, -1, 16, &b, NULL,
					    NULL, 0), 0);
	safe_close(b);
	unlink(path("d.sock"));
	/* Through a symlink, that address would not be the socket's: refused, nothing made. */
	char real[128];
	snprintf(real, sizeof(real), "%s", path("dgdir"));
	assert_int_equal(mkdir(real, 0755), 0);
	assert_int_equal(symlink(real, path("dglink")), 0);
	assert_int_equal(listener_open_unix(path("dglink/d.sock"), SOCK_DGRAM, 0600, -1, -1, 16, &b,
					    NULL, NULL, 0), -ELOOP);
	assert_int_equal(access(path("dgdir/d.sock"), F_OK), -1);
	assert_int_equal(listener_open_unix(path("dglink/s.sock"), SOCK_STREAM, 0600, -1, -1, 16, &b,
					    NULL, NULL, 0), 0);
	safe_close(b);
	unlink(path("dgdir/s.sock"));
	unlink(path("dglink"));
	rmdir(path("dgdir"));
}

static void
test_too_long(void **state)
{
	char p[200];
	struct sockaddr_un sa;
	socklen_t len = 0;
	int fd = -999;

	(void)state;
	memset(p, 'a', sizeof(p));
	p[0] = '/';
	p[sizeof(p) - 1] = 0;
	assert_int_equal(listener_open_unix(p, SOCK_STREAM, 0600, -1, -1, 16, &fd, NULL, NULL, 0), -ENAMETOOLONG);
	assert_int_equal(fd, -999);
	p[sizeof(sa.sun_path)] = 0; /* 108 bytes: no room for the NUL */
	assert_int_equal(listener_sockaddr(p, &sa, &len), -ENAMETOOLONG);
	assert_int_equal(len, 0);
	p[sizeof(sa.sun_path) - 1] = 0;
	assert_int_equal(listener_sockaddr(p, &sa, &len), 0);
}

static void
test_tcp(void **state)
{
	int fd = -999;

	(void)state;
	assert_int_equal(listener_open_tcp("tcp:127.0.0.1:0", 16, &fd), 0);
	assert_int_equal(listener_check_fd(fd, AF_INET, SOCK_STREAM), 1);
	assert_int_equal(listener_check_fd(fd, AF_UNIX, SOCK_STREAM), 0);
	safe_close(fd);
	fd = -999;
	assert_int_equal(listener_open_tcp("tcp:not-an-ip:80", 16, &fd), -EINVAL);
	assert_int_equal(fd, -999);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mode_exact),
		cmocka_unit_test(test_stale_and_live),
		cmocka_unit_test(test_not_a_socket_is_never_touched),
		cmocka_unit_test(test_perms_and_unlink_only_for_our_socket),
		cmocka_unit_test(test_moved_directory_and_symlink_in_its_place),
		cmocka_unit_test(test_unsafe_directory_is_refused),
		cmocka_unit_test(test_abstract),
		cmocka_unit_test(test_adopt),
		cmocka_unit_test(test_dgram),
		cmocka_unit_test(test_too_long),
		cmocka_unit_test(test_tcp),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
