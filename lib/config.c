/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <ctype.h>
#include <grp.h>
#include <inttypes.h>
#include <ini.h>
#include <limits.h>
#include <netdb.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "config.h"
#include "macro.h"
#include "udsd.h"

/*
 * The schema is config_items[] below, one row per key (systemd's conf-parser
 * shape).  Defaults exist only there: a new section starts from them, "udsd -T"
 * prints through the same rows, and tests/unit/test-config.c holds
 * etc/udsd.conf against them.
 */

#define WHAT_MAX 256 /* what a parser says is wrong, after "FILE:LINE: key: " */

struct config_type {
	/* Store value at it->offset in base: 0, or -errno with what is wrong in what. */
	int (*parse)(const struct config_item *it, const char *value, void *base, char *what);
	/* Print the value as a user would write it. */
	void (*print)(const struct config_item *it, const void *base, FILE *f);
	const void *data; /* the type's own table, for the types that share a parser */
};

/* Flags of config.c's own, beside CONFIG_OFF. */
#define ID_GROUP (1u << 8)  /* ids are groups (uid_t and gid_t are both unsigned int) */
#define FILE_ONLY (1u << 9) /* for socket files, not @abstract or tcp: listeners */
#define WIDE (1u << 10)	    /* a number in a uint64_t, not an unsigned (services' keys) */
#define DGRAM_ONLY (1u << 11) /* for type = dgram listeners only */
#define CONN_ONLY (1u << 12)  /* for listeners with connections: stream and seqpacket */

#define FIELD(type, base, it) ((type *)((char *)(base) + (it)->offset))
#define CFIELD(type, base, it) ((const type *)((const char *)(base) + (it)->offset))

_printf_(2, 3) static int
bad(char *what, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, WHAT_MAX, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

/* A key whose default is "" takes an empty value as "unset". */
static bool
unset(const struct config_item *it, const char *value)
{
	return *value == '\0' && it->def && *it->def == '\0';
}

struct unit {
	const char *suffix;
	uint64_t mult;
};

/* A number with a unit: the units (printed with the first that divides a value), and words. */
struct scale {
	const struct unit *units;
	size_t n_units;
	const char *noun, *example;
};

static const struct unit duration_units[] = {
	{ "h", 3600 * USEC_PER_SEC }, { "min", 60 * USEC_PER_SEC }, { "s", USEC_PER_SEC },
	{ "ms", USEC_PER_MSEC },      { "us", 1 },		    { "m", 60 * USEC_PER_SEC },
	{ "sec", USEC_PER_SEC },      { "", USEC_PER_SEC },
};

static const struct scale durations = { duration_units, ELEMENTSOF(duration_units), "a duration",
					" (e.g. 250ms, 10s, 5min)" };

static const struct unit size_units[] = {
	{ "G", 1 << 30 },   { "M", 1 << 20 },	{ "k", 1024 }, { "", 1 },
	{ "GiB", 1 << 30 }, { "MiB", 1 << 20 }, { "K", 1024 }, { "KiB", 1024 },
};

static const struct scale sizes = { size_units, ELEMENTSOF(size_units), "a byte count",
				    " (e.g. 8192, 64k, 1M)" };

/* A decimal number followed by one of the units' suffixes, scaled by it. */
static int
parse_scaled(const char *s, const struct scale *scale, uint64_t *ret)
{
	char *end;
	unsigned long long v;

	if (!isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0)
		return -ERANGE;
	for (size_t i = 0; i < scale->n_units; i++) {
		const struct unit *u = &scale->units[i];
		if (strcmp(end, u->suffix) != 0)
			continue;
		/* Half the range: sums of durations in the master never overflow. */
		if (v > UINT64_MAX / u->mult / 2)
			return -ERANGE;
		*ret = v * u->mult;
		return 0;
	}
	return -EINVAL;
}

static void
print_scaled(char *buf, size_t size, uint64_t v, const struct scale *scale)
{
	const struct unit *u = scale->units;

	if (v == 0) {
		snprintf(buf, size, "0");
		return;
	}
	while (v % u->mult != 0)
		u++;
	snprintf(buf, size, "%" PRIu64 "%s", v / u->mult, u->suffix);
}

static const struct unit one[] = { { "", 1 } };
static const struct scale plain = { one, 1, "a number", "" };

static int
parse_number(const char *s, uint64_t min, uint64_t max, uint64_t *ret)
{
	uint64_t v;
	int r = parse_scaled(s, &plain, &v);

	if (r < 0)
		return r;
	if (v < min || v > max)
		return -ERANGE;
	*ret = v;
	return 0;
}

int
udsd_parse_duration(const char *s, uint64_t *ret_usec)
{
	return parse_scaled(s, &durations, ret_usec);
}

int
udsd_parse_size(const char *s, uint64_t *ret_bytes)
{
	return parse_scaled(s, &sizes, ret_bytes);
}

/* Numbers: unsigned fields (udsd's), or uint64_t ones (services', WIDE). */

static int
parse_uint(const struct config_item *it, const char *value, void *base, char *what)
{
	uint64_t v, max = it->max ? it->max : it->flags & WIDE ? UINT64_MAX / 2 : UINT_MAX;

	if (parse_number(value, it->min, max, &v) < 0)
		return bad(what, "'%s' is not %" PRIu64 "..%" PRIu64, value, it->min, max);
	if (it->flags & WIDE)
		*FIELD(uint64_t, base, it) = v;
	else
		*FIELD(unsigned, base, it) = (unsigned)v;
	return 0;
}

static void
print_uint(const struct config_item *it, const void *base, FILE *f)
{
	if (it->flags & WIDE)
		fprintf(f, "%" PRIu64, *CFIELD(uint64_t, base, it));
	else
		fprintf(f, "%u", *CFIELD(unsigned, base, it));
}

static const struct config_type type_uint = { parse_uint, print_uint, NULL };

/* workers: "auto" is stored as 0 and resolved to the CPU count once the file is read. */
static int
parse_workers(const struct config_item *it, const char *value, void *base, char *what)
{
	if (strcmp(value, "auto") == 0) {
		*FIELD(unsigned, base, it) = 0;
		return 0;
	}
	if (parse_uint(it, value, base, what) < 0)
		return bad(what, "'%s' is not auto or %" PRIu64 "..%" PRIu64, value, it->min, it->max);
	return 0;
}

static const struct config_type type_workers = { parse_workers, print_uint, NULL };

/* workers_min, workers_max: unset (0) unless the pool is dynamic. */
static int
parse_bound(const struct config_item *it, const char *value, void *base, char *what)
{
	if (unset(it, value)) {
		*FIELD(unsigned, base, it) = 0;
		return 0;
	}
	return parse_uint(it, value, base, what);
}

static void
print_pool(const struct config_item *it, const void *base, FILE *f)
{
	const struct config_pool *c = base;

	if (c->workers_min != c->workers_max)
		print_uint(it, base, f);
}

static const struct config_type type_bound = { parse_bound, print_pool, NULL };

static int
bad_scaled(const struct config_item *it, const char *value, char *what)
{
	const struct scale *scale = it->type->data;
	char lo[32], hi[32], range[80] = "";

	print_scaled(lo, sizeof(lo), it->min, scale);
	print_scaled(hi, sizeof(hi), it->max, scale);
	if (it->max && it->min)
		snprintf(range, sizeof(range), " in %s..%s", lo, hi);
	else if (it->max)
		snprintf(range, sizeof(range), " up to %s", hi);
	else if (it->min)
		snprintf(range, sizeof(range), " of at least %s", lo);
	return bad(what, "'%s' is not %s%s%s%s", value, it->flags & CONFIG_OFF ? "off or " : "",
		   scale->noun, range, it->max ? "" : scale->example);
}

/* Durations and sizes: uint64_t, scaled, with optional bounds and "off". */
static int
parse_scaled_item(const struct config_item *it, const char *value, void *base, char *what)
{
	uint64_t v;

	if (it->flags & CONFIG_OFF && strcmp(value, "off") == 0)
		v = 0;
	else if (parse_scaled(value, it->type->data, &v) < 0 || v < it->min ||
		 (it->max && v > it->max))
		return bad_scaled(it, value, what);
	*FIELD(uint64_t, base, it) = v;
	return 0;
}

static void
print_scaled_item(const struct config_item *it, const void *base, FILE *f)
{
	uint64_t v = *CFIELD(uint64_t, base, it);
	char buf[32];

	print_scaled(buf, sizeof(buf), v, it->type->data);
	fputs(it->flags & CONFIG_OFF && v == 0 ? "off" : buf, f);
}

static const struct config_type type_duration = { parse_scaled_item, print_scaled_item,
						  &durations };
static const struct config_type type_size = { parse_scaled_item, print_scaled_item, &sizes };

/* Strings. */

static int
parse_string(const struct config_item *it, const char *value, void *base, char *what)
{
	char **dst = FIELD(char *, base, it);
	char *s;

	if (*value == '\0')
		return bad(what, "empty");
	s = strdup(value);
	if (!s)
		return -ENOMEM;
	free(*dst);
	*dst = s;
	return 0;
}

static void
print_string(const struct config_item *it, const void *base, FILE *f)
{
	fputs(*CFIELD(char *, base, it), f);
}

static const struct config_type type_string = { parse_string, print_string, NULL };

/* A service's URL path (UDSD_KEY_PATH): "/" and printable bytes, in a char array of it->max. */
static int
parse_urlpath(const struct config_item *it, const char *value, void *base, char *what)
{
	char *dst = FIELD(char, base, it);
	size_t n = strlen(value);

	if (it->flags & CONFIG_OFF && strcmp(value, "off") == 0) {
		dst[0] = '\0';
		return 0;
	}
	if (value[0] != '/')
		return bad(what, "'%s' must start with '/'%s", value,
			   it->flags & CONFIG_OFF ? ", or be off" : "");
	for (const char *c = value; *c; c++)
		if ((unsigned char)*c <= ' ' || (unsigned char)*c >= 0x7f)
			return bad(what, "'%s' has a space or a control character", value);
	if (it->max == 0 || n >= it->max)
		return bad(what, "'%s' is longer than %llu bytes", value,
			   (unsigned long long)(it->max ? it->max - 1 : 0));
	memcpy(dst, value, n + 1);
	return 0;
}

static void
print_urlpath(const struct config_item *it, const void *base, FILE *f)
{
	const char *s = CFIELD(char, base, it);

	fputs(*s ? s : "off", f);
}

static const struct config_type type_urlpath = { parse_urlpath, print_urlpath, NULL };

/* tcp:HOST:PORT with a numeric host: resolving names at start would make start-up wait on DNS. */
static int
parse_tcp(const char *value, char *what)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV };
	struct addrinfo *ai = NULL;
	const char *colon = strrchr(value + 4, ':');
	uint64_t port;

	if (!colon || colon == value + 4 || parse_number(colon + 1, 1, 65535, &port) < 0)
		return bad(what, "'%s' is not tcp:HOST:PORT", value);
	_cleanup_free_ char *host = strndup(value + 4, (size_t)(colon - value - 4));
	if (!host)
		return -ENOMEM;
	if (getaddrinfo(host, colon + 1, &hints, &ai) != 0)
		return bad(what, "'%s': '%s' is not a numeric address (host names are not resolved; e.g. tcp:127.0.0.1:8080)",
			   value, host);
	freeaddrinfo(ai);
	return 0;
}

