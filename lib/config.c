/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <grp.h>
#include <ini.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "config.h"
#include "macro.h"

/* Parser state: inih calls back per key; we count lines through our own reader. */
struct parse {
	struct config *config;
	const char *name;
	unsigned line;
	bool line_too_long;
	char *err;
	size_t errlen;
	bool failed;
	struct config_listener *current; /* NULL outside a [listener] */
	enum { SECTION_NONE, SECTION_DAEMON, SECTION_LISTENER } section;
	bool workers_auto;
	bool pool_set;
};

_printf_(3, 4) static int
parse_fail(struct parse *p, unsigned line, const char *fmt, ...)
{
	va_list ap;
	int n = 0;

	if (p->failed)
		return 0; /* keep the first error: it is the one the user fixes first */
	p->failed = true;
	if (line > 0)
		n = snprintf(p->err, p->errlen, "%s:%u: ", p->name, line);
	else
		n = snprintf(p->err, p->errlen, "%s: ", p->name);
	if (n < 0 || (size_t)n >= p->errlen)
		return 0;
	va_start(ap, fmt);
	vsnprintf(p->err + n, p->errlen - n, fmt, ap);
	va_end(ap);
	return 0;
}

int
config_parse_uint(const char *s, unsigned min, unsigned max, unsigned *ret)
{
	char *end;
	unsigned long v;

	if (!isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno != 0 || *end != '\0')
		return -EINVAL;
	if (v < min || v > max)
		return -ERANGE;
	*ret = (unsigned)v;
	return 0;
}

struct unit {
	const char *suffix;
	uint64_t mult;
};

/* A decimal number followed by one of the units' suffixes, scaled by it. */
static int
parse_scaled(const char *s, const struct unit *units, size_t n, uint64_t *ret)
{
	char *end;
	unsigned long long v;

	if (!isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0)
		return -ERANGE;
	for (size_t i = 0; i < n; i++) {
		if (strcmp(end, units[i].suffix) != 0)
			continue;
		/* Half the range: sums of durations in the master never overflow. */
		if (v > UINT64_MAX / units[i].mult / 2)
			return -ERANGE;
		*ret = v * units[i].mult;
		return 0;
	}
	return -EINVAL;
}

/* "30us", "250ms", "10s", "5min", "1h"; a bare number is seconds, as in systemd. */
int
config_parse_duration(const char *s, uint64_t *ret_usec)
{
	static const struct unit units[] = {
		{ "us", 1 },		      { "ms", USEC_PER_MSEC },	    { "s", USEC_PER_SEC },
		{ "sec", USEC_PER_SEC },      { "", USEC_PER_SEC },	    { "min", 60 * USEC_PER_SEC },
		{ "m", 60 * USEC_PER_SEC },   { "h", 3600 * USEC_PER_SEC },
	};

	return parse_scaled(s, units, ELEMENTSOF(units), ret_usec);
}

/* "64k", "8KiB", "1M"; a bare number is bytes. */
int
config_parse_size(const char *s, uint64_t *ret_bytes)
{
	static const struct unit units[] = {
		{ "", 1 },	  { "k", 1024 },      { "K", 1024 },   { "KiB", 1024 },
		{ "M", 1 << 20 }, { "MiB", 1 << 20 }, { "G", 1 << 30 }, { "GiB", 1 << 30 },
	};

	return parse_scaled(s, units, ELEMENTSOF(units), ret_bytes);
}

int
config_parse_mode(const char *s, mode_t *ret)
{
	unsigned long v = 0;

	if (*s == '\0' || strlen(s) > 5)
		return -EINVAL;
	for (const char *c = s; *c; c++) {
		if (*c < '0' || *c > '7')
			return -EINVAL;
		v = v * 8 + (unsigned)(*c - '0');
	}
	if (v > 07777)
		return -ERANGE;
	*ret = (mode_t)v;
	return 0;
}

int
config_parse_uid(const char *s, uid_t *ret)
{
	unsigned v;

	if (config_parse_uint(s, 0, INT_MAX - 1, &v) == 0) {
		*ret = (uid_t)v;
		return 0;
	}
	struct passwd *pw = getpwnam(s);
	if (!pw)
		return -ESRCH;
	*ret = pw->pw_uid;
	return 0;
}

