/* SPDX-License-Identifier: MIT */
/*
 * fdinfo: what can be learned from a file descriptor alone.
 *
 * A client sends open descriptors with SCM_RIGHTS (any bytes alongside); for
 * each one the service answers a line of JSON from fstat() and, for a
 * regular file, the SHA-256 of its content read through the descriptor.
 * udsd needs no permission on the file's path: the client's capability
 * travels with the descriptor.
 *
 *   [listener fdinfo]
 *   path = /run/udsd/fdinfo.sock
 *   service = /usr/lib/x86_64-linux-gnu/udsd/fdinfo.so
 *   max_hash_size = 1M   ; hash at most this many bytes (default 64M)
 *
 * Reading the file blocks this worker thread for as long as it takes; a
 * real service would bound it the same way, or hand it to a thread pool.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <udsd.h>

#include "sha256.h"

struct fdinfo_config {
	uint64_t max_hash;
};

static const char *
file_type(mode_t m)
{
	switch (m & S_IFMT) {
	case S_IFREG: return "file";
	case S_IFDIR: return "directory";
	case S_IFCHR: return "character-device";
	case S_IFBLK: return "block-device";
	case S_IFIFO: return "fifo";
	case S_IFSOCK: return "socket";
	case S_IFLNK: return "symlink";
	default: return "unknown";
	}
}

/* SHA-256 of up to max bytes from offset 0, with pread so the client's file offset is untouched. */
static int
hash_fd(int fd, unsigned long long max, char hex[65])
{
	struct sha256 s;
	uint8_t buf[65536], out[32];
	unsigned long long off = 0;

	sha256_init(&s);
	while (off < max) {
		size_t want = max - off < sizeof(buf) ? (size_t)(max - off) : sizeof(buf);
		ssize_t n = pread(fd, buf, want, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		sha256_update(&s, buf, (size_t)n);
		off += (unsigned long long)n;
	}
	sha256_final(&s, out);
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", out[i]);
	return 0;
}

static void
describe(struct udsd_conn *conn, int fd, const struct fdinfo_config *cfg)
{
	char line[512], hex[65];
	struct stat st;
	int n;

	if (fstat(fd, &st) < 0) {
		n = snprintf(line, sizeof(line), "{\"error\":\"fstat: %s\"}\n", strerror(errno));
		udsd_conn_write(conn, line, (size_t)n);
		return;
	}
	n = snprintf(line, sizeof(line),
		     "{\"type\":\"%s\",\"size\":%lld,\"mode\":\"%04o\",\"uid\":%u,\"gid\":%u",
		     file_type(st.st_mode), (long long)st.st_size, (unsigned)(st.st_mode & 07777),
		     (unsigned)st.st_uid, (unsigned)st.st_gid);
	if (S_ISREG(st.st_mode)) {
		int r = hash_fd(fd, cfg->max_hash, hex);
		n += snprintf(line + n, sizeof(line) - (size_t)n, r < 0 ? ",\"sha256_error\":\"%s\"" :
				    ",\"sha256\":\"%s\"", r < 0 ? strerror(-r) : hex);
	}
	n += snprintf(line + n, sizeof(line) - (size_t)n, "}\n");
	udsd_conn_write(conn, line, (size_t)n);
}

static ssize_t
fdinfo_data(struct udsd_conn *conn, const void *data, size_t len)
{
	static const char none[] = "{\"error\":\"no file descriptor: send one with SCM_RIGHTS\"}\n";
	size_t n = udsd_conn_n_fds(conn);

	(void)data;
	if (n == 0)
		udsd_conn_write(conn, none, sizeof(none) - 1);
	/* We only look: the descriptors stay udsd's, which closes them after this call. */
	for (size_t i = 0; i < n; i++)
		describe(conn, udsd_conn_fd(conn, i), udsd_conn_state(conn));
	return (ssize_t)len;
}

/* The service's keys, as a table: udsd_keys_parse() applies the defaults and checks values. */
static const struct udsd_key keys[] = {
	{ "max_hash_size", UDSD_KEY_SIZE, offsetof(struct fdinfo_config, max_hash), 0, 0, 0, "64M",
	  "hash at most this many bytes of a file" },
};

static int
parse(const struct udsd_service_config *config, struct fdinfo_config *ret, char *err, size_t errlen)
{
	return udsd_keys_parse(keys, sizeof(keys) / sizeof(keys[0]), config, ret, err, errlen);
}

static int
fdinfo_check(const struct udsd_service_config *config, char *err, size_t errlen)
{
	struct fdinfo_config c;

	return parse(config, &c, err, errlen);
}

static int
fdinfo_init(const struct udsd_service_config *config, void **ret_state)
{
	struct fdinfo_config *c = malloc(sizeof(*c));
	char err[128];

	if (!c)
		return -ENOMEM;
	if (parse(config, c, err, sizeof(err)) < 0) {
		free(c);
		return -EINVAL;
	}
	*ret_state = c;
	return 0;
}

static void
fdinfo_fini(void *state)
{
	free(state);
}

const struct udsd_service udsd_service_v1 = {
	.api_version = UDSD_SERVICE_API_VERSION,
	.name = "fdinfo",
	.flags = UDSD_SERVICE_RECV_FDS,
	.check = fdinfo_check,
	.init = fdinfo_init,
	.fini = fdinfo_fini,
	.on_data = fdinfo_data,
};