static int
parse_address(const struct config_item *it, const char *value, void *base, char *what)
{
	struct config_listener *l = base;
	enum listener_kind kind;
	int r;

	if (strncmp(value, "tcp:", 4) == 0) {
		r = parse_tcp(value, what);
		if (r < 0)
			return r;
		kind = LISTENER_TCP;
	} else if (value[0] == '@') {
		if (value[1] == '\0')
			return bad(what, "abstract name is empty");
		kind = LISTENER_ABSTRACT;
	} else if (value[0] == '/') {
		kind = LISTENER_PATH;
	} else {
		return bad(what, "'%s' must be absolute, @abstract or tcp:HOST:PORT", value);
	}
	/* sun_path is 108 bytes including the terminating NUL for a file path. */
	if (kind != LISTENER_TCP && strlen(value) > 107)
		return bad(what, "'%s' is longer than a socket address allows (%zu > 107)", value,
			   strlen(value));
	r = parse_string(it, value, base, what);
	if (r < 0)
		return r;
	l->kind = kind;
	return 0;
}

static const struct config_type type_address = { parse_address, print_string, NULL };

/* The admin socket: an absolute file path (its mode keeps others out), or off. */
static int
parse_admin_path(const struct config_item *it, const char *value, void *base, char *what)
{
	struct config_listener *l = base;

	if (strcmp(value, "off") == 0) {
		free(l->address);
		l->address = NULL;
		return 0;
	}
	if (value[0] != '/')
		return bad(what, "'%s' must be an absolute path, or off", value);
	return parse_address(it, value, base, what);
}

static void
print_admin_path(const struct config_item *it, const void *base, FILE *f)
{
	const struct config_listener *l = base;

	fputs(l->address ? l->address : "off", f);
}

static const struct config_type type_admin_path = { parse_admin_path, print_admin_path, NULL };

static int
parse_socktype(const struct config_item *it, const char *value, void *base, char *what)
{
	if (strcmp(value, "stream") == 0)
		*FIELD(int, base, it) = SOCK_STREAM;
	else if (strcmp(value, "seqpacket") == 0)
		*FIELD(int, base, it) = SOCK_SEQPACKET;
	else if (strcmp(value, "dgram") == 0)
		*FIELD(int, base, it) = SOCK_DGRAM;
	else
		return bad(what, "'%s' is not stream, seqpacket or dgram", value);
	return 0;
}

static void
print_socktype(const struct config_item *it, const void *base, FILE *f)
{
	int type = *CFIELD(int, base, it);

	fputs(type == SOCK_SEQPACKET ? "seqpacket" : type == SOCK_DGRAM ? "dgram" : "stream", f);
}

static const struct config_type type_socktype = { parse_socktype, print_socktype, NULL };

/* Up to four octal digits; only the permission bits, which are all a socket uses. */
static int
parse_mode(const struct config_item *it, const char *value, void *base, char *what)
{
	unsigned long v = 0;

	if (*value == '\0' || strlen(value) > 5)
		return bad(what, "'%s' is not an octal mode such as 0660", value);
	for (const char *c = value; *c; c++) {
		if (*c < '0' || *c > '7')
			return bad(what, "'%s' is not an octal mode such as 0660", value);
		v = v * 8 + (unsigned)(*c - '0');
	}
	if (v > 07777)
		return bad(what, "'%s' is not an octal mode such as 0660", value);
	if (v > 0777)
		return bad(what, "'%s' has bits above 0777 (setuid, setgid, sticky), which a socket never needs",
			   value);
	*FIELD(mode_t, base, it) = (mode_t)v;
	return 0;
}

static void
print_mode(const struct config_item *it, const void *base, FILE *f)
{
	fprintf(f, "%04o", (unsigned)*CFIELD(mode_t, base, it));
}

