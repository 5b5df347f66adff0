/* SPDX-License-Identifier: MIT */
/*
 * A service for tests: echoes, crashes on "crash", answers "whoami" with the
 * worker's pid and uid and the client's as SO_PEERCRED tells, "uids" with
 * the uid its check() and init() ran as in this process (check() also
 * appends "check UID" to the file uid_log = PATH names), "sleep N" by
 * sleeping N seconds in on_data whatever interrupts it, answers "probe" with what
 * it may write of udsd's shared status mapping, answers each byte 0xfe with
 * 64 KiB (and stops consuming while congested, as udsd.h asks), fails init
 * when the listener sets fail_init = yes and takes init_sleep = SECONDS to
 * start.  On a dgram listener it answers "creds", "addr", "fds" and "take"
 * with what it saw, fails "fail", leaves "quiet..." unanswered and echoes
 * anything else.  "forge N" plays a compromised plugin: it hands the master a
 * socket of its own as a client of listener N (an index in the config)
 * migrating at a reload, with "whoami" waiting in it, and answers with what
 * comes back ("forged: closed" if nobody served it).  Built with -DNO_DGRAM_FLAG it does not say
 * UDSD_SERVICE_DATAGRAMS, with -DRECV_FDS it takes descriptors; built with
 * -DBAD_VERSION it claims an API version udsd does not have; with
 * -DNO_SYMBOL it exports nothing.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <udsd.h>

/*
 * The status mapping starts with the master's pid.  For each page of the
 * shared mappings from there on, say whether this worker may make it
 * writable: "w" if it is or can become writable, "-" if mprotect() refuses.
 * Then, after "|", whether a second, longer mapping of the writable pages
 * (mremap() with old_size 0, as a compromised worker could make) reaches a
 * page past them: "w" if it does, "-" if that page is not there.
 */
static void
test_probe(struct udsd_conn *conn)
{
	const size_t page = (size_t)sysconf(_SC_PAGESIZE);
	unsigned long lo, hi, base = 0, end = 0, own = 0, own_end = 0;
	char line[256], out[4096] = "", perms[8];
	size_t len = 0;
	int pfd[2];
	FILE *f = fopen("/proc/self/maps", "r");

	while (f && fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) != 3 || perms[3] != 's')
			continue;
		if (!base && perms[0] == 'r' && *(const pid_t *)lo == getppid())
			base = lo;
		if (base && (lo == base || lo == end))
			end = hi;
	}
	if (f)
		fclose(f);
	for (unsigned long p = base; p < end && len + 4 < sizeof(out); p += page) {
		bool w = mprotect((void *)p, page, PROT_READ | PROT_WRITE) == 0;
		if (w && !own)
			own = p;
		if (w)
			own_end = p + page;
		out[len++] = w ? 'w' : '-';
	}
	out[len++] = '|';
	void *dup = own ? mremap((void *)own, 0, own_end - own + page, MREMAP_MAYMOVE) : MAP_FAILED;
	/* A read() into a page that is not there fails with EFAULT instead of a SIGBUS. */
	if (dup != MAP_FAILED && pipe(pfd) == 0) {
		out[len++] = write(pfd[1], "X", 1) == 1 &&
			     read(pfd[0], (char *)dup + (own_end - own), 1) == 1 ? 'w' : '-';
		close(pfd[0]);
		close(pfd[1]);
	}
	if (dup != MAP_FAILED)
		munmap(dup, own_end - own + page);
	out[len++] = '\n';
	udsd_conn_write(conn, out, len);
}

#define AMPLIFY 0xfe

/* Answers far larger than the requests: what udsd_conn_congested() is for. */
static ssize_t
amplify(struct udsd_conn *conn, const unsigned char *p, size_t len)
{
	static const char block[64 * 1024];
	size_t i;

	for (i = 0; i < len && p[i] == AMPLIFY && !udsd_conn_congested(conn); i++)
		if (udsd_conn_write(conn, block, sizeof(block)) < 0)
			return -1;
	return (ssize_t)i;
}

/* Every thread's init() writes init_uid, and on_data() on any thread reads it: atomic. */
static long check_uid = -1;
static _Atomic long init_uid = -1;

/* A callback that overruns request_timeout: signals cut nanosleep() short, not this. */
static void
test_sleep(struct udsd_conn *conn, const char *arg, size_t len)
{
	char n[16] = "";
	struct timespec end, now;

	memcpy(n, arg, len < sizeof(n) - 1 ? len : sizeof(n) - 1);
	clock_gettime(CLOCK_MONOTONIC, &end);
	end.tv_sec += atoi(n);
	do {
		struct timespec d = { 0, 10 * 1000 * 1000 };
		nanosleep(&d, NULL);
		clock_gettime(CLOCK_MONOTONIC, &now);
	} while (now.tv_sec < end.tv_sec || (now.tv_sec == end.tv_sec && now.tv_nsec < end.tv_nsec));
	udsd_conn_write(conn, "slept\n", 6);
}

