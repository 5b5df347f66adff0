/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "http-parser.h"
#include "macro.h"
#include "udsd.h"

#define EXAMPLE_CONF SOURCE_ROOT "/etc/udsd.conf"
#define MANUAL SOURCE_ROOT "/daemon/udsd.conf.5"

static void
test_valid(void **state)
{
	struct config *c = NULL;
	char err[256] = "";

	(void)state;
	assert_int_equal(config_load_string("t.conf",
					    "; comment\n"
					    "[daemon]\n"
					    "workers = 3\n"
					    "threads = 2   ; inline comment\n"
					    "shutdown_timeout = 250ms\n"
					    "user = root\n"
					    "[listener main]\n"
					    "path = /run/x.sock\n"
					    "service = http\n"
					    "mode = 0640\n"
					    "owner = 0\n"
					    "allow_uids = root, 1000\n"
					    "allow_gids = 0 1000\n"
					    "idle_timeout = 5min\n"
					    "max_header_size = 16k\n"
					    "[listener abs]\n"
					    "path = @udsd\n"
					    "type = seqpacket\n"
					    "[listener tcp]\n"
					    "path = tcp:127.0.0.1:8080\n",
					    &c, err, sizeof(err)),
			 0);
	assert_string_equal(err, "");
	assert_int_equal(c->pools[0].workers, 3);
	assert_int_equal(c->pools[0].workers_min, 3);
	assert_int_equal(c->pools[0].threads, 2);
	assert_int_equal(c->shutdown_timeout_usec, 250000);
	assert_int_equal(c->pools[0].user, 0);
	assert_string_equal(c->pools[0].user_name, "root");
	assert_int_equal(c->pools[0].user_gid, 0);
	assert_int_equal(c->pools[0].group, (gid_t)-1);
	assert_int_equal(c->n_listeners, 3);
	const struct config_listener *l = config_find_listener(c, "main");
	assert_non_null(l);
	assert_string_equal(l->address, "/run/x.sock");
	assert_string_equal(l->service, "http");
	assert_int_equal(l->mode, 0640);
	assert_int_equal(l->owner, 0);
	assert_int_equal(l->n_allow_uids, 2);
	assert_int_equal(l->allow_uids[1], 1000);
	assert_int_equal(l->n_allow_gids, 2);
	assert_int_equal(l->idle_timeout_usec, 300 * USEC_PER_SEC);
	assert_int_equal(l->n_extra, 1);
	assert_string_equal(l->extra[0].key, "max_header_size");
	assert_int_equal(l->extra[0].line, 15);
	l = config_find_listener(c, "abs");
	assert_int_equal(l->kind, LISTENER_ABSTRACT);
	assert_int_equal(l->type, SOCK_SEQPACKET);
	assert_string_equal(l->service, "echo");
	assert_int_equal(config_find_listener(c, "tcp")->kind, LISTENER_TCP);
	config_free(c);
}

/* Issue 18: dgram listeners, their size limit, and allow-lists by credentials alone. */
static void
test_dgram(void **state)
{
	struct config *c = NULL;
	char err[256] = "";
	const gid_t wheel[] = { 10 };

	(void)state;
	assert_int_equal(config_load_string("t.conf",
					    "[listener log]\npath = /run/log.sock\ntype = dgram\n"
					    "allow_uids = 1000\nallow_gids = 10\n"
					    "[listener big]\npath = @big\ntype = dgram\nmax_datagram = 1M\n",
					    &c, err, sizeof(err)),
			 0);
	const struct config_listener *l = config_find_listener(c, "log");
	assert_int_equal(l->type, SOCK_DGRAM);
	assert_int_equal(l->max_datagram, 64 * 1024);
	assert_int_equal(config_find_listener(c, "big")->max_datagram, 1024 * 1024);
	assert_true(config_listener_admits(l, 1000, 1000, NULL, 0));
	assert_true(config_listener_admits(l, 1001, 10, NULL, 0));
	assert_true(config_listener_admits(l, 1001, 1001, wheel, 1));
	assert_false(config_listener_admits(l, 1001, 1001, NULL, 0));
	assert_true(config_listener_admits(config_find_listener(c, "big"), 65534, 65534, NULL, 0));
	config_free(c);
}