int
config_parse_gid(const char *s, gid_t *ret)
{
	unsigned v;

	if (config_parse_uint(s, 0, INT_MAX - 1, &v) == 0) {
		*ret = (gid_t)v;
		return 0;
	}
	struct group *gr = getgrnam(s);
	if (!gr)
		return -ESRCH;
	*ret = gr->gr_gid;
	return 0;
}

static int
id_parse(const char *s, bool is_group, unsigned *ret)
{
	if (is_group)
		return config_parse_gid(s, (gid_t *)ret);
	return config_parse_uid(s, (uid_t *)ret);
}

/* "alice, 1000 wheel" → ids; uid_t and gid_t are both unsigned int on Linux. */
static int
parse_id_list(struct parse *p, const char *key, const char *value, bool is_group,
	      unsigned **ret, size_t *ret_n)
{
	_cleanup_free_ char *copy = strdup(value);
	unsigned *ids = NULL;
	size_t n = 0;
	char *save = NULL;

	if (!copy)
		return -ENOMEM;
	for (char *tok = strtok_r(copy, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save)) {
		unsigned id;
		int r = id_parse(tok, is_group, &id);
		if (r < 0) {
			free(ids);
			parse_fail(p, p->line, "%s: unknown %s '%s'", key, is_group ? "group" : "user",
				   tok);
			return -EINVAL;
		}
		unsigned *t = realloc(ids, (n + 1) * sizeof(*ids));
		if (!t) {
			free(ids);
			return -ENOMEM;
		}
		ids = t;
		ids[n++] = id;
	}
	free(*ret);
	*ret = ids;
	*ret_n = n;
	return 0;
}

static int
set_string(char **dst, const char *value)
{
	char *s = strdup(value);

	if (!s)
		return -ENOMEM;
	free(*dst);
	*dst = s;
	return 0;
}

static int
parse_address(struct parse *p, struct config_listener *l, const char *value)
{
	if (strncmp(value, "tcp:", 4) == 0) {
		const char *colon = strrchr(value + 4, ':');
		unsigned port;

		if (!colon || colon == value + 4 || config_parse_uint(colon + 1, 1, 65535, &port) < 0)
			return parse_fail(p, p->line, "path: '%s' is not tcp:HOST:PORT", value);
		l->kind = LISTENER_TCP;
	} else if (value[0] == '@') {
		if (value[1] == '\0')
			return parse_fail(p, p->line, "path: abstract name is empty");
		l->kind = LISTENER_ABSTRACT;
	} else if (value[0] == '/') {
		l->kind = LISTENER_PATH;
	} else {
		return parse_fail(p, p->line,
				  "path: '%s' must be absolute, @abstract or tcp:HOST:PORT", value);
	}
	/* sun_path is 108 bytes including the terminating NUL for a file path. */
	if (l->kind != LISTENER_TCP && strlen(value) > 107)
		return parse_fail(p, p->line, "path: '%s' is longer than a socket address allows (%zu > 107)",
				  value, strlen(value));
	if (set_string(&l->address, value) < 0)
		return -1;
	return 1;
}

