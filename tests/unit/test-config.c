/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"

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
	assert_int_equal(c->workers, 3);
	assert_int_equal(c->workers_min, 3);
	assert_int_equal(c->threads, 2);
	assert_int_equal(c->shutdown_timeout_usec, 250000);
	assert_int_equal(c->user, 0);
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

static void
test_auto_workers(void **state)
{
	struct config *c = NULL;
	char err[256];

	(void)state;
	assert_int_equal(config_load_string("t", "[listener a]\npath=/a\n", &c, err, sizeof(err)), 0);
	assert_int_equal(c->workers, (unsigned)sysconf(_SC_NPROCESSORS_ONLN));
	assert_int_equal(c->threads, 4);
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
	{ "[daemon]\nbusy_poll = 2s\n", "t.conf:2: busy_poll: '2s' is not off or a duration up to 1ms (e.g. 30us)" },
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
	{ "[listener a]\npath = /a\ntype = dgram\n", "t.conf:3: type: 'dgram' is not stream or seqpacket" },
	{ "[listener a]\npath = /a\nbacklog = 0\n", "t.conf:3: backlog: '0' is not 1..65535" },
	{ "[listener a]\npath = /a\nallow_uids = root, nosuchuser-udsd\n", "t.conf:3: allow_uids: unknown user 'nosuchuser-udsd'" },
	{ "[listener a]\npath = /a\nidle_timeout = never\n", "t.conf:3: idle_timeout: 'never' is not a duration or off" },
	{ "[daemon]\nworkers_min = 4\nworkers_max = 2\n[listener a]\npath=/a\n", "t.conf: workers_min (4) is above workers_max (2)" },
	{ "[daemon]\nthis line has no equals sign\n", "t.conf:2: syntax error (expected [section] or key = value)" },
	{ "", "t.conf: no [listener NAME] section" },
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
	mode_t m;

	(void)state;
	assert_int_equal(config_parse_duration("250ms", &u), 0);
	assert_int_equal(u, 250000);
	assert_int_equal(config_parse_duration("2", &u), 0);
	assert_int_equal(u, 2000000);
	assert_int_equal(config_parse_duration("30us", &u), 0);
	assert_int_equal(u, 30);
	assert_int_equal(config_parse_duration("1h", &u), 0);
	assert_int_equal(u, 3600000000ULL);
	assert_int_equal(config_parse_duration("99999999999999999999s", &u), -ERANGE);
	assert_int_equal(config_parse_duration("", &u), -EINVAL);
	assert_int_equal(config_parse_size("8KiB", &u), 0);
	assert_int_equal(u, 8192);
	assert_int_equal(config_parse_mode("660", &m), 0);
	assert_int_equal(m, 0660);
	assert_int_equal(config_parse_mode("", &m), -EINVAL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid),	    cmocka_unit_test(test_auto_workers),
		cmocka_unit_test(test_invalid),	    cmocka_unit_test(test_missing_file),
		cmocka_unit_test(test_values),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
