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
 *   max_hash_size = 1M   ; hash files up to this size (default 64M)
 *
 * Reading happens on the worker thread, so it must be short: only a regular
 * file on a local file system (a hung FUSE or NFS server would stall the
 * thread until udsd's hang detector kills the whole worker) and no larger
 * than max_hash_size is hashed; for any other, "sha256_skipped" says why.
 * Even the questions asked stay off the file's server: statx() with
 * AT_STATX_DONT_SYNC answers from the inode cache, and the file system's type
 * comes from /proc/self/mountinfo, not from fstatfs(), which FUSE and NFS
 * forward to their server.
 */
#include <errno.h>
#include <fcntl.h>
#include <nettle/sha2.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <udsd.h>

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

/* File systems whose reads are served by this machine's memory or disks, never a server. */
static const char *const local_fs[] = {
	"ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "bcachefs", "zfs", "jfs", "nilfs2",
	"vfat", "msdos", "exfat", "ntfs3", "iso9660", "udf", "squashfs", "erofs",
	"tmpfs", "ramfs", "hugetlbfs", "devtmpfs", "overlay",
};

/*
 * The type of mount mnt_id as /proc/self/mountinfo names it ("ext4",
 * "fuse.sshfs"): "ID PARENT MAJ:MIN ROOT POINT OPTIONS [TAGS] - TYPE ...".
 * -ENOENT when the mount is not in our namespace.
 */
static int
mount_type(unsigned long long mnt_id, char *type, size_t len)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char *line = NULL;
	size_t cap = 0;
	int r = -ENOENT;

	if (!f)
		return -errno;
	while (r == -ENOENT && getline(&line, &cap, f) > 0) {
		unsigned long long id;
		const char *sep = strstr(line, " - ");
		if (sscanf(line, "%llu", &id) != 1 || id != mnt_id || !sep)
			continue;
		size_t n = strcspn(sep + 3, " \n");
		snprintf(type, len, "%.*s", (int)n, sep + 3);
		r = 0;
	}
	free(line);
	fclose(f);
	return r;
}

/* Why this regular file is not hashed, or NULL to hash it. */
static const char *
skip_reason(int fd, const struct statx *stx, const struct fdinfo_config *cfg, char *buf,
	    size_t len)
{
	char type[64];

	if (stx->stx_size > cfg->max_hash) {
		snprintf(buf, len, "larger than max_hash_size (%llu bytes)", (unsigned long long)cfg->max_hash);
		return buf;
	}
	/* A memfd or other shmem file: it has seals to ask about, and lives in memory. */
	if (fcntl(fd, F_GET_SEALS) >= 0)
		return NULL;
	if (!(stx->stx_mask & STATX_MNT_ID) || mount_type(stx->stx_mnt_id, type, sizeof(type)) < 0)
		return "cannot tell its file system";
	for (size_t i = 0; i < sizeof(local_fs) / sizeof(local_fs[0]); i++)
		if (strcmp(type, local_fs[i]) == 0)
			return NULL;
	snprintf(buf, len, "not a local file system (%s)", type);
	return buf;
}

/* SHA-256 of the first size bytes, with pread so the client's file offset is untouched. */
static int
hash_fd(int fd, unsigned long long size, char hex[65])
{
	struct sha256_ctx s;
	uint8_t buf[65536], out[SHA256_DIGEST_SIZE];
	unsigned long long off = 0;

	sha256_init(&s);
	while (off < size) {
		size_t want = size - off < sizeof(buf) ? (size_t)(size - off) : sizeof(buf);
		ssize_t n = pread(fd, buf, want, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		sha256_update(&s, (size_t)n, buf);
		off += (unsigned long long)n;
	}
	sha256_digest(&s, sizeof(out), out);
	for (size_t i = 0; i < sizeof(out); i++)
		snprintf(hex + 2 * i, 3, "%02x", out[i]);
	return 0;
}

static int
describe_hash(int fd, const struct statx *stx, const struct fdinfo_config *cfg, char *line,
	      size_t len)
{
	char hex[65], why[96];
	const char *skip = skip_reason(fd, stx, cfg, why, sizeof(why));
	int r;

	if (skip)
		return snprintf(line, len, ",\"sha256_skipped\":\"%s\"", skip);
	r = hash_fd(fd, stx->stx_size, hex);
	if (r < 0)
		return snprintf(line, len, ",\"sha256_error\":\"%s\"", strerror(-r));
	return snprintf(line, len, ",\"sha256\":\"%s\"", hex);
}

static void
describe(struct udsd_conn *conn, int fd, const struct fdinfo_config *cfg)
{
	char line[512];
	struct statx stx;
	int n;

	/* From the cache: a FUSE or NFS server is not asked (and cannot keep us waiting). */
	if (statx(fd, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, STATX_BASIC_STATS | STATX_MNT_ID,
		  &stx) < 0) {
		n = snprintf(line, sizeof(line), "{\"error\":\"statx: %s\"}\n", strerror(errno));
		udsd_conn_write(conn, line, (size_t)n);
		return;
	}
	n = snprintf(line, sizeof(line),
		     "{\"type\":\"%s\",\"size\":%llu,\"mode\":\"%04o\",\"uid\":%u,\"gid\":%u",
		     file_type(stx.stx_mode), (unsigned long long)stx.stx_size,
		     (unsigned)(stx.stx_mode & 07777), (unsigned)stx.stx_uid, (unsigned)stx.stx_gid);
	if (S_ISREG(stx.stx_mode))
		n += describe_hash(fd, &stx, cfg, line + n, sizeof(line) - (size_t)n);
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