static int
parse_daemon_key(struct parse *p, const char *key, const char *value)
{
	struct config *c = p->config;
	uint64_t usec;
	unsigned u;

	if (strcmp(key, "workers") == 0) {
		if (strcmp(value, "auto") == 0) {
			p->workers_auto = true;
			return 1;
		}
		if (config_parse_uint(value, 1, CONFIG_MAX_WORKERS, &c->workers) < 0)
			return parse_fail(p, p->line, "workers: '%s' is not auto or 1..%d", value,
					  CONFIG_MAX_WORKERS);
		p->workers_auto = false;
		return 1;
	}
	if (strcmp(key, "workers_min") == 0 || strcmp(key, "workers_max") == 0) {
		if (config_parse_uint(value, 1, CONFIG_MAX_WORKERS, &u) < 0)
			return parse_fail(p, p->line, "%s: '%s' is not 1..%d", key, value,
					  CONFIG_MAX_WORKERS);
		*(strcmp(key, "workers_min") == 0 ? &c->workers_min : &c->workers_max) = u;
		p->pool_set = true;
		return 1;
	}
	if (strcmp(key, "threads") == 0) {
		if (config_parse_uint(value, 1, CONFIG_MAX_THREADS, &c->threads) < 0)
			return parse_fail(p, p->line, "threads: '%s' is not 1..%d", value,
					  CONFIG_MAX_THREADS);
		return 1;
	}
	if (strcmp(key, "worker_load_mark") == 0) {
		if (config_parse_uint(value, 1, 1000000, &c->worker_load_mark) < 0)
			return parse_fail(p, p->line, "worker_load_mark: '%s' is not 1..1000000", value);
		return 1;
	}
	if (strcmp(key, "max_connections") == 0 || strcmp(key, "max_connections_total") == 0) {
		unsigned *dst = key[15] ? &c->max_connections_total : &c->max_connections;
		if (config_parse_uint(value, key[15] ? 0 : 1, 100000000, dst) < 0)
			return parse_fail(p, p->line, "%s: '%s' is not %s..100000000", key, value,
					  key[15] ? "0" : "1");
		return 1;
	}
	if (strcmp(key, "busy_poll") == 0) {
		if (strcmp(value, "off") == 0)
			usec = 0;
		else if (config_parse_duration(value, &usec) < 0 || usec > USEC_PER_MSEC)
			return parse_fail(p, p->line, "busy_poll: '%s' is not off or a duration up to 1ms (e.g. 30us)", value);
		c->busy_poll_usec = usec;
		return 1;
	}
	if (strcmp(key, "shutdown_timeout") == 0 || strcmp(key, "exit_idle_time") == 0 ||
	    strcmp(key, "worker_idle_time") == 0) {
		if (strcmp(value, "off") == 0 && key[0] == 'e')
			usec = 0;
		else if (config_parse_duration(value, &usec) < 0)
			return parse_fail(p, p->line,
					  "%s: '%s' is not a duration (e.g. 250ms, 10s, 5min)", key,
					  value);
		*(key[0] == 's' ? &c->shutdown_timeout_usec :
		  key[0] == 'e' ? &c->exit_idle_usec : &c->worker_idle_usec) = usec;
		return 1;
	}
	if (strcmp(key, "user") == 0) {
		if (*value && config_parse_uid(value, &c->user) < 0)
			return parse_fail(p, p->line, "user: unknown user '%s'", value);
		return 1;
	}
	if (strcmp(key, "group") == 0) {
		if (*value && config_parse_gid(value, &c->group) < 0)
			return parse_fail(p, p->line, "group: unknown group '%s'", value);
		return 1;
	}
	return parse_fail(p, p->line, "unknown key '%s' in [daemon]", key);
}

static int
add_extra(struct config_listener *l, const char *key, const char *value, unsigned line)
{
	struct config_kv *t = realloc(l->extra, (l->n_extra + 1) * sizeof(*t));

	if (!t)
		return -ENOMEM;
	l->extra = t;
	t[l->n_extra] = (struct config_kv){ strdup(key), strdup(value), line };
	if (!t[l->n_extra].key || !t[l->n_extra].value) {
		free(t[l->n_extra].key);
		free(t[l->n_extra].value);
		return -ENOMEM;
	}
	l->n_extra++;
	return 0;
}