static void
test_auto_workers(void **state)
{
	struct config *c = NULL;
	char err[256];

	(void)state;
	assert_int_equal(config_load_string("t", "[listener a]\npath=/a\n", &c, err, sizeof(err)), 0);
	assert_int_equal(c->pools[0].workers, (unsigned)sysconf(_SC_NPROCESSORS_ONLN));
	assert_int_equal(c->pools[0].threads, 4);
	config_free(c);
}

/* Each bad input, and the exact error it must give. */
static const struct {
	const char *text;
	const char *error;
} bad[] = {
	{ "[daemon]\nworkers = 0\n[listener a]\npath=/a\n", "t.conf:2: workers: '0' is not auto or 1..64" },
	{ "[daemon]\nworkers = lots\n", "t.conf:2: workers: 'lots' is not auto or 1..64" },
	{ "[daemon]\nthreads = -1\n", "t.conf:2: threads: '-1' is not 1..64" },
	{ "[daemon]\n\nshutdown_timeout = 10 s\n", "t.conf:3: shutdown_timeout: '10 s' is not a duration (e.g. 250ms, 10s, 5min)" },
	{ "[daemon]\nshutdown_timeout = 10y\n", "t.conf:2: shutdown_timeout: '10y' is not a duration (e.g. 250ms, 10s, 5min)" },
	{ "[daemon]\nbogus = 1\n", "t.conf:2: unknown key 'bogus' in [daemon]" },
	{ "[daemon]\nbusy_poll = 2s\n", "t.conf:2: busy_poll: '2s' is not off or a duration up to 1ms" },
	{ "[daemon]\nworker_load_mark = 0\n", "t.conf:2: worker_load_mark: '0' is not 1..1000000" },
	{ "[demon]\n", "t.conf:1: unknown section [demon]" },
	{ "workers = 1\n", "t.conf:1: 'workers' is outside any section" },
	{ "[daemon]\nuser = no-such-user-udsd\n", "t.conf:2: user: unknown user 'no-such-user-udsd'" },
	{ "[listener a]\npath = /a\nmode = 0999\n", "t.conf:3: mode: '0999' is not an octal mode such as 0660" },
	{ "[listener a]\npath = /a\nmode = 17777\n", "t.conf:3: mode: '17777' is not an octal mode such as 0660" },
	{ "[listener a]\npath = relative.sock\n", "t.conf:2: path: 'relative.sock' must be absolute, @abstract or tcp:HOST:PORT" },
	{ "[listener a]\npath = tcp:127.0.0.1\n", "t.conf:2: path: 'tcp:127.0.0.1' is not tcp:HOST:PORT" },
	{ "[listener a]\nservice = echo\n", "t.conf:1: [listener a] has no path" },
	{ "[listener a]\npath=/a\n[listener a]\npath=/b\n", "t.conf:3: listener 'a' is defined twice (first at line 1)" },
	{ "[listener a]\npath=/a\n[listener b]\npath=/a\n", "t.conf:3: listener 'b' uses the address of 'a'" },
	{ "[listener]\npath=/a\n", "t.conf:1: [listener] needs a name: [listener NAME]" },
	{ "[listener a]\npath = @abs\nmode = 0600\n", "t.conf:3: owner, group and mode apply to socket files; '@abs' has no file" },
	{ "[listener a]\npath = /a\ntype = datagram\n", "t.conf:3: type: 'datagram' is not stream, seqpacket or dgram" },
	/* Issue 18: datagram listeners and the keys that apply to them. */
	{ "[listener a]\npath = tcp:127.0.0.1:1\ntype = dgram\n", "t.conf:1: tcp listeners are stream only" },
	{ "[listener a]\npath = /a\n\nmax_datagram = 1k\n", "t.conf:4: max_datagram applies to type = dgram listeners" },
	{ "[listener a]\npath = /a\ntype = dgram\nidle_timeout = 1s\n", "t.conf:4: idle_timeout applies to connections; a dgram listener has none" },
	{ "[listener a]\npath = /a\ntype = dgram\nbacklog = 5\n", "t.conf:4: backlog applies to connections; a dgram listener has none" },
	{ "[listener a]\npath = /a\ntype = dgram\nmax_connections_per_uid = 5\n", "t.conf:4: max_connections_per_uid applies to connections; a dgram listener has none" },
	{ "[listener a]\npath = /a\ntype = dgram\nmax_datagram = 0\n", "t.conf:4: max_datagram: '0' is not a byte count in 1..16M" },
	{ "[listener a]\npath = /a\ntype = dgram\nmax_datagram = 17M\n", "t.conf:4: max_datagram: '17M' is not a byte count in 1..16M" },
	{ "[listener a]\npath = /a\nbacklog = 0\n", "t.conf:3: backlog: '0' is not 1..65535" },
	{ "[listener a]\npath = /a\nallow_uids = root, nosuchuser-udsd\n", "t.conf:3: allow_uids: unknown user 'nosuchuser-udsd'" },
	{ "[listener a]\npath = /a\nidle_timeout = never\n", "t.conf:3: idle_timeout: 'never' is not off or a duration (e.g. 250ms, 10s, 5min)" },
	{ "[daemon]\nexit_idle_time = no\n", "t.conf:2: exit_idle_time: 'no' is not off or a duration (e.g. 250ms, 10s, 5min)" },
	{ "[listener a]\npath = /a\nowner = nosuchuser-udsd\n", "t.conf:3: owner: unknown user 'nosuchuser-udsd'" },
	{ "[listener a]\npath = /a\ngroup = nosuchgroup-udsd\n", "t.conf:3: group: unknown group 'nosuchgroup-udsd'" },
	/* Issue 12: duplicates are errors naming both lines, as listeners already were. */
	{ "[daemon]\nthreads = 2\n\nthreads = 3\n", "t.conf:4: threads: set twice (first at line 2)" },
	{ "[daemon]\nworkers = 1\n[listener a]\npath = /a\n[daemon]\n", "t.conf:5: [daemon] is defined twice (first at line 1)" },
	{ "[listener a]\npath = /a\npath = /b\n", "t.conf:3: path: set twice (first at line 2)" },
	{ "[listener a]\npath = /a\nmax_body = 1k\nmax_body = 2k\n", "t.conf:4: max_body: set twice (first at line 3)" },
	/* An allow-list that lists nobody would admit everyone. */
	{ "[listener a]\npath = /a\nallow_uids = ,\n", "t.conf:3: allow_uids: ',' names no user; leave it empty to admit anyone the mode lets in" },
	{ "[listener a]\npath = /a\nallow_gids = , ,\n", "t.conf:3: allow_gids: ', ,' names no group; leave it empty to admit anyone the mode lets in" },
	/* TCP has no peer credentials: the list would refuse everyone without a word. */
	{ "[listener a]\npath = tcp:127.0.0.1:1\n\nallow_gids = 0\nallow_uids = 0\n", "t.conf:4: allow_gids: a tcp: listener has no peer credentials to check" },
	{ "[listener a]\npath = /a\nmode = 4755\n", "t.conf:3: mode: '4755' has bits above 0777 (setuid, setgid, sticky), which a socket never needs" },
	{ "[listener a]\npath = /a\nmode = 1777\n", "t.conf:3: mode: '1777' has bits above 0777 (setuid, setgid, sticky), which a socket never needs" },
	{ "[daemon]\ngroup = root\n[listener a]\npath = /a\n", "t.conf:2: group: needs user; user implies the user's own groups" },
	{ "[daemon]\nuser = 2147483000\n[listener a]\npath = /a\n", "t.conf:2: user: uid 2147483000 has no passwd entry, so no groups of its own: set group too" },
	/* Issue 16: an unclosed header is reported at its own line, not at the next key. */
	{ "\n[daemon\nworkers = 1\n", "t.conf:2: section header '[daemon' has no closing ']'" },
	{ "[listener a]\npath = tcp:localhost:18089\n", "t.conf:2: path: 'tcp:localhost:18089': 'localhost' is not a numeric address (host names are not resolved; e.g. tcp:127.0.0.1:8080)" },
	{ "[listener a]\npath = tcp:127.0.0.1:0\n", "t.conf:2: path: 'tcp:127.0.0.1:0' is not tcp:HOST:PORT" },
	{ "[daemon]\nworkers_min = 4\nworkers_max = 2\n[listener a]\npath=/a\n", "t.conf: workers_min (4) is above workers_max (2)" },
	{ "[daemon]\nthis line has no equals sign\n", "t.conf:2: syntax error (expected [section] or key = value)" },
	{ "", "t.conf: no [listener NAME] section" },
	{ "[listener a]\npath = /a\n= 3\n", "t.conf:3: no key before '='" },
	{ "[listener a]\n\npath = /a                                                                                                                                                                                                       \n",
	  "t.conf:3: line too long (at most 199 bytes)" },
	{ "[daemon]\n", "t.conf: no [listener NAME] section" },
	{ "[listener a]\npath = /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n",
	  "t.conf:2: path: '/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa' is longer than a socket address allows (109 > 107)" },
};