static const struct config_type type_mode = { parse_mode, print_mode, NULL };

/* Users and groups: a name or a number; printed by name when the system knows one. */

static int
id_parse(const char *s, bool is_group, unsigned *ret)
{
	struct passwd *pw;
	struct group *gr;
	uint64_t v;

	if (parse_number(s, 0, INT_MAX - 1, &v) == 0) {
		*ret = (unsigned)v;
		return 0;
	}
	if (is_group && (gr = getgrnam(s)))
		*ret = gr->gr_gid;
	else if (!is_group && (pw = getpwnam(s)))
		*ret = pw->pw_uid;
	else
		return -ESRCH;
	return 0;
}

static void
id_print(unsigned id, bool is_group, FILE *f)
{
	struct passwd *pw = is_group ? NULL : getpwuid(id);
	struct group *gr = is_group ? getgrgid(id) : NULL;

	if (pw || gr)
		fputs(pw ? pw->pw_name : gr->gr_name, f);
	else
		fprintf(f, "%u", id);
}

static const char *
id_noun(const struct config_item *it)
{
	return it->flags & ID_GROUP ? "group" : "user";
}

static int
parse_id(const struct config_item *it, const char *value, void *base, char *what)
{
	if (unset(it, value))
		*FIELD(unsigned, base, it) = (unsigned)-1;
	else if (id_parse(value, it->flags & ID_GROUP, FIELD(unsigned, base, it)) < 0)
		return bad(what, "unknown %s '%s'", id_noun(it), value);
	return 0;
}

static void
print_id(const struct config_item *it, const void *base, FILE *f)
{
	unsigned id = *CFIELD(unsigned, base, it);

	if (id != (unsigned)-1)
		id_print(id, it->flags & ID_GROUP, f);
}

static const struct config_type type_id = { parse_id, print_id, NULL };

/*
 * A pool's user: the uid, and the name and primary group that initgroups()
 * needs, so that workers take the user's own groups rather than root's.
 */
static int
parse_user(const struct config_item *it, const char *value, void *base, char *what)
{
	struct config_pool *c = base;
	struct passwd *pw;
	uid_t uid;

	if (unset(it, value)) {
		free(c->user_name);
		c->user_name = NULL;
		c->user = (uid_t)-1;
		c->user_gid = (gid_t)-1;
		return 0;
	}
	if (id_parse(value, false, &uid) < 0)
		return bad(what, "unknown user '%s'", value);
	pw = getpwuid(uid);
	char *name = strdup(pw ? pw->pw_name : value);
	if (!name)
		return -ENOMEM;
	free(c->user_name);
	c->user_name = name;
	c->user = uid;
	c->user_gid = pw ? pw->pw_gid : (gid_t)-1;
	return 0;
}

static void
print_user(const struct config_item *it, const void *base, FILE *f)
{
	const struct config_pool *c = base;

	if (c->user_name)
		fputs(c->user_name, f);
}

static const struct config_type type_user = { parse_user, print_user, NULL };

/* "alice, 1000 wheel" → ids. */
static int
parse_id_list(const struct config_item *it, const char *value, unsigned **ids, size_t *n_ids,
	      char *what)
{
	_cleanup_free_ char *copy = strdup(value);
	_cleanup_free_ unsigned *list = NULL;
	size_t n = 0;
	char *save = NULL;

	if (!copy)
		return -ENOMEM;
	for (char *tok = strtok_r(copy, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save)) {
		unsigned *t = realloc(list, (n + 1) * sizeof(*list));
		if (!t)
			return -ENOMEM;
		list = t;
		if (id_parse(tok, it->flags & ID_GROUP, &list[n++]) < 0)
			return bad(what, "unknown %s '%s'", id_noun(it), tok);
	}
	/* An empty list admits anyone: it must be written as nothing, never by accident. */
	if (n == 0 && *value != '\0')
		return bad(what, "'%s' names no %s; leave it empty to admit anyone the mode lets in",
			   value, id_noun(it));
	free(*ids);
	*ids = TAKE_PTR(list);
	*n_ids = n;
	return 0;
}

static void
print_id_list(const struct config_item *it, const unsigned *ids, size_t n, FILE *f)
{
	for (size_t i = 0; i < n; i++) {
		if (i > 0)
			fputs(", ", f);
		id_print(ids[i], it->flags & ID_GROUP, f);
	}
}

/* The lists and their lengths sit in two fields each; the table names the list. */
static int
parse_allow(const struct config_item *it, const char *value, void *base, char *what)
{
	struct config_listener *l = base;

	if (it->flags & ID_GROUP)
		return parse_id_list(it, value, &l->allow_gids, &l->n_allow_gids, what);
	return parse_id_list(it, value, &l->allow_uids, &l->n_allow_uids, what);
}

static void
print_allow(const struct config_item *it, const void *base, FILE *f)
{
	const struct config_listener *l = base;

	if (it->flags & ID_GROUP)
		print_id_list(it, l->allow_gids, l->n_allow_gids, f);
	else
		print_id_list(it, l->allow_uids, l->n_allow_uids, f);
}

static const struct config_type type_allow = { parse_allow, print_allow, NULL };

static bool
name_valid(const char *s)
{
	return *s && !s[strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")];
}

/* A name that may be left unset (NULL): a listener's pool. */
static int
parse_name(const struct config_item *it, const char *value, void *base, char *what)
{
	char **dst = FIELD(char *, base, it);

	if (unset(it, value)) {
		free(*dst);
		*dst = NULL;
		return 0;
	}
	if (!name_valid(value))
		return bad(what, "'%s' is not a name (letters, digits, '_', '.', '-')", value);
	return parse_string(it, value, base, what);
}

static void
print_name(const struct config_item *it, const void *base, FILE *f)
{
	const char *s = *CFIELD(char *, base, it);

	if (s)
		fputs(s, f);
}

static const struct config_type type_name = { parse_name, print_name, NULL };

/* A systemd unit a peer may run in: what sd_pid_get_unit() answers, a service or a scope. */
static bool
unit_name_valid(const char *s)
{
	size_t n = strlen(s), len = strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
					      "0123456789:_.\\@-");

	if (len != n || n > 255)
		return false;
	return (n > 8 && strcmp(s + n - 8, ".service") == 0) ||
	       (n > 6 && strcmp(s + n - 6, ".scope") == 0);
}

static void
units_free(char **units, size_t n)
{
	for (size_t i = 0; units && i < n; i++)
		free(units[i]);
	free(units);
}

/* "backup.service, cron.service" → the list; empty: no unit check. */
static int
parse_units(const struct config_item *it, const char *value, void *base, char *what)
{
	struct config_listener *l = base;
	_cleanup_free_ char *copy = strdup(value);
	char **list = NULL, *save = NULL;
	size_t n = 0;

	if (!copy)
		return -ENOMEM;
	for (char *tok = strtok_r(copy, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save)) {
		char **t = n < CONFIG_MAX_UNITS ? realloc(list, (n + 1) * sizeof(*list)) : NULL;

		if (n == CONFIG_MAX_UNITS) {
			units_free(list, n);
			return bad(what, "more than %d units", CONFIG_MAX_UNITS);
		}
		if (!t || !(t[n] = strdup(tok))) {
			units_free(t ? t : list, n);
			return -ENOMEM;
		}
		list = t;
		if (!unit_name_valid(list[n++])) {
			bad(what, "'%s' is not a service or scope unit such as backup.service", tok);
			units_free(list, n);
			return -EINVAL;
		}
	}
	if (n == 0 && *value != '\0')
		return bad(what, "'%s' names no unit; leave it empty to admit any unit", value);
	units_free(l->allow_units, l->n_allow_units);
	l->allow_units = list;
	l->n_allow_units = n;
	return 0;
}