static int
parse_listener_key(struct parse *p, struct config_listener *l, const char *key, const char *value)
{
	uint64_t usec;
	unsigned u;

	if (strcmp(key, "path") == 0)
		return parse_address(p, l, value);
	if (strcmp(key, "service") == 0) {
		if (*value == '\0')
			return parse_fail(p, p->line, "service: empty");
		l->service_line = p->line;
		return set_string(&l->service, value) < 0 ? 0 : 1;
	}
	if (strcmp(key, "type") == 0) {
		if (strcmp(value, "stream") == 0)
			l->type = SOCK_STREAM;
		else if (strcmp(value, "seqpacket") == 0)
			l->type = SOCK_SEQPACKET;
		else
			return parse_fail(p, p->line, "type: '%s' is not stream or seqpacket", value);
		return 1;
	}
	if (strcmp(key, "owner") == 0 || strcmp(key, "group") == 0 || strcmp(key, "mode") == 0) {
		int r = key[0] == 'o' ? config_parse_uid(value, &l->owner) :
			key[0] == 'g' ? config_parse_gid(value, &l->group) :
					config_parse_mode(value, &l->mode);
		if (r < 0)
			return parse_fail(p, p->line, "%s: '%s' is not %s", key, value,
					  key[0] == 'o' ? "a known user" :
					  key[0] == 'g' ? "a known group" :
							  "an octal mode such as 0660");
		if (l->perm_line == 0)
			l->perm_line = p->line;
		return 1;
	}
	if (strcmp(key, "backlog") == 0) {
		if (config_parse_uint(value, 1, 65535, &u) < 0)
			return parse_fail(p, p->line, "backlog: '%s' is not 1..65535", value);
		l->backlog = (int)u;
		return 1;
	}
	if (strcmp(key, "idle_timeout") == 0) {
		if (strcmp(value, "off") == 0)
			usec = 0;
		else if (config_parse_duration(value, &usec) < 0)
			return parse_fail(p, p->line, "idle_timeout: '%s' is not a duration or off",
					  value);
		l->idle_timeout_usec = usec;
		return 1;
	}
	if (strcmp(key, "allow_uids") == 0)
		return parse_id_list(p, key, value, false, (unsigned **)&l->allow_uids,
				     &l->n_allow_uids) < 0 ? 0 : 1;
	if (strcmp(key, "allow_gids") == 0)
		return parse_id_list(p, key, value, true, (unsigned **)&l->allow_gids,
				     &l->n_allow_gids) < 0 ? 0 : 1;
	/* Anything else belongs to the service, which validates it when it is resolved. */
	return add_extra(l, key, value, p->line) < 0 ? 0 : 1;
}

static struct config_listener *
listener_new(struct parse *p, const char *name)
{
	struct config *c = p->config;

	if (*name == '\0') {
		parse_fail(p, p->line, "[listener] needs a name: [listener NAME]");
		return NULL;
	}
	for (size_t i = 0; i < c->n_listeners; i++)
		if (strcmp(c->listeners[i].name, name) == 0) {
			parse_fail(p, p->line, "listener '%s' is defined twice (first at line %u)",
				   name, c->listeners[i].line);
			return NULL;
		}
	if (c->n_listeners >= CONFIG_MAX_LISTENERS) {
		parse_fail(p, p->line, "more than %d listeners", CONFIG_MAX_LISTENERS);
		return NULL;
	}
	struct config_listener *t = realloc(c->listeners, (c->n_listeners + 1) * sizeof(*t));
	if (!t)
		return NULL;
	c->listeners = t;
	struct config_listener *l = &t[c->n_listeners];
	*l = (struct config_listener){
		.name = strdup(name),
		.line = p->line,
		.type = SOCK_STREAM,
		.owner = (uid_t)-1,
		.group = (gid_t)-1,
		.mode = 0660,
		.backlog = 4096,
		.idle_timeout_usec = 60 * USEC_PER_SEC,
	};
	if (!l->name)
		return NULL;
	c->n_listeners++;
	return l;
}

/* Section names are "daemon" and "listener NAME". */
static void
enter_section(struct parse *p, const char *section)
{
	p->current = NULL;
	p->section = SECTION_NONE;
	if (strcmp(section, "daemon") == 0) {
		p->section = SECTION_DAEMON;
	} else if (strncmp(section, "listener", 8) == 0 &&
		   (section[8] == '\0' || isspace((unsigned char)section[8]))) {
		const char *name = section + 8;

		while (isspace((unsigned char)*name))
			name++;
		p->section = SECTION_LISTENER;
		p->current = listener_new(p, name);
		if (!p->current)
			parse_fail(p, p->line, "out of memory");
	} else {
		parse_fail(p, p->line, "unknown section [%s]", section);
	}
}