static void
test_invalid(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct config *c = (struct config *)0x1;
		char err[512] = "";

		print_message("case %zu: %s\n", i, bad[i].error);
		assert_int_equal(config_load_string("t.conf", bad[i].text, &c, err, sizeof(err)), -EINVAL);
		assert_string_equal(err, bad[i].error);
		assert_ptr_equal(c, (struct config *)0x1);
	}
}

static void
test_missing_file(void **state)
{
	struct config *c = NULL;
	char err[256];

	(void)state;
	assert_int_equal(config_load("/nonexistent/udsd.conf", &c, err, sizeof(err)), -ENOENT);
	assert_string_equal(err, "/nonexistent/udsd.conf: No such file or directory");
	assert_null(c);
}

static void
test_values(void **state)
{
	uint64_t u;

	(void)state;
	assert_int_equal(udsd_parse_duration("250ms", &u), 0);
	assert_int_equal(u, 250000);
	assert_int_equal(udsd_parse_duration("2", &u), 0);
	assert_int_equal(u, 2000000);
	assert_int_equal(udsd_parse_duration("30us", &u), 0);
	assert_int_equal(u, 30);
	assert_int_equal(udsd_parse_duration("1h", &u), 0);
	assert_int_equal(u, 3600000000ULL);
	assert_int_equal(udsd_parse_duration("5min", &u), 0);
	assert_int_equal(u, 300000000ULL);
	assert_int_equal(udsd_parse_size("8KiB", &u), 0);
	assert_int_equal(u, 8192);
	assert_int_equal(udsd_parse_size("64k", &u), 0);
	assert_int_equal(u, 65536);
	assert_int_equal(udsd_parse_size("1M", &u), 0);
	assert_int_equal(u, 1 << 20);
	assert_int_equal(udsd_parse_size("4096", &u), 0);
	assert_int_equal(u, 4096);
	/* Out-parameters are written only on success. */
	u = 999;
	assert_int_equal(udsd_parse_duration("99999999999999999999s", &u), -ERANGE);
	assert_int_equal(udsd_parse_duration("", &u), -EINVAL);
	assert_int_equal(udsd_parse_duration("10 s", &u), -EINVAL);
	assert_int_equal(udsd_parse_duration("-1s", &u), -EINVAL);
	assert_int_equal(udsd_parse_size("1T", &u), -EINVAL);
	assert_int_equal(udsd_parse_size("k", &u), -EINVAL);
	assert_int_equal(u, 999);
}