static void
print_units(const struct config_item *it, const void *base, FILE *f)
{
	const struct config_listener *l = base;

	for (size_t i = 0; i < l->n_allow_units; i++)
		fprintf(f, "%s%s", i ? ", " : "", l->allow_units[i]);
}

static const struct config_type type_units = { parse_units, print_units, NULL };

#define DAEMON(key, type, field, min, max, flags, def, doc)                                      \
	{ CONFIG_SECTION_DAEMON, key, &type, offsetof(struct config, field), min, max, flags, def, \
	  doc }
#define POOL(key, type, field, min, max, flags, def, doc)                                      \
	{ CONFIG_SECTION_POOL, key, &type, offsetof(struct config_pool, field), min, max, flags, \
	  def, doc }
#define LISTENER(key, type, field, min, max, flags, def, doc)                                 \
	{ CONFIG_SECTION_LISTENER, key, &type, offsetof(struct config_listener, field), min, max, \
	  flags, def, doc }

#define ADMIN(key, type, field, flags, def, doc)                                               \
	{ CONFIG_SECTION_ADMIN, key, &type, offsetof(struct config_listener, field), 0, 0, flags, \
	  def, doc }

const struct config_item config_items[] = {
	DAEMON("shutdown_timeout", type_duration, shutdown_timeout_usec, 0, 0, 0, "10s",
	       "on stop or reload, how long workers may finish open connections"),
	DAEMON("exit_idle_time", type_duration, exit_idle_usec, 0, 0, CONFIG_OFF, "off",
	       "socket-activated only: exit once no client was connected for this long"),
	POOL("workers", type_workers, workers, 1, CONFIG_MAX_WORKERS, 0, "auto",
	     "worker processes; auto = the number of CPUs"),
	POOL("workers_min", type_bound, workers_min, 1, CONFIG_MAX_WORKERS, 0, "",
	     "a dynamic pool's fewest workers; either bound makes the pool dynamic"),
	POOL("workers_max", type_bound, workers_max, 1, CONFIG_MAX_WORKERS, 0, "",
	     "a dynamic pool's most workers"),
	POOL("worker_load_mark", type_uint, worker_load_mark, 1, 1000000, 0, "100",
	     "clients on every worker above which a dynamic pool grows"),
	POOL("worker_idle_time", type_duration, worker_idle_usec, 0, 0, 0, "10s",
	     "a dynamic pool retires a worker without a client for this long"),
	POOL("threads", type_uint, threads, 1, CONFIG_MAX_THREADS, 0, "4",
	     "threads per worker process"),
	POOL("max_connections", type_uint, max_connections, 1, 100000000, 0, "10000",
	     "most clients one worker holds"),
	POOL("max_connections_total", type_uint, max_connections_total, 0, 100000000, 0, "0",
	     "most clients all workers of the pool hold together; 0 = only the per-worker limit"),
	POOL("busy_poll", type_duration, busy_poll_usec, 0, USEC_PER_MSEC, CONFIG_OFF, "off",
	     "spin this long after a quiet event-loop round before sleeping"),
	POOL("user", type_user, user, 0, 0, 0, "",
	     "when started as root, workers run as this user, with its groups"),
	POOL("group", type_id, group, 0, 0, ID_GROUP, "",
	     "workers' only group instead of the user's own; needs user"),
	POOL("request_timeout", type_duration, request_timeout_usec, CONFIG_TICK_USEC,
	     3600 * USEC_PER_SEC, 0, "10s",
	     "a service callback running longer is logged with a backtrace and its worker replaced"),
	POOL("max_requests", type_uint, max_requests, 0, 1000000000, 0, "0",
	     "replace a worker after it served this many requests; 0 = never"),
	POOL("max_requests_jitter", type_uint, max_requests_jitter, 0, 1000000000, 0, "0",
	     "each worker's max_requests is raised by a random 0..this, so that they part ways"),
	POOL("max_rss", type_size, max_rss, 0, 0, CONFIG_OFF, "off",
	     "replace a worker whose resident memory grew past this"),
	LISTENER("path", type_address, address, 0, 0, 0, NULL,
		 "a file path, @abstract-name or tcp:HOST:PORT (numeric host)"),
	LISTENER("service", type_string, service, 0, 0, 0, "echo",
		 "echo, http or /path/to/service.so"),
	LISTENER("pool", type_name, pool_name, 0, 0, 0, "",
		 "the [pool NAME] whose workers serve it; empty = the default pool"),
	LISTENER("type", type_socktype, type, 0, 0, 0, "stream",
		 "stream, seqpacket or dgram (path and @abstract only)"),
	LISTENER("owner", type_id, owner, 0, 0, FILE_ONLY, "", "the socket file's owner"),
	LISTENER("group", type_id, group, 0, 0, ID_GROUP | FILE_ONLY, "",
		 "the socket file's group"),
	LISTENER("mode", type_mode, mode, 0, 0, FILE_ONLY, "0660", "the socket file's mode"),
	LISTENER("backlog", type_uint, backlog, 1, 65535, CONN_ONLY, "4096",
		 "clients the kernel queues until they are accepted"),
	LISTENER("idle_timeout", type_duration, idle_timeout_usec, 0, 0, CONFIG_OFF | CONN_ONLY, "60s",
		 "close a client that sends nothing, or takes no output, for this long"),
	LISTENER("allow_uids", type_allow, allow_uids, 0, 0, 0, "",
		 "admit only these users (SO_PEERCRED); empty = anyone the mode lets in"),
	LISTENER("allow_gids", type_allow, allow_gids, 0, 0, ID_GROUP, "",
		 "admit only members of these groups, primary or supplementary"),
	LISTENER("allow_units", type_units, allow_units, 0, 0, CONN_ONLY, "",
		 "admit only clients running in these systemd units; empty = any"),
	LISTENER("max_connections_per_uid", type_uint, max_per_uid, 0, 100000000, CONN_ONLY, "0",
		 "most clients one user holds open on this listener; 0 = no limit"),
	LISTENER("max_datagram", type_size, max_datagram, 1, 16 << 20, DGRAM_ONLY, "64k",
		 "dgram: a larger datagram is dropped and counted, never truncated"),
	ADMIN("path", type_admin_path, address, CONFIG_OFF, CONFIG_DEFAULT_ADMIN,
	      "the admin socket udsctl talks to, mode 0600, owned by udsd's user; off = none"),
	ADMIN("allow_uids", type_allow, allow_uids, 0, "",
	      "admit only these users to the admin socket; empty = anyone the mode lets in"),
	ADMIN("allow_gids", type_allow, allow_gids, ID_GROUP, "",
	      "admit only members of these groups to the admin socket"),
};

const size_t config_n_items = ELEMENTSOF(config_items);

#define N_ITEMS ELEMENTSOF(config_items)

const struct config_item *
config_item_find(enum config_section section, const char *key)
{
	for (size_t i = 0; i < N_ITEMS; i++)
		if (config_items[i].section == section && strcmp(config_items[i].key, key) == 0)
			return &config_items[i];
	return NULL;
}

/* Start a section from the table's defaults, parsed like a user's values. */
static int
apply_defaults(enum config_section section, void *base)
{
	char what[WHAT_MAX];

	for (size_t i = 0; i < N_ITEMS; i++) {
		const struct config_item *it = &config_items[i];
		if (it->section != section || !it->def)
			continue;
		int r = it->type->parse(it, it->def, base, what);
		assert(r == 0 || r == -ENOMEM); /* the table's defaults are valid */
		if (r < 0)
			return r;
	}
	return 0;
}

