/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#define CONFIG_MAX_WORKERS 64
#define CONFIG_MAX_THREADS 64
#define CONFIG_MAX_LISTENERS 32
#define CONFIG_MAX_POOLS 16
#define CONFIG_MAX_UNITS 16
/* The worker tick and the master's longest sleep: no deadline can be shorter. */
#define CONFIG_TICK_USEC UINT64_C(1000000)
/* The implicit pool: [daemon]'s keys, for the listeners that name none. */
#define CONFIG_DEFAULT_POOL "default"
#define CONFIG_DEFAULT_ADMIN "/run/udsd/admin.sock"
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
	int type; /* SOCK_STREAM, SOCK_SEQPACKET or SOCK_DGRAM */
	char *service;
	unsigned service_line;
	uid_t owner; /* (uid_t)-1: leave as created */
	gid_t group; /* (gid_t)-1: leave as created */
	mode_t mode;
	unsigned perm_line; /* first line that set owner, group or mode; 0 if none */
	unsigned backlog;
	uint64_t idle_timeout_usec; /* 0: never */
	uid_t *allow_uids;
	size_t n_allow_uids;
	gid_t *allow_gids;
	size_t n_allow_gids;
	char **allow_units; /* systemd units, e.g. "backup.service" */
	size_t n_allow_units;
	unsigned max_per_uid; /* max_connections_per_uid; 0: no limit */
	char *pool_name;      /* as written; NULL: the default pool */
	unsigned pool;	      /* index in config->pools, once validated */
	uint64_t max_datagram; /* dgram: larger datagrams are dropped */
	struct config_kv *extra;
	size_t n_extra;
};

/*
 * A pool: worker processes with their own credentials, counts and limits,
 * serving the listeners that name it.  [daemon] gives every key's default.
 */
struct config_pool {
	char *name;
	unsigned line; /* of the [pool NAME] header; 0 for the implicit pool */
	unsigned workers; /* resolved: "auto" is the CPU count */
	unsigned workers_min, workers_max; /* equal unless the pool is dynamic */
	uint64_t worker_idle_usec;
	unsigned worker_load_mark; /* clients per worker above which the pool grows */
	unsigned threads;
	unsigned max_connections; /* per worker */
	unsigned max_connections_total; /* across workers; 0: no limit of its own */
	uint64_t busy_poll_usec; /* 0: off */
	uid_t user;	 /* (uid_t)-1: keep */
	char *user_name; /* NULL when user is unset; else its passwd name, or the number as written */
	gid_t user_gid;	 /* the user's primary group from passwd; (gid_t)-1 without an entry */
	gid_t group;	 /* (gid_t)-1: not given, so the user's own groups (initgroups) */
	uint64_t request_timeout_usec; /* a service callback running longer is stuck */
	unsigned max_requests;	       /* recycle a worker after this many; 0: never */
	unsigned max_requests_jitter;  /* plus a random 0..this, per worker */
	uint64_t max_rss;	       /* recycle a worker above this many bytes; 0: never */
};

struct config {
	char *file;
	uint64_t shutdown_timeout_usec;
	uint64_t exit_idle_usec; /* 0: off */
	struct config_pool *pools; /* at least one, once validated */
	size_t n_pools;
	struct config_listener *listeners;
	size_t n_listeners;
	/*
	 * [admin]: the socket udsctl talks to.  Only address (NULL: off),
	 * allow_uids and allow_gids are used, so that the listeners' allow-list
	 * code (config_listener_admits()) serves it too.
	 */
	struct config_listener admin;
};

/*
 * The schema: one row per key, in config.c.  Its parser and printer are
 * config.c's own; tests read the rest (etc/udsd.conf is checked against it).
 */
enum config_section {
	CONFIG_SECTION_NONE,
	CONFIG_SECTION_DAEMON,	 /* [daemon], once */
	CONFIG_SECTION_LISTENER, /* [listener NAME], one per socket */
	CONFIG_SECTION_POOL,	 /* [pool NAME], and in [daemon] as every pool's default */
	CONFIG_SECTION_ADMIN,	 /* [admin], once: the admin socket */
};

struct config_type;

struct config_item {
	enum config_section section;
	const char *key;
	const struct config_type *type;
	size_t offset;	   /* in struct config, struct config_listener or struct config_pool */
	uint64_t min, max; /* for numbers, durations and sizes; max 0: none */
	unsigned flags;	   /* CONFIG_OFF */
	const char *def;   /* the default, as a user writes it; "" = unset; NULL: required */
	const char *doc;   /* one line */
};

#define CONFIG_OFF 1u /* "off" is accepted and means 0 */

extern const struct config_item config_items[];
extern const size_t config_n_items;

const struct config_item *config_item_find(enum config_section section, const char *key);

/*
 * Parse and validate an INI file.  On error returns -errno and writes
 * "FILE:LINE: what is wrong" (or "FILE: ..." when no line applies) to err.
 */
int config_load(const char *file, struct config **ret, char *err, size_t errlen);
int config_load_string(const char *name, const char *text, struct config **ret, char *err,
		       size_t errlen);
void config_free(struct config *c);

/* Print the configuration from the schema, as a file that parses back to the same. */
int config_dump(const struct config *c, FILE *f);

const struct config_listener *config_find_listener(const struct config *c, const char *name);
const struct config_pool *config_find_pool(const struct config *c, const char *name);

/*
 * Do these credentials pass l's allow_uids and allow_gids (empty lists admit
 * everyone)?  groups are the supplementary groups, where known.
 */
bool config_listener_admits(const struct config_listener *l, uid_t uid, gid_t gid,
			    const gid_t *groups, size_t n_groups);