static void
test_modes(void **state)
{
	static const struct {
		const char *value;
		mode_t mode;
	} modes[] = { { "660", 0660 }, { "0", 0 }, { "0777", 0777 }, { "00600", 0600 } };

	(void)state;
	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
		char text[128], err[256] = "";
		struct config *c = NULL;

		snprintf(text, sizeof(text), "[listener a]\npath = /a\nmode = %s\n", modes[i].value);
		assert_int_equal(config_load_string("t", text, &c, err, sizeof(err)), 0);
		assert_int_equal(c->listeners[0].mode, modes[i].mode);
		config_free(c);
	}
}

static const char *
dump(const struct config *c, char *buf, size_t size)
{
	FILE *f = fmemopen(buf, size, "w");

	assert_non_null(f);
	assert_int_equal(config_dump(c, f), 0);
	assert_int_equal(fclose(f), 0);
	return buf;
}

/* udsd -T prints every key of the schema, and what it prints parses back to the same config. */
static void
round_trip(const char *name, const char *text)
{
	static char first[16384], second[16384];
	struct config *a = NULL, *b = NULL;
	char err[512] = "";

	print_message("round trip: %s\n", name);
	assert_int_equal(config_load_string(name, text, &a, err, sizeof(err)), 0);
	assert_int_equal(config_load_string(name, dump(a, first, sizeof(first)), &b, err, sizeof(err)), 0);
	assert_string_equal(first, dump(b, second, sizeof(second)));
	for (size_t i = 0; i < config_n_items; i++) {
		char want[64], shown[64];
		/* A key that cannot apply to a listener (its type, no file) is shown commented. */
		snprintf(want, sizeof(want), "\n%s =", config_items[i].key);
		snprintf(shown, sizeof(shown), "\n; %s =", config_items[i].key);
		assert_true(strstr(first, want) || strstr(first, shown));
	}
	/* Printing loses nothing: the values themselves agree, not only their text. */
	assert_true(a->exit_idle_usec == b->exit_idle_usec && a->n_pools == b->n_pools &&
		    a->n_listeners == b->n_listeners);
	for (size_t i = 0; i < a->n_pools; i++) {
		const struct config_pool *x = &a->pools[i], *y = &b->pools[i];
		assert_string_equal(x->name, y->name);
		assert_true(x->workers == y->workers && x->workers_min == y->workers_min &&
			    x->workers_max == y->workers_max && x->busy_poll_usec == y->busy_poll_usec &&
			    x->user == y->user && x->group == y->group &&
			    x->request_timeout_usec == y->request_timeout_usec &&
			    x->max_requests == y->max_requests && x->max_rss == y->max_rss);
	}
	for (size_t i = 0; i < a->n_listeners; i++) {
		const struct config_listener *x = &a->listeners[i], *y = &b->listeners[i];
		assert_string_equal(x->address, y->address);
		assert_true(x->kind == y->kind && x->mode == y->mode && x->owner == y->owner &&
			    x->idle_timeout_usec == y->idle_timeout_usec &&
			    x->n_allow_uids == y->n_allow_uids && x->n_extra == y->n_extra &&
			    x->type == y->type && x->max_datagram == y->max_datagram);
	}
	config_free(a);
	config_free(b);
}