/* Parser state: inih calls back per key; we count lines through our own reader. */
struct parse {
	struct config *config;
	const char *name;
	unsigned line;
	char *err;
	size_t errlen;
	int error; /* the first one, -errno; 0 while all is well */
	enum config_section section;
	void *base;   /* what the current section's keys fill: the config, a listener or a pool */
	size_t index; /* of the current section in lines: LINES_DAEMON, LINES_LISTENER(i), ... */
	unsigned daemon_line;
	unsigned admin_line;
	/* [daemon]'s pool keys: parsed here to check them, kept as written for every pool. */
	struct config_pool defaults;
	char *default_values[N_ITEMS];
	/* Where each key of each section was set, for duplicates and later checks. */
	unsigned lines[1 + CONFIG_MAX_LISTENERS + CONFIG_MAX_POOLS + 2][N_ITEMS];
};

#define LINES_DAEMON 0
#define LINES_LISTENER(i) (1 + (i))
#define LINES_POOL(i) (1 + CONFIG_MAX_LISTENERS + (i))
#define LINES_ADMIN (1 + CONFIG_MAX_LISTENERS + CONFIG_MAX_POOLS + 1)

_printf_(3, 4) static int
parse_fail(struct parse *p, unsigned line, const char *fmt, ...)
{
	va_list ap;
	int n = 0;

	if (p->error)
		return p->error; /* keep the first error: it is the one the user fixes first */
	p->error = -EINVAL;
	if (line > 0)
		n = snprintf(p->err, p->errlen, "%s:%u: ", p->name, line);
	else
		n = snprintf(p->err, p->errlen, "%s: ", p->name);
	if (n < 0 || (size_t)n >= p->errlen)
		return p->error;
	va_start(ap, fmt);
	vsnprintf(p->err + n, p->errlen - n, fmt, ap);
	va_end(ap);
	return p->error;
}

static int
parse_oom(struct parse *p)
{
	if (!p->error) {
		parse_fail(p, p->line, "out of memory");
		p->error = -ENOMEM;
	}
	return p->error;
}

static unsigned
key_line(const struct parse *p, size_t index, enum config_section section, const char *key)
{
	return p->lines[index][config_item_find(section, key) - config_items];
}

/* Where a pool's key was set: in its own section, else in [daemon]; 0 if nowhere. */
static unsigned
pool_key_line(const struct parse *p, size_t pool, const char *key)
{
	unsigned line = key_line(p, LINES_POOL(pool), CONFIG_SECTION_POOL, key);

	return line ? line : key_line(p, LINES_DAEMON, CONFIG_SECTION_POOL, key);
}

/* A key the daemon does not know: kept for the listener's service to judge. */
static int
add_extra(struct parse *p, const char *key, const char *value)
{
	struct config_listener *l = p->base;

	for (size_t i = 0; i < l->n_extra; i++)
		if (strcmp(l->extra[i].key, key) == 0)
			return parse_fail(p, p->line, "%s: set twice (first at line %u)", key,
					  l->extra[i].line);
	struct config_kv *t = realloc(l->extra, (l->n_extra + 1) * sizeof(*t));
	if (!t)
		return parse_oom(p);
	l->extra = t;
	t[l->n_extra] = (struct config_kv){ strdup(key), strdup(value), p->line };
	if (!t[l->n_extra].key || !t[l->n_extra].value) {
		free(t[l->n_extra].key);
		free(t[l->n_extra].value);
		return parse_oom(p);
	}
	l->n_extra++;
	return 0;
}

/* In [daemon], a pool key is every pool's default: checked now, applied to pools at the end. */
static int
set_default(struct parse *p, const struct config_item *it, const char *value, char *what)
{
	char *copy = strdup(value);
	int r;

	if (!copy)
		return -ENOMEM;
	r = it->type->parse(it, value, &p->defaults, what);
	if (r < 0) {
		free(copy);
		return r;
	}
	p->default_values[it - config_items] = copy;
	return 0;
}

static int
set_key(struct parse *p, const char *key, const char *value)
{
	const struct config_item *it = config_item_find(p->section, key);
	bool is_default = false;
	char what[WHAT_MAX];
	int r;

	if (*key == '\0')
		return parse_fail(p, p->line, "no key before '='");
	if (p->section == CONFIG_SECTION_NONE)
		return parse_fail(p, p->line, "'%s' is outside any section", key);
	if (!it && p->section == CONFIG_SECTION_DAEMON)
		is_default = (it = config_item_find(CONFIG_SECTION_POOL, key)) != NULL;
	if (!it && p->section != CONFIG_SECTION_LISTENER)
		return parse_fail(p, p->line, "unknown key '%s' in [%s]", key,
				  p->section == CONFIG_SECTION_DAEMON ? "daemon" :
				  p->section == CONFIG_SECTION_ADMIN  ? "admin" :
									((struct config_pool *)p->base)->name);
	if (!it)
		return add_extra(p, key, value);
	unsigned *line = &p->lines[p->index][it - config_items];
	if (*line)
		return parse_fail(p, p->line, "%s: set twice (first at line %u)", key, *line);
	*line = p->line;
	r = is_default ? set_default(p, it, value, what) : it->type->parse(it, value, p->base, what);
	if (r == -ENOMEM)
		return parse_oom(p);
	if (r < 0)
		return parse_fail(p, p->line, "%s: %s", key, what);
	return 0;
}

static int
listener_new(struct parse *p, const char *name)
{
	struct config *c = p->config;

	if (*name == '\0')
		return parse_fail(p, p->line, "[listener] needs a name: [listener NAME]");
	for (size_t i = 0; i < c->n_listeners; i++)
		if (strcmp(c->listeners[i].name, name) == 0)
			return parse_fail(p, p->line,
					  "listener '%s' is defined twice (first at line %u)", name,
					  c->listeners[i].line);
	if (c->n_listeners >= CONFIG_MAX_LISTENERS)
		return parse_fail(p, p->line, "more than %d listeners", CONFIG_MAX_LISTENERS);
	struct config_listener *t = realloc(c->listeners, (c->n_listeners + 1) * sizeof(*t));
	if (!t)
		return parse_oom(p);
	c->listeners = t;
	struct config_listener *l = &t[c->n_listeners++];
	*l = (struct config_listener){ .name = strdup(name), .line = p->line };
	if (!l->name || apply_defaults(CONFIG_SECTION_LISTENER, l) < 0)
		return parse_oom(p);
	p->section = CONFIG_SECTION_LISTENER;
	p->base = l;
	p->index = LINES_LISTENER(c->n_listeners - 1);
	return 0;
}

static void
pool_free(struct config_pool *pool)
{
	free(pool->name);
	free(pool->user_name);
}

/* A pool named name, from the table's defaults (and, at the end, [daemon]'s). */
static int
pool_add(struct parse *p, const char *name, unsigned line)
{
	struct config *c = p->config;
	struct config_pool *t = realloc(c->pools, (c->n_pools + 1) * sizeof(*t));

	if (!t)
		return parse_oom(p);
	c->pools = t;
	t[c->n_pools] = (struct config_pool){ .name = strdup(name), .line = line };
	c->n_pools++;
	if (!t[c->n_pools - 1].name || apply_defaults(CONFIG_SECTION_POOL, &t[c->n_pools - 1]) < 0)
		return parse_oom(p);
	return 0;
}

