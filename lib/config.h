/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define CONFIG_MAX_WORKERS 64
#define CONFIG_MAX_THREADS 64
#define CONFIG_MAX_LISTENERS 32
#ifndef CONFIG_DEFAULT_FILE
#define CONFIG_DEFAULT_FILE "/etc/udsd/udsd.conf"
#endif

#define USEC_PER_MSEC UINT64_C(1000)
#define USEC_PER_SEC UINT64_C(1000000)

enum listener_kind {
	LISTENER_PATH,     /* a socket file */
	LISTENER_ABSTRACT, /* @name: Linux abstract namespace, no file */
	LISTENER_TCP,      /* tcp:HOST:PORT, for comparison with loopback TCP */
};

/* A key the daemon does not know, kept for the listener's service to judge. */
struct config_kv {
	char *key;
	char *value;
	unsigned line;
};

struct config_listener {
	char *name;
	unsigned line; /* of the [listener NAME] header */
	char *address; /* as written: /path, @name or tcp:host:port */
	enum listener_kind kind;
	int type; /* SOCK_STREAM or SOCK_SEQPACKET */
	char *service;
	unsigned service_line;
	uid_t owner; /* (uid_t)-1: leave as created */
	gid_t group; /* (gid_t)-1: leave as created */
	mode_t mode;
	unsigned perm_line; /* first line that set owner, group or mode; 0 if none */
	int backlog;
	uint64_t idle_timeout_usec; /* 0: never */
	uid_t *allow_uids;
	size_t n_allow_uids;
	gid_t *allow_gids;
	size_t n_allow_gids;
	struct config_kv *extra;
	size_t n_extra;
};

struct config {
	char *file;
	unsigned workers; /* resolved: "auto" is the CPU count */
	unsigned workers_min, workers_max; /* equal unless the pool is dynamic */
	uint64_t worker_idle_usec;
	unsigned worker_load_mark; /* clients per worker above which the pool grows */
	unsigned threads;
	unsigned max_connections; /* per worker */
	unsigned max_connections_total; /* across workers; 0: no limit of its own */
	uint64_t shutdown_timeout_usec;
	uint64_t busy_poll_usec; /* 0: off */
	uint64_t exit_idle_usec; /* 0: off */
	uid_t user;  /* (uid_t)-1: keep */
	gid_t group; /* (gid_t)-1: keep */
	struct config_listener *listeners;
	size_t n_listeners;
};

/*
 * Parse and validate an INI file.  On error returns -errno and writes
 * "FILE:LINE: what is wrong" (or "FILE: ..." when no line applies) to err.
 */
int config_load(const char *file, struct config **ret, char *err, size_t errlen);
int config_load_string(const char *name, const char *text, struct config **ret, char *err,
		       size_t errlen);
void config_free(struct config *c);

const struct config_listener *config_find_listener(const struct config *c, const char *name);

/* Value parsers, shared with services that read their own keys. */
int config_parse_duration(const char *s, uint64_t *ret_usec);
int config_parse_uint(const char *s, unsigned min, unsigned max, unsigned *ret);
int config_parse_size(const char *s, uint64_t *ret_bytes);
int config_parse_mode(const char *s, mode_t *ret);
int config_parse_uid(const char *s, uid_t *ret);
int config_parse_gid(const char *s, gid_t *ret);