static void
test_dump_round_trip(void **state)
{
	_cleanup_free_ char *example = NULL;
	size_t len = 0;
	FILE *f = fopen(EXAMPLE_CONF, "re");

	(void)state;
	round_trip("minimal", "[listener a]\npath = /a\n");
	round_trip("rich", "[daemon]\nworkers = 3\nworkers_min = 2\nworkers_max = 5\nthreads = 2\n"
			   "shutdown_timeout = 1500ms\nbusy_poll = 30us\nexit_idle_time = 90s\n"
			   "user = root\ngroup = 0\nworker_idle_time = 0\n"
			   "[listener a]\npath = /run/x.sock\nservice = http\nmode = 640\nowner = 0\n"
			   "group = root\nallow_uids = root, 4000000\nallow_gids = 0 4000000\n"
			   "idle_timeout = off\nbacklog = 7\nmax_header_size = 16k\nmax_body = 3\n"
			   "[listener b]\npath = @abs\ntype = seqpacket\n"
			   "[listener c]\npath = tcp:::1:8080\n"
			   "[listener d]\npath = /run/d.sock\ntype = dgram\nmax_datagram = 1500\n"
			   "[listener e]\npath = @dg\ntype = dgram\n");
	/* inih reads " ;" as a comment, so such a value must follow "=" at once. */
	round_trip("semicolon", "[listener a]\npath = /a\nservice =;x\ncolour =;blue\n");
	round_trip("user by number", "[daemon]\nuser = 4000000\ngroup = 4000001\n"
				     "[listener a]\npath = /a\n");
	assert_non_null(f);
	assert_true(getdelim(&example, &len, '\0', f) > 0);
	fclose(f);
	round_trip(EXAMPLE_CONF, example);
}