static int
pool_new(struct parse *p, const char *name)
{
	struct config *c = p->config;

	if (*name == '\0')
		return parse_fail(p, p->line, "[pool] needs a name: [pool NAME]");
	if (!name_valid(name))
		return parse_fail(p, p->line, "[pool %s]: not a name (letters, digits, '_', '.', '-')",
				  name);
	for (size_t i = 0; i < c->n_pools; i++)
		if (strcmp(c->pools[i].name, name) == 0)
			return parse_fail(p, p->line, "pool '%s' is defined twice (first at line %u)",
					  name, c->pools[i].line);
	if (c->n_pools >= CONFIG_MAX_POOLS)
		return parse_fail(p, p->line, "more than %d pools", CONFIG_MAX_POOLS);
	if (pool_add(p, name, p->line) < 0)
		return p->error;
	p->section = CONFIG_SECTION_POOL;
	p->base = &c->pools[c->n_pools - 1];
	p->index = LINES_POOL(c->n_pools - 1);
	return 0;
}

/* "listener NAME" or "pool NAME": the name, or NULL if section is not of that kind. */
static const char *
section_name(const char *section, const char *kind)
{
	size_t n = strlen(kind);

	if (strncmp(section, kind, n) != 0 || (section[n] != '\0' && !isspace((unsigned char)section[n])))
		return NULL;
	section += n;
	while (isspace((unsigned char)*section))
		section++;
	return section;
}

/* Section names are "daemon", "admin", "listener NAME" and "pool NAME". */
static void
enter_section(struct parse *p, const char *section)
{
	const char *name;

	p->section = CONFIG_SECTION_NONE;
	if (strcmp(section, "daemon") == 0) {
		if (p->daemon_line) {
			parse_fail(p, p->line, "[daemon] is defined twice (first at line %u)",
				   p->daemon_line);
			return;
		}
		p->daemon_line = p->line;
		p->section = CONFIG_SECTION_DAEMON;
		p->base = p->config;
		p->index = LINES_DAEMON;
	} else if (strcmp(section, "admin") == 0) {
		if (p->admin_line) {
			parse_fail(p, p->line, "[admin] is defined twice (first at line %u)",
				   p->admin_line);
			return;
		}
		p->admin_line = p->line;
		p->section = CONFIG_SECTION_ADMIN;
		p->base = &p->config->admin;
		p->index = LINES_ADMIN;
	} else if ((name = section_name(section, "listener"))) {
		listener_new(p, name);
	} else if ((name = section_name(section, "pool"))) {
		pool_new(p, name);
	} else {
		parse_fail(p, p->line, "unknown section [%s]", section);
	}
}

/* A section header, handled here so that an empty section is still seen. */
static void
header(struct parse *p, const char *b)
{
	const char *end = strchr(b, ']');

	if (!end) {
		/* inih would carry on in the old section and blame the next key instead. */
		parse_fail(p, p->line, "section header '%.*s' has no closing ']'",
			   (int)strcspn(b, "\r\n"), b);
		return;
	}
	_cleanup_free_ char *name = strndup(b + 1, (size_t)(end - b - 1));
	if (!name)
		parse_oom(p);
	else
		enter_section(p, name);
}

/*
 * inih reads through this, one line per call, which is how we know the line
 * number of each key (Debian builds inih without INI_HANDLER_LINENO).
 */
static char *
reader(char *buf, int size, void *userdata)
{
	struct parse *p = ((void **)userdata)[0];
	const char **text = ((void **)userdata)[1];
	const char *s = *text, *nl;
	size_t n;

	if (*s == '\0')
		return NULL;
	nl = strchr(s, '\n');
	n = nl ? (size_t)(nl - s) + 1 : strlen(s);
	if (n >= (size_t)size) {
		/* inih would read the rest as a line of its own. */
		parse_fail(p, p->line + 1, "line too long (at most %d bytes)", size - 1);
		n = (size_t)size - 1;
	}
	memcpy(buf, s, n);
	buf[n] = '\0';
	*text = s + n;
	p->line++;

	char *b = buf;
	while (isspace((unsigned char)*b))
		b++;
	if (*b == '[' && !p->error)
		header(p, b);
	return buf;
}

static int
handler(void *user, const char *section, const char *key, const char *value)
{
	struct parse *p = user;

	if (!p->error)
		set_key(p, key, value);
	return 1; /* errors are ours to report: inih would only give a line number */
}

/* The earlier of two lines where either may be 0 (never set). */
static unsigned
first_line(unsigned a, unsigned b)
{
	return a && (!b || a < b) ? a : b;
}

/* The first line in the listener that set a key with these flags; 0 if none did. */
static unsigned
flagged_line(const struct parse *p, size_t i, unsigned flags)
{
	unsigned line = 0;

	for (size_t k = 0; k < N_ITEMS; k++)
		if (config_items[k].section == CONFIG_SECTION_LISTENER && config_items[k].flags & flags)
			line = first_line(line, p->lines[LINES_LISTENER(i)][k]);
	return line;
}

/* Where listener i set the key of row it. */
static unsigned
item_line(const struct parse *p, size_t i, const struct config_item *it)
{
	return p->lines[LINES_LISTENER(i)][it - config_items];
}

/* The key with these flags that listener i set first; NULL if it set none. */
static const struct config_item *
flagged_item(const struct parse *p, size_t i, unsigned flags)
{
	const struct config_item *first = NULL;

	for (size_t k = 0; k < N_ITEMS; k++) {
		const struct config_item *it = &config_items[k];

		if (it->section == CONFIG_SECTION_LISTENER && it->flags & flags && item_line(p, i, it) &&
		    (!first || item_line(p, i, it) < item_line(p, i, first)))
			first = it;
	}
	return first;
}

static int
validate_listener(struct parse *p, size_t i)
{
	struct config_listener *l = &p->config->listeners[i];
	const enum config_section s = CONFIG_SECTION_LISTENER;
	unsigned uids = key_line(p, LINES_LISTENER(i), s, "allow_uids");
	unsigned gids = key_line(p, LINES_LISTENER(i), s, "allow_gids");
	const struct config_item *dgram, *conn;

	l->service_line = key_line(p, LINES_LISTENER(i), s, "service");
	if (l->service_line == 0)
		l->service_line = l->line;
	l->perm_line = flagged_line(p, i, FILE_ONLY);
	dgram = flagged_item(p, i, DGRAM_ONLY);
	conn = flagged_item(p, i, CONN_ONLY);
	if (!l->address)
		return parse_fail(p, l->line, "[listener %s] has no path", l->name);
	if (l->kind != LISTENER_PATH && l->perm_line)
		return parse_fail(p, l->perm_line,
				  "owner, group and mode apply to socket files; '%s' has no file",
				  l->address);
	if (l->kind == LISTENER_TCP && l->type != SOCK_STREAM)
		return parse_fail(p, l->line, "tcp listeners are stream only");
	if (l->type != SOCK_DGRAM && dgram)
		return parse_fail(p, item_line(p, i, dgram), "%s applies to type = dgram listeners",
				  dgram->key);
	if (l->type == SOCK_DGRAM && conn)
		return parse_fail(p, item_line(p, i, conn),
				  "%s applies to connections; a dgram listener has none", conn->key);
	/* Checked in the master with SO_PEERCRED, which TCP has not: it would refuse everyone. */
	if (l->kind == LISTENER_TCP && (l->n_allow_uids || l->n_allow_gids)) {
		unsigned line = l->n_allow_uids ? uids : gids;
		if (l->n_allow_uids && l->n_allow_gids)
			line = first_line(uids, gids);
		return parse_fail(p, line, "%s: a tcp: listener has no peer credentials to check",
				  line == uids ? "allow_uids" : "allow_gids");
	}
	if (l->kind == LISTENER_TCP && (l->n_allow_units || l->max_per_uid)) {
		const char *key = l->n_allow_units ? "allow_units" : "max_connections_per_uid";
		return parse_fail(p, key_line(p, LINES_LISTENER(i), s, key),
				  "%s: a tcp: listener has no peer credentials to check", key);
	}
	for (const struct config_listener *o = p->config->listeners; o < l; o++)
		if (strcmp(o->address, l->address) == 0)
			return parse_fail(p, l->line, "listener '%s' uses the address of '%s'",
					  l->name, o->name);
	return 0;
}