/*
 * inih reads through this, one line per call, which is how we know the line
 * number of each key (Debian builds inih without INI_HANDLER_LINENO).  Section
 * headers are handled here too, so that an empty section is still seen.
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
		p->line_too_long = true;
		n = (size_t)size - 1;
	}
	memcpy(buf, s, n);
	buf[n] = '\0';
	*text = s + n;
	p->line++;

	char *b = buf;
	while (isspace((unsigned char)*b))
		b++;
	if (*b == '[' && !p->failed) {
		char *end = strchr(b, ']');
		if (end) {
			_cleanup_free_ char *name = strndup(b + 1, (size_t)(end - b - 1));
			if (name)
				enter_section(p, name);
		}
	}
	return buf;
}

static int
handler(void *user, const char *section, const char *key, const char *value)
{
	struct parse *p = user;

	(void)section;
	if (p->failed)
		return 1;
	switch (p->section) {
	case SECTION_DAEMON:
		parse_daemon_key(p, key, value);
		return 1;
	case SECTION_LISTENER:
		if (parse_listener_key(p, p->current, key, value) <= 0)
			parse_fail(p, p->line, "out of memory");
		return 1;
	default:
		parse_fail(p, p->line, "'%s' is outside any section", key);
		return 1;
	}
}

static int
validate_listener(struct parse *p, struct config_listener *l)
{
	const struct config *c = p->config;

	if (!l->address)
		return parse_fail(p, l->line, "[listener %s] has no path", l->name);
	if (!l->service && set_string(&l->service, "echo") < 0)
		return parse_fail(p, l->line, "out of memory");
	if (l->kind != LISTENER_PATH && l->perm_line)
		return parse_fail(p, l->perm_line,
				  "owner, group and mode apply to socket files; '%s' has no file",
				  l->address);
	if (l->kind == LISTENER_TCP && l->type != SOCK_STREAM)
		return parse_fail(p, l->line, "tcp listeners are stream only");
	for (const struct config_listener *o = c->listeners; o < l; o++)
		if (strcmp(o->address, l->address) == 0)
			return parse_fail(p, l->line, "listener '%s' uses the address of '%s'",
					  l->name, o->name);
	return 1;
}

static void
validate(struct parse *p)
{
	struct config *c = p->config;

	if (p->failed)
		return;
	if (c->n_listeners == 0) {
		parse_fail(p, 0, "no [listener NAME] section");
		return;
	}
	for (size_t i = 0; i < c->n_listeners && !p->failed; i++)
		validate_listener(p, &c->listeners[i]);
	if (p->workers_auto) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		c->workers = (unsigned)MIN(MAX(n, 1), CONFIG_MAX_WORKERS);
	}
	if (p->pool_set) {
		/* One bound alone: the other is the same, or 1 for the minimum. */
		if (c->workers_max == 0)
			c->workers_max = MAX(c->workers_min, 1);
		if (c->workers_min == 0)
			c->workers_min = 1;
	}
	if (!p->pool_set)
		c->workers_min = c->workers_max = c->workers;
	else if (c->workers_min > c->workers_max)
		parse_fail(p, 0, "workers_min (%u) is above workers_max (%u)", c->workers_min,
			   c->workers_max);
	else
		c->workers = c->workers_min;
}

int
config_load_string(const char *name, const char *text, struct config **ret, char *err,
		   size_t errlen)
{
	struct config *c = calloc(1, sizeof(*c));
	struct parse p = { .config = c, .name = name, .err = err, .errlen = errlen };
	const char *cursor = text;
	void *ud[2] = { &p, &cursor };
	int r;

	if (!c || !(c->file = strdup(name))) {
		free(c);
		snprintf(err, errlen, "%s: out of memory", name);
		return -ENOMEM;
	}
	c->workers = 1;
	p.workers_auto = true;
	c->threads = 4;
	c->max_connections = 10000;
	c->shutdown_timeout_usec = 10 * USEC_PER_SEC;
	c->worker_idle_usec = 10 * USEC_PER_SEC;
	c->worker_load_mark = 100;
	c->user = (uid_t)-1;
	c->group = (gid_t)-1;

	r = ini_parse_stream(reader, ud, handler, &p);
	if (r > 0 && !p.failed)
		parse_fail(&p, (unsigned)r, "syntax error (expected [section] or key = value)");
	else if (r < 0 && !p.failed)
		parse_fail(&p, 0, "could not parse (out of memory)");
	if (p.line_too_long && !p.failed)
		parse_fail(&p, 0, "a line is too long");
	validate(&p);
	if (p.failed) {
		config_free(c);
		return -EINVAL;
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
		for (size_t k = 0; k < l->n_extra; k++) {
			free(l->extra[k].key);
			free(l->extra[k].value);
		}
		free(l->extra);
	}
	free(c->listeners);
	free(c->file);
	free(c);
}

const struct config_listener *
config_find_listener(const struct config *c, const char *name)
{
	for (size_t i = 0; i < c->n_listeners; i++)
		if (strcmp(c->listeners[i].name, name) == 0)
			return &c->listeners[i];
	return NULL;
}