/* "key = value" or "; key = value" → key and value; false for prose and headers. */
static bool
assignment(const char *line, char *key, size_t keysize, char *value, size_t valuesize,
	   bool *ret_commented)
{
	const char *p = line, *k;
	size_t n;

	*ret_commented = *p == ';';
	p += strspn(p, "; \t");
	k = p;
	p += strspn(p, "abcdefghijklmnopqrstuvwxyz_");
	n = (size_t)(p - k);
	p += strspn(p, " \t");
	if (n == 0 || n >= keysize || *p != '=')
		return false;
	memcpy(key, k, n);
	key[n] = '\0';
	p += 1 + strspn(p + 1, " \t");
	n = strcspn(p, "\r\n");
	while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
		n--;
	assert_true(n < valuesize);
	memcpy(value, p, n);
	value[n] = '\0';
	return true;
}

/*
 * etc/udsd.conf is the documentation users copy: it loads, every key in it
 * (live or commented) is a key of the schema or of the http service it shows,
 * a commented key shows the default, and every key of both tables is there
 * with its default.  A live key may differ from its default only as an
 * example beside a commented line with the default.  Lines starting with
 * ";;" are an example file of their own (two pools): it must load.
 */
static void
test_example_file(void **state)
{
	size_t n_http;
	const struct udsd_key *http = http_settings_keys(&n_http);
	bool core_seen[64] = { false }, http_seen[16] = { false };
	enum config_section section = CONFIG_SECTION_NONE;
	struct config *c = NULL;
	char err[512] = "", line[1024], example[4096] = "";
	size_t example_len = 0;
	FILE *f;

	(void)state;
	assert_true(config_n_items <= 64 && n_http <= 16);
	assert_int_equal(config_load(EXAMPLE_CONF, &c, err, sizeof(err)), 0);
	config_free(c);
	f = fopen(EXAMPLE_CONF, "re");
	assert_non_null(f);
	for (unsigned no = 1; fgets(line, sizeof(line), f); no++) {
		char key[64], value[256];
		const char *def;
		bool commented, *seen;

		if (line[0] == '[')
			section = strncmp(line, "[daemon]", 8) == 0 ? CONFIG_SECTION_DAEMON :
				  strncmp(line, "[admin]", 7) == 0  ? CONFIG_SECTION_ADMIN :
				  strncmp(line, "[pool", 5) == 0    ? CONFIG_SECTION_POOL :
								      CONFIG_SECTION_LISTENER;
		if (strncmp(line, ";;", 2) == 0) {
			const char *ex = line + 2 + (line[2] == ' ');
			assert_true(example_len + strlen(ex) < sizeof(example));
			example_len += (size_t)snprintf(example + example_len,
							sizeof(example) - example_len, "%s", ex);
			continue;
		}
		if (!assignment(line, key, sizeof(key), value, sizeof(value), &commented))
			continue;
		const struct config_item *it = config_item_find(section, key);
		/* [daemon] holds every pool's defaults. */
		if (!it && section == CONFIG_SECTION_DAEMON)
			it = config_item_find(CONFIG_SECTION_POOL, key);
		size_t h = 0;
		while (!it && h < n_http && strcmp(http[h].key, key) != 0)
			h++;
		print_message("udsd.conf:%u: %s = %s\n", no, key, value);
		assert_true(it || h < n_http); /* a key udsd knows */
		def = it ? it->def : http[h].def;
		seen = it ? &core_seen[it - config_items] : &http_seen[h];
		if (!def || strcmp(value, def) == 0)
			*seen = true;
		else
			assert_false(commented); /* a commented key shows its default */
	}
	fclose(f);
	print_message("the example:\n%s", example);
	assert_int_equal(config_load_string("udsd.conf example", example, &c, err, sizeof(err)), 0);
	assert_true(c->n_pools >= 2);
	config_free(c);
	for (size_t i = 0; i < config_n_items; i++) {
		static const char *const names[] = { "", "daemon", "listener", "pool", "admin" };

		print_message("schema: [%s] %s = %s\n", names[config_items[i].section],
			      config_items[i].key, config_items[i].def ? config_items[i].def : "(required)");
		assert_true(core_seen[i]);
	}
	for (size_t i = 0; i < n_http; i++) {
		print_message("http: %s = %s\n", http[i].key, http[i].def);
		assert_true(http_seen[i]);
	}
}