static int
validate_user(struct parse *p, size_t i)
{
	const struct config_pool *c = &p->config->pools[i];

	if (c->group != (gid_t)-1 && c->user == (uid_t)-1)
		return parse_fail(p, pool_key_line(p, i, "group"),
				  "group: needs user; user implies the user's own groups");
	if (c->user != (uid_t)-1 && c->user_gid == (gid_t)-1 && c->group == (gid_t)-1)
		return parse_fail(p, pool_key_line(p, i, "user"),
				  "user: uid %u has no passwd entry, so no groups of its own: set group too",
				  (unsigned)c->user);
	return 0;
}

static int
validate_workers(struct parse *p, size_t i)
{
	struct config_pool *c = &p->config->pools[i];
	bool dynamic = c->workers_min || c->workers_max;
	char where[80] = "";

	if (c->workers == 0) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		c->workers = (unsigned)MIN(MAX(n, 1), CONFIG_MAX_WORKERS);
	}
	if (!dynamic) {
		c->workers_min = c->workers_max = c->workers;
		return 0;
	}
	/* One bound alone: the other is the same, or 1 for the minimum. */
	if (c->workers_max == 0)
		c->workers_max = c->workers_min;
	if (c->workers_min == 0)
		c->workers_min = 1;
	if (c->line)
		snprintf(where, sizeof(where), "[pool %.60s]: ", c->name);
	if (c->workers_min > c->workers_max)
		return parse_fail(p, c->line, "%sworkers_min (%u) is above workers_max (%u)", where,
				  c->workers_min, c->workers_max);
	c->workers = c->workers_min;
	return 0;
}

/* [daemon]'s pool keys, for each key pool i did not set itself. */
static int
pool_inherit(struct parse *p, size_t i)
{
	char what[WHAT_MAX];

	for (size_t k = 0; k < N_ITEMS; k++) {
		const struct config_item *it = &config_items[k];

		if (it->section != CONFIG_SECTION_POOL || !p->default_values[k] ||
		    p->lines[LINES_POOL(i)][k])
			continue;
		/* It parsed once already, in [daemon]: only memory can fail now. */
		if (it->type->parse(it, p->default_values[k], &p->config->pools[i], what) < 0)
			return parse_oom(p);
	}
	return 0;
}

/* Each listener's pool, by name; the implicit one is made for those that name none. */
static int
resolve_pools(struct parse *p)
{
	struct config *c = p->config;

	for (size_t i = 0; i < c->n_listeners; i++) {
		struct config_listener *l = &c->listeners[i];
		const char *name = l->pool_name ? l->pool_name : CONFIG_DEFAULT_POOL;
		const struct config_pool *pool = config_find_pool(c, name);

		if (!pool && strcmp(name, CONFIG_DEFAULT_POOL) == 0) {
			if (c->n_pools >= CONFIG_MAX_POOLS)
				return parse_fail(p, l->line, "more than %d pools", CONFIG_MAX_POOLS);
			if (pool_add(p, CONFIG_DEFAULT_POOL, 0) < 0)
				return p->error;
			pool = &c->pools[c->n_pools - 1];
		}
		if (!pool)
			return parse_fail(p, key_line(p, LINES_LISTENER(i), CONFIG_SECTION_LISTENER, "pool"),
					  "pool: no [pool %s] section", name);
		l->pool = (unsigned)(pool - c->pools);
	}
	return 0;
}

static int
validate_pools(struct parse *p)
{
	struct config *c = p->config;
	unsigned total = 0;
	int r = resolve_pools(p);

	for (size_t i = 0; i < c->n_pools && r >= 0; i++) {
		bool used = false;

		for (size_t k = 0; k < c->n_listeners; k++)
			used |= c->listeners[k].pool == i;
		if (!used)
			return parse_fail(p, c->pools[i].line,
					  "[pool %s] serves no listener (a listener names it with pool = %s)",
					  c->pools[i].name, c->pools[i].name);
		r = pool_inherit(p, i);
		if (r >= 0)
			r = validate_user(p, i);
		if (r >= 0)
			r = validate_workers(p, i);
		if (r >= 0)
			total += c->pools[i].workers_max;
	}
	if (r >= 0 && total > CONFIG_MAX_WORKERS)
		return parse_fail(p, 0, "the pools have up to %u workers together, more than %d", total,
				  CONFIG_MAX_WORKERS);
	return r;
}

static int
validate(struct parse *p)
{
	struct config *c = p->config;
	int r;

	if (p->error)
		return p->error;
	if (c->n_listeners == 0)
		return parse_fail(p, 0, "no [listener NAME] section");
	for (size_t i = 0; i < c->n_listeners; i++) {
		r = validate_listener(p, i);
		if (r < 0)
			return r;
	}
	return validate_pools(p);
}

static int
parse_text(struct parse *p, const char *text)
{
	const char *cursor = text;
	void *ud[2] = { p, &cursor };
	int r;

	r = ini_parse_stream(reader, ud, handler, p);
	if (r > 0)
		parse_fail(p, (unsigned)r, "syntax error (expected [section] or key = value)");
	else if (r < 0)
		parse_fail(p, 0, "could not parse (out of memory)");
	return validate(p);
}

int
config_load_string(const char *name, const char *text, struct config **ret, char *err,
		   size_t errlen)
{
	struct config *c = calloc(1, sizeof(*c));
	struct parse *p = calloc(1, sizeof(*p));
	int r = -ENOMEM;

	if (c && p && (c->file = strdup(name)) && apply_defaults(CONFIG_SECTION_DAEMON, c) >= 0 &&
	    apply_defaults(CONFIG_SECTION_ADMIN, &c->admin) >= 0 &&
	    apply_defaults(CONFIG_SECTION_POOL, &p->defaults) >= 0) {
		p->config = c;
		p->name = name;
		p->err = err;
		p->errlen = errlen;
		r = parse_text(p, text);
	} else {
		snprintf(err, errlen, "%s: out of memory", name);
	}
	if (p) {
		pool_free(&p->defaults);
		for (size_t i = 0; i < N_ITEMS; i++)
			free(p->default_values[i]);
	}
	free(p);
	if (r < 0) {
		config_free(c);
		return r;
	}
	*ret = c;
	return 0;
}

int
config_load(const char *file, struct config **ret, char *err, size_t errlen)
{
	_cleanup_free_ char *text = NULL;
	FILE *f = fopen(file, "re");
	size_t len = 0;
	int r;

	if (!f) {
		r = negative_errno();
		snprintf(err, errlen, "%s: %s", file, strerror(-r));
		return r;
	}
	FILE *m = open_memstream(&text, &len);
	if (!m) {
		fclose(f);
		return -ENOMEM;
	}
	char buf[4096];
	for (size_t n; (n = fread(buf, 1, sizeof(buf), f)) > 0;)
		fwrite(buf, 1, n, m);
	r = ferror(f) ? -EIO : 0;
	fclose(f);
	fclose(m);
	if (r < 0 || !text) {
		snprintf(err, errlen, "%s: read error", file);
		return r < 0 ? r : -ENOMEM;
	}
	if (strlen(text) != len) {
		snprintf(err, errlen, "%s: contains a NUL byte", file);
		return -EINVAL;
	}
	return config_load_string(file, text, ret, err, errlen);
}