/* Who serves this client, and who the client is, as the service sees them. */
static void
test_whoami(struct udsd_conn *conn)
{
	pid_t peer_pid = 0;
	uid_t peer_uid = (uid_t)-1;
	char out[128];
	int n;

	udsd_conn_peer(conn, &peer_pid, &peer_uid, NULL);
	n = snprintf(out, sizeof(out), "pid=%d uid=%u peer_pid=%d peer_uid=%u\n", (int)getpid(),
		     (unsigned)getuid(), (int)peer_pid, (unsigned)peer_uid);
	udsd_conn_write(conn, out, (size_t)n);
}


/* This worker's channel to the master: a seqpacket socketpair the master made. */
static int
master_channel(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int found = -1;

	while (d && found < 0 && (e = readdir(d))) {
		int fd = atoi(e->d_name), type = 0;
		struct ucred cred;
		socklen_t len = sizeof(type), clen = sizeof(cred);

		if (fd > 2 && getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 &&
		    type == SOCK_SEQPACKET &&
		    getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) == 0 && cred.pid == getppid())
			found = fd;
	}
	if (d)
		closedir(d);
	return found;
}

/* "forge N": the channel's wire format (daemon/channel.c), CHANNEL_MIGRATED = 7. */
static void
test_forge(struct udsd_conn *conn, const char *arg, size_t len)
{
	char n[8] = "", out[160] = "forged: closed\n", buf[128];
	unsigned char msg[9] = { 7, 0, 1, 0, 0, 0, 0, 0, 0 };
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int))];
	} control;
	struct iovec iov = { .iov_base = msg, .iov_len = sizeof(msg) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
			     .msg_controllen = sizeof(control.buf) };
	struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
	int sv[2], chan = master_channel();

	memcpy(n, arg, len < sizeof(n) - 1 ? len : sizeof(n) - 1);
	msg[8] = (unsigned char)atoi(n);
	if (chan < 0 || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		udsd_conn_write(conn, "forged: no channel\n", 19);
		return;
	}
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &sv[1], sizeof(int));
	if (write(sv[0], "whoami", 6) != 6 || sendmsg(chan, &mh, MSG_NOSIGNAL) < 0) {
		udsd_conn_write(conn, "forged: not sent\n", 17);
		close(sv[0]);
		close(sv[1]);
		return;
	}
	close(sv[1]);
	struct pollfd p = { .fd = sv[0], .events = POLLIN };
	if (poll(&p, 1, 5000) == 1) {
		ssize_t got = read(sv[0], buf, sizeof(buf) - 1);
		if (got > 0) {
			buf[got] = '\0';
			snprintf(out, sizeof(out), "forged: %s\n", buf);
		}
	}
	close(sv[0]);
	udsd_conn_write(conn, out, strlen(out));
}

static ssize_t
test_data(struct udsd_conn *conn, const void *data, size_t len)
{
	if (len >= 6 && memcmp(data, "forge ", 6) == 0) {
		test_forge(conn, (const char *)data + 6, len - 6);
		return (ssize_t)len;
	}
	if (len >= 6 && memcmp(data, "whoami", 6) == 0) {
		test_whoami(conn);
		return (ssize_t)len;
	}
	if (len >= 4 && memcmp(data, "uids", 4) == 0) {
		char out[96];
		int n = snprintf(out, sizeof(out), "check=%ld init=%ld data=%ld\n", check_uid,
				 (long)init_uid, (long)getuid());
		udsd_conn_write(conn, out, (size_t)n);
		return (ssize_t)len;
	}
	if (len >= 6 && memcmp(data, "sleep ", 6) == 0) {
		test_sleep(conn, (const char *)data + 6, len - 6);
		return (ssize_t)len;
	}
	if (len >= 5 && memcmp(data, "crash", 5) == 0)
		abort();
	if (len >= 5 && memcmp(data, "probe", 5) == 0) {
		test_probe(conn);
		return (ssize_t)len;
	}
	if (len > 0 && *(const unsigned char *)data == AMPLIFY)
		return amplify(conn, data, len);
	udsd_conn_write(conn, data, len);
	return (ssize_t)len;
}

/* "fds": the first bytes of each descriptor's file, which udsd closes after the call. */
static void
dgram_fds(struct udsd_dgram *d)
{
	char out[1024];
	int len = snprintf(out, sizeof(out), "fds %zu:", udsd_dgram_n_fds(d));

	for (size_t i = 0; i < udsd_dgram_n_fds(d) && len < (int)sizeof(out) - 64; i++) {
		char buf[32];
		ssize_t n = pread(udsd_dgram_fd(d, i), buf, sizeof(buf) - 1, 0);
		buf[n > 0 ? n : 0] = '\0';
		len += snprintf(out + len, sizeof(out) - (size_t)len, " %s", buf);
	}
	udsd_dgram_reply(d, out, (size_t)len);
}