/*
 * The manual's entry for a key is ".It Ic KEY"; with def, "Default: DEF"
 * must follow before the next entry (keys sharing an entry are checked for
 * their presence only).
 */
static bool
manual_documents(const char *text, const char *key, const char *def)
{
	char it[96], want[96];
	const char *p, *next, *d;

	snprintf(it, sizeof(it), "\n.It Ic %s ", key);
	p = strstr(text, it);
	if (!p || !def)
		return p != NULL;
	snprintf(want, sizeof(want), "\nDefault: %s.", def);
	next = strstr(p + 1, "\n.It ");
	d = strstr(p, want);
	return d && (!next || d < next);
}

/* udsd.conf(5) documents every key of both tables, with the table's default. */
static void
test_manual(void **state)
{
	size_t n_http, len = 0;
	const struct udsd_key *http = http_settings_keys(&n_http);
	_cleanup_free_ char *text = NULL;
	FILE *f = fopen(MANUAL, "re"), *m = open_memstream(&text, &len);
	char buf[4096];

	(void)state;
	assert_non_null(f);
	assert_non_null(m);
	for (size_t n; (n = fread(buf, 1, sizeof(buf), f)) > 0;)
		fwrite(buf, 1, n, m);
	fclose(f);
	fclose(m);
	for (size_t i = 0; i < config_n_items; i++) {
		print_message("udsd.conf.5: %s\n", config_items[i].key);
		assert_true(manual_documents(text, config_items[i].key, NULL));
	}
	for (size_t i = 0; i < n_http; i++) {
		print_message("udsd.conf.5: %s = %s\n", http[i].key, http[i].def);
		assert_true(manual_documents(text, http[i].key, http[i].def));
	}
}

struct svc {
	uint64_t count, size, wait;
};