/* inih takes " ;" for a comment: a value that starts with ";" must follow "=" at once. */
static void
dump_key(const char *key, const char *value, FILE *f)
{
	fprintf(f, "%s =%s%s\n", key, *value && *value != ';' ? " " : "", value);
}

static int
dump_section(const void *base, enum config_section section, bool no_file, bool no_dgram, FILE *f)
{
	for (size_t i = 0; i < N_ITEMS; i++) {
		const struct config_item *it = &config_items[i];
		_cleanup_free_ char *value = NULL;
		size_t len = 0;

		if (it->section != section)
			continue;
		FILE *v = open_memstream(&value, &len);
		if (!v)
			return -ENOMEM;
		it->type->print(it, base, v);
		if (fclose(v) != 0)
			return -ENOMEM;
		/* A key that cannot apply is shown, not set: setting it is an error. */
		fprintf(f, "; %s\n%s", it->doc,
			(no_file && it->flags & FILE_ONLY) || (no_dgram && it->flags & DGRAM_ONLY) ||
					(!no_dgram && it->flags & CONN_ONLY) ?
				"; " : "");
		dump_key(it->key, value, f);
	}
	return 0;
}

int
config_dump(const struct config *c, FILE *f)
{
	int r;

	fprintf(f, "; The effective configuration of %s, printed by udsd -T.\n\n[daemon]\n",
		c->file);
	r = dump_section(c, CONFIG_SECTION_DAEMON, false, false, f);
	for (size_t i = 0; i < c->n_pools && r >= 0; i++) {
		fprintf(f, "\n[pool %s]\n", c->pools[i].name);
		r = dump_section(&c->pools[i], CONFIG_SECTION_POOL, false, false, f);
	}
	if (r >= 0) {
		fputs("\n[admin]\n", f);
		r = dump_section(&c->admin, CONFIG_SECTION_ADMIN, false, false, f);
	}
	for (size_t i = 0; i < c->n_listeners && r >= 0; i++) {
		const struct config_listener *l = &c->listeners[i];

		fprintf(f, "\n[listener %s]\n", l->name);
		r = dump_section(l, CONFIG_SECTION_LISTENER, l->kind != LISTENER_PATH,
				 l->type != SOCK_DGRAM, f);
		if (l->n_extra)
			fprintf(f, "; for the %s service, as written\n", l->service);
		for (size_t k = 0; k < l->n_extra; k++)
			dump_key(l->extra[k].key, l->extra[k].value, f);
	}
	if (r < 0)
		return r;
	return fflush(f) == 0 && !ferror(f) ? 0 : -EIO;
}

void
config_free(struct config *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->n_listeners; i++) {
		struct config_listener *l = &c->listeners[i];

		free(l->name);
		free(l->address);
		free(l->service);
		free(l->allow_uids);
		free(l->allow_gids);
		units_free(l->allow_units, l->n_allow_units);
		free(l->pool_name);
		for (size_t k = 0; k < l->n_extra; k++) {
			free(l->extra[k].key);
			free(l->extra[k].value);
		}
		free(l->extra);
	}
	free(c->listeners);
	free(c->admin.address);
	free(c->admin.allow_uids);
	free(c->admin.allow_gids);
	for (size_t i = 0; i < c->n_pools; i++)
		pool_free(&c->pools[i]);
	free(c->pools);
	free(c->file);
	free(c);
}

bool
config_listener_admits(const struct config_listener *l, uid_t uid, gid_t gid,
		       const gid_t *groups, size_t n_groups)
{
	if (l->n_allow_uids == 0 && l->n_allow_gids == 0)
		return true;
	for (size_t i = 0; i < l->n_allow_uids; i++)
		if (l->allow_uids[i] == uid)
			return true;
	for (size_t i = 0; i < l->n_allow_gids; i++) {
		if (l->allow_gids[i] == gid)
			return true;
		for (size_t k = 0; k < n_groups; k++)
			if (l->allow_gids[i] == groups[k])
				return true;
	}
	return false;
}

const struct config_listener *
config_find_listener(const struct config *c, const char *name)
{
	for (size_t i = 0; i < c->n_listeners; i++)
		if (strcmp(c->listeners[i].name, name) == 0)
			return &c->listeners[i];
	return NULL;
}

const struct config_pool *
config_find_pool(const struct config *c, const char *name)
{
	for (size_t i = 0; i < c->n_pools; i++)
		if (strcmp(c->pools[i].name, name) == 0)
			return &c->pools[i];
	return NULL;
}

/* A service's own keys: its table's rows become schema rows of the same types. */

static int
key_item(const struct udsd_key *k, struct config_item *ret)
{
	static const struct config_type *const types[] = {
		[UDSD_KEY_UINT] = &type_uint,
		[UDSD_KEY_SIZE] = &type_size,
		[UDSD_KEY_DURATION] = &type_duration,
		[UDSD_KEY_PATH] = &type_urlpath,
	};

	if ((unsigned)k->type >= ELEMENTSOF(types) || !k->key)
		return -EINVAL;
	*ret = (struct config_item){ .key = k->key, .type = types[k->type], .offset = k->offset,
				     .min = k->min, .max = k->max, .def = k->def, .doc = k->doc,
				     .flags = WIDE | (k->flags & UDSD_KEY_OFF ? CONFIG_OFF : 0) };
	return 0;
}

static int
key_unknown(const struct udsd_key *keys, size_t n, const char *key, char *err, size_t errlen)
{
	FILE *f = fmemopen(err, errlen, "w");

	if (!f) {
		snprintf(err, errlen, "%s: unknown key", key);
		return -EINVAL;
	}
	fprintf(f, "%s: unknown key (this service has %s", key, n ? "" : "none");
	for (size_t i = 0; i < n; i++)
		fprintf(f, "%s%s", i ? ", " : "", keys[i].key);
	fputc(')', f);
	fclose(f);
	return -EINVAL;
}

static int
key_set(const struct udsd_key *k, const char *value, void *settings, char *err, size_t errlen)
{
	struct config_item it;
	char what[WHAT_MAX];
	int r;

	r = key_item(k, &it);
	if (r < 0) {
		snprintf(err, errlen, "%s: not a known key type in the service's table", k->key);
		return r;
	}
	r = it.type->parse(&it, value, settings, what);
	if (r < 0)
		snprintf(err, errlen, "%s: %s", k->key, r == -ENOMEM ? "out of memory" : what);
	return r;
}

int
udsd_keys_parse(const struct udsd_key *keys, size_t n_keys,
		const struct udsd_service_config *config, void *settings, char *err,
		size_t errlen)
{
	int r;

	for (size_t i = 0; i < n_keys; i++) {
		r = keys[i].def ? key_set(&keys[i], keys[i].def, settings, err, errlen) : 0;
		if (r < 0)
			return r;
	}
	for (size_t j = 0; j < config->n_keys; j++) {
		const struct udsd_kv *kv = &config->keys[j];
		size_t i = 0;

		while (i < n_keys && strcmp(keys[i].key, kv->key) != 0)
			i++;
		if (i == n_keys)
			return key_unknown(keys, n_keys, kv->key, err, errlen);
		r = key_set(&keys[i], kv->value, settings, err, errlen);
		if (r < 0)
			return r;
	}
	return 0;
}