/* "addr": the sender's address as udsd saw it, an abstract one with '@' for its NUL. */
static void
dgram_addr(struct udsd_dgram *d)
{
	const struct sockaddr_un *sa;
	socklen_t len;
	char out[sizeof(sa->sun_path) + 1] = "none";
	size_t n = 4;

	if (udsd_dgram_address(d, &sa, &len) == 0) {
		n = len - offsetof(struct sockaddr_un, sun_path);
		memcpy(out, sa->sun_path, n);
		if (out[0] == '\0')
			out[0] = '@';
		while (n > 0 && out[n - 1] == '\0')
			n--;
	}
	udsd_dgram_reply(d, out, n);
}

static int
test_datagram(struct udsd_dgram *d, const void *data, size_t len)
{
	char out[128];
	pid_t pid;
	uid_t uid;
	gid_t gid;

	if (len == 5 && memcmp(data, "creds", 5) == 0) {
		if (udsd_dgram_sender(d, &pid, &uid, &gid) < 0)
			return udsd_dgram_reply(d, "none", 4);
		int n = snprintf(out, sizeof(out), "%d %u %u", (int)pid, (unsigned)uid, (unsigned)gid);
		udsd_dgram_reply(d, out, (size_t)n);
	} else if (len == 4 && memcmp(data, "addr", 4) == 0) {
		dgram_addr(d);
	} else if (len == 3 && memcmp(data, "fds", 3) == 0) {
		dgram_fds(d);
	} else if (len == 4 && memcmp(data, "take", 4) == 0) {
		int fd = udsd_dgram_take_fd(d, 0);
		bool again = udsd_dgram_take_fd(d, 0) == -EBADF && udsd_dgram_fd(d, 0) == -EBADF;
		udsd_dgram_reply(d, fd >= 0 && again ? "took" : "none", 4);
		if (fd >= 0)
			close(fd);
	} else if (len == 4 && memcmp(data, "fail", 4) == 0) {
		return -EINVAL;
	} else if (len < 5 || memcmp(data, "quiet", 5) != 0) {
		udsd_dgram_reply(d, data, len);
	}
	return 0;
}

static int
test_check(const struct udsd_service_config *config, char *err, size_t errlen)
{
	check_uid = (long)getuid();
	for (size_t i = 0; i < config->n_keys; i++) {
		const char *key = config->keys[i].key;

		if (strcmp(key, "uid_log") == 0) {
			FILE *f = fopen(config->keys[i].value, "a");
			if (f) {
				fprintf(f, "check %ld\n", check_uid);
				fclose(f);
			}
		} else if (strcmp(key, "fail_check") == 0) {
			snprintf(err, errlen, "fail_check: failing as asked, as uid %ld", check_uid);
			return -EINVAL;
		} else if (strcmp(key, "fail_init") != 0 && strcmp(key, "init_sleep") != 0) {
			snprintf(err, errlen, "%s: unknown key for testsvc", key);
			return -EINVAL;
		}
	}
	return 0;
}

static int
test_init(const struct udsd_service_config *config, void **ret_state)
{
	init_uid = (long)getuid();
	for (size_t i = 0; i < config->n_keys; i++)
		if (strcmp(config->keys[i].key, "fail_init") == 0 &&
		    strcmp(config->keys[i].value, "yes") == 0)
			return -EIO;
		else if (strcmp(config->keys[i].key, "init_sleep") == 0)
			sleep((unsigned)atoi(config->keys[i].value));
	*ret_state = NULL;
	return 0;
}

#ifdef NO_SYMBOL
#define udsd_service_v1 udsd_service_misnamed
#endif
const struct udsd_service udsd_service_v1 = {
#ifdef BAD_VERSION
	.api_version = 999,
#else
	.api_version = UDSD_SERVICE_API_VERSION,
#endif
	.name = "testsvc",
#ifdef NO_DGRAM_FLAG
	/* udsd must not read on_datagram without the flag: a table built before it had none. */
	.flags = UDSD_SERVICE_DEADLINE_REPLY,
#elif defined(RECV_FDS)
	.flags = UDSD_SERVICE_DEADLINE_REPLY | UDSD_SERVICE_DATAGRAMS | UDSD_SERVICE_RECV_FDS,
#else
	.flags = UDSD_SERVICE_DEADLINE_REPLY | UDSD_SERVICE_DATAGRAMS,
#endif
	.deadline_reply = "testsvc: too slow\n",
	.check = test_check,
	.init = test_init,
	.on_data = test_data,
	.on_datagram = test_datagram,
};