/* A service's own table: defaults first, then the listener's keys, errors naming the key. */
static void
test_service_keys(void **state)
{
	static const struct udsd_key keys[] = {
		{ "count", UDSD_KEY_UINT, offsetof(struct svc, count), 1, 10, 0, "3", "a number" },
		{ "size", UDSD_KEY_SIZE, offsetof(struct svc, size), 0, 0, 0, "64k", "a size" },
		{ "wait", UDSD_KEY_DURATION, offsetof(struct svc, wait), 0, 0, UDSD_KEY_OFF, "off",
		  "a duration" },
	};
	struct udsd_kv kv[2];
	struct udsd_service_config cfg = { .listener = "a", .address = "/a", .keys = kv };
	struct svc s;
	char err[256];

	(void)state;
	assert_int_equal(udsd_keys_parse(keys, 3, &cfg, &s, err, sizeof(err)), 0);
	assert_int_equal(s.count, 3);
	assert_int_equal(s.size, 65536);
	assert_int_equal(s.wait, 0);
	kv[0] = (struct udsd_kv){ "wait", "2s" };
	kv[1] = (struct udsd_kv){ "size", "1M" };
	cfg.n_keys = 2;
	assert_int_equal(udsd_keys_parse(keys, 3, &cfg, &s, err, sizeof(err)), 0);
	assert_int_equal(s.wait, 2000000);
	assert_int_equal(s.size, 1 << 20);
	kv[1] = (struct udsd_kv){ "count", "11" };
	assert_int_equal(udsd_keys_parse(keys, 3, &cfg, &s, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "count: '11' is not 1..10");
	kv[1] = (struct udsd_kv){ "colour", "blue" };
	assert_int_equal(udsd_keys_parse(keys, 3, &cfg, &s, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "colour: unknown key (this service has count, size, wait)");
	cfg.n_keys = 1;
	kv[0] = (struct udsd_kv){ "wait", "never" };
	assert_int_equal(udsd_keys_parse(keys, 3, &cfg, &s, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "wait: 'never' is not off or a duration (e.g. 250ms, 10s, 5min)");
}

/* http's keys through its table: the defaults udsd.conf shows, and its bounds. */
static void
test_http_settings(void **state)
{
	struct udsd_kv kv[2];
	struct udsd_service_config cfg = { .listener = "a", .address = "/a", .keys = kv };
	struct http_settings s;
	char err[256];

	(void)state;
	assert_int_equal(http_settings_parse(&cfg, &s, err, sizeof(err)), 0);
	assert_int_equal(s.limits.max_header_size, 8192);
	assert_int_equal(s.limits.max_uri, 4096);
	assert_int_equal(s.limits.max_body, 1 << 20);
	assert_int_equal(s.header_timeout_usec, 10 * USEC_PER_SEC);
	kv[0] = (struct udsd_kv){ "max_header_size", "1k" };
	kv[1] = (struct udsd_kv){ "header_timeout", "2s" };
	cfg.n_keys = 2;
	assert_int_equal(http_settings_parse(&cfg, &s, err, sizeof(err)), 0);
	assert_int_equal(s.limits.max_header_size, 1024);
	assert_int_equal(s.limits.max_uri, 1024); /* never more than the whole head */
	assert_int_equal(s.header_timeout_usec, 2 * USEC_PER_SEC);
	kv[0] = (struct udsd_kv){ "max_uri", "10" };
	assert_int_equal(http_settings_parse(&cfg, &s, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "max_uri: '10' is not a byte count in 64..1M");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid),
		cmocka_unit_test(test_dgram),
		cmocka_unit_test(test_auto_workers),
		cmocka_unit_test(test_invalid),
		cmocka_unit_test(test_missing_file),
		cmocka_unit_test(test_values),
		cmocka_unit_test(test_modes),
		cmocka_unit_test(test_dump_round_trip),
		cmocka_unit_test(test_example_file),
		cmocka_unit_test(test_manual),
		cmocka_unit_test(test_service_keys),
		cmocka_unit_test(test_http_settings),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
